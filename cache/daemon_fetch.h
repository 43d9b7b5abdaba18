/* daemon_fetch: the coalescing table of squall-cache's miss path.
 *
 * Concurrent misses for one key cause one KVS fetch: the first GET that misses a key
 * opens an entry (and the caller starts the fetch, recording its call id); later
 * misses for that key join the entry as waiters. When the fetch completes, the entry
 * is removed and its waiters are handed back in arrival order, to be answered.
 *
 *   join(key) --first--> [entry: call 0, waiters w1]  --set_call(id)-->
 *   join(key) ---------> [entry: call id, waiters w1 w2]
 *   finish(key, id) ----> waiters {w1, w2}, entry gone
 *
 * A waiter is an opaque (pointer, slot) pair: the daemon's pending request and the
 * index of the key inside it. The table never dereferences it.
 * Invariants: at most one entry per key; an entry is finished only by the call id it
 * recorded (a late completion of an older call for a re-fetched key is ignored);
 * at most `max_entries` entries exist (keys from the network cannot grow it without
 * bound). Threads: one thread (the daemon loop).
 */
#ifndef CACHE_DAEMON_FETCH_H
#define CACHE_DAEMON_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cache_fetch_table cache_fetch_table_t;

typedef struct {
  void *req;     /* the waiting request (borrowed, opaque) */
  uint32_t slot; /* which key of the request */
} cache_waiter_t;

/* Makes an empty table holding at most max_entries keys (0 = 65536). 0 or -ENOMEM;
 * *out is the caller's (cache_fetch_table_destroy). */
int cache_fetch_table_create(size_t max_entries, cache_fetch_table_t **out);

/* Frees the table and every entry (waiters are only forgotten). Accepts NULL. */
void cache_fetch_table_destroy(cache_fetch_table_t *t);

/* Adds waiter w for key (klen bytes, copied). *first says whether the entry is new:
 * then the caller must start the fetch and record it with cache_fetch_set_call (or
 * give up with cache_fetch_finish(t, key, klen, 0, ...)). 0, SQ_EEMPTYKEY,
 * SQ_ETOOBIG (table full: nothing added), -ENOMEM. */
int cache_fetch_join(cache_fetch_table_t *t, const char *key, size_t klen,
                     cache_waiter_t w, bool *first);

/* Records the KVS call id of key's fetch. 0 or SQ_ENOTFOUND. */
int cache_fetch_set_call(cache_fetch_table_t *t, const char *key, size_t klen,
                         uint64_t call_id);

/* Removes key's entry if its recorded call id equals call_id, handing its waiters to
 * the caller: *waiters (malloc'd, caller frees; NULL when none) and *n. 0,
 * SQ_ENOTFOUND (no entry, or another call id: nothing changes). */
int cache_fetch_finish(cache_fetch_table_t *t, const char *key, size_t klen,
                       uint64_t call_id, cache_waiter_t **waiters, size_t *n);

/* True when a fetch for key is open. */
bool cache_fetch_pending(const cache_fetch_table_t *t, const char *key, size_t klen);

/* Number of open entries. */
size_t cache_fetch_count(const cache_fetch_table_t *t);

#endif
