/* test_zmq: sq_zmq on real sockets (inproc and tcp loopback).
 *
 * Pins: a protobuf message survives a PUSH->PULL round trip; frames over the limit,
 * garbage and multi-frame messages are rejected and the socket keeps serving; the
 * PUSH cache evicts the least recently used socket; a send to a dead peer returns
 * -EAGAIN once the high-water mark is reached instead of blocking; the cache closes
 * sockets idle for idle_ms (not sooner, least recently used first, a bounded number
 * per call) and its sockets back off reconnecting to a departed peer yet reach one
 * that returns within a second; bind errors name the address and the reason;
 * endpoints parse.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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

/* The cache tests keep what they open in a fixture, so that a failed assertion still
 * closes it in teardown instead of leaving zmq_ctx_term waiting forever. */
typedef struct {
  void *zctx;
  sq_zmq_cache_t *cache[3];
  void *sock[3]; /* PULL or monitor sockets the test made */
} zfix_t;

static int setup_fix(void **state) {
  zfix_t *f = calloc(1, sizeof(*f));
  if (!f) return -1;
  *state = f;
  f->zctx = zmq_ctx_new();
  return f->zctx ? 0 : -1;
}

static int teardown_fix(void **state) {
  zfix_t *f = *state;
  for (int i = 0; i < 3; i++) sq_zmq_cache_destroy(f->cache[i]); /* closes monitors */
  for (int i = 0; i < 3; i++)
    if (f->sock[i]) zmq_close(f->sock[i]);
  int rc = zmq_ctx_term(f->zctx);
  free(f);
  return rc;
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

/* Writes into ep a loopback endpoint nothing listens on: a port the kernel handed out
 * and took back. A plain socket, never listening, closed synchronously: closing a
 * ZeroMQ socket instead would leave its listener up for a moment in the I/O thread,
 * where a connection could land and swallow a message. */
static void closed_endpoint(char *ep, size_t len) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  int rc = bind(fd, (struct sockaddr *)&a, sizeof(a));
  if (rc == 0) rc = getsockname(fd, (struct sockaddr *)&a, &alen);
  close(fd);
  assert_int_equal(rc, 0);
  assert_int_equal(sq_zmq_endpoint_tcp(ep, len, "127.0.0.1", ntohs(a.sin_port)), 0);
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
  zfix_t *f = *state;
  char ep[128];
  closed_endpoint(ep, sizeof(ep));
  sq_zmq_cache_options_t o = {.max_sockets = 4, .sndhwm = 10, .linger_ms = 0};
  assert_int_equal(sq_zmq_cache_create(f->zctx, &o, &f->cache[0]), 0);
  sq_zmq_cache_t *cache = f->cache[0];
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
}

