/* test_exec_slot: the supervisor's view of "what runs now" (worker/exec_slot.c).
 *
 * Pins: what an executor process writes into its slot is read by another process
 * after the writer died; end clears the state; over-long destinations are marked cut;
 * a writer that died mid-write (odd sequence) reads as SQ_ECORRUPT, not a hang.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "exec_slot.h"
#include "sq_error.h"

static void test_slot_written_by_child_is_read_after_it_died(void **state) {
  (void)state;
  int fd = -1;
  exec_slot_t *slots = NULL;
  assert_int_equal(exec_slot_create(2, &fd, &slots), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) { /* an "executor": maps the inherited fd itself, starts a call, dies */
    exec_slot_t *mine = NULL;
    if (exec_slot_map(fd, 2, &mine)) _exit(2);
    exec_slot_call_t c = {EXEC_SLOT_CALL, "square", "result-key", NULL, 12345};
    exec_slot_begin(&mine[1], &c);
    _exit(0);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_int_equal(WEXITSTATUS(st), 0);
  exec_slot_t copy;
  assert_int_equal(exec_slot_read(&slots[1], &copy), 0);
  assert_int_equal(copy.state, EXEC_SLOT_CALL);
  assert_string_equal(copy.function, "square");
  assert_string_equal(copy.dest_key, "result-key");
  assert_string_equal(copy.dest_addr, "");
  assert_int_equal(copy.deadline_ms, 12345);
  assert_int_equal(copy.dest_cut, 0);
  assert_int_equal(exec_slot_read(&slots[0], &copy), 0);
  assert_int_equal(copy.state, EXEC_SLOT_IDLE);
  exec_slot_end(&slots[1]);
  assert_int_equal(exec_slot_read(&slots[1], &copy), 0);
  assert_int_equal(copy.state, EXEC_SLOT_IDLE);
  exec_slot_unmap(slots, 2);
  close(fd);
}

static void test_overlong_destination_is_marked_cut(void **state) {
  (void)state;
  int fd = -1;
  exec_slot_t *slots = NULL;
  assert_int_equal(exec_slot_create(1, &fd, &slots), 0);
  char *big = malloc(EXEC_SLOT_DEST_MAX + 10);
  memset(big, 'k', EXEC_SLOT_DEST_MAX + 9);
  big[EXEC_SLOT_DEST_MAX + 9] = 0;
  exec_slot_call_t c = {EXEC_SLOT_DAG, "f", big, "tcp://127.0.0.1:9000", 0};
  exec_slot_begin(&slots[0], &c);
  exec_slot_t copy;
  assert_int_equal(exec_slot_read(&slots[0], &copy), 0);
  assert_int_equal(copy.dest_cut, 1);
  assert_int_equal(strlen(copy.dest_key), EXEC_SLOT_DEST_MAX - 1);
  free(big);
  exec_slot_unmap(slots, 1);
  close(fd);
}

static void test_writer_dead_mid_write_reads_as_corrupt(void **state) {
  (void)state;
  int fd = -1;
  exec_slot_t *slots = NULL;
  assert_int_equal(exec_slot_create(1, &fd, &slots), 0);
  slots[0].seq = 7; /* odd forever: the writer died between its two increments */
  exec_slot_t copy;
  assert_int_equal(exec_slot_read(&slots[0], &copy), SQ_ECORRUPT);
  exec_slot_clear(&slots[0]);
  assert_int_equal(exec_slot_read(&slots[0], &copy), 0);
  exec_slot_unmap(slots, 1);
  close(fd);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_slot_written_by_child_is_read_after_it_died),
      cmocka_unit_test(test_overlong_destination_is_marked_cut),
      cmocka_unit_test(test_writer_dead_mid_write_reads_as_corrupt),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
