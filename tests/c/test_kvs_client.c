/* test_kvs_client: the KVS client library against a fake in-process KVS.
 *
 * The fake (one thread) binds, on loopback tcp, a routing socket and two storage
 * "threads". Keys belong to storage thread (sum of key bytes) % 2. It stores payloads
 * in a tiny map (LWW merge by timestamp), answers as squall-kvs does (WRONG_THREAD,
 * KEY_DNE, LATTICE with error_message), and has knobs to misbehave: NO_SERVERS,
 * misrouting, dropping or delaying requests, invalidate, answering tuple by tuple.
 * Knobs and counters are guarded by a mutex; the client runs in the test thread.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "anna.pb-c.h"
#include "client.h"
#include "sq_error.h"

#define FAKE_KEYS 512
#define FAKE_PEERS 8

typedef struct {
  char *key;
  int type;
  uint8_t *payload;
  size_t len;
} fake_entry_t;

typedef struct {
  void *ctx, *routing, *store[2], *ctl_in, *ctl_out;
  char routing_ep[64], store_ep[2][64];
  pthread_t thread;
  pthread_mutex_t mu;
  /* knobs */
  int no_servers;   /* answer NO_SERVERS to this many routing requests */
  int misroute;     /* give this many lookups the wrong storage thread */
  int drop;         /* ignore this many storage requests */
  int delay;        /* answer this many storage requests delay_ms late */
  int delay_ms;
  int invalidate;   /* set invalidate on this many tuples */
  bool split;       /* one KeyResponse per tuple */
  int bad_ips;      /* answer this many lookups with malformed endpoints */
  /* counters */
  int routing_reqs, store_reqs[2], store_tuples[2];
  char last_rid[160];
  /* data */
  fake_entry_t map[FAKE_KEYS];
  size_t nmap;
  char *peer_ep[FAKE_PEERS];
  void *peer[FAKE_PEERS];
  size_t npeers;
} fake_t;

static int fake_owner(const char *key) {
  unsigned s = 0;
  for (; *key; key++) s += (uint8_t)*key;
  return (int)(s % 2);
}

static void fake_send(fake_t *f, const char *ep, const uint8_t *buf, size_t len) {
  size_t i = 0;
  while (i < f->npeers && strcmp(f->peer_ep[i], ep) != 0) i++;
  if (i == f->npeers) {
    assert_true(f->npeers < FAKE_PEERS);
    f->peer[i] = zmq_socket(f->ctx, ZMQ_PUSH);
    int zero = 0;
    zmq_setsockopt(f->peer[i], ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(f->peer[i], ep), 0);
    f->peer_ep[i] = strdup(ep);
    f->npeers++;
  }
  zmq_send(f->peer[i], buf, len, ZMQ_DONTWAIT);
}

static void fake_on_route(fake_t *f, const uint8_t *buf, size_t len) {
  KeyAddressRequest *req = key_address_request__unpack(NULL, len, buf);
  assert_non_null(req);
  pthread_mutex_lock(&f->mu);
  f->routing_reqs++;
  bool empty = f->no_servers > 0 && f->no_servers-- > 0;
  KeyAddressResponse resp = KEY_ADDRESS_RESPONSE__INIT;
  KeyAddressResponse__KeyAddress *as = calloc(req->n_keys, sizeof *as);
  KeyAddressResponse__KeyAddress **ap = calloc(req->n_keys, sizeof *ap);
  char **ips = calloc(req->n_keys, sizeof *ips);
  for (size_t i = 0; i < req->n_keys; i++) {
    key_address_response__key_address__init(&as[i]);
    as[i].key = req->keys[i];
    int t = fake_owner(req->keys[i]);
    if (f->misroute > 0 && f->misroute-- > 0) t = 1 - t;
    ips[i] = f->store_ep[t];
    if (f->bad_ips > 0 && f->bad_ips-- > 0) ips[i] = "http://evil host:6200";
    as[i].n_ips = empty ? 0 : 1;
    as[i].ips = &ips[i];
    ap[i] = &as[i];
  }
  pthread_mutex_unlock(&f->mu);
  resp.error = empty ? ANNA_ERROR__NO_SERVERS : ANNA_ERROR__NO_ERROR;
  resp.n_addresses = req->n_keys;
  resp.addresses = ap;
  resp.response_id = req->request_id;
  uint8_t out[65536];
  size_t n = key_address_response__pack(&resp, out);
  fake_send(f, req->response_address, out, n);
  free(as);
  free(ap);
  free(ips);
  key_address_request__free_unpacked(req, NULL);
}

static fake_entry_t *fake_find(fake_t *f, const char *key) {
  for (size_t i = 0; i < f->nmap; i++)
    if (strcmp(f->map[i].key, key) == 0) return &f->map[i];
  return NULL;
}

static uint64_t lww_ts(const uint8_t *p, size_t n) {
  LWWValue *v = lwwvalue__unpack(NULL, n, p);
  uint64_t ts = v ? v->timestamp : 0;
  lwwvalue__free_unpacked(v, NULL);
  return ts;
}

/* Applies one tuple the way squall-kvs does; fills the answer tuple `a`. */
static void fake_apply(fake_t *f, int t, int type, const KeyTuple *in, KeyTuple *a,
                       char *msg, size_t msgn) {
  a->key = in->key;
  if (fake_owner(in->key) != t) {
    a->error = ANNA_ERROR__WRONG_THREAD;
    snprintf(msg, msgn, "key %s belongs to thread %d, not %d", in->key, 1 - t, t);
    a->error_message = msg;
    return;
  }
  fake_entry_t *e = fake_find(f, in->key);
  if (type == REQUEST_TYPE__GET) {
    if (!e) {
      a->error = ANNA_ERROR__KEY_DNE;
      return;
    }
    a->lattice_type = e->type;
    a->payload = (ProtobufCBinaryData){e->len, e->payload};
    return;
  }
  if (in->lattice_type == LATTICE_TYPE__NONE || (e && e->type != (int)in->lattice_type)) {
    a->error = ANNA_ERROR__LATTICE;
    snprintf(msg, msgn, "fake: key %s holds type %d, the PUT has type %d", in->key,
             e ? e->type : 0, in->lattice_type);
    a->error_message = msg;
    return;
  }
  if (!e) {
    assert_true(f->nmap < FAKE_KEYS);
    e = &f->map[f->nmap++];
    e->key = strdup(in->key);
    e->type = in->lattice_type;
  }
  if (!e->payload || lww_ts(in->payload.data, in->payload.len) >= lww_ts(e->payload, e->len)) {
    free(e->payload);
    e->payload = malloc(in->payload.len + 1);
    memcpy(e->payload, in->payload.data, in->payload.len);
    e->len = in->payload.len;
  }
  a->lattice_type = in->lattice_type;
}

