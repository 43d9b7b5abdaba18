/* wal_recover: reading the log back -- directory listing, torn-tail repair, replay.
 *
 * Recovery order: newest snapshot S (if any), then segments S, S+1, ... in order.
 * Segments older than S are leftovers of a checkpoint that crashed between its rename
 * and its deletes; they are superseded and skipped. The remaining segments must be
 * contiguous and start at S (or at 1 without a snapshot): a gap means lost records
 * and is SQ_ECORRUPT.
 *
 * Torn tails. Only the newest segment can legitimately end in a half-written group
 * (one group is in flight at a time, and the next one is submitted only after the
 * previous completed), and the segment before it when the newest holds no record yet
 * (a crash just after a rotation, while the old segment's group was in flight). The
 * first bad record there (short, bad checksum, bad fields) and everything after it is
 * cut with ftruncate + fdatasync; none of it was ever acknowledged. Repair runs first,
 * so replay itself is strict: any bad record it meets is SQ_ECORRUPT.
 *
 * Files are read through read-only mmaps (a segment can be far larger than any buffer
 * we would want to allocate); nothing here keeps state between calls.
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sq_error.h"
#include "wal_int.h"

typedef struct {
  int fd;
  uint8_t *map;
  size_t size;
} kvs__map_t;

static void kvs__unmap(kvs__map_t *m) {
  if (m->map) munmap(m->map, m->size);
  if (m->fd >= 0) close(m->fd);
  m->map = NULL;
  m->fd = -1;
}

static int kvs__map_open(int dir_fd, kvs__file_kind_t kind, uint32_t tid, uint64_t seq,
                         bool writable, kvs__map_t *m) {
  char name[64];
  struct stat st;
  kvs__wal_name(name, sizeof(name), kind, tid, seq);
  m->map = NULL;
  m->size = 0;
  m->fd = openat(dir_fd, name, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (m->fd < 0) return -errno;
  if (fstat(m->fd, &st) != 0) {
    int rc = -errno;
    kvs__unmap(m);
    return rc;
  }
  m->size = (size_t)st.st_size;
  if (m->size == 0) return 0;
  void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, m->fd, 0);
  if (p == MAP_FAILED) {
    int rc = -errno;
    m->size = 0;
    kvs__unmap(m);
    return rc;
  }
  m->map = p;
  return 0;
}

static int kvs__u64_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int kvs__wal_dir_list(int dir_fd, uint32_t tid, kvs__wal_dir_t *d) {
  memset(d, 0, sizeof(*d));
  int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  DIR *dir = fdopendir(fd);
  if (!dir) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  int rc = 0;
  size_t cap = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL) {
    kvs__file_kind_t kind;
    uint64_t seq;
    if (!kvs__wal_name_parse(de->d_name, tid, &kind, &seq)) continue;
    if (kind == KVS__FILE_SNAP && seq > d->snap_seq) d->snap_seq = seq;
    if (kind != KVS__FILE_SEG) continue;
    if (d->nsegs == cap) {
      cap = cap ? cap * 2 : 8;
      uint64_t *segs = realloc(d->segs, cap * sizeof(*segs));
      if (!segs) {
        rc = -ENOMEM;
        goto out;
      }
      d->segs = segs;
    }
    d->segs[d->nsegs++] = seq;
  }
  if (d->nsegs) qsort(d->segs, d->nsegs, sizeof(*d->segs), kvs__u64_cmp);
out:
  closedir(dir);
  if (rc) kvs__wal_dir_free(d);
  return rc;
}

void kvs__wal_dir_free(kvs__wal_dir_t *d) {
  free(d->segs);
  memset(d, 0, sizeof(*d));
}

int kvs__wal_dir_check(kvs__wal_dir_t *d) {
  size_t skip = 0;
  while (skip < d->nsegs && d->segs[skip] < d->snap_seq) skip++;
  if (skip) {
    memmove(d->segs, d->segs + skip, (d->nsegs - skip) * sizeof(*d->segs));
    d->nsegs -= skip;
  }
  if (d->nsegs == 0) return d->snap_seq ? SQ_ECORRUPT : 0;
  uint64_t first = d->snap_seq ? d->snap_seq : 1;
  for (size_t i = 0; i < d->nsegs; i++) {
    if (d->segs[i] != first + i) return SQ_ECORRUPT;
  }
  return 0;
}

/* Walks the records of a mapped segment after its header. Stops at the first bad
 * record (*end < size then) or when fn fails (its result is returned). */
