/* test_cache_blob: the squall object blob -- round trips, 64-byte alignment of every
 * out-of-band buffer, one canonical encoding, and rejection of hostile bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache_blob.h"
#include "sq_error.h"

/* Encodes obj into fresh 64-byte-aligned memory; *len gets the size. */
static uint8_t *encode_aligned(const cache_object_t *obj, size_t *len) {
  assert_int_equal(cache_blob_size(obj, len), 0);
  uint8_t *p = aligned_alloc(64, (*len + 63) & ~(size_t)63);
  assert_non_null(p);
  assert_int_equal(cache_blob_encode(obj, p, *len), 0);
  return p;
}

static void test_round_trip_keeps_every_field_and_aligns_buffers(void **state) {
  uint8_t meta[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const char *pickle = "\x80\x05pickle-stream";
  uint8_t b0[1] = {0xAA}, b1[100], b2[0 + 1], b3[4096];
  memset(b1, 0x11, sizeof b1);
  memset(b3, 0x33, sizeof b3);
  cache_span_t bufs[4] = {{b0, 1}, {b1, 100}, {b2, 0}, {b3, 4096}};
  cache_object_t obj = {SQ_LATTICE_LWW, meta, sizeof meta, pickle, strlen(pickle), bufs, 4};
  size_t len;
  uint8_t *p = encode_aligned(&obj, &len);
  cache_blob_t blob;
  assert_int_equal(cache_blob_parse(p, len, &blob), 0);
  assert_int_equal(blob.lattice_type, SQ_LATTICE_LWW);
  assert_int_equal(blob.meta.len, sizeof meta);
  assert_memory_equal(blob.meta.data, meta, sizeof meta);
  assert_int_equal(blob.pickle.len, strlen(pickle));
  assert_memory_equal(blob.pickle.data, pickle, strlen(pickle));
  assert_int_equal(blob.nbuffers, 4);
  for (uint32_t i = 0; i < 4; i++) {
    cache_span_t b = cache_blob_buffer(&blob, i);
    assert_int_equal(b.len, bufs[i].len);
    assert_int_equal((uintptr_t)b.data % 64, 0);
    if (b.len) assert_memory_equal(b.data, bufs[i].data, b.len);
  }
  free(p);
}

static void test_object_without_buffers_or_meta_round_trips(void **state) {
  cache_object_t obj = {SQ_LATTICE_SET, NULL, 0, "x", 1, NULL, 0};
  size_t len;
  uint8_t *p = encode_aligned(&obj, &len);
  cache_blob_t blob;
  assert_int_equal(len % 64, 0);
  assert_int_equal(cache_blob_parse(p, len, &blob), 0);
  assert_int_equal(blob.nbuffers, 0);
  assert_int_equal(blob.meta.len, 0);
  assert_memory_equal(blob.pickle.data, "x", 1);
  free(p);
}

static void test_reencoding_a_parsed_blob_gives_identical_bytes(void **state) {
  uint8_t big[3000];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7);
  cache_span_t bufs[2] = {{big, 3000}, {big + 5, 77}};
  cache_object_t obj = {SQ_LATTICE_PRIORITY, "m", 1, "pk", 2, bufs, 2}, again;
  size_t len;
  uint8_t *p = encode_aligned(&obj, &len);
  cache_blob_t blob;
  cache_span_t spans[2];
  assert_int_equal(cache_blob_parse(p, len, &blob), 0);
  cache_blob_to_object(&blob, spans, &again);
  size_t len2;
  uint8_t *q = encode_aligned(&again, &len2);
  assert_int_equal(len, len2);
  assert_memory_equal(p, q, len);
  free(p);
  free(q);
}

static void test_encode_rejects_bad_type_limits_and_wrong_size(void **state) {
  cache_object_t obj = {SQ_LATTICE_NONE, NULL, 0, "x", 1, NULL, 0};
  size_t len;
  uint8_t dst[256];
  assert_int_equal(cache_blob_size(&obj, &len), SQ_EUNKNOWNTYPE);
  obj.lattice_type = 7;
  assert_int_equal(cache_blob_size(&obj, &len), SQ_EUNKNOWNTYPE);
  obj.lattice_type = SQ_LATTICE_LWW;
  obj.meta_len = CACHE_BLOB_MAX_META + 1;
  obj.meta = dst;
  assert_int_equal(cache_blob_size(&obj, &len), SQ_ETOOBIG);
  obj.meta_len = 0;
  obj.nbuffers = 1; /* NULL buffers with a count */
  assert_int_equal(cache_blob_size(&obj, &len), SQ_EINVAL);
  obj.nbuffers = 0;
  assert_int_equal(cache_blob_size(&obj, &len), 0);
  assert_int_equal(cache_blob_encode(&obj, dst, len + 1), SQ_EINVAL);
}

