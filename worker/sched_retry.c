/* sched_retry: at-least-once delivery when an executor dies (docs/scheduler.md).
 *
 * The scheduler remembers, in two bounded rings, the calls it sent recently: one-shot
 * calls (packed FunctionCall + executor) and DAG calls (packed DagCall + schedule id +
 * every executor chosen). When the policy drops an executor (running = false, or
 * silent past --executor-deadline-ms), every remembered call younger than
 * --call-deadline-ms that went to it is sent again, to another executor:
 *
 *   one-shot: the same FunctionCall (same response_key) to a newly picked executor;
 *   DAG:      the same DagCall under the same schedule id, re-pinned as needed.
 *
 * The scheduler cannot see whether the lost executor finished first, so a call may run
 * twice: delivery is at-least-once. Results are idempotent for KVS outputs (the same
 * key is written again); a direct response may arrive twice. A call is re-sent at most
 * SCHED_MAX_TRIES - 1 times; the ring overwrites the oldest entry when full, and a
 * call larger than SCHED_TRACK_MAX_BYTES is not kept (memory stays bounded: at most
 * (4096 + 1024) x 1 MiB).
 *
 * No live executor to re-send to (every executor of the node crashed at once, or the
 * only worker is stopped): the call is parked in s->pending (sched_pending.h, at most
 * SCHED_MAX_PENDING calls and SCHED_PENDING_MAX_BYTES) instead of being dropped.
 * sched__pending_tick re-sends parked calls once executors report again, and fails a
 * call still parked --resend-wait-ms after it was parked (or one the full list
 * refused): an error result -- the Cloudburst error tuple, GenericResponse error
 * NO_RESOURCES, error_type squall.NoExecutors -- goes where the result would have
 * gone: PUSHed to the response address tagged with the response id, else written to
 * the KVS at the response / output key (only when that key holds nothing yet, so a
 * result the lost executor did deliver is never overwritten). The KVS write is
 * asynchronous -- a GET, then a PUT, both reaped by the loop (s->errw[]) -- so a stopped
 * KVS never holds the scheduler's thread. A DAG call with a continuation fails at the
 * end of the continuation chain. Counted in s->retry_stats.
 */
#include "sched_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "exec_errval.h"
#include "sq_error.h"

#define SCHED_NOEXEC_TYPE "squall.NoExecutors"
#define SCHED_CHAIN_MAX 16 /* continuation links followed to find a DAG's final target */

static void sched__oneshot_clear(sched_oneshot_t *o) {
  free(o->msg);
  memset(o, 0, sizeof(*o));
}

static void sched__inflight_clear(sched_inflight_t *f) {
  free(f->call);
  free(f->execs);
  memset(f, 0, sizeof(*f));
}

void sched__track_oneshot(sched_t *s, uint8_t *msg, size_t len, const sched_exec_id_t *ex,
                          int tries) {
  if (len > SCHED_TRACK_MAX_BYTES) { /* bounds the ring's memory (4 GiB worst) */
    free(msg);
    return;
  }
  sched_oneshot_t *o = &s->oneshots[s->oneshot_next];
  s->oneshot_next = (s->oneshot_next + 1) % SCHED_MAX_ONESHOTS;
  sched__oneshot_clear(o);
  o->msg = msg;
  o->len = len;
  o->exec = *ex;
  o->sent_ms = sq_now_ms();
  o->tries = tries;
}

void sched__track_dag(sched_t *s, const char *id, const DagCall *call,
                      const sched_exec_id_t *execs, size_t n, int tries) {
  size_t len = dag_call__get_packed_size(call);
  if (len > SCHED_TRACK_MAX_BYTES) return;
  sched_inflight_t *f = &s->inflight[s->inflight_next];
  s->inflight_next = (s->inflight_next + 1) % SCHED_MAX_INFLIGHT;
  sched__inflight_clear(f);
  f->call = malloc(len ? len : 1);
  f->execs = malloc((n ? n : 1) * sizeof(*execs));
  if (!f->call || !f->execs) {
    sched__inflight_clear(f);
    return;
  }
  dag_call__pack(call, f->call);
  f->len = len;
  memcpy(f->execs, execs, n * sizeof(*execs));
  f->nexecs = n;
  snprintf(f->id, sizeof f->id, "%s", id);
  f->sent_ms = sq_now_ms();
  f->tries = tries;
}

