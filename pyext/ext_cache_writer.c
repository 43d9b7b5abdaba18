/* ext_cache_writer: _CacheWriter, the cache_store writer (cache/cache_store.h) from
 * Python, for tests and benchmarks that need a populated node cache without running
 * squall-cache. In a cluster the squall-cache daemon is the only writer of a cache
 * directory (cache_store's flock refuses a second one with -EBUSY), so nothing in
 * squall's client path uses this class.
 *
 *   w = _CacheWriter(dir, budget=0, inline_max=0, discard=False)
 *   w.put(key, blob)      stores a squall object blob (validated), replacing the old one
 *   w.delete(key)         KeyError when absent
 *   w.stats() -> dict     cache_store_stats_t as a dict
 *   w.close()
 *
 * Threads: GIL held throughout, so one store is only ever used by one thread at a time.
 */
#include "ext.h"

#include "cache_store.h"
#include "sq_error.h"

typedef struct {
  PyObject_HEAD
  cache_store_t *store; /* NULL once closed */
} ext_writer_t;

static ext_state_t *ext__writer_state(PyObject *self) {
  return (ext_state_t *)PyType_GetModuleState(Py_TYPE(self));
}

static cache_store_t *ext__writer_store(PyObject *self) {
  cache_store_t *s = ((ext_writer_t *)self)->store;
  if (!s) PyErr_SetString(PyExc_ValueError, "_CacheWriter is closed");
  return s;
}

static PyObject *ext__writer_put(PyObject *self, PyObject *args) {
  cache_store_t *s = ext__writer_store(self);
  Py_buffer key = {0}, blob = {0};
  int rc;
  if (!s || !PyArg_ParseTuple(args, "s*y*:put", &key, &blob)) return NULL;
  Py_BEGIN_ALLOW_THREADS
  rc = cache_store_put(s, key.buf, (size_t)key.len, blob.buf, (size_t)blob.len);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&key);
  PyBuffer_Release(&blob);
  if (rc) return ext_error_raise(ext__writer_state(self), rc, "_CacheWriter.put");
  Py_RETURN_NONE;
}

static PyObject *ext__writer_delete(PyObject *self, PyObject *args) {
  cache_store_t *s = ext__writer_store(self);
  Py_buffer key = {0};
  if (!s || !PyArg_ParseTuple(args, "s*:delete", &key)) return NULL;
  int rc = cache_store_delete(s, key.buf, (size_t)key.len);
  if (rc == SQ_ENOTFOUND)
    PyErr_SetObject(PyExc_KeyError, PyTuple_GET_ITEM(args, 0));
  else if (rc)
    ext_error_raise(ext__writer_state(self), rc, "_CacheWriter.delete");
  PyBuffer_Release(&key);
  if (rc) return NULL;
  Py_RETURN_NONE;
}

static PyObject *ext__writer_stats(PyObject *self, PyObject *unused) {
  cache_store_t *s = ext__writer_store(self);
  cache_store_stats_t t;
  if (!s) return NULL;
  cache_store_stats(s, &t);
  return Py_BuildValue("{sKsKsKsKsKsKsK}", "values", t.values, "inline_values",
                       t.inline_values, "bytes", t.bytes, "budget", t.budget, "evictions",
                       t.evictions, "map_size", t.map_size, "stale_readers", t.stale_readers);
}

static PyObject *ext__writer_close(PyObject *self, PyObject *unused) {
  ext_writer_t *w = (ext_writer_t *)self;
  cache_store_close(w->store);
  w->store = NULL;
  Py_RETURN_NONE;
}

static int ext__writer_init(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"dir", "budget", "inline_max", "discard", NULL};
  ext_writer_t *w = (ext_writer_t *)self;
  PyObject *path = NULL;
  unsigned long long budget = 0;
  Py_ssize_t inline_max = 0;
  int discard = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|Knp:_CacheWriter", kwlist,
                                   PyUnicode_FSConverter, &path, &budget, &inline_max,
                                   &discard))
    return -1;
  if (w->store || inline_max < 0) {
    PyErr_SetString(PyExc_ValueError, "_CacheWriter: already open or negative inline_max");
    Py_DECREF(path);
    return -1;
  }
  cache_store_config_t cfg = {.dir = PyBytes_AS_STRING(path), .budget_bytes = budget,
                              .inline_max = (size_t)inline_max, .discard = discard != 0};
  int rc = cache_store_open(&cfg, &w->store);
  Py_DECREF(path);
  if (rc) {
    w->store = NULL;
    ext_error_raise(ext__writer_state(self), rc, "_CacheWriter: cannot open the cache");
    return -1;
  }
  return 0;
}

static void ext__writer_dealloc(PyObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  cache_store_close(((ext_writer_t *)self)->store);
  tp->tp_free(self);
  Py_DECREF(tp);
}

static PyMethodDef ext__writer_methods[] = {
    {"put", ext__writer_put, METH_VARARGS, "put(key, blob): store a squall object blob."},
    {"delete", ext__writer_delete, METH_VARARGS, "delete(key): remove a key (KeyError)."},
    {"stats", ext__writer_stats, METH_NOARGS, "stats() -> dict of the store's counters."},
    {"close", ext__writer_close, METH_NOARGS, "Closes the store (readers keep working)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ext__writer_slots[] = {
    {Py_tp_init, ext__writer_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, ext__writer_dealloc},
    {Py_tp_methods, ext__writer_methods},
    {Py_tp_doc, "_CacheWriter(dir, budget=0, inline_max=0, discard=False): the node "
                "cache's writer, for tests and benchmarks (squall-cache owns it in a cluster)."},
    {0, NULL},
};

static PyType_Spec ext__writer_spec = {
    .name = "squall._squall._CacheWriter",
    .basicsize = sizeof(ext_writer_t),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = ext__writer_slots,
};

int ext_cache_writer_exec(PyObject *module) {
  PyObject *t = PyType_FromModuleAndSpec(module, &ext__writer_spec, NULL);
  if (!t) return -1;
  int rc = PyModule_AddObjectRef(module, "_CacheWriter", t);
  Py_DECREF(t);
  return rc;
}
