/* Tests of the KVS store: merge semantics per key, type refusal, growth, snapshot
 * cursor stability. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lattice.h"
#include "sq_error.h"
#include "store.h"

static void lww_payload(sq_buf_t *out, uint64_t ts, const char *value) {
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = ts;
  l.u.lww.value.data = (uint8_t *)value;
  l.u.lww.value.len = strlen(value);
  sq_buf_reset(out);
  assert_int_equal(sq_lattice_encode(&l, out), 0);
}

static void decode_lww(const kvs_store_entry_t *e, uint64_t *ts, char *value, size_t cap) {
  sq_lattice_t l = {0};
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_LWW, e->payload, e->len, &l), 0);
  *ts = l.u.lww.timestamp;
  assert_true(l.u.lww.value.len < cap);
  memcpy(value, l.u.lww.value.data, l.u.lww.value.len);
  value[l.u.lww.value.len] = '\0';
  sq_lattice_free(&l);
}

static void test_store_merge_keeps_newest_lww_and_reports_change(void **state) {
  (void)state;
  kvs_store_t *s;
  sq_buf_t p = {0};
  bool changed;
  assert_int_equal(kvs_store_create(&s), 0);
  lww_payload(&p, 10, "ten");
  assert_int_equal(kvs_store_merge(s, "k", 1, SQ_LATTICE_LWW, p.data, p.len, &changed), 0);
  assert_true(changed);
  lww_payload(&p, 5, "five");
  assert_int_equal(kvs_store_merge(s, "k", 1, SQ_LATTICE_LWW, p.data, p.len, &changed), 0);
  assert_false(changed);
  lww_payload(&p, 20, "twenty");
  assert_int_equal(kvs_store_merge(s, "k", 1, SQ_LATTICE_LWW, p.data, p.len, &changed), 0);
  assert_true(changed);
  kvs_store_entry_t e;
  assert_int_equal(kvs_store_get(s, "k", 1, &e), 0);
  uint64_t ts;
  char value[32];
  decode_lww(&e, &ts, value, sizeof(value));
  assert_int_equal(ts, 20);
  assert_string_equal(value, "twenty");
  assert_int_equal(kvs_store_get(s, "missing", 7, &e), SQ_EKEYDNE);
  sq_buf_free(&p);
  kvs_store_destroy(s);
}

static void test_store_refuses_other_type_and_bad_payload_without_change(void **state) {
  (void)state;
  kvs_store_t *s;
  sq_buf_t p = {0};
  assert_int_equal(kvs_store_create(&s), 0);
  lww_payload(&p, 1, "v");
  assert_int_equal(kvs_store_merge(s, "k", 1, SQ_LATTICE_LWW, p.data, p.len, NULL), 0);
  assert_int_equal(kvs_store_merge(s, "k", 1, SQ_LATTICE_SET, p.data, p.len, NULL),
                   SQ_ELATTICE);
  const uint8_t garbage[] = {0xff, 0xff, 0xff};
  assert_int_not_equal(kvs_store_merge(s, "g", 1, SQ_LATTICE_LWW, garbage, 3, NULL), 0);
  assert_int_equal(kvs_store_merge(s, "n", 1, SQ_LATTICE_NONE, p.data, p.len, NULL),
                   SQ_EUNKNOWNTYPE);
  kvs_store_entry_t e;
  assert_int_equal(kvs_store_get(s, "g", 1, &e), SQ_EKEYDNE);
  assert_int_equal(kvs_store_get(s, "k", 1, &e), 0);
  assert_int_equal(e.type, SQ_LATTICE_LWW);
  assert_int_equal(kvs_store_count(s), 1);
  sq_buf_free(&p);
  kvs_store_destroy(s);
}

static void test_store_grows_and_entry_indices_never_move(void **state) {
  (void)state;
  kvs_store_t *s;
  sq_buf_t p = {0};
  char key[32];
  assert_int_equal(kvs_store_create(&s), 0);
  for (int i = 0; i < 50000; i++) {
    int n = snprintf(key, sizeof(key), "key-%d", i);
    lww_payload(&p, (uint64_t)i + 1, key);
    assert_int_equal(kvs_store_merge(s, key, (size_t)n, SQ_LATTICE_LWW, p.data, p.len, NULL), 0);
    if (i == 100) { /* a snapshot cursor taken early must still name the same keys */
      kvs_store_entry_t e;
      kvs_store_entry_at(s, 7, &e);
      assert_memory_equal(e.key, "key-7", 5);
    }
  }
  assert_int_equal(kvs_store_count(s), 50000);
  for (size_t i = 0; i < 50000; i += 997) {
    kvs_store_entry_t e;
    kvs_store_entry_at(s, i, &e);
    int n = snprintf(key, sizeof(key), "key-%zu", i);
    assert_int_equal(e.keylen, (size_t)n);
    assert_memory_equal(e.key, key, (size_t)n);
    kvs_store_entry_t g;
    assert_int_equal(kvs_store_get(s, key, (size_t)n, &g), 0);
    assert_ptr_equal(g.payload, e.payload);
  }
  kvs_store_stats_t st;
  kvs_store_stats(s, &st);
  assert_int_equal(st.keys, 50000);
  sq_buf_free(&p);
  kvs_store_destroy(s);
}

