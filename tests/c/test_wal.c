/* test_wal: the durable log of squall-kvs (kvs/wal.h), on every backend.
 *
 * Each test runs in a fresh mkdtemp directory that teardown removes. Values in these
 * tests are 8-byte big-endian counters merged by max -- a lattice (idempotent,
 * commutative, associative), so "recovered state == expected state" is the real
 * correctness condition, independent of replay order and duplicates. Tests that need
 * io_uring skip when the kernel refuses it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sq_error.h"
#include "wal.h"
#include "test_tmpdir.h"

#define NKEYS 256

typedef struct {
  kvs_wal_backend_t backend;
  char dir[64];
} fixture_t;

typedef struct {
  uint64_t val[NKEYS];
  uint64_t calls;
} model_t;

static fixture_t fx_uring = {.backend = KVS_WAL_BACKEND_URING};
static fixture_t fx_pwrite = {.backend = KVS_WAL_BACKEND_PWRITE};
static fixture_t fx_inline = {.backend = KVS_WAL_BACKEND_INLINE};

static int setup(void **state) {
  fixture_t *fx = *state;
  return test_tmpdir_make(fx->dir, "/tmp/squall-wal-XXXXXX");
}

static int teardown(void **state) {
  fixture_t *fx = *state;
  return test_tmpdir_remove(fx->dir);
}

static void key_of(int i, char *key) { snprintf(key, 16, "key-%04d", i); }

static void enc(uint64_t v, uint8_t out[8]) {
  for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void model_merge(model_t *m, int k, uint64_t v) {
  if (v > m->val[k]) m->val[k] = v;
}

static int model_replay(const char *key, size_t keylen, sq_lattice_type_t type,
                        const uint8_t *payload, size_t len, void *ctx) {
  model_t *m = ctx;
  char buf[16] = {0};
  if (keylen != 8 || len != 8 || type != SQ_LATTICE_LWW) return SQ_EINVAL;
  memcpy(buf, key, 8);
  int k = atoi(buf + 4);
  if (k < 0 || k >= NKEYS) return SQ_EINVAL;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | payload[i];
  model_merge(m, k, v);
  m->calls++;
  return 0;
}

/* Opens the fixture's log; skips the test when io_uring was asked for and refused. */
static kvs_wal_t *open_wal(fixture_t *fx, kvs_durability_t dur, uint64_t seg_bytes) {
  kvs_wal_options_t o = {.dir = fx->dir, .tid = 0, .durability = dur,
                         .backend = fx->backend, .segment_bytes = seg_bytes};
  kvs_wal_t *wal = NULL;
  int rc = kvs_wal_open(&o, &wal);
  if (rc == SQ_EUNSUPPORTED && fx->backend == KVS_WAL_BACKEND_URING) skip();
  assert_int_equal(rc, 0);
  return wal;
}

static uint64_t put(kvs_wal_t *wal, model_t *expect, int k, uint64_t v) {
  char key[16];
  uint8_t p[8];
  uint64_t lsn = 0;
  key_of(k, key);
  enc(v, p);
  assert_int_equal(kvs_wal_append(wal, key, 8, SQ_LATTICE_LWW, p, 8, &lsn), 0);
  if (expect) model_merge(expect, k, v);
  return lsn;
}

static void assert_recovers_to(fixture_t *fx, const model_t *expect, kvs_wal_recovery_t *st) {
  model_t got = {0};
  assert_int_equal(kvs_wal_recover(fx->dir, 0, model_replay, &got, st), 0);
  assert_memory_equal(got.val, expect->val, sizeof(got.val));
}

static int path_of(fixture_t *fx, const char *name, char *out) {
  return snprintf(out, 256, "%s/%s", fx->dir, name);
}

static bool file_exists(fixture_t *fx, const char *name) {
  char path[256];
  path_of(fx, name, path);
  return access(path, F_OK) == 0;
}

