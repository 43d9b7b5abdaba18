/* test_cache_store: the node cache's writer and readers together -- inline and
 * segment values, cross-process visibility, views that outlive eviction and
 * replacement, LRU under a byte budget, MDB_MAP_FULL relief, a reader killed by
 * SIGKILL mid-read, orphan segment collection, restart validation. Every test works
 * in its own directory under /dev/shm (or /tmp) and removes it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache_reader.h"
#include "sq_error.h"
#include "cache_store.h"

typedef struct {
  char dir[256];
} fixture_t;

static void rm_tree(const char *dir) {
  char path[600];
  snprintf(path, sizeof path, "%s/segments", dir);
  DIR *d = opendir(path);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    char p[900];
    snprintf(p, sizeof p, "%s/%s", path, de->d_name);
    if (de->d_name[0] != '.') unlink(p);
  }
  if (d) closedir(d);
  rmdir(path);
  static const char *const files[] = {"data.mdb", "lock.mdb", "writer.lock"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    unlink(path);
  }
  rmdir(dir);
}

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(f->dir, sizeof f->dir, "%s/squall-test-cache-XXXXXX", base);
  if (!mkdtemp(f->dir)) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  rm_tree(f->dir);
  free(f);
  return 0;
}

static cache_store_t *open_store(fixture_t *f, uint64_t budget, size_t map_size) {
  cache_store_config_t cfg = {.dir = f->dir, .budget_bytes = budget, .map_size = map_size};
  cache_store_t *s = NULL;
  assert_int_equal(cache_store_open(&cfg, &s), 0);
  return s;
}

/* Puts a value whose single out-of-band buffer is `n` bytes of `fill`. */
static void put_value(cache_store_t *s, const char *key, size_t n, uint8_t fill) {
  uint8_t *buf = malloc(n ? n : 1);
  memset(buf, fill, n);
  uint64_t ts = fill;
  cache_span_t span = {buf, n};
  cache_object_t obj = {SQ_LATTICE_LWW, &ts, sizeof ts, "\x80\x05pk", 4, &span, 1};
  assert_int_equal(cache_store_put_object(s, key, strlen(key), &obj), 0);
  free(buf);
}

/* Checks a view holds the value put_value(.., n, fill) made. */
static void check_view(const cache_view_t *v, size_t n, uint8_t fill) {
  uint64_t ts;
  assert_int_equal(v->lattice_type, SQ_LATTICE_LWW);
  assert_int_equal(v->meta.len, 8);
  memcpy(&ts, v->meta.data, 8);
  assert_int_equal(ts, fill);
  assert_int_equal(v->pickle.len, 4);
  assert_int_equal(v->nbuffers, 1);
  assert_int_equal(v->buffers[0].len, n);
  assert_int_equal((uintptr_t)v->buffers[0].data % 64, 0);
  for (size_t i = 0; i < n; i += 4093) assert_int_equal(v->buffers[0].data[i], fill);
  if (n) assert_int_equal(v->buffers[0].data[n - 1], fill);
}

static size_t count_segments(const fixture_t *f) {
  char path[600];
  size_t n = 0;
  snprintf(path, sizeof path, "%s/segments", f->dir);
  DIR *d = opendir(path);
  struct dirent *de;
  while (d && (de = readdir(d))) n += de->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

static void test_small_value_is_inline_and_large_value_is_zero_copy_segment(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 64 << 20, 0);
  cache_reader_t *r = NULL;
  cache_view_t *v = NULL;
  put_value(s, "small", 1000, 7);
  put_value(s, "large", 200000, 9);
  cache_store_stats_t st;
  cache_store_stats(s, &st);
  assert_int_equal(st.values, 2);
  assert_int_equal(st.inline_values, 1);
  assert_int_equal(count_segments(f), 1);
  assert_int_equal(cache_reader_open(f->dir, &r), 0);
  assert_int_equal(cache_reader_lookup(r, "small", 5, &v), 0);
  assert_false(v->zero_copy);
  check_view(v, 1000, 7);
  cache_view_release(v);
  assert_int_equal(cache_reader_lookup(r, "large", 5, &v), 0);
  assert_true(v->zero_copy);
  check_view(v, 200000, 9);
  const uint8_t *first = v->buffers[0].data;
  cache_view_release(v);
  assert_int_equal(cache_reader_lookup(r, "large", 5, &v), 0);
  assert_ptr_equal(v->buffers[0].data, first); /* mapping reused, not remapped */
  assert_int_equal(cache_reader_mappings(r), 1);
  cache_view_release(v);
  assert_int_equal(cache_reader_lookup(r, "absent", 6, &v), SQ_ENOTFOUND);
  assert_null(v);
  assert_int_equal(cache_reader_lookup(r, "", 0, &v), SQ_EEMPTYKEY);
  cache_reader_close(r);
  cache_store_close(s);
}

