/* test_zmq: sq_zmq on real sockets (inproc and tcp loopback).
 *
 * Pins: a protobuf message survives a PUSH->PULL round trip; frames over the limit,
 * garbage and multi-frame messages are rejected and the socket keeps serving; the
 * PUSH cache evicts the least recently used socket; a send to a dead peer returns
 * -EAGAIN once the high-water mark is reached instead of blocking; bind errors name
 * the address and the reason; endpoints parse.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "anna.pb-c.h"
#include "sq_error.h"
#include "sq_zmq.h"

static int setup_ctx(void **state) {
  *state = zmq_ctx_new();
  return *state ? 0 : -1;
}

static int teardown_ctx(void **state) {
  /* Hangs if a socket were left open or lingering forever. */
  return zmq_ctx_term(*state);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Binds a PULL on an ephemeral loopback port; writes its endpoint into ep. */
static void *bind_ephemeral(void *ctx, int64_t max, char *ep, size_t eplen) {
  void *pull = NULL;
  char err[256];
  assert_int_equal(sq_zmq_pull_bind(ctx, "tcp://127.0.0.1:*", max, 0, err, sizeof(err),
                                    &pull), 0);
  assert_int_equal(zmq_getsockopt(pull, ZMQ_LAST_ENDPOINT, ep, &eplen), 0);
  int timeout = 2000;
  zmq_setsockopt(pull, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
  return pull;
}

static void fill_request(KeyRequest *req, KeyTuple *t, KeyTuple **tp) {
  key_request__init(req);
  key_tuple__init(t);
  t->key = "user:42";
  t->lattice_type = LATTICE_TYPE__LWW;
  t->payload.data = (uint8_t *)"\x01\x02\x03";
  t->payload.len = 3;
  tp[0] = t;
  req->type = REQUEST_TYPE__PUT;
  req->n_tuples = 1;
  req->tuples = tp;
  req->response_address = "tcp://127.0.0.1:6460";
  req->request_id = "c1:7";
}

static void test_key_request_round_trips_over_tcp(void **state) {
  char ep[128];
  void *pull = bind_ephemeral(*state, 1 << 20, ep, sizeof(ep));
  sq_zmq_cache_t *cache = NULL;
  assert_int_equal(sq_zmq_cache_create(*state, NULL, &cache), 0);
  KeyRequest req;
  KeyTuple t;
  KeyTuple *tp[1];
  fill_request(&req, &t, tp);
  assert_int_equal(sq_zmq_cache_send_pb(cache, ep, &req.base), 0);
  ProtobufCMessage *m = NULL;
  assert_int_equal(sq_zmq_recv_pb(pull, &key_request__descriptor, 1 << 20, NULL, 0, &m), 0);
  KeyRequest *got = (KeyRequest *)m;
  assert_int_equal(got->type, REQUEST_TYPE__PUT);
  assert_string_equal(got->request_id, "c1:7");
  assert_string_equal(got->response_address, "tcp://127.0.0.1:6460");
  assert_int_equal(got->n_tuples, 1);
  assert_string_equal(got->tuples[0]->key, "user:42");
  assert_int_equal(got->tuples[0]->lattice_type, LATTICE_TYPE__LWW);
  assert_int_equal(got->tuples[0]->payload.len, 3);
  assert_memory_equal(got->tuples[0]->payload.data, "\x01\x02\x03", 3);
  protobuf_c_message_free_unpacked(m, NULL);
  assert_int_equal(sq_zmq_cache_size(cache), 1);
  sq_zmq_cache_destroy(cache);
  zmq_close(pull);
}

static void test_oversize_garbage_and_multiframe_are_rejected_then_serving_continues(
    void **state) {
  void *pull = NULL, *push = NULL;
  assert_int_equal(sq_zmq_pull_bind(*state, "inproc://reject", 1 << 20, 0, NULL, 0, &pull), 0);
  assert_int_equal(sq_zmq_push_connect(*state, "inproc://reject", 100, 0, &push), 0);
  KeyRequest req;
  KeyTuple t;
  KeyTuple *tp[1];
  fill_request(&req, &t, tp);
  size_t packed = protobuf_c_message_get_packed_size(&req.base);
  char big[4096] = {0};
  ProtobufCMessage *m = NULL;
  assert_int_equal(sq_zmq_send_bytes(push, big, sizeof(big)), 0);       /* too big */
  assert_int_equal(sq_zmq_send_bytes(push, "\xff\xff\xff\xff", 4), 0);  /* garbage */
  assert_int_equal(zmq_send(push, "a", 1, ZMQ_SNDMORE), 1);             /* 2 frames */
  assert_int_equal(zmq_send(push, "b", 1, 0), 1);
  assert_int_equal(sq_zmq_send_pb(push, &req.base), 0);                 /* fine */
  assert_int_equal(sq_zmq_recv_pb(pull, &key_request__descriptor, packed, NULL, 0, &m),
                   SQ_ETOOBIG);
  assert_int_equal(sq_zmq_recv_pb(pull, &key_request__descriptor, packed, NULL, 0, &m),
                   SQ_EPROTO);
  assert_int_equal(sq_zmq_recv_pb(pull, &key_request__descriptor, packed, NULL, 0, &m),
                   SQ_EPROTO);
  assert_null(m);
  assert_int_equal(sq_zmq_recv_pb(pull, &key_request__descriptor, packed, NULL, 0, &m), 0);
  assert_string_equal(((KeyRequest *)m)->request_id, "c1:7");
  protobuf_c_message_free_unpacked(m, NULL);
  assert_int_equal(sq_zmq_recv_pb(pull, &key_request__descriptor, packed, NULL,
                                  ZMQ_DONTWAIT, &m), -EAGAIN);
  zmq_close(push);
  zmq_close(pull);
}

static void test_maxmsgsize_drops_oversize_tcp_peer(void **state) {
  char ep[128];
  void *pull = bind_ephemeral(*state, 100, ep, sizeof(ep));
  int timeout = 300;
  zmq_setsockopt(pull, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
  void *push = NULL;
  assert_int_equal(sq_zmq_push_connect(*state, ep, 10, 0, &push), 0);
  char big[1000] = {0};
  assert_int_equal(sq_zmq_send_bytes(push, big, sizeof(big)), 0);
  zmq_msg_t frame;
  assert_int_equal(sq_zmq_recv_frame(pull, 1 << 20, 0, &frame), -EAGAIN);
  zmq_close(push);
  zmq_close(pull);
}

static void test_zero_copy_frame_hands_over_the_bytes(void **state) {
  void *pull = NULL, *push = NULL;
  assert_int_equal(sq_zmq_pull_bind(*state, "inproc://frame", 1024, 0, NULL, 0, &pull), 0);
  assert_int_equal(sq_zmq_push_connect(*state, "inproc://frame", 10, 0, &push), 0);
  assert_int_equal(sq_zmq_send_bytes(push, "hello", 5), 0);
  zmq_msg_t frame;
  assert_int_equal(sq_zmq_recv_frame(pull, 5, 0, &frame), 0);
  assert_int_equal(zmq_msg_size(&frame), 5);
  assert_memory_equal(zmq_msg_data(&frame), "hello", 5);
  zmq_msg_close(&frame);
  zmq_close(push);
  zmq_close(pull);
}

static void test_cache_evicts_least_recently_used_socket(void **state) {
  sq_zmq_cache_t *cache = NULL;
  sq_zmq_cache_options_t o = {.max_sockets = 2, .sndhwm = 10, .linger_ms = 0};
  void *a, *b, *a2, *c;
  assert_int_equal(sq_zmq_cache_create(*state, &o, &cache), 0);
  assert_int_equal(sq_zmq_cache_get(cache, "inproc://a", &a), 0);
  assert_int_equal(sq_zmq_cache_get(cache, "inproc://b", &b), 0);
  assert_int_equal(sq_zmq_cache_get(cache, "inproc://a", &a2), 0); /* a is now recent */
  assert_ptr_equal(a, a2);
  assert_ptr_not_equal(a, b);
  assert_int_equal(sq_zmq_cache_get(cache, "inproc://c", &c), 0);  /* evicts b */
  assert_int_equal(sq_zmq_cache_size(cache), 2);
  sq_zmq_cache_stats_t s = sq_zmq_cache_stats(cache);
  assert_int_equal(s.connects, 3);
  assert_int_equal(s.evictions, 1);
  assert_int_equal(sq_zmq_cache_get(cache, "inproc://a", &a2), 0);  /* still cached */
  assert_ptr_equal(a, a2);
  assert_int_equal(sq_zmq_cache_stats(cache).connects, 3);
  assert_int_equal(sq_zmq_cache_drop(cache, "inproc://b"), SQ_ENOTFOUND); /* was evicted */
  assert_int_equal(sq_zmq_cache_get(cache, "inproc://b", &b), 0);   /* evicts c */
  assert_int_equal(sq_zmq_cache_stats(cache).connects, 4);
  assert_int_equal(sq_zmq_cache_drop(cache, "inproc://c"), SQ_ENOTFOUND);
  assert_int_equal(sq_zmq_cache_drop(cache, "inproc://a"), 0);
  assert_int_equal(sq_zmq_cache_size(cache), 1);
  sq_zmq_cache_destroy(cache);
}

static void test_cache_refuses_untrusted_endpoints(void **state) {
  sq_zmq_cache_t *cache = NULL;
  void *s;
  char longep[SQ_ZMQ_ENDPOINT_MAX + 16];
  memset(longep, 'a', sizeof(longep) - 1);
  memcpy(longep, "tcp://", 6);
  longep[sizeof(longep) - 1] = '\0';
  assert_int_equal(sq_zmq_cache_create(*state, NULL, &cache), 0);
  assert_int_equal(sq_zmq_cache_get(cache, "udp://1.2.3.4:5", &s), SQ_EINVAL);
  assert_int_equal(sq_zmq_cache_get(cache, "", &s), SQ_EINVAL);
  assert_int_equal(sq_zmq_cache_get(cache, longep, &s), SQ_EINVAL);
  assert_int_equal(sq_zmq_cache_get(cache, "tcp://no-port", &s), -EINVAL);
  assert_int_equal(sq_zmq_cache_size(cache), 0);
  sq_zmq_cache_destroy(cache);
}

static void test_send_to_dead_peer_returns_eagain_at_hwm_without_blocking(void **state) {
  char ep[128];
  void *probe = bind_ephemeral(*state, 1024, ep, sizeof(ep));
  zmq_close(probe); /* nothing listens on ep any more */
  sq_zmq_cache_t *cache = NULL;
  sq_zmq_cache_options_t o = {.max_sockets = 4, .sndhwm = 10, .linger_ms = 0};
  assert_int_equal(sq_zmq_cache_create(*state, &o, &cache), 0);
  int sent = 0, refused = 0;
  double t0 = now_s();
  for (int i = 0; i < 5000; i++) {
    int rc = sq_zmq_cache_send(cache, ep, "x", 1);
    if (rc == 0) sent++;
    else if (rc == -EAGAIN) refused++;
    else fail_msg("unexpected %s", sq_errname(rc));
  }
  double elapsed = now_s() - t0;
  print_message("dead peer: %d queued, %d refused with -EAGAIN in %.3f s\n", sent, refused,
                elapsed);
  assert_true(sent >= 1);
  assert_true(sent <= 2 * o.sndhwm);
  assert_int_equal(refused, 5000 - sent);
  assert_int_equal(sq_zmq_cache_stats(cache).drops, (uint64_t)refused);
  assert_true(elapsed < 2.0);
  sq_zmq_cache_destroy(cache);
}

static void test_bind_error_names_address_and_reason(void **state) {
  char ep[128], err[256];
  void *first = bind_ephemeral(*state, 1024, ep, sizeof(ep));
  void *second = NULL;
  assert_int_equal(sq_zmq_pull_bind(*state, ep, 1024, 0, err, sizeof(err), &second),
                   -EADDRINUSE);
  assert_null(second);
  char want[256];
  snprintf(want, sizeof(want), "cannot bind %s: Address already in use (another process "
           "is listening on that port)", ep);
  assert_string_equal(err, want);
  assert_int_equal(sq_zmq_pull_bind(*state, "tcp://127.0.0.1", 1024, 0, err, sizeof(err),
                                    &second), -EINVAL);
  assert_non_null(strstr(err, "cannot bind tcp://127.0.0.1: "));
  assert_non_null(strstr(err, "malformed endpoint"));
  zmq_close(first);
}

static void test_req_times_out_and_stays_usable(void **state) {
  /* A ROUTER that takes requests and never answers: the REQ must time out, not hang,
   * and (REQ_RELAXED) accept the next request. Everything is decided before any
   * assertion, so a failure cannot leave a socket open and wedge zmq_ctx_term. */
  char ep[128];
  size_t eplen = sizeof(ep);
  int linger = 0;
  void *router = zmq_socket(*state, ZMQ_ROUTER);
  zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof(linger));
  int bound = zmq_bind(router, "tcp://127.0.0.1:*");
  zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &eplen);
  void *req = NULL;
  int connected = bound == 0 ? sq_zmq_req_connect(*state, ep, 100, 1024, &req) : -1;
  int sent1 = -1, recvd = 0, sent2 = -1;
  double waited = 0;
  if (connected == 0) {
    zmq_msg_t frame;
    sent1 = sq_zmq_send_bytes(req, "join", 4);
    double t0 = now_s();
    recvd = sq_zmq_recv_frame(req, 1024, 0, &frame);
    waited = now_s() - t0;
    sent2 = sq_zmq_send_bytes(req, "join", 4);
    zmq_close(req);
  }
  zmq_close(router);
  assert_int_equal(bound, 0);
  assert_int_equal(connected, 0);
  /* The first send may find the connection not yet up (-EAGAIN with DONTWAIT). */
  assert_true(sent1 == 0 || sent1 == -EAGAIN);
  assert_int_equal(recvd, -EAGAIN);
  assert_true(waited < 5.0);
  /* Once a request went out, the socket must take the next one (REQ_RELAXED). */
  if (sent1 == 0) assert_int_equal(sent2, 0);
  else assert_true(sent2 == 0 || sent2 == -EAGAIN);
}

