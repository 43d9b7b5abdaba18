/* test_zmtp: the load generator's hand-written ZMTP talks to real libzmq sockets both
 * ways (its PUSH into a libzmq PULL, a libzmq PUSH into its listener), reads frames
 * of every size class whole or cut anywhere, and refuses what it must: a peer of the
 * wrong socket type, a peer that is not ZeroMQ, multi-part and oversized frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "load.h"
#include "sq_error.h"
#include "zmtp.h"

/* Port of a libzmq socket bound to tcp://127.0.0.1:*. */
static int bound_port(void *sock) {
  char ep[128];
  size_t len = sizeof(ep);
  assert_int_equal(zmq_bind(sock, "tcp://127.0.0.1:*"), 0);
  assert_int_equal(zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ep, &len), 0);
  return atoi(strrchr(ep, ':') + 1);
}

/* Writes all of buf to the non-blocking fd. */
static void write_all(int fd, const uint8_t *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EAGAIN) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, 1000);
      continue;
    }
    assert_true(n > 0);
    buf += n;
    len -= (size_t)n;
  }
}

static void test_push_frames_reach_a_libzmq_pull_socket(void **state) {
  (void)state;
  void *ctx = zmq_ctx_new(), *pull = zmq_socket(ctx, ZMQ_PULL);
  int port = bound_port(pull), fd = -1, timeout = 5000;
  char err[160];
  zmq_setsockopt(pull, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
  assert_int_equal(load_tcp_connect("127.0.0.1", port, &fd), 0);
  assert_int_equal(zmtp_handshake(fd, "PUSH", "PULL", err, sizeof(err)), 0);
  /* sizes either side of the 1-byte length limit, and empty */
  size_t sizes[] = {0, 1, 255, 256, 70000};
  uint8_t *body = malloc(70000), head[ZMTP_HEADER_MAX];
  for (size_t i = 0; i < 70000; i++) body[i] = (uint8_t)(i * 7);
  for (size_t k = 0; k < 5; k++) {
    size_t h = zmtp_frame_header(head, sizes[k]);
    assert_int_equal(h, sizes[k] <= 255 ? 2 : 9);
    write_all(fd, head, h);
    write_all(fd, body, sizes[k]);
  }
  uint8_t *got = malloc(70000);
  for (size_t k = 0; k < 5; k++) {
    int n = zmq_recv(pull, got, 70000, 0);
    assert_int_equal(n, (int)sizes[k]);
    if (sizes[k]) assert_memory_equal(got, body, sizes[k]);
  }
  free(body);
  free(got);
  close(fd);
  zmq_close(pull);
  zmq_ctx_term(ctx);
}

static void test_a_libzmq_push_socket_is_accepted_and_read(void **state) {
  (void)state;
  int lfd = -1, port = 0, fd = -1;
  char err[160], ep[64];
  assert_int_equal(load_tcp_listen("127.0.0.1", &lfd, &port), 0);
  void *ctx = zmq_ctx_new(), *push = zmq_socket(ctx, ZMQ_PUSH);
  snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", port);
  assert_int_equal(zmq_connect(push, ep), 0);
  const char *msgs[] = {"first", "", "third message"};
  for (int i = 0; i < 3; i++) assert_int_equal(zmq_send(push, msgs[i], strlen(msgs[i]), 0),
                                               (int)strlen(msgs[i]));
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 5000), 1);
  fd = accept(lfd, NULL, NULL);
  assert_true(fd >= 0);
  assert_int_equal(zmtp_handshake(fd, "PULL", "PUSH", err, sizeof(err)), 0);
  uint8_t buf[4096];
  size_t have = 0;
  int seen = 0;
  while (seen < 3) {
    struct pollfd q = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&q, 1, 5000), 1);
    ssize_t n = read(fd, buf + have, sizeof(buf) - have);
    assert_true(n > 0);
    have += (size_t)n;
    const uint8_t *body;
    uint64_t len;
    bool command;
    size_t used, off = 0;
    while (zmtp_next_frame(buf + off, have - off, 1024, &body, &len, &command, &used) == 1) {
      off += used;
      if (command) continue;
      assert_int_equal(len, strlen(msgs[seen]));
      if (len) assert_memory_equal(body, msgs[seen], len);
      seen++;
    }
    memmove(buf, buf + off, have - off);
    have -= off;
  }
  close(fd);
  close(lfd);
  zmq_close(push);
  zmq_ctx_term(ctx);
}

