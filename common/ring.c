/* ring: global and local consistent-hash rings as sorted parallel arrays (ring.h).
 *
 * Representation. A ring is two arrays of equal length n: pos[] (ascending; uint32 on
 * the global ring, uint64 on the local one) and owner[] (the slot of the node, or the
 * thread ID). Keeping positions apart from owners makes the binary search touch only
 * positions: 3000 vnodes x 8 nodes is 96 KB of uint32, about 15 probes per lookup.
 * Entries with equal positions are ordered by the owner's private IP (global) or by
 * (tid, vnode) (local); see ring.h for why.
 *
 * Global ring membership. nodes[0..node_count) holds one heap record per node, so
 * record addresses survive other inserts; owner[] indexes nodes[]. Removing slot k
 * moves the last record into k and renames its entries, in the same in-place pass
 * that drops k's entries, so remove never allocates and never fails halfway.
 * Inserting a node builds the new arrays completely (a merge of the node's sorted
 * positions into the old ones) before swapping them in: an -ENOMEM changes nothing.
 */
#include "ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sq_error.h"

#define SQ__RING_GLOBAL_PREFIX "GLOBAL"
#define SQ__RING_METADATA "ANNA_METADATA"

struct sq_global_ring {
  uint32_t vnodes;
  size_t n;                  /* entries */
  uint32_t *pos;             /* n ascending positions */
  uint32_t *owner;           /* n slots into nodes[] */
  sq_ring_node_t **nodes;    /* node_count owned records */
  size_t node_count;
  size_t node_cap;
};

struct sq_local_ring {
  uint32_t threads;
  size_t n;
  uint64_t *pos;             /* n ascending positions */
  uint32_t *tid;             /* n thread IDs */
};

/* ---- key helpers ---- */

uint32_t sq_ring_global_pos(const void *key, size_t len) {
  return (uint32_t)sq_hash_std_concat(SQ__RING_GLOBAL_PREFIX,
                                      sizeof SQ__RING_GLOBAL_PREFIX - 1, key, len);
}

uint64_t sq_ring_local_pos(const void *key, size_t len) { return sq_hash_std(key, len); }

bool sq_key_is_metadata(const void *key, size_t len) {
  const size_t m = sizeof SQ__RING_METADATA - 1;
  if (len < m || memcmp(key, SQ__RING_METADATA, m) != 0)
    return false;
  return len == m || ((const char *)key)[m] == '|';
}

int sq_ring_address(const sq_ring_node_t *node, uint32_t tid, uint32_t port_base,
                    char *buf, size_t cap) {
  int rc;
  if (port_base > 65535u || tid > 65535u - port_base) {
    rc = SQ_EINVAL;
    goto out;
  }
  rc = snprintf(buf, cap, "tcp://%s:%u", node->public_ip, (unsigned)(port_base + tid));
  if (rc < 0 || (size_t)rc >= cap)
    rc = SQ_ETOOBIG;
out:
  if (rc < 0 && cap > 0)
    buf[0] = '\0';
  return rc;
}

/* ---- binary search ---- */

/* Index of the first position >= x, or 0 when none is (the wrap). n > 0.
 * Branch-free halving (the comparison becomes a conditional move): the answer stays
 * in [base, base + len]; a branchy search mispredicts about every other probe, which
 * cost more than the probes themselves on a 24 000-entry ring. */
static size_t sq__lower_bound32(const uint32_t *a, size_t n, uint32_t x) {
  const uint32_t *base = a;
  size_t len = n, i;
  while (len > 1) {
    size_t half = len / 2;
    base = base[half] < x ? base + half : base;
    len -= half;
  }
  i = (size_t)(base - a) + (*base < x);
  return i == n ? 0 : i;
}

static size_t sq__lower_bound64(const uint64_t *a, size_t n, uint64_t x) {
  const uint64_t *base = a;
  size_t len = n, i;
  while (len > 1) {
    size_t half = len / 2;
    base = base[half] < x ? base + half : base;
    len -= half;
  }
  i = (size_t)(base - a) + (*base < x);
  return i == n ? 0 : i;
}

