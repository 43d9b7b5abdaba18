/* exec_backoff: how long a loop waits before retrying something that keeps failing.
 *
 * The executor thread's loop waits on its sockets with poll(2); when that wait fails
 * for good (a closed or broken fd, ENOMEM in the kernel) retrying at once spins the
 * core at 100% and logs nothing useful. With a back-off the loop sleeps min_ms after
 * the first failure of an episode, doubling up to max_ms, and says so once per episode:
 *
 *     ok ... ok | fail(10) fail(20) fail(40) ... fail(1000) fail(1000) | ok ...
 *               ^ first: log once                                 ^ ok: the episode ends,
 *                                                                   its count is returned
 *
 * A plain value owned by one thread; no allocation, no clock (the caller sleeps).
 */
#ifndef EXEC_BACKOFF_H
#define EXEC_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

#define EXEC_BACKOFF_MIN_MS 10
#define EXEC_BACKOFF_MAX_MS 1000

typedef struct {
  int min_ms, max_ms;
  int next_ms;        /* the delay the next failure gets; 0 = not in an episode */
  uint64_t failures;  /* failures in the current episode */
} exec_backoff_t;

/* Sets b up with delays from min_ms (>= 1) doubling to max_ms (>= min_ms); values out
 * of range are clamped. */
void exec_backoff_init(exec_backoff_t *b, int min_ms, int max_ms);

/* Records a failure. Returns the milliseconds to wait before retrying: min_ms for the
 * first failure of an episode, then twice the previous delay, at most max_ms. *first
 * (when first is non-NULL) tells whether this failure started the episode (log it). */
int exec_backoff_fail(exec_backoff_t *b, bool *first);

/* Records a success, which ends the episode. Returns how many failures the episode
 * had (0 when there was none), e.g. for a "recovered after N" line. */
uint64_t exec_backoff_ok(exec_backoff_t *b);

#endif
