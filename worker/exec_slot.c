/* exec_slot: shared-memory "running now" slots with a sequence lock (exec_slot.h). */
#include "exec_slot.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sq_error.h"
#include "sq_time.h"

int64_t exec_slot_now_ms(void) { return (int64_t)sq_now_ms(); }

int exec_slot_create(size_t n, int *fd, exec_slot_t **slots) {
  int rc = 0;
  int f = memfd_create("squall-exec-slots", 0); /* no CLOEXEC: executors inherit it */
  if (f < 0) return -errno;
  if (ftruncate(f, (off_t)(n * sizeof(exec_slot_t))) < 0) {
    rc = -errno;
    goto out;
  }
  rc = exec_slot_map(f, n, slots);
out:
  if (rc) close(f);
  else *fd = f;
  return rc;
}

int exec_slot_map(int fd, size_t n, exec_slot_t **slots) {
  struct stat st;
  if (n == 0 || fstat(fd, &st) < 0) return n ? -errno : SQ_EINVAL;
  if ((size_t)st.st_size < n * sizeof(exec_slot_t)) return SQ_EINVAL;
  void *p = mmap(NULL, n * sizeof(exec_slot_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return -errno;
  *slots = p;
  return 0;
}

void exec_slot_unmap(exec_slot_t *slots, size_t n) {
  if (slots) munmap(slots, n * sizeof(exec_slot_t));
}

static int exec__copy(char *dst, size_t cap, const char *src) {
  size_t n = src ? strlen(src) : 0;
  int cut = n >= cap;
  if (cut) n = cap - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = 0;
  return cut;
}

void exec_slot_begin(exec_slot_t *s, const exec_slot_call_t *call) {
  __atomic_add_fetch(&s->seq, 1, __ATOMIC_ACQ_REL); /* odd: writing */
  s->state = call->state;
  s->started_ms = exec_slot_now_ms();
  s->deadline_ms = call->deadline_ms;
  s->calls++;
  exec__copy(s->function, sizeof(s->function), call->function);
  int cut = exec__copy(s->dest_key, sizeof(s->dest_key), call->dest_key);
  cut |= exec__copy(s->dest_addr, sizeof(s->dest_addr), call->dest_addr);
  s->dest_cut = (uint32_t)cut;
  __atomic_add_fetch(&s->seq, 1, __ATOMIC_RELEASE); /* even: done */
}

void exec_slot_end(exec_slot_t *s) {
  __atomic_add_fetch(&s->seq, 1, __ATOMIC_ACQ_REL);
  s->state = EXEC_SLOT_IDLE;
  s->deadline_ms = 0;
  __atomic_add_fetch(&s->seq, 1, __ATOMIC_RELEASE);
}

int exec_slot_read(const exec_slot_t *s, exec_slot_t *out) {
  for (int tries = 0; tries < 1000; tries++) {
    uint64_t a = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
    if (a & 1) {
      usleep(100);
      continue;
    }
    memcpy(out, (const void *)s, sizeof(*out));
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) == a) return 0;
  }
  return SQ_ECORRUPT;
}

void exec_slot_clear(exec_slot_t *s) { memset(s, 0, sizeof(*s)); }
