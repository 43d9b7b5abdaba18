/* kvs_worker: the storage thread's event loop (see server.h).
 *
 * Loop, per iteration:
 *   1. drain up to KVS__BATCH requests without blocking; each is decoded into the
 *      arena, answered, and its reply packed at once (the stored bytes it quotes may
 *      change later) and queued with the log position it must wait for;
 *   2. submit the pending log group (group commit: one write + fsync for the batch);
 *   3. reap completed log writes and send every reply whose position is durable;
 *   4. advance a snapshot in progress by one slice;
 *   5. when the turn handled no request (and every KVS__LOOK_TURNS busy turns, without
 *      sleeping): wait in one poll(2) on {request PULL, control PAIR, subscription
 *      PULL, log completion eventfd} and serve the control and subscription input.
 * On "stop" from the control socket, the loop stops reading requests, waits until the
 * log has nothing in flight, flushes the replies and exits.
 */
#include "server.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "anna.pb-c.h"
#include "kvs_ack.h"
#include "kvs_request.h"
#include "sq_error.h"
#include "sq_zmq.h"
#include "sq_zwait.h"
#include "store.h"
#include "wal.h"

#define KVS__BATCH 256
#define KVS__SNAPSHOT_SLICE 512

struct kvs_worker {
  kvs_worker_params_t params;
  kvs_counters_t counters;
  pthread_t thread;
  int started;
  _Atomic int stop_requested; /* checked every loop; the control message only wakes */
  void *control_main; /* PAIR, main side */
  char control_endpoint[64];
  kvs_request_ctx_t rq; /* request handling state: store, log, arena, buffers */
};

int kvs_worker_create(const kvs_worker_params_t *params, kvs_worker_t **out) {
  kvs_worker_t *w = calloc(1, sizeof(*w));
  if (!w) return -ENOMEM;
  w->params = *params;
  snprintf(w->control_endpoint, sizeof(w->control_endpoint), "inproc://kvs-control-%u",
           params->tid);
  *out = w;
  return 0;
}

const kvs_counters_t *kvs_worker_counters(const kvs_worker_t *w) { return &w->counters; }

static void kvs__report(void *events, const char *fmt, uint32_t tid, const char *why) {
  char msg[512];
  int n = snprintf(msg, sizeof(msg), fmt, tid, why ? why : "");
  if (n < 0) return;
  zmq_send(events, msg, strlen(msg), 0);
}

/* Binds the request socket and the control socket. */
static int kvs__worker_bind(kvs_worker_t *w, void **requests, void **control, char *why,
                            size_t why_len) {
  const kvs_config_t *cfg = w->params.config;
  char endpoint[256];
  snprintf(endpoint, sizeof(endpoint), "tcp://%s:%" PRId64, cfg->bind_host,
           KVS_PORT_KEY_REQUEST + cfg->port_offset + (int64_t)w->params.tid);
  /* ZeroMQ cuts connections that send more than the transport limit; between
   * max_request_bytes and twice that, requests still arrive and get a clear error. */
  uint64_t transport_limit = cfg->max_request_bytes > INT64_MAX / 2
                                 ? INT64_MAX : cfg->max_request_bytes * 2;
  int rc = sq_zmq_pull_bind(w->params.zmq_context, endpoint, (int64_t)transport_limit, 0,
                            why, why_len, requests);
  if (rc) return rc;
  *control = zmq_socket(w->params.zmq_context, ZMQ_PAIR);
  if (!*control || zmq_connect(*control, w->control_endpoint) != 0) {
    snprintf(why, why_len, "cannot connect control socket: %s", zmq_strerror(errno));
    return -errno;
  }
  return 0;
}

/* Receives up to KVS__BATCH requests without blocking, KVS_REQUEST_PIPELINE at a
 * time (each group decoded and prefetched together); returns how many. *drained says
 * whether the last receive found the socket empty (else the batch was cut at its
 * size and more may be waiting). */
static int kvs__worker_batch(kvs_request_ctx_t *rq, void *requests, bool *drained) {
  int n = 0;
  *drained = false;
  while (n < KVS__BATCH) {
    int want = KVS__BATCH - n < KVS_REQUEST_PIPELINE ? KVS__BATCH - n : KVS_REQUEST_PIPELINE;
    int got = kvs_request_receive_batch(rq, requests, want);
    n += got;
    if (got < want) {
      *drained = true;
      break;
    }
  }
  return n;
}

/* The worker's wait set (sq_zwait entries). */
enum { KVS__W_REQUESTS, KVS__W_CONTROL, KVS__W_SUBS, KVS__W_SOCKETS };

/* Busy turns between two looks at the control and subscription sockets. */
#define KVS__LOOK_TURNS 64

/* Serves what the wait found on the control and subscription sockets. */
static void kvs__worker_side_input(kvs_worker_t *w, sq_zwait_t *zw, void *control,
                                   bool timed_out) {
  if (zw->ready[KVS__W_CONTROL]) {
    char cmd[16];
    while (zmq_recv(control, cmd, sizeof(cmd), ZMQ_DONTWAIT) >= 0) continue;
    sq_zwait_drained(zw, KVS__W_CONTROL);
  }
  /* Also after a quiet wait: the subscriptions' expiry runs from here, and reply
   * sockets nobody used for --reply-idle-ms are closed. */
  if ((zw->ready[KVS__W_SUBS] || timed_out) &&
      kvs_request_subs_receive(&w->rq) < KVS_REQUEST_SUBS_BATCH)
    sq_zwait_drained(zw, KVS__W_SUBS);
  if (timed_out) {
    sq_zmq_cache_expire(w->rq.replies);
    sq_zmq_cache_stats_t st = sq_zmq_cache_stats(w->rq.replies);
    atomic_store_explicit(&w->counters.reply_sockets, sq_zmq_cache_size(w->rq.replies),
                          memory_order_relaxed);
    atomic_store_explicit(&w->counters.reply_expired, st.expirations, memory_order_relaxed);
    atomic_store_explicit(&w->counters.reply_corks, w->rq.cork.corks, memory_order_relaxed);
  }
}

