/* wal_pwrite: the portable log backend -- pwrite + fdatasync on one helper thread.
 *
 * Why a thread and not inline calls: fdatasync takes milliseconds, and the owning
 * worker must keep serving (and gathering the next group) meanwhile, exactly as with
 * io_uring. The helper holds no log state of its own: the owner hands it one job (fd,
 * buffer, offset, sync flag) through a single-slot mailbox, the helper runs it and
 * signals the eventfd. The buffer belongs to the owner but must not be touched until
 * poll() reported the job finished. At most one job exists at a time (the log never
 * submits while one is in flight), so a slot, a mutex and a condvar are the whole
 * protocol:
 *
 *   owner: submit -> [slot: job] -> helper: pwrite..., fdatasync -> [slot: done, res]
 *          -> eventfd -> owner: poll picks res up
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "wal_int.h"

typedef struct {
  kvs__wal_be_t base;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int efd;
  kvs__wal_io_t io;
  bool has_job; /* a job waits for or is being run by the helper */
  bool done;    /* the job finished; res holds its result */
  bool stop;
  int res;
} kvs__pw_t;

static void *kvs__pw_main(void *arg) {
  kvs__pw_t *pw = arg;
  uint64_t one = 1;
  pthread_mutex_lock(&pw->mu);
  for (;;) {
    while (!pw->has_job && !pw->stop) pthread_cond_wait(&pw->cv, &pw->mu);
    if (!pw->has_job) break;
    kvs__wal_io_t io = pw->io;
    pthread_mutex_unlock(&pw->mu);
    int rc = kvs__wal_io_run(&io);
    pthread_mutex_lock(&pw->mu);
    pw->res = rc;
    pw->has_job = false;
    pw->done = true;
    pthread_cond_broadcast(&pw->cv);
    /* eventfd counters only fail on overflow, which 2^64-1 signals cannot reach. */
    if (write(pw->efd, &one, sizeof(one)) < 0) {
    }
  }
  pthread_mutex_unlock(&pw->mu);
  return NULL;
}

static int kvs__pw_submit(kvs__wal_be_t *be, const kvs__wal_io_t *io) {
  kvs__pw_t *pw = (kvs__pw_t *)be;
  pthread_mutex_lock(&pw->mu);
  pw->io = *io;
  pw->has_job = true;
  pw->done = false;
  pthread_cond_broadcast(&pw->cv);
  pthread_mutex_unlock(&pw->mu);
  return 0;
}

static int kvs__pw_poll(kvs__wal_be_t *be, int *res) {
  kvs__pw_t *pw = (kvs__pw_t *)be;
  int finished = 0;
  pthread_mutex_lock(&pw->mu);
  if (pw->done) {
    pw->done = false;
    *res = pw->res;
    finished = 1;
  }
  pthread_mutex_unlock(&pw->mu);
  return finished;
}

static void kvs__pw_destroy(kvs__wal_be_t *be) {
  kvs__pw_t *pw = (kvs__pw_t *)be;
  pthread_mutex_lock(&pw->mu);
  pw->stop = true; /* the helper finishes a queued job before it looks at stop */
  pthread_cond_broadcast(&pw->cv);
  pthread_mutex_unlock(&pw->mu);
  pthread_join(pw->thread, NULL);
  pthread_cond_destroy(&pw->cv);
  pthread_mutex_destroy(&pw->mu);
  free(pw);
}

int kvs__wal_pwrite_create(int efd, kvs__wal_be_t **out) {
  kvs__pw_t *pw = calloc(1, sizeof(*pw));
  if (!pw) return -ENOMEM;
  pw->base.name = "pwrite";
  pw->base.submit = kvs__pw_submit;
  pw->base.poll = kvs__pw_poll;
  pw->base.destroy = kvs__pw_destroy;
  pw->efd = efd;
  pthread_mutex_init(&pw->mu, NULL);
  pthread_cond_init(&pw->cv, NULL);
  int rc = -pthread_create(&pw->thread, NULL, kvs__pw_main, pw);
  if (rc) {
    pthread_cond_destroy(&pw->cv);
    pthread_mutex_destroy(&pw->mu);
    free(pw);
    return rc;
  }
  *out = &pw->base;
  return 0;
}