static void test_append_flush_reap_round_trip_recovers_every_record(void **state) {
  fixture_t *fx = *state;
  model_t expect = {0};
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  for (int i = 0; i < 100; i++) put(wal, &expect, i % NKEYS, (uint64_t)i + 1);
  assert_int_equal(kvs_wal_last_lsn(wal), 100);
  assert_int_equal(kvs_wal_sync(wal), 0);
  assert_int_equal(kvs_wal_durable_lsn(wal), 100);
  assert_int_equal(kvs_wal_close(wal), 0);
  kvs_wal_recovery_t st;
  assert_recovers_to(fx, &expect, &st);
  assert_int_equal(st.records, 100);
  assert_int_equal(st.segments, 1);
  assert_int_equal(st.last_lsn, 100);
  assert_int_equal(st.torn_tails, 0);
}

static void test_backend_is_the_one_asked_for(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  const char *want = fx->backend == KVS_WAL_BACKEND_URING    ? "io_uring"
                     : fx->backend == KVS_WAL_BACKEND_INLINE ? "inline"
                                                             : "pwrite";
  assert_string_equal(kvs_wal_backend_name(wal), want);
  assert_null(kvs_wal_fallback_reason(wal));
  assert_int_equal(kvs_wal_close(wal), 0);
}

static void test_group_commit_covers_records_appended_during_a_flight(void **state) {
  fixture_t *fx = *state;
  model_t expect = {0};
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  put(wal, &expect, 0, 1);
  assert_int_equal(kvs_wal_flush(wal), 0);
  assert_true(kvs_wal_busy(wal));
  for (int i = 1; i < 1000; i++) {
    put(wal, &expect, i % NKEYS, (uint64_t)i);
    assert_int_equal(kvs_wal_flush(wal), 0); /* no-op: one group in flight at a time */
  }
  assert_int_equal(kvs_wal_sync(wal), 0);
  kvs_wal_stats_t s;
  kvs_wal_stats(wal, &s);
  assert_int_equal(s.records, 1000);
  assert_int_equal(s.groups, 2);
  assert_int_equal(s.fsyncs, 2);
  assert_int_equal(kvs_wal_close(wal), 0);
  kvs_wal_recovery_t st;
  assert_recovers_to(fx, &expect, &st);
  assert_int_equal(st.records, 1000);
}

static void test_durable_lsn_advances_only_after_completion(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  uint64_t durable = 99, lsn = put(wal, NULL, 1, 5);
  assert_int_equal(kvs_wal_durable_lsn(wal), 0);
  assert_int_equal(kvs_wal_reap(wal, &durable), 0); /* nothing submitted yet */
  assert_int_equal(durable, 0);
  assert_int_equal(kvs_wal_flush(wal), 0);
  assert_int_equal(kvs_wal_durable_lsn(wal), 0); /* submitted is not durable */
  int rounds = 0;
  while (durable < lsn) {
    struct pollfd pfd = {.fd = kvs_wal_event_fd(wal), .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 10000), 1); /* the event fd fires on completion */
    assert_int_equal(kvs_wal_reap(wal, &durable), 0);
    assert_true(durable == 0 || durable == lsn);
    assert_true(++rounds < 100);
  }
  assert_false(kvs_wal_busy(wal));
  assert_int_equal(kvs_wal_close(wal), 0);
}

static void test_durability_log_is_durable_at_flush_without_fsync(void **state) {
  fixture_t *fx = *state;
  model_t expect = {0};
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_LOG, 0);
  uint64_t lsn = 0, durable = 0;
  for (int i = 0; i < 50; i++) lsn = put(wal, &expect, i, 7);
  assert_int_equal(kvs_wal_flush(wal), 0);
  assert_false(kvs_wal_busy(wal));
  assert_int_equal(kvs_wal_reap(wal, &durable), 0);
  assert_int_equal(durable, lsn);
  kvs_wal_stats_t s;
  kvs_wal_stats(wal, &s);
  assert_int_equal(s.fsyncs, 0);
  assert_int_equal(s.groups, 1);
  assert_int_equal(kvs_wal_close(wal), 0);
  assert_recovers_to(fx, &expect, NULL);
}

