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
 */
#include "sched_int.h"

#include <stdlib.h>
#include <string.h>

#include "sq_error.h"

int sched__resend_call(sched_t *s, const uint8_t *msg, size_t len,
                       const sched_exec_id_t *dead, int tries);

static void sched__oneshot_clear(sched_oneshot_t *o) {
  free(o->msg);
  memset(o, 0, sizeof(*o));
}

static void sched__inflight_clear(sched_inflight_t *f) {
  free(f->call);
  free(f->execs);
  memset(f, 0, sizeof(*f));
}

void sched__track_oneshot(sched_t *s, const uint8_t *msg, size_t len,
                          const sched_exec_id_t *ex, int tries) {
  if (len > SCHED_TRACK_MAX_BYTES) return; /* bounds the ring's memory (4 GiB worst) */
  sched_oneshot_t *o = &s->oneshots[s->oneshot_next];
  s->oneshot_next = (s->oneshot_next + 1) % SCHED_MAX_ONESHOTS;
  sched__oneshot_clear(o);
  o->msg = malloc(len ? len : 1);
  if (!o->msg) return; /* untracked: it just will not be re-sent */
  memcpy(o->msg, msg, len);
  o->len = len;
  o->exec = *ex;
  o->sent_ms = sched__now_ms();
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
  f->sent_ms = sched__now_ms();
  f->tries = tries;
}

static bool sched__same(const sched_exec_id_t *a, const sched_exec_id_t *b) {
  return a->tid == b->tid && strcmp(a->ip, b->ip) == 0;
}

static void sched__retry_oneshots(sched_t *s, const sched_exec_id_t *ex, uint64_t now) {
  uint64_t window = (uint64_t)s->cfg->call_deadline_ms;
  for (size_t i = 0; i < SCHED_MAX_ONESHOTS; i++) {
    sched_oneshot_t *o = &s->oneshots[i];
    if (!o->msg || !sched__same(&o->exec, ex)) continue;
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
    sq_log_warn(s->log, "executor %s:%u lost: one-shot call re-sent (%s)", ex->ip, ex->tid,
                rc ? sq_strerror(rc) : "ok");
    free(msg);
  }
}

static bool sched__uses(const sched_inflight_t *f, const sched_exec_id_t *ex) {
  for (size_t i = 0; i < f->nexecs; i++)
    if (sched__same(&f->execs[i], ex)) return true;
  return false;
}

static void sched__retry_dags(sched_t *s, const sched_exec_id_t *ex, uint64_t now) {
  uint64_t window = (uint64_t)s->cfg->call_deadline_ms;
  for (size_t i = 0; i < SCHED_MAX_INFLIGHT; i++) {
    sched_inflight_t *f = &s->inflight[i];
    if (!f->call || !sched__uses(f, ex)) continue;
    if (now - f->sent_ms > window || f->tries >= SCHED_MAX_TRIES) {
      sched__inflight_clear(f);
      continue;
    }
    DagCall *call = dag_call__unpack(NULL, f->len, f->call); /* our own bytes */
    char id[64], out_id[64], err[SCHED_ERRMSG_MAX];
    int tries = f->tries, cb = 0;
    snprintf(id, sizeof id, "%s", f->id);
    sched__inflight_clear(f);
    if (!call) continue;
    /* sched__dag_run tracks the new attempt; tries is carried through the ring */
    int rc = sched__dag_run(s, call, id, out_id, &cb, err, sizeof err);
    if (rc == 0) {
      size_t last = (s->inflight_next + SCHED_MAX_INFLIGHT - 1) % SCHED_MAX_INFLIGHT;
      if (strcmp(s->inflight[last].id, id) == 0) s->inflight[last].tries = tries + 1;
    }
    sq_log_warn(s->log, "executor %s:%u lost: DAG %s schedule %s re-run (%s)", ex->ip,
                ex->tid, call->name, id, rc ? err : "ok");
    dag_call__free_unpacked(call, NULL);
  }
}

void sched__executor_lost(sched_t *s, const sched_exec_id_t *ex, uint64_t now_ms) {
  sched__retry_oneshots(s, ex, now_ms);
  sched__retry_dags(s, ex, now_ms);
}

void sched__retry_free(sched_t *s) {
  for (size_t i = 0; s->oneshots && i < SCHED_MAX_ONESHOTS; i++)
    sched__oneshot_clear(&s->oneshots[i]);
  for (size_t i = 0; s->inflight && i < SCHED_MAX_INFLIGHT; i++)
    sched__inflight_clear(&s->inflight[i]);
  free(s->oneshots);
  free(s->inflight);
  s->oneshots = NULL;
  s->inflight = NULL;
}
