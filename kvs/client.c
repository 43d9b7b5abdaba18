/* client: the request engine of kvs_client (public contract in client.h).
 *
 * Objects:
 *   op    one call (sync or async): n keys, their results, per-key retry budgets.
 *   wire  one message in flight, identified by its request id "<client-id>_<rid>":
 *           ADDR   a KeyAddressRequest to a routing endpoint,
 *           KEY    a KeyRequest to one storage endpoint,
 *           DELAY  no message: keys waiting out a NO_SERVERS backoff.
 *         A wire lists the op's key indices it still waits for; every wire has a
 *         deadline in the timer heap.
 *
 * Invariant: every unfinished key of an op belongs to exactly one wire. So every key
 * finishes: by an answer, or by its wire's deadline (then it is re-sent while its
 * budget lasts, else it fails with SQ_ETIMEOUT / SQ_ENOSERVERS). An op is finished
 * when its last key is; it then moves to the done list, where kvs_client_poll (async)
 * or the waiting synchronous call (client_sync.c) picks it up.
 *
 * Key state machine (per key of an op):
 *
 *   dispatch --cached addrs--> KEY --answer-------------------------> done
 *      |  ^                     |--WRONG_THREAD (redirects left)--> dispatch
 *      |  |                     '--timeout (retries left; drop server)--> dispatch
 *      v  |
 *     ADDR --ips--> KEY        --empty / NO_SERVERS (retries left)--> DELAY --> dispatch
 *
 * Replies come to one PULL socket. Both KeyResponse and KeyAddressResponse carry the
 * request id in field 3, so the id is read with the wire scanner first and the bytes
 * are decoded as the message type that wire expects. Unknown ids (late answers to
 * timed-out requests, strangers) are dropped. A redirected read's id carries its tag
 * ("<client-id>_<n>.<tag>"): a reply answers that wire only with exactly that tag, and
 * an untagged wire only without one, so a stale or forged hand-back is dropped too.
 *
 * Threads: the client's thread owns everything here; nothing is locked.
 */
#include "client_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "anna.pb-c.h"
#include "sq_error.h"
#include "sq_proto.h"
#include "sq_time.h"
#include "sq_wire.h"

int kvs_client_error_from_anna(int anna_error) {
  switch (anna_error) {
  case ANNA_ERROR__NO_ERROR: return 0;
  case ANNA_ERROR__KEY_DNE: return SQ_EKEYDNE;
  case ANNA_ERROR__WRONG_THREAD: return SQ_EWRONGTHREAD;
  case ANNA_ERROR__TIMEOUT: return SQ_ETIMEOUT;
  case ANNA_ERROR__LATTICE: return SQ_ELATTICE;
  case ANNA_ERROR__NO_SERVERS: return SQ_ENOSERVERS;
  default: return SQ_EPROTO;
  }
}

/* --- wire table ----------------------------------------------------------------------- */

static int kvs__wires_grow(kvs_client_t *c) {
  size_t nb = c->nwbuckets ? c->nwbuckets * 2 : 256;
  kvs__wire_t **b = calloc(nb, sizeof *b);
  if (!b) return -ENOMEM;
  for (size_t i = 0; i < c->nwbuckets; i++) {
    kvs__wire_t *w = c->wbuckets[i];
    while (w) {
      kvs__wire_t *next = w->hnext;
      w->hnext = b[w->rid & (nb - 1)];
      b[w->rid & (nb - 1)] = w;
      w = next;
    }
  }
  free(c->wbuckets);
  c->wbuckets = b;
  c->nwbuckets = nb;
  return 0;
}

static kvs__wire_t *kvs__wire_find(const kvs_client_t *c, uint64_t rid) {
  if (!c->nwbuckets) return NULL;
  kvs__wire_t *w = c->wbuckets[rid & (c->nwbuckets - 1)];
  while (w && w->rid != rid) w = w->hnext;
  return w;
}

