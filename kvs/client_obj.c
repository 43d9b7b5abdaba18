/* client_obj: life cycle of a kvs_client, starting calls, and delivering completions
 * (contracts in client.h; the request engine is client.c).
 *
 * Ownership: the client owns its ops from kvs__op_start until they are delivered
 * (kvs_client_poll) or collected by the synchronous call that waits for them; it owns
 * the response socket, the PUSH sockets, and the context when it made it.
 */
#include "client_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <zmq.h>

#include "anna.pb-c.h"
#include "sq_error.h"
#include "sq_time.h"

#define KVS__DEFAULT_BIND "tcp://127.0.0.1:*"
#define KVS__MAX_RETRIES 1000

void kvs__list_append(kvs__list_t *l, kvs__op_t *op) {
  op->next = NULL;
  op->prev = l->tail;
  if (l->tail) l->tail->next = op;
  else l->head = op;
  l->tail = op;
  l->n++;
}

void kvs__list_remove(kvs__list_t *l, kvs__op_t *op) {
  if (op->prev) op->prev->next = op->next;
  else l->head = op->next;
  if (op->next) op->next->prev = op->prev;
  else l->tail = op->prev;
  op->prev = op->next = NULL;
  l->n--;
}

uint64_t kvs__rand(kvs_client_t *c) {
  c->rng ^= c->rng >> 12;
  c->rng ^= c->rng << 25;
  c->rng ^= c->rng >> 27;
  return c->rng * 2685821657736338717ull;
}

void kvs_client_result_clear(kvs_client_result_t *r) {
  if (!r) return;
  free(r->payload);
  memset(r, 0, sizeof *r);
}

void kvs__op_free(kvs__op_t *op) {
  if (!op) return;
  for (size_t i = 0; op->keys && i < op->n; i++) {
    free(op->keys[i].key);
    free(op->keys[i].val);
  }
  for (size_t i = 0; op->res && i < op->n; i++) free(op->res[i].payload);
  free(op->via_addr);
  free(op->via_tag);
  free(op->keys);
  free(op->names);
  free(op->res);
  free(op);
}

/* Copies key i of the caller's input into op. */
static int kvs__op_key(kvs__op_t *op, size_t i, const char *key, const kvs_client_kv_t *kv) {
  if (!key) return SQ_EINVAL;
  size_t len = strlen(key);
  if (len == 0) return SQ_EEMPTYKEY;
  if (len > KVS_CLIENT_MAX_KEY_BYTES) return SQ_ETOOBIG;
  kvs__key_t *k = &op->keys[i];
  if (!(k->key = strdup(key))) return -ENOMEM;
  op->names[i] = k->key;
  if (!kv) return 0;
  if (kv->type < SQ_LATTICE_LWW || kv->type > SQ_LATTICE_TYPE_MAX) return SQ_EUNKNOWNTYPE;
  if (kv->len > 0 && !kv->payload) return SQ_EINVAL;
  k->vtype = kv->type;
  k->vlen = kv->len;
  if (kv->len && !(k->val = malloc(kv->len))) return -ENOMEM;
  if (kv->len) memcpy(k->val, kv->payload, kv->len);
  return 0;
}

int kvs__op_start(kvs_client_t *c, int type, const char *const *keys,
                  const kvs_client_kv_t *kvs, size_t n, const kvs_client_limits_t *lim,
                  bool sync, kvs__op_t **out) {
  return kvs__op_start_via(c, type, keys, kvs, n, lim, sync, NULL, out);
}

