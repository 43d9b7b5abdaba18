/* wal_snapshot: fuzzy checkpoints of one worker's log.
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
 * Buffering: entries are encoded into one reusable buffer and written out in 1 MiB
 * chunks; sync_file_range(SYNC_FILE_RANGE_WRITE) starts their writeback at once so the
 * final fdatasync has little left to do. The snapshot belongs to the log's thread.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sq_error.h"
#include "wal_int.h"

struct kvs_snap {
  kvs_wal_t *wal;
  int fd;
  uint64_t seq;
  sq_buf_t buf;      /* encoded entries not yet written */
  uint64_t file_off; /* bytes written to the temp file */
  uint64_t entries;
  int err;           /* sticky: a failed write breaks the snapshot */
};

static void kvs__snap_free(kvs_snap_t *snap, bool unlink_tmp) {
  char name[64];
  if (snap->fd >= 0) close(snap->fd);
  if (unlink_tmp) {
    kvs__wal_name(name, sizeof(name), KVS__FILE_TMP, snap->wal->tid, snap->seq);
    unlinkat(snap->wal->dir_fd, name, 0);
  }
  if (snap->wal->snap == snap) snap->wal->snap = NULL;
  sq_buf_free(&snap->buf);
  free(snap);
}

int kvs_wal_checkpoint_begin(kvs_wal_t *wal, kvs_snap_t **out) {
  char name[64];
  uint8_t hdr[KVS__HDR_SIZE];
  if (wal->err) return wal->err;
  if (wal->snap) return -EBUSY;
  kvs_snap_t *snap = calloc(1, sizeof(*snap));
  if (!snap) return -ENOMEM;
  snap->wal = wal;
  snap->fd = -1;
  int rc = kvs__wal_rotate(wal);
  if (rc) goto out;
  snap->seq = wal->seg_seq;
  kvs__wal_name(name, sizeof(name), KVS__FILE_TMP, wal->tid, snap->seq);
  snap->fd = openat(wal->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (snap->fd < 0) {
    rc = -errno;
    goto out;
  }
  kvs__wal_hdr_t h = {.tid = wal->tid, .seq = snap->seq, .first_lsn = 0};
  kvs__wal_hdr_encode(hdr, KVS__FILE_SNAP, &h);
  rc = sq_buf_append(&snap->buf, hdr, sizeof(hdr));
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

/* Writes the buffered bytes out and starts their writeback. */
static int kvs__snap_spill(kvs_snap_t *snap) {
  int rc = kvs__wal_pwrite_all(snap->fd, snap->buf.data, snap->buf.len, snap->file_off);
  if (rc) return snap->err = rc;
  /* Only a hint to start writeback early; the commit's fdatasync is what counts. */
  (void)sync_file_range(snap->fd, (off_t)snap->file_off, (off_t)snap->buf.len,
                        SYNC_FILE_RANGE_WRITE);
  snap->file_off += snap->buf.len;
  sq_buf_reset(&snap->buf);
  return 0;
}

int kvs_snap_add(kvs_snap_t *snap, const char *key, size_t keylen, sq_lattice_type_t type,
                 const uint8_t *payload, size_t len) {
  if (snap->err) return snap->err;
  if (keylen == 0) return SQ_EEMPTYKEY;
  if (type == SQ_LATTICE_NONE || (unsigned)type > SQ_LATTICE_TYPE_MAX) return SQ_EUNKNOWNTYPE;
  int rc = kvs__wal_rec_append(&snap->buf, 0, (uint8_t)type, key, keylen, payload, len);
  if (rc) return rc;
  snap->entries++;
  return snap->buf.len >= KVS__SNAP_CHUNK ? kvs__snap_spill(snap) : 0;
}

/* Steps 1 and 2 of the commit order (see the top of the file). */
static int kvs__snap_publish(kvs_snap_t *snap) {
  char tmp[64], fin[64];
  uint64_t count = htole64(snap->entries);
  int rc = kvs__wal_rec_append(&snap->buf, 0, KVS__REC_TRAILER, NULL, 0,
                               (const uint8_t *)&count, sizeof(count));
  if (!rc) rc = kvs__snap_spill(snap);
  if (!rc && fdatasync(snap->fd) != 0) rc = -errno;
  if (rc) return rc;
  kvs__wal_name(tmp, sizeof(tmp), KVS__FILE_TMP, snap->wal->tid, snap->seq);
  kvs__wal_name(fin, sizeof(fin), KVS__FILE_SNAP, snap->wal->tid, snap->seq);
  if (renameat(snap->wal->dir_fd, tmp, snap->wal->dir_fd, fin) != 0) return -errno;
  return kvs__wal_dir_sync(snap->wal->dir_fd);
}

int kvs_snap_commit(kvs_snap_t *snap) {
  kvs_wal_t *wal = snap->wal;
  int rc = snap->err ? snap->err : kvs__snap_publish(snap);
  if (rc) {
    kvs__snap_free(snap, true);
    return rc;
  }
  kvs__wal_dir_sweep(wal->dir_fd, wal->tid, snap->seq);
  wal->stats.checkpoints++;
  kvs__snap_free(snap, false);
  return 0;
}

void kvs_snap_abort(kvs_snap_t *snap) {
  if (snap) kvs__snap_free(snap, true);
}

uint64_t kvs_snap_entries(const kvs_snap_t *snap) { return snap->entries; }
