/* ext_cache_ipc: _squall.CacheClient, an executor's requests to its node's squall-cache.
 *
 *   c = CacheClient(dir, timeout=1.0, leases=True)
 *   c.get(key, timeout=None) -> (anna_error, lattice_type, payload or None)   a miss
 *   c.fetch([key, ...], timeout=None) -> {key: anna_error}   miss: GET, wait for the reply
 *   c.put(key, lattice_type, payload, timeout=None, wait=True) -> anna_error  write-through
 *   c.report([key, ...]) -> bool     hit report (GET, empty response address), no reply
 *   c.response_address  c.channel  c.close()
 *
 * Misses (get, fetch) go over the daemon's unix socket <dir>/requests.sock when it
 * listens (cache/cache_uds.h): blocking send and wait on the socket by the calling
 * thread, no ZeroMQ I/O thread in the way, and a fetched value small enough comes back
 * inline (get returns its payload: the KVS's lattice bytes; None = read LMDB). Without
 * that socket (an older daemon, too many connections, the daemon restarting) they
 * use the ZeroMQ sockets below; the socket is retried at most once a second.
 * get() is a direct miss (cache_uds.h, docs/cache.md "Direct misses"): its GET names
 * the PULL socket below, the KVS may answer there itself, and the call waits on both
 * sockets; the KVS's answer is handed back to the daemon (FILL, the received message
 * moved to requests-get) and returned when final (KEY_DNE, or a value up to 1 MiB).
 * With leases (the default; ext_cache_lease.h, docs/cache.md "Fetch leases"), get()
 * first claims the key's fetch lease in <dir>/leases: the holder reads the KVS
 * itself -- no daemon hop before the read -- returns the value and hands it to the
 * daemon afterwards; a miss of a key someone else holds waits for the release, then
 * asks the daemon; the direct miss below is what remains for everything else.
 * put(wait=False) is the opt-in asynchronous write: it returns 0 once the daemon's
 * queue took the request, before the KVS acknowledged it (a write that then fails is
 * only logged and counted by the daemon: put_errors).
 *
 * The daemon (docs/cache.md "squall-cache: the daemon") listens on PULL sockets
 * ipc://<dir>/requests-get and ipc://<dir>/requests-put and answers a KeyRequest with
 * one KeyResponse (response_id = request_id, no payloads: the executor reads LMDB) to
 * the request's response_address. A CacheClient binds its own PULL socket on an
 * ephemeral TCP port for those replies (and the KVS's, for direct misses): on the host
 * the daemon wrote to <dir>/reply-host, else on loopback. anna_error is the per-key AnnaError
 * (0 NO_ERROR = now cached / written, 1 KEY_DNE, 3 TIMEOUT, 4 LATTICE, ...).
 *
 * Never hangs: the request sockets use ZMQ_IMMEDIATE, so with no daemon listening a
 * send fails after at most 200 ms (SquallTimeoutError; report() returns False at
 * once), and every wait for a reply is bounded by the timeout (SquallTimeoutError). A late reply to an earlier request
 * (request ids are "<n>") is read and dropped. Replies are untrusted: size-limited,
 * decoded with sq_proto_unpack, keys matched by value.
 *
 * Threads: the sockets belong to whichever thread calls; calls are serialised by a
 * lock, and the wait runs with the GIL released (it touches no Python object). This
 * file exists so that the _squall extension needs no pyzmq.
 */
#include "ext.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <zmq.h>

#include <unistd.h>

#include "anna.pb-c.h"
#include "cache_uds.h"
#include "ext_cache_lease.h"
#include "sq_error.h"
#include "sq_proto.h"
#include "sq_time.h"
#include "sq_zmq.h"

#define EXT__IPC_MAX_REPLY (256 << 20) /* a direct miss's KVS answer carries the value */
#define EXT__IPC_MAX_KEYS 10000
#define EXT__IPC_CONNECT_MS 200 /* how long a send waits for a connection to the daemon */

typedef struct {
  PyObject_HEAD
  void *zctx;
  void *get_sock, *put_sock, *pull; /* NULL once closed */
  PyThread_type_lock lock;
  uint64_t next_id;
  int timeout_ms;
  char reply_addr[SQ_ZMQ_ENDPOINT_MAX];
  char dir[4096];
  bool uds_open;           /* uds is a connected requests.sock */
  int uds;
  int64_t uds_retry_ms;    /* monotonic ms before which no reconnect is tried */
  sq_buf_t ubuf;           /* request / reply bytes on the unix socket */
  bool leases;             /* get() misses under fetch leases (ext_cache_lease.h) */
  ext_cc_lease_t lease;
} ext_cclient_t;

static ext_state_t *ext__cc_state(PyObject *self) {
  return (ext_state_t *)PyType_GetModuleState(Py_TYPE(self));
}

