/* test_daemon_config: sq_daemon_setup, the start-up every daemon shares -- exit codes
 * for --help, bad options, failed checks and an unusable log file; the logger it opens
 * (level, format, file, component, fixed or computed); and that a config whose log
 * fields are SQ_DAEMON_NO_FIELD logs text to stderr. Every early return leaves the
 * config freed (ASan's leak check holds the test to that).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sq_daemon.h"

typedef struct {
  int64_t tid;
  char *name;
  int64_t log_level;
  int64_t log_format;
  char *log_file;
} demo_cfg_t;

static const sq_opt_t demo_opts[] = {
    SQ_OPT(demo_cfg_t, tid, "tid", SQ_OPT_INT64, "-1", "a number the component uses"),
    SQ_OPT(demo_cfg_t, name, "name", SQ_OPT_STRING, "demo", "must not be empty"),
    SQ_DAEMON_LOG_LEVEL_OPT(demo_cfg_t, log_level),
    SQ_DAEMON_LOG_FORMAT_OPT(demo_cfg_t, log_format),
    SQ_DAEMON_LOG_FILE_OPT(demo_cfg_t, log_file),
};

static const sq_config_spec_t demo_spec = {"squall-demo", "A demo daemon.", demo_opts,
                                           sizeof(demo_opts) / sizeof(demo_opts[0])};

static const char *demo_check(const void *cfg) {
  const demo_cfg_t *c = cfg;
  return c->name[0] ? NULL : "--name must not be empty";
}

static void demo_component(const void *cfg, char *buf, size_t len) {
  const demo_cfg_t *c = cfg;
  if (c->tid >= 0) snprintf(buf, len, "demo/%d", (int)c->tid);
}

static sq_daemon_spec_t demo_daemon(void) {
  sq_daemon_spec_t d = {
      .spec = &demo_spec,
      .check = demo_check,
      .component = "demo",
      .log_level_offset = offsetof(demo_cfg_t, log_level),
      .log_format_offset = offsetof(demo_cfg_t, log_format),
      .log_file_offset = offsetof(demo_cfg_t, log_file),
  };
  return d;
}

/* Runs sq_daemon_setup on a NULL-terminated argument list after argv[0]. */
static int run_setup(const sq_daemon_spec_t *d, demo_cfg_t *cfg, sq_log_t **log, ...) {
  char *argv[16] = {"squall-demo"};
  int argc = 1;
  va_list ap;
  va_start(ap, log);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 15;) argv[argc++] = a;
  va_end(ap);
  memset(cfg, 0, sizeof(*cfg));
  return sq_daemon_setup(d, cfg, argc, argv, log);
}

/* Reads the whole of a small file into buf (NUL-terminated). */
static void slurp(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = '\0';
  fclose(f);
}

static void test_help_exits_zero_with_config_freed(void **state) {
  (void)state;
  sq_daemon_spec_t d = demo_daemon();
  demo_cfg_t cfg;
  sq_log_t *log = (sq_log_t *)&cfg;
  assert_int_equal(run_setup(&d, &cfg, &log, "--help", NULL), 0);
  assert_null(log);
  assert_null(cfg.name);
}

static void test_unknown_option_exits_two(void **state) {
  (void)state;
  sq_daemon_spec_t d = demo_daemon();
  demo_cfg_t cfg;
  sq_log_t *log = NULL;
  assert_int_equal(run_setup(&d, &cfg, &log, "--no-such-flag=1", NULL), 2);
  assert_null(log);
  assert_null(cfg.name);
}

static void test_failed_check_exits_two_with_config_freed(void **state) {
  (void)state;
  sq_daemon_spec_t d = demo_daemon();
  demo_cfg_t cfg;
  sq_log_t *log = NULL;
  assert_int_equal(run_setup(&d, &cfg, &log, "--name=", "--log-level=debug", NULL), 2);
  assert_null(log);
  assert_null(cfg.name);
  assert_null(cfg.log_file);
}

