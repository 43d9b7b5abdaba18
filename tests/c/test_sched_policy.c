/* Tests of sched_policy: liveness (status, running=false, silence past the deadline),
 * pinning bookkeeping, and the pick rules (unpinned first, locality, load spreading,
 * colocation, exclusion, pin placement by fewest pins). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sched_policy.h"
#include "sq_error.h"

static void status(sched_policy_t *p, const char *ip, uint32_t tid, const char *fn,
                   bool running, uint64_t now) {
  ThreadStatus st = THREAD_STATUS__INIT;
  char *fns[1] = {(char *)fn};
  st.ip = (char *)ip;
  st.tid = tid;
  st.running = running;
  st.functions = fns;
  st.n_functions = fn ? 1 : 0;
  assert_int_equal(sched_policy_status(p, &st, now, NULL), 0);
}

static sched_policy_t *mk(void) {
  sched_policy_options_t o = {.deadline_ms = 3000};
  sched_policy_t *p = NULL;
  assert_int_equal(sched_policy_create(&o, &p), 0);
  return p;
}

static void test_silent_executor_is_dropped_after_the_deadline(void **state) {
  (void)state;
  sched_policy_t *p = mk();
  status(p, "10.0.0.1", 0, NULL, true, 1000);
  status(p, "10.0.0.2", 0, NULL, true, 1000);
  status(p, "10.0.0.2", 0, NULL, true, 3500); /* .2 keeps talking */
  sched_exec_id_t gone[4];
  assert_int_equal(sched_policy_expire(p, 4000, gone, 4), 0);
  assert_int_equal(sched_policy_expire(p, 4001, gone, 4), 1);
  assert_string_equal(gone[0].ip, "10.0.0.1");
  assert_int_equal(sched_policy_count(p), 1);
  sched_exec_id_t pick;
  for (int i = 0; i < 5; i++) {
    assert_int_equal(sched_policy_pick_call(p, NULL, 0, NULL, &pick), 0);
    assert_string_equal(pick.ip, "10.0.0.2");
  }
  sched_policy_destroy(p);
}

static void test_running_false_drops_at_once(void **state) {
  (void)state;
  sched_policy_t *p = mk();
  status(p, "10.0.0.1", 2, "f", true, 0);
  sched_exec_id_t id = {"10.0.0.1", 2}, pick;
  assert_true(sched_policy_alive(p, &id));
  ThreadStatus st = THREAD_STATUS__INIT;
  st.ip = "10.0.0.1";
  st.tid = 2;
  st.running = false;
  bool dropped = false;
  assert_int_equal(sched_policy_status(p, &st, 1, &dropped), 0);
  assert_true(dropped);
  assert_false(sched_policy_alive(p, &id));
  assert_int_equal(sched_policy_pick_call(p, NULL, 0, NULL, &pick), SQ_ENOTFOUND);
  assert_int_equal(sched_policy_pick_dag(p, "f", NULL, 0, NULL, &pick), SQ_ENOTFOUND);
  sched_policy_destroy(p);
}

/* The scheduler skips BEGIN triggers only for executors whose latest status says so. */
static void test_features_follow_the_latest_status_and_vanish_with_the_executor(void **state) {
  (void)state;
  sched_policy_t *p = mk();
  sched_exec_id_t squall = {"10.0.0.1", 0}, cloudburst = {"10.0.0.2", 0};
  ThreadStatus st = THREAD_STATUS__INIT;
  st.ip = "10.0.0.1";
  st.running = true;
  st.squall_features = SQUALL_FEATURE__SQUALL_FEATURE_BEGIN_ON_SCHEDULE;
  assert_int_equal(sched_policy_status(p, &st, 0, NULL), 0);
  status(p, "10.0.0.2", 0, NULL, true, 0); /* a Cloudburst executor: no features */
  assert_int_equal(sched_policy_features(p, &squall),
                   SQUALL_FEATURE__SQUALL_FEATURE_BEGIN_ON_SCHEDULE);
  assert_int_equal(sched_policy_features(p, &cloudburst), 0);
  status(p, "10.0.0.1", 0, NULL, true, 1); /* a restarted executor without them */
  assert_int_equal(sched_policy_features(p, &squall), 0);
  status(p, "10.0.0.1", 0, NULL, false, 2);
  assert_int_equal(sched_policy_features(p, &squall), 0); /* gone */
  sched_policy_destroy(p);
}

