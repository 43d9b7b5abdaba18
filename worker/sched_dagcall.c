/* sched_dagcall: ports 5005 (call a DAG) and 5011 (continuations), PROTOCOL.md §3.6.
 *
 * A call: find the DAG (locally, else fetch it from the KVS: another scheduler may
 * have registered it) -> for each function pick an executor where it is pinned
 * (colocation, locality of its fixed arguments' references, load); a function pinned
 * nowhere alive is re-pinned first -> PUSH one DagSchedule per function to 4030+tid
 * (triggers = its predecessors in connection order, or ["BEGIN"]), sources first, each
 * followed at once by a BEGIN DagTrigger to its 4040+tid -- except a plain source on a
 * squall executor (SQUALL_FEATURE_BEGIN_ON_SCHEDULE), which starts on its schedule,
 * and a downstream function whose schedule is carried (DagSchedule.carried: it and
 * its first predecessor on executors with SQUALL_FEATURE_CARRY_SCHEDULE), which the
 * predecessor's executor sends inside its trigger (a chain gets one schedule) ->
 * reply output_key or the schedule id -- or, when the client set ack_failures_only
 * (with an output_key and a response_address, so that it knows what to wait for), no
 * reply at all unless the call is refused.
 * Nothing is sent unless every function has an executor.
 *
 * A continuation (from a sink executor) becomes a call of the next DAG under the same
 * schedule id, with the previous result appended to each source's arguments.
 */
#include "sched_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sched_dag.h"
#include "sq_error.h"
#include "sq_proto.h"

/* The DAG called name, fetched from the KVS when not known here. */
static const Dag *sched__dag_get(sched_t *s, const char *name) {
  sched_dagent_t *d = sched__dag_find(s, name);
  if (d) return d->dag;
  uint8_t *v = NULL;
  size_t len = 0;
  Dag *dag = NULL;
  int code;
  if (sched__kvs_get_lww(s, name, &v, &len) == 0)
    (void)sq_proto_unpack(&dag__descriptor, NULL, v, len, s->cfg->max_message_bytes,
                          (ProtobufCMessage **)&dag);
  free(v);
  if (!dag) return NULL;
  if (strcmp(dag->name, name) != 0 || sched_dag_validate(dag, NULL, NULL, &code, NULL, 0) ||
      sched__dag_add(s, dag) != 0) {
    dag__free_unpacked(dag, NULL);
    return NULL;
  }
  return dag;
}

static Arguments *sched__fixed_args(const DagCall *call, const char *fname) {
  for (size_t i = 0; i < call->n_function_args; i++)
    if (strcmp(call->function_args[i]->key, fname) == 0) return call->function_args[i]->value;
  return NULL;
}

/* Picks executors for every function into ex[]. 0 or SQ_ENOTFOUND (err filled). */
static int sched__place(sched_t *s, const Dag *dag, const DagCall *call, sched_exec_id_t *ex,
                        char *err, size_t errlen) {
  for (size_t i = 0; i < dag->n_functions; i++) {
    const char *fn = dag->functions[i]->name;
    Arguments *a = sched__fixed_args(call, fn);
    sched_pickle_ref_t refs[SCHED_MAX_REFS];
    size_t nrefs = a ? sched__refs(a->values, a->n_values, refs, SCHED_MAX_REFS) : 0;
    const char *prefer = NULL;
    for (size_t c = 0; c < dag->n_colocated && !prefer; c++) {
      int j = sched_dag_find(dag, dag->colocated[c]);
      if (j >= 0 && (size_t)j < i && strcmp(dag->colocated[c], fn) != 0) prefer = ex[j].ip;
    }
    int rc = sched_policy_pick_dag(s->policy, fn, refs, nrefs, prefer, &ex[i]);
    if (rc == SQ_ENOTFOUND && sched__dag_pin(s, dag, err, errlen) == 0)
      rc = sched_policy_pick_dag(s->policy, fn, refs, nrefs, prefer, &ex[i]);
    if (rc) {
      if (!err[0])
        snprintf(err, errlen, "function '%s' of DAG '%s' has no live executor", fn, dag->name);
      return SQ_ENOTFOUND;
    }
  }
  return 0;
}

