/* vclock: vector clocks (see vclock.h).
 *
 * Every clock here is sorted by node id, so order, join and equality are single
 * merge-walks over two arrays: O(n + m) with no allocation except the join's result.
 * Decoding goes through a builder (lattice__vcb_t) because map entries arrive in any
 * order, possibly repeated and interleaved with other fields: the builder collects,
 * then sorts once and folds duplicates by max (the lattice join of the two readings,
 * so a duplicated entry can never lower a counter).
 */
#include "vclock.h"

#include <stdlib.h>
#include <string.h>

#include "lattice_int.h"

sq_vc_order_t sq_vclock_order(const sq_vclock_t *a, const sq_vclock_t *b) {
  bool a_more = false, b_more = false;
  size_t i = 0, j = 0;
  while (i < a->count || j < b->count) {
    int c = i == a->count ? 1 : j == b->count ? -1 : strcmp(a->entries[i].node, b->entries[j].node);
    uint32_t ca = c <= 0 ? a->entries[i].counter : 0;
    uint32_t cb = c >= 0 ? b->entries[j].counter : 0;
    if (ca > cb) a_more = true;
    if (cb > ca) b_more = true;
    if (c <= 0) i++;
    if (c >= 0) j++;
  }
  if (a_more && b_more) return SQ_VC_CONCURRENT;
  return a_more ? SQ_VC_AFTER : b_more ? SQ_VC_BEFORE : SQ_VC_EQUAL;
}

int sq_vclock_cmp(const sq_vclock_t *a, const sq_vclock_t *b) {
  size_t n = a->count < b->count ? a->count : b->count;
  for (size_t i = 0; i < n; i++) {
    int c = strcmp(a->entries[i].node, b->entries[i].node);
    if (c) return c;
    if (a->entries[i].counter != b->entries[i].counter)
      return a->entries[i].counter < b->entries[i].counter ? -1 : 1;
  }
  return a->count < b->count ? -1 : a->count > b->count;
}

bool sq_vclock_equal(const sq_vclock_t *a, const sq_vclock_t *b) {
  return sq_vclock_cmp(a, b) == 0;
}

void sq_vclock_free(sq_vclock_t *vc) {
  if (!vc) return;
  for (size_t i = 0; i < vc->count; i++) free(vc->entries[i].node);
  free(vc->entries);
  vc->entries = NULL;
  vc->count = 0;
}

/* Appends a copy of (node, counter) to dst, whose array has room. 0 or -ENOMEM. */
static int vclock__push(sq_vclock_t *dst, const char *node, uint32_t counter) {
  if (counter == 0) return 0;
  char *copy = strdup(node);
  if (!copy) return -ENOMEM;
  dst->entries[dst->count].node = copy;
  dst->entries[dst->count].counter = counter;
  dst->count++;
  return 0;
}

int sq_vclock_copy(sq_vclock_t *dst, const sq_vclock_t *src) {
  return sq_vclock_join(dst, src, &(sq_vclock_t){0});
}

int sq_vclock_join(sq_vclock_t *dst, const sq_vclock_t *a, const sq_vclock_t *b) {
  int rc = 0;
  *dst = (sq_vclock_t){0};
  if (a->count + b->count == 0) return 0;
  dst->entries = malloc((a->count + b->count) * sizeof *dst->entries);
  if (!dst->entries) return -ENOMEM;
  size_t i = 0, j = 0;
  while (rc == 0 && (i < a->count || j < b->count)) {
    int c = i == a->count ? 1 : j == b->count ? -1 : strcmp(a->entries[i].node, b->entries[j].node);
    uint32_t ca = c <= 0 ? a->entries[i].counter : 0;
    uint32_t cb = c >= 0 ? b->entries[j].counter : 0;
    rc = vclock__push(dst, c <= 0 ? a->entries[i].node : b->entries[j].node, ca > cb ? ca : cb);
    if (c <= 0) i++;
    if (c >= 0) j++;
  }
  if (rc) sq_vclock_free(dst);
  return rc;
}

