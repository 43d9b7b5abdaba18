/* Tests of sched_pending, the scheduler's list of calls waiting for an executor:
 * FIFO order, the item and byte bounds (a refused add leaves the list unchanged),
 * due entries taken out of the middle without disturbing the rest, ownership of the
 * copied messages (ASan's leak check fails the test if one is lost). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sched_pending.h"
#include "sq_error.h"

static sched_pending_t *mk(size_t items, size_t bytes) {
  sched_pending_t *p = NULL;
  assert_int_equal(sched_pending_create(items, bytes, &p), 0);
  return p;
}

/* Parks a call whose message is its own text, e.g. "call-3", due at until. */
static int park(sched_pending_t *p, const char *text, uint64_t until) {
  sched_pending_item_t it = {.kind = SCHED_PENDING_CALL, .msg = (uint8_t *)text,
                             .len = strlen(text), .parked_ms = 1, .until_ms = until,
                             .tries = 1};
  snprintf(it.id, sizeof it.id, "id-%s", text);
  return sched_pending_add(p, &it);
}

static void expect(sched_pending_item_t *it, const char *text) {
  assert_int_equal(it->len, strlen(text));
  assert_memory_equal(it->msg, text, it->len);
  char id[64];
  snprintf(id, sizeof id, "id-%s", text);
  assert_string_equal(it->id, id);
  sched_pending_item_clear(it);
  assert_null(it->msg);
}

static void test_entries_leave_in_the_order_they_were_parked(void **state) {
  (void)state;
  sched_pending_t *p = mk(4, 1024);
  sched_pending_item_t it;
  char text[4][16];
  for (int round = 0; round < 3; round++) { /* wraps the ring several times */
    for (int i = 0; i < 4; i++) {
      snprintf(text[i], sizeof text[i], "r%d-c%d", round, i);
      assert_int_equal(park(p, text[i], 100), 0);
    }
    for (int i = 0; i < 4; i++) {
      assert_true(sched_pending_pop(p, &it));
      expect(&it, text[i]);
    }
    assert_false(sched_pending_pop(p, &it));
    assert_int_equal(sched_pending_bytes(p), 0);
  }
  sched_pending_destroy(p);
}

static void test_full_list_refuses_by_count_and_by_bytes_unchanged(void **state) {
  (void)state;
  sched_pending_t *p = mk(2, 10);
  assert_int_equal(park(p, "aaaa", 100), 0);
  assert_int_equal(park(p, "bbbbbbb", 100), SQ_ETOOBIG); /* 4 + 7 > 10 bytes */
  assert_int_equal(sched_pending_count(p), 1);
  assert_int_equal(sched_pending_bytes(p), 4);
  assert_int_equal(park(p, "cccccc", 100), 0); /* exactly 10 */
  assert_int_equal(park(p, "", 100), SQ_ETOOBIG); /* 2 items */
  assert_int_equal(sched_pending_count(p), 2);
  assert_int_equal(sched_pending_bytes(p), 10);
  sched_pending_item_t it;
  assert_true(sched_pending_pop(p, &it));
  expect(&it, "aaaa");
  assert_int_equal(park(p, "dddd", 100), 0); /* room again */
  assert_int_equal(sched_pending_bytes(p), 10);
  sched_pending_destroy(p); /* frees what is still parked */
}

static void test_due_entries_are_taken_from_anywhere_and_the_rest_keep_order(void **state) {
  (void)state;
  sched_pending_t *p = mk(8, 1024);
  sched_pending_item_t it;
  assert_int_equal(park(p, "late-1", 500), 0);
  assert_int_equal(park(p, "soon-1", 100), 0);
  assert_int_equal(park(p, "late-2", 600), 0);
  assert_int_equal(park(p, "soon-2", 200), 0);
  assert_false(sched_pending_pop_due(p, 99, &it));
  assert_true(sched_pending_pop_due(p, 200, &it));
  expect(&it, "soon-1");
  assert_true(sched_pending_pop_due(p, 200, &it));
  expect(&it, "soon-2");
  assert_false(sched_pending_pop_due(p, 200, &it));
  assert_int_equal(sched_pending_count(p), 2);
  assert_int_equal(sched_pending_bytes(p), 12);
  assert_true(sched_pending_pop(p, &it));
  expect(&it, "late-1");
  assert_true(sched_pending_pop_due(p, 600, &it)); /* due exactly at until_ms */
  expect(&it, "late-2");
  assert_int_equal(sched_pending_count(p), 0);
  sched_pending_destroy(p);
}

static void test_popped_entry_keeps_its_fields_and_can_be_parked_again(void **state) {
  (void)state;
  sched_pending_t *p = mk(2, 64);
  sched_pending_item_t it = {.kind = SCHED_PENDING_DAG, .msg = (uint8_t *)"dagcall",
                             .len = 7, .parked_ms = 10, .until_ms = 20, .tries = 2};
  memset(it.id, 'x', sizeof it.id - 1); /* the longest id */
  assert_int_equal(sched_pending_add(p, &it), 0);
  sched_pending_item_t got;
  assert_true(sched_pending_pop(p, &got));
  assert_int_equal(got.kind, SCHED_PENDING_DAG);
  assert_int_equal(got.parked_ms, 10);
  assert_int_equal(got.until_ms, 20);
  assert_int_equal(got.tries, 2);
  assert_string_equal(got.id, it.id);
  assert_ptr_not_equal(got.msg, it.msg); /* a copy */
  assert_int_equal(sched_pending_add(p, &got), 0); /* back at the tail, copied again */
  sched_pending_item_clear(&got);
  assert_int_equal(sched_pending_count(p), 1);
  sched_pending_destroy(p);
  sched_pending_destroy(NULL);
}

static void test_create_refuses_zero_items(void **state) {
  (void)state;
  sched_pending_t *p = (sched_pending_t *)&p;
  assert_int_equal(sched_pending_create(0, 10, &p), SQ_EINVAL);
  assert_null(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_entries_leave_in_the_order_they_were_parked),
      cmocka_unit_test(test_full_list_refuses_by_count_and_by_bytes_unchanged),
      cmocka_unit_test(test_due_entries_are_taken_from_anywhere_and_the_rest_keep_order),
      cmocka_unit_test(test_popped_entry_keeps_its_fields_and_can_be_parked_again),
      cmocka_unit_test(test_create_refuses_zero_items),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
