/* test_wal_record: the byte format of the durable log (kvs/wal_record.c).
 *
 * Pins the CRC32C values, that hardware and table CRCs agree, that every damaged or
 * truncated record is refused, and that file names parse back only for their tid.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sq_error.h"
#include "wal_int.h"

static void test_crc32c_matches_castagnoli_check_value(void **state) {
  (void)state;
  assert_int_equal(kvs_wal_crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(kvs__wal_crc32c_sw(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(kvs_wal_crc32c(0, "", 0), 0u);
}

static void test_crc32c_hardware_and_table_agree_on_every_length_and_offset(void **state) {
  (void)state;
  uint8_t buf[300];
  for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (uint8_t)(i * 131u + 7u);
  for (size_t off = 0; off < 9; off++) {
    for (size_t len = 0; len + off <= sizeof(buf); len += 7) {
      assert_int_equal(kvs_wal_crc32c(0, buf + off, len), kvs__wal_crc32c_sw(0, buf + off, len));
    }
  }
  /* Continuation: crc(a ++ b) == crc(crc(a), b). */
  uint32_t whole = kvs_wal_crc32c(0, buf, 200);
  assert_int_equal(kvs_wal_crc32c(kvs_wal_crc32c(0, buf, 77), buf + 77, 123), whole);
}

static void test_record_round_trips_key_type_payload_and_lsn(void **state) {
  (void)state;
  sq_buf_t b = {0};
  const uint8_t payload[] = {1, 2, 3, 4, 5};
  assert_int_equal(kvs__wal_rec_append(&b, 42, SQ_LATTICE_SET, "key", 3, payload, 5), 0);
  assert_int_equal(kvs__wal_rec_append(&b, 43, SQ_LATTICE_LWW, "k2", 2, NULL, 0), 0);
  assert_int_equal(b.len, kvs__wal_rec_size(3, 5) + kvs__wal_rec_size(2, 0));
  kvs__wal_rec_t rec;
  size_t used;
  assert_int_equal(kvs__wal_rec_decode(b.data, b.len, &rec, &used), 0);
  assert_int_equal(used, kvs__wal_rec_size(3, 5));
  assert_int_equal(rec.lsn, 42);
  assert_int_equal(rec.type, SQ_LATTICE_SET);
  assert_int_equal(rec.keylen, 3);
  assert_memory_equal(rec.key, "key", 3);
  assert_int_equal(rec.len, 5);
  assert_memory_equal(rec.payload, payload, 5);
  assert_int_equal(kvs__wal_rec_decode(b.data + used, b.len - used, &rec, &used), 0);
  assert_int_equal(rec.lsn, 43);
  assert_int_equal(rec.len, 0);
  sq_buf_free(&b);
}

static void test_record_with_any_flipped_bit_or_missing_byte_is_refused(void **state) {
  (void)state;
  sq_buf_t b = {0};
  const uint8_t payload[] = "payload bytes";
  assert_int_equal(kvs__wal_rec_append(&b, 7, SQ_LATTICE_LWW, "abc", 3, payload, 13), 0);
  kvs__wal_rec_t rec;
  size_t used;
  for (size_t cut = 0; cut < b.len; cut++)
    assert_int_equal(kvs__wal_rec_decode(b.data, cut, &rec, &used), SQ_ECORRUPT);
  for (size_t i = 0; i < b.len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      b.data[i] ^= (uint8_t)(1u << bit);
      assert_int_equal(kvs__wal_rec_decode(b.data, b.len, &rec, &used), SQ_ECORRUPT);
      b.data[i] ^= (uint8_t)(1u << bit);
    }
  }
  assert_int_equal(kvs__wal_rec_decode(b.data, b.len, &rec, &used), 0);
  sq_buf_free(&b);
}

static void test_oversized_key_is_refused_on_write(void **state) {
  (void)state;
  sq_buf_t b = {0};
  char *big = calloc(1, KVS_WAL_MAX_KEY + 1);
  assert_non_null(big);
  assert_int_equal(kvs__wal_rec_append(&b, 1, SQ_LATTICE_LWW, big, KVS_WAL_MAX_KEY + 1, NULL, 0),
                   SQ_ETOOBIG);
  assert_int_equal(b.len, 0);
  assert_int_equal(kvs__wal_rec_size(0, KVS_WAL_MAX_RECORD), 0);
  free(big);
}

static void test_header_round_trips_and_rejects_the_other_kind(void **state) {
  (void)state;
  uint8_t hdr[KVS__HDR_SIZE];
  kvs__wal_hdr_t h = {.tid = 3, .seq = 9, .first_lsn = 1234}, got;
  kvs__wal_hdr_encode(hdr, KVS__FILE_SEG, &h);
  assert_int_equal(kvs__wal_hdr_decode(hdr, sizeof(hdr), KVS__FILE_SEG, &got), 0);
  assert_int_equal(got.tid, 3);
  assert_int_equal(got.seq, 9);
  assert_int_equal(got.first_lsn, 1234);
  assert_int_equal(kvs__wal_hdr_decode(hdr, sizeof(hdr), KVS__FILE_SNAP, &got), SQ_ECORRUPT);
  assert_int_equal(kvs__wal_hdr_decode(hdr, sizeof(hdr) - 1, KVS__FILE_SEG, &got), SQ_ECORRUPT);
  hdr[20] ^= 1;
  assert_int_equal(kvs__wal_hdr_decode(hdr, sizeof(hdr), KVS__FILE_SEG, &got), SQ_ECORRUPT);
}

static void test_file_names_parse_back_only_for_their_tid(void **state) {
  (void)state;
  char name[64];
  kvs__file_kind_t kind;
  uint64_t seq;
  kvs__wal_name(name, sizeof(name), KVS__FILE_SEG, 12, 0xabcULL);
  assert_string_equal(name, "wal-12-0000000000000abc.log");
  assert_true(kvs__wal_name_parse(name, 12, &kind, &seq));
  assert_int_equal(kind, KVS__FILE_SEG);
  assert_int_equal(seq, 0xabc);
  assert_false(kvs__wal_name_parse(name, 1, &kind, &seq));
  kvs__wal_name(name, sizeof(name), KVS__FILE_TMP, 0, 5);
  assert_true(kvs__wal_name_parse(name, 0, &kind, &seq));
  assert_int_equal(kind, KVS__FILE_TMP);
  assert_false(kvs__wal_name_parse("wal-12-0000000000000ABC.log", 12, &kind, &seq));
  assert_false(kvs__wal_name_parse("wal-12-abc.log", 12, &kind, &seq));
  assert_false(kvs__wal_name_parse("snap-0-0000000000000005.snapx", 0, &kind, &seq));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc32c_matches_castagnoli_check_value),
      cmocka_unit_test(test_crc32c_hardware_and_table_agree_on_every_length_and_offset),
      cmocka_unit_test(test_record_round_trips_key_type_payload_and_lsn),
      cmocka_unit_test(test_record_with_any_flipped_bit_or_missing_byte_is_refused),
      cmocka_unit_test(test_oversized_key_is_refused_on_write),
      cmocka_unit_test(test_header_round_trips_and_rejects_the_other_kind),
      cmocka_unit_test(test_file_names_parse_back_only_for_their_tid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
