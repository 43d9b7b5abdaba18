/* sq_daemon: the start-up every squall daemon shares.
 *
 * Loads the options (defaults < --config FILE < flags), prints --help, runs the
 * daemon's own checks, and opens its logger from three fields of its config struct
 * (log level and format as enum indices, log file path). Each failure is told to the
 * user on stderr in one sentence with a pointer to --help, so that every daemon
 * reports bad start-up input the same way.
 */
#ifndef SQ_DAEMON_H
#define SQ_DAEMON_H

#include <stddef.h>

#include "sq_config.h"
#include "sq_log.h"

/* Returns NULL when the loaded config is usable, else a sentence saying what is wrong. */
typedef const char *(*sq_daemon_check_fn)(const void *cfg);

typedef struct {
  const sq_config_spec_t *spec;
  sq_daemon_check_fn check;   /* may be NULL */
  const char *component;      /* logger component, e.g. "kvs" */
  size_t log_level_offset;    /* int64_t field: sq_log_level_t index */
  size_t log_format_offset;   /* int64_t field: sq_log_format_t index */
  size_t log_file_offset;     /* char * field: "" or NULL = stderr */
} sq_daemon_spec_t;

/* Fills cfg and opens *log. Returns -1 when the daemon should run (the caller then
 * owns *log and must sq_config_free(cfg)), or the process exit code after printing
 * why not: 0 after --help, 2 for bad options or an unusable log file (cfg is then
 * already freed). */
int sq_daemon_setup(const sq_daemon_spec_t *d, void *cfg, int argc, char **argv,
                    sq_log_t **log);

#endif