/* Makes f->cache[0] with linger 0 and the given size and idle time. */
static sq_zmq_cache_t *fix_cache(zfix_t *f, size_t max_sockets, int idle_ms) {
  sq_zmq_cache_options_t o = {
      .max_sockets = max_sockets, .linger_ms = 0, .idle_ms = idle_ms};
  assert_int_equal(sq_zmq_cache_create(f->zctx, &o, &f->cache[0]), 0);
  return f->cache[0];
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* The cache stamps sockets with a coarse clock (a tick of a few ms): timing checks
 * allow this much on top of idle_ms either way. */
#define CLOCK_SLACK_S 0.02

static void test_cache_expires_socket_after_idle_ms_and_not_before(void **state) {
  zfix_t *f = *state;
  void *s;
  sq_zmq_cache_t *c = fix_cache(f, 8, 100);
  double before = now_s();
  assert_int_equal(sq_zmq_cache_get(c, "inproc://idle-a", &s), 0);
  double after = now_s();
  sleep_ms(30);
  size_t early = sq_zmq_cache_expire(c);
  double early_at = now_s();
  /* Only meaningful if the machine did not stall past idle_ms (it never should). */
  if (early_at - before < 0.1 - CLOCK_SLACK_S) {
    assert_int_equal(early, 0);
    assert_int_equal(sq_zmq_cache_size(c), 1);
  } else {
    print_message("stalled %.3f s: skipping the not-yet-expired check\n", early_at - before);
  }
  while (now_s() - after < 0.1 + CLOCK_SLACK_S) sleep_ms(10);
  assert_int_equal(sq_zmq_cache_expire(c) + early, 1);
  assert_int_equal(sq_zmq_cache_size(c), 0);
  assert_int_equal(sq_zmq_cache_stats(c).expirations, 1);
  assert_int_equal(sq_zmq_cache_drop(c, "inproc://idle-a"), SQ_ENOTFOUND);
  assert_int_equal(sq_zmq_cache_get(c, "inproc://idle-a", &s), 0); /* reconnects */
  assert_int_equal(sq_zmq_cache_stats(c).connects, 2);
  assert_int_equal(sq_zmq_cache_size(c), 1);
}

static void test_cache_keeps_socket_in_use_and_expires_idle_one_on_send(void **state) {
  zfix_t *f = *state;
  assert_int_equal(sq_zmq_pull_bind(f->zctx, "inproc://busy", 1024, 0, NULL, 0, &f->sock[0]),
                   0);
  void *busy, *busy2, *idle;
  sq_zmq_cache_t *c = fix_cache(f, 8, 100);
  assert_int_equal(sq_zmq_cache_get(c, "inproc://busy", &busy), 0);
  assert_int_equal(sq_zmq_cache_get(c, "inproc://idle", &idle), 0);
  double idle_used = now_s(), last = idle_used, max_gap = 0;
  int sends = 0;
  while (now_s() - idle_used < 0.4) { /* the busy socket is used every ~10 ms */
    sleep_ms(10);
    assert_int_equal(sq_zmq_cache_send(c, "inproc://busy", "x", 1), 0);
    sends++;
    double t = now_s();
    if (t - last > max_gap) max_gap = t - last;
    last = t;
  }
  /* The idle socket was unused for >= 0.4 s: some send since closed it. */
  assert_int_equal(sq_zmq_cache_drop(c, "inproc://idle"), SQ_ENOTFOUND);
  assert_int_equal(sq_zmq_cache_stats(c).expirations, 1);
  if (max_gap < 0.1 - CLOCK_SLACK_S) {
    assert_int_equal(sq_zmq_cache_get(c, "inproc://busy", &busy2), 0);
    assert_ptr_equal(busy, busy2);
    assert_int_equal(sq_zmq_cache_stats(c).connects, 2);
  } else {
    print_message("stalled %.3f s between sends: skipping the kept-socket check\n", max_gap);
  }
  zmq_msg_t frame;
  for (int i = 0; i < sends; i++) {
    assert_int_equal(sq_zmq_recv_frame(f->sock[0], 16, 0, &frame), 0);
    zmq_msg_close(&frame);
  }
}

static void test_cache_expires_from_lru_end_and_keeps_lru_order(void **state) {
  zfix_t *f = *state;
  void *s;
  sq_zmq_cache_t *c = fix_cache(f, 3, 300);
  assert_int_equal(sq_zmq_cache_get(c, "inproc://a", &s), 0);
  assert_int_equal(sq_zmq_cache_get(c, "inproc://b", &s), 0);
  assert_int_equal(sq_zmq_cache_get(c, "inproc://c", &s), 0);
  double abc_used = now_s();
  sleep_ms(200);
  double b_before = now_s();
  assert_int_equal(sq_zmq_cache_get(c, "inproc://b", &s), 0); /* LRU: b c a */
  bool stalled = now_s() - abc_used >= 0.3 - CLOCK_SLACK_S;
  while (now_s() - abc_used < 0.3 + CLOCK_SLACK_S) sleep_ms(10);
  assert_int_equal(sq_zmq_cache_get(c, "inproc://d", &s), 0); /* expires a and c */
  stalled = stalled || now_s() - b_before >= 0.3 - CLOCK_SLACK_S;
  if (stalled) {
    print_message("stalled: b may have expired too; skipping the order checks\n");
    return;
  }
  sq_zmq_cache_stats_t st = sq_zmq_cache_stats(c);
  assert_int_equal(st.expirations, 2);
  assert_int_equal(st.evictions, 0); /* expiry made room: d needed no eviction */
  assert_int_equal(sq_zmq_cache_size(c), 2);
  assert_int_equal(sq_zmq_cache_get(c, "inproc://e", &s), 0); /* LRU: e d b */
  assert_int_equal(sq_zmq_cache_get(c, "inproc://f", &s), 0); /* evicts b */
  assert_int_equal(sq_zmq_cache_stats(c).evictions, 1);
  assert_int_equal(sq_zmq_cache_drop(c, "inproc://b"), SQ_ENOTFOUND);
  assert_int_equal(sq_zmq_cache_drop(c, "inproc://a"), SQ_ENOTFOUND);
  assert_int_equal(sq_zmq_cache_drop(c, "inproc://c"), SQ_ENOTFOUND);
  assert_int_equal(sq_zmq_cache_drop(c, "inproc://d"), 0);
  assert_int_equal(sq_zmq_cache_drop(c, "inproc://e"), 0);
  assert_int_equal(sq_zmq_cache_drop(c, "inproc://f"), 0);
}

static void test_cache_expiry_work_per_call_is_bounded(void **state) {
  zfix_t *f = *state;
  sq_zmq_cache_options_t never = {.linger_ms = 0, .idle_ms = SQ_ZMQ_CACHE_IDLE_NEVER};
  char ep[32];
  void *s;
  sq_zmq_cache_t *c = fix_cache(f, 64, 30);
  assert_int_equal(sq_zmq_cache_create(f->zctx, &never, &f->cache[1]), 0);
  for (int i = 0; i < 40; i++) {
    snprintf(ep, sizeof(ep), "inproc://n%d", i);
    assert_int_equal(sq_zmq_cache_get(c, ep, &s), 0);
  }
  assert_int_equal(sq_zmq_cache_get(f->cache[1], "inproc://kept", &s), 0);
  sleep_ms(30 + 100);
  assert_int_equal(sq_zmq_cache_get(c, "inproc://n39", &s), 0); /* used: stays */
  assert_int_equal(sq_zmq_cache_stats(c).expirations, SQ_ZMQ_CACHE_EXPIRE_BATCH);
  assert_int_equal(sq_zmq_cache_expire(c), SQ_ZMQ_CACHE_EXPIRE_BATCH);
  assert_int_equal(sq_zmq_cache_expire(c), 39 - 2 * SQ_ZMQ_CACHE_EXPIRE_BATCH);
  assert_int_equal(sq_zmq_cache_stats(c).expirations, 39);
  assert_int_equal(sq_zmq_cache_size(c), 1);
  assert_int_equal(sq_zmq_cache_expire(f->cache[1]), 0); /* IDLE_NEVER keeps it */
  assert_int_equal(sq_zmq_cache_size(f->cache[1]), 1);
}

/* Connection retries one socket's monitor reported: how many, the longest interval. */
typedef struct {
  void *mon;
  int retries;
  unsigned max_ivl_ms;
} retry_count_t;

/* Reads the monitor events waiting on r->mon (two frames each: event + value, then
 * the endpoint) and counts ZMQ_EVENT_CONNECT_RETRIED, whose value is the wait in ms
 * before the next attempt. */
static void retries_drain(retry_count_t *r) {
  zmq_msg_t ev, addr;
  for (;;) {
    zmq_msg_init(&ev);
    if (zmq_msg_recv(&ev, r->mon, ZMQ_DONTWAIT) < 0) break;
    uint16_t event = 0;
    uint32_t value = 0;
    if (zmq_msg_size(&ev) >= 6) {
      memcpy(&event, zmq_msg_data(&ev), 2);
      memcpy(&value, (char *)zmq_msg_data(&ev) + 2, 4);
    }
    zmq_msg_close(&ev);
    zmq_msg_init(&addr);
    zmq_msg_recv(&addr, r->mon, 0);
    zmq_msg_close(&addr);
    if (event != ZMQ_EVENT_CONNECT_RETRIED) continue;
    r->retries++;
    if (value > r->max_ivl_ms) r->max_ivl_ms = value;
  }
  zmq_msg_close(&ev);
}

/* Makes f->cache[i] (reconnect_ivl_max_ms as given) holding a socket to ep, and
 * f->sock[i], a PAIR that receives its connection retries. */
static void retries_watch(zfix_t *f, int i, const char *ep, int ivl_max_ms,
                          retry_count_t *r) {
  sq_zmq_cache_options_t o = {.linger_ms = 0, .reconnect_ivl_max_ms = ivl_max_ms};
  char mon_ep[64];
  void *sock;
  snprintf(mon_ep, sizeof(mon_ep), "inproc://retries-%d", i);
  memset(r, 0, sizeof(*r));
  assert_int_equal(sq_zmq_cache_create(f->zctx, &o, &f->cache[i]), 0);
  assert_int_equal(sq_zmq_cache_get(f->cache[i], ep, &sock), 0);
  assert_int_equal(zmq_socket_monitor(sock, mon_ep, ZMQ_EVENT_CONNECT_RETRIED), 0);
  f->sock[i] = zmq_socket(f->zctx, ZMQ_PAIR);
  assert_non_null(f->sock[i]);
  assert_int_equal(zmq_connect(f->sock[i], mon_ep), 0);
  r->mon = f->sock[i];
}

static void test_cache_sockets_back_off_reconnecting_to_departed_peer(void **state) {
  /* A departed client: nothing listens on its port, each attempt is refused. Two
   * caches watch it side by side: the default back-off, none, and one capped at
   * 300 ms. */
  zfix_t *f = *state;
  char ep[128];
  closed_endpoint(ep, sizeof(ep));
  retry_count_t rb, rp, rc;
  retries_watch(f, 0, ep, 0, &rb);
  retries_watch(f, 1, ep, -1, &rp);
  retries_watch(f, 2, ep, 300, &rc);
  double t0 = now_s();
  while (now_s() - t0 < 1.5) {
    zmq_pollitem_t items[3] = {{rb.mon, 0, ZMQ_POLLIN, 0}, {rp.mon, 0, ZMQ_POLLIN, 0},
                               {rc.mon, 0, ZMQ_POLLIN, 0}};
    zmq_poll(items, 3, 50);
    retries_drain(&rb);
    retries_drain(&rp);
    retries_drain(&rc);
  }
  print_message("connect retries in 1.5 s: %d with back-off (longest wait %u ms), %d "
                "without (longest wait %u ms), %d capped at 300 ms (longest wait %u ms)\n",
                rb.retries, rb.max_ivl_ms, rp.retries, rp.max_ivl_ms, rc.retries,
                rc.max_ivl_ms);
  /* Without back-off libzmq waits 100 ms + up to 100 ms of jitter each time (~10 in
   * 1.5 s); with it 100, 200, 400, 800 ms (+ jitter): 4 in 1.5 s. A slow machine
   * only lowers both counts, so the bounds are one-sided. */
  assert_true(rb.retries >= 2);
  assert_true(rb.retries <= 6);
  assert_true(rb.max_ivl_ms >= 2 * SQ_ZMQ_RECONNECT_IVL_MS);
  assert_true(rp.max_ivl_ms < 2 * SQ_ZMQ_RECONNECT_IVL_MS);
  assert_true(rp.retries > rb.retries);
  /* The cap is the option's: waits stop growing at 300 ms (+ < 100 ms of jitter). */
  assert_true(rc.retries >= 3);
  assert_true(rc.max_ivl_ms >= 2 * SQ_ZMQ_RECONNECT_IVL_MS);
  assert_true(rc.max_ivl_ms < 300 + SQ_ZMQ_RECONNECT_IVL_MS);
}

static void test_cache_socket_reaches_peer_back_within_a_second(void **state) {
  /* The back-off must not lose a peer that restarts quickly: a message queued while
   * it was gone arrives soon after it binds again. */
  zfix_t *f = *state;
  char ep[128];
  closed_endpoint(ep, sizeof(ep));
  sq_zmq_cache_options_t o = {.linger_ms = 0};
  assert_int_equal(sq_zmq_cache_create(f->zctx, &o, &f->cache[0]), 0);
  assert_int_equal(sq_zmq_cache_send(f->cache[0], ep, "back", 4), 0); /* queued */
  sleep_ms(1000);
  assert_int_equal(sq_zmq_pull_bind(f->zctx, ep, 1024, 0, NULL, 0, &f->sock[0]), 0);
  double t0 = now_s();
  int timeout = 5000;
  zmq_setsockopt(f->sock[0], ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
  zmq_msg_t frame;
  assert_int_equal(sq_zmq_recv_frame(f->sock[0], 16, 0, &frame), 0);
  double waited = now_s() - t0;
  assert_memory_equal(zmq_msg_data(&frame), "back", 4);
  zmq_msg_close(&frame);
  print_message("peer back after 1 s reached %.3f s after it bound\n", waited);
  /* Attempts fall at ~0.7-0.9 s and ~1.5-1.8 s after the first: < 1 s expected. */
  assert_true(waited < 3.0);
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
          test_send_to_dead_peer_returns_eagain_at_hwm_without_blocking, setup_fix,
          teardown_fix),
      cmocka_unit_test_setup_teardown(test_cache_expires_socket_after_idle_ms_and_not_before,
                                      setup_fix, teardown_fix),
      cmocka_unit_test_setup_teardown(
          test_cache_keeps_socket_in_use_and_expires_idle_one_on_send, setup_fix,
          teardown_fix),
      cmocka_unit_test_setup_teardown(test_cache_expires_from_lru_end_and_keeps_lru_order,
                                      setup_fix, teardown_fix),
      cmocka_unit_test_setup_teardown(test_cache_expiry_work_per_call_is_bounded, setup_fix,
                                      teardown_fix),
      cmocka_unit_test_setup_teardown(
          test_cache_sockets_back_off_reconnecting_to_departed_peer, setup_fix,
          teardown_fix),
      cmocka_unit_test_setup_teardown(test_cache_socket_reaches_peer_back_within_a_second,
                                      setup_fix, teardown_fix),
      cmocka_unit_test_setup_teardown(test_bind_error_names_address_and_reason, setup_ctx,
                                      teardown_ctx),
      cmocka_unit_test_setup_teardown(test_req_times_out_and_stays_usable, setup_ctx,
                                      teardown_ctx),
      cmocka_unit_test_setup_teardown(test_endpoints_parse_and_format, setup_ctx,
                                      teardown_ctx),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
