/* ext_channel: squall.Channel, a kept request/reply connection to one REP endpoint
 * (the scheduler's ports), so that a call costs one round trip and not a ZeroMQ
 * context, a TCP connect and a handshake as request() does.
 *
 *   Channel(endpoint, max_bytes=64 MiB)
 *     .request(payload, timeout=30.0) -> bytes     .close()   .endpoint
 *     .send(payload) -> seq      .replies() -> [(seq, bytes)]    (pipelined use)
 *
 * Framing: a DEALER socket speaks to the REP socket as a REQ would, with one extra
 * envelope frame before the empty delimiter: an 8-byte sequence number, which REP
 * echoes back. A reply whose number is not the one awaited is a late answer to an
 * earlier request that timed out, and is dropped -- unlike a REQ socket, which is
 * stuck after a timeout, and unlike a bare DEALER, which would hand the late reply to
 * the next caller. Replies are untrusted: size-limited (ZMQ_MAXMSGSIZE: a larger one
 * drops the connection, and the request times out) and checked for their shape.
 *
 * Pipelined use: send() queues a request without waiting and returns its sequence
 * number; replies() takes every reply that has arrived, without waiting, as (seq,
 * reply) pairs in arrival order (REP answers one peer's requests in order). Use a
 * channel either one way or the other: request() drops replies it did not ask for.
 *
 * Threads: one lock per object; request() holds it, without the GIL, for the whole
 * exchange, so concurrent callers are served one after the other; send() keeps the
 * GIL unless it has to wait for the lock, and never waits on the network; replies()
 * only tries it (a channel busy in request() has no pipelined replies). State machine:
 * open --close()--> closed (request raises SquallError SQ_ECLOSED). Deallocation
 * closes. A heap type of the module, not subclassable.
 */
#include "ext.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "sq_error.h"
#include "sq_time.h"

#define EXT_CHAN_DEFAULT_MAX ((int64_t)64 << 20)

typedef struct {
  PyObject_HEAD
  void *zctx; /* NULL once closed */
  void *sock;
  PyThread_type_lock lock;
  uint64_t seq;
  int64_t max_bytes;
  char endpoint[300];
} ext_chan_t;

static ext_state_t *ext_chan__state(ext_chan_t *self) {
  return (ext_state_t *)PyType_GetModuleState(Py_TYPE(self));
}

static void ext_chan__close_locked(ext_chan_t *self) {
  if (self->sock) zmq_close(self->sock);
  if (self->zctx) zmq_ctx_term(self->zctx);
  self->sock = self->zctx = NULL;
}

static int ext_chan__open(ext_chan_t *self) {
  int zero = 0;
  if (!(self->zctx = zmq_ctx_new())) return -errno;
  if (!(self->sock = zmq_socket(self->zctx, ZMQ_DEALER))) return -zmq_errno();
  if (zmq_setsockopt(self->sock, ZMQ_LINGER, &zero, sizeof(zero)) ||
      zmq_setsockopt(self->sock, ZMQ_MAXMSGSIZE, &self->max_bytes, sizeof(self->max_bytes)) ||
      zmq_connect(self->sock, self->endpoint))
    return -zmq_errno();
  return 0;
}

static int ext_chan__init(PyObject *op, PyObject *args, PyObject *kw) {
  ext_chan_t *self = (ext_chan_t *)op;
  static char *kwlist[] = {"endpoint", "max_bytes", NULL};
  const char *ep;
  long long max_bytes = EXT_CHAN_DEFAULT_MAX;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "s|L:Channel", kwlist, &ep, &max_bytes)) return -1;
  if (self->zctx || strlen(ep) >= sizeof(self->endpoint) || max_bytes < 1024) {
    PyErr_SetString(PyExc_ValueError, self->zctx ? "Channel is already open"
                                                 : "endpoint too long or max_bytes < 1024");
    return -1;
  }
  snprintf(self->endpoint, sizeof(self->endpoint), "%s", ep);
  self->max_bytes = max_bytes;
  int rc = ext_chan__open(self);
  if (rc) {
    ext_chan__close_locked(self);
    ext_error_raise(ext_chan__state(self), rc, "Channel: cannot connect");
    return -1;
  }
  return 0;
}

static PyObject *ext_chan__new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  (void)args;
  (void)kw;
  ext_chan_t *self = (ext_chan_t *)type->tp_alloc(type, 0);
  if (self && !(self->lock = PyThread_allocate_lock())) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  return (PyObject *)self;
}

static void ext_chan__dealloc(PyObject *op) {
  ext_chan_t *self = (ext_chan_t *)op;
  PyTypeObject *tp = Py_TYPE(op);
  ext_chan__close_locked(self);
  if (self->lock) PyThread_free_lock(self->lock);
  tp->tp_free(op);
  Py_DECREF(tp);
}

