/* sched_dagreg: ports 5004 (register a DAG) and 5006 (delete one), pinning, and the
 * table of known DAGs.
 *
 * Registration: decode -> refuse a known name (locally, then in the KVS) -> validate
 * (sched_dag) -> pin every function that is not pinned on a live executor yet ->
 * store <name> = LWW(raw Dag bytes) -> remember. Pinning (PROTOCOL.md §3.4, without
 * §5 item 29's endless loop):
 *
 *   for at most pin_tries executors (fewest pins first, colocated IP preferred, never
 *   one that already failed this function):
 *       drain stale acks; PUSH PinFunction to ip:4000+off+tid;
 *       wait <= pin_timeout_ms on PULL 5010 (ThreadStatus keeps being applied meanwhile)
 *       ack success -> recorded; ack failure or silence -> next executor
 *
 * When a function cannot be pinned, the pins this registration made are undone
 * (unpin to 4010+tid) and the reply is NO_RESOURCES with the reason.
 *
 * Pin waits never nest: while one runs (s->pinning) an executor that departs or is
 * dropped is only queued (sched__executor_lost); its calls are re-sent -- DAG calls
 * re-run, which may pin again -- by the loop's next tick. Re-running them inside the
 * wait (as it once did) started a second pin wait that drained and swallowed the
 * first one's acks, so a registration failed although its executor had accepted.
 *
 * Deletion: unpin the DAG's functions that no other known DAG uses, write a tombstone
 * (an LWW with a newer timestamp and an empty value; the KVS reads it as KEY_DNE) so
 * that no scheduler can fetch the DAG back, and forget it. Peers drop it at their next
 * refresh, when their check of the key finds the tombstone (sched_status.c).
 */
#include "sched_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sched_dag.h"
#include "sq_error.h"
#include "sq_proto.h"

sched_dagent_t *sched__dag_find(sched_t *s, const char *name) {
  for (size_t i = 0; i < s->ndags; i++)
    if (strcmp(s->dags[i].name, name) == 0) return &s->dags[i];
  return NULL;
}

int sched__dag_add(sched_t *s, Dag *dag) {
  if (s->ndags >= SCHED_MAX_DAGS) return SQ_ETOOBIG;
  char *name = strdup(dag->name);
  if (!name) return -ENOMEM;
  s->dags[s->ndags].name = name;
  s->dags[s->ndags].dag = dag;
  s->ndags++;
  return 0;
}

void sched__dag_remove(sched_t *s, const char *name) {
  sched_dagent_t *d = sched__dag_find(s, name);
  if (!d) return;
  free(d->name);
  dag__free_unpacked(d->dag, NULL);
  *d = s->dags[--s->ndags];
}

/* One function being pinned by a registration. */
typedef struct {
  const Dag__FunctionReference *fr;
  sched_exec_id_t tried[12];
  size_t ntried;
  sched_exec_id_t at;    /* where the pin in flight went */
  uint64_t sent_seq;     /* order of sending, for acks that name nobody */
  enum { PIN_TODO, PIN_SENT, PIN_DONE, PIN_FRESH, PIN_FAILED } state;
} sched_pin_t;

static void sched__pin_drain(sched_t *s) {
  for (int i = 0; i < 256; i++) {
    zmq_msg_t m;
    if (sq_zmq_recv_frame(s->pin_pull, 65536, ZMQ_DONTWAIT, &m) != 0) return;
    zmq_msg_close(&m);
  }
}

static void sched__unpin(sched_t *s, const sched_exec_id_t *ex, const char *fname) {
  (void)sched__push_bytes(s, ex, SCHED_EXEC_UNPIN, fname, strlen(fname));
  (void)sched_policy_pin_remove(s->policy, ex, fname);
}

/* IP of a colocated function of dag pinned somewhere (in flight counts), or NULL. */
static const char *sched__coloc_ip(sched_t *s, const Dag *dag, const char *fname,
                                   sched_exec_id_t *tmp) {
  bool member = false;
  for (size_t i = 0; i < dag->n_colocated; i++) member |= strcmp(dag->colocated[i], fname) == 0;
  for (size_t i = 0; member && i < dag->n_colocated; i++)
    if (strcmp(dag->colocated[i], fname) != 0 &&
        sched_policy_locations(s->policy, dag->colocated[i], tmp, 1) > 0)
      return tmp->ip;
  return NULL;
}

/* Sends this round's pins. The pin is recorded provisionally at once, so that the
 * next function of the round sees the executor's new pin count and colocation. */