static void test_unusable_log_file_exits_with_the_daemons_code(void **state) {
  (void)state;
  sq_daemon_spec_t d = demo_daemon();
  demo_cfg_t cfg;
  sq_log_t *log = NULL;
  const char *bad = "--log-file=/nonexistent-squall-dir/x.log";
  assert_int_equal(run_setup(&d, &cfg, &log, bad, NULL), 2);
  assert_null(log);
  d.log_exit_code = 1;
  assert_int_equal(run_setup(&d, &cfg, &log, bad, NULL), 1);
  assert_null(log);
  assert_null(cfg.log_file);
}

/* Runs with a log file and the given extra flag; returns what one warning wrote. */
static void log_one_warning(const sq_daemon_spec_t *d, const char *flag, char *out, size_t len) {
  char path[] = "/tmp/sq_test_daemon_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  char file_flag[64];
  snprintf(file_flag, sizeof(file_flag), "--log-file=%s", path);
  demo_cfg_t cfg;
  sq_log_t *log = NULL;
  assert_int_equal(run_setup(d, &cfg, &log, file_flag, flag, NULL), -1);
  assert_non_null(log);
  sq_log_warn(log, "hello %d", 7);
  sq_log_debug(log, "not at info level");
  sq_log_close(log);
  sq_config_free(&demo_spec, &cfg);
  slurp(path, out, len);
  unlink(path);
}

static void test_run_opens_the_log_the_options_ask_for(void **state) {
  (void)state;
  sq_daemon_spec_t d = demo_daemon();
  char text[1024];
  log_one_warning(&d, "--log-format=json", text, sizeof(text));
  assert_non_null(strstr(text, "\"component\":\"demo\""));
  assert_non_null(strstr(text, "\"msg\":\"hello 7\""));
  assert_null(strstr(text, "not at info level"));
}

static void test_component_of_names_the_logger_from_the_config(void **state) {
  (void)state;
  sq_daemon_spec_t d = demo_daemon();
  d.component_of = demo_component;
  char text[1024];
  log_one_warning(&d, "--tid=4", text, sizeof(text));
  assert_non_null(strstr(text, " demo/4: hello 7"));
  log_one_warning(&d, "--tid=-1", text, sizeof(text));
  assert_non_null(strstr(text, " demo: hello 7"));
}

static void test_absent_log_fields_log_text_to_stderr(void **state) {
  (void)state;
  sq_daemon_spec_t d = demo_daemon();
  d.log_format_offset = SQ_DAEMON_NO_FIELD;
  d.log_file_offset = SQ_DAEMON_NO_FIELD;
  char path[] = "/tmp/sq_test_daemon_err_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  int saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  dup2(fd, STDERR_FILENO);
  demo_cfg_t cfg;
  sq_log_t *log = NULL;
  /* The file and format flags are still parsed, but the daemon said it has no such
   * fields: the logger must ignore them. */
  int rc = run_setup(&d, &cfg, &log, "--log-format=json", "--log-file=/nonexistent/x", NULL);
  if (rc == -1) sq_log_warn(log, "to stderr");
  sq_log_close(log);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  sq_config_free(&demo_spec, &cfg);
  char text[1024];
  slurp(path, text, sizeof(text));
  unlink(path);
  assert_int_equal(rc, -1);
  assert_non_null(strstr(text, "WARN  demo: to stderr"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_exits_zero_with_config_freed),
      cmocka_unit_test(test_unknown_option_exits_two),
      cmocka_unit_test(test_failed_check_exits_two_with_config_freed),
      cmocka_unit_test(test_unusable_log_file_exits_with_the_daemons_code),
      cmocka_unit_test(test_run_opens_the_log_the_options_ask_for),
      cmocka_unit_test(test_component_of_names_the_logger_from_the_config),
      cmocka_unit_test(test_absent_log_fields_log_text_to_stderr),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
