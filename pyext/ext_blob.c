/* ext_blob: the squall object blob (cache/cache_blob.h) from Python.
 *
 *   blob_encode(stream, buffers, lattice_type=1, meta=b"") -> bytes
 *   blob_parse(data) -> (lattice_type, meta, stream, [buffer, ...])
 *
 * squall._blob builds dumps_blob/loads_blob on these: pickle protocol 5 with a
 * buffer_callback collects the out-of-band buffers, blob_encode lays them out 64-byte
 * aligned after the stream; blob_parse validates untrusted bytes and returns
 * read-only memoryviews *into the given object* (no byte is copied), which
 * pickle.loads(stream, buffers=...) turns back into the object.
 *
 * Invariants: blob_parse never reads outside the caller's buffer (cache_blob_parse
 * validates every offset) and every view it returns is a slice of one read-only
 * memoryview over `data`, so the views keep `data` alive and exported (a bytearray
 * cannot be resized under them) and can never write to it. Alignment: buffers are
 * 64-byte aligned in memory exactly when the blob starts 64-byte aligned; a bytes
 * object does not (its payload sits 32 bytes into the object), which NumPy handles
 * (the array is then not flagged aligned).
 *
 * Threads: GIL held throughout, except the copy of large buffers in blob_encode; the
 * buffers stay exported (so not resizable) meanwhile.
 */
#include "ext.h"

#include <stdlib.h>
#include <string.h>

#include "cache_blob.h"
#include "sq_error.h"

#define EXT__ENCODE_NOGIL_MIN (1u << 20) /* copies this large run without the GIL */

/* Exports every element of `list` as a contiguous read-only buffer into views/spans
 * (n entries, caller-allocated). Contiguous means C or Fortran order: a PickleBuffer
 * over a Fortran-ordered array is stored as its raw memory, as PickleBuffer.raw()
 * does. Returns how many views were taken (== n on success) or -1 with an exception
 * set; the caller releases the views taken either way. */
static Py_ssize_t ext__export_buffers(PyObject *list, Py_buffer *views, cache_span_t *spans,
                                      Py_ssize_t n) {
  for (Py_ssize_t i = 0; i < n; i++) {
    if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(list, i), &views[i], PyBUF_FULL_RO) < 0)
      return -1 - i; /* i views taken */
    if (!PyBuffer_IsContiguous(&views[i], 'A')) {
      PyErr_Format(PyExc_BufferError, "blob_encode: buffer %zd is not contiguous", i);
      return -1 - (i + 1);
    }
    spans[i] = (cache_span_t){.data = views[i].buf, .len = (size_t)views[i].len};
  }
  return n;
}

static int ext__encode_into(ext_state_t *st, const cache_object_t *obj, PyObject **out) {
  size_t size = 0;
  int rc = cache_blob_size(obj, &size);
  if (rc) goto fail;
  if (size > (size_t)PY_SSIZE_T_MAX) {
    rc = SQ_ETOOBIG;
    goto fail;
  }
  *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
  if (!*out) return -1;
  if (size >= EXT__ENCODE_NOGIL_MIN) {
    Py_BEGIN_ALLOW_THREADS
    rc = cache_blob_encode(obj, PyBytes_AS_STRING(*out), size);
    Py_END_ALLOW_THREADS
  } else {
    rc = cache_blob_encode(obj, PyBytes_AS_STRING(*out), size);
  }
  if (rc == 0) return 0;
  Py_CLEAR(*out);
fail:
  ext_error_raise(st, rc, "blob_encode");
  return -1;
}

PyDoc_STRVAR(ext__blob_encode_doc,
             "blob_encode(stream, buffers, lattice_type=1, meta=b'') -> bytes\n\n"
             "Lays out a pickle-5 stream and its out-of-band buffers (bytes-like, C or\n"
             "Fortran contiguous) as a squall object blob. Raises SquallError (SQ_ETOOBIG)\n"
             "above the blob limits, LatticeError for a lattice type that is not storable.");

static PyObject *ext__blob_encode(PyObject *module, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"stream", "buffers", "lattice_type", "meta", NULL};
  ext_state_t *st = ext_state(module);
  Py_buffer stream = {0}, meta = {0};
  PyObject *bufs = NULL, *seq = NULL, *res = NULL;
  Py_buffer *views = NULL;
  cache_span_t *spans = NULL;
  Py_ssize_t n = 0, taken = 0;
  int ltype = SQ_LATTICE_LWW;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*O|iy*:blob_encode", kwlist, &stream, &bufs,
                                   &ltype, &meta))
    return NULL;
  seq = PySequence_Fast(bufs, "blob_encode: buffers must be a sequence");
  if (!seq) goto out;
  n = PySequence_Fast_GET_SIZE(seq);
  if ((size_t)n > CACHE_BLOB_MAX_BUFFERS) {
    ext_error_raise(st, SQ_ETOOBIG, "blob_encode: too many buffers");
    goto out;
  }
  views = PyMem_Calloc((size_t)n + 1, sizeof *views);
  spans = PyMem_Calloc((size_t)n + 1, sizeof *spans);
  if (!views || !spans) {
    PyErr_NoMemory();
    goto out;
  }
  taken = ext__export_buffers(seq, views, spans, n);
  if (taken < 0) {
    taken = -taken - 1;
    goto out;
  }
  cache_object_t obj = {.lattice_type = (sq_lattice_type_t)ltype,
                        .meta = meta.buf, .meta_len = (size_t)meta.len,
                        .pickle = stream.buf, .pickle_len = (size_t)stream.len,
                        .buffers = spans, .nbuffers = (size_t)n};
  (void)ext__encode_into(st, &obj, &res);
