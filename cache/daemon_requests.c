/* daemon_requests: what squall-cache does with each message (contract in daemon.h).
 *
 * GET state machine of one request (cache__get_t), per key slot:
 *   cached -> answered at once;  missing -> waiting on a fetch (daemon_fetch.h)
 *   -> answered when the fetch completes (stored, KEY_DNE, or the KVS error).
 * The reply goes out when `outstanding` reaches 0, then the request is freed.
 * PUT: validated, sent to the KVS as one async call; kept in d->puts until the call
 * completes; on each key's ack the payload is merged into the cache if cached.
 * Everything received is untrusted: sizes, counts, key lengths, lattice types and
 * payloads are checked before anything is stored or sent on.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_uds.h"
#include "daemon_int.h"
#include "daemon_reply.h"
#include "daemon_value.h"
#include "sq_error.h"

#define CACHE_KEY_MAX 511 /* LMDB's default maximum key size */
#define CACHE_REFETCH_SLOT 1 /* waiter {NULL, 1}: a refetch (daemon_window.c) */
#define CACHE_DIRECT_WAIT_MS 1000 /* a direct miss's FILL is awaited this long at most */

/* Sends a response of type with no tuples, error LATTICE and the sentence why. */
static int cache__send_error(cache__daemon_t *d, const char *addr, uint64_t conn,
                             RequestType type, const char *id, const char *why) {
  KeyResponse resp = KEY_RESPONSE__INIT;
  resp.type = type;
  resp.response_id = (char *)(id ? id : "");
  resp.error = ANNA_ERROR__LATTICE;
  resp.error_message = (char *)why;
  return conn ? cache__uds_reply(d, conn, &resp)
              : sq_zmq_cache_send_pb(d->replies, addr, &resp.base);
}

/* Sends resp to the ZeroMQ address addr, or on unix-socket connection conn (!= 0).
 * A reply too large for one datagram becomes an error the executor hears at once
 * (rather than waiting for its timeout). */
static void cache__send(cache__daemon_t *d, const char *addr, uint64_t conn,
                        KeyResponse *resp) {
  int rc = conn ? cache__uds_reply(d, conn, resp)
                : sq_zmq_cache_send_pb(d->replies, addr, &resp->base);
  if (rc == SQ_ETOOBIG && conn)
    rc = cache__send_error(d, addr, conn, resp->type, resp->response_id,
                           "reply too large for " CACHE_UDS_NAME);
  if (rc) {
    d->c.reply_drops++;
    sq_log_debug(d->log, "reply to %s dropped: %s", conn ? CACHE_UDS_NAME : addr,
                 sq_strerror(rc));
  }
}

/* Answers a request we refuse as a whole (error LATTICE + sentence), if it can be. */
static void cache__refuse(cache__daemon_t *d, const KeyRequest *req, uint64_t conn,
                          const char *why) {
  d->c.bad_requests++;
  sq_log_warn(d->log, "refused request %s: %s",
              req->request_id ? req->request_id : "", why);
  if (!conn && (!req->response_address || !req->response_address[0])) return;
  int rc = cache__send_error(d, req->response_address, conn, req->type, req->request_id, why);
  if (rc) {
    d->c.reply_drops++;
    sq_log_debug(d->log, "refusal dropped: %s", sq_strerror(rc));
  }
}

/* Checks counts and keys (and for PUT types and payloads). NULL or the complaint,
 * written into why. */
static const char *cache__check(const KeyRequest *req, RequestType want, char *why,
                                size_t cap) {
  if (req->type != want) return want == REQUEST_TYPE__GET ? "this socket takes GET requests"
                                                           : "this socket takes PUT requests";
  if (req->n_tuples == 0) return "request has no keys";
  if (req->n_tuples > CACHE_DAEMON_MAX_KEYS) return "request has too many keys (max 10000)";
  for (size_t i = 0; i < req->n_tuples; i++) {
    const KeyTuple *t = req->tuples[i];
    size_t klen = t->key ? strlen(t->key) : 0;
    if (klen == 0) return "empty key";
    if (klen > CACHE_KEY_MAX) return "key longer than 511 bytes";
    if (want != REQUEST_TYPE__PUT) continue;
    int rc = sq_lattice_type_valid((int)t->lattice_type)
                 ? sq_lattice_validate((sq_lattice_type_t)t->lattice_type,
                                       t->payload.data, t->payload.len)
                 : SQ_EUNKNOWNTYPE;
    if (rc) {
      snprintf(why, cap, "key %.64s: %s", t->key, sq_strerror(rc));
      return why;
    }
  }
  return NULL;
}

