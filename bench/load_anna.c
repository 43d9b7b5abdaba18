/* load_anna: the Anna-protocol side of kvs_load -- GET/PUT against squall-kvs (or
 * any Anna node) exactly as an Anna client talks to it (PROTOCOL.md §1.2, §2.4).
 *
 * Before any load, load_anna_prepare() asks the routing thread
 * (tcp://host:6450+offset, KeyAddressRequest, many keys per request) where every key
 * lives and keeps the answer: a table of endpoints and, per key, the index of the
 * endpoint used for it and the number of replicas the routing tier named (sent back
 * as address_cache_size, as Anna clients do). The table is read-only afterwards and
 * shared by all load threads.
 *
 * Each load thread then behaves like one Anna client thread: ONE reply address (the
 * response_address of all its clients, a listener on an ephemeral loopback port that
 * the storage threads' reply sockets connect to) and one connection per storage
 * endpoint, shared by its logical clients. Each logical client keeps up to `depth`
 * KeyRequests of one tuple in flight. A request's client, slot and sequence number
 * travel in request_id ("<client>.<slot>.<seq>") and come back as response_id, so
 * replies may arrive in any order and are matched to their client without a socket
 * per client; a reply for a slot that has moved on (it timed out) is dropped
 * silently, its timeout already counted.
 *
 * The hot loop speaks ZMTP itself (zmtp.h) on plain sockets, as the Redis side speaks
 * RESP: libzmq's I/O thread, per-message allocations and wake-ups cost the load
 * generator more CPU per request than the server's whole work, CPU the server does
 * not get on a small machine. (Routing, done once before the load, still uses libzmq.)
 *
 *   thread loop: epoll_wait(listener, reply connections, endpoints with output, 10 ms)
 *     -> accept reply connections (ZMTP handshake as a PULL peer)
 *     -> read every reply connection dry, decode each whole frame by hand
 *        (bounds-checked), complete its slot
 *     -> top up every client that got a slot back (closed loop): its requests are
 *        queued per endpoint as ZMTP frames ...
 *     -> ... and written with one write per endpoint for the whole turn
 *
 * (One socket per client, polled every turn, cost 30-50 us of client CPU per request
 * on a small machine -- more than the server's work.)
 * Replies are untrusted: decoded with a size limit, response ids parsed with bounds,
 * GET values checked to be LWW payloads of the expected size.
 * Threads: a thread's sockets belong to it; only the ZeroMQ context and
 * the routing table are shared (read-only).
 */
#include "load.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "anna.pb-c.h"
#include "lattice.h"
#include "sq_buf.h"
#include "sq_error.h"
#include "sq_zmq.h"
#include "zmtp.h"

#define ANNA__PORT_KEY_ADDRESS 6450
#define ANNA__MAX_ENDPOINTS 250
#define ANNA__ROUTE_BATCH 500
#define ANNA__ROUTE_TIMEOUT_NS 20000000000ull
#define ANNA__REPLY_SLACK 65536
#define ANNA__ROUTE_HWM 100000     /* routing answers queued */
#define ANNA__MAX_PULLS 256        /* reply connections per load thread */
#define ANNA__READ_CHUNK 262144
#define ANNA__READ_CHUNKS_MAX 4 /* per wake-up: epoll is level-triggered, the rest waits */
/* epoll tags: the listener, a reply connection (| index), an endpoint (| index) */
#define ANNA__TAG_LISTEN 0u
#define ANNA__TAG_PULL (1u << 24)
#define ANNA__TAG_PUSH (2u << 24)
#define ANNA__TAG_INDEX 0xffffffu

typedef struct {
  int nendpoints;
  char endpoints[ANNA__MAX_ENDPOINTS][SQ_ZMQ_ENDPOINT_MAX];
  uint8_t *key_ep;    /* per key: endpoint index, 0xff = unknown */
  uint8_t *key_nips;  /* per key: replicas named by routing */
} anna__table_t;

/* Index of endpoint text in the table, adding it when new; -1 when full/too long. */
static int anna__endpoint_index(anna__table_t *tb, const char *ep) {
  for (int i = 0; i < tb->nendpoints; i++)
    if (strcmp(tb->endpoints[i], ep) == 0) return i;
  if (tb->nendpoints == ANNA__MAX_ENDPOINTS || strlen(ep) >= SQ_ZMQ_ENDPOINT_MAX) return -1;
  snprintf(tb->endpoints[tb->nendpoints], SQ_ZMQ_ENDPOINT_MAX, "%s", ep);
  return tb->nendpoints++;
}

/* Parses "key:NNNNNNNN" back into its index; false for any other text. */
static bool anna__key_index(const char *name, uint64_t nkeys, uint64_t *out) {
  if (strncmp(name, "key:", 4) != 0 || name[4] == '\0') return false;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(name + 4, &end, 10);
  if (errno || *end || v >= nkeys) return false;
  *out = v;
  return true;
}

/* Sends KeyAddressRequests for every key the table does not know yet, in batches. */
static int anna__route_ask(const anna__table_t *tb, void *push, const char *reply_to,
                           uint64_t nkeys) {
  char names[ANNA__ROUTE_BATCH][LOAD_KEY_MAX];
  char *ptrs[ANNA__ROUTE_BATCH];
  int rc = 0;
  uint64_t k = 0;
  while (k < nkeys && rc == 0) {
    size_t n = 0;
    for (; k < nkeys && n < ANNA__ROUTE_BATCH; k++) {
      if (tb->key_ep[k] != 0xff) continue;
      load_key_name(k, names[n]);
      ptrs[n] = names[n];
      n++;
    }
    if (n == 0) break;
    KeyAddressRequest req = KEY_ADDRESS_REQUEST__INIT;
    char id[32];
    snprintf(id, sizeof(id), "route.%" PRIu64, k);
    req.response_address = (char *)reply_to;
    req.keys = ptrs;
    req.n_keys = n;
    req.request_id = id;
    do {
      rc = sq_zmq_send_pb(push, &req.base);
    } while (rc == -EAGAIN);
  }
  return rc;
}