static void test_store_prefetch_of_present_and_absent_keys_changes_nothing(void **state) {
  (void)state;
  kvs_store_t *s;
  sq_buf_t p = {0};
  char key[32];
  assert_int_equal(kvs_store_create(&s), 0);
  for (int i = 0; i < 3000; i++) { /* enough to grow the index and collide */
    int n = snprintf(key, sizeof(key), "k%d", i);
    lww_payload(&p, (uint64_t)i + 1, key);
    assert_int_equal(kvs_store_merge(s, key, (size_t)n, SQ_LATTICE_LWW, p.data, p.len, NULL), 0);
  }
  /* Every step on every key, present (k0..k2999) or absent (k3000..k5999). */
  for (int step = 0; step < 4; step++)
    for (int i = 0; i < 6000; i++) {
      int n = snprintf(key, sizeof(key), "k%d", i);
      kvs_store_key_t k;
      kvs_store_key(&k, key, (size_t)n);
      kvs_store_prefetch(s, &k, step);
    }
  assert_int_equal(kvs_store_count(s), 3000);
  for (int i = 0; i < 6000; i++) {
    int n = snprintf(key, sizeof(key), "k%d", i);
    kvs_store_entry_t e;
    int rc = kvs_store_get(s, key, (size_t)n, &e);
    if (i >= 3000) {
      assert_int_equal(rc, SQ_EKEYDNE);
      continue;
    }
    assert_int_equal(rc, 0);
    uint64_t ts;
    char value[32];
    decode_lww(&e, &ts, value, sizeof(value));
    assert_int_equal(ts, (uint64_t)i + 1);
    assert_string_equal(value, key);
  }
  sq_buf_free(&p);
  kvs_store_destroy(s);
}

/* Large overwrites hand allocations between the entries and the store's scratch
 * buffer instead of copying: each key must still hold exactly its own newest bytes. */
static void test_store_large_overwrites_of_many_keys_never_share_bytes(void **state) {
  (void)state;
  kvs_store_t *s;
  sq_buf_t p = {0}, want[4] = {{0}};
  char key[8], value[2100];
  assert_int_equal(kvs_store_create(&s), 0);
  for (int round = 0; round < 60; round++) {
    for (int k = 0; k < 4; k++) {
      size_t size = 256 + (size_t)((round * 7 + k * 13) % 8) * 230;
      memset(value, 'a' + (round + k) % 26, size);
      value[size] = '\0';
      lww_payload(&want[k], (uint64_t)round + 1, value);
      snprintf(key, sizeof(key), "big%d", k);
      kvs_store_key_t view;
      kvs_store_key(&view, key, strlen(key));
      bool changed = false;
      assert_int_equal(kvs_store_merge_key(s, &view, SQ_LATTICE_LWW, want[k].data,
                                           want[k].len, &changed), 0);
      assert_true(changed);
    }
    for (int k = 0; k < 4; k++) {
      snprintf(key, sizeof(key), "big%d", k);
      kvs_store_entry_t e;
      assert_int_equal(kvs_store_get(s, key, strlen(key), &e), 0);
      assert_int_equal(e.len, want[k].len);
      assert_memory_equal(e.payload, want[k].data, e.len);
    }
  }
  kvs_store_stats_t st;
  kvs_store_stats(s, &st);
  assert_int_equal(st.payload_bytes, want[0].len + want[1].len + want[2].len + want[3].len);
  for (int k = 0; k < 4; k++) sq_buf_free(&want[k]);
  sq_buf_free(&p);
  kvs_store_destroy(s);
}

