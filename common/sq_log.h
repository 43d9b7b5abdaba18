/* sq_log: leveled, line-atomic logging for every squall daemon.
 *
 * A logger is an object passed around, never a global. It has a level (error, warn,
 * info, debug), a component name ("kvs", "kvs/t3", "cache/lmdb") and a sink: stderr or
 * a file opened in append mode. Each record is one line, plain text
 *
 *   2025-01-31T12:00:00.123456Z WARN  kvs/t3: peer queue full endpoint=tcp://a:6200
 *
 * or one JSON object per line (format "json"):
 *
 *   {"ts":"2025-01-31T12:00:00.123456Z","level":"warn","component":"kvs/t3",
 *    "msg":"peer queue full","endpoint":"tcp://a:6200"}
 *
 * Invariants:
 *   - A record is formatted into a bounded stack buffer and handed to the kernel with
 *     one write(2) (retried only for the unwritten tail after EINTR or a short write),
 *     so lines from different threads or processes sharing the file never interleave.
 *     Records longer than SQ_LOG_LINE_MAX are cut and end in "...".
 *   - The level is checked before any formatting: the sq_log_<level>() macros do not
 *     even evaluate their arguments when the level is disabled.
 *   - Whatever is logged may come from the network: control characters are escaped
 *     in both formats (a record is always exactly one line), and invalid UTF-8 is
 *     replaced by U+FFFD in JSON so that every line is valid JSON.
 *
 * Threads: every function taking a const logger is safe to call from any thread.
 * sq_log_set_level() may race with logging (the level is read atomically).
 * Children (sq_log_child) share their parent's sink through a reference count, so
 * loggers may be closed in any order.
 *
 * A NULL logger means the process default: stderr, text, level info, component
 * "squall", returned by sq_log_default(). It is const and has no memory for
 * sq_log_say_once(), which therefore logs every time on it.
 */
#ifndef SQ_LOG_H
#define SQ_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#define SQ_LOG_LINE_MAX 4096     /* bytes per record, newline included */
#define SQ_LOG_COMPONENT_MAX 64  /* bytes of a component name, NUL included */

typedef enum {
  SQ_LOG_ERROR = 0,
  SQ_LOG_WARN = 1,
  SQ_LOG_INFO = 2,
  SQ_LOG_DEBUG = 3,
} sq_log_level_t;

typedef enum {
  SQ_LOG_TEXT = 0,
  SQ_LOG_JSON = 1,
} sq_log_format_t;

typedef struct sq_log sq_log_t;

/* One extra key=value field of a record. Both strings are borrowed for the call. */
typedef struct {
  const char *key;
  const char *value;
} sq_log_field_t;

typedef struct {
  sq_log_level_t level;
  sq_log_format_t format;
  const char *path;      /* file to append to; NULL or "" = stderr */
  const char *component; /* NULL = "squall" */
} sq_log_options_t;

/* Opens a root logger. The file (if any) is created with mode 0644 and opened with
 * O_APPEND | O_CLOEXEC. On success *out is the caller's (sq_log_close). Returns 0,
 * -errno from open(2) (e.g. -EACCES, -ENOENT), -ENOMEM, or SQ_EINVAL for an
 * out-of-range level or format. */
int sq_log_open(const sq_log_options_t *opts, sq_log_t **out);

/* Makes a logger writing to the same sink as parent with another component name
 * (e.g. "kvs/t3"), the parent's level and format. parent may be NULL (the default),
 * and may be closed before the child. 0, -ENOMEM or SQ_EINVAL (name too long). */
int sq_log_child(const sq_log_t *parent, const char *component, sq_log_t **out);

/* Closes a logger; the sink's file is closed with its last logger. Accepts NULL. */
void sq_log_close(sq_log_t *log);

/* The const process default: stderr, text, info, component "squall". */
const sq_log_t *sq_log_default(void);

/* Changes the level of this logger only (not of its children). */
void sq_log_set_level(sq_log_t *log, sq_log_level_t level);

/* True when records of `level` are written. NULL = the default logger. */
bool sq_log_enabled(const sq_log_t *log, sq_log_level_t level);

/* Formats and writes one record if `level` is enabled. fields may be NULL when
 * nfields is 0. Never fails visibly: a record that cannot be written is dropped
 * (logging must not take a daemon down). */
void sq_log_emit(const sq_log_t *log, sq_log_level_t level, const sq_log_field_t *fields,
                 size_t nfields, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* va_list form of sq_log_emit. */
void sq_log_vemit(const sq_log_t *log, sq_log_level_t level, const sq_log_field_t *fields,
                  size_t nfields, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

/* Writes the record only the first time `key` is said on this logger's sink (all
 * children of one root share the memory), e.g. key "wal.uring-fallback" for the
 * io_uring fallback notice. Returns true when the record was due (and written if
 * the level is enabled). On the default logger every call is due. */
bool sq_log_say_once(const sq_log_t *log, sq_log_level_t level, const char *key,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Parses "error" | "warn" | "warning" | "info" | "debug" (case-insensitive).
 * 0 or SQ_EINVAL. */
int sq_log_level_parse(const char *name, sq_log_level_t *out);

/* Parses "text" | "json". 0 or SQ_EINVAL. */
int sq_log_format_parse(const char *name, sq_log_format_t *out);

/* "error", "warn", "info", "debug"; "?" for anything else. Static. */
const char *sq_log_level_name(sq_log_level_t level);

/* printf-style shorthands. The arguments are not evaluated when the level is off. */
#define SQ__LOG_AT(log, lvl, ...)                                   \
  do {                                                              \
    const sq_log_t *sq__log_l = (log);                              \
    if (sq_log_enabled(sq__log_l, (lvl)))                           \
      sq_log_emit(sq__log_l, (lvl), NULL, 0, __VA_ARGS__);          \
  } while (0)
#define sq_log_error(log, ...) SQ__LOG_AT(log, SQ_LOG_ERROR, __VA_ARGS__)
#define sq_log_warn(log, ...) SQ__LOG_AT(log, SQ_LOG_WARN, __VA_ARGS__)
#define sq_log_info(log, ...) SQ__LOG_AT(log, SQ_LOG_INFO, __VA_ARGS__)
#define sq_log_debug(log, ...) SQ__LOG_AT(log, SQ_LOG_DEBUG, __VA_ARGS__)

/* Same with extra fields: sq_log_fields(log, SQ_LOG_WARN, f, 2, "queue full"). */
#define sq_log_fields(log, lvl, fields, nfields, ...)                   \
  do {                                                                  \
    const sq_log_t *sq__log_l = (log);                                  \
    if (sq_log_enabled(sq__log_l, (lvl)))                               \
      sq_log_emit(sq__log_l, (lvl), (fields), (nfields), __VA_ARGS__);  \
  } while (0)

#endif
