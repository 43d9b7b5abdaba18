/* test_config: sq_config layers defaults < file < flags, parses every option type,
 * and rejects bad input with a message naming the place, the key and what was
 * expected.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sq_config.h"
#include "sq_error.h"

typedef struct {
  int64_t threads;
  uint64_t port;
  uint64_t max_value_bytes;
  bool fsync;
  char *data_dir;
  char *log_level;
  double ratio;
  int64_t durability;
} demo_config_t;

static const char *const durability_names[] = {"none", "fsync", "group", NULL};

static const sq_opt_t demo_opts[] = {
    SQ_OPT(demo_config_t, threads, "threads", SQ_OPT_INT64, "0", "worker threads"),
    SQ_OPT(demo_config_t, port, "port", SQ_OPT_UINT64, "6200", "first port"),
    SQ_OPT(demo_config_t, max_value_bytes, "max_value_bytes", SQ_OPT_SIZE, "64M",
           "largest value"),
    SQ_OPT(demo_config_t, fsync, "fsync", SQ_OPT_BOOL, "true", "sync the log"),
    SQ_OPT(demo_config_t, data_dir, "data_dir", SQ_OPT_STRING, "/tmp/squall", "data"),
    SQ_OPT(demo_config_t, log_level, "log.level", SQ_OPT_STRING, "info", "log level"),
    SQ_OPT(demo_config_t, ratio, "ratio", SQ_OPT_DOUBLE, "0.5", "a ratio"),
    SQ_OPT_ENUMOF(demo_config_t, durability, "durability", durability_names, "fsync",
                  "when a write is acknowledged"),
};

static const sq_config_spec_t demo_spec = {"squall-demo", "A demo daemon.", demo_opts,
                                           sizeof(demo_opts) / sizeof(demo_opts[0])};

/* Writes text to a fresh temporary file; path has room for 64 bytes. */
static void write_file(char *path, const char *text) {
  strcpy(path, "/tmp/sq_test_cfg_XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
}


static void test_defaults_fill_every_type(void **state) {
  demo_config_t c = {0};
  sq_config_result_t res;
  char *const argv[] = {"squall-demo"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 1, argv, &res), 0);
  assert_false(res.help);
  assert_int_equal(c.threads, 0);
  assert_int_equal(c.port, 6200);
  assert_int_equal(c.max_value_bytes, 64u << 20);
  assert_true(c.fsync);
  assert_string_equal(c.data_dir, "/tmp/squall");
  assert_string_equal(c.log_level, "info");
  assert_true(c.ratio == 0.5);
  assert_int_equal(c.durability, 1);
  sq_config_free(&demo_spec, &c);
  assert_null(c.data_dir);
  assert_null(c.log_level);
}

static void test_file_overrides_defaults_and_flags_override_file(void **state) {
  char path[64];
  write_file(path,
             "# squall demo\n"
             "\n"
             "threads = 4\n"
             "  log.level=debug   # trailing comment\n"
             "data_dir = \"/srv/with space # not a comment\"\n"
             "max_value_bytes = 1G\n"
             "fsync = off\n"
             "durability = GROUP\n");
  demo_config_t c = {0};
  sq_config_result_t res;
  char cfgflag[80];
  snprintf(cfgflag, sizeof(cfgflag), "--config=%s", path);
  /* The flag before --config still wins: the file is read first, whatever the order. */
  char *const argv[] = {"squall-demo", "--threads=8", cfgflag, "--ratio", "2.25", "--fsync"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 6, argv, &res), 0);
  assert_int_equal(c.threads, 8);
  assert_string_equal(c.log_level, "debug");
  assert_string_equal(c.data_dir, "/srv/with space # not a comment");
  assert_int_equal(c.max_value_bytes, 1ull << 30);
  assert_true(c.fsync);
  assert_true(c.ratio == 2.25);
  assert_int_equal(c.durability, 2);
  assert_int_equal(c.port, 6200);
  sq_config_free(&demo_spec, &c);
  unlink(path);
}

static void test_flag_forms_value_separate_no_prefix_and_dashes(void **state) {
  demo_config_t c = {0};
  sq_config_result_t res;
  char *const argv[] = {"squall-demo", "--data-dir", "/a", "--no-fsync",
                        "--max-value-bytes=512KiB", "--log.level", "warn",
                        "--threads=-1"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 8, argv, &res), 0);
  assert_string_equal(c.data_dir, "/a");
  assert_false(c.fsync);
  assert_int_equal(c.max_value_bytes, 512u * 1024);
  assert_string_equal(c.log_level, "warn");
  assert_int_equal(c.threads, -1);
  sq_config_free(&demo_spec, &c);
}