static void test_store_overwrites_of_any_size_keep_exactly_the_newest_bytes(void **state) {
  (void)state;
  kvs_store_t *s;
  sq_buf_t p = {0};
  static const size_t sizes[] = {1, 10000, 10000, 5, 3000, 9000, 2, 0, 700};
  char value[10001];
  assert_int_equal(kvs_store_create(&s), 0);
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    memset(value, (int)('a' + i), sizes[i]);
    value[sizes[i]] = '\0';
    lww_payload(&p, i + 1, value);
    bool changed = false;
    assert_int_equal(kvs_store_merge(s, "k", 1, SQ_LATTICE_LWW, p.data, p.len, &changed), 0);
    assert_true(changed);
    kvs_store_entry_t e;
    assert_int_equal(kvs_store_get(s, "k", 1, &e), 0);
    assert_int_equal(e.len, p.len);
    assert_memory_equal(e.payload, p.data, p.len);
    kvs_store_stats_t st;
    kvs_store_stats(s, &st);
    assert_int_equal(st.payload_bytes, p.len);
  }
  /* An older write changes nothing, whatever its size. */
  memset(value, 'z', 9000);
  value[9000] = '\0';
  lww_payload(&p, 1, value);
  bool changed = true;
  assert_int_equal(kvs_store_merge(s, "k", 1, SQ_LATTICE_LWW, p.data, p.len, &changed), 0);
  assert_false(changed);
  kvs_store_entry_t e;
  uint64_t ts;
  assert_int_equal(kvs_store_get(s, "k", 1, &e), 0);
  decode_lww(&e, &ts, value, sizeof(value));
  assert_int_equal(ts, sizeof(sizes) / sizeof(sizes[0]));
  assert_int_equal(strlen(value), 700);
  sq_buf_free(&p);
  kvs_store_destroy(s);
}

static void test_store_set_values_are_stored_canonical(void **state) {
  (void)state;
  kvs_store_t *s;
  assert_int_equal(kvs_store_create(&s), 0);
  /* SetValue{values: "b", "a", "b"} hand-encoded: tag 0x0a, length, bytes. */
  const uint8_t unsorted[] = {0x0a, 1, 'b', 0x0a, 1, 'a', 0x0a, 1, 'b'};
  const uint8_t canonical[] = {0x0a, 1, 'a', 0x0a, 1, 'b'};
  assert_int_equal(kvs_store_merge(s, "s", 1, SQ_LATTICE_SET, unsorted, sizeof(unsorted), NULL), 0);
  kvs_store_entry_t e;
  assert_int_equal(kvs_store_get(s, "s", 1, &e), 0);
  assert_int_equal(e.len, sizeof(canonical));
  assert_memory_equal(e.payload, canonical, sizeof(canonical));
  const uint8_t more[] = {0x0a, 1, 'c'};
  bool changed = false;
  assert_int_equal(kvs_store_merge(s, "s", 1, SQ_LATTICE_SET, more, sizeof(more), &changed), 0);
  assert_true(changed);
  assert_int_equal(kvs_store_get(s, "s", 1, &e), 0);
  const uint8_t all[] = {0x0a, 1, 'a', 0x0a, 1, 'b', 0x0a, 1, 'c'};
  assert_int_equal(e.len, sizeof(all));
  assert_memory_equal(e.payload, all, sizeof(all));
  kvs_store_destroy(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_store_merge_keeps_newest_lww_and_reports_change),
      cmocka_unit_test(test_store_refuses_other_type_and_bad_payload_without_change),
      cmocka_unit_test(test_store_grows_and_entry_indices_never_move),
      cmocka_unit_test(test_store_set_values_are_stored_canonical),
      cmocka_unit_test(test_store_overwrites_of_any_size_keep_exactly_the_newest_bytes),
      cmocka_unit_test(test_store_large_overwrites_of_many_keys_never_share_bytes),
      cmocka_unit_test(test_store_prefetch_of_present_and_absent_keys_changes_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
