/* sq_daemon: the start-up every squall daemon shares.
 *
 * Loads the options (defaults < --config FILE < flags), prints --help, runs the
 * daemon's own checks, and opens its logger from fields of its config struct (log
 * level and format as enum indices, log file path). Each failure is told to the user
 * on stderr in one sentence with a pointer to --help, so that every daemon reports bad
 * start-up input the same way:
 *
 *   squall-scheduler: --pin-tries must be 1..12
 *   (run squall-scheduler --help for the options)
 *
 * A daemon without a --log-format or --log-file option (squall-worker) marks that
 * field SQ_DAEMON_NO_FIELD and logs text to stderr. A daemon whose logger component
 * depends on its options (squall-worker: "worker" or "exec/<tid>") names it with
 * component_of. The shared log option rows (SQ_DAEMON_LOG_*_OPT) keep the three log
 * flags spelled, defaulted and explained alike in every daemon.
 *
 * Stateless; the spec tables are read-only and may be shared between threads.
 */
#ifndef SQ_DAEMON_H
#define SQ_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#include "sq_config.h"
#include "sq_log.h"

/* Marks a log field the daemon's config does not have. */
#define SQ_DAEMON_NO_FIELD SIZE_MAX

/* Choices of the log-level and log-format options, in sq_log_level_t and
 * sq_log_format_t order (the stored index is the enum value). */
extern const char *const sq_daemon_log_levels[];
extern const char *const sq_daemon_log_formats[];

/* Option rows for int64_t log_level / log_format and char *log_file fields. */
#define SQ_DAEMON_LOG_LEVEL_OPT(ctype, field)                                   \
  SQ_OPT_ENUMOF(ctype, field, "log-level", sq_daemon_log_levels, "info", \
                "error, warn, info or debug")
#define SQ_DAEMON_LOG_FORMAT_OPT(ctype, field)                                 \
  SQ_OPT_ENUMOF(ctype, field, "log-format", sq_daemon_log_formats, "text", \
                "text lines, or one JSON object per line")
#define SQ_DAEMON_LOG_FILE_OPT(ctype, field) \
  SQ_OPT(ctype, field, "log-file", SQ_OPT_STRING, "", "append the log here (default stderr)")

/* Returns NULL when the loaded config is usable, else a sentence saying what is wrong. */
typedef const char *(*sq_daemon_check_fn)(const void *cfg);

/* Writes the logger component for a loaded config into buf (len bytes, NUL-terminated,
 * cut to fit). */
typedef void (*sq_daemon_component_fn)(const void *cfg, char *buf, size_t len);

typedef struct {
  const sq_config_spec_t *spec;
  sq_daemon_check_fn check;            /* may be NULL */
  const char *component;               /* logger component, e.g. "kvs" */
  sq_daemon_component_fn component_of; /* may be NULL; when set, wins over component */
  size_t log_level_offset;             /* int64_t field: sq_log_level_t index */
  size_t log_format_offset;            /* int64_t field: sq_log_format_t index, or NO_FIELD */
  size_t log_file_offset;              /* char * field ("" or NULL = stderr), or NO_FIELD */
  int log_exit_code;                   /* exit code when the log cannot open; 0 means 2 */
} sq_daemon_spec_t;

/* Fills cfg (zeroed by the caller) and opens *log. Returns -1 when the daemon should
 * run (the caller then owns *log and must sq_config_free(cfg)), or the process exit
 * code after printing why not: 0 after --help, 2 for bad options, d->log_exit_code
 * (default 2) when the logger cannot be opened. On every return >= 0, cfg is already
 * freed and *log is NULL. */
int sq_daemon_setup(const sq_daemon_spec_t *d, void *cfg, int argc, char **argv,
                    sq_log_t **log);

#endif
