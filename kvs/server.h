/* kvs_worker: one shared-nothing storage thread of squall-kvs.
 *
 * A worker owns a slice of the local hash ring (the keys whose responsible thread is
 * its tid), the in-memory store of those keys, its own durable log, its own ZeroMQ
 * sockets and its own reply-socket cache. Nothing on the GET/PUT path takes a lock.
 *
 * Life cycle (driven by kvs_node):
 *   create -> start (thread: recover log -> bind -> report ready -> serve) -> stop
 *   (finish in-flight writes, send their acks, close) -> destroy.
 *
 * Request path: PULL socket on tcp://<bind>:6200+offset+tid receives KeyRequests
 * (PROTOCOL.md §2.4). Each tuple is validated, answered (GET) or merged (PUT) and the
 * PUT appended to the log. A reply is sent only once every write it could reveal is
 * durable: the reply records the log position at the time it was built and waits in
 * a FIFO until the log reaches it (group commit makes that one fsync per batch).
 * Replies go to the request's response_address with response_id = request_id; none
 * when the address is empty.
 */
#ifndef KVS_SERVER_H
#define KVS_SERVER_H

#include <stdatomic.h>
#include <stdint.h>

#include "kvs_config.h"
#include "placement.h"
#include "sq_log.h"

typedef struct {
  _Atomic uint64_t requests;      /* KeyRequests received */
  _Atomic uint64_t gets;          /* GET tuples */
  _Atomic uint64_t puts;          /* PUT tuples */
  _Atomic uint64_t merges;        /* PUTs that changed a stored value */
  _Atomic uint64_t errors;        /* tuples or requests answered with an error */
  _Atomic uint64_t bytes_in;      /* request bytes received */
  _Atomic uint64_t bytes_out;     /* reply bytes sent */
  _Atomic uint64_t log_bytes;     /* bytes appended to the log */
  _Atomic uint64_t fsyncs;        /* log groups made durable */
  _Atomic uint64_t recovered;     /* records replayed at start */
  _Atomic uint64_t keys;          /* keys held */
  _Atomic uint64_t send_drops;    /* replies that could not be queued (dead peer) */
  _Atomic uint64_t reply_sockets; /* sockets open to clients' response addresses */
  _Atomic uint64_t reply_expired; /* of those, closed after --reply-idle-ms unused */
  _Atomic uint64_t reply_corks;   /* reply connections corked for a long run (kvs_cork.h) */
} kvs_counters_t;

typedef struct kvs_worker kvs_worker_t;

typedef struct {
  const kvs_config_t *config;
  const kvs_placement_t *placement; /* shared, read-only */
  uint32_t tid;
  void *zmq_context;                /* shared context; sockets are the worker's own */
  const char *events_endpoint;      /* inproc PUSH target for "ready"/"failed" reports */
  sq_log_t *log;                    /* thread-safe logger */
} kvs_worker_params_t;

/* Allocates a worker. Nothing runs yet. 0 or -ENOMEM. */
int kvs_worker_create(const kvs_worker_params_t *params, kvs_worker_t **out);

/* Starts the worker thread: it recovers its log, binds, then reports on the events
 * endpoint "ready <tid>" or "failed <tid> <sentence>". 0 or -errno (thread not started). */
int kvs_worker_start(kvs_worker_t *w);

/* Asks the worker to stop and waits for it: in-flight log writes finish and their
 * replies are sent first. Idempotent. */
void kvs_worker_stop(kvs_worker_t *w);

/* Frees the worker (stopping it first if needed). Accepts NULL. */
void kvs_worker_destroy(kvs_worker_t *w);

/* Counters, readable from any thread. */
const kvs_counters_t *kvs_worker_counters(const kvs_worker_t *w);

#endif