static void sched__pin_send_round(sched_t *s, const Dag *dag, sched_pin_t *p, size_t n,
                                  size_t max_tries, uint64_t *seq) {
  for (size_t i = 0; i < n; i++) {
    sched_exec_id_t ex, tmp;
    if (p[i].state != PIN_TODO) continue;
    const char *prefer = sched__coloc_ip(s, dag, p[i].fr->name, &tmp);
    if (p[i].ntried >= max_tries ||
        sched_policy_pick_pin(s->policy, p[i].fr->name, p[i].fr->gpu, prefer, p[i].tried,
                              p[i].ntried, &ex) != 0) {
      p[i].state = PIN_FAILED;
      continue;
    }
    p[i].tried[p[i].ntried++] = ex;
    PinFunction pf = PIN_FUNCTION__INIT;
    pf.name = p[i].fr->name;
    pf.response_address = s->cfg->public_ip;
    pf.batching = p[i].fr->batching;
    if (sched__push(s, &ex, SCHED_EXEC_PIN, &pf.base) != 0) continue; /* next round */
    (void)sched_policy_pin_add(s->policy, &ex, p[i].fr->name);
    p[i].at = ex;
    p[i].sent_seq = (*seq)++;
    p[i].state = PIN_SENT;
  }
}

/* Applies one ack to the pin it answers (by function and executor; an ack naming
 * neither, as Cloudburst executors send, answers the oldest pin in flight). */
static void sched__pin_ack(sched_t *s, sched_pin_t *p, size_t n, const GenericResponse *r) {
  sched_pin_t *hit = NULL;
  for (size_t i = 0; i < n; i++) {
    if (p[i].state != PIN_SENT) continue;
    char who[SCHED_IP_MAX + 12];
    sched_exec_id_format(&p[i].at, who, sizeof who);
    bool fn_ok = !r->response_id[0] || strcmp(r->response_id, p[i].fr->name) == 0;
    bool ex_ok = !r->executor[0] || strcmp(r->executor, who) == 0;
    if (fn_ok && ex_ok && (!hit || p[i].sent_seq < hit->sent_seq)) hit = &p[i];
  }
  if (!hit) return; /* stale: an ack of an earlier, abandoned pin */
  if (r->success && sched_policy_pin_add(s->policy, &hit->at, hit->fr->name) == 0) {
    hit->state = PIN_FRESH;
    return;
  }
  sq_log_warn(s->log, "executor %s:%u refused to pin %s: %s", hit->at.ip, hit->at.tid,
              hit->fr->name, r->error_message);
  sched__unpin(s, &hit->at, hit->fr->name);
  hit->state = PIN_TODO;
}

static size_t sched__pins_in_flight(const sched_pin_t *p, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += p[i].state == PIN_SENT;
  return k;
}

/* Collects acks for up to pin_timeout_ms (statuses keep being applied meanwhile);
 * pins still unanswered then are abandoned and go back to TODO. */