/* None -> *ms unchanged; a finite number >= 0 of seconds -> ms (>= 1). 0 or -1. */
static int ext__cc_timeout(PyObject *obj, int *ms) {
  if (!obj || obj == Py_None) return 0;
  double s = PyFloat_AsDouble(obj);
  if (s == -1.0 && PyErr_Occurred()) return -1;
  if (!isfinite(s) || s < 0 || s > 86400.0) {
    PyErr_SetString(PyExc_ValueError, "timeout must be between 0 and 86400 seconds");
    return -1;
  }
  *ms = s * 1000.0 < 1.0 ? 1 : (int)(s * 1000.0);
  return 0;
}

/* A PUSH socket to endpoint with ZMQ_IMMEDIATE: while no daemon is connected a send
 * fails at once (-EAGAIN) instead of queueing for a peer that may never come.
 * 0 or -errno; *out is the caller's. */
static int ext__cc_push(void *zctx, const char *endpoint, void **out) {
  int one = 1, zero = 0, hwm = 1000;
  void *s = zmq_socket(zctx, ZMQ_PUSH);
  *out = NULL;
  if (!s) return -zmq_errno();
  if (zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one) ||
      zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) ||
      zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) || zmq_connect(s, endpoint)) {
    int rc = -zmq_errno();
    zmq_close(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* Binds the reply PULL socket on the host the daemon gives the KVS (<dir>/reply-host,
 * so that direct misses work off loopback too), else on loopback. 0 or -errno. */
static int ext__cc_bind(ext_cclient_t *c, const char *dir) {
  char host[CACHE_UDS_HOST_MAX + 1], ep[SQ_ZMQ_ENDPOINT_MAX], err[256];
  if (cache_uds_reply_host(dir, host, sizeof host) == 0 &&
      snprintf(ep, sizeof ep, "tcp://%s:*", host) < (int)sizeof ep &&
      sq_zmq_pull_bind(c->zctx, ep, EXT__IPC_MAX_REPLY, 0, err, sizeof err, &c->pull) == 0)
    return 0;
  return sq_zmq_pull_bind(c->zctx, "tcp://127.0.0.1:*", EXT__IPC_MAX_REPLY, 0, err,
                          sizeof err, &c->pull);
}

static int ext__cc_open(ext_cclient_t *c, const char *dir) {
  char ep[SQ_ZMQ_ENDPOINT_MAX];
  size_t len = sizeof(c->reply_addr);
  int rc = -ENOMEM;
  if (!(c->zctx = zmq_ctx_new())) goto out;
  if ((rc = ext__cc_bind(c, dir))) goto out;
  if (zmq_getsockopt(c->pull, ZMQ_LAST_ENDPOINT, c->reply_addr, &len)) {
    rc = -zmq_errno();
    goto out;
  }
  rc = SQ_EINVAL;
  if (snprintf(ep, sizeof ep, "ipc://%s/requests-get", dir) >= (int)sizeof ep) goto out;
  if ((rc = ext__cc_push(c->zctx, ep, &c->get_sock))) goto out;
  rc = SQ_EINVAL;
  if (snprintf(ep, sizeof ep, "ipc://%s/requests-put", dir) >= (int)sizeof ep) goto out;
  rc = ext__cc_push(c->zctx, ep, &c->put_sock);
out:
  return rc;
}

static void ext__cc_uds_drop(ext_cclient_t *c) {
  if (c->uds_open) close(c->uds);
  c->uds_open = false;
  c->uds_retry_ms = (int64_t)sq_now_ms() + 1000;
}

/* True when the unix socket is connected (connecting if it is time to try). */
static bool ext__cc_uds_ready(ext_cclient_t *c) {
  if (c->uds_open) return true;
  if ((int64_t)sq_now_ms() < c->uds_retry_ms) return false;
  if (cache_uds_connect(c->dir, &c->uds) == 0) c->uds_open = true;
  else c->uds_retry_ms = (int64_t)sq_now_ms() + 1000;
  return c->uds_open;
}

static void ext__cc_close(ext_cclient_t *c) {
  ext_cc_lease_close(&c->lease); /* its KVS client lives on zctx */
  ext__cc_uds_drop(c);
  sq_buf_free(&c->ubuf);
  if (c->get_sock) zmq_close(c->get_sock);
  if (c->put_sock) zmq_close(c->put_sock);
  if (c->pull) zmq_close(c->pull);
  c->get_sock = c->put_sock = c->pull = NULL;
  if (c->zctx) zmq_ctx_term(c->zctx); /* LINGER 0 everywhere: returns at once */
  c->zctx = NULL;
}

static int ext__cc_init(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"dir", "timeout", "leases", NULL};
  ext_cclient_t *c = (ext_cclient_t *)self;
  PyObject *path = NULL, *timeout = NULL;
  int ret = -1, rc, leases = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|Op:CacheClient", kwlist,
                                   PyUnicode_FSConverter, &path, &timeout, &leases))
    return -1;
  c->leases = leases != 0;
  if (c->zctx) {
    PyErr_SetString(PyExc_RuntimeError, "CacheClient is already initialised");
    goto out;
  }
  c->timeout_ms = 1000;
  if (ext__cc_timeout(timeout, &c->timeout_ms) < 0) goto out;
  if (!c->lock && !(c->lock = PyThread_allocate_lock())) {
    PyErr_NoMemory();
    goto out;
  }
  if (snprintf(c->dir, sizeof c->dir, "%s", PyBytes_AS_STRING(path)) >= (int)sizeof c->dir) {
    PyErr_SetString(PyExc_ValueError, "CacheClient: directory name too long");
    goto out;
  }
  if ((rc = ext__cc_open(c, PyBytes_AS_STRING(path)))) {
    ext__cc_close(c);
    ext_error_raise(ext__cc_state(self), rc, "CacheClient: cannot open the sockets");
    goto out;
  }
  (void)ext__cc_uds_ready(c); /* no unix socket yet: ZeroMQ until it appears */
  ret = 0;
