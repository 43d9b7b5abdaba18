/* sq_zmq: never-blocking ZeroMQ helpers (see sq_zmq.h for the contract).
 *
 * The socket cache is a chained hash table keyed by endpoint plus a doubly linked
 * LRU list threading the same entries:
 *
 *   buckets[hash & mask] -> entry -> entry          head (most recent) <-> ... <-> tail
 *
 * Invariants: every entry is in exactly one bucket chain and in the LRU list;
 * size <= max_sockets after every call; an entry's socket is open and connected to
 * its endpoint. A lookup moves the entry to the head and stamps it with the time; an
 * insert past max_sockets closes the tail first. The bucket count is fixed at
 * creation (>= 2 * max_sockets, a power of two), so chains stay short without
 * rehashing.
 *
 * Idle expiry: stamps are taken from a monotonic clock (sq_now_coarse_ms: cheap on a
 * per-send path, and ms off is nothing against idle times of seconds) and only the
 * head is stamped, so they never increase from head to tail and the tail is always
 * the longest idle.
 * Each get closes tail entries idle for idle_ms, at most SQ_ZMQ_CACHE_EXPIRE_BATCH of
 * them, and stops at the first one still fresh: no scan, and each entry expires at
 * most once, so the work is O(1) amortised per call. The entry a get returns is
 * stamped before the expiry runs, so a get never closes the socket it hands out.
 */
#include "sq_zmq.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"
#include "sq_time.h"

/* ---- endpoints -------------------------------------------------------------------- */

static int sq__parse_port(const char *s, uint16_t *out) {
  unsigned long v = 0;
  if (!*s || strlen(s) > 5) return SQ_EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return SQ_EINVAL;
    v = v * 10 + (unsigned long)(*s - '0');
  }
  if (v == 0 || v > 65535) return SQ_EINVAL;
  *out = (uint16_t)v;
  return 0;
}

static int sq__endpoint_tcp(const char *rest, sq_zmq_endpoint_t *out) {
  const char *colon, *host = rest;
  size_t hostlen;
  if (rest[0] == '[') {
    const char *close = strchr(rest, ']');
    if (!close || close[1] != ':') return SQ_EINVAL;
    host = rest + 1;
    hostlen = (size_t)(close - host);
    colon = close + 1;
  } else {
    colon = strrchr(rest, ':');
    if (!colon) return SQ_EINVAL;
    hostlen = (size_t)(colon - rest);
    if (memchr(rest, ':', hostlen)) return SQ_EINVAL; /* bare IPv6 needs brackets */
  }
  if (hostlen == 0 || hostlen >= sizeof(out->host)) return SQ_EINVAL;
  int rc = sq__parse_port(colon + 1, &out->port);
  if (rc) return rc;
  memcpy(out->host, host, hostlen);
  out->host[hostlen] = '\0';
  strcpy(out->transport, "tcp");
  return 0;
}

int sq_zmq_endpoint_parse(const char *text, sq_zmq_endpoint_t *out) {
  static const char *const named[] = {"ipc", "inproc"};
  if (!text || strnlen(text, SQ_ZMQ_ENDPOINT_MAX) >= SQ_ZMQ_ENDPOINT_MAX) return SQ_EINVAL;
  memset(out, 0, sizeof(*out));
  if (strncmp(text, "tcp://", 6) == 0) return sq__endpoint_tcp(text + 6, out);
  for (size_t i = 0; i < 2; i++) {
    size_t n = strlen(named[i]);
    if (strncmp(text, named[i], n) != 0 || strncmp(text + n, "://", 3) != 0) continue;
    const char *name = text + n + 3;
    if (!*name) return SQ_EINVAL;
    strcpy(out->transport, named[i]);
    strcpy(out->host, name);
    return 0;
  }
  return SQ_EINVAL;
}

int sq_zmq_endpoint_tcp(char *buf, size_t len, const char *host, unsigned port) {
  bool v6 = strchr(host, ':') != NULL;
  int n = snprintf(buf, len, v6 ? "tcp://[%s]:%u" : "tcp://%s:%u", host, port);
  return n < 0 || (size_t)n >= len || port > 65535 ? SQ_EINVAL : 0;
}

