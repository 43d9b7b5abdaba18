/* test_cache_lease: the shared table of fetch leases (cache/cache_lease.h) -- claim
 * and release, a second claimer of the key waits and one of another key in the same
 * slot does not, coalescing across processes (a forked waiter is woken by the
 * holder's release), a dead holder (by pid) and a holder past its deadline are taken
 * over and their stale tokens release nothing, a daemon restart (create) releases
 * held slots and wakes waiters, executors refuse a file of the wrong size or header,
 * and the large-key table. Each test works in its own directory and removes it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache_lease.h"
#include "sq_error.h"

typedef struct {
  char dir[256];
  cache_lease_table_t *daemon; /* made with create, as squall-cache does */
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/sq-lease-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  assert_int_equal(cache_lease_open(f->dir, true, &f->daemon), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  char path[512];
  cache_lease_close(f->daemon);
  snprintf(path, sizeof path, "%s/%s", f->dir, CACHE_LEASE_NAME);
  unlink(path);
  rmdir(f->dir);
  free(f);
  return 0;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static cache_lease_table_t *executor(fixture_t *f) {
  cache_lease_table_t *t = NULL;
  assert_int_equal(cache_lease_open(f->dir, false, &t), 0);
  return t;
}

static void test_claim_release_then_claim_again(void **state) {
  fixture_t *f = *state;
  cache_lease_table_t *t = executor(f);
  uint32_t a = 0, b = 0, w = 0;
  assert_int_equal(cache_lease_claim(t, "k", 1, 1000, &a), CACHE_LEASE_MINE);
  assert_true(a & 1u);
  assert_true(cache_lease_held(f->daemon, "k", 1)); /* the daemon sees it */
  assert_int_equal(cache_lease_claim(t, "k", 1, 1000, &w), CACHE_LEASE_WAIT);
  assert_int_equal(w, a);
  assert_int_equal(cache_lease_release(t, "k", 1, a), 0);
  assert_false(cache_lease_held(f->daemon, "k", 1));
  assert_int_equal(cache_lease_release(t, "k", 1, a), SQ_ENOTFOUND); /* once only */
  assert_int_equal(cache_lease_wait(t, "k", 1, a, 1000), 0);        /* not held: at once */
  assert_int_equal(cache_lease_claim(t, "k", 1, 1000, &b), CACHE_LEASE_MINE);
  assert_int_not_equal(a, b);
  assert_int_equal(cache_lease_release(f->daemon, "k", 1, b), 0); /* the daemon releases */
  cache_lease_close(t);
}

static void test_another_key_in_the_slot_is_not_waited_for(void **state) {
  fixture_t *f = *state;
  char other[32];
  uint64_t want = cache_lease_hash("a", 1) % CACHE_LEASE_SLOTS;
  int i = 0;
  do snprintf(other, sizeof other, "x%d", i++);
  while (cache_lease_hash(other, strlen(other)) % CACHE_LEASE_SLOTS != want);
  uint32_t a = 0, o = 0;
  assert_int_equal(cache_lease_claim(f->daemon, "a", 1, 1000, &a), CACHE_LEASE_MINE);
  assert_int_equal(cache_lease_claim(f->daemon, other, strlen(other), 1000, &o),
                   CACHE_LEASE_OTHER);
  assert_int_equal(o, 0);
  assert_false(cache_lease_held(f->daemon, other, strlen(other)));
  assert_int_equal(cache_lease_release(f->daemon, "a", 1, a), 0);
}

/* A forked waiter blocks until the holder (this process) releases, then finds the
 * lease free; its exit code says what it saw. */
static void test_waiter_in_another_process_is_woken_by_the_release(void **state) {
  fixture_t *f = *state;
  uint32_t a = 0;
  assert_int_equal(cache_lease_claim(f->daemon, "hot", 3, 2000, &a), CACHE_LEASE_MINE);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    cache_lease_table_t *t = NULL;
    uint32_t w = 0, mine = 0;
    if (cache_lease_open(f->dir, false, &t) != 0) _exit(10);
    if (cache_lease_claim(t, "hot", 3, 2000, &w) != CACHE_LEASE_WAIT || w != a) _exit(11);
    int64_t t0 = now_ms();
    if (cache_lease_wait(t, "hot", 3, w, 5000) != 0) _exit(12);
    if (now_ms() - t0 < 150) _exit(13); /* it did wait for the release */
    if (cache_lease_claim(t, "hot", 3, 2000, &mine) != CACHE_LEASE_MINE) _exit(14);
    cache_lease_release(t, "hot", 3, mine);
    _exit(0);
  }
  usleep(300 * 1000);
  assert_int_equal(cache_lease_release(f->daemon, "hot", 3, a), 0);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_dead_holder_is_taken_over_and_its_token_is_stale(void **state) {
  fixture_t *f = *state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) { /* claims, reports its token, dies holding the lease */
    cache_lease_table_t *t = NULL;
    uint32_t tok = 0;
    if (cache_lease_open(f->dir, false, &t) != 0) _exit(1);
    cache_lease_claim(t, "d", 1, 2000, &tok);
    if (write(fds[1], &tok, sizeof tok) != sizeof tok) _exit(2);
    _exit(0);
  }
  uint32_t dead = 0, w = 0, mine = 0;
  assert_int_equal(read(fds[0], &dead, sizeof dead), (ssize_t)sizeof dead);
  assert_int_equal(waitpid(pid, NULL, 0), pid);
  close(fds[0]);
  close(fds[1]);
  assert_false(cache_lease_held(f->daemon, "d", 1)); /* a dead holder holds nothing */
  int64_t t0 = now_ms();
  assert_int_equal(cache_lease_wait(f->daemon, "d", 1, dead, 5000), 0);
  assert_true(now_ms() - t0 < 1000); /* noticed within a slice or so, not the deadline */
  assert_int_equal(cache_lease_claim(f->daemon, "d", 1, 1000, &mine), CACHE_LEASE_MINE);
  assert_int_not_equal(mine, dead);
  assert_int_equal(cache_lease_release(f->daemon, "d", 1, dead), SQ_ENOTFOUND);
  assert_int_equal(cache_lease_claim(f->daemon, "d", 1, 1000, &w), CACHE_LEASE_WAIT);
  assert_int_equal(cache_lease_release(f->daemon, "d", 1, mine), 0);
}