/* Records one KeyAddressResponse in the table; returns how many keys it resolved,
 * or -1 when the cluster answered NO_SERVERS. */
static long anna__route_take(anna__table_t *tb, const KeyAddressResponse *r, uint64_t nkeys) {
  long got = 0;
  if (r->error == ANNA_ERROR__NO_SERVERS) return -1;
  for (size_t i = 0; i < r->n_addresses; i++) {
    const KeyAddressResponse__KeyAddress *a = r->addresses[i];
    uint64_t k;
    if (!a || !a->key || !anna__key_index(a->key, nkeys, &k) || a->n_ips == 0) continue;
    int ep = anna__endpoint_index(tb, a->ips[k % a->n_ips]);
    if (ep < 0) continue;
    if (tb->key_ep[k] == 0xff) got++;
    tb->key_ep[k] = (uint8_t)ep;
    tb->key_nips[k] = (uint8_t)(a->n_ips > 255 ? 255 : a->n_ips);
  }
  return got;
}

/* Binds a PULL socket to an ephemeral loopback port; its endpoint goes to addr. */
static int anna__pull_ephemeral(void *zctx, const char *host, int64_t max_msg, void **out,
                                char *addr, size_t addrlen) {
  char ep[SQ_ZMQ_ENDPOINT_MAX];
  int rc = sq_zmq_endpoint_tcp(ep, sizeof(ep), host, 0);
  if (rc != 0) return rc;
  /* "tcp://host:0" is not a zmq wildcard; "tcp://host:*" is. */
  char *colon = strrchr(ep, ':');
  if (!colon || (size_t)(colon - ep) + 3 > sizeof(ep)) return SQ_EINVAL;
  strcpy(colon + 1, "*");
  rc = sq_zmq_pull_bind(zctx, ep, max_msg, ANNA__ROUTE_HWM, NULL, 0, out);
  if (rc != 0) return rc;
  size_t len = addrlen;
  if (zmq_getsockopt(*out, ZMQ_LAST_ENDPOINT, addr, &len) != 0) {
    rc = -zmq_errno();
    zmq_close(*out);
    *out = NULL;
  }
  return rc;
}

/* Receives routing answers until every key is known, asking again for missing keys
 * every second (or after NO_SERVERS: the node may still be starting). */
static int anna__route_collect(anna__table_t *tb, void *pull, void *push, const char *me,
                               uint64_t nkeys, char *err, size_t errlen) {
  uint64_t resolved = 0, start = load_now_ns(), last_ask = start;
  int timeout_ms = 200, rc = 0;
  zmq_setsockopt(pull, ZMQ_RCVTIMEO, &timeout_ms, sizeof(timeout_ms));
  while (resolved < nkeys) {
    uint64_t now = load_now_ns();
    if (now - start > ANNA__ROUTE_TIMEOUT_NS) {
      snprintf(err, errlen, "routing answered for %" PRIu64 " of %" PRIu64 " keys in 20 s",
               resolved, nkeys);
      return SQ_ETIMEOUT;
    }
    if (now - last_ask > 1000000000ull) {
      rc = anna__route_ask(tb, push, me, nkeys);
      if (rc != 0) break;
      last_ask = now;
    }
    ProtobufCMessage *m = NULL;
    rc = sq_zmq_recv_pb(pull, &key_address_response__descriptor, 64u << 20, NULL, 0, &m);
    if (rc == -EAGAIN) continue;
    if (rc != 0) break;
    long got = anna__route_take(tb, (KeyAddressResponse *)m, nkeys);
    protobuf_c_message_free_unpacked(m, NULL);
    if (got > 0) resolved += (uint64_t)got;
  }
  if (rc != 0) snprintf(err, errlen, "routing: %s", sq_strerror(rc));
  return rc;
}

int load_anna_prepare(const load_opts_t *opts, void *zctx, void **shared, char *err,
                      size_t errlen) {
  anna__table_t *tb = calloc(1, sizeof(*tb));
  void *pull = NULL, *push = NULL;
  char me[SQ_ZMQ_ENDPOINT_MAX], route[SQ_ZMQ_ENDPOINT_MAX];
  uint64_t nkeys = (uint64_t)opts->keys;
  int rc = -ENOMEM;
  if (!tb) goto out;
  tb->key_ep = malloc(nkeys);
  tb->key_nips = calloc(nkeys, 1);
  if (!tb->key_ep || !tb->key_nips) goto out;
  memset(tb->key_ep, 0xff, nkeys);
  rc = sq_zmq_endpoint_tcp(route, sizeof(route), opts->host,
                           (unsigned)(ANNA__PORT_KEY_ADDRESS + opts->port_offset));
  if (rc == 0) rc = anna__pull_ephemeral(zctx, opts->host, 64 << 20, &pull, me, sizeof(me));
  if (rc == 0) rc = sq_zmq_push_connect(zctx, route, 100000, 0, &push);
  if (rc != 0) {
    snprintf(err, errlen, "routing sockets (%s): %s", route, sq_strerror(rc));
    goto out;
  }
  rc = anna__route_ask(tb, push, me, nkeys);
  if (rc == 0) rc = anna__route_collect(tb, pull, push, me, nkeys, err, errlen);
  else snprintf(err, errlen, "routing: %s", sq_strerror(rc));
out:
  if (pull) zmq_close(pull);
  if (push) zmq_close(push);
  if (rc == 0) {
    *shared = tb;
  } else {
    load_anna_release(tb);
    if (rc == -ENOMEM) snprintf(err, errlen, "out of memory for %" PRIu64 " keys", nkeys);
  }
  return rc;
}