static bool sched__same(const sched_exec_id_t *a, const sched_exec_id_t *b) {
  return a->tid == b->tid && strcmp(a->ip, b->ip) == 0;
}

/* ---- failing a call nobody can run ------------------------------------------------ */

/* Appends a Value{response_id = id} to packed: appended protobuf bytes merge into the
 * message, as exec_run_tag does for the executors' results. */
static int sched__tag(sq_buf_t *packed, const char *id) {
  if (!id[0]) return 0;
  Value tag = VALUE__INIT;
  tag.response_id = (char *)id;
  size_t n = value__get_packed_size(&tag);
  int rc = sq_buf_reserve(packed, n);
  if (rc) return rc;
  value__pack(&tag, packed->data + packed->len);
  packed->len += n;
  return 0;
}

/* ---- error results into the KVS, asynchronously ---------------------------------- */

/* The KVS write of an error result goes through two asynchronous calls (GET: is the key
 * still empty? then PUT), reaped by the loop (sched__kvs_poll -> sched__errwrite_done),
 * never a blocking call: with a stopped or slow KVS each call takes up to
 * --kvs-timeout-ms x 2, and a blocking one held every other client of the scheduler
 * that long. The outcome is logged and counted when the PUT completes. */

static void sched__errwrite_free(sched_errwrite_t *w) {
  free(w->key);
  free(w->value);
  memset(w, 0, sizeof(*w));
}

/* Starts the read of key for the error result v (copied). -EINPROGRESS (started: the
 * outcome is logged when it completes), SQ_ETOOBIG (SCHED_MAX_ERRWRITES in flight),
 * -ENOMEM, or the client's error. */
static int sched__errwrite_start(sched_t *s, const char *key, const sq_buf_t *v) {
  if (!s->errw) s->errw = calloc(SCHED_MAX_ERRWRITES, sizeof(*s->errw));
  if (!s->errw) return -ENOMEM;
  if (s->nerrw >= SCHED_MAX_ERRWRITES) return SQ_ETOOBIG;
  sched_errwrite_t *w = &s->errw[s->nerrw];
  w->key = strdup(key);
  w->value = malloc(v->len ? v->len : 1);
  int rc = w->key && w->value ? 0 : -ENOMEM;
  if (rc == 0) {
    memcpy(w->value, v->data, v->len);
    w->len = v->len;
    rc = kvs_client_get_async(s->kvs, (const char *const *)&w->key, 1, &s->kvs_lim, &w->id);
  }
  if (rc) {
    sched__errwrite_free(w);
    return rc;
  }
  s->nerrw++;
  return -EINPROGRESS;
}

/* The key read as empty: starts the PUT of the error result. 0 or the error. */
static int sched__errwrite_put(sched_t *s, sched_errwrite_t *w) {
  sq_buf_t buf = {0};
  int rc = sched__lww_encode(s, w->value, w->len, &buf);
  kvs_client_kv_t kv = {.key = w->key, .type = SQ_LATTICE_LWW, .payload = buf.data,
                        .len = buf.len};
  if (rc == 0) rc = kvs_client_put_async(s->kvs, &kv, 1, &s->kvs_lim, &w->id);
  if (rc == 0) w->writing = true;
  sq_buf_free(&buf);
  return rc;
}

/* What the GET of w's key found: SQ_EKEYDNE (empty or a tombstone: write), SQ_EEXISTS
 * (a result is there: leave it), or the read's error. */
static int sched__errwrite_found(const kvs_client_result_t *r) {
  if (r->err) return r->err;
  if (r->type != SQ_LATTICE_LWW) return SQ_EEXISTS;
  uint8_t *v = NULL;
  size_t len = 0;
  int rc = sched__lww_value(r->payload, r->len, &v, &len);
  free(v);
  return rc == SQ_EKEYDNE ? SQ_EKEYDNE : SQ_EEXISTS;
}