static int kvs__seg_walk(const kvs__map_t *m, kvs_wal_replay_fn fn, void *ctx,
                         uint64_t *end, uint64_t *nrec, uint64_t *max_lsn) {
  size_t off = KVS__HDR_SIZE;
  *nrec = 0;
  while (off < m->size) {
    kvs__wal_rec_t rec;
    size_t used;
    if (kvs__wal_rec_decode(m->map + off, m->size - off, &rec, &used) != 0) break;
    if (rec.type == SQ_LATTICE_NONE || rec.type > SQ_LATTICE_TYPE_MAX) break;
    if (fn) {
      int rc = fn(rec.key, rec.keylen, (sq_lattice_type_t)rec.type, rec.payload, rec.len, ctx);
      if (rc) return rc;
    }
    if (rec.lsn > *max_lsn) *max_lsn = rec.lsn;
    (*nrec)++;
    off += used;
  }
  *end = off;
  return 0;
}

static int kvs__seg_cut(int fd, uint64_t at) {
  if (ftruncate(fd, (off_t)at) != 0 || fdatasync(fd) != 0) return -errno;
  return 0;
}

/* Repairs one segment that may hold a torn tail; *nrec gets its whole records. */
static int kvs__seg_repair(int dir_fd, uint32_t tid, uint64_t seq, bool newest,
                           kvs__wal_tail_t *t, uint64_t *nrec) {
  kvs__map_t m;
  kvs__wal_hdr_t h;
  uint64_t end = 0, max_lsn = 0;
  *nrec = 0;
  int rc = kvs__map_open(dir_fd, KVS__FILE_SEG, tid, seq, true, &m);
  if (rc) return rc;
  if (kvs__wal_hdr_decode(m.map, m.size, KVS__FILE_SEG, &h) != 0) {
    if (!newest) {
      rc = SQ_ECORRUPT;
      goto out;
    }
    /* Crash while the segment was being created: it holds nothing. */
    kvs__wal_hdr_t fresh = {.tid = tid, .seq = seq, .first_lsn = 0};
    if (ftruncate(m.fd, 0) != 0) rc = -errno;
    if (!rc) rc = kvs__wal_hdr_write(m.fd, KVS__FILE_SEG, &fresh);
    t->torn_tails++;
    t->torn_bytes += m.size;
    goto out;
  }
  if (h.tid != tid || h.seq != seq) {
    rc = SQ_ECORRUPT;
    goto out;
  }
  kvs__seg_walk(&m, NULL, NULL, &end, nrec, &max_lsn);
  if (end < m.size) {
    rc = kvs__seg_cut(m.fd, end);
    t->torn_tails++;
    t->torn_bytes += m.size - end;
  }
  if (h.first_lsn > t->next_lsn) t->next_lsn = h.first_lsn;
  if (*nrec && max_lsn + 1 > t->next_lsn) t->next_lsn = max_lsn + 1;
out:
  kvs__unmap(&m);
  return rc;
}

int kvs__wal_tail_repair(int dir_fd, uint32_t tid, const kvs__wal_dir_t *d,
                         kvs__wal_tail_t *t) {
  uint64_t nrec = 0;
  memset(t, 0, sizeof(*t));
  t->next_lsn = 1;
  if (d->nsegs == 0) return 0;
  int rc = kvs__seg_repair(dir_fd, tid, d->segs[d->nsegs - 1], true, t, &nrec);
  if (rc || nrec > 0 || d->nsegs < 2) return rc;
  return kvs__seg_repair(dir_fd, tid, d->segs[d->nsegs - 2], false, t, &nrec);
}

