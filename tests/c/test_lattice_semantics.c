/* test_lattice_semantics: named merge behaviours, canonical encodings and the
 * timestamp format of lattice.h, each pinned on hand-picked values or hand-written
 * wire bytes (so field numbers and tie-breaks cannot drift silently).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "anna.pb-c.h"
#include "lattice.h"
#include "lattice_int.h"
#include "sq_error.h"
#include "vclock.h"

#define B(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

static sq_lattice_t lww(uint64_t ts, const char *v) {
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = ts;
  assert_int_equal(lattice__bytes_dup(&l.u.lww.value, (const uint8_t *)v, strlen(v)), 0);
  return l;
}

static sq_lattice_t prio(double p, const char *v) {
  sq_lattice_t l = {.type = SQ_LATTICE_PRIORITY};
  l.u.priority.priority = p;
  assert_int_equal(lattice__bytes_dup(&l.u.priority.value, (const uint8_t *)v, strlen(v)), 0);
  return l;
}

static sq_lattice_t decoded(sq_lattice_type_t t, const uint8_t *p, size_t n) {
  sq_lattice_t l;
  assert_int_equal(sq_lattice_decode(t, p, n, &l), 0);
  return l;
}

static void assert_value(const sq_bytes_t *b, const char *want) {
  assert_int_equal(b->len, strlen(want));
  if (b->len) assert_memory_equal(b->data, want, b->len);
}

static void assert_encodes_to(const sq_lattice_t *l, const uint8_t *want, size_t n) {
  sq_buf_t out = {0};
  assert_int_equal(sq_lattice_encode(l, &out), 0);
  assert_int_equal(out.len, n);
  if (n) assert_memory_equal(out.data, want, n);
  sq_buf_free(&out);
}

/* merge(a, b) and merge(b, a) both, checked equal; returns the first. */
static sq_lattice_t join(const sq_lattice_t *a, const sq_lattice_t *b) {
  sq_lattice_t x, y;
  assert_int_equal(sq_lattice_copy(&x, a), 0);
  assert_int_equal(sq_lattice_copy(&y, b), 0);
  assert_int_equal(sq_lattice_merge(&x, b, NULL), 0);
  assert_int_equal(sq_lattice_merge(&y, a, NULL), 0);
  assert_true(sq_lattice_equal(&x, &y));
  sq_lattice_free(&y);
  return x;
}

static void test_lww_newer_timestamp_wins(void **state) {
  (void)state;
  sq_lattice_t old = lww(5, "zzz"), newer = lww(6, "aaa");
  sq_lattice_t j = join(&old, &newer);
  assert_int_equal(j.u.lww.timestamp, 6);
  assert_value(&j.u.lww.value, "aaa");
  bool changed = true;
  assert_int_equal(sq_lattice_merge(&j, &old, &changed), 0);
  assert_false(changed);
  sq_lattice_free(&j);
  sq_lattice_free(&old);
  sq_lattice_free(&newer);
}

static void test_lww_tie_is_broken_by_larger_bytes(void **state) {
  (void)state;
  sq_lattice_t a = lww(7, "a"), b = lww(7, "b"), ab = lww(7, "ab");
  sq_lattice_t j1 = join(&a, &b), j2 = join(&a, &ab);
  assert_value(&j1.u.lww.value, "b");
  assert_value(&j2.u.lww.value, "ab"); /* equal prefix: the longer is larger */
  sq_lattice_t *all[] = {&a, &b, &ab, &j1, &j2};
  for (int i = 0; i < 5; i++) sq_lattice_free(all[i]);
}

static void test_priority_lower_wins_and_tie_takes_smaller_bytes(void **state) {
  (void)state;
  sq_lattice_t hi = prio(2.5, "a"), lo = prio(-1.0, "z"), tie = prio(-1.0, "y");
  sq_lattice_t j = join(&hi, &lo);
  assert_true(j.u.priority.priority == -1.0);
  assert_value(&j.u.priority.value, "z");
  sq_lattice_t k = join(&j, &tie);
  assert_value(&k.u.priority.value, "y");
  sq_lattice_t *all[] = {&hi, &lo, &tie, &j, &k};
  for (int i = 0; i < 5; i++) sq_lattice_free(all[i]);
}