static void test_writer_get_and_meta_return_what_was_put(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 64 << 20, 0);
  sq_buf_t blob = {0}, meta = {0};
  sq_lattice_type_t type = SQ_LATTICE_NONE;
  put_value(s, "k", 100000, 3);
  assert_int_equal(cache_store_get(s, "k", 1, &blob), 0);
  cache_blob_t b;
  assert_int_equal(cache_blob_parse(blob.data, blob.len, &b), 0);
  assert_int_equal(cache_blob_buffer(&b, 0).len, 100000);
  assert_int_equal(cache_store_get_meta(s, "k", 1, &type, &meta), 0);
  assert_int_equal(type, SQ_LATTICE_LWW);
  assert_int_equal(meta.len, 8);
  assert_int_equal(meta.data[0], 3);
  /* Raw put of the same blob under another key, now inline with a large threshold. */
  assert_int_equal(cache_store_put(s, "copy", 4, blob.data, blob.len), 0);
  blob.data[0] ^= 1;
  assert_int_equal(cache_store_put(s, "bad", 3, blob.data, blob.len), SQ_ECORRUPT);
  assert_int_equal(cache_store_delete(s, "k", 1), 0);
  assert_int_equal(cache_store_delete(s, "k", 1), SQ_ENOTFOUND);
  assert_int_equal(cache_store_get(s, "k", 1, &blob), SQ_ENOTFOUND);
  assert_int_equal(count_segments(f), 1); /* "copy" */
  sq_buf_free(&blob);
  sq_buf_free(&meta);
  cache_store_close(s);
}

static void test_reader_in_another_process_sees_writer_values(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 64 << 20, 0);
  put_value(s, "a", 500, 1);
  put_value(s, "b", 300000, 2);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    cache_reader_t *r = NULL;
    cache_view_t *va = NULL, *vb = NULL;
    int ok = cache_reader_open(f->dir, &r) == 0 && cache_reader_lookup(r, "a", 1, &va) == 0 &&
             cache_reader_lookup(r, "b", 1, &vb) == 0 && va->buffers[0].len == 500 &&
             va->buffers[0].data[499] == 1 && vb->buffers[0].len == 300000 &&
             vb->buffers[0].data[299999] == 2 && vb->zero_copy &&
             (uintptr_t)vb->buffers[0].data % 64 == 0;
    cache_view_release(va);
    cache_view_release(vb);
    cache_reader_close(r);
    _exit(ok ? 0 : 1);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  cache_store_close(s);
}

static void test_view_stays_valid_after_replace_and_evict(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 64 << 20, 0);
  cache_reader_t *r = NULL;
  cache_view_t *old = NULL, *fresh = NULL, *gone = NULL;
  put_value(s, "x", 150000, 4);
  put_value(s, "y", 150000, 5);
  assert_int_equal(cache_reader_open(f->dir, &r), 0);
  assert_int_equal(cache_reader_lookup(r, "x", 1, &old), 0);
  assert_int_equal(cache_reader_lookup(r, "y", 1, &gone), 0);
  put_value(s, "x", 150000, 6); /* replaces: old segment unlinked */
  assert_int_equal(cache_store_delete(s, "y", 1), 0);
  assert_int_equal(count_segments(f), 1);
  check_view(old, 150000, 4); /* still the old bytes, still mapped */
  check_view(gone, 150000, 5);
  assert_int_equal(cache_reader_lookup(r, "x", 1, &fresh), 0);
  check_view(fresh, 150000, 6);
  cache_view_release(fresh);
  assert_int_equal(cache_reader_lookup(r, "y", 1, &fresh), SQ_ENOTFOUND);
  cache_view_release(old);
  cache_view_release(gone);
  assert_int_equal(cache_reader_trim(r), 2); /* both unlinked segments dropped */
  assert_int_equal(cache_reader_mappings(r), 1); /* the live "x" stays cached */
  cache_reader_close(r);
  cache_store_close(s);
}

