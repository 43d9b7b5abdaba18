/* test_lattice_laws: the algebra every lattice type must obey, on random values.
 *
 * For each of the six types, CASES random triples (see test_lattice_gen.h for how
 * the generators force ties and concurrent clocks) check:
 *   merge is associative, commutative and idempotent (as sq_lattice_equal on the
 *   canonical results), decode(encode(x)) == x with byte-identical re-encoding,
 *   merge_payloads(enc a, enc b) == enc(merge(a, b)) with the same `changed` flag,
 *   and a merge result is canonical (survives a round trip unchanged).
 * The seed is printed; SQUALL_SEED=<n> replays a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_lattice_gen.h"

#define CASES 1000

/* merge(a, b) as a fresh lattice. */
static sq_lattice_t merged(const sq_lattice_t *a, const sq_lattice_t *b, bool *changed) {
  sq_lattice_t out;
  assert_int_equal(sq_lattice_copy(&out, a), 0);
  assert_int_equal(sq_lattice_merge(&out, b, changed), 0);
  return out;
}

static sq_buf_t encoded(const sq_lattice_t *l) {
  sq_buf_t b = {0};
  assert_int_equal(sq_lattice_encode(l, &b), 0);
  return b;
}

static void assert_same_bytes(const sq_buf_t *a, const sq_buf_t *b) {
  assert_int_equal(a->len, b->len);
  if (a->len) assert_memory_equal(a->data, b->data, a->len);
}

static void check_roundtrip(const sq_lattice_t *x) {
  sq_buf_t e = encoded(x), e2 = {0};
  sq_lattice_t d;
  assert_int_equal(sq_lattice_decode(x->type, e.data, e.len, &d), 0);
  assert_true(sq_lattice_equal(&d, x));
  assert_int_equal(sq_lattice_encode(&d, &e2), 0);
  assert_same_bytes(&e, &e2);
  assert_int_equal(sq_lattice_validate(x->type, e.data, e.len), 0);
  sq_lattice_free(&d);
  sq_buf_free(&e);
  sq_buf_free(&e2);
}

static void check_laws(const sq_lattice_t *a, const sq_lattice_t *b, const sq_lattice_t *c) {
  bool ch_ab, ch;
  sq_lattice_t ab = merged(a, b, &ch_ab), ba = merged(b, a, &ch);
  assert_true(sq_lattice_equal(&ab, &ba)); /* commutative */
  assert_true(ch_ab == !sq_lattice_equal(a, &ab));
  sq_lattice_t ab_c = merged(&ab, c, &ch), bc = merged(b, c, &ch);
  sq_lattice_t a_bc = merged(a, &bc, &ch);
  assert_true(sq_lattice_equal(&ab_c, &a_bc)); /* associative */
  sq_lattice_t aa = merged(a, a, &ch);
  assert_true(sq_lattice_equal(&aa, a)); /* idempotent */
  assert_false(ch);
  check_roundtrip(a);
  check_roundtrip(&ab);
  check_roundtrip(&ab_c);
  /* merge_payloads agrees with the structural merge, bytes and flag */
  sq_buf_t ea = encoded(a), eb = encoded(b), eab = encoded(&ab), out = {0};
  bool pch = !ch_ab;
  assert_int_equal(sq_lattice_merge_payloads(a->type, ea.data, ea.len, eb.data, eb.len, &out, &pch), 0);
  assert_same_bytes(&out, &eab);
  assert_true(pch == ch_ab);
  sq_lattice_t *all[] = {&ab, &ba, &ab_c, &bc, &a_bc, &aa};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) sq_lattice_free(all[i]);
  sq_buf_free(&ea);
  sq_buf_free(&eb);
  sq_buf_free(&eab);
  sq_buf_free(&out);
}

static void run_type(sq_lattice_type_t type, uint64_t salt) {
  gen_rng_t r = gen_seed(sq_lattice_type_name(type), 0x5eed0000ULL + salt);
  size_t ties = 0;
  for (int i = 0; i < CASES; i++) {
    sq_lattice_t a, b, c;
    gen_lattice(&r, type, &a);
    gen_lattice(&r, type, &b);
    gen_lattice(&r, type, &c);
    check_laws(&a, &b, &c);
    if (type == SQ_LATTICE_LWW) ties += a.u.lww.timestamp == b.u.lww.timestamp;
    if (type == SQ_LATTICE_PRIORITY) ties += a.u.priority.priority == b.u.priority.priority;
    sq_lattice_free(&a);
    sq_lattice_free(&b);
    sq_lattice_free(&c);
  }
  /* the generators must actually exercise the tie-break paths */
  if (type == SQ_LATTICE_LWW || type == SQ_LATTICE_PRIORITY) assert_true(ties > CASES / 10);
}

static void test_lww_laws_hold_on_random_values(void **state) {
  (void)state;
  run_type(SQ_LATTICE_LWW, 1);
}
static void test_set_laws_hold_on_random_values(void **state) {
  (void)state;
  run_type(SQ_LATTICE_SET, 2);
}
static void test_single_causal_laws_hold_on_random_values(void **state) {
  (void)state;
  run_type(SQ_LATTICE_SINGLE_CAUSAL, 3);
}
static void test_multi_causal_laws_hold_on_random_values(void **state) {
  (void)state;
  run_type(SQ_LATTICE_MULTI_CAUSAL, 4);
}
static void test_ordered_set_laws_hold_on_random_values(void **state) {
  (void)state;
  run_type(SQ_LATTICE_ORDERED_SET, 5);
}
static void test_priority_laws_hold_on_random_values(void **state) {
  (void)state;
  run_type(SQ_LATTICE_PRIORITY, 6);
}

/* The causal generator must produce every clock relation, or the laws above would
 * not cover the pruning paths. */
static void test_causal_generator_covers_every_clock_relation(void **state) {
  (void)state;
  gen_rng_t r = {.s = 42};
  size_t seen[4] = {0};
  for (int i = 0; i < 1000; i++) {
    sq_vclock_t a, b;
    gen_clock(&r, &a);
    gen_clock(&r, &b);
    seen[sq_vclock_order(&a, &b)]++;
    sq_vclock_free(&a);
    sq_vclock_free(&b);
  }
  for (int k = 0; k < 4; k++) assert_true(seen[k] > 10);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lww_laws_hold_on_random_values),
      cmocka_unit_test(test_set_laws_hold_on_random_values),
      cmocka_unit_test(test_single_causal_laws_hold_on_random_values),
      cmocka_unit_test(test_multi_causal_laws_hold_on_random_values),
      cmocka_unit_test(test_ordered_set_laws_hold_on_random_values),
      cmocka_unit_test(test_priority_laws_hold_on_random_values),
      cmocka_unit_test(test_causal_generator_covers_every_clock_relation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
