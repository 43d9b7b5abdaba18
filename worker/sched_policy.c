/* sched_policy: executor table, cache-key sets and the pick rules of sched_policy.h.
 *
 * Sizes are small (executors of one cluster), so the executor table is an array
 * scanned linearly; a node's cache keys are a sorted array searched with bsearch, so
 * a locality score costs refs x candidates x log(keys). Load is a two-bucket counter
 * of picks (current and previous second), halved as time passes.
 */
#include "sched_policy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"

#define SP_WINDOW_MS 1000

typedef struct {
  sched_exec_id_t id;
  bool gpu;
  char **fns;
  size_t nfns;
  double util;
  uint32_t features; /* ThreadStatus.squall_features */
  uint64_t last_ms;
  uint32_t picks_cur, picks_prev;
  uint64_t window_ms;
} sp_exec_t;

typedef struct {
  char ip[SCHED_IP_MAX];
  char **keys; /* sorted */
  size_t n;
} sp_node_t;

struct sched_policy {
  sched_policy_options_t o;
  sp_exec_t *ex;
  size_t nex;
  sp_node_t *nodes;
  size_t nnodes;
  uint64_t rotor;
  uint64_t now_ms; /* last time seen, for load decay */
};

int sched_policy_create(const sched_policy_options_t *opts, sched_policy_t **out) {
  sched_policy_t *p = calloc(1, sizeof(*p));
  if (!p) return -ENOMEM;
  if (opts) p->o = *opts;
  if (!p->o.deadline_ms) p->o.deadline_ms = 5000;
  if (!p->o.max_executors) p->o.max_executors = 4096;
  if (!p->o.max_keys_per_ip) p->o.max_keys_per_ip = 1u << 20;
  p->ex = calloc(p->o.max_executors, sizeof(*p->ex));
  p->nodes = calloc(p->o.max_executors, sizeof(*p->nodes));
  if (!p->ex || !p->nodes) {
    sched_policy_destroy(p);
    return -ENOMEM;
  }
  *out = p;
  return 0;
}

static void sp__free_fns(sp_exec_t *e) {
  for (size_t i = 0; i < e->nfns; i++) free(e->fns[i]);
  free(e->fns);
  e->fns = NULL;
  e->nfns = 0;
}

static void sp__free_keys(sp_node_t *n) {
  for (size_t i = 0; i < n->n; i++) free(n->keys[i]);
  free(n->keys);
  n->keys = NULL;
  n->n = 0;
}

void sched_policy_destroy(sched_policy_t *p) {
  if (!p) return;
  for (size_t i = 0; p->ex && i < p->nex; i++) sp__free_fns(&p->ex[i]);
  for (size_t i = 0; p->nodes && i < p->nnodes; i++) sp__free_keys(&p->nodes[i]);
  free(p->ex);
  free(p->nodes);
  free(p);
}

static bool sp__same(const sched_exec_id_t *a, const sched_exec_id_t *b) {
  return a->tid == b->tid && strcmp(a->ip, b->ip) == 0;
}

static sp_exec_t *sp__find(const sched_policy_t *p, const sched_exec_id_t *id) {
  for (size_t i = 0; i < p->nex; i++)
    if (sp__same(&p->ex[i].id, id)) return &p->ex[i];
  return NULL;
}

static void sp__drop(sched_policy_t *p, size_t i) {
  sp__free_fns(&p->ex[i]);
  p->ex[i] = p->ex[--p->nex];
  memset(&p->ex[p->nex], 0, sizeof(p->ex[0]));
}

static int sp__set_fns(sp_exec_t *e, char *const *fns, size_t n) {
  if (n > SCHED_MAX_PINNED) return SQ_ETOOBIG;
  char **copy = calloc(n ? n : 1, sizeof(char *));
  if (!copy) return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    int rc = strlen(fns[i]) >= SCHED_FNAME_MAX ? SQ_EINVAL : 0;
    if (rc == 0 && !(copy[i] = strdup(fns[i]))) rc = -ENOMEM;
    if (rc) {
      for (size_t j = 0; j < i; j++) free(copy[j]);
      free(copy);
      return rc;
    }
  }
  sp__free_fns(e);
  e->fns = copy;
  e->nfns = n;
  return 0;
}

