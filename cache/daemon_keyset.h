/* daemon_keyset: when and what squall-cache reports as its key set.
 *
 * The daemon PUTs `ANNA_METADATA|cache_ip|<public_ip>:<update_port>` = LWW(StringSet
 * of the keys it holds) to the KVS (PROTOCOL.md §1.13, §2.7): the KVS pushes updates
 * of those keys to the daemon, and schedulers read the same key for locality (§3.10).
 * This module is the timing policy and the encoding; the daemon does the I/O.
 *
 * Policy (state machine, times in ms of a monotonic clock):
 *
 *   IDLE --due--> IN_FLIGHT --done(ok)--> IDLE (clean)
 *                          --done(err)--> IDLE (dirty: try again when due)
 *   due = not in flight AND (never sent
 *                            OR dirty AND now - last_start >= min_interval (100)
 *                            OR now - last_start >= period (5000))
 *
 * so a changed key set is reported within min_interval, no faster than once per
 * min_interval however fast it churns, at least every period, and a silent KVS never
 * piles up requests. Pure logic; one thread.
 */
#ifndef CACHE_DAEMON_KEYSET_H
#define CACHE_DAEMON_KEYSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sq_buf.h"

#define CACHE_KEYSET_MIN_INTERVAL_MS 100
#define CACHE_KEYSET_PERIOD_MS 5000
#define CACHE_KEYSET_PREFIX "ANNA_METADATA|cache_ip|"

typedef struct {
  int64_t min_interval_ms;
  int64_t period_ms;
  int64_t last_start_ms;
  bool ever_sent;
  bool dirty;
  bool in_flight;
  uint64_t reports; /* reports started */
} cache_keyset_t;

/* Initialises the reporter (never sent, clean). Intervals <= 0 take the defaults. */
void cache_keyset_init(cache_keyset_t *k, int64_t min_interval_ms, int64_t period_ms);

/* The key set changed (a key was added, evicted or deleted). */
void cache_keyset_mark(cache_keyset_t *k);

/* True when a report should be started now. */
bool cache_keyset_due(const cache_keyset_t *k, int64_t now_ms);

/* Milliseconds until the next report is due (0 = now), or -1 while one is in flight
 * (its completion, not a timer, moves things on). */
int64_t cache_keyset_wait_ms(const cache_keyset_t *k, int64_t now_ms);

/* A report was started at now_ms with the key set as it is now (clears dirty). */
void cache_keyset_started(cache_keyset_t *k, int64_t now_ms);

/* The report finished with err (0 = the KVS acknowledged; else it is retried). */
void cache_keyset_done(cache_keyset_t *k, int err);

/* Writes the metadata key "ANNA_METADATA|cache_ip|<public_ip>:<port>" into buf.
 * 0 or SQ_ETOOBIG (does not fit). */
int cache_keyset_key(char *buf, size_t cap, const char *public_ip, unsigned port);

/* Appends LWW{timestamp, StringSet{keys}} (the report's payload) to out. keys[i] are
 * klens[i] bytes each (not necessarily NUL-terminated). 0 or -ENOMEM. */
int cache_keyset_encode(const char *const *keys, const size_t *klens, size_t n,
                        uint64_t timestamp, sq_buf_t *out);

#endif