/* Serves until told to stop. Under load a turn just receives and answers: the
 * request socket is tried again without a poll (a receive that finds nothing costs
 * ZeroMQ a getpid and a poll, as a poll would), and the control and subscription
 * sockets are looked at every KVS__LOOK_TURNS turns with a zero-timeout wait. A turn
 * that handled nothing sleeps in one poll(2) over every socket's fd and the log's
 * completion eventfd (sq_zwait: no zmq_poll, whose per-socket ZMQ_EVENTS checks were
 * a getpid + poll pair each). Returns 0 when told to stop, or the error that stopped it
 * (the log's, already logged; or the wait's) with its sentence in why. */
static int kvs__worker_serve(kvs_worker_t *w, void *requests, void *control, char *why,
                             size_t why_len) {
  kvs_request_ctx_t *rq = &w->rq;
  void *socks[KVS__W_SOCKETS] = {requests, control, rq->subs_in};
  sq_zwait_t zw;
  int rc = sq_zwait_init(&zw, socks, KVS__W_SOCKETS);
  if (rc == 0 && rq->wal) rc = sq_zwait_add_fd(&zw, kvs_wal_event_fd(rq->wal)) < 0 ? SQ_EINVAL : 0;
  if (rc) {
    snprintf(why, why_len, "cannot wait on its sockets (%s)", sq_strerror(rc));
    return rc;
  }
  int stopping = 0;
  unsigned turns = 0;
  bool yielded = false;
  while (!stopping || kvs_ack_pending(&rq->acks)) {
    if (atomic_load(&w->stop_requested)) stopping = 1;
    bool drained = true;
    int handled = stopping ? 0 : kvs__worker_batch(rq, requests, &drained);
    rc = kvs_request_after_batch(rq);
    if (rc) { /* log failure: fatal, already logged */
      snprintf(why, why_len, "its log refused a write (%s)", sq_strerror(rc));
      return rc;
    }
    if (!stopping) kvs_request_snapshot_step(rq, KVS__SNAPSHOT_SLICE);
    bool idle = handled == 0;
    if (!idle) yielded = false;
    if (!idle && ++turns % KVS__LOOK_TURNS != 0) continue;
    /* Stopping: requests are no longer read, so their socket must not wake the wait. */
    if (drained || stopping) sq_zwait_drained(&zw, KVS__W_REQUESTS);
    int timeout = !idle || kvs_request_snapshot_active(rq) ? 0 : (stopping ? 10 : 200);
    /* Nothing stays corked while the worker sleeps (kvs_cork.h). With a connection
     * corked, an idle worker first yields once: on a shared core that lets ZeroMQ's
     * I/O thread write the turn's replies while they are still corked. */
    if (timeout > 0 && kvs_cork_any(&rq->cork) && !yielded) {
      yielded = true;
      sched_yield();
      continue;
    }
    if (timeout > 0) kvs_cork_release_all(&rq->cork);
    int n = sq_zwait_wait(&zw, timeout);
    if (n < 0) {
      snprintf(why, why_len, "its wait for requests failed (%s)", sq_strerror(n));
      return n;
    }
    kvs__worker_side_input(w, &zw, control, n == 0);
  }
  return 0;
}

static void *kvs__worker_main(void *arg) {
  kvs_worker_t *w = arg;
  void *events = zmq_socket(w->params.zmq_context, ZMQ_PUSH);
  void *requests = NULL, *control = NULL;
  char why[400] = "";
  int linger = 0;
  zmq_setsockopt(events, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_connect(events, w->params.events_endpoint);
  int rc = kvs_request_ctx_init(&w->rq, &w->params, &w->counters, why, sizeof(why));
  if (rc == 0) rc = kvs__worker_bind(w, &requests, &control, why, sizeof(why));
  if (rc) {
    kvs__report(events, "failed %u %s", w->params.tid, why);
    goto out;
  }
  kvs__report(events, "ready %u%s", w->params.tid, NULL);
  char cause[300] = "";
  rc = kvs__worker_serve(w, requests, control, cause, sizeof(cause));
  if (rc) {
    snprintf(why, sizeof(why), "stopped serving: %s", cause);
    kvs__report(events, "failed %u %s", w->params.tid, why);
  } else {
    kvs__report(events, "stopped %u%s", w->params.tid, NULL);
  }
out:
  if (requests) zmq_close(requests);
  if (control) zmq_close(control);
  zmq_close(events);
  kvs_request_ctx_destroy(&w->rq);
  return NULL;
}

int kvs_worker_start(kvs_worker_t *w) {
  w->control_main = zmq_socket(w->params.zmq_context, ZMQ_PAIR);
  if (!w->control_main) return -errno;
  if (zmq_bind(w->control_main, w->control_endpoint) != 0) return -errno;
  int rc = pthread_create(&w->thread, NULL, kvs__worker_main, w);
  if (rc) return -rc;
  w->started = 1;
  return 0;
}

void kvs_worker_stop(kvs_worker_t *w) {
  if (!w || !w->started) return;
  atomic_store(&w->stop_requested, 1);
  zmq_send(w->control_main, "stop", 4, ZMQ_DONTWAIT); /* wakes the poll if connected */
  pthread_join(w->thread, NULL);
  w->started = 0;
}

void kvs_worker_destroy(kvs_worker_t *w) {
  if (!w) return;
  kvs_worker_stop(w);
  if (w->control_main) zmq_close(w->control_main);
  free(w);
}