static void test_view_outlives_reader_close(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 64 << 20, 0);
  cache_reader_t *r = NULL;
  cache_view_t *v = NULL;
  put_value(s, "z", 100000, 8);
  assert_int_equal(cache_reader_open(f->dir, &r), 0);
  assert_int_equal(cache_reader_lookup(r, "z", 1, &v), 0);
  cache_reader_close(r);
  check_view(v, 100000, 8);
  cache_view_release(v);
  cache_store_close(s);
}

static void test_budget_evicts_least_recently_used_first(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 1 << 20, 0); /* 1 MiB */
  char key[16];
  for (int i = 0; i < 8; i++) { /* 8 x ~100 KB segments: fits */
    snprintf(key, sizeof key, "v%d", i);
    put_value(s, key, 100000, (uint8_t)i);
  }
  assert_int_equal(cache_store_touch(s, "v0", 2), 0); /* v0 recently used */
  sq_buf_t tmp = {0};
  assert_int_equal(cache_store_get(s, "v1", 2, &tmp), 0); /* so is v1 */
  sq_buf_free(&tmp);
  for (int i = 8; i < 12; i++) {
    snprintf(key, sizeof key, "v%d", i);
    put_value(s, key, 100000, (uint8_t)i);
  }
  cache_store_stats_t st;
  cache_store_stats(s, &st);
  assert_true(st.bytes <= st.budget);
  assert_true(st.evictions >= 2);
  assert_int_equal(cache_store_get(s, "v0", 2, &tmp), 0);
  assert_int_equal(cache_store_get(s, "v1", 2, &tmp), 0);
  assert_int_equal(cache_store_get(s, "v11", 3, &tmp), 0);
  assert_int_equal(cache_store_get(s, "v2", 2, &tmp), SQ_ENOTFOUND); /* oldest untouched */
  sq_buf_free(&tmp);
  assert_int_equal(count_segments(f), st.values - st.inline_values);
  /* A value larger than the whole budget is refused, nothing is evicted for it. */
  uint8_t *huge = calloc(1, 2 << 20);
  cache_span_t span = {huge, 2 << 20};
  cache_object_t obj = {SQ_LATTICE_LWW, NULL, 0, "p", 1, &span, 1};
  assert_int_equal(cache_store_put_object(s, "huge", 4, &obj), SQ_ETOOBIG);
  free(huge);
  cache_store_stats_t st2;
  cache_store_stats(s, &st2);
  assert_int_equal(st2.values, st.values);
  cache_store_close(s);
}

/* With unlinks deferred, evicted and replaced segments keep their files (not their
 * charge) until the flush; close flushes too. */
static void test_deferred_unlinks_wait_for_the_flush(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 250000, 0); /* room for two ~100 KB segments */
  cache_store_defer_unlinks(s, true);
  put_value(s, "a", 100000, 1);
  put_value(s, "b", 100000, 2);
  put_value(s, "c", 100000, 3); /* evicts a */
  put_value(s, "b", 100000, 4); /* replaces b */
  cache_store_stats_t st;
  cache_store_stats(s, &st);
  assert_true(st.bytes <= st.budget);
  assert_int_equal(st.values, 2);
  assert_int_equal(count_segments(f), 4); /* a and the old b wait for the flush */
  assert_int_equal(cache_store_flush_unlinks(s), 2);
  assert_int_equal(count_segments(f), 2);
  assert_int_equal(cache_store_flush_unlinks(s), 0);
  put_value(s, "d", 100000, 5); /* evicts c */
  assert_int_equal(count_segments(f), 3);
  cache_store_close(s); /* flushes */
  assert_int_equal(count_segments(f), 2);
  s = open_store(f, 250000, 0); /* nothing was left as an orphan either */
  cache_store_stats(s, &st);
  assert_int_equal(st.orphans_removed, 0);
  cache_store_defer_unlinks(s, false); /* the default: at once */
  put_value(s, "e", 100000, 6);
  assert_int_equal(count_segments(f), 2);
  cache_store_close(s);
}

