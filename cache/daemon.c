/* daemon: setup, event loop, timers, key-set reports and counters of squall-cache.
 * The behaviour is described in daemon.h; request handling is daemon_requests.c.
 *
 * Loop (one thread):
 *   zmq_poll(get, put, update, kvs replies, signalfd; timeout = next timer)
 *   -> drain each socket (bounded per round, so no source starves the others)
 *   -> unix-socket connections (daemon_uds.c): accept, GETs
 *   -> kvs_client_poll(0): completions -> answers, merges, key-set acks
 *   -> stores deferred by the previous turn (daemon_defer.c; an idle loop wakes
 *      after CACHE_DEFER_IDLE_MS for them)
 *   -> timers: reader check (1 s), key-set report (daemon_keyset.h), counters
 * Start: open store (validates what a previous daemon left) -> clear stale readers ->
 * KVS client -> bind sockets -> refetch cached keys -> first key-set report.
 */
#include "daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cache_uds.h"
#include "daemon_int.h"
#include "sq_error.h"
#include "sq_proto.h"
#include "sq_time.h"

#define CACHE_DRAIN_BATCH 256
#define CACHE_READER_CHECK_MS 1000
#define CACHE_STOP_GRACE_MS 2000
#define CACHE_MAX_ROUTING 16
#define CACHE_PATH_MAX_DAEMON 4096

