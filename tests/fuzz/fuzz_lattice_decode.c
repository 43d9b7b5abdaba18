/* fuzz_lattice_decode: libFuzzer harness for the lattice payload decoders.
 *
 * Input: byte 0 selects the lattice type (1 + byte % 6), the rest is the payload.
 * Each input is decoded; validate must agree with decode; an accepted lattice must
 * be canonical (encode -> decode gives an equal lattice and identical bytes) and
 * its payload merge with a fixed valid value of the same type, in both orders, must
 * equal the structural merge. Any disagreement aborts so libFuzzer keeps the input;
 * memory errors are ASan's. No state is kept between inputs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lattice.h"
#include "sq_error.h"

#define FUZZ_MAX_LEN (1u << 16)

#define CHECK(cond) \
  do {              \
    if (!(cond)) abort(); \
  } while (0)

/* A fixed valid payload per type: two values, concurrent clocks where there are any. */
static void fuzz__fixed(sq_lattice_type_t t, const uint8_t **p, size_t *n) {
  static const uint8_t lww[] = "\x08\x05\x12\x01m";
  static const uint8_t set[] = "\x0a\x01" "a" "\x0a\x01" "m";
  static const uint8_t single[] = "\x0a\x05\x0a\x01" "a" "\x10\x01" "\x0a\x05\x0a\x01" "b" "\x10\x01"
                                  "\x12\x01" "x" "\x12\x01" "y"
                                  "\x1a\x07\x0a\x05\x0a\x01" "a" "\x10\x01" "\x1a\x07\x0a\x05\x0a\x01" "b" "\x10\x01";
  static const uint8_t multi[] = "\x0a\x05\x0a\x01" "a" "\x10\x02" "\x12\x0a\x0a\x01" "k" "\x12\x05\x0a\x01" "a"
                                 "\x10\x01" "\x1a\x01" "m";
  static const uint8_t prio[] = "\x09\x00\x00\x00\x00\x00\x00\xf0\x3f\x12\x01m";
  switch (t) {
    case SQ_LATTICE_LWW: *p = lww, *n = sizeof lww - 1; break;
    case SQ_LATTICE_SINGLE_CAUSAL: *p = single, *n = sizeof single - 1; break;
    case SQ_LATTICE_MULTI_CAUSAL: *p = multi, *n = sizeof multi - 1; break;
    case SQ_LATTICE_PRIORITY: *p = prio, *n = sizeof prio - 1; break;
    default: *p = set, *n = sizeof set - 1; break;
  }
}

static bool fuzz__same(const sq_buf_t *a, const sq_buf_t *b) {
  return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void fuzz__check_merge(sq_lattice_type_t t, const sq_lattice_t *l, const uint8_t *p, size_t n) {
  const uint8_t *fixed;
  size_t flen;
  sq_lattice_t v = {0}, m = {0};
  sq_buf_t want = {0}, got = {0}, got2 = {0};
  fuzz__fixed(t, &fixed, &flen);
  CHECK(sq_lattice_decode(t, fixed, flen, &v) == 0);
  CHECK(sq_lattice_copy(&m, l) == 0);
  int rc = sq_lattice_merge(&m, &v, NULL);
  CHECK(rc == 0 || rc == SQ_ETOOBIG);
  CHECK(sq_lattice_merge_payloads(t, p, n, fixed, flen, &got, NULL) == rc);
  CHECK(sq_lattice_merge_payloads(t, fixed, flen, p, n, &got2, NULL) == rc);
  if (rc == 0) {
    CHECK(sq_lattice_encode(&m, &want) == 0);
    CHECK(fuzz__same(&want, &got) && fuzz__same(&want, &got2));
  }
  sq_lattice_free(&v);
  sq_lattice_free(&m);
  sq_buf_free(&want);
  sq_buf_free(&got);
  sq_buf_free(&got2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > FUZZ_MAX_LEN) return 0;
  sq_lattice_type_t t = (sq_lattice_type_t)(1 + data[0] % 6);
  const uint8_t *p = data + 1;
  size_t n = size - 1;
  sq_lattice_t l, again;
  sq_buf_t e = {0}, e2 = {0};
  int rc = sq_lattice_decode(t, p, n, &l);
  CHECK(rc == 0 || rc == SQ_EBADLATTICE);
  CHECK(sq_lattice_validate(t, p, n) == rc);
  if (rc) return 0;
  CHECK(sq_lattice_encode(&l, &e) == 0);
  CHECK(sq_lattice_decode(t, e.data, e.len, &again) == 0);
  CHECK(sq_lattice_equal(&l, &again));
  CHECK(sq_lattice_encode(&again, &e2) == 0);
  CHECK(fuzz__same(&e, &e2));
  fuzz__check_merge(t, &l, p, n);
  sq_lattice_free(&l);
  sq_lattice_free(&again);
  sq_buf_free(&e);
  sq_buf_free(&e2);
  return 0;
}
