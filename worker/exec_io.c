/* exec_io: the executor's I/O thread -- the sockets that must be served while Python
 * runs.
 *
 * It binds the seven PULL sockets of its executor tid (pin, unpin, call, schedule,
 * trigger, self-depart, user inbox) but serves only pin, unpin, depart and the inbox:
 * call, schedule and trigger are received by the executor thread itself (exec_run.c,
 * exec_int.h says why). It owns the PUSH socket cache and an asynchronous KVS client
 * for result writes. It decodes what it receives with sq_proto_unpack (size-limited,
 * depth-checked) and hands pins to the executor thread as exec_job_t pointers over
 * inproc; the executor thread hands user messages, pin answers and KVS writes back
 * over another inproc socket (exec_out_t pointers) -- results and triggers it sends
 * itself.
 * It reports ThreadStatus to every scheduler at start, when asked (after pin, unpin and
 * one-shot calls), every second, and with running=false on departure. It never holds
 * the GIL and never blocks: every send is non-blocking, every wait is bounded.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

#include "exec_int.h"
#include "internal.pb-c.h"
#include "sq_error.h"
#include "sq_proto.h"

/* In the order of the EXEC_PULL_* indexes. */
static const int exec__bases[EXEC_NPULL] = {EXEC_PORT_PIN, EXEC_PORT_UNPIN, EXEC_PORT_CALL,
                                            EXEC_PORT_SCHEDULE, EXEC_PORT_TRIGGER,
                                            EXEC_PORT_DEPART, EXEC_PORT_INBOX};

void exec_io_endpoint(const exec_ctx_t *x, char *buf, size_t len, const char *host, int base,
                      int tid) {
  if (sq_zmq_endpoint_tcp(buf, len, host, (unsigned)(base + x->offset + tid))) buf[0] = 0;
}

static int exec__inproc_pair(exec_ctx_t *x, const char *name, void **pull, void **push) {
  char ep[64];
  snprintf(ep, sizeof(ep), "inproc://exec-%s", name);
  *pull = zmq_socket(x->zctx, ZMQ_PULL);
  *push = zmq_socket(x->zctx, ZMQ_PUSH);
  if (!*pull || !*push) return -errno;
  int zero = 0; /* never drop a pointer: unlimited queue, bounded by the work itself */
  zmq_setsockopt(*pull, ZMQ_RCVHWM, &zero, sizeof(zero));
  zmq_setsockopt(*push, ZMQ_SNDHWM, &zero, sizeof(zero));
  zmq_setsockopt(*push, ZMQ_LINGER, &zero, sizeof(zero));
  zmq_setsockopt(*pull, ZMQ_LINGER, &zero, sizeof(zero));
  if (zmq_bind(*pull, ep) || zmq_connect(*push, ep)) return -errno;
  return 0;
}

static int exec__kvs(exec_ctx_t *x, kvs_client_t **out) {
  char routing[512];
  if (x->cfg->kvs && *x->cfg->kvs) snprintf(routing, sizeof(routing), "%s", x->cfg->kvs);
  else snprintf(routing, sizeof(routing), "tcp://127.0.0.1:%d", 6450 + x->offset);
  const char *r[1] = {routing};
  kvs_client_options_t o = {.zmq_context = x->zctx, .routing = r, .nrouting = 1,
                            .timeout_ms = (int)x->cfg->kvs_timeout_ms, .retries = 2};
  char bind[300];
  snprintf(bind, sizeof(bind), "tcp://%s:*", x->cfg->bind);
  o.bind = bind;
  o.advertise = x->ip;
  return kvs_client_create(&o, out);
}

