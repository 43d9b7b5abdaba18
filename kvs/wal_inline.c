/* wal_inline: the log backend that writes and syncs on the owner's own thread.
 *
 * What Redis does with appendfsync always: the event loop itself writes the group and
 * calls fdatasync before it answers anyone. submit() therefore blocks for the whole
 * write + sync (one pwritev2 with RWF_DSYNC when the kernel has it, else pwrite +
 * fdatasync) and poll() reports the result at once.
 *
 * Why have it next to io_uring and the helper thread: on a machine with few cores the
 * asynchronous backends add a thread that must be woken and scheduled for every group
 * (io_uring runs a buffered fsync in an io-wq kernel worker; wal_pwrite.c its helper),
 * and that wake-up shows in the latency tail when the cores are busy. Inline, the
 * worker sleeps in the sync itself and wakes straight into the next turn. The cost:
 * while the sync runs the worker serves nobody (requests queue in ZeroMQ, exactly as
 * they queue in Redis's socket buffers); every reply waits for the log anyway.
 *
 * It signals the event fd like the other backends, so the owner's loop is unchanged.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "wal_int.h"

typedef struct {
  kvs__wal_be_t base;
  int efd;
  bool done;
  int res;
  bool dsync_ok; /* pwritev2(RWF_DSYNC) works here (cleared on EINVAL/EOPNOTSUPP) */
} kvs__inl_t;

/* One write with RWF_DSYNC: the kernel writes and syncs the range in one call. 1 when
 * that was done (res set), 0 when the kernel refused the flag (fall back). */
static int kvs__inl_dsync(kvs__inl_t *b, const kvs__wal_io_t *io, int *res) {
  size_t done = 0;
  while (done < io->len) {
    struct iovec iov = {.iov_base = (void *)(io->buf + done), .iov_len = io->len - done};
    ssize_t n = pwritev2(io->fd, &iov, 1, (off_t)(io->off + done), RWF_DSYNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && done == 0 && (errno == EINVAL || errno == EOPNOTSUPP)) {
      b->dsync_ok = false;
      return 0;
    }
    if (n < 0) {
      *res = -errno;
      return 1;
    }
    done += (size_t)n;
  }
  *res = 0;
  return 1;
}

static int kvs__inl_submit(kvs__wal_be_t *be, const kvs__wal_io_t *io) {
  kvs__inl_t *b = (kvs__inl_t *)be;
  int res = 0;
  if (!(io->sync && b->dsync_ok && kvs__inl_dsync(b, io, &res)))
    res = kvs__wal_io_run(io);
  else if (!res && io->dir_fd >= 0)
    res = kvs__wal_dir_sync(io->dir_fd); /* RWF_DSYNC synced the data, not the dirent */
  b->res = res;
  b->done = true;
  uint64_t one = 1;
  if (write(b->efd, &one, sizeof(one)) < 0) {
    /* eventfd counters only fail on overflow, which cannot happen here */
  }
  return 0;
}

static int kvs__inl_poll(kvs__wal_be_t *be, int *res) {
  kvs__inl_t *b = (kvs__inl_t *)be;
  if (!b->done) return 0;
  b->done = false;
  *res = b->res;
  return 1;
}

static void kvs__inl_destroy(kvs__wal_be_t *be) { free(be); }

int kvs__wal_inline_create(int efd, kvs__wal_be_t **out) {
  kvs__inl_t *b = calloc(1, sizeof(*b));
  if (!b) return -ENOMEM;
  b->base.name = "inline";
  b->base.submit = kvs__inl_submit;
  b->base.poll = kvs__inl_poll;
  b->base.destroy = kvs__inl_destroy;
  b->efd = efd;
  b->dsync_ok = true;
  *out = &b->base;
  return 0;
}
