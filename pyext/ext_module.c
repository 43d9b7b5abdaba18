/* ext_module: the _squall module object, its state and its initialisation.
 *
 * Multi-phase initialisation (PEP 489, modelled on CPython's Modules/xxlimited.c):
 * PyInit__squall only returns the definition; ext__exec fills a fresh module object
 * for each interpreter that imports it. The state (ext_state_t) holds the exception
 * classes; m_traverse/m_clear let the GC see and break the references, m_free runs
 * m_clear when the module goes away. There is no static mutable data anywhere in the
 * extension, so the module declares per-interpreter-GIL support on Python >= 3.12.
 *
 * Threads: every function runs with the GIL held except the C core of merge() on
 * large inputs (ext_lattice.c) and the network waits of KvsClient, request() and
 * Responses.recv (ext_kvs.c, ext_client.c), which touch no Python object meanwhile.
 */
#include "ext.h"

#ifndef SQUALL_VERSION
#error "SQUALL_VERSION must come from squall_common's compile definitions"
#endif

ext_state_t *ext_state(PyObject *module) {
  return (ext_state_t *)PyModule_GetState(module);
}

static int ext__exec(PyObject *module) {
  ext_state_t *st = ext_state(module);
  st->lww_last = 0;
  if (PyModule_AddStringConstant(module, "__version__", SQUALL_VERSION) < 0) return -1;
  if (ext_errors_exec(module, st) < 0) return -1;
  if (ext_lattice_exec(module) < 0) return -1;
  if (ext_causal_exec(module) < 0) return -1;
  if (ext_kvs_exec(module, st) < 0) return -1;
  if (ext_blob_exec(module) < 0) return -1;
  if (ext_cache_exec(module, st) < 0) return -1;
  if (ext_cache_ipc_exec(module) < 0) return -1;
  if (ext_client_exec(module) < 0) return -1;
  return 0;
}

static int ext__traverse(PyObject *module, visitproc visit, void *arg) {
  ext_state_t *st = ext_state(module);
  Py_VISIT(st->squall_error);
  Py_VISIT(st->lattice_error);
  Py_VISIT(st->key_not_found_error);
  Py_VISIT(st->timeout_error);
  Py_VISIT(st->cache_view_type);
  return 0;
}

static int ext__clear(PyObject *module) {
  ext_state_t *st = ext_state(module);
  Py_CLEAR(st->squall_error);
  Py_CLEAR(st->lattice_error);
  Py_CLEAR(st->key_not_found_error);
  Py_CLEAR(st->timeout_error);
  Py_CLEAR(st->cache_view_type);
  return 0;
}

static void ext__free(void *module) { (void)ext__clear((PyObject *)module); }

static PyModuleDef_Slot ext__slots[] = {
    {Py_mod_exec, (void *)ext__exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(ext__doc,
             "C core of the squall package: the error table of sq_error.h and the lattice\n"
             "functions of common/lattice.h. Use it through `import squall`.");

static struct PyModuleDef ext__def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "squall._squall",
    .m_doc = ext__doc,
    .m_size = sizeof(ext_state_t),
    .m_methods = NULL, /* each file adds its own functions in its exec step */
    .m_slots = ext__slots,
    .m_traverse = ext__traverse,
    .m_clear = ext__clear,
    .m_free = ext__free,
};

PyMODINIT_FUNC PyInit__squall(void) { return PyModuleDef_Init(&ext__def); }