/* Receives one whole message without waiting; 0 with *got = its sequence number and
 * *body = its body frame (caller closes it) when it is [seq, "", body], SQ_EPROTO for
 * any other shape (dropped), -EAGAIN when none is queued, -errno on a socket error. */
static int ext_chan__recv_one(ext_chan_t *self, uint64_t *got, zmq_msg_t *body) {
  zmq_msg_t m[3];
  int n = 0, more = 1, rc = 0;
  while (more) {
    zmq_msg_t *f = &m[n < 3 ? n : 2];
    if (n >= 3) zmq_msg_close(f); /* too many frames: keep reading, then refuse */
    zmq_msg_init(f);
    if (zmq_msg_recv(f, self->sock, ZMQ_DONTWAIT) < 0) {
      rc = -zmq_errno();
      if (n >= 3) n = 3; /* f = m[2], still open: closed below with the others */
      else zmq_msg_close(f);
      break;
    }
    more = zmq_msg_more(f);
    n++;
  }
  if (!rc && (n != 3 || zmq_msg_size(&m[0]) != sizeof(*got) || zmq_msg_size(&m[1]) != 0))
    rc = SQ_EPROTO;
  if (!rc) {
    memcpy(got, zmq_msg_data(&m[0]), sizeof(*got));
    zmq_msg_init(body);
    zmq_msg_move(body, &m[2]); /* m[2] is left empty; closed below */
  }
  for (int i = 0; i < (n < 3 ? n : 3); i++) zmq_msg_close(&m[i]);
  return rc;
}

/* Queues [seq, "", msg] under a new sequence number *seq. 0, SQ_ETIMEOUT (the queue
 * is full), -errno. Under the lock. */
static int ext_chan__send(ext_chan_t *self, const void *msg, size_t len, uint64_t *seq) {
  *seq = ++self->seq;
  if (zmq_send(self->sock, seq, sizeof(*seq), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(self->sock, "", 0, ZMQ_SNDMORE) < 0 || zmq_send(self->sock, msg, len, 0) < 0)
    return zmq_errno() == EAGAIN ? SQ_ETIMEOUT : -zmq_errno();
  return 0;
}

/* One exchange; runs without the GIL under the lock. 0 with *reply the reply frame
 * (caller closes it), SQ_ETIMEOUT, -errno. */
static int ext_chan__exchange(ext_chan_t *self, const void *msg, size_t len, int timeout_ms,
                              zmq_msg_t *reply) {
  uint64_t seq, got;
  int64_t until = (int64_t)sq_now_ms() + timeout_ms;
  int rc = ext_chan__send(self, msg, len, &seq);
  if (rc) return rc;
  for (;;) {
    int64_t left = until - (int64_t)sq_now_ms();
    if (left <= 0) return SQ_ETIMEOUT;
    zmq_pollitem_t it = {self->sock, 0, ZMQ_POLLIN, 0};
    int r = zmq_poll(&it, 1, (long)left);
    if (r < 0 && zmq_errno() != EINTR) return -zmq_errno();
    if (r <= 0) continue;
    rc = ext_chan__recv_one(self, &got, reply);
    if (!rc && got == seq) return 0;
    if (!rc) zmq_msg_close(reply); /* a late reply to an earlier request */
    else if (rc != SQ_EPROTO && rc != -EAGAIN) return rc;
  }
}

static PyObject *ext_chan__request(PyObject *op, PyObject *args, PyObject *kw) {
  ext_chan_t *self = (ext_chan_t *)op;
  static char *kwlist[] = {"payload", "timeout", NULL};
  Py_buffer view;
  double timeout = 30.0;
  zmq_msg_t reply;
  int rc;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|d:request", kwlist, &view, &timeout))
    return NULL;
  if (!isfinite(timeout) || timeout <= 0 || timeout > 86400.0) {
    PyBuffer_Release(&view);
    PyErr_SetString(PyExc_ValueError, "timeout must be a number of seconds in (0, 86400]");
    return NULL;
  }
  int ms = timeout * 1000.0 < 1.0 ? 1 : (int)(timeout * 1000.0);
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(self->lock, WAIT_LOCK);
  rc = self->sock ? ext_chan__exchange(self, view.buf, (size_t)view.len, ms, &reply)
                  : SQ_ECLOSED;
  PyThread_release_lock(self->lock);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&view);
  ext_state_t *st = ext_chan__state(self);
  if (rc == SQ_ETIMEOUT)
    return PyErr_Format(st->timeout_error, "%s: no reply within %.3g s", self->endpoint, timeout);
  if (rc) return ext_error_raise(st, rc, self->endpoint);
  PyObject *out =
      PyBytes_FromStringAndSize(zmq_msg_data(&reply), (Py_ssize_t)zmq_msg_size(&reply));
  zmq_msg_close(&reply);
  return out;
}

