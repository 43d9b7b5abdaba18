/* test_kvs_wire: the hand-written KeyRequest decoder and KeyResponse packer of
 * squall-kvs (kvs/kvs_wire.h) against protobuf-c, the reference they replace.
 *
 * Differential: (1) every one-tuple request protobuf-c packs in the fast shape is
 * accepted and decodes to the same fields as sq_proto_unpack(); (2) for random and
 * mutated bytes, whatever the fast decoder accepts, the slow one accepts too, with
 * the same fields; (3) shapes outside the grammar fall back; (4) responses pack to
 * exactly protobuf-c's bytes. Inputs come from a fixed-seed generator, so a failure
 * reproduces. tests/fuzz/fuzz_kvs_wire.c runs the same comparison under libFuzzer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "anna.pb-c.h"
#include "kvs_wire.h"
#include "sq_arena.h"
#include "sq_error.h"
#include "sq_proto.h"

#define ROUNDS 20000

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static uint32_t below(uint32_t n) { return (uint32_t)(rnd() % n); }

/* A random string of 0..max bytes (any byte but NUL, which a C string cannot hold). */
static char *rnd_string(sq_arena_t *a, size_t max) {
  size_t len = below((uint32_t)max + 1);
  char *s = sq_arena_alloc(a, len + 1);
  for (size_t i = 0; i < len; i++) s[i] = (char)(1 + below(255));
  s[len] = '\0';
  return s;
}

/* Small values most of the time, sometimes large ones. */
static uint32_t rnd_enum(void) {
  uint32_t r = below(10);
  return r < 8 ? below(8) : (r == 8 ? below(128) : below(1u << 20));
}

static void rnd_tuple(sq_arena_t *a, KeyTuple *t) {
  key_tuple__init(t);
  if (below(8)) t->key = rnd_string(a, 40);
  t->lattice_type = (LatticeType)rnd_enum();
  if (!below(4)) t->error = (AnnaError)rnd_enum();
  if (below(4)) {
    t->payload.len = below(3000);
    t->payload.data = sq_arena_alloc(a, t->payload.len + 1);
    for (size_t i = 0; i < t->payload.len; i++) t->payload.data[i] = (uint8_t)rnd();
  }
  if (!below(4)) t->address_cache_size = below(4) ? below(4) : (uint32_t)rnd();
  t->invalidate = !below(5);
  if (!below(10)) t->error_message = rnd_string(a, 20);
}

static uint8_t *pack_request(sq_arena_t *a, const KeyRequest *req, size_t *len) {
  *len = key_request__get_packed_size(req);
  uint8_t *out = sq_arena_alloc(a, *len + 1);
  assert_int_equal(key_request__pack(req, out), *len);
  return out;
}

/* A random request of n tuples, packed by protobuf-c. */
static uint8_t *rnd_request(sq_arena_t *a, size_t n, size_t *len) {
  KeyRequest req = KEY_REQUEST__INIT;
  req.type = (RequestType)rnd_enum();
  req.n_tuples = n;
  req.tuples = sq_arena_alloc(a, (n + 1) * sizeof(KeyTuple *));
  for (size_t i = 0; i < n; i++) {
    req.tuples[i] = sq_arena_alloc(a, sizeof(KeyTuple));
    rnd_tuple(a, req.tuples[i]);
  }
  if (below(8)) req.response_address = rnd_string(a, 60);
  if (below(8)) req.request_id = rnd_string(a, 30);
  return pack_request(a, &req, len);
}

static int str_eq(const char *x, const char *y) { return strcmp(x ? x : "", y ? y : "") == 0; }

