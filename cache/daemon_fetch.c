/* daemon_fetch: a chained hash table key -> (call id, waiters). See daemon_fetch.h.
 *
 * Buckets are a power of two and double when the load passes 1. The hash is FNV-1a
 * with a per-table seed taken from the clock and the table address, so keys chosen
 * to collide in one process do not collide in another (the entry cap bounds the
 * damage anyway).
 */
#include "daemon_fetch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sq_error.h"

#define CACHE_FETCH_DEFAULT_MAX 65536u

typedef struct cache__fentry {
  struct cache__fentry *next;
  uint64_t hash;
  uint64_t call_id;
  cache_waiter_t *waiters;
  size_t nwaiters, capwaiters;
  size_t klen;
  char key[]; /* NUL-terminated copy */
} cache__fentry_t;

struct cache_fetch_table {
  cache__fentry_t **buckets;
  size_t nbuckets; /* power of two */
  size_t count;
  size_t max_entries;
  uint64_t seed;
};

static uint64_t cache__fhash(const cache_fetch_table_t *t, const char *key, size_t klen) {
  uint64_t h = 0xcbf29ce484222325ull ^ t->seed;
  for (size_t i = 0; i < klen; i++) h = (h ^ (uint8_t)key[i]) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

int cache_fetch_table_create(size_t max_entries, cache_fetch_table_t **out) {
  cache_fetch_table_t *t = calloc(1, sizeof(*t));
  if (!t) return -ENOMEM;
  t->nbuckets = 64;
  t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
  if (!t->buckets) {
    free(t);
    return -ENOMEM;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  t->seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)t;
  t->max_entries = max_entries ? max_entries : CACHE_FETCH_DEFAULT_MAX;
  *out = t;
  return 0;
}

void cache_fetch_table_destroy(cache_fetch_table_t *t) {
  if (!t) return;
  for (size_t b = 0; t->buckets && b < t->nbuckets; b++) {
    cache__fentry_t *e = t->buckets[b];
    while (e) {
      cache__fentry_t *next = e->next;
      free(e->waiters);
      free(e);
      e = next;
    }
  }
  free(t->buckets);
  free(t);
}

/* The link pointing at key's entry (or at the NULL ending its chain). */
static cache__fentry_t **cache__flink(const cache_fetch_table_t *t, const char *key,
                                      size_t klen, uint64_t h) {
  cache__fentry_t **link = &t->buckets[h & (t->nbuckets - 1)];
  while (*link && !((*link)->hash == h && (*link)->klen == klen &&
                    memcmp((*link)->key, key, klen) == 0))
    link = &(*link)->next;
  return link;
}

/* Doubles the bucket array; on -ENOMEM the table stays as it was (just slower). */
static void cache__fgrow(cache_fetch_table_t *t) {
  size_t nb = t->nbuckets * 2;
  cache__fentry_t **b = calloc(nb, sizeof(*b));
  if (!b) return;
  for (size_t i = 0; i < t->nbuckets; i++) {
    cache__fentry_t *e = t->buckets[i];
    while (e) {
      cache__fentry_t *next = e->next;
      e->next = b[e->hash & (nb - 1)];
      b[e->hash & (nb - 1)] = e;
      e = next;
    }
  }
  free(t->buckets);
  t->buckets = b;
  t->nbuckets = nb;
}

static int cache__fadd_waiter(cache__fentry_t *e, cache_waiter_t w) {
  if (e->nwaiters == e->capwaiters) {
    size_t cap = e->capwaiters ? e->capwaiters * 2 : 4;
    cache_waiter_t *nw = realloc(e->waiters, cap * sizeof(*nw));
    if (!nw) return -ENOMEM;
    e->waiters = nw;
    e->capwaiters = cap;
  }
  e->waiters[e->nwaiters++] = w;
  return 0;
}

int cache_fetch_join(cache_fetch_table_t *t, const char *key, size_t klen,
                     cache_waiter_t w, bool *first) {
  if (klen == 0) return SQ_EEMPTYKEY;
  uint64_t h = cache__fhash(t, key, klen);
  cache__fentry_t **link = cache__flink(t, key, klen, h);
  if (*link) {
    *first = false;
    return cache__fadd_waiter(*link, w);
  }
  if (t->count >= t->max_entries) return SQ_ETOOBIG;
  cache__fentry_t *e = calloc(1, sizeof(*e) + klen + 1);
  if (!e) return -ENOMEM;
  memcpy(e->key, key, klen);
  e->klen = klen;
  e->hash = h;
  if (cache__fadd_waiter(e, w) != 0) {
    free(e);
    return -ENOMEM;
  }
  *link = e;
  t->count++;
  *first = true;
  if (t->count > t->nbuckets) cache__fgrow(t);
  return 0;
}

int cache_fetch_set_call(cache_fetch_table_t *t, const char *key, size_t klen,
                         uint64_t call_id) {
  cache__fentry_t **link = cache__flink(t, key, klen, cache__fhash(t, key, klen));
  if (!*link) return SQ_ENOTFOUND;
  (*link)->call_id = call_id;
  return 0;
}

int cache_fetch_finish(cache_fetch_table_t *t, const char *key, size_t klen,
                       uint64_t call_id, cache_waiter_t **waiters, size_t *n) {
  cache__fentry_t **link = cache__flink(t, key, klen, cache__fhash(t, key, klen));
  cache__fentry_t *e = *link;
  if (!e || e->call_id != call_id) return SQ_ENOTFOUND;
  *link = e->next;
  t->count--;
  *waiters = e->waiters;
  *n = e->nwaiters;
  free(e);
  return 0;
}

bool cache_fetch_pending(const cache_fetch_table_t *t, const char *key, size_t klen) {
  return *cache__flink(t, key, klen, cache__fhash(t, key, klen)) != NULL;
}

size_t cache_fetch_count(const cache_fetch_table_t *t) { return t->count; }
