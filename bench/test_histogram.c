/* test_histogram: the latency histogram of the load generators keeps its promise --
 * contiguous buckets, bounded relative error at every scale, exact small values,
 * quantiles that match a sorted array, merging equal to recording together. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "histogram.h"

static hist_t *new_hist(void) {
  hist_t *h = malloc(sizeof(*h));
  assert_non_null(h);
  hist_reset(h);
  return h;
}

static void test_buckets_are_contiguous_and_ordered(void **state) {
  (void)state;
  assert_int_equal(hist_bucket_lower(0), 0);
  for (uint32_t i = 1; i < HIST_BUCKETS; i++) {
    uint64_t lo = hist_bucket_lower(i);
    assert_true(lo > hist_bucket_lower(i - 1));
    assert_int_equal(hist_bucket_of(lo), i);
    assert_int_equal(hist_bucket_of(lo - 1), i - 1);
  }
  assert_int_equal(hist_bucket_of(UINT64_MAX), HIST_BUCKETS - 1);
}

static void test_bucket_width_is_within_one_128th_of_the_value(void **state) {
  (void)state;
  uint64_t x = 88172645463325252ull;
  for (int n = 0; n < 200000; n++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    uint64_t v = x >> (x % 60);  /* spread over every magnitude */
    uint32_t b = hist_bucket_of(v);
    uint64_t lo = hist_bucket_lower(b);
    uint64_t hi = b + 1 < HIST_BUCKETS ? hist_bucket_lower(b + 1) : UINT64_MAX;
    assert_true(lo <= v && v < hi);
    if (v >= HIST_EXACT) assert_true((hi - lo) * 128 <= lo);
    else assert_int_equal(hi - lo, 1);
  }
}

static void test_small_values_have_exact_quantiles(void **state) {
  (void)state;
  hist_t *h = new_hist();
  for (uint64_t v = 1; v <= 100; v++) hist_record(h, v);
  assert_int_equal(hist_quantile(h, 0.5), 50);
  assert_int_equal(hist_quantile(h, 0.99), 99);
  assert_int_equal(hist_quantile(h, 1.0), 100);
  assert_int_equal(hist_quantile(h, 0.0), 1);
  assert_true(hist_mean(h) > 50.49 && hist_mean(h) < 50.51);
  free(h);
}

static void assert_close(uint64_t got, double want) {
  double rel = ((double)got - want) / want;
  if (rel < 0) rel = -rel;
  if (rel > 1.0 / 128) fail_msg("got %llu, want %.0f (off by %.3f%%)", (unsigned long long)got,
                               want, rel * 100);
}

static void test_quantiles_of_a_wide_distribution_are_within_bound(void **state) {
  (void)state;
  hist_t *h = new_hist();
  /* 1 us .. 1 s in 1 us steps, shuffled order does not matter for a histogram */
  for (uint64_t v = 1; v <= 1000000; v++) hist_record(h, v * 1000);
  assert_close(hist_quantile(h, 0.5), 500000e3);
  assert_close(hist_quantile(h, 0.99), 990000e3);
  assert_close(hist_quantile(h, 0.999), 999000e3);
  assert_int_equal(hist_quantile(h, 1.0), 1000000000ull);
  assert_int_equal(h->min, 1000);
  free(h);
}

static void test_tail_quantile_sees_a_rare_slow_request(void **state) {
  (void)state;
  hist_t *h = new_hist();
  for (int i = 0; i < 990; i++) hist_record(h, 20000);   /* 20 us */
  for (int i = 0; i < 10; i++) hist_record(h, 5000000);  /* 5 ms */
  assert_close(hist_quantile(h, 0.5), 20000);
  assert_close(hist_quantile(h, 0.99), 20000);
  assert_close(hist_quantile(h, 0.991), 5000000);
  free(h);
}

static void test_merge_equals_recording_together(void **state) {
  (void)state;
  hist_t *a = new_hist(), *b = new_hist(), *all = new_hist();
  for (uint64_t v = 1; v < 50000; v += 7) {
    hist_record((v % 3) ? a : b, v * 31);
    hist_record(all, v * 31);
  }
  hist_merge(a, b);
  assert_int_equal(a->count, all->count);
  assert_int_equal(a->min, all->min);
  assert_int_equal(a->max, all->max);
  assert_memory_equal(a->counts, all->counts, sizeof(a->counts));
  for (double q = 0; q <= 1.0; q += 0.125)
    assert_int_equal(hist_quantile(a, q), hist_quantile(all, q));
  free(a), free(b), free(all);
}

static void test_empty_histogram_reports_zero(void **state) {
  (void)state;
  hist_t *h = new_hist();
  assert_int_equal(hist_quantile(h, 0.99), 0);
  assert_true(hist_mean(h) == 0.0);
  hist_t *e = new_hist();
  hist_merge(h, e);
  assert_int_equal(h->count, 0);
  free(h), free(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buckets_are_contiguous_and_ordered),
      cmocka_unit_test(test_bucket_width_is_within_one_128th_of_the_value),
      cmocka_unit_test(test_small_values_have_exact_quantiles),
      cmocka_unit_test(test_quantiles_of_a_wide_distribution_are_within_bound),
      cmocka_unit_test(test_tail_quantile_sees_a_rare_slow_request),
      cmocka_unit_test(test_merge_equals_recording_together),
      cmocka_unit_test(test_empty_histogram_reports_zero),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