/* ---- global ring: construction ---- */

/* 1..SQ_RING_HOST_MAX printable, non-space ASCII bytes. */
static bool sq__host_valid(const char *s) {
  size_t len;
  if (s == NULL)
    return false;
  len = strnlen(s, SQ_RING_HOST_MAX + 1);
  if (len == 0 || len > SQ_RING_HOST_MAX)
    return false;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
      return false;
  return true;
}

int sq_global_ring_create(uint32_t vnodes, sq_global_ring_t **out) {
  sq_global_ring_t *r;
  *out = NULL;
  if (vnodes == 0 || vnodes > SQ_RING_MAX_VNODES)
    return SQ_EINVAL;
  r = calloc(1, sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  r->vnodes = vnodes;
  *out = r;
  return 0;
}

void sq_global_ring_destroy(sq_global_ring_t *r) {
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->node_count; i++)
    free(r->nodes[i]);
  free(r->nodes);
  free(r->pos);
  free(r->owner);
  free(r);
}

int sq_global_ring_clone(const sq_global_ring_t *r, sq_global_ring_t **out) {
  sq_global_ring_t *c = NULL;
  int rc = sq_global_ring_create(r->vnodes, &c);
  if (rc != 0)
    goto out;
  rc = -ENOMEM;
  c->pos = malloc((r->n ? r->n : 1) * sizeof *c->pos);
  c->owner = malloc((r->n ? r->n : 1) * sizeof *c->owner);
  c->nodes = calloc(r->node_count ? r->node_count : 1, sizeof *c->nodes);
  if (c->pos == NULL || c->owner == NULL || c->nodes == NULL)
    goto out;
  c->node_cap = r->node_count ? r->node_count : 1;
  for (; c->node_count < r->node_count; c->node_count++) {
    c->nodes[c->node_count] = malloc(sizeof **c->nodes);
    if (c->nodes[c->node_count] == NULL)
      goto out;
    *c->nodes[c->node_count] = *r->nodes[c->node_count];
  }
  if (r->n != 0) {
    memcpy(c->pos, r->pos, r->n * sizeof *c->pos);
    memcpy(c->owner, r->owner, r->n * sizeof *c->owner);
  }
  c->n = r->n;
  rc = 0;
out:
  if (rc != 0) {
    sq_global_ring_destroy(c);
    c = NULL;
  }
  *out = c;
  return rc;
}

static ptrdiff_t sq__global_slot(const sq_global_ring_t *r, const char *private_ip) {
  for (size_t i = 0; i < r->node_count; i++)
    if (strcmp(r->nodes[i]->private_ip, private_ip) == 0)
      return (ptrdiff_t)i;
  return -1;
}

static int sq__cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

/* The sorted global positions of a node's vnodes "GLOBAL<private_ip>:0_<v>". */
static void sq__global_vnode_positions(const char *private_ip, uint32_t vnodes,
                                       uint32_t *pos) {
  char name[sizeof SQ__RING_GLOBAL_PREFIX + SQ_RING_HOST_MAX + 16];
  for (uint32_t v = 0; v < vnodes; v++) {
    int len = snprintf(name, sizeof name, SQ__RING_GLOBAL_PREFIX "%s:0_%u",
                       private_ip, (unsigned)v);
    pos[v] = (uint32_t)sq_hash_std(name, (size_t)len);
  }
  qsort(pos, vnodes, sizeof *pos, sq__cmp_u32);
}

/* Merges the old entries with the new node's sorted positions (slot `slot`) into
 * dpos/downer. On equal positions the smaller private IP comes first. */
