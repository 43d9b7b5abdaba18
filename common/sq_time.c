/* sq_time: the monotonic millisecond clock (contract in sq_time.h). */
#include "sq_time.h"

#include <time.h>

uint64_t sq_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for this clock id */
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