static void test_set_merge_is_union(void **state) {
  (void)state;
  /* SetValue{values: "b","a"} and {"c","a"} */
  sq_lattice_t a = decoded(SQ_LATTICE_SET, B("\x0a\x01" "b" "\x0a\x01" "a"));
  sq_lattice_t b = decoded(SQ_LATTICE_SET, B("\x0a\x01" "c" "\x0a\x01" "a"));
  sq_lattice_t j = join(&a, &b);
  assert_int_equal(j.u.set.count, 3);
  assert_value(&j.u.set.items[0], "a");
  assert_value(&j.u.set.items[1], "b");
  assert_value(&j.u.set.items[2], "c");
  sq_lattice_free(&a);
  sq_lattice_free(&b);
  sq_lattice_free(&j);
}

static void test_ordered_set_encodes_ascending_without_duplicates(void **state) {
  (void)state;
  sq_lattice_t s = decoded(SQ_LATTICE_ORDERED_SET,
                           B("\x0a\x01" "c" "\x0a\x02" "ab" "\x0a\x01" "a" "\x0a\x01" "c" "\x0a\x00"));
  assert_encodes_to(&s, B("\x0a\x00" "\x0a\x01" "a" "\x0a\x02" "ab" "\x0a\x01" "c"));
  sq_lattice_free(&s);
}

/* A single-key causal value with one sibling `v` at clock {a: ca, b: cb}. */
static sq_lattice_t causal1(uint32_t ca, uint32_t cb, const char *v) {
  sq_lattice_t l = {.type = SQ_LATTICE_SINGLE_CAUSAL};
  sq_sibling_t *s = calloc(1, sizeof *s);
  assert_non_null(s);
  assert_int_equal(sq_vclock_set(&s->clock, "a", ca), 0);
  assert_int_equal(sq_vclock_set(&s->clock, "b", cb), 0);
  assert_int_equal(lattice__bytes_dup(&s->value, (const uint8_t *)v, strlen(v)), 0);
  assert_int_equal(lattice__causal_build(s, 1, &l.u.single), 0);
  return l;
}

static void test_causal_dominating_incoming_replaces_dominated_is_ignored(void **state) {
  (void)state;
  sq_lattice_t old = causal1(1, 0, "old"), newer = causal1(2, 1, "new");
  sq_lattice_t j = join(&old, &newer);
  assert_int_equal(j.u.single.nsiblings, 1);
  assert_value(&j.u.single.siblings[0].value, "new");
  assert_true(sq_lattice_equal(&j, &newer));
  bool changed = true;
  assert_int_equal(sq_lattice_merge(&j, &old, &changed), 0);
  assert_false(changed);
  sq_lattice_free(&old);
  sq_lattice_free(&newer);
  sq_lattice_free(&j);
}

static void test_causal_concurrent_keeps_both_with_own_clocks(void **state) {
  (void)state;
  sq_lattice_t x = causal1(1, 0, "x"), y = causal1(0, 1, "y");
  sq_lattice_t j = join(&x, &y);
  assert_int_equal(j.u.single.nsiblings, 2);
  assert_value(&j.u.single.siblings[0].value, "x");
  assert_int_equal(sq_vclock_get(&j.u.single.siblings[0].clock, "a"), 1);
  assert_int_equal(sq_vclock_get(&j.u.single.siblings[0].clock, "b"), 0);
  assert_value(&j.u.single.siblings[1].value, "y");
  assert_int_equal(sq_vclock_get(&j.u.single.clock, "a"), 1); /* top = pointwise max */
  assert_int_equal(sq_vclock_get(&j.u.single.clock, "b"), 1);
  /* clock {a:1,b:1}, values x y, sibling_clocks {a:1} {b:1} */
  assert_encodes_to(&j, B("\x0a\x05\x0a\x01" "a" "\x10\x01" "\x0a\x05\x0a\x01" "b" "\x10\x01"
                          "\x12\x01" "x" "\x12\x01" "y"
                          "\x1a\x07\x0a\x05\x0a\x01" "a" "\x10\x01" "\x1a\x07\x0a\x05\x0a\x01" "b" "\x10\x01"));
  sq_lattice_free(&x);
  sq_lattice_free(&y);
  sq_lattice_free(&j);
}

/* Anna's single-clock merge gives (A u B) u C = {x,y,z} but A u (B u C) = {z}; with
 * per-sibling clocks C dominates x and y either way. */
