/* exec_run: the executor thread -- receives its own work (FunctionCalls, DagSchedules,
 * DagTriggers on its PULL sockets, pins from the I/O thread), settles the DAG state
 * (exec_dag), runs each job in Python (exec_py.c) and routes the results (exec_int.h
 * has the thread picture). When idle it waits in one poll(2) on those sockets with the
 * GIL released, so a call or trigger reaches Python without a thread hand-off. A wait
 * that fails is retried after a back-off (10 ms doubling to 1 s, exec_backoff.h, logged
 * once per episode), not at once: a persistent error would spin a core at 100%.
 *
 *   CALL  -> result (or error tuple) as a serialized Value: PUSHed to the call's
 *            response_address (squall extension 101) tagged with response_id =
 *            response_key, else PUT as LWW at response_key (Cloudburst)
 *   DAG   -> MULTIEXEC invalid result: nothing sent, schedule waits again
 *            error: straight to the DAG's destination (no downstream triggers)
 *            else: one DagTrigger per outgoing connection, to locations[sink]:4040+tid
 *                  (a tuple result split into one Value per element; carrying the
 *                  sink's DagSchedule when the schedule lists it in `carried` and this
 *                  function is its first predecessor); a sink sends its
 *                  result to the continuation's scheduler, the response address, or the
 *                  KVS (output_key, else the schedule id); a pushed result is tagged
 *                  with response_id = that same key, so one client socket serves
 *                  every outstanding call
 *   PIN   -> load the function, answer GenericResponse to <scheduler>:5010
 *
 * Results, triggers and direct responses leave on this thread's own PUSH sockets
 * (exec_run_push), in the order they were made; KVS puts go through the I/O thread.
 * Before each call the shared slot names what runs and its deadline, so the supervisor
 * can report a timeout or a crash to the right caller; it is cleared after the result
 * was handed to the I/O thread. This thread holds the GIL only inside exec_py_*.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "exec_backoff.h"
#include "exec_errval.h"
#include "exec_int.h"
#include "sq_zwait.h"
#include "internal.pb-c.h"
#include "sq_error.h"

int exec_run_lww(exec_ctx_t *x, const uint8_t *value, size_t len, uint8_t **payload,
                 size_t *plen) {
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = sq_lww_writer_timestamp((uint32_t)x->tid, &x->lww_last);
  l.u.lww.value.data = (uint8_t *)value;
  l.u.lww.value.len = len;
  sq_buf_t buf = {0};
  int rc = sq_lattice_encode(&l, &buf);
  if (rc) {
    sq_buf_free(&buf);
    return rc;
  }
  *payload = sq_buf_take(&buf, plen);
  return 0;
}

static int exec__pack(const Value *v, sq_buf_t *out) {
  size_t n = value__get_packed_size(v);
  int rc = sq_buf_reserve(out, n);
  if (rc) return rc;
  value__pack(v, out->data + out->len);
  out->len += n;
  return 0;
}

int exec_run_push(exec_ctx_t *x, const char *endpoint, const void *data, size_t len) {
  return sq_zmq_cache_send(x->exec_push, endpoint, data, len);
}

int exec_run_tag(sq_buf_t *packed, const char *response_id) {
  if (!response_id || !*response_id) return 0;
  Value tag = VALUE__INIT; /* appending a message's bytes merges it into the first */
  tag.response_id = (char *)response_id;
  return exec__pack(&tag, packed);
}

/* PUSHes a copy of packed, tagged with response_id, to addr. */
static int exec__push_tagged(exec_ctx_t *x, const char *addr, const char *response_id,
                             const sq_buf_t *packed) {
  sq_buf_t copy = {0};
  int rc = sq_buf_reserve(&copy, packed->len);
  if (rc) goto out;
  memcpy(copy.data, packed->data, packed->len);
  copy.len = packed->len;
  if ((rc = exec_run_tag(&copy, response_id))) goto out;
  rc = exec_run_push(x, addr, copy.data, copy.len);
out:
  sq_buf_free(&copy);
  return rc;
}

