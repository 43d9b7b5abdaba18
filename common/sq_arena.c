/* sq_arena: bump allocator (see sq_arena.h). */
#include "sq_arena.h"

#include <stdint.h>
#include <stdlib.h>

struct sq_arena_chunk {
  sq_arena_chunk_t *next;
  size_t size;  /* usable bytes in data */
  size_t used;
  _Alignas(16) unsigned char data[];
};

void sq_arena_init(sq_arena_t *arena, size_t chunk_size) {
  arena->head = NULL;
  arena->chunk_size = chunk_size < 256 ? 256 : chunk_size;
  arena->allocator.alloc = NULL;
  arena->allocator.free = NULL;
  arena->allocator.allocator_data = arena;
}

static sq_arena_chunk_t *sq__arena_chunk_new(size_t size) {
  sq_arena_chunk_t *c = malloc(sizeof(*c) + size);
  if (!c) return NULL;
  c->next = NULL;
  c->size = size;
  c->used = 0;
  return c;
}

void *sq_arena_alloc(sq_arena_t *arena, size_t size) {
  if (size > SIZE_MAX / 2) return NULL; /* the round-up below must not wrap */
  size = (size + 15) & ~(size_t)15;
  if (size == 0) size = 16;
  sq_arena_chunk_t *c = arena->head;
  if (c && c->size - c->used >= size) {
    void *p = c->data + c->used;
    c->used += size;
    return p;
  }
  size_t chunk = size > arena->chunk_size ? size : arena->chunk_size;
  sq_arena_chunk_t *fresh = sq__arena_chunk_new(chunk);
  if (!fresh) return NULL;
  fresh->next = arena->head;
  arena->head = fresh;
  fresh->used = size;
  return fresh->data;
}

void sq_arena_reset(sq_arena_t *arena) {
  /* Keep the newest regular-sized chunk; free the rest. */
  sq_arena_chunk_t *keep = NULL;
  sq_arena_chunk_t *c = arena->head;
  while (c) {
    sq_arena_chunk_t *next = c->next;
    if (!keep && c->size == arena->chunk_size) {
      keep = c;
      keep->used = 0;
      keep->next = NULL;
    } else {
      free(c);
    }
    c = next;
  }
  arena->head = keep;
}

void sq_arena_destroy(sq_arena_t *arena) {
  if (!arena) return;
  sq_arena_chunk_t *c = arena->head;
  while (c) {
    sq_arena_chunk_t *next = c->next;
    free(c);
    c = next;
  }
  arena->head = NULL;
}

static void *sq__arena_pb_alloc(void *data, size_t size) { return sq_arena_alloc(data, size); }

static void sq__arena_pb_free(void *data, void *ptr) {
  (void)data;
  (void)ptr;
}

ProtobufCAllocator *sq_arena_allocator(sq_arena_t *arena) {
  arena->allocator.alloc = sq__arena_pb_alloc;
  arena->allocator.free = sq__arena_pb_free;
  arena->allocator.allocator_data = arena;
  return &arena->allocator;
}