static void cache__get_free(cache__daemon_t *d, cache__get_t *g) {
  if (!g) return;
  if (g->prev) g->prev->next = g->next;
  else if (d->gets == g) d->gets = g->next;
  if (g->next) g->next->prev = g->prev;
  for (size_t i = 0; g->slots && i < g->n; i++) {
    free(g->slots[i].key);
    free(g->slots[i].message);
  }
  free(g->slots);
  free(g->direct);
  free(g->reply);
  free(g->request_id);
  free(g);
}

/* Sends the reply of a finished GET and frees it. */
static void cache__get_answer(cache__daemon_t *d, cache__get_t *g) {
  KeyTuple *tuples = calloc(g->n, sizeof(*tuples));
  KeyTuple **ptrs = calloc(g->n, sizeof(*ptrs));
  if (tuples && ptrs) {
    KeyResponse resp = KEY_RESPONSE__INIT;
    resp.type = REQUEST_TYPE__GET;
    resp.response_id = g->request_id;
    resp.n_tuples = g->n;
    resp.tuples = ptrs;
    for (size_t i = 0; i < g->n; i++) {
      key_tuple__init(&tuples[i]);
      tuples[i].key = g->slots[i].key;
      tuples[i].lattice_type = (LatticeType)g->slots[i].type;
      tuples[i].error = (AnnaError)cache_reply_anna_error(g->slots[i].err);
      if (g->slots[i].message) tuples[i].error_message = g->slots[i].message;
      tuples[i].payload.data = (uint8_t *)g->slots[i].payload;
      tuples[i].payload.len = g->slots[i].payload ? g->slots[i].len : 0;
      ptrs[i] = &tuples[i];
    }
    cache__send(d, g->reply, g->conn, &resp);
  } else if (cache__send_error(d, g->reply, g->conn, REQUEST_TYPE__GET, g->request_id,
                               "out of memory") != 0) {
    d->c.reply_drops++;
  }
  free(tuples);
  free(ptrs);
  cache__get_free(d, g);
}

/* Slot i of g is done. payload (borrowed, may be NULL) goes into the reply only if
 * the reply is sent now (this was the last slot); a later reply reads LMDB instead. */
static void cache__slot_done(cache__daemon_t *d, cache__get_t *g, uint32_t i, int err,
                             sq_lattice_type_t type, const char *msg,
                             const uint8_t *payload, size_t len) {
  g->slots[i].err = err;
  g->slots[i].type = type;
  if (err && msg && msg[0] && !g->slots[i].message) g->slots[i].message = strdup(msg);
  g->slots[i].payload = payload;
  g->slots[i].len = len;
  if (--g->outstanding == 0) cache__get_answer(d, g);
  else g->slots[i].payload = NULL;
}

/* Starts the one KVS fetch of key: for a direct miss (g->direct) answered to the
 * executor (cache_uds.h), else to us. *id gets the call. */
static int cache__fetch_start(cache__daemon_t *d, const char *key, cache__get_t *g,
                              uint64_t *id) {
  if (g && g->direct) {
    int wait = CACHE_DIRECT_WAIT_MS;
    if (d->cfg->kvs_timeout_ms > 0 && d->cfg->kvs_timeout_ms < wait)
      wait = (int)d->cfg->kvs_timeout_ms;
    kvs_client_via_t via = {.response_address = g->direct, .tag = g->request_id,
                            .wait_ms = wait};
    if (kvs_client_get_async_via(d->kvs, key, NULL, &via, id) == 0) {
      g->direct_call = *id;
      d->c.direct++;
      return 0;
    } /* an address or tag the client refuses: an ordinary fetch */
  }
  return kvs_client_get_async(d->kvs, &key, 1, NULL, id);
}

