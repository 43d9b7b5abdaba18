/* sq_time: the monotonic millisecond clock (contract in sq_time.h). */
#include "sq_time.h"

#include <time.h>

static uint64_t sq__clock_ms(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts); /* cannot fail for these clock ids */
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t sq_now_ms(void) { return sq__clock_ms(CLOCK_MONOTONIC); }

uint64_t sq_now_coarse_ms(void) {
#ifdef CLOCK_MONOTONIC_COARSE
  return sq__clock_ms(CLOCK_MONOTONIC_COARSE);
#else
  return sq__clock_ms(CLOCK_MONOTONIC);
#endif
}