out:
  Py_XDECREF(path);
  return ret;
}

static void ext__cc_dealloc(PyObject *self) {
  ext_cclient_t *c = (ext_cclient_t *)self;
  PyTypeObject *tp = Py_TYPE(self);
  ext__cc_close(c);
  if (c->lock) PyThread_free_lock(c->lock);
  tp->tp_free(self);
  Py_DECREF(tp);
}

/* A request being built: tuples over key buffers borrowed from str objects that the
 * caller's sequence keeps alive. */
typedef struct {
  KeyRequest req;
  KeyTuple *tuples;
  KeyTuple **ptrs;
  char id[24];
  bool direct;             /* get(): the KVS may answer on the PULL socket (cache_uds.h) */
} ext__cc_req_t;

static void ext__cc_req_free(ext__cc_req_t *r) {
  PyMem_Free(r->tuples);
  PyMem_Free(r->ptrs);
}

/* Fills r with a request of `type` over the str keys of `seq` (a list or tuple). 0 or
 * -1 (TypeError / ValueError / MemoryError). */
static int ext__cc_req_build(ext__cc_req_t *r, RequestType type, PyObject *seq) {
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  key_request__init(&r->req);
  r->tuples = NULL;
  r->ptrs = NULL;
  if (n < 1 || n > EXT__IPC_MAX_KEYS) {
    PyErr_Format(PyExc_ValueError, "between 1 and %d keys, not %zd", EXT__IPC_MAX_KEYS, n);
    return -1;
  }
  r->tuples = PyMem_Calloc((size_t)n, sizeof *r->tuples);
  r->ptrs = PyMem_Calloc((size_t)n, sizeof *r->ptrs);
  if (!r->tuples || !r->ptrs) {
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *k = PySequence_Fast_GET_ITEM(seq, i);
    key_tuple__init(&r->tuples[i]);
    if (!PyUnicode_Check(k)) {
      PyErr_SetString(PyExc_TypeError, "cache keys must be str");
      return -1;
    }
    const char *s = PyUnicode_AsUTF8(k);
    if (!s) return -1;
    r->tuples[i].key = (char *)s;
    r->ptrs[i] = &r->tuples[i];
  }
  r->req.type = type;
  r->req.n_tuples = (size_t)n;
  r->req.tuples = r->ptrs;
  return 0;
}

/* Waits (GIL released by the caller) for the KeyResponse whose response_id is id.
 * 0 with *out (caller frees), SQ_ETIMEOUT, or another receive error. */
static int ext__cc_wait(ext_cclient_t *c, const char *id, int timeout_ms, KeyResponse **out) {
  int64_t left = timeout_ms, end = (int64_t)sq_now_ms() + timeout_ms;
  *out = NULL;
  while (left > 0) {
    zmq_pollitem_t it = {.socket = c->pull, .events = ZMQ_POLLIN};
    int n = zmq_poll(&it, 1, (long)left);
    if (n < 0 && zmq_errno() != EINTR) return -zmq_errno();
    if (n > 0) {
      ProtobufCMessage *m = NULL;
      int rc = sq_zmq_recv_pb(c->pull, &key_response__descriptor, EXT__IPC_MAX_REPLY, NULL,
                              ZMQ_DONTWAIT, &m);
      if (rc == 0) {
        KeyResponse *resp = (KeyResponse *)m;
        if (resp->response_id && strcmp(resp->response_id, id) == 0) {
          *out = resp;
          return 0;
        }
        protobuf_c_message_free_unpacked(m, NULL); /* a late reply: drop it */
      }
    }
    left = end - (int64_t)sq_now_ms();
  }
  return SQ_ETIMEOUT;
}

