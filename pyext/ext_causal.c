/* ext_causal: single- and multi-key causal payloads <-> Python structures.
 *
 * Python shapes (lattice.h's sq_causal_t / sq_multi_causal_t):
 *   clock     dict[str, int]                      node id -> counter (0..2**32-1)
 *   siblings  list[tuple[clock, bytes]]           each concurrent value with its version
 *   deps      dict[str, clock]                    MULTI_CAUSAL only: key -> version
 *
 *   decode_single_causal(payload) -> (clock, siblings)
 *   decode_multi_causal(payload)  -> (clock, siblings, deps)
 *   encode_single_causal(siblings)          -> payload
 *   encode_multi_causal(siblings, deps={})  -> payload
 *
 * Encoding builds one owned single-sibling lattice per Python sibling and joins them
 * with sq_lattice_merge, so the result is canonical by construction (lattice.h): the
 * top clock is the pointwise max, siblings that another sibling strictly dominates
 * are dropped, the rest are sorted and unique. Dependencies are a map with unique
 * keys, so they are sorted and attached to the result directly.
 *
 * Ownership: everything placed in an sq_lattice_t here is malloc'd and released by
 * sq_lattice_free (lattice.h's allocator is libc's). Partial builds stay consistent
 * (counts grow only after an entry is complete), so one sq_lattice_free cleans up
 * after any error.
 */
#include "ext.h"

#include <stdlib.h>
#include <string.h>

#include "sq_error.h"

/* ---- C -> Python ----------------------------------------------------------------- */

/* A str from a C string that may not be valid UTF-8 (surrogateescape: lossless). */
static PyObject *ext__str_from_c(const char *s) {
  return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "surrogateescape");
}

/* dict[key] = value with a C-string key; 0 or -1. Steals nothing. */
static int ext__dict_set_c(PyObject *dict, const char *key, PyObject *value) {
  PyObject *k = ext__str_from_c(key);
  int rc = k ? PyDict_SetItem(dict, k, value) : -1;
  Py_XDECREF(k);
  return rc;
}

static PyObject *ext__vclock_to_dict(const sq_vclock_t *vc) {
  PyObject *dict = PyDict_New();
  if (!dict) return NULL;
  for (size_t i = 0; i < vc->count; i++) {
    PyObject *v = PyLong_FromUnsignedLong(vc->entries[i].counter);
    int rc = v ? ext__dict_set_c(dict, vc->entries[i].node, v) : -1;
    Py_XDECREF(v);
    if (rc < 0) {
      Py_DECREF(dict);
      return NULL;
    }
  }
  return dict;
}

/* (clock, [(clock, value), ...]) of a causal value. */
static PyObject *ext__causal_to_py(const sq_causal_t *c) {
  PyObject *clock = NULL, *list = NULL, *res = NULL;
  clock = ext__vclock_to_dict(&c->clock);
  list = PyList_New((Py_ssize_t)c->nsiblings);
  if (!clock || !list) goto out;
  for (size_t i = 0; i < c->nsiblings; i++) {
    const sq_sibling_t *s = &c->siblings[i];
    PyObject *sc = ext__vclock_to_dict(&s->clock);
    PyObject *pair = sc ? Py_BuildValue("(NN)", sc, ext_bytes_new(&s->value)) : NULL;
    if (!pair) goto out;
    PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
  }
  res = PyTuple_Pack(2, clock, list);
out:
  Py_XDECREF(clock);
  Py_XDECREF(list);
  return res;
}

static PyObject *ext__deps_to_dict(const sq_multi_causal_t *m) {
  PyObject *dict = PyDict_New();
  if (!dict) return NULL;
  for (size_t i = 0; i < m->ndeps; i++) {
    PyObject *vc = ext__vclock_to_dict(&m->deps[i].clock);
    int rc = vc ? ext__dict_set_c(dict, m->deps[i].key, vc) : -1;
    Py_XDECREF(vc);
    if (rc < 0) {
      Py_DECREF(dict);
      return NULL;
    }
  }
  return dict;
}

/* ---- Python -> C ----------------------------------------------------------------- */

/* A NUL-terminated malloc'd copy of the UTF-8 of the str `obj` (surrogateescape, so
 * ids decoded from non-UTF-8 bytes round-trip); NULL with TypeError/ValueError set. */