static void test_unknown_file_key_names_file_line_and_suggests(void **state) {
  char path[64];
  write_file(path, "threads = 2\n\nthreds = 3\n");
  demo_config_t c = {0};
  sq_config_result_t res;
  char *const argv[] = {"squall-demo", "--config", path};
  assert_int_equal(sq_config_load(&demo_spec, &c, 3, argv, &res), SQ_ECONFIG);
  char want[256];
  snprintf(want, sizeof(want), "%s:3: unknown option 'threds' (did you mean 'threads'?)",
           path);
  assert_string_equal(res.error, want);
  assert_null(c.data_dir); /* a failed load frees what it set */
  unlink(path);
}

static void test_bad_values_say_what_was_expected(void **state) {
  demo_config_t c = {0};
  sq_config_result_t res;
  char *const a1[] = {"squall-demo", "--threads=many"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 2, a1, &res), SQ_ECONFIG);
  assert_string_equal(res.error,
                      "command line: --threads: expected an integer, got 'many'");
  char *const a2[] = {"squall-demo", "--durability=sometimes"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 2, a2, &res), SQ_ECONFIG);
  assert_string_equal(res.error, "command line: --durability: expected one of: none, "
                                 "fsync, group, got 'sometimes'");
  char *const a3[] = {"squall-demo", "--port=-5"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 2, a3, &res), SQ_ECONFIG);
  assert_non_null(strstr(res.error, "--port: expected a non-negative integer"));
  char *const a4[] = {"squall-demo", "--max-value-bytes=99999999999999999999"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 2, a4, &res), SQ_ECONFIG);
  assert_non_null(strstr(res.error, "(out of range)"));
  char *const a5[] = {"squall-demo", "--tread", "4"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 3, a5, &res), SQ_ECONFIG);
  assert_string_equal(res.error,
                      "command line: unknown option '--tread' (did you mean '--threads'?)");
  char *const a6[] = {"squall-demo", "--data-dir"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 2, a6, &res), SQ_ECONFIG);
  assert_string_equal(res.error, "command line: --data_dir needs a value");
  char *const a7[] = {"squall-demo", "stray"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 2, a7, &res), SQ_ECONFIG);
  assert_non_null(strstr(res.error, "unexpected argument 'stray'"));
  char *const a8[] = {"squall-demo", "--zzzzzzzz=1"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 2, a8, &res), SQ_ECONFIG);
  assert_string_equal(res.error, "command line: unknown option '--zzzzzzzz'; see --help");
  assert_null(c.data_dir);
}

static void test_malformed_file_lines_are_rejected_with_position(void **state) {
  static const char *const bad[] = {"threads 4\n", "= 4\n", "data_dir = \"open\n",
                                    "data_dir = \"a\" b\n"};
  static const char *const want[] = {"expected 'key = value', got 'threads 4'",
                                     "missing key before '='",
                                     "key 'data_dir': unterminated quoted value",
                                     "key 'data_dir': unterminated quoted value"};
  for (size_t i = 0; i < 4; i++) {
    char path[64], text[64], prefix[96];
    snprintf(text, sizeof(text), "# c\n%s", bad[i]);
    write_file(path, text);
    demo_config_t c = {0};
    sq_config_result_t res;
    char *const argv[] = {"squall-demo", "--config", path};
    assert_int_equal(sq_config_load(&demo_spec, &c, 3, argv, &res), SQ_ECONFIG);
    snprintf(prefix, sizeof(prefix), "%s:2: %s", path, want[i]);
    assert_string_equal(res.error, prefix);
    unlink(path);
  }
  demo_config_t c = {0};
  sq_config_result_t res;
  char *const argv[] = {"squall-demo", "--config=/nonexistent/squall.conf"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 2, argv, &res), SQ_ECONFIG);
  assert_string_equal(res.error, "/nonexistent/squall.conf: cannot read config file: "
                                 "No such file or directory");
}

static void test_help_is_reported_and_usage_lists_every_option(void **state) {
  demo_config_t c = {0};
  sq_config_result_t res;
  char *const argv[] = {"squall-demo", "--threads=bad", "--help"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 3, argv, &res), 0);
  assert_true(res.help);
  assert_null(c.data_dir);
  sq_buf_t b = {0};
  assert_int_equal(sq_config_usage(&demo_spec, &b), 0);
  assert_int_equal(sq_buf_append(&b, "", 1), 0);
  const char *u = (const char *)b.data;
  assert_memory_equal(u, "Usage: squall-demo [--config FILE]", 34);
  assert_non_null(strstr(u, "--threads=INT"));
  assert_non_null(strstr(u, "worker threads [default: 0]"));
  assert_non_null(strstr(u, "--[no-]fsync"));
  assert_non_null(strstr(u, "--durability=none|fsync|group"));
  assert_non_null(strstr(u, "--max_value_bytes=SIZE"));
  sq_buf_free(&b);
}

