/* ext_kvs: squall.KvsClient, the KVS transport of the Python package (kvs/client.h).
 *
 *   KvsClient(routing, timeout=10.0, retries=2)
 *     .get(key, timeout=None) -> (type, payload)        .put(key, type, payload, timeout=None)
 *     .get_many(keys, timeout=None) -> [(type, payload) | None]
 *     .put_many([(key, type, payload), ...], timeout=None)
 *     .close()  .response_address  .client_id  .stats()  context manager
 *   request(endpoint, payload, timeout=1.0) -> bytes   one REQ/REP exchange (the
 *     scheduler's text and protobuf ports: health checks, function lists)
 *
 * Payloads are encoded lattices (build them with encode_lww & co.), passed through
 * untouched. Keys are str (UTF-8 on the wire, no NUL characters).
 *
 * Errors (the exception text is the server's sentence when it sent one, else
 * sq_strerror's; every instance carries code, name, message and key):
 *
 *   SQ_EKEYDNE   -> KeyNotFoundError(SquallError, KeyError)
 *   SQ_ETIMEOUT  -> SquallTimeoutError(SquallError, TimeoutError)
 *   SQ_ELATTICE  -> LatticeError (the stored type differs, or the payload was refused)
 *   -ENOMEM      -> MemoryError;   anything else -> SquallError
 *
 * Threads and the GIL: a kvs_client_t belongs to one thread at a time, so each
 * KvsClient has a lock. A call takes the lock and talks to the network with the GIL
 * released; other Python threads run meanwhile, and a second thread using the same
 * KvsClient waits on the lock (also without the GIL). While the GIL is released only
 * C memory is touched: keys are UTF-8 buffers owned by str objects and payloads are
 * Py_buffer views, both kept alive by references the call holds.
 *
 * State machine: open --close()--> closed (client destroyed; every call then raises
 * SquallError SQ_ECLOSED). Deallocation closes.
 *
 * The type is a heap type made from the module (PyType_FromModuleAndSpec) and cannot
 * be subclassed, so PyType_GetModuleState(Py_TYPE(self)) is always our module state.
 */
#include "ext.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "client.h" /* kvs/client.h (squall_kvs_client) */
#include "sq_error.h"
#include "sq_zmq.h"

typedef struct {
  PyObject_HEAD
  kvs_client_t *client;     /* NULL once closed */
  PyThread_type_lock lock;  /* serialises use of `client` across threads */
  int timeout_ms;           /* per-attempt default */
  int retries;
} ext_kvs_t;

/* One key of a batch, as the C calls need it, plus the objects that keep it alive. */
typedef struct {
  const char *key;
  PyObject *key_obj;        /* borrowed from the caller's list/tuple */
  Py_buffer view;           /* put only: the payload */
  int has_view;
  sq_lattice_type_t type;
} ext_kvs_item_t;

static ext_state_t *ext_kvs__state(ext_kvs_t *self) {
  return (ext_state_t *)PyType_GetModuleState(Py_TYPE(self));
}

/* Raises the exception for `code` about `key` with `sentence` (the server's or the
 * client's; sq_strerror's when empty). Returns NULL. */
static PyObject *ext_kvs__raise(ext_state_t *st, int code, const char *key,
                                const char *sentence) {
  if (code == -ENOMEM) return PyErr_NoMemory();
  PyObject *cls = st->squall_error, *exc = NULL, *value = NULL;
  if (code == SQ_EKEYDNE) cls = st->key_not_found_error;
  else if (code == SQ_ETIMEOUT) cls = st->timeout_error;
  else if (code == SQ_ELATTICE || code == SQ_EBADLATTICE || code == SQ_EUNKNOWNTYPE)
    cls = st->lattice_error;
  const char *msg = (sentence && sentence[0]) ? sentence : sq_strerror(code);
  const char *name = sq_errname(code);
  exc = PyObject_CallFunction(cls, "N", key ? PyUnicode_FromFormat("%s: %s (%s)", key, msg, name)
                                            : PyUnicode_FromFormat("%s (%s)", msg, name));
  if (!exc) goto out;
  value = PyLong_FromLong(code);
  if (!value || PyObject_SetAttrString(exc, "code", value) < 0) goto out;
  Py_SETREF(value, PyUnicode_FromString(name));
  if (!value || PyObject_SetAttrString(exc, "name", value) < 0) goto out;
  Py_SETREF(value, PyUnicode_FromString(msg));
  if (!value || PyObject_SetAttrString(exc, "message", value) < 0) goto out;
  Py_SETREF(value, key ? PyUnicode_FromString(key) : Py_NewRef(Py_None));
  if (!value || PyObject_SetAttrString(exc, "key", value) < 0) goto out;
  PyErr_SetObject(cls, exc);
out:
  Py_XDECREF(value);
  Py_XDECREF(exc);
  return NULL;
}

