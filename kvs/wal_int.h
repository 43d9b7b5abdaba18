/* wal_int: internals shared by the files of the log (wal*.c). Not for other modules.
 *
 * On-disk format (all integers little-endian):
 *
 *   file header, 40 bytes            record, 24 bytes + key + payload
 *   +------------------------+       +-------------------------------+
 *   | magic[8]               |       | u32 crc32c  (bytes 4 .. end)  |
 *   | u32 version (1)        |       | u32 body    (bytes 8 .. end)  |
 *   | u32 tid                |       | u64 lsn     (0 in snapshots)  |
 *   | u64 seq                |       | u32 keylen                    |
 *   | u64 first_lsn          |       | u8 type, u8 0, u16 0          |
 *   | u32 reserved (0)       |       | key[keylen] payload[...]      |
 *   | u32 crc32c(bytes 0..35)|       +-------------------------------+
 *   +------------------------+
 *
 * Segment magic "SQWALSEG", snapshot magic "SQWALSNP". first_lsn is the next LSN when
 * a segment was created (so LSNs keep growing across restarts even after a checkpoint
 * emptied the log); 0 in snapshots. A snapshot ends with one trailer record (type
 * KVS__REC_TRAILER, empty key, payload = u64 entry count): a snapshot without it, or
 * with bytes after it, is corrupt. The CRC covers the length field, so a flipped
 * length is caught like a flipped payload byte.
 */
#ifndef KVS_WAL_INT_H
#define KVS_WAL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sq_buf.h"
#include "wal.h"

#define KVS__WAL_VERSION 1u
#define KVS__HDR_SIZE 40u
#define KVS__REC_HDR 24u
#define KVS__REC_TRAILER 0xFFu
#define KVS__SNAP_CHUNK (1u << 20)

typedef enum { KVS__FILE_SEG = 1, KVS__FILE_SNAP = 2, KVS__FILE_TMP = 3 } kvs__file_kind_t;

typedef struct {
  uint32_t tid;
  uint64_t seq;
  uint64_t first_lsn; /* segments: next LSN when it was created; snapshots: 0 */
} kvs__wal_hdr_t;

typedef struct {
  uint64_t lsn;
  uint8_t type;
  const char *key;
  size_t keylen;
  const uint8_t *payload;
  size_t len;
} kvs__wal_rec_t;

/* ---- wal_record.c: framing ---- */

/* Software CRC32C (always the table), for tests that compare both paths. */
uint32_t kvs__wal_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* Encoded size of a record, or 0 when it exceeds KVS_WAL_MAX_RECORD. */
size_t kvs__wal_rec_size(size_t keylen, size_t len);

/* Appends an encoded record to buf. 0, SQ_ETOOBIG or -ENOMEM (buf unchanged). */
int kvs__wal_rec_append(sq_buf_t *buf, uint64_t lsn, uint8_t type, const char *key,
                        size_t keylen, const uint8_t *payload, size_t len);

/* Decodes the record at p (avail bytes readable). 0 with *rec and *used set, or
 * SQ_ECORRUPT (short, oversized, bad checksum or bad fields). */
int kvs__wal_rec_decode(const uint8_t *p, size_t avail, kvs__wal_rec_t *rec, size_t *used);

/* Writes a header into out[KVS__HDR_SIZE]. */
void kvs__wal_hdr_encode(uint8_t *out, kvs__file_kind_t kind, const kvs__wal_hdr_t *h);

/* Checks a header of the given kind. 0 or SQ_ECORRUPT. */
int kvs__wal_hdr_decode(const uint8_t *p, size_t avail, kvs__file_kind_t kind,
                        kvs__wal_hdr_t *h);

/* File name of (kind, tid, seq) into out (>= 64 bytes). */
void kvs__wal_name(char *out, size_t cap, kvs__file_kind_t kind, uint32_t tid,
                   uint64_t seq);

/* Parses a directory entry name; true when it is a log file of `tid`. */
bool kvs__wal_name_parse(const char *name, uint32_t tid, kvs__file_kind_t *kind,
                         uint64_t *seq);

/* ---- wal_recover.c: directory listing and tail repair ---- */

typedef struct {
  uint64_t *segs; /* sorted ascending, owned */
  size_t nsegs;
  uint64_t snap_seq; /* newest snapshot, 0 when none */
} kvs__wal_dir_t;

/* Lists the files of tid in dir_fd. 0 or -errno/-ENOMEM. Free with _dir_free. */
int kvs__wal_dir_list(int dir_fd, uint32_t tid, kvs__wal_dir_t *d);
void kvs__wal_dir_free(kvs__wal_dir_t *d);

/* Drops the segments older than the snapshot from the listing and checks that the
 * remaining ones are contiguous and start where they must. 0 or SQ_ECORRUPT. */
int kvs__wal_dir_check(kvs__wal_dir_t *d);

typedef struct {
  uint64_t next_lsn;   /* an LSN above every record found in the scanned segments */
  uint64_t torn_tails;
  uint64_t torn_bytes;
} kvs__wal_tail_t;

