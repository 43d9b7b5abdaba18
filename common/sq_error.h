/* sq_error: the one error space of squall.
 *
 * Every function that can fail returns an int: 0 on success, -errno for a system
 * error (-ENOMEM, -EIO, ...), or one of the project codes below, all negative and
 * below SQ_ERR_BASE so that they never collide with errno values. Errors are never
 * carried in errno. sq_strerror() turns any of them into a sentence for a user,
 * sq_errname() into a stable identifier for logs and the Python layer.
 *
 * The table is an X-macro so that the enum, the names and the messages cannot drift
 * apart; the Python extension exports the same table.
 */
#ifndef SQ_ERROR_H
#define SQ_ERROR_H

#define SQ_ERR_BASE (-10000)

/* X(NAME, offset, "message for a user") */
#define SQ_ERROR_TABLE(X)                                                              \
  X(SQ_EPROTO, 1, "malformed message: the bytes are not a valid protobuf message")    \
  X(SQ_ETOOBIG, 2, "message or value larger than the configured limit")               \
  X(SQ_ELATTICE, 3, "lattice type missing or different from the stored one")         \
  X(SQ_EBADLATTICE, 4, "lattice payload is malformed for its declared type")          \
  X(SQ_EKEYDNE, 5, "key does not exist")                                              \
  X(SQ_EWRONGTHREAD, 6, "this thread is not responsible for the key")                 \
  X(SQ_ETIMEOUT, 7, "timed out waiting for a reply")                                  \
  X(SQ_ENOSERVERS, 8, "no storage servers are known")                                 \
  X(SQ_ECONFIG, 9, "invalid configuration")                                           \
  X(SQ_EUNKNOWNTYPE, 10, "unknown request or lattice type")                           \
  X(SQ_EEMPTYKEY, 11, "empty key")                                                    \
  X(SQ_ECORRUPT, 12, "stored data is corrupt (checksum or framing mismatch)")         \
  X(SQ_ECLOSED, 13, "object is closed or broken and refuses further work")            \
  X(SQ_EUNSUPPORTED, 14, "operation not supported here")                              \
  X(SQ_ENOTFOUND, 15, "no such item")                                                 \
  X(SQ_EEXISTS, 16, "item already exists")                                            \
  X(SQ_EINVAL, 17, "invalid argument")

typedef enum {
#define SQ__ERR_ENUM(name, off, msg) name = SQ_ERR_BASE - (off),
  SQ_ERROR_TABLE(SQ__ERR_ENUM)
#undef SQ__ERR_ENUM
} sq_error_t;

/* Returns a static sentence for any result code (0, -errno or SQ_E*). Never NULL. */
const char *sq_strerror(int err);

/* Returns a static identifier: "SQ_ETIMEOUT", "ENOMEM", "OK", or "UNKNOWN". */
const char *sq_errname(int err);

/* Iterates the project table for exporters (the Python extension): fills *name, *msg
 * and *code for index i and returns 0, or returns SQ_ENOTFOUND past the end. */
int sq_error_at(int i, const char **name, const char **msg, int *code);

#endif