static void test_lsns_keep_growing_across_reopen(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  for (int i = 0; i < 10; i++) put(wal, NULL, i, 1);
  assert_int_equal(kvs_wal_close(wal), 0);
  wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  assert_int_equal(kvs_wal_durable_lsn(wal), 10);
  assert_int_equal(put(wal, NULL, 3, 2), 11);
  assert_int_equal(kvs_wal_close(wal), 0);
}

static void test_bad_arguments_are_refused(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = NULL;
  kvs_wal_options_t o = {.dir = fx->dir, .durability = 7, .backend = fx->backend};
  assert_int_equal(kvs_wal_open(&o, &wal), SQ_EINVAL);
  assert_null(wal);
  o.durability = KVS_DURABILITY_NONE; /* memory only has no log to open */
  assert_int_equal(kvs_wal_open(&o, &wal), SQ_EINVAL);
  assert_null(wal);
  wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  assert_int_equal(kvs_wal_append(wal, "", 0, SQ_LATTICE_LWW, NULL, 0, NULL), SQ_EEMPTYKEY);
  assert_int_equal(kvs_wal_append(wal, "k", 1, SQ_LATTICE_NONE, NULL, 0, NULL), SQ_EUNKNOWNTYPE);
  assert_int_equal(kvs_wal_append(wal, "k", 1, (sq_lattice_type_t)99, NULL, 0, NULL),
                   SQ_EUNKNOWNTYPE);
  assert_int_equal(kvs_wal_last_lsn(wal), 0);
  assert_int_equal(kvs_wal_close(wal), 0);
  assert_int_equal(kvs_wal_recover(fx->dir, 0, NULL, NULL, NULL), SQ_EINVAL);
}

/* Writes n records (keys 0..n-1, value i+1) and returns the segment's size. */
static off_t write_records(fixture_t *fx, model_t *expect, int n) {
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  for (int i = 0; i < n; i++) put(wal, expect, i, (uint64_t)i + 1);
  assert_int_equal(kvs_wal_close(wal), 0);
  char path[256];
  struct stat st;
  path_of(fx, "wal-0-0000000000000001.log", path);
  assert_int_equal(stat(path, &st), 0);
  return st.st_size;
}

/* A record here is 24 bytes of framing + 8 key + 8 payload. */
#define REC_BYTES 40

static void assert_torn_tail_is_cut_and_log_stays_usable(fixture_t *fx, model_t *expect,
                                                         uint64_t cut) {
  kvs_wal_recovery_t st;
  assert_recovers_to(fx, expect, &st);
  assert_int_equal(st.records, 9);
  assert_int_equal(st.torn_tails, 1);
  assert_int_equal(st.torn_bytes, cut);
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  kvs_wal_stats_t s;
  kvs_wal_stats(wal, &s);
  assert_int_equal(s.torn_tails, 0); /* recovery already cut it */
  for (int i = 0; i < 5; i++) put(wal, expect, 100 + i, 77);
  assert_int_equal(kvs_wal_close(wal), 0);
  assert_recovers_to(fx, expect, &st);
  assert_int_equal(st.records, 14);
  assert_int_equal(st.torn_tails, 0);
}

static void test_torn_tail_half_record_is_cut_and_later_appends_recover(void **state) {
  fixture_t *fx = *state;
  model_t expect = {0}, nine = {0};
  off_t size = write_records(fx, &expect, 10);
  for (int i = 0; i < 9; i++) model_merge(&nine, i, (uint64_t)i + 1);
  char path[256];
  path_of(fx, "wal-0-0000000000000001.log", path);
  assert_int_equal(truncate(path, size - REC_BYTES / 2), 0);
  assert_torn_tail_is_cut_and_log_stays_usable(fx, &nine, REC_BYTES / 2);
}