int sched_policy_status(sched_policy_t *p, const ThreadStatus *st, uint64_t now_ms,
                        bool *dropped) {
  sched_exec_id_t id = {.tid = st->tid};
  if (dropped) *dropped = false;
  if (!st->ip[0] || strlen(st->ip) >= SCHED_IP_MAX) return SQ_EINVAL;
  strcpy(id.ip, st->ip);
  p->now_ms = now_ms;
  sp_exec_t *e = sp__find(p, &id);
  if (!st->running) {
    if (e) sp__drop(p, (size_t)(e - p->ex));
    if (dropped) *dropped = e != NULL;
    return 0;
  }
  bool fresh = e == NULL;
  if (fresh) {
    if (p->nex >= p->o.max_executors) return SQ_ETOOBIG;
    e = &p->ex[p->nex];
    memset(e, 0, sizeof(*e));
    e->id = id;
    e->window_ms = now_ms;
  }
  int rc = sp__set_fns(e, st->functions, st->n_functions);
  if (rc) {
    if (fresh) sp__free_fns(e);
    return rc;
  }
  if (fresh) p->nex++;
  e->gpu = st->type == EXECUTOR_TYPE__GPU;
  e->features = st->squall_features;
  if (st->utilization > 0) e->util = st->utilization;
  e->last_ms = now_ms;
  return 0;
}

size_t sched_policy_expire(sched_policy_t *p, uint64_t now_ms, sched_exec_id_t *out,
                           size_t cap) {
  size_t n = 0;
  p->now_ms = now_ms;
  for (size_t i = 0; i < p->nex;) {
    if (now_ms > p->ex[i].last_ms && now_ms - p->ex[i].last_ms > p->o.deadline_ms) {
      if (out && n < cap) out[n] = p->ex[i].id;
      n++;
      sp__drop(p, i);
    } else {
      i++;
    }
  }
  return n;
}

bool sched_policy_alive(const sched_policy_t *p, const sched_exec_id_t *id) {
  return sp__find(p, id) != NULL;
}

uint32_t sched_policy_features(const sched_policy_t *p, const sched_exec_id_t *id) {
  const sp_exec_t *e = sp__find(p, id);
  return e ? e->features : 0;
}

size_t sched_policy_count(const sched_policy_t *p) { return p->nex; }

static bool sp__holds(const sp_exec_t *e, const char *fname) {
  for (size_t i = 0; i < e->nfns; i++)
    if (strcmp(e->fns[i], fname) == 0) return true;
  return false;
}

int sched_policy_pin_add(sched_policy_t *p, const sched_exec_id_t *id, const char *fname) {
  sp_exec_t *e = sp__find(p, id);
  if (!e) return SQ_ENOTFOUND;
  if (sp__holds(e, fname)) return 0;
  if (e->nfns >= SCHED_MAX_PINNED || strlen(fname) >= SCHED_FNAME_MAX) return SQ_ETOOBIG;
  char **grown = realloc(e->fns, (e->nfns + 1) * sizeof(char *));
  if (!grown) return -ENOMEM;
  e->fns = grown;
  if (!(e->fns[e->nfns] = strdup(fname))) return -ENOMEM;
  e->nfns++;
  return 0;
}

int sched_policy_pin_remove(sched_policy_t *p, const sched_exec_id_t *id,
                            const char *fname) {
  sp_exec_t *e = sp__find(p, id);
  if (!e) return SQ_ENOTFOUND;
  for (size_t i = 0; i < e->nfns; i++) {
    if (strcmp(e->fns[i], fname) != 0) continue;
    free(e->fns[i]);
    e->fns[i] = e->fns[--e->nfns];
    return 0;
  }
  return SQ_ENOTFOUND;
}

