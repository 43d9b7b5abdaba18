/* test_exec_errval: error results the supervisor writes without Python
 * (worker/exec_errval.c).
 *
 * Pins: the hand-written pickle of a (str, bytes) tuple is byte-exact protocol 3; the
 * error Value is DEFAULT and holds that pickle of ('ERROR: <message>', GenericResponse)
 * whose GenericResponse carries success=false, the code and squall's extension fields.
 * (The e2e tests load these bytes with Python's pickle.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cloudburst.pb-c.h"
#include "exec_errval.h"

static void test_pickle_of_str_bytes_tuple_is_protocol_3(void **state) {
  (void)state;
  sq_buf_t out = {0};
  assert_int_equal(exec_errval_pickle("ab", (const uint8_t *)"\x01", 1, &out), 0);
  const uint8_t want[] = {0x80, 3, 'X', 2, 0, 0, 0, 'a', 'b', 'B', 1, 0, 0, 0, 1, 0x86, '.'};
  assert_int_equal(out.len, sizeof(want));
  assert_memory_equal(out.data, want, sizeof(want));
  sq_buf_free(&out);
}

static void test_error_value_holds_tuple_with_generic_response(void **state) {
  (void)state;
  exec_errval_t e = {CLOUDBURST_ERROR__EXECUTION_ERROR, "squall.TimeoutError",
                     "f exceeded its time limit", "tb", "127.0.0.1:3"};
  sq_buf_t out = {0};
  assert_int_equal(exec_errval_value(&e, &out), 0);
  Value *v = value__unpack(NULL, out.len, out.data);
  assert_non_null(v);
  assert_int_equal(v->type, SERIALIZER_TYPE__DEFAULT);
  const char *text = "ERROR: f exceeded its time limit";
  size_t tl = strlen(text);
  assert_true(v->body.len > 7 + tl + 5 + 2);
  assert_int_equal(v->body.data[2], 'X');
  assert_int_equal(v->body.data[3], (uint8_t)tl);
  assert_memory_equal(v->body.data + 7, text, tl);
  const uint8_t *b = v->body.data + 7 + tl;
  assert_int_equal(b[0], 'B');
  size_t rl = (size_t)b[1] | (size_t)b[2] << 8 | (size_t)b[3] << 16 | (size_t)b[4] << 24;
  assert_int_equal(7 + tl + 5 + rl + 2, v->body.len);
  GenericResponse *r = generic_response__unpack(NULL, rl, b + 5);
  assert_non_null(r);
  assert_false(r->success);
  assert_int_equal(r->error, CLOUDBURST_ERROR__EXECUTION_ERROR);
  assert_string_equal(r->error_type, "squall.TimeoutError");
  assert_string_equal(r->error_message, "f exceeded its time limit");
  assert_string_equal(r->traceback, "tb");
  assert_string_equal(r->executor, "127.0.0.1:3");
  generic_response__free_unpacked(r, NULL);
  value__free_unpacked(v, NULL);
  sq_buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pickle_of_str_bytes_tuple_is_protocol_3),
      cmocka_unit_test(test_error_value_holds_tuple_with_generic_response),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