static void test_causal_merge_is_associative_on_annas_counterexample(void **state) {
  (void)state;
  sq_lattice_t a = causal1(1, 0, "x"), b = causal1(0, 1, "y"), c = causal1(1, 1, "z");
  sq_lattice_t ab = join(&a, &b), ab_c = join(&ab, &c), bc = join(&b, &c), a_bc = join(&a, &bc);
  assert_true(sq_lattice_equal(&ab_c, &a_bc));
  assert_true(sq_lattice_equal(&ab_c, &c));
  sq_lattice_t *all[] = {&a, &b, &c, &ab, &ab_c, &bc, &a_bc};
  for (int i = 0; i < 7; i++) sq_lattice_free(all[i]);
}

static void test_anna_causal_payload_gives_every_sibling_the_top_clock(void **state) {
  (void)state;
  /* SingleKeyCausalValue{vector_clock {n2:1, n1:2}, values "v2","v1"}: no field 3 */
  const uint8_t anna[] = "\x0a\x06\x0a\x02n2\x10\x01" "\x0a\x06\x0a\x02n1\x10\x02"
                         "\x12\x02v2" "\x12\x02v1";
  sq_lattice_t l = decoded(SQ_LATTICE_SINGLE_CAUSAL, anna, sizeof anna - 1);
  assert_int_equal(l.u.single.nsiblings, 2);
  for (size_t i = 0; i < 2; i++) assert_true(sq_vclock_equal(&l.u.single.siblings[i].clock, &l.u.single.clock));
  assert_int_equal(sq_vclock_get(&l.u.single.clock, "n1"), 2);
  assert_value(&l.u.single.siblings[0].value, "v1");
  /* re-encoded canonically, still Anna-shaped (no sibling_clocks) */
  assert_encodes_to(&l, B("\x0a\x06\x0a\x02n1\x10\x02" "\x0a\x06\x0a\x02n2\x10\x01" "\x12\x02v1" "\x12\x02v2"));
  sq_lattice_free(&l);
}

static void test_multi_causal_dependencies_merge_pointwise_and_match_protobuf(void **state) {
  (void)state;
  sq_lattice_t a = {.type = SQ_LATTICE_MULTI_CAUSAL}, b;
  sq_lattice_t one = causal1(1, 0, "x");
  a.u.multi.causal = one.u.single;
  a.u.multi.deps = calloc(1, sizeof *a.u.multi.deps);
  a.u.multi.ndeps = 1;
  a.u.multi.deps[0].key = strdup("k");
  assert_int_equal(sq_vclock_set(&a.u.multi.deps[0].clock, "a", 3), 0);
  assert_int_equal(sq_lattice_copy(&b, &a), 0);
  assert_int_equal(sq_vclock_set(&b.u.multi.deps[0].clock, "a", 1), 0);
  assert_int_equal(sq_vclock_set(&b.u.multi.deps[0].clock, "b", 4), 0);
  sq_lattice_t j = join(&a, &b);
  assert_int_equal(j.u.multi.ndeps, 1);
  assert_int_equal(sq_vclock_get(&j.u.multi.deps[0].clock, "a"), 3);
  assert_int_equal(sq_vclock_get(&j.u.multi.deps[0].clock, "b"), 4);
  /* protobuf-c reads our bytes with the same field numbers */
  sq_buf_t e = {0};
  assert_int_equal(sq_lattice_encode(&j, &e), 0);
  MultiKeyCausalValue *m = multi_key_causal_value__unpack(NULL, e.len, e.data);
  assert_non_null(m);
  assert_int_equal(m->n_values, 1);
  assert_int_equal(m->n_dependencies, 1);
  assert_string_equal(m->dependencies[0]->key, "k");
  assert_int_equal(m->dependencies[0]->n_vector_clock, 2);
  assert_int_equal(m->n_sibling_clocks, 0);
  multi_key_causal_value__free_unpacked(m, NULL);
  sq_buf_free(&e);
  sq_lattice_free(&a);
  sq_lattice_free(&b);
  sq_lattice_free(&j);
}

