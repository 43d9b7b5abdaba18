/* store_int: internals shared by cache_store.c, cache_store_put.c and cache_store_index.c.
 *
 * The writer keeps an in-memory index of every cached key: a chained hash table for
 * lookup and a doubly linked list in recency order (head = most recently used,
 * tail = next victim). It mirrors the "values" DB exactly after every committed
 * transaction; it is rebuilt from LMDB at open. Only the writer thread touches it.
 */
#ifndef CACHE_STORE_INT_H
#define CACHE_STORE_INT_H

#include <lmdb.h>

#include "cache_record.h"
#include "cache_store.h"

typedef struct cache__entry {
  struct cache__entry *hnext;       /* hash chain */
  struct cache__entry *prev, *next; /* recency list */
  uint64_t hash;
  uint64_t charge;                  /* bytes charged against the budget */
  uint64_t segment_id;              /* 0: stored inline */
  size_t klen;
  uint8_t key[];
} cache__entry_t;

typedef struct {
  cache__entry_t **buckets;
  size_t nbuckets; /* power of two */
  size_t count;
  cache__entry_t *head, *tail;
} cache__index_t;

struct cache_store {
  cache_store_config_t cfg; /* cfg.dir points at dir below */
  char dir[CACHE_PATH_MAX];
  MDB_env *env;
  MDB_dbi values, meta;
  int lock_fd;
  size_t page;
  uint64_t next_segment;
  uint64_t bytes;
  cache__index_t index;
  cache_store_stats_t stats; /* counters; sizes are filled in by cache_store_stats */
  int broken;                /* sticky error, 0 while healthy */
  bool defer_unlinks;        /* cache_store_defer_unlinks: queue, do not unlink */
  uint64_t *unlinks;         /* segment ids whose files await unlinking */
  size_t nunlinks, capunlinks;
};

uint64_t cache__hash(const void *key, size_t klen);
cache__entry_t *cache__index_find(cache__index_t *ix, const void *key, size_t klen);
/* Creates an entry (most recent) for a key not in the index. 0 or -ENOMEM. */
int cache__index_add(cache__index_t *ix, const void *key, size_t klen, uint64_t charge,
                     uint64_t segment_id, cache__entry_t **out);
void cache__index_remove(cache__index_t *ix, cache__entry_t *e); /* frees e */
void cache__index_touch(cache__index_t *ix, cache__entry_t *e);
void cache__index_free(cache__index_t *ix);

/* Bytes charged for a value: key, record, segment file (pages), index entry. */
uint64_t cache__charge(const cache_store_t *s, size_t klen, size_t record_len,
                       uint64_t segment_len);

/* Deletes `n` victims (entries, LMDB keys, segment files) in one transaction. */
int cache__evict_entries(cache_store_t *s, cache__entry_t **victims, size_t n);

/* Makes a sticky failure out of errors that leave the environment in doubt. */
int cache__fail(cache_store_t *s, int rc);

/* Unlinks segment `id` (ENOENT is fine), or queues it while unlinks are deferred
 * (unlinked at once when the queue cannot grow). */
void cache__segment_unlink(cache_store_t *s, uint64_t id);

#endif
