/* test_exec_dag: the executor's DAG state machine (worker/exec_dag.c).
 *
 * Pins: fan-in waits for every listed trigger; arguments are the fixed ones followed by
 * each trigger's values in the order of the DAG's connections, not arrival; a trigger
 * before its schedule is kept; a finished (id, function) drops repeated triggers and
 * schedules; MULTIEXEC runs on one trigger, goes back to waiting on an invalid result
 * and runs again on the next; entries expire after the TTL (not while running); the
 * table evicts its oldest entry when full; malformed messages are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cloudburst.pb-c.h"
#include "exec_dag.h"
#include "sq_error.h"
#include "sq_proto.h"

/* Round-trips a stack-built message through pack/unpack: the table frees what it owns
 * with protobuf_c_message_free_unpacked, so it must be a heap-unpacked message. */
static ProtobufCMessage *heap(const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  assert_non_null(buf);
  protobuf_c_message_pack(m, buf);
  ProtobufCMessage *out = NULL;
  assert_int_equal(sq_proto_unpack(m->descriptor, NULL, buf, n, 1 << 20, &out), 0);
  free(buf);
  return out;
}


/* DagSchedule for fn with the given upstream triggers and connections src->fn; the
 * fixed argument of fn is one Value "fixed". */
static DagSchedule *schedule(const char *id, const char *fn, const char **ups, size_t nups,
                             int multiexec) {
  Dag dag = DAG__INIT;
  Dag__FunctionReference ref = DAG__FUNCTION_REFERENCE__INIT, *refs[1] = {&ref};
  ref.name = (char *)fn;
  ref.type = multiexec ? EXECUTION_TYPE__MULTIEXEC : EXECUTION_TYPE__REGULAR;
  dag.functions = refs;
  dag.n_functions = 1;
  Dag__Link links[8], *lp[8];
  for (size_t i = 0; i < nups; i++) {
    dag__link__init(&links[i]);
    links[i].source = (char *)ups[i];
    links[i].sink = (char *)fn;
    lp[i] = &links[i];
  }
  dag.connections = lp;
  dag.n_connections = nups;
  DagSchedule s = DAG_SCHEDULE__INIT;
  s.id = (char *)id;
  s.target_function = (char *)fn;
  s.dag = &dag;
  const char *begin[1] = {"BEGIN"};
  s.triggers = (char **)(nups ? ups : begin);
  s.n_triggers = nups ? nups : 1;
  Value fixed = VALUE__INIT, *fv[1] = {&fixed};
  fixed.body.data = (uint8_t *)"fixed";
  fixed.body.len = 5;
  Arguments args = ARGUMENTS__INIT;
  args.values = fv;
  args.n_values = 1;
  DagSchedule__ArgumentsEntry e = DAG_SCHEDULE__ARGUMENTS_ENTRY__INIT, *ep[1] = {&e};
  e.key = (char *)fn;
  e.value = &args;
  s.arguments = ep;
  s.n_arguments = 1;
  return (DagSchedule *)heap(&s.base);
}

static DagTrigger *trigger(const char *id, const char *fn, const char *source,
                           const char *payload) {
  DagTrigger t = DAG_TRIGGER__INIT;
  t.id = (char *)id;
  t.target_function = (char *)fn;
  t.source = (char *)source;
  Value v = VALUE__INIT, *vp[1] = {&v};
  Arguments a = ARGUMENTS__INIT;
  if (payload) {
    v.body.data = (uint8_t *)payload;
    v.body.len = strlen(payload);
    a.values = vp;
    a.n_values = 1;
    t.arguments = &a;
  }
  return (DagTrigger *)heap(&t.base);
}

static void assert_arg(const exec_job_t *job, size_t i, const char *want) {
  assert_true(i < job->nargs);
  assert_int_equal(job->args[i]->body.len, strlen(want));
  assert_memory_equal(job->args[i]->body.data, want, strlen(want));
}

