/* wal_uring: the io_uring log backend -- a write linked to an fdatasync, one ring.
 *
 * A group is one IORING_OP_WRITE with IOSQE_IO_LINK followed by IORING_OP_FSYNC with
 * IORING_FSYNC_DATASYNC: the kernel runs the fsync only after the write succeeded in
 * full, and the owner pays one io_uring_submit per group. The eventfd registered with
 * io_uring_register_eventfd fires for each completion; poll() collects every CQE. The
 * first group of a new segment links a third SQE, an fsync of the directory, so that
 * the segment's entry is durable with its first records (the rotation itself waits
 * for nothing, see kvs__wal_rotate).
 *
 * A short write breaks the link (the fsync completes with -ECANCELED): the rest of the
 * buffer is queued again, with its own linked fsync. Writes are cut into chunks of at
 * most 1 GiB because a CQE's result is an int; only the last chunk carries the fsync.
 *
 * Probing (liburing's habit): io_uring_queue_init may fail (seccomp in containers,
 * kernel.io_uring_disabled, old kernels) and the probe may lack an opcode; either way
 * create() returns SQ_EUNSUPPORTED with a sentence in why[] and the log falls back to
 * wal_pwrite.c when the owner asked for AUTO. The ring belongs to the owning thread.
 */
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"
#include "wal_int.h"

#define KVS__UR_WRITE 1u
#define KVS__UR_FSYNC 2u
#define KVS__UR_DIRSYNC 3u
#define KVS__UR_CHUNK ((size_t)1 << 30)

typedef struct {
  kvs__wal_be_t base;
  struct io_uring ring;
  kvs__wal_io_t io;
  size_t done;  /* bytes of io written so far */
  int inflight; /* CQEs still to come */
  int wres;
  int fres;
  int dres; /* the directory's fsync, when the group carries one */
} kvs__ur_t;

static int kvs__ur_queue(kvs__ur_t *u) {
  size_t chunk = u->io.len - u->done;
  if (chunk > KVS__UR_CHUNK) chunk = KVS__UR_CHUNK;
  bool sync = u->io.sync && u->done + chunk == u->io.len;
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (!sqe) return -EBUSY;
  io_uring_prep_write(sqe, u->io.fd, u->io.buf + u->done, (unsigned)chunk,
                      u->io.off + u->done);
  io_uring_sqe_set_data64(sqe, KVS__UR_WRITE);
  u->inflight = 1;
  u->wres = u->fres = u->dres = 0;
  if (sync) {
    sqe->flags |= IOSQE_IO_LINK;
    sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_fsync(sqe, u->io.fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, KVS__UR_FSYNC);
    u->inflight = 2;
  }
  if (sync && u->io.dir_fd >= 0) {
    sqe->flags |= IOSQE_IO_LINK; /* after the file's fsync */
    sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_fsync(sqe, u->io.dir_fd, 0);
    io_uring_sqe_set_data64(sqe, KVS__UR_DIRSYNC);
    u->inflight = 3;
  }
  int rc = io_uring_submit(&u->ring);
  if (rc < 0) {
    u->inflight = 0;
    return rc;
  }
  return 0;
}

static int kvs__ur_submit(kvs__wal_be_t *be, const kvs__wal_io_t *io) {
  kvs__ur_t *u = (kvs__ur_t *)be;
  u->io = *io;
  u->done = 0;
  return kvs__ur_queue(u);
}

static void kvs__ur_take(kvs__ur_t *u, struct io_uring_cqe *cqe) {
  uint64_t tag = io_uring_cqe_get_data64(cqe);
  if (tag == KVS__UR_WRITE)
    u->wres = cqe->res;
  else if (tag == KVS__UR_FSYNC)
    u->fres = cqe->res;
  else
    u->dres = cqe->res;
  io_uring_cqe_seen(&u->ring, cqe);
  u->inflight--;
}

/* Called when both CQEs of a round are in: 1 = finished (*res set), 0 = requeued. */
static int kvs__ur_settle(kvs__ur_t *u, int *res) {
  if (u->wres <= 0) {
    *res = u->wres < 0 ? u->wres : -EIO;
    return 1;
  }
  u->done += (size_t)u->wres;
  if (u->done < u->io.len) {
    int rc = kvs__ur_queue(u);
    if (rc) *res = rc;
    return rc ? 1 : 0;
  }
  *res = u->fres < 0 ? u->fres : u->dres < 0 ? u->dres : 0;
  return 1;
}

static int kvs__ur_poll(kvs__wal_be_t *be, int *res) {
  kvs__ur_t *u = (kvs__ur_t *)be;
  struct io_uring_cqe *cqe;
  if (u->inflight == 0) return 0;
  while (u->inflight > 0 && io_uring_peek_cqe(&u->ring, &cqe) == 0) kvs__ur_take(u, cqe);
  if (u->inflight > 0) return 0;
  return kvs__ur_settle(u, res);
}

static void kvs__ur_destroy(kvs__wal_be_t *be) {
  kvs__ur_t *u = (kvs__ur_t *)be;
  struct io_uring_cqe *cqe;
  int res;
  /* The kernel may still read the owner's buffer: wait for the whole write. */
  while (u->inflight > 0) {
    if (io_uring_wait_cqe(&u->ring, &cqe) != 0) break;
    kvs__ur_take(u, cqe);
    if (u->inflight == 0) kvs__ur_settle(u, &res);
  }
  io_uring_queue_exit(&u->ring);
  free(u);
}

static int kvs__ur_probe(struct io_uring *ring, char *why, size_t whylen) {
  struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
  int rc = 0;
  if (!probe) {
    snprintf(why, whylen, "io_uring_get_probe failed");
    return SQ_EUNSUPPORTED;
  }
  if (!io_uring_opcode_supported(probe, IORING_OP_WRITE) ||
      !io_uring_opcode_supported(probe, IORING_OP_FSYNC)) {
    snprintf(why, whylen, "kernel io_uring lacks IORING_OP_WRITE or IORING_OP_FSYNC");
    rc = SQ_EUNSUPPORTED;
  }
  io_uring_free_probe(probe);
  return rc;
}

int kvs__wal_uring_create(int efd, kvs__wal_be_t **out, char *why, size_t whylen) {
  char msg[96];
  kvs__ur_t *u = calloc(1, sizeof(*u));
  if (!u) return -ENOMEM;
  int rc = io_uring_queue_init(8, &u->ring, 0);
  if (rc < 0) {
    snprintf(why, whylen, "io_uring_queue_init: %s", strerror_r(-rc, msg, sizeof(msg)));
    free(u);
    return SQ_EUNSUPPORTED;
  }
  rc = kvs__ur_probe(&u->ring, why, whylen);
  if (!rc) {
    rc = io_uring_register_eventfd(&u->ring, efd);
    if (rc < 0) {
      snprintf(why, whylen, "io_uring_register_eventfd: %s", strerror_r(-rc, msg, sizeof(msg)));
      rc = SQ_EUNSUPPORTED;
    }
  }
  if (rc) {
    io_uring_queue_exit(&u->ring);
    free(u);
    return rc;
  }
  u->base.name = "io_uring";
  u->base.submit = kvs__ur_submit;
  u->base.poll = kvs__ur_poll;
  u->base.destroy = kvs__ur_destroy;
  *out = &u->base;
  return 0;
}