void cache_daemon_block_signals(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int cache_daemon_dir(const cache_daemon_config_t *cfg, char *buf, size_t cap) {
  int n;
  if (cfg->dir && cfg->dir[0]) {
    n = snprintf(buf, cap, "%s", cfg->dir);
  } else {
    char host[256] = "node";
    const char *node = cfg->node && cfg->node[0] ? cfg->node : NULL;
    if (!node && gethostname(host, sizeof(host) - 1) == 0) host[sizeof(host) - 1] = '\0';
    n = snprintf(buf, cap, "/dev/shm/squall-%s-%s",
                 cfg->cluster && cfg->cluster[0] ? cfg->cluster : "default",
                 node ? node : host);
  }
  return (n < 0 || (size_t)n >= cap) ? SQ_ETOOBIG : 0;
}

void cache__note_store(cache__daemon_t *d) {
  cache_store_stats_t st;
  cache_store_stats(d->store, &st);
  if (st.values != d->seen_values || st.evictions != d->seen_evictions)
    cache_keyset_mark(&d->keyset);
  d->seen_values = st.values;
  d->seen_evictions = st.evictions;
}

static void cache__log_counters(cache__daemon_t *d, const char *when) {
  cache_store_stats_t st;
  cache_store_stats(d->store, &st);
  const cache_daemon_counters_t *c = &d->c;
  sq_log_info(d->log,
              "%s: hits=%" PRIu64 " misses=%" PRIu64 " coalesced=%" PRIu64 " fetches=%" PRIu64
              " puts=%" PRIu64 " put_errors=%" PRIu64 " updates=%" PRIu64
              " updates_ignored=%" PRIu64 " touches=%" PRIu64 " bad_requests=%" PRIu64
              " reply_drops=%" PRIu64 " evictions=%" PRIu64 " values=%" PRIu64
              " bytes=%" PRIu64 " budget=%" PRIu64 " stale_readers=%" PRIu64
              " keyset_reports=%" PRIu64 " inline_replies=%" PRIu64 " refetches=%" PRIu64
              " direct=%" PRIu64 " fills=%" PRIu64 " lease_fills=%" PRIu64
              " accept_pauses=%" PRIu64,
              when, c->hits, c->misses, c->coalesced, c->fetches, c->puts, c->put_errors,
              c->updates, c->updates_ignored, c->touches, c->bad_requests, c->reply_drops,
              st.evictions, st.values, st.bytes, st.budget, st.stale_readers,
              d->keyset.reports, c->inline_replies, c->refetches,
              c->direct, c->fills, c->lease_fills, c->accept_pauses);
}

/* The keys of the store, copied (foreach_key's pointers die with its txn). */
typedef struct {
  sq_buf_t bytes;
  size_t *offs, *lens;
  size_t n, cap;
} cache__keylist_t;

static int cache__collect_key(void *arg, const void *key, size_t klen) {
  cache__keylist_t *kl = arg;
  if (kl->n == kl->cap) {
    size_t cap = kl->cap ? kl->cap * 2 : 64;
    size_t *o = realloc(kl->offs, cap * sizeof(*o));
    if (o) kl->offs = o;
    size_t *l = realloc(kl->lens, cap * sizeof(*l));
    if (l) kl->lens = l;
    if (!o || !l) return -ENOMEM;
    kl->cap = cap;
  }
  kl->offs[kl->n] = kl->bytes.len;
  kl->lens[kl->n] = klen;
  int rc = sq_buf_append(&kl->bytes, key, klen);
  if (rc == 0) kl->n++;
  return rc;
}

static void cache__keylist_free(cache__keylist_t *kl) {
  sq_buf_free(&kl->bytes);
  free(kl->offs);
  free(kl->lens);
}

/* Starts a key-set PUT with the keys held now. */
static void cache__report_keyset(cache__daemon_t *d, int64_t now) {
  cache__keylist_t kl = {0};
  sq_buf_t payload = {0};
  uint64_t id = 0;
  const char **keys = NULL;
  cache__defer_flush(d, true); /* so the report lists every key fetched so far */
  int rc = cache_store_foreach_key(d->store, cache__collect_key, &kl);
  if (rc == 0 && !(keys = calloc(kl.n ? kl.n : 1, sizeof(*keys)))) rc = -ENOMEM;
  for (size_t i = 0; rc == 0 && i < kl.n; i++)
    keys[i] = (const char *)kl.bytes.data + kl.offs[i];
  if (rc == 0)
    rc = cache_keyset_encode(keys, kl.lens, kl.n, sq_lww_timestamp(0, &d->ts_last),
                             &payload);
  if (rc == 0) {
    kvs_client_kv_t kv = {.key = d->keyset_key, .type = SQ_LATTICE_LWW,
                          .payload = payload.data, .len = payload.len};
    rc = kvs_client_put_async(d->kvs, &kv, 1, NULL, &id);
  }
  cache_keyset_started(&d->keyset, now);
  if (rc == 0) {
    d->keyset_call = id;
    cache__window_started(d);
    sq_log_debug(d->log, "key-set report: %zu keys", kl.n);
  } else {
    cache_keyset_done(&d->keyset, rc);
    sq_log_warn(d->log, "cannot report the key set: %s", sq_strerror(rc));
  }
  free(keys);
  cache__keylist_free(&kl);
  sq_buf_free(&payload);
}

/* Splits the comma-separated routing endpoints into d's KVS client options. */
static int cache__open_kvs(cache__daemon_t *d, char *list, char *why, size_t cap) {
  const char *routing[CACHE_MAX_ROUTING];
  size_t n = 0;
  for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save))
    if (tok[0] && n < CACHE_MAX_ROUTING) routing[n++] = tok;
  if (n == 0) {
    snprintf(why, cap, "--kvs names no routing endpoint");
    return SQ_ECONFIG;
  }
  char bind[SQ_ZMQ_ENDPOINT_MAX];
  snprintf(bind, sizeof(bind), "tcp://%s:*", d->cfg->bind);
  kvs_client_options_t o = {
      .zmq_context = d->zctx, .routing = routing, .nrouting = n, .bind = bind,
      .advertise = d->cfg->public_ip, .timeout_ms = (int)d->cfg->kvs_timeout_ms,
      .retries = (int)d->cfg->kvs_retries,
      .max_message_bytes = (int64_t)d->cfg->max_request_bytes};
  int rc = kvs_client_create(&o, &d->kvs);
  if (rc) snprintf(why, cap, "cannot start the KVS client: %s", sq_strerror(rc));
  return rc;
}