static int exec__put(exec_ctx_t *x, const char *key, const uint8_t *value, size_t len) {
  uint8_t *payload = NULL;
  size_t plen = 0;
  if (!key || !*key) return SQ_EEMPTYKEY;
  int rc = exec_run_lww(x, value, len, &payload, &plen);
  return rc ? rc : exec_io_out_take(x, EXEC_OUT_PUT, key, payload, plen);
}

static int64_t exec__deadline(const exec_ctx_t *x, uint32_t timeout_ms) {
  int64_t t = timeout_ms ? (int64_t)timeout_ms : (int64_t)(x->cfg->call_timeout * 1000.0);
  return t > 0 ? exec_slot_now_ms() + t : 0;
}

/* Runs job in Python; if the Python half itself failed, res becomes an error result. */
static void exec__py(exec_ctx_t *x, const exec_job_t *job, exec_result_t *res) {
  if (exec_py_run(x, job, res) == 0) return;
  sq_buf_t pick = {0}, resp = {0};
  exec_errval_t e = {.code = CLOUDBURST_ERROR__EXECUTION_ERROR, .type = "squall.InternalError",
                     .message = "the executor could not run the call (see its log)",
                     .executor = x->ident};
  if (!exec_errval_response(&e, &resp) &&
      !exec_errval_pickle("ERROR: the executor could not run the call", resp.data, resp.len,
                          &pick)) {
    res->ok = false;
    res->whole.type = SERIALIZER_TYPE__DEFAULT;
    res->whole.body.data = sq_buf_take(&pick, &res->whole.body.len);
  }
  sq_buf_free(&pick);
  sq_buf_free(&resp);
}

static void exec__run_call(exec_ctx_t *x, exec_job_t *job) {
  FunctionCall *c = (FunctionCall *)job->msg;
  exec_result_t res;
  sq_buf_t packed = {0};
  const char *addr = c->response_address && *c->response_address ? c->response_address : NULL;
  exec_slot_call_t sc = {EXEC_SLOT_CALL, job->fn, c->response_key, addr,
                         exec__deadline(x, c->timeout_ms)};
  if (x->slot) exec_slot_begin(x->slot, &sc);
  exec__py(x, job, &res);
  int rc = exec__pack(&res.whole, &packed);
  if (!rc && addr) rc = exec__push_tagged(x, addr, c->response_key, &packed);
  else if (!rc) rc = exec__put(x, c->response_key, packed.data, packed.len);
  if (rc) sq_log_warn(x->log, "result of %s for '%s' not delivered: %s", job->fn,
                      c->response_key, sq_strerror(rc));
  if (x->slot) exec_slot_end(x->slot);
  if (!c->skip_status) /* a Cloudburst scheduler's "available again" (PROTOCOL.md §3.5) */
    exec_io_out(x, EXEC_OUT_STATUS, NULL, NULL, 0);
  sq_buf_free(&packed);
  exec_py_result_clear(&res);
  exec_job_free(job);
}

/* The DAG's final result (or error) to wherever the caller waits for it. */
static int exec__deliver(exec_ctx_t *x, const DagSchedule *s, const sq_buf_t *packed) {
  char ep[300];
  const char *key = s->output_key && *s->output_key ? s->output_key : s->id;
  if (s->continuation && s->continuation->name && *s->continuation->name) {
    if (!x->nschedulers) return SQ_ECONFIG;
    Continuation c = CONTINUATION__INIT;
    c.name = s->continuation->name;
    c.id = s->id;
    c.result.data = packed->data;
    c.result.len = packed->len;
    c.call = s->continuation->call;
    sq_buf_t buf = {0};
    size_t n = continuation__get_packed_size(&c);
    int rc = sq_buf_reserve(&buf, n);
    if (!rc) {
      continuation__pack(&c, buf.data);
      exec_io_endpoint(x, ep, sizeof(ep), x->schedulers[0], EXEC_PORT_SCHED_CONT, 0);
      rc = exec_run_push(x, ep, buf.data, n);
    }
    sq_buf_free(&buf);
    return rc;
  }
  if (s->response_address && *s->response_address)
    return exec__push_tagged(x, s->response_address, key, packed);
  return exec__put(x, key, packed->data, packed->len);
}

