/* ext_lattice: the lattice functions of common/lattice.h for Python.
 *
 * merge/validate work on encoded payloads (bytes-like objects), exactly as the KVS
 * stores them; the encode_* / decode_* pairs let Python build and read the payloads
 * of LWW, SET / ORDERED_SET and PRIORITY without a protobuf library. Encoders always
 * produce the canonical form (lattice.h): encode_set sorts and deduplicates, so equal
 * sets give equal bytes.
 *
 * Every payload is untrusted: it goes to sq_lattice_decode/validate/merge_payloads,
 * which reject malformed input with SQ_EBADLATTICE; that becomes LatticeError here.
 *
 * GIL: merge() releases the GIL while the C merge runs when the inputs together are
 * at least EXT_NOGIL_BYTES long. The Py_buffer views it holds keep the objects alive
 * and stop resizable ones (bytearray) from being resized meanwhile; the caller must
 * not mutate the input buffers from another thread during the call (as with hashlib).
 *
 * lww_timestamp() is monotonic per interpreter: the last value lives in module state
 * and is only touched with the GIL held.
 */
#include "ext.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"

#define EXT_NOGIL_BYTES (64 * 1024)

int ext_lattice_decode(ext_state_t *st, sq_lattice_type_t type, PyObject *payload,
                       sq_lattice_t *out, const char *context) {
  Py_buffer view;
  memset(out, 0, sizeof *out);
  if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0) return -1;
  int rc = sq_lattice_decode(type, view.buf, (size_t)view.len, out);
  PyBuffer_Release(&view);
  if (rc != 0) {
    ext_error_raise(st, rc, context);
    return -1;
  }
  return 0;
}

PyObject *ext_lattice_decode_py(PyObject *module, sq_lattice_type_t type, PyObject *payload,
                                ext_lattice_to_py_fn to_py, const char *context) {
  sq_lattice_t l;
  PyObject *res = NULL;
  if (ext_lattice_decode(ext_state(module), type, payload, &l, context) == 0) res = to_py(&l);
  sq_lattice_free(&l);
  return res;
}

PyObject *ext_bytes_new(const sq_bytes_t *b) {
  if (b->len == 0) return PyBytes_FromStringAndSize(NULL, 0); /* data may be NULL */
  return PyBytes_FromStringAndSize((const char *)b->data, (Py_ssize_t)b->len);
}

PyObject *ext_lattice_encode(ext_state_t *st, const sq_lattice_t *l, const char *context) {
  sq_buf_t out = {0};
  PyObject *res = NULL;
  int rc = sq_lattice_encode(l, &out);
  if (rc != 0) {
    ext_error_raise(st, rc, context);
    goto out;
  }
  res = PyBytes_FromStringAndSize((const char *)out.data, (Py_ssize_t)out.len);
out:
  sq_buf_free(&out);
  return res;
}

/* Reads a storable lattice type (LWW..PRIORITY) from `obj`. 0 or -1. */
static int ext__type_arg(ext_state_t *st, PyObject *obj, const char *context,
                         sq_lattice_type_t *type) {
  long v = PyLong_AsLong(obj);
  if (v == -1 && PyErr_Occurred()) return -1;
  if (v < 0 || v > SQ_LATTICE_TYPE_MAX || !sq_lattice_type_valid((int)v)) {
    ext_error_raise(st, SQ_EUNKNOWNTYPE, context);
    return -1;
  }
  *type = (sq_lattice_type_t)v;
  return 0;
}

PyDoc_STRVAR(ext__merge_doc,
             "merge($module, type, stored, incoming, /)\n--\n\n"
             "Join two encoded payloads of lattice `type` and return the merged payload\n"
             "(bytes, canonical form). Raises LatticeError if either payload is malformed\n"
             "or the type is unknown. Releases the GIL for large inputs.");