static void test_protobuf_c_sibling_clocks_decode_per_sibling(void **state) {
  (void)state;
  SingleKeyCausalValue v = SINGLE_KEY_CAUSAL_VALUE__INIT;
  SiblingClock c0 = SIBLING_CLOCK__INIT, c1 = SIBLING_CLOCK__INIT, *cs[] = {&c0, &c1};
  SiblingClock__VectorClockEntry e0 = SIBLING_CLOCK__VECTOR_CLOCK_ENTRY__INIT, *p0 = &e0;
  SiblingClock__VectorClockEntry e1 = SIBLING_CLOCK__VECTOR_CLOCK_ENTRY__INIT, *p1 = &e1;
  ProtobufCBinaryData vals[] = {{1, (uint8_t *)"p"}, {1, (uint8_t *)"q"}};
  e0.key = "a", e0.value = 1, e1.key = "b", e1.value = 1;
  c0.n_vector_clock = c1.n_vector_clock = 1;
  c0.vector_clock = &p0, c1.vector_clock = &p1;
  v.n_values = 2, v.values = vals, v.n_sibling_clocks = 2, v.sibling_clocks = cs;
  uint8_t buf[128];
  size_t n = single_key_causal_value__pack(&v, buf);
  sq_lattice_t l = decoded(SQ_LATTICE_SINGLE_CAUSAL, buf, n);
  sq_lattice_t want = causal1(1, 0, "p"), q = causal1(0, 1, "q");
  assert_int_equal(sq_lattice_merge(&want, &q, NULL), 0);
  assert_true(sq_lattice_equal(&l, &want)); /* top clock recomputed: wire had none */
  sq_lattice_free(&l);
  sq_lattice_free(&want);
  sq_lattice_free(&q);
}

static void test_empty_values_count_as_empty(void **state) {
  (void)state;
  sq_lattice_t l = lww(9, ""), p = prio(1, ""), full = lww(9, "x");
  sq_lattice_t s = decoded(SQ_LATTICE_SET, NULL, 0);
  sq_lattice_t c = decoded(SQ_LATTICE_SINGLE_CAUSAL, B("\x0a\x05\x0a\x01" "a" "\x10\x01"));
  assert_true(sq_lattice_is_empty(&l));
  assert_true(sq_lattice_is_empty(&p));
  assert_true(sq_lattice_is_empty(&s));
  assert_true(sq_lattice_is_empty(&c)); /* a clock but no values */
  assert_false(sq_lattice_is_empty(&full));
  sq_lattice_t *all[] = {&l, &p, &full, &s, &c};
  for (int i = 0; i < 5; i++) sq_lattice_free(all[i]);
}

static void test_merge_of_different_types_fails_and_leaves_target_unchanged(void **state) {
  (void)state;
  sq_lattice_t l = lww(3, "keep"), p = prio(0, "other"), before;
  assert_int_equal(sq_lattice_copy(&before, &l), 0);
  bool changed = true;
  assert_int_equal(sq_lattice_merge(&l, &p, &changed), SQ_ELATTICE);
  assert_false(changed);
  assert_true(sq_lattice_equal(&l, &before));
  sq_lattice_t set = decoded(SQ_LATTICE_SET, B("\x0a\x01" "a")), oset;
  oset = decoded(SQ_LATTICE_ORDERED_SET, B("\x0a\x01" "b"));
  assert_int_equal(sq_lattice_merge(&set, &oset, NULL), SQ_ELATTICE);
  assert_int_equal(set.u.set.count, 1);
  sq_lattice_t *all[] = {&l, &p, &before, &set, &oset};
  for (int i = 0; i < 5; i++) sq_lattice_free(all[i]);
}

static void test_nan_priority_is_rejected_and_negative_zero_normalised(void **state) {
  (void)state;
  sq_lattice_t l;
  const uint8_t nan[] = {0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 0x12, 0x01, 'v'};
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_PRIORITY, nan, sizeof nan, &l), SQ_EBADLATTICE);
  assert_int_equal(l.type, SQ_LATTICE_NONE);
  assert_int_equal(sq_lattice_validate(SQ_LATTICE_PRIORITY, nan, sizeof nan), SQ_EBADLATTICE);
  const uint8_t negzero[] = {0x09, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x12, 0x01, 'v'};
  l = decoded(SQ_LATTICE_PRIORITY, negzero, sizeof negzero);
  assert_false(signbit(l.u.priority.priority));
  assert_encodes_to(&l, B("\x12\x01v"));
  sq_lattice_free(&l);
}

