/* ext: internals shared by the files of the _squall CPython extension.
 *
 * The module uses multi-phase initialisation (PEP 489): nothing lives in static
 * mutable storage; everything an interpreter needs is in its module state
 * (ext_state_t), reached through the module object every function receives as `self`.
 * That keeps the module safe to load in several interpreters at once.
 *
 *   ext_module.c   module definition, state lifetime, __version__
 *   ext_errors.c   SquallError / LatticeError, the error table, strerror/errname
 *   ext_lattice.c  lattice constants, merge/validate/lww_timestamp, LWW/SET/PRIORITY
 *                  encoders and decoders
 *   ext_causal.c   single- and multi-key causal payloads <-> Python structures
 *   ext_blob.c     the squall object blob (pickle 5 + aligned out-of-band buffers)
 *   ext_cache.c    CacheReader: zero-copy reads of the node cache
 *   ext_cache_writer.c  _CacheWriter: cache_store for tests and benchmarks
 *   ext_cache_ipc.c  CacheClient: misses, write-through and hit reports to squall-cache
 *   ext_kvs.c      KvsClient (kvs/client.h), KeyNotFoundError, SquallTimeoutError
 *   ext_client.c   Responses: the client's PULL socket for direct responses
 *   ext_channel.c  Channel: a kept request/reply connection to a scheduler port
 *   ext_wire.c     Cloudburst scheduler messages encoded/decoded with protobuf-c
 *
 * Conventions: functions returning PyObject * return a new reference or NULL with a
 * Python exception set; functions returning int return 0, or -1 with an exception set.
 * Errors that come from C (sq_error.h codes) are raised through ext_error_raise so
 * Python sees one exception family carrying the code and sq_strerror's sentence.
 */
#ifndef SQ_PYEXT_EXT_H
#define SQ_PYEXT_EXT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "lattice.h"

/* Per-interpreter state of the _squall module. */
typedef struct {
  PyObject *squall_error;  /* squall.SquallError (strong reference) */
  PyObject *lattice_error; /* squall.LatticeError, subclass of SquallError */
  PyObject *key_not_found_error; /* squall.KeyNotFoundError(SquallError, KeyError) */
  PyObject *timeout_error; /* squall.SquallTimeoutError(SquallError, TimeoutError) */
  uint64_t lww_last;       /* last timestamp lww_timestamp() handed out */
  PyObject *cache_view_type;   /* ext_cache.c: owner of one cache_view_t (heap type) */
} ext_state_t;

/* The state of `module` (a _squall module object). Never NULL for our module. */
ext_state_t *ext_state(PyObject *module);

/* Creates the exception classes into `st` and adds SquallError, LatticeError,
 * `errors` and the error functions to `module`. 0 or -1 (exception set). */
int ext_errors_exec(PyObject *module, ext_state_t *st);

/* Adds the lattice constants and functions to `module`. 0 or -1. */
int ext_lattice_exec(PyObject *module);

/* Adds the causal encoders/decoders to `module`. 0 or -1. */
int ext_causal_exec(PyObject *module);

/* Adds blob_encode/blob_parse (the squall object blob, ext_blob.c). 0 or -1. */
int ext_blob_exec(PyObject *module);

/* Adds CacheReader and _CacheWriter (ext_cache.c, ext_cache_writer.c) and fills
 * st->cache_view_type. 0 or -1. */
int ext_cache_exec(PyObject *module, ext_state_t *st);

/* Adds _CacheWriter (ext_cache_writer.c; called by ext_cache_exec). 0 or -1. */
int ext_cache_writer_exec(PyObject *module);

/* Adds CacheClient (ext_cache_ipc.c): requests to squall-cache. 0 or -1. */
int ext_cache_ipc_exec(PyObject *module);

/* Creates KeyNotFoundError / SquallTimeoutError into `st` and adds them and the
 * KvsClient type to `module`; needs ext_errors_exec first. 0 or -1. */
int ext_kvs_exec(PyObject *module, ext_state_t *st);

/* Adds the Responses type (ext_client.c), Channel (ext_channel_exec) and the wire
 * codecs (ext_wire_exec) to `module`. 0 or -1. */
int ext_client_exec(PyObject *module);

/* Adds the Channel type (ext_channel.c). 0 or -1. */
int ext_channel_exec(PyObject *module);

/* Adds encode_function & co. (ext_wire.c). 0 or -1. */
int ext_wire_exec(PyObject *module);

/* Raises the exception for result code `code` (a negative sq_error.h code) and
 * returns NULL. -ENOMEM becomes MemoryError; lattice codes (SQ_ELATTICE,
 * SQ_EBADLATTICE, SQ_EUNKNOWNTYPE) LatticeError; anything else SquallError. The
 * exception has attributes code (int), name (e.g. "SQ_EBADLATTICE") and message
 * (sq_strerror's sentence); its text is "<context>: <message> (<name>)". */
PyObject *ext_error_raise(ext_state_t *st, int code, const char *context);

/* Decodes the bytes-like `payload` as `type` into *out (the caller frees it with
 * sq_lattice_free, also after an error). 0, or -1 with TypeError (not bytes-like)
 * or the decode error raised; `context` prefixes the message. */
int ext_lattice_decode(ext_state_t *st, sq_lattice_type_t type, PyObject *payload,
                       sq_lattice_t *out, const char *context);

/* Turns a decoded lattice into its Python form: a new reference, or NULL with an
 * exception set. Borrows `l`. */
typedef PyObject *(*ext_lattice_to_py_fn)(const sq_lattice_t *l);

/* The body of every decode_* function: decodes the bytes-like `payload` as `type`
 * (errors as ext_lattice_decode, prefixed by `context`), returns to_py of the result
 * (new reference) or NULL with the exception set. The lattice is freed either way. */
PyObject *ext_lattice_decode_py(PyObject *module, sq_lattice_type_t type, PyObject *payload,
                                ext_lattice_to_py_fn to_py, const char *context);

/* Encodes `l` into a new bytes object, or NULL with the error raised. */
PyObject *ext_lattice_encode(ext_state_t *st, const sq_lattice_t *l, const char *context);

/* A new bytes object with a copy of `b` (empty when b->data is NULL). */
PyObject *ext_bytes_new(const sq_bytes_t *b);

/* Reads an int in [0, max] from `obj` into *out. 0, or -1 with TypeError,
 * OverflowError or ValueError set; `what` names the argument in the message. */
int ext_uint_arg(PyObject *obj, unsigned long long max, const char *what,
                 unsigned long long *out);

#endif