/* Seconds (None or a non-negative finite number) -> milliseconds (>= 1) in *ms; None
 * leaves *ms alone. 0 or -1 (ValueError/TypeError). */
static int ext_kvs__timeout_arg(PyObject *obj, int *ms) {
  if (!obj || obj == Py_None) return 0;
  double s = PyFloat_AsDouble(obj);
  if (s == -1.0 && PyErr_Occurred()) return -1;
  if (!isfinite(s) || s <= 0 || s > 86400.0) {
    PyErr_SetString(PyExc_ValueError, "timeout must be a number of seconds in (0, 86400]");
    return -1;
  }
  *ms = s * 1000.0 < 1.0 ? 1 : (int)(s * 1000.0);
  return 0;
}

/* The UTF-8 of key `obj` (a str without NUL), valid while `obj` lives. NULL + error. */
static const char *ext_kvs__key(PyObject *obj) {
  if (!PyUnicode_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "key must be a str, not %.100s", Py_TYPE(obj)->tp_name);
    return NULL;
  }
  Py_ssize_t n;
  const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
  if (!s) return NULL;
  if (n == 0 || (size_t)n != strlen(s)) {
    PyErr_SetString(PyExc_ValueError, "key must be a non-empty str without NUL characters");
    return NULL;
  }
  return s;
}

/* Reads a storable lattice type. 0 or -1 (LatticeError). */
static int ext_kvs__type(ext_state_t *st, PyObject *obj, sq_lattice_type_t *type) {
  long v = PyLong_AsLong(obj);
  if (v == -1 && PyErr_Occurred()) return -1;
  if (v < 0 || v > SQ_LATTICE_TYPE_MAX || !sq_lattice_type_valid((int)v)) {
    ext_kvs__raise(st, SQ_EUNKNOWNTYPE, NULL, "not a storable lattice type");
    return -1;
  }
  *type = (sq_lattice_type_t)v;
  return 0;
}

/* Takes the object's lock without the GIL and checks it is open. 0, or -1 with
 * SquallError(SQ_ECLOSED) raised (the lock is then not held). */
static int ext_kvs__enter(ext_kvs_t *self) {
  if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
  }
  if (self->client) return 0;
  PyThread_release_lock(self->lock);
  ext_kvs__raise(ext_kvs__state(self), SQ_ECLOSED, NULL, "KvsClient is closed");
  return -1;
}

static int ext_kvs__init(PyObject *op, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"routing", "timeout", "retries", NULL};
  ext_kvs_t *self = (ext_kvs_t *)op;
  PyObject *routing = NULL, *timeout = NULL, *seq = NULL;
  const char **eps = NULL;
  int retries = KVS_CLIENT_DEFAULT_RETRIES, rc = -1, err;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Oi:KvsClient", kwlist, &routing, &timeout,
                                   &retries))
    return -1;
  if (self->client) {
    PyErr_SetString(PyExc_RuntimeError, "KvsClient is already initialised");
    return -1;
  }
  self->timeout_ms = KVS_CLIENT_DEFAULT_TIMEOUT_MS;
  if (ext_kvs__timeout_arg(timeout, &self->timeout_ms) < 0) return -1;
  self->retries = retries < 0 ? 0 : retries;
  seq = PyUnicode_Check(routing) ? PyTuple_Pack(1, routing)
                                 : PySequence_Fast(routing, "routing must be a str or a list of str");
  if (!seq) goto out;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  if (n < 1 || n > 64) {
    PyErr_SetString(PyExc_ValueError, "routing needs 1 to 64 endpoints");
    goto out;
  }
  if (!(eps = PyMem_Calloc((size_t)n, sizeof *eps))) {
    PyErr_NoMemory();
    goto out;
  }
  for (Py_ssize_t i = 0; i < n; i++)
    if (!(eps[i] = ext_kvs__key(PySequence_Fast_GET_ITEM(seq, i)))) goto out;
  kvs_client_options_t o = {.routing = eps, .nrouting = (size_t)n,
                            .timeout_ms = self->timeout_ms, .retries = self->retries};
  Py_BEGIN_ALLOW_THREADS
  err = kvs_client_create(&o, &self->client);
  Py_END_ALLOW_THREADS
  if (err != 0) {
    self->client = NULL;
    ext_kvs__raise(ext_kvs__state(self), err, NULL, "cannot create the KVS client");
    goto out;
  }
  rc = 0;
