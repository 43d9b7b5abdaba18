/* cache_lease: fetch leases in shared memory, so executors miss without the daemon.
 *
 * Why: a miss that asks squall-cache first costs a unix-socket hop and the daemon's
 * dispatch (~50 us) before its KVS read starts, about 1.2x a direct KVS get at 80 KB
 * (docs/cache.md "Miss path performance"). With leases the executor that misses
 * claims the key's lease here, reads the KVS itself, returns the value, and hands the
 * bytes to the daemon afterwards without waiting (a lease FILL, cache_uds.h); the
 * daemon stores them and then releases the lease. Other executors that miss the key
 * meanwhile find it leased and wait for the release (a futex on the slot), then ask
 * the daemon, which by then has the value cached: one KVS fetch per key, as before.
 *
 * Layout of <dir>/leases (made and reset by the daemon at each start, mapped shared
 * and read-write by executors):
 *
 *   header  64 bytes: magic "SQLS", version, slot count, large-key count
 *   slots   CACHE_LEASE_SLOTS x 64 bytes (one cache line each), slot = hash % count
 *   large   CACHE_LEASE_LARGE x u64: hashes of keys whose last fetched value was over
 *           CACHE_UDS_INLINE_MAX (direct-mapped; written by the daemon only): their
 *           misses go through the daemon, which stores them first (zero copy reads)
 *
 * Slot state machine (state is the futex word; every transition adds 1 or 2):
 *
 *   free (even s) --claim: CAS s -> s+1--> held by token s+1
 *   held (odd t)  --release(t): CAS t -> t+1, FUTEX_WAKE--> free
 *   held (odd t)  --take-over (holder dead by pid, or past its deadline):
 *                   CAS t -> t+2--> held by token t+2 (the old token is now stale)
 *
 * A holder publishes pid, key hash and deadline after its CAS, then `owner` = its
 * token (release order); a reader trusts those fields only while owner == state. A
 * stale token (taken over, or reset by a restarted daemon) releases nothing.
 *
 * Trust: the file is shared with every executor, any of which may scribble on it. No
 * field read from it is used as an index, size or pointer (slot indices come from the
 * key hash computed here); a garbage value can only make waiters wake early or a key
 * be fetched twice, never a crash or a wrong value. The daemon bounds-checks the file
 * size at open and rewrites the header and every slot at start.
 *
 * Clocks: deadlines are CLOCK_MONOTONIC milliseconds (one clock for the whole node).
 * Threads: any; every shared field is accessed with atomics.
 * Errors: 0, -errno, SQ_ENOTFOUND, SQ_ECORRUPT, SQ_ETIMEOUT, SQ_EINVAL.
 */
#ifndef CACHE_LEASE_H
#define CACHE_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_LEASE_NAME "leases"
#define CACHE_LEASE_SLOTS 4096u
#define CACHE_LEASE_LARGE 1024u
#define CACHE_LEASE_KEY_MAX 511 /* longest key a lease FILL carries (LMDB's limit) */
#define CACHE_LEASE_HOLD_MAX_MS 2000 /* the longest a holder may keep others waiting */

typedef struct cache_lease_table cache_lease_table_t;

typedef enum {
  CACHE_LEASE_MINE = 0,  /* claimed: fetch the key, then hand it over or release */
  CACHE_LEASE_WAIT = 1,  /* another live holder fetches this key: cache_lease_wait */
  CACHE_LEASE_OTHER = 2, /* the slot is busy with another key: ask the daemon */
} cache_lease_claim_t;

/* Opens <dir>/leases. create (the daemon, the only writer of the header and the
 * large table): creates it or fixes its size, writes the header, releases every
 * held slot (waking waiters) and clears the large table. Otherwise (executors) the
 * file must exist with the exact size and header. On 0 *out is the caller's
 * (cache_lease_close). SQ_ENOTFOUND (no file), SQ_ECORRUPT (size or header wrong),
 * SQ_ETOOBIG (path), -errno. */
int cache_lease_open(const char *dir, bool create, cache_lease_table_t **out);

/* Unmaps the table (held leases stay as they are). Accepts NULL. */
void cache_lease_close(cache_lease_table_t *t);

/* The 64-bit hash of a key used for slots and the large table (never 0). */
uint64_t cache_lease_hash(const void *key, size_t klen);

/* Tries to claim key's lease for this process until now + hold_ms (capped at
 * CACHE_LEASE_HOLD_MAX_MS). Takes over a lease whose holder is dead or past its
 * deadline. Returns a cache_lease_claim_t; *token is the claimed token (MINE) or the
 * holder's (WAIT), 0 for OTHER. */
cache_lease_claim_t cache_lease_claim(cache_lease_table_t *t, const void *key, size_t klen,
                                      int hold_ms, uint32_t *token);

/* Waits until key's lease held by token is released or taken over, its holder dies
 * or passes its deadline, or timeout_ms passed. 0 (it is no longer worth waiting:
 * look again), SQ_ETIMEOUT. */
int cache_lease_wait(cache_lease_table_t *t, const void *key, size_t klen, uint32_t token,
                     int timeout_ms);

/* Releases key's lease if token still holds it, waking its waiters. 0, SQ_ENOTFOUND
 * (the token is stale: taken over or reset; nothing done). */
int cache_lease_release(cache_lease_table_t *t, const void *key, size_t klen, uint32_t token);

/* True when key's lease is held by a live holder within its deadline (the daemon
 * asks this when a PUT of an uncached key is acked: a fetch may be in flight). */
bool cache_lease_held(cache_lease_table_t *t, const void *key, size_t klen);

/* The large-key table: note (daemon) whether key's last fetched value was large;
 * ask (executors) whether it is remembered as large. */
void cache_lease_note_large(cache_lease_table_t *t, const void *key, size_t klen, bool large);
bool cache_lease_is_large(cache_lease_table_t *t, const void *key, size_t klen);

#endif