/* Joins (or opens) the fetch of key for waiter w. 0 or an error (w not added). */
static int cache__fetch(cache__daemon_t *d, const char *key, cache_waiter_t w) {
  bool first = false;
  size_t klen = strlen(key);
  int rc = cache_fetch_join(d->fetches, key, klen, w, &first);
  if (rc) return rc;
  if (!first) {
    d->c.coalesced++;
    return 0;
  }
  uint64_t id = 0;
  rc = cache__fetch_start(d, key, w.req, &id);
  if (rc == 0) {
    if (w.req || w.slot != CACHE_REFETCH_SLOT) d->c.fetches++; /* refetches: their own */
    cache_fetch_set_call(d->fetches, key, klen, id);
    return 0;
  }
  cache_waiter_t *ws = NULL;
  size_t n = 0;
  cache_fetch_finish(d->fetches, key, klen, 0, &ws, &n);
  free(ws);
  return rc;
}

/* Looks one key up for a GET: answers it from the store or parks it on a fetch. */
static void cache__get_key(cache__daemon_t *d, cache__get_t *g, uint32_t i) {
  const char *key = g->slots[i].key;
  sq_buf_t meta = {0};
  sq_lattice_type_t type = SQ_LATTICE_NONE;
  cache__defer_flush_key(d, key);
  int rc = cache_store_get_meta(d->store, key, strlen(key), &type, &meta);
  sq_buf_free(&meta);
  if (rc == 0) {
    d->c.hits++;
    cache_store_touch(d->store, key, strlen(key));
    cache__slot_done(d, g, i, 0, type, NULL, NULL, 0);
    return;
  }
  if (rc == SQ_ENOTFOUND) {
    d->c.misses++;
    rc = cache__fetch(d, key, (cache_waiter_t){.req = g, .slot = i});
    if (rc == 0) return;
  }
  cache__slot_done(d, g, i, rc, SQ_LATTICE_NONE, sq_strerror(rc), NULL, 0);
}

/* Large values and direct misses: a value over CACHE_UDS_INLINE_MAX is answered
 * only once stored (read zero copy), so a direct miss of one would carry it KVS ->
 * executor -> daemon instead of KVS -> daemon: a second transfer of the whole value
 * (measured: 8 MB misses 1.5x slower). The daemon remembers which keys were large
 * when last fetched, in a small direct-mapped table of key hashes, and does not make
 * their misses direct. A collision only costs a small key its direct miss. */
static uint64_t cache__key_hash(const char *key) {
  return cache_lease_hash(key, strlen(key)); /* never 0, the empty slot */
}

static void cache__note_size(cache__daemon_t *d, const char *key, size_t len) {
  uint64_t h = cache__key_hash(key);
  uint64_t *slot = &d->large[h % CACHE_LARGE_KEYS];
  if (len > CACHE_UDS_INLINE_MAX) *slot = h;
  else if (*slot == h) *slot = 0;
  if (d->leases) /* executors do not lease it then: they ask us (cache_lease.h) */
    cache_lease_note_large(d->leases, key, strlen(key), len > CACHE_UDS_INLINE_MAX);
}

/* True when a unix-socket GET may be a direct miss: one key not known to be large,
 * and a response address the KVS can reach -- a tcp endpoint on the host the daemon
 * itself gives the KVS (--public-ip), since the KVS answers the daemon there. */
static bool cache__direct_ok(const cache__daemon_t *d, const KeyRequest *req, uint64_t conn) {
  const char *a = req->response_address, *ip = d->cfg->public_ip;
  if (!conn || req->n_tuples != 1 || !a || !ip || !ip[0]) return false;
  uint64_t h = cache__key_hash(req->tuples[0]->key);
  if (d->large[h % CACHE_LARGE_KEYS] == h) return false;
  size_t n = strlen(ip);
  return strncmp(a, "tcp://", 6) == 0 && strncmp(a + 6, ip, n) == 0 && a[6 + n] == ':';
}

