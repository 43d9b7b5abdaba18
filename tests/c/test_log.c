/* test_log: sq_log writes whole, well-formed lines, filters by level before
 * formatting, escapes untrusted text and says "once" things once per sink.
 *
 * Each test logs into a fresh temporary file and reads it back.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include <cmocka.h>

#include "sq_error.h"
#include "sq_log.h"

typedef struct {
  char path[64];
  sq_log_t *log;
} logfix_t;

static int logfix_open(logfix_t *f, sq_log_format_t format, sq_log_level_t level) {
  strcpy(f->path, "/tmp/sq_test_log_XXXXXX");
  int fd = mkstemp(f->path);
  if (fd < 0) return -1;
  close(fd);
  sq_log_options_t o = {.level = level, .format = format, .path = f->path,
                        .component = "kvs/t3"};
  return sq_log_open(&o, &f->log);
}

/* Reads the whole file (caller frees). */
static char *logfix_read(const logfix_t *f) {
  FILE *fp = fopen(f->path, "r");
  assert_non_null(fp);
  char *buf = calloc(1, 1 << 22);
  assert_non_null(buf);
  size_t n = fread(buf, 1, (1 << 22) - 1, fp);
  buf[n] = '\0';
  fclose(fp);
  return buf;
}

static void logfix_close(logfix_t *f) {
  sq_log_close(f->log);
  unlink(f->path);
}

