/* kvs_wal: the durable log of one squall-kvs worker thread (group commit, snapshots).
 *
 * Every worker thread owns one log: a directory shared by all workers of a node, with
 * files named by thread id so that they never meet:
 *
 *     wal-<tid>-<seq:016x>.log    log segments, seq = 1, 2, 3, ... (contiguous)
 *     snap-<tid>-<seq:016x>.snap  a complete snapshot: replay segments >= seq after it
 *     snap-<tid>-<seq:016x>.tmp   a snapshot being written (ignored, deleted at open)
 *
 * Write path (group commit). kvs_wal_append() encodes a record into the PENDING group
 * (a reusable buffer: no allocation per record once warm). At most one group is IN
 * FLIGHT: kvs_wal_flush() submits the pending group when nothing is in flight; when
 * the write (and, with KVS_DURABILITY_FSYNC, the fdatasync after it) completes, the
 * event fd becomes readable and kvs_wal_reap() raises the durable LSN and submits the
 * next group. Under load one fsync therefore covers every record that arrived while
 * the previous one ran.
 *
 *     append ──> [pending] ──flush/reap──> [in flight] ──completion──> durable_lsn
 *
 * LSNs are per log, start at 1, grow by one per record and keep growing across
 * restarts. A record is durable when its LSN <= kvs_wal_durable_lsn().
 *
 * Durability modes. FSYNC: a group is durable once write + fdatasync completed.
 * LOG: kvs_wal_flush() writes the pending group inline with pwrite (a copy into the
 * page cache) and the records are "durable" at once: they survive a killed process,
 * not a power cut. No fsync is ever issued in LOG mode. (KVS_DURABILITY_NONE, memory
 * only, has no log at all: kvs_wal_open() refuses it.)
 *
 * Snapshots (fuzzy, because every value is a lattice and replay is idempotent and
 * order-free): kvs_wal_checkpoint_begin() rotates to a new segment S and opens a
 * temporary snapshot file; the owner adds every key's CURRENT value with
 * kvs_snap_add() a slice at a time while appends continue into S; the commit
 * (kvs_snap_commit_poll(), run by the snapshot's writer thread) fsyncs the snapshot,
 * renames it to snap-<tid>-S.snap, fsyncs the directory and deletes the segments < S
 * and older snapshots. Recovery = newest snapshot + segments
 * >= its seq, in order.
 *
 * Torn tails. A crash can leave the last group half written. Recovery (and open)
 * cut the newest segment after its last whole record (also the segment before it when
 * the newest one holds no record yet: a crash during the write that was in flight at
 * a rotation). A bad record anywhere else is SQ_ECORRUPT, never skipped.
 *
 * Threads: a kvs_wal_t and its kvs_snap_t belong to the thread that opened them; no
 * function here may be called concurrently on the same log. The pwrite backend runs
 * one helper thread per log internally (see wal_pwrite.c), and a snapshot one writer
 * thread for its file I/O, fsyncs and deletes (see wal_snapshot.c), so the owner
 * never blocks on a checkpoint. kvs_wal_recover() touches only the files of its tid.
 *
 * Errors are sticky: once a write or fsync fails, every later call except close
 * returns that error (the node must stop acknowledging writes, like PostgreSQL does on
 * fsync failure).
 */
#ifndef KVS_WAL_H
#define KVS_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvs_config.h"
#include "lattice.h"

typedef enum {
  KVS_WAL_BACKEND_AUTO = 0,   /* io_uring when the kernel has it, else pwrite */
  KVS_WAL_BACKEND_URING = 1,  /* io_uring or fail with the probe's error */
  KVS_WAL_BACKEND_PWRITE = 2, /* pwrite + fdatasync on a helper thread */
  KVS_WAL_BACKEND_INLINE = 3, /* write + sync on the owner's thread, like Redis */
} kvs_wal_backend_t;

#define KVS_WAL_DEFAULT_SEGMENT_BYTES (64u << 20)
/* Largest key and largest record the log writes or accepts when reading. */
#define KVS_WAL_MAX_KEY (1u << 16)
#define KVS_WAL_MAX_RECORD (1u << 30)