out:
  for (Py_ssize_t i = 0; i < taken; i++) PyBuffer_Release(&views[i]);
  PyMem_Free(views);
  PyMem_Free(spans);
  Py_XDECREF(seq);
  PyBuffer_Release(&stream);
  if (meta.obj) PyBuffer_Release(&meta);
  return res;
}

/* A read-only memoryview of `base` (a 1-D unsigned-byte memoryview) from lo to hi. */
static PyObject *ext__slice(PyObject *base, const uint8_t *start, cache_span_t span) {
  Py_ssize_t lo = (Py_ssize_t)(span.data - start);
  return PySequence_GetSlice(base, lo, lo + (Py_ssize_t)span.len);
}

/* A read-only, 1-D, unsigned-byte memoryview over `data` (C-contiguous). */
static PyObject *ext__byte_view(PyObject *data) {
  PyObject *mv = PyMemoryView_FromObject(data), *tmp;
  if (!mv) return NULL;
  Py_buffer *b = PyMemoryView_GET_BUFFER(mv);
  if (!PyBuffer_IsContiguous(b, 'C')) {
    Py_DECREF(mv);
    PyErr_SetString(PyExc_BufferError, "blob_parse: data must be C-contiguous");
    return NULL;
  }
  if (!b->readonly) {
    tmp = PyObject_CallMethod(mv, "toreadonly", NULL);
    Py_SETREF(mv, tmp);
    if (!mv) return NULL;
    b = PyMemoryView_GET_BUFFER(mv);
  }
  if (b->ndim != 1 || b->itemsize != 1 || (b->format && strcmp(b->format, "B") != 0)) {
    tmp = PyObject_CallMethod(mv, "cast", "s", "B");
    Py_SETREF(mv, tmp);
  }
  return mv;
}

/* (lattice_type, meta, stream, [buffers]) as slices of `base` over the parsed blob. */
static PyObject *ext__blob_views(PyObject *base, const cache_blob_t *blob) {
  const uint8_t *start = PyMemoryView_GET_BUFFER(base)->buf;
  PyObject *list = PyList_New(blob->nbuffers), *res = NULL;
  if (!list) return NULL;
  for (uint32_t i = 0; i < blob->nbuffers; i++) {
    PyObject *v = ext__slice(base, start, cache_blob_buffer(blob, i));
    if (!v) goto out;
    PyList_SET_ITEM(list, i, v);
  }
  res = Py_BuildValue("(iNNO)", (int)blob->lattice_type, ext__slice(base, start, blob->meta),
                      ext__slice(base, start, blob->pickle), list);
out:
  Py_DECREF(list);
  return res;
}

PyDoc_STRVAR(ext__blob_parse_doc,
             "blob_parse(data) -> (lattice_type, meta, stream, buffers)\n\n"
             "Validates a squall object blob (untrusted bytes-like, C-contiguous) and\n"
             "returns read-only memoryviews into `data` (no copy): the lattice metadata,\n"
             "the pickle stream and the list of out-of-band buffers. Raises SquallError\n"
             "(SQ_ECORRUPT) for anything that is not a canonical blob.");

static PyObject *ext__blob_parse(PyObject *module, PyObject *data) {
  ext_state_t *st = ext_state(module);
  cache_blob_t blob;
  PyObject *mv = ext__byte_view(data), *res = NULL;
  if (!mv) return NULL;
  Py_buffer *b = PyMemoryView_GET_BUFFER(mv);
  int rc = cache_blob_parse(b->buf, (size_t)b->len, &blob);
  if (rc)
    ext_error_raise(st, rc, "blob_parse");
  else
    res = ext__blob_views(mv, &blob);
  Py_DECREF(mv);
  return res;
}

static PyMethodDef ext__blob_methods[] = {
    {"blob_encode", (PyCFunction)(void (*)(void))ext__blob_encode, METH_VARARGS | METH_KEYWORDS,
     ext__blob_encode_doc},
    {"blob_parse", ext__blob_parse, METH_O, ext__blob_parse_doc},
    {NULL, NULL, 0, NULL},
};

int ext_blob_exec(PyObject *module) {
  if (PyModule_AddFunctions(module, ext__blob_methods) < 0) return -1;
  return PyModule_AddIntConstant(module, "BLOB_MAGIC", CACHE_BLOB_MAGIC);
}
