/* client_cache: the bounded address cache, PUSH socket cache and timer heap of a
 * kvs_client (contracts in client_int.h).
 *
 * Why these shapes:
 *   - Address cache: a chained hash table keyed by FNV-1a of the key. Eviction picks
 *     the first entry found from a rotating bucket cursor: cheap, bounded, and fair
 *     enough for a cache whose misses cost one routing round trip.
 *   - Socket cache: a small array scanned linearly. A client talks to a handful of
 *     servers (threads of a few nodes); a linear scan of <= max_sockets entries is
 *     faster than hashing at that size. Sends never block (ZMQ_DONTWAIT), unlike the
 *     reference SocketCache that stalls a thread behind a dead peer (§5 item 11).
 *     An evicted socket lingers KVS__EVICT_LINGER_MS so that a request sent just
 *     before the eviction still leaves; a socket closed because its server went
 *     silent is dropped at once.
 *   - Timer heap: lazy deletion keeps cancel free; stale timers are skipped on pop.
 */
#include "client_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

bool kvs__endpoint_valid(const char *s, size_t len) {
  static const char *const schemes[] = {"tcp://", "ipc://", "inproc://"};
  if (len > KVS__MAX_ENDPOINT) return false;
  size_t skip = 0;
  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
    size_t n = strlen(schemes[i]);
    if (len > n && memcmp(s, schemes[i], n) == 0) skip = n;
  }
  if (skip == 0) return false;
  for (size_t i = skip; i < len; i++)
    if (s[i] <= ' ' || s[i] > '~') return false;
  return true;
}

/* --- address cache ------------------------------------------------------------------ */

static uint64_t kvs__hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static void kvs__addr_entry_free(kvs__addr_t *e) {
  if (!e) return;
  for (uint32_t i = 0; i < e->neps; i++) free(e->eps[i]);
  free(e->eps);
  free(e);
}

int kvs__addr_init(kvs__addr_cache_t *ac, size_t max) {
  memset(ac, 0, sizeof *ac);
  size_t nb = 64;
  while (nb < max && nb < (1u << 20)) nb <<= 1;
  ac->buckets = calloc(nb, sizeof *ac->buckets);
  if (!ac->buckets) return -ENOMEM;
  ac->nbuckets = nb;
  ac->max = max ? max : 1;
  return 0;
}

void kvs__addr_free(kvs__addr_cache_t *ac) {
  if (!ac || !ac->buckets) return;
  for (size_t b = 0; b < ac->nbuckets; b++) {
    kvs__addr_t *e = ac->buckets[b];
    while (e) {
      kvs__addr_t *next = e->next;
      kvs__addr_entry_free(e);
      e = next;
    }
  }
  free(ac->buckets);
  memset(ac, 0, sizeof *ac);
}

static kvs__addr_t **kvs__addr_slot(const kvs__addr_cache_t *ac, const char *key,
                                    uint64_t h) {
  kvs__addr_t **p = &ac->buckets[h & (ac->nbuckets - 1)];
  while (*p && ((*p)->hash != h || strcmp((*p)->key, key) != 0)) p = &(*p)->next;
  return p;
}

const kvs__addr_t *kvs__addr_get(const kvs__addr_cache_t *ac, const char *key) {
  return *kvs__addr_slot(ac, key, kvs__hash(key));
}

void kvs__addr_drop(kvs__addr_cache_t *ac, const char *key) {
  kvs__addr_t **p = kvs__addr_slot(ac, key, kvs__hash(key));
  kvs__addr_t *e = *p;
  if (!e) return;
  *p = e->next;
  kvs__addr_entry_free(e);
  ac->count--;
}

/* Removes one entry, starting the search at the rotating cursor. */
static void kvs__addr_evict(kvs__addr_cache_t *ac) {
  for (size_t i = 0; i < ac->nbuckets; i++) {
    size_t b = (ac->evict_cursor++) & (ac->nbuckets - 1);
    kvs__addr_t *e = ac->buckets[b];
    if (e) {
      ac->buckets[b] = e->next;
      kvs__addr_entry_free(e);
      ac->count--;
      return;
    }
  }
}

int kvs__addr_set(kvs__addr_cache_t *ac, const char *key, char *const *eps, size_t n) {
  int rc = -ENOMEM;
  size_t klen = strlen(key);
  kvs__addr_t *e = calloc(1, sizeof *e + klen + 1);
  if (!e) goto out;
  memcpy(e->key, key, klen + 1);
  e->hash = kvs__hash(key);
  e->eps = calloc(n, sizeof *e->eps);
  if (!e->eps) goto out;
  for (; e->neps < n; e->neps++) {
    e->eps[e->neps] = strdup(eps[e->neps]);
    if (!e->eps[e->neps]) goto out;
  }
  kvs__addr_drop(ac, key);
  if (ac->count >= ac->max) kvs__addr_evict(ac);
  kvs__addr_t **slot = &ac->buckets[e->hash & (ac->nbuckets - 1)];
  e->next = *slot;
  *slot = e;
  ac->count++;
  e = NULL;
  rc = 0;
out:
  kvs__addr_entry_free(e);
  return rc;
}