static void test_holder_past_its_deadline_is_taken_over(void **state) {
  fixture_t *f = *state;
  cache_lease_table_t *t = executor(f);
  uint32_t slow = 0, mine = 0;
  assert_int_equal(cache_lease_claim(t, "s", 1, 50, &slow), CACHE_LEASE_MINE);
  int64_t t0 = now_ms();
  assert_int_equal(cache_lease_wait(f->daemon, "s", 1, slow, 5000), 0);
  int64_t waited = now_ms() - t0;
  assert_true(waited >= 40 && waited < 1000);
  assert_int_equal(cache_lease_claim(f->daemon, "s", 1, 1000, &mine), CACHE_LEASE_MINE);
  assert_int_equal(cache_lease_release(t, "s", 1, slow), SQ_ENOTFOUND); /* too late */
  assert_int_equal(cache_lease_release(f->daemon, "s", 1, mine), 0);
  /* a wait never outlasts its own timeout either */
  assert_int_equal(cache_lease_claim(t, "s", 1, 2000, &slow), CACHE_LEASE_MINE);
  assert_int_equal(cache_lease_wait(f->daemon, "s", 1, slow, 30), SQ_ETIMEOUT);
  assert_int_equal(cache_lease_release(t, "s", 1, slow), 0);
  cache_lease_close(t);
}