static PyObject *ext__merge(PyObject *module, PyObject *args) {
  ext_state_t *st = ext_state(module);
  PyObject *type_obj, *res = NULL;
  Py_buffer a = {0}, b = {0};
  sq_buf_t out = {0};
  sq_lattice_type_t type;
  int rc;
  if (!PyArg_ParseTuple(args, "Oy*y*:merge", &type_obj, &a, &b)) return NULL;
  if (ext__type_arg(st, type_obj, "merge", &type) < 0) goto out;
  if ((size_t)a.len + (size_t)b.len >= EXT_NOGIL_BYTES) {
    Py_BEGIN_ALLOW_THREADS
    rc = sq_lattice_merge_payloads(type, a.buf, (size_t)a.len, b.buf, (size_t)b.len, &out, NULL);
    Py_END_ALLOW_THREADS
  } else {
    rc = sq_lattice_merge_payloads(type, a.buf, (size_t)a.len, b.buf, (size_t)b.len, &out, NULL);
  }
  if (rc != 0) {
    ext_error_raise(st, rc, "merge");
    goto out;
  }
  res = PyBytes_FromStringAndSize((const char *)out.data, (Py_ssize_t)out.len);
out:
  sq_buf_free(&out);
  PyBuffer_Release(&a);
  PyBuffer_Release(&b);
  return res;
}

PyDoc_STRVAR(ext__validate_doc,
             "validate($module, type, payload, /)\n--\n\n"
             "Return None if `payload` decodes as lattice `type`, else raise LatticeError.");

static PyObject *ext__validate(PyObject *module, PyObject *args) {
  ext_state_t *st = ext_state(module);
  PyObject *type_obj, *res = NULL;
  Py_buffer view = {0};
  sq_lattice_type_t type;
  if (!PyArg_ParseTuple(args, "Oy*:validate", &type_obj, &view)) return NULL;
  if (ext__type_arg(st, type_obj, "validate", &type) < 0) goto out;
  int rc = sq_lattice_validate(type, view.buf, (size_t)view.len);
  if (rc != 0) {
    ext_error_raise(st, rc, "validate");
    goto out;
  }
  res = Py_NewRef(Py_None);
out:
  PyBuffer_Release(&view);
  return res;
}

PyDoc_STRVAR(ext__lww_timestamp_doc,
             "lww_timestamp($module, id, /)\n--\n\n"
             "An LWW timestamp as Anna makes it: now_ms * 10**k + id (10**k the smallest\n"
             "power of ten above id, at least 10). Strictly increasing across calls in one\n"
             "interpreter. id must be in 0..2**32-1.");

static PyObject *ext__lww_timestamp(PyObject *module, PyObject *arg) {
  ext_state_t *st = ext_state(module);
  unsigned long long id;
  if (ext_uint_arg(arg, UINT32_MAX, "id", &id) < 0) return NULL;
  uint64_t ts = sq_lww_timestamp((uint32_t)id, &st->lww_last);
  return PyLong_FromUnsignedLongLong(ts);
}

/* Reads the scalar half of an (LWW timestamp | priority, value) pair into *l. 0 or -1
 * (TypeError, OverflowError or ValueError set). */
static int ext__scalar_arg(PyObject *obj, const char *context, sq_lattice_t *l) {
  if (l->type == SQ_LATTICE_LWW) {
    unsigned long long ts;
    if (ext_uint_arg(obj, UINT64_MAX, "timestamp", &ts) < 0) return -1;
    l->u.lww.timestamp = ts;
    return 0;
  }
  double priority = PyFloat_AsDouble(obj);
  if (priority == -1.0 && PyErr_Occurred()) {
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
      PyErr_Clear();
      PyErr_Format(PyExc_TypeError, "%s: priority must be a real number, not %.100s", context,
                   Py_TYPE(obj)->tp_name);
    }
    return -1;
  }
  if (isnan(priority)) {
    PyErr_Format(PyExc_ValueError, "%s: priority must not be NaN", context);
    return -1;
  }
  l->u.priority.priority = priority;
  return 0;
}

/* encode_lww / encode_priority: args (scalar, value) -> the payload of lattice `type`.
 * The value stays the caller's buffer: encoding only reads it. */