static void fake_reply(fake_t *f, const KeyRequest *req, KeyTuple **tp, size_t n) {
  KeyResponse resp = KEY_RESPONSE__INIT;
  resp.type = req->type;
  resp.response_id = req->request_id;
  resp.n_tuples = n;
  resp.tuples = tp;
  size_t len = key_response__get_packed_size(&resp);
  uint8_t *out = malloc(len + 1);
  key_response__pack(&resp, out);
  fake_send(f, req->response_address, out, len);
  free(out);
}

static void fake_on_store(fake_t *f, int t, const uint8_t *buf, size_t len) {
  KeyRequest *req = key_request__unpack(NULL, len, buf);
  assert_non_null(req);
  pthread_mutex_lock(&f->mu);
  f->store_reqs[t]++;
  f->store_tuples[t] += (int)req->n_tuples;
  snprintf(f->last_rid, sizeof f->last_rid, "%s", req->request_id);
  bool drop = f->drop > 0 && f->drop-- > 0;
  int delay = f->delay > 0 && f->delay-- > 0 ? f->delay_ms : 0;
  KeyTuple *as = calloc(req->n_tuples, sizeof *as);
  KeyTuple **tp = calloc(req->n_tuples, sizeof *tp);
  char (*msgs)[128] = calloc(req->n_tuples, sizeof *msgs);
  for (size_t i = 0; i < req->n_tuples; i++) {
    key_tuple__init(&as[i]);
    fake_apply(f, t, req->type, req->tuples[i], &as[i], msgs[i], sizeof msgs[i]);
    if (as[i].error == ANNA_ERROR__NO_ERROR && req->tuples[i]->address_cache_size &&
        f->invalidate > 0 && f->invalidate-- > 0)
      as[i].invalidate = true;
    tp[i] = &as[i];
  }
  bool split = f->split;
  pthread_mutex_unlock(&f->mu);
  if (delay) usleep((useconds_t)delay * 1000);
  if (!drop && split) {
    for (size_t i = req->n_tuples; i-- > 0;) fake_reply(f, req, &tp[i], 1);
  } else if (!drop) {
    fake_reply(f, req, tp, req->n_tuples);
  }
  free(as);
  free(tp);
  free(msgs);
  key_request__free_unpacked(req, NULL);
}

static void *fake_main(void *arg) {
  fake_t *f = arg;
  zmq_pollitem_t it[4] = {{.socket = f->ctl_in, .events = ZMQ_POLLIN},
                          {.socket = f->routing, .events = ZMQ_POLLIN},
                          {.socket = f->store[0], .events = ZMQ_POLLIN},
                          {.socket = f->store[1], .events = ZMQ_POLLIN}};
  for (;;) {
    if (zmq_poll(it, 4, -1) < 0) continue;
    if (it[0].revents) break;
    for (int s = 1; s < 4; s++) {
      if (!(it[s].revents & ZMQ_POLLIN)) continue;
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, it[s].socket, ZMQ_DONTWAIT) >= 0) {
        if (s == 1) fake_on_route(f, zmq_msg_data(&m), zmq_msg_size(&m));
        else fake_on_store(f, s - 2, zmq_msg_data(&m), zmq_msg_size(&m));
      }
      zmq_msg_close(&m);
    }
  }
  return NULL;
}

static void *fake_bind(fake_t *f, char *ep, size_t n) {
  void *s = zmq_socket(f->ctx, ZMQ_PULL);
  int zero = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
  assert_int_equal(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
  zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &n);
  return s;
}

static fake_t *fake_start(void) {
  fake_t *f = calloc(1, sizeof *f);
  pthread_mutex_init(&f->mu, NULL);
  f->ctx = zmq_ctx_new();
  f->routing = fake_bind(f, f->routing_ep, sizeof f->routing_ep);
  for (int t = 0; t < 2; t++) f->store[t] = fake_bind(f, f->store_ep[t], sizeof f->store_ep[t]);
  f->ctl_in = zmq_socket(f->ctx, ZMQ_PAIR);
  f->ctl_out = zmq_socket(f->ctx, ZMQ_PAIR);
  assert_int_equal(zmq_bind(f->ctl_in, "inproc://fake-ctl"), 0);
  assert_int_equal(zmq_connect(f->ctl_out, "inproc://fake-ctl"), 0);
  assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
  return f;
}

static void fake_stop(fake_t *f) {
  zmq_send(f->ctl_out, "x", 1, 0);
  pthread_join(f->thread, NULL);
  zmq_close(f->ctl_in);
  zmq_close(f->ctl_out);
  zmq_close(f->routing);
  for (int t = 0; t < 2; t++) zmq_close(f->store[t]);
  for (size_t i = 0; i < f->npeers; i++) {
    zmq_close(f->peer[i]);
    free(f->peer_ep[i]);
  }
  zmq_ctx_term(f->ctx);
  for (size_t i = 0; i < f->nmap; i++) {
    free(f->map[i].key);
    free(f->map[i].payload);
  }
  pthread_mutex_destroy(&f->mu);
  free(f);
}

/* Reads a counter or knob under the fake's lock. */
#define FAKE_GET(f, field)                                                             \
  ({                                                                                   \
    pthread_mutex_lock(&(f)->mu);                                                      \
    __typeof__((f)->field) v_ = (f)->field;                                            \
    pthread_mutex_unlock(&(f)->mu);                                                    \
    v_;                                                                                \
  })
