/* lattice_causal: single- and multi-key causal values with per-sibling clocks.
 *
 * State: a set of siblings (clock, value). Merge = union, then drop every sibling
 * whose clock another sibling's clock strictly dominates ("keep the maximal
 * elements"). Strict dominance is a strict partial order, so for finite sets
 * max(max(A u B) u C) = max(A u B u C): the merge is associative, commutative and
 * idempotent. Anna's single shared clock is not (docs/lattices.md has the
 * counterexample); the shared clock survives here only as a derived field, the
 * pointwise max of the sibling clocks, which is what Anna clients read.
 *
 * Canonical form (lattice.h): siblings sorted by (value bytes, clock), unique, an
 * antichain; top clock = pointwise max of sibling clocks; clocks without zero
 * counters; dependencies sorted by key, unique (duplicates are joined).
 *
 * Wire: SingleKeyCausalValue {1 vector_clock, 2 values, 3 sibling_clocks} and
 * MultiKeyCausalValue {1 vector_clock, 2 dependencies, 3 values, 4 sibling_clocks}.
 * Without sibling_clocks (Anna clients) every value gets the top clock. With them,
 * their count must equal the value count, and the wire's top clock is ignored in
 * favour of the recomputed max. Encode omits sibling_clocks when every sibling's
 * clock equals the top clock, so Anna-shaped values stay Anna-shaped on the wire.
 *
 * Cost: pruning compares distinct clocks pairwise (at most SQ_LATTICE_MAX_SIBLINGS
 * siblings per input); the common case of one shared clock is one comparison group.
 */
#include <stdlib.h>
#include <string.h>

#include "lattice.h"
#include "lattice_int.h"
#include "vclock.h"

static void causal__siblings_free(sq_sibling_t *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    sq_vclock_free(&s[i].clock);
    free(s[i].value.data);
  }
  free(s);
}

static void causal__deps_free(sq_dependency_t *d, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(d[i].key);
    sq_vclock_free(&d[i].clock);
  }
  free(d);
}

void lattice__causal_free(sq_causal_t *c) {
  sq_vclock_free(&c->clock);
  causal__siblings_free(c->siblings, c->nsiblings);
  *c = (sq_causal_t){0};
}

void lattice__multi_free(sq_multi_causal_t *m) {
  lattice__causal_free(&m->causal);
  causal__deps_free(m->deps, m->ndeps);
  m->deps = NULL;
  m->ndeps = 0;
}

static sq_causal_t *causal__of(sq_lattice_t *l) {
  return l->type == SQ_LATTICE_MULTI_CAUSAL ? &l->u.multi.causal : &l->u.single;
}

static const sq_causal_t *causal__cof(const sq_lattice_t *l) {
  return l->type == SQ_LATTICE_MULTI_CAUSAL ? &l->u.multi.causal : &l->u.single;
}

/* ---- canonical form ---------------------------------------------------------------- */

static int causal__by_clock(const void *pa, const void *pb) {
  const sq_sibling_t *a = pa, *b = pb;
  int c = sq_vclock_cmp(&a->clock, &b->clock);
  return c ? c : lattice__sqbytes_cmp(&a->value, &b->value);
}

static int causal__by_value(const void *pa, const void *pb) {
  const sq_sibling_t *a = pa, *b = pb;
  int c = lattice__sqbytes_cmp(&a->value, &b->value);
  return c ? c : sq_vclock_cmp(&a->clock, &b->clock);
}

/* Sets drop[i] for the siblings of s[0..n), sorted by clock, that are exact
 * duplicates or strictly dominated by another sibling; returns the survivors' count. */
static size_t causal__prune(sq_sibling_t *s, size_t n, bool *drop) {
  size_t kept = 0;
  for (size_t g = 0; g < n;) {
    size_t end = g + 1;
    while (end < n && sq_vclock_equal(&s[g].clock, &s[end].clock)) end++;
    bool dominated = false;
    for (size_t h = 0; h < n && !dominated;) {
      size_t hend = h + 1;
      while (hend < n && sq_vclock_equal(&s[h].clock, &s[hend].clock)) hend++;
      dominated = h != g && sq_vclock_order(&s[g].clock, &s[h].clock) == SQ_VC_BEFORE;
      h = hend;
    }
    for (size_t i = g; i < end; i++) {
      drop[i] = dominated || (i > g && lattice__sqbytes_cmp(&s[i - 1].value, &s[i].value) == 0);
      kept += !drop[i];
    }
    g = end;
  }
  return kept;
}