int kvs__op_start_via(kvs_client_t *c, int type, const char *const *keys,
                      const kvs_client_kv_t *kvs, size_t n, const kvs_client_limits_t *lim,
                      bool sync, const kvs_client_via_t *via, kvs__op_t **out) {
  int rc = -ENOMEM;
  kvs__route_t *routes = NULL;
  if (c->broken) return SQ_ECLOSED;
  if (n == 0 || (!keys && !kvs)) return SQ_EINVAL;
  if (n > KVS_CLIENT_MAX_BATCH) return SQ_ETOOBIG;
  kvs__op_t *op = calloc(1, sizeof *op);
  if (!op || !(op->keys = calloc(n, sizeof *op->keys)) ||
      !(op->names = calloc(n, sizeof *op->names)) || !(op->res = calloc(n, sizeof *op->res)) ||
      !(routes = calloc(n, sizeof *routes)))
    goto out;
  op->n = op->nopen = n;
  op->type = type;
  op->sync = sync;
  op->timeout_ms = lim && lim->timeout_ms > 0 ? lim->timeout_ms : c->timeout_ms;
  op->retries = lim && lim->retries >= 0 ? lim->retries : c->retries;
  if (op->retries > KVS__MAX_RETRIES) op->retries = KVS__MAX_RETRIES;
  if (via) {
    op->via_ms = via->wait_ms > 0 ? via->wait_ms : op->timeout_ms;
    if (!(op->via_addr = strdup(via->response_address)) ||
        !(op->via_tag = strdup(via->tag)))
      goto out;
  }
  for (size_t i = 0; i < n; i++) {
    rc = kvs__op_key(op, i, kvs ? kvs[i].key : keys[i], kvs ? &kvs[i] : NULL);
    if (rc != 0) goto out;
    routes[i].idx = (uint32_t)i;
  }
  op->id = c->next_id++;
  kvs__list_append(&c->inflight, op);
  kvs__dispatch(c, op, routes, n);
  *out = op;
  op = NULL;
  rc = 0;
out:
  kvs__op_free(op);
  free(routes);
  return rc;
}

int kvs_client_get_async(kvs_client_t *c, const char *const *keys, size_t n,
                         const kvs_client_limits_t *lim, uint64_t *id) {
  kvs__op_t *op = NULL;
  if (!keys) return SQ_EINVAL;
  int rc = kvs__op_start(c, REQUEST_TYPE__GET, keys, NULL, n, lim, false, &op);
  if (rc == 0 && id) *id = op->id;
  return rc;
}