out:
  PyMem_Free(eps);
  Py_XDECREF(seq);
  return rc;
}

static PyObject *ext_kvs__new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  ext_kvs_t *self = (ext_kvs_t *)type->tp_alloc(type, 0);
  if (!self) return NULL;
  if (!(self->lock = PyThread_allocate_lock())) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  return (PyObject *)self;
}

static void ext_kvs__dealloc(PyObject *op) {
  ext_kvs_t *self = (ext_kvs_t *)op;
  PyTypeObject *tp = Py_TYPE(op);
  kvs_client_destroy(self->client); /* nobody else can hold a reference now */
  if (self->lock) PyThread_free_lock(self->lock);
  tp->tp_free(op);
  Py_DECREF(tp);
}

PyDoc_STRVAR(ext_kvs__close_doc, "close()\n--\n\nClose the sockets. Idempotent.");

static PyObject *ext_kvs__close(PyObject *op, PyObject *unused) {
  ext_kvs_t *self = (ext_kvs_t *)op;
  if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
  }
  kvs_client_t *c = self->client;
  self->client = NULL;
  Py_BEGIN_ALLOW_THREADS
  kvs_client_destroy(c);
  Py_END_ALLOW_THREADS
  PyThread_release_lock(self->lock);
  Py_RETURN_NONE;
}

PyDoc_STRVAR(ext_kvs__get_doc,
             "get(key, timeout=None)\n--\n\n"
             "Read `key`: returns (lattice type, payload bytes). Raises KeyNotFoundError,\n"
             "SquallTimeoutError (after the retries), LatticeError or SquallError.");

static PyObject *ext_kvs__get(PyObject *op, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"key", "timeout", NULL};
  ext_kvs_t *self = (ext_kvs_t *)op;
  PyObject *key_obj, *timeout = NULL, *res = NULL, *bytes = NULL;
  kvs_client_limits_t lim = {.timeout_ms = self->timeout_ms, .retries = -1};
  sq_lattice_type_t type = SQ_LATTICE_NONE;
  uint8_t *payload = NULL;
  size_t len = 0;
  int err;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "U|O:get", kwlist, &key_obj, &timeout)) return NULL;
  const char *key = ext_kvs__key(key_obj);
  if (!key || ext_kvs__timeout_arg(timeout, &lim.timeout_ms) < 0) return NULL;
  if (ext_kvs__enter(self) < 0) return NULL;
  Py_BEGIN_ALLOW_THREADS
  err = kvs_client_get(self->client, key, &lim, &type, &payload, &len);
  Py_END_ALLOW_THREADS
  if (err != 0) {
    ext_kvs__raise(ext_kvs__state(self), err, key, kvs_client_message(self->client));
    goto out;
  }
  if (!(bytes = PyBytes_FromStringAndSize((const char *)payload, (Py_ssize_t)len))) goto out;
  res = Py_BuildValue("(iO)", (int)type, bytes);
out:
  PyThread_release_lock(self->lock);
  free(payload);
  Py_XDECREF(bytes);
  return res;
}

PyDoc_STRVAR(ext_kvs__put_doc,
             "put(key, type, payload, timeout=None)\n--\n\n"
             "Merge `payload` (an encoded lattice of `type`) into `key`; returns once the\n"
             "server acknowledged it (durably, under --durability fsync). Raises\n"
             "LatticeError when the server refuses the type or payload, SquallTimeoutError.");