bool sched__errwrite_done(sched_t *s, const kvs_client_completion_t *done) {
  size_t i = 0;
  while (i < s->nerrw && s->errw[i].id != done->id) i++;
  if (i == s->nerrw) return false;
  sched_errwrite_t *w = &s->errw[i];
  int rc = done->n == 1 ? done->results[0].err : SQ_EPROTO;
  if (!w->writing) {
    rc = done->n == 1 ? sched__errwrite_found(&done->results[0]) : SQ_EPROTO;
    if (rc == SQ_EKEYDNE) rc = sched__errwrite_put(s, w);
    if (rc == 0) return true; /* the PUT completes later */
  }
  if (rc && rc != SQ_EEXISTS) s->retry_stats.undelivered++;
  if (rc == 0)
    sq_log_info(s->log, "error result written to the KVS at %.200s", w->key);
  else
    sq_log_warn(s->log, "error result for %.200s: %s", w->key,
                rc == SQ_EEXISTS ? "a result was already stored; left as it is"
                                 : sq_strerror(rc));
  sched__errwrite_free(w);
  s->errw[i] = s->errw[--s->nerrw];
  memset(&s->errw[s->nerrw], 0, sizeof(*w));
  return true;
}

/* Sends the error result msg to addr (tagged with key), else starts its write to the
 * KVS at key (written only if the key holds nothing yet). 0 (pushed), -EINPROGRESS
 * (the KVS write started), or the error. */
static int sched__deliver_error(sched_t *s, const char *addr, const char *key,
                                const char *msg) {
  exec_errval_t e = {CLOUDBURST_ERROR__NO_RESOURCES, SCHED_NOEXEC_TYPE, msg, "", ""};
  sq_buf_t v = {0};
  int rc = exec_errval_value(&e, &v);
  if (rc) goto out;
  if (addr[0]) {
    rc = sched__tag(&v, key);
    if (!rc) rc = sq_zmq_cache_send(s->push, addr, v.data, v.len);
    goto out;
  }
  rc = key[0] ? sched__errwrite_start(s, key, &v) : SQ_EEMPTYKEY;
out:
  sq_buf_free(&v);
  return rc;
}

/* Where a parked call's result would have gone: (addr, key) point into the unpacked
 * message *keep (caller frees it with protobuf_c_message_free_unpacked). */
static int sched__destination(const sched_pending_item_t *it, ProtobufCMessage **keep,
                              const char **name, const char **addr, const char **key) {
  if (it->kind == SCHED_PENDING_CALL) {
    FunctionCall *fc = function_call__unpack(NULL, it->len, it->msg); /* our own bytes */
    if (!fc) return SQ_EPROTO;
    *keep = &fc->base;
    *name = fc->name;
    *addr = fc->response_address;
    *key = fc->response_key;
    return 0;
  }
  DagCall *dc = dag_call__unpack(NULL, it->len, it->msg);
  if (!dc) return SQ_EPROTO;
  *keep = &dc->base;
  *name = dc->name;
  const DagCall *last = dc; /* a continuation runs under the same id: follow the chain */
  for (int i = 0; i < SCHED_CHAIN_MAX && last->continuation && last->continuation->call; i++)
    last = last->continuation->call;
  *addr = last->response_address;
  *key = last->output_key[0] ? last->output_key : it->id;
  return 0;
}

/* Fails a parked (or unparkable) call: its caller gets a squall.NoExecutors error. */
static void sched__pending_fail(sched_t *s, const sched_pending_item_t *it, uint64_t now,
                                const char *why) {
  ProtobufCMessage *m = NULL;
  const char *name = "", *addr = "", *key = "";
  char msg[SCHED_ERRMSG_MAX];
  int rc = sched__destination(it, &m, &name, &addr, &key);
  const char *what = it->kind == SCHED_PENDING_CALL ? "call of function" : "call of DAG";
  s->retry_stats.failed++;
  if (rc == 0) {
    snprintf(msg, sizeof msg, "the %s '%.200s' was not run: its executor was lost and %s",
             what, name, why);
    rc = sched__deliver_error(s, addr, key, msg);
  }
  if (rc && rc != -EINPROGRESS) s->retry_stats.undelivered++;
  sq_log_warn(s->log, "%s '%.200s' (%.200s) failed after %llu ms without an executor "
              "(%s): %s (re-sent %llu, parked %llu, unparked %llu, failed %llu, "
              "undelivered %llu)",
              what, name, key, (unsigned long long)(now - it->parked_ms), why,
              rc == -EINPROGRESS ? "error result being written to the KVS"
              : rc ? sq_strerror(rc) : "error result sent",
              (unsigned long long)s->retry_stats.resent,
              (unsigned long long)s->retry_stats.parked,
              (unsigned long long)s->retry_stats.unparked,
              (unsigned long long)s->retry_stats.failed,
              (unsigned long long)s->retry_stats.undelivered);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
}

