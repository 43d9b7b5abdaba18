/* exec_py: the embedded CPython interpreter of one executor and the built-in module
 * `_squall_exec` through which the Python half (squall._executor) reaches C.
 *
 * Interpreter: initialised once per process from an isolated PyConfig (no environment
 * variables read by CPython itself, no signal handlers), with `executable` set to the
 * interpreter that built squall (or --python), so that its prefix -- and a venv's
 * pyvenv.cfg -- give the same site-packages as that interpreter: cloudpickle, numpy and
 * squall import as they do there. $PYTHONPATH is honoured explicitly (prepended to
 * sys.path), since the isolated config ignores it. Never finalised and re-initialised.
 *
 * GIL: the executor thread holds it only while it runs Python; every KVS round trip
 * made for Python releases it (Py_BEGIN_ALLOW_THREADS).
 *
 * `_squall_exec` functions (module state holds the exec_ctx_t pointer):
 *   kvs_get(key) -> None | (lattice_type, lww_timestamp, bytes | [bytes])
 *   kvs_put(key, value: bytes) ; kvs_put_set(key, [bytes])    synchronous, raise on error
 *   send(ip, tid, data: bytes)      queue a frame for tcp://ip:5500+offset+tid
 *   push(address, response_id, type, body)   queue a Value{body, type, response_id}
 *                                   for a client's response socket (captured output)
 *   recv() -> [bytes]               drain the user inbox (raw pickles)
 *   error_response(code, type, message, traceback) -> GenericResponse bytes
 *   identity() -> (ip, tid)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>

#include "exec_errval.h"
#include "exec_int.h"
#include "sq_error.h"

#ifndef SQUALL_PYTHON_EXECUTABLE
#define SQUALL_PYTHON_EXECUTABLE ""
#endif

typedef struct {
  exec_ctx_t *x;
} exec__mstate_t;

static exec_ctx_t *exec__ctx(PyObject *m) {
  exec__mstate_t *st = PyModule_GetState(m);
  return st ? st->x : NULL;
}

static PyObject *exec__raise(const char *what, const char *key, int rc, const char *detail) {
  PyErr_Format(PyExc_RuntimeError, "%s of %s failed: %s%s%s", what, key, sq_strerror(rc),
               detail && *detail ? " -- " : "", detail ? detail : "");
  return NULL;
}

static PyObject *exec__lattice_to_py(const sq_lattice_t *l) {
  if (l->type == SQ_LATTICE_LWW)
    return Py_BuildValue("(iKy#)", (int)l->type, (unsigned long long)l->u.lww.timestamp,
                         (const char *)l->u.lww.value.data, (Py_ssize_t)l->u.lww.value.len);
  if (l->type == SQ_LATTICE_SET || l->type == SQ_LATTICE_ORDERED_SET) {
    PyObject *items = PyList_New((Py_ssize_t)l->u.set.count);
    for (size_t i = 0; items && i < l->u.set.count; i++) {
      PyObject *b = PyBytes_FromStringAndSize((const char *)l->u.set.items[i].data,
                                              (Py_ssize_t)l->u.set.items[i].len);
      if (!b) { Py_CLEAR(items); break; }
      PyList_SET_ITEM(items, (Py_ssize_t)i, b);
    }
    return items ? Py_BuildValue("(iKN)", (int)l->type, 0ULL, items) : NULL;
  }
  PyErr_Format(PyExc_TypeError, "lattice type %s is not readable here",
               sq_lattice_type_name(l->type));
  return NULL;
}

static PyObject *exec__kvs_get(PyObject *m, PyObject *args) {
  exec_ctx_t *x = exec__ctx(m);
  const char *key;
  if (!PyArg_ParseTuple(args, "s", &key)) return NULL;
  sq_lattice_type_t type = SQ_LATTICE_NONE;
  uint8_t *payload = NULL;
  size_t len = 0;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = kvs_client_get(x->py_kvs, key, NULL, &type, &payload, &len);
  Py_END_ALLOW_THREADS
  if (rc == SQ_EKEYDNE) Py_RETURN_NONE;
  if (rc) return exec__raise("KVS get", key, rc, kvs_client_message(x->py_kvs));
  sq_lattice_t l;
  rc = sq_lattice_decode(type, payload, len, &l);
  free(payload);
  if (rc) return exec__raise("decoding", key, rc, NULL);
  PyObject *out = exec__lattice_to_py(&l);
  sq_lattice_free(&l);
  return out;
}

static PyObject *exec__put_lattice(exec_ctx_t *x, const char *key, const sq_lattice_t *l) {
  sq_buf_t buf = {0};
  int rc = sq_lattice_encode(l, &buf);
  if (rc) {
    sq_buf_free(&buf);
    return exec__raise("encoding", key, rc, NULL);
  }
  Py_BEGIN_ALLOW_THREADS
  rc = kvs_client_put(x->py_kvs, key, l->type, buf.data, buf.len, NULL);
  Py_END_ALLOW_THREADS
  sq_buf_free(&buf);
  if (rc) return exec__raise("KVS put", key, rc, kvs_client_message(x->py_kvs));
  Py_RETURN_NONE;
}

static PyObject *exec__kvs_put(PyObject *m, PyObject *args) {
  exec_ctx_t *x = exec__ctx(m);
  const char *key;
  Py_buffer v;
  if (!PyArg_ParseTuple(args, "sy*", &key, &v)) return NULL;
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = sq_lww_writer_timestamp((uint32_t)x->tid, &x->lww_last);
  l.u.lww.value.data = v.buf;
  l.u.lww.value.len = (size_t)v.len;
  PyObject *r = exec__put_lattice(x, key, &l);
  PyBuffer_Release(&v);
  return r;
}

static PyObject *exec__kvs_put_set(PyObject *m, PyObject *args) {
  exec_ctx_t *x = exec__ctx(m);
  const char *key;
  PyObject *seq;
  if (!PyArg_ParseTuple(args, "sO!", &key, &PyList_Type, &seq)) return NULL;
  Py_ssize_t n = PyList_GET_SIZE(seq);
  sq_bytes_t *items = calloc(n ? (size_t)n : 1, sizeof(*items));
  if (!items) return PyErr_NoMemory();
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *b = PyList_GET_ITEM(seq, i);
    if (!PyBytes_Check(b)) {
      free(items);
      PyErr_SetString(PyExc_TypeError, "set elements must be bytes");
      return NULL;
    }
    items[i].data = (uint8_t *)PyBytes_AS_STRING(b);
    items[i].len = (size_t)PyBytes_GET_SIZE(b);
  }
  /* The encoder wants sorted unique items: decode(encode) canonicalises via merge. */
  sq_lattice_t l = {.type = SQ_LATTICE_SET};
  l.u.set.items = items;
  l.u.set.count = (size_t)n;
  PyObject *r = exec__put_lattice(x, key, &l);
  free(items);
  return r;
}

