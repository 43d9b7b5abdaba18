/* wal: the write path of the durable log -- open, append, group commit, rotation.
 *
 * State machine of the write path (one thread; see wal.h for the picture):
 *
 *   IDLE (busy = false) --flush, pending non-empty--> IN FLIGHT (busy = true)
 *   IN FLIGHT --completion, reap--> IDLE, durable = flight_last, and at once
 *                                   IN FLIGHT again when pending is non-empty
 *   any --write/fsync error--> BROKEN (err != 0, sticky; only close works)
 *
 * Invariants:
 *   - durable <= flight_last <= pending_last < next_lsn (when those groups exist);
 *   - at most one group is in flight, so groups reach the disk in LSN order and the
 *     only group that can be torn by a crash is the newest one (wal_recover.c relies
 *     on this);
 *   - seg_off is reserved at submit time: the next group goes after the one in flight;
 *   - pending and flight swap their buffers, never free them: once both have grown to
 *     the size of a typical group, appends allocate nothing.
 *
 * The backend (wal_uring.c, wal_pwrite.c or wal_inline.c) only knows "write this buffer at this
 * offset, then fdatasync, then signal the eventfd"; everything else is here.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sq_error.h"
#include "wal_int.h"

int kvs__wal_pwrite_all(int fd, const uint8_t *buf, size_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = pwrite(fd, buf, len, (off_t)off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return -EIO;
    buf += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return 0;
}

int kvs__wal_hdr_write(int fd, kvs__file_kind_t kind, const kvs__wal_hdr_t *h) {
  uint8_t hdr[KVS__HDR_SIZE];
  kvs__wal_hdr_encode(hdr, kind, h);
  int rc = kvs__wal_pwrite_all(fd, hdr, sizeof(hdr), 0);
  if (!rc && fdatasync(fd) != 0) rc = -errno;
  return rc;
}

int kvs__wal_dir_sync(int dir_fd) { return fsync(dir_fd) == 0 ? 0 : -errno; }

int kvs__wal_io_run(const kvs__wal_io_t *io) {
  int rc = kvs__wal_pwrite_all(io->fd, io->buf, io->len, io->off);
  if (!rc && io->sync && fdatasync(io->fd) != 0) rc = -errno;
  if (!rc && io->sync && io->dir_fd >= 0) rc = kvs__wal_dir_sync(io->dir_fd);
  return rc;
}

/* Creates segment `seq` and makes it the current one. With `sync` its header and
 * directory entry are on disk when this returns (a new log); without, they become
 * durable with the first group written to it (see kvs__wal_rotate). */