static void test_a_peer_of_the_wrong_type_is_refused_naming_the_type_expected(void **state) {
  (void)state;
  void *ctx = zmq_ctx_new(), *pub = zmq_socket(ctx, ZMQ_PUB);
  int port = bound_port(pub), fd = -1;
  char err[160];
  assert_int_equal(load_tcp_connect("127.0.0.1", port, &fd), 0);
  /* libzmq either answers READY (Socket-Type PUB) or closes at once on reading ours */
  assert_int_equal(zmtp_handshake(fd, "PUSH", "PULL", err, sizeof(err)), SQ_EPROTO);
  assert_non_null(strstr(err, "PULL socket"));
  close(fd);
  zmq_close(pub);
  zmq_ctx_term(ctx);
}

/* A TCP server that answers anything with a line of text, like a web server. */
static void *not_zeromq(void *arg) {
  int lfd = *(int *)arg;
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  if (poll(&p, 1, 5000) != 1) return NULL;
  int fd = accept(lfd, NULL, NULL);
  if (fd < 0) return NULL;
  static const char reply[] =
      "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
      "................................................................";
  if (write(fd, reply, sizeof(reply) - 1) < 0) perror("write");
  usleep(200000);
  close(fd);
  return NULL;
}

static void test_a_peer_that_is_not_zeromq_is_refused_in_words(void **state) {
  (void)state;
  int lfd = -1, port = 0, fd = -1;
  char err[160];
  assert_int_equal(load_tcp_listen("127.0.0.1", &lfd, &port), 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, not_zeromq, &lfd), 0);
  assert_int_equal(load_tcp_connect("127.0.0.1", port, &fd), 0);
  assert_int_equal(zmtp_handshake(fd, "PUSH", "PULL", err, sizeof(err)), SQ_EPROTO);
  assert_non_null(strstr(err, "does not speak ZMTP"));
  pthread_join(th, NULL);
  close(fd);
  close(lfd);
}

static void test_frames_cut_anywhere_wait_for_the_rest(void **state) {
  (void)state;
  uint8_t buf[9 + 300];
  size_t h = zmtp_frame_header(buf, 300);
  memset(buf + h, 'x', 300);
  const uint8_t *body;
  uint64_t len;
  bool command;
  size_t used;
  for (size_t cut = 0; cut < h + 300; cut++)
    assert_int_equal(zmtp_next_frame(buf, cut, 1000, &body, &len, &command, &used), 0);
  assert_int_equal(zmtp_next_frame(buf, h + 300, 1000, &body, &len, &command, &used), 1);
  assert_int_equal(len, 300);
  assert_int_equal(used, h + 300);
  assert_ptr_equal(body, buf + h);
  assert_false(command);
}

static void test_multipart_oversized_and_unknown_flags_are_errors(void **state) {
  (void)state;
  const uint8_t *body;
  uint64_t len;
  bool command;
  size_t used;
  uint8_t more[] = {0x01, 1, 'a'}, unknown[] = {0x10, 1, 'a'}, command_ping[] = {0x04, 1, 4};
  assert_int_equal(zmtp_next_frame(more, 3, 100, &body, &len, &command, &used), SQ_EPROTO);
  assert_int_equal(zmtp_next_frame(unknown, 3, 100, &body, &len, &command, &used), SQ_EPROTO);
  uint8_t big[ZMTP_HEADER_MAX];
  size_t h = zmtp_frame_header(big, 1u << 20);
  assert_int_equal(zmtp_next_frame(big, h, 1000, &body, &len, &command, &used), SQ_EPROTO);
  assert_int_equal(zmtp_next_frame(command_ping, 3, 100, &body, &len, &command, &used), 1);
  assert_true(command);
}

static void test_connect_to_a_closed_port_is_refused_at_once(void **state) {
  (void)state;
  int lfd = -1, port = 0, fd = -1;
  assert_int_equal(load_tcp_listen("127.0.0.1", &lfd, &port), 0);
  close(lfd); /* the port is free again: nothing listens there */
  assert_int_equal(load_tcp_connect("127.0.0.1", port, &fd), -ECONNREFUSED);
  assert_int_equal(fd, -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_push_frames_reach_a_libzmq_pull_socket),
      cmocka_unit_test(test_a_libzmq_push_socket_is_accepted_and_read),
      cmocka_unit_test(test_a_peer_of_the_wrong_type_is_refused_naming_the_type_expected),
      cmocka_unit_test(test_a_peer_that_is_not_zeromq_is_refused_in_words),
      cmocka_unit_test(test_frames_cut_anywhere_wait_for_the_rest),
      cmocka_unit_test(test_multipart_oversized_and_unknown_flags_are_errors),
      cmocka_unit_test(test_connect_to_a_closed_port_is_refused_at_once),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