void cache__handle_get(cache__daemon_t *d, KeyRequest *req, uint64_t conn) {
  char why[160];
  const char *bad = cache__check(req, REQUEST_TYPE__GET, why, sizeof(why));
  if (bad) {
    cache__refuse(d, req, conn, bad);
    return;
  }
  if (!conn && (!req->response_address || !req->response_address[0])) { /* hit report */
    for (size_t i = 0; i < req->n_tuples; i++)
      if (cache_store_touch(d->store, req->tuples[i]->key, strlen(req->tuples[i]->key)) == 0)
        d->c.touches++;
    return;
  }
  cache__get_t *g = calloc(1, sizeof(*g));
  if (g) {
    g->n = g->outstanding = req->n_tuples;
    g->slots = calloc(g->n, sizeof(*g->slots));
    g->conn = conn;
    g->reply = conn ? NULL : strdup(req->response_address);
    g->request_id = strdup(req->request_id ? req->request_id : "");
    g->direct = cache__direct_ok(d, req, conn) ? strdup(req->response_address) : NULL;
  }
  bool ok = g && g->slots && (conn || g->reply) && g->request_id;
  for (size_t i = 0; ok && i < g->n; i++)
    ok = (g->slots[i].key = strdup(req->tuples[i]->key)) != NULL;
  if (!ok) {
    cache__get_free(d, g);
    cache__refuse(d, req, conn, "out of memory");
    return;
  }
  g->next = d->gets;
  if (d->gets) d->gets->prev = g;
  d->gets = g;
  /* The last slot to finish frees g: count every slot first, then resolve them. */
  size_t n = g->n;
  for (uint32_t i = 0; i < n; i++) cache__get_key(d, g, i);
}

/* Merges an LWW OBJECT update by timestamp alone when it can (no copy of a large
 * value): 0 done (*decided true), or *decided false when the full merge is needed. */
static int cache__merge_fast(cache__daemon_t *d, const char *key, const uint8_t *payload,
                             size_t len, const sq_buf_t *meta, bool *decided) {
  *decided = false;
  if (cache_value_kind(meta->data, meta->len) != CACHE_META_OBJECT) return 0;
  sq_lattice_t in = {0};
  int rc = sq_lattice_decode(SQ_LATTICE_LWW, payload, len, &in);
  if (rc) return rc;
  uint64_t stored_ts = 0;
  for (int b = 7; b >= 0; b--) stored_ts = (stored_ts << 8) | meta->data[8 + b];
  if (in.u.lww.timestamp < stored_ts) {
    *decided = true;
  } else if (in.u.lww.timestamp > stored_ts) {
    *decided = true;
    rc = cache_value_store(d->store, key, strlen(key), SQ_LATTICE_LWW, payload, len, NULL);
  }
  sq_lattice_free(&in);
  return rc;
}

/* Merges payload into key's cached value. 0 (merged or already contained),
 * SQ_ENOTFOUND (not cached: nothing done), SQ_ELATTICE (other type), or an error. */
static int cache__merge_into(cache__daemon_t *d, const char *key, sq_lattice_type_t type,
                             const uint8_t *payload, size_t len) {
  sq_buf_t meta = {0}, blob = {0}, stored = {0}, merged = {0};
  sq_lattice_type_t have = SQ_LATTICE_NONE;
  bool decided = false, changed = false;
  size_t klen = strlen(key);
  int rc = cache_store_get_meta(d->store, key, klen, &have, &meta);
  if (rc) goto out;
  rc = SQ_ELATTICE;
  if (have != type) goto out;
  if (type == SQ_LATTICE_LWW) {
    rc = cache__merge_fast(d, key, payload, len, &meta, &decided);
    if (rc || decided) goto out;
  }
  cache_blob_t b;
  if ((rc = cache_store_read(d->store, key, klen, &blob)) != 0) goto out; /* no touch */
  if ((rc = cache_blob_parse(blob.data, blob.len, &b)) != 0) goto out;
  if ((rc = cache_value_payload(&b, &stored)) != 0) goto out;
  rc = sq_lattice_merge_payloads(type, stored.data, stored.len, payload, len, &merged,
                                 &changed);
  if (rc == 0 && changed)
    rc = cache_value_store(d->store, key, klen, type, merged.data, merged.len, NULL);
out:
  sq_buf_free(&meta);
  sq_buf_free(&blob);
  sq_buf_free(&stored);
  sq_buf_free(&merged);
  if (rc == 0) cache__note_store(d);
  return rc;
}

