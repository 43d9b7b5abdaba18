/* kvs_routing: KeyAddressRequest answering thread (see routing.h). */
#include "routing.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "anna.pb-c.h"
#include "sq_arena.h"
#include "sq_buf.h"
#include "sq_error.h"
#include "sq_proto.h"
#include "sq_wire.h"
#include "sq_zmq.h"

#define KVS__ROUTING_MAX_REQUEST (16u << 20)
#define KVS__ROUTING_REPLY_SOCKETS 256
#define KVS__ROUTING_MAX_REPLICAS 8

struct kvs_routing {
  const kvs_config_t *config;
  const kvs_placement_t *placement;
  sq_log_t *log;
  void *socket;   /* PULL */
  void *control;  /* PAIR, thread side */
  void *control_main;
  sq_zmq_cache_t *replies;
  sq_arena_t arena;
  sq_buf_t out;
  pthread_t thread;
  int started;
  _Atomic uint64_t answered;
};

/* Fills one KeyAddress (arena memory) with the endpoints serving `key`. */
static int kvs__routing_address(kvs_routing_t *r, const char *key,
                                KeyAddressResponse__KeyAddress *addr) {
  key_address_response__key_address__init(addr);
  addr->key = (char *)key;
  if (key[0] == '\0') return 0;
  char endpoints[KVS__ROUTING_MAX_REPLICAS][KVS_ENDPOINT_MAX];
  size_t n = 0;
  int rc = kvs_placement_endpoints(r->placement, key, strlen(key), endpoints,
                                   KVS__ROUTING_MAX_REPLICAS, &n);
  if (rc) return rc;
  addr->ips = sq_arena_alloc(&r->arena, n * sizeof(char *));
  if (n && !addr->ips) return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(endpoints[i]);
    addr->ips[i] = sq_arena_alloc(&r->arena, len + 1);
    if (!addr->ips[i]) return -ENOMEM;
    memcpy(addr->ips[i], endpoints[i], len + 1);
  }
  addr->n_ips = n;
  return 0;
}

static void kvs__routing_send(kvs_routing_t *r, const char *address,
                              const KeyAddressResponse *resp) {
  size_t need = key_address_response__get_packed_size(resp);
  sq_buf_reset(&r->out);
  if (sq_buf_reserve(&r->out, need) != 0) return;
  r->out.len = key_address_response__pack(resp, r->out.data);
  if (sq_zmq_cache_send(r->replies, address, r->out.data, r->out.len) != 0)
    sq_log_debug(r->log, "could not queue a routing reply to %s", address);
  atomic_fetch_add_explicit(&r->answered, 1, memory_order_relaxed);
}

static void kvs__routing_handle(kvs_routing_t *r, const uint8_t *bytes, size_t len) {
  sq_arena_reset(&r->arena);
  KeyAddressRequest *req = NULL;
  if (sq_proto_unpack(&key_address_request__descriptor, sq_arena_allocator(&r->arena), bytes,
                      len, KVS__ROUTING_MAX_REQUEST, (ProtobufCMessage **)&req) != 0) {
    sq_log_warn(r->log, "dropped a routing request that is not a valid KeyAddressRequest "
                "(%zu bytes)", len);
    return;
  }
  if (req->response_address[0] == '\0') return;
  KeyAddressResponse resp = KEY_ADDRESS_RESPONSE__INIT;
  resp.response_id = req->request_id;
  resp.n_addresses = req->n_keys;
  resp.addresses = sq_arena_alloc(&r->arena, (req->n_keys + 1) * sizeof(void *));
  KeyAddressResponse__KeyAddress *addrs =
      sq_arena_alloc(&r->arena, (req->n_keys + 1) * sizeof(*addrs));
  if (!resp.addresses || !addrs) return;
  for (size_t i = 0; i < req->n_keys; i++) {
    resp.addresses[i] = &addrs[i];
    int rc = kvs__routing_address(r, req->keys[i], &addrs[i]);
    if (rc == SQ_ENOSERVERS) resp.error = ANNA_ERROR__NO_SERVERS;
    else if (rc) return;
  }
  kvs__routing_send(r, req->response_address, &resp);
}

