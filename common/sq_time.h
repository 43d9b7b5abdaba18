/* sq_time: the monotonic clock every squall process measures time with.
 *
 * Deadlines, timeouts, back-offs and leases are CLOCK_MONOTONIC milliseconds: never
 * stepped by settimeofday/NTP, one clock for the whole node, so values are comparable
 * across processes on the same machine (the executor slots and the cache leases in
 * shared memory rely on that). Wall-clock time (timestamps written into lattices, log
 * lines) is CLOCK_REALTIME and does not come from here.
 *
 * Stateless and thread-safe.
 */
#ifndef SQ_TIME_H
#define SQ_TIME_H

#include <stdint.h>

/* CLOCK_MONOTONIC in whole milliseconds (tv_sec * 1000 + tv_nsec / 1000000, truncated).
 * Never decreases; comparable across the processes of one machine. Callers that keep
 * signed deadlines convert with (int64_t): the value stays far below INT64_MAX. */
uint64_t sq_now_ms(void);

/* The same clock at the resolution of the kernel's last tick (CLOCK_MONOTONIC_COARSE:
 * a few ms behind sq_now_ms at most, read without the TSC, so cheaper), for stamps
 * taken on a hot path that only need to measure seconds (sq_zmq's idle sockets).
 * Never decreases; CLOCK_MONOTONIC where the coarse clock is missing. */
uint64_t sq_now_coarse_ms(void);

#endif
