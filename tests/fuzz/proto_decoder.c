/* proto_decoder: one libFuzzer harness for every network message.
 *
 * Built once per message with -DFUZZ_MESSAGE=<name>__descriptor (see CMakeLists.txt).
 * Each input goes through sq_proto_unpack(), the decoder every daemon uses, with the
 * malloc allocator and with an sq_arena; a decoded message must re-pack to bytes that
 * decode again and re-pack identically, and both allocators must agree. Any
 * disagreement aborts, so libFuzzer records the input; memory errors are caught by
 * ASan/UBSan. The harness keeps no state between inputs except the arena, which is
 * reset after each one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "anna.pb-c.h"
#include "benchmark.pb-c.h"
#include "causal.pb-c.h"
#include "cloudburst.pb-c.h"
#include "internal.pb-c.h"
#include "metadata.pb-c.h"
#include "shared.pb-c.h"
#include "sq_arena.h"
#include "sq_error.h"
#include "sq_proto.h"

#ifndef FUZZ_MESSAGE
#error "build with -DFUZZ_MESSAGE=<message>__descriptor"
#endif

#define FUZZ_MAX_LEN (1u << 20)

/* Packs m into a malloc'd buffer, or aborts. */
static uint8_t *fuzz__pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *out = malloc(*len ? *len : 1);
  if (!out || protobuf_c_message_pack(m, out) != *len) abort();
  return out;
}

/* Decoding p1 must succeed and re-pack to exactly p1. */
static void fuzz__check_stable(const uint8_t *p1, size_t n1) {
  ProtobufCMessage *m2 = NULL;
  if (sq_proto_unpack(&FUZZ_MESSAGE, NULL, p1, n1, SIZE_MAX, &m2)) abort();
  size_t n2;
  uint8_t *p2 = fuzz__pack(m2, &n2);
  if (n2 != n1 || memcmp(p1, p2, n1)) abort();
  free(p2);
  protobuf_c_message_free_unpacked(m2, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static sq_arena_t arena;  /* libFuzzer gives no context argument; reset per input */
  static int arena_ready;
  if (!arena_ready) sq_arena_init(&arena, 16384), arena_ready = 1;

  ProtobufCMessage *m = NULL, *am = NULL;
  int rc = sq_proto_unpack(&FUZZ_MESSAGE, NULL, data, size, FUZZ_MAX_LEN, &m);
  if (rc != 0 && rc != SQ_EPROTO && rc != SQ_ETOOBIG) abort();
  int arc = sq_proto_unpack(&FUZZ_MESSAGE, sq_arena_allocator(&arena), data, size,
                            FUZZ_MAX_LEN, &am);
  if (arc != rc) abort();
  if (m) {
    size_t n1, an;
    uint8_t *p1 = fuzz__pack(m, &n1), *ap = fuzz__pack(am, &an);
    if (an != n1 || memcmp(p1, ap, n1)) abort();
    fuzz__check_stable(p1, n1);
    free(p1);
    free(ap);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  sq_arena_reset(&arena);
  return 0;
}