static PyObject *ext_kvs__put(PyObject *op, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"key", "type", "payload", "timeout", NULL};
  ext_kvs_t *self = (ext_kvs_t *)op;
  ext_state_t *st = ext_kvs__state(self);
  PyObject *key_obj, *type_obj, *timeout = NULL, *res = NULL;
  Py_buffer view;
  kvs_client_limits_t lim = {.timeout_ms = self->timeout_ms, .retries = -1};
  sq_lattice_type_t type;
  int err;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "UOy*|O:put", kwlist, &key_obj, &type_obj, &view,
                                   &timeout))
    return NULL;
  const char *key = ext_kvs__key(key_obj);
  if (!key || ext_kvs__type(st, type_obj, &type) < 0 ||
      ext_kvs__timeout_arg(timeout, &lim.timeout_ms) < 0)
    goto out;
  if (ext_kvs__enter(self) < 0) goto out;
  Py_BEGIN_ALLOW_THREADS
  err = kvs_client_put(self->client, key, type, view.buf, (size_t)view.len, &lim);
  Py_END_ALLOW_THREADS
  if (err != 0) ext_kvs__raise(st, err, key, kvs_client_message(self->client));
  else res = Py_NewRef(Py_None);
  PyThread_release_lock(self->lock);
out:
  PyBuffer_Release(&view);
  return res;
}

/* Fills items[i].key (and, for puts, type and payload view) from `seq`; on error the
 * views taken so far stay recorded in items for ext_kvs__items_free. 0 or -1. */
static int ext_kvs__items_fill(ext_state_t *st, PyObject *seq, ext_kvs_item_t *items,
                               Py_ssize_t n, int is_put) {
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *it = PySequence_Fast_GET_ITEM(seq, i), *type_obj, *payload;
    if (is_put) {
      if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 3) {
        PyErr_SetString(PyExc_TypeError, "put_many takes (key, type, payload) tuples");
        return -1;
      }
      items[i].key_obj = PyTuple_GET_ITEM(it, 0);
      type_obj = PyTuple_GET_ITEM(it, 1);
      payload = PyTuple_GET_ITEM(it, 2);
      if (ext_kvs__type(st, type_obj, &items[i].type) < 0) return -1;
      if (PyObject_GetBuffer(payload, &items[i].view, PyBUF_SIMPLE) < 0) return -1;
      items[i].has_view = 1;
    } else {
      items[i].key_obj = it;
    }
    if (!(items[i].key = ext_kvs__key(items[i].key_obj))) return -1;
  }
  return 0;
}

static void ext_kvs__items_free(ext_kvs_item_t *items, Py_ssize_t n) {
  for (Py_ssize_t i = 0; items && i < n; i++)
    if (items[i].has_view) PyBuffer_Release(&items[i].view);
  PyMem_Free(items);
}

/* The list get_many returns: (type, payload) per key, None for a missing key; raises
 * the first other error. NULL + exception. */
static PyObject *ext_kvs__many_result(ext_state_t *st, ext_kvs_item_t *items,
                                      kvs_client_result_t *r, Py_ssize_t n, int is_put) {
  for (Py_ssize_t i = 0; i < n; i++)
    if (r[i].err != 0 && !(r[i].err == SQ_EKEYDNE && !is_put))
      return ext_kvs__raise(st, r[i].err, items[i].key, r[i].message);
  if (is_put) Py_RETURN_NONE;
  PyObject *list = PyList_New(n);
  for (Py_ssize_t i = 0; list && i < n; i++) {
    PyObject *v = r[i].err != 0 ? Py_NewRef(Py_None)
                                : Py_BuildValue("(iy#)", (int)r[i].type, (const char *)r[i].payload,
                                                (Py_ssize_t)r[i].len);
    if (!v) Py_CLEAR(list);
    else PyList_SET_ITEM(list, i, v);
  }
  return list;
}

