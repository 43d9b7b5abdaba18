/* kvs_ack: replies waiting for the log to make their writes durable.
 *
 * A FIFO: replies are queued in the order their requests were handled, so their log
 * positions never decrease and the head is always the next to become sendable.
 * The bytes of an entry (its address and its packed reply) live in a chain of
 * chunks filled front to back and released in the same order: a chunk is recycled
 * once every entry in it was popped, so queueing a reply allocates nothing once the
 * chunks have grown to the size of the backlog (a malloc and a free per reply were
 * ~3% of a GET). Single-threaded (owned by one worker).
 */
#ifndef KVS_ACK_H
#define KVS_ACK_H

#include <stddef.h>
#include <stdint.h>

typedef struct kvs__ack_chunk kvs__ack_chunk_t;

typedef struct {
  uint64_t lsn;     /* log position the reply waits for */
  char *address;    /* NUL-terminated; in the same chunk as bytes */
  uint8_t *bytes;
  size_t len;
  kvs__ack_chunk_t *chunk; /* where address and bytes live */
} kvs_ack_t;

/* Zero-initialised is an empty queue. */
typedef struct {
  kvs_ack_t *ring;
  size_t cap;   /* power of two, or 0 */
  size_t head;  /* index of the oldest entry */
  size_t count;
  kvs__ack_chunk_t *first, *last; /* chunks holding entries, oldest first */
  kvs__ack_chunk_t *spare;        /* one emptied chunk kept for reuse */
} kvs_ack_queue_t;

/* Queues a copy of (address, bytes) waiting for `lsn`. 0 or -ENOMEM. */
int kvs_ack_push(kvs_ack_queue_t *q, uint64_t lsn, const char *address, size_t addr_len,
                 const uint8_t *bytes, size_t len);

/* Queues an entry for `address` with room for `len` bytes and returns where the
 * caller writes them (before any other call on the queue), so a reply is packed once,
 * in place. NULL when out of memory (nothing queued). */
uint8_t *kvs_ack_reserve(kvs_ack_queue_t *q, uint64_t lsn, const char *address,
                         size_t addr_len, size_t len);

/* Returns the oldest entry when its lsn <= durable, else NULL. The entry stays owned by
 * the queue until kvs_ack_pop(). */
const kvs_ack_t *kvs_ack_ready(const kvs_ack_queue_t *q, uint64_t durable);

/* Removes and frees the oldest entry. */
void kvs_ack_pop(kvs_ack_queue_t *q);

/* Number of queued replies. */
size_t kvs_ack_pending(const kvs_ack_queue_t *q);

/* Frees every entry and the ring. */
void kvs_ack_destroy(kvs_ack_queue_t *q);

#endif