static void test_one_shot_prefers_unpinned_then_falls_back(void **state) {
  (void)state;
  sched_policy_t *p = mk();
  status(p, "a", 0, "f", true, 0);
  status(p, "b", 0, NULL, true, 0);
  sched_exec_id_t pick;
  for (int i = 0; i < 4; i++) {
    assert_int_equal(sched_policy_pick_call(p, NULL, 0, NULL, &pick), 0);
    assert_string_equal(pick.ip, "b");
  }
  sched_exec_id_t ex = {"b", 0};
  assert_int_equal(sched_policy_pick_call(p, NULL, 0, &ex, &pick), 0);
  assert_string_equal(pick.ip, "a");
  sched_policy_destroy(p);
}

static void test_locality_wins_over_load(void **state) {
  (void)state;
  sched_policy_t *p = mk();
  status(p, "a", 0, NULL, true, 0);
  status(p, "b", 0, NULL, true, 0);
  const char *keys[] = {"zeta", "hot", "alpha"};
  assert_int_equal(sched_policy_cache_keys(p, "b", keys, 3), 0);
  sched_pickle_ref_t refs[1] = {{"hot", 3, true}};
  sched_exec_id_t pick;
  for (int i = 0; i < 6; i++) {
    assert_int_equal(sched_policy_pick_call(p, refs, 1, NULL, &pick), 0);
    assert_string_equal(pick.ip, "b");
  }
  /* without references the load counts: a, idle, gets the next calls */
  assert_int_equal(sched_policy_pick_call(p, NULL, 0, NULL, &pick), 0);
  assert_string_equal(pick.ip, "a");
  /* a new report replaces the old set */
  assert_int_equal(sched_policy_cache_keys(p, "b", keys, 1), 0);
  assert_int_equal(sched_policy_cache_keys(p, "a", keys + 1, 1), 0);
  assert_int_equal(sched_policy_pick_call(p, refs, 1, NULL, &pick), 0);
  assert_string_equal(pick.ip, "a");
  sched_policy_destroy(p);
}

static void test_equal_executors_share_calls(void **state) {
  (void)state;
  sched_policy_t *p = mk();
  status(p, "n", 0, NULL, true, 0);
  status(p, "n", 1, NULL, true, 0);
  status(p, "n", 2, NULL, true, 0);
  int count[3] = {0};
  sched_exec_id_t pick;
  for (int i = 0; i < 30; i++) {
    assert_int_equal(sched_policy_pick_call(p, NULL, 0, NULL, &pick), 0);
    count[pick.tid]++;
  }
  assert_int_equal(count[0], 10);
  assert_int_equal(count[1], 10);
  assert_int_equal(count[2], 10);
  sched_policy_destroy(p);
}

static void test_dag_picks_only_where_pinned_and_honours_colocation(void **state) {
  (void)state;
  sched_policy_t *p = mk();
  status(p, "a", 0, NULL, true, 0);
  status(p, "b", 0, NULL, true, 0);
  status(p, "b", 1, NULL, true, 0);
  sched_exec_id_t a0 = {"a", 0}, b1 = {"b", 1}, pick, locs[4];
  assert_int_equal(sched_policy_pick_dag(p, "g", NULL, 0, NULL, &pick), SQ_ENOTFOUND);
  assert_int_equal(sched_policy_pin_add(p, &a0, "g"), 0);
  assert_int_equal(sched_policy_pin_add(p, &b1, "g"), 0);
  assert_int_equal(sched_policy_locations(p, "g", locs, 4), 2);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(sched_policy_pick_dag(p, "g", NULL, 0, "b", &pick), 0);
    assert_string_equal(pick.ip, "b");
    assert_int_equal(pick.tid, 1);
  }
  assert_int_equal(sched_policy_pin_remove(p, &b1, "g"), 0);
  assert_int_equal(sched_policy_pick_dag(p, "g", NULL, 0, "b", &pick), 0);
  assert_string_equal(pick.ip, "a");
  /* a status replaces the pinned set: a0 now reports nothing */
  status(p, "a", 0, NULL, true, 1);
  assert_int_equal(sched_policy_pick_dag(p, "g", NULL, 0, NULL, &pick), SQ_ENOTFOUND);
  sched_policy_destroy(p);
}

