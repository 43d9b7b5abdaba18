/* wal_snapshot: fuzzy checkpoints of one worker's log, written by a helper thread.
 *
 * Why fuzzy is correct: a snapshot entry is the key's value at the moment it was
 * added, which already contains every write merged before checkpoint_begin() (all of
 * them in segments < S) and perhaps some later ones (also in segments >= S). Replaying
 * segments >= S on top merges those later writes a second time, which a lattice
 * ignores. So the snapshot plus segments >= S equals the full log, and segments < S
 * can go once the snapshot is durable.
 *
 * Commit order (each step durable before the next, so a crash anywhere leaves either
 * the old snapshot + all segments, or the new snapshot + segments >= S):
 *   1. write the trailer, fdatasync the temp file  snap-<tid>-S.tmp
 *   2. rename it to snap-<tid>-S.snap, fsync the directory
 *   3. delete segments < S and snapshots < S (a crash here leaves files that recovery
 *      skips and the next open deletes)
 * A temp file left by a crash is never read; open and the next commit delete it.
 *
 * Threads. The owner (the log's thread) only encodes entries into `buf`; every file
 * operation after the open -- the 1 MiB chunk writes, the fdatasync of the whole
 * snapshot (~120 ms for 100 MiB), the rename, the directory fsync and the unlinks of
 * the superseded files (~50 ms for a 64 MiB segment) -- runs on the snapshot's own
 * writer thread, so the serving loop never blocks on them. Hand-off is one slot:
 *
 *   owner: buf (>= 1 MiB, or the last one + trailer) --swap, under mu--> out
 *   writer: pwrite(out), then waits for it to reach the disk (pacing, see
 *           kvs__snap_write); if final: steps 1-3 above;
 *           busy = false (done = true if final), signal cv, write 1 to the log's
 *           eventfd (the owner's poll wakes, and hands over the next chunk)
 *
 * `out` belongs to the writer while `busy`; everything else in the struct belongs to
 * the owner except the fields marked "mu". If the writer is busy when a chunk is
 * full, the owner keeps encoding into `buf` (it never waits); kvs_snap_backlog() lets
 * it stop adding until the writer catches up. The snapshot stays the log's running
 * checkpoint (wal->snap) until it is freed, so a second one cannot start -- and the
 * sweep of step 3, which deletes every temp file of the tid, cannot hit a newer one.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sq_error.h"
#include "wal_int.h"

struct kvs_snap {
  kvs_wal_t *wal;
  int fd;            /* the temp file; written only by the writer once it runs */
  int dir_fd, efd;   /* copies of the log's: the writer never touches wal */
  uint32_t tid;
  uint64_t seq;
  sq_buf_t buf;      /* encoded entries not yet handed to the writer */
  uint64_t entries;
  int err;           /* sticky: a failed write breaks the snapshot */
  bool committing;   /* the trailer is in buf; no more entries */
  bool started;      /* the writer thread exists */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  sq_buf_t out;      /* the chunk the writer writes (its own while busy) */
  bool busy;         /* mu: out holds a chunk for the writer */
  bool final;        /* mu: that chunk is the last one: publish after it */
  bool done;         /* mu: the final chunk was handled; res is the commit's result */
  bool stop;         /* mu: the writer exits once idle */
  int res;           /* mu: the writer's first error, 0 while fine */
};

/* Steps 1 and 2 of the commit order (the trailer is already written). Writer. */
static int kvs__snap_publish(kvs_snap_t *snap) {
  char tmp[64], fin[64];
  if (fdatasync(snap->fd) != 0) return -errno;
  kvs__wal_name(tmp, sizeof(tmp), KVS__FILE_TMP, snap->tid, snap->seq);
  kvs__wal_name(fin, sizeof(fin), KVS__FILE_SNAP, snap->tid, snap->seq);
  if (renameat(snap->dir_fd, tmp, snap->dir_fd, fin) != 0) return -errno;
  return kvs__wal_dir_sync(snap->dir_fd);
}

/* Writes one chunk at *off and starts its writeback; publishes and sweeps after the
 * final one. Writer. */