static void sq__global_merge(const sq_global_ring_t *r, const uint32_t *npos,
                             uint32_t slot, const char *private_ip, uint32_t *dpos,
                             uint32_t *downer) {
  size_t i = 0, j = 0, k = 0;
  while (i < r->n || j < r->vnodes) {
    bool take_old;
    if (j == r->vnodes)
      take_old = true;
    else if (i == r->n)
      take_old = false;
    else if (r->pos[i] != npos[j])
      take_old = r->pos[i] < npos[j];
    else
      take_old = strcmp(r->nodes[r->owner[i]]->private_ip, private_ip) < 0;
    if (take_old) {
      dpos[k] = r->pos[i];
      downer[k++] = r->owner[i++];
    } else {
      dpos[k] = npos[j++];
      downer[k++] = slot;
    }
  }
}

static int sq__global_reserve_node(sq_global_ring_t *r) {
  sq_ring_node_t **nodes;
  size_t cap;
  if (r->node_count < r->node_cap)
    return 0;
  cap = r->node_cap ? 2 * r->node_cap : 4;
  nodes = realloc(r->nodes, cap * sizeof *nodes);
  if (nodes == NULL)
    return -ENOMEM;
  r->nodes = nodes;
  r->node_cap = cap;
  return 0;
}

/* Adds a node unknown to the ring. */
static int sq__global_add(sq_global_ring_t *r, const char *public_ip,
                          const char *private_ip, uint32_t join_count) {
  sq_ring_node_t *node = NULL;
  uint32_t *npos = NULL, *dpos = NULL, *downer = NULL;
  size_t total = r->n + r->vnodes;
  int rc = SQ_ETOOBIG;

  if (r->node_count >= SQ_RING_MAX_NODES || total > SQ_RING_MAX_ENTRIES)
    goto out;
  rc = sq__global_reserve_node(r);
  if (rc != 0)
    goto out;
  rc = -ENOMEM;
  node = calloc(1, sizeof *node);
  npos = malloc(r->vnodes * sizeof *npos);
  dpos = malloc(total * sizeof *dpos);
  downer = malloc(total * sizeof *downer);
  if (node == NULL || npos == NULL || dpos == NULL || downer == NULL)
    goto out;
  strcpy(node->public_ip, public_ip);     /* lengths checked by the caller */
  strcpy(node->private_ip, private_ip);
  node->join_count = join_count;
  sq__global_vnode_positions(private_ip, r->vnodes, npos);
  sq__global_merge(r, npos, (uint32_t)r->node_count, private_ip, dpos, downer);
  free(r->pos);
  free(r->owner);
  r->pos = dpos;
  r->owner = downer;
  r->n = total;
  r->nodes[r->node_count++] = node;
  dpos = NULL;
  downer = NULL;
  node = NULL;
  rc = 0;
out:
  free(node);
  free(npos);
  free(dpos);
  free(downer);
  return rc;
}

int sq_global_ring_insert(sq_global_ring_t *r, const char *public_ip,
                          const char *private_ip, uint32_t join_count, bool *changed) {
  ptrdiff_t slot;
  bool did = false;
  int rc = SQ_EINVAL;

  if (!sq__host_valid(public_ip) || !sq__host_valid(private_ip))
    goto out;
  slot = sq__global_slot(r, private_ip);
  if (slot < 0) {
    rc = sq__global_add(r, public_ip, private_ip, join_count);
    did = rc == 0;
    goto out;
  }
  rc = 0;
  if (join_count > r->nodes[slot]->join_count) {   /* a rejoin after a restart */
    r->nodes[slot]->join_count = join_count;
    strcpy(r->nodes[slot]->public_ip, public_ip);
    did = true;
  }
out:
  if (changed != NULL)
    *changed = did;
  return rc;
}