size_t sched_policy_locations(const sched_policy_t *p, const char *fname,
                              sched_exec_id_t *out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < p->nex; i++) {
    if (!sp__holds(&p->ex[i], fname)) continue;
    if (out && n < cap) out[n] = p->ex[i].id;
    n++;
  }
  return n;
}

static int sp__cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static sp_node_t *sp__node(const sched_policy_t *p, const char *ip) {
  for (size_t i = 0; i < p->nnodes; i++)
    if (strcmp(p->nodes[i].ip, ip) == 0) return &p->nodes[i];
  return NULL;
}

int sched_policy_cache_keys(sched_policy_t *p, const char *ip, const char *const *keys,
                            size_t n) {
  if (!ip[0] || strlen(ip) >= SCHED_IP_MAX) return SQ_EINVAL;
  if (n > p->o.max_keys_per_ip) n = p->o.max_keys_per_ip;
  sp_node_t *node = sp__node(p, ip);
  if (!node) {
    if (p->nnodes >= p->o.max_executors) return SQ_ETOOBIG;
    node = &p->nodes[p->nnodes++];
    memset(node, 0, sizeof(*node));
    strcpy(node->ip, ip);
  }
  char **copy = calloc(n ? n : 1, sizeof(char *));
  if (!copy) return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (!(copy[i] = strdup(keys[i]))) {
      for (size_t j = 0; j < i; j++) free(copy[j]);
      free(copy);
      return -ENOMEM;
    }
  }
  qsort(copy, n, sizeof(char *), sp__cmp_str);
  sp__free_keys(node);
  node->keys = copy;
  node->n = n;
  return 0;
}

size_t sched_policy_ips(const sched_policy_t *p, const char **out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < p->nex; i++) {
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++) seen = strcmp(p->ex[j].id.ip, p->ex[i].id.ip) == 0;
    if (seen) continue;
    if (out && n < cap) out[n] = p->ex[i].id.ip;
    n++;
  }
  return n;
}

/* Number of refs whose key ip's cache holds. */
static unsigned sp__locality(const sched_policy_t *p, const char *ip,
                             const sched_pickle_ref_t *refs, size_t nrefs) {
  const sp_node_t *node = sp__node(p, ip);
  unsigned score = 0;
  char key[1024];
  if (!node || !node->n) return 0;
  for (size_t r = 0; r < nrefs; r++) {
    if (refs[r].key_len >= sizeof key) continue;
    memcpy(key, refs[r].key, refs[r].key_len);
    key[refs[r].key_len] = '\0';
    const char *kp = key;
    if (bsearch(&kp, node->keys, node->n, sizeof(char *), sp__cmp_str)) score++;
  }
  return score;
}

static void sp__roll(sp_exec_t *e, uint64_t now) {
  while (now >= e->window_ms + SP_WINDOW_MS) {
    e->picks_prev = e->picks_cur;
    e->picks_cur = 0;
    e->window_ms += SP_WINDOW_MS;
    if (now - e->window_ms > 4 * SP_WINDOW_MS) e->window_ms = now; /* long idle */
  }
}

static double sp__load(sp_exec_t *e, uint64_t now) {
  sp__roll(e, now);
  return e->picks_cur + e->picks_prev / 2.0 + 10.0 * e->util;
}

/* Kinds of candidate filters for sp__best. */
typedef enum { SP_CALL_UNPINNED, SP_CALL_ANY, SP_DAG, SP_PIN } sp_kind_t;

typedef struct {
  sp_kind_t kind;
  const char *fname;
  bool gpu;
  const char *prefer_ip;
  const sched_pickle_ref_t *refs;
  size_t nrefs;
  const sched_exec_id_t *exclude;
  size_t nexclude;
} sp_query_t;