static int kvs__snap_replay(int dir_fd, uint32_t tid, uint64_t seq, kvs_wal_replay_fn fn,
                            void *ctx, uint64_t *entries) {
  kvs__map_t m;
  kvs__wal_hdr_t h;
  int rc = kvs__map_open(dir_fd, KVS__FILE_SNAP, tid, seq, false, &m);
  if (rc) return rc;
  rc = SQ_ECORRUPT;
  if (kvs__wal_hdr_decode(m.map, m.size, KVS__FILE_SNAP, &h) != 0) goto out;
  if (h.tid != tid || h.seq != seq) goto out;
  for (size_t off = KVS__HDR_SIZE; off < m.size;) {
    kvs__wal_rec_t rec;
    size_t used;
    if (kvs__wal_rec_decode(m.map + off, m.size - off, &rec, &used) != 0) goto out;
    off += used;
    if (rec.type == KVS__REC_TRAILER) {
      uint64_t count;
      if (rec.keylen != 0 || rec.len != 8 || off != m.size) goto out;
      memcpy(&count, rec.payload, 8);
      rc = le64toh(count) == *entries ? 0 : SQ_ECORRUPT;
      goto out;
    }
    if (rec.type == SQ_LATTICE_NONE || rec.type > SQ_LATTICE_TYPE_MAX) goto out;
    int frc = fn(rec.key, rec.keylen, (sq_lattice_type_t)rec.type, rec.payload, rec.len, ctx);
    if (frc) {
      rc = frc;
      goto out;
    }
    (*entries)++;
  }
out:
  kvs__unmap(&m);
  return rc;
}

static int kvs__seg_replay(int dir_fd, uint32_t tid, uint64_t seq, kvs_wal_replay_fn fn,
                           void *ctx, kvs_wal_recovery_t *st) {
  kvs__map_t m;
  kvs__wal_hdr_t h;
  uint64_t end = 0, nrec = 0;
  int rc = kvs__map_open(dir_fd, KVS__FILE_SEG, tid, seq, false, &m);
  if (rc) return rc;
  rc = SQ_ECORRUPT;
  if (kvs__wal_hdr_decode(m.map, m.size, KVS__FILE_SEG, &h) != 0) goto out;
  if (h.tid != tid || h.seq != seq) goto out;
  rc = kvs__seg_walk(&m, fn, ctx, &end, &nrec, &st->last_lsn);
  if (rc == 0 && end != m.size) rc = SQ_ECORRUPT;
  st->records += nrec;
  st->segments++;
out:
  kvs__unmap(&m);
  return rc;
}

int kvs_wal_recover(const char *dir, uint32_t tid, kvs_wal_replay_fn fn, void *ctx,
                    kvs_wal_recovery_t *stats) {
  kvs_wal_recovery_t local;
  kvs_wal_recovery_t *st = stats ? stats : &local;
  kvs__wal_dir_t d = {0};
  kvs__wal_tail_t t;
  memset(st, 0, sizeof(*st));
  if (!dir || !fn) return SQ_EINVAL;
  int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return errno == ENOENT ? 0 : -errno;
  int rc = kvs__wal_dir_list(dir_fd, tid, &d);
  if (!rc) rc = kvs__wal_dir_check(&d);
  if (!rc) rc = kvs__wal_tail_repair(dir_fd, tid, &d, &t);
  if (rc) goto out;
  st->torn_tails = t.torn_tails;
  st->torn_bytes = t.torn_bytes;
  if (d.snap_seq) {
    st->snapshot_seq = d.snap_seq;
    rc = kvs__snap_replay(dir_fd, tid, d.snap_seq, fn, ctx, &st->snapshot_entries);
    if (rc) goto out;
  }
  for (size_t i = 0; i < d.nsegs && !rc; i++) rc = kvs__seg_replay(dir_fd, tid, d.segs[i], fn, ctx, st);
out:
  kvs__wal_dir_free(&d);
  close(dir_fd);
  return rc;
}

void kvs__wal_dir_sweep(int dir_fd, uint32_t tid, uint64_t below) {
  int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  DIR *dir = fdopendir(fd);
  if (!dir) {
    close(fd);
    return;
  }
  struct dirent *de;
  while ((de = readdir(dir)) != NULL) {
    kvs__file_kind_t kind;
    uint64_t seq;
    if (!kvs__wal_name_parse(de->d_name, tid, &kind, &seq)) continue;
    if (kind == KVS__FILE_TMP || seq < below) unlinkat(dir_fd, de->d_name, 0);
  }
  closedir(dir);
}