static void test_decode_normalises_protobuf_variations(void **state) {
  (void)state;
  /* LWW: unknown field 7 skipped, timestamp given twice (last wins) */
  sq_lattice_t l = decoded(SQ_LATTICE_LWW, B("\x08\x05" "\x38\x01" "\x12\x01" "v" "\x08\x09"));
  assert_int_equal(l.u.lww.timestamp, 9);
  assert_encodes_to(&l, B("\x08\x09\x12\x01v"));
  sq_lattice_free(&l);
  /* a clock naming a twice (max kept) and b at 0 (dropped) */
  l = decoded(SQ_LATTICE_SINGLE_CAUSAL, B("\x0a\x05\x0a\x01" "a" "\x10\x03" "\x0a\x05\x0a\x01" "a" "\x10\x01"
                                          "\x0a\x05\x0a\x01" "b" "\x10\x00" "\x12\x01" "v"));
  assert_int_equal(l.u.single.clock.count, 1);
  assert_int_equal(sq_vclock_get(&l.u.single.clock, "a"), 3);
  sq_lattice_free(&l);
}

static void test_decode_rejects_malformed_shapes(void **state) {
  (void)state;
  sq_lattice_t l;
  /* sibling_clocks count differs from values count */
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_SINGLE_CAUSAL, B("\x12\x01" "v" "\x12\x01" "w" "\x1a\x00"), &l),
                   SQ_EBADLATTICE);
  /* LWW timestamp with the wrong wire type; truncated bytes; group wire type */
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_LWW, B("\x0a\x01" "v"), &l), SQ_EBADLATTICE);
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_SET, B("\x0a\x05" "v"), &l), SQ_EBADLATTICE);
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_SET, B("\x0b"), &l), SQ_EBADLATTICE);
  /* node id with a NUL byte; counter above UINT32_MAX */
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_SINGLE_CAUSAL, B("\x0a\x05\x0a\x01\x00\x10\x01"), &l),
                   SQ_EBADLATTICE);
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_SINGLE_CAUSAL,
                                     B("\x0a\x09\x0a\x01" "a" "\x10\x80\x80\x80\x80\x10"), &l),
                   SQ_EBADLATTICE);
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_NONE, NULL, 0, &l), SQ_EUNKNOWNTYPE);
  assert_int_equal(sq_lattice_decode((sq_lattice_type_t)9, NULL, 0, &l), SQ_EUNKNOWNTYPE);
  assert_int_equal(l.type, SQ_LATTICE_NONE);
}

static void test_decode_rejects_more_siblings_than_the_limit(void **state) {
  (void)state;
  sq_buf_t b = {0};
  sq_lattice_t l;
  assert_int_equal(sq_buf_reserve(&b, 8 * (SQ_LATTICE_MAX_SIBLINGS + 1)), 0);
  for (uint32_t i = 0; i <= SQ_LATTICE_MAX_SIBLINGS; i++) {
    uint8_t v[6] = {0x12, 4, (uint8_t)i, (uint8_t)(i >> 8), 'v', 'v'};
    assert_int_equal(sq_buf_append(&b, v, sizeof v), 0);
  }
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_SINGLE_CAUSAL, b.data, b.len, &l), SQ_EBADLATTICE);
  assert_int_equal(sq_lattice_decode(SQ_LATTICE_SINGLE_CAUSAL, b.data, b.len - 6, &l), 0);
  assert_int_equal(l.u.single.nsiblings, SQ_LATTICE_MAX_SIBLINGS);
  sq_lattice_free(&l);
  sq_buf_free(&b);
}

/* 1024 concurrent siblings, value i at clock {n<base+i>: 1}, as a squall payload. */
static sq_lattice_t many_concurrent(uint32_t base) {
  sq_buf_t b = {0};
  char node[16];
  for (int pass = 0; pass < 2; pass++)
    for (uint32_t i = 0; i < SQ_LATTICE_MAX_SIBLINGS; i++) {
      int n = snprintf(node, sizeof node, "n%05u", base + i);
      uint8_t rec[32] = {0x1a, (uint8_t)(n + 6), 0x0a, (uint8_t)(n + 4), 0x0a, (uint8_t)n};
      size_t len = 6;
      if (pass == 0) { /* values: field 2, the node name as the value */
        rec[0] = 0x12, rec[1] = (uint8_t)n;
        len = 2;
      }
      memcpy(rec + len, node, (size_t)n);
      len += (size_t)n;
      if (pass == 1) rec[len++] = 0x10, rec[len++] = 0x01;
      assert_int_equal(sq_buf_append(&b, rec, len), 0);
    }
  sq_lattice_t l = decoded(SQ_LATTICE_SINGLE_CAUSAL, b.data, b.len);
  sq_buf_free(&b);
  return l;
}