static bool sp__eligible(const sp_exec_t *e, const sp_query_t *q) {
  for (size_t i = 0; i < q->nexclude; i++)
    if (sp__same(&e->id, &q->exclude[i])) return false;
  switch (q->kind) {
    case SP_CALL_UNPINNED: return !e->gpu && e->nfns == 0;
    case SP_CALL_ANY: return !e->gpu;
    case SP_DAG: return sp__holds(e, q->fname);
    default: return e->gpu == q->gpu && !sp__holds(e, q->fname);
  }
}

/* Lexicographic (colocated, locality, -pins, -load) with a rotating tie-break. */
static int sp__best(sched_policy_t *p, const sp_query_t *q, sched_exec_id_t *out) {
  long best = -1;
  double bscore = 0;
  uint64_t now = p->now_ms;
  for (size_t k = 0; k < p->nex; k++) {
    size_t i = (size_t)((k + p->rotor) % p->nex);
    sp_exec_t *e = &p->ex[i];
    if (!sp__eligible(e, q)) continue;
    double s = 0;
    if (q->prefer_ip && strcmp(q->prefer_ip, e->id.ip) == 0) s += 1e12;
    s += 1e6 * sp__locality(p, e->id.ip, q->refs, q->nrefs);
    if (q->kind == SP_PIN) s -= 1e4 * (double)e->nfns;
    s -= sp__load(e, now);
    if (best < 0 || s > bscore) {
      best = (long)i;
      bscore = s;
    }
  }
  if (best < 0) return SQ_ENOTFOUND;
  p->rotor++;
  *out = p->ex[best].id;
  if (q->kind != SP_PIN) p->ex[best].picks_cur++;
  return 0;
}

int sched_policy_pick_call(sched_policy_t *p, const sched_pickle_ref_t *refs, size_t nrefs,
                           const sched_exec_id_t *exclude, sched_exec_id_t *out) {
  sp_query_t q = {.kind = SP_CALL_UNPINNED, .refs = refs, .nrefs = nrefs,
                  .exclude = exclude, .nexclude = exclude ? 1 : 0};
  int rc = sp__best(p, &q, out);
  if (rc == SQ_ENOTFOUND) {
    q.kind = SP_CALL_ANY;
    rc = sp__best(p, &q, out);
  }
  return rc;
}

int sched_policy_pick_dag(sched_policy_t *p, const char *fname, const sched_pickle_ref_t *refs,
                          size_t nrefs, const char *prefer_ip, sched_exec_id_t *out) {
  sp_query_t q = {.kind = SP_DAG, .fname = fname, .refs = refs, .nrefs = nrefs,
                  .prefer_ip = prefer_ip};
  return sp__best(p, &q, out);
}

int sched_policy_pick_pin(sched_policy_t *p, const char *fname, bool gpu,
                          const char *prefer_ip, const sched_exec_id_t *exclude,
                          size_t nexclude, sched_exec_id_t *out) {
  sp_query_t q = {.kind = SP_PIN, .fname = fname, .gpu = gpu, .prefer_ip = prefer_ip,
                  .exclude = exclude, .nexclude = nexclude};
  return sp__best(p, &q, out);
}

void sched_exec_id_format(const sched_exec_id_t *id, char *buf, size_t len) {
  snprintf(buf, len, "%s:%u", id->ip, id->tid);
}

int sched_exec_id_parse(const char *text, sched_exec_id_t *out) {
  const char *colon = strrchr(text, ':');
  if (!colon || colon == text || (size_t)(colon - text) >= SCHED_IP_MAX) return SQ_EINVAL;
  char *end = NULL;
  unsigned long tid = strtoul(colon + 1, &end, 10);
  if (!colon[1] || *end || tid > 65535) return SQ_EINVAL;
  memcpy(out->ip, text, (size_t)(colon - text));
  out->ip[colon - text] = '\0';
  out->tid = (uint32_t)tid;
  return 0;
}
