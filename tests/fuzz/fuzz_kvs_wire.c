/* fuzz_kvs_wire: squall-kvs's hand-written KeyRequest decoder (kvs/kvs_wire.h)
 * against sq_proto_unpack(), the protobuf-c path it shortcuts.
 *
 * For every input: when the fast decoder accepts it, the slow one must accept it too
 * and yield the same fields; then the decoded request, answered as a KeyResponse of
 * the same tuples, must pack to exactly protobuf-c's bytes. Any disagreement aborts
 * so libFuzzer records the input. No state between inputs but the two arenas, reset
 * after each one. tests/c/test_kvs_wire.c runs the same checks on a fixed corpus.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "anna.pb-c.h"
#include "kvs_wire.h"
#include "sq_arena.h"
#include "sq_error.h"
#include "sq_proto.h"

static int fuzz__str_eq(const char *x, const char *y) {
  return strcmp(x ? x : "", y ? y : "") == 0;
}

static int fuzz__tuple_eq(const KeyTuple *x, const KeyTuple *y) {
  return fuzz__str_eq(x->key, y->key) && x->lattice_type == y->lattice_type &&
         x->error == y->error && x->payload.len == y->payload.len &&
         (x->payload.len == 0 || memcmp(x->payload.data, y->payload.data, x->payload.len) == 0) &&
         x->address_cache_size == y->address_cache_size && !!x->invalidate == !!y->invalidate &&
         fuzz__str_eq(x->error_message, y->error_message);
}

static void fuzz__check_pack(const KeyRequest *req, sq_arena_t *arena) {
  KeyResponse resp = KEY_RESPONSE__INIT;
  resp.type = req->type;
  resp.response_id = req->request_id;
  resp.error_message = req->response_address;
  resp.n_tuples = req->n_tuples;
  resp.tuples = req->tuples;
  size_t want = key_response__get_packed_size(&resp);
  size_t got = kvs_wire_response_size(&resp, NULL);
  if (got == 0) return; /* negative enum: protobuf-c's job */
  if (got != want) abort();
  uint8_t *x = sq_arena_alloc(arena, want), *y = sq_arena_alloc(arena, want);
  if (!x || !y) abort();
  if (key_response__pack(&resp, x) != want || kvs_wire_response_pack(&resp, NULL, y) != want ||
      memcmp(x, y, want) != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static sq_arena_t fast_arena, slow_arena;
  static int ready;
  if (!ready) {
    sq_arena_init(&fast_arena, 64 * 1024);
    sq_arena_init(&slow_arena, 64 * 1024);
    ready = 1;
  }
  KeyRequest *fast = NULL, *slow = NULL;
  kvs_wire_known_t known;
  int frc = kvs_wire_request_decode(data, size, &fast_arena, &fast, &known);
  if (frc != 0 && frc != SQ_EPROTO) abort();
  if (frc == 0) {
    int src = sq_proto_unpack(&key_request__descriptor, sq_arena_allocator(&slow_arena), data,
                              size, SIZE_MAX, (ProtobufCMessage **)&slow);
    if (src != 0 || slow->n_tuples != 1 || fast->n_tuples != 1 || slow->type != fast->type ||
        !fuzz__str_eq(slow->response_address, fast->response_address) ||
        !fuzz__str_eq(slow->request_id, fast->request_id) ||
        !fuzz__tuple_eq(slow->tuples[0], fast->tuples[0]) || slow->base.n_unknown_fields)
      abort();
    /* The lengths handed on are the C-string lengths of what was decoded. */
    if (known.key_len != strlen(fast->tuples[0]->key) ||
        known.response_address_len != strlen(fast->response_address) ||
        known.request_id_len != strlen(fast->request_id))
      abort();
    fuzz__check_pack(fast, &fast_arena);
  }
  sq_arena_reset(&fast_arena);
  sq_arena_reset(&slow_arena);
  return 0;
}