int exec_io_open(exec_ctx_t *x) {
  int rc = 0;
  char ep[300], err[256];
  for (int i = 0; i < EXEC_NPULL; i++) {
    exec_io_endpoint(x, ep, sizeof(ep), x->cfg->bind, exec__bases[i], x->tid);
    rc = sq_zmq_pull_bind(x->zctx, ep, EXEC_MAX_MSG, 0, err, sizeof(err), &x->pull[i]);
    if (rc) {
      sq_log_error(x->log, "%s", err);
      return rc;
    }
  }
  int unlimited = 0; /* work waits in its socket while Python runs: never refused */
  for (int i = EXEC_PULL_CALL; i <= EXEC_PULL_TRIGGER; i++)
    zmq_setsockopt(x->pull[i], ZMQ_RCVHWM, &unlimited, sizeof(unlimited));
  if ((rc = exec__inproc_pair(x, "jobs", &x->jobs_pull, &x->jobs_push))) return rc;
  if ((rc = exec__inproc_pair(x, "out", &x->out_pull, &x->out_push))) return rc;
  if ((rc = exec__kvs(x, &x->io_kvs)) || (rc = exec__kvs(x, &x->py_kvs))) {
    sq_log_error(x->log, "cannot make a KVS client: %s", sq_strerror(rc));
    return rc;
  }
  if ((rc = exec_dag_create(0, 0, &x->dag))) return rc;
  if ((rc = sq_zmq_cache_create(x->zctx, NULL, &x->exec_push))) return rc; /* exec thread */
  return sq_zmq_cache_create(x->zctx, NULL, &x->push);
}

/* Pushes ThreadStatus to every scheduler. utilization < 0: not a periodic report. */
static void exec__status(exec_ctx_t *x, bool running, double utilization) {
  ThreadStatus st = THREAD_STATUS__INIT;
  st.ip = x->ip;
  st.tid = (uint32_t)x->tid;
  st.running = running;
  st.type = EXECUTOR_TYPE__CPU;
  st.squall_features = SQUALL_FEATURE__SQUALL_FEATURE_BEGIN_ON_SCHEDULE | /* exec__begin_of */
                       SQUALL_FEATURE__SQUALL_FEATURE_CARRY_SCHEDULE;     /* exec__carry */
  if (utilization >= 0) st.utilization = utilization;
  pthread_mutex_lock(&x->mu);
  if (running) {
    st.functions = x->functions;
    st.n_functions = x->nfunctions;
  }
  char ep[300];
  for (size_t i = 0; i < x->nschedulers; i++) {
    exec_io_endpoint(x, ep, sizeof(ep), x->schedulers[i], EXEC_PORT_SCHED_STATUS, 0);
    int rc = sq_zmq_cache_send_pb(x->push, ep, &st.base);
    if (rc) sq_log_say_once(x->log, SQ_LOG_WARN, ep, "status to %s not sent: %s", ep, sq_strerror(rc));
  }
  pthread_mutex_unlock(&x->mu);
}

static void exec__inbox_put(exec_ctx_t *x, zmq_msg_t *m) {
  size_t len = zmq_msg_size(m);
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy) return;
  memcpy(copy, zmq_msg_data(m), len);
  pthread_mutex_lock(&x->mu);
  while (x->inbox_n && (x->inbox_n >= EXEC_INBOX_MAX_MSGS ||
                        x->inbox_bytes + len > EXEC_INBOX_MAX_BYTES)) {
    exec_msg_t *old = &x->inbox[x->inbox_head]; /* full: the oldest message goes */
    x->inbox_bytes -= old->len;
    free(old->data);
    x->inbox_head = (x->inbox_head + 1) % EXEC_INBOX_MAX_MSGS;
    x->inbox_n--;
    sq_log_say_once(x->log, SQ_LOG_WARN, "inbox-full", "user inbox full: dropping the oldest");
  }
  size_t at = (x->inbox_head + x->inbox_n) % EXEC_INBOX_MAX_MSGS;
  x->inbox[at] = (exec_msg_t){copy, len};
  x->inbox_n++;
  x->inbox_bytes += len;
  pthread_mutex_unlock(&x->mu);
}