/* Cuts the torn tail of the newest segment (and of the one before it when the newest
 * holds no record). A newest segment with a torn header is rewritten empty. */
int kvs__wal_tail_repair(int dir_fd, uint32_t tid, const kvs__wal_dir_t *d,
                         kvs__wal_tail_t *t);

/* Deletes the files of tid that a snapshot at `below` supersedes (segments and
 * snapshots with seq < below) and every snapshot temp file. Best effort: a file that
 * cannot be deleted now is deleted next time. */
void kvs__wal_dir_sweep(int dir_fd, uint32_t tid, uint64_t below);

/* ---- wal.c ---- */

/* Writes a fresh segment or snapshot header at offset 0 of fd and fdatasyncs. */
int kvs__wal_hdr_write(int fd, kvs__file_kind_t kind, const kvs__wal_hdr_t *h);

/* Writes all of buf at off (loops over short writes). 0 or -errno. */
int kvs__wal_pwrite_all(int fd, const uint8_t *buf, size_t len, uint64_t off);

/* fsync of the log directory (makes creates, renames and deletes durable). */
int kvs__wal_dir_sync(int dir_fd);

/* Moves appends to a new segment (seq + 1) without waiting for the disk: its header is
 * written, not synced. In FSYNC mode the first group written to it also syncs the
 * directory (and its fdatasync covers the header), so no record of it is durable
 * before the file is; kvs__wal_seg_sync() forces that earlier. The group in flight, if
 * any, finishes in the old file. 0 or -errno (sticky). */
int kvs__wal_rotate(kvs_wal_t *wal);

/* Makes the current segment's header and directory entry durable now if no group has
 * yet (a snapshot commit calls it before older segments may go). Blocks for the
 * syncs only in that rare case. 0 or -errno (sticky). */
int kvs__wal_seg_sync(kvs_wal_t *wal);

/* ---- backends (wal_uring.c, wal_pwrite.c) ---- */

typedef struct {
  int fd;
  const uint8_t *buf;
  size_t len;
  uint64_t off;
  bool sync; /* fdatasync after the write */
  int dir_fd; /* >= 0 (with sync): then fsync this directory too -- the first group of
               * a new segment makes the segment's directory entry durable with it */
} kvs__wal_io_t;

/* Runs io on the calling thread, blocking: the write, then (with io->sync) fdatasync
 * and, when io->dir_fd >= 0, the directory's fsync. 0 or -errno of the first failure.
 * The synchronous backends (wal_pwrite.c's helper, wal_inline.c) share it. */
int kvs__wal_io_run(const kvs__wal_io_t *io);

typedef struct kvs__wal_be kvs__wal_be_t;
struct kvs__wal_be {
  const char *name;
  /* Starts one write (never called while one is in flight). 0 or -errno. */
  int (*submit)(kvs__wal_be_t *be, const kvs__wal_io_t *io);
  /* 1 with *res (0 or -errno) when the write has finished, 0 while it runs. A short
   * write is retried inside the backend: finished means all bytes or an error. */
  int (*poll)(kvs__wal_be_t *be, int *res);
  /* Waits for an in-flight write, then frees. */
  void (*destroy)(kvs__wal_be_t *be);
};

/* Both signal `efd` (an eventfd owned by the caller) when a write finishes. uring
 * returns SQ_EUNSUPPORTED with a reason in why[] when the kernel lacks io_uring. */
int kvs__wal_uring_create(int efd, kvs__wal_be_t **out, char *why, size_t whylen);
int kvs__wal_pwrite_create(int efd, kvs__wal_be_t **out);
/* Writes and syncs inside submit() on the caller's thread (wal_inline.c). */
int kvs__wal_inline_create(int efd, kvs__wal_be_t **out);

struct kvs_wal {
  char *dir;
  uint32_t tid;
  kvs_durability_t durability;
  uint64_t segment_bytes;
  int dir_fd;
  int efd;                 /* eventfd the backend signals */
  kvs__wal_be_t *be;
  char why[160];           /* fallback reason, "" when none */
  int err;                 /* sticky error, 0 while healthy */
  int seg_fd;              /* current segment, opened O_RDWR */
  uint64_t seg_seq;
  uint64_t seg_off;        /* where the next group goes */
  sq_buf_t pending;        /* records not yet submitted */
  uint64_t pending_last;   /* LSN of the last record in pending */
  sq_buf_t flight;         /* the group in flight (buffers swap, memory is kept) */
  bool busy;
  bool seg_unsynced;       /* FSYNC: the current segment's header/dirent not yet synced */
  uint64_t flight_dirsync; /* seq whose dirent the group in flight syncs, 0 when none */
  int flight_fd;           /* file the group in flight writes to */
  bool flight_owns_fd;     /* flight_fd is an old segment to close when it lands */
  uint64_t flight_last;
  uint64_t next_lsn;
  uint64_t durable;
  kvs_wal_stats_t stats;
  kvs_snap_t *snap;        /* the running checkpoint, or NULL */
};

#endif
