/* exec_backoff: exponential back-off of a failing loop (design note in exec_backoff.h). */
#include "exec_backoff.h"

void exec_backoff_init(exec_backoff_t *b, int min_ms, int max_ms) {
  b->min_ms = min_ms < 1 ? 1 : min_ms;
  b->max_ms = max_ms < b->min_ms ? b->min_ms : max_ms;
  b->next_ms = 0;
  b->failures = 0;
}

int exec_backoff_fail(exec_backoff_t *b, bool *first) {
  bool start = b->next_ms == 0;
  int delay = start ? b->min_ms : b->next_ms;
  b->next_ms = delay > b->max_ms / 2 ? b->max_ms : 2 * delay;
  b->failures++;
  if (first) *first = start;
  return delay;
}

uint64_t exec_backoff_ok(exec_backoff_t *b) {
  uint64_t n = b->failures;
  b->next_ms = 0;
  b->failures = 0;
  return n;
}
