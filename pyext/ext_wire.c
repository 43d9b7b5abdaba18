/* ext_wire: the Cloudburst scheduler messages of the Python client, built and read
 * with protobuf-c (common/proto/cloudburst.proto, shared.proto).
 *
 *   encode_function(name, body) -> bytes                       Function
 *   encode_function_call(name, args, response_key, timeout_ms=0, response_address="")
 *   encode_dag(name, functions, connections) -> bytes          Dag (REGULAR functions)
 *   encode_dag_call(name, function_args, output_key, timeout_ms=0, response_address="",
 *                   ack_failures_only=False)
 *   decode_generic_response(data) -> (success, response_id, error, error_message,
 *                                     error_type, traceback, executor)
 *   decode_string_set(data) -> [str]
 *   decode_value(data) -> (type, body, response_id)
 *
 * `args` are sequences of (SerializerType, body) pairs; `function_args` maps a function
 * name to such a sequence; `connections` is a sequence of (source, sink) names.
 *
 * Encoding: the protobuf-c structs borrow every string and buffer from the Python
 * arguments (kept alive by the call), so the only copy is the pack into the result
 * bytes object; the struct arrays live in one scratch block freed on return.
 * Decoding: replies are untrusted network bytes and go through sq_proto_unpack (size
 * limit, nesting limit); malformed input raises ValueError, text that is not UTF-8 is
 * decoded with replacement characters. Every function holds the GIL (no waiting).
 */
#include "ext.h"

#include <stdlib.h>
#include <string.h>

#include "cloudburst.pb-c.h"
#include "shared.pb-c.h"
#include "sq_error.h"
#include "sq_proto.h"

#define EXT_WIRE_MAX_REPLY ((size_t)1 << 30) /* decoders refuse larger inputs */

/* Scratch memory of one encode call: a list of blocks freed together. */
typedef struct {
  void **blocks;
  size_t n, cap;
  PyObject *keep; /* list of sequences whose items the structs borrow */
} ext_wire_scratch_t;

static void *ext_wire__alloc(ext_wire_scratch_t *s, size_t size) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    void **grown = realloc(s->blocks, cap * sizeof(*grown));
    if (!grown) return NULL;
    s->blocks = grown;
    s->cap = cap;
  }
  void *p = calloc(1, size ? size : 1);
  if (p) s->blocks[s->n++] = p;
  return p;
}

static void ext_wire__scratch_free(ext_wire_scratch_t *s) {
  for (size_t i = 0; i < s->n; i++) free(s->blocks[i]);
  free(s->blocks);
  Py_XDECREF(s->keep);
}

/* Keeps `obj` alive until the scratch is freed (steals the reference). 0 or -1. */
static int ext_wire__keep(ext_wire_scratch_t *s, PyObject *obj) {
  if (!s->keep && !(s->keep = PyList_New(0))) {
    Py_DECREF(obj);
    return -1;
  }
  int rc = PyList_Append(s->keep, obj);
  Py_DECREF(obj);
  return rc;
}

/* The UTF-8 of str `obj`, borrowed from it; NULL + TypeError/UnicodeError. */
static char *ext_wire__str(PyObject *obj, const char *what) {
  if (!PyUnicode_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what, Py_TYPE(obj)->tp_name);
    return NULL;
  }
  return (char *)PyUnicode_AsUTF8(obj);
}

/* Fills *a with one Value per (type, body) pair of `seq`, bodies borrowed (the bytes
 * objects must be kept alive by `seq`). 0 or -1 with an exception set. */
