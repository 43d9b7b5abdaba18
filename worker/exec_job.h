/* exec_job: one unit of work handed from the I/O thread to the Python executor thread.
 *
 * A job is made by the I/O thread (exec_io.c, or exec_dag.c for DAG functions), passed
 * as a pointer over an inproc socket to the executor thread, run there, and passed back
 * the same way (a DONE note) so the I/O thread can settle the DAG state. Ownership
 * travels with the pointer: exactly one thread holds a job at any time, so a job is
 * never locked.
 *
 *   kind       msg (owned)          args (borrowed from msg / triggers)
 *   CALL       FunctionCall         msg->arguments
 *   DAG        DagSchedule          schedule.arguments[fn], then each trigger's values
 *                                   in the order of the DAG's connections
 *   PIN        PinFunction          none
 *   UNPIN      NULL (name in fn)    none
 */
#ifndef EXEC_JOB_H
#define EXEC_JOB_H

#include <stdbool.h>
#include <stddef.h>

#include "cloudburst.pb-c.h"

typedef enum {
  EXEC_JOB_CALL = 1,
  EXEC_JOB_DAG = 2,
  EXEC_JOB_PIN = 3,
  EXEC_JOB_UNPIN = 4,
} exec_job_kind_t;

typedef struct exec_job {
  exec_job_kind_t kind;
  char *fn;                    /* owned copy of the function name */
  ProtobufCMessage *msg;       /* owned (see table), freed with the malloc allocator */
  DagTrigger **triggers;       /* DAG: owned triggers, in argument order */
  size_t ntriggers;
  const Value **args;          /* owned array of borrowed Values */
  size_t nargs;
  bool valid;                  /* DAG, set by the executor: false = MULTIEXEC "no result"
                                  (the schedule goes back to waiting) */
} exec_job_t;

/* Makes an empty job of `kind` for function `fn` (copied). NULL on -ENOMEM. */
exec_job_t *exec_job_new(exec_job_kind_t kind, const char *fn);

/* Appends a borrowed Value to the argument list. 0 or -ENOMEM. */
int exec_job_add_arg(exec_job_t *job, const Value *v);

/* Frees the job, its message, triggers and argument array. Accepts NULL. */
void exec_job_free(exec_job_t *job);

#endif