static void assert_same_request(const KeyRequest *f, const KeyRequest *s) {
  assert_int_equal(f->type, s->type);
  assert_true(str_eq(f->response_address, s->response_address));
  assert_true(str_eq(f->request_id, s->request_id));
  assert_int_equal(f->n_tuples, s->n_tuples);
  assert_int_equal(s->base.n_unknown_fields, 0);
  for (size_t i = 0; i < f->n_tuples; i++) {
    const KeyTuple *x = f->tuples[i], *y = s->tuples[i];
    assert_true(str_eq(x->key, y->key));
    assert_int_equal(x->lattice_type, y->lattice_type);
    assert_int_equal(x->error, y->error);
    assert_int_equal(x->payload.len, y->payload.len);
    if (x->payload.len) assert_memory_equal(x->payload.data, y->payload.data, x->payload.len);
    assert_int_equal(x->address_cache_size, y->address_cache_size);
    assert_int_equal(!!x->invalidate, !!y->invalidate);
    assert_true(str_eq(x->error_message, y->error_message));
  }
}

/* Runs both decoders on the bytes; when the fast one accepts, the slow one must too,
 * with the same fields. Returns whether the fast one accepted. */
static int compare_decoders(const uint8_t *p, size_t len) {
  sq_arena_t fa, sa;
  sq_arena_init(&fa, 4096);
  sq_arena_init(&sa, 4096);
  KeyRequest *fast = NULL, *slow = NULL;
  kvs_wire_known_t known;
  int frc = kvs_wire_request_decode(p, len, &fa, &fast, &known);
  int src = sq_proto_unpack(&key_request__descriptor, sq_arena_allocator(&sa), p, len,
                            SIZE_MAX, (ProtobufCMessage **)&slow);
  assert_true(frc == 0 || frc == SQ_EPROTO);
  if (frc == 0) {
    assert_int_equal(src, 0);
    assert_same_request(fast, slow);
    /* The lengths the decoder hands on are those of the strings it made. */
    assert_ptr_equal(known.key, fast->tuples[0]->key);
    assert_int_equal(known.key_len, strlen(fast->tuples[0]->key));
    assert_ptr_equal(known.response_address, fast->response_address);
    assert_int_equal(known.response_address_len, strlen(fast->response_address));
    assert_ptr_equal(known.request_id, fast->request_id);
    assert_int_equal(known.request_id_len, strlen(fast->request_id));
    assert_int_equal(kvs_wire_strlen(fast->request_id, &known), strlen(fast->request_id));
  }
  sq_arena_destroy(&fa);
  sq_arena_destroy(&sa);
  return frc == 0;
}

static bool tuple_in_fast_shape(const KeyTuple *t) {
  return (uint32_t)t->lattice_type < 128 && (uint32_t)t->error < 128 &&
         t->address_cache_size < (1u << 28) && !(t->error_message && *t->error_message);
}

static void test_every_one_tuple_request_protobuf_packs_decodes_the_same(void **state) {
  (void)state;
  int fast = 0, shaped = 0;
  for (int i = 0; i < ROUNDS; i++) {
    sq_arena_t a;
    sq_arena_init(&a, 8192);
    size_t len;
    uint64_t before = rng_state;
    uint8_t *p = rnd_request(&a, 1, &len);
    /* Rebuild the request's fields to know whether it is in the fast shape. */
    KeyRequest *req = key_request__unpack(NULL, len, p);
    assert_non_null(req);
    bool in_shape = (uint32_t)req->type < 128 && tuple_in_fast_shape(req->tuples[0]);
    key_request__free_unpacked(req, NULL);
    int accepted = compare_decoders(p, len);
    if (in_shape) {
      shaped++;
      if (!accepted) fail_msg("fast path refused a request in its shape (seed %llx)",
                              (unsigned long long)before);
    }
    fast += accepted;
    sq_arena_destroy(&a);
  }
  assert_true(shaped > ROUNDS / 2);
  assert_int_equal(fast, shaped);
}