typedef struct {
  const char *dir;               /* created (one level) if missing; copied */
  uint32_t tid;                  /* worker thread id: names the files */
  kvs_durability_t durability;   /* KVS_DURABILITY_LOG or KVS_DURABILITY_FSYNC */
  kvs_wal_backend_t backend;
  uint64_t segment_bytes;        /* checkpoint threshold; 0 = default (64 MiB) */
} kvs_wal_options_t;

typedef struct {
  uint64_t records;     /* records appended since open */
  uint64_t bytes;       /* bytes written to segments since open (framing included) */
  uint64_t groups;      /* groups written (= fsyncs in FSYNC mode) */
  uint64_t fsyncs;      /* fdatasync calls for groups */
  uint64_t torn_tails;  /* torn tails cut at open */
  uint64_t torn_bytes;  /* bytes cut at open */
  uint64_t checkpoints; /* snapshots committed */
} kvs_wal_stats_t;

typedef struct {
  uint64_t snapshot_seq;     /* seq of the snapshot loaded, 0 when none */
  uint64_t snapshot_entries; /* entries replayed from it */
  uint64_t segments;         /* segments replayed */
  uint64_t records;          /* records replayed from segments */
  uint64_t last_lsn;         /* highest LSN seen in the segments (0 when none) */
  uint64_t torn_tails;       /* torn tails cut (0, 1, rarely 2) */
  uint64_t torn_bytes;       /* bytes cut off */
} kvs_wal_recovery_t;

typedef struct kvs_wal kvs_wal_t;
typedef struct kvs_snap kvs_snap_t;

/* Receives one recovered value. `key` and `payload` are valid only during the call.
 * A nonzero return stops recovery, and kvs_wal_recover() returns it. */
typedef int (*kvs_wal_replay_fn)(const char *key, size_t keylen, sq_lattice_type_t type,
                                 const uint8_t *payload, size_t len, void *ctx);

/* Replays the log of `tid` in `dir`: the newest snapshot, then every segment at or
 * after it, in order, calling `fn` for each value (records of older segments that a
 * snapshot superseded are not replayed). Cuts a torn tail (see above) so that the log
 * ends at its last whole record, and reports it in *stats (may be NULL). A missing
 * directory or no files is an empty log (returns 0). Errors: SQ_ECORRUPT (damaged
 * snapshot, bad record before the tail, missing segment), -errno, or fn's result. */
int kvs_wal_recover(const char *dir, uint32_t tid, kvs_wal_replay_fn fn, void *ctx,
                    kvs_wal_recovery_t *stats);

/* Opens the log for appending: cuts a torn tail if kvs_wal_recover() has not already,
 * continues the newest segment (or creates segment 1), deletes stale snapshot temp
 * files and starts the backend. On success *out owns everything. Errors: SQ_EINVAL
 * (bad options), SQ_ECORRUPT, SQ_EUNSUPPORTED (URING asked for, kernel lacks it),
 * -errno. */
int kvs_wal_open(const kvs_wal_options_t *opts, kvs_wal_t **out);

/* Writes everything appended (waiting for the group in flight), aborts an unfinished
 * checkpoint, and frees the log. Returns 0, or the error that kept records from the
 * disk (the log is freed either way). Accepts NULL. */
int kvs_wal_close(kvs_wal_t *wal);

/* Adds one record to the pending group and sets *lsn (may be NULL) to its LSN. Not
 * durable yet: call kvs_wal_flush() after a batch. Errors: SQ_EEMPTYKEY,
 * SQ_ETOOBIG (key > KVS_WAL_MAX_KEY or record > KVS_WAL_MAX_RECORD),
 * SQ_EUNKNOWNTYPE, -ENOMEM (nothing appended), or the sticky error. */
int kvs_wal_append(kvs_wal_t *wal, const char *key, size_t keylen, sq_lattice_type_t type,
                   const uint8_t *payload, size_t len, uint64_t *lsn);

/* Submits the pending group if nothing is in flight (else it goes when the flight
 * lands, from kvs_wal_reap()). In LOG mode writes it inline. 0 or the sticky error. */
int kvs_wal_flush(kvs_wal_t *wal);

/* A non-blocking eventfd that becomes readable when a submitted group completes: put
 * it in the owner's poll set (ZMQ_POLLIN) and call kvs_wal_reap() when it fires. Owned
 * by the log. */
