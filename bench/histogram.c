/* histogram: log-linear buckets; see histogram.h for the layout and error bound.
 *
 * For v >= HIST_EXACT with highest set bit m (m >= 8), shift = m - 7 keeps the 8 top
 * bits: mant = v >> shift lies in [128, 256), and the bucket is
 * HIST_EXACT + (shift - 1) * 128 + (mant - 128). Its lower bound is mant << shift and
 * its width 2^shift, at most 1/128 of its lower bound.
 */
#include "histogram.h"

#include <math.h>
#include <string.h>

void hist_reset(hist_t *h) {
  memset(h, 0, sizeof(*h));
  h->min = UINT64_MAX;
}

uint32_t hist_bucket_of(uint64_t v) {
  if (v < HIST_EXACT) return (uint32_t)v;
  unsigned m = 63u - (unsigned)__builtin_clzll(v);
  unsigned shift = m - HIST_SUB_BITS;
  uint64_t mant = v >> shift;
  return HIST_EXACT + (shift - 1u) * HIST_SUB + (uint32_t)(mant - HIST_SUB);
}

uint64_t hist_bucket_lower(uint32_t index) {
  if (index < HIST_EXACT) return index;
  uint32_t j = index - HIST_EXACT;
  unsigned shift = j / HIST_SUB + 1u;
  uint64_t mant = HIST_SUB + j % HIST_SUB;
  return mant << shift;
}

/* Width of a bucket: 1 for exact buckets, else 2^shift. */
static uint64_t hist__bucket_width(uint32_t index) {
  if (index < HIST_EXACT) return 1;
  return (uint64_t)1 << ((index - HIST_EXACT) / HIST_SUB + 1u);
}

void hist_record(hist_t *h, uint64_t v) {
  h->counts[hist_bucket_of(v)]++;
  h->count++;
  h->sum += (double)v;
  if (v < h->min) h->min = v;
  if (v > h->max) h->max = v;
}

void hist_merge(hist_t *dst, const hist_t *src) {
  if (src->count == 0) return;
  for (uint32_t i = 0; i < HIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
  dst->count += src->count;
  dst->sum += src->sum;
  if (src->min < dst->min) dst->min = src->min;
  if (src->max > dst->max) dst->max = src->max;
}

uint64_t hist_quantile(const hist_t *h, double q) {
  if (h->count == 0) return 0;
  if (q < 0) q = 0;
  if (q > 1) q = 1;
  uint64_t rank = (uint64_t)ceil(q * (double)h->count);
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen < rank) continue;
    uint64_t v = hist_bucket_lower(i) + (hist__bucket_width(i) - 1) / 2;
    if (v < h->min) v = h->min;
    if (v > h->max) v = h->max;
    return v;
  }
  return h->max;
}

double hist_mean(const hist_t *h) {
  return h->count ? h->sum / (double)h->count : 0.0;
}