typedef struct {
  DagSchedule__LocationsEntry *loc;
  DagSchedule__LocationsEntry **locp;
  char (*locstr)[SCHED_IP_MAX + 12];
  DagSchedule__ArgumentsEntry *arg;
  DagSchedule__ArgumentsEntry **argp;
  const char **preds;
  char **carried; /* DagSchedule.carried */
  bool *skip;     /* per function: its schedule is carried, not sent */
} sched_sbuf_t;

static void sched__sbuf_free(sched_sbuf_t *b) {
  free(b->loc);
  free(b->locp);
  free(b->locstr);
  free(b->arg);
  free(b->argp);
  free(b->preds);
  free(b->carried);
  free(b->skip);
}

/* Fills b->carried / b->skip: a downstream function's schedule travels with the trigger
 * of its first predecessor when both executors carry schedules
 * (SQUALL_FEATURE_CARRY_SCHEDULE) and that predecessor is not MULTIEXEC (it may run
 * more than once). Returns how many are carried. */
static size_t sched__carried(sched_t *s, const Dag *dag, const sched_exec_id_t *ex,
                             sched_sbuf_t *b) {
  const uint32_t F = SQUALL_FEATURE__SQUALL_FEATURE_CARRY_SCHEDULE;
  size_t n = 0;
  for (size_t i = 0; i < dag->n_functions; i++) {
    const char *fn = dag->functions[i]->name;
    if (sched_dag_predecessors(dag, fn, b->preds, 1) == 0) continue;
    int j = sched_dag_find(dag, b->preds[0]);
    if (j < 0 || dag->functions[j]->type == EXECUTION_TYPE__MULTIEXEC ||
        !(sched_policy_features(s->policy, &ex[i]) & F) ||
        !(sched_policy_features(s->policy, &ex[j]) & F))
      continue;
    b->skip[i] = true;
    b->carried[n++] = (char *)fn;
  }
  return n;
}

/* True when the source fn starts on its schedule alone at ex: a squall executor
 * (SQUALL_FEATURE_BEGIN_ON_SCHEDULE) and not MULTIEXEC, which waits for a real trigger.
 * Cloudburst executors get the BEGIN trigger PROTOCOL.md describes. */
static bool sched__begins_on_schedule(sched_t *s, const Dag *dag, size_t i,
                                      const sched_exec_id_t *ex) {
  return (sched_policy_features(s->policy, ex) &
          SQUALL_FEATURE__SQUALL_FEATURE_BEGIN_ON_SCHEDULE) &&
         dag->functions[i]->type != EXECUTION_TYPE__MULTIEXEC;
}

/* Sends ds for fn (triggers preds, or ["BEGIN"] and -- unless begin is false -- a BEGIN
 * trigger when np is 0). */
static int sched__send_one(sched_t *s, DagSchedule *ds, const char *fn, char **preds,
                           size_t np, bool begin_trigger, const sched_exec_id_t *ex) {
  static char *const begin[1] = {"BEGIN"};
  ds->target_function = (char *)fn;
  ds->n_triggers = np ? np : 1;
  ds->triggers = np ? preds : (char **)begin;
  int rc = sched__push(s, ex, SCHED_EXEC_SCHEDULE, &ds->base);
  if (rc || np || !begin_trigger) return rc;
  DagTrigger t = DAG_TRIGGER__INIT;
  t.id = ds->id;
  t.target_function = (char *)fn;
  t.source = "BEGIN";
  return sched__push(s, ex, SCHED_EXEC_TRIGGER, &t.base);
}