#define FAKE_SET(f, field, val)                                                        \
  do {                                                                                 \
    pthread_mutex_lock(&(f)->mu);                                                      \
    (f)->field = (val);                                                                \
    pthread_mutex_unlock(&(f)->mu);                                                    \
  } while (0)

typedef struct {
  fake_t *fake;
  kvs_client_t *client;
} fixture_t;

static kvs_client_t *client_for(fake_t *f, int timeout_ms, int retries) {
  const char *routing[] = {f->routing_ep};
  kvs_client_options_t o = {.routing = routing, .nrouting = 1, .timeout_ms = timeout_ms,
                            .retries = retries};
  kvs_client_t *c = NULL;
  assert_int_equal(kvs_client_create(&o, &c), 0);
  return c;
}

static int setup(void **state) {
  fixture_t *fx = calloc(1, sizeof *fx);
  fx->fake = fake_start();
  fx->client = client_for(fx->fake, 2000, 2);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture_t *fx = *state;
  kvs_client_destroy(fx->client);
  fake_stop(fx->fake);
  free(fx);
  return 0;
}

/* Encodes an LWWValue payload into buf; returns its length. */
static size_t lww(uint8_t *buf, uint64_t ts, const char *value) {
  LWWValue v = LWWVALUE__INIT;
  v.timestamp = ts;
  v.value = (ProtobufCBinaryData){strlen(value), (uint8_t *)value};
  return lwwvalue__pack(&v, buf);
}

/* Asserts that payload p is an LWWValue holding (ts, value). */
static void assert_lww(const uint8_t *p, size_t n, uint64_t ts, const char *value) {
  LWWValue *v = lwwvalue__unpack(NULL, n, p);
  assert_non_null(v);
  assert_int_equal(v->timestamp, ts);
  assert_int_equal(v->value.len, strlen(value));
  assert_memory_equal(v->value.data, value, strlen(value));
  lwwvalue__free_unpacked(v, NULL);
}

static int put_lww(kvs_client_t *c, const char *key, uint64_t ts, const char *value,
                   const kvs_client_limits_t *lim) {
  uint8_t buf[256];
  size_t n = lww(buf, ts, value);
  return kvs_client_put(c, key, SQ_LATTICE_LWW, buf, n, lim);
}

static void get_expect(kvs_client_t *c, const char *key, uint64_t ts, const char *value) {
  sq_lattice_type_t type = SQ_LATTICE_NONE;
  uint8_t *p = NULL;
  size_t n = 0;
  assert_int_equal(kvs_client_get(c, key, NULL, &type, &p, &n), 0);
  assert_int_equal(type, SQ_LATTICE_LWW);
  assert_lww(p, n, ts, value);
  free(p);
}

static void test_put_then_get_round_trips_lww_payload(void **state) {
  fixture_t *fx = *state;
  assert_int_equal(put_lww(fx->client, "alpha", 10, "one", NULL), 0);
  get_expect(fx->client, "alpha", 10, "one");
  assert_int_equal(put_lww(fx->client, "alpha", 20, "two", NULL), 0);
  assert_int_equal(put_lww(fx->client, "alpha", 15, "stale", NULL), 0);
  get_expect(fx->client, "alpha", 20, "two");
  assert_string_equal(kvs_client_message(fx->client), "");
}

static void test_get_missing_key_returns_keydne(void **state) {
  fixture_t *fx = *state;
  sq_lattice_type_t type;
  uint8_t *p = (uint8_t *)"untouched";
  size_t n = 7;
  assert_int_equal(kvs_client_get(fx->client, "nobody", NULL, &type, &p, &n), SQ_EKEYDNE);
  assert_string_equal((char *)p, "untouched");
  assert_int_equal(n, 7);
}

static void test_multi_key_calls_send_one_request_per_server(void **state) {
  fixture_t *fx = *state;
  enum { N = 10 };
  char names[N][16];
  const char *keys[N];
  uint8_t bufs[N][64];
  kvs_client_kv_t kvs[N];
  int per_thread[2] = {0, 0};
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "k%d", i);
    keys[i] = names[i];
    kvs[i] = (kvs_client_kv_t){names[i], SQ_LATTICE_LWW, bufs[i], lww(bufs[i], 5, names[i])};
    per_thread[fake_owner(names[i])]++;
  }
  assert_true(per_thread[0] > 0 && per_thread[1] > 0);
  kvs_client_result_t res[N];
  assert_int_equal(kvs_client_put_many(fx->client, kvs, N, NULL, res), 0);
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 1);
  assert_int_equal(FAKE_GET(fx->fake, store_reqs[0]), 1);
  assert_int_equal(FAKE_GET(fx->fake, store_reqs[1]), 1);
  assert_int_equal(FAKE_GET(fx->fake, store_tuples[0]), per_thread[0]);
  for (int i = 0; i < N; i++) {
    assert_int_equal(res[i].err, 0);
    assert_int_equal(res[i].type, SQ_LATTICE_LWW);
  }
  const char *with_missing[N + 1];
  memcpy(with_missing, keys, sizeof keys);
  with_missing[N] = "missing";
  kvs_client_result_t got[N + 1];
  assert_int_equal(kvs_client_get_many(fx->client, with_missing, N + 1, NULL, got), SQ_EKEYDNE);
  /* The ten cached keys go out at once, one request per server; the uncached one
   * follows its routing answer. */
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 2);
  assert_int_equal(FAKE_GET(fx->fake, store_reqs[0]) + FAKE_GET(fx->fake, store_reqs[1]), 5);
  for (int i = 0; i < N; i++) {
    assert_int_equal(got[i].err, 0);
    assert_lww(got[i].payload, got[i].len, 5, names[i]);
    kvs_client_result_clear(&got[i]);
  }
  assert_int_equal(got[N].err, SQ_EKEYDNE);
  assert_null(got[N].payload);
}

static void test_addresses_are_cached_across_calls(void **state) {
  fixture_t *fx = *state;
  const char *keys[] = {"a", "b", "c", "d"};
  for (int round = 0; round < 5; round++)
    for (int i = 0; i < 4; i++) assert_int_equal(put_lww(fx->client, keys[i], 1, "v", NULL), 0);
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 4);
  assert_int_equal(FAKE_GET(fx->fake, store_reqs[0]) + FAKE_GET(fx->fake, store_reqs[1]), 20);
  kvs_client_stats_t st;
  kvs_client_stats(fx->client, &st);
  assert_int_equal(st.routing_requests, 4);
  assert_int_equal(st.key_requests, 20);
}