static void test_parse_rejects_truncation_and_extension(void **state) {
  uint8_t b[200] = {0};
  cache_span_t bufs[1] = {{b, 200}};
  cache_object_t obj = {SQ_LATTICE_LWW, "t", 1, "pickle", 6, bufs, 1};
  size_t len;
  uint8_t *p = encode_aligned(&obj, &len);
  cache_blob_t blob;
  for (size_t cut = 0; cut < len; cut++)
    assert_int_not_equal(cache_blob_parse(p, cut, &blob), 0);
  uint8_t *longer = calloc(1, len + 64);
  memcpy(longer, p, len);
  assert_int_equal(cache_blob_parse(longer, len + 64, &blob), SQ_ECORRUPT);
  assert_int_equal(cache_blob_parse(NULL, 0, &blob), SQ_ECORRUPT);
  free(longer);
  free(p);
}

/* xorshift64*: deterministic pseudo-random bytes. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

static void test_every_single_byte_mutation_is_rejected_or_consistent(void **state) {
  uint8_t b0[70], b1[5];
  memset(b0, 1, sizeof b0);
  memset(b1, 2, sizeof b1);
  cache_span_t bufs[2] = {{b0, 70}, {b1, 5}};
  cache_object_t obj = {SQ_LATTICE_LWW, "ts", 2, "pk", 2, bufs, 2};
  size_t len;
  uint8_t *p = encode_aligned(&obj, &len);
  uint8_t *q = aligned_alloc(64, (len + 63) & ~(size_t)63);
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < len; i++) {
    for (int trial = 0; trial < 8; trial++) {
      memcpy(q, p, len);
      q[i] ^= (uint8_t)(1 + rnd(&seed) % 255);
      cache_blob_t blob;
      if (cache_blob_parse(q, len, &blob) != 0) continue;
      /* Accepted: only a payload byte changed; the structure must be intact. */
      assert_int_equal(blob.nbuffers, 2);
      assert_true(blob.pickle.data + blob.pickle.len <= q + len);
      for (uint32_t k = 0; k < 2; k++) {
        cache_span_t s = cache_blob_buffer(&blob, k);
        assert_int_equal((uintptr_t)s.data % 64, 0);
        assert_true(s.data + s.len <= q + len);
      }
    }
  }
  free(q);
  free(p);
}

static void test_random_bytes_never_parse_out_of_bounds(void **state) {
  uint64_t seed = 12345;
  uint8_t *buf = malloc(4096);
  for (int iter = 0; iter < 20000; iter++) {
    size_t len = rnd(&seed) % 4096;
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)rnd(&seed);
    if (len >= 8 && iter % 2) { /* plausible header: magic and version right */
      uint32_t m = CACHE_BLOB_MAGIC;
      memcpy(buf, &m, 4);
      buf[4] = 1;
      buf[5] = 0;
    }
    cache_blob_t blob;
    if (cache_blob_parse(buf, len, &blob) == 0) {
      assert_true(blob.pickle.data + blob.pickle.len <= buf + len);
      for (uint32_t k = 0; k < blob.nbuffers; k++) {
        cache_span_t s = cache_blob_buffer(&blob, k);
        assert_true(s.data >= buf && s.data + s.len <= buf + len);
      }
    }
  }
  free(buf);
}

static void test_huge_declared_sizes_are_rejected(void **state) {
  cache_object_t obj = {SQ_LATTICE_LWW, NULL, 0, "p", 1, NULL, 0};
  size_t len;
  uint8_t *p = encode_aligned(&obj, &len);
  uint64_t huge = UINT64_MAX - 10;
  uint8_t *q = malloc(len);
  for (size_t field = 24; field <= 40; field += 8) {
    memcpy(q, p, len);
    memcpy(q + field, &huge, 8);
    cache_blob_t blob;
    assert_int_equal(cache_blob_parse(q, len, &blob), SQ_ECORRUPT);
  }
  uint32_t many = UINT32_MAX;
  memcpy(q, p, len);
  memcpy(q + 16, &many, 4);
  cache_blob_t blob;
  assert_int_equal(cache_blob_parse(q, len, &blob), SQ_ECORRUPT);
  free(q);
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_keeps_every_field_and_aligns_buffers),
      cmocka_unit_test(test_object_without_buffers_or_meta_round_trips),
      cmocka_unit_test(test_reencoding_a_parsed_blob_gives_identical_bytes),
      cmocka_unit_test(test_encode_rejects_bad_type_limits_and_wrong_size),
      cmocka_unit_test(test_parse_rejects_truncation_and_extension),
      cmocka_unit_test(test_every_single_byte_mutation_is_rejected_or_consistent),
      cmocka_unit_test(test_random_bytes_never_parse_out_of_bounds),
      cmocka_unit_test(test_huge_declared_sizes_are_rejected),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
