/* kvs_request: handling of KeyRequests on a storage worker (see kvs_request.h).
 *
 * Every reply is packed the moment its request is handled, because the stored bytes
 * it quotes may be replaced by the next merge; the packed bytes then wait in the ack
 * FIFO until the log position current at that moment is durable. GET replies wait
 * too: a GET must never reveal a write that a crash could still take back. And every
 * reply waits at least for the end of its batch, so that a batch's replies are sent
 * back to back (see kvs__reply).
 */
#include "kvs_request.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "anna.pb-c.h"
#include "kvs_wire.h"
#include "sq_error.h"
#include "sq_proto.h"
#include "sq_wire.h"

#define KVS__ARENA_CHUNK (64 * 1024)
#define KVS__REPLY_SOCKETS 1024
/* Replies queued per reply address before a send is refused (and counted as a drop).
 * An Anna client thread has ONE response address for all its requests, so thousands
 * may be in flight to it; ZeroMQ's default of 1000 dropped replies of pipelined
 * clients. Still a bound: a client that stops reading cannot take all memory. */
#define KVS__REPLY_HWM 65536
#define KVS__MAX_ADDRESS 512

/* ---- error sentences, in the arena ------------------------------------------- */

static char *kvs__say(kvs_request_ctx_t *rq, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *kvs__say(kvs_request_ctx_t *rq, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  size_t len = (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1;
  char *s = sq_arena_alloc(&rq->arena, len + 1);
  if (!s) return NULL;
  memcpy(s, tmp, len);
  s[len] = '\0';
  return s;
}

/* Quotes a key for an error sentence: at most 64 bytes, non-printables as '?'. */
static const char *kvs__quote(kvs_request_ctx_t *rq, const char *key) {
  size_t len = strlen(key), shown = len > 64 ? 64 : len;
  char *s = sq_arena_alloc(&rq->arena, shown + 4);
  if (!s) return "";
  for (size_t i = 0; i < shown; i++)
    s[i] = (key[i] >= 0x20 && key[i] < 0x7f) ? key[i] : '?';
  memcpy(s + shown, len > shown ? "..." : "", len > shown ? 4 : 1);
  return s;
}

static void kvs__tuple_error(kvs_request_ctx_t *rq, KeyTuple *out, AnnaError err,
                             char *message) {
  out->error = err;
  out->error_message = message ? message : "";
  atomic_fetch_add_explicit(&rq->counters->errors, 1, memory_order_relaxed);
}

/* ---- GET and PUT of one tuple -------------------------------------------------- */

/* True when a stored payload holds no data: Anna answers KEY_DNE for it (§2.2). The
 * field holding the data is 2 for LWW, PRIORITY and SINGLE_CAUSAL, 1 for sets, 3 for
 * MULTI_CAUSAL; a single-value lattice with zero bytes is empty too. Parsed on every
 * GET: keeping it per entry instead, computed on every merge, cost PUTs ~8% (PUT 8B
 * d16, interleaved pairs both ways round) for ~1% on GETs. */
static bool kvs__payload_empty(sq_lattice_type_t type, const uint8_t *p, size_t len) {
  static const uint32_t data_field[] = {0, 2, 1, 2, 3, 1, 2};
  const uint8_t *value;
  size_t value_len;
  if (sq_wire_find_bytes(p, len, data_field[type], &value, &value_len) != 0) return true;
  return (type == SQ_LATTICE_LWW || type == SQ_LATTICE_PRIORITY) && value_len == 0;
}

static bool kvs__owned_here(kvs_request_ctx_t *rq, const char *key, size_t keylen) {
  /* A lone worker owns every key: skip hashing the key onto the local ring. */
  if (kvs_placement_threads(rq->params->placement) == 1) return true;
  return kvs_placement_owner(rq->params->placement, key, keylen) == rq->params->tid;
}

/* The store's view of tuple `in`'s key: `pre` when the batch made it already, else
 * made now in *tmp. */
static const kvs_store_key_t *kvs__key(const KeyTuple *in, const kvs_store_key_t *pre,
                                       kvs_store_key_t *tmp) {
  if (pre) return pre;
  kvs_store_key(tmp, in->key, strlen(in->key));
  return tmp;
}

static void kvs__handle_get(kvs_request_ctx_t *rq, const KeyTuple *in, KeyTuple *out,
                            const kvs_store_key_t *pre) {
  kvs_store_key_t tmp;
  const kvs_store_key_t *k = kvs__key(in, pre, &tmp);
  size_t keylen = k->len;
  kvs_store_entry_t e;
  atomic_fetch_add_explicit(&rq->counters->gets, 1, memory_order_relaxed);
  if (keylen == 0) {
    kvs__tuple_error(rq, out, ANNA_ERROR__KEY_DNE, kvs__say(rq, "the key is empty"));
    return;
  }
  if (!kvs__owned_here(rq, in->key, keylen)) {
    kvs__tuple_error(rq, out, ANNA_ERROR__WRONG_THREAD,
                     kvs__say(rq, "key '%s' is not served by thread %u; ask routing again",
                              kvs__quote(rq, in->key), rq->params->tid));
    return;
  }
  if (kvs_store_get_key(rq->store, k, &e) != 0 ||
      kvs__payload_empty(e.type, e.payload, e.len)) {
    out->error = ANNA_ERROR__KEY_DNE;
    return;
  }
  out->lattice_type = (LatticeType)e.type;
  out->payload.data = (uint8_t *)e.payload;
  out->payload.len = e.len;
}

/* Checks a PUT tuple before anything is stored. NULL when fine, else the sentence. */
static char *kvs__put_problem(kvs_request_ctx_t *rq, const KeyTuple *in, size_t keylen,
                              AnnaError *err) {
  const kvs_config_t *cfg = rq->params->config;
  *err = ANNA_ERROR__LATTICE;
  if (keylen == 0) return kvs__say(rq, "a PUT needs a non-empty key");
  bool fine = in->lattice_type != LATTICE_TYPE__NONE &&
              sq_lattice_type_valid((int)in->lattice_type) &&
              in->payload.len <= cfg->max_value_bytes && kvs__owned_here(rq, in->key, keylen);
  if (fine) return NULL; /* the common case: no sentence, no quoting */
  const char *key = kvs__quote(rq, in->key);
  if (in->lattice_type == LATTICE_TYPE__NONE)
    return kvs__say(rq, "PUT of key '%s' names no lattice type (NONE); nothing was stored",
                    key);
  if (!sq_lattice_type_valid((int)in->lattice_type))
    return kvs__say(rq, "PUT of key '%s' names unknown lattice type %d; nothing was stored",
                    key, (int)in->lattice_type);
  if (in->payload.len > cfg->max_value_bytes)
    return kvs__say(rq, "value of key '%s' is %zu bytes, over the limit of %" PRIu64
                    " bytes (--max-value-bytes); nothing was stored",
                    key, in->payload.len, cfg->max_value_bytes);
  if (!kvs__owned_here(rq, in->key, keylen)) {
    *err = ANNA_ERROR__WRONG_THREAD;
    return kvs__say(rq, "key '%s' is not served by thread %u; ask routing again", key,
                    rq->params->tid);
  }
  return NULL;
}

/* Words for a refused merge. */
static char *kvs__merge_problem(kvs_request_ctx_t *rq, const KeyTuple *in, int rc) {
  const char *key = kvs__quote(rq, in->key);
  const char *type = sq_lattice_type_name((int)in->lattice_type);
  if (rc == SQ_ELATTICE) {
    kvs_store_entry_t e;
    const char *held = "another type";
    if (kvs_store_get(rq->store, in->key, strlen(in->key), &e) == 0)
      held = sq_lattice_type_name((int)e.type);
    return kvs__say(rq, "key '%s' holds a %s value; a PUT of %s was refused", key, held,
                    type);
  }
  if (rc == SQ_EBADLATTICE)
    return kvs__say(rq, "payload of key '%s' is not a valid %s value; nothing was stored",
                    key, type);
  return kvs__say(rq, "PUT of key '%s' failed: %s", key, sq_strerror(rc));
}

static void kvs__handle_put(kvs_request_ctx_t *rq, const KeyTuple *in, KeyTuple *out,
                            const kvs_store_key_t *pre) {
  kvs_store_key_t tmp;
  const kvs_store_key_t *k = kvs__key(in, pre, &tmp);
  size_t keylen = k->len;
  AnnaError err;
  atomic_fetch_add_explicit(&rq->counters->puts, 1, memory_order_relaxed);
  char *problem = kvs__put_problem(rq, in, keylen, &err);
  if (problem) {
    kvs__tuple_error(rq, out, err, problem);
    return;
  }
  sq_lattice_type_t type = (sq_lattice_type_t)in->lattice_type;
  bool changed = false;
  int rc = kvs_store_merge_key(rq->store, k, type, in->payload.data, in->payload.len,
                               &changed);
  if (rc) {
    kvs__tuple_error(rq, out, ANNA_ERROR__LATTICE, kvs__merge_problem(rq, in, rc));
    return;
  }
  out->lattice_type = in->lattice_type;
  if (!changed) return; /* already held: the reply still waits for earlier writes */
  atomic_fetch_add_explicit(&rq->counters->merges, 1, memory_order_relaxed);
  uint64_t lsn = 0; /* memory only (no log): every reply may go at once */
  if (rq->wal) {
    rc = kvs_wal_append(rq->wal, in->key, keylen, type, in->payload.data, in->payload.len,
                        &lsn);
    if (rc) {
      /* The value is in memory but not in the log: this node can no longer promise
       * durability. Stop serving (see kvs_request_after_batch). */
      sq_log_error(rq->params->log, "log append failed for key '%s': %s; stopping",
                   kvs__quote(rq, in->key), sq_strerror(rc));
      rq->log_failed = rc;
      return;
    }
    rq->appended_lsn = lsn;
    atomic_fetch_add_explicit(&rq->counters->log_bytes, keylen + in->payload.len,
                              memory_order_relaxed);
  }
  if (keylen > strlen(KVS_SUBS_PREFIX) &&
      memcmp(in->key, KVS_SUBS_PREFIX, strlen(KVS_SUBS_PREFIX)) == 0)
    kvs_request_announce(rq, in->key, keylen);
  kvs_request_push_update(rq, in->key, keylen, lsn);
}

/* ---- whole requests ------------------------------------------------------------ */

/* Queues the packed reply until `lsn` is durable; kvs_request_after_batch sends it.
 * Every reply waits for the end of its batch, even one that could go at once: sent
 * back to back, the batch's replies wake ZeroMQ's I/O thread once instead of once per
 * reply (measured: the I/O thread's CPU per GET halved, ~2.0 -> ~1.0 us). */
static void kvs__reply(kvs_request_ctx_t *rq, const char *address, size_t addr_len,
                       uint64_t lsn, const KeyResponse *resp, const kvs_wire_known_t *known) {
  size_t fast = kvs_wire_response_size(resp, known); /* same bytes as protobuf-c, or 0 */
  size_t len = fast ? fast : key_response__get_packed_size(resp);
  uint8_t *dst = kvs_ack_reserve(&rq->acks, lsn, address, addr_len, len);
  if (!dst) {
    sq_log_error(rq->params->log, "out of memory queueing a reply to %s", address);
    atomic_fetch_add_explicit(&rq->counters->send_drops, 1, memory_order_relaxed);
    return;
  }
  /* Packed once, in the queue entry. */
  if (fast) kvs_wire_response_pack(resp, known, dst);
  else key_response__pack(resp, dst);
}

/* A request we could not read: answer it if its reply address can still be found. */
static void kvs__salvage(kvs_request_ctx_t *rq, const uint8_t *bytes, size_t len,
                         const char *problem) {
  const uint8_t *addr, *rid;
  size_t addr_len, rid_len;
  atomic_fetch_add_explicit(&rq->counters->errors, 1, memory_order_relaxed);
  if (sq_wire_find_bytes(bytes, len, 3, &addr, &addr_len) != 0 || addr_len == 0 ||
      addr_len >= KVS__MAX_ADDRESS) {
    sq_log_warn(rq->params->log, "dropped a request with no usable reply address: %s",
                problem);
    return;
  }
  char address[KVS__MAX_ADDRESS], request_id[256] = "";
  memcpy(address, addr, addr_len);
  address[addr_len] = '\0';
  if (sq_wire_find_bytes(bytes, len, 4, &rid, &rid_len) == 0 && rid_len < sizeof(request_id)) {
    memcpy(request_id, rid, rid_len);
    request_id[rid_len] = '\0';
  }
  KeyResponse resp = KEY_RESPONSE__INIT;
  resp.response_id = request_id;
  resp.error = ANNA_ERROR__LATTICE;
  resp.error_message = (char *)problem;
  kvs__reply(rq, address, addr_len, 0, &resp, NULL);
}

/* Keys per request whose store views (hash included) a batch makes once, for its
 * prefetch and then for serving them. */
#define KVS__PRE_KEYS 4

typedef struct {
  kvs_store_key_t key[KVS__PRE_KEYS];
  size_t n; /* views made: of the request's first min(n_tuples, KVS__PRE_KEYS) keys */
} kvs__pre_t;

/* Answers every tuple of a decoded request into resp (arena memory); `pre` holds the
 * views of its first keys when the batch made them (else NULL). */
static int kvs__answer(kvs_request_ctx_t *rq, const KeyRequest *req, KeyResponse *resp,
                       const kvs__pre_t *pre) {
  resp->type = req->type;
  resp->response_id = req->request_id;
  resp->n_tuples = req->n_tuples;
  if (req->n_tuples == 0) return 0;
  resp->tuples = sq_arena_alloc(&rq->arena, req->n_tuples * sizeof(KeyTuple *));
  KeyTuple *outs = sq_arena_alloc(&rq->arena, req->n_tuples * sizeof(KeyTuple));
  if (!resp->tuples || !outs) return -ENOMEM;
  for (size_t i = 0; i < req->n_tuples; i++) {
    key_tuple__init(&outs[i]);
    outs[i].key = req->tuples[i]->key;
    resp->tuples[i] = &outs[i];
    const kvs_store_key_t *k = pre && i < pre->n ? &pre->key[i] : NULL;
    if (req->type == REQUEST_TYPE__GET) kvs__handle_get(rq, req->tuples[i], &outs[i], k);
    else kvs__handle_put(rq, req->tuples[i], &outs[i], k);
  }
  return 0;
}

/* Decodes one message into the arena. NULL with the sentence for the sender in
 * *problem when it is not a KeyRequest we can read. */
static KeyRequest *kvs__decode(kvs_request_ctx_t *rq, const uint8_t *bytes, size_t len,
                               char **problem, kvs_wire_known_t *known) {
  const kvs_config_t *cfg = rq->params->config;
  KeyRequest *req = NULL;
  *problem = NULL;
  *known = (kvs_wire_known_t){0};
  if (len > cfg->max_request_bytes) {
    *problem = kvs__say(rq, "request of %zu bytes is over the limit of %" PRIu64
                        " bytes (--max-request-bytes)", len, cfg->max_request_bytes);
    return NULL;
  }
  /* The common one-tuple shape is decoded by hand (kvs_wire.h); anything else, and
   * anything the fast path is unsure of, goes through protobuf-c, which decides. */
  if (kvs_wire_request_decode(bytes, len, &rq->arena, &req, known) != 0 &&
      sq_proto_unpack(&key_request__descriptor, sq_arena_allocator(&rq->arena), bytes, len,
                      SIZE_MAX, (ProtobufCMessage **)&req) != 0) {
    *problem = "the request is not a valid KeyRequest message";
    return NULL;
  }
  return req;
}

/* Answers a decoded request (or salvages an undecodable one) and queues the reply. */
static void kvs__serve(kvs_request_ctx_t *rq, const uint8_t *bytes, size_t len,
                       const KeyRequest *req, const char *problem,
                       const kvs__pre_t *pre, const kvs_wire_known_t *known) {
  atomic_fetch_add_explicit(&rq->counters->requests, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rq->counters->bytes_in, len, memory_order_relaxed);
  if (!req) {
    kvs__salvage(rq, bytes, len, problem ? problem : "out of memory decoding the request");
    return;
  }
  KeyResponse resp = KEY_RESPONSE__INIT;
  if (req->type != REQUEST_TYPE__GET && req->type != REQUEST_TYPE__PUT) {
    resp.response_id = req->request_id;
    resp.error = ANNA_ERROR__LATTICE;
    resp.error_message = kvs__say(rq, "unknown request type %d: use GET (1) or PUT (2)",
                                  (int)req->type);
    atomic_fetch_add_explicit(&rq->counters->errors, 1, memory_order_relaxed);
  } else if (kvs__answer(rq, req, &resp, pre) != 0) {
    sq_log_error(rq->params->log, "out of memory answering a request");
    return;
  }
  /* A write this request made could not be logged: acknowledging anything now could
   * reveal or confirm a value a restart will not have. The sender times out; the
   * worker stops after this batch (kvs_request_after_batch). */
  if (rq->log_failed) return;
  size_t addr_len = kvs_wire_strlen(req->response_address, known);
  if (addr_len == 0) return; /* fire and forget (gossip-style PUT) */
  if (addr_len >= KVS__MAX_ADDRESS) return;
  kvs__reply(rq, req->response_address, addr_len, rq->appended_lsn, &resp, known);
}

void kvs_request_handle(kvs_request_ctx_t *rq, const uint8_t *bytes, size_t len) {
  char *problem;
  kvs_wire_known_t known;
  sq_arena_reset(&rq->arena);
  KeyRequest *req = kvs__decode(rq, bytes, len, &problem, &known);
  kvs__serve(rq, bytes, len, req, problem, NULL, &known);
}

/* Makes the views of the first keys of req (none when it did not decode). */
static void kvs__pre_make(kvs__pre_t *pre, const KeyRequest *req,
                          const kvs_wire_known_t *known) {
  pre->n = 0;
  for (size_t t = 0; req && t < req->n_tuples && t < KVS__PRE_KEYS; t++, pre->n++) {
    const char *key = req->tuples[t]->key;
    kvs_store_key(&pre->key[t], key, kvs_wire_strlen(key, known));
  }
}

/* Prefetch step `step` (see kvs_store_prefetch) for the pre-made keys of every request. */
static void kvs__prefetch(kvs_request_ctx_t *rq, const kvs__pre_t *pre, int n, int step) {
  for (int i = 0; i < n; i++)
    for (size_t t = 0; t < pre[i].n; t++) kvs_store_prefetch(rq->store, &pre[i].key[t], step);
}

/* How many requests ahead of the one being served the rest of a value is fetched. */
#define KVS__VALUE_AHEAD 2

int kvs_request_receive_batch(kvs_request_ctx_t *rq, void *socket, int max) {
  zmq_msg_t msgs[KVS_REQUEST_PIPELINE];
  KeyRequest *reqs[KVS_REQUEST_PIPELINE];
  char *problems[KVS_REQUEST_PIPELINE];
  kvs_wire_known_t known[KVS_REQUEST_PIPELINE];
  int n = 0;
  if (max > KVS_REQUEST_PIPELINE) max = KVS_REQUEST_PIPELINE;
  for (; n < max; n++) {
    zmq_msg_init(&msgs[n]);
    if (zmq_msg_recv(&msgs[n], socket, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&msgs[n]);
      break;
    }
  }
  if (n == 0) return 0;
  sq_arena_reset(&rq->arena);
  for (int i = 0; i < n; i++)
    reqs[i] = kvs__decode(rq, zmq_msg_data(&msgs[i]), zmq_msg_size(&msgs[i]), &problems[i],
                          &known[i]);
  /* With 100k keys the store's index, entries and values are out of cache: ask for
   * every key's slot, then entry, then value, a whole pass apart, so the misses of
   * the batch overlap instead of stalling one request at a time. */
  kvs__pre_t pre[KVS_REQUEST_PIPELINE];
  for (int i = 0; i < n; i++) kvs__pre_make(&pre[i], reqs[i], &known[i]);
  for (int step = 0; step < 3; step++) kvs__prefetch(rq, pre, n, step);
  /* Whole values a few requests ahead (see kvs_store_prefetch): a GET's reply copies
   * its value, and a 1 KiB value is 16 lines. */
  for (int i = 0; i < n && i < KVS__VALUE_AHEAD; i++)
    kvs__prefetch(rq, &pre[i], 1, 3);
  for (int i = 0; i < n; i++) {
    if (i + KVS__VALUE_AHEAD < n) kvs__prefetch(rq, &pre[i + KVS__VALUE_AHEAD], 1, 3);
    kvs__serve(rq, zmq_msg_data(&msgs[i]), zmq_msg_size(&msgs[i]), reqs[i], problems[i],
               &pre[i], &known[i]);
    zmq_msg_close(&msgs[i]);
  }
  return n;
}

/* ---- durability, replies, snapshots --------------------------------------------- */

/* Replies at least this long go out without a copy: ZeroMQ's message points into
 * the ack queue's chunk (lent until its I/O thread has written it). Below, a copy
 * costs less than the message's separate reference count that zero-copy needs. */
#define KVS__ZERO_COPY_MIN 256

static void kvs__ack_msg_free(void *data, void *token) {
  (void)data;
  kvs_ack_release(token);
}

static int kvs__send_ack(void *sock, const kvs_ack_t *ack) {
  if (ack->len < KVS__ZERO_COPY_MIN) return sq_zmq_send_bytes(sock, ack->bytes, ack->len);
  zmq_msg_t msg;
  void *token = kvs_ack_lend(ack);
  if (zmq_msg_init_data(&msg, ack->bytes, ack->len, kvs__ack_msg_free, token) != 0) {
    kvs_ack_release(token);
    return -ENOMEM;
  }
  if (zmq_msg_send(&msg, sock, ZMQ_DONTWAIT) >= 0) return 0;
  int rc = -zmq_errno();
  zmq_msg_close(&msg); /* not sent: releases the token */
  return rc;
}

/* Sends every reply whose writes are durable. Replies to one address mostly come in
 * runs (an Anna client thread has one response address): a run reuses the socket of
 * its first reply instead of looking the address up again (the cache's socket stays
 * valid until the next cache call, and none happens within a run). */
static void kvs__send_ready(kvs_request_ctx_t *rq) {
  const kvs_ack_t *ack;
  char last[KVS__MAX_ADDRESS] = "";
  void *sock = NULL;
  size_t run_bytes = 0, run_replies = 0; /* of the current run, for kvs_cork_run */
  bool run_long = false; /* the run was reported to kvs_cork_run (once per run) */
  while ((ack = kvs_ack_ready(&rq->acks, rq->durable_lsn)) != NULL) {
    int rc = 0;
    if (!sock || strcmp(ack->address, last) != 0) {
      sock = NULL;
      run_bytes = run_replies = 0;
      run_long = false;
      rc = sq_zmq_cache_get(rq->replies, ack->address, &sock);
      if (rc == 0) snprintf(last, sizeof(last), "%s", ack->address);
    }
    if (rc == 0) rc = kvs__send_ack(sock, ack);
    if (rc != 0) {
      atomic_fetch_add_explicit(&rq->counters->send_drops, 1, memory_order_relaxed);
    } else {
      atomic_fetch_add_explicit(&rq->counters->bytes_out, ack->len, memory_order_relaxed);
      run_bytes += ack->len;
      if (!run_long && ++run_replies >= KVS_CORK_MIN_REPLIES &&
          run_bytes >= KVS_CORK_MIN_BYTES) {
        run_long = true; /* the rest of the run would only repeat the lookup */
        kvs_cork_run(&rq->cork, ack->address, run_bytes, run_replies);
      }
    }
    kvs_ack_pop(&rq->acks);
  }
  kvs_cork_turn_end(&rq->cork);
}

/* Submits the pending log group and raises durable_lsn by what completed. 0 or the
 * log's error (then log_failed is set). */
static int kvs__log_progress(kvs_request_ctx_t *rq) {
  int rc = kvs_wal_flush(rq->wal);
  uint64_t durable = rq->durable_lsn;
  if (rc == 0) rc = kvs_wal_reap(rq->wal, &durable);
  if (rc) {
    sq_log_error(rq->params->log, "log write failed: %s; stopping so that no write is "
                 "acknowledged without being on disk", sq_strerror(rc));
    rq->log_failed = rc;
    return rc;
  }
  if (durable > rq->durable_lsn) {
    kvs_wal_stats_t st;
    kvs_wal_stats(rq->wal, &st);
    atomic_store_explicit(&rq->counters->fsyncs, st.fsyncs, memory_order_relaxed);
    rq->durable_lsn = durable;
  }
  return 0;
}

int kvs_request_after_batch(kvs_request_ctx_t *rq) {
  if (rq->log_failed) return rq->log_failed;
  if (rq->wal) {
    int rc = kvs__log_progress(rq);
    if (rc) return rc;
  }
  kvs__send_ready(rq);
  atomic_store_explicit(&rq->counters->keys, kvs_store_count(rq->store), memory_order_relaxed);
  return 0;
}

/* Snapshot encoding stops for this turn once this much waits for the writer thread:
 * memory stays bounded and the worker never waits for the disk. */
#define KVS__SNAP_BACKLOG (4u << 20)

bool kvs_request_snapshot_active(const kvs_request_ctx_t *rq) {
  return rq->snap && rq->snap_next < rq->snap_end &&
         kvs_snap_backlog(rq->snap) < KVS__SNAP_BACKLOG;
}

static void kvs__snapshot_failed(kvs_request_ctx_t *rq, int rc) {
  sq_log_warn(rq->params->log, "snapshot failed: %s; the log keeps everything, will retry",
              sq_strerror(rc));
  kvs_snap_abort(rq->snap);
  rq->snap = NULL;
}

/* The commit runs on the snapshot's writer thread; this only notices its end. */
static void kvs__snapshot_finish(kvs_request_ctx_t *rq) {
  int rc = 0;
  if (kvs_snap_commit_poll(rq->snap, &rc) == 0) return;
  rq->snap = NULL; /* freed by the poll */
  if (rc)
    sq_log_warn(rq->params->log, "snapshot failed: %s; the log keeps everything, will retry",
                sq_strerror(rc));
  else
    sq_log_info(rq->params->log, "snapshot of %zu keys written; older log segments removed",
                rq->snap_end);
}

/* Log growth since the last snapshot, in multiples of the live payload, that makes
 * the next one due. */
#define KVS__SNAP_GROWTH 2

/* A snapshot is due when the log has passed --segment-bytes AND has grown by at least
 * twice the live payload since the last snapshot began. A snapshot rewrites every
 * live value, so this bounds its cost to half a byte per byte logged (with 100k 1 KiB
 * values and 64 MiB segments, snapshots once wrote more than the log did; at one byte
 * per byte, a 1 KiB PUT load still rewrote all 100 MiB every ~1.5 s, doubling the
 * bytes written and competing with requests for CPU), while a restart reads at most
 * about three times the live data plus a segment: bounded by live data, not history. */
static bool kvs__snapshot_due(kvs_request_ctx_t *rq) {
  if (!kvs_wal_checkpoint_due(rq->wal)) return false;
  kvs_wal_stats_t ws;
  kvs_store_stats_t ss;
  kvs_wal_stats(rq->wal, &ws);
  kvs_store_stats(rq->store, &ss);
  return ws.bytes - rq->snap_log_mark >= KVS__SNAP_GROWTH * ss.payload_bytes;
}

static void kvs__snapshot_begin(kvs_request_ctx_t *rq) {
  int rc = kvs_wal_checkpoint_begin(rq->wal, &rq->snap);
  if (rc) {
    sq_log_warn(rq->params->log, "cannot start a snapshot: %s", sq_strerror(rc));
    rq->snap = NULL;
    return;
  }
  kvs_wal_stats_t ws;
  kvs_wal_stats(rq->wal, &ws);
  rq->snap_log_mark = ws.bytes;
  rq->snap_next = 0;
  rq->snap_end = kvs_store_count(rq->store);
}

void kvs_request_snapshot_step(kvs_request_ctx_t *rq, size_t slice) {
  if (!rq->wal) return; /* memory only: nothing to snapshot */
  if (!rq->snap) {
    if (!kvs__snapshot_due(rq)) return;
    kvs__snapshot_begin(rq);
    if (!rq->snap) return;
  }
  if (rq->snap_next == rq->snap_end) {
    kvs__snapshot_finish(rq);
    return;
  }
  int rc = kvs_snap_pump(rq->snap);
  for (size_t n = 0; rc == 0 && n < slice && rq->snap_next < rq->snap_end &&
                     kvs_snap_backlog(rq->snap) < KVS__SNAP_BACKLOG;
       n++, rq->snap_next++) {
    kvs_store_entry_t e;
    kvs_store_entry_at(rq->store, rq->snap_next, &e);
    rc = kvs_snap_add(rq->snap, e.key, e.keylen, e.type, e.payload, e.len);
  }
  if (rc) kvs__snapshot_failed(rq, rc);
  else if (rq->snap_next == rq->snap_end) kvs__snapshot_finish(rq);
}

/* ---- set-up and tear-down ----------------------------------------------------- */

static int kvs__recover_one(const char *key, size_t keylen, sq_lattice_type_t type,
                            const uint8_t *payload, size_t len, void *ctx) {
  kvs_request_ctx_t *rq = ctx;
  /* A record that no longer merges (it cannot: it merged when it was logged) is
   * reported but does not stop recovery of everything else. */
  int rc = kvs_store_merge(rq->store, key, keylen, type, payload, len, NULL);
  if (rc && rc != -ENOMEM) {
    sq_log_warn(rq->params->log, "recovery skipped a record of key '%.*s': %s",
                (int)(keylen > 64 ? 64 : keylen), key, sq_strerror(rc));
    return 0;
  }
  return rc;
}

static int kvs__recover(kvs_request_ctx_t *rq, char *why, size_t why_len) {
  const kvs_config_t *cfg = rq->params->config;
  kvs_wal_recovery_t st = {0};
  int rc = kvs_wal_recover(cfg->data_dir, rq->params->tid, kvs__recover_one, rq, &st);
  if (rc) {
    snprintf(why, why_len, "recovery of thread %u's log in %s failed: %s",
             rq->params->tid, cfg->data_dir, sq_strerror(rc));
    return rc;
  }
  atomic_store(&rq->counters->recovered, st.records + st.snapshot_entries);
  sq_log_info(rq->params->log, "thread %u recovered %zu keys from %s: %" PRIu64 " snapshot "
              "entries, %" PRIu64 " log records in %" PRIu64 " segments",
              rq->params->tid, kvs_store_count(rq->store), cfg->data_dir, st.snapshot_entries,
              st.records, st.segments);
  if (st.torn_bytes)
    sq_log_warn(rq->params->log, "log tail was torn: cut %" PRIu64 " bytes after the last "
                "whole record (a write interrupted by a crash; it was never acknowledged)",
                st.torn_bytes);
  return 0;
}

/* Opens the thread's log for appends (LOG and FSYNC durability). */
static int kvs__open_log(kvs_request_ctx_t *rq, char *why, size_t why_len) {
  const kvs_config_t *cfg = rq->params->config;
  kvs_wal_options_t opts = {
      .dir = cfg->data_dir,
      .tid = rq->params->tid,
      .durability = (kvs_durability_t)cfg->durability,
      .backend = (kvs_wal_backend_t)cfg->wal_backend,
      .segment_bytes = cfg->segment_bytes,
  };
  int rc = kvs_wal_open(&opts, &rq->wal);
  if (rc) {
    snprintf(why, why_len, "cannot open the log in %s: %s", cfg->data_dir, sq_strerror(rc));
    return rc;
  }
  if (rq->params->tid == 0 && kvs_wal_fallback_reason(rq->wal))
    sq_log_warn(rq->params->log, "io_uring unavailable (%s); using pwrite+fdatasync",
                kvs_wal_fallback_reason(rq->wal));
  return 0;
}

int kvs_request_ctx_init(kvs_request_ctx_t *rq, const kvs_worker_params_t *params,
                         kvs_counters_t *counters, char *why, size_t why_len) {
  memset(rq, 0, sizeof(*rq));
  rq->params = params;
  kvs_cork_init(&rq->cork, params->config->reply_cork);
  rq->counters = counters;
  sq_arena_init(&rq->arena, KVS__ARENA_CHUNK);
  const kvs_config_t *cfg = params->config;
  bool logged = cfg->durability != KVS_DURABILITY_NONE;
  int rc = kvs_store_create(&rq->store);
  if (rc == 0 && logged) rc = kvs__recover(rq, why, why_len);
  if (rc == 0 && logged) rc = kvs__open_log(rq, why, why_len);
  if (rc) return rc;
  sq_zmq_cache_options_t co = {.max_sockets = KVS__REPLY_SOCKETS, .sndhwm = KVS__REPLY_HWM,
                               .linger_ms = -1,
                               .idle_ms = kvs_config_reply_idle(params->config)};
  rc = sq_zmq_cache_create(params->zmq_context, &co, &rq->replies);
  if (rc) snprintf(why, why_len, "cannot create reply sockets: %s", sq_strerror(rc));
  if (rc == 0) {
    rc = kvs_request_subs_init(rq);
    if (rc) snprintf(why, why_len, "cannot set up cache subscriptions: %s", sq_strerror(rc));
  }
  atomic_store(&counters->keys, kvs_store_count(rq->store));
  return rc;
}

void kvs_request_ctx_destroy(kvs_request_ctx_t *rq) {
  if (rq->snap) kvs_snap_abort(rq->snap);
  if (rq->wal) {
    /* Finish what is in flight, then answer everything that became durable. */
    uint64_t appended = kvs_wal_last_lsn(rq->wal);
    int rc = rq->log_failed ? rq->log_failed : kvs_wal_sync(rq->wal);
    if (rc == 0) {
      rq->durable_lsn = appended;
      if (rq->replies) kvs__send_ready(rq);
    }
    kvs_wal_close(rq->wal);
  }
  kvs_cork_release_all(&rq->cork); /* the last replies leave at once */
  kvs_ack_destroy(&rq->acks);
  kvs_request_subs_destroy(rq);
  sq_zmq_cache_destroy(rq->replies);
  kvs_store_destroy(rq->store);
  sq_arena_destroy(&rq->arena);
  memset(rq, 0, sizeof(*rq));
}
