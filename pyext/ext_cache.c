/* ext_cache: zero-copy Python access to the node cache (cache/cache_reader.h).
 *
 *   r = CacheReader(dir)          opens the cache directory read-only
 *   r.get(key) -> object          one lookup, then pickle.loads over views of the cache
 *   r.lookup(key) -> (lattice_type, meta, stream, buffers)   the raw views
 *
 * Ownership chain (the heart of zero copy):
 *
 *   numpy array --base--> memoryview --obj--> _CacheView --owns--> cache_view_t
 *                                                              (segment mapping or
 *                                                               aligned inline copy)
 *
 * A _CacheView owns one cache_view_t and exports read-only buffers over its spans
 * (the stream, each out-of-band buffer); every memoryview made from it holds a
 * reference, so the view is released (cache_view_release) when the last memoryview
 * (and with it the last array built over one) is gone. An array built over the cache
 * is therefore read-only and keeps its mapping alive even after the writer replaced
 * or evicted the value (POSIX keeps an unlinked file's mapped pages).
 *
 * Which span a buffer request exports is chosen by `sel`, set just before each
 * PyMemoryView_FromObject under the GIL and reset to the pickle stream after it; a
 * memoryview(view_object) made by anyone else exports the stream. Buffers are never
 * writable (a PyBUF_WRITABLE request fails with BufferError).
 *
 * Threads: a cache_reader_t belongs to one thread at a time and cache_view_release
 * touches the reader's mapping table, so everything here runs with the GIL held (the
 * GIL is the reader's lock). The lookup itself is ~0.25 us warm; releasing and
 * re-taking the GIL around it would cost about as much and need a second lock.
 */
#include "ext.h"

#include <string.h>

#include "cache_reader.h"
#include "sq_error.h"

/* First byte of the cache meta squall-cache writes (cache/daemon_value.h): OBJECT
 * values are squall objects (pickle + buffers); RAW values hold a lattice payload that
 * is not one. Empty meta: a blob stored as is (e.g. by _CacheWriter), an object. */
#define EXT__META_OBJECT 1

typedef struct {
  PyObject_HEAD
  cache_view_t *view;
  Py_ssize_t sel; /* span exported by the next buffer request: -1 stream, else buffer i */
} ext_view_t;

typedef struct {
  PyObject_HEAD
  cache_reader_t *reader; /* NULL once closed */
  PyObject *loads;        /* pickle.loads */
  PyObject *kwnames;      /* ("buffers",) for the vectorcall */
} ext_reader_t;

/* ---- _CacheView: owner of one cache_view_t -------------------------------------- */

static int ext__view_getbuffer(PyObject *self, Py_buffer *b, int flags) {
  ext_view_t *v = (ext_view_t *)self;
  cache_span_t span = v->sel < 0 ? v->view->pickle : v->view->buffers[v->sel];
  if (flags & PyBUF_WRITABLE) {
    PyErr_SetString(PyExc_BufferError, "cached values are read-only");
    b->obj = NULL;
    return -1;
  }
  return PyBuffer_FillInfo(b, self, (void *)span.data, (Py_ssize_t)span.len, 1, flags);
}

static void ext__view_dealloc(PyObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  cache_view_release(((ext_view_t *)self)->view);
  tp->tp_free(self);
  Py_DECREF(tp);
}

static PyType_Slot ext__view_slots[] = {
    {Py_tp_dealloc, ext__view_dealloc},
    {Py_bf_getbuffer, ext__view_getbuffer},
    {Py_tp_doc, "Owner of one resolved cache value; memoryviews over it keep it alive."},
    {0, NULL},
};