static void test_mutated_and_random_bytes_never_decode_differently(void **state) {
  (void)state;
  int accepted = 0, refused = 0;
  for (int i = 0; i < ROUNDS; i++) {
    sq_arena_t a;
    sq_arena_init(&a, 8192);
    size_t len;
    uint8_t *p = rnd_request(&a, below(3), &len);
    uint8_t *m = sq_arena_alloc(&a, len + 8);
    memcpy(m, p, len);
    int edits = 1 + (int)below(3);
    for (int e = 0; e < edits; e++) {
      uint32_t what = below(4);
      if (what == 0 && len) m[below((uint32_t)len)] = (uint8_t)rnd();     /* any byte */
      if (what == 1 && len) m[below((uint32_t)len)] ^= (uint8_t)(1u << below(8)); /* a bit */
      if (what == 2 && len) len = below((uint32_t)len);                    /* cut */
      if (what == 3) {                                                     /* grow */
        m[len] = (uint8_t)rnd();
        len++;
      }
    }
    if (compare_decoders(m, len)) accepted++;
    else refused++;
    uint8_t junk[64];
    size_t jl = below(sizeof(junk));
    for (size_t k = 0; k < jl; k++) junk[k] = (uint8_t)rnd();
    compare_decoders(junk, jl);
    sq_arena_destroy(&a);
  }
  assert_true(accepted > 0 && refused > 0);
}

static int fast_accepts(const uint8_t *p, size_t len) {
  sq_arena_t a;
  sq_arena_init(&a, 1024);
  KeyRequest *req = NULL;
  int rc = kvs_wire_request_decode(p, len, &a, &req, NULL);
  sq_arena_destroy(&a);
  return rc;
}

static void test_shapes_outside_the_grammar_fall_back(void **state) {
  (void)state;
  /* Each is a valid KeyRequest that protobuf-c accepts; the fast path must refuse. */
  static const struct {
    const char *why;
    uint8_t bytes[16];
    size_t len;
  } cases[] = {
      {"no tuple", {0x08, 0x01}, 2},
      {"two tuples", {0x08, 0x01, 0x12, 0x02, 0x0a, 0x00, 0x12, 0x00}, 8},
      {"fields out of order", {0x12, 0x00, 0x08, 0x01}, 4},
      {"a field repeated", {0x08, 0x01, 0x08, 0x02, 0x12, 0x00}, 6},
      {"unknown field", {0x08, 0x01, 0x12, 0x00, 0x28, 0x01}, 6},
      {"non-minimal varint", {0x08, 0x81, 0x00, 0x12, 0x00}, 5},
      {"two-byte enum", {0x08, 0x80, 0x01, 0x12, 0x00}, 5},
      {"tuple error_message", {0x08, 0x01, 0x12, 0x04, 0xa2, 0x06, 0x01, 0x78}, 8},
      {"bool other than 0/1", {0x12, 0x02, 0x30, 0x02}, 4},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    sq_arena_t a;
    sq_arena_init(&a, 1024);
    KeyRequest *slow = NULL;
    assert_int_equal(sq_proto_unpack(&key_request__descriptor, sq_arena_allocator(&a),
                                     cases[i].bytes, cases[i].len, SIZE_MAX,
                                     (ProtobufCMessage **)&slow), 0);
    sq_arena_destroy(&a);
    if (fast_accepts(cases[i].bytes, cases[i].len) != SQ_EPROTO)
      fail_msg("fast path accepted: %s", cases[i].why);
  }
}

static void test_typical_get_and_put_take_the_fast_path(void **state) {
  (void)state;
  sq_arena_t a;
  sq_arena_init(&a, 4096);
  KeyTuple t = KEY_TUPLE__INIT, *tp = &t;
  KeyRequest req = KEY_REQUEST__INIT;
  uint8_t value[] = {0x08, 0x05, 0x12, 0x02, 'h', 'i'};
  t.key = "key:00000042";
  t.lattice_type = LATTICE_TYPE__LWW;
  t.payload.data = value;
  t.payload.len = sizeof(value);
  t.address_cache_size = 1;
  req.type = REQUEST_TYPE__PUT;
  req.tuples = &tp;
  req.n_tuples = 1;
  req.response_address = "tcp://127.0.0.1:40000";
  req.request_id = "7.3.1000";
  size_t len;
  uint8_t *p = pack_request(&a, &req, &len);
  KeyRequest *got = NULL;
  assert_int_equal(kvs_wire_request_decode(p, len, &a, &got, NULL), 0);
  assert_int_equal(got->type, REQUEST_TYPE__PUT);
  assert_string_equal(got->tuples[0]->key, "key:00000042");
  assert_string_equal(got->response_address, "tcp://127.0.0.1:40000");
  assert_string_equal(got->request_id, "7.3.1000");
  assert_int_equal(got->tuples[0]->payload.len, sizeof(value));
  assert_memory_equal(got->tuples[0]->payload.data, value, sizeof(value));
  assert_int_equal(compare_decoders(p, len), 1);
  sq_arena_destroy(&a);
}

