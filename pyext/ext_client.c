/* ext_client: squall.Responses, the client's one socket for direct responses.
 *
 *   Responses(ip, max_bytes=256 MiB)
 *     .address            "tcp://ip:port" to put in FunctionCall/DagCall.response_address
 *     .recv(timeout)      -> [(response_id, type, body)] for every message available
 *     .wake()             makes a waiting recv (in any thread) return now
 *     .received, .malformed   counters;   .close()   context manager
 *
 * Executors PUSH serialized `Value`s to the address (PROTOCOL.md C6); squall's
 * executors set Value.response_id (extension 100) to the call's response key, the
 * DAG's output key / schedule id, or a captured-output key, so that one PULL socket
 * serves every outstanding future of the process and the caller matches replies by
 * id (Cloudburst's raw, id-less replies on a shared socket went to the wrong call).
 *
 * Binding: a PULL socket bound to tcp://ip:* (a free port) in the object's own
 * ZeroMQ context; `ip` must be an address the executors can reach (127.0.0.1 for a
 * local cluster).
 *
 * recv(timeout): waits up to `timeout` seconds for a first message with the GIL
 * released, then takes whatever else is queued without waiting, at most
 * EXT_RESP_BATCH messages per call. Every message is untrusted: a multi-part
 * message, one larger than max_bytes (ZeroMQ drops the sender's connection), one that
 * does not decode as a Value through sq_proto_unpack, or whose response_id is not
 * UTF-8 is counted in `malformed` and skipped -- never raised. An empty response_id
 * is returned as "" (an untagged, Cloudburst-style reply).
 *
 * wake(): lets another thread take over receiving (squall's futures: a caller blocked
 * in result() receives its own result instead of being woken by the receiver thread,
 * one thread wake-up less on the way back). It writes to an eventfd that recv polls
 * with the socket: a recv waiting returns at once with what is there (possibly
 * nothing); a wake with no recv waiting makes the next one return at once. The
 * eventfd lives until deallocation, so wake() is safe in any thread at any time.
 *
 * Threads: one lock per object serialises recv and close (taken without the GIL), so
 * any thread may close while another receives; the receiving thread returns within its
 * timeout. The lock covers only the receive: a recv turns its frames into Python objects
 * after releasing it (with the GIL), so another thread's recv may already be receiving.
 * Hence the frame array (EXT_RESP_BATCH zmq_msg_t, 64 KiB) kept in the object for recv
 * is lent to one recv at a time: `batch_busy`, read and written only with the GIL
 * held, says it is out; a recv that finds it out (two receiving threads at once, which
 * squall's leader/follower receiver avoids) uses an array of its own for that call.
 * State machine: open --close()--> closed (recv raises SquallError SQ_ECLOSED).
 * Deallocation closes. The type is a heap type of the module (no
 * subclassing), like KvsClient.
 */
#include "ext.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <zmq.h>

#include "cloudburst.pb-c.h"
#include "sq_error.h"
#include "sq_proto.h"
#include "sq_zmq.h"

#define EXT_RESP_BATCH 1024
#define EXT_RESP_DEFAULT_MAX ((int64_t)256 << 20)
#define EXT_RESP_HWM 100000

typedef struct {
  PyObject_HEAD
  void *zctx;               /* NULL once closed */
  void *sock;
  int wake_fd; /* eventfd of wake(); -1 until bound, closed at deallocation */
  PyThread_type_lock lock;
  char address[300];
  int64_t max_bytes;
  unsigned long long received, malformed;
  zmq_msg_t *batch;         /* recv's frame array: allocated on first use, freed at dealloc */
  bool batch_busy;          /* batch is lent to a recv (GIL held to read or change it) */
} ext_resp_t;

static ext_state_t *ext_resp__state(ext_resp_t *self) {
  return (ext_state_t *)PyType_GetModuleState(Py_TYPE(self));
}

static void ext_resp__close_locked(ext_resp_t *self) {
  if (self->sock) zmq_close(self->sock);
  if (self->zctx) zmq_ctx_term(self->zctx);
  self->sock = NULL;
  self->zctx = NULL;
}

