/* exec_dag: the executor's DAG state machine -- which schedules wait for which
 * triggers, when a DAG function is ready to run, and which executions are finished.
 *
 * Entries are keyed by (schedule id, function name) and live in one table:
 *
 *        schedule or trigger arrives
 *   (none) ----------------------------> WAITING --ready--> RUNNING --valid--> FINISHED
 *                                          ^                   |                 |
 *                                          +---- invalid ------+   (MULTIEXEC)   | ttl
 *                                                                                v
 *                                                                             (gone)
 *
 * - Ready: a schedule is present and a trigger from every name in schedule.triggers
 *   has arrived; for MULTIEXEC functions one trigger suffices.
 * - Arguments: the schedule's fixed arguments of the function, then each trigger's
 *   values in the order of the DAG's connections into the function (deterministic,
 *   unlike Cloudburst's arrival order), then any other listed trigger source.
 * - Duplicates: a trigger from a source already stored replaces it while WAITING, is
 *   kept for a possible re-run while RUNNING a MULTIEXEC function, is dropped while
 *   RUNNING a regular one and for a FINISHED entry (duplicate suppression, fixing
 *   Cloudburst's lookup by bare id).
 * - Bounds: at most max_entries entries (the oldest is evicted first, counted in
 *   `evicted`), each forgotten ttl_ms after it was created; at most
 *   EXEC_DAG_MAX_SOURCES triggers per entry.
 *
 * Threads: owned by the executor thread (exec_run.c), which receives schedules and
 * triggers itself and gives each job it ran back through exec_dag_done; not locked.
 */
#ifndef EXEC_DAG_H
#define EXEC_DAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exec_job.h"

#define EXEC_DAG_MAX_SOURCES 256

typedef struct exec_dag exec_dag_t;

typedef struct {
  size_t entries;    /* live entries, FINISHED ones included */
  uint64_t started;  /* jobs handed out */
  uint64_t dropped;  /* duplicate or late triggers/schedules dropped */
  uint64_t evicted;  /* entries dropped because the table was full */
  uint64_t expired;  /* entries forgotten after ttl_ms */
} exec_dag_stats_t;

/* Makes an empty table. max_entries 0 = 10000, ttl_ms <= 0 = 120000. 0 or -ENOMEM. */
int exec_dag_create(size_t max_entries, int64_t ttl_ms, exec_dag_t **out);

/* Frees every entry, schedule and trigger. Accepts NULL. */
void exec_dag_destroy(exec_dag_t *d);

/* Takes ownership of schedule s (always, also on error). When this makes the entry
 * ready, *ready receives a DAG job (the caller's) and the entry is RUNNING; else
 * *ready is NULL. now_ms: a monotonic clock. 0, SQ_EINVAL (no id or target function),
 * -ENOMEM. */
int exec_dag_schedule(exec_dag_t *d, DagSchedule *s, int64_t now_ms, exec_job_t **ready);

/* Takes ownership of trigger t (always). As exec_dag_schedule. */
int exec_dag_trigger(exec_dag_t *d, DagTrigger *t, int64_t now_ms, exec_job_t **ready);

/* Gives back a job handed out by this table after it ran. job->valid false puts its
 * schedule back to WAITING (MULTIEXEC "no result"); if triggers arrived meanwhile it
 * may be ready again at once (*ready). Otherwise the entry becomes FINISHED. Takes
 * ownership of job. 0 or -ENOMEM (the entry is then dropped). */
int exec_dag_done(exec_dag_t *d, exec_job_t *job, int64_t now_ms, exec_job_t **ready);

/* Forgets entries older than ttl_ms (RUNNING ones stay until exec_dag_done). */
void exec_dag_expire(exec_dag_t *d, int64_t now_ms);

/* True when fn is a MULTIEXEC function of s's DAG (it runs on any one trigger). */
bool exec_dag_multiexec(const DagSchedule *s, const char *fn);

/* Counters and size. */
exec_dag_stats_t exec_dag_stats(const exec_dag_t *d);

#endif
