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

/* Waits for one pin ack of fname from ex (acks name the function in response_id and
 * squall executors name themselves in `executor`; stale acks of earlier, timed-out pins
 * are skipped). 1 = accepted, 0 = refused or silent. */
static int sched__pin_wait(sched_t *s, const char *fname, const sched_exec_id_t *ex) {
  char who[SCHED_IP_MAX + 12];
  sched_exec_id_format(ex, who, sizeof who);
  uint64_t deadline = sched__now_ms() + (uint64_t)s->cfg->pin_timeout_ms;
  for (;;) {
    uint64_t now = sched__now_ms();
    if (now >= deadline) return 0;
    zmq_pollitem_t it[2] = {{s->pin_pull, 0, ZMQ_POLLIN, 0}, {s->status_pull, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(it, 2, (long)(deadline - now)) < 0 && zmq_errno() != EINTR) return 0;
    if (it[1].revents & ZMQ_POLLIN) sched__drain_status(s);
    if (!(it[0].revents & ZMQ_POLLIN)) continue;
    GenericResponse *r = NULL;
    if (sq_zmq_recv_pb(s->pin_pull, &generic_response__descriptor, 65536, NULL, ZMQ_DONTWAIT,
                       (ProtobufCMessage **)&r) != 0)
      continue;
    bool mine = (!r->response_id[0] || strcmp(r->response_id, fname) == 0) &&
                (!r->executor[0] || strcmp(r->executor, who) == 0);
    int ok = r->success ? 1 : 0;
    generic_response__free_unpacked(r, NULL);
    if (mine) return ok;
  }
}

static void sched__pin_drain(sched_t *s) {
  for (int i = 0; i < 256; i++) {
    zmq_msg_t m;
    if (sq_zmq_recv_frame(s->pin_pull, 65536, ZMQ_DONTWAIT, &m) != 0) return;
    zmq_msg_close(&m);
  }
}

/* IP of a colocated function of dag already pinned somewhere, or NULL. */
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

/* Pins one function. 0 (pinned; *out where, *fresh whether this call pinned it) or
 * SQ_ENOTFOUND. */
static int sched__pin_one(sched_t *s, const Dag *dag, const Dag__FunctionReference *fr,
                          sched_exec_id_t *out, bool *fresh) {
  sched_exec_id_t tried[SCHED_MAX_TRIES * 4], tmp;
  size_t ntried = 0, max = (size_t)s->cfg->pin_tries;
  *fresh = false;
  if (sched_policy_locations(s->policy, fr->name, out, 1) > 0) return 0;
  if (max > sizeof tried / sizeof tried[0]) max = sizeof tried / sizeof tried[0];
  const char *prefer = sched__coloc_ip(s, dag, fr->name, &tmp);
  while (ntried < max) {
    sched_exec_id_t ex;
    if (sched_policy_pick_pin(s->policy, fr->name, fr->gpu, prefer, tried, ntried, &ex))
      break;
    tried[ntried++] = ex;
    PinFunction pf = PIN_FUNCTION__INIT;
    pf.name = fr->name;
    pf.response_address = s->cfg->public_ip;
    pf.batching = fr->batching;
    sched__pin_drain(s);
    if (sched__push(s, &ex, SCHED_EXEC_PIN, &pf.base) != 0) continue;
    if (sched__pin_wait(s, fr->name, &ex) && sched_policy_pin_add(s->policy, &ex, fr->name) == 0) {
      *out = ex;
      *fresh = true;
      return 0;
    }
    sq_log_warn(s->log, "executor %s:%u did not pin %s", ex.ip, ex.tid, fr->name);
  }
  return SQ_ENOTFOUND;
}

static void sched__unpin(sched_t *s, const sched_exec_id_t *ex, const char *fname) {
  (void)sched__push_bytes(s, ex, SCHED_EXEC_UNPIN, fname, strlen(fname));
  (void)sched_policy_pin_remove(s->policy, ex, fname);
}

int sched__dag_pin(sched_t *s, const Dag *dag, char *err, size_t errlen) {
  sched_exec_id_t *made = calloc(dag->n_functions ? dag->n_functions : 1, sizeof(*made));
  const char **made_fn = calloc(dag->n_functions ? dag->n_functions : 1, sizeof(char *));
  size_t nmade = 0;
  int rc = (made && made_fn) ? 0 : -ENOMEM;
  for (size_t i = 0; rc == 0 && i < dag->n_functions; i++) {
    sched_exec_id_t ex;
    bool fresh = false;
    rc = sched__pin_one(s, dag, dag->functions[i], &ex, &fresh);
    if (rc && sched_policy_count(s->policy) == 0) {
      snprintf(err, errlen, "function '%s' of DAG '%s' could not be pinned: no executor "
               "has reported status to this scheduler", dag->functions[i]->name, dag->name);
    } else if (rc) {
      snprintf(err, errlen, "function '%s' of DAG '%s' could not be pinned: %zu live "
               "executor(s), none accepted within %ld ms x %ld tries",
               dag->functions[i]->name, dag->name, sched_policy_count(s->policy),
               (long)s->cfg->pin_timeout_ms, (long)s->cfg->pin_tries);
    } else if (fresh) {
      made[nmade] = ex;
      made_fn[nmade++] = dag->functions[i]->name;
    }
  }
  if (rc == -ENOMEM) snprintf(err, errlen, "out of memory while pinning");
  for (size_t i = 0; rc && i < nmade; i++) sched__unpin(s, &made[i], made_fn[i]);
  free(made);
  free(made_fn);
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
