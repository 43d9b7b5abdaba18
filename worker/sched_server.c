/* sched_server: sockets, the poll loop and the reply plumbing of squall-scheduler.
 *
 * The loop (one thread):
 *
 *   wait (ROUTER x7, PULL status/peer/continuation, KVS responses; timeout <= 100 ms;
 *         sq_zwait: one poll(2) on libzmq's fds, not zmq_poll)
 *     ROUTER ready -> recv one request -> handler -> exactly one reply (safety net
 *                   below), or none when the request asked for none
 *                   (DagCall.ack_failures_only, accepted)
 *     PULL ready -> drain up to SCHED_BATCH messages each
 *     KVS ready  -> kvs_client_poll(0): completions of asynchronous refreshes
 *     every loop -> sched__tick: expire silent executors, periodic refresh and gossip
 *
 * The request/reply ports are ROUTER sockets that frame as REP does: a request is
 * [identity][envelope frames...][empty delimiter][body]; the reply is the same
 * envelope followed by one body frame, so REQ clients (Cloudburst's) and DEALER
 * clients with their own envelope (squall's Channel) see a REP socket. Unlike REP,
 * ROUTER lets an accepted call go unanswered when its client asked so (one send, and
 * one wake-up of this process's and the client's ZeroMQ I/O threads, less per call).
 * A request with no delimiter, more than SCHED_ENV_MAX envelope frames, an envelope
 * frame over SCHED_ENV_FRAME_MAX bytes or several body frames is dropped (REP drops a
 * malformed envelope too; several body frames get an error reply).
 *
 * The safety net: handlers set s->replied when they answer (or decide not to); a
 * handler that returns without answering (a bug) still produces a GenericResponse
 * error, so a client is never left waiting for a reply it asked for.
 */
#include "sched_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "sq_error.h"
#include "sq_proto.h"
#include "sq_zwait.h"

#define SCHED_BATCH 64
#define SCHED_POLL_MAX_MS 100
#define SCHED_NPOLL (SCHED_NREP + 4) /* ROUTERs, status, peer, continuation, KVS */

static const int sched__rep_ports[SCHED_NREP] = {5000, 5001, 5002, 5003, 5004, 5005, 5006};

double sched__now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sched__uuid4(char out[37]) {
  uint8_t b[16];
  if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
    struct timespec ts; /* never expected; still unique enough per process */
    clock_gettime(CLOCK_REALTIME, &ts);
    for (size_t i = 0; i < sizeof b; i++) b[i] = (uint8_t)((uint64_t)ts.tv_nsec >> (i % 8) ^ i * 131u);
  }
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
  snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
           b[13], b[14], b[15]);
}

static void sched__env_close(sched_t *s) {
  for (size_t i = 0; i < s->nenv; i++) zmq_msg_close(&s->env[i]);
  s->nenv = 0;
}

void sched__reply_none(sched_t *s) {
  s->replied = true;
  sched__env_close(s);
}

void sched__reply_bytes(sched_t *s, int port, const void *data, size_t len) {
  if (s->replied) return;
  s->replied = true;
  int rc = 0;
  for (size_t i = 0; i < s->nenv && rc == 0; i++)
    if (zmq_msg_send(&s->env[i], s->rep[port], ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
      rc = -zmq_errno();
  if (rc == 0) rc = sq_zmq_send_bytes(s->rep[port], data, len);
  sched__env_close(s);
  if (rc) sq_log_warn(s->log, "reply on port %d failed: %s", sched__rep_ports[port],
                      sq_strerror(rc));
}

void sched__reply_pb(sched_t *s, int port, const ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) {
    sched__reply_bytes(s, port, "", 0); /* keeps the REP socket usable */
    return;
  }
  protobuf_c_message_pack(msg, buf);
  sched__reply_bytes(s, port, buf, len);
  free(buf);
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0. */
static size_t sched__utf8_seq(const unsigned char *p) {
  size_t n = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3
           : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
  if (n == 2 && p[0] < 0xc2) return 0; /* overlong */
  for (size_t i = 1; i < n; i++)
    if ((p[i] & 0xc0) != 0x80) return 0;
  if (n == 3 && ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0))) return 0;
  if (n == 4 && ((p[0] == 0xf0 && p[1] < 0x90) || p[0] > 0xf4 || (p[0] == 0xf4 && p[1] >= 0x90)))
    return 0;
  return n;
}

