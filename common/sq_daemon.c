/* sq_daemon: shared daemon start-up (see sq_daemon.h). */
#include "sq_daemon.h"

#include <stdint.h>
#include <stdio.h>

#include "sq_error.h"

int sq_daemon_setup(const sq_daemon_spec_t *d, void *cfg, int argc, char **argv,
                    sq_log_t **log) {
  sq_config_result_t res;
  int rc = sq_config_load(d->spec, cfg, argc, argv, &res);
  if (rc == 0 && res.help) {
    sq_config_print_usage(d->spec, stdout);
    return 0;
  }
  const char *problem = rc ? res.error : (d->check ? d->check(cfg) : NULL);
  if (problem) {
    fprintf(stderr, "%s: %s\n(run %s --help for the options)\n", d->spec->prog, problem,
            d->spec->prog);
    sq_config_free(d->spec, cfg);
    return 2;
  }
  const char *base = cfg;
  const char *file = *(char *const *)(base + d->log_file_offset);
  sq_log_options_t lo = {
      .level = (sq_log_level_t) * (const int64_t *)(base + d->log_level_offset),
      .format = (sq_log_format_t) * (const int64_t *)(base + d->log_format_offset),
      .path = file,
      .component = d->component,
  };
  rc = sq_log_open(&lo, log);
  if (rc) {
    fprintf(stderr, "%s: cannot open log file %s: %s\n", d->spec->prog, file ? file : "",
            sq_strerror(rc));
    sq_config_free(d->spec, cfg);
    return 2;
  }
  return -1;
}