static void test_fan_in_waits_for_all_and_orders_by_connections(void **state) {
  (void)state;
  exec_dag_t *d;
  exec_job_t *job = NULL;
  assert_int_equal(exec_dag_create(0, 0, &d), 0);
  const char *ups[3] = {"a", "b", "c"};
  assert_int_equal(exec_dag_schedule(d, schedule("s1", "j", ups, 3, 0), 0, &job), 0);
  assert_null(job);
  assert_int_equal(exec_dag_trigger(d, trigger("s1", "j", "c", "C"), 1, &job), 0);
  assert_null(job);
  assert_int_equal(exec_dag_trigger(d, trigger("s1", "j", "a", "A"), 2, &job), 0);
  assert_null(job);
  assert_int_equal(exec_dag_trigger(d, trigger("s1", "j", "b", "B"), 3, &job), 0);
  assert_non_null(job);
  assert_int_equal(job->kind, EXEC_JOB_DAG);
  assert_string_equal(job->fn, "j");
  assert_int_equal(job->nargs, 4);
  assert_arg(job, 0, "fixed");
  assert_arg(job, 1, "A");
  assert_arg(job, 2, "B");
  assert_arg(job, 3, "C");
  exec_job_t *again = NULL;
  assert_int_equal(exec_dag_done(d, job, 4, &again), 0);
  assert_null(again);
  exec_dag_destroy(d);
}

static void test_trigger_before_schedule_is_kept(void **state) {
  (void)state;
  exec_dag_t *d;
  exec_job_t *job = NULL;
  assert_int_equal(exec_dag_create(0, 0, &d), 0);
  assert_int_equal(exec_dag_trigger(d, trigger("s2", "f", "BEGIN", NULL), 0, &job), 0);
  assert_null(job);
  assert_int_equal(exec_dag_schedule(d, schedule("s2", "f", NULL, 0, 0), 1, &job), 0);
  assert_non_null(job);
  assert_int_equal(job->nargs, 1);
  assert_arg(job, 0, "fixed");
  exec_job_t *again = NULL;
  assert_int_equal(exec_dag_done(d, job, 2, &again), 0);
  exec_dag_destroy(d);
}

static void test_finished_execution_drops_duplicates(void **state) {
  (void)state;
  exec_dag_t *d;
  exec_job_t *job = NULL, *again = NULL;
  assert_int_equal(exec_dag_create(0, 0, &d), 0);
  assert_int_equal(exec_dag_schedule(d, schedule("s3", "f", NULL, 0, 0), 0, &job), 0);
  assert_int_equal(exec_dag_trigger(d, trigger("s3", "f", "BEGIN", NULL), 0, &job), 0);
  assert_non_null(job);
  /* a duplicate while running a regular function is dropped */
  assert_int_equal(exec_dag_trigger(d, trigger("s3", "f", "BEGIN", NULL), 0, &again), 0);
  assert_null(again);
  assert_int_equal(exec_dag_done(d, job, 1, &again), 0);
  assert_null(again);
  uint64_t dropped = exec_dag_stats(d).dropped;
  assert_int_equal(exec_dag_trigger(d, trigger("s3", "f", "BEGIN", NULL), 2, &job), 0);
  assert_null(job);
  assert_int_equal(exec_dag_schedule(d, schedule("s3", "f", NULL, 0, 0), 2, &job), 0);
  assert_null(job);
  assert_int_equal(exec_dag_stats(d).dropped, dropped + 2);
  assert_int_equal(exec_dag_stats(d).started, 1);
  exec_dag_destroy(d);
}

static void test_multiexec_reruns_after_invalid_result(void **state) {
  (void)state;
  exec_dag_t *d;
  exec_job_t *job = NULL, *again = NULL;
  const char *ups[2] = {"a", "b"};
  assert_int_equal(exec_dag_create(0, 0, &d), 0);
  assert_int_equal(exec_dag_schedule(d, schedule("s4", "m", ups, 2, 1), 0, &job), 0);
  assert_int_equal(exec_dag_trigger(d, trigger("s4", "m", "a", "A"), 0, &job), 0);
  assert_non_null(job); /* one trigger suffices */
  assert_int_equal(job->nargs, 2);
  assert_arg(job, 1, "A");
  /* b arrives while m runs: kept for a possible re-run */
  assert_int_equal(exec_dag_trigger(d, trigger("s4", "m", "b", "B"), 1, &again), 0);
  assert_null(again);
  job->valid = false; /* "no result" */
  assert_int_equal(exec_dag_done(d, job, 2, &again), 0);
  assert_non_null(again); /* ready again at once with b */
  assert_int_equal(again->nargs, 2);
  assert_arg(again, 1, "B");
  exec_job_t *none = NULL;
  assert_int_equal(exec_dag_done(d, again, 3, &none), 0);
  assert_null(none);
  assert_int_equal(exec_dag_trigger(d, trigger("s4", "m", "a", "A2"), 4, &none), 0);
  assert_null(none); /* finished: a valid result was produced */
  exec_dag_destroy(d);
}

