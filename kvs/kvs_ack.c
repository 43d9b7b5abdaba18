/* kvs_ack: FIFO of replies waiting for durability (see kvs_ack.h). */
#include "kvs_ack.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static int kvs__ack_grow(kvs_ack_queue_t *q) {
  size_t cap = q->cap ? q->cap * 2 : 256;
  kvs_ack_t *ring = malloc(cap * sizeof(*ring));
  if (!ring) return -ENOMEM;
  for (size_t i = 0; i < q->count; i++) ring[i] = q->ring[(q->head + i) & (q->cap - 1)];
  free(q->ring);
  q->ring = ring;
  q->cap = cap;
  q->head = 0;
  return 0;
}

#define KVS__ACK_CHUNK (256u * 1024)

struct kvs__ack_chunk {
  kvs__ack_chunk_t *next;
  size_t used, cap;
  size_t live; /* entries still queued in this chunk */
  /* 1 while the queue holds the chunk (chain or spare) + 1 per reply lent to a
   * sender (kvs_ack_lend). Whoever drops the last reference frees the chunk; the
   * queue reuses it only while it holds the only one. */
  _Atomic size_t refs;
  uint8_t data[];
};

void kvs_ack_release(void *chunk) {
  kvs__ack_chunk_t *c = chunk;
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) free(c);
}

void *kvs_ack_lend(const kvs_ack_t *ack) {
  atomic_fetch_add_explicit(&ack->chunk->refs, 1, memory_order_relaxed);
  return ack->chunk;
}

/* True when no sender still reads the chunk: its memory may be written again. */
static bool kvs__ack_unlent(kvs__ack_chunk_t *c) {
  return atomic_load_explicit(&c->refs, memory_order_acquire) == 1;
}

/* Keeps a drained chunk as the spare, unless it is oversized (one huge reply) or the
 * spare is already as big and no worse (c is not free while the spare is lent); else
 * lets it go. A chunk still lent to a sender may be kept: the queue holds its own
 * reference and kvs__ack_room takes the spare only once the senders are done, which
 * they mostly are by the next batch (so zero-copy replies do not cost a fresh chunk
 * per batch). */
static void kvs__ack_keep(kvs_ack_queue_t *q, kvs__ack_chunk_t *c) {
  bool better = q->spare && !kvs__ack_unlent(q->spare) && kvs__ack_unlent(c);
  if (c->cap > 4 * KVS__ACK_CHUNK || (q->spare && q->spare->cap >= c->cap && !better)) {
    kvs_ack_release(c);
    return;
  }
  if (q->spare) kvs_ack_release(q->spare);
  q->spare = c;
}

/* A chunk with room for need bytes at the end of the chain. NULL when out of memory. */
static kvs__ack_chunk_t *kvs__ack_room(kvs_ack_queue_t *q, size_t need) {
  kvs__ack_chunk_t *c = q->last;
  if (c && c->live == 0) { /* drained, so the only chunk (FIFO): start over */
    q->first = q->last = NULL;
    kvs__ack_keep(q, c);
    c = NULL;
  }
  if (c && c->cap - c->used >= need) return c;
  if (q->spare && q->spare->cap >= need && kvs__ack_unlent(q->spare)) {
    c = q->spare;
    q->spare = NULL;
  } else {
    size_t cap = need > KVS__ACK_CHUNK ? need : KVS__ACK_CHUNK;
    c = malloc(sizeof(*c) + cap);
    if (!c) return NULL;
    c->cap = cap;
    atomic_init(&c->refs, 1);
  }
  c->next = NULL;
  c->used = c->live = 0;
  if (q->last) q->last->next = c;
  else q->first = c;
  q->last = c;
  return c;
}

uint8_t *kvs_ack_reserve(kvs_ack_queue_t *q, uint64_t lsn, const char *address,
                         size_t addr_len, size_t len) {
  if (q->count == q->cap && kvs__ack_grow(q) != 0) return NULL;
  size_t need = (addr_len + 1 + len + 7) & ~(size_t)7;
  kvs__ack_chunk_t *c = kvs__ack_room(q, need);
  if (!c) return NULL;
  char *block = (char *)c->data + c->used;
  c->used += need;
  c->live++;
  memcpy(block, address, addr_len);
  block[addr_len] = '\0';
  kvs_ack_t *e = &q->ring[(q->head + q->count) & (q->cap - 1)];
  e->lsn = lsn;
  e->address = block;
  e->bytes = (uint8_t *)block + addr_len + 1;
  e->len = len;
  e->chunk = c;
  q->count++;
  return e->bytes;
}

int kvs_ack_push(kvs_ack_queue_t *q, uint64_t lsn, const char *address, size_t addr_len,
                 const uint8_t *bytes, size_t len) {
  uint8_t *dst = kvs_ack_reserve(q, lsn, address, addr_len, len);
  if (!dst) return -ENOMEM;
  if (len) memcpy(dst, bytes, len);
  return 0;
}

const kvs_ack_t *kvs_ack_ready(const kvs_ack_queue_t *q, uint64_t durable) {
  if (q->count == 0) return NULL;
  const kvs_ack_t *e = &q->ring[q->head];
  return e->lsn <= durable ? e : NULL;
}

void kvs_ack_pop(kvs_ack_queue_t *q) {
  if (q->count == 0) return;
  kvs__ack_chunk_t *c = q->ring[q->head].chunk;
  q->head = (q->head + 1) & (q->cap - 1);
  q->count--;
  /* FIFO: chunks empty oldest first. A drained chunk that is not the one being
   * filled leaves the chain and becomes the spare (the last one stays, reused). */
  if (--c->live == 0 && c == q->first && c != q->last) {
    q->first = c->next;
    kvs__ack_keep(q, c);
  }
}

size_t kvs_ack_pending(const kvs_ack_queue_t *q) { return q->count; }

void kvs_ack_destroy(kvs_ack_queue_t *q) {
  while (q->count) kvs_ack_pop(q);
  while (q->first) {
    kvs__ack_chunk_t *next = q->first->next;
    kvs_ack_release(q->first);
    q->first = next;
  }
  if (q->spare) kvs_ack_release(q->spare);
  free(q->ring);
  memset(q, 0, sizeof(*q));
}