/* True when tag is 1..KVS_CLIENT_TAG_MAX bytes of [A-Za-z0-9_-]. */
static bool kvs__tag_valid(const char *tag) {
  size_t n = tag ? strlen(tag) : 0;
  if (n == 0 || n > KVS_CLIENT_TAG_MAX) return false;
  for (size_t i = 0; i < n; i++) {
    char ch = tag[i];
    bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
              (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

int kvs_client_get_async_via(kvs_client_t *c, const char *key, const kvs_client_limits_t *lim,
                             const kvs_client_via_t *via, uint64_t *id) {
  kvs__op_t *op = NULL;
  if (!key || !via || !via->response_address || !kvs__tag_valid(via->tag) ||
      !kvs__endpoint_valid(via->response_address, strlen(via->response_address)))
    return SQ_EINVAL;
  int rc = kvs__op_start_via(c, REQUEST_TYPE__GET, &key, NULL, 1, lim, false, via, &op);
  if (rc == 0 && id) *id = op->id;
  return rc;
}

int kvs_client_put_async(kvs_client_t *c, const kvs_client_kv_t *kvs, size_t n,
                         const kvs_client_limits_t *lim, uint64_t *id) {
  kvs__op_t *op = NULL;
  if (!kvs) return SQ_EINVAL;
  int rc = kvs__op_start(c, REQUEST_TYPE__PUT, NULL, kvs, n, lim, false, &op);
  if (rc == 0 && id) *id = op->id;
  return rc;
}

/* Hands every finished asynchronous op to cb and frees it; returns how many. */
static int kvs__deliver(kvs_client_t *c, kvs_client_cb_t cb, void *arg) {
  int n = 0;
  kvs__op_t *op = c->finished.head;
  while (op) {
    kvs__op_t *next = op->next;
    if (!op->sync) {
      kvs__list_remove(&c->finished, op);
      kvs_client_completion_t done = {.id = op->id, .type = op->type, .n = op->n,
                                      .keys = op->names, .results = op->res};
      if (cb) cb(arg, &done);
      kvs__op_free(op);
      n++;
    }
    op = next;
  }
  return n;
}

int kvs_client_poll(kvs_client_t *c, int timeout_ms, kvs_client_cb_t cb, void *arg) {
  uint64_t start = sq_now_ms();
  for (bool first = true;; first = false) {
    int wait = 0;
    if (!first && timeout_ms >= 0) {
      uint64_t elapsed = sq_now_ms() - start;
      if (elapsed >= (uint64_t)timeout_ms) return 0;
      wait = timeout_ms - (int)elapsed;
    } else if (!first) {
      wait = -1;
    }
    int rc = kvs__pump(c, wait);
    if (rc != 0) return rc;
    int n = kvs__deliver(c, cb, arg);
    if (n > 0 || c->inflight.n == 0) return n;
  }
}

/* Fills c->id from opts or makes "c<pid>.<random hex>"; seeds the replica picker. */
static int kvs__client_ident(kvs_client_t *c, const char *want) {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
    seed = sq_now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
  c->rng = seed | 1;
  if (want) {
    size_t n = strlen(want);
    if (n == 0 || n >= KVS__CLIENT_ID_MAX - 24) return SQ_ECONFIG;
    for (size_t i = 0; i < n; i++)
      if (want[i] <= ' ' || want[i] > '~') return SQ_ECONFIG;
    memcpy(c->id, want, n + 1);
  } else {
    snprintf(c->id, sizeof c->id, "c%ld.%08" PRIx32, (long)getpid(),
             (uint32_t)(kvs__rand(c) >> 32));
  }
  c->idlen = strlen(c->id);
  return 0;
}

/* Computes the response address from the bound endpoint and opts->advertise. */
static int kvs__client_address(kvs_client_t *c, const char *advertise) {
  char ep[KVS__MAX_ENDPOINT + 1];
  size_t len = sizeof ep;
  if (zmq_getsockopt(c->pull, ZMQ_LAST_ENDPOINT, ep, &len) != 0) return -zmq_errno();
  ep[sizeof ep - 1] = '\0';
  bool tcp = strncmp(ep, "tcp://", 6) == 0;
  const char *colon = strrchr(ep, ':');
  if (tcp && advertise && colon) {
    /* advertise is a host; the whole endpoint is checked below */
    size_t n = strlen(advertise) + strlen(colon) + 8;
    if (!(c->response_address = malloc(n))) return -ENOMEM;
    snprintf(c->response_address, n, "tcp://%s%s", advertise, colon);
  } else {
    if (tcp && (strstr(ep, "//0.0.0.0:") || strstr(ep, "//[::]:") || strstr(ep, "//*:")))
      return SQ_ECONFIG;
    if (!(c->response_address = strdup(ep))) return -ENOMEM;
  }
  if (!kvs__endpoint_valid(c->response_address, strlen(c->response_address)))
    return SQ_ECONFIG;
  return 0;
}

/* Creates, configures and binds the response socket. */
static int kvs__client_socket(kvs_client_t *c, const kvs_client_options_t *o) {
  if (!(c->pull = zmq_socket(c->ctx, ZMQ_PULL))) return -zmq_errno();
  int zero = 0;
  int64_t max = o->max_message_bytes > 0 ? o->max_message_bytes : (int64_t)256 << 20;
  c->max_msg = (size_t)max;
  if (zmq_setsockopt(c->pull, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
      zmq_setsockopt(c->pull, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0)
    return -zmq_errno();
  if (zmq_bind(c->pull, o->bind ? o->bind : KVS__DEFAULT_BIND) != 0)
    return zmq_errno() == EINVAL || zmq_errno() == EPROTONOSUPPORT ? SQ_ECONFIG : -zmq_errno();
  return kvs__client_address(c, o->advertise);
}

static int kvs__client_routing(kvs_client_t *c, const kvs_client_options_t *o) {
  if (!o->routing || o->nrouting == 0) return SQ_EINVAL;
  if (!(c->routing = calloc(o->nrouting, sizeof *c->routing))) return -ENOMEM;
  for (; c->nrouting < o->nrouting; c->nrouting++) {
    const char *r = o->routing[c->nrouting];
    if (!r || !kvs__endpoint_valid(r, strlen(r))) return SQ_ECONFIG;
    if (!(c->routing[c->nrouting] = strdup(r))) return -ENOMEM;
  }
  return 0;
}

int kvs_client_create(const kvs_client_options_t *opts, kvs_client_t **out) {
  int rc = -ENOMEM;
  if (!opts || !out) return SQ_EINVAL;
  kvs_client_t *c = calloc(1, sizeof *c);
  if (!c) goto out;
  c->next_id = 1;
  c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : KVS_CLIENT_DEFAULT_TIMEOUT_MS;
  c->retries = opts->retries >= 0 ? opts->retries : KVS_CLIENT_DEFAULT_RETRIES;
  if (c->retries > KVS__MAX_RETRIES) c->retries = KVS__MAX_RETRIES;
  sq_arena_init(&c->arena, 64 * 1024);
  if ((rc = kvs__client_routing(c, opts)) != 0) goto out;
  if ((rc = kvs__client_ident(c, opts->client_id)) != 0) goto out;
  if ((rc = kvs__addr_init(&c->addrs, opts->max_cached_keys ? opts->max_cached_keys
                                                            : 65536)) != 0)
    goto out;
  c->own_ctx = opts->zmq_context == NULL;
  c->ctx = c->own_ctx ? zmq_ctx_new() : opts->zmq_context;
  rc = -ENOMEM;
  if (!c->ctx) goto out;
  c->socks.ctx = c->ctx;
  c->socks.max = opts->max_sockets ? opts->max_sockets : 64;
  if ((rc = kvs__client_socket(c, opts)) != 0) goto out;
  *out = c;
  c = NULL;
out:
  kvs_client_destroy(c);
  return rc;
}

void kvs_client_destroy(kvs_client_t *c) {
  if (!c) return;
  for (size_t b = 0; b < c->nwbuckets; b++) {
    kvs__wire_t *w = c->wbuckets[b];
    while (w) {
      kvs__wire_t *next = w->hnext;
      free(w->endpoint);
      free(w->tag);
      free(w->idx);
      free(w);
      w = next;
    }
  }
  free(c->wbuckets);
  kvs__list_t *lists[] = {&c->inflight, &c->finished};
  for (size_t l = 0; l < 2; l++) {
    while (lists[l]->head) {
      kvs__op_t *op = lists[l]->head;
      kvs__list_remove(lists[l], op);
      kvs__op_free(op);
    }
  }
  kvs__heap_free(&c->timers);
  kvs__addr_free(&c->addrs);
  kvs__sock_free(&c->socks);
  if (c->pull) zmq_close(c->pull);
  if (c->own_ctx && c->ctx) zmq_ctx_term(c->ctx);
  for (size_t i = 0; i < c->nrouting; i++) free(c->routing[i]);
  free(c->routing);
  free(c->response_address);
  sq_arena_destroy(&c->arena);
  free(c);
}

const char *kvs_client_response_address(const kvs_client_t *c) {
  return c->response_address;
}

const char *kvs_client_id(const kvs_client_t *c) { return c->id; }

const char *kvs_client_message(const kvs_client_t *c) { return c->message; }

void *kvs_client_socket(const kvs_client_t *c) { return c->pull; }

int kvs_client_fd(const kvs_client_t *c, int *fd) {
  size_t len = sizeof *fd;
  return zmq_getsockopt(c->pull, ZMQ_FD, fd, &len) == 0 ? 0 : -zmq_errno();
}

size_t kvs_client_pending(const kvs_client_t *c) {
  size_t n = c->inflight.n;
  for (const kvs__op_t *op = c->finished.head; op; op = op->next) n += !op->sync;
  return n;
}

void kvs_client_stats(const kvs_client_t *c, kvs_client_stats_t *out) { *out = c->stats; }