static void test_restart_releases_held_leases_and_wakes_waiters(void **state) {
  fixture_t *f = *state;
  cache_lease_table_t *t = executor(f), *again = NULL;
  uint32_t held = 0, w = 0, mine = 0;
  assert_int_equal(cache_lease_claim(t, "r", 1, 2000, &held), CACHE_LEASE_MINE);
  cache_lease_note_large(f->daemon, "big", 3, true);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) { /* waits for "r"; the restart must end the wait early */
    cache_lease_table_t *c = NULL;
    if (cache_lease_open(f->dir, false, &c) != 0) _exit(1);
    if (cache_lease_claim(c, "r", 1, 2000, &w) != CACHE_LEASE_WAIT) _exit(2);
    int64_t t0 = now_ms();
    if (cache_lease_wait(c, "r", 1, w, 10000) != 0 || now_ms() - t0 > 1500) _exit(3);
    _exit(0);
  }
  usleep(200 * 1000);
  cache_lease_close(f->daemon); /* the daemon restarts */
  assert_int_equal(cache_lease_open(f->dir, true, &again), 0);
  f->daemon = again;
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_false(cache_lease_held(again, "r", 1));
  assert_int_equal(cache_lease_release(t, "r", 1, held), SQ_ENOTFOUND); /* reset: stale */
  assert_false(cache_lease_is_large(t, "big", 3)); /* its predecessor's notes are gone */
  assert_int_equal(cache_lease_claim(t, "r", 1, 1000, &mine), CACHE_LEASE_MINE);
  assert_int_equal(cache_lease_release(t, "r", 1, mine), 0);
  cache_lease_close(t);
}

static void test_executors_refuse_a_missing_or_foreign_file(void **state) {
  fixture_t *f = *state;
  char path[512], empty[256];
  cache_lease_table_t *t = NULL;
  snprintf(empty, sizeof empty, "/tmp/sq-lease-none-XXXXXX");
  assert_non_null(mkdtemp(empty));
  assert_int_equal(cache_lease_open(empty, false, &t), SQ_ENOTFOUND);
  rmdir(empty);
  snprintf(path, sizeof path, "%s/%s", f->dir, CACHE_LEASE_NAME);
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, "XXXX", 4, 0), 4); /* a scribbled header */
  assert_int_equal(cache_lease_open(f->dir, false, &t), SQ_ECORRUPT);
  struct stat sb;
  assert_int_equal(fstat(fd, &sb), 0);
  assert_int_equal(ftruncate(fd, sb.st_size / 2), 0); /* a file of another size */
  assert_int_equal(cache_lease_open(f->dir, false, &t), SQ_ECORRUPT);
  close(fd);
  assert_null(t);
  cache_lease_table_t *fixed = NULL; /* the daemon repairs both at its start */
  assert_int_equal(cache_lease_open(f->dir, true, &fixed), 0);
  assert_int_equal(cache_lease_open(f->dir, false, &t), 0);
  cache_lease_close(t);
  cache_lease_close(fixed);
}

static void test_large_keys_are_noted_and_forgotten(void **state) {
  fixture_t *f = *state;
  cache_lease_table_t *t = executor(f);
  assert_false(cache_lease_is_large(t, "v", 1));
  cache_lease_note_large(f->daemon, "v", 1, true);
  assert_true(cache_lease_is_large(t, "v", 1));
  assert_false(cache_lease_is_large(t, "w", 1));
  cache_lease_note_large(f->daemon, "v", 1, false);
  assert_false(cache_lease_is_large(t, "v", 1));
  cache_lease_close(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_claim_release_then_claim_again, setup, teardown),
      cmocka_unit_test_setup_teardown(test_another_key_in_the_slot_is_not_waited_for, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_waiter_in_another_process_is_woken_by_the_release,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_dead_holder_is_taken_over_and_its_token_is_stale,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_holder_past_its_deadline_is_taken_over, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_restart_releases_held_leases_and_wakes_waiters,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_executors_refuse_a_missing_or_foreign_file, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_large_keys_are_noted_and_forgotten, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