static PyObject *ext__encode_scalar_value(PyObject *module, PyObject *args,
                                          sq_lattice_type_t type, const char *context) {
  PyObject *scalar, *value, *res = NULL;
  Py_buffer view = {0};
  sq_lattice_t l = {.type = type};
  sq_bytes_t *bytes = type == SQ_LATTICE_LWW ? &l.u.lww.value : &l.u.priority.value;
  if (!PyArg_UnpackTuple(args, context, 2, 2, &scalar, &value)) return NULL;
  if (ext__scalar_arg(scalar, context, &l) < 0) goto out;
  if (PyObject_GetBuffer(value, &view, PyBUF_SIMPLE) < 0) goto out;
  bytes->data = view.buf;
  bytes->len = (size_t)view.len;
  res = ext_lattice_encode(ext_state(module), &l, context);
out:
  PyBuffer_Release(&view);
  return res;
}

PyDoc_STRVAR(ext__encode_lww_doc,
             "encode_lww($module, timestamp, value, /)\n--\n\n"
             "The LWWValue payload for (timestamp, value); timestamp in 0..2**64-1.");

static PyObject *ext__encode_lww(PyObject *module, PyObject *args) {
  return ext__encode_scalar_value(module, args, SQ_LATTICE_LWW, "encode_lww");
}

static PyObject *ext__lww_to_py(const sq_lattice_t *l) {
  return Py_BuildValue("(KN)", (unsigned long long)l->u.lww.timestamp,
                       ext_bytes_new(&l->u.lww.value));
}

PyDoc_STRVAR(ext__decode_lww_doc,
             "decode_lww($module, payload, /)\n--\n\n"
             "(timestamp, value) of an LWWValue payload; LatticeError if malformed.");

static PyObject *ext__decode_lww(PyObject *module, PyObject *payload) {
  return ext_lattice_decode_py(module, SQ_LATTICE_LWW, payload, ext__lww_to_py, "decode_lww");
}

PyDoc_STRVAR(ext__encode_priority_doc,
             "encode_priority($module, priority, value, /)\n--\n\n"
             "The PriorityValue payload for (priority, value). NaN is refused (ValueError).");

static PyObject *ext__encode_priority(PyObject *module, PyObject *args) {
  return ext__encode_scalar_value(module, args, SQ_LATTICE_PRIORITY, "encode_priority");
}

static PyObject *ext__priority_to_py(const sq_lattice_t *l) {
  return Py_BuildValue("(dN)", l->u.priority.priority, ext_bytes_new(&l->u.priority.value));
}

PyDoc_STRVAR(ext__decode_priority_doc,
             "decode_priority($module, payload, /)\n--\n\n"
             "(priority, value) of a PriorityValue payload; LatticeError if malformed.");

static PyObject *ext__decode_priority(PyObject *module, PyObject *payload) {
  return ext_lattice_decode_py(module, SQ_LATTICE_PRIORITY, payload, ext__priority_to_py,
                               "decode_priority");
}

/* Byte order of lattice.h's canonical form: memcmp, then the shorter first. */
static int ext__bytes_cmp(const void *pa, const void *pb) {
  const sq_bytes_t *a = pa, *b = pb;
  size_t n = a->len < b->len ? a->len : b->len;
  int c = n ? memcmp(a->data, b->data, n) : 0;
  if (c != 0) return c;
  return (a->len > b->len) - (a->len < b->len);
}

/* Sorts items and drops duplicates; returns the new count. */
static size_t ext__bytes_canonical(sq_bytes_t *items, size_t n) {
  if (n < 2) return n;
  qsort(items, n, sizeof *items, ext__bytes_cmp);
  size_t m = 1;
  for (size_t i = 1; i < n; i++)
    if (ext__bytes_cmp(&items[m - 1], &items[i]) != 0) items[m++] = items[i];
  return m;
}

PyDoc_STRVAR(ext__encode_set_doc,
             "encode_set($module, items, /)\n--\n\n"
             "The SetValue payload (for SET and ORDERED_SET) of an iterable of bytes-like\n"
             "items, sorted and without duplicates.");