/* get_many / put_many: one batch through kvs_client_get_many/put_many. */
static PyObject *ext_kvs__many(ext_kvs_t *self, PyObject *arg, PyObject *timeout, int is_put) {
  ext_state_t *st = ext_kvs__state(self);
  PyObject *seq = NULL, *res = NULL;
  ext_kvs_item_t *items = NULL;
  kvs_client_result_t *r = NULL;
  kvs_client_limits_t lim = {.timeout_ms = self->timeout_ms, .retries = -1};
  const char **keys = NULL;
  kvs_client_kv_t *kvs = NULL;
  Py_ssize_t n = 0;
  if (ext_kvs__timeout_arg(timeout, &lim.timeout_ms) < 0) return NULL;
  if (!(seq = PySequence_Fast(arg, "expected a list of keys or (key, type, payload)"))) return NULL;
  n = PySequence_Fast_GET_SIZE(seq);
  if (n > KVS_CLIENT_MAX_BATCH) {
    PyErr_Format(PyExc_ValueError, "at most %d keys per call", KVS_CLIENT_MAX_BATCH);
    goto out;
  }
  if (n == 0) {
    res = is_put ? Py_NewRef(Py_None) : PyList_New(0);
    goto out;
  }
  items = PyMem_Calloc((size_t)n, sizeof *items);
  r = PyMem_Calloc((size_t)n, sizeof *r);
  keys = PyMem_Calloc((size_t)n, sizeof *keys);
  kvs = PyMem_Calloc((size_t)n, sizeof *kvs);
  if (!items || !r || !keys || !kvs) {
    PyErr_NoMemory();
    goto out;
  }
  if (ext_kvs__items_fill(st, seq, items, n, is_put) < 0) goto out;
  for (Py_ssize_t i = 0; i < n; i++) {
    keys[i] = items[i].key;
    kvs[i] = (kvs_client_kv_t){items[i].key, items[i].type, is_put ? items[i].view.buf : NULL,
                               is_put ? (size_t)items[i].view.len : 0};
  }
  if (ext_kvs__enter(self) < 0) goto out;
  Py_BEGIN_ALLOW_THREADS
  if (is_put) (void)kvs_client_put_many(self->client, kvs, (size_t)n, &lim, r);
  else (void)kvs_client_get_many(self->client, keys, (size_t)n, &lim, r);
  Py_END_ALLOW_THREADS
  PyThread_release_lock(self->lock);
  res = ext_kvs__many_result(st, items, r, n, is_put);
out:
  for (Py_ssize_t i = 0; r && i < n; i++) kvs_client_result_clear(&r[i]);
  ext_kvs__items_free(items, n);
  PyMem_Free(r);
  PyMem_Free(keys);
  PyMem_Free(kvs);
  Py_XDECREF(seq);
  return res;
}

PyDoc_STRVAR(ext_kvs__get_many_doc,
             "get_many(keys, timeout=None)\n--\n\n"
             "Read a batch (one request per server): a list with (type, payload) for each\n"
             "key, None where the key does not exist. Other errors raise (the first one).");

static PyObject *ext_kvs__get_many(PyObject *op, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"keys", "timeout", NULL};
  PyObject *keys, *timeout = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:get_many", kwlist, &keys, &timeout)) return NULL;
  return ext_kvs__many((ext_kvs_t *)op, keys, timeout, 0);
}

PyDoc_STRVAR(ext_kvs__put_many_doc,
             "put_many(items, timeout=None)\n--\n\n"
             "Write a batch of (key, type, payload) tuples (one request per server).\n"
             "Raises the first key's error if any key failed (the others may be stored).");

static PyObject *ext_kvs__put_many(PyObject *op, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"items", "timeout", NULL};
  PyObject *items, *timeout = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:put_many", kwlist, &items, &timeout))
    return NULL;
  return ext_kvs__many((ext_kvs_t *)op, items, timeout, 1);
}

PyDoc_STRVAR(ext_kvs__stats_doc,
             "stats()\n--\n\nThe client's counters: a dict of routing_requests, key_requests,\n"
             "timeouts, redirects, dropped_replies, send_failures.");

static PyObject *ext_kvs__stats(PyObject *op, PyObject *unused) {
  ext_kvs_t *self = (ext_kvs_t *)op;
  kvs_client_stats_t s;
  if (ext_kvs__enter(self) < 0) return NULL;
  kvs_client_stats(self->client, &s);
  PyThread_release_lock(self->lock);
  return Py_BuildValue("{sKsKsKsKsKsK}", "routing_requests", (unsigned long long)s.routing_requests,
                       "key_requests", (unsigned long long)s.key_requests, "timeouts",
                       (unsigned long long)s.timeouts, "redirects", (unsigned long long)s.redirects,
                       "dropped_replies", (unsigned long long)s.dropped_replies, "send_failures",
                       (unsigned long long)s.send_failures);
}

