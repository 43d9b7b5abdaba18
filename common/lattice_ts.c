/* lattice_ts: LWW timestamps in Anna's format (PROTOCOL.md §2.2).
 *
 *   ts = now_ms * 10^k + id,   10^k = smallest power of ten > id, at least 10
 *
 * so C++ Anna clients and squall writers produce comparable timestamps and the id
 * in the low digits makes two writers' timestamps distinct in the same millisecond.
 * Monotonicity: the caller's `last` slot remembers the previous timestamp; when the
 * wall clock has not moved past its millisecond (or went backwards), the next
 * millisecond slot is used instead, so one writer's timestamps strictly increase.
 * Nothing here is shared: each thread passes its own `last`.
 *
 * squall's own writers use sq_lww_writer_timestamp: one scale for all of them, so the
 * later write wins whichever writer made it (lattice.h says why Anna's scale fails).
 */
#include <time.h>

#include "lattice.h"

uint64_t sq_lww_timestamp(uint32_t id, uint64_t *last) {
  struct timespec now;
  uint64_t scale = 10;
  while (scale <= id) scale *= 10;
  clock_gettime(CLOCK_REALTIME, &now);
  uint64_t ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
  if (last && *last / scale >= ms) ms = *last / scale + 1;
  uint64_t ts = ms * scale + id;
  if (last) *last = ts;
  return ts;
}

uint64_t sq_lww_writer_timestamp(uint32_t writer, uint64_t *last) {
  return sq_lww_timestamp(writer % 10u, last);
}