static PyObject *ext__encode_set(PyObject *module, PyObject *items) {
  ext_state_t *st = ext_state(module);
  PyObject *seq = NULL, *res = NULL;
  Py_buffer *views = NULL;
  sq_bytes_t *bytes = NULL;
  Py_ssize_t n = 0, got = 0;
  seq = PySequence_Fast(items, "encode_set: items must be an iterable of bytes-like objects");
  if (!seq) goto out;
  n = PySequence_Fast_GET_SIZE(seq);
  views = PyMem_Calloc((size_t)n + 1, sizeof *views);
  bytes = PyMem_Calloc((size_t)n + 1, sizeof *bytes);
  if (!views || !bytes) {
    PyErr_NoMemory();
    goto out;
  }
  for (; got < n; got++) {
    PyObject *item = PySequence_Fast_GET_ITEM(seq, got);
    if (PyObject_GetBuffer(item, &views[got], PyBUF_SIMPLE) < 0) goto out;
    bytes[got].data = views[got].buf; /* borrowed: the views keep the items alive */
    bytes[got].len = (size_t)views[got].len;
  }
  sq_lattice_t l = {.type = SQ_LATTICE_SET};
  l.u.set.items = bytes;
  l.u.set.count = ext__bytes_canonical(bytes, (size_t)n);
  res = ext_lattice_encode(st, &l, "encode_set");
out:
  for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
  PyMem_Free(views);
  PyMem_Free(bytes);
  Py_XDECREF(seq);
  return res;
}

static PyObject *ext__set_to_py(const sq_lattice_t *l) {
  PyObject *list = PyList_New((Py_ssize_t)l->u.set.count);
  for (size_t i = 0; list && i < l->u.set.count; i++) {
    PyObject *item = ext_bytes_new(&l->u.set.items[i]);
    if (!item) Py_CLEAR(list);
    else PyList_SET_ITEM(list, (Py_ssize_t)i, item);
  }
  return list;
}

PyDoc_STRVAR(ext__decode_set_doc,
             "decode_set($module, payload, /)\n--\n\n"
             "The items of a SetValue payload as a sorted list of bytes without duplicates;\n"
             "LatticeError if malformed.");

static PyObject *ext__decode_set(PyObject *module, PyObject *payload) {
  return ext_lattice_decode_py(module, SQ_LATTICE_SET, payload, ext__set_to_py, "decode_set");
}

static PyMethodDef ext__lattice_methods[] = {
    {"merge", ext__merge, METH_VARARGS, ext__merge_doc},
    {"validate", ext__validate, METH_VARARGS, ext__validate_doc},
    {"lww_timestamp", ext__lww_timestamp, METH_O, ext__lww_timestamp_doc},
    {"encode_lww", ext__encode_lww, METH_VARARGS, ext__encode_lww_doc},
    {"decode_lww", ext__decode_lww, METH_O, ext__decode_lww_doc},
    {"encode_set", ext__encode_set, METH_O, ext__encode_set_doc},
    {"decode_set", ext__decode_set, METH_O, ext__decode_set_doc},
    {"encode_priority", ext__encode_priority, METH_VARARGS, ext__encode_priority_doc},
    {"decode_priority", ext__decode_priority, METH_O, ext__decode_priority_doc},
    {NULL, NULL, 0, NULL},
};

/* The wire enum LatticeType (PROTOCOL.md §1.1), names as in anna.proto. */
static const struct {
  const char *name;
  sq_lattice_type_t type;
} ext__types[] = {
    {"NONE", SQ_LATTICE_NONE},
    {"LWW", SQ_LATTICE_LWW},
    {"SET", SQ_LATTICE_SET},
    {"SINGLE_CAUSAL", SQ_LATTICE_SINGLE_CAUSAL},
    {"MULTI_CAUSAL", SQ_LATTICE_MULTI_CAUSAL},
    {"ORDERED_SET", SQ_LATTICE_ORDERED_SET},
    {"PRIORITY", SQ_LATTICE_PRIORITY},
};

int ext_lattice_exec(PyObject *module) {
  PyObject *types = PyDict_New();
  int rc = -1;
  if (!types) goto out;
  for (size_t i = 0; i < sizeof ext__types / sizeof ext__types[0]; i++) {
    const char *name = ext__types[i].name;
    int t = (int)ext__types[i].type;
    PyObject *v = PyLong_FromLong(t);
    int err = v ? PyDict_SetItemString(types, name, v) : -1;
    Py_XDECREF(v);
    if (err < 0 || PyModule_AddIntConstant(module, name, t) < 0) goto out;
  }
  if (PyModule_AddObjectRef(module, "lattice_types", types) < 0) goto out;
  rc = PyModule_AddFunctions(module, ext__lattice_methods);
out:
  Py_XDECREF(types);
  return rc;
}