static PyType_Spec ext__view_spec = {
    .name = "squall._squall._CacheView",
    .basicsize = sizeof(ext_view_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ext__view_slots,
};

/* A read-only memoryview over span `sel` of the view object. */
static PyObject *ext__view_span(ext_view_t *v, Py_ssize_t sel) {
  v->sel = sel;
  PyObject *mv = PyMemoryView_FromObject((PyObject *)v);
  v->sel = -1;
  return mv;
}

/* ---- CacheReader ----------------------------------------------------------------- */

static ext_state_t *ext__reader_state(PyObject *self) {
  return (ext_state_t *)PyType_GetModuleState(Py_TYPE(self));
}

/* Borrowed key bytes of `key` (bytes or str, UTF-8). 0 or -1 with TypeError. */
static int ext__key(PyObject *key, const char **data, Py_ssize_t *len) {
  if (PyBytes_Check(key)) {
    *data = PyBytes_AS_STRING(key);
    *len = PyBytes_GET_SIZE(key);
    return 0;
  }
  if (PyUnicode_Check(key)) {
    *data = PyUnicode_AsUTF8AndSize(key, len);
    return *data ? 0 : -1;
  }
  PyErr_Format(PyExc_TypeError, "cache key must be str or bytes, not %.100s",
               Py_TYPE(key)->tp_name);
  return -1;
}

/* Looks `key` up into a new _CacheView, or NULL with KeyError / the error raised. */
static ext_view_t *ext__reader_resolve(ext_reader_t *self, PyObject *key) {
  ext_state_t *st = ext__reader_state((PyObject *)self);
  const char *k;
  Py_ssize_t klen;
  cache_view_t *view = NULL;
  if (!self->reader) {
    PyErr_SetString(PyExc_ValueError, "CacheReader is closed");
    return NULL;
  }
  if (ext__key(key, &k, &klen) < 0) return NULL;
  int rc = cache_reader_lookup(self->reader, k, (size_t)klen, &view);
  if (rc == SQ_ENOTFOUND) {
    PyErr_SetObject(PyExc_KeyError, key);
    return NULL;
  }
  if (rc) return (ext_view_t *)ext_error_raise(st, rc, "CacheReader.get");
  ext_view_t *v = PyObject_New(ext_view_t, (PyTypeObject *)st->cache_view_type);
  if (!v) {
    cache_view_release(view);
    return NULL;
  }
  v->view = view;
  v->sel = -1;
  return v;
}

/* [memoryview of buffer 0, ...] over v. */
static PyObject *ext__view_buffers(ext_view_t *v) {
  size_t n = v->view->nbuffers;
  PyObject *list = PyList_New((Py_ssize_t)n);
  if (!list) return NULL;
  for (size_t i = 0; i < n; i++) {
    PyObject *mv = ext__view_span(v, (Py_ssize_t)i);
    if (!mv) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, mv);
  }
  return list;
}

PyDoc_STRVAR(ext__reader_get_doc,
             "get(key) -> object\n\n"
             "Resolves `key` (str or bytes) from the node cache and unpickles it over the\n"
             "cached bytes: out-of-band buffers (NumPy arrays) are read-only views of the\n"
             "shared mapping, not copies. Raises KeyError when the key is not cached (ask\n"
             "the squall-cache daemon to fetch it), ValueError when the cached value is a\n"
             "raw lattice payload rather than a squall object (see lookup()), SquallError\n"
             "for a damaged entry.");

static PyObject *ext__reader_get(PyObject *self, PyObject *key) {
  ext_reader_t *r = (ext_reader_t *)self;
  PyObject *stream = NULL, *bufs = NULL, *res = NULL;
  ext_view_t *v = ext__reader_resolve(r, key);
  if (!v) return NULL;
  if (v->view->meta.len && v->view->meta.data[0] != EXT__META_OBJECT) {
    PyErr_Format(PyExc_ValueError,
                 "cached value of %R is a raw lattice payload, not a squall object; "
                 "read it with lookup()", key);
    goto out;
  }
  stream = ext__view_span(v, -1);
  bufs = stream ? ext__view_buffers(v) : NULL;
  if (bufs) {
    PyObject *args[2] = {stream, bufs};
    res = PyObject_Vectorcall(r->loads, args, 1, r->kwnames);
  }
out:
  Py_XDECREF(bufs);
  Py_XDECREF(stream);
  Py_DECREF(v);
  return res;
}

PyDoc_STRVAR(ext__reader_lookup_doc,
             "lookup(key) -> (lattice_type, meta, stream, buffers)\n\n"
             "The raw cached value of `key`: the blob's lattice type, its metadata (bytes;\n"
             "squall-cache's format is in cache/daemon_value.h: kind 1 = object, 2 = raw\n"
             "lattice payload in `stream`), and read-only memoryviews of the pickle stream\n"
             "(or raw payload) and the out-of-band buffers. KeyError when not cached.");

static PyObject *ext__reader_lookup(PyObject *self, PyObject *key) {
  PyObject *meta = NULL, *res = NULL;
  ext_view_t *v = ext__reader_resolve((ext_reader_t *)self, key);
  if (!v) return NULL;
  /* meta is a copy: it is tiny, and the view exports only stream and buffers. */
  meta = PyBytes_FromStringAndSize((const char *)v->view->meta.data,
                                   (Py_ssize_t)v->view->meta.len);
  if (meta)
    res = Py_BuildValue("(iNNN)", (int)v->view->lattice_type, meta, ext__view_span(v, -1),
                        ext__view_buffers(v));
  Py_DECREF(v);
  return res;
}