static size_t count_lines(const char *s) {
  size_t n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

static void test_text_line_has_timestamp_level_component_and_fields(void **state) {
  logfix_t f;
  assert_int_equal(logfix_open(&f, SQ_LOG_TEXT, SQ_LOG_INFO), 0);
  sq_log_field_t fields[] = {{"endpoint", "tcp://a:6200"}, {"why", "queue full"}};
  sq_log_fields(f.log, SQ_LOG_WARN, fields, 2, "dropped %d replies", 3);
  char *out = logfix_read(&f);
  /* 2025-01-31T12:00:00.123456Z = 27 characters */
  assert_int_equal(strlen(out), 27 + strlen(" WARN  kvs/t3: dropped 3 replies "
                                            "endpoint=tcp://a:6200 why=\"queue full\"\n"));
  assert_int_equal(out[4], '-');
  assert_int_equal(out[10], 'T');
  assert_int_equal(out[19], '.');
  assert_int_equal(out[26], 'Z');
  assert_string_equal(out + 27,
                      " WARN  kvs/t3: dropped 3 replies endpoint=tcp://a:6200 "
                      "why=\"queue full\"\n");
  free(out);
  logfix_close(&f);
}

static void test_json_line_is_one_object_with_escaped_strings(void **state) {
  logfix_t f;
  assert_int_equal(logfix_open(&f, SQ_LOG_JSON, SQ_LOG_DEBUG), 0);
  sq_log_field_t fields[] = {{"key", "a\"b\\c"}};
  sq_log_fields(f.log, SQ_LOG_ERROR, fields, 1, "bad\nline\x01 \xff caf\xc3\xa9");
  char *out = logfix_read(&f);
  assert_int_equal(count_lines(out), 1);
  assert_memory_equal(out, "{\"ts\":\"", 7);
  const char *rest = strstr(out, "Z\",\"level\"");
  assert_non_null(rest);
  assert_string_equal(rest,
                      "Z\",\"level\":\"error\",\"component\":\"kvs/t3\","
                      "\"msg\":\"bad\\nline\\u0001 \\ufffd caf\xc3\xa9\","
                      "\"key\":\"a\\\"b\\\\c\"}\n");
  free(out);
  logfix_close(&f);
}

static int bump(int *counter) { return ++*counter; }

static void test_disabled_level_does_not_evaluate_arguments(void **state) {
  logfix_t f;
  int counter = 0;
  assert_int_equal(logfix_open(&f, SQ_LOG_TEXT, SQ_LOG_WARN), 0);
  sq_log_debug(f.log, "n=%d", bump(&counter));
  sq_log_info(f.log, "n=%d", bump(&counter));
  assert_int_equal(counter, 0);
  sq_log_warn(f.log, "n=%d", bump(&counter));
  assert_int_equal(counter, 1);
  assert_false(sq_log_enabled(f.log, SQ_LOG_INFO));
  sq_log_set_level(f.log, SQ_LOG_DEBUG);
  assert_true(sq_log_enabled(f.log, SQ_LOG_DEBUG));
  char *out = logfix_read(&f);
  assert_int_equal(count_lines(out), 1);
  assert_non_null(strstr(out, "WARN  kvs/t3: n=1\n"));
  free(out);
  logfix_close(&f);
}

static void test_untrusted_newlines_stay_on_one_text_line(void **state) {
  logfix_t f;
  assert_int_equal(logfix_open(&f, SQ_LOG_TEXT, SQ_LOG_INFO), 0);
  sq_log_info(f.log, "key %s", "evil\n2025-01-01T00:00:00.000000Z ERROR forged");
  char *out = logfix_read(&f);
  assert_int_equal(count_lines(out), 1);
  assert_non_null(strstr(out, "evil\\n2025"));
  free(out);
  logfix_close(&f);
}

static void test_long_record_is_cut_and_json_stays_closed(void **state) {
  logfix_t f;
  char *big = malloc(3 * SQ_LOG_LINE_MAX);
  assert_non_null(big);
  memset(big, 'x', 3 * SQ_LOG_LINE_MAX - 1);
  big[3 * SQ_LOG_LINE_MAX - 1] = '\0';
  assert_int_equal(logfix_open(&f, SQ_LOG_JSON, SQ_LOG_INFO), 0);
  sq_log_field_t fields[] = {{"big", big}};
  sq_log_fields(f.log, SQ_LOG_INFO, fields, 1, "%s", "short");
  char *out = logfix_read(&f);
  size_t len = strlen(out);
  assert_int_equal(count_lines(out), 1);
  assert_true(len <= SQ_LOG_LINE_MAX);
  assert_true(len > SQ_LOG_LINE_MAX - 32);
  assert_string_equal(out + len - 7, "x...\"}\n");
  assert_non_null(strstr(out, "\"msg\":\"short\""));
  free(out);
  free(big);
  logfix_close(&f);
}

typedef struct {
  const sq_log_t *log;
  int id;
} writer_arg_t;

#define WRITERS 4
#define LINES_PER_WRITER 400

static void *writer_main(void *p) {
  const writer_arg_t *a = p;
  char pad[600];
  memset(pad, 'a' + a->id, sizeof(pad) - 1);
  pad[sizeof(pad) - 1] = '\0';
  for (int i = 0; i < LINES_PER_WRITER; i++) sq_log_info(a->log, "w%d %d %s", a->id, i, pad);
  return NULL;
}

static void test_concurrent_writers_never_interleave_lines(void **state) {
  logfix_t f;
  pthread_t th[WRITERS];
  writer_arg_t args[WRITERS];
  sq_log_t *children[WRITERS];
  assert_int_equal(logfix_open(&f, SQ_LOG_TEXT, SQ_LOG_INFO), 0);
  for (int i = 0; i < WRITERS; i++) {
    assert_int_equal(sq_log_child(f.log, "w", &children[i]), 0);
    args[i] = (writer_arg_t){children[i], i};
    assert_int_equal(pthread_create(&th[i], NULL, writer_main, &args[i]), 0);
  }
  for (int i = 0; i < WRITERS; i++) pthread_join(th[i], NULL);
  char *out = logfix_read(&f);
  assert_int_equal(count_lines(out), WRITERS * LINES_PER_WRITER);
  int seen[WRITERS] = {0};
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    int id = -1, n = -1;
    char *m = strstr(line, " INFO  w: w");
    assert_non_null(m);
    assert_int_equal(sscanf(m, " INFO  w: w%d %d", &id, &n), 2);
    assert_true(id >= 0 && id < WRITERS);
    const char *pad = strrchr(line, ' ') + 1;
    assert_int_equal(strlen(pad), 599);
    assert_int_equal(strspn(pad, (char[]){(char)('a' + id), 0}), 599);
    seen[id]++;
  }
  for (int i = 0; i < WRITERS; i++) assert_int_equal(seen[i], LINES_PER_WRITER);
  free(out);
  for (int i = 0; i < WRITERS; i++) sq_log_close(children[i]);
  logfix_close(&f);
}