/* An endpoint we are willing to connect to (it may come from the network). */
static bool sq__endpoint_ok(const char *ep) {
  if (!ep || strnlen(ep, SQ_ZMQ_ENDPOINT_MAX) >= SQ_ZMQ_ENDPOINT_MAX) return false;
  return strncmp(ep, "tcp://", 6) == 0 || strncmp(ep, "ipc://", 6) == 0 ||
         strncmp(ep, "inproc://", 9) == 0;
}

/* ---- sockets ---------------------------------------------------------------------- */

static const char *sq__bind_hint(int err) {
  switch (err) {
    case EADDRINUSE: return " (another process is listening on that port)";
    case EADDRNOTAVAIL: return " (that address is not on this machine)";
    case EACCES: return " (permission denied; ports below 1024 need privileges)";
    case ENODEV: return " (no such network interface)";
    case EINVAL: return " (malformed endpoint; expected e.g. tcp://127.0.0.1:6200)";
    case EPROTONOSUPPORT: return " (unsupported transport)";
    default: return "";
  }
}

int sq_zmq_bind(void *sock, const char *endpoint, char *err, size_t errlen) {
  if (zmq_bind(sock, endpoint) == 0) return 0;
  int e = zmq_errno();
  if (err && errlen)
    snprintf(err, errlen, "cannot bind %.*s: %s%s", SQ_ZMQ_ENDPOINT_MAX, endpoint,
             zmq_strerror(e), sq__bind_hint(e));
  return -e;
}

static int sq__setsockopt_int(void *sock, int opt, int value) {
  return zmq_setsockopt(sock, opt, &value, sizeof(value)) == 0 ? 0 : -zmq_errno();
}

int sq_zmq_pull_bind(void *zctx, const char *endpoint, int64_t max_msg_size, int rcvhwm,
                     char *err, size_t errlen, void **out) {
  int rc = 0;
  void *sock = zmq_socket(zctx, ZMQ_PULL);
  if (!sock) {
    rc = -zmq_errno();
    if (err && errlen) snprintf(err, errlen, "cannot make a socket: %s", zmq_strerror(-rc));
    return rc;
  }
  if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_msg_size, sizeof(max_msg_size)) != 0 ||
      (rcvhwm > 0 && sq__setsockopt_int(sock, ZMQ_RCVHWM, rcvhwm) != 0) ||
      sq__setsockopt_int(sock, ZMQ_LINGER, 0) != 0) {
    rc = -zmq_errno();
    if (err && errlen) snprintf(err, errlen, "cannot set socket options: %s",
                                zmq_strerror(-rc));
    goto out;
  }
  rc = sq_zmq_bind(sock, endpoint, err, errlen);
out:
  if (rc) zmq_close(sock);
  else *out = sock;
  return rc;
}

/* sq_zmq_push_connect with the reconnect ceiling given: ivl_max_ms < 0 leaves
 * libzmq's default (no back-off). Options must be set before zmq_connect: libzmq
 * copies them into the connection when it is made. */
static int sq__push_connect(void *zctx, const char *endpoint, int sndhwm, int linger_ms,
                            int ivl_max_ms, void **out) {
  int rc = 0;
  if (!sq__endpoint_ok(endpoint)) return SQ_EINVAL;
  void *sock = zmq_socket(zctx, ZMQ_PUSH);
  if (!sock) return -zmq_errno();
  if ((rc = sq__setsockopt_int(sock, ZMQ_LINGER, linger_ms)) ||
      (rc = sq__setsockopt_int(sock, ZMQ_SNDHWM, sndhwm)) ||
      (rc = sq__setsockopt_int(sock, ZMQ_SNDTIMEO, 0)) ||
      (rc = sq__setsockopt_int(sock, ZMQ_RECONNECT_IVL, SQ_ZMQ_RECONNECT_IVL_MS)) ||
      (ivl_max_ms >= 0 &&
       (rc = sq__setsockopt_int(sock, ZMQ_RECONNECT_IVL_MAX, ivl_max_ms))))
    goto out;
  if (zmq_connect(sock, endpoint) != 0) rc = -zmq_errno();
out:
  if (rc) zmq_close(sock);
  else *out = sock;
  return rc;
}