static int kvs__snap_write(kvs_snap_t *snap, bool final, uint64_t *off) {
  int rc = kvs__wal_pwrite_all(snap->fd, snap->out.data, snap->out.len, *off);
  if (rc) return rc;
  /* Paces the snapshot to the disk: each chunk is on its way to the disk before the
   * next is written, so at most one chunk of snapshot data is ever in flight. On
   * ext4 (data=ordered) a log fdatasync commits the journal and waits for the data of
   * every file in the transaction: with the whole snapshot dirty or in writeback
   * (hundreds of MiB), group commits waited behind it (p99 of durable 1 KiB PUTs
   * ~170 ms). The commit's fdatasync is what makes the snapshot durable; this only
   * keeps it from arriving all at once. */
  (void)sync_file_range(snap->fd, (off_t)*off, (off_t)snap->out.len,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER);
  *off += snap->out.len;
  if (!final) return 0;
  rc = kvs__snap_publish(snap);
  if (!rc) kvs__wal_dir_sweep(snap->dir_fd, snap->tid, snap->seq);
  return rc;
}

static void *kvs__snap_writer(void *arg) {
  kvs_snap_t *snap = arg;
  uint64_t off = 0, one = 1;
  pthread_mutex_lock(&snap->mu);
  for (;;) {
    while (!snap->busy && !snap->stop) pthread_cond_wait(&snap->cv, &snap->mu);
    if (!snap->busy) break;
    bool final = snap->final;
    int rc = snap->res;
    pthread_mutex_unlock(&snap->mu);
    if (!rc) rc = kvs__snap_write(snap, final, &off);
    sq_buf_reset(&snap->out);
    pthread_mutex_lock(&snap->mu);
    snap->res = rc;
    snap->busy = false;
    snap->done = final;
    pthread_cond_broadcast(&snap->cv);
    /* Wakes the owner's poll; an eventfd write fails only on counter overflow. */
    if (write(snap->efd, &one, sizeof(one)) < 0) {
    }
    if (final) break;
  }
  pthread_mutex_unlock(&snap->mu);
  return NULL;
}

/* Stops and joins the writer (it finishes the chunk it holds first), then frees. */
static void kvs__snap_free(kvs_snap_t *snap, bool unlink_tmp) {
  char name[64];
  if (snap->started) {
    pthread_mutex_lock(&snap->mu);
    snap->stop = true;
    pthread_cond_broadcast(&snap->cv);
    pthread_mutex_unlock(&snap->mu);
    pthread_join(snap->thread, NULL);
  }
  pthread_cond_destroy(&snap->cv);
  pthread_mutex_destroy(&snap->mu);
  if (snap->fd >= 0) close(snap->fd);
  if (unlink_tmp) {
    kvs__wal_name(name, sizeof(name), KVS__FILE_TMP, snap->tid, snap->seq);
    unlinkat(snap->dir_fd, name, 0);
  }
  if (snap->wal->snap == snap) snap->wal->snap = NULL;
  sq_buf_free(&snap->buf);
  sq_buf_free(&snap->out);
  free(snap);
}

