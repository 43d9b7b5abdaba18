/* kvs_request: what a storage worker does with each KeyRequest (PROTOCOL.md §2.4),
 * plus the log, snapshot and reply bookkeeping around it.
 *
 * Owned by one worker thread; nothing here is shared. The context holds the thread's
 * store, log, decode arena, reply buffer, reply-socket cache and the FIFO of replies
 * waiting for durability.
 *
 * Validation (every request is untrusted), and what the sender gets back:
 *   - undecodable or oversized message: if its response_address and request_id can
 *     still be found in the bytes, a KeyResponse with error LATTICE and an
 *     error_message naming the problem; otherwise it is counted and logged;
 *   - unknown request type: KeyResponse error LATTICE + error_message;
 *   - per tuple: empty key, lattice type NONE or unknown, payload that does not decode
 *     as its type, payload over max_value_bytes, stored type differs: error LATTICE
 *     with error_message, nothing changes; a key of another thread: WRONG_THREAD.
 */
#ifndef KVS_REQUEST_H
#define KVS_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvs_ack.h"
#include "kvs_cork.h"
#include "server.h"
#include "sq_arena.h"
#include "sq_buf.h"
#include "sq_zmq.h"
#include "store.h"
#include "subs.h"
#include "wal.h"

typedef struct {
  const kvs_worker_params_t *params;
  kvs_counters_t *counters;
  kvs_store_t *store;
  kvs_wal_t *wal;            /* NULL with durability NONE (memory only) */
  sq_arena_t arena;          /* per-request decode memory */
  sq_zmq_cache_t *replies; /* PUSH sockets to response addresses */
  kvs_cork_t cork;           /* reply connections corked during long runs */
  kvs_ack_queue_t acks;
  uint64_t appended_lsn;     /* highest log position handed out */
  uint64_t durable_lsn;      /* highest log position on disk */
  kvs_snap_t *snap;          /* snapshot in progress, or NULL */
  size_t snap_next;          /* next store entry to add */
  size_t snap_end;           /* entries present when the snapshot began */
  uint64_t snap_log_mark;    /* log bytes written when the last snapshot began */
  int log_failed;            /* sticky: the log refused a write; the node must stop */
  kvs_subs_t *subs;          /* caches holding keys of this worker */
  void *subs_in;             /* PULL inproc://kvs-subs-<tid>: key sets from the owner */
  void **subs_out;           /* PUSH to every worker's subs_in (index = tid), lazily */
  uint64_t next_expiry_ms;   /* when to forget silent caches next */
} kvs_request_ctx_t;

/* Creates the store, recovers the thread's log into it, opens the log for appends.
 * With durability NONE (memory only) there is no log: nothing is recovered, wal stays
 * NULL and every reply goes out at the end of its batch. On failure writes a sentence
 * into why. 0 or an error code. */
int kvs_request_ctx_init(kvs_request_ctx_t *rq, const kvs_worker_params_t *params,
                         kvs_counters_t *counters, char *why, size_t why_len);

/* Finishes in-flight log writes and frees everything. Safe on a half-built context. */
void kvs_request_ctx_destroy(kvs_request_ctx_t *rq);

/* Most requests kvs_request_receive_batch() takes off the socket at once. */
#define KVS_REQUEST_PIPELINE 32

/* Receives up to `max` (at most KVS_REQUEST_PIPELINE) waiting messages from `socket`
 * without blocking, decodes them all, prefetches their keys' store memory, then
 * handles them in order (as kvs_request_handle). Returns how many were handled: 0
 * when none was waiting, fewer than max when the socket ran dry. */
int kvs_request_receive_batch(kvs_request_ctx_t *rq, void *socket, int max);

/* Handles one request message (bytes as received). Exposed for tests. */
void kvs_request_handle(kvs_request_ctx_t *rq, const uint8_t *bytes, size_t len);

/* After a batch: submits the pending log group, reaps completions, sends every reply
 * whose writes are durable. 0, or the log's error (fatal for the node). */
int kvs_request_after_batch(kvs_request_ctx_t *rq);

/* Subscriptions (request_subs.c): set-up and tear-down of the table and the
 * inter-worker sockets; announcing a cache's merged key set to every worker after a
 * changed PUT of its metadata key; queueing pushes of a changed key to its caches,
 * sent once `lsn` is durable. */
int kvs_request_subs_init(kvs_request_ctx_t *rq);
void kvs_request_subs_destroy(kvs_request_ctx_t *rq);
void kvs_request_announce(kvs_request_ctx_t *rq, const char *key, size_t keylen);
void kvs_request_push_update(kvs_request_ctx_t *rq, const char *key, size_t keylen,
                             uint64_t lsn);

/* Applies key-set announcements from other workers waiting on subs_in (at most
 * KVS_REQUEST_SUBS_BATCH per call), and forgets caches that stopped announcing.
 * Returns how many it applied: fewer than KVS_REQUEST_SUBS_BATCH means subs_in was
 * found empty (its last receive failed with EAGAIN). */
#define KVS_REQUEST_SUBS_BATCH 64
int kvs_request_subs_receive(kvs_request_ctx_t *rq);

/* True while a snapshot has entries the worker can encode right now (the worker
 * should not sleep in poll then). False when there is none, and while the snapshot's
 * writer thread is busy with a full backlog or the commit: it writes to the log's
 * event fd when done, which wakes the worker's poll. */
bool kvs_request_snapshot_active(const kvs_request_ctx_t *rq);

/* Starts a snapshot when the log asks for one, or adds up to `slice` entries to the
 * one in progress (fewer when the writer thread is behind), starting its commit when
 * all are in, or notices that the commit ended. Never blocks on the disk: the writes,
 * fsyncs, rename and deletes run on the snapshot's writer thread. Errors are logged;
 * the snapshot is then abandoned and retried later (the log still holds everything). */
void kvs_request_snapshot_step(kvs_request_ctx_t *rq, size_t slice);

#endif