int sq_zmq_push_connect(void *zctx, const char *endpoint, int sndhwm, int linger_ms,
                        void **out) {
  return sq__push_connect(zctx, endpoint, sndhwm, linger_ms,
                          SQ_ZMQ_DEFAULT_RECONNECT_IVL_MAX_MS, out);
}

int sq_zmq_req_connect(void *zctx, const char *endpoint, int timeout_ms,
                       int64_t max_msg_size, void **out) {
  int rc = 0;
  if (!sq__endpoint_ok(endpoint)) return SQ_EINVAL;
  void *sock = zmq_socket(zctx, ZMQ_REQ);
  if (!sock) return -zmq_errno();
  if ((rc = sq__setsockopt_int(sock, ZMQ_LINGER, 0)) ||
      (rc = sq__setsockopt_int(sock, ZMQ_RCVTIMEO, timeout_ms)) ||
      (rc = sq__setsockopt_int(sock, ZMQ_SNDTIMEO, timeout_ms)) ||
      (rc = sq__setsockopt_int(sock, ZMQ_REQ_RELAXED, 1)) ||
      (rc = sq__setsockopt_int(sock, ZMQ_REQ_CORRELATE, 1)))
    goto out;
  if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_msg_size, sizeof(max_msg_size)) != 0 ||
      zmq_connect(sock, endpoint) != 0)
    rc = -zmq_errno();
out:
  if (rc) zmq_close(sock);
  else *out = sock;
  return rc;
}

/* ---- messages --------------------------------------------------------------------- */

int sq_zmq_send_pb(void *sock, const ProtobufCMessage *msg) {
  zmq_msg_t frame;
  size_t size = protobuf_c_message_get_packed_size(msg);
  if (zmq_msg_init_size(&frame, size) != 0) return -ENOMEM;
  protobuf_c_message_pack(msg, zmq_msg_data(&frame));
  if (zmq_msg_send(&frame, sock, ZMQ_DONTWAIT) >= 0) return 0; /* frame now zmq's */
  int e = zmq_errno();
  zmq_msg_close(&frame);
  return -e;
}

int sq_zmq_send_bytes(void *sock, const void *data, size_t len) {
  return zmq_send(sock, data, len, ZMQ_DONTWAIT) >= 0 ? 0 : -zmq_errno();
}

/* Reads and discards the remaining frames of a multi-frame message. */
static void sq__drain_frames(void *sock) {
  int more = 1;
  size_t len = sizeof(more);
  zmq_msg_t part;
  while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
    zmq_msg_init(&part);
    int n = zmq_msg_recv(&part, sock, ZMQ_DONTWAIT);
    zmq_msg_close(&part);
    if (n < 0) break;
  }
}

int sq_zmq_recv_frame(void *sock, size_t max_size, int flags, zmq_msg_t *msg) {
  int rc = 0;
  zmq_msg_init(msg);
  if (zmq_msg_recv(msg, sock, flags) < 0) {
    rc = -zmq_errno();
    goto out;
  }
  if (zmq_msg_more(msg)) {
    sq__drain_frames(sock);
    rc = SQ_EPROTO;
  } else if (zmq_msg_size(msg) > max_size) {
    rc = SQ_ETOOBIG;
  }
out:
  if (rc) zmq_msg_close(msg);
  return rc;
}

int sq_zmq_recv_pb(void *sock, const ProtobufCMessageDescriptor *desc, size_t max_size,
                   ProtobufCAllocator *alloc, int flags, ProtobufCMessage **out) {
  zmq_msg_t frame;
  int rc = sq_zmq_recv_frame(sock, max_size, flags, &frame);
  if (rc) return rc;
  /* protobuf-c copies strings and bytes out of the input, so the frame can go. */
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, alloc, zmq_msg_size(&frame),
                                                  zmq_msg_data(&frame));
  zmq_msg_close(&frame);
  if (!m) return SQ_EPROTO;
  *out = m;
  return 0;
}

