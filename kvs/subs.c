/* kvs_subs: cache subscriptions of one worker (see subs.h).
 *
 * Caches live in a small array (index = bit in the per-key mask). The key index is an
 * open-addressing table rebuilt from every cache's key list on each change: changes
 * come at most a few times per second per cache, lookups on every changed PUT, so
 * lookups are what must be cheap.
 */
#include "subs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sq_error.h"

typedef struct {
  char *id;          /* NULL = free slot */
  char endpoint[300];
  uint64_t last_seen_ms;
  char **keys;       /* owned copies */
  size_t *key_lens;
  size_t nkeys;
} kvs__cache_t;

typedef struct {
  uint64_t hash;
  const char *key; /* points into a cache's key copy; NULL = empty */
  size_t keylen;
  uint64_t mask;
} kvs__sub_slot_t;

struct kvs_subs {
  uint32_t default_port;
  kvs__cache_t caches[KVS_SUBS_MAX_CACHES];
  kvs__sub_slot_t *slots;
  size_t slot_mask; /* capacity - 1, or 0 with slots == NULL */
};

int kvs_subs_create(uint32_t default_port, kvs_subs_t **out) {
  kvs_subs_t *s = calloc(1, sizeof(*s));
  if (!s) return -ENOMEM;
  s->default_port = default_port;
  *out = s;
  return 0;
}

static void kvs__cache_clear(kvs__cache_t *c) {
  for (size_t i = 0; i < c->nkeys; i++) free(c->keys[i]);
  free(c->keys);
  free(c->key_lens);
  free(c->id);
  memset(c, 0, sizeof(*c));
}

void kvs_subs_destroy(kvs_subs_t *s) {
  if (!s) return;
  for (size_t i = 0; i < KVS_SUBS_MAX_CACHES; i++) kvs__cache_clear(&s->caches[i]);
  free(s->slots);
  free(s);
}

static kvs__sub_slot_t *kvs__sub_find(const kvs_subs_t *s, const char *key, size_t len,
                                      uint64_t hash) {
  size_t i = hash & s->slot_mask;
  for (;;) {
    kvs__sub_slot_t *slot = &s->slots[i];
    if (!slot->key || (slot->hash == hash && slot->keylen == len &&
                       memcmp(slot->key, key, len) == 0))
      return slot;
    i = (i + 1) & s->slot_mask;
  }
}

/* Rebuilds the key index from all caches. Callers change the key lists first, so the
 * old index may point at freed keys: on -ENOMEM it is dropped (no pushes until the
 * next successful change) rather than kept. */
static int kvs__subs_reindex(kvs_subs_t *s) {
  size_t total = 0;
  for (size_t c = 0; c < KVS_SUBS_MAX_CACHES; c++) total += s->caches[c].nkeys;
  size_t cap = 16;
  while (cap < total * 2) cap *= 2;
  kvs__sub_slot_t *slots = calloc(cap, sizeof(*slots));
  free(s->slots);
  s->slots = NULL;
  s->slot_mask = 0;
  if (!slots) return -ENOMEM;
  s->slots = slots;
  s->slot_mask = cap - 1;
  for (size_t c = 0; c < KVS_SUBS_MAX_CACHES; c++) {
    const kvs__cache_t *cache = &s->caches[c];
    for (size_t k = 0; k < cache->nkeys; k++) {
      uint64_t h = sq_hash_std(cache->keys[k], cache->key_lens[k]);
      kvs__sub_slot_t *slot = kvs__sub_find(s, cache->keys[k], cache->key_lens[k], h);
      if (!slot->key) {
        slot->key = cache->keys[k];
        slot->keylen = cache->key_lens[k];
        slot->hash = h;
      }
      slot->mask |= 1ull << c;
    }
  }
  return 0;
}

/* Finds the cache slot for id, or a free one (NULL when full). */
static kvs__cache_t *kvs__cache_slot(kvs_subs_t *s, const char *id, size_t id_len) {
  kvs__cache_t *free_slot = NULL;
  for (size_t c = 0; c < KVS_SUBS_MAX_CACHES; c++) {
    kvs__cache_t *cache = &s->caches[c];
    if (!cache->id) {
      if (!free_slot) free_slot = cache;
    } else if (strlen(cache->id) == id_len && memcmp(cache->id, id, id_len) == 0) {
      return cache;
    }
  }
  return free_slot;
}