int kvs_wal_event_fd(const kvs_wal_t *wal);

/* Collects a completed group (if any), raises the durable LSN, submits the next group
 * when one is pending, and sets *durable_lsn (may be NULL). Never blocks. 0 or the
 * sticky error (write or fsync failure). */
int kvs_wal_reap(kvs_wal_t *wal, uint64_t *durable_lsn);

/* Blocks until every record appended so far is durable (flushing as needed). For
 * shutdown and tests; the serving loop uses flush/event fd/reap. 0 or sticky error. */
int kvs_wal_sync(kvs_wal_t *wal);

/* LSN of the last record appended (durable or not) and the highest durable LSN. */
uint64_t kvs_wal_last_lsn(const kvs_wal_t *wal);
uint64_t kvs_wal_durable_lsn(const kvs_wal_t *wal);

/* True when a group is in flight (submitted, not yet reaped). */
bool kvs_wal_busy(const kvs_wal_t *wal);

/* "io_uring" or "pwrite". */
const char *kvs_wal_backend_name(const kvs_wal_t *wal);

/* Why AUTO fell back to pwrite ("io_uring_queue_init: Operation not permitted"), or
 * NULL when it did not. Owned by the log. */
const char *kvs_wal_fallback_reason(const kvs_wal_t *wal);

void kvs_wal_stats(const kvs_wal_t *wal, kvs_wal_stats_t *stats);

/* True when the current segment has grown past segment_bytes and no checkpoint is
 * running: the owner should start one. */
bool kvs_wal_checkpoint_due(const kvs_wal_t *wal);

/* Starts a checkpoint: rotates to a new segment (records appended from now on go
 * there) and opens the snapshot temp file. *snap belongs to the log (freed by commit,
 * abort or close). Errors: -EBUSY (one is running), -errno, sticky error. */
int kvs_wal_checkpoint_begin(kvs_wal_t *wal, kvs_snap_t **snap);

/* Adds one key's current value to the snapshot. Never blocks: the entry is encoded
 * into the owner's buffer, and a full 1 MiB chunk goes to the snapshot's writer
 * thread when it is idle (it writes the chunk and starts its writeback at once, so
 * the commit's fsync is short). Errors as kvs_wal_append(), -EBUSY after the commit
 * began, or the writer's I/O error (sticky: the snapshot is broken, abort it). */
int kvs_snap_add(kvs_snap_t *snap, const char *key, size_t keylen, sq_lattice_type_t type,
                 const uint8_t *payload, size_t len);

/* Bytes encoded but not yet handed to the writer. When the writer falls behind this
 * grows past 1 MiB; the owner should stop adding until kvs_snap_pump() brings it
 * down. */
size_t kvs_snap_backlog(const kvs_snap_t *snap);

/* Hands a full chunk to the writer if it is idle. Never blocks. 0 or the sticky
 * error. The writer writes 1 to the log's event fd each time it finishes a chunk, so
 * an owner polling kvs_wal_event_fd() wakes to hand over the next one. */
int kvs_snap_pump(kvs_snap_t *snap);

/* Commits without blocking, one step per call: the first call ends the snapshot (no
 * more adds) and queues its trailer; the writer then writes the rest, fsyncs it,
 * renames it into place, fsyncs the directory and deletes the superseded segments
 * and snapshots. Returns 0 while that runs (call again when the event fd fires), 1
 * when it is over: *res is 0 or -errno, and snap is freed (do not use it again);
 * on failure the old snapshot and segments stay valid. */
int kvs_snap_commit_poll(kvs_snap_t *snap, int *res);

/* kvs_snap_commit_poll() until it is over, waiting for the writer: blocks for the
 * fsyncs. For tests and tools. Frees snap whatever the result. 0 or -errno. */
int kvs_snap_commit(kvs_snap_t *snap);

/* Drops an unfinished snapshot (its temp file is deleted). Accepts NULL. */
void kvs_snap_abort(kvs_snap_t *snap);

/* Entries added so far. */
uint64_t kvs_snap_entries(const kvs_snap_t *snap);

/* CRC32C (Castagnoli) of buf, continuing from crc (start with 0). SSE4.2 when the CPU
 * has it, a table otherwise; both give the same result. */
uint32_t kvs_wal_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