/* Finds locations[fn] = "ip:tid" and makes the endpoint of its trigger port. */
static int exec__location(exec_ctx_t *x, const DagSchedule *s, const char *fn, char *ep,
                          size_t len) {
  for (size_t i = 0; i < s->n_locations; i++) {
    const char *loc = s->locations[i]->value;
    if (!s->locations[i]->key || strcmp(s->locations[i]->key, fn) || !loc) continue;
    const char *colon = strrchr(loc, ':');
    char host[256];
    char *end = NULL;
    if (!colon || (size_t)(colon - loc) >= sizeof(host)) return SQ_EINVAL;
    long tid = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || tid < 0 || tid > 1000) return SQ_EINVAL;
    memcpy(host, loc, (size_t)(colon - loc));
    host[colon - loc] = 0;
    exec_io_endpoint(x, ep, len, host, EXEC_PORT_TRIGGER, (int)tid);
    return ep[0] ? 0 : SQ_EINVAL;
  }
  return SQ_ENOTFOUND;
}

/* When s->carried names sink and fn is sink's first predecessor (connection order),
 * fills *out with sink's DagSchedule -- s with target_function = sink and triggers =
 * sink's predecessors in connection order (preds has room for every connection) --
 * and returns true. out borrows everything from s. */
static bool exec__carry(const DagSchedule *s, const char *fn, const char *sink, char **preds,
                        DagSchedule *out) {
  size_t i = 0, np = 0;
  while (i < s->n_carried && (!s->carried[i] || strcmp(s->carried[i], sink))) i++;
  if (i == s->n_carried) return false;
  for (size_t c = 0; c < s->dag->n_connections; c++) {
    const Dag__Link *l = s->dag->connections[c];
    if (l->sink && l->source && !strcmp(l->sink, sink)) preds[np++] = l->source;
  }
  if (np == 0 || strcmp(preds[0], fn)) return false;
  *out = *s;
  out->target_function = (char *)sink;
  out->triggers = preds;
  out->n_triggers = np;
  return true;
}

/* Sends one trigger per outgoing connection, carrying the sink's schedule when s says
 * so (exec__carry). *nout = how many connections exist. */
static int exec__trigger_all(exec_ctx_t *x, const DagSchedule *s, const char *fn,
                             exec_result_t *res, size_t *nout) {
  bool carry = s->n_carried && s->dag;
  char **preds = carry ? calloc(s->dag->n_connections + 1, sizeof(char *)) : NULL;
  int rc = 0;
  DagSchedule carried;
  Value *pv[res->nparts ? res->nparts : 1];
  for (size_t i = 0; i < res->nparts; i++) pv[i] = &res->parts[i];
  Arguments a = ARGUMENTS__INIT;
  a.values = pv;
  a.n_values = res->nparts;
  DagTrigger t = DAG_TRIGGER__INIT;
  t.id = s->id;
  t.source = (char *)fn;
  t.arguments = &a;
  *nout = 0;
  if (carry && !preds) { /* a sink would never get its schedule: fail, not as a sink */
    *nout = 1;
    rc = -ENOMEM;
  }
  for (size_t i = 0; s->dag && i < s->dag->n_connections && !rc; i++) {
    const Dag__Link *l = s->dag->connections[i];
    if (!l->source || strcmp(l->source, fn) || !l->sink) continue;
    (*nout)++;
    char ep[300];
    if ((rc = exec__location(x, s, l->sink, ep, sizeof(ep)))) {
      sq_log_warn(x->log, "DAG %s: no usable location for %s", s->id, l->sink);
      break;
    }
    t.target_function = l->sink;
    t.schedule = preds && exec__carry(s, fn, l->sink, preds, &carried) ? &carried : NULL;
    rc = sq_zmq_cache_send_pb(x->exec_push, ep, &t.base); /* packed into the frame */
  }
  free(preds);
  return rc;
}