/* ---- the PUSH socket cache -------------------------------------------------------- */

typedef struct sq__zentry {
  struct sq__zentry *hnext;       /* bucket chain */
  struct sq__zentry *prev, *next; /* LRU list; prev is more recent */
  uint64_t hash;
  uint64_t last_used_ms; /* sq_now_coarse_ms() of the last get; non-increasing to tail */
  void *sock;
  char endpoint[];
} sq__zentry_t;

struct sq_zmq_cache {
  void *zctx;
  size_t max_sockets;
  int sndhwm;
  int linger_ms;
  int ivl_max_ms; /* < 0: no back-off */
  int idle_ms;    /* > 0, or < 0 for never */
  sq__zentry_t **buckets;
  size_t mask; /* bucket count - 1 */
  size_t size;
  sq__zentry_t *head, *tail;
  sq_zmq_cache_stats_t stats;
};

static uint64_t sq__fnv1a(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  return h;
}

int sq_zmq_cache_create(void *zctx, const sq_zmq_cache_options_t *opts,
                        sq_zmq_cache_t **out) {
  static const sq_zmq_cache_options_t defaults = {.linger_ms = -1};
  if (!opts) opts = &defaults;
  sq_zmq_cache_t *c = calloc(1, sizeof(*c));
  if (!c) return -ENOMEM;
  c->zctx = zctx;
  c->max_sockets = opts->max_sockets ? opts->max_sockets : SQ_ZMQ_DEFAULT_CACHE_SOCKETS;
  c->sndhwm = opts->sndhwm ? opts->sndhwm : SQ_ZMQ_DEFAULT_SNDHWM;
  c->linger_ms = opts->linger_ms >= 0 ? opts->linger_ms : SQ_ZMQ_DEFAULT_LINGER_MS;
  c->ivl_max_ms = opts->reconnect_ivl_max_ms ? opts->reconnect_ivl_max_ms
                                             : SQ_ZMQ_DEFAULT_RECONNECT_IVL_MAX_MS;
  c->idle_ms = opts->idle_ms ? opts->idle_ms : SQ_ZMQ_DEFAULT_CACHE_IDLE_MS;
  size_t nb = 16;
  while (nb < 2 * c->max_sockets && nb < ((size_t)1 << 30)) nb *= 2;
  c->buckets = calloc(nb, sizeof(*c->buckets));
  if (!c->buckets) {
    free(c);
    return -ENOMEM;
  }
  c->mask = nb - 1;
  *out = c;
  return 0;
}

static void sq__lru_unlink(sq_zmq_cache_t *c, sq__zentry_t *e) {
  if (e->prev) e->prev->next = e->next;
  else c->head = e->next;
  if (e->next) e->next->prev = e->prev;
  else c->tail = e->prev;
  e->prev = e->next = NULL;
}

static void sq__lru_push_head(sq_zmq_cache_t *c, sq__zentry_t *e) {
  e->prev = NULL;
  e->next = c->head;
  if (c->head) c->head->prev = e;
  c->head = e;
  if (!c->tail) c->tail = e;
}

/* Unlinks e from its bucket and the LRU list, closes its socket and frees it. */
static void sq__entry_remove(sq_zmq_cache_t *c, sq__zentry_t *e) {
  sq__zentry_t **pp = &c->buckets[e->hash & c->mask];
  while (*pp != e) pp = &(*pp)->hnext;
  *pp = e->hnext;
  sq__lru_unlink(c, e);
  zmq_close(e->sock);
  free(e);
  c->size--;
}

static sq__zentry_t *sq__entry_find(const sq_zmq_cache_t *c, const char *ep, uint64_t h) {
  for (sq__zentry_t *e = c->buckets[h & c->mask]; e; e = e->hnext)
    if (e->hash == h && strcmp(e->endpoint, ep) == 0) return e;
  return NULL;
}

/* Connects a new entry for ep (hash h) at the LRU head, closing the tail first when
 * the cache is full. On success *out is the new entry (the cache's). */