/* Sends the schedules and BEGIN triggers. */
static int sched__send_schedules(sched_t *s, const Dag *dag, const DagCall *call,
                                 const char *id, const sched_exec_id_t *ex) {
  size_t nf = dag->n_functions, na = call->n_function_args;
  sched_sbuf_t b = {calloc(nf, sizeof(*b.loc)), calloc(nf, sizeof(*b.locp)),
                    calloc(nf, sizeof(*b.locstr)), calloc(na + 1, sizeof(*b.arg)),
                    calloc(na + 1, sizeof(*b.argp)), calloc(nf + 1, sizeof(char *)),
                    calloc(nf + 1, sizeof(char *)), calloc(nf + 1, sizeof(bool))};
  int rc = 0;
  if (!b.loc || !b.locp || !b.locstr || !b.arg || !b.argp || !b.preds || !b.carried ||
      !b.skip) {
    rc = -ENOMEM;
    goto out;
  }
  DagSchedule ds = DAG_SCHEDULE__INIT;
  ds.id = (char *)id;
  ds.dag = (Dag *)dag;
  ds.consistency = call->consistency;
  for (size_t i = 0; i < nf; i++) {
    DagSchedule__LocationsEntry e = DAG_SCHEDULE__LOCATIONS_ENTRY__INIT;
    b.loc[i] = e;
    sched_exec_id_format(&ex[i], b.locstr[i], sizeof b.locstr[i]);
    b.loc[i].key = dag->functions[i]->name;
    b.loc[i].value = b.locstr[i];
    b.locp[i] = &b.loc[i];
  }
  for (size_t i = 0; i < na; i++) {
    DagSchedule__ArgumentsEntry e = DAG_SCHEDULE__ARGUMENTS_ENTRY__INIT;
    b.arg[i] = e;
    b.arg[i].key = call->function_args[i]->key;
    b.arg[i].value = call->function_args[i]->value;
    b.argp[i] = &b.arg[i];
  }
  ds.n_locations = nf;
  ds.locations = b.locp;
  ds.n_arguments = na;
  ds.arguments = b.argp;
  ds.response_address = call->response_address;
  ds.output_key = call->output_key;
  ds.client_id = call->client_id;
  ds.start_time = sched__now_s();
  ds.continuation = call->continuation;
  ds.timeout_ms = call->timeout_ms;
  ds.n_carried = sched__carried(s, dag, ex, &b);
  ds.carried = b.carried;
  /* Sources first, each schedule followed at once by its BEGIN trigger: the work that
   * can start leaves first; downstream schedules travel while the sources run (or
   * with their first predecessor's trigger: then the scheduler sends none). */
  for (int pass = 0; pass < 2 && rc == 0; pass++) {
    for (size_t i = 0; i < nf && rc == 0; i++) {
      const char *fn = dag->functions[i]->name;
      size_t np = sched_dag_predecessors(dag, fn, b.preds, nf);
      if ((np == 0) != (pass == 0) || b.skip[i]) continue;
      bool trigger = !sched__begins_on_schedule(s, dag, i, &ex[i]);
      rc = sched__send_one(s, &ds, fn, np ? (char **)b.preds : NULL, np, trigger, &ex[i]);
    }
  }
out:
  sched__sbuf_free(&b);
  return rc;
}

int sched__dag_run(sched_t *s, const DagCall *call, const char *id, int tries,
                   char id_out[64], int *cb_error, char *err, size_t errlen) {
  err[0] = '\0';
  const Dag *dag = call->name[0] ? sched__dag_get(s, call->name) : NULL;
  if (!dag) {
    *cb_error = CLOUDBURST_ERROR__NO_SUCH_DAG;
    snprintf(err, errlen, "no DAG named '%.200s' (register it first)", call->name);
    return SQ_ENOTFOUND;
  }
  sched_exec_id_t *ex = calloc(dag->n_functions, sizeof(*ex));
  int rc = ex ? 0 : -ENOMEM;
  char uuid[37];
  if (!id || !id[0]) {
    sched__uuid4(uuid);
    id = uuid;
  }
  snprintf(id_out, 64, "%s", id);
  if (rc == 0) rc = sched__place(s, dag, call, ex, err, errlen);
  if (rc == 0) rc = sched__send_schedules(s, dag, call, id_out, ex);
  if (rc == 0) sched__track_dag(s, id_out, call, ex, dag->n_functions, tries);
  if (rc) {
    *cb_error = CLOUDBURST_ERROR__NO_RESOURCES;
    if (!err[0]) snprintf(err, errlen, "DAG '%s' could not be scheduled: %s", dag->name,
                          sq_strerror(rc));
  }
  free(ex);
  return rc;
}

