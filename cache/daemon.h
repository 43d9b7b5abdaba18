/* daemon: squall-cache, the per-node cache daemon (issue 4).
 *
 * One per node, the only writer of the node's LMDB cache (cache_store.h). Executors
 * read the cache themselves (cache_reader.h) and talk to the daemon only on a miss,
 * on a write, or to report hits:
 *
 *   executor --KeyRequest GET--> <dir>/requests.sock (unix SOCK_SEQPACKET, cache_uds.h)
 *            <--KeyResponse----  same connection; small fetched values inline
 *   executor --KeyRequest GET--> ipc://<dir>/requests-get  --\
 *   executor --KeyRequest PUT--> ipc://<dir>/requests-put  ---+--> daemon loop
 *   squall-kvs --pushed PUT----> tcp://<bind>:7150+offset  --/       |  kvs_client
 *   executor <--KeyResponse----- response_address                     v  (async)
 *                                                               squall-kvs
 *
 * GET (with a response_address): every key that is cached is answered at once (tuple
 *   key + lattice type, no payload: the executor reads LMDB); a missing key is fetched
 *   from the KVS (concurrent misses of one key share one fetch, daemon_fetch.h),
 *   stored (daemon_value.h) and then answered; KEY_DNE when the KVS says so. The
 *   reply (response_id = request_id) goes out when every key of the request is done.
 * GET on requests.sock: the same, answered on the connection; a fetched value of at
 *   most 1 MiB is answered with its KVS payload inline BEFORE it is stored (the store
 *   is deferred to the next loop turn, daemon_defer.c), larger ones after.
 * GET without a response_address: a fire-and-forget hit report. Executors resolve
 *   hits from LMDB without the daemon, so they batch the keys they hit and send them
 *   this way; the daemon marks them recently used (cache_store_touch) for LRU. This
 *   was chosen over a shared ring because it needs nothing new on the read side and
 *   costs an executor one non-blocking send per batch.
 * PUT: validated, written through to the KVS (no response_address: asynchronous,
 *   answered to nobody, failures logged); when the KVS acknowledges, the payload
 *   is merged into the cached value if the key is cached (so the cache never shows a
 *   write the KVS has not made durable) and the KVS's per-key outcome is answered.
 * Pushed updates (KeyRequest PUT, no response address): merged only into keys the
 *   cache holds; others and type mismatches are ignored (logged at debug / warn).
 * Key set: ANNA_METADATA|cache_ip|<public_ip>:<7150+offset> (daemon_keyset.h), at
 *   start, within 100 ms of a change and every 5 s. Keys fetched before the KVS
 *   acknowledged a report listing them are fetched once more then (daemon_window.c).
 * Bad requests get a KeyResponse with error LATTICE and error_message; the daemon
 *   keeps serving. Stale LMDB reader slots are cleared at start and every second. At
 *   start every cached key is refetched (updates pushed while the daemon was down are
 *   lost otherwise). SIGHUP logs the counters at once; SIGTERM/SIGINT stop cleanly
 *   (in-flight writes get up to 2 s to be acknowledged).
 *
 * Threads: one, the caller's; it owns every socket, the store and the KVS client.
 */
#ifndef CACHE_DAEMON_H
#define CACHE_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sq_log.h"

#define CACHE_UPDATE_PORT 7150
#define CACHE_DAEMON_MAX_KEYS 10000 /* tuples per request */

typedef struct {
  char *dir;               /* cache directory; "" = /dev/shm/squall-<cluster>-<node> */
  char *cluster;
  char *node;              /* "" = the host name */
  int64_t port_offset;     /* update port = 7150 + offset */
  char *kvs;               /* routing endpoints of squall-kvs, comma-separated */
  uint64_t budget;         /* bytes; 0 = a quarter of RAM */
  char *public_ip;         /* the address the KVS pushes to and reports name */
  char *bind;              /* interface of the update port and the KVS reply socket */
  uint64_t inline_max;     /* blobs up to this stay inline in LMDB; 0 = default */
  uint64_t max_request_bytes;
  int64_t kvs_timeout_ms;
  int64_t kvs_retries;
  int64_t stats_interval_s; /* counters in the log; 0 = only at shutdown / SIGHUP */
  int64_t keyset_interval_ms; /* least time between key-set reports; 0 = 100 */
  bool discard;             /* start with an empty cache */
  int64_t log_level;
  int64_t log_format;
  char *log_file;
} cache_daemon_config_t;

/* Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (call before any thread is
 * started; the daemon receives them through a signalfd). */
void cache_daemon_block_signals(void);

/* Writes the effective cache directory of cfg into buf. 0 or SQ_ETOOBIG. */
int cache_daemon_dir(const cache_daemon_config_t *cfg, char *buf, size_t cap);

/* Runs the daemon until SIGTERM/SIGINT. Returns 0 after a clean stop, or the error
 * that kept it from starting (bind failures, store open, KVS client) or broke it
 * (logged). cfg and log are borrowed. */
int cache_daemon_run(const cache_daemon_config_t *cfg, sq_log_t *log);

#endif
