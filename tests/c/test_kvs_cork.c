/* test_kvs_cork: corking reply connections during long runs (kvs/kvs_cork.c).
 *
 * Pins: endpoints parse only when numeric tcp://; long runs of small replies in
 * KVS_CORK_MIN_TURNS turns in a row cork the process's connection to that endpoint
 * (found by its peer address), while short runs, few replies or one large reply never
 * do; a corked connection stays corked while it keeps getting long runs, is
 * uncorked after KVS_CORK_GRACE_TURNS turns without one, and by release_all at once;
 * a disabled cork and an endpoint with no connection touch nothing (and the search
 * for a missing connection is not repeated on every run); a client whose entry is not
 * the first is uncorked as well, and once all are quiet no entry is left to visit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "kvs_cork.h"

typedef struct {
  int listener, client, server;
  char endpoint[64];
} conn_t;

static int conn_open(void **state) {
  static conn_t c;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  c.listener = socket(AF_INET, SOCK_STREAM, 0);
  if (c.listener < 0 || bind(c.listener, (void *)&a, sizeof(a)) || listen(c.listener, 1) ||
      getsockname(c.listener, (void *)&a, &len))
    return -1;
  c.client = socket(AF_INET, SOCK_STREAM, 0);
  if (c.client < 0 || connect(c.client, (void *)&a, sizeof(a))) return -1;
  c.server = accept(c.listener, NULL, NULL);
  snprintf(c.endpoint, sizeof(c.endpoint), "tcp://127.0.0.1:%u", ntohs(a.sin_port));
  *state = &c;
  return c.server < 0 ? -1 : 0;
}

static int conn_close(void **state) {
  conn_t *c = *state;
  close(c->server);
  close(c->client);
  close(c->listener);
  return 0;
}

static int corked(int fd) {
  int v = -1;
  socklen_t len = sizeof(v);
  assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, &len), 0);
  return v;
}

static void test_endpoints_parse_only_when_numeric_tcp(void **state) {
  (void)state;
  struct sockaddr_storage a;
  socklen_t len;
  assert_true(kvs_cork_parse_endpoint("tcp://127.0.0.1:6200", &a, &len));
  assert_int_equal(a.ss_family, AF_INET);
  assert_int_equal(ntohs(((struct sockaddr_in *)&a)->sin_port), 6200);
  assert_true(kvs_cork_parse_endpoint("tcp://[::1]:7000", &a, &len));
  assert_int_equal(a.ss_family, AF_INET6);
  const char *bad[] = {"tcp://localhost:6200", "ipc:///tmp/x", "tcp://127.0.0.1",
                       "tcp://127.0.0.1:0", "tcp://127.0.0.1:70000", "tcp://:80",
                       "tcp://127.0.0.1:80x", "tcp://[::1:80", "inproc://a", ""};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_false(kvs_cork_parse_endpoint(bad[i], &a, &len));
}

/* One worker turn in which endpoint gets a long run of small replies. */
static void long_turn(kvs_cork_t *k, const char *endpoint) {
  kvs_cork_run(k, endpoint, KVS_CORK_MIN_BYTES / 2, KVS_CORK_MIN_REPLIES); /* growing */
  kvs_cork_run(k, endpoint, KVS_CORK_MIN_BYTES, KVS_CORK_MIN_REPLIES);
  kvs_cork_run(k, endpoint, KVS_CORK_MIN_BYTES * 2, KVS_CORK_MIN_REPLIES * 2);
}

static void test_streaming_client_is_corked_and_quiet_turns_uncork_it(void **state) {
  conn_t *c = *state;
  kvs_cork_t k;
  kvs_cork_init(&k, true);
  /* Too short, too few replies, or one large reply: never counts. */
  kvs_cork_run(&k, c->endpoint, KVS_CORK_MIN_BYTES - 1, KVS_CORK_MIN_REPLIES * 8);
  kvs_cork_run(&k, c->endpoint, KVS_CORK_MIN_BYTES * 8, KVS_CORK_MIN_REPLIES - 1);
  kvs_cork_turn_end(&k);
  kvs_cork_run(&k, c->endpoint, KVS_CORK_MIN_BYTES * 8, KVS_CORK_MIN_REPLIES - 1);
  kvs_cork_turn_end(&k);
  assert_int_equal(k.corks + k.finds, 0);
  /* Long runs in KVS_CORK_MIN_TURNS turns in a row: corked in the last of them. */
  for (int t = 0; t < KVS_CORK_MIN_TURNS - 1; t++) {
    long_turn(&k, c->endpoint);
    assert_int_equal(k.corks + k.finds, 0);
    kvs_cork_turn_end(&k);
  }
  long_turn(&k, c->endpoint);
  assert_int_equal(k.corks, 1);
  assert_int_equal(corked(c->client), 1); /* the connection to the endpoint, found */
  assert_int_equal(corked(c->server), 0); /* not the accepted end, whose peer differs */
  assert_true(kvs_cork_any(&k));
  kvs_cork_turn_end(&k);
  for (int t = 0; t < 3 * KVS_CORK_GRACE_TURNS; t++) { /* still streaming: stays corked */
    long_turn(&k, c->endpoint);
    kvs_cork_turn_end(&k);
    assert_int_equal(corked(c->client), 1);
  }
  assert_int_equal(k.corks, 1);
  for (int t = 0; t < KVS_CORK_GRACE_TURNS - 1; t++) kvs_cork_turn_end(&k);
  assert_int_equal(corked(c->client), 1);
  kvs_cork_turn_end(&k); /* the last quiet turn of the grace: flushed */
  assert_int_equal(corked(c->client), 0);
  assert_false(kvs_cork_any(&k));
  for (int t = 0; t < KVS_CORK_MIN_TURNS; t++) { /* streaming again after the gap */
    long_turn(&k, c->endpoint);
    kvs_cork_turn_end(&k);
  }
  assert_int_equal(corked(c->client), 1);
  kvs_cork_release_all(&k); /* before sleeping: everything flushed */
  assert_int_equal(corked(c->client), 0);
  assert_int_equal(k.corks, 2);
  assert_int_equal(k.finds, 1); /* the connection was found once */
}