int sq_global_ring_remove(sq_global_ring_t *r, const char *private_ip) {
  ptrdiff_t found = private_ip ? sq__global_slot(r, private_ip) : -1;
  uint32_t slot, last;
  size_t k = 0;

  if (found < 0)
    return SQ_ENOTFOUND;
  slot = (uint32_t)found;
  last = (uint32_t)(r->node_count - 1);
  for (size_t i = 0; i < r->n; i++) {
    if (r->owner[i] == slot)
      continue;
    r->pos[k] = r->pos[i];
    r->owner[k++] = r->owner[i] == last ? slot : r->owner[i];
  }
  r->n = k;
  free(r->nodes[slot]);
  r->nodes[slot] = r->nodes[last];
  r->nodes[last] = NULL;   /* slot == last: the freed record; else its old place */
  r->node_count--;
  return 0;
}

/* ---- global ring: lookups ---- */

size_t sq_global_ring_node_count(const sq_global_ring_t *r) { return r->node_count; }

size_t sq_global_ring_entry_count(const sq_global_ring_t *r) { return r->n; }

const sq_ring_node_t *sq_global_ring_node_at(const sq_global_ring_t *r, size_t i) {
  return i < r->node_count ? r->nodes[i] : NULL;
}

const sq_ring_node_t *sq_global_ring_get(const sq_global_ring_t *r,
                                         const char *private_ip) {
  ptrdiff_t slot = private_ip ? sq__global_slot(r, private_ip) : -1;
  return slot < 0 ? NULL : r->nodes[slot];
}

const sq_ring_node_t *sq_global_ring_find_pos(const sq_global_ring_t *r, uint32_t pos) {
  if (r->n == 0)
    return NULL;
  return r->nodes[r->owner[sq__lower_bound32(r->pos, r->n, pos)]];
}

int sq_global_ring_responsible_pos(const sq_global_ring_t *r, uint32_t pos, uint32_t R,
                                   const sq_ring_node_t **out, size_t max, size_t *n) {
  size_t want = R, found = 0, i;

  *n = 0;
  if (R == 0 || max == 0)
    return 0;
  if (r->n == 0)
    return SQ_ENOSERVERS;
  want = want < r->node_count ? want : r->node_count;
  want = want < max ? want : max;
  i = sq__lower_bound32(r->pos, r->n, pos);
  /* At most one full turn: every node owns an entry, so `want` are met by then. */
  for (size_t steps = 0; steps < r->n && found < want; steps++) {
    const sq_ring_node_t *node = r->nodes[r->owner[i]];
    size_t j = 0;
    while (j < found && out[j] != node)
      j++;
    if (j == found)
      out[found++] = node;
    if (++i == r->n)
      i = 0;
  }
  *n = found;
  return 0;
}

int sq_global_ring_responsible(const sq_global_ring_t *r, const void *key, size_t len,
                               uint32_t R, const sq_ring_node_t **out, size_t max,
                               size_t *n) {
  return sq_global_ring_responsible_pos(r, sq_ring_global_pos(key, len), R, out, max, n);
}

/* ---- local ring ---- */

typedef struct {
  uint64_t pos;
  uint32_t tid;
  uint32_t vnode;
} sq__local_entry_t;

/* (position, thread, vnode): Anna's insertion order wins ties, tid 0 first. */
static int sq__cmp_local(const void *a, const void *b) {
  const sq__local_entry_t *x = a, *y = b;
  if (x->pos != y->pos)
    return x->pos < y->pos ? -1 : 1;
  if (x->tid != y->tid)
    return x->tid < y->tid ? -1 : 1;
  return (x->vnode > y->vnode) - (x->vnode < y->vnode);
}

