/* kvs_ack: replies waiting for the log to make their writes durable.
 *
 * A FIFO: replies are queued in the order their requests were handled, so their log
 * positions never decrease and the head is always the next to become sendable.
 * The bytes of an entry (its address and its packed reply) live in a chain of
 * chunks filled front to back and released in the same order: a chunk is recycled
 * once every entry in it was popped, so queueing a reply allocates nothing once the
 * chunks have grown to the size of the backlog (a malloc and a free per reply were
 * ~3% of a GET). Single-threaded (owned by one worker), with one exception: a reply
 * may be LENT to a sender that reads its bytes later on another thread (ZeroMQ's I/O
 * thread sends a message built on them without copying); kvs_ack_release(), the only
 * function another thread may call, gives it back. A chunk is written again or freed
 * only once nothing lent from it is still out (a reference count per chunk).
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

/* Lends the bytes of entry `ack` (ack->bytes, ack->len) past its pop: they stay valid
 * until kvs_ack_release() of the returned token, even after kvs_ack_pop() and
 * kvs_ack_destroy(). Owner thread only. */
void *kvs_ack_lend(const kvs_ack_t *ack);

/* Gives back what kvs_ack_lend() returned. Any thread; frees the memory when the
 * queue let go of it already. */
void kvs_ack_release(void *token);

/* Number of queued replies. */
size_t kvs_ack_pending(const kvs_ack_queue_t *q);

/* Frees every entry and the ring. */
void kvs_ack_destroy(kvs_ack_queue_t *q);

#endif