static int cache__bind(cache__daemon_t *d, const char *dir, char *why, size_t cap) {
  char ep[SQ_ZMQ_ENDPOINT_MAX];
  int64_t max = (int64_t)d->cfg->max_request_bytes;
  static const char *const names[2] = {"requests-get", "requests-put"};
  void **socks[2] = {&d->get_sock, &d->put_sock};
  int rc = 0;
  for (int i = 0; i < 2 && rc == 0; i++) {
    int n = snprintf(ep, sizeof(ep), "ipc://%s/%s", dir, names[i]);
    if (n < 0 || (size_t)n >= sizeof(ep)) {
      snprintf(why, cap, "cache directory name too long for an ipc endpoint");
      return SQ_ETOOBIG;
    }
    rc = sq_zmq_pull_bind(d->zctx, ep, max, 0, why, cap, socks[i]);
  }
  if (rc) return rc;
  rc = sq_zmq_endpoint_tcp(ep, sizeof(ep), d->cfg->bind,
                           (unsigned)(CACHE_UPDATE_PORT + d->cfg->port_offset));
  if (rc == 0) rc = sq_zmq_pull_bind(d->zctx, ep, max, 0, why, cap, &d->upd_sock);
  return rc;
}

static int cache__start(cache__daemon_t *d, char *why, size_t cap) {
  char dir[CACHE_PATH_MAX_DAEMON];
  int rc = cache_daemon_dir(d->cfg, dir, sizeof(dir));
  if (rc) return snprintf(why, cap, "cache directory name too long"), rc;
  cache_store_config_t sc = {.dir = dir, .budget_bytes = d->cfg->budget,
                             .inline_max = (size_t)d->cfg->inline_max,
                             .discard = d->cfg->discard};
  rc = cache_store_open(&sc, &d->store);
  if (rc) {
    snprintf(why, cap, "cannot open cache %.300s: %.150s", dir, sq_strerror(rc));
    return rc;
  }
  cache_store_check_readers(d->store, NULL);
  cache_store_defer_unlinks(d->store, true); /* flushed at the end of each loop turn */
  cache__note_store(d);
  char *list = strdup(d->cfg->kvs);
  if (!list) return -ENOMEM;
  rc = cache__open_kvs(d, list, why, cap);
  free(list);
  if (rc == 0) rc = sq_zmq_cache_create(d->zctx, NULL, &d->replies);
  if (rc == 0) rc = cache_fetch_table_create(0, &d->fetches);
  if (rc == 0) rc = cache__bind(d, dir, why, cap);
  if (rc == 0 && cache__uds_open(d, dir, why, cap) != 0) { /* executors use ZeroMQ then */
    sq_log_warn(d->log, "no unix socket for executors (%s): misses go over ZeroMQ", why);
    why[0] = '\0';
  }
  int lrc = rc == 0 ? cache_lease_open(dir, true, &d->leases) : 0;
  if (lrc) /* executors then miss through the daemon */
    sq_log_warn(d->log, "no lease table in %s: %s", dir, sq_strerror(lrc));
  if (rc == 0) rc = cache_keyset_key(d->keyset_key, sizeof(d->keyset_key), d->cfg->public_ip,
                                     (unsigned)(CACHE_UPDATE_PORT + d->cfg->port_offset));
  if (rc == 0) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    d->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (d->sigfd < 0) rc = -errno;
  }
  if (rc == 0)
    sq_log_info(d->log, "serving cache %s: ipc://%s/requests-{get,put}, %s/requests.sock, "
                "updates on port %" PRId64 ", key set %s, KVS %s", dir, dir, dir,
                CACHE_UPDATE_PORT + d->cfg->port_offset,
                d->keyset_key, d->cfg->kvs);
  return rc;
}

/* Receives one message from sock: a KeyRequest into *req (0), or, on requests-get
 * only, a FILL from an executor too large for its unix socket (cache_uds.h: two
 * frames, u8 0 u8 'F' then the KVS's KeyResponse) or a lease FILL (u8 0 u8 'L' +
 * token, type, key; then the payload), handled here (1). -EAGAIN, or an error for a
 * message that was none of these (dropped). */
