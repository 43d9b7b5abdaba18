/* ext_cache_lease: leased misses of CacheClient (contract in ext_cache_lease.h).
 *
 * The hand-over moves the KVS client's malloc'd payload into a ZeroMQ message
 * (zmq_msg_init_data, freed by ZeroMQ once sent): the only copy of the value on this
 * path is the one into the caller's bytes object, as for a direct KVS get.
 */
#include "ext_cache_lease.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "cache_uds.h"
#include "sq_error.h"
#include "sq_time.h"
#include "sq_zmq.h"

#define EXT__LEASE_RETRY_MS 1000   /* a missing table or routing file: look again after */
#define EXT__LEASE_MAX_ROUTING 16

/* Makes the KVS client from <dir>/kvs-routing, replying on <dir>/reply-host's host
 * (else loopback). 0 or an error; *out is the caller's on 0. */
static int ext__lease_kvs(void *zctx, const char *dir, kvs_client_t **out) {
  char list[CACHE_UDS_ROUTING_MAX + 1], host[CACHE_UDS_HOST_MAX + 1], bind[SQ_ZMQ_ENDPOINT_MAX];
  const char *routing[EXT__LEASE_MAX_ROUTING];
  size_t n = 0;
  int rc = cache_uds_routing(dir, list, sizeof list);
  if (rc) return rc;
  for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save))
    if (tok[0] && n < EXT__LEASE_MAX_ROUTING) routing[n++] = tok;
  if (cache_uds_reply_host(dir, host, sizeof host) != 0 ||
      snprintf(bind, sizeof bind, "tcp://%s:*", host) >= (int)sizeof bind)
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:*");
  kvs_client_options_t o = {.zmq_context = zctx, .routing = routing, .nrouting = n,
                            .bind = bind};
  return n ? kvs_client_create(&o, out) : SQ_EINVAL;
}

/* True when the table and the KVS client are open (opening them if it is time). */
static bool ext__lease_ready(ext_cc_lease_t *l, void *zctx, const char *dir) {
  if (l->table && l->kvs && l->reader) return true;
  if ((int64_t)sq_now_ms() < l->retry_ms) return false;
  if (!l->table && cache_lease_open(dir, false, &l->table) != 0) l->table = NULL;
  if (l->table && !l->reader && cache_reader_open(dir, &l->reader) != 0) l->reader = NULL;
  if (l->reader && !l->kvs && ext__lease_kvs(zctx, dir, &l->kvs) != 0) l->kvs = NULL;
  if (!l->table || !l->reader || !l->kvs)
    l->retry_ms = (int64_t)sq_now_ms() + EXT__LEASE_RETRY_MS;
  return l->table && l->reader && l->kvs;
}

void ext_cc_lease_get(ext_cc_lease_t *l, void *zctx, const char *dir, const char *key,
                      int timeout_ms, ext_cc_leased_t *out) {
  size_t klen = strlen(key);
  uint32_t token = 0;
  *out = (ext_cc_leased_t){0};
  if (!ext__lease_ready(l, zctx, dir) || cache_lease_is_large(l->table, key, klen)) return;
  cache_lease_claim_t claim = cache_lease_claim(l->table, key, klen, timeout_ms, &token);
  if (claim == CACHE_LEASE_WAIT) (void)cache_lease_wait(l->table, key, klen, token, timeout_ms);
  if (claim != CACHE_LEASE_MINE) return; /* now ask the daemon */
  if (cache_reader_contains(l->reader, key, klen)) { /* stored since the caller looked */
    (void)cache_lease_release(l->table, key, klen, token);
    return;
  }
  /* One attempt: on a timeout the daemon, with its retries, takes over the miss (its
   * own bound then applies), rather than this read's retries doubling the wait. */
  kvs_client_limits_t lim = {.timeout_ms = timeout_ms, .retries = 0};
  uint8_t *payload = NULL;
  size_t len = 0;
  sq_lattice_type_t type = SQ_LATTICE_NONE;
  int rc = kvs_client_get(l->kvs, key, &lim, &type, &payload, &len);
  if (rc == 0 && len > 0) {
    *out = (ext_cc_leased_t){.done = true, .found = true, .token = token, .type = type,
                             .payload = payload, .len = len};
    return;
  }
  free(payload);
  (void)cache_lease_release(l->table, key, klen, token);
  if (rc == 0 || rc == SQ_EKEYDNE) out->done = true; /* KEY_DNE: nothing to store */
}

static void ext__lease_free(void *data, void *hint) {
  (void)hint;
  free(data);
}

int ext_cc_lease_hand_over(ext_cc_lease_t *l, void *get_sock, const char *key,
                           ext_cc_leased_t *v) {
  size_t klen = strlen(key);
  uint8_t head[10 + CACHE_LEASE_KEY_MAX];
  zmq_msg_t msg;
  int rc = get_sock ? SQ_EINVAL : SQ_ECLOSED;
  if (!get_sock || klen == 0 || klen > CACHE_LEASE_KEY_MAX) goto out;
  head[0] = 0;
  head[1] = CACHE_UDS_LEASE_FILL;
  for (int i = 0; i < 4; i++) {
    head[2 + i] = (uint8_t)(v->token >> (8 * i));
    head[6 + i] = (uint8_t)((uint32_t)v->type >> (8 * i));
  }
  memcpy(head + 10, key, klen);
  rc = zmq_msg_init_data(&msg, v->payload, v->len, ext__lease_free, NULL) ? -zmq_errno() : 0;
  if (rc) goto out;
  v->payload = NULL; /* the message owns it now */
  if (zmq_send(get_sock, head, 10 + klen, ZMQ_SNDMORE | ZMQ_DONTWAIT) != (int)(10 + klen))
    rc = -zmq_errno();
  else if (zmq_msg_send(&msg, get_sock, ZMQ_DONTWAIT) < 0) {
    rc = -zmq_errno();
    (void)zmq_send(get_sock, "", 0, ZMQ_DONTWAIT); /* ends the message: refused */
  }
  zmq_msg_close(&msg); /* after a send: no-op; else frees the payload */
out:
  free(v->payload);
  v->payload = NULL;
  if (rc && l->table) (void)cache_lease_release(l->table, key, klen, v->token);
  return rc;
}

bool ext_cc_lease_settle(ext_cc_lease_t *l, const char *key, uint32_t token, int timeout_ms) {
  size_t klen = strlen(key);
  if (!l->table || !l->reader) return false;
  (void)cache_lease_wait(l->table, key, klen, token, timeout_ms);
  return cache_lease_release(l->table, key, klen, token) != 0 && /* the daemon did */
         cache_reader_contains(l->reader, key, klen);
}

void ext_cc_lease_close(ext_cc_lease_t *l) {
  kvs_client_destroy(l->kvs);
  cache_lease_close(l->table);
  cache_reader_close(l->reader);
  l->kvs = NULL;
  l->table = NULL;
  l->reader = NULL;
}
