/* sched_status: executor liveness (PULL 5007), peer schedulers (PULL 5008) and the
 * periodic work, none of which may block the loop.
 *
 * Every loop: the calls of executors lost during a pin wait are re-sent
 * (sched__lost_flush), calls parked because no executor was live are re-sent or failed
 * (sched__pending_tick, sched_retry.c).
 * Every refresh_ms:
 *   - executors silent past --executor-deadline-ms are dropped; their recent calls are
 *     re-sent (sched_retry.c);
 *   - ONE asynchronous batch GET of ANNA_METADATA|cache_ip|<ip> for every executor IP
 *     (the caches' key reports, LWW StringSet) updates locality when it completes; a
 *     dead KVS only means the answer never comes (the client times it out);
 *   - ONE asynchronous batch GET of every known DAG's key: a DAG whose key reads as
 *     KEY_DNE (a tombstone written by a delete anywhere) is forgotten here too;
 *   - SchedulerStatus {our DAG names, our function locations} is PUSHed to each peer's
 *     5008+offset.
 * A SchedulerStatus naming a DAG we do not know starts an asynchronous fetch of it.
 * Function locations are taken only from executors' own statuses (which every
 * scheduler receives), never from peers: a peer's list can be stale (§5 item 23).
 */
#include "sched_int.h"

#include <stdlib.h>
#include <string.h>

#include "lattice.h"
#include "sched_dag.h"
#include "sq_error.h"
#include "sq_proto.h"

#define SCHED_LOCALITY_PREFIX "ANNA_METADATA|cache_ip|"

void sched__on_status(sched_t *s, const uint8_t *b, size_t n) {
  ThreadStatus *st = NULL;
  if (sq_proto_unpack(&thread_status__descriptor, NULL, b, n, 1 << 20,
                      (ProtobufCMessage **)&st) != 0)
    return;
  bool dropped = false;
  int rc = sched_policy_status(s->policy, st, sq_now_ms(), &dropped);
  if (rc) sq_log_warn(s->log, "status from %.64s:%u ignored: %s", st->ip, st->tid,
                      sq_strerror(rc));
  if (dropped) {
    sched_exec_id_t ex = {.tid = st->tid};
    snprintf(ex.ip, sizeof ex.ip, "%s", st->ip);
    sq_log_info(s->log, "executor %s:%u departed", ex.ip, ex.tid);
    sched__executor_lost(s, &ex, sq_now_ms());
  }
  thread_status__free_unpacked(st, NULL);
}

static int sched__async_slot(sched_t *s) {
  for (int i = 0; i < SCHED_MAX_ASYNC; i++)
    if (s->asyncs[i].kind == SCHED_A_NONE) return i;
  return -1;
}

/* Starts one asynchronous GET of keys for kind. */
static void sched__async_get(sched_t *s, sched_akind_t kind, const char *const *keys,
                             size_t n) {
  int slot = sched__async_slot(s);
  if (slot < 0 || n == 0) return;
  uint64_t id;
  if (kvs_client_get_async(s->kvs, keys, n, &s->kvs_lim, &id) != 0) return;
  s->asyncs[slot].id = id;
  s->asyncs[slot].kind = kind;
}

void sched__on_peer(sched_t *s, const uint8_t *b, size_t n) {
  SchedulerStatus *st = NULL;
  if (sq_proto_unpack(&scheduler_status__descriptor, NULL, b, n, s->cfg->max_message_bytes,
                      (ProtobufCMessage **)&st) != 0)
    return;
  const char *want[16];
  size_t nw = 0;
  for (size_t i = 0; i < st->n_dags && nw < 16; i++)
    if (st->dags[i][0] && strlen(st->dags[i]) <= SCHED_DAG_NAME_MAX &&
        !sched__dag_find(s, st->dags[i]))
      want[nw++] = st->dags[i];
  sched__async_get(s, SCHED_A_DAG_FETCH, want, nw);
  scheduler_status__free_unpacked(st, NULL);
}

static void sched__adopt_dag(sched_t *s, const char *key, const kvs_client_result_t *r) {
  uint8_t *v = NULL;
  size_t len = 0;
  Dag *dag = NULL;
  int code;
  if (r->err || r->type != SQ_LATTICE_LWW || sched__lww_value(r->payload, r->len, &v, &len))
    goto out;
  if (sq_proto_unpack(&dag__descriptor, NULL, v, len, s->cfg->max_message_bytes,
                      (ProtobufCMessage **)&dag) != 0)
    goto out;
  if (strcmp(dag->name, key) != 0 || sched__dag_find(s, key) ||
      sched_dag_validate(dag, NULL, NULL, &code, NULL, 0) != 0 || sched__dag_add(s, dag) != 0)
    goto out;
  sq_log_info(s->log, "learned DAG %s from a peer", key);
  dag = NULL;
out:
  if (dag) dag__free_unpacked(dag, NULL);
  free(v);
}

static void sched__check_dag(sched_t *s, const char *key, const kvs_client_result_t *r) {
  bool gone = r->err == SQ_EKEYDNE;
  if (r->err == 0 && r->type == SQ_LATTICE_LWW) {
    uint8_t *v = NULL;
    size_t len = 0;
    gone = sched__lww_value(r->payload, r->len, &v, &len) == SQ_EKEYDNE;
    free(v);
  }
  if (gone && sched__dag_find(s, key)) {
    sq_log_info(s->log, "DAG %s was deleted (tombstone in the KVS): forgotten", key);
    sched__dag_remove(s, key);
  }
}

