/* test_kvs_snapshot: checkpoints whose I/O runs on the snapshot's writer thread
 * (kvs/wal_snapshot.c): the owner encodes, hands chunks over and polls the commit;
 * the writer writes, fsyncs, renames and deletes, and wakes the owner through the
 * log's event fd.
 *
 * Each test runs in a fresh mkdtemp directory that teardown removes. Values are 1 KiB
 * whose bytes all derive from (key, version) and are merged by max version, so
 * "recovered state == expected state" is checked byte for byte.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sq_error.h"
#include "wal.h"
#include "test_tmpdir.h"

#define NKEYS 4096
#define VLEN 1024
#define CHUNK (1u << 20)

typedef struct {
  char dir[64];
  uint32_t ver[NKEYS];  /* expected version per key (0 = absent) */
  uint32_t seen[NKEYS]; /* recovered version per key */
  int bad;              /* recovered values that were not what was written */
} fixture_t;

static int setup(void **state) {
  fixture_t *fx = calloc(1, sizeof(*fx));
  if (!fx) return -1;
  *state = fx;
  return test_tmpdir_make(fx->dir, "/tmp/squall-snap-XXXXXX");
}

static int teardown(void **state) {
  fixture_t *fx = *state;
  int rc = test_tmpdir_remove(fx->dir);
  free(fx);
  return rc;
}

static void key_of(int k, char key[16]) { snprintf(key, 16, "k%06d", k); }

/* The value of (key, version): version big-endian, then a pattern of both. */
static void value_of(int k, uint32_t ver, uint8_t v[VLEN]) {
  for (int i = 0; i < 4; i++) v[i] = (uint8_t)(ver >> (24 - 8 * i));
  for (int i = 4; i < VLEN; i++) v[i] = (uint8_t)(k * 31 + (int)ver * 7 + i);
}

static int replay(const char *key, size_t keylen, sq_lattice_type_t type,
                  const uint8_t *payload, size_t len, void *ctx) {
  fixture_t *fx = ctx;
  uint8_t want[VLEN];
  if (keylen != 7 || key[0] != 'k' || len != VLEN || type != SQ_LATTICE_LWW) {
    fx->bad++;
    return 0;
  }
  int k = atoi(key + 1);
  uint32_t ver = (uint32_t)payload[0] << 24 | (uint32_t)payload[1] << 16 |
                 (uint32_t)payload[2] << 8 | payload[3];
  value_of(k, ver, want);
  if (k < 0 || k >= NKEYS || memcmp(want, payload, VLEN) != 0) {
    fx->bad++;
    return 0;
  }
  if (ver > fx->seen[k]) fx->seen[k] = ver;
  return 0;
}

static kvs_wal_t *open_wal(fixture_t *fx) {
  kvs_wal_options_t o = {.dir = fx->dir, .durability = KVS_DURABILITY_FSYNC,
                         .backend = KVS_WAL_BACKEND_PWRITE, .segment_bytes = 4096};
  kvs_wal_t *wal = NULL;
  assert_int_equal(kvs_wal_open(&o, &wal), 0);
  return wal;
}

/* Writes version `ver` of every key to the log and makes it durable. */
static void put_all(fixture_t *fx, kvs_wal_t *wal, uint32_t ver) {
  char key[16];
  uint8_t v[VLEN];
  for (int k = 0; k < NKEYS; k++) {
    key_of(k, key);
    value_of(k, ver, v);
    assert_int_equal(kvs_wal_append(wal, key, 7, SQ_LATTICE_LWW, v, VLEN, NULL), 0);
    fx->ver[k] = ver;
  }
  assert_int_equal(kvs_wal_sync(wal), 0);
}

/* Adds every key's current value (4 MiB in all: several chunks for the writer). */
static void add_all(fixture_t *fx, kvs_snap_t *snap) {
  char key[16];
  uint8_t v[VLEN];
  for (int k = 0; k < NKEYS; k++) {
    key_of(k, key);
    value_of(k, fx->ver[k], v);
    assert_int_equal(kvs_snap_add(snap, key, 7, SQ_LATTICE_LWW, v, VLEN), 0);
  }
  assert_int_equal(kvs_snap_entries(snap), NKEYS);
}

/* Waits (at most 10 s) for the log's event fd and drains it. */
static void wait_event(kvs_wal_t *wal) {
  struct pollfd pfd = {.fd = kvs_wal_event_fd(wal), .events = POLLIN};
  uint64_t ticks;
  assert_int_equal(poll(&pfd, 1, 10000), 1);
  assert_int_equal(read(pfd.fd, &ticks, sizeof(ticks)), (ssize_t)sizeof(ticks));
}

static bool file_exists(fixture_t *fx, const char *name) {
  char path[256];
  struct stat st;
  snprintf(path, sizeof(path), "%s/%s", fx->dir, name);
  return stat(path, &st) == 0;
}

static void assert_recovers(fixture_t *fx, kvs_wal_recovery_t *st) {
  memset(fx->seen, 0, sizeof(fx->seen));
  fx->bad = 0;
  assert_int_equal(kvs_wal_recover(fx->dir, 0, replay, fx, st), 0);
  assert_int_equal(fx->bad, 0);
  assert_memory_equal(fx->seen, fx->ver, sizeof(fx->ver));
}