static void test_entries_expire_but_not_while_running(void **state) {
  (void)state;
  exec_dag_t *d;
  exec_job_t *job = NULL, *none = NULL;
  assert_int_equal(exec_dag_create(0, 1000, &d), 0);
  const char *ups[1] = {"a"};
  assert_int_equal(exec_dag_schedule(d, schedule("old", "f", ups, 1, 0), 0, &none), 0);
  assert_int_equal(exec_dag_schedule(d, schedule("run", "g", NULL, 0, 0), 0, &none), 0);
  assert_int_equal(exec_dag_trigger(d, trigger("run", "g", "BEGIN", NULL), 0, &job), 0);
  assert_non_null(job);
  assert_int_equal(exec_dag_stats(d).entries, 2);
  exec_dag_expire(d, 999);
  assert_int_equal(exec_dag_stats(d).entries, 2);
  exec_dag_expire(d, 1000);
  assert_int_equal(exec_dag_stats(d).entries, 1); /* the running one stays */
  assert_int_equal(exec_dag_stats(d).expired, 1);
  /* the expired schedule is gone: its trigger alone does not run anything */
  assert_int_equal(exec_dag_trigger(d, trigger("old", "f", "a", "A"), 1001, &none), 0);
  assert_null(none);
  assert_int_equal(exec_dag_done(d, job, 1002, &none), 0);
  exec_dag_expire(d, 5000);
  assert_int_equal(exec_dag_stats(d).entries, 0);
  exec_dag_destroy(d);
}

static void test_full_table_evicts_oldest(void **state) {
  (void)state;
  exec_dag_t *d;
  exec_job_t *none = NULL;
  const char *ups[1] = {"a"};
  assert_int_equal(exec_dag_create(3, 0, &d), 0);
  char id[16];
  for (int i = 0; i < 5; i++) {
    snprintf(id, sizeof(id), "id%d", i);
    assert_int_equal(exec_dag_schedule(d, schedule(id, "f", ups, 1, 0), i, &none), 0);
  }
  assert_int_equal(exec_dag_stats(d).entries, 3);
  assert_int_equal(exec_dag_stats(d).evicted, 2);
  /* id0 was evicted; id4 is still waiting */
  assert_int_equal(exec_dag_trigger(d, trigger("id4", "f", "a", "A"), 6, &none), 0);
  assert_non_null(none);
  exec_job_t *n2 = NULL;
  assert_int_equal(exec_dag_done(d, none, 7, &n2), 0);
  exec_dag_destroy(d);
}

static void test_messages_without_id_are_refused(void **state) {
  (void)state;
  exec_dag_t *d;
  exec_job_t *none = NULL;
  assert_int_equal(exec_dag_create(0, 0, &d), 0);
  assert_int_equal(exec_dag_trigger(d, trigger("", "f", "a", NULL), 0, &none), SQ_EINVAL);
  assert_int_equal(exec_dag_schedule(d, schedule("x", "", NULL, 0, 0), 0, &none), SQ_EINVAL);
  assert_null(none);
  assert_int_equal(exec_dag_stats(d).entries, 0);
  exec_dag_destroy(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fan_in_waits_for_all_and_orders_by_connections),
      cmocka_unit_test(test_trigger_before_schedule_is_kept),
      cmocka_unit_test(test_finished_execution_drops_duplicates),
      cmocka_unit_test(test_multiexec_reruns_after_invalid_result),
      cmocka_unit_test(test_entries_expire_but_not_while_running),
      cmocka_unit_test(test_full_table_evicts_oldest),
      cmocka_unit_test(test_messages_without_id_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
