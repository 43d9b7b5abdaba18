/* squall-worker: the executor node daemon. Without --executor-tid it is the supervisor
 * of E executor processes; with it (set by the supervisor) it is one executor. See
 * exec.h for both roles and `squall-worker --help` for the options. */
#include <stddef.h>
#include <stdio.h>

#include "exec.h"
#include "sq_daemon.h"

/* LeakSanitizer (sanitizer builds): the embedded interpreter is never finalised, by
 * design (exec_py_fini), so its allocations -- and those of the extension modules user
 * code imports (numpy, ...) -- are not leaks of ours. Our own code is still checked.
 *
 * libcrypto: Python's _hashlib and _ssl (imported with hashlib and asyncio) keep
 * OpenSSL objects (~4 KB) that only Python objects in pymalloc's mmap'd arenas point
 * to, which LSan does not scan. LSan's fast unwinder cannot walk through libcrypto
 * (built without frame pointers), so the stack it records stops there and the
 * ".cpython-" rule never sees _hashlib's frame: the library is named instead. squall's
 * own code does not use OpenSSL. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
  return "leak:libpython\nleak:_PyObject\nleak:PyObject_\nleak:_PyMem\nleak:PyMem_\n"
         "leak:.cpython-\nleak:lib-dynload\nleak:libcrypto.so\n";
}

/* The logger component: "worker" for the supervisor, "exec/<tid>" for an executor. */
static void exec__component(const void *cfg, char *buf, size_t len) {
  const exec_config_t *c = cfg;
  if (c->executor_tid >= 0) snprintf(buf, len, "exec/%d", (int)c->executor_tid);
}

/* Exit codes: 0 after --help or a clean stop, 2 for bad options, 1 when the logger or
 * the daemon could not start, EXEC_EXIT_DEPARTED (3) for an executor that departed. */
int main(int argc, char **argv) {
  exec_config_t cfg = {0};
  sq_log_t *log = NULL;
  const sq_daemon_spec_t daemon = {
      .spec = &exec_config_spec,
      .component = "worker",
      .component_of = exec__component,
      .log_level_offset = offsetof(exec_config_t, log_level),
      .log_format_offset = SQ_DAEMON_NO_FIELD,
      .log_file_offset = SQ_DAEMON_NO_FIELD,
      .log_exit_code = 1,
  };
  int code = sq_daemon_setup(&daemon, &cfg, argc, argv, &log);
  if (code >= 0) return code;
  code = cfg.executor_tid >= 0 ? exec_proc_main(&cfg, log) : exec_super_main(&cfg, log, argc, argv);
  sq_log_close(log);
  sq_config_free(&exec_config_spec, &cfg);
  return code;
}
