/* Tests of sched_dag: every registration rule of a DAG, with the CloudburstError code
 * and the sentence the client will see, plus the shape helpers (sources, fan-in order
 * in connection order). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sched_dag.h"
#include "sq_error.h"

#define MAXF 8
typedef struct {
  Dag dag;
  Dag__FunctionReference fr[MAXF], *frp[MAXF];
  Dag__Link ln[MAXF * 2], *lnp[MAXF * 2];
  char *coloc[MAXF];
} tdag_t;

/* fns: space-separated names; links: "a>b c>d". Builds into t (no allocation). */
static char tbuf[4][256];
static void tdag_build(tdag_t *t, const char *name, const char *fns, const char *links) {
  Dag init = DAG__INIT;
  t->dag = init;
  t->dag.name = (char *)name;
  snprintf(tbuf[0], sizeof tbuf[0], "%s", fns);
  snprintf(tbuf[1], sizeof tbuf[1], "%s", links);
  char *save = NULL;
  for (char *f = strtok_r(tbuf[0], " ", &save); f; f = strtok_r(NULL, " ", &save)) {
    Dag__FunctionReference fi = DAG__FUNCTION_REFERENCE__INIT;
    size_t i = t->dag.n_functions++;
    t->fr[i] = fi;
    t->fr[i].name = f;
    t->frp[i] = &t->fr[i];
  }
  t->dag.functions = t->frp;
  save = NULL;
  for (char *l = strtok_r(tbuf[1], " ", &save); l; l = strtok_r(NULL, " ", &save)) {
    Dag__Link li = DAG__LINK__INIT;
    size_t i = t->dag.n_connections++;
    char *gt = strchr(l, '>');
    *gt = '\0';
    t->ln[i] = li;
    t->ln[i].source = l;
    t->ln[i].sink = gt + 1;
    t->lnp[i] = &t->ln[i];
  }
  t->dag.connections = t->lnp;
}

static bool known_except_ghost(void *arg, const char *name) {
  (void)arg;
  return strcmp(name, "ghost") != 0;
}

static void expect_invalid(const char *fns, const char *links, int want_code,
                           const char *want_text) {
  tdag_t t;
  tdag_build(&t, "d", fns, links);
  char err[SCHED_DAG_ERROR_MAX];
  int code = -1;
  assert_int_equal(sched_dag_validate(&t.dag, known_except_ghost, NULL, &code, err,
                                      sizeof err), SQ_EINVAL);
  assert_int_equal(code, want_code);
  if (!strstr(err, want_text)) fail_msg("error '%s' lacks '%s'", err, want_text);
}

static void test_valid_shapes_pass(void **state) {
  (void)state;
  const char *cases[][2] = {
      {"square", ""},
      {"square increment", "square>increment"},
      {"a b c d", "a>b a>c b>d c>d"},   /* fan-out, fan-in */
      {"a b c", "a>c b>c"},             /* two sources */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tdag_t t;
    tdag_build(&t, "d", cases[i][0], cases[i][1]);
    char err[SCHED_DAG_ERROR_MAX];
    int code = -1;
    if (sched_dag_validate(&t.dag, known_except_ghost, NULL, &code, err, sizeof err))
      fail_msg("%s / %s: %s", cases[i][0], cases[i][1], err);
    assert_int_equal(code, CLOUDBURST_ERROR__NO_CLOUDBURST_ERROR);
  }
}

static void test_cycle_is_refused(void **state) {
  (void)state;
  expect_invalid("a b c", "a>b b>c c>a", CLOUDBURST_ERROR__EXECUTION_ERROR, "cycle");
  expect_invalid("a b c", "a>b b>c b>a", CLOUDBURST_ERROR__EXECUTION_ERROR, "cycle");
  expect_invalid("a", "a>a", CLOUDBURST_ERROR__EXECUTION_ERROR, "cycle");
}