static bool exec__invalid(const DagSchedule *s, const char *fn, const sq_buf_t *packed) {
  for (size_t i = 0; s->dag && i < s->dag->n_functions; i++) {
    const Dag__FunctionReference *f = s->dag->functions[i];
    if (!f->name || strcmp(f->name, fn) || f->type != EXECUTION_TYPE__MULTIEXEC) continue;
    for (size_t j = 0; j < f->n_invalid_results; j++)
      if (f->invalid_results[j].len == packed->len &&
          !memcmp(f->invalid_results[j].data, packed->data, packed->len))
        return true;
  }
  return false;
}

/* Runs a DAG job and gives it back to the DAG state. Returns the job that became ready
 * meanwhile (a MULTIEXEC schedule that waits again), else NULL. */
static exec_job_t *exec__run_dag(exec_ctx_t *x, exec_job_t *job) {
  const DagSchedule *s = (const DagSchedule *)job->msg;
  exec_result_t res;
  sq_buf_t packed = {0};
  size_t nout = 0;
  const char *key = s->output_key && *s->output_key ? s->output_key : s->id;
  exec_slot_call_t sc = {EXEC_SLOT_DAG, job->fn, key, s->response_address,
                         exec__deadline(x, s->timeout_ms)};
  if (x->slot) exec_slot_begin(x->slot, &sc);
  exec__py(x, job, &res);
  int rc = exec__pack(&res.whole, &packed);
  if (rc) goto out;
  if (res.ok && exec__invalid(s, job->fn, &packed)) {
    job->valid = false;
    goto out;
  }
  if (res.ok) rc = exec__trigger_all(x, s, job->fn, &res, &nout);
  if (!res.ok || nout == 0) rc = exec__deliver(x, s, &packed); /* sink, or an error */
out:
  if (rc) sq_log_warn(x->log, "DAG %s at %s: result not delivered: %s", s->id, job->fn,
                      sq_strerror(rc));
  if (x->slot) exec_slot_end(x->slot);
  sq_buf_free(&packed);
  exec_py_result_clear(&res);
  exec_job_t *again = NULL;
  if ((rc = exec_dag_done(x->dag, job, exec_slot_now_ms(), &again)))
    sq_log_warn(x->log, "DAG entry dropped after its run: %s", sq_strerror(rc));
  return again;
}

static void exec__run_pin(exec_ctx_t *x, exec_job_t *job) {
  PinFunction *p = (PinFunction *)job->msg;
  char err[512], ep[300];
  int rc = exec_py_pin(x, job->fn, err, sizeof(err));
  if (!rc) rc = exec_io_pin_set(x, job->fn, true);
  GenericResponse r = GENERIC_RESPONSE__INIT;
  r.success = rc == 0;
  r.error = rc ? CLOUDBURST_ERROR__FUNC_NOT_FOUND : CLOUDBURST_ERROR__NO_CLOUDBURST_ERROR;
  r.error_message = err;
  r.executor = x->ident;
  r.response_id = job->fn;
  if (p->response_address && *p->response_address) {
    exec_io_endpoint(x, ep, sizeof(ep), p->response_address, EXEC_PORT_SCHED_PIN, 0);
    uint8_t buf[2048];
    size_t n = generic_response__get_packed_size(&r);
    if (ep[0] && n <= sizeof(buf)) {
      generic_response__pack(&r, buf);
      exec_io_out(x, EXEC_OUT_PUSH, ep, buf, n);
    }
  }
  exec_io_out(x, EXEC_OUT_STATUS, NULL, NULL, 0);
  exec_job_free(job);
}

/* The BEGIN trigger of a plain source's schedule (triggers exactly ["BEGIN"], not
 * MULTIEXEC), made here so that the source starts when its schedule arrives: the
 * scheduler sends squall executors no BEGIN trigger for it
 * (SQUALL_FEATURE_BEGIN_ON_SCHEDULE). 0 with *out NULL for anything else; -ENOMEM.
 * *out is the caller's, allocated as an unpacked message (dag_trigger__free_unpacked
 * frees it and its strings). */
