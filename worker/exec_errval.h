/* exec_errval: the error results squall hands back for failed calls.
 *
 * For Cloudburst compatibility a failed call's result is the Python tuple
 *     ('ERROR: <message>', <GenericResponse bytes>)
 * stored as a DEFAULT Value holding its pickle, where the GenericResponse has
 * success = false, error = EXECUTION_ERROR or FUNC_NOT_FOUND and squall's extension
 * fields (error_message, error_type, traceback, executor). The Python half builds the
 * same shape for exceptions; this C half exists so that the supervisor -- which has no
 * interpreter -- can report timeouts and crashes, and so Python gets the
 * GenericResponse bytes without a protobuf library.
 *
 * The pickle is written by hand (protocol 3: PROTO, BINUNICODE, BINBYTES, TUPLE2,
 * STOP), which pickle.loads / cloudpickle.loads read on every Python 3.
 * Pure functions; thread-safe.
 */
#ifndef EXEC_ERRVAL_H
#define EXEC_ERRVAL_H

#include <stddef.h>
#include <stdint.h>

#include "sq_buf.h"

/* What an error result says. Strings are borrowed; NULL = "". */
typedef struct {
  int code;              /* CloudburstError: 1 FUNC_NOT_FOUND, 3 EXECUTION_ERROR, ... */
  const char *type;      /* e.g. "builtins.ValueError", "squall.TimeoutError" */
  const char *message;   /* one sentence */
  const char *traceback; /* remote traceback text */
  const char *executor;  /* "ip:tid" */
} exec_errval_t;

/* Appends the packed GenericResponse of e to out. 0 or -ENOMEM. */
int exec_errval_response(const exec_errval_t *e, sq_buf_t *out);

/* Appends pickle((text, data)) -- a (str, bytes) tuple, protocol 3 -- to out. text must
 * be UTF-8. 0, -ENOMEM, or SQ_ETOOBIG when a part exceeds 4 GiB. */
int exec_errval_pickle(const char *text, const uint8_t *data, size_t len, sq_buf_t *out);

/* Appends the serialized Value (DEFAULT) of the error tuple ('ERROR: ' + message,
 * GenericResponse bytes) to out. 0, -ENOMEM, SQ_ETOOBIG. */
int exec_errval_value(const exec_errval_t *e, sq_buf_t *out);

#endif