/* Makes the context and binds the PULL socket (sq_zmq_pull_bind: LINGER 0, RCVHWM,
 * MAXMSGSIZE). 0, -errno or SQ_EINVAL. */
static int ext_resp__bind(ext_resp_t *self, const char *ip) {
  char ep[300];
  size_t len = sizeof(self->address);
  int rc;
  if (!*ip || strlen(ip) > 255 || strpbrk(ip, "/: ")) return SQ_EINVAL;
  snprintf(ep, sizeof(ep), "tcp://%s:*", ip);
  if (self->wake_fd < 0 && (self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
    return -errno;
  if (!(self->zctx = zmq_ctx_new())) return -errno;
  rc = sq_zmq_pull_bind(self->zctx, ep, self->max_bytes, EXT_RESP_HWM, NULL, 0, &self->sock);
  if (!rc && zmq_getsockopt(self->sock, ZMQ_LAST_ENDPOINT, self->address, &len))
    rc = -zmq_errno();
  return rc;
}

static int ext_resp__init(PyObject *op, PyObject *args, PyObject *kw) {
  ext_resp_t *self = (ext_resp_t *)op;
  static char *kwlist[] = {"ip", "max_bytes", NULL};
  const char *ip;
  long long max_bytes = EXT_RESP_DEFAULT_MAX;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "s|L:Responses", kwlist, &ip, &max_bytes))
    return -1;
  if (self->zctx) {
    PyErr_SetString(PyExc_RuntimeError, "Responses is already bound");
    return -1;
  }
  if (max_bytes < 1024) {
    PyErr_SetString(PyExc_ValueError, "max_bytes must be at least 1024");
    return -1;
  }
  self->max_bytes = max_bytes;
  int rc = ext_resp__bind(self, ip);
  if (rc) {
    ext_resp__close_locked(self);
    ext_error_raise(ext_resp__state(self), rc, "Responses: cannot bind a PULL socket on that ip");
    return -1;
  }
  return 0;
}

static PyObject *ext_resp__new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  (void)args;
  (void)kw;
  ext_resp_t *self = (ext_resp_t *)type->tp_alloc(type, 0);
  if (!self) return NULL;
  self->wake_fd = -1;
  if (!(self->lock = PyThread_allocate_lock())) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  return (PyObject *)self;
}

static void ext_resp__dealloc(PyObject *op) {
  ext_resp_t *self = (ext_resp_t *)op;
  PyTypeObject *tp = Py_TYPE(op);
  ext_resp__close_locked(self); /* no other reference: nobody holds the lock */
  if (self->wake_fd >= 0) close(self->wake_fd);
  if (self->lock) PyThread_free_lock(self->lock);
  free(self->batch);
  tp->tp_free(op);
  Py_DECREF(tp);
}

/* An array of EXT_RESP_BATCH frames for one recv (GIL held): the object's own, made on
 * first use, unless another recv has it; then one of the caller's, to hand back with
 * ext_resp__batch_return. NULL when out of memory. */
static zmq_msg_t *ext_resp__batch_lend(ext_resp_t *self) {
  if (self->batch_busy) return malloc(EXT_RESP_BATCH * sizeof(zmq_msg_t));
  if (!self->batch && !(self->batch = malloc(EXT_RESP_BATCH * sizeof(zmq_msg_t))))
    return NULL;
  self->batch_busy = true;
  return self->batch;
}

/* Gives back what ext_resp__batch_lend returned (GIL held). */
static void ext_resp__batch_return(ext_resp_t *self, zmq_msg_t *msgs) {
  if (msgs == self->batch) self->batch_busy = false;
  else free(msgs);
}

/* Receives up to EXT_RESP_BATCH frames into msgs (initialised), the first waiting up
 * to timeout_ms; runs without the GIL. *n = how many; parts of multi-part messages
 * are dropped and counted in *bad. 0 or -errno (not EAGAIN/EINTR). */
