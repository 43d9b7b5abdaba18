/* lattice_int: internals shared by the lattice_*.c and vclock.c files.
 *
 * A tiny protobuf wire reader and writer, kept here rather than in sq_wire so the hot
 * path (sq_lattice_merge_payloads on every PUT) inlines into its callers.
 *
 * Reader contract: lattice__rd_next() reads one field at a time from an untrusted
 * buffer; every length is checked against what is left; a varint longer than ten
 * bytes or overflowing 64 bits, a field number of 0 or above 2^29-1, and the group
 * wire types 3/4 are malformed. Nothing is allocated; byte fields point into the
 * input.
 *
 * Writer contract: lattice__put_*() append to an sq_buf_t after reserving room; the
 * caller restores the buffer's length on failure (every public encoder does this, so
 * `out` is unchanged on error).
 *
 * Limits: a causal value may hold at most SQ_LATTICE_MAX_SIBLINGS siblings, since
 * pruning dominated siblings compares every pair of distinct clocks.
 */
#ifndef SQ_LATTICE_INT_H
#define SQ_LATTICE_INT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lattice.h"
#include "sq_buf.h"
#include "sq_error.h"

enum { LATTICE__WT_VARINT = 0, LATTICE__WT_I64 = 1, LATTICE__WT_LEN = 2, LATTICE__WT_I32 = 5 };

typedef struct {
  const uint8_t *p;
  size_t len;
  size_t pos;
} lattice__rd_t;

typedef struct {
  uint32_t field;
  uint32_t wt;
  uint64_t v;          /* VARINT, I64 and I32 values */
  const uint8_t *data; /* LEN: points into the input */
  size_t dlen;
} lattice__field_t;