static int exec__begin_of(const DagSchedule *s, DagTrigger **out) {
  *out = NULL;
  if (s->n_triggers != 1 || strcmp(s->triggers[0], "BEGIN") || !s->id ||
      !s->target_function || exec_dag_multiexec(s, s->target_function))
    return 0;
  DagTrigger *t = malloc(sizeof(*t));
  if (!t) return -ENOMEM;
  dag_trigger__init(t);
  t->id = strdup(s->id);
  t->target_function = strdup(s->target_function);
  t->source = strdup("BEGIN");
  if (!t->id || !t->target_function || !t->source) {
    dag_trigger__free_unpacked(t, NULL);
    return -ENOMEM;
  }
  *out = t;
  return 0;
}

/* Takes s (owned) into the DAG state, with the BEGIN trigger of a plain source. */
static int exec__schedule(exec_ctx_t *x, DagSchedule *s, exec_job_t **job) {
  DagTrigger *begin;
  int brc = exec__begin_of(s, &begin);
  int rc = exec_dag_schedule(x->dag, s, exec_slot_now_ms(), job);
  if (begin && !rc && !*job) rc = exec_dag_trigger(x->dag, begin, exec_slot_now_ms(), job);
  else if (begin) dag_trigger__free_unpacked(begin, NULL);
  return rc || *job ? rc : brc; /* brc: the source cannot start, say so */
}

/* Turns one message of the executor thread's socket `which` into a job: a one-shot call
 * at once, a schedule or trigger through the DAG state (NULL until the entry is
 * ready). Malformed or refused messages are logged and dropped. */
static exec_job_t *exec__job_of(exec_ctx_t *x, int which, const void *data, size_t len) {
  static const ProtobufCMessageDescriptor *const descs[] = {
      [EXEC_PULL_CALL] = &function_call__descriptor,
      [EXEC_PULL_SCHEDULE] = &dag_schedule__descriptor,
      [EXEC_PULL_TRIGGER] = &dag_trigger__descriptor};
  exec_job_t *job = NULL;
  ProtobufCMessage *msg = exec_io_decode(x, data, len, descs[which]);
  int rc = 0;
  if (!msg) return NULL;
  if (which == EXEC_PULL_SCHEDULE) {
    rc = exec__schedule(x, (DagSchedule *)msg, &job);
  } else if (which == EXEC_PULL_TRIGGER) {
    DagSchedule *carried = ((DagTrigger *)msg)->schedule; /* exec__carry */
    ((DagTrigger *)msg)->schedule = NULL;
    /* The trigger first: then only the schedule can make the entry ready (one job),
     * and a schedule the scheduler sent as well is dropped as a repeat. */
    rc = exec_dag_trigger(x->dag, (DagTrigger *)msg, exec_slot_now_ms(), &job);
    if (carried && !rc && !job) rc = exec__schedule(x, carried, &job);
    else if (carried) dag_schedule__free_unpacked(carried, NULL);
  } else {
    FunctionCall *c = (FunctionCall *)msg;
    if (!(job = exec_job_new(EXEC_JOB_CALL, c->name))) rc = -ENOMEM;
    for (size_t i = 0; job && c->arguments && i < c->arguments->n_values && !rc; i++)
      rc = exec_job_add_arg(job, c->arguments->values[i]);
    if (job) job->msg = msg;
    else protobuf_c_message_free_unpacked(msg, NULL);
  }
  if (rc) {
    sq_log_warn(x->log, "%s refused: %s", descs[which]->name, sq_strerror(rc));
    exec_job_free(job);
    job = NULL;
  }
  return job;
}

/* Receives at most one message from socket `which` (-1: the I/O thread's jobs). NULL
 * when nothing is ready or the message made no job. */
