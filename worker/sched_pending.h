/* sched_pending: calls waiting for an executor to come back (docs/scheduler.md).
 *
 * When the scheduler re-sends the work of a lost executor and finds no live executor
 * to take it (every executor of the node crashed at once, or the only worker is
 * stopped), the call is parked here instead of being dropped. The scheduler's tick
 * retries parked calls as executors report again and fails each one -- an error result
 * pushed to its caller -- once its wait (`until_ms`) has passed, so no caller waits for
 * its own long deadline to learn that nobody will run the call.
 *
 *   parked --tick, an executor took it--> gone (re-sent)
 *      |  --tick, now >= until_ms------> gone (failed: error result to the caller)
 *      `--- list full (items or bytes) -> refused at add: the caller fails it at once
 *
 * Invariants: at most max_items entries and max_bytes message bytes; entries leave in
 * the order they came (FIFO; a retry that finds no executor puts the entry back at the
 * tail with its deadline unchanged). The list owns a copy of each message; an entry
 * taken out belongs to the taker (sched_pending_item_clear).
 * Threads: owned by the scheduler's one thread; no locking.
 */
#ifndef SCHED_PENDING_H
#define SCHED_PENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  SCHED_PENDING_CALL = 1, /* msg = packed FunctionCall (response_key filled) */
  SCHED_PENDING_DAG = 2,  /* msg = packed DagCall, id = its schedule id */
} sched_pending_kind_t;

typedef struct {
  sched_pending_kind_t kind;
  uint8_t *msg;       /* owned */
  size_t len;
  char id[64];        /* DAG schedule id ("" for one-shot calls) */
  uint64_t parked_ms; /* when it was first parked */
  uint64_t until_ms;  /* fail it from this time on */
  int tries;          /* sends so far, the first included */
} sched_pending_item_t;

typedef struct sched_pending sched_pending_t;

/* Makes an empty list bounded by max_items (>= 1) entries and max_bytes message bytes.
 * 0 and *out, SQ_EINVAL, or -ENOMEM. */
int sched_pending_create(size_t max_items, size_t max_bytes, sched_pending_t **out);

/* Frees the list and every entry in it. Accepts NULL. */
void sched_pending_destroy(sched_pending_t *p);

/* Parks a copy of it->msg (it->id is copied, truncated to 63 bytes). 0, SQ_ETOOBIG
 * when the entry would pass either bound (the list is unchanged), -ENOMEM. The caller
 * keeps ownership of it and its message. */
int sched_pending_add(sched_pending_t *p, const sched_pending_item_t *it);

/* Takes the oldest entry into *out (the caller owns out->msg from then on). False
 * when the list is empty. */
bool sched_pending_pop(sched_pending_t *p, sched_pending_item_t *out);

/* Takes the oldest entry whose until_ms <= now_ms into *out; false when none is due.
 * Entries before it stay in order. */
bool sched_pending_pop_due(sched_pending_t *p, uint64_t now_ms, sched_pending_item_t *out);

/* Entries and message bytes held now. */
size_t sched_pending_count(const sched_pending_t *p);
size_t sched_pending_bytes(const sched_pending_t *p);

/* Frees an entry's message and zeroes it. Accepts an already cleared entry. */
void sched_pending_item_clear(sched_pending_item_t *it);

#endif