static char *ext__strdup_arg(PyObject *obj, const char *what) {
  char *copy = NULL;
  PyObject *utf8 = NULL;
  if (!PyUnicode_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what, Py_TYPE(obj)->tp_name);
    goto out;
  }
  utf8 = PyUnicode_AsEncodedString(obj, "utf-8", "surrogateescape");
  if (!utf8) goto out;
  const char *s = PyBytes_AS_STRING(utf8);
  if (strlen(s) != (size_t)PyBytes_GET_SIZE(utf8)) {
    PyErr_Format(PyExc_ValueError, "%s must not contain NUL characters", what);
    goto out;
  }
  copy = strdup(s);
  if (!copy) PyErr_NoMemory();
out:
  Py_XDECREF(utf8);
  return copy;
}

/* obj.items() as a list of 2-tuples, or NULL with TypeError when obj is not a mapping
 * (`what` names it) or an item is not a pair (`pair_msg`). */
static PyObject *ext__mapping_pairs(PyObject *obj, const char *what, const char *pair_msg) {
  if (!PyDict_Check(obj) && !PyObject_HasAttrString(obj, "items")) {
    PyErr_Format(PyExc_TypeError, "%s must be a dict, not %.100s", what, Py_TYPE(obj)->tp_name);
    return NULL;
  }
  PyObject *items = PyMapping_Items(obj);
  for (Py_ssize_t i = 0; items && i < PyList_GET_SIZE(items); i++) {
    PyObject *kv = PyList_GET_ITEM(items, i);
    if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2) {
      PyErr_SetString(PyExc_TypeError, pair_msg);
      Py_CLEAR(items);
    }
  }
  return items;
}

/* A zeroed array of n + 1 entries of `size` bytes (never a zero-size request), or
 * NULL with MemoryError set. */
static void *ext__entries_new(Py_ssize_t n, size_t size) {
  void *p = calloc((size_t)n + 1, size);
  if (!p) PyErr_NoMemory();
  return p;
}

/* Sorts n entries (of `size` bytes, ordered by cmp) into canonical order. 0, or -1
 * with ValueError(dup_msg) when two entries compare equal. */
static int ext__sort_unique(void *base, size_t n, size_t size,
                            int (*cmp)(const void *, const void *), const char *dup_msg) {
  if (n > 1) qsort(base, n, size, cmp);
  for (size_t i = 1; i < n; i++)
    if (cmp((char *)base + (i - 1) * size, (char *)base + i * size) == 0) {
      PyErr_SetString(PyExc_ValueError, dup_msg);
      return -1;
    }
  return 0;
}

static int ext__vc_entry_cmp(const void *pa, const void *pb) {
  return strcmp(((const sq_vc_entry_t *)pa)->node, ((const sq_vc_entry_t *)pb)->node);
}

/* Fills the empty *out from a mapping str -> int, sorted by node. 0 or -1; on error
 * *out holds the complete entries built so far (sq_lattice_free releases them). */
static int ext__vclock_from_py(PyObject *mapping, sq_vclock_t *out) {
  PyObject *items = NULL;
  int rc = -1;
  items = ext__mapping_pairs(mapping, "a vector clock",
                             "a vector clock's items() must be (str, int) pairs");
  if (!items) goto out;
  Py_ssize_t n = PyList_GET_SIZE(items);
  if (!(out->entries = ext__entries_new(n, sizeof *out->entries))) goto out;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *kv = PyList_GET_ITEM(items, i);
    unsigned long long counter;
    if (ext_uint_arg(PyTuple_GET_ITEM(kv, 1), UINT32_MAX, "a vector clock counter", &counter) < 0)
      goto out;
    char *node = ext__strdup_arg(PyTuple_GET_ITEM(kv, 0), "a vector clock node id");
    if (!node) goto out;
    out->entries[out->count].node = node;
    out->entries[out->count].counter = (uint32_t)counter;
    out->count++;
  }
  rc = ext__sort_unique(out->entries, out->count, sizeof *out->entries, ext__vc_entry_cmp,
                        "a vector clock names a node twice");
out:
  Py_XDECREF(items);
  return rc;
}

static int ext__vclock_dup(const sq_vclock_t *src, sq_vclock_t *dst) {
  dst->entries = calloc(src->count + 1, sizeof *dst->entries);
  if (!dst->entries) goto fail;
  for (size_t i = 0; i < src->count; i++) {
    dst->entries[i].node = strdup(src->entries[i].node);
    if (!dst->entries[i].node) goto fail;
    dst->entries[i].counter = src->entries[i].counter;
    dst->count++;
  }
  return 0;
fail:
  PyErr_NoMemory();
  return -1;
}

