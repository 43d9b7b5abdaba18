/* cache_lease: the shared table of fetch leases (contract and layout in cache_lease.h).
 *
 * Waiting: FUTEX_WAIT on the slot's state word (shared, not private: the word lives in
 * a file mapping of several processes), in slices of CACHE_LEASE__SLICE_MS so that a
 * dead holder (kill(pid, 0) says ESRCH) or a passed deadline is noticed without anyone
 * waking us. Releases wake every waiter (FUTEX_WAKE INT_MAX).
 */
#include "cache_lease.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sq_error.h"
#include "sq_time.h"

#define CACHE_LEASE__MAGIC 0x534c5153u /* "SQLS" little-endian */
#define CACHE_LEASE__VERSION 1u
#define CACHE_LEASE__SLICE_MS 10
#define CACHE_LEASE__TRIES 64 /* claim attempts before giving up (contention) */

typedef struct {
  uint32_t magic, version, nslots, nlarge;
  uint8_t pad[48];
} cache__lease_hdr_t;

typedef struct {
  _Atomic uint32_t state;  /* futex word: even free, odd held */
  _Atomic uint32_t owner;  /* == state once pid, hash and deadline are published */
  _Atomic uint32_t pid;
  uint32_t pad0;
  _Atomic uint64_t hash;
  _Atomic int64_t deadline_ms;
  uint8_t pad[32];
} cache__lease_slot_t;

_Static_assert(sizeof(cache__lease_hdr_t) == 64, "lease header is one cache line");
_Static_assert(sizeof(cache__lease_slot_t) == 64, "a lease slot is one cache line");

struct cache_lease_table {
  void *map;
  size_t size;
  cache__lease_slot_t *slots;
  _Atomic uint64_t *large;
};

static const size_t cache__lease_size =
    sizeof(cache__lease_hdr_t) + CACHE_LEASE_SLOTS * sizeof(cache__lease_slot_t) +
    CACHE_LEASE_LARGE * sizeof(uint64_t);

uint64_t cache_lease_hash(const void *key, size_t klen) {
  const uint8_t *p = key;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < klen; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return (h ^ (h >> 29)) | 1;
}

static cache__lease_slot_t *cache__lease_slot(cache_lease_table_t *t, uint64_t h) {
  return &t->slots[h % CACHE_LEASE_SLOTS];
}

/* Releases every held slot (waking waiters) and clears the large table: a restarted
 * daemon knows nothing of its predecessor's leases. */
static void cache__lease_reset(cache_lease_table_t *t) {
  for (uint32_t i = 0; i < CACHE_LEASE_SLOTS; i++) {
    cache__lease_slot_t *s = &t->slots[i];
    uint32_t st = atomic_load(&s->state);
    if ((st & 1u) && atomic_compare_exchange_strong(&s->state, &st, st + 1))
      (void)syscall(SYS_futex, &s->state, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
  }
  for (uint32_t i = 0; i < CACHE_LEASE_LARGE; i++) atomic_store(&t->large[i], 0);
}

static int cache__lease_map(int fd, bool create, cache_lease_table_t *t) {
  struct stat sb;
  if (fstat(fd, &sb) != 0) return -errno;
  if ((size_t)sb.st_size != cache__lease_size) {
    if (!create) return SQ_ECORRUPT;
    if (ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)cache__lease_size) != 0) return -errno;
  }
  void *m = mmap(NULL, cache__lease_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return -errno;
  t->map = m;
  t->size = cache__lease_size;
  t->slots = (cache__lease_slot_t *)((uint8_t *)m + sizeof(cache__lease_hdr_t));
  t->large = (_Atomic uint64_t *)(t->slots + CACHE_LEASE_SLOTS);
  cache__lease_hdr_t *h = m;
  if (create) {
    cache__lease_reset(t);
    *h = (cache__lease_hdr_t){.magic = CACHE_LEASE__MAGIC, .version = CACHE_LEASE__VERSION,
                              .nslots = CACHE_LEASE_SLOTS, .nlarge = CACHE_LEASE_LARGE};
    return 0;
  }
  return (h->magic == CACHE_LEASE__MAGIC && h->version == CACHE_LEASE__VERSION &&
          h->nslots == CACHE_LEASE_SLOTS && h->nlarge == CACHE_LEASE_LARGE)
             ? 0 : SQ_ECORRUPT;
}

int cache_lease_open(const char *dir, bool create, cache_lease_table_t **out) {
  char path[4096];
  cache_lease_table_t *t = NULL;
  int fd = -1, rc = SQ_ETOOBIG;
  *out = NULL;
  if (snprintf(path, sizeof path, "%s/%s", dir, CACHE_LEASE_NAME) >= (int)sizeof path) goto out;
  fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0660);
  rc = fd < 0 ? (errno == ENOENT ? SQ_ENOTFOUND : -errno) : 0;
  if (rc) goto out;
  rc = -ENOMEM;
  if (!(t = calloc(1, sizeof *t))) goto out;
  if ((rc = cache__lease_map(fd, create, t)) != 0) goto out;
  *out = t;
  t = NULL;
out:
  if (fd >= 0) close(fd);
  cache_lease_close(t);
  return rc;
}

void cache_lease_close(cache_lease_table_t *t) {
  if (!t) return;
  if (t->map) munmap(t->map, t->size);
  free(t);
}