/* Unlinks w from the table and frees it (its keys must have been moved or finished). */
static void kvs__wire_free(kvs_client_t *c, kvs__wire_t *w) {
  kvs__wire_t **p = &c->wbuckets[w->rid & (c->nwbuckets - 1)];
  while (*p != w) p = &(*p)->hnext;
  *p = w->hnext;
  c->nwires--;
  w->op->nwires--;
  free(w->endpoint);
  free(w->tag);
  free(w->idx);
  free(w);
}

/* Makes a wire for idx[0..n) of op, registered in the table and the heap. */
static int kvs__wire_new(kvs_client_t *c, kvs__op_t *op, kvs__kind_t kind,
                         const char *ep, const uint32_t *idx, size_t n,
                         uint64_t deadline, kvs__wire_t **out) {
  int rc = -ENOMEM;
  kvs__wire_t *w = calloc(1, sizeof *w);
  if (!w || (c->nwires >= c->nwbuckets && kvs__wires_grow(c) != 0)) goto out;
  w->idx = malloc(n * sizeof *w->idx);
  w->endpoint = ep ? strdup(ep) : NULL;
  if (!w->idx || (ep && !w->endpoint)) goto out;
  memcpy(w->idx, idx, n * sizeof *idx);
  w->nidx = w->nopen = n;
  w->rid = c->next_id++;
  w->kind = kind;
  w->op = op;
  w->deadline = deadline;
  if ((rc = kvs__heap_push(&c->timers, deadline, w->rid)) != 0) goto out;
  w->hnext = c->wbuckets[w->rid & (c->nwbuckets - 1)];
  c->wbuckets[w->rid & (c->nwbuckets - 1)] = w;
  c->nwires++;
  op->nwires++;
  *out = w;
  w = NULL;
  rc = 0;
out:
  if (w) {
    free(w->idx);
    free(w->endpoint);
    free(w);
  }
  return rc;
}

/* --- finishing keys and ops ----------------------------------------------------------- */

void kvs__finish_key(kvs__op_t *op, uint32_t i, int err, const char *fmt, ...) {
  kvs_client_result_t *r = &op->res[i];
  if (op->keys[i].done) return;
  op->keys[i].done = true;
  op->nopen--;
  r->err = err;
  r->message[0] = '\0';
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
  }
}

/* Moves a finished op from the in-flight list to the done list. */
static void kvs__op_maybe_done(kvs_client_t *c, kvs__op_t *op) {
  if (op->nopen != 0 || op->done || op->nwires != 0) return;
  op->done = true;
  kvs__list_remove(&c->inflight, op);
  kvs__list_append(&c->finished, op);
}

/* --- sending -------------------------------------------------------------------------- */

static void kvs__request_id(const kvs_client_t *c, uint64_t rid, char *buf, size_t n) {
  snprintf(buf, n, "%s_%" PRIu64, c->id, rid);
}

/* Sends bytes to ep; a refused send makes the wire expire now (timeout path). */
static void kvs__wire_send(kvs_client_t *c, kvs__wire_t *w, const uint8_t *buf,
                           size_t len) {
  int rc = kvs__sock_send(&c->socks, w->endpoint, buf, len);
  if (rc == 0) return;
  c->stats.send_failures++;
  uint64_t regular = w->deadline;
  w->deadline = sq_now_ms();
  if (kvs__heap_push(&c->timers, w->deadline, w->rid) != 0)
    w->deadline = regular; /* the regular timer still fires: slower, not lost */
}