static PyObject *exec__send(PyObject *m, PyObject *args) {
  exec_ctx_t *x = exec__ctx(m);
  const char *ip;
  int tid;
  Py_buffer v;
  if (!PyArg_ParseTuple(args, "siy*", &ip, &tid, &v)) return NULL;
  char ep[300];
  exec_io_endpoint(x, ep, sizeof(ep), ip, EXEC_PORT_INBOX, tid);
  int rc = ep[0] ? exec_io_out(x, EXEC_OUT_PUSH, ep, v.buf, (size_t)v.len) : SQ_EINVAL;
  PyBuffer_Release(&v);
  if (rc) return exec__raise("send", ip, rc, NULL);
  Py_RETURN_NONE;
}

static PyObject *exec__push(PyObject *m, PyObject *args) {
  exec_ctx_t *x = exec__ctx(m);
  const char *addr;
  Value v = VALUE__INIT;
  int type;
  Py_buffer body;
  if (!PyArg_ParseTuple(args, "ssiy*", &addr, &v.response_id, &type, &body)) return NULL;
  v.type = (SerializerType)type;
  v.body.data = body.buf;
  v.body.len = (size_t)body.len;
  sq_buf_t buf = {0};
  size_t n = value__get_packed_size(&v);
  int rc = sq_buf_reserve(&buf, n);
  if (!rc) {
    value__pack(&v, buf.data);
    rc = exec_run_push(x, addr, buf.data, n); /* same socket as the result, ahead of it */
  }
  sq_buf_free(&buf);
  PyBuffer_Release(&body);
  if (rc) return exec__raise("push", addr, rc, NULL);
  Py_RETURN_NONE;
}

static PyObject *exec__recv(PyObject *m, PyObject *unused) {
  (void)unused;
  exec_ctx_t *x = exec__ctx(m);
  exec_msg_t *msgs = NULL;
  size_t n = 0;
  if (exec_io_inbox_drain(x, &msgs, &n)) return PyErr_NoMemory();
  PyObject *out = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; i < n; i++) {
    PyObject *b = out ? PyBytes_FromStringAndSize((const char *)msgs[i].data,
                                                  (Py_ssize_t)msgs[i].len) : NULL;
    if (b) PyList_SET_ITEM(out, (Py_ssize_t)i, b);
    else Py_CLEAR(out);
    free(msgs[i].data);
  }
  free(msgs);
  return out;
}