static PyObject *ext__reader_close(PyObject *self, PyObject *unused) {
  ext_reader_t *r = (ext_reader_t *)self;
  cache_reader_close(r->reader);
  r->reader = NULL;
  Py_RETURN_NONE;
}

static PyObject *ext__reader_enter(PyObject *self, PyObject *unused) { return Py_NewRef(self); }

static PyObject *ext__reader_exit(PyObject *self, PyObject *args) {
  return ext__reader_close(self, NULL);
}

static PyObject *ext__reader_trim(PyObject *self, PyObject *unused) {
  ext_reader_t *r = (ext_reader_t *)self;
  return PyLong_FromSize_t(r->reader ? cache_reader_trim(r->reader) : 0);
}

static PyObject *ext__reader_mappings(PyObject *self, void *closure) {
  ext_reader_t *r = (ext_reader_t *)self;
  return PyLong_FromSize_t(r->reader ? cache_reader_mappings(r->reader) : 0);
}

static int ext__reader_init(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"dir", NULL};
  ext_reader_t *r = (ext_reader_t *)self;
  PyObject *path = NULL, *pickle = NULL;
  int ret = -1;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O&:CacheReader", kwlist, PyUnicode_FSConverter,
                                   &path))
    return -1;
  if (r->reader || r->loads) {
    PyErr_SetString(PyExc_RuntimeError, "CacheReader is already initialised");
    goto out;
  }
  pickle = PyImport_ImportModule("pickle");
  r->loads = pickle ? PyObject_GetAttrString(pickle, "loads") : NULL;
  r->kwnames = Py_BuildValue("(s)", "buffers");
  if (!r->loads || !r->kwnames) goto out;
  int rc = cache_reader_open(PyBytes_AS_STRING(path), &r->reader);
  if (rc) {
    ext_error_raise(ext__reader_state(self), rc, "CacheReader: cannot open the cache");
    goto out;
  }
  ret = 0;
out:
  Py_XDECREF(pickle);
  Py_XDECREF(path);
  return ret;
}

static void ext__reader_dealloc(PyObject *self) {
  ext_reader_t *r = (ext_reader_t *)self;
  PyTypeObject *tp = Py_TYPE(self);
  cache_reader_close(r->reader);
  Py_XDECREF(r->loads);
  Py_XDECREF(r->kwnames);
  tp->tp_free(self);
  Py_DECREF(tp);
}

static PyMethodDef ext__reader_methods[] = {
    {"get", ext__reader_get, METH_O, ext__reader_get_doc},
    {"lookup", ext__reader_lookup, METH_O, ext__reader_lookup_doc},
    {"close", ext__reader_close, METH_NOARGS,
     "Closes the reader; values already resolved stay valid."},
    {"trim", ext__reader_trim, METH_NOARGS,
     "Unmaps idle mappings of segments the writer removed; returns how many."},
    {"__enter__", ext__reader_enter, METH_NOARGS, NULL},
    {"__exit__", ext__reader_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ext__reader_getset[] = {
    {"mappings", ext__reader_mappings, NULL, "Segment mappings held (in use or idle).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(ext__reader_doc,
             "CacheReader(dir)\n\n"
             "Read-only, zero-copy access to a node cache directory (the one squall-cache\n"
             "writes). Use one reader per thread, or share one under the GIL.\n\n"
             "    >>> r = CacheReader('/dev/shm/squall-c-n')\n"
             "    >>> a = r.get('weights')      # a read-only NumPy array over the cache\n");

static PyType_Slot ext__reader_slots[] = {
    {Py_tp_init, ext__reader_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, ext__reader_dealloc},
    {Py_tp_methods, ext__reader_methods},
    {Py_tp_getset, ext__reader_getset},
    {Py_tp_doc, (void *)ext__reader_doc},
    {0, NULL},
};

static PyType_Spec ext__reader_spec = {
    .name = "squall._squall.CacheReader",
    .basicsize = sizeof(ext_reader_t),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = ext__reader_slots,
};

int ext_cache_exec(PyObject *module, ext_state_t *st) {
  PyObject *reader = PyType_FromModuleAndSpec(module, &ext__reader_spec, NULL);
  if (!reader) return -1;
  int rc = PyModule_AddObjectRef(module, "CacheReader", reader);
  Py_DECREF(reader);
  if (rc < 0) return -1;
  st->cache_view_type = PyType_FromModuleAndSpec(module, &ext__view_spec, NULL);
  if (!st->cache_view_type) return -1;
  if (PyModule_AddObjectRef(module, "_CacheView", st->cache_view_type) < 0) return -1;
  return ext_cache_writer_exec(module);
}