static int kvs__wal_seg_create(kvs_wal_t *wal, uint64_t seq, bool sync) {
  char name[64];
  uint8_t hdr[KVS__HDR_SIZE];
  kvs__wal_hdr_t h = {.tid = wal->tid, .seq = seq, .first_lsn = wal->next_lsn};
  kvs__wal_name(name, sizeof(name), KVS__FILE_SEG, wal->tid, seq);
  int fd = openat(wal->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  int rc;
  if (sync) {
    rc = kvs__wal_hdr_write(fd, KVS__FILE_SEG, &h);
    if (!rc) rc = kvs__wal_dir_sync(wal->dir_fd);
  } else {
    kvs__wal_hdr_encode(hdr, KVS__FILE_SEG, &h);
    rc = kvs__wal_pwrite_all(fd, hdr, sizeof(hdr), 0);
  }
  if (rc) {
    close(fd);
    unlinkat(wal->dir_fd, name, 0);
    return rc;
  }
  wal->seg_fd = fd;
  wal->seg_seq = seq;
  wal->seg_off = KVS__HDR_SIZE;
  wal->seg_unsynced = !sync && wal->durability == KVS_DURABILITY_FSYNC;
  return 0;
}

static int kvs__wal_seg_continue(kvs_wal_t *wal, uint64_t seq) {
  char name[64];
  struct stat st;
  kvs__wal_name(name, sizeof(name), KVS__FILE_SEG, wal->tid, seq);
  int fd = openat(wal->dir_fd, name, O_RDWR | O_CLOEXEC);
  if (fd < 0) return -errno;
  if (fstat(fd, &st) != 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  wal->seg_fd = fd;
  wal->seg_seq = seq;
  wal->seg_off = (uint64_t)st.st_size;
  return 0;
}

int kvs__wal_rotate(kvs_wal_t *wal) {
  int old = wal->seg_fd;
  int rc = kvs__wal_seg_create(wal, wal->seg_seq + 1, false);
  if (rc) return wal->err = rc;
  if (wal->busy && wal->flight_fd == old)
    wal->flight_owns_fd = true;
  else
    close(old);
  return 0;
}

/* Lists, repairs and sweeps the directory, then opens the segment to append to. */
static int kvs__wal_files_open(kvs_wal_t *wal) {
  kvs__wal_dir_t d = {0};
  kvs__wal_tail_t t;
  int rc = kvs__wal_dir_list(wal->dir_fd, wal->tid, &d);
  if (!rc) rc = kvs__wal_dir_check(&d);
  if (!rc) rc = kvs__wal_tail_repair(wal->dir_fd, wal->tid, &d, &t);
  if (rc) goto out;
  kvs__wal_dir_sweep(wal->dir_fd, wal->tid, d.snap_seq);
  wal->stats.torn_tails = t.torn_tails;
  wal->stats.torn_bytes = t.torn_bytes;
  wal->next_lsn = t.next_lsn;
  wal->durable = t.next_lsn - 1;
  wal->pending_last = wal->durable;
  wal->flight_last = wal->durable;
  if (d.nsegs)
    rc = kvs__wal_seg_continue(wal, d.segs[d.nsegs - 1]);
  else
    rc = kvs__wal_seg_create(wal, 1, true);
out:
  kvs__wal_dir_free(&d);
  return rc;
}

static int kvs__wal_be_start(kvs_wal_t *wal, kvs_wal_backend_t kind) {
  if (kind == KVS_WAL_BACKEND_INLINE) return kvs__wal_inline_create(wal->efd, &wal->be);
  if (kind != KVS_WAL_BACKEND_PWRITE) {
    int rc = kvs__wal_uring_create(wal->efd, &wal->be, wal->why, sizeof(wal->why));
    if (rc == 0 || kind == KVS_WAL_BACKEND_URING) return rc;
  }
  return kvs__wal_pwrite_create(wal->efd, &wal->be);
}

static int kvs__wal_opts_check(const kvs_wal_options_t *o) {
  if (!o || !o->dir || !o->dir[0]) return SQ_EINVAL;
  if (o->durability != KVS_DURABILITY_LOG && o->durability != KVS_DURABILITY_FSYNC)
    return SQ_EINVAL;
  if (o->backend != KVS_WAL_BACKEND_AUTO && o->backend != KVS_WAL_BACKEND_URING &&
      o->backend != KVS_WAL_BACKEND_PWRITE && o->backend != KVS_WAL_BACKEND_INLINE)
    return SQ_EINVAL;
  return 0;
}

int kvs_wal_open(const kvs_wal_options_t *opts, kvs_wal_t **out) {
  kvs_wal_t *wal = NULL;
  int rc = kvs__wal_opts_check(opts);
  if (rc) goto out;
  wal = calloc(1, sizeof(*wal));
  if (!wal) {
    rc = -ENOMEM;
    goto out;
  }
  wal->dir_fd = wal->efd = wal->seg_fd = wal->flight_fd = -1;
  wal->tid = opts->tid;
  wal->durability = opts->durability;
  wal->segment_bytes = opts->segment_bytes ? opts->segment_bytes : KVS_WAL_DEFAULT_SEGMENT_BYTES;
  wal->dir = strdup(opts->dir);
  if (!wal->dir) {
    rc = -ENOMEM;
    goto out;
  }
  if (mkdir(wal->dir, 0755) != 0 && errno != EEXIST) {
    rc = -errno;
    goto out;
  }
  wal->dir_fd = open(wal->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  wal->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wal->dir_fd < 0 || wal->efd < 0) {
    rc = -errno;
    goto out;
  }
  rc = kvs__wal_files_open(wal);
  if (!rc) rc = kvs__wal_be_start(wal, opts->backend);
out:
  if (rc) {
    kvs_wal_close(wal);
    wal = NULL;
  }
  if (out) *out = wal;
  return rc;
}

/* Submits the pending group (FSYNC mode, nothing in flight) or writes it inline (LOG). */
static int kvs__wal_submit(kvs_wal_t *wal) {
  if (wal->err) return wal->err;
  if (wal->busy || wal->pending.len == 0) return 0;
  sq_buf_t tmp = wal->flight;
  wal->flight = wal->pending;
  wal->pending = tmp;
  sq_buf_reset(&wal->pending);
  kvs__wal_io_t io = {.fd = wal->seg_fd, .buf = wal->flight.data, .len = wal->flight.len,
                      .off = wal->seg_off, .sync = wal->durability == KVS_DURABILITY_FSYNC,
                      .dir_fd = -1};
  if (io.sync && wal->seg_unsynced) io.dir_fd = wal->dir_fd;
  int rc;
  if (io.sync) {
    rc = wal->be->submit(wal->be, &io);
    wal->busy = rc == 0;
    wal->flight_dirsync = io.dir_fd >= 0 ? wal->seg_seq : 0;
    wal->flight_fd = wal->seg_fd;
    wal->flight_owns_fd = false;
  } else {
    rc = kvs__wal_pwrite_all(io.fd, io.buf, io.len, io.off);
    if (!rc) wal->durable = wal->pending_last;
    sq_buf_reset(&wal->flight);
  }
  if (rc) return wal->err = rc;
  wal->flight_last = wal->pending_last;
  wal->seg_off += io.len;
  wal->stats.bytes += io.len;
  wal->stats.groups++;
  wal->stats.fsyncs += io.sync;
  return 0;
}

int kvs_wal_flush(kvs_wal_t *wal) { return kvs__wal_submit(wal); }

int kvs__wal_seg_sync(kvs_wal_t *wal) {
  if (wal->err || !wal->seg_unsynced) return wal->err;
  int rc = fdatasync(wal->seg_fd) == 0 ? 0 : -errno;
  if (!rc) rc = kvs__wal_dir_sync(wal->dir_fd);
  if (rc) return wal->err = rc;
  wal->seg_unsynced = false;
  return 0;
}

int kvs_wal_append(kvs_wal_t *wal, const char *key, size_t keylen, sq_lattice_type_t type,
                   const uint8_t *payload, size_t len, uint64_t *lsn) {
  if (wal->err) return wal->err;
  if (keylen == 0) return SQ_EEMPTYKEY;
  if (type == SQ_LATTICE_NONE || (unsigned)type > SQ_LATTICE_TYPE_MAX) return SQ_EUNKNOWNTYPE;
  int rc = kvs__wal_rec_append(&wal->pending, wal->next_lsn, (uint8_t)type, key, keylen,
                               payload, len);
  if (rc) return rc;
  wal->pending_last = wal->next_lsn++;
  wal->stats.records++;
  if (lsn) *lsn = wal->pending_last;
  return 0;
}

int kvs_wal_event_fd(const kvs_wal_t *wal) { return wal->efd; }

int kvs_wal_reap(kvs_wal_t *wal, uint64_t *durable_lsn) {
  uint64_t ticks;
  int res = 0;
  while (read(wal->efd, &ticks, sizeof(ticks)) == (ssize_t)sizeof(ticks)) {
  }
  if (wal->busy && wal->be->poll(wal->be, &res) == 1) {
    wal->busy = false;
    if (wal->flight_owns_fd) close(wal->flight_fd);
    wal->flight_owns_fd = false;
    wal->flight_fd = -1;
    sq_buf_reset(&wal->flight);
    if (res)
      wal->err = res;
    else
      wal->durable = wal->flight_last;
    if (!res && wal->flight_dirsync == wal->seg_seq) wal->seg_unsynced = false;
    wal->flight_dirsync = 0;
  }
  int rc = kvs__wal_submit(wal);
  if (durable_lsn) *durable_lsn = wal->durable;
  return rc;
}

int kvs_wal_sync(kvs_wal_t *wal) {
  int rc = kvs_wal_flush(wal);
  while (!rc && wal->durable < wal->pending_last) {
    struct pollfd pfd = {.fd = wal->efd, .events = POLLIN};
    if (wal->busy && poll(&pfd, 1, -1) < 0 && errno != EINTR) return -errno;
    rc = kvs_wal_reap(wal, NULL);
  }
  return rc;
}

int kvs_wal_close(kvs_wal_t *wal) {
  if (!wal) return 0;
  int rc = (wal->be && wal->seg_fd >= 0) ? kvs_wal_sync(wal) : 0;
  kvs_snap_abort(wal->snap);
  if (wal->be) wal->be->destroy(wal->be);
  if (wal->flight_owns_fd) close(wal->flight_fd);
  if (wal->seg_fd >= 0) close(wal->seg_fd);
  if (wal->efd >= 0) close(wal->efd);
  if (wal->dir_fd >= 0) close(wal->dir_fd);
  sq_buf_free(&wal->pending);
  sq_buf_free(&wal->flight);
  free(wal->dir);
  free(wal);
  return rc;
}

uint64_t kvs_wal_last_lsn(const kvs_wal_t *wal) { return wal->next_lsn - 1; }

uint64_t kvs_wal_durable_lsn(const kvs_wal_t *wal) { return wal->durable; }

bool kvs_wal_busy(const kvs_wal_t *wal) { return wal->busy; }

const char *kvs_wal_backend_name(const kvs_wal_t *wal) { return wal->be->name; }

const char *kvs_wal_fallback_reason(const kvs_wal_t *wal) {
  return (wal->why[0] && strcmp(wal->be->name, "pwrite") == 0) ? wal->why : NULL;
}

void kvs_wal_stats(const kvs_wal_t *wal, kvs_wal_stats_t *stats) { *stats = wal->stats; }

bool kvs_wal_checkpoint_due(const kvs_wal_t *wal) {
  return !wal->snap && !wal->err && wal->seg_off >= wal->segment_bytes;
}