static void sched__pin_collect(sched_t *s, sched_pin_t *p, size_t n) {
  uint64_t deadline = sq_now_ms() + (uint64_t)s->cfg->pin_timeout_ms;
  while (sched__pins_in_flight(p, n) > 0) {
    uint64_t now = sq_now_ms();
    if (now >= deadline) break;
    zmq_pollitem_t it[2] = {{s->pin_pull, 0, ZMQ_POLLIN, 0}, {s->status_pull, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(it, 2, (long)(deadline - now)) < 0 && zmq_errno() != EINTR) break;
    if (it[1].revents & ZMQ_POLLIN) sched__drain_status(s);
    GenericResponse *r = NULL;
    if (!(it[0].revents & ZMQ_POLLIN) ||
        sq_zmq_recv_pb(s->pin_pull, &generic_response__descriptor, 65536, NULL, ZMQ_DONTWAIT,
                       (ProtobufCMessage **)&r) != 0)
      continue;
    sched__pin_ack(s, p, n, r);
    generic_response__free_unpacked(r, NULL);
  }
  for (size_t i = 0; i < n; i++) {
    if (p[i].state != PIN_SENT) continue;
    sq_log_warn(s->log, "executor %s:%u did not acknowledge pinning %s within %ld ms",
                p[i].at.ip, p[i].at.tid, p[i].fr->name, (long)s->cfg->pin_timeout_ms);
    sched__unpin(s, &p[i].at, p[i].fr->name);
    p[i].state = PIN_TODO;
  }
}

static void sched__pin_error(sched_t *s, const Dag *dag, const sched_pin_t *p, size_t n,
                             char *err, size_t errlen) {
  const char *fn = "?";
  for (size_t i = 0; i < n; i++)
    if (p[i].state != PIN_DONE && p[i].state != PIN_FRESH) { fn = p[i].fr->name; break; }
  if (sched_policy_count(s->policy) == 0)
    snprintf(err, errlen, "function '%s' of DAG '%s' could not be pinned: no executor has "
             "reported status to this scheduler", fn, dag->name);
  else
    snprintf(err, errlen, "function '%s' of DAG '%s' could not be pinned: %zu live "
             "executor(s), none accepted within %ld ms x %ld tries", fn, dag->name,
             sched_policy_count(s->policy), (long)s->cfg->pin_timeout_ms,
             (long)s->cfg->pin_tries);
}

/* Pins, in rounds, every function not pinned on a live executor yet: each round sends
 * all outstanding pins at once and waits pin_timeout_ms for the acks, so a
 * registration waits at most pin_tries x pin_timeout_ms. On failure the pins it made
 * are undone. */
int sched__dag_pin(sched_t *s, const Dag *dag, char *err, size_t errlen) {
  size_t n = dag->n_functions, max_tries = (size_t)s->cfg->pin_tries;
  sched_pin_t *p = calloc(n ? n : 1, sizeof(*p));
  uint64_t seq = 0;
  int rc = 0;
  if (s->pinning) { /* cannot happen: losses during a wait are deferred (see below) */
    snprintf(err, errlen, "internal error: pinning while another pin wait runs");
    free(p);
    return SQ_EINVAL;
  }
  if (!p) {
    snprintf(err, errlen, "out of memory while pinning");
    return -ENOMEM;
  }
  if (max_tries > sizeof p[0].tried / sizeof p[0].tried[0])
    max_tries = sizeof p[0].tried / sizeof p[0].tried[0];
  for (size_t i = 0; i < n; i++) {
    sched_exec_id_t ex;
    p[i].fr = dag->functions[i];
    p[i].state = sched_policy_locations(s->policy, p[i].fr->name, &ex, 1) ? PIN_DONE : PIN_TODO;
  }
  sched__pin_drain(s);
  s->pinning++; /* executors lost meanwhile are re-sent after (sched__executor_lost) */
  for (size_t round = 0; round < max_tries; round++) {
    sched__pin_send_round(s, dag, p, n, max_tries, &seq);
    if (sched__pins_in_flight(p, n) == 0) break;
    sched__pin_collect(s, p, n);
  }
  s->pinning--;
  for (size_t i = 0; i < n && rc == 0; i++)
    if (p[i].state != PIN_DONE && p[i].state != PIN_FRESH) rc = SQ_ENOTFOUND;
  if (rc) {
    sched__pin_error(s, dag, p, n, err, errlen);
    for (size_t i = 0; i < n; i++)
      if (p[i].state == PIN_FRESH) sched__unpin(s, &p[i].at, p[i].fr->name);
  }
  free(p);
  return rc;
}

static bool sched__known_cb(void *arg, const char *name) {
  return sched__func_known((sched_t *)arg, name);
}

/* 0 when no DAG called name exists in the KVS; DAG_ALREADY_EXISTS or an error reply
 * otherwise (already sent). */
static int sched__dag_absent(sched_t *s, const char *name) {
  uint8_t *v = NULL;
  size_t len = 0;
  int rc = sched__kvs_get_lww(s, name, &v, &len);
  free(v);
  if (rc == SQ_EKEYDNE) return 0;
  if (rc == 0)
    sched__reply_error(s, SCHED_P_DCREATE, CLOUDBURST_ERROR__DAG_ALREADY_EXISTS,
                       "DAG '%s' already exists (registered through another scheduler)", name);
  else
    sched__reply_error(s, SCHED_P_DCREATE, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "cannot check whether DAG '%s' exists: the KVS read failed: %s", name,
                       sq_strerror(rc));
  return -1;
}

static bool sched__dag_text_ok(const Dag *dag) {
  bool ok = sched__utf8_valid(dag->name);
  for (size_t i = 0; ok && i < dag->n_functions; i++) ok = sched__utf8_valid(dag->functions[i]->name);
  for (size_t i = 0; ok && i < dag->n_connections; i++)
    ok = sched__utf8_valid(dag->connections[i]->source) &&
         sched__utf8_valid(dag->connections[i]->sink);
  for (size_t i = 0; ok && i < dag->n_colocated; i++) ok = sched__utf8_valid(dag->colocated[i]);
  return ok;
}

void sched__on_dag_create(sched_t *s, const uint8_t *b, size_t n) {
  const int P = SCHED_P_DCREATE;
  Dag *dag = NULL;
  char err[SCHED_ERRMSG_MAX];
  int code = 0;
  int rc = sq_proto_unpack(&dag__descriptor, NULL, b, n, s->cfg->max_message_bytes,
                           (ProtobufCMessage **)&dag);
  if (rc) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR, "malformed Dag message: %s",
                       sq_strerror(rc));
    goto out;
  }
  if (!sched__dag_text_ok(dag)) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "DAG and function names must be UTF-8 text");
    goto out;
  }
  if (dag->name[0] && sched__dag_find(s, dag->name)) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__DAG_ALREADY_EXISTS,
                       "DAG '%.200s' already exists (delete it first)", dag->name);
    goto out;
  }
  if (sched_dag_validate(dag, sched__known_cb, s, &code, err, sizeof err) != 0) {
    sched__reply_error(s, P, code, "%s", err);
    goto out;
  }
  if (sched__dag_absent(s, dag->name) != 0) goto out;
  if (sched__dag_pin(s, dag, err, sizeof err) != 0) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__NO_RESOURCES, "%s", err);
    goto out;
  }
  rc = sched__kvs_put_lww(s, dag->name, b, n);
  if (rc == 0) rc = sched__dag_add(s, dag);
  if (rc) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "DAG '%s' was not stored: %s", dag->name, sq_strerror(rc));
    goto out;
  }
  sq_log_info(s->log, "registered DAG %s (%zu functions)", dag->name, dag->n_functions);
  sched__reply_ok(s, P, dag->name);
  dag = NULL; /* the table owns it */
