/* squall-worker: the executor node daemon. Without --executor-tid it is the supervisor
 * of E executor processes; with it (set by the supervisor) it is one executor. See
 * exec.h for both roles and `squall-worker --help` for the options. */
#include <stdio.h>
#include <stdlib.h>

#include "exec.h"

/* LeakSanitizer (sanitizer builds): the embedded interpreter is never finalised, by
 * design (exec_py_fini), so its allocations -- and those of the extension modules user
 * code imports (numpy, ...) -- are not leaks of ours. Our own code is still checked. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
  return "leak:libpython\nleak:_PyObject\nleak:PyObject_\nleak:_PyMem\nleak:PyMem_\n"
         "leak:.cpython-\nleak:lib-dynload\n";
}

int main(int argc, char **argv) {
  exec_config_t cfg = {0};
  sq_config_result_t res;
  sq_log_t *log = NULL;
  int code = 2;
  if (sq_config_load(&exec_config_spec, &cfg, argc, argv, &res)) {
    fprintf(stderr, "squall-worker: %s\n", res.error);
    goto out;
  }
  if (res.help) {
    sq_config_print_usage(&exec_config_spec, stdout);
    code = 0;
    goto out;
  }
  char component[64];
  snprintf(component, sizeof(component), cfg.executor_tid >= 0 ? "exec/%d" : "worker",
           (int)cfg.executor_tid);
  sq_log_options_t lo = {.level = (sq_log_level_t)cfg.log_level, .component = component};
  if (sq_log_open(&lo, &log)) {
    code = 1;
    goto out;
  }
  code = cfg.executor_tid >= 0 ? exec_proc_main(&cfg, log) : exec_super_main(&cfg, log, argc, argv);
out:
  sq_log_close(log);
  sq_config_free(&exec_config_spec, &cfg);
  return code;
}