void cache__handle_put(cache__daemon_t *d, KeyRequest *req) {
  char why[160];
  const char *bad = cache__check(req, REQUEST_TYPE__PUT, why, sizeof(why));
  kvs_client_kv_t *kvs = NULL;
  cache__put_t *p = NULL;
  for (size_t i = 0; !bad && i < req->n_tuples; i++) {
    const KeyTuple *t = req->tuples[i];
    sq_buf_t meta = {0};
    sq_lattice_type_t have = SQ_LATTICE_NONE;
    cache__defer_flush_key(d, t->key);
    if (cache_store_get_meta(d->store, t->key, strlen(t->key), &have, &meta) == 0 &&
        have != (sq_lattice_type_t)t->lattice_type) {
      snprintf(why, sizeof(why), "key %.64s is cached as %s, the PUT says %s", t->key,
               sq_lattice_type_name(have), sq_lattice_type_name(t->lattice_type));
      bad = why;
    }
    sq_buf_free(&meta);
  }
  if (bad) goto out;
  kvs = calloc(req->n_tuples, sizeof(*kvs));
  p = calloc(1, sizeof(*p));
  bad = "out of memory";
  if (!kvs || !p) goto out;
  for (size_t i = 0; i < req->n_tuples; i++)
    kvs[i] = (kvs_client_kv_t){.key = req->tuples[i]->key,
                               .type = (sq_lattice_type_t)req->tuples[i]->lattice_type,
                               .payload = req->tuples[i]->payload.data,
                               .len = req->tuples[i]->payload.len};
  int rc = kvs_client_put_async(d->kvs, kvs, req->n_tuples, NULL, &p->call_id);
  bad = rc ? sq_strerror(rc) : NULL;
  if (rc) goto out;
  p->req = req;
  p->next = d->puts;
  d->puts = p;
  req = NULL;
  p = NULL;
out:
  if (bad) cache__refuse(d, req, 0, bad);
  if (req) key_request__free_unpacked(req, NULL);
  free(p);
  free(kvs);
}

/* A write-through completed: merge acked keys into the cache and answer (with an error
 * for the whole request if the reply's tuples find no memory: daemon_reply.h). */
static void cache__put_done(cache__daemon_t *d, cache__put_t *p,
                            const kvs_client_completion_t *done) {
  KeyRequest *req = p->req;
  for (size_t i = 0; i < done->n && i < req->n_tuples; i++) {
    const KeyTuple *t = req->tuples[i];
    const kvs_client_result_t *r = &done->results[i];
    if (r->err == 0) {
      d->c.puts++;
      cache__defer_flush_key(d, t->key);
      int rc = cache__merge_into(d, t->key, (sq_lattice_type_t)t->lattice_type,
                                 t->payload.data, t->payload.len);
      if (rc == SQ_ENOTFOUND &&
          (cache_fetch_pending(d->fetches, t->key, strlen(t->key)) ||
           (d->leases && cache_lease_held(d->leases, t->key, strlen(t->key)))))
        rc = cache_value_store(d->store, t->key, strlen(t->key),
                               (sq_lattice_type_t)t->lattice_type, t->payload.data,
                               t->payload.len, NULL); /* the fetch result merges in */
      if (rc && rc != SQ_ENOTFOUND)
        sq_log_warn(d->log, "acked PUT of %s not merged into the cache: %s", t->key,
                    sq_strerror(rc));
    } else {
      d->c.put_errors++;
      if (!req->response_address || !req->response_address[0]) /* nobody else hears it */
        sq_log_warn(d->log, "asynchronous PUT of %.64s failed: %s", t->key,
                    r->message[0] ? r->message : sq_strerror(r->err));
    }
  }
  if (req->response_address && req->response_address[0]) {
    cache_put_reply_t reply;
    if (cache_put_reply_build(&reply, req, done, NULL) != 0)
      sq_log_warn(d->log, "PUT %.64s: %s", req->request_id ? req->request_id : "", reply.why);
    cache__send(d, req->response_address, 0, &reply.resp);
    cache_put_reply_free(&reply);
  }
  cache__note_store(d);
}

/* True when g, waiting on a fetched value of len bytes, can be answered before the
 * value is stored: a unix-socket GET whose last open slot this is, and whose reply
 * with the payload inline fits one datagram (estimated generously). */
static bool cache__answer_early(cache__daemon_t *d, const cache__get_t *g, size_t len) {
  if (!g || !g->conn || g->outstanding != 1 || len == 0 || len > CACHE_UDS_INLINE_MAX)
    return false;
  size_t est = len + strlen(g->request_id) + 64;
  for (size_t i = 0; i < g->n; i++)
    est += strlen(g->slots[i].key) + 32 + (g->slots[i].message ? strlen(g->slots[i].message) : 0);
  return est <= cache__uds_room(d, g->conn);
}

