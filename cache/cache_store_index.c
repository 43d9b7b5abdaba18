/* store_index: the writer's key index and recency list (see cache_store_int.h).
 *
 * Chained hashing with FNV-1a; the table doubles when the load passes 1, so lookups
 * stay O(1). The recency list is intrusive: touching or removing is O(1).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache_store_int.h"

uint64_t cache__hash(const void *key, size_t klen) {
  const uint8_t *p = key;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < klen; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

cache__entry_t *cache__index_find(cache__index_t *ix, const void *key, size_t klen) {
  if (!ix->nbuckets) return NULL;
  uint64_t h = cache__hash(key, klen);
  for (cache__entry_t *e = ix->buckets[h & (ix->nbuckets - 1)]; e; e = e->hnext)
    if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) return e;
  return NULL;
}

static int cache__index_grow(cache__index_t *ix) {
  size_t n = ix->nbuckets ? ix->nbuckets * 2 : 64;
  cache__entry_t **b = calloc(n, sizeof *b);
  if (!b) return -ENOMEM;
  for (size_t i = 0; i < ix->nbuckets; i++) {
    cache__entry_t *e = ix->buckets[i], *next;
    for (; e; e = next) {
      next = e->hnext;
      e->hnext = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
    }
  }
  free(ix->buckets);
  ix->buckets = b;
  ix->nbuckets = n;
  return 0;
}

static void cache__lru_unlink(cache__index_t *ix, cache__entry_t *e) {
  if (e->prev) e->prev->next = e->next;
  else ix->head = e->next;
  if (e->next) e->next->prev = e->prev;
  else ix->tail = e->prev;
  e->prev = e->next = NULL;
}

static void cache__lru_push_head(cache__index_t *ix, cache__entry_t *e) {
  e->prev = NULL;
  e->next = ix->head;
  if (ix->head) ix->head->prev = e;
  ix->head = e;
  if (!ix->tail) ix->tail = e;
}

int cache__index_add(cache__index_t *ix, const void *key, size_t klen, uint64_t charge,
                     uint64_t segment_id, cache__entry_t **out) {
  if (ix->count >= ix->nbuckets && cache__index_grow(ix)) return -ENOMEM;
  cache__entry_t *e = calloc(1, sizeof *e + klen);
  if (!e) return -ENOMEM;
  memcpy(e->key, key, klen);
  e->klen = klen;
  e->hash = cache__hash(key, klen);
  e->charge = charge;
  e->segment_id = segment_id;
  e->hnext = ix->buckets[e->hash & (ix->nbuckets - 1)];
  ix->buckets[e->hash & (ix->nbuckets - 1)] = e;
  cache__lru_push_head(ix, e);
  ix->count++;
  if (out) *out = e;
  return 0;
}

void cache__index_remove(cache__index_t *ix, cache__entry_t *e) {
  cache__entry_t **pp = &ix->buckets[e->hash & (ix->nbuckets - 1)];
  while (*pp != e) pp = &(*pp)->hnext;
  *pp = e->hnext;
  cache__lru_unlink(ix, e);
  ix->count--;
  free(e);
}

void cache__index_touch(cache__index_t *ix, cache__entry_t *e) {
  if (ix->head == e) return;
  cache__lru_unlink(ix, e);
  cache__lru_push_head(ix, e);
}

void cache__index_free(cache__index_t *ix) {
  while (ix->head) cache__index_remove(ix, ix->head);
  free(ix->buckets);
  *ix = (cache__index_t){0};
}