static void test_dump_reads_back_as_the_same_config(void **state) {
  demo_config_t c = {0}, d = {0};
  sq_config_result_t res;
  char *const argv[] = {"squall-demo", "--data-dir= a \"q\" #x", "--ratio=0.1",
                        "--durability=none", "--no-fsync"};
  assert_int_equal(sq_config_load(&demo_spec, &c, 5, argv, &res), 0);
  sq_buf_t b = {0};
  assert_int_equal(sq_config_dump(&demo_spec, &c, &b), 0);
  assert_int_equal(sq_buf_append(&b, "", 1), 0);
  char path[64], flag[80];
  write_file(path, (const char *)b.data);
  snprintf(flag, sizeof(flag), "--config=%s", path);
  char *const argv2[] = {"squall-demo", flag};
  assert_int_equal(sq_config_load(&demo_spec, &d, 2, argv2, &res), 0);
  assert_string_equal(d.data_dir, " a \"q\" #x");
  assert_true(d.ratio == 0.1);
  assert_int_equal(d.durability, 0);
  assert_false(d.fsync);
  assert_int_equal(d.max_value_bytes, c.max_value_bytes);
  sq_buf_free(&b);
  sq_config_free(&demo_spec, &c);
  sq_config_free(&demo_spec, &d);
  unlink(path);
}

static void test_option_table_mistakes_are_reported(void **state) {
  typedef struct { char *config; int64_t mode; } bad_t;
  static const sq_opt_t reserved[] = {
      SQ_OPT(bad_t, config, "config", SQ_OPT_STRING, NULL, "clashes with --config")};
  static const sq_opt_t nochoice[] = {
      SQ_OPT_ENUMOF(bad_t, mode, "mode", NULL, NULL, "enum without names")};
  const sq_config_spec_t s1 = {"x", NULL, reserved, 1}, s2 = {"x", NULL, nochoice, 1};
  bad_t b = {0};
  sq_config_result_t res;
  char *const argv[] = {"x"};
  assert_int_equal(sq_config_load(&s1, &b, 1, argv, &res), SQ_ECONFIG);
  assert_non_null(strstr(res.error, "option table: 'config'"));
  assert_int_equal(sq_config_load(&s2, &b, 1, argv, &res), SQ_ECONFIG);
  assert_non_null(strstr(res.error, "option table: 'mode'"));
}

static void test_size_suffixes(void **state) {
  uint64_t v;
  assert_int_equal(sq_config_parse_size("4096", &v), 0);
  assert_int_equal(v, 4096);
  assert_int_equal(sq_config_parse_size("64k", &v), 0);
  assert_int_equal(v, 64 * 1024);
  assert_int_equal(sq_config_parse_size("3MB", &v), 0);
  assert_int_equal(v, 3u << 20);
  assert_int_equal(sq_config_parse_size("2GiB", &v), 0);
  assert_int_equal(v, 2ull << 30);
  assert_int_equal(sq_config_parse_size("1T", &v), 0);
  assert_int_equal(v, 1ull << 40);
  assert_int_equal(sq_config_parse_size("1.5G", &v), SQ_EINVAL);
  assert_int_equal(sq_config_parse_size("G", &v), SQ_EINVAL);
  assert_int_equal(sq_config_parse_size("5X", &v), SQ_EINVAL);
  assert_int_equal(sq_config_parse_size("-1", &v), SQ_EINVAL);
  assert_int_equal(sq_config_parse_size("17179869184G", &v), -ERANGE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_fill_every_type),
      cmocka_unit_test(test_file_overrides_defaults_and_flags_override_file),
      cmocka_unit_test(test_flag_forms_value_separate_no_prefix_and_dashes),
      cmocka_unit_test(test_unknown_file_key_names_file_line_and_suggests),
      cmocka_unit_test(test_bad_values_say_what_was_expected),
      cmocka_unit_test(test_malformed_file_lines_are_rejected_with_position),
      cmocka_unit_test(test_help_is_reported_and_usage_lists_every_option),
      cmocka_unit_test(test_dump_reads_back_as_the_same_config),
      cmocka_unit_test(test_option_table_mistakes_are_reported),
      cmocka_unit_test(test_size_suffixes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