static void test_torn_tail_bad_checksum_is_cut_and_later_appends_recover(void **state) {
  fixture_t *fx = *state;
  model_t expect = {0}, nine = {0};
  off_t size = write_records(fx, &expect, 10);
  for (int i = 0; i < 9; i++) model_merge(&nine, i, (uint64_t)i + 1);
  char path[256];
  path_of(fx, "wal-0-0000000000000001.log", path);
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  uint8_t byte;
  assert_int_equal(pread(fd, &byte, 1, size - 1), 1);
  byte ^= 0x40;
  assert_int_equal(pwrite(fd, &byte, 1, size - 1), 1);
  close(fd);
  assert_torn_tail_is_cut_and_log_stays_usable(fx, &nine, REC_BYTES);
}

static void test_open_without_recover_cuts_the_torn_tail_itself(void **state) {
  fixture_t *fx = *state;
  model_t expect = {0}, nine = {0};
  off_t size = write_records(fx, &expect, 10);
  for (int i = 0; i < 9; i++) model_merge(&nine, i, (uint64_t)i + 1);
  char path[256];
  path_of(fx, "wal-0-0000000000000001.log", path);
  assert_int_equal(truncate(path, size - 3), 0);
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  kvs_wal_stats_t s;
  kvs_wal_stats(wal, &s);
  assert_int_equal(s.torn_tails, 1);
  assert_int_equal(s.torn_bytes, REC_BYTES - 3);
  put(wal, &nine, 200, 3);
  assert_int_equal(kvs_wal_close(wal), 0);
  kvs_wal_recovery_t st;
  assert_recovers_to(fx, &nine, &st);
  assert_int_equal(st.torn_tails, 0);
  assert_int_equal(st.records, 10);
}

static void test_bad_record_in_an_older_segment_is_corruption(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  for (int i = 0; i < 10; i++) put(wal, NULL, i, 1);
  assert_int_equal(kvs_wal_sync(wal), 0);
  kvs_snap_t *snap = NULL;
  assert_int_equal(kvs_wal_checkpoint_begin(wal, &snap), 0); /* rotates to segment 2 */
  kvs_snap_abort(snap);
  for (int i = 0; i < 10; i++) put(wal, NULL, i, 2);
  assert_int_equal(kvs_wal_close(wal), 0);
  assert_true(file_exists(fx, "wal-0-0000000000000002.log"));
  char path[256];
  path_of(fx, "wal-0-0000000000000001.log", path);
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  uint8_t byte = 0xEE;
  assert_int_equal(pwrite(fd, &byte, 1, 40 + 3 * REC_BYTES + 30), 1); /* 4th record */
  close(fd);
  model_t got = {0};
  assert_int_equal(kvs_wal_recover(fx->dir, 0, model_replay, &got, NULL), SQ_ECORRUPT);
  kvs_wal_options_t o = {.dir = fx->dir, .durability = KVS_DURABILITY_LOG,
                         .backend = fx->backend};
  assert_int_equal(kvs_wal_open(&o, &wal), 0); /* open repairs only the tail */
  assert_int_equal(kvs_wal_close(wal), 0);
  assert_int_equal(kvs_wal_recover(fx->dir, 0, model_replay, &got, NULL), SQ_ECORRUPT);
}

static void test_missing_segment_is_corruption(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  kvs_snap_t *snap = NULL;
  for (int k = 0; k < 2; k++) {
    put(wal, NULL, k, 1);
    assert_int_equal(kvs_wal_checkpoint_begin(wal, &snap), 0);
    kvs_snap_abort(snap);
  }
  assert_int_equal(kvs_wal_close(wal), 0);
  char path[256];
  path_of(fx, "wal-0-0000000000000002.log", path);
  assert_int_equal(unlink(path), 0);
  model_t got = {0};
  assert_int_equal(kvs_wal_recover(fx->dir, 0, model_replay, &got, NULL), SQ_ECORRUPT);
}