int exec_io_inbox_drain(exec_ctx_t *x, exec_msg_t **msgs, size_t *n) {
  pthread_mutex_lock(&x->mu);
  size_t k = x->inbox_n;
  exec_msg_t *out = k ? malloc(k * sizeof(*out)) : NULL;
  if (k && !out) {
    pthread_mutex_unlock(&x->mu);
    return -ENOMEM;
  }
  for (size_t i = 0; i < k; i++) out[i] = x->inbox[(x->inbox_head + i) % EXEC_INBOX_MAX_MSGS];
  x->inbox_head = (x->inbox_head + k) % EXEC_INBOX_MAX_MSGS;
  x->inbox_n = 0;
  x->inbox_bytes = 0;
  pthread_mutex_unlock(&x->mu);
  *msgs = out;
  *n = k;
  return 0;
}

int exec_io_pin_set(exec_ctx_t *x, const char *fn, bool pinned) {
  int rc = 0;
  pthread_mutex_lock(&x->mu);
  size_t i = 0;
  while (i < x->nfunctions && strcmp(x->functions[i], fn)) i++;
  if (!pinned && i < x->nfunctions) {
    free(x->functions[i]);
    x->functions[i] = x->functions[--x->nfunctions];
  } else if (pinned && i == x->nfunctions) {
    char **grown = realloc(x->functions, (x->nfunctions + 1) * sizeof(*grown));
    char *copy = strdup(fn);
    if (grown) x->functions = grown;
    if (!grown || !copy) {
      free(copy);
      rc = -ENOMEM;
    } else {
      x->functions[x->nfunctions++] = copy;
    }
  }
  pthread_mutex_unlock(&x->mu);
  return rc;
}

int exec_io_out_take(exec_ctx_t *x, exec_out_kind_t kind, const char *target, uint8_t *data,
                     size_t len) {
  exec_out_t *o = calloc(1, sizeof(*o));
  if (!o) goto fail;
  o->kind = kind;
  o->len = len;
  o->data = data;
  data = NULL;
  if (target && !(o->target = strdup(target))) goto fail;
  if (zmq_send(x->out_push, &o, sizeof(o), 0) == sizeof(o)) return 0;
fail:
  free(data);
  if (o) {
    free(o->target);
    free(o->data);
    free(o);
  }
  return -ENOMEM;
}

int exec_io_out(exec_ctx_t *x, exec_out_kind_t kind, const char *target, const void *data,
                size_t len) {
  uint8_t *copy = NULL;
  if (len && !(copy = malloc(len))) return -ENOMEM;
  if (len) memcpy(copy, data, len);
  return exec_io_out_take(x, kind, target, copy, len);
}

static void exec__give_job(exec_ctx_t *x, exec_job_t *job) {
  if (job && zmq_send(x->jobs_push, &job, sizeof(job), 0) != sizeof(job)) exec_job_free(job);
}

static int64_t exec__now(void) { return exec_slot_now_ms(); }

ProtobufCMessage *exec_io_decode(exec_ctx_t *x, const void *data, size_t len,
                                 const ProtobufCMessageDescriptor *desc) {
  ProtobufCMessage *msg = NULL;
  int rc = sq_proto_unpack(desc, NULL, data, len, (size_t)EXEC_MAX_MSG, &msg);
  if (rc) sq_log_warn(x->log, "dropped a malformed %s: %s", desc->name, sq_strerror(rc));
  return msg;
}

/* A message on one of the I/O thread's own sockets (pin, unpin, depart, inbox). */
static void exec__on_message(exec_ctx_t *x, int which, zmq_msg_t *m) {
  exec_job_t *job = NULL;
  ProtobufCMessage *msg = NULL;
  int rc = 0;
  switch (exec__bases[which]) {
  case EXEC_PORT_PIN:
    if (!(msg = exec_io_decode(x, zmq_msg_data(m), zmq_msg_size(m), &pin_function__descriptor)))
      return;
    if (!(job = exec_job_new(EXEC_JOB_PIN, ((PinFunction *)msg)->name))) break;
    job->msg = msg;
    msg = NULL;
    break;
  case EXEC_PORT_UNPIN: {
    char name[1024];
    size_t n = zmq_msg_size(m) < sizeof(name) - 1 ? zmq_msg_size(m) : sizeof(name) - 1;
    memcpy(name, zmq_msg_data(m), n);
    name[n] = 0;
    exec_io_pin_set(x, name, false);
    exec__status(x, true, -1);
    return;
  }
  case EXEC_PORT_DEPART: /* 2 = on purpose: the supervisor does not restart us */
    __atomic_store_n(&x->departing, 2, __ATOMIC_RELEASE);
    return;
  default:
    exec__inbox_put(x, m);
    return;
  }
  if (rc) sq_log_warn(x->log, "message on port %d refused: %s", exec__bases[which], sq_strerror(rc));
  if (msg) protobuf_c_message_free_unpacked(msg, NULL);
  exec__give_job(x, job);
}