static exec_job_t *exec__receive(exec_ctx_t *x, int which) {
  exec_job_t *job = NULL;
  if (which < 0) {
    if (zmq_recv(x->jobs_pull, &job, sizeof(job), ZMQ_DONTWAIT) != sizeof(job)) return NULL;
    return job; /* NULL: the I/O thread's wake-up on departure */
  }
  zmq_msg_t m;
  if (sq_zmq_recv_frame(x->pull[which], (size_t)EXEC_MAX_MSG, ZMQ_DONTWAIT, &m)) return NULL;
  job = exec__job_of(x, which, zmq_msg_data(&m), zmq_msg_size(&m));
  zmq_msg_close(&m);
  return job;
}

/* Runs job, then whatever it made ready (a MULTIEXEC schedule waiting again). */
static void exec__serve(exec_ctx_t *x, exec_job_t *job) {
  while (job) {
    int64_t t0 = exec_slot_now_ms();
    exec_job_t *next = NULL;
    switch (job->kind) {
    case EXEC_JOB_CALL: exec__run_call(x, job); break;
    case EXEC_JOB_DAG: next = exec__run_dag(x, job); break;
    case EXEC_JOB_PIN: exec__run_pin(x, job); break;
    default: exec_job_free(job); break;
    }
    __atomic_add_fetch(&x->busy_ms, exec_slot_now_ms() - t0, __ATOMIC_ACQ_REL);
    job = next;
  }
}

/* The wait on the executor's sockets failed (rc): sleeps bo's next delay instead of
 * retrying at once (a persistent error spun a core at 100%), logging once per episode. */
static void exec__wait_failed(exec_ctx_t *x, exec_backoff_t *bo, int rc) {
  bool first = false;
  int ms = exec_backoff_fail(bo, &first);
  if (first)
    sq_log_warn(x->log, "executor thread: waiting on its sockets failed: %s; retrying "
                "every %d ms doubling to %d ms until it works", sq_strerror(rc), ms,
                bo->max_ms);
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* The wait worked: ends a failure episode, if any, with one line. */
static void exec__wait_ok(exec_ctx_t *x, exec_backoff_t *bo) {
  uint64_t failed = exec_backoff_ok(bo);
  if (failed)
    sq_log_info(x->log, "executor thread: waiting on its sockets works again after %llu "
                "failure(s)", (unsigned long long)failed);
}

int exec_run_loop(exec_ctx_t *x) {
  static const int which[] = {-1, EXEC_PULL_CALL, EXEC_PULL_SCHEDULE, EXEC_PULL_TRIGGER};
  void *socks[4] = {x->jobs_pull, x->pull[EXEC_PULL_CALL], x->pull[EXEC_PULL_SCHEDULE],
                    x->pull[EXEC_PULL_TRIGGER]};
  sq_zwait_t w; /* one poll(2), not zmq_poll: fewer syscalls per wake-up */
  int rc = sq_zwait_init(&w, socks, 4);
  if (rc) {
    sq_log_error(x->log, "executor thread cannot wait on its sockets: %s", sq_strerror(rc));
    __atomic_store_n(&x->exec_done, 1, __ATOMIC_RELEASE);
    return rc;
  }
  int64_t last_expire = exec_slot_now_ms();
  exec_backoff_t bo; /* a wait that keeps failing is retried after 10 ms .. 1 s */
  exec_backoff_init(&bo, EXEC_BACKOFF_MIN_MS, EXEC_BACKOFF_MAX_MS);
  while (!__atomic_load_n(&x->stop, __ATOMIC_ACQUIRE)) {
    int n = sq_zwait_wait(&w, 200);
    if (n < 0) exec__wait_failed(x, &bo, n);
    else exec__wait_ok(x, &bo);
    for (int i = 0; n > 0 && i < 4; i++) /* one message per ready socket per round: fair */
      if (w.ready[i]) exec__serve(x, exec__receive(x, which[i]));
    int64_t now = exec_slot_now_ms();
    if (now - last_expire >= 1000) {
      exec_dag_expire(x->dag, now);
      sq_zmq_cache_expire(x->exec_push); /* sockets to departed clients and peers */
      last_expire = now;
    }
  }
  __atomic_store_n(&x->exec_done, 1, __ATOMIC_RELEASE);
  return 0;
}