/* A log holding version 1 of every key and a checkpoint holding all of them, not yet
 * committed (4 MiB: several chunks for the writer). */
static kvs_snap_t *snapshot_of_everything(fixture_t *fx, kvs_wal_t **wal) {
  kvs_snap_t *snap = NULL;
  *wal = open_wal(fx);
  put_all(fx, *wal, 1);
  assert_int_equal(kvs_wal_checkpoint_begin(*wal, &snap), 0); /* segment 2 */
  add_all(fx, snap);
  return snap;
}

static void test_commit_poll_runs_on_the_writer_and_wakes_the_event_fd(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = NULL;
  kvs_snap_t *snap = snapshot_of_everything(fx, &wal);
  int res = -1;
  while (kvs_snap_commit_poll(snap, &res) == 0)
    wait_event(wal); /* the writer signals each chunk it finishes */
  assert_int_equal(res, 0);
  kvs_wal_stats_t ws;
  kvs_wal_stats(wal, &ws);
  assert_int_equal(ws.checkpoints, 1);
  assert_true(file_exists(fx, "snap-0-0000000000000002.snap"));
  assert_false(file_exists(fx, "snap-0-0000000000000002.tmp"));
  assert_false(file_exists(fx, "wal-0-0000000000000001.log"));
  put_all(fx, wal, 2); /* appends after the checkpoint land in segment 2 */
  assert_int_equal(kvs_wal_close(wal), 0);
  kvs_wal_recovery_t st;
  assert_recovers(fx, &st);
  assert_int_equal(st.snapshot_seq, 2);
  assert_int_equal(st.snapshot_entries, NKEYS);
}

static void test_backlog_drains_through_pump_as_the_writer_catches_up(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = NULL;
  kvs_snap_t *snap = snapshot_of_everything(fx, &wal); /* adds never wait: what the writer could not take yet stays */
  for (int i = 0; i < 1000 && kvs_snap_backlog(snap) >= CHUNK; i++) {
    assert_int_equal(kvs_snap_pump(snap), 0);
    if (kvs_snap_backlog(snap) >= CHUNK) wait_event(wal);
  }
  assert_true(kvs_snap_backlog(snap) < CHUNK);
  assert_int_equal(kvs_snap_commit(snap), 0);
  assert_int_equal(kvs_wal_close(wal), 0);
  kvs_wal_recovery_t st;
  assert_recovers(fx, &st);
  assert_int_equal(st.snapshot_entries, NKEYS);
}

static void test_a_committing_snapshot_refuses_adds_and_a_second_checkpoint(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = NULL;
  kvs_snap_t *other = NULL, *snap = snapshot_of_everything(fx, &wal);
  int res = -1;
  /* 4 MiB still to write and fsync: the commit cannot be over at its first step. */
  assert_int_equal(kvs_snap_commit_poll(snap, &res), 0);
  uint8_t v[VLEN] = {0};
  assert_int_equal(kvs_snap_add(snap, "k000000", 7, SQ_LATTICE_LWW, v, VLEN), -EBUSY);
  /* A second checkpoint would sweep this one's temp file: refused until it ends. */
  assert_false(kvs_wal_checkpoint_due(wal));
  assert_int_equal(kvs_wal_checkpoint_begin(wal, &other), -EBUSY);
  while (kvs_snap_commit_poll(snap, &res) == 0) wait_event(wal);
  assert_int_equal(res, 0);
  assert_int_equal(kvs_wal_close(wal), 0);
  kvs_wal_recovery_t st;
  assert_recovers(fx, &st);
}

static void test_close_while_committing_leaves_a_recoverable_log(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = NULL;
  kvs_snap_t *snap = snapshot_of_everything(fx, &wal);
  int res = -1;
  assert_int_equal(kvs_snap_commit_poll(snap, &res), 0);
  put_all(fx, wal, 3);
  /* close aborts the running checkpoint: it waits for the writer's step in hand. */
  assert_int_equal(kvs_wal_close(wal), 0);
  assert_false(file_exists(fx, "snap-0-0000000000000002.tmp"));
  kvs_wal_recovery_t st;
  assert_recovers(fx, &st);
}

static void test_abort_before_commit_deletes_the_temp_file_and_keeps_the_log(void **state) {
  fixture_t *fx = *state;
  kvs_wal_t *wal = NULL;
  kvs_snap_t *snap = snapshot_of_everything(fx, &wal);
  assert_true(file_exists(fx, "snap-0-0000000000000002.tmp"));
  kvs_snap_abort(snap);
  assert_false(file_exists(fx, "snap-0-0000000000000002.tmp"));
  assert_true(file_exists(fx, "wal-0-0000000000000001.log"));
  assert_int_equal(kvs_wal_close(wal), 0);
  kvs_wal_recovery_t st;
  assert_recovers(fx, &st);
  assert_int_equal(st.snapshot_seq, 0);
  assert_int_equal(st.segments, 2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_commit_poll_runs_on_the_writer_and_wakes_the_event_fd),
      T(test_backlog_drains_through_pump_as_the_writer_catches_up),
      T(test_a_committing_snapshot_refuses_adds_and_a_second_checkpoint),
      T(test_close_while_committing_leaves_a_recoverable_log),
      T(test_abort_before_commit_deletes_the_temp_file_and_keeps_the_log),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