/* Pointwise max of the siblings' clocks into *top (fresh). 0 or -ENOMEM. */
static int causal__top(const sq_sibling_t *s, size_t n, sq_vclock_t *top) {
  *top = (sq_vclock_t){0};
  for (size_t i = 0; i < n; i++) {
    sq_vclock_t next;
    if (sq_vclock_join(&next, top, &s[i].clock)) {
      sq_vclock_free(top);
      return -ENOMEM;
    }
    sq_vclock_free(top);
    *top = next;
  }
  return 0;
}

/* Takes ownership of the n owned candidate siblings `s` (always released) and makes
 * *out (empty on entry) the canonical causal value holding their maximal elements. */
int lattice__causal_build(sq_sibling_t *s, size_t n, sq_causal_t *out) {
  bool *drop = NULL;
  size_t w = 0;
  int rc = -ENOMEM;
  if (n == 0) {
    free(s);
    return 0;
  }
  drop = malloc(n * sizeof *drop);
  if (!drop) goto out;
  qsort(s, n, sizeof *s, causal__by_clock);
  size_t kept = causal__prune(s, n, drop);
  rc = kept > SQ_LATTICE_MAX_SIBLINGS ? SQ_ETOOBIG : 0;
  if (rc) goto out;
  for (size_t i = 0; i < n; i++) {
    if (!drop[i]) {
      s[w++] = s[i];
      continue;
    }
    sq_vclock_free(&s[i].clock);
    free(s[i].value.data);
  }
  n = w;
  qsort(s, n, sizeof *s, causal__by_value);
  rc = causal__top(s, n, &out->clock);
  if (rc) goto out;
  out->siblings = s;
  out->nsiblings = n;
  s = NULL;
out:
  if (s) causal__siblings_free(s, n);
  free(drop);
  return rc;
}

/* ---- dependencies -------------------------------------------------------------------- */

static int causal__dep_cmp(const void *pa, const void *pb) {
  const sq_dependency_t *a = pa, *b = pb;
  int c = strcmp(a->key, b->key);
  return c ? c : sq_vclock_cmp(&a->clock, &b->clock);
}

/* Sorts deps and joins the clocks of duplicate keys; *n becomes the unique count.
 * 0 or -ENOMEM (then *n is unchanged and every slot is owned or zeroed, so freeing
 * all *n entries is safe). */
int lattice__deps_canonical(sq_dependency_t *d, size_t *n) {
  size_t w = 0;
  if (*n == 0) return 0;
  qsort(d, *n, sizeof *d, causal__dep_cmp);
  for (size_t i = 0; i < *n; i++) {
    if (w && strcmp(d[w - 1].key, d[i].key) == 0) {
      sq_vclock_t joined;
      if (sq_vclock_join(&joined, &d[w - 1].clock, &d[i].clock)) return -ENOMEM;
      sq_vclock_free(&d[w - 1].clock);
      d[w - 1].clock = joined;
      free(d[i].key);
      sq_vclock_free(&d[i].clock);
      d[i] = (sq_dependency_t){0};
    } else if (w++ != i) {
      d[w - 1] = d[i];
      d[i] = (sq_dependency_t){0};
    }
  }
  *n = w;
  return 0;
}

/* Joins two canonical dependency maps into a fresh canonical *out / *nout.
 * 0 or -ENOMEM (nothing allocated remains). */
static int causal__deps_join(const sq_multi_causal_t *a, const sq_multi_causal_t *b,
                             sq_dependency_t **out, size_t *nout) {
  size_t i = 0, j = 0, n = 0;
  *out = NULL;
  *nout = 0;
  if (a->ndeps + b->ndeps == 0) return 0;
  sq_dependency_t *d = calloc(a->ndeps + b->ndeps, sizeof *d);
  if (!d) return -ENOMEM;
  while (i < a->ndeps || j < b->ndeps) {
    int c = i == a->ndeps ? 1 : j == b->ndeps ? -1 : strcmp(a->deps[i].key, b->deps[j].key);
    const sq_dependency_t *src = c <= 0 ? &a->deps[i] : &b->deps[j];
    d[n].key = strdup(src->key);
    int rc = !d[n].key ? -ENOMEM
             : sq_vclock_join(&d[n].clock, c <= 0 ? &a->deps[i].clock : &(sq_vclock_t){0},
                              c >= 0 ? &b->deps[j].clock : &(sq_vclock_t){0});
    n++;
    if (rc) {
      causal__deps_free(d, n);
      return -ENOMEM;
    }
    if (c <= 0) i++;
    if (c >= 0) j++;
  }
  *out = d;
  *nout = n;
  return 0;
}