/* Sends r on the ZeroMQ socket sock (waiting up to EXT__IPC_CONNECT_MS for a
 * connection when timeout_ms > 0) and, when answer, waits for the reply on the PULL
 * socket. GIL released, lock held. 0 with *out (when answer), SQ_ETIMEOUT, -errno. */
static int ext__cc_zmq_exchange(ext_cclient_t *c, void *sock, ext__cc_req_t *r, int timeout_ms,
                                bool answer, KeyResponse **out) {
  int rc = sq_zmq_send_pb(sock, &r->req.base);
  if (rc == -EAGAIN && timeout_ms) { /* not connected (yet): give the pipe a moment */
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLOUT};
    if (zmq_poll(&it, 1, timeout_ms < EXT__IPC_CONNECT_MS ? timeout_ms : EXT__IPC_CONNECT_MS) > 0)
      rc = sq_zmq_send_pb(sock, &r->req.base);
  }
  if (rc == -EAGAIN) rc = SQ_ETIMEOUT;
  if (!rc && answer) rc = ext__cc_wait(c, r->id, timeout_ms, out);
  return rc;
}

/* The KVS's answer to direct GET r, if msg is one: its response_id is
 * "<daemon's client id>_<n>.<r's id>" and its tuple is r's key. NULL otherwise (late
 * answers to earlier requests, garbage). An empty value is KEY_DNE, as for any reader. */
static KeyResponse *ext__cc_direct_answer(ext__cc_req_t *r, const void *data, size_t len) {
  ProtobufCMessage *m = NULL;
  if (sq_proto_unpack(&key_response__descriptor, NULL, data, len, EXT__IPC_MAX_REPLY, &m))
    return NULL;
  KeyResponse *resp = (KeyResponse *)m;
  size_t idl = strlen(r->id), rl = resp->response_id ? strlen(resp->response_id) : 0;
  bool ours = rl > idl + 1 && resp->response_id[rl - idl - 1] == '.' &&
              strcmp(resp->response_id + rl - idl, r->id) == 0 && resp->n_tuples == 1 &&
              resp->tuples[0]->key && strcmp(resp->tuples[0]->key, r->tuples[0].key) == 0;
  if (!ours) {
    key_response__free_unpacked(resp, NULL);
    return NULL;
  }
  KeyTuple *t = resp->tuples[0];
  if (t->error == ANNA_ERROR__NO_ERROR && t->payload.len == 0) t->error = ANNA_ERROR__KEY_DNE;
  return resp;
}

/* Hands the KVS's answer msg back to the daemon (cache_uds.h) without waiting: a
 * two-frame FILL on requests-get, msg moved, not copied -- this thread only signals
 * its ZeroMQ I/O thread, which measured ~20-30 us cheaper per 80 KB miss than copying
 * it into a datagram; else (no room, not connected) a FILL datagram, else NOFILL. A
 * hand-back that is lost only makes the daemon read the key itself after its bound. */
static void ext__cc_fill(ext_cclient_t *c, zmq_msg_t *msg) {
  static const uint8_t head[2] = {0, CACHE_UDS_FILL};
  if (zmq_send(c->get_sock, head, sizeof head, ZMQ_SNDMORE | ZMQ_DONTWAIT) == 2) {
    if (zmq_msg_send(msg, c->get_sock, ZMQ_DONTWAIT) >= 0) return;
    (void)zmq_send(c->get_sock, "", 0, ZMQ_DONTWAIT); /* ends the message: refused */
  }
  if (cache_uds_send_fill(c->uds, zmq_msg_data(msg), zmq_msg_size(msg)) != 0)
    (void)cache_uds_send_nofill(c->uds);
}

/* Takes one message off the PULL socket during a direct GET: when it is the KVS's
 * answer, hands it back to the daemon (FILL) and, when final (KEY_DNE or a value of
 * at most CACHE_UDS_INLINE_MAX bytes), returns it in *out. Otherwise the daemon's
 * reply follows on the unix socket: after a server error, or once a larger value is
 * stored (then read zero copy from the cache, as the issue wants of large values).
 * 0 (maybe *out), or an error of the socket. */
