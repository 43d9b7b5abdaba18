/* histogram: a log-linear latency histogram for the load generators.
 *
 * Values (nanoseconds, any uint64) fall into buckets whose width grows with the
 * value: below 256 every value has its own bucket; above, each power-of-two range
 * [2^m, 2^(m+1)) is cut into 128 equal buckets. The relative error of any reported
 * quantile is therefore below 1/128 (0.8 %), at every scale from 1 ns to hours,
 * which is exact enough for p50/p99/p99.9 while recording stays one array increment.
 *
 *   index:   0 .. 255 | 256 .. 383 | 384 .. 511 | ...  (7424 buckets in all)
 *   value:   exact    | [256, 512) | [512,1024) | ...  step 2, 4, ...
 *
 * Invariants: bucket_lower(bucket_of(v)) <= v < bucket_lower(bucket_of(v) + 1);
 * count is the sum of the buckets; min/max are the exact extremes seen.
 * Threads: a histogram belongs to one thread; merge them after the threads stop.
 */
#ifndef BENCH_HISTOGRAM_H
#define BENCH_HISTOGRAM_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)                 /* buckets per octave: 128 */
#define HIST_EXACT (2u * HIST_SUB)                     /* values with their own bucket */
#define HIST_BUCKETS (HIST_EXACT + (64u - HIST_SUB_BITS - 1u) * HIST_SUB)

typedef struct {
  uint64_t counts[HIST_BUCKETS];
  uint64_t count;
  uint64_t min;
  uint64_t max;
  double sum;
} hist_t;

/* Empties h (no allocation: a hist_t is plain memory, about 60 KB). */
void hist_reset(hist_t *h);

/* Records one value. */
void hist_record(hist_t *h, uint64_t v);

/* Adds every value of src to dst. */
void hist_merge(hist_t *dst, const hist_t *src);

/* The bucket a value falls in, and the smallest value of a bucket (index <
 * HIST_BUCKETS). Exposed for tests. */
uint32_t hist_bucket_of(uint64_t v);
uint64_t hist_bucket_lower(uint32_t index);

/* The value at quantile q (0 <= q <= 1): the midpoint of the bucket holding the
 * ceil(q * count)-th smallest value, clamped to [min, max]. 0 when h is empty. */
uint64_t hist_quantile(const hist_t *h, double q);

/* Mean of the recorded values; 0 when empty. */
double hist_mean(const hist_t *h);

#endif