/* Adds the model's current values to snap in slices, appending newer writes between
 * slices the way a serving worker would. */
static void checkpoint_while_writing(kvs_wal_t *wal, model_t *expect, uint64_t base) {
  kvs_snap_t *snap = NULL;
  uint64_t durable;
  assert_int_equal(kvs_wal_checkpoint_begin(wal, &snap), 0);
  assert_int_equal(kvs_wal_checkpoint_begin(wal, &snap), -EBUSY);
  for (int k = 0; k < NKEYS; k++) {
    char key[16];
    uint8_t p[8];
    key_of(k, key);
    enc(expect->val[k], p);
    if (expect->val[k]) assert_int_equal(kvs_snap_add(snap, key, 8, SQ_LATTICE_LWW, p, 8), 0);
    if (k % 16 == 0) {
      for (int j = 0; j < 8; j++) put(wal, expect, (k * 7 + j * 31) % NKEYS, base + (uint64_t)k + j);
      assert_int_equal(kvs_wal_flush(wal), 0);
      assert_int_equal(kvs_wal_reap(wal, &durable), 0);
    }
  }
  assert_int_equal(kvs_snap_commit(snap), 0);
}

static void test_checkpoint_with_concurrent_appends_recovers_expected_state(void **state) {
  fixture_t *fx = *state;
  model_t expect = {0};
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 4096);
  for (int i = 0; i < 300; i++) put(wal, &expect, (i * 13) % NKEYS, (uint64_t)i + 1);
  assert_int_equal(kvs_wal_flush(wal), 0); /* leave a group in flight across the rotation */
  assert_true(kvs_wal_checkpoint_due(wal) || kvs_wal_busy(wal));
  checkpoint_while_writing(wal, &expect, 1000);
  assert_false(file_exists(fx, "wal-0-0000000000000001.log"));
  assert_true(file_exists(fx, "snap-0-0000000000000002.snap"));
  for (int i = 0; i < 40; i++) put(wal, &expect, i, 5000 + (uint64_t)i);
  checkpoint_while_writing(wal, &expect, 6000); /* the second one replaces the first */
  assert_false(file_exists(fx, "snap-0-0000000000000002.snap"));
  assert_false(file_exists(fx, "wal-0-0000000000000002.log"));
  assert_true(file_exists(fx, "snap-0-0000000000000003.snap"));
  for (int i = 0; i < 10; i++) put(wal, &expect, 200 + i, 9000);
  kvs_wal_stats_t s;
  kvs_wal_stats(wal, &s);
  assert_int_equal(s.checkpoints, 2);
  assert_int_equal(kvs_wal_close(wal), 0);
  kvs_wal_recovery_t st;
  assert_recovers_to(fx, &expect, &st);
  assert_int_equal(st.snapshot_seq, 3);
  assert_true(st.snapshot_entries > 0);
  assert_int_equal(st.segments, 1);
  /* Reopen after a checkpoint: appends continue in segment 3 and recover too. */
  wal = open_wal(fx, KVS_DURABILITY_FSYNC, 4096);
  put(wal, &expect, 255, 123456);
  assert_int_equal(kvs_wal_close(wal), 0);
  assert_recovers_to(fx, &expect, NULL);
}