/* Answers, with the payload inline, the waiters that can be answered before the
 * store (cache__answer_early), and only when nothing is cached under key yet: a PUT
 * acked during the fetch may be cached and newer, and then only the merged value in
 * LMDB is right. Answered waiters are cleared (req = NULL). Returns true when every
 * waiter was answered (the store may then be deferred: daemon_defer.c). */
static bool cache__answer_inline(cache__daemon_t *d, const char *key,
                                 const kvs_client_result_t *r, cache_waiter_t *ws, size_t n) {
  sq_buf_t meta = {0};
  sq_lattice_type_t have = SQ_LATTICE_NONE;
  bool any = false, all = true;
  for (size_t i = 0; i < n && !any; i++) any = cache__answer_early(d, ws[i].req, r->len);
  if (!any || cache_store_get_meta(d->store, key, strlen(key), &have, &meta) != SQ_ENOTFOUND ||
      sq_lattice_validate(r->type, r->payload, r->len) != 0) {
    sq_buf_free(&meta);
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    if (!cache__answer_early(d, ws[i].req, r->len)) {
      all = all && !ws[i].req;
      continue;
    }
    d->c.inline_replies++;
    cache__slot_done(d, ws[i].req, ws[i].slot, 0, r->type, NULL, r->payload, r->len);
    ws[i].req = NULL;
  }
  return all;
}

int cache__store_fetched(cache__daemon_t *d, const char *key, sq_lattice_type_t type,
                         const uint8_t *payload, size_t len, bool announced) {
  cache__defer_flush(d, true); /* fetched earlier: stored first (LRU order = fetch order) */
  return cache__store_now(d, key, type, payload, len, announced);
}

int cache__store_now(cache__daemon_t *d, const char *key, sq_lattice_type_t type,
                     const uint8_t *payload, size_t len, bool announced) {
  /* Merge, not replace: a PUT acked while this fetch was in flight may already be
   * cached (cache__put_done), and the fetch may have been answered before it. */
  int err = cache__merge_into(d, key, type, payload, len);
  if (err == SQ_ENOTFOUND && announced) return 0; /* evicted since: a refetch only refreshes */
  if (err == SQ_ENOTFOUND || err == SQ_ELATTICE) /* the KVS's type wins */
    err = cache_value_store(d->store, key, strlen(key), type, payload, len, NULL);
  if (err) sq_log_warn(d->log, "cannot cache %s: %s", key, sq_strerror(err));
  if (err == 0 && !announced) cache__window_add(d, key);
  cache__note_store(d);
  return err;
}

/* Drops the direct-miss waiter of call id when its executor handed this completion
 * back (a FILL) and so already has its answer: KEY_DNE, or a value of at most
 * CACHE_UDS_INLINE_MAX bytes. A larger value is answered on the socket once stored
 * (the executor then reads it zero copy from the shared mapping), and so is a server
 * error (not final). The executor applies the same rule (cache_uds.h). True when one
 * was dropped. */
static bool cache__drop_filled(cache__daemon_t *d, uint64_t id, const kvs_client_result_t *r,
                               cache_waiter_t *ws, size_t n) {
  bool dropped = false;
  bool final = r->err == SQ_EKEYDNE || (r->err == 0 && r->len <= CACHE_UDS_INLINE_MAX);
  for (size_t i = 0; final && d->filled_call == id && i < n; i++) {
    cache__get_t *g = ws[i].req;
    if (!g || g->direct_call != id) continue;
    cache__get_free(d, g); /* a direct miss has one key: nothing else waits in it */
    ws[i] = (cache_waiter_t){.req = NULL, .slot = 0};
    dropped = true;
  }
  return dropped;
}

static bool cache__waiting(const cache_waiter_t *ws, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (ws[i].req) return true;
  return false;
}

/* A fetch completed: answer the waiters that can take the value inline (when that
 * was all of them, the store is deferred: daemon_defer.c), else store the value (or
 * learn it does not exist) and answer the waiters (they read LMDB); only then the
 * bookkeeping that can wait (noting the key-set change). */
