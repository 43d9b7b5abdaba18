/* test_lattice_gen: deterministic random lattices for the lattice property tests.
 *
 * Generators aim at collisions, not coverage of the byte space: values come from a
 * three-letter alphabet and are at most three bytes long (so equal values and equal
 * prefixes are common), timestamps and priorities come from tiny pools (ties), and
 * vector clocks use three node ids with counters 0..2 (so dominated, dominating,
 * equal and concurrent clocks all occur). Causal values are built from random
 * candidate siblings through the same canonicalisation decode uses.
 *
 * Header-only: each test executable includes it once.
 */
#ifndef TEST_LATTICE_GEN_H
#define TEST_LATTICE_GEN_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lattice.h"
#include "lattice_int.h"
#include "vclock.h"

typedef struct {
  uint64_t s;
} gen_rng_t;

static inline uint64_t gen_next(gen_rng_t *r) {
  /* xorshift64*: deterministic across platforms */
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 0x2545F4914F6CDD1DULL;
}

static inline uint32_t gen_below(gen_rng_t *r, uint32_t n) { return (uint32_t)(gen_next(r) % n); }

/* Seed from SQUALL_SEED when set, else `dflt`; printed so a failure can be replayed. */
static inline gen_rng_t gen_seed(const char *what, uint64_t dflt) {
  const char *env = getenv("SQUALL_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 0) : dflt;
  printf("[ %s ] seed %llu (set SQUALL_SEED to replay)\n", what, (unsigned long long)seed);
  return (gen_rng_t){.s = seed ? seed : 1};
}

static inline void gen_bytes(gen_rng_t *r, sq_bytes_t *out) {
  uint8_t tmp[3];
  size_t n = gen_below(r, 4);
  for (size_t i = 0; i < n; i++) tmp[i] = (uint8_t)('a' + gen_below(r, 3));
  if (lattice__bytes_dup(out, tmp, n)) abort();
}

static inline void gen_clock(gen_rng_t *r, sq_vclock_t *vc) {
  static const char *const nodes[] = {"a", "b", "c"};
  *vc = (sq_vclock_t){0};
  for (int i = 0; i < 3; i++)
    if (sq_vclock_set(vc, nodes[i], gen_below(r, 3))) abort();
}

static inline void gen_causal(gen_rng_t *r, sq_causal_t *c) {
  size_t n = gen_below(r, 4);
  sq_sibling_t *s = calloc(n ? n : 1, sizeof *s);
  if (!s) abort();
  for (size_t i = 0; i < n; i++) {
    gen_clock(r, &s[i].clock);
    gen_bytes(r, &s[i].value);
  }
  if (lattice__causal_build(s, n, c)) abort();
}

static inline void gen_deps(gen_rng_t *r, sq_multi_causal_t *m) {
  static const char *const keys[] = {"k1", "k2", "k3"};
  size_t n = gen_below(r, 4);
  m->deps = calloc(n ? n : 1, sizeof *m->deps);
  if (!m->deps) abort();
  for (size_t i = 0; i < n; i++) {
    m->deps[i].key = strdup(keys[gen_below(r, 3)]);
    gen_clock(r, &m->deps[i].clock);
  }
  m->ndeps = n;
  if (lattice__deps_canonical(m->deps, &m->ndeps)) abort();
}

/* A random canonical lattice of the given type. */
static inline void gen_lattice(gen_rng_t *r, sq_lattice_type_t type, sq_lattice_t *l) {
  static const double prios[] = {-1.0, 0.0, 0.5, 1.0, 2.0, INFINITY};
  memset(l, 0, sizeof *l);
  l->type = type;
  switch (type) {
    case SQ_LATTICE_LWW:
      l->u.lww.timestamp = gen_below(r, 4);
      gen_bytes(r, &l->u.lww.value);
      break;
    case SQ_LATTICE_PRIORITY:
      l->u.priority.priority = prios[gen_below(r, 6)];
      gen_bytes(r, &l->u.priority.value);
      break;
    case SQ_LATTICE_SET:
    case SQ_LATTICE_ORDERED_SET: {
      size_t n = gen_below(r, 5);
      sq_bytes_t *items = calloc(n ? n : 1, sizeof *items);
      if (!items) abort();
      for (size_t i = 0; i < n; i++) gen_bytes(r, &items[i]);
      /* canonicalise through the codec's own rules: union into an empty set */
      sq_lattice_t tmp = {.type = type, .u.set = {.items = items, .count = n}};
      for (size_t i = 0; i < n; i++) {
        sq_lattice_t one = {.type = type, .u.set = {.items = &items[i], .count = 1}};
        if (sq_lattice_merge(l, &one, NULL)) abort();
      }
      sq_lattice_free(&tmp);
      break;
    }
    case SQ_LATTICE_SINGLE_CAUSAL: gen_causal(r, &l->u.single); break;
    case SQ_LATTICE_MULTI_CAUSAL:
      gen_causal(r, &l->u.multi.causal);
      gen_deps(r, &l->u.multi);
      break;
    default: abort();
  }
}

static const sq_lattice_type_t gen_types[] = {SQ_LATTICE_LWW, SQ_LATTICE_SET,
                                              SQ_LATTICE_SINGLE_CAUSAL, SQ_LATTICE_MULTI_CAUSAL,
                                              SQ_LATTICE_ORDERED_SET, SQ_LATTICE_PRIORITY};

#endif
