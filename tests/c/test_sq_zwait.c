/* test_sq_zwait: waiting on ZeroMQ sockets and fds with one poll(2) (common/sq_zwait.c).
 *
 * Pins: a wait reports exactly the sockets holding a message; a socket served one
 * message of two is reported again (no lost signal after the caller's receive); a
 * message sent while nothing waits is found; a socket used outside the loop is seen
 * after sq_zwait_touch; an empty wait times out; bad sizes are refused; a plain fd is
 * reported with the sockets and on its own; a socket declared drained after EAGAIN is
 * still woken by its next message.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <cmocka.h>
#include <zmq.h>

#include "sq_zwait.h"
#include "sq_error.h"

typedef struct {
  void *ctx;
  void *pull[3], *push[3];
} pairs_t;

static int setup(void **state) {
  static pairs_t p;
  p.ctx = zmq_ctx_new();
  for (int i = 0; i < 3; i++) {
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zwait-%d", i);
    p.pull[i] = zmq_socket(p.ctx, ZMQ_PULL);
    p.push[i] = zmq_socket(p.ctx, ZMQ_PUSH);
    if (zmq_bind(p.pull[i], ep) || zmq_connect(p.push[i], ep)) return -1;
  }
  *state = &p;
  return 0;
}

static int teardown(void **state) {
  pairs_t *p = *state;
  for (int i = 0; i < 3; i++) {
    zmq_close(p->pull[i]);
    zmq_close(p->push[i]);
  }
  zmq_ctx_term(p->ctx);
  return 0;
}

static void take(void *sock) {
  char b[8];
  assert_int_equal(zmq_recv(sock, b, sizeof b, ZMQ_DONTWAIT), 1);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_wait_reports_the_sockets_with_messages_and_none_lost(void **state) {
  pairs_t *p = *state;
  sq_zwait_t w;
  assert_int_equal(sq_zwait_init(&w, p->pull, 3), 0);
  int64_t t0 = now_ms();
  assert_int_equal(sq_zwait_wait(&w, 50), 0); /* nothing: times out */
  assert_true(now_ms() - t0 >= 40);
  assert_int_equal(zmq_send(p->push[1], "a", 1, 0), 1);
  assert_int_equal(zmq_send(p->push[1], "b", 1, 0), 1);
  assert_int_equal(sq_zwait_wait(&w, 2000), 1);
  assert_false(w.ready[0]);
  assert_true(w.ready[1]);
  assert_false(w.ready[2]);
  take(p->pull[1]); /* one of two served: the other is reported at once (not only by
                      * the safety net of a timed-out wait) */
  t0 = now_ms();
  assert_int_equal(sq_zwait_wait(&w, 2000), 1);
  assert_true(now_ms() - t0 < 1000);
  assert_true(w.ready[1]);
  take(p->pull[1]);
  assert_int_equal(zmq_send(p->push[2], "c", 1, 0), 1); /* sent while nobody waits */
  assert_int_equal(sq_zwait_wait(&w, 2000), 1);
  assert_false(w.ready[1]);
  assert_true(w.ready[2]);
  take(p->pull[2]);
  assert_int_equal(sq_zwait_wait(&w, 20), 0);
}

static void test_socket_used_elsewhere_is_seen_after_touch(void **state) {
  pairs_t *p = *state;
  sq_zwait_t w;
  assert_int_equal(sq_zwait_init(&w, p->pull, 3), 0);
  assert_int_equal(sq_zwait_wait(&w, 0), 0); /* every socket asked once: all quiet */
  assert_int_equal(zmq_send(p->push[0], "a", 1, 0), 1);
  assert_int_equal(zmq_send(p->push[0], "b", 1, 0), 1);
  take(p->pull[0]); /* a receive outside the loop consumes the signal */
  sq_zwait_touch(&w, 0);
  int64_t t0 = now_ms();
  assert_int_equal(sq_zwait_wait(&w, 2000), 1);
  assert_true(now_ms() - t0 < 1000);
  assert_true(w.ready[0]);
  take(p->pull[0]);
  sq_zwait_touch(&w, 99); /* out of range: ignored */
}

