/* sched_dag: the rules of sched_dag.h.
 *
 * Validation works on indices: each link becomes (src, dst) function indices once,
 * then Kahn's algorithm finds cycles and a union-find finds connectivity. Both are
 * O(F + L) with F, L capped, and every array is freed at the single exit.
 */
#include "sched_dag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"

typedef struct {
  const Dag *dag;
  int *src, *dst;      /* per link */
  int *outdeg, *indeg; /* per function */
  int *parent;         /* union-find */
  int *queue;
  char *err;
  size_t errlen;
  int cb_error;
} sd_t;

static int sd__fail(sd_t *s, int cb_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int sd__fail(sd_t *s, int cb_error, const char *fmt, ...) {
  s->cb_error = cb_error;
  if (s->err && s->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, s->errlen, fmt, ap);
    va_end(ap);
  }
  return SQ_EINVAL;
}

int sched_dag_find(const Dag *dag, const char *name) {
  for (size_t i = 0; i < dag->n_functions; i++)
    if (dag->functions[i] && strcmp(dag->functions[i]->name, name) == 0) return (int)i;
  return -1;
}

static int sd__find_root(int *parent, int i) {
  while (parent[i] != i) {
    parent[i] = parent[parent[i]];
    i = parent[i];
  }
  return i;
}

/* Name, counts, function names, registration. */
static int sd__check_members(sd_t *s, sched_dag_known_fn known, void *arg) {
  const Dag *d = s->dag;
  if (!d->name[0]) return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR, "the DAG has no name");
  if (strlen(d->name) > SCHED_DAG_NAME_MAX || strncmp(d->name, "ANNA_METADATA", 13) == 0)
    return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                    "DAG name is too long or starts with ANNA_METADATA (a reserved key)");
  if (d->n_functions == 0 || d->n_functions > SCHED_DAG_MAX_FUNCTIONS)
    return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                    "DAG '%s' must have 1 to %d functions, it has %zu", d->name,
                    SCHED_DAG_MAX_FUNCTIONS, d->n_functions);
  if (d->n_connections > SCHED_DAG_MAX_LINKS)
    return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR, "DAG '%s' has more than %d links",
                    d->name, SCHED_DAG_MAX_LINKS);
  for (size_t i = 0; i < d->n_functions; i++) {
    const char *n = d->functions[i]->name;
    if (!n[0])
      return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                      "function %zu of DAG '%s' has no name", i, d->name);
    if (sched_dag_find(d, n) != (int)i)
      return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                      "function '%s' appears twice in DAG '%s'", n, d->name);
    if (known && !known(arg, n))
      return sd__fail(s, CLOUDBURST_ERROR__FUNC_NOT_FOUND,
                      "function '%s' of DAG '%s' is not registered (register it first)", n,
                      d->name);
  }
  for (size_t i = 0; i < d->n_colocated; i++)
    if (sched_dag_find(d, d->colocated[i]) < 0)
      return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                      "colocated function '%s' is not in DAG '%s'", d->colocated[i], d->name);
  return 0;
}

/* Resolves links to indices; refuses unknown ends, self-loops and duplicates. */
static int sd__check_links(sd_t *s) {
  const Dag *d = s->dag;
  for (size_t l = 0; l < d->n_connections; l++) {
    const Dag__Link *k = d->connections[l];
    s->src[l] = sched_dag_find(d, k->source);
    s->dst[l] = sched_dag_find(d, k->sink);
    if (s->src[l] < 0 || s->dst[l] < 0)
      return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                      "link %s -> %s of DAG '%s' names a function that is not in the DAG",
                      k->source, k->sink, d->name);
    if (s->src[l] == s->dst[l])
      return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                      "DAG '%s' has a cycle: %s -> %s", d->name, k->source, k->sink);
    for (size_t m = 0; m < l; m++)
      if (s->src[m] == s->src[l] && s->dst[m] == s->dst[l])
        return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                        "link %s -> %s appears twice in DAG '%s'", k->source, k->sink,
                        d->name);
    s->outdeg[s->src[l]]++;
    s->indeg[s->dst[l]]++;
    int a = sd__find_root(s->parent, s->src[l]), b = sd__find_root(s->parent, s->dst[l]);
    s->parent[a] = b;
  }
  return 0;
}

