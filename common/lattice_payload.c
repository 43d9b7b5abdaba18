/* lattice_payload: merging and validating encoded payloads, the KVS's hot path.
 *
 * The KVS stores each value as its canonical payload bytes and calls
 * sq_lattice_merge_payloads on every PUT and every gossip message. For LWW and
 * PRIORITY (nearly all Cloudburst traffic) a full decode would allocate a copy of the
 * value only to copy it again into the output, so the fast path scans both payloads
 * in place (lattice__scalar_scan: the timestamp or priority and a pointer to the
 * value bytes), picks the winner by the same rule as sq_lattice_merge, and writes the
 * winner's canonical encoding straight into `out`. No allocation beyond `out`.
 *
 * The other types decode both sides, merge and encode; their canonical form needs
 * sorting anyway.
 */
#include <stdlib.h>
#include <string.h>

#include "lattice.h"
#include "lattice_int.h"

/* >0 when b beats a under the type's rule, 0 when they are equal, <0 otherwise. */
static int payload__beats(bool priority, const lattice__scalar_t *a, const lattice__scalar_t *b) {
  if (priority) {
    if (a->priority != b->priority) return b->priority < a->priority ? 1 : -1;
    return -lattice__bytes_cmp(b->value, b->vlen, a->value, a->vlen);
  }
  if (a->num != b->num) return b->num > a->num ? 1 : -1;
  return lattice__bytes_cmp(b->value, b->vlen, a->value, a->vlen);
}

static int payload__scalar_merge(bool priority, const uint8_t *stored, size_t stored_len,
                                 const uint8_t *incoming, size_t incoming_len, sq_buf_t *out,
                                 bool *changed) {
  lattice__scalar_t a, b;
  int rc = lattice__scalar_scan(stored, stored_len, priority, &a);
  if (rc == 0) rc = lattice__scalar_scan(incoming, incoming_len, priority, &b);
  if (rc) return rc;
  bool take_b = payload__beats(priority, &a, &b) > 0;
  const lattice__scalar_t *w = take_b ? &b : &a;
  *changed = take_b;
  return lattice__scalar_encode(out, priority, w->num, w->value, w->vlen);
}

static int payload__generic_merge(sq_lattice_type_t type, const uint8_t *stored, size_t stored_len,
                                  const uint8_t *incoming, size_t incoming_len, sq_buf_t *out,
                                  bool *changed) {
  sq_lattice_t a = {0}, b = {0};
  int rc = sq_lattice_decode(type, stored, stored_len, &a);
  if (rc == 0) rc = sq_lattice_decode(type, incoming, incoming_len, &b);
  if (rc == 0) rc = sq_lattice_merge(&a, &b, changed);
  if (rc == 0) rc = sq_lattice_encode(&a, out);
  sq_lattice_free(&a);
  sq_lattice_free(&b);
  return rc;
}

int sq_lattice_merge_payloads(sq_lattice_type_t type, const uint8_t *stored,
                              size_t stored_len, const uint8_t *incoming,
                              size_t incoming_len, sq_buf_t *out, bool *changed) {
  bool dummy;
  if (!changed) changed = &dummy;
  *changed = false;
  if (!sq_lattice_type_valid((int)type)) return SQ_EUNKNOWNTYPE;
  if ((!stored && stored_len) || (!incoming && incoming_len)) return SQ_EBADLATTICE;
  if (type == SQ_LATTICE_LWW || type == SQ_LATTICE_PRIORITY)
    return payload__scalar_merge(type == SQ_LATTICE_PRIORITY, stored, stored_len, incoming,
                                 incoming_len, out, changed);
  return payload__generic_merge(type, stored, stored_len, incoming, incoming_len, out, changed);
}

/* A SetValue is valid when every field parses and field 1 is length-delimited. */
static int payload__set_validate(const uint8_t *p, size_t len) {
  lattice__rd_t r = {.p = p, .len = len};
  lattice__field_t f = {0};
  int rc;
  while ((rc = lattice__rd_next(&r, &f)) == 1)
    if (f.field == 1 && f.wt != LATTICE__WT_LEN) return SQ_EBADLATTICE;
  return rc;
}

int sq_lattice_validate(sq_lattice_type_t type, const uint8_t *payload, size_t len) {
  lattice__scalar_t s;
  sq_lattice_t l;
  if (!sq_lattice_type_valid((int)type)) return SQ_EUNKNOWNTYPE;
  if (!payload && len) return SQ_EBADLATTICE;
  switch (type) {
    case SQ_LATTICE_LWW: return lattice__scalar_scan(payload, len, false, &s);
    case SQ_LATTICE_PRIORITY: return lattice__scalar_scan(payload, len, true, &s);
    case SQ_LATTICE_SET:
    case SQ_LATTICE_ORDERED_SET: return payload__set_validate(payload, len);
    default: {
      int rc = sq_lattice_decode(type, payload, len, &l);
      sq_lattice_free(&l);
      return rc;
    }
  }
}
