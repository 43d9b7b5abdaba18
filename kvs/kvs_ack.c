/* kvs_ack: FIFO of replies waiting for durability (see kvs_ack.h). */
#include "kvs_ack.h"

#include <errno.h>
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

uint8_t *kvs_ack_reserve(kvs_ack_queue_t *q, uint64_t lsn, const char *address,
                         size_t addr_len, size_t len) {
  if (q->count == q->cap && kvs__ack_grow(q) != 0) return NULL;
  char *block = malloc(addr_len + 1 + len);
  if (!block) return NULL;
  memcpy(block, address, addr_len);
  block[addr_len] = '\0';
  kvs_ack_t *e = &q->ring[(q->head + q->count) & (q->cap - 1)];
  e->lsn = lsn;
  e->address = block;
  e->bytes = (uint8_t *)block + addr_len + 1;
  e->len = len;
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
  free(q->ring[q->head].address);
  q->head = (q->head + 1) & (q->cap - 1);
  q->count--;
}

size_t kvs_ack_pending(const kvs_ack_queue_t *q) { return q->count; }

void kvs_ack_destroy(kvs_ack_queue_t *q) {
  while (q->count) kvs_ack_pop(q);
  free(q->ring);
  q->ring = NULL;
  q->cap = 0;
}