static int ext_resp__take(ext_resp_t *self, int timeout_ms, zmq_msg_t *msgs, size_t *n,
                          unsigned long long *bad) {
  zmq_pollitem_t it[2] = {{self->sock, 0, ZMQ_POLLIN, 0}, {NULL, self->wake_fd, ZMQ_POLLIN, 0}};
  *n = 0;
  int r = zmq_poll(it, 2, timeout_ms);
  if (r < 0) return zmq_errno() == EINTR ? 0 : -zmq_errno();
  uint64_t woken;
  if (it[1].revents & ZMQ_POLLIN) (void)!read(self->wake_fd, &woken, sizeof woken);
  while (*n < EXT_RESP_BATCH) {
    int rc = sq_zmq_recv_frame(self->sock, (size_t)self->max_bytes, ZMQ_DONTWAIT, &msgs[*n]);
    if (rc == 0) (*n)++;
    else if (rc == SQ_EPROTO || rc == SQ_ETOOBIG) (*bad)++; /* multi-part: all parts dropped */
    else return rc == -EAGAIN || rc == -EINTR ? 0 : rc;
  }
  return 0;
}

/* (response_id, type, body) of one frame, or NULL without an exception when the frame
 * is not a well-formed tagged Value (counted by the caller). NULL + exception only for
 * MemoryError. */
static PyObject *ext_resp__decode(ext_resp_t *self, zmq_msg_t *m) {
  ProtobufCMessage *pm = NULL;
  if (sq_proto_unpack(&value__descriptor, NULL, zmq_msg_data(m), zmq_msg_size(m),
                      (size_t)self->max_bytes, &pm))
    return NULL;
  Value *v = (Value *)pm;
  const char *rid = v->response_id ? v->response_id : "";
  PyObject *id = PyUnicode_DecodeUTF8(rid, (Py_ssize_t)strlen(rid), "strict"), *out = NULL;
  if (!id) {
    if (!PyErr_ExceptionMatches(PyExc_MemoryError)) PyErr_Clear();
  } else {
    const char *body = v->body.data ? (const char *)v->body.data : "";
    out = Py_BuildValue("(Niy#)", id, (int)v->type, body, (Py_ssize_t)v->body.len);
  }
  value__free_unpacked(v, NULL);
  return out;
}

/* Seconds (a non-negative finite number, or None = 0) -> ms for zmq_poll. 0 or -1. */
static int ext_resp__timeout(PyObject *obj, int *ms) {
  *ms = 0;
  if (!obj || obj == Py_None) return 0;
  double s = PyFloat_AsDouble(obj);
  if (s == -1.0 && PyErr_Occurred()) return -1;
  if (!isfinite(s) || s < 0 || s > 86400.0) {
    PyErr_SetString(PyExc_ValueError, "timeout must be a number of seconds in [0, 86400]");
    return -1;
  }
  *ms = (int)ceil(s * 1000.0);
  return 0;
}

static PyObject *ext_resp__build(ext_resp_t *self, zmq_msg_t *msgs, size_t n) {
  PyObject *out = PyList_New(0);
  for (size_t i = 0; i < n; i++) {
    PyObject *t = out ? ext_resp__decode(self, &msgs[i]) : NULL;
    zmq_msg_close(&msgs[i]);
    if (!out) continue;
    if (!t && PyErr_Occurred()) Py_CLEAR(out);
    else if (!t) self->malformed++;
    else if (PyList_Append(out, t) < 0) Py_CLEAR(out);
    else self->received++;
    Py_XDECREF(t);
  }
  return out;
}

static PyObject *ext_resp__recv(PyObject *op, PyObject *args, PyObject *kw) {
  ext_resp_t *self = (ext_resp_t *)op;
  static char *kwlist[] = {"timeout", NULL};
  PyObject *timeout = NULL;
  int ms, rc = 0;
  size_t n = 0;
  unsigned long long bad = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:recv", kwlist, &timeout)) return NULL;
  if (ext_resp__timeout(timeout, &ms) < 0) return NULL;
  zmq_msg_t *msgs = ext_resp__batch_lend(self);
  if (!msgs) return PyErr_NoMemory();
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(self->lock, WAIT_LOCK);
  if (self->sock) rc = ext_resp__take(self, ms, msgs, &n, &bad);
  else rc = SQ_ECLOSED;
  PyThread_release_lock(self->lock);
  Py_END_ALLOW_THREADS
  self->malformed += bad;
  PyObject *out = ext_resp__build(self, msgs, n);
  ext_resp__batch_return(self, msgs);
  if (out && rc) {
    Py_DECREF(out);
    return ext_error_raise(ext_resp__state(self), rc, "Responses.recv");
  }
  return out;
}