static void exec__put_done(void *arg, const kvs_client_completion_t *done) {
  exec_ctx_t *x = arg;
  for (size_t i = 0; i < done->n; i++)
    if (done->results[i].err)
      sq_log_warn(x->log, "KVS write of %s failed: %s", done->keys[i],
                  sq_strerror(done->results[i].err));
}

static void exec__on_out(exec_ctx_t *x, exec_out_t *o) {
  int rc = 0;
  switch (o->kind) {
  case EXEC_OUT_PUSH:
    rc = sq_zmq_cache_send(x->push, o->target, o->data, o->len);
    break;
  case EXEC_OUT_PUT: {
    kvs_client_kv_t kv = {o->target, SQ_LATTICE_LWW, o->data, o->len};
    uint64_t id;
    rc = kvs_client_put_async(x->io_kvs, &kv, 1, NULL, &id);
    break;
  }
  case EXEC_OUT_STATUS:
    exec__status(x, true, -1);
    break;
  }
  if (rc) sq_log_warn(x->log, "outgoing %s%s not done: %s", o->target ? "to " : "",
                      o->target ? o->target : "message", sq_strerror(rc));
  free(o->target);
  free(o->data);
  free(o);
}

/* The pull[] indexes this thread serves (the others are the executor thread's). */
static const int exec__mine[] = {EXEC_PULL_PIN, EXEC_PULL_UNPIN, EXEC_PULL_DEPART,
                                 EXEC_PULL_INBOX};
#define EXEC_NMINE (sizeof(exec__mine) / sizeof(exec__mine[0]))

/* One round: waits up to wait_ms for any socket, then drains what is ready. */
static void exec__round(exec_ctx_t *x, int wait_ms) {
  zmq_pollitem_t items[EXEC_NMINE + 3];
  for (size_t i = 0; i < EXEC_NMINE; i++)
    items[i] = (zmq_pollitem_t){x->pull[exec__mine[i]], 0, ZMQ_POLLIN, 0};
  items[EXEC_NMINE] = (zmq_pollitem_t){x->out_pull, 0, ZMQ_POLLIN, 0};
  items[EXEC_NMINE + 1] = (zmq_pollitem_t){kvs_client_socket(x->io_kvs), 0, ZMQ_POLLIN, 0};
  items[EXEC_NMINE + 2] = (zmq_pollitem_t){NULL, x->sigfd, ZMQ_POLLIN, 0};
  int n = zmq_poll(items, x->sigfd >= 0 ? EXEC_NMINE + 3 : EXEC_NMINE + 2, wait_ms);
  if (n <= 0) goto timers;
  for (size_t i = 0; i < EXEC_NMINE; i++) {
    for (int k = 0; k < 64 && (items[i].revents & ZMQ_POLLIN); k++) { /* fair: 64 each */
      zmq_msg_t m;
      int rc = sq_zmq_recv_frame(x->pull[exec__mine[i]], (size_t)EXEC_MAX_MSG, ZMQ_DONTWAIT, &m);
      if (rc == -EAGAIN) break;
      if (rc) continue;
      exec__on_message(x, exec__mine[i], &m);
      zmq_msg_close(&m);
    }
  }
  exec_out_t *o;
  while (zmq_recv(x->out_pull, &o, sizeof(o), ZMQ_DONTWAIT) == sizeof(o)) exec__on_out(x, o);
  if (x->sigfd >= 0 && (items[EXEC_NMINE + 2].revents & ZMQ_POLLIN)) {
    struct signalfd_siginfo si;
    if (read(x->sigfd, &si, sizeof(si)) == sizeof(si))
      __atomic_store_n(&x->departing, 1, __ATOMIC_RELEASE);
  }
timers:
  kvs_client_poll(x->io_kvs, 0, exec__put_done, x);
}

