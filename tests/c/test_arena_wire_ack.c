/* Tests of three small building blocks: the arena allocator, the wire scanner that
 * salvages reply addresses from undecodable requests, and the KVS ack FIFO. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "anna.pb-c.h"
#include "kvs_ack.h"
#include "sq_arena.h"
#include "sq_error.h"
#include "sq_wire.h"

static void test_arena_returns_aligned_distinct_memory_and_reuses_after_reset(void **state) {
  (void)state;
  sq_arena_t arena;
  sq_arena_init(&arena, 1024);
  char *a = sq_arena_alloc(&arena, 10);
  char *b = sq_arena_alloc(&arena, 10);
  assert_non_null(a);
  assert_non_null(b);
  assert_true((uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0);
  assert_true(b >= a + 16);
  memset(a, 1, 10);
  memset(b, 2, 10);
  assert_int_equal(a[9], 1);
  char *big = sq_arena_alloc(&arena, 100000); /* larger than a chunk: own chunk */
  assert_non_null(big);
  memset(big, 3, 100000);
  sq_arena_reset(&arena);
  char *again = sq_arena_alloc(&arena, 10);
  assert_ptr_equal(again, a); /* the regular chunk is kept and reused */
  sq_arena_destroy(&arena);
}

static void test_arena_decodes_protobuf_without_leaks(void **state) {
  (void)state;
  KeyTuple tuple = KEY_TUPLE__INIT;
  tuple.key = "k";
  KeyTuple *tuples[] = {&tuple};
  KeyRequest req = KEY_REQUEST__INIT;
  req.type = REQUEST_TYPE__GET;
  req.n_tuples = 1;
  req.tuples = tuples;
  req.response_address = "tcp://127.0.0.1:1";
  uint8_t buf[128];
  size_t len = key_request__pack(&req, buf);
  sq_arena_t arena;
  sq_arena_init(&arena, 256);
  for (int i = 0; i < 1000; i++) { /* no free: the arena owns everything */
    KeyRequest *out = key_request__unpack(sq_arena_allocator(&arena), len, buf);
    assert_non_null(out);
    assert_string_equal(out->tuples[0]->key, "k");
    sq_arena_reset(&arena);
  }
  sq_arena_destroy(&arena);
}

static void test_wire_finds_reply_address_before_a_broken_field(void **state) {
  (void)state;
  KeyRequest req = KEY_REQUEST__INIT;
  req.type = REQUEST_TYPE__PUT;
  req.response_address = "tcp://10.0.0.1:6800";
  req.request_id = "rid-7";
  uint8_t buf[128];
  size_t len = key_request__pack(&req, buf);
  const uint8_t tail[] = {0x12, 0xff, 0xff, 0xff, 0x0f}; /* field 2, absurd length */
  memcpy(buf + len, tail, sizeof(tail));
  len += sizeof(tail);
  assert_null(key_request__unpack(NULL, len, buf));
  const uint8_t *p;
  size_t n;
  assert_int_equal(sq_wire_find_bytes(buf, len, 3, &p, &n), 0);
  assert_int_equal(n, strlen(req.response_address));
  assert_memory_equal(p, req.response_address, n);
  assert_int_equal(sq_wire_find_bytes(buf, len, 4, &p, &n), 0);
  assert_memory_equal(p, "rid-7", 5);
}

static void test_wire_rejects_cut_off_and_missing_fields(void **state) {
  (void)state;
  const uint8_t cut[] = {0x1a, 0x10, 'a', 'b'}; /* field 3 claims 16 bytes, has 2 */
  const uint8_t *p;
  size_t n;
  assert_int_equal(sq_wire_find_bytes(cut, sizeof(cut), 3, &p, &n), SQ_EPROTO);
  const uint8_t only_varint[] = {0x08, 0x01};
  assert_int_equal(sq_wire_find_bytes(only_varint, 2, 3, &p, &n), SQ_ENOTFOUND);
  assert_int_equal(sq_wire_find_bytes(NULL, 0, 3, &p, &n), SQ_ENOTFOUND);
  uint8_t endless[12];
  memset(endless, 0xff, sizeof(endless));
  size_t pos = 0;
  uint64_t v;
  assert_int_equal(sq_wire_varint(endless, sizeof(endless), &pos, &v), SQ_EPROTO);
  /* Random bytes never read out of bounds (ASan watches). */
  srand(7);
  uint8_t junk[64];
  for (int i = 0; i < 100000; i++) {
    size_t len = (size_t)(rand() % 64);
    for (size_t j = 0; j < len; j++) junk[j] = (uint8_t)rand();
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, junk, len);
    if (sq_wire_find_bytes(copy, len, (uint32_t)(rand() % 6), &p, &n) == 0)
      assert_true(p >= copy && p + n <= copy + len);
    free(copy);
  }
}

static void test_ack_queue_releases_in_order_only_when_durable(void **state) {
  (void)state;
  kvs_ack_queue_t q = {0};
  char addr[32];
  for (uint64_t i = 1; i <= 1000; i++) { /* forces several ring growths */
    snprintf(addr, sizeof(addr), "tcp://h:%llu", (unsigned long long)i);
    uint8_t byte = (uint8_t)i;
    assert_int_equal(kvs_ack_push(&q, i / 10, addr, strlen(addr), &byte, 1), 0);
  }
  assert_int_equal(kvs_ack_pending(&q), 1000);
  size_t released = 0;
  const kvs_ack_t *a;
  while ((a = kvs_ack_ready(&q, 49)) != NULL) {
    released++;
    snprintf(addr, sizeof(addr), "tcp://h:%zu", released);
    assert_string_equal(a->address, addr);
    assert_int_equal(a->bytes[0], (uint8_t)released);
    kvs_ack_pop(&q);
  }
  assert_int_equal(released, 499); /* entries 1..499 have lsn <= 49 */
  assert_null(kvs_ack_ready(&q, 49));
  kvs_ack_destroy(&q); /* frees the remaining 501 */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_arena_returns_aligned_distinct_memory_and_reuses_after_reset),
      cmocka_unit_test(test_arena_decodes_protobuf_without_leaks),
      cmocka_unit_test(test_wire_finds_reply_address_before_a_broken_field),
      cmocka_unit_test(test_wire_rejects_cut_off_and_missing_fields),
      cmocka_unit_test(test_ack_queue_releases_in_order_only_when_durable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