void load_anna_release(void *shared) {
  anna__table_t *tb = shared;
  if (!tb) return;
  free(tb->key_ep);
  free(tb->key_nips);
  free(tb);
}

/* ---- the load loop ------------------------------------------------------------------ */

typedef struct {
  uint64_t seq;      /* sequence number of the request in the slot */
  uint64_t sent_ns;
  bool busy;
} anna__slot_t;

typedef struct {
  anna__slot_t *slots;
  uint32_t *free_slots;            /* stack of free slot indexes */
  uint32_t nfree;
  uint64_t next_seq;
  uint64_t last_ts;                /* LWW timestamp slot of this client */
  uint32_t id;                     /* global client number */
  bool listed;                     /* in the loop's refill list */
} anna__client_t;

/* A connection to one storage endpoint's request socket (a ZeroMQ PULL). */
typedef struct {
  int fd;          /* -1: not connected yet, or dropped after a failure */
  load_out_t out;  /* framed requests not yet written */
  bool told;       /* a failed connect was reported (once, not every retry) */
} anna__push_t;

/* A connection a storage thread's reply socket (a ZeroMQ PUSH) opened to us. */
typedef struct {
  int fd;          /* -1: free */
  sq_buf_t in;     /* reply bytes not yet parsed */
} anna__pull_t;

typedef struct {
  load_thread_t *t;
  const anna__table_t *tb;
  int n;
  uint32_t depth;
  anna__client_t *clients;
  uint32_t *refill;                /* clients with slots freed since the last top-up */
  uint32_t nrefill;
  int ep;                          /* epoll */
  int listen_fd;                   /* where storage threads connect to reply */
  char addr[SQ_ZMQ_ENDPOINT_MAX];  /* its response_address */
  anna__push_t *push;              /* per endpoint, connected on first use */
  anna__pull_t pulls[ANNA__MAX_PULLS];
  uint64_t outstanding;
  uint8_t *value;
  size_t max_reply;
} anna__loop_t;

/* An LWW timestamp like Anna's (time * scale + client id) but in microseconds and
 * with ONE scale for every client. Anna scales by the smallest power of ten above the
 * writer's id, so writer 20's stamps are ten times writer 5's whatever the time, and
 * a later write by a low id loses to an earlier one by a higher id; millisecond slots
 * also run seconds ahead of the clock at 10k PUTs/s per client. Here a later cell's
 * writes (the 1 KiB preload after the 8 B PUT cells) always win the LWW merge.
 * Strictly increasing per client (*last); id < LOAD_MAX_CLIENTS = the scale. */
static uint64_t anna__timestamp(uint32_t id, uint64_t *last) {
  struct timespec now;
  const uint64_t scale = LOAD_MAX_CLIENTS;
  clock_gettime(CLOCK_REALTIME, &now);
  uint64_t us = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
  if (*last / scale >= us) us = *last / scale + 1;
  *last = us * scale + id;
  return *last;
}

/* ---- the wire, by hand (like the Redis side's RESP) -------------------------------
 * Requests are encoded and replies decoded without protobuf-c: the bytes are exactly
 * what key_request__pack() writes (fields in number order, defaults omitted), which
 * anna__selfcheck() verifies against protobuf-c when each thread starts. The load
 * generator's CPU is CPU the server does not get on a small machine; protobuf-c's
 * descriptor-driven pack/unpack cost more than the whole Redis client per request. */

