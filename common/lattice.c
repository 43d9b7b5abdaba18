/* lattice: type names, ownership (free/copy), equality, emptiness and the merge of
 * the three "flat" lattices (LWW, PRIORITY, SET/ORDERED_SET); causal merges live in
 * lattice_causal.c, the wire codecs in lattice_codec.c and lattice_payload.c.
 *
 * Merge rules (docs/lattices.md):
 *   LWW       larger timestamp wins; equal timestamps: larger value bytes win.
 *   PRIORITY  smaller priority wins; equal priorities: smaller value bytes win.
 *   SET       union (ORDERED_SET is the same set; only its name differs).
 * Both tie-breaks make the winner a pure function of the two values, so merge is
 * commutative and replicas cannot diverge on ties (PROTOCOL.md §5 item 7).
 *
 * Failure atomicity: a merge builds whatever it must allocate first and only then
 * mutates `into`, so -ENOMEM leaves `into` exactly as it was.
 */
#include "lattice.h"

#include <stdlib.h>
#include <string.h>

#include "lattice_int.h"
#include "vclock.h"

static const char *const lattice__names[] = {"NONE", "LWW", "SET", "SINGLE_CAUSAL",
                                             "MULTI_CAUSAL", "ORDERED_SET", "PRIORITY"};

const char *sq_lattice_type_name(int type) {
  return type >= 0 && type <= SQ_LATTICE_TYPE_MAX ? lattice__names[type] : "INVALID";
}

bool sq_lattice_type_valid(int type) { return type >= SQ_LATTICE_LWW && type <= SQ_LATTICE_TYPE_MAX; }

int lattice__bytes_dup(sq_bytes_t *dst, const uint8_t *p, size_t n) {
  *dst = (sq_bytes_t){0};
  if (n == 0) return 0;
  dst->data = malloc(n);
  if (!dst->data) return -ENOMEM;
  memcpy(dst->data, p, n);
  dst->len = n;
  return 0;
}

static void lattice__set_free(sq_set_t *s) {
  for (size_t i = 0; i < s->count; i++) free(s->items[i].data);
  free(s->items);
}

void sq_lattice_free(sq_lattice_t *l) {
  if (!l) return;
  switch (l->type) {
    case SQ_LATTICE_LWW: free(l->u.lww.value.data); break;
    case SQ_LATTICE_PRIORITY: free(l->u.priority.value.data); break;
    case SQ_LATTICE_SET:
    case SQ_LATTICE_ORDERED_SET: lattice__set_free(&l->u.set); break;
    case SQ_LATTICE_SINGLE_CAUSAL: lattice__causal_free(&l->u.single); break;
    case SQ_LATTICE_MULTI_CAUSAL: lattice__multi_free(&l->u.multi); break;
    default: break;
  }
  memset(l, 0, sizeof *l);
}

static int lattice__set_copy(sq_set_t *dst, const sq_set_t *src) {
  *dst = (sq_set_t){0};
  if (src->count == 0) return 0;
  dst->items = calloc(src->count, sizeof *dst->items);
  if (!dst->items) return -ENOMEM;
  for (size_t i = 0; i < src->count; i++, dst->count++)
    if (lattice__bytes_dup(&dst->items[i], src->items[i].data, src->items[i].len)) return -ENOMEM;
  return 0;
}

int sq_lattice_copy(sq_lattice_t *dst, const sq_lattice_t *src) {
  int rc = 0;
  memset(dst, 0, sizeof *dst);
  dst->type = src->type;
  switch (src->type) {
    case SQ_LATTICE_LWW:
      dst->u.lww.timestamp = src->u.lww.timestamp;
      rc = lattice__bytes_dup(&dst->u.lww.value, src->u.lww.value.data, src->u.lww.value.len);
      break;
    case SQ_LATTICE_PRIORITY:
      dst->u.priority.priority = src->u.priority.priority;
      rc = lattice__bytes_dup(&dst->u.priority.value, src->u.priority.value.data,
                              src->u.priority.value.len);
      break;
    case SQ_LATTICE_SET:
    case SQ_LATTICE_ORDERED_SET: rc = lattice__set_copy(&dst->u.set, &src->u.set); break;
    case SQ_LATTICE_SINGLE_CAUSAL:
    case SQ_LATTICE_MULTI_CAUSAL: rc = lattice__causal_copy(dst, src); break;
    default: break;
  }
  if (rc) sq_lattice_free(dst);
  return rc;
}

static bool lattice__bytes_eq(const sq_bytes_t *a, const sq_bytes_t *b) {
  return lattice__sqbytes_cmp(a, b) == 0;
}