static void test_unregistered_function_is_func_not_found(void **state) {
  (void)state;
  expect_invalid("a ghost", "a>ghost", CLOUDBURST_ERROR__FUNC_NOT_FOUND,
                 "function 'ghost' of DAG 'd' is not registered");
}

static void test_two_sinks_are_refused(void **state) {
  (void)state;
  expect_invalid("a b c", "a>b a>c", CLOUDBURST_ERROR__EXECUTION_ERROR,
                 "exactly one sink, it has 2 (b, c)");
}

static void test_disconnected_and_duplicate_and_foreign_links_are_refused(void **state) {
  (void)state;
  expect_invalid("a b", "", CLOUDBURST_ERROR__EXECUTION_ERROR, "not connected");
  expect_invalid("a b c d", "a>b c>d", CLOUDBURST_ERROR__EXECUTION_ERROR, "not connected");
  expect_invalid("a a", "", CLOUDBURST_ERROR__EXECUTION_ERROR, "appears twice");
  expect_invalid("a b", "a>b a>b", CLOUDBURST_ERROR__EXECUTION_ERROR, "appears twice");
  expect_invalid("a b", "a>zz", CLOUDBURST_ERROR__EXECUTION_ERROR, "not in the DAG");
  expect_invalid("", "", CLOUDBURST_ERROR__EXECUTION_ERROR, "1 to");
}

static void test_names_and_colocation_are_checked(void **state) {
  (void)state;
  tdag_t t;
  char err[SCHED_DAG_ERROR_MAX];
  int code;
  tdag_build(&t, "", "a", "");
  assert_int_equal(sched_dag_validate(&t.dag, NULL, NULL, &code, err, sizeof err), SQ_EINVAL);
  assert_non_null(strstr(err, "no name"));
  tdag_build(&t, "ANNA_METADATA|x", "a", "");
  assert_int_equal(sched_dag_validate(&t.dag, NULL, NULL, &code, err, sizeof err), SQ_EINVAL);
  tdag_build(&t, "d", "a b", "a>b");
  t.coloc[0] = "a";
  t.coloc[1] = "nope";
  t.dag.colocated = t.coloc;
  t.dag.n_colocated = 2;
  assert_int_equal(sched_dag_validate(&t.dag, NULL, NULL, &code, err, sizeof err), SQ_EINVAL);
  assert_non_null(strstr(err, "colocated function 'nope'"));
  t.dag.n_colocated = 1;
  assert_int_equal(sched_dag_validate(&t.dag, NULL, NULL, &code, err, sizeof err), 0);
}

static void test_sources_and_fan_in_follow_connection_order(void **state) {
  (void)state;
  tdag_t t;
  tdag_build(&t, "d", "a b c d", "c>d a>b a>c b>d");
  assert_true(sched_dag_is_source(&t.dag, "a"));
  assert_false(sched_dag_is_source(&t.dag, "b"));
  assert_false(sched_dag_is_source(&t.dag, "d"));
  const char *p[4];
  assert_int_equal(sched_dag_predecessors(&t.dag, "d", p, 4), 2);
  assert_string_equal(p[0], "c");
  assert_string_equal(p[1], "b");
  assert_int_equal(sched_dag_predecessors(&t.dag, "d", p, 1), 2);
  assert_int_equal(sched_dag_predecessors(&t.dag, "a", p, 4), 0);
  assert_int_equal(sched_dag_find(&t.dag, "c"), 2);
  assert_int_equal(sched_dag_find(&t.dag, "zz"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_shapes_pass),
      cmocka_unit_test(test_cycle_is_refused),
      cmocka_unit_test(test_unregistered_function_is_func_not_found),
      cmocka_unit_test(test_two_sinks_are_refused),
      cmocka_unit_test(test_disconnected_and_duplicate_and_foreign_links_are_refused),
      cmocka_unit_test(test_names_and_colocation_are_checked),
      cmocka_unit_test(test_sources_and_fan_in_follow_connection_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