/* cache_store_read (merges, refetches) returns the value but is not a use: the value
 * it read is still the first to go. */
static void test_read_for_merge_does_not_change_recency(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 1 << 20, 0);
  char key[16];
  for (int i = 0; i < 8; i++) {
    snprintf(key, sizeof key, "v%d", i);
    put_value(s, key, 100000, (uint8_t)i);
  }
  sq_buf_t tmp = {0};
  assert_int_equal(cache_store_read(s, "v0", 2, &tmp), 0);
  assert_true(tmp.len > 100000);
  assert_int_equal(cache_store_read(s, "nope", 4, &tmp), SQ_ENOTFOUND);
  for (int i = 8; i < 12; i++) {
    snprintf(key, sizeof key, "v%d", i);
    put_value(s, key, 100000, (uint8_t)i);
  }
  assert_int_equal(cache_store_get(s, "v0", 2, &tmp), SQ_ENOTFOUND); /* evicted first */
  assert_int_equal(cache_store_get(s, "v11", 3, &tmp), 0);
  sq_buf_free(&tmp);
  cache_store_close(s);
}

static void test_map_full_is_relieved_by_growth(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 256 << 20, 256 << 10); /* 256 KiB map */
  char key[16];
  for (int i = 0; i < 200; i++) { /* ~6 MB inline: needs many map growths */
    snprintf(key, sizeof key, "m%d", i);
    put_value(s, key, 30000, (uint8_t)i);
  }
  cache_store_stats_t st;
  cache_store_stats(s, &st);
  assert_int_equal(st.values, 200);
  assert_true(st.map_grows >= 3);
  assert_true(st.map_size > (256 << 10));
  /* A reader opened before more growth adopts the new size transparently. */
  cache_reader_t *r = NULL;
  cache_view_t *v = NULL;
  assert_int_equal(cache_reader_open(f->dir, &r), 0);
  for (int i = 200; i < 400; i++) {
    snprintf(key, sizeof key, "m%d", i);
    put_value(s, key, 30000, (uint8_t)i);
  }
  assert_int_equal(cache_reader_lookup(r, "m399", 4, &v), 0);
  check_view(v, 30000, (uint8_t)399);
  cache_view_release(v);
  cache_reader_close(r);
  cache_store_close(s);
}

static void test_map_full_at_max_size_evicts_instead_of_failing(void **state) {
  fixture_t *f = *state;
  cache_store_config_t cfg = {.dir = f->dir, .budget_bytes = 256 << 20,
                              .map_size = 1 << 20, .map_size_max = 1 << 20};
  cache_store_t *s = NULL;
  assert_int_equal(cache_store_open(&cfg, &s), 0);
  char key[16];
  for (int i = 0; i < 100; i++) { /* 3 MB of inline values into a 1 MiB map */
    snprintf(key, sizeof key, "e%d", i);
    put_value(s, key, 30000, (uint8_t)i);
  }
  cache_store_stats_t st;
  cache_store_stats(s, &st);
  assert_true(st.evictions > 0);
  assert_true(st.values < 100);
  sq_buf_t tmp = {0};
  assert_int_equal(cache_store_get(s, "e99", 3, &tmp), 0); /* newest survives */
  sq_buf_free(&tmp);
  cache_store_close(s);
}