/* Sends one KeyAddressRequest for keys idx[0..n) of op. */
static int kvs__send_addr(kvs_client_t *c, kvs__op_t *op, const uint32_t *idx, size_t n) {
  int rc;
  kvs__wire_t *w = NULL;
  const char *ep = c->routing[c->routing_rr++ % c->nrouting];
  uint64_t deadline = sq_now_ms() + (uint64_t)op->timeout_ms;
  if ((rc = kvs__wire_new(c, op, KVS__ADDR, ep, idx, n, deadline, &w)) != 0) return rc;
  char rid[KVS__RID_MAX];
  kvs__request_id(c, w->rid, rid, sizeof rid);
  char **keys = malloc(n * sizeof *keys);
  uint8_t *buf = NULL;
  rc = -ENOMEM;
  if (!keys) goto out;
  for (size_t i = 0; i < n; i++) keys[i] = op->keys[idx[i]].key;
  KeyAddressRequest req = KEY_ADDRESS_REQUEST__INIT;
  req.response_address = c->response_address;
  req.n_keys = n;
  req.keys = keys;
  req.request_id = rid;
  size_t len = key_address_request__get_packed_size(&req);
  if (!(buf = malloc(len ? len : 1))) goto out;
  key_address_request__pack(&req, buf);
  c->stats.routing_requests++;
  kvs__wire_send(c, w, buf, len);
  w = NULL;
  rc = 0;
out:
  if (w) kvs__wire_free(c, w);
  free(keys);
  free(buf);
  return rc;
}

/* Sends one KeyRequest to ep for keys g[0..n) of op. */
static int kvs__send_keys(kvs_client_t *c, kvs__op_t *op, const char *ep,
                          const kvs__route_t *g, size_t n) {
  int rc = -ENOMEM;
  kvs__wire_t *w = NULL;
  uint8_t *buf = NULL;
  KeyTuple *tuples = calloc(n, sizeof *tuples);
  KeyTuple **tp = calloc(n, sizeof *tp);
  uint32_t *idx = malloc(n * sizeof *idx);
  if (!tuples || !tp || !idx) goto out;
  for (size_t i = 0; i < n; i++) {
    kvs__key_t *k = &op->keys[g[i].idx];
    key_tuple__init(&tuples[i]);
    tuples[i].key = k->key;
    tuples[i].address_cache_size = g[i].ncache;
    if (op->type == REQUEST_TYPE__PUT) {
      tuples[i].lattice_type = (LatticeType)k->vtype;
      tuples[i].payload = (ProtobufCBinaryData){k->vlen, k->val};
    }
    tp[i] = &tuples[i];
    idx[i] = g[i].idx;
  }
  bool via = op->via_addr != NULL && op->type == REQUEST_TYPE__GET;
  uint64_t deadline = sq_now_ms() + (uint64_t)(via ? op->via_ms : op->timeout_ms);
  if ((rc = kvs__wire_new(c, op, KVS__KEY, ep, idx, n, deadline, &w)) != 0) goto out;
  char rid[KVS__RID_MAX + KVS_CLIENT_TAG_MAX + 2];
  kvs__request_id(c, w->rid, rid, KVS__RID_MAX);
  if (via) { /* "<id>_<n>.<tag>": the other socket's owner knows its reply */
    size_t l = strlen(rid);
    snprintf(rid + l, sizeof rid - l, ".%s", op->via_tag);
  }
  KeyRequest req = KEY_REQUEST__INIT;
  req.type = (RequestType)op->type;
  req.n_tuples = n;
  req.tuples = tp;
  req.response_address = via ? op->via_addr : c->response_address;
  req.request_id = rid;
  size_t len = key_request__get_packed_size(&req);
  rc = -ENOMEM;
  if (!(buf = malloc(len ? len : 1))) goto out;
  key_request__pack(&req, buf);
  c->stats.key_requests++;
  if (via) { /* only the first KeyRequest is redirected; redos come back to us */
    w->tag = op->via_tag; /* the wire now owns the tag its reply must carry */
    free(op->via_addr);
    op->via_addr = op->via_tag = NULL;
  }
  kvs__wire_send(c, w, buf, len);
  w = NULL;
  rc = 0;
out:
  if (w) kvs__wire_free(c, w);
  free(tuples);
  free(tp);
  free(idx);
  free(buf);
  return rc;
}