static sq_causal_t *ext__causal_of(sq_lattice_t *l) {
  return l->type == SQ_LATTICE_SINGLE_CAUSAL ? &l->u.single : &l->u.multi.causal;
}

/* Builds into the empty lattice *l (whose type is set) one sibling from the pair
 * (clock, value). 0 or -1. */
static int ext__sibling_from_py(PyObject *pair, sq_lattice_t *l) {
  sq_causal_t *c = ext__causal_of(l);
  PyObject *seq = NULL;
  Py_buffer view = {0};
  int rc = -1;
  seq = PySequence_Fast(pair, "a sibling must be a (clock, value) pair");
  if (!seq) goto out;
  if (PySequence_Fast_GET_SIZE(seq) != 2) {
    PyErr_SetString(PyExc_TypeError, "a sibling must be a (clock, value) pair");
    goto out;
  }
  c->siblings = calloc(1, sizeof *c->siblings);
  if (!c->siblings) {
    PyErr_NoMemory();
    goto out;
  }
  c->nsiblings = 1;
  sq_sibling_t *s = &c->siblings[0];
  if (ext__vclock_from_py(PySequence_Fast_GET_ITEM(seq, 0), &s->clock) < 0) goto out;
  if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, 1), &view, PyBUF_SIMPLE) < 0) goto out;
  if (view.len > 0) {
    s->value.data = malloc((size_t)view.len);
    if (!s->value.data) {
      PyErr_NoMemory();
      goto out;
    }
    memcpy(s->value.data, view.buf, (size_t)view.len);
    s->value.len = (size_t)view.len;
  }
  rc = ext__vclock_dup(&s->clock, &c->clock);
out:
  PyBuffer_Release(&view);
  Py_XDECREF(seq);
  return rc;
}

/* Joins every sibling of the iterable `siblings` into the empty lattice *acc (whose
 * type is set). 0 or -1; *acc is always freeable. */
static int ext__siblings_join(ext_state_t *st, PyObject *siblings, sq_lattice_t *acc,
                              const char *context) {
  PyObject *seq = PySequence_Fast(siblings, "siblings must be an iterable of (clock, value)");
  int rc = -1;
  if (!seq) return -1;
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
    sq_lattice_t one = {.type = acc->type};
    int err = ext__sibling_from_py(PySequence_Fast_GET_ITEM(seq, i), &one) < 0 ? -1 : 0;
    if (err == 0 && i == 0) {
      *acc = one; /* move: the first sibling becomes the accumulator */
      continue;
    }
    int mrc = err == 0 ? sq_lattice_merge(acc, &one, NULL) : 0;
    if (mrc != 0) {
      ext_error_raise(st, mrc, context);
      err = -1;
    }
    sq_lattice_free(&one);
    if (err < 0) goto out;
  }
  rc = 0;
out:
  Py_DECREF(seq);
  return rc;
}

static int ext__dep_cmp(const void *pa, const void *pb) {
  return strcmp(((const sq_dependency_t *)pa)->key, ((const sq_dependency_t *)pb)->key);
}

/* Fills m->deps (empty) from a mapping key -> clock, sorted by key. 0 or -1. */
static int ext__deps_from_py(PyObject *mapping, sq_multi_causal_t *m) {
  PyObject *items = NULL;
  int rc = -1;
  items = ext__mapping_pairs(mapping, "deps", "deps.items() must be (str, clock) pairs");
  if (!items) goto out;
  Py_ssize_t n = PyList_GET_SIZE(items);
  if (!(m->deps = ext__entries_new(n, sizeof *m->deps))) goto out;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *kv = PyList_GET_ITEM(items, i);
    sq_dependency_t *d = &m->deps[m->ndeps];
    d->key = ext__strdup_arg(PyTuple_GET_ITEM(kv, 0), "a dependency key");
    if (!d->key) goto out;
    m->ndeps++; /* complete enough to free from here on */
    if (ext__vclock_from_py(PyTuple_GET_ITEM(kv, 1), &d->clock) < 0) goto out;
  }
  rc = ext__sort_unique(m->deps, m->ndeps, sizeof *m->deps, ext__dep_cmp,
                        "deps names a key twice");
out:
  Py_XDECREF(items);
  return rc;
}

/* ---- module functions ------------------------------------------------------------ */