static int ext__cc_direct_take(ext_cclient_t *c, ext__cc_req_t *r, KeyResponse **out) {
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  int rc = 0;
  if (zmq_msg_recv(&msg, c->pull, ZMQ_DONTWAIT) < 0) {
    rc = zmq_errno() == EAGAIN || zmq_errno() == EINTR ? 0 : -zmq_errno();
    goto out;
  }
  KeyResponse *resp = ext__cc_direct_answer(r, zmq_msg_data(&msg), zmq_msg_size(&msg));
  if (!resp) goto out;
  ext__cc_fill(c, &msg);
  const KeyTuple *t = resp->tuples[0];
  if (t->error == ANNA_ERROR__KEY_DNE ||
      (t->error == ANNA_ERROR__NO_ERROR && t->payload.len <= CACHE_UDS_INLINE_MAX))
    *out = resp;
  else /* a server error, or a value to read zero copy once the daemon stored it */
    key_response__free_unpacked(resp, NULL);
out:
  zmq_msg_close(&msg);
  return rc;
}

/* Waits until `end` for r's answer: on the unix socket (its request id), or, for a
 * direct GET, also from the KVS on the PULL socket. 0 with *out, SQ_ETIMEOUT,
 * SQ_ECLOSED, -errno. */
static int ext__cc_uds_wait(ext_cclient_t *c, ext__cc_req_t *r, int64_t end, KeyResponse **out) {
  for (;;) {
    int left = (int)(end - (int64_t)sq_now_ms());
    zmq_pollitem_t it[2] = {{NULL, c->uds, ZMQ_POLLIN, 0}, {c->pull, 0, ZMQ_POLLIN, 0}};
    int n = zmq_poll(it, r->direct ? 2 : 1, left > 0 ? left : 0);
    if (n < 0 && zmq_errno() != EINTR) return -zmq_errno();
    if (n == 0 && left <= 0) return SQ_ETIMEOUT;
    if (n > 0 && it[1].revents) {
      int rc = ext__cc_direct_take(c, r, out);
      if (rc || *out) return rc;
    }
    if (n <= 0 || !it[0].revents) continue;
    int rc = cache_uds_recv(c->uds, 0, EXT__IPC_MAX_REPLY, &c->ubuf);
    if (rc == SQ_ETIMEOUT) continue;
    if (rc) return rc;
    ProtobufCMessage *m = NULL;
    if (sq_proto_unpack(&key_response__descriptor, NULL, c->ubuf.data, c->ubuf.len,
                        EXT__IPC_MAX_REPLY, &m) != 0)
      continue; /* undecodable: not ours to trust */
    KeyResponse *resp = (KeyResponse *)m;
    if (resp->response_id && strcmp(resp->response_id, r->id) == 0) {
      *out = resp;
      return 0;
    }
    key_response__free_unpacked(resp, NULL); /* a late reply to an earlier request */
  }
}

/* One GET over the unix socket (GIL released, lock held): packs r (with the PULL
 * socket's address when it is a direct GET: cache_uds.h), sends it, waits for its
 * answer. 0 with *out, SQ_ECLOSED (the socket is gone: use ZeroMQ; nothing is
 * pending on it), SQ_ETIMEOUT, -errno. */
static int ext__cc_uds_exchange(ext_cclient_t *c, ext__cc_req_t *r, int timeout_ms,
                                KeyResponse **out) {
  r->req.response_address = r->direct ? c->reply_addr : (char *)"";
  size_t len = key_request__get_packed_size(&r->req);
  int rc = len > CACHE_UDS_MAX_REQUEST ? SQ_ETOOBIG : 0;
  sq_buf_reset(&c->ubuf);
  if (!rc) rc = sq_buf_reserve(&c->ubuf, len);
  if (!rc) key_request__pack(&r->req, c->ubuf.data);
  r->req.response_address = c->reply_addr; /* what the ZeroMQ fallback needs */
  if (rc) return rc == SQ_ETOOBIG ? SQ_ECLOSED : rc; /* too big for the socket: ZeroMQ */
  int64_t end = (int64_t)sq_now_ms() + timeout_ms;
  rc = cache_uds_send(c->uds, c->ubuf.data, len, timeout_ms);
  if (rc == 0) rc = ext__cc_uds_wait(c, r, end, out);
  if (rc == SQ_ECLOSED || rc == -EMSGSIZE || rc == SQ_ETOOBIG) ext__cc_uds_drop(c);
  return rc == -EMSGSIZE || rc == SQ_ETOOBIG ? SQ_ECLOSED : rc;
}

/* Sends r on sock and, when answer, waits for the reply (with a response address),
 * all with the GIL released and the client's lock held; GETs that wait go over the
 * unix socket when it is there. 0 with *out (NULL when !answer), SQ_ECLOSED,
 * SQ_ETIMEOUT (also: the queue to the daemon is full), -errno. */