/* Picks the endpoint of each route without one: a random cached replica. Keys with no
 * cached address keep ep == NULL (they go to routing). */
static void kvs__routes_resolve(kvs_client_t *c, kvs__op_t *op, kvs__route_t *r,
                                size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (r[i].ep) continue;
    const kvs__addr_t *a = kvs__addr_get(&c->addrs, op->keys[r[i].idx].key);
    if (!a) continue;
    r[i].ep = a->eps[kvs__rand(c) % a->neps];
    r[i].ncache = a->neps;
  }
}

/* Sends the keys of routes r[0..n): one KeyRequest per endpoint, one
 * KeyAddressRequest for the keys with no address. On a failure to allocate, the keys
 * that could not be sent fail with -ENOMEM (the op still finishes). Reorders r. */
void kvs__dispatch(kvs_client_t *c, kvs__op_t *op, kvs__route_t *r, size_t n) {
  kvs__routes_resolve(c, op, r, n);
  size_t start = 0;
  while (start < n) {
    /* Gather the routes sharing r[start].ep at the front of r[start..n). */
    size_t end = start + 1;
    for (size_t i = start + 1; i < n; i++) {
      bool same = (!r[i].ep && !r[start].ep) ||
                  (r[i].ep && r[start].ep && strcmp(r[i].ep, r[start].ep) == 0);
      if (same) {
        kvs__route_t t = r[end];
        r[end++] = r[i];
        r[i] = t;
      }
    }
    int rc;
    if (r[start].ep) {
      rc = kvs__send_keys(c, op, r[start].ep, r + start, end - start);
    } else {
      uint32_t *idx = malloc((end - start) * sizeof *idx);
      rc = -ENOMEM;
      if (idx) {
        for (size_t i = start; i < end; i++) idx[i - start] = r[i].idx;
        rc = kvs__send_addr(c, op, idx, end - start);
        free(idx);
      }
    }
    for (size_t i = start; rc != 0 && i < end; i++)
      kvs__finish_key(op, r[i].idx, rc, "client: %s", sq_strerror(rc));
    start = end;
  }
  kvs__op_maybe_done(c, op);
}

/* Parks keys idx[0..n) for a NO_SERVERS backoff: 20 ms doubling per try, capped by the
 * op's timeout and 500 ms. */
static void kvs__delay(kvs_client_t *c, kvs__op_t *op, const uint32_t *idx, size_t n) {
  uint32_t tries = op->keys[idx[0]].tries;
  uint64_t wait = 20u << (tries < 5 ? tries : 5);
  if (wait > 500) wait = 500;
  if (wait > (uint64_t)op->timeout_ms) wait = (uint64_t)op->timeout_ms;
  kvs__wire_t *w = NULL;
  int rc = kvs__wire_new(c, op, KVS__DELAY, NULL, idx, n, sq_now_ms() + wait, &w);
  for (size_t i = 0; rc != 0 && i < n; i++)
    kvs__finish_key(op, idx[i], rc, "client: %s", sq_strerror(rc));
}

/* --- replies -------------------------------------------------------------------------- */

/* Finds the open slot of w whose key is `key`, starting at w->cursor (answers usually
 * come in request order, which makes matching a whole batch linear). */
static bool kvs__wire_take(kvs__wire_t *w, const char *key, uint32_t *idx) {
  for (size_t n = 0; n < w->nidx; n++) {
    size_t s = (w->cursor + n) % w->nidx;
    if (w->idx[s] == KVS__SLOT_DONE) continue;
    if (strcmp(w->op->keys[w->idx[s]].key, key) != 0) continue;
    *idx = w->idx[s];
    w->idx[s] = KVS__SLOT_DONE;
    w->nopen--;
    w->cursor = s + 1;
    return true;
  }
  return false;
}