bool sched__utf8_valid(const char *text) {
  for (const unsigned char *p = (const unsigned char *)text; *p;) {
    size_t n = sched__utf8_seq(p);
    if (!n) return false;
    p += n;
  }
  return true;
}

/* Replaces every byte that is not part of valid UTF-8 with '?', in place (network
 * names end up in error sentences, and protobuf strings must be UTF-8). */
static void sched__utf8_scrub(char *text) {
  for (unsigned char *p = (unsigned char *)text; *p;) {
    size_t n = sched__utf8_seq(p);
    if (n) p += n;
    else *p++ = '?';
  }
}

void sched__reply_error(sched_t *s, int port, int code, const char *fmt, ...) {
  char text[SCHED_ERRMSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  sched__utf8_scrub(text);
  GenericResponse r = GENERIC_RESPONSE__INIT;
  r.success = false;
  r.error = (CloudburstError)code;
  r.error_message = text;
  r.error_type = "squall.SchedulerError";
  sq_log_info(s->log, "port %d: refused: %s", sched__rep_ports[port], text);
  sched__reply_pb(s, port, &r.base);
}

void sched__reply_ok(sched_t *s, int port, const char *response_id) {
  GenericResponse r = GENERIC_RESPONSE__INIT;
  r.success = true;
  r.response_id = (char *)(response_id ? response_id : "");
  sched__reply_pb(s, port, &r.base);
}

static int sched__endpoint(sched_t *s, const sched_exec_id_t *ex, int base, char *buf,
                           size_t len) {
  long port = (long)base + (long)s->cfg->port_offset + (long)ex->tid;
  if (port <= 0 || port > 65535) return SQ_EINVAL;
  return sq_zmq_endpoint_tcp(buf, len, ex->ip, (unsigned)port);
}

int sched__push(sched_t *s, const sched_exec_id_t *ex, int base, const ProtobufCMessage *msg) {
  char ep[SQ_ZMQ_ENDPOINT_MAX];
  int rc = sched__endpoint(s, ex, base, ep, sizeof ep);
  if (rc == 0) rc = sq_zmq_cache_send_pb(s->push, ep, msg);
  if (rc) sq_log_warn(s->log, "send to %s failed: %s", ep, sq_strerror(rc));
  return rc;
}

int sched__push_bytes(sched_t *s, const sched_exec_id_t *ex, int base, const void *d,
                      size_t len) {
  char ep[SQ_ZMQ_ENDPOINT_MAX];
  int rc = sched__endpoint(s, ex, base, ep, sizeof ep);
  if (rc == 0) rc = sq_zmq_cache_send(s->push, ep, d, len);
  if (rc) sq_log_warn(s->log, "send to %s failed: %s", ep, sq_strerror(rc));
  return rc;
}

size_t sched__refs(Value *const *values, size_t n, sched_pickle_ref_t *refs, size_t cap) {
  size_t total = 0;
  for (size_t i = 0; i < n && total < cap; i++) {
    if (!values[i] || values[i]->type != SERIALIZER_TYPE__DEFAULT) continue;
    size_t found = 0;
    if (sched_pickle_find_refs(values[i]->body.data, values[i]->body.len, refs + total,
                               cap - total, &found) != 0)
      continue; /* not a pickle we model: no locality hint, nothing else */
    total += found < cap - total ? found : cap - total;
  }
  return total;
}

/* ---- sockets -------------------------------------------------------------------- */

static int sched__bind_rep(sched_t *s, int i, char *err, size_t errlen) {
  char ep[SQ_ZMQ_ENDPOINT_MAX];
  int64_t max = (int64_t)s->cfg->max_message_bytes;
  int zero = 0;
  int rc = sq_zmq_endpoint_tcp(ep, sizeof ep, s->cfg->bind_host,
                               (unsigned)(sched__rep_ports[i] + s->cfg->port_offset));
  if (rc) return rc;
  s->rep[i] = zmq_socket(s->zctx, ZMQ_ROUTER);
  if (!s->rep[i]) return -zmq_errno();
  if (zmq_setsockopt(s->rep[i], ZMQ_MAXMSGSIZE, &max, sizeof max) ||
      zmq_setsockopt(s->rep[i], ZMQ_LINGER, &zero, sizeof zero))
    return -zmq_errno();
  return sq_zmq_bind(s->rep[i], ep, err, errlen);
}

static int sched__bind_pull(sched_t *s, int port, void **out, char *err, size_t errlen) {
  char ep[SQ_ZMQ_ENDPOINT_MAX];
  int rc = sq_zmq_endpoint_tcp(ep, sizeof ep, s->cfg->bind_host,
                               (unsigned)(port + s->cfg->port_offset));
  if (rc) return rc;
  return sq_zmq_pull_bind(s->zctx, ep, (int64_t)s->cfg->max_message_bytes, 0, err, errlen,
                          out);
}

static int sched__split_peers(sched_t *s) {
  const char *p = s->cfg->peers ? s->cfg->peers : "";
  size_t cap = 1;
  for (const char *q = p; *q; q++) cap += *q == ',';
  s->peers = calloc(cap, sizeof(char *));
  if (!s->peers) return -ENOMEM;
  while (*p) {
    size_t len = strcspn(p, ",");
    if (len && len < SCHED_IP_MAX) {
      if (!(s->peers[s->npeers] = strndup(p, len))) return -ENOMEM;
      s->npeers++;
    }
    p += len + (p[len] == ',');
  }
  return 0;
}

static int sched__open_kvs(sched_t *s, char *err, size_t errlen) {
  char def[SQ_ZMQ_ENDPOINT_MAX];
  const char *routing = s->cfg->kvs;
  if (!routing || !routing[0]) {
    snprintf(def, sizeof def, "tcp://127.0.0.1:%ld", 6450L + (long)s->cfg->port_offset);
    routing = def;
  }
  sq_zmq_endpoint_t ep;
  if (sq_zmq_endpoint_parse(routing, &ep) != 0) {
    snprintf(err, errlen, "--kvs %s is not an endpoint like tcp://host:6450", routing);
    return SQ_ECONFIG;
  }
  snprintf(s->kvs_host, sizeof s->kvs_host, "%s", ep.host);
  const char *const r[1] = {routing};
  kvs_client_options_t ko = {.zmq_context = s->zctx, .routing = r, .nrouting = 1,
                             .timeout_ms = (int)s->cfg->kvs_timeout_ms, .retries = 1};
  s->kvs_lim.timeout_ms = (int)s->cfg->kvs_timeout_ms;
  s->kvs_lim.retries = 1;
  int rc = kvs_client_create(&ko, &s->kvs);
  if (rc) snprintf(err, errlen, "cannot create the KVS client for %s: %s", routing,
                   sq_strerror(rc));
  return rc;
}

static int sched__open(sched_t *s, char *err, size_t errlen) {
  int rc = sched__split_peers(s);
  for (int i = 0; rc == 0 && i < SCHED_NREP; i++) rc = sched__bind_rep(s, i, err, errlen);
  if (rc == 0) rc = sched__bind_pull(s, 5007, &s->status_pull, err, errlen);
  if (rc == 0) rc = sched__bind_pull(s, 5008, &s->peer_pull, err, errlen);
  if (rc == 0) rc = sched__bind_pull(s, 5010, &s->pin_pull, err, errlen);
  if (rc == 0) rc = sched__bind_pull(s, 5011, &s->cont_pull, err, errlen);
  if (rc == 0) rc = sq_zmq_cache_create(s->zctx, NULL, &s->push);
  sched_policy_options_t po = {.deadline_ms = (uint64_t)s->cfg->executor_deadline_ms};
  if (rc == 0) rc = sched_policy_create(&po, &s->policy);
  if (rc == 0) rc = sched__open_kvs(s, err, errlen);
  s->dags = calloc(SCHED_MAX_DAGS, sizeof(*s->dags));
  s->funcs = calloc(SCHED_MAX_FUNCS, sizeof(char *));
  s->oneshots = calloc(SCHED_MAX_ONESHOTS, sizeof(*s->oneshots));
  s->inflight = calloc(SCHED_MAX_INFLIGHT, sizeof(*s->inflight));
  if (rc == 0 && (!s->dags || !s->funcs || !s->oneshots || !s->inflight)) rc = -ENOMEM;
  if (rc == 0) rc = sched__retry_init(s);
  return rc;
}

int sched_create(const sched_config_t *cfg, sq_log_t *log, sched_t **out, char *err,
                 size_t errlen) {
  char dummy[8];
  if (!err) { err = dummy; errlen = sizeof dummy; }
  err[0] = '\0';
  *out = NULL;
  sched_t *s = calloc(1, sizeof(*s));
  if (!s) return -ENOMEM;
  s->cfg = cfg;
  s->log = log;
  s->zctx = zmq_ctx_new();
  int rc = s->zctx ? sched__open(s, err, errlen) : -ENOMEM;
  if (rc) {
    if (!err[0]) snprintf(err, errlen, "%s", sq_strerror(rc));
    sched_destroy(s);
    return rc;
  }
  *out = s;
  return 0;
}

void sched_destroy(sched_t *s) {
  if (!s) return;
  for (size_t i = 0; s->dags && i < s->ndags; i++) {
    free(s->dags[i].name);
    dag__free_unpacked(s->dags[i].dag, NULL);
  }
  for (size_t i = 0; s->funcs && i < s->nfuncs; i++) free(s->funcs[i]);
  if (s->log)
    sq_log_info(s->log, "function index: %llu reads, %llu unknown-name lookups and %llu "
                "lists answered without one", (unsigned long long)s->index.reads,
                (unsigned long long)s->index.skipped,
                (unsigned long long)s->index.lists_cached);
  sched__retry_free(s);
  for (size_t i = 0; s->peers && i < s->npeers; i++) free(s->peers[i]);
  free(s->peers);
  free(s->dags);
  free(s->funcs);
  kvs_client_destroy(s->kvs);
  sched_policy_destroy(s->policy);
  sq_zmq_cache_destroy(s->push);
  for (int i = 0; i < SCHED_NREP; i++)
    if (s->rep[i]) zmq_close(s->rep[i]);
  void *pulls[] = {s->status_pull, s->peer_pull, s->pin_pull, s->cont_pull};
  for (size_t i = 0; i < 4; i++)
    if (pulls[i]) zmq_close(pulls[i]);
  if (s->zctx) zmq_ctx_term(s->zctx);
  free(s);
}

/* ---- the loop ------------------------------------------------------------------- */

typedef void (*sched_handler_fn)(sched_t *s, const uint8_t *b, size_t n);

static const sched_handler_fn sched__rep_handlers[SCHED_NREP] = {
    sched__on_connect,  sched__on_func_create, sched__on_func_call, sched__on_list,
    sched__on_dag_create, sched__on_dag_call,  sched__on_dag_delete,
};

static bool sched__more(void *sock) {
  int more = 0;
  size_t len = sizeof more;
  return zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more;
}

/* Receives one request's envelope into s->env (delimiter included) and its first body
 * frame into *m. 0 (body in *m, caller closes it; *extra: more body frames followed
 * and were discarded), -EAGAIN (nothing waiting), SQ_EPROTO (a malformed envelope,
 * discarded). The envelope is kept on success only. */
static int sched__recv_request(sched_t *s, void *sock, zmq_msg_t *m, bool *extra) {
  bool delim = false, more = true, bad = false;
  int rc = 0;
  *extra = false;
  s->nenv = 0;
  while (more && !delim) {
    zmq_msg_t *f = s->nenv < SCHED_ENV_MAX ? &s->env[s->nenv] : m;
    zmq_msg_init(f);
    if (zmq_msg_recv(f, sock, s->nenv || bad ? 0 : ZMQ_DONTWAIT) < 0) {
      rc = -zmq_errno();
      zmq_msg_close(f);
      break;
    }
    more = zmq_msg_more(f);
    delim = zmq_msg_size(f) == 0;
    bad = bad || f == m || zmq_msg_size(f) > SCHED_ENV_FRAME_MAX;
    if (f == m) zmq_msg_close(f);
    else s->nenv++;
  }
  if (rc == 0 && (!delim || !more || bad)) rc = SQ_EPROTO;
  if (rc == 0) {
    zmq_msg_init(m);
    if (zmq_msg_recv(m, sock, 0) < 0) rc = -zmq_errno();
  }
  while (sched__more(sock)) { /* the rest of a malformed or multi-frame request */
    zmq_msg_t rest;
    zmq_msg_init(&rest);
    if (zmq_msg_recv(&rest, sock, 0) < 0) break;
    zmq_msg_close(&rest);
    *extra = true;
  }
  if (rc) sched__env_close(s);
  return rc;
}

static void sched__serve_rep(sched_t *s, int i) {
  zmq_msg_t m;
  bool extra;
  int rc = sched__recv_request(s, s->rep[i], &m, &extra);
  if (rc) {
    if (rc != -EAGAIN) sq_log_say_once(s->log, SQ_LOG_WARN, "envelope",
                                       "port %d: a request without a valid envelope dropped",
                                       sched__rep_ports[i]);
    return;
  }
  s->replied = false;
  if (extra || zmq_msg_size(&m) > s->cfg->max_message_bytes) {
    zmq_msg_close(&m);
    sched__reply_error(s, i, CLOUDBURST_ERROR__EXECUTION_ERROR, "request refused: %s",
                       sq_strerror(extra ? SQ_EPROTO : SQ_ETOOBIG));
    return;
  }
  sched__rep_handlers[i](s, zmq_msg_data(&m), zmq_msg_size(&m));
  zmq_msg_close(&m);
  if (!s->replied)
    sched__reply_error(s, i, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "internal error: the scheduler produced no reply");
}

static void sched__drain(sched_t *s, void *sock, sched_handler_fn fn) {
  for (int k = 0; k < SCHED_BATCH; k++) {
    zmq_msg_t m;
    int rc = sq_zmq_recv_frame(sock, s->cfg->max_message_bytes, ZMQ_DONTWAIT, &m);
    if (rc == -EAGAIN) return;
    if (rc) continue; /* oversized or multi-frame: already discarded */
    fn(s, zmq_msg_data(&m), zmq_msg_size(&m));
    zmq_msg_close(&m);
  }
}

void sched__drain_status(sched_t *s) { sched__drain(s, s->status_pull, sched__on_status); }

static int sched__poll_timeout(sched_t *s) {
  int t = kvs_client_next_timeout(s->kvs);
  return t < 0 || t > SCHED_POLL_MAX_MS ? SCHED_POLL_MAX_MS : t;
}

int sched_run(sched_t *s, volatile sig_atomic_t *stop) {
  enum { ST = SCHED_NREP, PEER, CONT, KVS };
  void *socks[SCHED_NPOLL] = {[ST] = s->status_pull, [PEER] = s->peer_pull,
                              [CONT] = s->cont_pull, [KVS] = kvs_client_socket(s->kvs)};
  for (int i = 0; i < SCHED_NREP; i++) socks[i] = s->rep[i];
  sq_zwait_t w;
  int rc = sq_zwait_init(&w, socks, SCHED_NPOLL);
  if (rc) return rc;
  sq_log_info(s->log, "scheduler serving: ports %ld-%ld on %s, KVS %s, %zu peer(s)",
              5000L + (long)s->cfg->port_offset, 5011L + (long)s->cfg->port_offset,
              s->cfg->bind_host, s->kvs_host, s->npeers);
  while (!*stop) {
    int n = sq_zwait_wait(&w, sched__poll_timeout(s));
    if (n < 0) return n;
    for (int i = 0; i < SCHED_NREP; i++) /* one request per port per round: fair */
      if (w.ready[i]) sched__serve_rep(s, i);
    if (w.ready[ST]) sched__drain_status(s);
    if (w.ready[PEER]) sched__drain(s, s->peer_pull, sched__on_peer);
    if (w.ready[CONT]) sched__drain(s, s->cont_pull, sched__on_continuation);
    bool kvs = w.ready[KVS] || kvs_client_next_timeout(s->kvs) == 0;
    if (kvs) sched__kvs_poll(s);
    if (n || kvs) { /* handlers use the KVS client and drain status (pinning) themselves */
      sq_zwait_touch(&w, ST);
      sq_zwait_touch(&w, KVS);
    }
    sched__tick(s, sq_now_ms());
  }
  return 0;
}