static int ext__cc_exchange(ext_cclient_t *c, void *sock, ext__cc_req_t *r, int timeout_ms,
                            bool answer, KeyResponse **out) {
  int rc = SQ_ECLOSED;
  *out = NULL;
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(c->lock, WAIT_LOCK);
  Py_END_ALLOW_THREADS
  if (!c->pull) {
    PyThread_release_lock(c->lock);
    return SQ_ECLOSED;
  }
  snprintf(r->id, sizeof r->id, "%llu", (unsigned long long)++c->next_id);
  r->req.request_id = r->id;
  r->req.response_address = answer ? c->reply_addr : (char *)"";
  Py_BEGIN_ALLOW_THREADS
  if (answer && sock == c->get_sock && ext__cc_uds_ready(c))
    rc = ext__cc_uds_exchange(c, r, timeout_ms, out);
  if (rc == SQ_ECLOSED) rc = ext__cc_zmq_exchange(c, sock, r, timeout_ms, answer, out);
  Py_END_ALLOW_THREADS
  PyThread_release_lock(c->lock);
  return rc;
}
/* {key: error} of a response. New reference or NULL. */
static PyObject *ext__cc_errors(const KeyResponse *resp) {
  PyObject *d = PyDict_New();
  for (size_t i = 0; d && i < resp->n_tuples; i++) {
    const KeyTuple *t = resp->tuples[i];
    PyObject *k = PyUnicode_DecodeUTF8(t->key ? t->key : "", t->key ? strlen(t->key) : 0,
                                       "replace");
    PyObject *e = PyLong_FromLong((long)t->error);
    if (!k || !e || PyDict_SetItem(d, k, e) < 0) Py_CLEAR(d);
    Py_XDECREF(k);
    Py_XDECREF(e);
  }
  return d;
}

static PyObject *ext__cc_raise(PyObject *self, int rc, const char *what) {
  ext_state_t *st = ext__cc_state(self);
  if (rc == SQ_ETIMEOUT) {
    PyErr_Format(st->timeout_error, "squall-cache did not answer the %s in time", what);
    return NULL;
  }
  return ext_error_raise(st, rc, what);
}

static PyObject *ext__cc_fetch(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"keys", "timeout", NULL};
  ext_cclient_t *c = (ext_cclient_t *)self;
  PyObject *keys, *timeout = NULL, *seq = NULL, *res = NULL;
  ext__cc_req_t r = {0};
  KeyResponse *resp = NULL;
  int ms = c->timeout_ms;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:fetch", kwlist, &keys, &timeout)) return NULL;
  if (ext__cc_timeout(timeout, &ms) < 0) return NULL;
  if (!(seq = PySequence_Fast(keys, "keys must be a list of str"))) return NULL;
  if (ext__cc_req_build(&r, REQUEST_TYPE__GET, seq) < 0) goto out;
  int rc = ext__cc_exchange(c, c->get_sock, &r, ms, true, &resp);
  if (rc) {
    ext__cc_raise(self, rc, "GET (cache miss)");
    goto out;
  }
  if (resp->error != ANNA_ERROR__NO_ERROR && resp->n_tuples == 0) {
    /* the daemon refused the request as a whole: an empty dict would read as "nothing
     * to fetch", so say what it objected to */
    char why[320];
    snprintf(why, sizeof why, "squall-cache refused the fetch (%s)",
             resp->error_message && resp->error_message[0] ? resp->error_message
                                                           : "no reason given");
    ext_error_raise(ext__cc_state(self), SQ_EINVAL, why);
    goto out;
  }
  res = ext__cc_errors(resp);
out:
  if (resp) key_response__free_unpacked(resp, NULL);
  ext__cc_req_free(&r);
  Py_DECREF(seq);
  return res;
}

/* (error, lattice type, payload or None) of key's tuple in resp. New reference. */
static PyObject *ext__cc_get_result(const KeyResponse *resp, const char *key) {
  if (resp->error != ANNA_ERROR__NO_ERROR && resp->n_tuples == 0)
    return Py_BuildValue("(iiO)", (int)resp->error, 0, Py_None);
  for (size_t i = 0; i < resp->n_tuples; i++) {
    const KeyTuple *t = resp->tuples[i];
    if (!t->key || strcmp(t->key, key) != 0) continue;
    if (t->error != ANNA_ERROR__NO_ERROR || t->payload.len == 0)
      return Py_BuildValue("(iiO)", (int)t->error, (int)t->lattice_type, Py_None);
    return Py_BuildValue("(iiy#)", 0, (int)t->lattice_type, (const char *)t->payload.data,
                         (Py_ssize_t)t->payload.len);
  }
  return Py_BuildValue("(iiO)", (int)ANNA_ERROR__LATTICE, 0, Py_None); /* key missing */
}

/* get()'s miss under a fetch lease (ext_cache_lease.h): the lease's KVS read with the
 * GIL released and the lock held, the value copied into bytes, then handed to the
 * daemon. A value over CACHE_UDS_INLINE_MAX is then waited for until the daemon
 * stored it, and answered without payload: large values are read zero copy from the
 * cache (issue 4), also on their first miss. The result tuple when the lease
 * answered; NULL without an exception when the daemon is to be asked; NULL with one
 * (MemoryError) on failure. */