static void cache__fetch_done(cache__daemon_t *d, const kvs_client_completion_t *done) {
  const char *key = done->keys[0];
  const kvs_client_result_t *r = &done->results[0];
  size_t klen = strlen(key);
  if (r->err == 0) cache__note_size(d, key, r->len);
  int err = r->err;
  const char *msg = r->message;
  bool changed = false;
  cache_waiter_t *ws = NULL;
  size_t n = 0;
  bool announced = false;
  if (cache_fetch_finish(d->fetches, key, klen, done->id, &ws, &n) != 0) n = 0;
  for (size_t i = 0; i < n; i++)
    announced = announced || (!ws[i].req && ws[i].slot == CACHE_REFETCH_SLOT);
  bool filled = cache__drop_filled(d, done->id, r, ws, n);
  if (err == 0 && (cache__answer_inline(d, key, r, ws, n) ||
                   (filled && !cache__waiting(ws, n)))) {
    uint8_t *payload = r->payload;
    done->results[0].payload = NULL; /* taken: the deferred store owns it */
    cache__defer_store(d, key, r->type, payload, r->len, announced);
  } else if (err == 0) {
    err = cache__store_fetched(d, key, r->type, r->payload, r->len, announced);
    msg = sq_strerror(err);
  } else if (err == SQ_EKEYDNE && cache_store_delete(d->store, key, klen) == 0) {
    changed = true;
  }
  for (size_t i = 0; i < n; i++)
    if (ws[i].req) cache__slot_done(d, ws[i].req, ws[i].slot, err, r->type, msg, NULL, 0);
  free(ws);
  if (changed) cache__note_store(d);
}

void cache__on_kvs_done(void *arg, const kvs_client_completion_t *done) {
  cache__daemon_t *d = arg;
  if (done->type == REQUEST_TYPE__GET && done->n == 1) {
    cache__fetch_done(d, done);
    return;
  }
  if (d->keyset_call && done->id == d->keyset_call) {
    d->keyset_call = 0;
    int err = done->n ? done->results[0].err : SQ_EPROTO;
    if (err) sq_log_warn(d->log, "key-set report failed: %s", sq_strerror(err));
    cache_keyset_done(&d->keyset, err);
    cache__window_done(d, err);
    return;
  }
  for (cache__put_t **link = &d->puts; *link; link = &(*link)->next) {
    cache__put_t *p = *link;
    if (p->call_id != done->id) continue;
    *link = p->next;
    cache__put_done(d, p, done);
    key_request__free_unpacked(p->req, NULL);
    free(p);
    return;
  }
}

void cache__handle_fill(cache__daemon_t *d, uint8_t kind, const uint8_t *resp, size_t len,
                        uint64_t conn) {
  if (kind == CACHE_UDS_NOFILL && conn) { /* it could not hand back: read it ourselves */
    for (cache__get_t *g = d->gets; g; g = g->next)
      if (g->conn == conn && g->direct_call) kvs_client_resend(d->kvs, g->direct_call);
    return;
  }
  if (kind != CACHE_UDS_FILL) {
    d->c.bad_requests++;
    sq_log_warn(d->log, "unknown message (kind %u) from an executor dropped", kind);
    return;
  }
  d->c.fills++;
  uint64_t call = 0;
  int rc = kvs_client_deliver(d->kvs, resp, len, &call);
  if (rc) { /* late (the daemon re-read it meanwhile) or garbage: nothing to do */
    sq_log_debug(d->log, "handed-back KVS answer dropped: %s", sq_strerror(rc));
    return;
  }
  d->filled_call = call; /* its completion is handled now, knowing who has it */
  rc = kvs_client_poll(d->kvs, 0, cache__on_kvs_done, d);
  d->filled_call = 0;
  if (rc < 0) sq_log_warn(d->log, "KVS client: %s", sq_strerror(rc));
}

static uint32_t cache__le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A value an executor read from the KVS under key's lease (cache_lease.h): stored
 * like a fetch result (merged into what a PUT acked meanwhile cached; joins the
 * announcement window, so it is refetched once the KVS pushes the key), then the
 * lease is released so its waiters find it cached. Everything is checked first: the
 * head's size, the key (1..511 bytes, no NUL), the type and the payload. A lease
 * FILL that fails a check is dropped; its lease is released when the key could be
 * read (its waiters then ask the daemon), else it runs out at its deadline. */