static int ext_wire__arguments(ext_wire_scratch_t *s, PyObject *seq, Arguments *a) {
  PyObject *fast = PySequence_Fast(seq, "arguments must be a sequence of (type, body)");
  if (!fast || ext_wire__keep(s, fast) < 0) return -1; /* the structs borrow its items */
  Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  Value *vals = ext_wire__alloc(s, (size_t)n * sizeof(Value));
  Value **ptrs = ext_wire__alloc(s, (size_t)n * sizeof(Value *));
  if (!vals || !ptrs) {
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *pair = PySequence_Fast_GET_ITEM(fast, i), *body;
    int type;
    if (!PyTuple_Check(pair) || !PyArg_ParseTuple(pair, "iO!", &type, &PyBytes_Type, &body)) {
      if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "an argument is a (type, bytes)");
      return -1;
    }
    value__init(&vals[i]);
    vals[i].type = (SerializerType)type;
    vals[i].body.data = (uint8_t *)PyBytes_AS_STRING(body);
    vals[i].body.len = (size_t)PyBytes_GET_SIZE(body);
    ptrs[i] = &vals[i];
  }
  arguments__init(a);
  a->values = ptrs;
  a->n_values = (size_t)n;
  return 0;
}

/* Packs `m` into a new bytes object. */
static PyObject *ext_wire__pack(const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
  if (out) protobuf_c_message_pack(m, (uint8_t *)PyBytes_AS_STRING(out));
  return out;
}

static PyObject *ext_wire__function(PyObject *mod, PyObject *args) {
  (void)mod;
  Function f = FUNCTION__INIT;
  Py_buffer body;
  if (!PyArg_ParseTuple(args, "sy*:encode_function", &f.name, &body)) return NULL;
  f.body.data = body.buf;
  f.body.len = (size_t)body.len;
  PyObject *out = ext_wire__pack(&f.base);
  PyBuffer_Release(&body);
  return out;
}

static PyObject *ext_wire__function_call(PyObject *mod, PyObject *args, PyObject *kw) {
  (void)mod;
  static char *kwlist[] = {"name", "args", "response_key", "timeout_ms", "response_address",
                           NULL};
  FunctionCall c = FUNCTION_CALL__INIT;
  Arguments a;
  PyObject *seq, *out = NULL;
  unsigned int ms = 0;
  const char *addr = "";
  ext_wire_scratch_t s = {0};
  if (!PyArg_ParseTupleAndKeywords(args, kw, "sOs|Is:encode_function_call", kwlist, &c.name,
                                   &seq, &c.response_key, &ms, &addr))
    return NULL;
  if (ext_wire__arguments(&s, seq, &a) < 0) goto out;
  c.arguments = &a;
  c.timeout_ms = ms;
  c.response_address = (char *)addr;
  out = ext_wire__pack(&c.base);
out:
  ext_wire__scratch_free(&s);
  return out;
}

/* Dag.FunctionReference per name and Dag.Link per (source, sink). 0 or -1. */
static int ext_wire__dag_parts(ext_wire_scratch_t *s, PyObject *fns, PyObject *links, Dag *d) {
  Py_ssize_t nf = PySequence_Fast_GET_SIZE(fns), nl = PySequence_Fast_GET_SIZE(links);
  Dag__FunctionReference *refs = ext_wire__alloc(s, (size_t)nf * sizeof(*refs));
  Dag__FunctionReference **rp = ext_wire__alloc(s, (size_t)nf * sizeof(*rp));
  Dag__Link *ls = ext_wire__alloc(s, (size_t)nl * sizeof(*ls));
  Dag__Link **lp = ext_wire__alloc(s, (size_t)nl * sizeof(*lp));
  if (!refs || !rp || !ls || !lp) {
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < nf; i++) {
    dag__function_reference__init(&refs[i]);
    if (!(refs[i].name = ext_wire__str(PySequence_Fast_GET_ITEM(fns, i), "a function name")))
      return -1;
    rp[i] = &refs[i];
  }
  for (Py_ssize_t i = 0; i < nl; i++) {
    PyObject *pair = PySequence_Fast_GET_ITEM(links, i);
    dag__link__init(&ls[i]);
    if (!PyTuple_Check(pair) || !PyArg_ParseTuple(pair, "ss", &ls[i].source, &ls[i].sink)) {
      if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a connection is (source, sink)");
      return -1;
    }
    lp[i] = &ls[i];
  }
  d->functions = rp;
  d->n_functions = (size_t)nf;
  d->connections = lp;
  d->n_connections = (size_t)nl;
  return 0;
}