static void test_pin_goes_to_fewest_pins_never_twice_never_excluded(void **state) {
  (void)state;
  sched_policy_t *p = mk();
  status(p, "a", 0, "x", true, 0);
  status(p, "b", 0, NULL, true, 0);
  sched_exec_id_t pick, b0 = {"b", 0};
  assert_int_equal(sched_policy_pick_pin(p, "f", false, NULL, NULL, 0, &pick), 0);
  assert_string_equal(pick.ip, "b");
  assert_int_equal(sched_policy_pick_pin(p, "f", false, NULL, &b0, 1, &pick), 0);
  assert_string_equal(pick.ip, "a");
  assert_int_equal(sched_policy_pin_add(p, &b0, "f"), 0);
  assert_int_equal(sched_policy_pick_pin(p, "f", false, NULL, NULL, 0, &pick), 0);
  assert_string_equal(pick.ip, "a"); /* b already holds f */
  assert_int_equal(sched_policy_pick_pin(p, "f", true, NULL, NULL, 0, &pick), SQ_ENOTFOUND);
  sched_policy_destroy(p);
}

static void test_bad_status_and_ids_are_refused(void **state) {
  (void)state;
  sched_policy_t *p = mk();
  ThreadStatus st = THREAD_STATUS__INIT;
  st.ip = "";
  st.running = true;
  assert_int_equal(sched_policy_status(p, &st, 0, NULL), SQ_EINVAL);
  char longip[100];
  memset(longip, 'x', sizeof longip - 1);
  longip[sizeof longip - 1] = '\0';
  st.ip = longip;
  assert_int_equal(sched_policy_status(p, &st, 0, NULL), SQ_EINVAL);
  assert_int_equal(sched_policy_count(p), 0);
  sched_exec_id_t id;
  char buf[96];
  assert_int_equal(sched_exec_id_parse("127.0.0.1:7", &id), 0);
  assert_string_equal(id.ip, "127.0.0.1");
  assert_int_equal(id.tid, 7);
  sched_exec_id_format(&id, buf, sizeof buf);
  assert_string_equal(buf, "127.0.0.1:7");
  assert_int_equal(sched_exec_id_parse("127.0.0.1", &id), SQ_EINVAL);
  assert_int_equal(sched_exec_id_parse(":3", &id), SQ_EINVAL);
  assert_int_equal(sched_exec_id_parse("h:3x", &id), SQ_EINVAL);
  assert_int_equal(sched_exec_id_parse("h:", &id), SQ_EINVAL);
  sched_policy_destroy(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_silent_executor_is_dropped_after_the_deadline),
      cmocka_unit_test(test_running_false_drops_at_once),
      cmocka_unit_test(test_features_follow_the_latest_status_and_vanish_with_the_executor),
      cmocka_unit_test(test_one_shot_prefers_unpinned_then_falls_back),
      cmocka_unit_test(test_locality_wins_over_load),
      cmocka_unit_test(test_equal_executors_share_calls),
      cmocka_unit_test(test_dag_picks_only_where_pinned_and_honours_colocation),
      cmocka_unit_test(test_pin_goes_to_fewest_pins_never_twice_never_excluded),
      cmocka_unit_test(test_bad_status_and_ids_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