/* A held slot's published fields, read consistently: false while the holder has not
 * published them yet or the slot changed meanwhile. */
static bool cache__lease_read(cache__lease_slot_t *s, uint32_t st, uint32_t *pid, uint64_t *h,
                              int64_t *deadline) {
  if (atomic_load_explicit(&s->owner, memory_order_acquire) != st) return false;
  *pid = atomic_load(&s->pid);
  *h = atomic_load(&s->hash);
  *deadline = atomic_load(&s->deadline_ms);
  return atomic_load(&s->state) == st;
}

/* True when the holder can no longer be waited for. */
static bool cache__lease_gone(uint32_t pid, int64_t deadline) {
  if ((int64_t)sq_now_ms() > deadline) return true;
  return pid == 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH);
}

static void cache__lease_publish(cache__lease_slot_t *s, uint32_t token, uint64_t h, int hold) {
  atomic_store(&s->pid, (uint32_t)getpid());
  atomic_store(&s->hash, h);
  atomic_store(&s->deadline_ms, (int64_t)sq_now_ms() + hold);
  atomic_store_explicit(&s->owner, token, memory_order_release);
}

cache_lease_claim_t cache_lease_claim(cache_lease_table_t *t, const void *key, size_t klen,
                                      int hold_ms, uint32_t *token) {
  uint64_t h = cache_lease_hash(key, klen), held_h;
  cache__lease_slot_t *s = cache__lease_slot(t, h);
  int hold = hold_ms < 1 ? 1 : hold_ms > CACHE_LEASE_HOLD_MAX_MS ? CACHE_LEASE_HOLD_MAX_MS
                                                                  : hold_ms;
  uint32_t unpublished = 0, last = 0;
  *token = 0;
  for (int i = 0; i < CACHE_LEASE__TRIES; i++) {
    uint32_t st = atomic_load(&s->state), pid;
    int64_t deadline;
    uint32_t next = (st & 1u) ? st + 2 : st + 1;
    if (st & 1u) {
      bool seen = cache__lease_read(s, st, &pid, &held_h, &deadline);
      unpublished = !seen && st == last ? unpublished + 1 : 0;
      last = st;
      if (!seen && unpublished < CACHE_LEASE__TRIES / 2) {
        sched_yield(); /* being published, or changing: look again */
        continue;
      } /* never published: its claimer died right after its CAS; take it over */
      if (seen && !cache__lease_gone(pid, deadline)) {
        *token = held_h == h ? st : 0;
        return held_h == h ? CACHE_LEASE_WAIT : CACHE_LEASE_OTHER;
      }
    }
    if (atomic_compare_exchange_strong(&s->state, &st, next)) {
      cache__lease_publish(s, next, h, hold);
      *token = next;
      return CACHE_LEASE_MINE;
    }
  }
  return CACHE_LEASE_OTHER;
}

int cache_lease_wait(cache_lease_table_t *t, const void *key, size_t klen, uint32_t token,
                     int timeout_ms) {
  cache__lease_slot_t *s = cache__lease_slot(t, cache_lease_hash(key, klen));
  int64_t end = (int64_t)sq_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  for (;;) {
    uint32_t pid;
    uint64_t h;
    int64_t deadline, left = end - (int64_t)sq_now_ms();
    if (atomic_load(&s->state) != token) return 0;
    if (cache__lease_read(s, token, &pid, &h, &deadline) && cache__lease_gone(pid, deadline))
      return 0;
    if (left <= 0) return SQ_ETIMEOUT;
    if (left > CACHE_LEASE__SLICE_MS) left = CACHE_LEASE__SLICE_MS;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)left * 1000000L};
    (void)syscall(SYS_futex, &s->state, FUTEX_WAIT, token, &ts, NULL, 0);
  }
}

int cache_lease_release(cache_lease_table_t *t, const void *key, size_t klen, uint32_t token) {
  cache__lease_slot_t *s = cache__lease_slot(t, cache_lease_hash(key, klen));
  uint32_t st = token;
  if (!(token & 1u) || !atomic_compare_exchange_strong(&s->state, &st, token + 1))
    return SQ_ENOTFOUND;
  (void)syscall(SYS_futex, &s->state, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
  return 0;
}

bool cache_lease_held(cache_lease_table_t *t, const void *key, size_t klen) {
  uint64_t h = cache_lease_hash(key, klen), held_h;
  cache__lease_slot_t *s = cache__lease_slot(t, h);
  uint32_t st = atomic_load(&s->state), pid;
  int64_t deadline;
  return (st & 1u) && cache__lease_read(s, st, &pid, &held_h, &deadline) && held_h == h &&
         !cache__lease_gone(pid, deadline);
}

void cache_lease_note_large(cache_lease_table_t *t, const void *key, size_t klen, bool large) {
  uint64_t h = cache_lease_hash(key, klen);
  _Atomic uint64_t *slot = &t->large[h % CACHE_LEASE_LARGE];
  if (large) atomic_store(slot, h);
  else if (atomic_load(slot) == h) atomic_store(slot, 0);
}

bool cache_lease_is_large(cache_lease_table_t *t, const void *key, size_t klen) {
  uint64_t h = cache_lease_hash(key, klen);
  return atomic_load(&t->large[h % CACHE_LEASE_LARGE]) == h;
}