static PyObject *ext_wire__dag(PyObject *mod, PyObject *args) {
  (void)mod;
  Dag d = DAG__INIT;
  PyObject *fns_in, *links_in, *fns = NULL, *links = NULL, *out = NULL;
  ext_wire_scratch_t s = {0};
  if (!PyArg_ParseTuple(args, "sOO:encode_dag", &d.name, &fns_in, &links_in)) return NULL;
  if (!(fns = PySequence_Fast(fns_in, "functions must be a sequence of names"))) goto out;
  if (!(links = PySequence_Fast(links_in, "connections must be a sequence of pairs"))) goto out;
  if (ext_wire__dag_parts(&s, fns, links, &d) == 0) out = ext_wire__pack(&d.base);
out:
  Py_XDECREF(fns);
  Py_XDECREF(links);
  ext_wire__scratch_free(&s);
  return out;
}

/* One DagCall.function_args entry per item of dict `fa`. 0 or -1. */
static int ext_wire__function_args(ext_wire_scratch_t *s, PyObject *fa, DagCall *c) {
  if (!PyDict_Check(fa)) {
    PyErr_SetString(PyExc_TypeError, "function_args must be a dict {name: [(type, body)]}");
    return -1;
  }
  size_t n = (size_t)PyDict_GET_SIZE(fa), i = 0;
  DagCall__FunctionArgsEntry *es = ext_wire__alloc(s, n * sizeof(*es));
  DagCall__FunctionArgsEntry **ep = ext_wire__alloc(s, n * sizeof(*ep));
  Arguments *as = ext_wire__alloc(s, n * sizeof(*as));
  if (!es || !ep || !as) {
    PyErr_NoMemory();
    return -1;
  }
  PyObject *key, *val;
  Py_ssize_t pos = 0;
  while (PyDict_Next(fa, &pos, &key, &val)) {
    dag_call__function_args_entry__init(&es[i]);
    if (!(es[i].key = ext_wire__str(key, "a function name"))) return -1;
    if (ext_wire__arguments(s, val, &as[i]) < 0) return -1;
    es[i].value = &as[i];
    ep[i] = &es[i];
    i++;
  }
  c->function_args = ep;
  c->n_function_args = i;
  return 0;
}

static PyObject *ext_wire__dag_call(PyObject *mod, PyObject *args, PyObject *kw) {
  (void)mod;
  static char *kwlist[] = {"name", "function_args", "output_key", "timeout_ms",
                           "response_address", "ack_failures_only", NULL};
  DagCall c = DAG_CALL__INIT;
  PyObject *fa, *out = NULL;
  unsigned int ms = 0;
  int quiet = 0;
  const char *addr = "";
  ext_wire_scratch_t s = {0};
  if (!PyArg_ParseTupleAndKeywords(args, kw, "sOs|Isp:encode_dag_call", kwlist, &c.name, &fa,
                                   &c.output_key, &ms, &addr, &quiet))
    return NULL;
  if (ext_wire__function_args(&s, fa, &c) == 0) {
    c.timeout_ms = ms;
    c.response_address = (char *)addr;
    c.ack_failures_only = quiet != 0;
    out = ext_wire__pack(&c.base);
  }
  ext_wire__scratch_free(&s);
  return out;
}

/* Decodes untrusted `data` as desc; NULL + ValueError naming the reason. */
static ProtobufCMessage *ext_wire__unpack(const ProtobufCMessageDescriptor *desc,
                                          PyObject *data) {
  Py_buffer v;
  ProtobufCMessage *m = NULL;
  if (PyObject_GetBuffer(data, &v, PyBUF_SIMPLE) < 0) return NULL;
  int rc = sq_proto_unpack(desc, NULL, v.buf, (size_t)v.len, EXT_WIRE_MAX_REPLY, &m);
  PyBuffer_Release(&v);
  if (rc) PyErr_Format(PyExc_ValueError, "malformed %s (%zd bytes): %s", desc->name, v.len,
                       sq_strerror(rc));
  return m;
}