static void test_wrong_thread_refreshes_addresses_and_retry_succeeds(void **state) {
  fixture_t *fx = *state;
  FAKE_SET(fx->fake, misroute, 1);
  assert_int_equal(put_lww(fx->client, "moved", 3, "here", NULL), 0);
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 2);
  kvs_client_stats_t st;
  kvs_client_stats(fx->client, &st);
  assert_int_equal(st.redirects, 1);
  get_expect(fx->client, "moved", 3, "here");
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 2);
}

static void test_endless_wrong_thread_fails_with_ewrongthread(void **state) {
  fixture_t *fx = *state;
  FAKE_SET(fx->fake, misroute, 1000);
  assert_int_equal(put_lww(fx->client, "lost", 3, "x", NULL), SQ_EWRONGTHREAD);
  assert_non_null(strstr(kvs_client_message(fx->client), "belongs to thread"));
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 1 + KVS_CLIENT_MAX_REDIRECTS);
}

static void test_invalidate_drops_cached_addresses_but_keeps_result(void **state) {
  fixture_t *fx = *state;
  assert_int_equal(put_lww(fx->client, "inv", 7, "kept", NULL), 0);
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 1);
  FAKE_SET(fx->fake, invalidate, 1);
  get_expect(fx->client, "inv", 7, "kept");
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 1);
  get_expect(fx->client, "inv", 7, "kept");
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 2);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void test_silent_server_times_out_then_retry_succeeds(void **state) {
  fixture_t *fx = *state;
  kvs_client_limits_t lim = {.timeout_ms = 150, .retries = 1};
  assert_int_equal(put_lww(fx->client, "slow", 1, "first", &lim), 0);
  FAKE_SET(fx->fake, drop, 1);
  uint64_t t0 = now_ms();
  assert_int_equal(put_lww(fx->client, "slow", 2, "second", &lim), 0);
  assert_true(now_ms() - t0 >= 150);
  kvs_client_stats_t st;
  kvs_client_stats(fx->client, &st);
  assert_int_equal(st.timeouts, 1);
  /* The silent server's addresses were dropped: the retry asked routing again. */
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 2);
  get_expect(fx->client, "slow", 2, "second");
}

static void test_silent_server_without_retries_fails_with_etimeout(void **state) {
  fixture_t *fx = *state;
  kvs_client_limits_t lim = {.timeout_ms = 100, .retries = 0};
  FAKE_SET(fx->fake, drop, 1);
  uint64_t t0 = now_ms();
  assert_int_equal(put_lww(fx->client, "gone", 1, "x", &lim), SQ_ETIMEOUT);
  uint64_t took = now_ms() - t0;
  assert_true(took >= 100 && took < 1500);
  const char *msg = kvs_client_message(fx->client);
  assert_non_null(strstr(msg, "no reply from server tcp://127.0.0.1:"));
  /* The next call, with retries, goes through. */
  assert_int_equal(put_lww(fx->client, "gone", 1, "x", NULL), 0);
}

static void test_late_reply_after_timeout_is_ignored(void **state) {
  fixture_t *fx = *state;
  kvs_client_limits_t lim = {.timeout_ms = 100, .retries = 2};
  assert_int_equal(put_lww(fx->client, "late", 1, "old", &lim), 0);
  FAKE_SET(fx->fake, delay_ms, 250);
  FAKE_SET(fx->fake, delay, 1);
  assert_int_equal(put_lww(fx->client, "late", 2, "new", &lim), 0);
  get_expect(fx->client, "late", 2, "new");
  kvs_client_stats_t st;
  kvs_client_stats(fx->client, &st);
  assert_true(st.timeouts >= 1);
  assert_true(st.dropped_replies >= 1);
}

static void test_no_servers_asks_routing_again_then_succeeds(void **state) {
  fixture_t *fx = *state;
  FAKE_SET(fx->fake, no_servers, 2);
  kvs_client_limits_t lim = {.timeout_ms = 1000, .retries = 3};
  assert_int_equal(put_lww(fx->client, "early", 1, "bird", &lim), 0);
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 3);
  get_expect(fx->client, "early", 1, "bird");
}

static void test_no_servers_after_retries_fails_with_enoservers(void **state) {
  fixture_t *fx = *state;
  FAKE_SET(fx->fake, no_servers, 1000);
  kvs_client_limits_t lim = {.timeout_ms = 1000, .retries = 2};
  assert_int_equal(put_lww(fx->client, "void", 1, "x", &lim), SQ_ENOSERVERS);
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 3);
  assert_non_null(strstr(kvs_client_message(fx->client), "no storage server"));
}

static void test_put_of_other_type_returns_elattice_with_server_sentence(void **state) {
  fixture_t *fx = *state;
  assert_int_equal(put_lww(fx->client, "typed", 1, "x", NULL), 0);
  SetValue sv = SET_VALUE__INIT;
  uint8_t buf[16];
  size_t n = set_value__pack(&sv, buf);
  assert_int_equal(kvs_client_put(fx->client, "typed", SQ_LATTICE_SET, buf, n, NULL),
                   SQ_ELATTICE);
  assert_string_equal(kvs_client_message(fx->client),
                      "fake: key typed holds type 1, the PUT has type 2");
  get_expect(fx->client, "typed", 1, "x");
}

static void test_split_answers_are_matched_per_key(void **state) {
  fixture_t *fx = *state;
  const char *keys[] = {"s1", "s2", "s3", "s4", "s5", "s6"};
  uint8_t bufs[6][64];
  kvs_client_kv_t kvs[6];
  for (int i = 0; i < 6; i++)
    kvs[i] = (kvs_client_kv_t){keys[i], SQ_LATTICE_LWW, bufs[i], lww(bufs[i], 9, keys[i])};
  FAKE_SET(fx->fake, split, true);
  kvs_client_result_t res[6];
  assert_int_equal(kvs_client_put_many(fx->client, kvs, 6, NULL, res), 0);
  kvs_client_result_t got[6];
  assert_int_equal(kvs_client_get_many(fx->client, keys, 6, NULL, got), 0);
  for (int i = 0; i < 6; i++) {
    assert_lww(got[i].payload, got[i].len, 9, keys[i]);
    kvs_client_result_clear(&got[i]);
  }
}