size_t kvs__addr_drop_endpoint(kvs__addr_cache_t *ac, const char *ep) {
  size_t dropped = 0;
  for (size_t b = 0; b < ac->nbuckets; b++) {
    kvs__addr_t **p = &ac->buckets[b];
    while (*p) {
      kvs__addr_t *e = *p;
      bool hit = false;
      for (uint32_t i = 0; i < e->neps && !hit; i++) hit = strcmp(e->eps[i], ep) == 0;
      if (hit) {
        *p = e->next;
        kvs__addr_entry_free(e);
        ac->count--;
        dropped++;
      } else {
        p = &e->next;
      }
    }
  }
  return dropped;
}

/* --- PUSH socket cache -------------------------------------------------------------- */

/* Closes socket i. linger_ms > 0 lets ZeroMQ flush what is queued in the background
 * (an evicted socket to a live server); 0 drops it (a suspected server, destroy). */
static void kvs__sock_remove(kvs__sock_cache_t *sc, size_t i, int linger_ms) {
  if (linger_ms > 0) zmq_setsockopt(sc->v[i].sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
  zmq_close(sc->v[i].sock);
  free(sc->v[i].ep);
  sc->v[i] = sc->v[--sc->n];
}

/* Finds or makes the socket for ep; *out is borrowed from the cache. */
static int kvs__sock_get(kvs__sock_cache_t *sc, const char *ep, void **out) {
  int rc = 0;
  void *sock = NULL;
  char *copy = NULL;
  for (size_t i = 0; i < sc->n; i++) {
    if (strcmp(sc->v[i].ep, ep) == 0) {
      sc->v[i].used = ++sc->tick;
      *out = sc->v[i].sock;
      return 0;
    }
  }
  if (!sc->v && !(sc->v = calloc(sc->max, sizeof *sc->v))) return -ENOMEM;
  copy = strdup(ep);
  sock = zmq_socket(sc->ctx, ZMQ_PUSH);
  if (!copy || !sock) {
    rc = copy ? -zmq_errno() : -ENOMEM;
    goto out;
  }
  int zero = 0;
  zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
  if (zmq_connect(sock, ep) != 0) {
    rc = -zmq_errno();
    goto out;
  }
  if (sc->n == sc->max) {
    size_t lru = 0;
    for (size_t i = 1; i < sc->n; i++)
      if (sc->v[i].used < sc->v[lru].used) lru = i;
    kvs__sock_remove(sc, lru, KVS__EVICT_LINGER_MS);
  }
  sc->v[sc->n++] = (kvs__sock_t){.ep = copy, .sock = sock, .used = ++sc->tick};
  *out = sock;
  copy = NULL;
  sock = NULL;
out:
  if (sock) zmq_close(sock);
  free(copy);
  return rc;
}

int kvs__sock_send(kvs__sock_cache_t *sc, const char *ep, const void *buf, size_t len) {
  void *sock = NULL;
  int rc = kvs__sock_get(sc, ep, &sock);
  if (rc != 0) return rc;
  if (zmq_send(sock, buf, len, ZMQ_DONTWAIT) < 0) return -zmq_errno();
  return 0;
}

void kvs__sock_close(kvs__sock_cache_t *sc, const char *ep) {
  for (size_t i = 0; i < sc->n; i++) {
    if (strcmp(sc->v[i].ep, ep) == 0) {
      kvs__sock_remove(sc, i, 0);
      return;
    }
  }
}

void kvs__sock_free(kvs__sock_cache_t *sc) {
  if (!sc) return;
  while (sc->n) kvs__sock_remove(sc, sc->n - 1, 0);
  free(sc->v);
  sc->v = NULL;
}

/* --- timer heap --------------------------------------------------------------------- */

static bool kvs__timer_less(kvs__timer_t a, kvs__timer_t b) {
  return a.at < b.at || (a.at == b.at && a.rid < b.rid);
}

int kvs__heap_push(kvs__heap_t *h, uint64_t at, uint64_t rid) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    kvs__timer_t *v = realloc(h->v, cap * sizeof *v);
    if (!v) return -ENOMEM;
    h->v = v;
    h->cap = cap;
  }
  size_t i = h->n++;
  kvs__timer_t t = {at, rid};
  while (i > 0 && kvs__timer_less(t, h->v[(i - 1) / 2])) {
    h->v[i] = h->v[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->v[i] = t;
  return 0;
}

bool kvs__heap_top(const kvs__heap_t *h, kvs__timer_t *out) {
  if (h->n == 0) return false;
  *out = h->v[0];
  return true;
}

void kvs__heap_pop(kvs__heap_t *h) {
  if (h->n == 0) return;
  kvs__timer_t t = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, m = i;
    if (l < h->n && kvs__timer_less(h->v[l], t)) m = l;
    if (l + 1 < h->n && kvs__timer_less(h->v[l + 1], m == i ? t : h->v[m])) m = l + 1;
    if (m == i) break;
    h->v[i] = h->v[m];
    i = m;
  }
  if (h->n) h->v[i] = t;
}

void kvs__heap_free(kvs__heap_t *h) {
  free(h->v);
  memset(h, 0, sizeof *h);
}