static inline int lattice__rd_varint(lattice__rd_t *r, uint64_t *out) {
  uint64_t v = 0;
  for (unsigned i = 0; i < 10; i++) {
    if (r->pos >= r->len) return SQ_EBADLATTICE;
    uint8_t b = r->p[r->pos++];
    if (i == 9 && b > 1) return SQ_EBADLATTICE; /* more than 64 bits */
    v |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return SQ_EBADLATTICE;
}

static inline uint64_t lattice__load_le(const uint8_t *p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Reads the next field. 1 when *f is filled, 0 at the clean end, SQ_EBADLATTICE. */
static inline int lattice__rd_next(lattice__rd_t *r, lattice__field_t *f) {
  uint64_t tag, n;
  if (r->pos == r->len) return 0;
  if (lattice__rd_varint(r, &tag)) return SQ_EBADLATTICE;
  if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return SQ_EBADLATTICE;
  f->field = (uint32_t)(tag >> 3);
  f->wt = (uint32_t)(tag & 7);
  switch (f->wt) {
    case LATTICE__WT_VARINT: return lattice__rd_varint(r, &f->v) ? SQ_EBADLATTICE : 1;
    case LATTICE__WT_I64: n = 8; break;
    case LATTICE__WT_I32: n = 4; break;
    case LATTICE__WT_LEN:
      if (lattice__rd_varint(r, &n)) return SQ_EBADLATTICE;
      break;
    default: return SQ_EBADLATTICE;
  }
  if (n > r->len - r->pos) return SQ_EBADLATTICE;
  if (f->wt == LATTICE__WT_LEN) {
    f->data = r->p + r->pos;
    f->dlen = (size_t)n;
  } else {
    f->v = lattice__load_le(r->p + r->pos, (unsigned)n);
  }
  r->pos += (size_t)n;
  return 1;
}

static inline size_t lattice__varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* Size of a length-delimited field with a one-byte tag (all our field numbers < 16). */
static inline size_t lattice__len_field_size(size_t n) { return 1 + lattice__varint_len(n) + n; }

/* Writers: the caller reserved room (lattice__put_* never fail). */
static inline void lattice__put_varint(sq_buf_t *b, uint64_t v) {
  while (v >= 0x80) {
    b->data[b->len++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  b->data[b->len++] = (uint8_t)v;
}

static inline void lattice__put_tag(sq_buf_t *b, uint32_t field, uint32_t wt) {
  lattice__put_varint(b, ((uint64_t)field << 3) | wt);
}

static inline void lattice__put_bytes(sq_buf_t *b, uint32_t field, const void *p, size_t n) {
  lattice__put_tag(b, field, LATTICE__WT_LEN);
  lattice__put_varint(b, n);
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
}

static inline void lattice__put_fixed64(sq_buf_t *b, uint32_t field, uint64_t v) {
  lattice__put_tag(b, field, LATTICE__WT_I64);
  for (unsigned i = 0; i < 8; i++) b->data[b->len++] = (uint8_t)(v >> (8 * i));
}

/* Canonical byte order: memcmp over the common prefix, then the shorter first. */
static inline int lattice__bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b,
                                     size_t blen) {
  size_t n = alen < blen ? alen : blen;
  int c = n ? memcmp(a, b, n) : 0;
  if (c) return c;
  return alen < blen ? -1 : alen > blen;
}

static inline int lattice__sqbytes_cmp(const sq_bytes_t *a, const sq_bytes_t *b) {
  return lattice__bytes_cmp(a->data, a->len, b->data, b->len);
}

/* One scanned LWWValue or PriorityValue: the number (timestamp, or the priority's
 * IEEE bits with -0.0 folded to +0.0) and the value bytes pointing into the input. */
typedef struct {
  uint64_t num;
  double priority;
  const uint8_t *value;
  size_t vlen;
} lattice__scalar_t;

/* Scans an LWWValue (priority=false) or PriorityValue without allocating. Unknown
 * fields are skipped, a repeated field's last occurrence wins (protobuf rules), a
 * known field with the wrong wire type or a NaN priority is SQ_EBADLATTICE. */
int lattice__scalar_scan(const uint8_t *p, size_t len, bool priority, lattice__scalar_t *out);

/* Appends the canonical LWWValue / PriorityValue encoding. 0 or -ENOMEM. */
int lattice__scalar_encode(sq_buf_t *b, bool priority, uint64_t num, const uint8_t *v,
                           size_t vlen);

/* Copies n bytes into a fresh sq_bytes_t (NULL data when n == 0). 0 or -ENOMEM. */
int lattice__bytes_dup(sq_bytes_t *dst, const uint8_t *p, size_t n);

/* Releases a causal value's memory (not the struct) and zeroes it. */
void lattice__causal_free(sq_causal_t *c);
void lattice__multi_free(sq_multi_causal_t *m);

/* Per-type codecs and merges, dispatched from lattice.c / lattice_codec.c. Decoders
 * fill an all-zero *out and leave it freeable on error; encoders reserve their own
 * room. Merges keep `into` unchanged on error. */
int lattice__causal_decode(const uint8_t *p, size_t len, bool multi, sq_lattice_t *out);
int lattice__causal_encode(const sq_lattice_t *l, sq_buf_t *out);
int lattice__causal_merge(sq_lattice_t *into, const sq_lattice_t *in, bool *changed);
int lattice__causal_copy(sq_lattice_t *dst, const sq_lattice_t *src);
/* Takes ownership of n owned candidate siblings `s` (a malloc'd array; always
 * released) and makes the empty *out the canonical value of their maximal elements.
 * 0, -ENOMEM, SQ_ETOOBIG (more than SQ_LATTICE_MAX_SIBLINGS survive). */
int lattice__causal_build(sq_sibling_t *s, size_t n, sq_causal_t *out);
/* Sorts deps by key and joins duplicates' clocks (see lattice_causal.c). */
int lattice__deps_canonical(sq_dependency_t *d, size_t *n);
bool lattice__causal_equal(const sq_causal_t *a, const sq_causal_t *b);
bool lattice__multi_equal(const sq_multi_causal_t *a, const sq_multi_causal_t *b);

#endif
