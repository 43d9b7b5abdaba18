/* ext_errors: squall's one error space (common/sq_error.h) as seen from Python.
 *
 *   SquallError(Exception)      every error that comes from squall's C code
 *     LatticeError(SquallError) SQ_ELATTICE, SQ_EBADLATTICE, SQ_EUNKNOWNTYPE
 *
 * A raised instance carries `code` (the negative C result), `name` ("SQ_EBADLATTICE",
 * or "EIO" for -errno codes) and `message` (sq_strerror's sentence). The class
 * attributes default to None so that an instance made by Python code still has them.
 * -ENOMEM is raised as MemoryError, as Python code expects.
 *
 * `errors` exports the project table (name -> (code, message)) row by row through
 * sq_error_at, so it cannot drift from the C table.
 */
#include "ext.h"

#include <errno.h>
#include <limits.h>

#include "sq_error.h"

static PyObject *ext__new_error_class(const char *name, const char *doc, PyObject *base) {
  PyObject *dict = PyDict_New(), *cls = NULL;
  if (!dict) return NULL;
  if (PyDict_SetItemString(dict, "code", Py_None) < 0 ||
      PyDict_SetItemString(dict, "name", Py_None) < 0 ||
      PyDict_SetItemString(dict, "message", Py_None) < 0)
    goto out;
  cls = PyErr_NewExceptionWithDoc(name, doc, base, dict);
out:
  Py_DECREF(dict);
  return cls;
}

static PyObject *ext__error_table(void) {
  PyObject *table = PyDict_New();
  if (!table) return NULL;
  const char *name, *msg;
  int code;
  for (int i = 0; sq_error_at(i, &name, &msg, &code) == 0; i++) {
    PyObject *row = Py_BuildValue("(is)", code, msg);
    int rc = row ? PyDict_SetItemString(table, name, row) : -1;
    Py_XDECREF(row);
    if (rc < 0) {
      Py_DECREF(table);
      return NULL;
    }
  }
  return table;
}

static int ext__is_lattice_code(int code) {
  return code == SQ_ELATTICE || code == SQ_EBADLATTICE || code == SQ_EUNKNOWNTYPE;
}

PyObject *ext_error_raise(ext_state_t *st, int code, const char *context) {
  if (code == -ENOMEM) return PyErr_NoMemory();
  PyObject *cls = ext__is_lattice_code(code) ? st->lattice_error : st->squall_error;
  const char *msg = sq_strerror(code), *name = sq_errname(code);
  PyObject *exc = NULL, *value = NULL;
  exc = PyObject_CallFunction(cls, "N", PyUnicode_FromFormat("%s: %s (%s)", context, msg, name));
  if (!exc) goto out;
  value = PyLong_FromLong(code);
  if (!value || PyObject_SetAttrString(exc, "code", value) < 0) goto out;
  Py_SETREF(value, PyUnicode_FromString(name));
  if (!value || PyObject_SetAttrString(exc, "name", value) < 0) goto out;
  Py_SETREF(value, PyUnicode_FromString(msg));
  if (!value || PyObject_SetAttrString(exc, "message", value) < 0) goto out;
  PyErr_SetObject(cls, exc);
out:
  Py_XDECREF(value);
  Py_XDECREF(exc);
  return NULL;
}

int ext_uint_arg(PyObject *obj, unsigned long long max, const char *what,
                 unsigned long long *out) {
  if (!PyLong_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(obj)->tp_name);
    return -1;
  }
  unsigned long long v = PyLong_AsUnsignedLongLong(obj);
  if (v == (unsigned long long)-1 && PyErr_Occurred()) {
    if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
      PyErr_Clear();
      PyErr_Format(PyExc_ValueError, "%s must be in 0..%llu", what, max);
    }
    return -1;
  }
  if (v > max) {
    PyErr_Format(PyExc_ValueError, "%s must be in 0..%llu", what, max);
    return -1;
  }
  *out = v;
  return 0;
}

PyDoc_STRVAR(ext__strerror_doc,
             "strerror(code: int) -> str\n\n"
             "The sentence for a squall result code (0, -errno or a SQ_E* code).");

/* Reads a result code (a C int) from `arg`. 0 or -1 (TypeError/OverflowError set). */
static int ext__code_arg(PyObject *arg, int *code) {
  long v = PyLong_AsLong(arg);
  if (v == -1 && PyErr_Occurred()) return -1;
  if (v < INT_MIN || v > INT_MAX) {
    PyErr_SetString(PyExc_OverflowError, "result code out of the range of a C int");
    return -1;
  }
  *code = (int)v;
  return 0;
}

static PyObject *ext__strerror(PyObject *module, PyObject *arg) {
  int code;
  if (ext__code_arg(arg, &code) < 0) return NULL;
  return PyUnicode_FromString(sq_strerror(code));
}

PyDoc_STRVAR(ext__errname_doc,
             "errname(code: int) -> str\n\n"
             "The stable identifier of a result code: 'SQ_ETIMEOUT', 'ENOMEM', 'OK' or\n"
             "'UNKNOWN'.");

static PyObject *ext__errname(PyObject *module, PyObject *arg) {
  int code;
  if (ext__code_arg(arg, &code) < 0) return NULL;
  return PyUnicode_FromString(sq_errname(code));
}

static PyMethodDef ext__error_methods[] = {
    {"strerror", ext__strerror, METH_O, ext__strerror_doc},
    {"errname", ext__errname, METH_O, ext__errname_doc},
    {NULL, NULL, 0, NULL},
};

int ext_errors_exec(PyObject *module, ext_state_t *st) {
  PyObject *table = NULL;
  int rc = -1;
  st->squall_error = ext__new_error_class(
      "squall.SquallError",
      "An error reported by squall's C core. Attributes: code (negative int), name\n"
      "(e.g. 'SQ_EBADLATTICE') and message (the sentence of squall.strerror(code)).",
      NULL);
  if (!st->squall_error) goto out;
  st->lattice_error = ext__new_error_class(
      "squall.LatticeError",
      "A lattice payload is malformed, of an unknown type, or of a different type\n"
      "than the one it is merged with.",
      st->squall_error);
  if (!st->lattice_error) goto out;
  if (PyModule_AddObjectRef(module, "SquallError", st->squall_error) < 0) goto out;
  if (PyModule_AddObjectRef(module, "LatticeError", st->lattice_error) < 0) goto out;
  table = ext__error_table();
  if (!table || PyModule_AddObjectRef(module, "errors", table) < 0) goto out;
  if (PyModule_AddIntConstant(module, "ERR_BASE", SQ_ERR_BASE) < 0) goto out;
  rc = PyModule_AddFunctions(module, ext__error_methods);
out:
  Py_XDECREF(table);
  return rc;
}