/* Records the final outcome of a tuple for key i. */
static int kvs__tuple_result(kvs__op_t *op, uint32_t i, const KeyTuple *t, int err,
                             const char *ep) {
  kvs_client_result_t *r = &op->res[i];
  const char *msg = t->error_message && t->error_message[0] ? t->error_message : NULL;
  if (err == 0 && op->type == REQUEST_TYPE__GET && t->payload.len > 0) {
    if (!(r->payload = malloc(t->payload.len))) {
      kvs__finish_key(op, i, -ENOMEM, "client: out of memory copying the value");
      return -ENOMEM;
    }
    memcpy(r->payload, t->payload.data, t->payload.len);
    r->len = t->payload.len;
  }
  r->type = (sq_lattice_type_t)t->lattice_type;
  if (err == 0 && op->type == REQUEST_TYPE__GET && r->len == 0)
    err = SQ_EKEYDNE;  /* an empty value counts as absent (PROTOCOL.md §2.2) */
  if (msg)
    kvs__finish_key(op, i, err, "%s", msg);
  else if (err)
    kvs__finish_key(op, i, err, "%s (server %s)", sq_strerror(err), ep);
  else
    kvs__finish_key(op, i, 0, NULL);
  return 0;
}

/* Handles one tuple of a KeyResponse; WRONG_THREAD keys are appended to redo. */
static void kvs__key_tuple(kvs_client_t *c, kvs__wire_t *w, const KeyTuple *t,
                           kvs__route_t *redo, size_t *nredo) {
  uint32_t i;
  if (!t->key || !kvs__wire_take(w, t->key, &i)) return;
  kvs__op_t *op = w->op;
  int err = kvs_client_error_from_anna((int)t->error);
  if (t->invalidate || err == SQ_EWRONGTHREAD) kvs__addr_drop(&c->addrs, t->key);
  if (err == SQ_EWRONGTHREAD && op->keys[i].redirects < KVS_CLIENT_MAX_REDIRECTS) {
    op->keys[i].redirects++;
    c->stats.redirects++;
    redo[(*nredo)++] = (kvs__route_t){.idx = i};
    return;
  }
  kvs__tuple_result(op, i, t, err, w->endpoint);
}

static void kvs__on_key_response(kvs_client_t *c, kvs__wire_t *w, const KeyResponse *m) {
  kvs__op_t *op = w->op;
  kvs__route_t *redo = calloc(w->nidx, sizeof *redo);
  size_t nredo = 0;
  if (!redo) return; /* the wire times out and is retried */
  for (size_t t = 0; t < m->n_tuples; t++) kvs__key_tuple(c, w, m->tuples[t], redo, &nredo);
  if (m->n_tuples == 0 && m->error != ANNA_ERROR__NO_ERROR) {
    int err = kvs_client_error_from_anna((int)m->error);
    const char *msg = m->error_message && m->error_message[0] ? m->error_message
                                                               : sq_strerror(err);
    for (size_t s = 0; s < w->nidx; s++)
      if (w->idx[s] != KVS__SLOT_DONE) kvs__finish_key(op, w->idx[s], err, "%s", msg);
    w->nopen = 0;
  }
  if (w->nopen == 0) kvs__wire_free(c, w);
  if (nredo) kvs__dispatch(c, op, redo, nredo);
  free(redo);
  kvs__op_maybe_done(c, op);
}

/* Copies the valid endpoints of a routing answer into eps; returns their count. */
static size_t kvs__valid_ips(const KeyAddressResponse__KeyAddress *a, char **eps) {
  size_t n = 0;
  for (size_t j = 0; j < a->n_ips && n < KVS__MAX_REPLICAS; j++) {
    if (a->ips[j] && kvs__endpoint_valid(a->ips[j], strlen(a->ips[j]))) eps[n++] = a->ips[j];
  }
  return n;
}