/* ---- merge, copy, equality ----------------------------------------------------------- */

/* Appends deep copies of src's siblings to s[*n...]. 0 or -ENOMEM. */
static int causal__copy_siblings(sq_sibling_t *s, size_t *n, const sq_causal_t *src) {
  for (size_t i = 0; i < src->nsiblings; i++) {
    sq_sibling_t *dst = &s[*n];
    if (sq_vclock_copy(&dst->clock, &src->siblings[i].clock)) return -ENOMEM;
    if (lattice__bytes_dup(&dst->value, src->siblings[i].value.data, src->siblings[i].value.len)) {
      sq_vclock_free(&dst->clock);
      return -ENOMEM;
    }
    (*n)++;
  }
  return 0;
}

/* Builds the canonical join of a and b (either may be NULL) into the empty *out. */
static int causal__join(const sq_lattice_t *a, const sq_lattice_t *b, sq_lattice_t *out) {
  const sq_causal_t *ca = a ? causal__cof(a) : &(sq_causal_t){0};
  const sq_causal_t *cb = b ? causal__cof(b) : &(sq_causal_t){0};
  size_t n = 0;
  int rc = -ENOMEM;
  sq_sibling_t *s = NULL;
  if (ca->nsiblings + cb->nsiblings) {
    s = calloc(ca->nsiblings + cb->nsiblings, sizeof *s);
    if (!s) goto out;
  }
  if (causal__copy_siblings(s, &n, ca) || causal__copy_siblings(s, &n, cb)) goto out;
  rc = lattice__causal_build(s, n, causal__of(out));
  s = NULL; /* owned by causal__build, released on error */
  if (rc || out->type != SQ_LATTICE_MULTI_CAUSAL) goto out;
  const sq_multi_causal_t empty = {0};
  rc = causal__deps_join(a ? &a->u.multi : &empty, b ? &b->u.multi : &empty, &out->u.multi.deps,
                         &out->u.multi.ndeps);
out:
  if (s) causal__siblings_free(s, n);
  return rc;
}

int lattice__causal_merge(sq_lattice_t *into, const sq_lattice_t *in, bool *changed) {
  sq_lattice_t result = {.type = into->type};
  int rc = causal__join(into, in, &result);
  if (rc) {
    sq_lattice_free(&result);
    return rc;
  }
  *changed = !sq_lattice_equal(into, &result);
  sq_lattice_free(into);
  *into = result;
  return 0;
}

int lattice__causal_copy(sq_lattice_t *dst, const sq_lattice_t *src) {
  sq_causal_t *d = causal__of(dst);
  const sq_causal_t *s = causal__cof(src);
  int rc = -ENOMEM;
  if (s->nsiblings) {
    d->siblings = calloc(s->nsiblings, sizeof *d->siblings);
    if (!d->siblings) goto out;
  }
  for (size_t i = 0; i < s->nsiblings; i++, d->nsiblings++) {
    if (sq_vclock_copy(&d->siblings[i].clock, &s->siblings[i].clock)) goto out;
    if (lattice__bytes_dup(&d->siblings[i].value, s->siblings[i].value.data, s->siblings[i].value.len))
      goto out;
  }
  if (sq_vclock_copy(&d->clock, &s->clock)) goto out;
  rc = 0;
  if (src->type == SQ_LATTICE_MULTI_CAUSAL)
    rc = causal__deps_join(&src->u.multi, &(sq_multi_causal_t){0}, &dst->u.multi.deps,
                           &dst->u.multi.ndeps);
out:
  return rc; /* on error the caller frees dst, which is consistent at every step */
}

bool lattice__causal_equal(const sq_causal_t *a, const sq_causal_t *b) {
  if (a->nsiblings != b->nsiblings || !sq_vclock_equal(&a->clock, &b->clock)) return false;
  for (size_t i = 0; i < a->nsiblings; i++)
    if (causal__by_value(&a->siblings[i], &b->siblings[i]) != 0) return false;
  return true;
}

bool lattice__multi_equal(const sq_multi_causal_t *a, const sq_multi_causal_t *b) {
  if (!lattice__causal_equal(&a->causal, &b->causal) || a->ndeps != b->ndeps) return false;
  for (size_t i = 0; i < a->ndeps; i++)
    if (strcmp(a->deps[i].key, b->deps[i].key) || !sq_vclock_equal(&a->deps[i].clock, &b->deps[i].clock))
      return false;
  return true;
}
