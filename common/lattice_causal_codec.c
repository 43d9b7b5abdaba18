/* lattice_causal_codec: wire decode and encode of the causal payloads.
 *
 * Decode gathers every field of the (untrusted) message into temporaries, because
 * protobuf allows repeated and map fields in any order and interleaved, then pairs
 * values with their clocks and hands the candidates to lattice__causal_build, which
 * sorts, deduplicates and prunes dominated siblings (lattice_causal.c). All
 * temporaries live in one causal__dec_t so a single cleanup releases them whatever
 * field failed.
 *
 * Field numbers differ between the two messages:
 *               vector_clock  dependencies  values  sibling_clocks
 *   single          1              -           2          3
 *   multi           1              2           3          4
 */
#include <stdlib.h>
#include <string.h>

#include "lattice.h"
#include "lattice_int.h"
#include "vclock.h"

typedef struct {
  uint32_t f_deps, f_values, f_sibs;
  lattice__vcb_t top;
  sq_bytes_t *values;
  size_t nvalues, cap_values;
  sq_vclock_t *sibs;
  size_t nsibs, cap_sibs;
  sq_dependency_t *deps;
  size_t ndeps, cap_deps;
} causal__dec_t;

static void causal__dec_free(causal__dec_t *d) {
  lattice__vcb_free(&d->top);
  for (size_t i = 0; i < d->nvalues; i++) free(d->values[i].data);
  free(d->values);
  for (size_t i = 0; i < d->nsibs; i++) sq_vclock_free(&d->sibs[i]);
  free(d->sibs);
  for (size_t i = 0; i < d->ndeps; i++) {
    free(d->deps[i].key);
    sq_vclock_free(&d->deps[i].clock);
  }
  free(d->deps);
}

/* Makes room for one more element of size `size` in *arr. 0 or -ENOMEM. */
static int causal__grow(void **arr, size_t n, size_t *cap, size_t size) {
  if (n < *cap) return 0;
  size_t ncap = *cap ? 2 * *cap : 4;
  void *grown = realloc(*arr, ncap * size);
  if (!grown) return -ENOMEM;
  *arr = grown;
  *cap = ncap;
  return 0;
}

static int causal__dec_dep(causal__dec_t *d, const uint8_t *p, size_t len) {
  const uint8_t *key = NULL;
  size_t klen = 0;
  sq_vclock_t vc;
  int rc = lattice__vclock_decode_msg(p, len, 2, 1, &key, &klen, &vc);
  if (rc) return rc;
  if ((klen && memchr(key, 0, klen)) ||
      causal__grow((void **)&d->deps, d->ndeps, &d->cap_deps, sizeof *d->deps)) {
    sq_vclock_free(&vc);
    return klen && memchr(key, 0, klen) ? SQ_EBADLATTICE : -ENOMEM;
  }
  char *k = malloc(klen + 1);
  if (!k) {
    sq_vclock_free(&vc);
    return -ENOMEM;
  }
  if (klen) memcpy(k, key, klen);
  k[klen] = '\0';
  d->deps[d->ndeps++] = (sq_dependency_t){.key = k, .clock = vc};
  return 0;
}

/* Consumes one top-level field. */
static int causal__dec_field(causal__dec_t *d, const lattice__field_t *f) {
  bool known = f->field == 1 || f->field == d->f_deps || f->field == d->f_values || f->field == d->f_sibs;
  if (!known) return 0;
  if (f->wt != LATTICE__WT_LEN) return SQ_EBADLATTICE;
  if (f->field == 1) return lattice__vcb_add(&d->top, f->data, f->dlen);
  if (f->field == d->f_deps) return causal__dec_dep(d, f->data, f->dlen);
  if (f->field == d->f_values) {
    if (d->nvalues >= SQ_LATTICE_MAX_SIBLINGS) return SQ_EBADLATTICE;
    if (causal__grow((void **)&d->values, d->nvalues, &d->cap_values, sizeof *d->values)) return -ENOMEM;
    if (lattice__bytes_dup(&d->values[d->nvalues], f->data, f->dlen)) return -ENOMEM;
    d->nvalues++;
    return 0;
  }
  if (d->nsibs >= SQ_LATTICE_MAX_SIBLINGS) return SQ_EBADLATTICE;
  if (causal__grow((void **)&d->sibs, d->nsibs, &d->cap_sibs, sizeof *d->sibs)) return -ENOMEM;
  int rc = lattice__vclock_decode_msg(f->data, f->dlen, 1, 0, NULL, NULL, &d->sibs[d->nsibs]);
  if (rc == 0) d->nsibs++;
  return rc;
}