/* A pending entry that borrows msg, parked now and due at until. */
static sched_pending_item_t sched__item(sched_pending_kind_t kind, const char *id,
                                        const uint8_t *msg, size_t len, int tries,
                                        uint64_t now, uint64_t until) {
  sched_pending_item_t it = {.kind = kind, .msg = (uint8_t *)msg, .len = len,
                             .parked_ms = now, .until_ms = until, .tries = tries};
  snprintf(it.id, sizeof it.id, "%s", id);
  return it;
}

/* Fails a call whose every send went to an executor that was then lost. */
static void sched__give_up(sched_t *s, sched_pending_kind_t kind, const char *id,
                           const uint8_t *msg, size_t len, int tries, uint64_t now) {
  sched_pending_item_t it = sched__item(kind, id, msg, len, tries, now, now);
  char why[128];
  snprintf(why, sizeof why, "each of the %d executors it was sent to was lost too", tries);
  sched__pending_fail(s, &it, now, why);
}

/* Parks a call that found no live executor; a full list fails it at once. */
static void sched__park(sched_t *s, sched_pending_kind_t kind, const char *id,
                        const uint8_t *msg, size_t len, int tries, uint64_t now) {
  sched_pending_item_t it = sched__item(kind, id, msg, len, tries, now,
                                        now + (uint64_t)s->cfg->resend_wait_ms);
  int rc = sched_pending_add(s->pending, &it);
  if (rc == 0) {
    s->retry_stats.parked++;
    sq_log_warn(s->log, "no live executor for a re-sent %s: parked for up to %ld ms "
                "(%zu parked)", kind == SCHED_PENDING_CALL ? "call" : "DAG call",
                (long)s->cfg->resend_wait_ms, sched_pending_count(s->pending));
    return;
  }
  sched__pending_fail(s, &it, now, rc == SQ_ETOOBIG
                      ? "the scheduler's list of calls waiting for an executor is full"
                      : "the scheduler could not keep it waiting for another");
}

/* ---- re-sending ------------------------------------------------------------------ */

static void sched__retry_oneshots(sched_t *s, const sched_exec_id_t *ex, uint64_t now) {
  uint64_t window = (uint64_t)s->cfg->call_deadline_ms;
  for (size_t i = 0; i < SCHED_MAX_ONESHOTS; i++) {
    sched_oneshot_t *o = &s->oneshots[i];
    if (!o->msg || !sched__same(&o->exec, ex)) continue;
    if (now - o->sent_ms <= window && o->tries >= SCHED_MAX_TRIES)
      sched__give_up(s, SCHED_PENDING_CALL, "", o->msg, o->len, o->tries, now);
    if (now - o->sent_ms > window || o->tries >= SCHED_MAX_TRIES) {
      sched__oneshot_clear(o);
      continue;
    }
    uint8_t *msg = o->msg;
    size_t len = o->len;
    int tries = o->tries;
    o->msg = NULL; /* the re-send tracks itself in a new slot */
    sched__oneshot_clear(o);
    int rc = sched__resend_call(s, msg, len, ex, tries + 1);
    if (rc == 0) s->retry_stats.resent++;
    sq_log_warn(s->log, "executor %s:%u lost: one-shot call re-sent (%s)", ex->ip, ex->tid,
                rc ? sq_strerror(rc) : "ok");
    if (rc) sched__park(s, SCHED_PENDING_CALL, "", msg, len, tries, now);
    free(msg);
  }
}