static void test_causal_merge_above_the_sibling_limit_fails_unchanged(void **state) {
  (void)state;
  sq_lattice_t a = many_concurrent(0), b = many_concurrent(SQ_LATTICE_MAX_SIBLINGS), before;
  assert_int_equal(a.u.single.nsiblings, SQ_LATTICE_MAX_SIBLINGS);
  assert_int_equal(a.u.single.clock.count, SQ_LATTICE_MAX_SIBLINGS);
  assert_int_equal(sq_lattice_copy(&before, &a), 0);
  assert_int_equal(sq_lattice_merge(&a, &b, NULL), SQ_ETOOBIG);
  assert_true(sq_lattice_equal(&a, &before));
  sq_lattice_free(&a);
  sq_lattice_free(&b);
  sq_lattice_free(&before);
}

static void test_merge_canonicalises_hand_built_causal_values(void **state) {
  (void)state;
  /* siblings out of order, a duplicate, one dominated, no top clock */
  sq_lattice_t l = {.type = SQ_LATTICE_SINGLE_CAUSAL}, empty = {.type = SQ_LATTICE_SINGLE_CAUSAL};
  const struct { uint32_t a, b; const char *v; } in[] = {{1, 1, "z"}, {1, 0, "old"}, {0, 2, "y"}, {1, 1, "z"}};
  l.u.single.siblings = calloc(4, sizeof(sq_sibling_t));
  for (size_t i = 0; i < 4; i++, l.u.single.nsiblings++) {
    sq_sibling_t *s = &l.u.single.siblings[i];
    assert_int_equal(sq_vclock_set(&s->clock, "a", in[i].a), 0);
    assert_int_equal(sq_vclock_set(&s->clock, "b", in[i].b), 0);
    assert_int_equal(lattice__bytes_dup(&s->value, (const uint8_t *)in[i].v, strlen(in[i].v)), 0);
  }
  bool changed = false;
  assert_int_equal(sq_lattice_merge(&l, &empty, &changed), 0);
  assert_true(changed);
  assert_int_equal(l.u.single.nsiblings, 2); /* "old" at {a:1} is dominated by z */
  assert_value(&l.u.single.siblings[0].value, "y");
  assert_value(&l.u.single.siblings[1].value, "z");
  assert_int_equal(sq_vclock_get(&l.u.single.clock, "a"), 1);
  assert_int_equal(sq_vclock_get(&l.u.single.clock, "b"), 2);
  sq_lattice_free(&l);
}