/* Pairs values with clocks (moving both out of d) into fresh candidates. */
static int causal__dec_pair(causal__dec_t *d, const sq_vclock_t *top, sq_sibling_t **out) {
  *out = NULL;
  if (d->nvalues == 0) return 0;
  sq_sibling_t *s = calloc(d->nvalues, sizeof *s);
  if (!s) return -ENOMEM;
  for (size_t i = 0; i < d->nvalues; i++) {
    if (d->nsibs) {
      s[i].clock = d->sibs[i];
      d->sibs[i] = (sq_vclock_t){0};
    } else if (sq_vclock_copy(&s[i].clock, top)) {
      for (size_t k = 0; k < i; k++) sq_vclock_free(&s[k].clock);
      free(s);
      return -ENOMEM;
    }
  }
  for (size_t i = 0; i < d->nvalues; i++) s[i].value = d->values[i];
  d->nvalues = 0; /* values moved */
  *out = s;
  return 0;
}

int lattice__causal_decode(const uint8_t *p, size_t len, bool multi, sq_lattice_t *out) {
  causal__dec_t d = {.f_deps = multi ? 2 : 0, .f_values = multi ? 3 : 2, .f_sibs = multi ? 4 : 3};
  lattice__rd_t r = {.p = p, .len = len};
  lattice__field_t f = {0};
  sq_vclock_t top = {0};
  sq_sibling_t *cand = NULL;
  int rc;
  while ((rc = lattice__rd_next(&r, &f)) == 1)
    if ((rc = causal__dec_field(&d, &f)) != 0) goto out;
  if (rc < 0) goto out;
  rc = SQ_EBADLATTICE;
  if (d.nsibs && d.nsibs != d.nvalues) goto out;
  size_t n = d.nvalues;
  if ((rc = lattice__vcb_finish(&d.top, &top)) || (rc = causal__dec_pair(&d, &top, &cand))) goto out;
  sq_causal_t *c = multi ? &out->u.multi.causal : &out->u.single;
  rc = lattice__causal_build(cand, n, c);
  if (rc) {
    rc = rc == SQ_ETOOBIG ? SQ_EBADLATTICE : rc;
    goto out;
  }
  if (multi && (rc = lattice__deps_canonical(d.deps, &d.ndeps)) == 0) {
    out->u.multi.deps = d.deps; /* moved */
    out->u.multi.ndeps = d.ndeps;
    d.deps = NULL;
    d.ndeps = 0;
  }
out:
  sq_vclock_free(&top);
  causal__dec_free(&d);
  return rc;
}

/* ---- encode -------------------------------------------------------------------------- */

static bool causal__needs_sibling_clocks(const sq_causal_t *c) {
  for (size_t i = 0; i < c->nsiblings; i++)
    if (sq_vclock_order(&c->siblings[i].clock, &c->clock) != SQ_VC_EQUAL) return true;
  return false;
}

static size_t causal__dep_size(const sq_dependency_t *d) {
  size_t klen = strlen(d->key);
  return (klen ? lattice__len_field_size(klen) : 0) + lattice__vclock_size(&d->clock, 2);
}

static size_t causal__size(const sq_lattice_t *l, bool sibs) {
  const sq_causal_t *c = l->type == SQ_LATTICE_MULTI_CAUSAL ? &l->u.multi.causal : &l->u.single;
  size_t n = lattice__vclock_size(&c->clock, 1);
  for (size_t i = 0; i < c->nsiblings; i++) {
    n += lattice__len_field_size(c->siblings[i].value.len);
    if (sibs) n += lattice__len_field_size(lattice__vclock_size(&c->siblings[i].clock, 1));
  }
  if (l->type == SQ_LATTICE_MULTI_CAUSAL)
    for (size_t i = 0; i < l->u.multi.ndeps; i++)
      n += lattice__len_field_size(causal__dep_size(&l->u.multi.deps[i]));
  return n;
}

int lattice__causal_encode(const sq_lattice_t *l, sq_buf_t *out) {
  bool multi = l->type == SQ_LATTICE_MULTI_CAUSAL;
  const sq_causal_t *c = multi ? &l->u.multi.causal : &l->u.single;
  bool sibs = causal__needs_sibling_clocks(c);
  if (sq_buf_reserve(out, causal__size(l, sibs))) return -ENOMEM;
  lattice__vclock_put(out, &c->clock, 1);
  for (size_t i = 0; multi && i < l->u.multi.ndeps; i++) {
    const sq_dependency_t *d = &l->u.multi.deps[i];
    size_t klen = strlen(d->key);
    lattice__put_tag(out, 2, LATTICE__WT_LEN);
    lattice__put_varint(out, causal__dep_size(d));
    if (klen) lattice__put_bytes(out, 1, d->key, klen);
    lattice__vclock_put(out, &d->clock, 2);
  }
  for (size_t i = 0; i < c->nsiblings; i++)
    lattice__put_bytes(out, multi ? 3 : 2, c->siblings[i].value.data, c->siblings[i].value.len);
  for (size_t i = 0; sibs && i < c->nsiblings; i++) {
    lattice__put_tag(out, multi ? 4 : 3, LATTICE__WT_LEN);
    lattice__put_varint(out, lattice__vclock_size(&c->siblings[i].clock, 1));
    lattice__vclock_put(out, &c->siblings[i].clock, 1);
  }
  return 0;
}