out:
  if (dag) dag__free_unpacked(dag, NULL);
}

static bool sched__used_elsewhere(sched_t *s, const char *dagname, const char *fname) {
  for (size_t i = 0; i < s->ndags; i++)
    if (strcmp(s->dags[i].name, dagname) != 0 && sched_dag_find(s->dags[i].dag, fname) >= 0)
      return true;
  return false;
}

static void sched__dag_unpin_all(sched_t *s, const Dag *dag) {
  sched_exec_id_t locs[64];
  for (size_t i = 0; i < dag->n_functions; i++) {
    const char *fn = dag->functions[i]->name;
    if (sched__used_elsewhere(s, dag->name, fn)) continue;
    size_t n = sched_policy_locations(s->policy, fn, locs, 64);
    for (size_t k = 0; k < n && k < 64; k++) sched__unpin(s, &locs[k], fn);
  }
}

void sched__on_dag_delete(sched_t *s, const uint8_t *b, size_t n) {
  const int P = SCHED_P_DDELETE;
  char name[SCHED_DAG_NAME_MAX + 1];
  if (n == 0 || n > SCHED_DAG_NAME_MAX || memchr(b, '\0', n)) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__NO_SUCH_DAG,
                       "delete needs a DAG name of 1 to %d bytes", SCHED_DAG_NAME_MAX);
    return;
  }
  memcpy(name, b, n);
  name[n] = '\0';
  sched_dagent_t *d = sched__dag_find(s, name);
  if (!d) {
    uint8_t *v = NULL;
    size_t len = 0;
    int rc = sched__kvs_get_lww(s, name, &v, &len);
    Dag *dag = NULL;
    if (rc == 0)
      (void)sq_proto_unpack(&dag__descriptor, NULL, v, len, s->cfg->max_message_bytes,
                            (ProtobufCMessage **)&dag);
    free(v);
    if (!dag || sched__dag_add(s, dag) != 0) {
      if (dag) dag__free_unpacked(dag, NULL);
      sched__reply_error(s, P, CLOUDBURST_ERROR__NO_SUCH_DAG, "no DAG named '%s'", name);
      return;
    }
    d = sched__dag_find(s, name);
  }
  sched__dag_unpin_all(s, d->dag);
  int rc = sched__kvs_put_lww(s, name, NULL, 0); /* tombstone */
  sched__dag_remove(s, name);
  if (rc) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "DAG '%s' was unpinned here but its tombstone was not written: %s",
                       name, sq_strerror(rc));
    return;
  }
  sq_log_info(s->log, "deleted DAG %s", name);
  sched__reply_ok(s, P, name);
}
