/* test_time: sq_now_ms and sq_now_coarse_ms, the monotonic millisecond clock
 * (common/sq_time.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <time.h>

#include "sq_time.h"

static uint64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void test_now_ms_is_clock_monotonic_in_milliseconds(void **state) {
  (void)state;
  uint64_t before = monotonic_ms();
  uint64_t now = sq_now_ms();
  uint64_t after = monotonic_ms();
  assert_true(before <= now && now <= after);
}

static void test_now_ms_never_goes_back_and_follows_a_sleep(void **state) {
  (void)state;
  uint64_t last = sq_now_ms();
  for (int i = 0; i < 100000; i++) {
    uint64_t now = sq_now_ms();
    assert_true(now >= last);
    last = now;
  }
  uint64_t t0 = sq_now_ms();
  struct timespec nap = {.tv_sec = 0, .tv_nsec = 30 * 1000 * 1000};
  while (nanosleep(&nap, &nap) != 0) {
  }
  uint64_t slept = sq_now_ms() - t0;
  assert_true(slept >= 29);  /* whole ms truncated at both ends: at most 1 ms lost */
  assert_true(slept < 5000); /* generous: a loaded 2-core machine */
}

static void test_coarse_ms_is_the_same_clock_at_most_a_tick_behind(void **state) {
  (void)state;
  uint64_t last = sq_now_coarse_ms();
  for (int i = 0; i < 1000; i++) {
    uint64_t before = sq_now_ms();
    uint64_t coarse = sq_now_coarse_ms();
    uint64_t after = sq_now_ms();
    assert_true(coarse >= last);  /* never goes back */
    assert_true(coarse <= after); /* the last tick is never in the future */
    assert_true((int64_t)(before - coarse) < 100); /* a tick is 1-10 ms; generous */
    last = coarse;
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_now_ms_is_clock_monotonic_in_milliseconds),
      cmocka_unit_test(test_now_ms_never_goes_back_and_follows_a_sleep),
      cmocka_unit_test(test_coarse_ms_is_the_same_clock_at_most_a_tick_behind),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