static void test_say_once_is_shared_by_children_of_one_root(void **state) {
  logfix_t f;
  sq_log_t *child = NULL;
  assert_int_equal(logfix_open(&f, SQ_LOG_TEXT, SQ_LOG_INFO), 0);
  assert_int_equal(sq_log_child(f.log, "kvs/wal", &child), 0);
  assert_true(sq_log_say_once(child, SQ_LOG_WARN, "uring", "io_uring missing; using pwrite"));
  assert_false(sq_log_say_once(f.log, SQ_LOG_WARN, "uring", "io_uring missing; using pwrite"));
  assert_false(sq_log_say_once(child, SQ_LOG_WARN, "uring", "again"));
  assert_true(sq_log_say_once(child, SQ_LOG_INFO, "other", "different key"));
  /* The child outlives its root: the sink is reference-counted. */
  sq_log_close(f.log);
  f.log = NULL;
  sq_log_info(child, "after root closed");
  sq_log_close(child);
  char *out = logfix_read(&f);
  assert_int_equal(count_lines(out), 3);
  assert_non_null(strstr(out, "WARN  kvs/wal: io_uring missing; using pwrite\n"));
  assert_null(strstr(out, "again"));
  assert_non_null(strstr(out, "INFO  kvs/wal: after root closed\n"));
  free(out);
  logfix_close(&f);
}

static void test_level_and_format_names_parse(void **state) {
  sq_log_level_t l;
  sq_log_format_t fm;
  assert_int_equal(sq_log_level_parse("DEBUG", &l), 0);
  assert_int_equal(l, SQ_LOG_DEBUG);
  assert_int_equal(sq_log_level_parse("warning", &l), 0);
  assert_int_equal(l, SQ_LOG_WARN);
  assert_int_equal(sq_log_level_parse("loud", &l), SQ_EINVAL);
  assert_int_equal(sq_log_format_parse("json", &fm), 0);
  assert_int_equal(fm, SQ_LOG_JSON);
  assert_int_equal(sq_log_format_parse("xml", &fm), SQ_EINVAL);
  assert_string_equal(sq_log_level_name(SQ_LOG_INFO), "info");
}

static void test_open_reports_unwritable_path(void **state) {
  sq_log_t *log = NULL;
  sq_log_options_t o = {.level = SQ_LOG_INFO, .path = "/nonexistent-dir/x.log"};
  assert_int_equal(sq_log_open(&o, &log), -ENOENT);
  assert_null(log);
  char name[SQ_LOG_COMPONENT_MAX + 8];
  memset(name, 'c', sizeof(name) - 1);
  name[sizeof(name) - 1] = '\0';
  assert_int_equal(sq_log_child(NULL, name, &log), SQ_EINVAL);
  assert_true(sq_log_enabled(NULL, SQ_LOG_INFO));
  assert_false(sq_log_enabled(sq_log_default(), SQ_LOG_DEBUG));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_text_line_has_timestamp_level_component_and_fields),
      cmocka_unit_test(test_json_line_is_one_object_with_escaped_strings),
      cmocka_unit_test(test_disabled_level_does_not_evaluate_arguments),
      cmocka_unit_test(test_untrusted_newlines_stay_on_one_text_line),
      cmocka_unit_test(test_long_record_is_cut_and_json_stays_closed),
      cmocka_unit_test(test_concurrent_writers_never_interleave_lines),
      cmocka_unit_test(test_say_once_is_shared_by_children_of_one_root),
      cmocka_unit_test(test_level_and_format_names_parse),
      cmocka_unit_test(test_open_reports_unwritable_path),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