/* "host:port" or "host" -> tcp endpoint. Hosts are printable, without '/' or spaces. */
static int kvs__cache_endpoint(const kvs_subs_t *s, const char *id, size_t id_len,
                               char *out, size_t cap) {
  if (id_len == 0 || id_len > 255) return SQ_EINVAL;
  for (size_t i = 0; i < id_len; i++)
    if (id[i] <= 0x20 || id[i] >= 0x7f || id[i] == '/') return SQ_EINVAL;
  const char *colon = memrchr(id, ':', id_len);
  int n;
  if (colon && !memchr(id, ']', id_len) && memchr(id, ':', id_len) == colon)
    n = snprintf(out, cap, "tcp://%.*s", (int)id_len, id);
  else
    n = snprintf(out, cap, "tcp://%.*s:%u", (int)id_len, id, s->default_port);
  return (n < 0 || (size_t)n >= cap) ? SQ_EINVAL : 0;
}

static int kvs__copy_keys(kvs__cache_t *c, const char *const *keys, const size_t *lens,
                          size_t n) {
  char **copies = calloc(n ? n : 1, sizeof(char *));
  size_t *copy_lens = calloc(n ? n : 1, sizeof(size_t));
  if (!copies || !copy_lens) goto fail;
  for (size_t i = 0; i < n; i++) {
    copies[i] = malloc(lens[i] + 1);
    if (!copies[i]) goto fail;
    memcpy(copies[i], keys[i], lens[i]);
    copies[i][lens[i]] = '\0';
    copy_lens[i] = lens[i];
  }
  for (size_t i = 0; i < c->nkeys; i++) free(c->keys[i]);
  free(c->keys);
  free(c->key_lens);
  c->keys = copies;
  c->key_lens = copy_lens;
  c->nkeys = n;
  return 0;
fail:
  for (size_t i = 0; copies && i < n; i++) free(copies[i]);
  free(copies);
  free(copy_lens);
  return -ENOMEM;
}

int kvs_subs_update(kvs_subs_t *s, const char *id, size_t id_len, const char *const *keys,
                    const size_t *key_lens, size_t n, uint64_t now_ms) {
  char endpoint[300];
  int rc = kvs__cache_endpoint(s, id, id_len, endpoint, sizeof(endpoint));
  if (rc) return rc;
  kvs__cache_t *c = kvs__cache_slot(s, id, id_len);
  if (!c) return SQ_ETOOBIG;
  if (n == 0) { /* nothing held here: forget the cache on this worker */
    if (c->id) kvs__cache_clear(c);
    return kvs__subs_reindex(s);
  }
  if (!c->id) {
    c->id = strndup(id, id_len);
    if (!c->id) return -ENOMEM;
    memcpy(c->endpoint, endpoint, sizeof(endpoint));
  }
  rc = kvs__copy_keys(c, keys, key_lens, n);
  if (rc) return rc;
  c->last_seen_ms = now_ms;
  return kvs__subs_reindex(s);
}

size_t kvs_subs_lookup(const kvs_subs_t *s, const char *key, size_t keylen,
                       const char **endpoints, size_t max) {
  if (!s->slots) return 0;
  const kvs__sub_slot_t *slot = kvs__sub_find(s, key, keylen, sq_hash_std(key, keylen));
  if (!slot->key) return 0;
  size_t n = 0;
  for (size_t c = 0; c < KVS_SUBS_MAX_CACHES && n < max; c++)
    if (slot->mask & (1ull << c)) endpoints[n++] = s->caches[c].endpoint;
  return n;
}

size_t kvs_subs_expire(kvs_subs_t *s, uint64_t now_ms, uint64_t ttl_ms) {
  size_t dropped = 0;
  for (size_t c = 0; c < KVS_SUBS_MAX_CACHES; c++) {
    kvs__cache_t *cache = &s->caches[c];
    if (cache->id && cache->last_seen_ms + ttl_ms < now_ms) {
      kvs__cache_clear(cache);
      dropped++;
    }
  }
  if (dropped) (void)kvs__subs_reindex(s); /* on -ENOMEM the index is left empty */
  return dropped;
}

size_t kvs_subs_caches(const kvs_subs_t *s) {
  size_t n = 0;
  for (size_t c = 0; c < KVS_SUBS_MAX_CACHES; c++) n += s->caches[c].id != NULL;
  return n;
}