static PyObject *exec__error_response(PyObject *m, PyObject *args) {
  exec_ctx_t *x = exec__ctx(m);
  exec_errval_t e = {.executor = x->ident};
  if (!PyArg_ParseTuple(args, "isss", &e.code, &e.type, &e.message, &e.traceback)) return NULL;
  sq_buf_t buf = {0};
  if (exec_errval_response(&e, &buf)) return PyErr_NoMemory();
  PyObject *r = PyBytes_FromStringAndSize((const char *)buf.data, (Py_ssize_t)buf.len);
  sq_buf_free(&buf);
  return r;
}

static PyObject *exec__identity(PyObject *m, PyObject *unused) {
  (void)unused;
  exec_ctx_t *x = exec__ctx(m);
  return Py_BuildValue("(si)", x->ip, x->tid);
}

static PyMethodDef exec__methods[] = {
    {"kvs_get", exec__kvs_get, METH_VARARGS, "kvs_get(key) -> None | (type, ts, value)"},
    {"kvs_put", exec__kvs_put, METH_VARARGS, "kvs_put(key, bytes): LWW write"},
    {"kvs_put_set", exec__kvs_put_set, METH_VARARGS, "kvs_put_set(key, [bytes]): SET merge"},
    {"send", exec__send, METH_VARARGS, "send(ip, tid, bytes): to an executor's inbox"},
    {"push", exec__push, METH_VARARGS, "push(address, response_id, type, body): to a client"},
    {"recv", exec__recv, METH_NOARGS, "recv() -> [bytes]: drain this executor's inbox"},
    {"error_response", exec__error_response, METH_VARARGS, "GenericResponse bytes"},
    {"identity", exec__identity, METH_NOARGS, "(ip, tid) of this executor"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef exec__module = {
    PyModuleDef_HEAD_INIT, "_squall_exec", "C half of the squall executor", sizeof(exec__mstate_t),
    exec__methods, NULL, NULL, NULL, NULL,
};

static PyObject *exec__module_init(void) { return PyModule_Create(&exec__module); }

static int exec__config(exec_ctx_t *x) {
  PyConfig config;
  PyConfig_InitIsolatedConfig(&config);
  config.install_signal_handlers = 0;
  config.site_import = 1;
  const char *py = x->cfg->python && *x->cfg->python ? x->cfg->python : SQUALL_PYTHON_EXECUTABLE;
  PyStatus st = PyStatus_Ok();
  if (py && *py) {
    st = PyConfig_SetBytesString(&config, &config.program_name, py);
    if (!PyStatus_Exception(st)) st = PyConfig_SetBytesString(&config, &config.executable, py);
  }
  if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(st)) {
    sq_log_error(x->log, "cannot start Python (%s): %s", py, st.err_msg ? st.err_msg : "?");
    return SQ_ECONFIG;
  }
  return 0;
}

/* Prepends $PYTHONPATH to sys.path (the isolated config does not read it). */
static int exec__pythonpath(void) {
  const char *pp = getenv("PYTHONPATH");
  if (!pp || !*pp) return 0;
  PyObject *path = PySys_GetObject("path"); /* borrowed */
  char *copy = strdup(pp);
  if (!copy || !path) {
    free(copy);
    return -ENOMEM;
  }
  Py_ssize_t at = 0;
  for (char *save = NULL, *tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
    PyObject *s = PyUnicode_DecodeFSDefault(tok);
    if (s) PyList_Insert(path, at++, s);
    Py_XDECREF(s);
  }
  free(copy);
  return 0;
}

int exec_py_init(exec_ctx_t *x) {
  int rc = SQ_ECONFIG;
  PyObject *mod = NULL, *emod = NULL, *cls = NULL;
  if (PyImport_AppendInittab("_squall_exec", exec__module_init) < 0) return SQ_ECONFIG;
  if ((rc = exec__config(x))) return rc;
  rc = SQ_ECONFIG;
  if (exec__pythonpath()) goto out;
  if (!(mod = PyImport_ImportModule("_squall_exec"))) goto out;
  ((exec__mstate_t *)PyModule_GetState(mod))->x = x;
  if (!(emod = PyImport_ImportModule("squall._executor"))) goto out;
  if (!(cls = PyObject_GetAttrString(emod, "Executor"))) goto out;
  x->py_executor = PyObject_CallFunction(cls, "sdds", x->ident,
                                         (double)x->cfg->function_ttl_ms / 1000.0,
                                         (double)x->cfg->ref_timeout_ms / 1000.0,
                                         x->cfg->cache_dir ? x->cfg->cache_dir : "");
  if (x->py_executor) rc = 0;
out:
  if (rc) {
    sq_log_error(x->log, "cannot load squall._executor in the embedded Python");
    PyErr_Print();
  }
  Py_XDECREF(mod);
  Py_XDECREF(emod);
  Py_XDECREF(cls);
  x->py_tstate = PyEval_SaveThread(); /* the GIL is taken only to run Python */
  return rc;
}

void exec_py_fini(exec_ctx_t *x) {
  /* The interpreter is never finalised: executors exit with the process, and
   * Py_FinalizeEx would run user atexit code and wait for user threads. */
  (void)x;
}

static int exec__value_from(PyObject *pair, Value *v) {
  int type;
  const char *body;
  Py_ssize_t len;
  if (!PyArg_ParseTuple(pair, "iy#", &type, &body, &len)) return SQ_EINVAL;
  value__init(v);
  v->type = (SerializerType)type;
  v->body.len = (size_t)len;
  v->body.data = malloc(len ? (size_t)len : 1);
  if (!v->body.data) return -ENOMEM;
  memcpy(v->body.data, body, (size_t)len);
  return 0;
}

/* Copies Executor.run's answer (ok, (type, body), [(type, body)] | None) into res. */
static int exec__result_from(PyObject *r, exec_result_t *res) {
  PyObject *whole, *parts;
  int ok;
  if (!PyArg_ParseTuple(r, "pOO", &ok, &whole, &parts)) return SQ_EINVAL;
  res->ok = ok;
  int rc = exec__value_from(whole, &res->whole);
  if (rc) return rc;
  Py_ssize_t n = PyList_Check(parts) ? PyList_GET_SIZE(parts) : 1;
  res->parts = calloc((size_t)n ? (size_t)n : 1, sizeof(Value));
  if (!res->parts) return -ENOMEM;
  for (Py_ssize_t i = 0; i < n; i++) {
    rc = exec__value_from(PyList_Check(parts) ? PyList_GET_ITEM(parts, i) : whole,
                          &res->parts[i]);
    if (rc) return rc;
    res->nparts++;
  }
  return 0;
}

/* Where the caller waits for direct responses ("" = it reads the KVS). */
static const char *exec__reply_to(const exec_job_t *job) {
  const char *a = NULL;
  if (job->kind == EXEC_JOB_CALL) a = ((const FunctionCall *)job->msg)->response_address;
  else if (job->kind == EXEC_JOB_DAG) a = ((const DagSchedule *)job->msg)->response_address;
  return a ? a : "";
}

int exec_py_run(exec_ctx_t *x, const exec_job_t *job, exec_result_t *res) {
  int rc = SQ_EINVAL;
  memset(res, 0, sizeof(*res));
  PyEval_RestoreThread(x->py_tstate);
  PyObject *args = PyList_New((Py_ssize_t)job->nargs), *r = NULL;
  for (size_t i = 0; args && i < job->nargs; i++) {
    const Value *v = job->args[i];
    PyObject *pair = Py_BuildValue("(iy#)", (int)v->type, (const char *)v->body.data,
                                   (Py_ssize_t)v->body.len);
    if (!pair) goto out;
    PyList_SET_ITEM(args, (Py_ssize_t)i, pair);
  }
  if (args) r = PyObject_CallMethod(x->py_executor, "run", "sOs", job->fn, args,
                                    exec__reply_to(job));
  if (r) rc = exec__result_from(r, res);
out:
  if (rc) {
    sq_log_error(x->log, "squall._executor failed on %s (%s)", job->fn, sq_strerror(rc));
    PyErr_Print();
    exec_py_result_clear(res);
  }
  Py_XDECREF(args);
  Py_XDECREF(r);
  x->py_tstate = PyEval_SaveThread();
  return rc;
}

int exec_py_pin(exec_ctx_t *x, const char *fn, char *err, size_t errlen) {
  int rc = 0;
  err[0] = 0;
  PyEval_RestoreThread(x->py_tstate);
  PyObject *r = PyObject_CallMethod(x->py_executor, "pin", "s", fn);
  if (!r) {
    PyErr_Print();
    rc = SQ_EINVAL;
    snprintf(err, errlen, "internal error while pinning %s", fn);
  } else if (r != Py_None) {
    rc = SQ_ENOTFOUND;
    const char *s = PyUnicode_Check(r) ? PyUnicode_AsUTF8(r) : NULL;
    snprintf(err, errlen, "%s", s ? s : "cannot pin");
  }
  Py_XDECREF(r);
  x->py_tstate = PyEval_SaveThread();
  return rc;
}

void exec_py_result_clear(exec_result_t *res) {
  free(res->whole.body.data);
  for (size_t i = 0; i < res->nparts; i++) free(res->parts[i].body.data);
  free(res->parts);
  memset(res, 0, sizeof(*res));
}