/* Opens the temp file, encodes its header and starts the writer. */
static int kvs__snap_open(kvs_snap_t *snap) {
  char name[64];
  uint8_t hdr[KVS__HDR_SIZE];
  kvs__wal_name(name, sizeof(name), KVS__FILE_TMP, snap->tid, snap->seq);
  snap->fd = openat(snap->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (snap->fd < 0) return -errno;
  kvs__wal_hdr_t h = {.tid = snap->tid, .seq = snap->seq, .first_lsn = 0};
  kvs__wal_hdr_encode(hdr, KVS__FILE_SNAP, &h);
  int rc = sq_buf_append(&snap->buf, hdr, sizeof(hdr));
  if (rc) return rc;
  rc = -pthread_create(&snap->thread, NULL, kvs__snap_writer, snap);
  snap->started = rc == 0;
  return rc;
}

int kvs_wal_checkpoint_begin(kvs_wal_t *wal, kvs_snap_t **out) {
  if (wal->err) return wal->err;
  if (wal->snap) return -EBUSY;
  kvs_snap_t *snap = calloc(1, sizeof(*snap));
  if (!snap) return -ENOMEM;
  snap->wal = wal;
  snap->fd = -1;
  snap->dir_fd = wal->dir_fd;
  snap->efd = wal->efd;
  snap->tid = wal->tid;
  pthread_mutex_init(&snap->mu, NULL);
  pthread_cond_init(&snap->cv, NULL);
  int rc = kvs__wal_rotate(wal);
  if (rc) goto out;
  snap->seq = wal->seg_seq;
  rc = kvs__snap_open(snap);
out:
  if (rc) {
    kvs__snap_free(snap, snap->fd >= 0);
    snap = NULL;
  } else {
    wal->snap = snap;
  }
  *out = snap;
  return rc;
}

/* Hands buf to the writer when it is idle (never waits). True when handed over.
 * Picks up the writer's error into the sticky one. */
static bool kvs__snap_handoff(kvs_snap_t *snap, bool final) {
  bool handed = false;
  pthread_mutex_lock(&snap->mu);
  if (!snap->busy && !snap->res) {
    sq_buf_t t = snap->out;
    snap->out = snap->buf;
    snap->buf = t;
    snap->busy = true;
    snap->final = final;
    handed = true;
    pthread_cond_broadcast(&snap->cv);
  }
  if (snap->res) snap->err = snap->res;
  pthread_mutex_unlock(&snap->mu);
  return handed;
}

int kvs_snap_pump(kvs_snap_t *snap) {
  if (!snap->err && !snap->committing && snap->buf.len >= KVS__SNAP_CHUNK)
    kvs__snap_handoff(snap, false);
  return snap->err;
}

size_t kvs_snap_backlog(const kvs_snap_t *snap) { return snap->buf.len; }

int kvs_snap_add(kvs_snap_t *snap, const char *key, size_t keylen, sq_lattice_type_t type,
                 const uint8_t *payload, size_t len) {
  if (snap->err) return snap->err;
  if (snap->committing) return -EBUSY;
  if (keylen == 0) return SQ_EEMPTYKEY;
  if (type == SQ_LATTICE_NONE || (unsigned)type > SQ_LATTICE_TYPE_MAX) return SQ_EUNKNOWNTYPE;
  int rc = kvs__wal_rec_append(&snap->buf, 0, (uint8_t)type, key, keylen, payload, len);
  if (rc) return rc;
  snap->entries++;
  return kvs_snap_pump(snap);
}

int kvs_snap_commit_poll(kvs_snap_t *snap, int *res) {
  if (!snap->committing && !snap->err) {
    uint64_t count = htole64(snap->entries);
    int rc = kvs__wal_rec_append(&snap->buf, 0, KVS__REC_TRAILER, NULL, 0,
                                 (const uint8_t *)&count, sizeof(count));
    /* The commit deletes the segments before seq: the one after them must be on
     * disk by then (normally its first group made it so long ago). */
    if (!rc) rc = kvs__wal_seg_sync(snap->wal);
    if (rc) snap->err = rc;
    snap->committing = true;
  }
  /* Once handed over, buf is the writer's old buffer, empty: it is not sent twice. */
  if (snap->committing && snap->buf.len && !snap->err) kvs__snap_handoff(snap, true);
  pthread_mutex_lock(&snap->mu);
  bool done = snap->done || (snap->res && !snap->busy);
  int rc = snap->err ? snap->err : snap->res;
  pthread_mutex_unlock(&snap->mu);
  if (!done && !snap->err) return 0;
  kvs_wal_t *wal = snap->wal;
  if (!rc) wal->stats.checkpoints++;
  kvs__snap_free(snap, rc != 0);
  *res = rc;
  return 1;
}

int kvs_snap_commit(kvs_snap_t *snap) {
  int res = 0;
  while (kvs_snap_commit_poll(snap, &res) == 0) {
    pthread_mutex_lock(&snap->mu);
    /* Wait for the writer to go idle (it then takes the next chunk) or finish. */
    while (snap->busy && !snap->done) pthread_cond_wait(&snap->cv, &snap->mu);
    pthread_mutex_unlock(&snap->mu);
  }
  return res;
}

void kvs_snap_abort(kvs_snap_t *snap) {
  if (snap) kvs__snap_free(snap, true);
}

uint64_t kvs_snap_entries(const kvs_snap_t *snap) { return snap->entries; }
