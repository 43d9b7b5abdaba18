/* sq_arena: a bump allocator for short-lived, per-message allocations.
 *
 * Decoding a protobuf message with protobuf-c makes one malloc per sub-message and
 * per string; on the KVS hot path that is most of the cost of a request. An arena
 * serves them from a few reusable chunks and frees them all at once with
 * sq_arena_reset(). `sq_arena_allocator()` adapts it to ProtobufCAllocator.
 *
 * Single-threaded: an arena belongs to one thread. Memory from an arena is valid
 * until the next reset or destroy. Oversized requests get their own chunk, released
 * at the next reset; the first chunk is kept for reuse.
 */
#ifndef SQ_ARENA_H
#define SQ_ARENA_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

typedef struct sq_arena_chunk sq_arena_chunk_t;

typedef struct {
  sq_arena_chunk_t *head;  /* current chunk; older chunks follow */
  size_t chunk_size;
  ProtobufCAllocator allocator;
} sq_arena_t;

/* Initialises an empty arena whose regular chunks are chunk_size bytes. */
void sq_arena_init(sq_arena_t *arena, size_t chunk_size);

/* Returns 16-byte aligned memory, or NULL when out of memory. */
void *sq_arena_alloc(sq_arena_t *arena, size_t size);

/* Frees every allocation; keeps one regular chunk for reuse. */
void sq_arena_reset(sq_arena_t *arena);

/* Frees everything. The arena may be initialised again. Accepts NULL. */
void sq_arena_destroy(sq_arena_t *arena);

/* A ProtobufCAllocator drawing from the arena (free is a no-op). The pointer stays
 * valid as long as the arena. */
ProtobufCAllocator *sq_arena_allocator(sq_arena_t *arena);

#endif