typedef struct {
  uint64_t *ids;
  int *seen;
  size_t n, done, failed;
  int type;
} async_log_t;

static void on_done(void *arg, const kvs_client_completion_t *d) {
  async_log_t *log = arg;
  size_t i = 0;
  while (i < log->n && log->ids[i] != d->id) i++;
  assert_true(i < log->n);
  log->seen[i]++;
  log->done++;
  assert_int_equal(d->type, log->type);
  assert_int_equal(d->n, 1);
  char want[32];
  snprintf(want, sizeof want, "async%zu", i);
  assert_string_equal(d->keys[0], want);
  if (d->results[0].err) log->failed++;
  if (d->type == 1 && d->results[0].err == 0) {
    assert_lww(d->results[0].payload, d->results[0].len, i + 1, want);
    free(d->results[0].payload); /* the callback may take the payload */
    d->results[0].payload = NULL;
  }
}

static void run_async(fixture_t *fx, int type, size_t n) {
  async_log_t log = {.ids = calloc(n, sizeof(uint64_t)), .seen = calloc(n, sizeof(int)),
                     .n = n, .type = type};
  for (size_t i = 0; i < n; i++) {
    char key[32];
    snprintf(key, sizeof key, "async%zu", i);
    const char *k = key;
    if (type == 2) {
      uint8_t buf[64];
      kvs_client_kv_t kv = {key, SQ_LATTICE_LWW, buf, lww(buf, i + 1, key)};
      assert_int_equal(kvs_client_put_async(fx->client, &kv, 1, NULL, &log.ids[i]), 0);
    } else {
      assert_int_equal(kvs_client_get_async(fx->client, &k, 1, NULL, &log.ids[i]), 0);
    }
  }
  assert_int_equal(kvs_client_pending(fx->client), n);
  uint64_t t0 = now_ms();
  while (log.done < n && now_ms() - t0 < 20000)
    assert_true(kvs_client_poll(fx->client, 1000, on_done, &log) >= 0);
  assert_int_equal(log.done, n);
  assert_int_equal(log.failed, 0);
  for (size_t i = 0; i < n; i++) assert_int_equal(log.seen[i], 1);
  assert_int_equal(kvs_client_pending(fx->client), 0);
  assert_int_equal(kvs_client_poll(fx->client, 0, on_done, &log), 0);
  free(log.ids);
  free(log.seen);
}

static void test_async_many_requests_in_flight_complete_once_each(void **state) {
  fixture_t *fx = *state;
  run_async(fx, 2, 300);
  run_async(fx, 1, 300);
  /* Each key was looked up once, however many calls were in flight for it. */
  assert_true(FAKE_GET(fx->fake, routing_reqs) <= 300);
}

static void test_sync_call_keeps_async_completions_for_poll(void **state) {
  fixture_t *fx = *state;
  assert_int_equal(put_lww(fx->client, "async0", 1, "async0", NULL), 0);
  const char *k = "async0";
  uint64_t id = 0;
  assert_int_equal(kvs_client_get_async(fx->client, &k, 1, NULL, &id), 0);
  assert_int_equal(put_lww(fx->client, "other", 1, "x", NULL), 0);
  assert_int_equal(kvs_client_pending(fx->client), 1);
  async_log_t log = {.ids = &id, .seen = (int[1]){0}, .n = 1, .type = 1};
  assert_int_equal(kvs_client_poll(fx->client, 2000, on_done, &log), 1);
  assert_int_equal(log.seen[0], 1);
}

static void test_external_zmq_poll_loop_drives_async_calls(void **state) {
  fixture_t *fx = *state;
  const char *k = "ext";
  uint64_t id = 0;
  assert_int_equal(put_lww(fx->client, k, 1, "ext", NULL), 0);
  assert_int_equal(kvs_client_get_async(fx->client, &k, 1, NULL, &id), 0);
  int fd = -1;
  assert_int_equal(kvs_client_fd(fx->client, &fd), 0);
  assert_true(fd >= 0);
  int delivered = 0;
  uint64_t t0 = now_ms();
  while (delivered == 0 && now_ms() - t0 < 5000) {
    zmq_pollitem_t it = {.socket = kvs_client_socket(fx->client), .events = ZMQ_POLLIN};
    int wait = kvs_client_next_timeout(fx->client);
    assert_true(wait >= 0); /* a call is in flight, so a timer is armed */
    zmq_poll(&it, 1, wait);
    delivered = kvs_client_poll(fx->client, 0, NULL, NULL);
    assert_true(delivered >= 0);
  }
  assert_int_equal(delivered, 1);
  assert_int_equal(kvs_client_next_timeout(fx->client), -1);
}

static void test_request_ids_carry_client_id_and_never_repeat(void **state) {
  fixture_t *fx = *state;
  char prev[160] = "";
  const char *id = kvs_client_id(fx->client);
  for (int i = 0; i < 20; i++) {
    assert_int_equal(put_lww(fx->client, "rid", 1, "x", NULL), 0);
    char rid[160];
    pthread_mutex_lock(&fx->fake->mu);
    snprintf(rid, sizeof rid, "%s", fx->fake->last_rid);
    pthread_mutex_unlock(&fx->fake->mu);
    assert_int_equal(strncmp(rid, id, strlen(id)), 0);
    assert_int_equal(rid[strlen(id)], '_');
    assert_string_not_equal(rid, prev);
    memcpy(prev, rid, sizeof prev);
  }
}