/* Routes every open slot of w asking for key a->key: to a random ip, or to a backoff. */
static void kvs__addr_entry(kvs_client_t *c, kvs__wire_t *w,
                            const KeyAddressResponse__KeyAddress *a, int err,
                            kvs__route_t *send, size_t *nsend, uint32_t *later,
                            size_t *nlater) {
  char *eps[KVS__MAX_REPLICAS];
  size_t n = kvs__valid_ips(a, eps);
  kvs__op_t *op = w->op;
  if (n > 0) kvs__addr_set(&c->addrs, a->key, eps, n); /* -ENOMEM: just not cached */
  uint32_t i;
  while (kvs__wire_take(w, a->key, &i)) {
    if (n > 0) {
      /* Route from the answer itself (its strings live until the reply is handled),
       * not from the cache, which may already have evicted the entry. */
      const char *ep = eps[kvs__rand(c) % n];
      send[(*nsend)++] = (kvs__route_t){.idx = i, .ep = ep, .ncache = (uint32_t)n};
    } else if (op->keys[i].tries < (uint32_t)op->retries) {
      op->keys[i].tries++;
      later[(*nlater)++] = i;
    } else {
      kvs__finish_key(op, i, err ? err : SQ_ENOSERVERS,
                      err == SQ_ENOSERVERS ? "no storage server has joined the cluster "
                                             "(routing %s)"
                                           : "routing %s knows no server for the key",
                      w->endpoint);
    }
  }
}

static void kvs__on_addr_response(kvs_client_t *c, kvs__wire_t *w,
                                  const KeyAddressResponse *m) {
  kvs__op_t *op = w->op;
  int err = kvs_client_error_from_anna((int)m->error);
  kvs__route_t *send = calloc(w->nidx, sizeof *send);
  uint32_t *later = calloc(w->nidx, sizeof *later);
  size_t nsend = 0, nlater = 0;
  if (!send || !later) goto out; /* the wire times out and is retried */
  for (size_t a = 0; a < m->n_addresses; a++) {
    const KeyAddressResponse__KeyAddress *ka = m->addresses[a];
    if (ka && ka->key) kvs__addr_entry(c, w, ka, err, send, &nsend, later, &nlater);
  }
  if (err != 0) {
    /* NO_SERVERS (the cluster is empty) or another whole-answer error: every key the
     * answer left open waits and asks again, or fails with the error. */
    KeyAddressResponse__KeyAddress none = KEY_ADDRESS_RESPONSE__KEY_ADDRESS__INIT;
    for (size_t s = 0; s < w->nidx; s++) {
      if (w->idx[s] == KVS__SLOT_DONE) continue;
      none.key = op->keys[w->idx[s]].key;
      kvs__addr_entry(c, w, &none, err, send, &nsend, later, &nlater);
    }
  }
  if (w->nopen == 0) kvs__wire_free(c, w);
  if (nlater) kvs__delay(c, op, later, nlater);
  if (nsend) kvs__dispatch(c, op, send, nsend);
out:
  free(send);
  free(later);
  kvs__op_maybe_done(c, op);
}

/* Parses "<client-id>_<digits>", or "<client-id>_<digits>.<tag>" (the answer to a
 * redirected read: *tag points at the tag's *taglen bytes inside s, else NULL), into
 * the request number. */
