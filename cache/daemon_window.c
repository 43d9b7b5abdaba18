/* daemon_window: closing the announcement gap of the key set (issue 4, freshness).
 *
 * The KVS pushes a write of key K to this cache only once it has applied a key-set
 * report that lists K (daemon_keyset.h). A fetch of K reads the KVS before that
 * report exists, so a write landing between the fetch's read and the KVS applying
 * the next report would never reach the cache:
 *
 *   fetch K (reads v1) ... write K=v2 lands ... report {.., K} applied ... (no push)
 *
 * So every key stored from a fetch joins the "window" (keys not yet announced).
 * When a report starts, the window moves to "announcing" (the report lists every key
 * the store holds, deferred stores flushed first); when the KVS acknowledges that
 * report, each announcing key still cached is fetched once more ("refetch") and the
 * result merged: a write that slipped through the gap is in the KVS by then, and any
 * later write is pushed. A failed report puts the keys back into the window for the
 * next one. Refetches are marked so that their own results do not re-enter the
 * window (the KVS already knows those keys). The window is bounded: past
 * CACHE_WINDOW_MAX keys it only remembers that it overflowed, and the ack refetches
 * every cached key instead.
 *
 * Cost: one extra KVS GET per miss, ~100 ms after it, off every request's path; for a
 * large LWW object the merge decides on the timestamp without copying the value.
 * Ownership: the daemon owns both lists (malloc'd key copies). Threads: daemon loop.
 */
#include <stdlib.h>
#include <string.h>

#include "daemon_int.h"

#define CACHE_WINDOW_MAX 65536

static void cache__keys_clear(cache__keys_t *k) {
  for (size_t i = 0; i < k->n; i++) free(k->keys[i]);
  free(k->keys);
  *k = (cache__keys_t){0};
}

static void cache__keys_add(cache__keys_t *k, const char *key) {
  if (k->overflow) return;
  if (k->n == k->cap) {
    size_t cap = k->cap ? k->cap * 2 : 16;
    char **nk = cap <= CACHE_WINDOW_MAX ? realloc(k->keys, cap * sizeof(*nk)) : NULL;
    if (!nk) {
      for (size_t i = 0; i < k->n; i++) free(k->keys[i]);
      k->n = 0;
      k->overflow = true; /* refetch everything at the ack */
      return;
    }
    k->keys = nk;
    k->cap = cap;
  }
  if ((k->keys[k->n] = strdup(key)) != NULL) k->n++;
  else k->overflow = true;
}

void cache__window_add(cache__daemon_t *d, const char *key) {
  cache__keys_add(&d->window, key);
}

void cache__window_started(cache__daemon_t *d) {
  cache__keys_clear(&d->announcing); /* empty: window_done always empties it */
  d->announcing = d->window;
  d->window = (cache__keys_t){0};
}

static int cache__refetch_one(void *arg, const void *key, size_t klen) {
  cache__daemon_t *d = arg;
  char buf[512];
  if (klen >= sizeof(buf) || memchr(key, '\0', klen)) return 0;
  memcpy(buf, key, klen);
  buf[klen] = '\0';
  if (cache__refetch(d, buf) == 0) d->c.refetches++; /* not counted in `fetches` */
  return 0;
}

void cache__window_done(cache__daemon_t *d, int err) {
  if (err) { /* not announced: the next report carries them */
    for (size_t i = 0; i < d->announcing.n; i++)
      cache__keys_add(&d->window, d->announcing.keys[i]);
    d->window.overflow = d->window.overflow || d->announcing.overflow;
  } else if (d->announcing.overflow) {
    cache_store_foreach_key(d->store, cache__refetch_one, d);
  } else {
    for (size_t i = 0; i < d->announcing.n; i++)
      cache__refetch_one(d, d->announcing.keys[i], strlen(d->announcing.keys[i]));
  }
  cache__keys_clear(&d->announcing);
}

void cache__window_free(cache__daemon_t *d) {
  cache__keys_clear(&d->window);
  cache__keys_clear(&d->announcing);
}