static void sched__locality(sched_t *s, const char *key, const kvs_client_result_t *r) {
  uint8_t *v = NULL;
  size_t len = 0;
  StringSet *set = NULL;
  const char *ip = key + strlen(SCHED_LOCALITY_PREFIX);
  if (r->err || r->type != SQ_LATTICE_LWW || sched__lww_value(r->payload, r->len, &v, &len))
    goto out;
  if (sq_proto_unpack(&string_set__descriptor, NULL, v, len, s->cfg->max_message_bytes,
                      (ProtobufCMessage **)&set) != 0)
    goto out;
  (void)sched_policy_cache_keys(s->policy, ip, (const char *const *)set->keys, set->n_keys);
out:
  if (set) string_set__free_unpacked(set, NULL);
  free(v);
}

static void sched__on_kvs_done(void *arg, const kvs_client_completion_t *done) {
  sched_t *s = arg;
  sched_akind_t kind = SCHED_A_NONE;
  if (sched__errwrite_done(s, done)) return;
  for (int i = 0; i < SCHED_MAX_ASYNC; i++) {
    if (s->asyncs[i].kind == SCHED_A_NONE || s->asyncs[i].id != done->id) continue;
    kind = s->asyncs[i].kind;
    s->asyncs[i].kind = SCHED_A_NONE;
    break;
  }
  for (size_t i = 0; i < done->n; i++) {
    if (kind == SCHED_A_LOCALITY) sched__locality(s, done->keys[i], &done->results[i]);
    else if (kind == SCHED_A_DAG_FETCH) sched__adopt_dag(s, done->keys[i], &done->results[i]);
    else if (kind == SCHED_A_DAG_CHECK) sched__check_dag(s, done->keys[i], &done->results[i]);
  }
}

void sched__kvs_poll(sched_t *s) { (void)kvs_client_poll(s->kvs, 0, sched__on_kvs_done, s); }

static bool sched__kind_pending(const sched_t *s, sched_akind_t kind) {
  for (int i = 0; i < SCHED_MAX_ASYNC; i++)
    if (s->asyncs[i].kind == kind) return true;
  return false;
}

static void sched__refresh_locality(sched_t *s) {
  const char *ips[256];
  char keys[256][SCHED_IP_MAX + 32];
  const char *kp[256];
  if (sched__kind_pending(s, SCHED_A_LOCALITY)) return;
  size_t n = sched_policy_ips(s->policy, ips, 256);
  if (n > 256) n = 256;
  for (size_t i = 0; i < n; i++) {
    snprintf(keys[i], sizeof keys[i], SCHED_LOCALITY_PREFIX "%s", ips[i]);
    kp[i] = keys[i];
  }
  sched__async_get(s, SCHED_A_LOCALITY, kp, n);
}

static void sched__refresh_dags(sched_t *s) {
  if (sched__kind_pending(s, SCHED_A_DAG_CHECK) || s->ndags == 0) return;
  const char **names = calloc(s->ndags, sizeof(char *));
  if (!names) return;
  for (size_t i = 0; i < s->ndags; i++) names[i] = s->dags[i].name;
  sched__async_get(s, SCHED_A_DAG_CHECK, names, s->ndags);
  free(names);
}

static void sched__gossip(sched_t *s) {
  if (s->npeers == 0) return;
  SchedulerStatus st = SCHEDULER_STATUS__INIT;
  char **names = calloc(s->ndags ? s->ndags : 1, sizeof(char *));
  if (!names) return;
  for (size_t i = 0; i < s->ndags; i++) names[i] = s->dags[i].name;
  st.n_dags = s->ndags;
  st.dags = names;
  for (size_t i = 0; i < s->npeers; i++) {
    char ep[SQ_ZMQ_ENDPOINT_MAX];
    if (sq_zmq_endpoint_tcp(ep, sizeof ep, s->peers[i],
                            (unsigned)(5008 + s->cfg->port_offset)) == 0)
      (void)sq_zmq_cache_send_pb(s->push, ep, &st.base);
  }
  free(names);
}

void sched__tick(sched_t *s, uint64_t now_ms) {
  sched_exec_id_t gone[64];
  sched__lost_flush(s, now_ms);
  size_t n = sched_policy_expire(s->policy, now_ms, gone, 64);
  for (size_t i = 0; i < n && i < 64; i++) {
    sq_log_warn(s->log, "executor %s:%u silent for %ld ms: dropped", gone[i].ip, gone[i].tid,
                (long)s->cfg->executor_deadline_ms);
    sched__executor_lost(s, &gone[i], now_ms);
  }
  sched__pending_tick(s, now_ms);
  if (now_ms < s->next_refresh_ms) return;
  sq_zmq_cache_expire(s->push); /* sockets to departed clients and executors */
  s->next_refresh_ms = now_ms + (uint64_t)s->cfg->refresh_ms;
  sched__refresh_locality(s);
  sched__refresh_dags(s);
  sched__gossip(s);
}
