/* test_lattice_malformed: hostile payloads never crash, leak or yield a non-canonical
 * lattice.
 *
 * CASES payloads are made from valid encodings of random lattices (all six types)
 * by bit flips, truncation, insertion of random bytes, corruption of a byte that may
 * be a length or tag, insertion of huge or overlong varints, splicing two payloads,
 * and plain random bytes. Each goes through sq_lattice_decode (as its own type or,
 * one time in four, as another type), sq_lattice_validate and
 * sq_lattice_merge_payloads in both argument orders. Required outcome: either an
 * error (the same from all three entry points), or a lattice that is canonical
 * (encode -> decode -> encode is a fixed point) and whose payload merge equals the
 * structural merge. ASan/UBSan (the default test build) catch memory errors and
 * leaks. Seed printed; SQUALL_SEED replays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sq_error.h"
#include "test_lattice_gen.h"

#define CASES 120000
#define MAXLEN 512

typedef struct {
  uint8_t b[MAXLEN];
  size_t n;
} payload_t;

static void seed_payload(gen_rng_t *r, sq_lattice_type_t t, payload_t *p) {
  sq_lattice_t l;
  sq_buf_t e = {0};
  gen_lattice(r, t, &l);
  assert_int_equal(sq_lattice_encode(&l, &e), 0);
  p->n = e.len < MAXLEN ? e.len : MAXLEN;
  if (p->n) memcpy(p->b, e.data, p->n);
  sq_buf_free(&e);
  sq_lattice_free(&l);
}

static void insert(payload_t *p, size_t at, const uint8_t *src, size_t n) {
  if (p->n + n > MAXLEN) n = MAXLEN - p->n;
  memmove(p->b + at + n, p->b + at, p->n - at);
  memcpy(p->b + at, src, n);
  p->n += n;
}

static void mutate(gen_rng_t *r, payload_t *p, const payload_t *other) {
  static const uint8_t odd[] = {0x00, 0x01, 0x02, 0x07, 0x0a, 0x0b, 0x7f, 0x80, 0xff};
  size_t at = p->n ? gen_below(r, (uint32_t)p->n + 1) : 0;
  uint8_t tmp[16];
  switch (gen_below(r, 7)) {
    case 0: /* bit flips */
      for (uint32_t k = 1 + gen_below(r, 3); k && p->n; k--) p->b[gen_below(r, (uint32_t)p->n)] ^= (uint8_t)(1u << gen_below(r, 8));
      break;
    case 1: p->n = at; break; /* truncation */
    case 2: /* random insertion */
      for (size_t i = 0; i < sizeof tmp; i++) tmp[i] = (uint8_t)gen_next(r);
      insert(p, at, tmp, 1 + gen_below(r, 8));
      break;
    case 3: /* a length or tag byte replaced */
      if (at < p->n) p->b[at] = gen_below(r, 2) ? odd[gen_below(r, sizeof odd)] : (uint8_t)(p->b[at] + 1 + gen_below(r, 4));
      break;
    case 4: /* huge or overlong varint (10 or 11 bytes) */
      memset(tmp, 0xff, sizeof tmp);
      tmp[9 + gen_below(r, 2)] = (uint8_t)gen_below(r, 3);
      insert(p, at, tmp, 10 + gen_below(r, 2));
      break;
    case 5: /* splice */
      insert(p, at, other->b, other->n ? gen_below(r, (uint32_t)other->n) + 1 : 0);
      break;
    default: /* plain random bytes */
      p->n = gen_below(r, 40);
      for (size_t i = 0; i < p->n; i++) p->b[i] = (uint8_t)gen_next(r);
      break;
  }
}

/* The decoded lattice is canonical and merges the same through both paths. */
static void check_accepted(sq_lattice_type_t t, const sq_lattice_t *l, const payload_t *p,
                           const payload_t *valid) {
  sq_buf_t e = {0}, e2 = {0}, out = {0}, want = {0};
  sq_lattice_t again, v, m;
  assert_int_equal(sq_lattice_encode(l, &e), 0);
  assert_int_equal(sq_lattice_decode(t, e.data, e.len, &again), 0);
  assert_true(sq_lattice_equal(l, &again));
  assert_int_equal(sq_lattice_encode(&again, &e2), 0);
  assert_int_equal(e.len, e2.len);
  if (e.len) assert_memory_equal(e.data, e2.data, e.len);
  assert_int_equal(sq_lattice_decode(t, valid->b, valid->n, &v), 0);
  assert_int_equal(sq_lattice_copy(&m, l), 0);
  int mrc = sq_lattice_merge(&m, &v, NULL);
  int prc = sq_lattice_merge_payloads(t, p->b, p->n, valid->b, valid->n, &out, NULL);
  assert_int_equal(prc, mrc);
  if (mrc == 0) {
    assert_int_equal(sq_lattice_encode(&m, &want), 0);
    assert_int_equal(out.len, want.len);
    if (out.len) assert_memory_equal(out.data, want.data, out.len);
  } else {
    assert_int_equal(mrc, SQ_ETOOBIG);
  }
  sq_lattice_free(&again);
  sq_lattice_free(&v);
  sq_lattice_free(&m);
  sq_buf_free(&e);
  sq_buf_free(&e2);
  sq_buf_free(&out);
  sq_buf_free(&want);
}

static void check_payload(sq_lattice_type_t t, const payload_t *p, const payload_t *valid,
                          size_t *accepted) {
  sq_lattice_t l;
  sq_buf_t out = {0};
  int rc = sq_lattice_decode(t, p->b, p->n, &l);
  assert_true(rc == 0 || rc == SQ_EBADLATTICE);
  assert_int_equal(sq_lattice_validate(t, p->b, p->n), rc);
  int r1 = sq_lattice_merge_payloads(t, valid->b, valid->n, p->b, p->n, &out, NULL);
  if (rc) {
    assert_int_equal(l.type, SQ_LATTICE_NONE);
    assert_int_equal(r1, rc);
    assert_int_equal(out.len, 0);
    assert_int_equal(sq_lattice_merge_payloads(t, p->b, p->n, valid->b, valid->n, &out, NULL), rc);
  } else {
    assert_true(r1 == 0 || r1 == SQ_ETOOBIG);
    check_accepted(t, &l, p, valid);
    (*accepted)++;
  }
  sq_lattice_free(&l);
  sq_buf_free(&out);
}

static void test_mutated_payloads_decode_to_errors_or_canonical_lattices(void **state) {
  (void)state;
  gen_rng_t r = gen_seed("malformed", 0xbadc0deULL);
  size_t accepted = 0, rejected = 0;
  for (int i = 0; i < CASES; i++) {
    sq_lattice_type_t t = gen_types[i % 6];
    payload_t p, other, valid;
    seed_payload(&r, t, &p);
    seed_payload(&r, gen_types[gen_below(&r, 6)], &other);
    seed_payload(&r, t, &valid);
    for (uint32_t k = 1 + gen_below(&r, 3); k; k--) mutate(&r, &p, &other);
    if (gen_below(&r, 4) == 0) { /* read as another type: must still be safe */
      t = gen_types[gen_below(&r, 6)];
      seed_payload(&r, t, &valid);
    }
    size_t before = accepted;
    check_payload(t, &p, &valid, &accepted);
    rejected += accepted == before;
  }
  printf("[ malformed ] %d payloads: %zu accepted (canonicalised), %zu rejected\n", CASES, accepted,
         rejected);
  /* both outcomes must be common, or the mutations are not probing anything */
  assert_true(accepted > CASES / 20);
  assert_true(rejected > CASES / 10);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mutated_payloads_decode_to_errors_or_canonical_lattices),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
