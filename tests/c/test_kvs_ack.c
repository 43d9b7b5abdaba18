/* test_kvs_ack: the FIFO of replies waiting for durability (kvs/kvs_ack.h), whose
 * bytes live in recycled chunks: interleaved pushes and pops of any size keep every
 * entry's address and bytes intact and in order, across chunk boundaries, oversized
 * entries and a queue that drains and refills. Leaks are caught by ASan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvs_ack.h"

/* The bytes of entry i: a pattern of i, of a size that varies with i. */
static size_t size_of(uint64_t i) {
  if (i % 997 == 0) return 300 * 1024 + i % 7; /* over a chunk */
  if (i % 4099 == 0) return 3u << 20;          /* far over: its own chunk, not kept */
  return (size_t)(i * 37 % 1500);
}

static void fill(uint64_t i, uint8_t *p, size_t n) {
  for (size_t k = 0; k < n; k++) p[k] = (uint8_t)(i * 131 + k);
}

static void check(uint64_t i, const kvs_ack_t *a) {
  char addr[48];
  snprintf(addr, sizeof(addr), "tcp://10.0.0.%llu:%llu", (unsigned long long)(i % 7),
           (unsigned long long)i);
  assert_string_equal(a->address, addr);
  assert_int_equal(a->len, size_of(i));
  assert_int_equal(a->lsn, i);
  for (size_t k = 0; k < a->len; k++)
    if (a->bytes[k] != (uint8_t)(i * 131 + k)) fail_msg("entry %llu byte %zu", (unsigned long long)i, k);
}

static void push(kvs_ack_queue_t *q, uint64_t i) {
  char addr[48];
  int n = snprintf(addr, sizeof(addr), "tcp://10.0.0.%llu:%llu", (unsigned long long)(i % 7),
                   (unsigned long long)i);
  size_t len = size_of(i);
  uint8_t *dst = kvs_ack_reserve(q, i, addr, (size_t)n, len);
  assert_non_null(dst);
  fill(i, dst, len);
}

static void test_interleaved_pushes_and_pops_keep_every_entry_intact_and_in_order(void **state) {
  (void)state;
  kvs_ack_queue_t q = {0};
  uint64_t next_in = 1, next_out = 1;
  srand(7);
  for (int round = 0; round < 400; round++) {
    int pushes = rand() % 60, pops = rand() % 70;
    for (int k = 0; k < pushes; k++) push(&q, next_in++);
    /* Only what is durable leaves: release up to a random log position. */
    uint64_t durable = next_out + (uint64_t)pops;
    const kvs_ack_t *a;
    while ((a = kvs_ack_ready(&q, durable)) != NULL) {
      check(next_out++, a);
      kvs_ack_pop(&q);
    }
    assert_int_equal(kvs_ack_pending(&q), next_in - next_out);
    if (round % 50 == 49) { /* drain completely now and then: chunks start over */
      while ((a = kvs_ack_ready(&q, UINT64_MAX)) != NULL) {
        check(next_out++, a);
        kvs_ack_pop(&q);
      }
      assert_int_equal(kvs_ack_pending(&q), 0);
    }
  }
  assert_true(next_in > 5000); /* passed several oversized entries */
  kvs_ack_destroy(&q);
  assert_int_equal(kvs_ack_pending(&q), 0);
  push(&q, 1); /* a destroyed queue is an empty one again */
  check(1, kvs_ack_ready(&q, 1));
  kvs_ack_destroy(&q);
}

static void test_push_copies_and_entries_wait_for_their_lsn(void **state) {
  (void)state;
  kvs_ack_queue_t q = {0};
  uint8_t bytes[3] = {1, 2, 3};
  assert_int_equal(kvs_ack_push(&q, 5, "a", 1, bytes, 3), 0);
  assert_int_equal(kvs_ack_push(&q, 9, "bb", 2, bytes, 0), 0);
  bytes[0] = 42; /* the queue holds its own copy */
  assert_null(kvs_ack_ready(&q, 4));
  const kvs_ack_t *a = kvs_ack_ready(&q, 5);
  assert_non_null(a);
  assert_string_equal(a->address, "a");
  assert_int_equal(a->bytes[0], 1);
  kvs_ack_pop(&q);
  assert_null(kvs_ack_ready(&q, 8));
  a = kvs_ack_ready(&q, 9);
  assert_string_equal(a->address, "bb");
  assert_int_equal(a->len, 0);
  kvs_ack_pop(&q);
  kvs_ack_pop(&q); /* popping an empty queue is harmless */
  kvs_ack_destroy(&q);
}

/* Replies lent to a sender (ZeroMQ's zero-copy send) keep their bytes while the queue
 * pops them, refills and recycles its chunks, and even after it is destroyed; the
 * last release frees the memory (ASan reports a leak or a use after free otherwise). */
static void test_lent_replies_stay_intact_until_released(void **state) {
  (void)state;
  kvs_ack_queue_t q = {0};
  enum { LENT = 40 };
  void *tokens[LENT];
  const kvs_ack_t *kept[LENT];
  kvs_ack_t copies[LENT];
  uint64_t next_in = 1, next_out = 1;
  for (int k = 0; k < LENT; k++) {
    for (int j = 0; j < 50; j++) push(&q, next_in++);
    const kvs_ack_t *a = kvs_ack_ready(&q, next_out);
    check(next_out++, a);
    tokens[k] = kvs_ack_lend(a);
    copies[k] = *a;
    kept[k] = &copies[k];
    kvs_ack_pop(&q);
    while ((a = kvs_ack_ready(&q, next_in - 1)) != NULL) { /* drain: chunks recycle */
      check(next_out++, a);
      kvs_ack_pop(&q);
    }
    if (k == LENT / 2) {
      for (int m = 0; m <= k; m++) check(copies[m].lsn, kept[m]);
      for (int m = 0; m <= k; m++) kvs_ack_release(tokens[m]); /* some given back early */
    }
  }
  kvs_ack_destroy(&q); /* the rest is still lent */
  for (int m = LENT / 2 + 1; m < LENT; m++) {
    check(copies[m].lsn, kept[m]);
    kvs_ack_release(tokens[m]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lent_replies_stay_intact_until_released),
      cmocka_unit_test(test_interleaved_pushes_and_pops_keep_every_entry_intact_and_in_order),
      cmocka_unit_test(test_push_copies_and_entries_wait_for_their_lsn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