void cache__handle_lease_fill(cache__daemon_t *d, const uint8_t *head, size_t hlen,
                              const uint8_t *payload, size_t len) {
  char key[CACHE_KEY_MAX + 1];
  size_t klen = hlen >= 8 ? hlen - 8 : 0;
  uint32_t type = hlen >= 8 ? cache__le32(head + 4) : 0;
  bool key_ok = klen > 0 && klen <= CACHE_KEY_MAX && !memchr(head + 8, '\0', klen);
  int rc = !key_ok ? SQ_EINVAL
           : !sq_lattice_type_valid((int)type) ? SQ_EUNKNOWNTYPE
           : sq_lattice_validate((sq_lattice_type_t)type, payload, len);
  if (rc) {
    d->c.bad_requests++;
    sq_log_warn(d->log, "lease hand-over from an executor dropped: %s", sq_strerror(rc));
    if (key_ok && d->leases) /* its waiters ask us now, not at the lease's deadline */
      (void)cache_lease_release(d->leases, head + 8, klen, cache__le32(head));
    return;
  }
  memcpy(key, head + 8, klen);
  key[klen] = '\0';
  d->c.lease_fills++; /* a miss and a KVS read of the key, as if they were ours */
  d->c.misses++;
  d->c.fetches++;
  cache__note_size(d, key, len);
  (void)cache__store_fetched(d, key, (sq_lattice_type_t)type, payload, len, false);
  if (d->leases) (void)cache_lease_release(d->leases, key, klen, cache__le32(head));
}

void cache__handle_update(cache__daemon_t *d, const KeyRequest *req) {
  for (size_t i = 0; i < req->n_tuples; i++) {
    const KeyTuple *t = req->tuples[i];
    int rc = (t->key && t->key[0] && sq_lattice_type_valid((int)t->lattice_type))
                 ? sq_lattice_validate((sq_lattice_type_t)t->lattice_type, t->payload.data,
                                       t->payload.len)
                 : SQ_EINVAL;
    if (rc == 0) {
      cache__defer_flush_key(d, t->key);
      rc = cache__merge_into(d, t->key, (sq_lattice_type_t)t->lattice_type, t->payload.data,
                             t->payload.len);
    }
    if (rc == 0) {
      d->c.updates++;
      continue;
    }
    d->c.updates_ignored++;
    if (rc == SQ_ENOTFOUND)
      sq_log_debug(d->log, "pushed update of %s ignored: not cached", t->key);
    else
      sq_log_warn(d->log, "pushed update of %.64s ignored: %s", t->key ? t->key : "",
                  sq_strerror(rc));
  }
}

static int cache__revalidate_one(void *arg, const void *key, size_t klen) {
  cache__daemon_t *d = arg;
  char buf[CACHE_KEY_MAX + 1];
  if (klen > CACHE_KEY_MAX || memchr(key, '\0', klen)) return 0;
  memcpy(buf, key, klen);
  buf[klen] = '\0';
  int rc = cache__fetch(d, buf, (cache_waiter_t){.req = NULL, .slot = 0});
  if (rc == 0) d->c.revalidated++;
  return rc == SQ_ETOOBIG ? rc : 0;
}

int cache__refetch(cache__daemon_t *d, const char *key) {
  sq_buf_t meta = {0};
  sq_lattice_type_t type = SQ_LATTICE_NONE;
  int rc = cache_store_get_meta(d->store, key, strlen(key), &type, &meta);
  sq_buf_free(&meta);
  if (rc) return rc; /* evicted meanwhile: nothing to keep fresh */
  if (cache_fetch_pending(d->fetches, key, strlen(key))) { /* it may have read too early */
    cache__window_add(d, key); /* the next report's ack tries again */
    return SQ_EEXISTS;
  }
  return cache__fetch(d, key, (cache_waiter_t){.req = NULL, .slot = CACHE_REFETCH_SLOT});
}

void cache__revalidate(cache__daemon_t *d) {
  cache_store_foreach_key(d->store, cache__revalidate_one, d);
  if (d->c.revalidated)
    sq_log_info(d->log, "refetching %" PRIu64 " cached keys from the KVS", d->c.revalidated);
}

void cache__drop_pending(cache__daemon_t *d) {
  while (d->puts) {
    cache__put_t *p = d->puts;
    d->puts = p->next;
    key_request__free_unpacked(p->req, NULL);
    free(p);
  }
  while (d->gets) cache__get_free(d, d->gets);
}