static int sq__entry_add(sq_zmq_cache_t *c, const char *ep, uint64_t h, uint64_t now,
                         sq__zentry_t **out) {
  int rc = 0;
  size_t len = strlen(ep);
  sq__zentry_t *e = malloc(sizeof(*e) + len + 1);
  if (!e) return -ENOMEM;
  rc = sq__push_connect(c->zctx, ep, c->sndhwm, c->linger_ms, c->ivl_max_ms, &e->sock);
  if (rc) goto out;
  if (c->size >= c->max_sockets) {
    sq__entry_remove(c, c->tail);
    c->stats.evictions++;
  }
  memcpy(e->endpoint, ep, len + 1);
  e->hash = h;
  e->last_used_ms = now;
  e->hnext = c->buckets[h & c->mask];
  c->buckets[h & c->mask] = e;
  sq__lru_push_head(c, e);
  c->size++;
  c->stats.connects++;
  *out = e;
out:
  if (rc) free(e);
  return rc;
}

/* Closes up to SQ_ZMQ_CACHE_EXPIRE_BATCH entries unused for idle_ms. The LRU tail is
 * the least recently used, so the loop stops at the first entry still in use. */
static size_t sq__expire(sq_zmq_cache_t *c, uint64_t now) {
  size_t n = 0;
  if (c->idle_ms < 0) return 0;
  while (c->tail && n < SQ_ZMQ_CACHE_EXPIRE_BATCH &&
         now - c->tail->last_used_ms >= (uint64_t)c->idle_ms) {
    sq__entry_remove(c, c->tail);
    n++;
  }
  c->stats.expirations += n;
  return n;
}

void sq_zmq_cache_destroy(sq_zmq_cache_t *cache) {
  if (!cache) return;
  while (cache->head) sq__entry_remove(cache, cache->head);
  free(cache->buckets);
  free(cache);
}

int sq_zmq_cache_get(sq_zmq_cache_t *cache, const char *endpoint, void **sock) {
  if (!sq__endpoint_ok(endpoint)) return SQ_EINVAL;
  uint64_t now = sq_now_coarse_ms();
  uint64_t h = sq__fnv1a(endpoint);
  sq__zentry_t *e = sq__entry_find(cache, endpoint, h);
  if (e) { /* touched first, so the expiry below cannot close it */
    sq__lru_unlink(cache, e);
    sq__lru_push_head(cache, e);
    e->last_used_ms = now;
  }
  sq__expire(cache, now); /* before an insert: may spare an eviction */
  if (!e) {
    int rc = sq__entry_add(cache, endpoint, h, now, &e);
    if (rc) return rc;
  }
  *sock = e->sock;
  return 0;
}

int sq_zmq_cache_send(sq_zmq_cache_t *cache, const char *endpoint, const void *data,
                      size_t len) {
  void *sock;
  int rc = sq_zmq_cache_get(cache, endpoint, &sock);
  if (rc == 0) rc = sq_zmq_send_bytes(sock, data, len);
  if (rc == -EAGAIN) cache->stats.drops++;
  return rc;
}

int sq_zmq_cache_send_pb(sq_zmq_cache_t *cache, const char *endpoint,
                         const ProtobufCMessage *msg) {
  void *sock;
  int rc = sq_zmq_cache_get(cache, endpoint, &sock);
  if (rc == 0) rc = sq_zmq_send_pb(sock, msg);
  if (rc == -EAGAIN) cache->stats.drops++;
  return rc;
}

int sq_zmq_cache_drop(sq_zmq_cache_t *cache, const char *endpoint) {
  sq__zentry_t *e = sq__endpoint_ok(endpoint)
                        ? sq__entry_find(cache, endpoint, sq__fnv1a(endpoint))
                        : NULL;
  if (!e) return SQ_ENOTFOUND;
  sq__entry_remove(cache, e);
  return 0;
}

size_t sq_zmq_cache_expire(sq_zmq_cache_t *cache) {
  return sq__expire(cache, sq_now_coarse_ms());
}

size_t sq_zmq_cache_size(const sq_zmq_cache_t *cache) { return cache->size; }

sq_zmq_cache_stats_t sq_zmq_cache_stats(const sq_zmq_cache_t *cache) { return cache->stats; }