static void test_responses_pack_to_exactly_protobuf_c_bytes(void **state) {
  (void)state;
  for (int i = 0; i < ROUNDS; i++) {
    sq_arena_t a;
    sq_arena_init(&a, 8192);
    KeyResponse resp = KEY_RESPONSE__INIT;
    resp.type = (RequestType)rnd_enum();
    resp.n_tuples = below(4);
    resp.tuples = sq_arena_alloc(&a, (resp.n_tuples + 1) * sizeof(KeyTuple *));
    for (size_t k = 0; k < resp.n_tuples; k++) {
      resp.tuples[k] = sq_arena_alloc(&a, sizeof(KeyTuple));
      rnd_tuple(&a, resp.tuples[k]);
    }
    if (below(8)) resp.response_id = rnd_string(&a, 30);
    if (!below(4)) resp.error = (AnnaError)rnd_enum();
    if (!below(6)) resp.error_message = rnd_string(&a, 200);
    size_t want = key_response__get_packed_size(&resp);
    size_t got = kvs_wire_response_size(&resp, NULL);
    assert_int_equal(got, want);
    if (want) {
      uint8_t *x = sq_arena_alloc(&a, want), *y = sq_arena_alloc(&a, want);
      assert_int_equal(key_response__pack(&resp, x), want);
      assert_int_equal(kvs_wire_response_pack(&resp, NULL, y), want);
      assert_memory_equal(x, y, want);
      /* With the lengths of the id and first key handed in (as the worker does): the
       * same bytes. */
      kvs_wire_known_t known = {0};
      known.request_id = resp.response_id;
      known.request_id_len = resp.response_id ? strlen(resp.response_id) : 0;
      if (resp.n_tuples) {
        known.key = resp.tuples[0]->key;
        known.key_len = known.key ? strlen(known.key) : 0;
      }
      assert_int_equal(kvs_wire_response_size(&resp, &known), want);
      memset(y, 0, want);
      assert_int_equal(kvs_wire_response_pack(&resp, &known, y), want);
      assert_memory_equal(x, y, want);
    }
    sq_arena_destroy(&a);
  }
}

static void test_negative_enums_are_left_to_protobuf_c(void **state) {
  (void)state;
  KeyTuple t = KEY_TUPLE__INIT, *tp = &t;
  KeyResponse resp = KEY_RESPONSE__INIT;
  resp.response_id = "1";
  resp.tuples = &tp;
  resp.n_tuples = 1;
  t.lattice_type = (LatticeType)-1;
  assert_int_equal(kvs_wire_response_size(&resp, NULL), 0);
  t.lattice_type = LATTICE_TYPE__LWW;
  resp.error = (AnnaError)-3;
  assert_int_equal(kvs_wire_response_size(&resp, NULL), 0);
  resp.error = ANNA_ERROR__NO_ERROR;
  assert_int_equal(kvs_wire_response_size(&resp, NULL), key_response__get_packed_size(&resp));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_one_tuple_request_protobuf_packs_decodes_the_same),
      cmocka_unit_test(test_mutated_and_random_bytes_never_decode_differently),
      cmocka_unit_test(test_shapes_outside_the_grammar_fall_back),
      cmocka_unit_test(test_typical_get_and_put_take_the_fast_path),
      cmocka_unit_test(test_responses_pack_to_exactly_protobuf_c_bytes),
      cmocka_unit_test(test_negative_enums_are_left_to_protobuf_c),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