/* Index of node, or of where it would be inserted; *found says which. */
static size_t vclock__find(const sq_vclock_t *vc, const char *node, bool *found) {
  size_t lo = 0, hi = vc->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(vc->entries[mid].node, node);
    if (c == 0) {
      *found = true;
      return mid;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  *found = false;
  return lo;
}

uint32_t sq_vclock_get(const sq_vclock_t *vc, const char *node) {
  bool found;
  size_t i = vclock__find(vc, node, &found);
  return found ? vc->entries[i].counter : 0;
}

int sq_vclock_set(sq_vclock_t *vc, const char *node, uint32_t counter) {
  bool found;
  size_t i = vclock__find(vc, node, &found);
  if (found && counter) {
    vc->entries[i].counter = counter;
  } else if (found) {
    free(vc->entries[i].node);
    memmove(&vc->entries[i], &vc->entries[i + 1], (vc->count - i - 1) * sizeof *vc->entries);
    vc->count--;
  } else if (counter) {
    sq_vc_entry_t *grown = realloc(vc->entries, (vc->count + 1) * sizeof *grown);
    if (!grown) return -ENOMEM;
    vc->entries = grown;
    char *copy = strdup(node);
    if (!copy) return -ENOMEM;
    memmove(&grown[i + 1], &grown[i], (vc->count - i) * sizeof *grown);
    grown[i] = (sq_vc_entry_t){.node = copy, .counter = counter};
    vc->count++;
  }
  return 0;
}

/* ---- wire ------------------------------------------------------------------------- */

int lattice__vcb_add(lattice__vcb_t *b, const uint8_t *p, size_t len) {
  lattice__rd_t r = {.p = p, .len = len};
  lattice__field_t f = {0};
  const uint8_t *key = NULL;
  size_t klen = 0;
  uint64_t counter = 0;
  int rc;
  while ((rc = lattice__rd_next(&r, &f)) == 1) {
    if (f.field == 1 && f.wt == LATTICE__WT_LEN) {
      key = f.data;
      klen = f.dlen;
    } else if (f.field == 2 && f.wt == LATTICE__WT_VARINT) {
      counter = f.v;
    } else if (f.field <= 2) {
      return SQ_EBADLATTICE; /* known field, wrong wire type */
    }
  }
  if (rc < 0) return rc;
  if (counter > UINT32_MAX || (klen && memchr(key, 0, klen))) return SQ_EBADLATTICE;
  if (b->n == b->cap) {
    size_t cap = b->cap ? 2 * b->cap : 4;
    sq_vc_entry_t *grown = realloc(b->e, cap * sizeof *grown);
    if (!grown) return -ENOMEM;
    b->e = grown;
    b->cap = cap;
  }
  char *node = malloc(klen + 1);
  if (!node) return -ENOMEM;
  if (klen) memcpy(node, key, klen);
  node[klen] = '\0';
  b->e[b->n++] = (sq_vc_entry_t){.node = node, .counter = (uint32_t)counter};
  return 0;
}

static int vclock__entry_cmp(const void *pa, const void *pb) {
  const sq_vc_entry_t *a = pa, *b = pb;
  int c = strcmp(a->node, b->node);
  return c ? c : (a->counter > b->counter) - (a->counter < b->counter);
}

int lattice__vcb_finish(lattice__vcb_t *b, sq_vclock_t *out) {
  size_t w = 0;
  if (b->n) qsort(b->e, b->n, sizeof *b->e, vclock__entry_cmp);
  for (size_t i = 0; i < b->n; i++) {
    /* equal ids are adjacent with the largest counter last: keep only that one */
    bool superseded = i + 1 < b->n && strcmp(b->e[i].node, b->e[i + 1].node) == 0;
    if (superseded || b->e[i].counter == 0) free(b->e[i].node);
    else b->e[w++] = b->e[i];
  }
  *out = (sq_vclock_t){.entries = w ? b->e : NULL, .count = w};
  if (!w) free(b->e);
  *b = (lattice__vcb_t){0};
  return 0;
}

void lattice__vcb_free(lattice__vcb_t *b) {
  if (!b) return;
  for (size_t i = 0; i < b->n; i++) free(b->e[i].node);
  free(b->e);
  *b = (lattice__vcb_t){0};
}

int lattice__vclock_decode_msg(const uint8_t *p, size_t len, uint32_t field, uint32_t keep,
                               const uint8_t **kept, size_t *kept_len, sq_vclock_t *out) {
  lattice__rd_t r = {.p = p, .len = len};
  lattice__field_t f = {0};
  lattice__vcb_t b = {0};
  int rc;
  *out = (sq_vclock_t){0};
  while ((rc = lattice__rd_next(&r, &f)) == 1) {
    if (f.field == field && f.wt == LATTICE__WT_LEN) {
      rc = lattice__vcb_add(&b, f.data, f.dlen);
      if (rc) goto out;
    } else if (keep && f.field == keep && f.wt == LATTICE__WT_LEN) {
      *kept = f.data;
      *kept_len = f.dlen;
    } else if (f.field == field || (keep && f.field == keep)) {
      rc = SQ_EBADLATTICE;
      goto out;
    }
  }
  if (rc == 0) rc = lattice__vcb_finish(&b, out);
out:
  lattice__vcb_free(&b);
  return rc;
}

static size_t vclock__entry_size(const sq_vc_entry_t *e) {
  return lattice__len_field_size(strlen(e->node)) + 1 + lattice__varint_len(e->counter);
}

size_t lattice__vclock_size(const sq_vclock_t *vc, uint32_t field) {
  (void)field; /* every field number we use fits a one-byte tag */
  size_t n = 0;
  for (size_t i = 0; i < vc->count; i++)
    if (vc->entries[i].counter) n += lattice__len_field_size(vclock__entry_size(&vc->entries[i]));
  return n;
}

void lattice__vclock_put(sq_buf_t *b, const sq_vclock_t *vc, uint32_t field) {
  for (size_t i = 0; i < vc->count; i++) {
    const sq_vc_entry_t *e = &vc->entries[i];
    if (!e->counter) continue;
    lattice__put_tag(b, field, LATTICE__WT_LEN);
    lattice__put_varint(b, vclock__entry_size(e));
    lattice__put_bytes(b, 1, e->node, strlen(e->node));
    lattice__put_tag(b, 2, LATTICE__WT_VARINT);
    lattice__put_varint(b, e->counter);
  }
}