static void test_bad_arguments_are_refused_before_sending(void **state) {
  fixture_t *fx = *state;
  uint8_t buf[64];
  size_t n = lww(buf, 1, "x");
  assert_int_equal(kvs_client_put(fx->client, "", SQ_LATTICE_LWW, buf, n, NULL), SQ_EEMPTYKEY);
  assert_int_equal(kvs_client_put(fx->client, "k", SQ_LATTICE_NONE, buf, n, NULL),
                   SQ_EUNKNOWNTYPE);
  assert_int_equal(kvs_client_put(fx->client, "k", (sq_lattice_type_t)9, buf, n, NULL),
                   SQ_EUNKNOWNTYPE);
  char *big = malloc(KVS_CLIENT_MAX_KEY_BYTES + 2);
  memset(big, 'k', KVS_CLIENT_MAX_KEY_BYTES + 1);
  big[KVS_CLIENT_MAX_KEY_BYTES + 1] = '\0';
  sq_lattice_type_t t;
  uint8_t *p;
  assert_int_equal(kvs_client_get(fx->client, big, NULL, &t, &p, &n), SQ_ETOOBIG);
  free(big);
  kvs_client_stats_t st;
  kvs_client_stats(fx->client, &st);
  assert_int_equal(st.routing_requests + st.key_requests, 0);
}

static void test_create_refuses_wildcard_bind_without_advertise(void **state) {
  fixture_t *fx = *state;
  const char *routing[] = {fx->fake->routing_ep};
  kvs_client_options_t o = {.routing = routing, .nrouting = 1, .bind = "tcp://0.0.0.0:*"};
  kvs_client_t *c = NULL;
  assert_int_equal(kvs_client_create(&o, &c), SQ_ECONFIG);
  assert_null(c);
  o.advertise = "127.0.0.1";
  assert_int_equal(kvs_client_create(&o, &c), 0);
  assert_int_equal(strncmp(kvs_client_response_address(c), "tcp://127.0.0.1:", 16), 0);
  assert_int_equal(put_lww(c, "adv", 1, "x", NULL), 0);
  kvs_client_destroy(c);
  o = (kvs_client_options_t){.routing = NULL, .nrouting = 0};
  assert_int_equal(kvs_client_create(&o, &c), SQ_EINVAL);
}

static void test_error_mapping_covers_every_anna_error(void **state) {
  (void)state;
  assert_int_equal(kvs_client_error_from_anna(ANNA_ERROR__NO_ERROR), 0);
  assert_int_equal(kvs_client_error_from_anna(ANNA_ERROR__KEY_DNE), SQ_EKEYDNE);
  assert_int_equal(kvs_client_error_from_anna(ANNA_ERROR__WRONG_THREAD), SQ_EWRONGTHREAD);
  assert_int_equal(kvs_client_error_from_anna(ANNA_ERROR__TIMEOUT), SQ_ETIMEOUT);
  assert_int_equal(kvs_client_error_from_anna(ANNA_ERROR__LATTICE), SQ_ELATTICE);
  assert_int_equal(kvs_client_error_from_anna(ANNA_ERROR__NO_SERVERS), SQ_ENOSERVERS);
  assert_int_equal(kvs_client_error_from_anna(77), SQ_EPROTO);
}

static void test_malformed_routing_endpoints_are_refused(void **state) {
  fixture_t *fx = *state;
  kvs_client_limits_t lim = {.timeout_ms = 1000, .retries = 1};
  FAKE_SET(fx->fake, bad_ips, 2);
  assert_int_equal(put_lww(fx->client, "evil", 1, "x", &lim), SQ_ENOSERVERS);
  assert_int_equal(FAKE_GET(fx->fake, routing_reqs), 2);
  assert_int_equal(FAKE_GET(fx->fake, store_reqs[0]) + FAKE_GET(fx->fake, store_reqs[1]), 0);
  FAKE_SET(fx->fake, bad_ips, 1);
  assert_int_equal(put_lww(fx->client, "evil", 1, "x", &lim), 0);
}

static void test_garbage_and_stranger_replies_are_dropped(void **state) {
  fixture_t *fx = *state;
  void *ctx = zmq_ctx_new();
  void *push = zmq_socket(ctx, ZMQ_PUSH);
  assert_int_equal(zmq_connect(push, kvs_client_response_address(fx->client)), 0);
  /* Not protobuf; a KeyResponse for another client; our prefix with an id that is not
   * pending, followed by a cut-off field. */
  const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x1a, 0x80};
  KeyResponse other = KEY_RESPONSE__INIT;
  other.response_id = "someone-else_1";
  uint8_t buf[64];
  size_t n = key_response__pack(&other, buf);
  char rid[160];
  int rn = snprintf(rid, sizeof rid, "%s_999999", kvs_client_id(fx->client));
  uint8_t cut[200] = {0x1a, (uint8_t)rn};
  memcpy(cut + 2, rid, (size_t)rn);
  cut[2 + rn] = 0x12; /* a tuples field cut off */
  cut[3 + rn] = 0x50;
  assert_true(zmq_send(push, junk, sizeof junk, 0) >= 0);
  assert_true(zmq_send(push, buf, n, 0) >= 0);
  assert_true(zmq_send(push, cut, (size_t)rn + 4, 0) >= 0);
  uint64_t t0 = now_ms();
  kvs_client_stats_t st = {0};
  while (st.dropped_replies < 3 && now_ms() - t0 < 5000) {
    const char *k = "probe";
    uint64_t id;
    assert_int_equal(kvs_client_get_async(fx->client, &k, 1, NULL, &id), 0);
    assert_int_equal(kvs_client_poll(fx->client, 2000, NULL, NULL), 1);
    kvs_client_stats(fx->client, &st);
  }
  assert_int_equal(st.dropped_replies, 3);
  assert_int_equal(put_lww(fx->client, "after", 1, "fine", NULL), 0);
  get_expect(fx->client, "after", 1, "fine");
  zmq_close(push);
  zmq_ctx_term(ctx);
}