static int cache__recv(cache__daemon_t *d, void *sock, int kind, KeyRequest **req) {
  zmq_msg_t f[2];
  zmq_msg_init(&f[0]);
  zmq_msg_init(&f[1]);
  int rc = -EAGAIN, nf = 0;
  while (nf < 2 && zmq_msg_recv(&f[nf], sock, ZMQ_DONTWAIT) >= 0) {
    nf++;
    if (!zmq_msg_more(&f[nf - 1])) break;
  }
  if (nf == 0) {
    rc = zmq_errno() == EAGAIN ? -EAGAIN : -zmq_errno();
    goto out;
  }
  const uint8_t *head = zmq_msg_data(&f[0]);
  bool fill = kind == 0 && nf == 2 && !zmq_msg_more(&f[1]) && zmq_msg_size(&f[0]) == 2 &&
              head[0] == 0 && head[1] == CACHE_UDS_FILL;
  bool lease = kind == 0 && nf == 2 && !zmq_msg_more(&f[1]) && zmq_msg_size(&f[0]) > 2 &&
               head[0] == 0 && head[1] == CACHE_UDS_LEASE_FILL;
  while (nf == 2 && zmq_msg_more(&f[1]) && zmq_msg_recv(&f[1], sock, ZMQ_DONTWAIT) >= 0) {
  } /* a stranger's extra frames: consumed, refused below */
  if (lease) {
    cache__handle_lease_fill(d, head + 2, zmq_msg_size(&f[0]) - 2, zmq_msg_data(&f[1]),
                             zmq_msg_size(&f[1]));
    rc = 1;
  } else if (fill) {
    cache__handle_fill(d, CACHE_UDS_FILL, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), 0);
    rc = 1;
  } else {
    rc = nf == 2 ? SQ_EPROTO
                 : sq_proto_unpack(&key_request__descriptor, NULL, zmq_msg_data(&f[0]),
                                   zmq_msg_size(&f[0]), d->cfg->max_request_bytes,
                                   (ProtobufCMessage **)req);
  }
out:
  zmq_msg_close(&f[0]);
  zmq_msg_close(&f[1]);
  return rc;
}

static void cache__drain(cache__daemon_t *d, void *sock, int kind) {
  for (int i = 0; i < CACHE_DRAIN_BATCH; i++) {
    KeyRequest *req = NULL;
    int rc = cache__recv(d, sock, kind, &req);
    if (rc == -EAGAIN) return;
    if (rc == 1) continue;
    if (rc) {
      d->c.bad_requests++;
      sq_log_warn(d->log, "undecodable message dropped: %s", sq_strerror(rc));
      continue;
    }
    if (kind == 0) cache__handle_get(d, req, 0);
    if (kind == 2) cache__handle_update(d, req);
    if (kind == 1) cache__handle_put(d, req); /* takes req */
    else key_request__free_unpacked(req, NULL);
  }
}