static void test_bad_sizes_are_refused(void **state) {
  pairs_t *p = *state;
  sq_zwait_t w;
  void *many[SQ_ZWAIT_MAX + 1] = {0};
  assert_int_equal(sq_zwait_init(&w, p->pull, 0), SQ_EINVAL);
  assert_int_equal(sq_zwait_init(&w, many, SQ_ZWAIT_MAX + 1), SQ_EINVAL);
}

static void test_plain_fd_is_reported_alone_and_with_sockets(void **state) {
  pairs_t *p = *state;
  sq_zwait_t w;
  int efd = eventfd(0, EFD_NONBLOCK);
  assert_true(efd >= 0);
  assert_int_equal(sq_zwait_init(&w, p->pull, 2), 0);
  assert_int_equal(sq_zwait_add_fd(&w, efd), 2);
  assert_int_equal(sq_zwait_wait(&w, 0), 0);
  uint64_t one = 1;
  assert_int_equal(write(efd, &one, sizeof one), sizeof one);
  assert_int_equal(sq_zwait_wait(&w, 2000), 1);
  assert_true(w.ready[2]);
  assert_false(w.ready[0]);
  assert_int_equal(zmq_send(p->push[0], "a", 1, 0), 1); /* fd still readable too */
  assert_int_equal(sq_zwait_wait(&w, 2000), 2);
  assert_true(w.ready[0]);
  assert_true(w.ready[2]);
  take(p->pull[0]);
  uint64_t got;
  assert_int_equal(read(efd, &got, sizeof got), sizeof got);
  assert_int_equal(sq_zwait_wait(&w, 20), 0);
  assert_int_equal(sq_zwait_add_fd(&w, -1), SQ_EINVAL);
  close(efd);
}

static void test_drained_socket_wakes_on_its_next_message(void **state) {
  pairs_t *p = *state;
  sq_zwait_t w;
  assert_int_equal(sq_zwait_init(&w, p->pull, 3), 0);
  assert_int_equal(zmq_send(p->push[1], "a", 1, 0), 1);
  assert_int_equal(sq_zwait_wait(&w, 2000), 1);
  assert_true(w.ready[1]);
  take(p->pull[1]);
  char b[8];
  assert_int_equal(zmq_recv(p->pull[1], b, sizeof b, ZMQ_DONTWAIT), -1);
  assert_int_equal(zmq_errno(), EAGAIN);
  sq_zwait_drained(&w, 1);
  assert_int_equal(sq_zwait_wait(&w, 20), 0); /* nothing: not reported */
  /* A message after the drain is seen through the fd alone, well before the
   * timed-out wait's safety net would find it. */
  for (int round = 0; round < 50; round++) {
    assert_int_equal(zmq_send(p->push[1], "b", 1, 0), 1);
    int64_t t0 = now_ms();
    assert_int_equal(sq_zwait_wait(&w, 5000), 1);
    assert_true(now_ms() - t0 < 2500);
    assert_true(w.ready[1]);
    take(p->pull[1]);
    assert_int_equal(zmq_recv(p->pull[1], b, sizeof b, ZMQ_DONTWAIT), -1);
    sq_zwait_drained(&w, 1);
  }
  sq_zwait_drained(&w, 99); /* out of range: ignored */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wait_reports_the_sockets_with_messages_and_none_lost),
      cmocka_unit_test(test_socket_used_elsewhere_is_seen_after_touch),
      cmocka_unit_test(test_bad_sizes_are_refused),
      cmocka_unit_test(test_plain_fd_is_reported_alone_and_with_sockets),
      cmocka_unit_test(test_drained_socket_wakes_on_its_next_message),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