static void test_crash_in_the_middle_of_a_checkpoint_is_ignored_safely(void **state) {
  fixture_t *fx = *state;
  model_t expect = {0};
  for (int i = 0; i < 2000; i++) model_merge(&expect, i % NKEYS, (uint64_t)i + 1);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* The child writes, starts a checkpoint, spills > 1 MiB of snapshot, and dies. */
    kvs_wal_options_t o = {.dir = fx->dir, .durability = KVS_DURABILITY_FSYNC,
                           .backend = fx->backend};
    kvs_wal_t *wal = NULL;
    kvs_snap_t *snap = NULL;
    if (kvs_wal_open(&o, &wal) != 0) _exit(3);
    for (int i = 0; i < 2000; i++) put(wal, NULL, i % NKEYS, (uint64_t)i + 1);
    if (kvs_wal_sync(wal) != 0 || kvs_wal_checkpoint_begin(wal, &snap) != 0) _exit(4);
    uint8_t p[8] = {0};
    for (int i = 0; i < 40000; i++)
      if (kvs_snap_add(snap, "key-0000", 8, SQ_LATTICE_LWW, p, 8) != 0) _exit(5);
    _exit(0);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3 && fx->backend == KVS_WAL_BACKEND_URING)
    skip();
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_true(file_exists(fx, "snap-0-0000000000000002.tmp"));
  kvs_wal_recovery_t st;
  assert_recovers_to(fx, &expect, &st);
  assert_int_equal(st.snapshot_seq, 0);
  assert_int_equal(st.segments, 2);
  kvs_wal_t *wal = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  assert_false(file_exists(fx, "snap-0-0000000000000002.tmp"));
  put(wal, &expect, 1, 99999);
  assert_int_equal(kvs_wal_close(wal), 0);
  assert_recovers_to(fx, &expect, NULL);
}

static void test_logs_of_different_threads_do_not_mix(void **state) {
  fixture_t *fx = *state;
  model_t expect = {0};
  kvs_wal_t *a = open_wal(fx, KVS_DURABILITY_FSYNC, 0);
  kvs_wal_options_t o = {.dir = fx->dir, .tid = 1, .durability = KVS_DURABILITY_FSYNC,
                         .backend = fx->backend};
  kvs_wal_t *b = NULL;
  assert_int_equal(kvs_wal_open(&o, &b), 0);
  put(a, &expect, 1, 10);
  put(b, NULL, 2, 20);
  assert_int_equal(kvs_wal_close(a), 0);
  assert_int_equal(kvs_wal_close(b), 0);
  kvs_wal_recovery_t st;
  assert_recovers_to(fx, &expect, &st);
  assert_int_equal(st.records, 1);
}

static void test_recover_of_a_missing_directory_is_an_empty_log(void **state) {
  fixture_t *fx = *state;
  char path[256];
  model_t got = {0};
  kvs_wal_recovery_t st;
  path_of(fx, "nope", path);
  assert_int_equal(kvs_wal_recover(path, 0, model_replay, &got, &st), 0);
  assert_int_equal(got.calls, 0);
  assert_int_equal(st.segments, 0);
}

#define EACH(fn)                                                              \
  cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &fx_uring),   \
      cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &fx_pwrite), \
      cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &fx_inline)

int main(void) {
  const struct CMUnitTest tests[] = {
      EACH(test_append_flush_reap_round_trip_recovers_every_record),
      EACH(test_backend_is_the_one_asked_for),
      EACH(test_group_commit_covers_records_appended_during_a_flight),
      EACH(test_durable_lsn_advances_only_after_completion),
      EACH(test_durability_log_is_durable_at_flush_without_fsync),
      EACH(test_lsns_keep_growing_across_reopen),
      EACH(test_bad_arguments_are_refused),
      EACH(test_torn_tail_half_record_is_cut_and_later_appends_recover),
      EACH(test_torn_tail_bad_checksum_is_cut_and_later_appends_recover),
      EACH(test_open_without_recover_cuts_the_torn_tail_itself),
      EACH(test_bad_record_in_an_older_segment_is_corruption),
      EACH(test_missing_segment_is_corruption),
      EACH(test_checkpoint_with_concurrent_appends_recovers_expected_state),
      EACH(test_crash_in_the_middle_of_a_checkpoint_is_ignored_safely),
      EACH(test_logs_of_different_threads_do_not_mix),
      EACH(test_recover_of_a_missing_directory_is_an_empty_log),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