int sq_local_ring_create(uint32_t threads, uint32_t vnodes, sq_local_ring_t **out) {
  sq_local_ring_t *r = NULL;
  sq__local_entry_t *e = NULL;
  size_t n = (size_t)threads * vnodes, k = 0;
  char name[32];
  int rc = SQ_EINVAL;

  if (threads == 0 || threads > SQ_RING_MAX_THREADS || vnodes == 0 ||
      vnodes > SQ_RING_MAX_VNODES)
    goto out;
  rc = SQ_ETOOBIG;
  if (n > SQ_RING_MAX_ENTRIES)
    goto out;
  rc = -ENOMEM;
  r = calloc(1, sizeof *r);
  e = malloc(n * sizeof *e);
  if (r == NULL || e == NULL)
    goto out;
  r->pos = malloc(n * sizeof *r->pos);
  r->tid = malloc(n * sizeof *r->tid);
  if (r->pos == NULL || r->tid == NULL)
    goto out;
  for (uint32_t t = 0; t < threads; t++)
    for (uint32_t v = 0; v < vnodes; v++, k++) {
      int len = snprintf(name, sizeof name, "%u_%u", (unsigned)t, (unsigned)v);
      e[k] = (sq__local_entry_t){sq_hash_std(name, (size_t)len), t, v};
    }
  qsort(e, n, sizeof *e, sq__cmp_local);
  for (k = 0; k < n; k++) {
    r->pos[k] = e[k].pos;
    r->tid[k] = e[k].tid;
  }
  r->threads = threads;
  r->n = n;
  rc = 0;
out:
  free(e);
  if (rc != 0) {
    sq_local_ring_destroy(r);
    r = NULL;
  }
  *out = r;
  return rc;
}

void sq_local_ring_destroy(sq_local_ring_t *r) {
  if (r == NULL)
    return;
  free(r->pos);
  free(r->tid);
  free(r);
}

uint32_t sq_local_ring_thread_count(const sq_local_ring_t *r) { return r->threads; }

uint32_t sq_local_ring_find_pos(const sq_local_ring_t *r, uint64_t pos) {
  return r->tid[sq__lower_bound64(r->pos, r->n, pos)];
}

int sq_local_ring_responsible_pos(const sq_local_ring_t *r, uint64_t pos, uint32_t L,
                                  uint32_t *tids, size_t max, size_t *n) {
  size_t want = L < r->threads ? L : r->threads, found = 0;
  size_t i = sq__lower_bound64(r->pos, r->n, pos);

  want = want < max ? want : max;
  for (size_t steps = 0; steps < r->n && found < want; steps++) {
    uint32_t t = r->tid[i];
    size_t j = 0;
    while (j < found && tids[j] != t)
      j++;
    if (j == found)
      tids[found++] = t;
    if (++i == r->n)
      i = 0;
  }
  *n = found;
  return 0;
}

int sq_local_ring_responsible(const sq_local_ring_t *r, const void *key, size_t len,
                              uint32_t L, uint32_t *tids, size_t max, size_t *n) {
  return sq_local_ring_responsible_pos(r, sq_ring_local_pos(key, len), L, tids, max, n);
}

/* ---- replica sets ---- */

int sq_ring_replicas(const sq_global_ring_t *g, const sq_local_ring_t *l,
                     const void *key, size_t len, uint32_t R, uint32_t L,
                     sq_ring_replica_t *out, size_t max, size_t *n) {
  const sq_ring_node_t *nodes[SQ_RING_MAX_NODES];
  uint32_t tids[SQ_RING_MAX_THREADS];
  size_t nn = 0, nt = 0, k = 0;
  int rc;

  *n = 0;
  if (R == 0 || L == 0 || max == 0)
    return 0;
  rc = sq_local_ring_responsible(l, key, len, L, tids, max < SQ_RING_MAX_THREADS
                                 ? max : SQ_RING_MAX_THREADS, &nt);
  if (rc != 0)
    return rc;
  /* Only ceil(max / nt) nodes can contribute a pair. */
  rc = sq_global_ring_responsible(g, key, len, R, nodes, (max + nt - 1) / nt, &nn);
  if (rc != 0)
    return rc;
  for (size_t a = 0; a < nn; a++)
    for (size_t b = 0; b < nt && k < max; b++)
      out[k++] = (sq_ring_replica_t){nodes[a], tids[b]};
  *n = k;
  return 0;
}