/* How often an idle routing thread wakes to close reply sockets nobody used for
 * --reply-idle-ms (a departed client's would otherwise be retried for ever). */
#define KVS__ROUTING_TICK_MS 1000

static void *kvs__routing_main(void *arg) {
  kvs_routing_t *r = arg;
  for (;;) {
    zmq_pollitem_t items[2] = {{r->control, 0, ZMQ_POLLIN, 0}, {r->socket, 0, ZMQ_POLLIN, 0}};
    int n = zmq_poll(items, 2, KVS__ROUTING_TICK_MS);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (n == 0) {
      sq_zmq_cache_expire(r->replies);
      continue;
    }
    if (items[0].revents & ZMQ_POLLIN) break;
    for (int i = 0; i < 256; i++) {
      zmq_msg_t msg;
      zmq_msg_init(&msg);
      if (zmq_msg_recv(&msg, r->socket, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        break;
      }
      kvs__routing_handle(r, zmq_msg_data(&msg), zmq_msg_size(&msg));
      zmq_msg_close(&msg);
    }
  }
  return NULL;
}

static int kvs__routing_sockets(kvs_routing_t *r, void *ctx, char *why, size_t why_len) {
  char endpoint[256];
  snprintf(endpoint, sizeof(endpoint), "tcp://%s:%" PRId64, r->config->bind_host,
           KVS_PORT_KEY_ADDRESS + r->config->port_offset);
  int rc = sq_zmq_pull_bind(ctx, endpoint, KVS__ROUTING_MAX_REQUEST, 0, why, why_len,
                            &r->socket);
  if (rc) return rc;
  r->control_main = zmq_socket(ctx, ZMQ_PAIR);
  r->control = zmq_socket(ctx, ZMQ_PAIR);
  if (!r->control_main || !r->control || zmq_bind(r->control_main, "inproc://kvs-routing") ||
      zmq_connect(r->control, "inproc://kvs-routing")) {
    snprintf(why, why_len, "cannot create the routing control socket: %s",
             zmq_strerror(errno));
    return -errno;
  }
  sq_zmq_cache_options_t co = {.max_sockets = KVS__ROUTING_REPLY_SOCKETS, .linger_ms = -1,
                               .idle_ms = kvs_config_reply_idle(r->config)};
  rc = sq_zmq_cache_create(ctx, &co, &r->replies);
  if (rc) snprintf(why, why_len, "cannot create reply sockets: %s", sq_strerror(rc));
  return rc;
}

int kvs_routing_start(const kvs_config_t *config, const kvs_placement_t *placement,
                      void *zmq_context, sq_log_t *log, kvs_routing_t **out, char *why,
                      size_t why_len) {
  kvs_routing_t *r = calloc(1, sizeof(*r));
  if (!r) return -ENOMEM;
  r->config = config;
  r->placement = placement;
  r->log = log;
  sq_arena_init(&r->arena, 16 * 1024);
  int rc = kvs__routing_sockets(r, zmq_context, why, why_len);
  if (rc == 0) {
    rc = -pthread_create(&r->thread, NULL, kvs__routing_main, r);
    if (rc) snprintf(why, why_len, "cannot start the routing thread: %s", sq_strerror(rc));
  }
  if (rc) {
    kvs_routing_stop(r);
    return rc;
  }
  r->started = 1;
  *out = r;
  return 0;
}

void kvs_routing_stop(kvs_routing_t *r) {
  if (!r) return;
  if (r->started) {
    zmq_send(r->control_main, "stop", 4, 0);
    pthread_join(r->thread, NULL);
  }
  if (r->socket) zmq_close(r->socket);
  if (r->control) zmq_close(r->control);
  if (r->control_main) zmq_close(r->control_main);
  sq_zmq_cache_destroy(r->replies);
  sq_arena_destroy(&r->arena);
  sq_buf_free(&r->out);
  free(r);
}

uint64_t kvs_routing_answered(const kvs_routing_t *r) {
  return atomic_load_explicit(&r->answered, memory_order_relaxed);
}