static void cache__read_signals(cache__daemon_t *d) {
  struct signalfd_siginfo si;
  while (read(d->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
    if (si.ssi_signo == SIGHUP) {
      cache__log_counters(d, "counters");
      continue;
    }
    sq_log_info(d->log, "received %s: stopping", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
    d->stop = true;
  }
}

/* Milliseconds the loop may sleep. */
static long cache__wait_ms(cache__daemon_t *d, int64_t now, int64_t next_check,
                           int64_t next_stats) {
  int64_t wait = next_check - now;
  int64_t k = cache_keyset_wait_ms(&d->keyset, now);
  if (k >= 0 && k < wait) wait = k;
  int t = kvs_client_next_timeout(d->kvs);
  if (t >= 0 && t < wait) wait = t;
  if (next_stats > 0 && next_stats - now < wait) wait = next_stats - now;
  if (d->deferred && wait > CACHE_DEFER_IDLE_MS) wait = CACHE_DEFER_IDLE_MS;
  if (d->uds_resume_ms > now && d->uds_resume_ms - now < wait) wait = d->uds_resume_ms - now;
  return wait > 0 ? (long)wait : 0;
}

static int cache__loop(cache__daemon_t *d) {
  int64_t every = d->cfg->stats_interval_s * 1000;
  int64_t now = (int64_t)sq_now_ms();
  int64_t next_check = now + CACHE_READER_CHECK_MS, next_stats = every > 0 ? now + every : 0;
  zmq_pollitem_t items[5 + CACHE_UDS_MAX_CONNS + 1];
  while (!d->stop) {
    items[0] = (zmq_pollitem_t){d->get_sock, 0, ZMQ_POLLIN, 0};
    items[1] = (zmq_pollitem_t){d->put_sock, 0, ZMQ_POLLIN, 0};
    items[2] = (zmq_pollitem_t){d->upd_sock, 0, ZMQ_POLLIN, 0};
    items[3] = (zmq_pollitem_t){kvs_client_socket(d->kvs), 0, ZMQ_POLLIN, 0};
    items[4] = (zmq_pollitem_t){NULL, d->sigfd, ZMQ_POLLIN, 0};
    size_t nu = cache__uds_items(d, items + 5, now);
    if (zmq_poll(items, (int)(5 + nu), cache__wait_ms(d, now, next_check, next_stats)) < 0 &&
        zmq_errno() != EINTR)
      return -zmq_errno();
    if (items[4].revents) cache__read_signals(d);
    cache__uds_serve(d, items + 5, nu);
    for (int k = 0; k < 3; k++)
      if (items[k].revents) cache__drain(d, items[k].socket, k);
    int rc = kvs_client_poll(d->kvs, 0, cache__on_kvs_done, d);
    if (rc < 0) return rc;
    cache__defer_flush(d, false); /* what the previous turn answered inline */
    cache_store_flush_unlinks(d->store); /* evicted segments: after this turn's answers */
    d->turn++;
    now = (int64_t)sq_now_ms();
    if (now >= next_check) {
      int dead = 0;
      cache_store_check_readers(d->store, &dead);
      if (dead) sq_log_info(d->log, "cleared %d reader slots of dead processes", dead);
      sq_zmq_cache_expire(d->replies); /* sockets to departed clients' addresses */
      next_check = now + CACHE_READER_CHECK_MS;
    }
    if (cache_keyset_due(&d->keyset, now)) cache__report_keyset(d, now);
    if (next_stats && now >= next_stats) {
      cache__log_counters(d, "counters");
      next_stats = now + every;
    }
  }
  return 0;
}

/* Gives in-flight writes a moment to be acknowledged (and answered) before exit. */
static void cache__finish_writes(cache__daemon_t *d) {
  int64_t end = (int64_t)sq_now_ms() + CACHE_STOP_GRACE_MS;
  while (d->puts && (int64_t)sq_now_ms() < end)
    if (kvs_client_poll(d->kvs, 100, cache__on_kvs_done, d) < 0) break;
}

int cache_daemon_run(const cache_daemon_config_t *cfg, sq_log_t *log) {
  cache__daemon_t d = {.cfg = cfg, .log = log, .sigfd = -1};
  cache__uds_init(&d);
  cache_keyset_init(&d.keyset, cfg->keyset_interval_ms, 0);
  char why[512] = "";
  int rc = (d.zctx = zmq_ctx_new()) ? 0 : -ENOMEM;
  if (rc == 0) rc = cache__start(&d, why, sizeof(why));
  if (rc) sq_log_error(log, "cannot start: %s", why[0] ? why : sq_strerror(rc));
  if (rc == 0) {
    cache__revalidate(&d);
    rc = cache__loop(&d);
    if (rc) sq_log_error(log, "stopped on error: %s", sq_strerror(rc));
    cache__defer_flush(&d, true);
    cache__finish_writes(&d);
    cache__log_counters(&d, "final counters");
  }
  kvs_client_destroy(d.kvs);
  cache__drop_pending(&d);
  cache__window_free(&d);
  cache_fetch_table_destroy(d.fetches);
  cache_lease_close(d.leases);
  sq_zmq_cache_destroy(d.replies);
  if (d.get_sock) zmq_close(d.get_sock);
  if (d.put_sock) zmq_close(d.put_sock);
  if (d.upd_sock) zmq_close(d.upd_sock);
  if (d.sigfd >= 0) close(d.sigfd);
  cache__uds_close(&d);
  cache_store_close(d.store);
  if (d.zctx) zmq_ctx_term(d.zctx);
  return rc;
}