static bool sched__uses(const sched_inflight_t *f, const sched_exec_id_t *ex) {
  for (size_t i = 0; i < f->nexecs; i++)
    if (sched__same(&f->execs[i], ex)) return true;
  return false;
}

/* Runs a DAG call again under its schedule id, counting the try. 0, or the error with
 * *cb and err filled. */
static int sched__dag_again(sched_t *s, const DagCall *call, const char *id, int tries,
                            int *cb, char *err, size_t errlen) {
  char out_id[64];
  return sched__dag_run(s, call, id, tries + 1, out_id, cb, err, errlen); /* tracks it */
}

static void sched__retry_dags(sched_t *s, const sched_exec_id_t *ex, uint64_t now) {
  uint64_t window = (uint64_t)s->cfg->call_deadline_ms;
  for (size_t i = 0; i < SCHED_MAX_INFLIGHT; i++) {
    sched_inflight_t *f = &s->inflight[i];
    if (!f->call || !sched__uses(f, ex)) continue;
    if (now - f->sent_ms <= window && f->tries >= SCHED_MAX_TRIES)
      sched__give_up(s, SCHED_PENDING_DAG, f->id, f->call, f->len, f->tries, now);
    if (now - f->sent_ms > window || f->tries >= SCHED_MAX_TRIES) {
      sched__inflight_clear(f);
      continue;
    }
    uint8_t *bytes = f->call;
    size_t len = f->len;
    char id[64], err[SCHED_ERRMSG_MAX];
    int tries = f->tries, cb = 0;
    snprintf(id, sizeof id, "%s", f->id);
    f->call = NULL; /* kept for parking; the re-run tracks itself in a new slot */
    sched__inflight_clear(f);
    DagCall *call = dag_call__unpack(NULL, len, bytes); /* our own bytes */
    int rc = call ? sched__dag_again(s, call, id, tries, &cb, err, sizeof err) : SQ_EPROTO;
    if (rc == 0) s->retry_stats.resent++;
    sq_log_warn(s->log, "executor %s:%u lost: DAG %s schedule %s re-run (%s)", ex->ip,
                ex->tid, call ? call->name : "?", id, rc ? err : "ok");
    if (rc && call && cb == CLOUDBURST_ERROR__NO_SUCH_DAG) { /* deleted: no waiting */
      sched_pending_item_t it = sched__item(SCHED_PENDING_DAG, id, bytes, len, tries, now, now);
      sched__pending_fail(s, &it, now, "its DAG is no longer registered");
    } else if (rc && call) {
      sched__park(s, SCHED_PENDING_DAG, id, bytes, len, tries, now);
    }
    if (call) dag_call__free_unpacked(call, NULL);
    free(bytes);
  }
}

/* Queues ex in s->lost unless it is there already. 0 or -ENOMEM. */
static int sched__lost_defer(sched_t *s, const sched_exec_id_t *ex) {
  for (size_t i = 0; i < s->nlost; i++)
    if (sched__same(&s->lost[i], ex)) return 0;
  if (s->nlost == s->caplost) {
    size_t cap = s->caplost ? 2 * s->caplost : 8;
    sched_exec_id_t *grown = realloc(s->lost, cap * sizeof(*grown));
    if (!grown) return -ENOMEM;
    s->lost = grown;
    s->caplost = cap;
  }
  s->lost[s->nlost++] = *ex;
  return 0;
}

void sched__executor_lost(sched_t *s, const sched_exec_id_t *ex, uint64_t now_ms) {
  if (s->pinning) { /* inside a pin wait: re-sending could pin again (see sched_int.h) */
    int rc = sched__lost_defer(s, ex);
    if (rc) sq_log_error(s->log, "executor %s:%u lost during a pin wait: its calls are "
                         "not re-sent (%s)", ex->ip, ex->tid, sq_strerror(rc));
    else sq_log_info(s->log, "executor %s:%u lost during a pin wait: its calls are "
                     "re-sent once the wait is over", ex->ip, ex->tid);
    return;
  }
  sched__retry_oneshots(s, ex, now_ms);
  sched__retry_dags(s, ex, now_ms);
}