bool sq_lattice_equal(const sq_lattice_t *a, const sq_lattice_t *b) {
  if (a->type != b->type) return false;
  switch (a->type) {
    case SQ_LATTICE_LWW:
      return a->u.lww.timestamp == b->u.lww.timestamp && lattice__bytes_eq(&a->u.lww.value, &b->u.lww.value);
    case SQ_LATTICE_PRIORITY:
      return a->u.priority.priority == b->u.priority.priority &&
             lattice__bytes_eq(&a->u.priority.value, &b->u.priority.value);
    case SQ_LATTICE_SET:
    case SQ_LATTICE_ORDERED_SET:
      if (a->u.set.count != b->u.set.count) return false;
      for (size_t i = 0; i < a->u.set.count; i++)
        if (!lattice__bytes_eq(&a->u.set.items[i], &b->u.set.items[i])) return false;
      return true;
    case SQ_LATTICE_SINGLE_CAUSAL: return lattice__causal_equal(&a->u.single, &b->u.single);
    case SQ_LATTICE_MULTI_CAUSAL: return lattice__multi_equal(&a->u.multi, &b->u.multi);
    default: return true;
  }
}

bool sq_lattice_is_empty(const sq_lattice_t *l) {
  switch (l->type) {
    case SQ_LATTICE_LWW: return l->u.lww.value.len == 0;
    case SQ_LATTICE_PRIORITY: return l->u.priority.value.len == 0;
    case SQ_LATTICE_SET:
    case SQ_LATTICE_ORDERED_SET: return l->u.set.count == 0;
    case SQ_LATTICE_SINGLE_CAUSAL: return l->u.single.nsiblings == 0;
    case SQ_LATTICE_MULTI_CAUSAL: return l->u.multi.causal.nsiblings == 0;
    default: return true;
  }
}

/* Replaces *dst's bytes with a copy of *src's. 0 or -ENOMEM (dst unchanged). */
static int lattice__bytes_replace(sq_bytes_t *dst, const sq_bytes_t *src) {
  sq_bytes_t fresh;
  if (lattice__bytes_dup(&fresh, src->data, src->len)) return -ENOMEM;
  free(dst->data);
  *dst = fresh;
  return 0;
}

static int lattice__lww_merge(sq_lww_t *into, const sq_lww_t *in, bool *changed) {
  int c = in->timestamp != into->timestamp ? (in->timestamp > into->timestamp ? 1 : -1)
                                            : lattice__sqbytes_cmp(&in->value, &into->value);
  if (c <= 0) return 0;
  if (lattice__bytes_replace(&into->value, &in->value)) return -ENOMEM;
  into->timestamp = in->timestamp;
  *changed = true;
  return 0;
}

static int lattice__priority_merge(sq_priority_t *into, const sq_priority_t *in, bool *changed) {
  int c = in->priority != into->priority ? (in->priority < into->priority ? 1 : -1)
                                          : -lattice__sqbytes_cmp(&in->value, &into->value);
  if (c <= 0) return 0;
  if (lattice__bytes_replace(&into->value, &in->value)) return -ENOMEM;
  into->priority = in->priority;
  *changed = true;
  return 0;
}

/* Union by merge-walk: items of `into` move, items only in `in` are copied. */
static int lattice__set_merge(sq_set_t *into, const sq_set_t *in, bool *changed) {
  size_t i = 0, j = 0, n = 0, added = 0;
  if (in->count == 0) return 0;
  sq_bytes_t *items = malloc((into->count + in->count) * sizeof *items);
  if (!items) return -ENOMEM;
  while (i < into->count || j < in->count) {
    int c = i == into->count ? 1 : j == in->count ? -1 : lattice__sqbytes_cmp(&into->items[i], &in->items[j]);
    if (c <= 0) {
      items[n++] = into->items[i++];
      j += c == 0;
      continue;
    }
    if (lattice__bytes_dup(&items[n], in->items[j].data, in->items[j].len)) goto nomem;
    n++, j++, added++;
  }
  free(into->items);
  into->items = items;
  into->count = n;
  if (added) *changed = true;
  return 0;
nomem:
  /* Moved items appear in `into` order; everything else is a fresh copy to free. */
  for (size_t k = 0, a = 0; k < n; k++) {
    if (a < into->count && items[k].data == into->items[a].data) {
      a++;
      continue;
    }
    free(items[k].data);
  }
  free(items);
  return -ENOMEM;
}

int sq_lattice_merge(sq_lattice_t *into, const sq_lattice_t *incoming, bool *changed) {
  bool dummy = false;
  if (!changed) changed = &dummy;
  *changed = false;
  if (into->type != incoming->type) return SQ_ELATTICE;
  switch (into->type) {
    case SQ_LATTICE_LWW: return lattice__lww_merge(&into->u.lww, &incoming->u.lww, changed);
    case SQ_LATTICE_PRIORITY:
      return lattice__priority_merge(&into->u.priority, &incoming->u.priority, changed);
    case SQ_LATTICE_SET:
    case SQ_LATTICE_ORDERED_SET: return lattice__set_merge(&into->u.set, &incoming->u.set, changed);
    case SQ_LATTICE_SINGLE_CAUSAL:
    case SQ_LATTICE_MULTI_CAUSAL: return lattice__causal_merge(into, incoming, changed);
    default: return SQ_EUNKNOWNTYPE;
  }
}