static void *exec__io_main(void *arg) {
  exec_ctx_t *x = arg;
  int64_t last_report = exec__now(), last_busy = 0;
  exec__status(x, true, -1);
  while (!__atomic_load_n(&x->departing, __ATOMIC_ACQUIRE)) {
    int wait = kvs_client_next_timeout(x->io_kvs);
    exec__round(x, wait < 0 || wait > 200 ? 200 : wait);
    int64_t now = exec__now();
    if (now - last_report >= 1000) {
      int64_t busy = __atomic_load_n(&x->busy_ms, __ATOMIC_ACQUIRE);
      double util = (double)(busy - last_busy) / (double)(now - last_report);
      exec__status(x, true, util > 1 ? 1 : util);
      last_busy = busy;
      last_report = now;
    }
  }
  exec__status(x, false, -1); /* schedulers stop using us */
  sq_log_info(x->log, "executor %s leaving", x->ident);
  for (int i = 0; i < 5; i++) exec__round(x, 20); /* flush what the executor queued */
  __atomic_store_n(&x->stop, 1, __ATOMIC_RELEASE);
  exec_job_t *none = NULL; /* wakes the executor thread */
  zmq_send(x->jobs_push, &none, sizeof(none), 0);
  /* Keep delivering until the executor thread finished its last job (bounded: the
   * supervisor kills a stuck executor), then let pending KVS writes land. */
  while (!__atomic_load_n(&x->exec_done, __ATOMIC_ACQUIRE)) exec__round(x, 50);
  exec__round(x, 0);
  int64_t until = exec__now() + 2000;
  while (exec__now() < until && kvs_client_pending(x->io_kvs)) exec__round(x, 50);
  return NULL;
}

int exec_io_start(exec_ctx_t *x) {
  int rc = pthread_create(&x->io_thread, NULL, exec__io_main, x);
  if (rc) return -rc;
  x->io_started = true;
  return 0;
}

void exec_io_close(exec_ctx_t *x) {
  if (x->io_started) pthread_join(x->io_thread, NULL);
  x->io_started = false;
  exec_out_t *o;
  while (x->out_pull && zmq_recv(x->out_pull, &o, sizeof(o), ZMQ_DONTWAIT) == sizeof(o)) {
    free(o->target);
    free(o->data);
    free(o);
  }
  exec_job_t *j;
  while (x->jobs_pull && zmq_recv(x->jobs_pull, &j, sizeof(j), ZMQ_DONTWAIT) == sizeof(j))
    exec_job_free(j);
  for (int i = 0; i < EXEC_NPULL; i++)
    if (x->pull[i]) zmq_close(x->pull[i]);
  void *socks[4] = {x->jobs_push, x->jobs_pull, x->out_push, x->out_pull};
  for (int i = 0; i < 4; i++)
    if (socks[i]) zmq_close(socks[i]);
  sq_zmq_cache_destroy(x->push);
  sq_zmq_cache_destroy(x->exec_push); /* the executor thread's: it has left its loop */
  kvs_client_destroy(x->io_kvs);
  kvs_client_destroy(x->py_kvs);
  exec_dag_destroy(x->dag);
  for (size_t i = 0; i < x->inbox_n; i++)
    free(x->inbox[(x->inbox_head + i) % EXEC_INBOX_MAX_MSGS].data);
  for (size_t i = 0; i < x->nfunctions; i++) free(x->functions[i]);
  free(x->functions);
}