void sched__lost_flush(sched_t *s, uint64_t now_ms) {
  while (s->nlost && !s->pinning) { /* a re-run's pin wait may queue more */
    sched_exec_id_t ex = s->lost[0];
    memmove(s->lost, s->lost + 1, --s->nlost * sizeof(ex));
    sched__executor_lost(s, &ex, now_ms);
  }
}

/* ---- the parked calls ------------------------------------------------------------ */

/* Sends a parked call again. 0, or why not (the call stays parked). */
static int sched__pending_send(sched_t *s, const sched_pending_item_t *it) {
  if (it->kind == SCHED_PENDING_CALL)
    return sched__resend_call(s, it->msg, it->len, NULL, it->tries + 1);
  DagCall *call = dag_call__unpack(NULL, it->len, it->msg); /* our own bytes */
  if (!call) return SQ_EPROTO;
  char err[SCHED_ERRMSG_MAX];
  int cb = 0;
  int rc = sched__dag_again(s, call, it->id, it->tries, &cb, err, sizeof err);
  dag_call__free_unpacked(call, NULL);
  return rc;
}

void sched__pending_tick(sched_t *s, uint64_t now_ms) {
  sched_pending_item_t it;
  if (!s->pending || sched_pending_count(s->pending) == 0) return;
  while (sched_pending_pop_due(s->pending, now_ms, &it)) {
    char why[128];
    snprintf(why, sizeof why, "no executor came back within %ld ms",
             (long)s->cfg->resend_wait_ms);
    sched__pending_fail(s, &it, now_ms, why);
    sched_pending_item_clear(&it);
  }
  if (now_ms < s->pending_next_ms || sched_policy_count(s->policy) == 0) return;
  s->pending_next_ms = now_ms + SCHED_PENDING_RETRY_MS;
  size_t n = sched_pending_count(s->pending);
  for (size_t i = 0; i < n && sched_pending_pop(s->pending, &it); i++) {
    int rc = sched__pending_send(s, &it);
    bool dag = it.kind == SCHED_PENDING_DAG;
    if (rc == 0) {
      s->retry_stats.unparked++;
      sq_log_info(s->log, "a parked %s was re-sent after %llu ms",
                  it.kind == SCHED_PENDING_CALL ? "call" : "DAG call",
                  (unsigned long long)(now_ms - it.parked_ms));
    } else if (sched_pending_add(s->pending, &it) != 0) {
      sched__pending_fail(s, &it, now_ms, "the scheduler could not keep it waiting");
    }
    sched_pending_item_clear(&it);
    if (rc && dag) break; /* a failed re-pin may have waited: one per pass */
  }
}

int sched__retry_init(sched_t *s) {
  return sched_pending_create(SCHED_MAX_PENDING, SCHED_PENDING_MAX_BYTES, &s->pending);
}

void sched__retry_free(sched_t *s) {
  for (size_t i = 0; s->oneshots && i < SCHED_MAX_ONESHOTS; i++)
    sched__oneshot_clear(&s->oneshots[i]);
  for (size_t i = 0; s->inflight && i < SCHED_MAX_INFLIGHT; i++)
    sched__inflight_clear(&s->inflight[i]);
  if (s->pending)
    sq_log_info(s->log, "re-sends: %llu at once, %llu parked, %llu of them re-sent later, "
                "%llu failed (%llu undelivered), %zu still parked",
                (unsigned long long)s->retry_stats.resent,
                (unsigned long long)s->retry_stats.parked,
                (unsigned long long)s->retry_stats.unparked,
                (unsigned long long)s->retry_stats.failed,
                (unsigned long long)s->retry_stats.undelivered,
                sched_pending_count(s->pending));
  sched_pending_destroy(s->pending);
  free(s->lost);
  s->lost = NULL;
  s->nlost = s->caplost = 0;
  for (size_t i = 0; i < s->nerrw; i++) sched__errwrite_free(&s->errw[i]);
  free(s->errw);
  s->errw = NULL;
  s->nerrw = 0;
  free(s->oneshots);
  free(s->inflight);
  s->oneshots = NULL;
  s->inflight = NULL;
  s->pending = NULL;
}