static void test_disabled_cork_and_missing_connection_touch_nothing(void **state) {
  conn_t *c = *state;
  kvs_cork_t k;
  kvs_cork_init(&k, false);
  for (int t = 0; t < 2 * KVS_CORK_MIN_TURNS; t++) {
    long_turn(&k, c->endpoint);
    kvs_cork_turn_end(&k);
  }
  assert_int_equal(k.corks + k.finds, 0);
  assert_int_equal(corked(c->client), 0);
  kvs_cork_init(&k, true);
  for (int t = 0; t < 2 * KVS_CORK_MIN_TURNS; t++) { /* nothing connected there */
    long_turn(&k, "tcp://127.0.0.1:1");
    kvs_cork_turn_end(&k);
  }
  assert_int_equal(k.finds, 1); /* not searched again on every turn */
  assert_int_equal(k.corks, 0);
  assert_false(kvs_cork_any(&k));
  for (int t = 0; t < 2 * KVS_CORK_MIN_TURNS; t++) { /* names are not looked up */
    long_turn(&k, "tcp://localhost:1");
    kvs_cork_turn_end(&k);
  }
  assert_int_equal(k.finds, 1);
}

static void test_a_client_later_in_the_table_is_uncorked_when_it_stops(void **state) {
  conn_t *c = *state;
  kvs_cork_t k;
  kvs_cork_init(&k, true);
  /* Other clients (never found) take the first entries; this one streams after them,
   * while they fall quiet. */
  const char *others[] = {"tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"};
  for (size_t i = 0; i < 3; i++) long_turn(&k, others[i]);
  kvs_cork_turn_end(&k);
  for (int t = 0; t < KVS_CORK_MIN_TURNS; t++) {
    long_turn(&k, c->endpoint);
    kvs_cork_turn_end(&k);
  }
  assert_int_equal(corked(c->client), 1);
  assert_true(kvs_cork_any(&k));
  for (int t = 0; t < KVS_CORK_GRACE_TURNS; t++) kvs_cork_turn_end(&k);
  assert_int_equal(corked(c->client), 0);
  assert_false(kvs_cork_any(&k));
  assert_int_equal(k.live, 0); /* every entry idle: a turn end looks at none */
  for (int t = 0; t < KVS_CORK_MIN_TURNS; t++) {
    long_turn(&k, c->endpoint);
    kvs_cork_turn_end(&k);
  }
  assert_int_equal(corked(c->client), 1);
  kvs_cork_release_all(&k);
  assert_int_equal(corked(c->client), 0);
  assert_false(kvs_cork_any(&k));
  assert_int_equal(k.corks, 2);
}

/* Which entry tracks endpoint (the test looks at its search schedule). */
static const kvs_cork_entry_t *entry_of(const kvs_cork_t *k, const char *endpoint) {
  for (size_t i = 0; i < KVS_CORK_ENTRIES; i++)
    if (strcmp(k->e[i].endpoint, endpoint) == 0) return &k->e[i];
  return NULL;
}

static void test_searches_for_a_missing_connection_back_off_to_ten_seconds(void **state) {
  (void)state;
  kvs_cork_t k;
  kvs_cork_init(&k, true);
  const char *nowhere = "tcp://127.0.0.1:1";
  uint32_t waits[12];
  for (int miss = 0; miss < 12; miss++) {
    for (int t = 0; t < KVS_CORK_MIN_TURNS; t++) {
      long_turn(&k, nowhere);
      kvs_cork_turn_end(&k);
    }
    kvs_cork_entry_t *e = (kvs_cork_entry_t *)entry_of(&k, nowhere);
    assert_non_null(e);
    waits[miss] = e->find_wait_ms;
    e->next_find_ms = 0; /* time travel: the next run may search again */
  }
  assert_int_equal(k.finds, 12);
  assert_int_equal(waits[0], 200); /* 100 ms after the first miss, then doubling */
  assert_int_equal(waits[1], 400);
  assert_int_equal(waits[5], 6400);
  assert_int_equal(waits[6], 10000); /* capped */
  assert_int_equal(waits[11], 10000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_searches_for_a_missing_connection_back_off_to_ten_seconds),
      cmocka_unit_test(test_endpoints_parse_only_when_numeric_tcp),
      cmocka_unit_test(test_streaming_client_is_corked_and_quiet_turns_uncork_it),
      cmocka_unit_test(test_disabled_cork_and_missing_connection_touch_nothing),
      cmocka_unit_test(test_a_client_later_in_the_table_is_uncorked_when_it_stops),
  };
  return cmocka_run_group_tests(tests, conn_open, conn_close);
}
