/* sq_daemon: shared daemon start-up (see sq_daemon.h). */
#include "sq_daemon.h"

#include <stdint.h>
#include <stdio.h>

#include "sq_error.h"

const char *const sq_daemon_log_levels[] = {"error", "warn", "info", "debug", NULL};
const char *const sq_daemon_log_formats[] = {"text", "json", NULL};

/* Opens the logger the loaded config asks for; 0 or an sq_log_open error. */
static int sq__daemon_log_open(const sq_daemon_spec_t *d, const void *cfg, sq_log_t **log) {
  const char *base = cfg;
  char component[SQ_LOG_COMPONENT_MAX];
  snprintf(component, sizeof(component), "%s", d->component ? d->component : "squall");
  if (d->component_of) d->component_of(cfg, component, sizeof(component));
  sq_log_options_t lo = {
      .level = (sq_log_level_t) * (const int64_t *)(base + d->log_level_offset),
      .format = SQ_LOG_TEXT,
      .path = NULL,
      .component = component,
  };
  if (d->log_format_offset != SQ_DAEMON_NO_FIELD)
    lo.format = (sq_log_format_t) * (const int64_t *)(base + d->log_format_offset);
  if (d->log_file_offset != SQ_DAEMON_NO_FIELD)
    lo.path = *(char *const *)(base + d->log_file_offset);
  return sq_log_open(&lo, log);
}

int sq_daemon_setup(const sq_daemon_spec_t *d, void *cfg, int argc, char **argv,
                    sq_log_t **log) {
  sq_config_result_t res;
  const char *prog = d->spec->prog;
  int code = 2;
  *log = NULL;
  int rc = sq_config_load(d->spec, cfg, argc, argv, &res);
  if (rc == 0 && res.help) {
    sq_config_print_usage(d->spec, stdout);
    code = 0;
    goto out;
  }
  const char *problem = rc ? res.error : (d->check ? d->check(cfg) : NULL);
  if (problem) {
    fprintf(stderr, "%s: %s\n(run %s --help for the options)\n", prog, problem, prog);
    goto out;
  }
  rc = sq__daemon_log_open(d, cfg, log);
  if (rc == 0) return -1;
  const char *file = d->log_file_offset == SQ_DAEMON_NO_FIELD
                         ? NULL
                         : *(char *const *)((const char *)cfg + d->log_file_offset);
  fprintf(stderr, "%s: cannot open log file %s: %s\n", prog, file && *file ? file : "(stderr)",
          sq_strerror(rc));
  code = d->log_exit_code ? d->log_exit_code : 2;
out:
  sq_config_free(d->spec, cfg);
  return code;
}