static bool kvs__parse_rid(const kvs_client_t *c, const uint8_t *s, size_t n,
                           uint64_t *rid, const uint8_t **tag, size_t *taglen) {
  const uint8_t *dot = n > c->idlen + 1 ? memchr(s + c->idlen + 1, '.', n - c->idlen - 1)
                                        : NULL;
  *tag = dot ? dot + 1 : NULL;
  *taglen = dot ? n - (size_t)(dot + 1 - s) : 0;
  if (dot) n = (size_t)(dot - s);
  if (n <= c->idlen + 1 || n > c->idlen + 21) return false;
  if (memcmp(s, c->id, c->idlen) != 0 || s[c->idlen] != '_') return false;
  uint64_t v = 0;
  for (size_t i = c->idlen + 1; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *rid = v;
  return true;
}

/* True when a reply whose id carries tag[0..taglen) (NULL: no tag) answers w: a
 * redirected request only with the very tag it was sent with, any other only
 * untagged. */
static bool kvs__tag_answers(const kvs__wire_t *w, const uint8_t *tag, size_t taglen) {
  if (!tag || !w->tag) return !tag && !w->tag;
  return taglen == strlen(w->tag) && memcmp(tag, w->tag, taglen) == 0;
}

/* Handles one received message. Anything unexpected is counted and dropped. Returns
 * the id of the call it answered, 0 when dropped. */
static uint64_t kvs__on_message(kvs_client_t *c, const uint8_t *buf, size_t len) {
  const uint8_t *id, *tag = NULL;
  size_t idlen, taglen = 0;
  uint64_t rid;
  kvs__wire_t *w = NULL;
  if (sq_wire_find_bytes(buf, len, 3, &id, &idlen) == 0 &&
      kvs__parse_rid(c, id, idlen, &rid, &tag, &taglen))
    w = kvs__wire_find(c, rid);
  if (w && !kvs__tag_answers(w, tag, taglen)) w = NULL; /* stale, forged, misdirected */
  uint64_t call = w ? w->op->id : 0;
  ProtobufCAllocator *alloc = sq_arena_allocator(&c->arena);
  ProtobufCMessage *m = NULL;
  if (w && w->kind == KVS__KEY &&
      sq_proto_unpack(&key_response__descriptor, alloc, buf, len, c->max_msg, &m) == 0) {
    kvs__on_key_response(c, w, (KeyResponse *)m);
  } else if (w && w->kind == KVS__ADDR &&
             sq_proto_unpack(&key_address_response__descriptor, alloc, buf, len,
                             c->max_msg, &m) == 0) {
    kvs__on_addr_response(c, w, (KeyAddressResponse *)m);
  } else {
    w = NULL;
  }
  if (!w) c->stats.dropped_replies++;
  sq_arena_reset(&c->arena);
  return w ? call : 0;
}

/* A wire's deadline passed: re-send its keys while they have retries, else fail them. */
static void kvs__on_expired(kvs_client_t *c, kvs__wire_t *w) {
  kvs__op_t *op = w->op;
  kvs__route_t *redo = calloc(w->nidx, sizeof *redo);
  size_t nredo = 0;
  bool via = w->tag != NULL;
  bool free_retry = w->kind == KVS__DELAY || via; /* a missing hand-back is no fault
                                                     of the server's */
  if (w->kind == KVS__KEY && !via) {
    /* Crude failure suspicion, as Anna's clients: forget what we learned about this
     * server and drop its queue, so the retry asks routing afresh. */
    kvs__addr_drop_endpoint(&c->addrs, w->endpoint);
    kvs__sock_close(&c->socks, w->endpoint);
  }
  if (!free_retry) c->stats.timeouts++;
  for (size_t s = 0; s < w->nidx; s++) {
    uint32_t i = w->idx[s];
    if (i == KVS__SLOT_DONE) continue;
    kvs__key_t *k = &op->keys[i];
    if (redo && (free_retry || k->tries < (uint32_t)op->retries)) {
      if (!free_retry) k->tries++;
      redo[nredo++] = (kvs__route_t){.idx = i};
    } else if (free_retry) {
      kvs__finish_key(op, i, -ENOMEM, "client: out of memory retrying");
    } else {
      kvs__finish_key(op, i, SQ_ETIMEOUT, "no reply from %s %s within %d ms (%u tries)",
                      w->kind == KVS__ADDR ? "routing" : "server", w->endpoint,
                      op->timeout_ms, k->tries + 1);
    }
  }
  w->nopen = 0;
  kvs__wire_free(c, w);
  if (nredo) kvs__dispatch(c, op, redo, nredo);
  free(redo);
  kvs__op_maybe_done(c, op);
}

/* Fires every due timer, then drops stale timers from the top of the heap so that
 * kvs_client_next_timeout reports a live deadline (or none). */
static void kvs__run_timers(kvs_client_t *c) {
  uint64_t now = sq_now_ms();
  kvs__timer_t t;
  while (kvs__heap_top(&c->timers, &t)) {
    kvs__wire_t *w = kvs__wire_find(c, t.rid);
    bool stale = !w || w->deadline != t.at;
    if (!stale && t.at > now) break;
    kvs__heap_pop(&c->timers);
    if (!stale) kvs__on_expired(c, w);
  }
}

int kvs_client_next_timeout(const kvs_client_t *c) {
  if (c->finished.n) return 0;
  kvs__timer_t t;
  if (!kvs__heap_top(&c->timers, &t)) return -1;
  uint64_t now = sq_now_ms();
  if (t.at <= now) return 0;
  uint64_t d = t.at - now;
  return d > INT32_MAX ? INT32_MAX : (int)d;
}

/* Receives every queued reply (at most a bounded batch, so timers still run). */
static int kvs__drain(kvs_client_t *c) {
  for (int n = 0; n < 4096; n++) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int rc = zmq_msg_recv(&msg, c->pull, ZMQ_DONTWAIT);
    if (rc < 0) {
      int e = zmq_errno();
      zmq_msg_close(&msg);
      if (e == EAGAIN || e == EINTR) return 0;
      c->broken = e == ETERM ? SQ_ECLOSED : -e;
      return c->broken;
    }
    kvs__on_message(c, zmq_msg_data(&msg), zmq_msg_size(&msg));
    zmq_msg_close(&msg);
  }
  return 0;
}

