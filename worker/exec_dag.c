/* exec_dag: DAG schedules, triggers and fan-in (design note and state machine in
 * exec_dag.h).
 *
 * Layout: a chained hash table on (id, function) for lookups plus a doubly linked list
 * in creation order, so expiry and eviction take the oldest entries first without a
 * scan. Triggers of an entry sit in a small array (one per source name).
 */
#include "exec_dag.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"

enum { ST_WAITING = 0, ST_RUNNING = 1, ST_FINISHED = 2 };

typedef struct exec__entry {
  char *id;
  char *fn;
  uint64_t hash;
  int state;
  bool multiexec;                    /* known once the schedule arrived */
  int64_t created_ms;
  DagSchedule *sched;                /* owned; NULL until it arrives or while RUNNING */
  DagTrigger **trig;                 /* owned, one per source */
  size_t ntrig;
  struct exec__entry *hnext;         /* hash chain */
  struct exec__entry *older, *newer; /* creation-order list */
} exec__entry_t;

struct exec_dag {
  exec__entry_t **buckets;
  size_t nbuckets; /* power of two */
  size_t max_entries;
  int64_t ttl_ms;
  exec__entry_t *oldest, *newest;
  exec_dag_stats_t st;
};

static uint64_t exec__hash(const char *id, const char *fn) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a over id, NUL, fn */
  for (const char *p = id; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ULL;
  h = (h ^ 0) * 1099511628211ULL;
  for (const char *p = fn; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ULL;
  return h;
}

int exec_dag_create(size_t max_entries, int64_t ttl_ms, exec_dag_t **out) {
  exec_dag_t *d = calloc(1, sizeof(*d));
  if (!d) return -ENOMEM;
  d->max_entries = max_entries ? max_entries : 10000;
  d->ttl_ms = ttl_ms > 0 ? ttl_ms : 120000;
  d->nbuckets = 64;
  while (d->nbuckets < d->max_entries) d->nbuckets <<= 1;
  d->buckets = calloc(d->nbuckets, sizeof(*d->buckets));
  if (!d->buckets) {
    free(d);
    return -ENOMEM;
  }
  *out = d;
  return 0;
}

static void exec__free_triggers(exec__entry_t *e) {
  for (size_t i = 0; i < e->ntrig; i++)
    protobuf_c_message_free_unpacked(&e->trig[i]->base, NULL);
  e->ntrig = 0;
}

static void exec__entry_free(exec__entry_t *e) {
  exec__free_triggers(e);
  free(e->trig);
  if (e->sched) protobuf_c_message_free_unpacked(&e->sched->base, NULL);
  free(e->id);
  free(e->fn);
  free(e);
}

static void exec__unlink(exec_dag_t *d, exec__entry_t *e) {
  exec__entry_t **pp = &d->buckets[e->hash & (d->nbuckets - 1)];
  while (*pp != e) pp = &(*pp)->hnext;
  *pp = e->hnext;
  if (e->older) e->older->newer = e->newer; else d->oldest = e->newer;
  if (e->newer) e->newer->older = e->older; else d->newest = e->older;
  d->st.entries--;
}

void exec_dag_destroy(exec_dag_t *d) {
  if (!d) return;
  exec__entry_t *e = d->oldest;
  while (e) {
    exec__entry_t *next = e->newer;
    exec__entry_free(e);
    e = next;
  }
  free(d->buckets);
  free(d);
}

static exec__entry_t *exec__find(exec_dag_t *d, const char *id, const char *fn) {
  uint64_t h = exec__hash(id, fn);
  for (exec__entry_t *e = d->buckets[h & (d->nbuckets - 1)]; e; e = e->hnext)
    if (e->hash == h && !strcmp(e->id, id) && !strcmp(e->fn, fn)) return e;
  return NULL;
}

/* Drops the oldest entry that is not RUNNING, to make room. */
static void exec__evict_one(exec_dag_t *d) {
  for (exec__entry_t *e = d->oldest; e; e = e->newer) {
    if (e->state == ST_RUNNING) continue;
    exec__unlink(d, e);
    exec__entry_free(e);
    d->st.evicted++;
    return;
  }
}

static int exec__get(exec_dag_t *d, const char *id, const char *fn, int64_t now,
                     exec__entry_t **out) {
  exec__entry_t *e = exec__find(d, id, fn);
  if (e) {
    *out = e;
    return 0;
  }
  if (d->st.entries >= d->max_entries) exec__evict_one(d);
  e = calloc(1, sizeof(*e));
  if (!e) return -ENOMEM;
  e->id = strdup(id);
  e->fn = strdup(fn);
  if (!e->id || !e->fn) {
    exec__entry_free(e);
    return -ENOMEM;
  }
  e->hash = exec__hash(id, fn);
  e->created_ms = now;
  size_t b = e->hash & (d->nbuckets - 1);
  e->hnext = d->buckets[b];
  d->buckets[b] = e;
  e->older = d->newest;
  if (d->newest) d->newest->newer = e; else d->oldest = e;
  d->newest = e;
  d->st.entries++;
  *out = e;
  return 0;
}

bool exec_dag_multiexec(const DagSchedule *s, const char *fn) {
  if (!s->dag) return false;
  for (size_t i = 0; i < s->dag->n_functions; i++)
    if (s->dag->functions[i]->name && !strcmp(s->dag->functions[i]->name, fn))
      return s->dag->functions[i]->type == EXECUTION_TYPE__MULTIEXEC;
  return false;
}

static DagTrigger *exec__trigger_of(const exec__entry_t *e, const char *source) {
  for (size_t i = 0; i < e->ntrig; i++)
    if (!strcmp(e->trig[i]->source, source)) return e->trig[i];
  return NULL;
}

static bool exec__ready(const exec__entry_t *e) {
  if (e->state != ST_WAITING || !e->sched) return false;
  if (exec_dag_multiexec(e->sched, e->fn)) return e->ntrig > 0;
  for (size_t i = 0; i < e->sched->n_triggers; i++)
    if (!exec__trigger_of(e, e->sched->triggers[i])) return false;
  return e->sched->n_triggers > 0 || e->ntrig > 0;
}

/* Moves the trigger from `source` (if stored and not yet moved) into the job. */
static int exec__move_trigger(exec__entry_t *e, exec_job_t *job, const char *source) {
  for (size_t i = 0; i < e->ntrig; i++) {
    DagTrigger *t = e->trig[i];
    if (strcmp(t->source, source)) continue;
    job->triggers[job->ntriggers++] = t;
    e->trig[i] = e->trig[--e->ntrig];
    return 0;
  }
  return 0;
}

/* Appends the fixed arguments of e->fn, then each moved trigger's values. */
static int exec__collect_args(exec__entry_t *e, exec_job_t *job) {
  const DagSchedule *s = e->sched;
  for (size_t i = 0; i < s->n_arguments; i++) {
    const DagSchedule__ArgumentsEntry *a = s->arguments[i];
    if (!a->key || strcmp(a->key, e->fn) || !a->value) continue;
    for (size_t j = 0; j < a->value->n_values; j++)
      if (exec_job_add_arg(job, a->value->values[j])) return -ENOMEM;
  }
  for (size_t i = 0; i < job->ntriggers; i++) {
    const Arguments *a = job->triggers[i]->arguments;
    for (size_t j = 0; a && j < a->n_values; j++)
      if (exec_job_add_arg(job, a->values[j])) return -ENOMEM;
  }
  return 0;
}

/* Builds the job of a ready entry: triggers in connection order, then the rest of the
 * listed sources; unlisted triggers are dropped. The entry becomes RUNNING. */
static int exec__start(exec_dag_t *d, exec__entry_t *e, exec_job_t **ready) {
  int rc = -ENOMEM;
  exec_job_t *job = exec_job_new(EXEC_JOB_DAG, e->fn);
  if (!job) goto out;
  job->triggers = calloc(e->ntrig ? e->ntrig : 1, sizeof(*job->triggers));
  if (!job->triggers) goto out;
  const DagSchedule *s = e->sched;
  for (size_t i = 0; s->dag && i < s->dag->n_connections; i++) {
    const Dag__Link *l = s->dag->connections[i];
    if (l->sink && l->source && !strcmp(l->sink, e->fn)) exec__move_trigger(e, job, l->source);
  }
  for (size_t i = 0; i < s->n_triggers; i++) exec__move_trigger(e, job, s->triggers[i]);
  if (exec__collect_args(e, job)) goto out;
  e->multiexec = exec_dag_multiexec(s, e->fn);
  if (!e->multiexec) exec__free_triggers(e);
  job->msg = &e->sched->base;
  e->sched = NULL;
  e->state = ST_RUNNING;
  d->st.started++;
  *ready = job;
  job = NULL;
  rc = 0;
out:
  if (job) { /* give the moved triggers back so nothing is lost */
    for (size_t i = 0; i < job->ntriggers; i++) e->trig[e->ntrig++] = job->triggers[i];
    job->ntriggers = 0;
    exec_job_free(job);
  }
  return rc;
}

int exec_dag_schedule(exec_dag_t *d, DagSchedule *s, int64_t now_ms, exec_job_t **ready) {
  int rc = 0;
  exec__entry_t *e = NULL;
  *ready = NULL;
  if (!s->id || !*s->id || !s->target_function || !*s->target_function) {
    rc = SQ_EINVAL;
    goto out;
  }
  rc = exec__get(d, s->id, s->target_function, now_ms, &e);
  if (rc) goto out;
  if (e->sched || e->state != ST_WAITING) { /* a repeated schedule */
    d->st.dropped++;
    goto out;
  }
  e->sched = s;
  s = NULL;
  if (exec__ready(e)) rc = exec__start(d, e, ready);
out:
  if (s) protobuf_c_message_free_unpacked(&s->base, NULL);
  return rc;
}

/* Stores t in e, replacing an earlier trigger from the same source. */
static int exec__store_trigger(exec_dag_t *d, exec__entry_t *e, DagTrigger **t) {
  for (size_t i = 0; i < e->ntrig; i++) {
    if (strcmp(e->trig[i]->source, (*t)->source)) continue;
    protobuf_c_message_free_unpacked(&e->trig[i]->base, NULL);
    e->trig[i] = *t;
    *t = NULL;
    return 0;
  }
  if (e->ntrig >= EXEC_DAG_MAX_SOURCES) {
    d->st.dropped++;
    return 0;
  }
  DagTrigger **grown = realloc(e->trig, (e->ntrig + 1) * sizeof(*grown));
  if (!grown) return -ENOMEM;
  e->trig = grown;
  e->trig[e->ntrig++] = *t;
  *t = NULL;
  return 0;
}

int exec_dag_trigger(exec_dag_t *d, DagTrigger *t, int64_t now_ms, exec_job_t **ready) {
  int rc = 0;
  exec__entry_t *e = NULL;
  *ready = NULL;
  if (!t->id || !*t->id || !t->target_function || !*t->target_function || !t->source) {
    rc = SQ_EINVAL;
    goto out;
  }
  rc = exec__get(d, t->id, t->target_function, now_ms, &e);
  if (rc) goto out;
  /* While RUNNING only a MULTIEXEC function keeps triggers, for a possible re-run. */
  bool keep = e->state == ST_WAITING || (e->state == ST_RUNNING && e->multiexec);
  if (!keep) {
    d->st.dropped++;
    goto out;
  }
  rc = exec__store_trigger(d, e, &t);
  if (rc == 0 && exec__ready(e)) rc = exec__start(d, e, ready);
out:
  if (t) protobuf_c_message_free_unpacked(&t->base, NULL);
  return rc;
}

int exec_dag_done(exec_dag_t *d, exec_job_t *job, int64_t now_ms, exec_job_t **ready) {
  int rc = 0;
  *ready = NULL;
  DagSchedule *s = (DagSchedule *)job->msg;
  exec__entry_t *e = s ? exec__find(d, s->id, job->fn) : NULL;
  (void)now_ms;
  if (!e || e->state != ST_RUNNING) goto out; /* cannot happen: RUNNING never expires */
  if (job->valid) {
    e->state = ST_FINISHED;
    exec__free_triggers(e);
    goto out;
  }
  e->sched = s; /* MULTIEXEC "no result": wait for the next trigger */
  job->msg = NULL;
  e->state = ST_WAITING;
  if (exec__ready(e)) rc = exec__start(d, e, ready);
out:
  exec_job_free(job);
  return rc;
}

void exec_dag_expire(exec_dag_t *d, int64_t now_ms) {
  exec__entry_t *e = d->oldest;
  while (e && now_ms - e->created_ms >= d->ttl_ms) {
    exec__entry_t *next = e->newer;
    if (e->state != ST_RUNNING) {
      exec__unlink(d, e);
      exec__entry_free(e);
      d->st.expired++;
    }
    e = next;
  }
}

exec_dag_stats_t exec_dag_stats(const exec_dag_t *d) { return d->st; }