static PyObject *ext_resp__wake(PyObject *op, PyObject *unused) {
  (void)unused;
  ext_resp_t *self = (ext_resp_t *)op;
  uint64_t one = 1;
  if (self->wake_fd >= 0) (void)!write(self->wake_fd, &one, sizeof one);
  Py_RETURN_NONE;
}

static PyObject *ext_resp__close(PyObject *op, PyObject *unused) {
  (void)unused;
  ext_resp_t *self = (ext_resp_t *)op;
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(self->lock, WAIT_LOCK);
  ext_resp__close_locked(self);
  PyThread_release_lock(self->lock);
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

static PyObject *ext_resp__enter(PyObject *op, PyObject *unused) {
  (void)unused;
  return Py_NewRef(op);
}

static PyObject *ext_resp__exit(PyObject *op, PyObject *args) {
  (void)args;
  return ext_resp__close(op, NULL);
}

static PyObject *ext_resp__get(PyObject *op, void *which) {
  ext_resp_t *self = (ext_resp_t *)op;
  switch ((intptr_t)which) {
  case 0: return PyUnicode_FromString(self->address);
  case 1: return PyLong_FromUnsignedLongLong(self->received);
  case 2: return PyLong_FromUnsignedLongLong(self->malformed);
  default: return PyBool_FromLong(self->sock == NULL);
  }
}

static PyMethodDef ext_resp__methods[] = {
    {"recv", (PyCFunction)(void (*)(void))ext_resp__recv, METH_VARARGS | METH_KEYWORDS,
     "recv(timeout=0) -> [(response_id, type, body)]: every message available, waiting\n"
     "up to timeout seconds (without the GIL) for the first; [] when none came."},
    {"wake", ext_resp__wake, METH_NOARGS,
     "wake(): a recv waiting in another thread returns now (else the next one does)"},
    {"close", ext_resp__close, METH_NOARGS, "close(): unbinds; recv then raises"},
    {"__enter__", ext_resp__enter, METH_NOARGS, NULL},
    {"__exit__", ext_resp__exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ext_resp__getset[] = {
    {"address", ext_resp__get, NULL, "\"tcp://ip:port\": where executors push", (void *)0},
    {"received", ext_resp__get, NULL, "well-formed messages returned so far", (void *)1},
    {"malformed", ext_resp__get, NULL, "messages skipped as malformed", (void *)2},
    {"closed", ext_resp__get, NULL, "True after close()", (void *)3},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(ext_resp__doc,
             "Responses(ip, max_bytes=256 MiB)\n--\n\n"
             "A PULL socket bound on `ip` (a free port) for direct responses: executors push\n"
             "serialized Values tagged with a response_id. recv(timeout) returns\n"
             "[(response_id, type, body)]; malformed messages are counted, never raised.");

static PyType_Slot ext_resp__slots[] = {
    {Py_tp_new, ext_resp__new},
    {Py_tp_init, ext_resp__init},
    {Py_tp_dealloc, ext_resp__dealloc},
    {Py_tp_methods, ext_resp__methods},
    {Py_tp_getset, ext_resp__getset},
    {Py_tp_doc, (void *)ext_resp__doc},
    {0, NULL},
};

static PyType_Spec ext_resp__spec = {
    .name = "squall.Responses",
    .basicsize = sizeof(ext_resp_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = ext_resp__slots,
};

int ext_client_exec(PyObject *module) {
  PyObject *type = PyType_FromModuleAndSpec(module, &ext_resp__spec, NULL);
  if (!type) return -1;
  int rc = PyModule_AddObjectRef(module, "Responses", type);
  Py_DECREF(type);
  if (rc < 0 || ext_channel_exec(module) < 0) return -1;
  return ext_wire_exec(module);
}