int kvs__pump(kvs_client_t *c, int wait_ms) {
  if (c->broken) return c->broken;
  int next = -1; /* ms to the next timer; finished ops do not shorten a pump */
  kvs__timer_t t;
  if (kvs__heap_top(&c->timers, &t)) {
    uint64_t now = sq_now_ms();
    next = t.at <= now ? 0 : (int)((t.at - now) > INT32_MAX ? INT32_MAX : t.at - now);
  }
  int wait = wait_ms;
  if (next >= 0 && (wait < 0 || next < wait)) wait = next;
  zmq_pollitem_t it = {.socket = c->pull, .events = ZMQ_POLLIN};
  int rc = zmq_poll(&it, 1, wait);
  if (rc < 0 && zmq_errno() != EINTR) {
    c->broken = zmq_errno() == ETERM ? SQ_ECLOSED : -zmq_errno();
    return c->broken;
  }
  if (rc > 0 && (rc = kvs__drain(c)) != 0) return rc;
  kvs__run_timers(c);
  return 0;
}

int kvs_client_deliver(kvs_client_t *c, const void *buf, size_t len, uint64_t *id) {
  if (c->broken) return c->broken;
  if (len > c->max_msg) {
    c->stats.dropped_replies++;
    return SQ_ETOOBIG;
  }
  uint64_t call = kvs__on_message(c, buf, len);
  if (call && id) *id = call;
  return call ? 0 : SQ_ENOTFOUND;
}

int kvs_client_resend(kvs_client_t *c, uint64_t id) {
  int rc = SQ_ENOTFOUND;
  uint64_t now = sq_now_ms();
  for (size_t b = 0; b < c->nwbuckets; b++) {
    for (kvs__wire_t *w = c->wbuckets[b]; w; w = w->hnext) {
      if (!w->tag || w->op->id != id || w->deadline <= now) continue;
      if (kvs__heap_push(&c->timers, now, w->rid) != 0) return -ENOMEM;
      w->deadline = now; /* kvs__run_timers re-reads it to our own socket */
      rc = 0;
    }
  }
  return rc;
}