static size_t anna__vlen(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static uint8_t *anna__vput(uint8_t *o, uint64_t v) {
  while (v >= 0x80) {
    *o++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *o++ = (uint8_t)v;
  return o;
}

/* A length-delimited field (omitted when empty, as proto3 does). */
static size_t anna__ld_size(size_t n) { return n ? 1 + anna__vlen(n) + n : 0; }

static uint8_t *anna__ld(uint8_t *o, uint8_t tag, const void *p, size_t n) {
  if (!n) return o;
  *o++ = tag;
  o = anna__vput(o, n);
  memcpy(o, p, n);
  return o + n;
}

typedef struct {
  int type;             /* REQUEST_TYPE__GET or __PUT */
  const char *key;
  uint32_t nips;        /* address_cache_size */
  uint64_t timestamp;   /* PUT: LWW timestamp */
  const uint8_t *value; /* PUT: LWW value */
  size_t value_len;
  const char *addr;     /* response_address */
  const char *id;       /* request_id */
} anna__req_t;

/* Appends to out one ZMTP frame holding a one-tuple KeyRequest (with its LWWValue
 * payload for a PUT). */
static int anna__encode(const anna__req_t *r, sq_buf_t *out) {
  size_t klen = strlen(r->key), alen = strlen(r->addr), ilen = strlen(r->id);
  bool put = r->type == REQUEST_TYPE__PUT;
  size_t plen = put ? 1 + anna__vlen(r->timestamp) + anna__ld_size(r->value_len) : 0;
  size_t tlen = anna__ld_size(klen) + (put ? 2 + anna__ld_size(plen) : 0) +
                (r->nips ? 1 + anna__vlen(r->nips) : 0);
  size_t total = 2 + 1 + anna__vlen(tlen) + tlen + anna__ld_size(alen) + anna__ld_size(ilen);
  int rc = sq_buf_reserve(out, ZMTP_HEADER_MAX + total);
  if (rc != 0) return rc;
  uint8_t *o = out->data + out->len;
  o += zmtp_frame_header(o, total);
  uint8_t *body = o;
  *o++ = 0x08; /* type */
  *o++ = (uint8_t)r->type;
  *o++ = 0x12; /* the tuple */
  o = anna__vput(o, tlen);
  o = anna__ld(o, 0x0a, r->key, klen);
  if (put) {
    *o++ = 0x10; /* lattice_type LWW */
    *o++ = LATTICE_TYPE__LWW;
    *o++ = 0x22; /* payload: LWWValue {timestamp = 1, value = 2} */
    o = anna__vput(o, plen);
    *o++ = 0x08;
    o = anna__vput(o, r->timestamp);
    o = anna__ld(o, 0x12, r->value, r->value_len);
  }
  if (r->nips) {
    *o++ = 0x28;
    o = anna__vput(o, r->nips);
  }
  o = anna__ld(o, 0x1a, r->addr, alen);
  o = anna__ld(o, 0x22, r->id, ilen);
  if ((size_t)(o - body) != total) return SQ_EPROTO;
  out->len = (size_t)(o - out->data);
  return 0;
}

/* The same request through protobuf-c and sq_lattice_encode, for the self-check. */
static int anna__encode_pb(const anna__req_t *r, sq_buf_t *out) {
  KeyTuple tup = KEY_TUPLE__INIT;
  KeyTuple *tups[1] = {&tup};
  KeyRequest req = KEY_REQUEST__INIT;
  sq_buf_t payload = {0};
  tup.key = (char *)r->key;
  tup.address_cache_size = r->nips;
  req.tuples = tups;
  req.n_tuples = 1;
  req.response_address = (char *)r->addr;
  req.request_id = (char *)r->id;
  req.type = (RequestType)r->type;
  int rc = 0;
  if (r->type == REQUEST_TYPE__PUT) {
    sq_lattice_t l = {.type = SQ_LATTICE_LWW};
    l.u.lww.timestamp = r->timestamp;
    l.u.lww.value.data = (uint8_t *)r->value;
    l.u.lww.value.len = r->value_len;
    rc = sq_lattice_encode(&l, &payload);
    tup.lattice_type = LATTICE_TYPE__LWW;
    tup.payload.data = payload.data;
    tup.payload.len = payload.len;
  }
  size_t n = key_request__get_packed_size(&req);
  sq_buf_reset(out);
  if (rc == 0) rc = sq_buf_reserve(out, n);
  if (rc == 0) out->len = key_request__pack(&req, out->data);
  sq_buf_free(&payload);
  return rc;
}

/* Checks, once per thread, that the hand encoder writes protobuf-c's bytes (in a
 * ZMTP frame). */
static int anna__selfcheck(anna__loop_t *lp) {
  anna__req_t r = {.type = lp->t->op == LOAD_OP_PUT ? REQUEST_TYPE__PUT : REQUEST_TYPE__GET,
                   .key = "key:00000042", .nips = 1, .timestamp = 1764230400000000123ull,
                   .value = lp->value, .value_len = lp->t->opts->value_size,
                   .addr = lp->addr, .id = "49.15.1234567"};
  sq_buf_t a = {0}, b = {0};
  uint8_t head[ZMTP_HEADER_MAX];
  int rc = anna__encode(&r, &a);
  if (rc == 0) rc = anna__encode_pb(&r, &b);
  size_t hlen = rc == 0 ? zmtp_frame_header(head, b.len) : 0;
  if (rc == 0 && (a.len != hlen + b.len || memcmp(a.data, head, hlen) != 0 ||
                  memcmp(a.data + hlen, b.data, b.len) != 0))
    rc = SQ_EPROTO;
  sq_buf_free(&a);
  sq_buf_free(&b);
  return rc;
}

/* Connects to endpoint ep's request socket and greets it as a PUSH socket. */
static int anna__push_open(anna__loop_t *lp, int ep) {
  sq_zmq_endpoint_t where;
  char err[160];
  int fd = -1;
  int rc = sq_zmq_endpoint_parse(lp->tb->endpoints[ep], &where);
  if (rc == 0 && strcmp(where.transport, "tcp") != 0) rc = SQ_EINVAL; /* ZMTP over TCP only */
  if (rc == 0) rc = load_tcp_connect(where.host, where.port, &fd);
  if (rc == 0) rc = zmtp_handshake(fd, "PUSH", "PULL", err, sizeof(err));
  else snprintf(err, sizeof(err), "%s", sq_strerror(rc));
  struct epoll_event ev = {.events = 0, .data.u32 = ANNA__TAG_PUSH | (uint32_t)ep};
  if (rc == 0 && epoll_ctl(lp->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    rc = -errno;
    snprintf(err, sizeof(err), "epoll: %s", sq_strerror(rc));
  }
  if (rc != 0) {
    if (fd >= 0) close(fd);
    if (!lp->push[ep].told)
      fprintf(stderr, "kvs_load: %s: %s (retrying)\n", lp->tb->endpoints[ep], err);
    lp->push[ep].told = true;
    return rc;
  }
  lp->push[ep].fd = fd;
  lp->push[ep].told = false;
  return 0;
}

/* Drops endpoint ep's connection after a write failed: the requests queued or in
 * flight on it get no reply and count as timeouts; the next request reconnects. */
static void anna__push_drop(anna__loop_t *lp, int ep) {
  anna__push_t *p = &lp->push[ep];
  epoll_ctl(lp->ep, EPOLL_CTL_DEL, p->fd, NULL);
  close(p->fd);
  p->fd = -1;
  p->out.off = 0;
  p->out.want_out = false;
  sq_buf_reset(&p->out.buf);
}

/* Queues one KeyRequest for key from client c into a free slot (written by
 * anna__flush). */
static int anna__send(anna__loop_t *lp, anna__client_t *c, uint64_t key, uint64_t now) {
  const anna__table_t *tb = lp->tb;
  char name[LOAD_KEY_MAX], id[48];
  int ep = tb->key_ep[key], rc;
  load_key_name(key, name);
  if (lp->push[ep].fd < 0) {
    rc = anna__push_open(lp, ep);
    if (rc != 0) return rc;
  }
  uint32_t s = c->free_slots[--c->nfree];
  anna__slot_t *slot = &c->slots[s];
  slot->seq = c->next_seq++;
  slot->sent_ns = now;
  slot->busy = true;
  int len = load_u64_text((uint64_t)(c - lp->clients), 1, id); /* "<client>.<slot>.<seq>" */
  id[len++] = '.';
  len += load_u64_text(s, 1, id + len);
  id[len++] = '.';
  load_u64_text(slot->seq, 1, id + len);
  bool put = lp->t->op == LOAD_OP_PUT;
  anna__req_t r = {.type = put ? REQUEST_TYPE__PUT : REQUEST_TYPE__GET, .key = name,
                   .nips = tb->key_nips[key], .value = lp->value,
                   .value_len = lp->t->opts->value_size, .addr = lp->addr, .id = id};
  if (put) r.timestamp = anna__timestamp(c->id, &c->last_ts);
  rc = anna__encode(&r, &lp->push[ep].out.buf);
  if (rc != 0) {
    slot->busy = false;
    c->free_slots[c->nfree++] = s;
    return rc;
  }
  lp->outstanding++;
  return 0;
}

/* Tops client c up to depth. A refused send counts as a SEND error and ends the
 * top-up for this turn. */
static void anna__fill(anna__loop_t *lp, anna__client_t *c, uint64_t now) {
  uint64_t key;
  while (c->nfree > 0 && load_issuing(lp->t, now) && load_next_key(lp->t, &key)) {
    if (lp->tb->key_ep[key] == 0xff || anna__send(lp, c, key, now) != 0) {
      load_complete(lp->t, LOAD_ERR_SEND, 0, now);
      return; /* try again on the next loop turn, not in a tight loop */
    }
  }
}

/* Reads a varint at p[*i] (bounded by len); false when cut off or over 10 bytes. */
static bool anna__varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v) {
  *v = 0;
  for (int sh = 0; sh < 70 && *i < len; sh += 7) {
    uint8_t b = p[(*i)++];
    *v |= (uint64_t)(b & 0x7f) << (sh < 64 ? sh : 63);
    if (!(b & 0x80)) return true;
  }
  return false;
}

/* One field of a protobuf message at p[*i]: its number, and its varint value or
 * bytes. Fixed-width fields are skipped over (*data NULL, *v 0). False when the
 * bytes are cut off or malformed. */
static bool anna__field(const uint8_t *p, size_t len, size_t *i, uint64_t *num, uint64_t *v,
                        const uint8_t **data) {
  uint64_t tag;
  *data = NULL;
  *v = 0;
  if (!anna__varint(p, len, i, &tag)) return false;
  *num = tag >> 3;
  switch (tag & 7) {
    case 0: return anna__varint(p, len, i, v);
    case 1:
    case 5: {
      size_t w = (tag & 7) == 1 ? 8 : 4;
      if (w > len - *i) return false;
      *i += w;
      return true;
    }
    case 2:
      if (!anna__varint(p, len, i, v) || *v > len - *i) return false;
      *data = p + *i;
      *i += *v;
      return true;
    default: return false;
  }
}

/* Size of the value inside an LWWValue payload, or -1 when it is not one. */
static long anna__lww_value_len(const uint8_t *p, size_t len) {
  size_t i = 0;
  long value_len = 0;
  while (i < len) {
    uint64_t num, v;
    const uint8_t *data;
    if (!anna__field(p, len, &i, &num, &v, &data)) return -1;
    if (num == 2 && data) value_len = (long)v;
  }
  return value_len;
}

/* What the load generator reads of a KeyResponse (untrusted bytes, bounds-checked). */
typedef struct {
  const uint8_t *rid; /* response_id, not NUL-terminated */
  size_t rid_len;
  uint64_t error;
  size_t ntuples;
  uint64_t t_error, t_type; /* of the first tuple */
  const uint8_t *payload;
  size_t payload_len;
} anna__reply_t;

static bool anna__parse_tuple(const uint8_t *p, size_t len, anna__reply_t *r) {
  size_t i = 0;
  while (i < len) {
    uint64_t num, v;
    const uint8_t *data;
    if (!anna__field(p, len, &i, &num, &v, &data)) return false;
    if (num == 2 && !data) r->t_type = v;
    else if (num == 3 && !data) r->t_error = v;
    else if (num == 4 && data) {
      r->payload = data;
      r->payload_len = v;
    }
  }
  return true;
}

static bool anna__parse_reply(const uint8_t *p, size_t len, anna__reply_t *r) {
  size_t i = 0;
  memset(r, 0, sizeof(*r));
  while (i < len) {
    uint64_t num, v;
    const uint8_t *data;
    if (!anna__field(p, len, &i, &num, &v, &data)) return false;
    if (num == 2 && data) {
      if (r->ntuples++ == 0 && !anna__parse_tuple(data, v, r)) return false;
    } else if (num == 3 && data) {
      r->rid = data;
      r->rid_len = v;
    } else if (num == 4 && !data) {
      r->error = v;
    }
  }
  return true;
}

/* The error kind of a decoded reply (-1: success). */
static int anna__reply_error(const anna__loop_t *lp, const anna__reply_t *r) {
  if (r->error != ANNA_ERROR__NO_ERROR)
    return r->error == ANNA_ERROR__LATTICE ? LOAD_ERR_LATTICE : LOAD_ERR_SERVER;
  if (r->ntuples != 1) return LOAD_ERR_PROTO;
  switch (r->t_error) {
    case ANNA_ERROR__NO_ERROR: break;
    case ANNA_ERROR__KEY_DNE: return LOAD_ERR_KEY_DNE;
    case ANNA_ERROR__WRONG_THREAD: return LOAD_ERR_WRONG_THREAD;
    case ANNA_ERROR__LATTICE: return LOAD_ERR_LATTICE;
    case ANNA_ERROR__TIMEOUT: return LOAD_ERR_TIMEOUT;
    default: return LOAD_ERR_SERVER;
  }
  if (lp->t->op == LOAD_OP_GET) {
    if (r->t_type != LATTICE_TYPE__LWW) return LOAD_ERR_BAD_VALUE;
    long n = anna__lww_value_len(r->payload, r->payload_len);
    if (n < 0 || (uint64_t)n != lp->t->opts->value_size) return LOAD_ERR_BAD_VALUE;
  }
  return -1;
}

/* A decimal number of at most 19 digits at p[*i], followed by `end` (or the end of
 * the text when end is 0). */
static bool anna__decimal(const uint8_t *p, size_t len, size_t *i, char end, uint64_t *v) {
  size_t start = *i;
  *v = 0;
  while (*i < len && p[*i] >= '0' && p[*i] <= '9' && *i - start < 19)
    *v = *v * 10 + (uint64_t)(p[(*i)++] - '0');
  if (*i == start) return false;
  if (end == 0) return *i == len;
  return *i < len && p[(*i)++] == (uint8_t)end;
}

/* Finds the client and slot a response_id ("<client>.<slot>.<seq>") names. NULL for
 * a malformed id (*stale false) or for a slot that has moved on since (*stale true:
 * its timeout was already counted). */
static anna__slot_t *anna__slot_of(anna__loop_t *lp, const anna__reply_t *r,
                                   anna__client_t **cp, bool *stale) {
  uint64_t ci, s, seq;
  size_t i = 0;
  *stale = false;
  if (!anna__decimal(r->rid, r->rid_len, &i, '.', &ci) || ci >= (uint64_t)lp->n ||
      !anna__decimal(r->rid, r->rid_len, &i, '.', &s) || s >= lp->depth ||
      !anna__decimal(r->rid, r->rid_len, &i, 0, &seq))
    return NULL;
  anna__client_t *c = &lp->clients[ci];
  anna__slot_t *slot = &c->slots[s];
  if (!slot->busy || slot->seq != seq) {
    *stale = true;
    return NULL;
  }
  *cp = c;
  return slot;
}

/* Completes one reply's slot; its client goes on lp->refill (once). The reply is at
 * most lp->max_reply bytes (zmtp_next_frame refused longer frames). */
static void anna__complete(anna__loop_t *lp, const uint8_t *p, size_t len, uint64_t now) {
  anna__reply_t r;
  bool stale;
  anna__client_t *c = NULL;
  anna__slot_t *slot = NULL;
  if (anna__parse_reply(p, len, &r))
    slot = anna__slot_of(lp, &r, &c, &stale);
  else
    stale = false;
  if (!slot) {
    if (!stale) load_complete(lp->t, LOAD_ERR_PROTO, 0, now);
    return;
  }
  load_complete(lp->t, anna__reply_error(lp, &r), now - slot->sent_ns, now);
  slot->busy = false;
  c->free_slots[c->nfree++] = (uint32_t)(slot - c->slots);
  if (!c->listed) {
    c->listed = true;
    lp->refill[lp->nrefill++] = (uint32_t)(c - lp->clients);
  }
  lp->outstanding--;
}

/* Writes endpoint ep's queued requests (load_out_flush); a failed connection is
 * dropped. */
static void anna__flush_push(anna__loop_t *lp, int ep) {
  anna__push_t *p = &lp->push[ep];
  int rc = load_out_flush(&p->out, p->fd, lp->ep, 0, ANNA__TAG_PUSH | (uint32_t)ep);
  if (rc != 0) {
    fprintf(stderr, "kvs_load: %s: %s\n", lp->tb->endpoints[ep], sq_strerror(rc));
    anna__push_drop(lp, ep);
  }
}

/* Writes every endpoint's queued requests: all that one loop turn queued goes out in
 * one write per endpoint. */
static void anna__flush(anna__loop_t *lp) {
  for (int e = 0; e < lp->tb->nendpoints; e++)
    if (lp->push[e].fd >= 0 && lp->push[e].out.off < lp->push[e].out.buf.len)
      anna__flush_push(lp, e);
}

static void anna__pull_close(anna__loop_t *lp, anna__pull_t *p) {
  epoll_ctl(lp->ep, EPOLL_CTL_DEL, p->fd, NULL);
  close(p->fd);
  p->fd = -1;
  sq_buf_free(&p->in);
}

/* Reads what is waiting on reply connection p (at most ANNA__READ_CHUNKS_MAX chunks,
 * so the buffer stays bounded) and completes every whole reply in it. A malformed
 * frame counts as a PROTO error and ends the connection (the stream can no longer be
 * trusted); the peer closing it ends it after the replies it sent before closing. */
static void anna__read(anna__loop_t *lp, anna__pull_t *p) {
  bool ended = false; /* the peer closed or the connection failed: after the parse */
  for (int chunks = 0; chunks < ANNA__READ_CHUNKS_MAX && !ended;) {
    if (sq_buf_reserve(&p->in, ANNA__READ_CHUNK) != 0) {
      load_complete(lp->t, LOAD_ERR_PROTO, 0, load_now_ns());
      anna__pull_close(lp, p);
      return;
    }
    ssize_t r = read(p->fd, p->in.data + p->in.len, p->in.cap - p->in.len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r <= 0) {
      ended = true;
    } else {
      p->in.len += (size_t)r;
      chunks++;
    }
  }
  uint64_t now = load_now_ns();
  size_t off = 0, used;
  const uint8_t *body;
  uint64_t len;
  bool command;
  int rc;
  while ((rc = zmtp_next_frame(p->in.data + off, p->in.len - off, lp->max_reply, &body, &len,
                               &command, &used)) == 1) {
    if (!command) anna__complete(lp, body, (size_t)len, now); /* commands: heartbeats */
    off += used;
  }
  if (rc < 0) load_complete(lp->t, LOAD_ERR_PROTO, 0, now);
  if (rc < 0 || ended) {
    anna__pull_close(lp, p);
    return;
  }
  memmove(p->in.data, p->in.data + off, p->in.len - off);
  p->in.len -= off;
}

/* Accepts the connections storage threads open to reply, greeting each as a PULL
 * socket. */
static void anna__accept(anna__loop_t *lp) {
  for (;;) {
    int fd = accept4(lp->listen_fd, NULL, NULL, SOCK_CLOEXEC), one = 1;
    if (fd < 0 && errno == EINTR) continue;
    if (fd < 0) return;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int i = 0;
    while (i < ANNA__MAX_PULLS && lp->pulls[i].fd >= 0) i++;
    char err[160] = "more than 256 reply connections";
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = ANNA__TAG_PULL | (uint32_t)i};
    if (i == ANNA__MAX_PULLS || zmtp_handshake(fd, "PULL", "PUSH", err, sizeof(err)) != 0 ||
        epoll_ctl(lp->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
      fprintf(stderr, "kvs_load: a reply connection was refused: %s\n", err);
      load_complete(lp->t, LOAD_ERR_PROTO, 0, load_now_ns());
      close(fd);
      continue;
    }
    lp->pulls[i].fd = fd;
  }
}

/* Tops up the clients the last reads freed slots of; anna__flush then writes their
 * requests in one write per endpoint. */
static void anna__refill(anna__loop_t *lp) {
  uint64_t now = load_now_ns();
  for (uint32_t i = 0; i < lp->nrefill; i++) {
    anna__client_t *c = &lp->clients[lp->refill[i]];
    c->listed = false;
    anna__fill(lp, c, now);
  }
  lp->nrefill = 0;
}

/* Frees every slot older than the timeout (or every slot, when all is true), counting
 * each as a TIMEOUT. */
static void anna__expire(anna__loop_t *lp, uint64_t now, bool all) {
  for (int i = 0; i < lp->n; i++) {
    anna__client_t *c = &lp->clients[i];
    for (uint32_t s = 0; s < lp->depth; s++) {
      anna__slot_t *slot = &c->slots[s];
      if (!slot->busy) continue;
      if (!all && (now <= slot->sent_ns || now - slot->sent_ns <= lp->t->timeout_ns)) continue;
      lp->t->errors[LOAD_ERR_TIMEOUT]++;
      slot->busy = false;
      c->free_slots[c->nfree++] = s;
      lp->outstanding--;
    }
  }
}

/* Makes client i's slots. */
static int anna__client_open(anna__loop_t *lp, int i) {
  anna__client_t *c = &lp->clients[i];
  c->id = (uint32_t)(lp->t->client_lo + i);
  c->slots = calloc(lp->depth, sizeof(*c->slots));
  c->free_slots = calloc(lp->depth, sizeof(uint32_t));
  if (!c->slots || !c->free_slots) return -ENOMEM;
  for (uint32_t s = 0; s < lp->depth; s++) c->free_slots[s] = lp->depth - 1 - s;
  c->nfree = lp->depth;
  return 0;
}

/* One epoll event. */
static void anna__event(anna__loop_t *lp, const struct epoll_event *ev) {
  uint32_t tag = ev->data.u32 & ~ANNA__TAG_INDEX, i = ev->data.u32 & ANNA__TAG_INDEX;
  if (ev->data.u32 == ANNA__TAG_LISTEN) {
    anna__accept(lp);
  } else if (tag == ANNA__TAG_PULL) {
    if (lp->pulls[i].fd >= 0) anna__read(lp, &lp->pulls[i]);
  } else if (tag == ANNA__TAG_PUSH && lp->push[i].fd >= 0) {
    if (ev->events & (EPOLLERR | EPOLLHUP)) {
      fprintf(stderr, "kvs_load: %s closed the connection\n", lp->tb->endpoints[i]);
      anna__push_drop(lp, (int)i);
    } else {
      anna__flush_push(lp, (int)i);
    }
  }
}

/* The event loop: issue until the phase ends, then drain for LOAD_DRAIN_NS. */
static void anna__loop(anna__loop_t *lp) {
  struct epoll_event evs[64];
  uint64_t now = load_now_ns(), last_check = now, drain_end = 0;
  for (int i = 0; i < lp->n; i++) anna__fill(lp, &lp->clients[i], now);
  anna__flush(lp);
  for (;;) {
    now = load_now_ns();
    if (!load_issuing(lp->t, now)) {
      if (lp->outstanding == 0) break;
      if (drain_end == 0) drain_end = now + LOAD_DRAIN_NS;
      if (now > drain_end) break;
    }
    int n = epoll_wait(lp->ep, evs, 64, 10);
    for (int i = 0; i < n; i++) anna__event(lp, &evs[i]);
    anna__refill(lp);
    now = load_now_ns();
    if (now - last_check > 10000000ull) {
      anna__expire(lp, now, false);
      last_check = now;
      for (int i = 0; i < lp->n; i++) anna__fill(lp, &lp->clients[i], now);
    }
    anna__flush(lp);
  }
  anna__expire(lp, now, true);
}

/* Opens the thread's listener, epoll and its clients' slots; a sentence in
 * t->fatal_msg. */
static int anna__open(anna__loop_t *lp) {
  load_thread_t *t = lp->t;
  int port = 0, rc;
  for (int i = 0; i < ANNA__MAX_PULLS; i++) lp->pulls[i].fd = -1;
  lp->push = calloc((size_t)lp->tb->nendpoints + 1, sizeof(*lp->push));
  if (!lp->push) return -ENOMEM;
  for (int e = 0; e <= lp->tb->nendpoints; e++) lp->push[e].fd = -1;
  lp->ep = epoll_create1(EPOLL_CLOEXEC);
  if (lp->ep < 0) return -errno;
  rc = load_tcp_listen(t->opts->host, &lp->listen_fd, &port);
  if (rc == 0) rc = sq_zmq_endpoint_tcp(lp->addr, sizeof(lp->addr), t->opts->host,
                                        (unsigned)port);
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = ANNA__TAG_LISTEN};
  if (rc == 0 && epoll_ctl(lp->ep, EPOLL_CTL_ADD, lp->listen_fd, &ev) < 0) rc = -errno;
  if (rc != 0) {
    snprintf(t->fatal_msg, sizeof(t->fatal_msg), "reply listener: %s", sq_strerror(rc));
    return rc;
  }
  for (int i = 0; i < lp->n; i++) {
    rc = anna__client_open(lp, i);
    if (rc != 0) return rc;
  }
  for (uint64_t i = 0; i < t->opts->value_size; i++) lp->value[i] = (uint8_t)('a' + i % 26);
  rc = anna__selfcheck(lp);
  if (rc != 0)
    snprintf(t->fatal_msg, sizeof(t->fatal_msg), "request encoder self-check: %s",
             sq_strerror(rc));
  return rc;
}

/* Closes and frees everything anna__open and the loop made. */
static void anna__close(anna__loop_t *lp) {
  for (int i = 0; i < ANNA__MAX_PULLS; i++)
    if (lp->pulls[i].fd >= 0) anna__pull_close(lp, &lp->pulls[i]);
  for (int e = 0; lp->push && e < lp->tb->nendpoints; e++) {
    if (lp->push[e].fd >= 0) close(lp->push[e].fd);
    sq_buf_free(&lp->push[e].out.buf);
  }
  if (lp->listen_fd >= 0) close(lp->listen_fd);
  if (lp->ep >= 0) close(lp->ep);
  for (int i = 0; lp->clients && i < lp->n; i++) {
    free(lp->clients[i].slots);
    free(lp->clients[i].free_slots);
  }
  free(lp->push);
  free(lp->clients);
  free(lp->refill);
  free(lp->value);
}

int load_anna_run(load_thread_t *t) {
  anna__loop_t *lp = calloc(1, sizeof(*lp));
  if (!lp) {
    snprintf(t->fatal_msg, sizeof(t->fatal_msg), "out of memory for the clients");
    return t->fatal = -ENOMEM;
  }
  *lp = (anna__loop_t){.t = t, .tb = t->shared, .n = t->client_hi - t->client_lo,
                       .depth = (uint32_t)t->opts->depth, .ep = -1, .listen_fd = -1,
                       .max_reply = t->opts->value_size + ANNA__REPLY_SLACK};
  int rc = -ENOMEM;
  lp->clients = calloc((size_t)(lp->n > 0 ? lp->n : 1), sizeof(*lp->clients));
  lp->refill = calloc((size_t)(lp->n > 0 ? lp->n : 1), sizeof(*lp->refill));
  lp->value = malloc(t->opts->value_size ? t->opts->value_size : 1);
  if (lp->clients && lp->refill && lp->value) rc = anna__open(lp);
  if (rc == 0) anna__loop(lp);
  else if (rc == -ENOMEM)
    snprintf(t->fatal_msg, sizeof(t->fatal_msg), "out of memory for the clients");
  anna__close(lp);
  free(lp);
  t->fatal = rc;
  return rc;
}