static PyObject *ext__cc_get_leased(ext_cclient_t *c, const char *key, int ms) {
  ext_cc_leased_t v = {0};
  PyObject *res = NULL;
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(c->lock, WAIT_LOCK);
  if (c->pull) ext_cc_lease_get(&c->lease, c->zctx, c->dir, key, ms, &v);
  PyThread_release_lock(c->lock);
  Py_END_ALLOW_THREADS
  if (!v.done) return NULL;
  if (!v.found) return Py_BuildValue("(iiO)", (int)ANNA_ERROR__KEY_DNE, 0, Py_None);
  res = Py_BuildValue("(iiy#)", 0, (int)v.type, (const char *)v.payload, (Py_ssize_t)v.len);
  bool large = v.len > CACHE_UDS_INLINE_MAX, stored = false;
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(c->lock, WAIT_LOCK);
  if (ext_cc_lease_hand_over(&c->lease, c->get_sock, key, &v) == 0 && large && res)
    stored = ext_cc_lease_settle(&c->lease, key, v.token, ms);
  PyThread_release_lock(c->lock);
  Py_END_ALLOW_THREADS
  if (stored) {
    Py_SETREF(res, Py_BuildValue("(iiO)", 0, (int)v.type, Py_None));
  }
  return res;
}

static PyObject *ext__cc_get(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"key", "timeout", NULL};
  ext_cclient_t *c = (ext_cclient_t *)self;
  PyObject *key, *timeout = NULL, *one = NULL, *res = NULL;
  ext__cc_req_t r = {0};
  KeyResponse *resp = NULL;
  int ms = c->timeout_ms;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "U|O:get", kwlist, &key, &timeout)) return NULL;
  if (ext__cc_timeout(timeout, &ms) < 0 || !(one = PyTuple_Pack(1, key))) goto out;
  if (ext__cc_req_build(&r, REQUEST_TYPE__GET, one) < 0) goto out;
  Py_ssize_t klen = 0;
  const char *k = c->leases ? PyUnicode_AsUTF8AndSize(key, &klen) : NULL;
  if (k && (size_t)klen == strlen(k) &&
      ((res = ext__cc_get_leased(c, k, ms)) || PyErr_Occurred()))
    goto out;
  r.direct = true;
  int rc = ext__cc_exchange(c, c->get_sock, &r, ms, true, &resp);
  if (rc) {
    ext__cc_raise(self, rc, "GET (cache miss)");
    goto out;
  }
  res = ext__cc_get_result(resp, r.tuples[0].key);
out:
  if (resp) key_response__free_unpacked(resp, NULL);
  ext__cc_req_free(&r);
  Py_XDECREF(one);
  return res;
}

static PyObject *ext__cc_report(PyObject *self, PyObject *keys) {
  ext_cclient_t *c = (ext_cclient_t *)self;
  PyObject *seq = PySequence_Fast(keys, "keys must be a list of str"), *res = NULL;
  ext__cc_req_t r = {0};
  KeyResponse *none = NULL;
  if (!seq) return NULL;
  if (ext__cc_req_build(&r, REQUEST_TYPE__GET, seq) < 0) goto out;
  int rc = ext__cc_exchange(c, c->get_sock, &r, 0, false, &none);
  if (rc == SQ_ECLOSED) ext__cc_raise(self, rc, "hit report");
  else res = PyBool_FromLong(rc == 0);
out:
  ext__cc_req_free(&r);
  Py_DECREF(seq);
  return res;
}

static PyObject *ext__cc_put(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"key", "lattice_type", "payload", "timeout", "wait", NULL};
  ext_cclient_t *c = (ext_cclient_t *)self;
  PyObject *key, *timeout = NULL, *one = NULL, *res = NULL;
  int type, ms = c->timeout_ms, wait = 1;
  Py_buffer payload = {0};
  ext__cc_req_t r = {0};
  KeyResponse *resp = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "Uiy*|Op:put", kwlist, &key, &type, &payload,
                                   &timeout, &wait))
    return NULL;
  if (ext__cc_timeout(timeout, &ms) < 0 || !(one = PyTuple_Pack(1, key))) goto out;
  if (ext__cc_req_build(&r, REQUEST_TYPE__PUT, one) < 0) goto out;
  r.tuples[0].lattice_type = (LatticeType)type;
  r.tuples[0].payload.data = payload.buf;
  r.tuples[0].payload.len = (size_t)payload.len;
  int rc = ext__cc_exchange(c, c->put_sock, &r, ms, wait != 0, &resp);
  if (rc) {
    ext__cc_raise(self, rc, "PUT (write-through)");
    goto out;
  }
  if (!resp) /* wait=False: queued to the daemon, not acknowledged */
    res = PyLong_FromLong(0L);
  else if (resp->error != ANNA_ERROR__NO_ERROR && resp->n_tuples == 0)
    res = PyLong_FromLong((long)resp->error);
  else
    res = PyLong_FromLong(resp->n_tuples ? (long)resp->tuples[0]->error : 0L);