/* Getter of response_address / client_id (closure 0 / 1). */
static PyObject *ext_kvs__get_str(PyObject *op, void *which) {
  ext_kvs_t *self = (ext_kvs_t *)op;
  if (ext_kvs__enter(self) < 0) return NULL;
  PyObject *s = PyUnicode_FromString(which ? kvs_client_id(self->client)
                                           : kvs_client_response_address(self->client));
  PyThread_release_lock(self->lock);
  return s;
}

static PyObject *ext_kvs__enter_ctx(PyObject *op, PyObject *unused) { return Py_NewRef(op); }

static PyObject *ext_kvs__exit_ctx(PyObject *op, PyObject *args) { return ext_kvs__close(op, NULL); }

static PyMethodDef ext_kvs__methods[] = {
    {"get", (PyCFunction)(void (*)(void))ext_kvs__get, METH_VARARGS | METH_KEYWORDS, ext_kvs__get_doc},
    {"put", (PyCFunction)(void (*)(void))ext_kvs__put, METH_VARARGS | METH_KEYWORDS, ext_kvs__put_doc},
    {"get_many", (PyCFunction)(void (*)(void))ext_kvs__get_many, METH_VARARGS | METH_KEYWORDS,
     ext_kvs__get_many_doc},
    {"put_many", (PyCFunction)(void (*)(void))ext_kvs__put_many, METH_VARARGS | METH_KEYWORDS,
     ext_kvs__put_many_doc},
    {"stats", ext_kvs__stats, METH_NOARGS, ext_kvs__stats_doc},
    {"close", ext_kvs__close, METH_NOARGS, ext_kvs__close_doc},
    {"__enter__", ext_kvs__enter_ctx, METH_NOARGS, NULL},
    {"__exit__", ext_kvs__exit_ctx, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ext_kvs__getset[] = {
    {"response_address", ext_kvs__get_str, NULL, "where servers send replies", (void *)0},
    {"client_id", ext_kvs__get_str, NULL, "prefix of the request ids", (void *)1},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(ext_kvs__doc,
             "KvsClient(routing, timeout=10.0, retries=2)\n--\n\n"
             "A client of squall-kvs (Anna's protocol). `routing` is the routing endpoint\n"
             "(\"tcp://127.0.0.1:6450\") or a list of them; `timeout` is seconds per attempt,\n"
             "`retries` the attempts after a timeout. Calls release the GIL while waiting.\n"
             "Payloads are encoded lattices (encode_lww & co.).");

static PyType_Slot ext_kvs__slots[] = {
    {Py_tp_new, ext_kvs__new},
    {Py_tp_init, ext_kvs__init},
    {Py_tp_dealloc, ext_kvs__dealloc},
    {Py_tp_methods, ext_kvs__methods},
    {Py_tp_getset, ext_kvs__getset},
    {Py_tp_doc, (void *)ext_kvs__doc},
    {0, NULL},
};

static PyType_Spec ext_kvs__spec = {
    .name = "squall.KvsClient",
    .basicsize = sizeof(ext_kvs_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = ext_kvs__slots,
};

#define EXT_REQ_MAX_REPLY (64 << 20) /* request(): larger replies are refused */

/* One REQ/REP exchange on a fresh context (sq_zmq's REQ socket and frame receive);
 * runs without the GIL. On 0, *reply holds the reply frame (caller closes it; it
 * outlives the context). SQ_ETIMEOUT, SQ_ETOOBIG, SQ_EPROTO, -errno. */
static int ext__req(const char *endpoint, const void *msg, size_t len, int timeout_ms,
                    zmq_msg_t *reply) {
  void *ctx = zmq_ctx_new(), *sock = NULL;
  int rc = -ENOMEM;
  if (!ctx) return rc;
  if ((rc = sq_zmq_req_connect(ctx, endpoint, timeout_ms, EXT_REQ_MAX_REPLY, &sock))) goto out;
  if (zmq_send(sock, msg, len, 0) < 0) rc = -zmq_errno(); /* waits up to SNDTIMEO */
  else rc = sq_zmq_recv_frame(sock, EXT_REQ_MAX_REPLY, 0, reply);
  if (rc == -EAGAIN) rc = SQ_ETIMEOUT;
out:
  if (sock) zmq_close(sock);
  zmq_ctx_term(ctx);
  return rc;
}

PyDoc_STRVAR(ext__request_doc,
             "request(endpoint, payload, timeout=1.0)\n--\n\n"
             "Send `payload` on a REQ socket to `endpoint` and return the reply (bytes).\n"
             "Raises SquallTimeoutError when no reply comes within `timeout` seconds.");

static PyObject *ext__request(PyObject *module, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"endpoint", "payload", "timeout", NULL};
  const char *endpoint;
  PyObject *timeout = NULL, *res = NULL;
  Py_buffer view;
  zmq_msg_t reply;
  int ms = 1000, rc;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "sy*|O:request", kwlist, &endpoint, &view, &timeout))
    return NULL;
  if (ext_kvs__timeout_arg(timeout, &ms) < 0) goto out;
  Py_BEGIN_ALLOW_THREADS
  rc = ext__req(endpoint, view.buf, (size_t)view.len, ms, &reply);
  Py_END_ALLOW_THREADS
  if (rc != 0) {
    ext_kvs__raise(ext_state(module), rc, endpoint, NULL);
  } else {
    res = PyBytes_FromStringAndSize(zmq_msg_data(&reply), (Py_ssize_t)zmq_msg_size(&reply));
    zmq_msg_close(&reply);
  }
out:
  PyBuffer_Release(&view);
  return res;
}

static PyMethodDef ext_kvs__module_methods[] = {
    {"request", (PyCFunction)(void (*)(void))ext__request, METH_VARARGS | METH_KEYWORDS,
     ext__request_doc},
    {NULL, NULL, 0, NULL},
};

/* A new exception class `name` with bases `bases`, whose str() is the message alone
 * (KeyError would quote it) and whose code/name/message/key default to None. */
static PyObject *ext_kvs__error_class(const char *name, const char *doc, PyObject *bases) {
  PyObject *dict = PyDict_New(), *cls = NULL, *str = NULL;
  if (!dict) return NULL;
  if (!(str = PyObject_GetAttrString(PyExc_BaseException, "__str__"))) goto out;
  if (PyDict_SetItemString(dict, "__str__", str) < 0) goto out;
  static const char *const attrs[] = {"code", "name", "message", "key"};
  for (size_t i = 0; i < sizeof attrs / sizeof *attrs; i++)
    if (PyDict_SetItemString(dict, attrs[i], Py_None) < 0) goto out;
  cls = PyErr_NewExceptionWithDoc(name, doc, bases, dict);
out:
  Py_XDECREF(str);
  Py_DECREF(dict);
  return cls;
}

int ext_kvs_exec(PyObject *module, ext_state_t *st) {
  PyObject *bases = NULL, *type = NULL;
  int rc = -1;
  if (!(bases = PyTuple_Pack(2, st->squall_error, PyExc_KeyError))) goto out;
  st->key_not_found_error = ext_kvs__error_class(
      "squall.KeyNotFoundError", "The key does not exist in the KVS (also a KeyError).", bases);
  if (!st->key_not_found_error) goto out;
  Py_SETREF(bases, PyTuple_Pack(2, st->squall_error, PyExc_TimeoutError));
  if (!bases) goto out;
  st->timeout_error = ext_kvs__error_class(
      "squall.SquallTimeoutError",
      "No reply in time, after the retries (also a TimeoutError). Is the cluster running?",
      bases);
  if (!st->timeout_error) goto out;
  if (PyModule_AddObjectRef(module, "KeyNotFoundError", st->key_not_found_error) < 0) goto out;
  if (PyModule_AddObjectRef(module, "SquallTimeoutError", st->timeout_error) < 0) goto out;
  if (!(type = PyType_FromModuleAndSpec(module, &ext_kvs__spec, NULL))) goto out;
  if (PyModule_AddObjectRef(module, "KvsClient", type) < 0) goto out;
  rc = PyModule_AddFunctions(module, ext_kvs__module_methods);
out:
  Py_XDECREF(type);
  Py_XDECREF(bases);
  return rc;
}