static PyObject *ext_chan__send_py(PyObject *op, PyObject *arg) {
  ext_chan_t *self = (ext_chan_t *)op;
  Py_buffer view;
  uint64_t seq = 0;
  if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
  /* Keep the GIL when the lock is free (the usual case): giving it up for a send of a
   * few microseconds would hand it to another thread and wait to get it back. */
  if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
    Py_BEGIN_ALLOW_THREADS /* request() holds it while it waits */
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
  }
  int rc = self->sock ? ext_chan__send(self, view.buf, (size_t)view.len, &seq) : SQ_ECLOSED;
  PyThread_release_lock(self->lock);
  PyBuffer_Release(&view);
  if (rc) return ext_error_raise(ext_chan__state(self), rc, self->endpoint);
  return PyLong_FromUnsignedLongLong(seq);
}

/* Appends (seq, reply) to out for every well-formed reply queued. 0 or -1. */
static int ext_chan__drain(ext_chan_t *self, PyObject *out) {
  for (;;) {
    uint64_t seq;
    zmq_msg_t reply;
    int rc = ext_chan__recv_one(self, &seq, &reply);
    if (rc == SQ_EPROTO) continue;
    if (rc) return 0; /* -EAGAIN: nothing more; a socket error shows on the next send */
    const char *body = zmq_msg_data(&reply);
    PyObject *t = Py_BuildValue("(Ky#)", (unsigned long long)seq, body,
                                (Py_ssize_t)zmq_msg_size(&reply));
    zmq_msg_close(&reply);
    if (!t || PyList_Append(out, t) < 0) {
      Py_XDECREF(t);
      return -1;
    }
    Py_DECREF(t);
  }
}

static PyObject *ext_chan__replies(PyObject *op, PyObject *unused) {
  (void)unused;
  ext_chan_t *self = (ext_chan_t *)op;
  PyObject *out = PyList_New(0);
  if (!out) return NULL;
  if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) return out; /* request() waits */
  int rc = self->sock ? ext_chan__drain(self, out) : 0;
  PyThread_release_lock(self->lock);
  if (rc < 0) Py_CLEAR(out);
  return out;
}

static PyObject *ext_chan__close(PyObject *op, PyObject *unused) {
  (void)unused;
  ext_chan_t *self = (ext_chan_t *)op;
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(self->lock, WAIT_LOCK);
  ext_chan__close_locked(self);
  PyThread_release_lock(self->lock);
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

static PyObject *ext_chan__endpoint(PyObject *op, void *unused) {
  (void)unused;
  return PyUnicode_FromString(((ext_chan_t *)op)->endpoint);
}

static PyMethodDef ext_chan__methods[] = {
    {"request", (PyCFunction)(void (*)(void))ext_chan__request, METH_VARARGS | METH_KEYWORDS,
     "request(payload, timeout=30.0) -> bytes: one exchange; SquallTimeoutError when no\n"
     "reply comes in time (a late one is dropped)."},
    {"send", ext_chan__send_py, METH_O,
     "send(payload) -> seq: queues a request without waiting for its reply"},
    {"replies", ext_chan__replies, METH_NOARGS,
     "replies() -> [(seq, reply)]: every reply that has arrived, without waiting"},
    {"close", ext_chan__close, METH_NOARGS, "close(): disconnects; request then raises"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ext_chan__getset[] = {
    {"endpoint", ext_chan__endpoint, NULL, "the REP endpoint", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(ext_chan__doc,
             "Channel(endpoint, max_bytes=64 MiB)\n--\n\n"
             "A kept connection to a REP endpoint: request(payload, timeout) -> reply bytes,\n"
             "one exchange at a time, the GIL released while waiting.");

static PyType_Slot ext_chan__slots[] = {
    {Py_tp_new, ext_chan__new},         {Py_tp_init, ext_chan__init},
    {Py_tp_dealloc, ext_chan__dealloc}, {Py_tp_methods, ext_chan__methods},
    {Py_tp_getset, ext_chan__getset},   {Py_tp_doc, (void *)ext_chan__doc},
    {0, NULL},
};

static PyType_Spec ext_chan__spec = {
    .name = "squall.Channel",
    .basicsize = sizeof(ext_chan_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = ext_chan__slots,
};

int ext_channel_exec(PyObject *module) {
  PyObject *type = PyType_FromModuleAndSpec(module, &ext_chan__spec, NULL);
  if (!type) return -1;
  int rc = PyModule_AddObjectRef(module, "Channel", type);
  Py_DECREF(type);
  return rc;
}