static void test_socket_cache_of_one_still_reaches_every_server(void **state) {
  fixture_t *fx = *state;
  const char *routing[] = {fx->fake->routing_ep};
  kvs_client_options_t o = {.routing = routing, .nrouting = 1, .max_sockets = 1,
                            .timeout_ms = 2000, .retries = 0};
  kvs_client_t *c = NULL;
  assert_int_equal(kvs_client_create(&o, &c), 0);
  const char *keys[] = {"k0", "k1", "k2", "k3"};
  uint8_t bufs[4][64];
  kvs_client_kv_t kvs[4];
  for (int i = 0; i < 4; i++)
    kvs[i] = (kvs_client_kv_t){keys[i], SQ_LATTICE_LWW, bufs[i], lww(bufs[i], 4, keys[i])};
  kvs_client_result_t res[4];
  for (int round = 0; round < 5; round++)
    assert_int_equal(kvs_client_put_many(c, kvs, 4, NULL, res), 0);
  kvs_client_result_t got[4];
  assert_int_equal(kvs_client_get_many(c, keys, 4, NULL, got), 0);
  for (int i = 0; i < 4; i++) {
    assert_lww(got[i].payload, got[i].len, 4, keys[i]);
    kvs_client_result_clear(&got[i]);
  }
  kvs_client_stats_t st;
  kvs_client_stats(c, &st);
  assert_int_equal(st.timeouts, 0);
  kvs_client_destroy(c);
}

/* --- redirected reads (kvs_client_get_async_via) ------------------------------------ */

typedef struct {
  uint64_t id;
  int done, err;
  uint8_t *payload;
  size_t len;
} via_done_t;

static void on_via_done(void *arg, const kvs_client_completion_t *d) {
  via_done_t *v = arg;
  assert_int_equal(d->id, v->id);
  v->done++;
  v->err = d->results[0].err;
  v->payload = d->results[0].payload; /* taken */
  v->len = d->results[0].len;
  d->results[0].payload = NULL;
}

/* A PULL socket standing for the other process the KVS answers. */
static void *via_socket(fixture_t *fx, char *ep, size_t n) {
  return fake_bind(fx->fake, ep, n);
}

/* Receives one message on s within 5 s into buf; returns its length. */
static size_t via_recv(void *s, uint8_t *buf, size_t cap) {
  zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
  assert_int_equal(zmq_poll(&it, 1, 5000), 1);
  int n = zmq_recv(s, buf, cap, 0);
  assert_true(n > 0 && (size_t)n <= cap);
  return (size_t)n;
}

static void via_wait(fixture_t *fx, via_done_t *v) {
  uint64_t t0 = now_ms();
  while (!v->done && now_ms() - t0 < 5000)
    assert_true(kvs_client_poll(fx->client, 100, on_via_done, v) >= 0);
  assert_int_equal(v->done, 1);
}

static void test_redirected_read_answers_the_other_socket_and_completes_on_delivery(
    void **state) {
  fixture_t *fx = *state;
  char ep[64];
  void *other = via_socket(fx, ep, sizeof ep);
  assert_int_equal(put_lww(fx->client, "via", 7, "seven", NULL), 0);
  via_done_t v = {0};
  kvs_client_via_t via = {.response_address = ep, .tag = "exec-42", .wait_ms = 5000};
  assert_int_equal(kvs_client_get_async_via(fx->client, "via", NULL, &via, &v.id), 0);
  uint8_t buf[4096];
  size_t n = via_recv(other, buf, sizeof buf);
  KeyResponse *r = key_response__unpack(NULL, n, buf);
  assert_non_null(r);
  const char *id = kvs_client_id(fx->client);
  assert_int_equal(strncmp(r->response_id, id, strlen(id)), 0);
  size_t rl = strlen(r->response_id);
  assert_true(rl > 8 && strcmp(r->response_id + rl - 8, ".exec-42") == 0);
  assert_lww(r->tuples[0]->payload.data, r->tuples[0]->payload.len, 7, "seven");
  key_response__free_unpacked(r, NULL);
  assert_int_equal(kvs_client_poll(fx->client, 50, on_via_done, &v), 0); /* not yet */
  uint64_t call = 0;
  assert_int_equal(kvs_client_deliver(fx->client, buf, n, &call), 0);
  assert_int_equal(call, v.id);
  assert_int_equal(kvs_client_deliver(fx->client, buf, n, NULL), SQ_ENOTFOUND); /* once */
  via_wait(fx, &v);
  assert_int_equal(v.err, 0);
  assert_lww(v.payload, v.len, 7, "seven");
  free(v.payload);
  zmq_close(other);
}

/* Re-packs the KeyResponse in buf[0..n) with its response id's tag (after the '.')
 * replaced by tag (NULL: no tag at all) into out; returns the new length. */
static size_t via_retag(const uint8_t *buf, size_t n, const char *tag, uint8_t *out,
                        size_t cap) {
  KeyResponse *r = key_response__unpack(NULL, n, buf);
  assert_non_null(r);
  char id[256];
  const char *dot = strrchr(r->response_id, '.'); /* the id may hold dots */
  assert_non_null(dot);
  int l = (int)(dot - r->response_id);
  snprintf(id, sizeof id, "%.*s%s%s", l, r->response_id, tag ? "." : "", tag ? tag : "");
  char *orig = r->response_id;
  r->response_id = id;
  size_t len = key_response__get_packed_size(r);
  assert_true(len <= cap);
  key_response__pack(r, out);
  r->response_id = orig;
  key_response__free_unpacked(r, NULL);
  return len;
}

static void test_redirected_read_ignores_a_hand_back_with_another_tag(void **state) {
  fixture_t *fx = *state;
  char ep[64];
  void *other = via_socket(fx, ep, sizeof ep);
  assert_int_equal(put_lww(fx->client, "via4", 4, "four", NULL), 0);
  via_done_t v = {0};
  kvs_client_via_t via = {.response_address = ep, .tag = "exec-42", .wait_ms = 60000};
  assert_int_equal(kvs_client_get_async_via(fx->client, "via4", NULL, &via, &v.id), 0);
  uint8_t buf[4096], forged[4096];
  size_t n = via_recv(other, buf, sizeof buf);
  zmq_close(other); /* now, so that a failed assertion cannot hang the fake's teardown */
  kvs_client_stats_t before, after;
  kvs_client_stats(fx->client, &before);
  /* Same client id and request number, another tag (or none): answers nothing. */
  const char *wrong[] = {"exec-43", "exec-4", "exec-420", "EXEC-42", "", NULL};
  for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
    size_t fl = via_retag(buf, n, wrong[i], forged, sizeof forged);
    assert_int_equal(kvs_client_deliver(fx->client, forged, fl, NULL), SQ_ENOTFOUND);
  }
  kvs_client_stats(fx->client, &after);
  assert_int_equal(after.dropped_replies - before.dropped_replies,
                   sizeof wrong / sizeof wrong[0]);
  assert_int_equal(kvs_client_poll(fx->client, 50, on_via_done, &v), 0); /* still open */
  uint64_t call = 0;
  assert_int_equal(kvs_client_deliver(fx->client, buf, n, &call), 0); /* the right tag */
  assert_int_equal(call, v.id);
  via_wait(fx, &v);
  assert_int_equal(v.err, 0);
  assert_lww(v.payload, v.len, 4, "four");
  free(v.payload);
}

