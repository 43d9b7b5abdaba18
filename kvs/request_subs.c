/* kvs_request (subscriptions part): cache key sets between workers, and pushes of
 * changed values to the caches holding them (see subs.h for the protocol).
 *
 * The worker owning `ANNA_METADATA|cache_ip|<id>` learns a cache's key set when the
 * cache PUTs it; it forwards the merged value to every worker (itself included) as
 * one inproc frame [u16 id length][id][LWW payload]. Each worker keeps the keys it
 * owns. A push is queued in the ack FIFO behind the write that caused it, so a cache
 * never sees a value a crash could take back.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "anna.pb-c.h"
#include "kvs_request.h"
#include "shared.pb-c.h"
#include "sq_error.h"
#include "sq_proto.h"
#include "sq_time.h"

#define KVS__SUBS_TTL_MS 15000
#define KVS__SUBS_MAX_FRAME (64u << 20)

static void kvs__subs_endpoint(char *buf, size_t cap, uint32_t tid) {
  snprintf(buf, cap, "inproc://kvs-subs-%u", tid);
}

int kvs_request_subs_init(kvs_request_ctx_t *rq) {
  const kvs_config_t *cfg = rq->params->config;
  uint32_t threads = kvs_placement_threads(rq->params->placement);
  int rc = kvs_subs_create((uint32_t)(7150 + cfg->port_offset), &rq->subs);
  if (rc) return rc;
  rq->subs_out = calloc(threads, sizeof(void *));
  rq->subs_in = zmq_socket(rq->params->zmq_context, ZMQ_PULL);
  if (!rq->subs_out || !rq->subs_in) return -ENOMEM;
  char endpoint[64];
  kvs__subs_endpoint(endpoint, sizeof(endpoint), rq->params->tid);
  if (zmq_bind(rq->subs_in, endpoint) != 0) return -errno;
  return 0;
}

void kvs_request_subs_destroy(kvs_request_ctx_t *rq) {
  uint32_t threads = rq->params ? kvs_placement_threads(rq->params->placement) : 0;
  for (uint32_t t = 0; rq->subs_out && t < threads; t++)
    if (rq->subs_out[t]) zmq_close(rq->subs_out[t]);
  free(rq->subs_out);
  if (rq->subs_in) zmq_close(rq->subs_in);
  kvs_subs_destroy(rq->subs);
}

/* Applies one announced key set: keeps the keys this worker owns. */
static void kvs__subs_apply(kvs_request_ctx_t *rq, const char *id, size_t id_len,
                            const uint8_t *payload, size_t len) {
  sq_lattice_t lww = {0};
  StringSet *set = NULL;
  const char **keys = NULL;
  size_t *lens = NULL, n = 0;
  if (sq_lattice_decode(SQ_LATTICE_LWW, payload, len, &lww) != 0) goto bad;
  if (sq_proto_unpack(&string_set__descriptor, NULL, lww.u.lww.value.data,
                      lww.u.lww.value.len, KVS__SUBS_MAX_FRAME, (ProtobufCMessage **)&set))
    goto bad;
  keys = calloc(set->n_keys + 1, sizeof(*keys));
  lens = calloc(set->n_keys + 1, sizeof(*lens));
  if (!keys || !lens) goto out;
  for (size_t i = 0; i < set->n_keys; i++) {
    size_t kl = strlen(set->keys[i]);
    if (kl && kvs_placement_owner(rq->params->placement, set->keys[i], kl) == rq->params->tid) {
      keys[n] = set->keys[i];
      lens[n++] = kl;
    }
  }
  int rc = kvs_subs_update(rq->subs, id, id_len, keys, lens, n, sq_now_ms());
  if (rc)
    sq_log_warn(rq->params->log, "cache '%.*s' key set not recorded: %s", (int)id_len, id,
                sq_strerror(rc));
  goto out;
bad:
  sq_log_warn(rq->params->log, "cache '%.*s' announced a key set that is not an LWW "
              "StringSet; ignored", (int)id_len, id);
out:
  if (set) string_set__free_unpacked(set, NULL);
  sq_lattice_free(&lww);
  free(keys);
  free(lens);
}

