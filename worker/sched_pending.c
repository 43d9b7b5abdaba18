/* sched_pending: a bounded FIFO of calls waiting for an executor (see sched_pending.h).
 *
 * A ring of max_items slots: entries live at ring[(head + i) % cap] for i < count.
 * Removing one from the middle (pop_due) shifts the entries after it one slot back,
 * O(count) with count <= cap (1024 in the scheduler), done at most once per due entry.
 */
#include "sched_pending.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"

struct sched_pending {
  sched_pending_item_t *ring;
  size_t cap, head, count;
  size_t max_bytes, bytes;
};

int sched_pending_create(size_t max_items, size_t max_bytes, sched_pending_t **out) {
  *out = NULL;
  if (max_items == 0) return SQ_EINVAL;
  sched_pending_t *p = calloc(1, sizeof(*p));
  if (!p) return -ENOMEM;
  p->ring = calloc(max_items, sizeof(*p->ring));
  if (!p->ring) {
    free(p);
    return -ENOMEM;
  }
  p->cap = max_items;
  p->max_bytes = max_bytes;
  *out = p;
  return 0;
}

void sched_pending_item_clear(sched_pending_item_t *it) {
  free(it->msg);
  memset(it, 0, sizeof(*it));
}

void sched_pending_destroy(sched_pending_t *p) {
  if (!p) return;
  for (size_t i = 0; i < p->count; i++)
    sched_pending_item_clear(&p->ring[(p->head + i) % p->cap]);
  free(p->ring);
  free(p);
}

int sched_pending_add(sched_pending_t *p, const sched_pending_item_t *it) {
  if (p->count >= p->cap || it->len > p->max_bytes - p->bytes) return SQ_ETOOBIG;
  uint8_t *copy = malloc(it->len ? it->len : 1);
  if (!copy) return -ENOMEM;
  if (it->len) memcpy(copy, it->msg, it->len);
  sched_pending_item_t *slot = &p->ring[(p->head + p->count) % p->cap];
  *slot = *it;
  snprintf(slot->id, sizeof slot->id, "%s", it->id);
  slot->msg = copy;
  p->count++;
  p->bytes += it->len;
  return 0;
}

/* Moves the entry at position i (0 = oldest) to *out and closes the gap. */
static void sched__pending_take(sched_pending_t *p, size_t i, sched_pending_item_t *out) {
  *out = p->ring[(p->head + i) % p->cap];
  for (size_t k = i; k > 0; k--) /* shift the older entries forward over the gap */
    p->ring[(p->head + k) % p->cap] = p->ring[(p->head + k - 1) % p->cap];
  memset(&p->ring[p->head], 0, sizeof(p->ring[0]));
  p->head = (p->head + 1) % p->cap;
  p->count--;
  p->bytes -= out->len;
}

bool sched_pending_pop(sched_pending_t *p, sched_pending_item_t *out) {
  if (p->count == 0) return false;
  sched__pending_take(p, 0, out);
  return true;
}

bool sched_pending_pop_due(sched_pending_t *p, uint64_t now_ms, sched_pending_item_t *out) {
  for (size_t i = 0; i < p->count; i++) {
    if (p->ring[(p->head + i) % p->cap].until_ms > now_ms) continue;
    sched__pending_take(p, i, out);
    return true;
  }
  return false;
}

size_t sched_pending_count(const sched_pending_t *p) { return p->count; }

size_t sched_pending_bytes(const sched_pending_t *p) { return p->bytes; }