/* A str from protobuf-c text (NULL = ""), invalid UTF-8 replaced. */
static PyObject *ext_wire__text(const char *s) {
  return PyUnicode_DecodeUTF8(s ? s : "", s ? (Py_ssize_t)strlen(s) : 0, "replace");
}

static PyObject *ext_wire__generic_response(PyObject *mod, PyObject *data) {
  (void)mod;
  GenericResponse *r = (GenericResponse *)ext_wire__unpack(&generic_response__descriptor, data);
  if (!r) return NULL;
  PyObject *out = Py_BuildValue("(NNiNNNN)", PyBool_FromLong(r->success),
                                ext_wire__text(r->response_id), (int)r->error,
                                ext_wire__text(r->error_message), ext_wire__text(r->error_type),
                                ext_wire__text(r->traceback), ext_wire__text(r->executor));
  generic_response__free_unpacked(r, NULL);
  return out;
}

static PyObject *ext_wire__string_set(PyObject *mod, PyObject *data) {
  (void)mod;
  StringSet *ss = (StringSet *)ext_wire__unpack(&string_set__descriptor, data);
  if (!ss) return NULL;
  PyObject *out = PyList_New((Py_ssize_t)ss->n_keys);
  for (size_t i = 0; out && i < ss->n_keys; i++) {
    PyObject *k = ext_wire__text(ss->keys[i]);
    if (!k) Py_CLEAR(out);
    else PyList_SET_ITEM(out, (Py_ssize_t)i, k);
  }
  string_set__free_unpacked(ss, NULL);
  return out;
}

static PyObject *ext_wire__value(PyObject *mod, PyObject *data) {
  (void)mod;
  Value *v = (Value *)ext_wire__unpack(&value__descriptor, data);
  if (!v) return NULL;
  const char *body = v->body.data ? (const char *)v->body.data : "";
  PyObject *out = Py_BuildValue("(iy#N)", (int)v->type, body, (Py_ssize_t)v->body.len,
                                ext_wire__text(v->response_id));
  value__free_unpacked(v, NULL);
  return out;
}

#define EXT_KW (PyCFunction)(void (*)(void))

static PyMethodDef ext_wire__methods[] = {
    {"encode_function", ext_wire__function, METH_VARARGS,
     "encode_function(name, body) -> bytes: a Function (body: a serialized Value)"},
    {"encode_function_call", EXT_KW ext_wire__function_call, METH_VARARGS | METH_KEYWORDS,
     "encode_function_call(name, args, response_key, timeout_ms=0, response_address='')\n"
     "-> bytes: a FunctionCall; args are (type, body) pairs"},
    {"encode_dag", ext_wire__dag, METH_VARARGS,
     "encode_dag(name, functions, connections) -> bytes: a Dag of REGULAR functions"},
    {"encode_dag_call", EXT_KW ext_wire__dag_call, METH_VARARGS | METH_KEYWORDS,
     "encode_dag_call(name, function_args, output_key, timeout_ms=0, response_address='',\n"
     "ack_failures_only=False) -> bytes: a DagCall; function_args maps names to (type,\n"
     "body) pairs; ack_failures_only: the scheduler replies only to refuse the call"},
    {"decode_generic_response", ext_wire__generic_response, METH_O,
     "decode_generic_response(data) -> (success, response_id, error, error_message,\n"
     "error_type, traceback, executor); ValueError when malformed"},
    {"decode_string_set", ext_wire__string_set, METH_O,
     "decode_string_set(data) -> [str]; ValueError when malformed"},
    {"decode_value", ext_wire__value, METH_O,
     "decode_value(data) -> (type, body, response_id); ValueError when malformed"},
    {NULL, NULL, 0, NULL},
};

int ext_wire_exec(PyObject *module) { return PyModule_AddFunctions(module, ext_wire__methods); }