void sched__on_dag_call(sched_t *s, const uint8_t *b, size_t n) {
  const int P = SCHED_P_DCALL;
  DagCall *call = NULL;
  char id[64], err[SCHED_ERRMSG_MAX];
  int code = 0;
  int rc = sq_proto_unpack(&dag_call__descriptor, NULL, b, n, s->cfg->max_message_bytes,
                           (ProtobufCMessage **)&call);
  if (rc) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "malformed DagCall message: %s", sq_strerror(rc));
    return;
  }
  if (!sched__utf8_valid(call->output_key)) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR, "output_key must be UTF-8");
    dag_call__free_unpacked(call, NULL);
    return;
  }
  rc = sched__dag_run(s, call, NULL, 1, id, &code, err, sizeof err);
  if (rc) sched__reply_error(s, P, code, "%s", err);
  else if (call->ack_failures_only && call->output_key[0] && call->response_address[0])
    sched__reply_none(s); /* the client matches the result by its own output_key */
  else sched__reply_ok(s, P, call->output_key[0] ? call->output_key : id);
  dag_call__free_unpacked(call, NULL);
}

/* Runs cont->call as cont->name with cont->result appended to every source's args. */
static int sched__continue(sched_t *s, const Continuation *cont, Value *result) {
  DagCall call = *cont->call;
  call.name = cont->name;
  const Dag *dag = sched__dag_get(s, cont->name);
  if (!dag) return SQ_ENOTFOUND;
  size_t cap = call.n_function_args + dag->n_functions;
  DagCall__FunctionArgsEntry *ents = calloc(cap, sizeof(*ents));
  DagCall__FunctionArgsEntry **entp = calloc(cap, sizeof(*entp));
  Arguments *args = calloc(cap, sizeof(*args));
  Value ***vals = calloc(cap, sizeof(*vals));
  int rc = (ents && entp && args && vals) ? 0 : -ENOMEM;
  size_t ne = 0;
  for (size_t i = 0; rc == 0 && i < cap; i++) {
    const char *key = i < call.n_function_args ? call.function_args[i]->key
                                               : dag->functions[i - call.n_function_args]->name;
    if (i >= call.n_function_args && sched__fixed_args(&call, key)) continue;
    Arguments *old = i < call.n_function_args ? call.function_args[i]->value : NULL;
    size_t nold = old ? old->n_values : 0;
    bool add = sched_dag_find(dag, key) >= 0 && sched_dag_is_source(dag, key);
    if (i >= call.n_function_args && !add) continue;
    vals[ne] = calloc(nold + 1, sizeof(Value *));
    if (!vals[ne]) { rc = -ENOMEM; break; }
    if (nold) memcpy(vals[ne], old->values, nold * sizeof(Value *));
    if (add) vals[ne][nold++] = result;
    Arguments ai = ARGUMENTS__INIT;
    DagCall__FunctionArgsEntry ei = DAG_CALL__FUNCTION_ARGS_ENTRY__INIT;
    args[ne] = ai;
    args[ne].n_values = nold;
    args[ne].values = vals[ne];
    ents[ne] = ei;
    ents[ne].key = (char *)key;
    ents[ne].value = &args[ne];
    entp[ne] = &ents[ne];
    ne++;
  }
  char id[64], err[SCHED_ERRMSG_MAX];
  int code;
  call.n_function_args = ne;
  call.function_args = entp;
  if (rc == 0) rc = sched__dag_run(s, &call, cont->id, 1, id, &code, err, sizeof err);
  if (rc) sq_log_warn(s->log, "continuation to DAG %s failed: %s", cont->name, sq_strerror(rc));
  for (size_t i = 0; vals && i < ne; i++) free(vals[i]);
  free(vals);
  free(args);
  free(entp);
  free(ents);
  return rc;
}

void sched__on_continuation(sched_t *s, const uint8_t *b, size_t n) {
  Continuation *cont = NULL;
  Value *result = NULL;
  if (sq_proto_unpack(&continuation__descriptor, NULL, b, n, s->cfg->max_message_bytes,
                      (ProtobufCMessage **)&cont) != 0)
    return;
  if (cont->call && cont->name[0] &&
      sq_proto_unpack(&value__descriptor, NULL, cont->result.data, cont->result.len,
                      s->cfg->max_message_bytes, (ProtobufCMessage **)&result) == 0)
    (void)sched__continue(s, cont, result);
  else
    sq_log_warn(s->log, "continuation dropped: no call, no DAG name or a malformed result");
  if (result) value__free_unpacked(result, NULL);
  continuation__free_unpacked(cont, NULL);
}