static PyObject *ext__single_to_py(const sq_lattice_t *l) {
  return ext__causal_to_py(&l->u.single);
}

PyDoc_STRVAR(ext__decode_single_doc,
             "decode_single_causal($module, payload, /)\n--\n\n"
             "(clock, siblings) of a SingleKeyCausalValue payload: clock is a dict\n"
             "node -> counter, siblings a list of (clock, value). LatticeError if malformed.");

static PyObject *ext__decode_single(PyObject *module, PyObject *payload) {
  return ext_lattice_decode_py(module, SQ_LATTICE_SINGLE_CAUSAL, payload, ext__single_to_py,
                               "decode_single_causal");
}

/* (clock, siblings, deps) of a decoded MULTI_CAUSAL lattice. */
static PyObject *ext__multi_to_py(const sq_lattice_t *l) {
  PyObject *causal = ext__causal_to_py(&l->u.multi.causal);
  PyObject *deps = causal ? ext__deps_to_dict(&l->u.multi) : NULL;
  PyObject *res = NULL;
  if (deps)
    res = Py_BuildValue("(OOO)", PyTuple_GET_ITEM(causal, 0), PyTuple_GET_ITEM(causal, 1), deps);
  Py_XDECREF(causal);
  Py_XDECREF(deps);
  return res;
}

PyDoc_STRVAR(ext__decode_multi_doc,
             "decode_multi_causal($module, payload, /)\n--\n\n"
             "(clock, siblings, deps) of a MultiKeyCausalValue payload; deps is a dict\n"
             "key -> clock. LatticeError if malformed.");

static PyObject *ext__decode_multi(PyObject *module, PyObject *payload) {
  return ext_lattice_decode_py(module, SQ_LATTICE_MULTI_CAUSAL, payload, ext__multi_to_py,
                               "decode_multi_causal");
}

/* The payload of lattice `type` (SINGLE_ or MULTI_CAUSAL) joining `siblings`, with
 * `deps` (MULTI_CAUSAL; Py_None = none) attached. New bytes or NULL. */
static PyObject *ext__encode_causal(PyObject *module, sq_lattice_type_t type, PyObject *siblings,
                                    PyObject *deps, const char *context) {
  ext_state_t *st = ext_state(module);
  sq_lattice_t acc = {.type = type};
  PyObject *res = NULL;
  if (ext__siblings_join(st, siblings, &acc, context) < 0) goto out;
  if (deps != Py_None && ext__deps_from_py(deps, &acc.u.multi) < 0) goto out;
  res = ext_lattice_encode(st, &acc, context);
out:
  sq_lattice_free(&acc);
  return res;
}

PyDoc_STRVAR(ext__encode_single_doc,
             "encode_single_causal($module, siblings, /)\n--\n\n"
             "The canonical SingleKeyCausalValue payload of an iterable of (clock, value)\n"
             "siblings, joined as the lattice would: dominated siblings are dropped.");

static PyObject *ext__encode_single(PyObject *module, PyObject *siblings) {
  return ext__encode_causal(module, SQ_LATTICE_SINGLE_CAUSAL, siblings, Py_None,
                            "encode_single_causal");
}

PyDoc_STRVAR(ext__encode_multi_doc,
             "encode_multi_causal($module, siblings, deps=None, /)\n--\n\n"
             "The canonical MultiKeyCausalValue payload of (clock, value) siblings and a\n"
             "dict of dependencies key -> clock.");

static PyObject *ext__encode_multi(PyObject *module, PyObject *args) {
  PyObject *siblings, *deps = Py_None;
  if (!PyArg_ParseTuple(args, "O|O:encode_multi_causal", &siblings, &deps)) return NULL;
  return ext__encode_causal(module, SQ_LATTICE_MULTI_CAUSAL, siblings, deps,
                            "encode_multi_causal");
}

static PyMethodDef ext__causal_methods[] = {
    {"decode_single_causal", ext__decode_single, METH_O, ext__decode_single_doc},
    {"decode_multi_causal", ext__decode_multi, METH_O, ext__decode_multi_doc},
    {"encode_single_causal", ext__encode_single, METH_O, ext__encode_single_doc},
    {"encode_multi_causal", ext__encode_multi, METH_VARARGS, ext__encode_multi_doc},
    {NULL, NULL, 0, NULL},
};

int ext_causal_exec(PyObject *module) { return PyModule_AddFunctions(module, ext__causal_methods); }