static void test_merge_payloads_reports_change_and_keeps_out_on_error(void **state) {
  (void)state;
  sq_buf_t out = {0};
  bool changed = true;
  assert_int_equal(sq_buf_append(&out, "pre", 3), 0);
  /* LWW (5,"a") vs (5,"a") with an unknown field: equal lattices, not changed */
  assert_int_equal(sq_lattice_merge_payloads(SQ_LATTICE_LWW, B("\x08\x05\x12\x01" "a"),
                                             B("\x12\x01" "a" "\x08\x05\x38\x00"), &out, &changed), 0);
  assert_false(changed);
  assert_int_equal(out.len, 3 + 5);
  assert_memory_equal(out.data, "pre\x08\x05\x12\x01" "a", 8);
  /* a malformed side leaves out untouched */
  out.len = 3;
  assert_int_equal(sq_lattice_merge_payloads(SQ_LATTICE_PRIORITY, B("\x09\x00"), B(""), &out, &changed),
                   SQ_EBADLATTICE);
  assert_int_equal(sq_lattice_merge_payloads(SQ_LATTICE_SET, B("\x0a\x01" "a"), B("\x0a\x09"), &out, &changed),
                   SQ_EBADLATTICE);
  assert_int_equal(out.len, 3);
  /* priority: incoming lower wins, changed */
  assert_int_equal(sq_lattice_merge_payloads(SQ_LATTICE_PRIORITY, B("\x12\x01" "a"),
                                             B("\x09\x00\x00\x00\x00\x00\x00\xf0\xbf\x12\x01" "b"),
                                             &out, &changed), 0);
  assert_true(changed);
  assert_memory_equal(out.data + 3, "\x09\x00\x00\x00\x00\x00\x00\xf0\xbf\x12\x01" "b", 12);
  sq_buf_free(&out);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void test_lww_timestamp_is_now_ms_times_power_of_ten_plus_id(void **state) {
  (void)state;
  const struct { uint32_t id; uint64_t scale; } cases[] = {
      {0, 10}, {7, 10}, {9, 10}, {10, 100}, {99, 100}, {100, 1000}, {123456, 1000000}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    uint64_t before = now_ms();
    uint64_t ts = sq_lww_timestamp(cases[i].id, NULL);
    uint64_t after = now_ms();
    assert_int_equal(ts % cases[i].scale, cases[i].id);
    assert_in_range(ts / cases[i].scale, before, after);
  }
}

static void test_lww_timestamp_strictly_increases_per_slot(void **state) {
  (void)state;
  uint64_t last = 0, prev = 0;
  for (int i = 0; i < 20000; i++) {
    uint64_t ts = sq_lww_timestamp(42, &last);
    assert_true(ts > prev);
    assert_int_equal(ts % 100, 42);
    prev = ts;
  }
  /* a slot ahead of the wall clock (clock stepped back): the next millisecond slot */
  last = (now_ms() + 60000) * 100 + 42;
  uint64_t ahead = last;
  assert_int_equal(sq_lww_timestamp(42, &last), ahead + 100);
}

/* Anna's scale would make writer 12's stamp (ms*100+12) beat writer 3's stamp made a
 * second later (ms'*10+3); squall's writers share one scale, so the later one wins. */
static void test_writer_timestamps_of_any_ids_order_by_time_not_by_id(void **state) {
  (void)state;
  uint64_t wide_last = 0, narrow_last = 0;
  uint64_t wide = sq_lww_writer_timestamp(12, &wide_last);
  uint64_t anna_wide = sq_lww_timestamp(12, NULL);
  narrow_last = wide_last + 10; /* the narrow writer writes one millisecond later */
  uint64_t narrow = sq_lww_writer_timestamp(3, &narrow_last);
  assert_true(narrow > wide);
  assert_true(anna_wide > narrow); /* what Anna's own scale would have done */
  assert_int_equal(wide % 10, 2);
  assert_int_equal(narrow % 10, 3);
  uint64_t before = now_ms(), ts = sq_lww_writer_timestamp(1001, NULL), after = now_ms();
  assert_int_equal(ts % 10, 1);
  assert_in_range(ts / 10, before, after);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_writer_timestamps_of_any_ids_order_by_time_not_by_id),
      cmocka_unit_test(test_lww_newer_timestamp_wins),
      cmocka_unit_test(test_lww_tie_is_broken_by_larger_bytes),
      cmocka_unit_test(test_priority_lower_wins_and_tie_takes_smaller_bytes),
      cmocka_unit_test(test_set_merge_is_union),
      cmocka_unit_test(test_ordered_set_encodes_ascending_without_duplicates),
      cmocka_unit_test(test_causal_dominating_incoming_replaces_dominated_is_ignored),
      cmocka_unit_test(test_causal_concurrent_keeps_both_with_own_clocks),
      cmocka_unit_test(test_causal_merge_is_associative_on_annas_counterexample),
      cmocka_unit_test(test_anna_causal_payload_gives_every_sibling_the_top_clock),
      cmocka_unit_test(test_multi_causal_dependencies_merge_pointwise_and_match_protobuf),
      cmocka_unit_test(test_protobuf_c_sibling_clocks_decode_per_sibling),
      cmocka_unit_test(test_empty_values_count_as_empty),
      cmocka_unit_test(test_merge_of_different_types_fails_and_leaves_target_unchanged),
      cmocka_unit_test(test_nan_priority_is_rejected_and_negative_zero_normalised),
      cmocka_unit_test(test_decode_normalises_protobuf_variations),
      cmocka_unit_test(test_decode_rejects_malformed_shapes),
      cmocka_unit_test(test_decode_rejects_more_siblings_than_the_limit),
      cmocka_unit_test(test_causal_merge_above_the_sibling_limit_fails_unchanged),
      cmocka_unit_test(test_merge_canonicalises_hand_built_causal_values),
      cmocka_unit_test(test_merge_payloads_reports_change_and_keeps_out_on_error),
      cmocka_unit_test(test_lww_timestamp_is_now_ms_times_power_of_ten_plus_id),
      cmocka_unit_test(test_lww_timestamp_strictly_increases_per_slot),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