static void test_redirected_read_without_hand_back_rereads_without_a_timeout(void **state) {
  fixture_t *fx = *state;
  char ep[64];
  void *other = via_socket(fx, ep, sizeof ep);
  assert_int_equal(put_lww(fx->client, "via2", 3, "three", NULL), 0);
  kvs_client_limits_t one_try = {.timeout_ms = 2000, .retries = 0};
  kvs_client_via_t via = {.response_address = ep, .tag = "t1", .wait_ms = 100};
  via_done_t v = {0};
  uint64_t t0 = now_ms();
  assert_int_equal(kvs_client_get_async_via(fx->client, "via2", &one_try, &via, &v.id), 0);
  uint8_t buf[4096];
  size_t n = via_recv(other, buf, sizeof buf); /* answered there, never handed back */
  via_wait(fx, &v);
  assert_true(now_ms() - t0 >= 100);
  assert_int_equal(v.err, 0); /* no retry was spent although retries = 0 */
  assert_lww(v.payload, v.len, 3, "three");
  free(v.payload);
  assert_int_equal(kvs_client_deliver(fx->client, buf, n, NULL), SQ_ENOTFOUND); /* too late */
  kvs_client_stats_t st;
  kvs_client_stats(fx->client, &st);
  assert_int_equal(st.timeouts, 0);
  assert_int_equal(FAKE_GET(fx->fake, store_reqs[0]) + FAKE_GET(fx->fake, store_reqs[1]), 3);
  zmq_close(other);
}

static void test_resend_stops_waiting_for_the_hand_back(void **state) {
  fixture_t *fx = *state;
  char ep[64];
  void *other = via_socket(fx, ep, sizeof ep);
  assert_int_equal(put_lww(fx->client, "via3", 5, "five", NULL), 0);
  kvs_client_via_t via = {.response_address = ep, .tag = "t2", .wait_ms = 60000};
  via_done_t v = {0};
  uint64_t t0 = now_ms();
  assert_int_equal(kvs_client_get_async_via(fx->client, "via3", NULL, &via, &v.id), 0);
  uint8_t buf[4096];
  (void)via_recv(other, buf, sizeof buf);
  assert_int_equal(kvs_client_resend(fx->client, v.id), 0);
  via_wait(fx, &v);
  assert_true(now_ms() - t0 < 5000);
  assert_int_equal(v.err, 0);
  free(v.payload);
  assert_int_equal(kvs_client_resend(fx->client, v.id), SQ_ENOTFOUND);
  zmq_close(other);
}

static void test_redirected_read_refuses_bad_endpoints_and_tags(void **state) {
  fixture_t *fx = *state;
  uint64_t id = 0;
  kvs_client_via_t bad[] = {
      {.response_address = "tcp://127.0.0.1:1", .tag = ""},
      {.response_address = "tcp://127.0.0.1:1", .tag = "a.b"},
      {.response_address = "tcp://127.0.0.1:1", .tag = "sp ace"},
      {.response_address = "http://x", .tag = "ok"},
      {.response_address = NULL, .tag = "ok"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(kvs_client_get_async_via(fx->client, "k", NULL, &bad[i], &id), SQ_EINVAL);
  assert_int_equal(kvs_client_pending(fx->client), 0);
  uint8_t junk[] = {0x1a, 0x03, 'x', '_', '1'};
  assert_int_equal(kvs_client_deliver(fx->client, junk, sizeof junk, NULL), SQ_ENOTFOUND);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_put_then_get_round_trips_lww_payload),
      T(test_get_missing_key_returns_keydne),
      T(test_multi_key_calls_send_one_request_per_server),
      T(test_addresses_are_cached_across_calls),
      T(test_wrong_thread_refreshes_addresses_and_retry_succeeds),
      T(test_endless_wrong_thread_fails_with_ewrongthread),
      T(test_invalidate_drops_cached_addresses_but_keeps_result),
      T(test_silent_server_times_out_then_retry_succeeds),
      T(test_silent_server_without_retries_fails_with_etimeout),
      T(test_late_reply_after_timeout_is_ignored),
      T(test_no_servers_asks_routing_again_then_succeeds),
      T(test_no_servers_after_retries_fails_with_enoservers),
      T(test_put_of_other_type_returns_elattice_with_server_sentence),
      T(test_split_answers_are_matched_per_key),
      T(test_async_many_requests_in_flight_complete_once_each),
      T(test_sync_call_keeps_async_completions_for_poll),
      T(test_external_zmq_poll_loop_drives_async_calls),
      T(test_request_ids_carry_client_id_and_never_repeat),
      T(test_bad_arguments_are_refused_before_sending),
      T(test_create_refuses_wildcard_bind_without_advertise),
      T(test_malformed_routing_endpoints_are_refused),
      T(test_garbage_and_stranger_replies_are_dropped),
      T(test_socket_cache_of_one_still_reaches_every_server),
      T(test_redirected_read_answers_the_other_socket_and_completes_on_delivery),
      T(test_redirected_read_ignores_a_hand_back_with_another_tag),
      T(test_redirected_read_without_hand_back_rereads_without_a_timeout),
      T(test_resend_stops_waiting_for_the_hand_back),
      T(test_redirected_read_refuses_bad_endpoints_and_tags),
      cmocka_unit_test(test_error_mapping_covers_every_anna_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
