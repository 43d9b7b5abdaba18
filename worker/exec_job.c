/* exec_job: construction and release of executor jobs (see exec_job.h). */
#include "exec_job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

exec_job_t *exec_job_new(exec_job_kind_t kind, const char *fn) {
  exec_job_t *job = calloc(1, sizeof(*job));
  if (!job) return NULL;
  job->kind = kind;
  job->valid = true;
  job->fn = strdup(fn ? fn : "");
  if (!job->fn) {
    free(job);
    return NULL;
  }
  return job;
}

int exec_job_add_arg(exec_job_t *job, const Value *v) {
  const Value **grown = realloc(job->args, (job->nargs + 1) * sizeof(*grown));
  if (!grown) return -ENOMEM;
  job->args = grown;
  job->args[job->nargs++] = v;
  return 0;
}

void exec_job_free(exec_job_t *job) {
  if (!job) return;
  for (size_t i = 0; i < job->ntriggers; i++)
    if (job->triggers[i]) protobuf_c_message_free_unpacked(&job->triggers[i]->base, NULL);
  free(job->triggers);
  if (job->msg) protobuf_c_message_free_unpacked(job->msg, NULL);
  free(job->args);
  free(job->fn);
  free(job);
}