static void test_endpoints_parse_and_format(void **state) {
  sq_zmq_endpoint_t e;
  char buf[64];
  assert_int_equal(sq_zmq_endpoint_parse("tcp://10.0.0.7:6200", &e), 0);
  assert_string_equal(e.transport, "tcp");
  assert_string_equal(e.host, "10.0.0.7");
  assert_int_equal(e.port, 6200);
  assert_int_equal(sq_zmq_endpoint_parse("tcp://[::1]:9000", &e), 0);
  assert_string_equal(e.host, "::1");
  assert_int_equal(e.port, 9000);
  assert_int_equal(sq_zmq_endpoint_parse("tcp://*:5000", &e), 0);
  assert_string_equal(e.host, "*");
  assert_int_equal(sq_zmq_endpoint_parse("ipc:///requests/get_0", &e), 0);
  assert_string_equal(e.transport, "ipc");
  assert_string_equal(e.host, "/requests/get_0");
  assert_int_equal(e.port, 0);
  assert_int_equal(sq_zmq_endpoint_parse("inproc://events", &e), 0);
  assert_string_equal(e.transport, "inproc");
  static const char *const bad[] = {"tcp://host", "tcp://:80", "tcp://h:0", "tcp://h:65536",
                                    "tcp://h:12a", "tcp://::1:80", "tcp://[::1]80",
                                    "udp://h:1", "ipc://", "tcp://h:-1"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(sq_zmq_endpoint_parse(bad[i], &e), SQ_EINVAL);
  assert_int_equal(sq_zmq_endpoint_tcp(buf, sizeof(buf), "127.0.0.1", 6201), 0);
  assert_string_equal(buf, "tcp://127.0.0.1:6201");
  assert_int_equal(sq_zmq_endpoint_tcp(buf, sizeof(buf), "fe80::1", 80), 0);
  assert_string_equal(buf, "tcp://[fe80::1]:80");
  assert_int_equal(sq_zmq_endpoint_tcp(buf, 8, "127.0.0.1", 6201), SQ_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_key_request_round_trips_over_tcp, setup_ctx,
                                      teardown_ctx),
      cmocka_unit_test_setup_teardown(
          test_oversize_garbage_and_multiframe_are_rejected_then_serving_continues,
          setup_ctx, teardown_ctx),
      cmocka_unit_test_setup_teardown(test_maxmsgsize_drops_oversize_tcp_peer, setup_ctx,
                                      teardown_ctx),
      cmocka_unit_test_setup_teardown(test_zero_copy_frame_hands_over_the_bytes, setup_ctx,
                                      teardown_ctx),
      cmocka_unit_test_setup_teardown(test_cache_evicts_least_recently_used_socket,
                                      setup_ctx, teardown_ctx),
      cmocka_unit_test_setup_teardown(test_cache_refuses_untrusted_endpoints, setup_ctx,
                                      teardown_ctx),
      cmocka_unit_test_setup_teardown(
          test_send_to_dead_peer_returns_eagain_at_hwm_without_blocking, setup_ctx,
          teardown_ctx),
      cmocka_unit_test_setup_teardown(test_bind_error_names_address_and_reason, setup_ctx,
                                      teardown_ctx),
      cmocka_unit_test_setup_teardown(test_req_times_out_and_stays_usable, setup_ctx,
                                      teardown_ctx),
      cmocka_unit_test_setup_teardown(test_endpoints_parse_and_format, setup_ctx,
                                      teardown_ctx),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
