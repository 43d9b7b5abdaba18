/* ext_cache_lease: CacheClient's misses under a fetch lease (cache/cache_lease.h).
 *
 * A miss claims the key's lease in <dir>/leases; the holder reads the KVS itself
 * (its own kvs_client on the CacheClient's ZeroMQ context, routing from
 * <dir>/kvs-routing, replies on the host of <dir>/reply-host), returns the value, and
 * hands it to the daemon afterwards without waiting (a lease FILL, cache/cache_uds.h),
 * which stores it and releases the lease. A claimer first looks the key up in LMDB
 * once more: a holder may have finished between the caller's miss and the claim
 * (then the lease is released at once and the daemon answers: a hit). A miss that
 * finds the key leased by a live
 * holder waits for the release and then asks the daemon (the value is cached by
 * then, or the daemon fetches it itself, coalesced as always). Everything else --
 * no lease table or routing file (an older or absent daemon), another key's lease in
 * the slot, a key the daemon remembers as large (stored first, read zero copy), a KVS
 * error -- asks the daemon as before (the direct miss of ext_cache_ipc.c).
 *
 * Threads: the functions run with the GIL released and the CacheClient's lock held,
 * except ext_cc_lease_close (lock held). Errors: 0, -errno, SQ_E*.
 */
#ifndef EXT_CACHE_LEASE_H
#define EXT_CACHE_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache_lease.h"
#include "cache_reader.h"
#include "client.h"

typedef struct {
  cache_lease_table_t *table; /* NULL until opened */
  kvs_client_t *kvs;          /* NULL until opened */
  cache_reader_t *reader;     /* NULL until opened: the re-check after a claim */
  int64_t retry_ms;           /* monotonic ms before which no open is tried again */
} ext_cc_lease_t;

/* The outcome of a leased miss. */
typedef struct {
  bool done;                  /* false: ask the daemon; nothing else is set */
  bool found;                 /* false: KEY_DNE */
  uint32_t token;             /* the lease still held for the hand-over (found) */
  sq_lattice_type_t type;
  uint8_t *payload;           /* malloc'd (found); ext_cc_lease_hand_over takes it and
                                 leaves NULL */
  size_t len;
} ext_cc_leased_t;

/* Tries key's miss under its lease, waiting at most timeout_ms (dir: the cache
 * directory, zctx: the context the KVS client is made on). Fills *out; out->done
 * false means: ask the daemon (after a wait for another holder, the value is
 * normally cached by then). Never fails otherwise. */
void ext_cc_lease_get(ext_cc_lease_t *l, void *zctx, const char *dir, const char *key,
                      int timeout_ms, ext_cc_leased_t *out);

/* Hands a found value (out of ext_cc_lease_get, payload taken) to the daemon on
 * get_sock without waiting; when that is not possible the lease is released here
 * (the next miss of the key then reads the KVS again). 0 or the send's error. */
int ext_cc_lease_hand_over(ext_cc_lease_t *l, void *get_sock, const char *key,
                           ext_cc_leased_t *v);

/* After a hand-over: waits at most timeout_ms until the daemon released the lease
 * held by token (it stores first), then true when key is in the cache. */
bool ext_cc_lease_settle(ext_cc_lease_t *l, const char *key, uint32_t token, int timeout_ms);

/* Destroys the KVS client (before its context is terminated) and unmaps the table. */
void ext_cc_lease_close(ext_cc_lease_t *l);

#endif