out:
  if (resp) key_response__free_unpacked(resp, NULL);
  ext__cc_req_free(&r);
  Py_XDECREF(one);
  PyBuffer_Release(&payload);
  return res;
}

static PyObject *ext__cc_close_m(PyObject *self, PyObject *unused) {
  ext_cclient_t *c = (ext_cclient_t *)self;
  if (c->lock) {
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(c->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
  }
  ext__cc_close(c);
  if (c->lock) PyThread_release_lock(c->lock);
  Py_RETURN_NONE;
}

static PyObject *ext__cc_addr(PyObject *self, void *closure) {
  return PyUnicode_FromString(((ext_cclient_t *)self)->reply_addr);
}

static PyMethodDef ext__cc_methods[] = {
    {"get", (PyCFunction)(void (*)(void))ext__cc_get, METH_VARARGS | METH_KEYWORDS,
     "get(key, timeout=None) -> (AnnaError, lattice_type, payload or None)\n\nA miss: asks "
     "squall-cache for key and waits (with leases: reads the KVS itself when it holds\n"
     "the key's fetch lease). AnnaError 0 = the key is cached now (or being stored);\n"
     "payload is then the value's lattice bytes when they came with the answer (a\n"
     "leased read; values up to 1 MiB from the KVS directly or inline from the\n"
     "daemon), else None: read it from the\n"
     "cache (CacheReader). 1 = KEY_DNE.\n"
     "SquallTimeoutError when the daemon does not answer within timeout seconds."},
    {"fetch", (PyCFunction)(void (*)(void))ext__cc_fetch, METH_VARARGS | METH_KEYWORDS,
     "fetch(keys, timeout=None) -> {key: AnnaError}\n\nAsks squall-cache to fetch the keys "
     "into the cache and waits for its answer (0 = cached now, 1 = KEY_DNE). Raises\n"
     "SquallTimeoutError when it does not answer within timeout seconds, SquallError\n"
     "with the daemon's reason when it refuses the request (a key over 511 bytes, more\n"
     "than 10,000 keys)."},
    {"put", (PyCFunction)(void (*)(void))ext__cc_put, METH_VARARGS | METH_KEYWORDS,
     "put(key, lattice_type, payload, timeout=None, wait=True) -> AnnaError\n\nWrites "
     "through squall-cache; 0 once the KVS acknowledged. SquallTimeoutError when no\n"
     "answer. wait=False (asynchronous): 0 as soon as the daemon's queue took the write,\n"
     "BEFORE the KVS acknowledged it; a failure is then only logged by the daemon, and\n"
     "a read right after may not see the write yet."},
    {"report", ext__cc_report, METH_O,
     "report(keys) -> bool\n\nHit report for LRU (no reply); False when it was dropped."},
    {"close", ext__cc_close_m, METH_NOARGS, "Closes the sockets; later calls fail."},
    {NULL, NULL, 0, NULL},
};

static PyObject *ext__cc_channel(PyObject *self, void *closure) {
  return PyUnicode_FromString(((ext_cclient_t *)self)->uds_open ? "unix" : "zmq");
}

static PyGetSetDef ext__cc_getset[] = {
    {"channel", ext__cc_channel, NULL,
     "'unix' while misses go over requests.sock, else 'zmq'.", NULL},
    {"response_address", ext__cc_addr, NULL, "Where squall-cache sends replies.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot ext__cc_slots[] = {
    {Py_tp_init, ext__cc_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, ext__cc_dealloc},
    {Py_tp_methods, ext__cc_methods},
    {Py_tp_getset, ext__cc_getset},
    {Py_tp_doc, "CacheClient(dir, timeout=1.0, leases=True): requests to the node's "
                "squall-cache daemon; leases=False never reads the KVS itself."},
    {0, NULL},
};

static PyType_Spec ext__cc_spec = {
    .name = "squall._squall.CacheClient",
    .basicsize = sizeof(ext_cclient_t),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = ext__cc_slots,
};

int ext_cache_ipc_exec(PyObject *module) {
  PyObject *type = PyType_FromModuleAndSpec(module, &ext__cc_spec, NULL);
  if (!type) return -1;
  int rc = PyModule_AddObjectRef(module, "CacheClient", type);
  Py_DECREF(type);
  return rc;
}