/* Acyclic (Kahn), connected (one union-find root), exactly one sink. */
static int sd__check_shape(sd_t *s) {
  const Dag *d = s->dag;
  size_t nf = d->n_functions, head = 0, tail = 0, sinks = 0;
  const char *sink1 = NULL, *sink2 = NULL;
  for (size_t i = 0; i < nf; i++) {
    if (s->indeg[i] == 0) s->queue[tail++] = (int)i;
    if (s->outdeg[i] == 0) {
      sinks++;
      if (!sink1) sink1 = d->functions[i]->name;
      else if (!sink2) sink2 = d->functions[i]->name;
    }
    if (sd__find_root(s->parent, (int)i) != sd__find_root(s->parent, 0))
      return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                      "DAG '%s' is not connected: '%s' is not linked to '%s'", d->name,
                      d->functions[i]->name, d->functions[0]->name);
  }
  while (head < tail) {
    int f = s->queue[head++];
    for (size_t l = 0; l < d->n_connections; l++)
      if (s->src[l] == f && --s->indeg[s->dst[l]] == 0) s->queue[tail++] = s->dst[l];
  }
  if (tail != nf)
    return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                    "DAG '%s' has a cycle (%zu of its %zu functions lie on or after one)",
                    d->name, nf - tail, nf);
  if (sinks != 1)
    return sd__fail(s, CLOUDBURST_ERROR__EXECUTION_ERROR,
                    "DAG '%s' must have exactly one sink, it has %zu (%s, %s)", d->name,
                    sinks, sink1 ? sink1 : "-", sink2 ? sink2 : "-");
  return 0;
}

int sched_dag_validate(const Dag *dag, sched_dag_known_fn known, void *arg,
                       int *cb_error, char *err, size_t errlen) {
  sd_t s = {.dag = dag, .err = err, .errlen = errlen};
  int rc = 0;
  if (err && errlen) err[0] = '\0';
  rc = sd__check_members(&s, known, arg);
  if (rc) goto out;
  size_t nf = dag->n_functions, nl = dag->n_connections ? dag->n_connections : 1;
  s.src = calloc(nl, sizeof(int));
  s.dst = calloc(nl, sizeof(int));
  s.outdeg = calloc(nf, sizeof(int));
  s.indeg = calloc(nf, sizeof(int));
  s.parent = calloc(nf, sizeof(int));
  s.queue = calloc(nf, sizeof(int));
  if (!s.src || !s.dst || !s.outdeg || !s.indeg || !s.parent || !s.queue) {
    rc = sd__fail(&s, CLOUDBURST_ERROR__EXECUTION_ERROR, "out of memory validating DAG");
    goto out;
  }
  for (size_t i = 0; i < nf; i++) s.parent[i] = (int)i;
  rc = sd__check_links(&s);
  if (rc == 0) rc = sd__check_shape(&s);
out:
  if (cb_error) *cb_error = rc ? s.cb_error : CLOUDBURST_ERROR__NO_CLOUDBURST_ERROR;
  free(s.src);
  free(s.dst);
  free(s.outdeg);
  free(s.indeg);
  free(s.parent);
  free(s.queue);
  return rc;
}

bool sched_dag_is_source(const Dag *dag, const char *name) {
  for (size_t l = 0; l < dag->n_connections; l++)
    if (strcmp(dag->connections[l]->sink, name) == 0) return false;
  return true;
}

size_t sched_dag_predecessors(const Dag *dag, const char *name, const char **preds,
                              size_t cap) {
  size_t n = 0;
  for (size_t l = 0; l < dag->n_connections; l++) {
    if (strcmp(dag->connections[l]->sink, name) != 0) continue;
    if (n < cap) preds[n] = dag->connections[l]->source;
    n++;
  }
  return n;
}