void kvs_request_announce(kvs_request_ctx_t *rq, const char *key, size_t keylen) {
  size_t prefix = strlen(KVS_SUBS_PREFIX);
  if (keylen <= prefix || keylen - prefix > 0xffff) return;
  kvs_store_entry_t e;
  if (kvs_store_get(rq->store, key, keylen, &e) != 0 || e.type != SQ_LATTICE_LWW) return;
  size_t id_len = keylen - prefix;
  size_t frame_len = 2 + id_len + e.len;
  uint32_t threads = kvs_placement_threads(rq->params->placement);
  for (uint32_t t = 0; t < threads; t++) {
    if (t == rq->params->tid) {
      kvs__subs_apply(rq, key + prefix, id_len, e.payload, e.len);
      continue;
    }
    if (!rq->subs_out[t]) {
      char endpoint[64];
      kvs__subs_endpoint(endpoint, sizeof(endpoint), t);
      void *sock = zmq_socket(rq->params->zmq_context, ZMQ_PUSH);
      if (sock && zmq_connect(sock, endpoint) != 0) {
        zmq_close(sock); /* not kept: an unconnected socket would eat every later set */
        sock = NULL;
      }
      if (!sock) continue;
      rq->subs_out[t] = sock;
    }
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, frame_len) != 0) continue;
    uint8_t *p = zmq_msg_data(&msg);
    p[0] = (uint8_t)(id_len >> 8);
    p[1] = (uint8_t)id_len;
    memcpy(p + 2, key + prefix, id_len);
    memcpy(p + 2 + id_len, e.payload, e.len);
    if (zmq_msg_send(&msg, rq->subs_out[t], ZMQ_DONTWAIT) < 0) zmq_msg_close(&msg);
  }
}

int kvs_request_subs_receive(kvs_request_ctx_t *rq) {
  int i = 0;
  for (; i < KVS_REQUEST_SUBS_BATCH; i++) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, rq->subs_in, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&msg);
      break;
    }
    const uint8_t *p = zmq_msg_data(&msg);
    size_t len = zmq_msg_size(&msg);
    size_t id_len = len >= 2 ? ((size_t)p[0] << 8 | p[1]) : 0;
    if (len >= 2 && id_len && 2 + id_len <= len)
      kvs__subs_apply(rq, (const char *)p + 2, id_len, p + 2 + id_len, len - 2 - id_len);
    zmq_msg_close(&msg);
  }
  uint64_t now = sq_now_ms();
  if (now >= rq->next_expiry_ms) {
    size_t dropped = kvs_subs_expire(rq->subs, now, KVS__SUBS_TTL_MS);
    if (dropped)
      sq_log_info(rq->params->log, "forgot %zu cache(s) that stopped announcing their keys",
                  dropped);
    rq->next_expiry_ms = now + 1000;
  }
  return i;
}

void kvs_request_push_update(kvs_request_ctx_t *rq, const char *key, size_t keylen,
                             uint64_t lsn) {
  const char *endpoints[KVS_SUBS_MAX_CACHES];
  size_t n = kvs_subs_lookup(rq->subs, key, keylen, endpoints, KVS_SUBS_MAX_CACHES);
  kvs_store_entry_t e;
  if (n == 0 || kvs_store_get(rq->store, key, keylen, &e) != 0) return;
  KeyTuple tuple = KEY_TUPLE__INIT;
  KeyTuple *tuples[1] = {&tuple};
  tuple.key = (char *)key; /* NUL-terminated: it comes from a decoded request */
  tuple.lattice_type = (LatticeType)e.type;
  tuple.payload.data = (uint8_t *)e.payload;
  tuple.payload.len = e.len;
  KeyRequest push = KEY_REQUEST__INIT;
  push.type = REQUEST_TYPE__PUT;
  push.n_tuples = 1;
  push.tuples = tuples;
  size_t size = key_request__get_packed_size(&push);
  const uint8_t *first = NULL; /* packed once into the first queue entry, copied after */
  for (size_t i = 0; i < n; i++) {
    uint8_t *dst = kvs_ack_reserve(&rq->acks, lsn, endpoints[i], strlen(endpoints[i]), size);
    if (!dst) {
      atomic_fetch_add_explicit(&rq->counters->send_drops, 1, memory_order_relaxed);
      continue;
    }
    if (first) memcpy(dst, first, size);
    else key_request__pack(&push, dst);
    first = dst;
  }
}
