/* lattice_codec: payload decode and encode for every type (causal values delegate to
 * lattice_causal.c).
 *
 * Decoding follows protobuf's rules for untrusted input: fields may come in any
 * order, unknown fields are skipped, a singular field seen twice keeps its last
 * value, and a known field with the wrong wire type is malformed. Decoding then
 * normalises to the canonical form of lattice.h: set elements are sorted by bytes
 * and deduplicated, -0.0 priorities become +0.0, NaN priorities are rejected.
 *
 * Encoding is canonical: fields in field-number order, proto3 defaults (0 timestamp,
 * 0.0 priority, empty bytes) omitted, sets in ascending byte order. Equal lattices
 * therefore encode to equal bytes, and the output is what protobuf itself would emit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lattice.h"
#include "lattice_int.h"

int lattice__scalar_scan(const uint8_t *p, size_t len, bool priority, lattice__scalar_t *out) {
  lattice__rd_t r = {.p = p, .len = len};
  lattice__field_t f = {0};
  int rc;
  uint32_t num_wt = priority ? LATTICE__WT_I64 : LATTICE__WT_VARINT;
  *out = (lattice__scalar_t){0};
  while ((rc = lattice__rd_next(&r, &f)) == 1) {
    if (f.field == 1 && f.wt == num_wt) {
      out->num = f.v;
    } else if (f.field == 2 && f.wt == LATTICE__WT_LEN) {
      out->value = f.data;
      out->vlen = f.dlen;
    } else if (f.field <= 2) {
      return SQ_EBADLATTICE;
    }
  }
  if (rc < 0) return rc;
  if (priority) {
    memcpy(&out->priority, &out->num, sizeof out->priority);
    if (isnan(out->priority)) return SQ_EBADLATTICE;
    if (out->priority == 0.0) out->priority = 0.0, out->num = 0; /* fold -0.0 */
  }
  return 0;
}

int lattice__scalar_encode(sq_buf_t *b, bool priority, uint64_t num, const uint8_t *v,
                           size_t vlen) {
  if (sq_buf_reserve(b, 11 + (vlen ? lattice__len_field_size(vlen) : 0))) return -ENOMEM;
  if (num && priority) lattice__put_fixed64(b, 1, num);
  if (num && !priority) {
    lattice__put_tag(b, 1, LATTICE__WT_VARINT);
    lattice__put_varint(b, num);
  }
  if (vlen) lattice__put_bytes(b, 2, v, vlen);
  return 0;
}

static int lattice__bytes_qcmp(const void *a, const void *b) { return lattice__sqbytes_cmp(a, b); }

/* Sorts and deduplicates n owned items in place; returns the new count. */
static size_t lattice__bytes_canonical(sq_bytes_t *items, size_t n) {
  size_t w = 0;
  if (n == 0) return 0;
  qsort(items, n, sizeof *items, lattice__bytes_qcmp);
  for (size_t i = 0; i < n; i++) {
    if (w && lattice__sqbytes_cmp(&items[w - 1], &items[i]) == 0) free(items[i].data);
    else items[w++] = items[i];
  }
  return w;
}

static int lattice__set_decode(const uint8_t *p, size_t len, sq_set_t *out) {
  lattice__rd_t r = {.p = p, .len = len};
  lattice__field_t f = {0};
  size_t cap = 0;
  int rc;
  while ((rc = lattice__rd_next(&r, &f)) == 1) {
    if (f.field != 1) continue;
    if (f.wt != LATTICE__WT_LEN) return SQ_EBADLATTICE;
    if (out->count == cap) {
      cap = cap ? 2 * cap : 8;
      sq_bytes_t *grown = realloc(out->items, cap * sizeof *grown);
      if (!grown) return -ENOMEM;
      out->items = grown;
    }
    if (lattice__bytes_dup(&out->items[out->count], f.data, f.dlen)) return -ENOMEM;
    out->count++;
  }
  if (rc < 0) return rc;
  out->count = lattice__bytes_canonical(out->items, out->count);
  return 0;
}

static int lattice__scalar_decode(const uint8_t *p, size_t len, sq_lattice_t *out) {
  lattice__scalar_t s;
  bool priority = out->type == SQ_LATTICE_PRIORITY;
  int rc = lattice__scalar_scan(p, len, priority, &s);
  if (rc) return rc;
  if (priority) {
    out->u.priority.priority = s.priority;
    return lattice__bytes_dup(&out->u.priority.value, s.value, s.vlen);
  }
  out->u.lww.timestamp = s.num;
  return lattice__bytes_dup(&out->u.lww.value, s.value, s.vlen);
}

int sq_lattice_decode(sq_lattice_type_t type, const uint8_t *payload, size_t len,
                      sq_lattice_t *out) {
  int rc;
  memset(out, 0, sizeof *out);
  if (!sq_lattice_type_valid((int)type)) return SQ_EUNKNOWNTYPE;
  if (!payload && len) return SQ_EBADLATTICE;
  out->type = type;
  switch (type) {
    case SQ_LATTICE_LWW:
    case SQ_LATTICE_PRIORITY: rc = lattice__scalar_decode(payload, len, out); break;
    case SQ_LATTICE_SET:
    case SQ_LATTICE_ORDERED_SET: rc = lattice__set_decode(payload, len, &out->u.set); break;
    default: rc = lattice__causal_decode(payload, len, type == SQ_LATTICE_MULTI_CAUSAL, out); break;
  }
  if (rc) sq_lattice_free(out);
  return rc;
}

static int lattice__set_encode(const sq_set_t *s, sq_buf_t *out) {
  size_t need = 0;
  for (size_t i = 0; i < s->count; i++) need += lattice__len_field_size(s->items[i].len);
  if (sq_buf_reserve(out, need)) return -ENOMEM;
  for (size_t i = 0; i < s->count; i++) lattice__put_bytes(out, 1, s->items[i].data, s->items[i].len);
  return 0;
}

int sq_lattice_encode(const sq_lattice_t *l, sq_buf_t *out) {
  size_t mark = out->len;
  uint64_t bits;
  int rc;
  switch (l->type) {
    case SQ_LATTICE_LWW:
      rc = lattice__scalar_encode(out, false, l->u.lww.timestamp, l->u.lww.value.data, l->u.lww.value.len);
      break;
    case SQ_LATTICE_PRIORITY:
      memcpy(&bits, &l->u.priority.priority, sizeof bits);
      if (l->u.priority.priority == 0.0) bits = 0;
      rc = lattice__scalar_encode(out, true, bits, l->u.priority.value.data, l->u.priority.value.len);
      break;
    case SQ_LATTICE_SET:
    case SQ_LATTICE_ORDERED_SET: rc = lattice__set_encode(&l->u.set, out); break;
    case SQ_LATTICE_SINGLE_CAUSAL:
    case SQ_LATTICE_MULTI_CAUSAL: rc = lattice__causal_encode(l, out); break;
    default: rc = SQ_EUNKNOWNTYPE; break;
  }
  if (rc && out->data) out->len = mark;
  return rc;
}