static void test_reader_killed_mid_read_leaves_env_usable_and_slot_reclaimed(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 64 << 20, 0);
  put_value(s, "k", 100, 1);
  int pipefd[2];
  assert_int_equal(pipe(pipefd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) { /* open a raw read transaction (a snapshot) and hang mid-read */
    MDB_env *env;
    MDB_txn *txn;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 4);
    if (mdb_env_open(env, f->dir, MDB_RDONLY | MDB_NOTLS, 0644) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
      _exit(1);
    if (write(pipefd[1], "r", 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  char c;
  assert_int_equal(read(pipefd[0], &c, 1), 1);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  close(pipefd[0]);
  close(pipefd[1]);
  int dead = -1;
  assert_int_equal(cache_store_check_readers(s, &dead), 0);
  assert_int_equal(dead, 1);
  assert_int_equal(cache_store_check_readers(s, &dead), 0);
  assert_int_equal(dead, 0);
  put_value(s, "k", 200, 2); /* writer and readers carry on */
  cache_reader_t *r = NULL;
  cache_view_t *v = NULL;
  assert_int_equal(cache_reader_open(f->dir, &r), 0);
  assert_int_equal(cache_reader_lookup(r, "k", 1, &v), 0);
  check_view(v, 200, 2);
  cache_view_release(v);
  cache_reader_close(r);
  cache_store_close(s);
}

static void test_reopen_keeps_values_and_collects_orphans(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 64 << 20, 0);
  put_value(s, "keep", 100000, 1);
  put_value(s, "inl", 10, 2);
  cache_store_close(s);
  char path[600];
  snprintf(path, sizeof path, "%s/segments/00000000deadbeef", f->dir);
  int fd = open(path, O_CREAT | O_WRONLY, 0644); /* crash after file, before commit */
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "junk", 4), 4);
  close(fd);
  snprintf(path, sizeof path, "%s/segments/not-a-segment", f->dir);
  close(open(path, O_CREAT | O_WRONLY, 0644));
  assert_int_equal(count_segments(f), 3);
  s = open_store(f, 64 << 20, 0);
  cache_store_stats_t st;
  cache_store_stats(s, &st);
  assert_int_equal(st.values, 2);
  assert_int_equal(st.orphans_removed, 2);
  assert_int_equal(count_segments(f), 1);
  sq_buf_t tmp = {0};
  assert_int_equal(cache_store_get(s, "keep", 4, &tmp), 0);
  sq_buf_free(&tmp);
  /* A new segment after reopen never reuses the id of a committed one. */
  put_value(s, "next", 100000, 3);
  assert_int_equal(count_segments(f), 2);
  cache_store_close(s);
}

static void test_reopen_drops_descriptor_whose_segment_vanished(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 64 << 20, 0);
  put_value(s, "seg", 100000, 1);
  put_value(s, "inl", 10, 2);
  cache_store_close(s);
  char path[600];
  snprintf(path, sizeof path, "%s/segments/0000000000000001", f->dir);
  assert_int_equal(unlink(path), 0);
  s = open_store(f, 64 << 20, 0);
  cache_store_stats_t st;
  cache_store_stats(s, &st);
  assert_int_equal(st.values, 1);
  assert_int_equal(st.dropped_invalid, 1);
  sq_buf_t tmp = {0};
  assert_int_equal(cache_store_get(s, "seg", 3, &tmp), SQ_ENOTFOUND);
  assert_int_equal(cache_store_get(s, "inl", 3, &tmp), 0);
  sq_buf_free(&tmp);
  cache_store_close(s);
}

static void test_second_writer_is_refused_and_discard_starts_empty(void **state) {
  fixture_t *f = *state;
  cache_store_t *s = open_store(f, 64 << 20, 0), *s2 = NULL;
  put_value(s, "a", 100000, 1);
  cache_store_config_t cfg = {.dir = f->dir, .budget_bytes = 64 << 20};
  assert_int_equal(cache_store_open(&cfg, &s2), -EBUSY);
  assert_null(s2);
  cache_store_close(s);
  cfg.discard = true;
  assert_int_equal(cache_store_open(&cfg, &s2), 0);
  cache_store_stats_t st;
  cache_store_stats(s2, &st);
  assert_int_equal(st.values, 0);
  assert_int_equal(count_segments(f), 0);
  cache_store_close(s2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_small_value_is_inline_and_large_value_is_zero_copy_segment),
      T(test_writer_get_and_meta_return_what_was_put),
      T(test_reader_in_another_process_sees_writer_values),
      T(test_view_stays_valid_after_replace_and_evict),
      T(test_view_outlives_reader_close),
      T(test_budget_evicts_least_recently_used_first),
      T(test_deferred_unlinks_wait_for_the_flush),
      T(test_read_for_merge_does_not_change_recency),
      T(test_map_full_is_relieved_by_growth),
      T(test_map_full_at_max_size_evicts_instead_of_failing),
      T(test_reader_killed_mid_read_leaves_env_usable_and_slot_reclaimed),
      T(test_reopen_keeps_values_and_collects_orphans),
      T(test_reopen_drops_descriptor_whose_segment_vanished),
      T(test_second_writer_is_refused_and_discard_starts_empty),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
