/* test_exec_backoff: the executor loop's back-off on a failing wait
 * (worker/exec_backoff.c).
 *
 * Pins: delays go 10, 20, 40 ... and stay at 1000 ms (never 0: no busy spin); only an
 * episode's first failure asks to be logged; a success ends the episode, reports its
 * failure count and starts the next episode at the minimum again; bad bounds are
 * clamped so that no delay is ever below 1 ms.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "exec_backoff.h"

static void test_delays_double_from_10_ms_and_stay_at_1_s(void **state) {
  (void)state;
  exec_backoff_t b;
  exec_backoff_init(&b, EXEC_BACKOFF_MIN_MS, EXEC_BACKOFF_MAX_MS);
  const int want[] = {10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    assert_int_equal(exec_backoff_fail(&b, NULL), want[i]);
  for (int i = 0; i < 1000; i++) assert_int_equal(exec_backoff_fail(&b, NULL), 1000);
}

static void test_only_the_first_failure_of_an_episode_is_logged(void **state) {
  (void)state;
  exec_backoff_t b;
  exec_backoff_init(&b, 10, 1000);
  bool first = false;
  exec_backoff_fail(&b, &first);
  assert_true(first);
  for (int i = 0; i < 50; i++) {
    exec_backoff_fail(&b, &first);
    assert_false(first);
  }
}

static void test_success_ends_the_episode_and_counts_its_failures(void **state) {
  (void)state;
  exec_backoff_t b;
  exec_backoff_init(&b, 10, 1000);
  assert_int_equal(exec_backoff_ok(&b), 0); /* no episode yet */
  for (int i = 0; i < 7; i++) exec_backoff_fail(&b, NULL);
  assert_int_equal(exec_backoff_ok(&b), 7);
  assert_int_equal(exec_backoff_ok(&b), 0);
  bool first = false;
  assert_int_equal(exec_backoff_fail(&b, &first), 10); /* a new episode starts low */
  assert_true(first);
  assert_int_equal(exec_backoff_fail(&b, &first), 20);
  assert_false(first);
}

static void test_bad_bounds_are_clamped_to_a_positive_delay(void **state) {
  (void)state;
  exec_backoff_t b;
  exec_backoff_init(&b, 0, -5);
  for (int i = 0; i < 10; i++) assert_int_equal(exec_backoff_fail(&b, NULL), 1);
  exec_backoff_init(&b, 300, 1000); /* 300, 600, then the cap, not 1200 */
  assert_int_equal(exec_backoff_fail(&b, NULL), 300);
  assert_int_equal(exec_backoff_fail(&b, NULL), 600);
  assert_int_equal(exec_backoff_fail(&b, NULL), 1000);
  exec_backoff_init(&b, 10, 1 << 30); /* doubling never overflows */
  int last = 0;
  for (int i = 0; i < 64; i++) {
    int d = exec_backoff_fail(&b, NULL);
    assert_true(d >= last && d <= (1 << 30));
    last = d;
  }
  assert_int_equal(last, 1 << 30);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_delays_double_from_10_ms_and_stay_at_1_s),
      cmocka_unit_test(test_only_the_first_failure_of_an_episode_is_logged),
      cmocka_unit_test(test_success_ends_the_episode_and_counts_its_failures),
      cmocka_unit_test(test_bad_bounds_are_clamped_to_a_positive_delay),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
