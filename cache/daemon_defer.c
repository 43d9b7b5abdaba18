/* daemon_defer: fetched values whose store waits until the executor has its answer.
 *
 * Why: a value small enough to go back inline (cache_uds.h) is answered before it is
 * stored. If the daemon then stored it at once (~80-120 us for 80 KB: segment file,
 * LMDB commit, evicting a victim) it would hold a CPU exactly while the executor it
 * just answered wants one to wake up and decode; on a busy 2-core node that cost the
 * executor more than the store itself. So the store is deferred: it runs at the end
 * of the NEXT loop turn (typically while the KVS works on the following fetch), or
 * when the loop has been idle for CACHE_DEFER_IDLE_MS, whichever comes first, and
 * always before a value fetched later is stored (so LRU order stays fetch order: a
 * late store of an older value must not evict a newer one just answered).
 *
 * Invariant (why nobody can tell): every path that reads or changes a key in the
 * store first calls cache__defer_flush_key(key) -- GETs (so the next reader finds
 * it cached, never fetches it twice), PUTs and their acks (so an acked write merges
 * into the fetched value, never under it), pushed updates, key-set refetches. A
 * deferred key is not yet in the key set the daemon reports; it is within one loop
 * turn. Shutdown flushes everything.
 *
 * Ownership: each entry owns its key copy and the payload taken from the KVS
 * completion. Threads: the daemon loop only.
 */
#include <stdlib.h>
#include <string.h>

#include "daemon_int.h"

struct cache__deferred {
  struct cache__deferred *next;
  uint64_t turn;           /* loop turn in which it was deferred */
  sq_lattice_type_t type;
  bool announced;          /* a refetch: see daemon_window.c */
  uint8_t *payload;        /* owned */
  size_t len;
  char key[];              /* NUL-terminated */
};

void cache__defer_store(cache__daemon_t *d, const char *key, sq_lattice_type_t type,
                        uint8_t *payload, size_t len, bool announced) {
  size_t klen = strlen(key);
  cache__deferred_t *e = malloc(sizeof(*e) + klen + 1);
  if (!e) { /* cannot defer: store now */
    cache__store_now(d, key, type, payload, len, announced);
    free(payload);
    return;
  }
  memcpy(e->key, key, klen + 1);
  e->turn = d->turn;
  e->type = type;
  e->announced = announced;
  e->payload = payload;
  e->len = len;
  cache__deferred_t **tail = &d->deferred; /* appended: flushed in fetch order */
  while (*tail) tail = &(*tail)->next;
  e->next = NULL;
  *tail = e;
}

static void cache__defer_run(cache__daemon_t *d, cache__deferred_t *e) {
  cache__store_now(d, e->key, e->type, e->payload, e->len, e->announced);
  free(e->payload);
  free(e);
}

void cache__defer_flush_key(cache__daemon_t *d, const char *key) {
  for (cache__deferred_t **link = &d->deferred; *link; link = &(*link)->next) {
    cache__deferred_t *e = *link;
    if (strcmp(e->key, key) != 0) continue;
    *link = e->next;
    cache__defer_run(d, e);
    return; /* at most one entry per key: a GET of a deferred key flushes it first */
  }
}

void cache__defer_flush(cache__daemon_t *d, bool all) {
  cache__deferred_t **link = &d->deferred;
  while (*link) {
    cache__deferred_t *e = *link;
    if (!all && e->turn == d->turn) {
      link = &e->next;
      continue;
    }
    *link = e->next;
    cache__defer_run(d, e);
  }
}
