/* kvs_subs: which caches hold which keys, per storage worker (PROTOCOL.md §2.7).
 *
 * A cache announces the keys it holds by PUTting the LWW key
 * `ANNA_METADATA|cache_ip|<id>` (a StringSet) whenever its key set changes and every
 * few seconds. The worker owning that metadata key hands the set to every worker of
 * the node; each keeps, for the keys it owns, the caches that hold them, and after a
 * durable change of such a key pushes the whole new value to those caches as a
 * KeyRequest PUT with no response address (the cache merges it like a replica).
 * Unlike Anna, no management service is needed and updates go out at once, not with
 * the 10 s gossip.
 *
 * <id> is "<host>:<port>" (the cache's update endpoint) or Anna's bare "<host>", which
 * means port 7150 + the node's port offset. A cache that has not re-announced within
 * the expiry time is forgotten (it died or left). At most KVS_SUBS_MAX_CACHES caches
 * per node are tracked (a bit mask per key); more are refused and logged.
 *
 * Owned by one worker thread; no locks.
 */
#ifndef KVS_SUBS_H
#define KVS_SUBS_H

#include <stddef.h>
#include <stdint.h>

#define KVS_SUBS_MAX_CACHES 64
#define KVS_SUBS_PREFIX "ANNA_METADATA|cache_ip|"

typedef struct kvs_subs kvs_subs_t;

/* Creates an empty table; `default_port` is used for ids without a port. */
int kvs_subs_create(uint32_t default_port, kvs_subs_t **out);

void kvs_subs_destroy(kvs_subs_t *s);

/* Replaces the key set of cache `id` with keys[0..n) (copied; the caller passes only
 * keys this worker owns). An empty set forgets the cache. 0, -ENOMEM, SQ_EINVAL (bad
 * id), SQ_ETOOBIG (too many caches). */
int kvs_subs_update(kvs_subs_t *s, const char *id, size_t id_len, const char *const *keys,
                    const size_t *key_lens, size_t n, uint64_t now_ms);

/* Endpoints ("tcp://host:port") of the caches holding `key`: up to max pointers into
 * the table (valid until the next update or expire). Returns how many. */
size_t kvs_subs_lookup(const kvs_subs_t *s, const char *key, size_t keylen,
                       const char **endpoints, size_t max);

/* Forgets caches not announced since now_ms - ttl_ms. Returns how many were dropped. */
size_t kvs_subs_expire(kvs_subs_t *s, uint64_t now_ms, uint64_t ttl_ms);

/* Number of caches known. */
size_t kvs_subs_caches(const kvs_subs_t *s);

#endif
