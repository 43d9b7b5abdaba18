/* load: helpers shared by the protocol loops (clock, keys, randomness, accounting).
 * Everything here works on one load_thread_t and is called only by its thread. */
#include "load.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const load__err_names[LOAD_ERR_COUNT] = {
#define LOAD__ERR_NAME(name, text) text,
    LOAD_ERR_TABLE(LOAD__ERR_NAME)
#undef LOAD__ERR_NAME
};

uint64_t load_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t load_rand(load_thread_t *t) {
  uint64_t x = t->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  t->rng = x;
  return x * 0x2545F4914F6CDD1Dull;
}

int load_u64_text(uint64_t v, int min_digits, char *buf) {
  char tmp[20];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n < min_digits && n < (int)sizeof(tmp)) tmp[n++] = '0';
  for (int i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  buf[n] = '\0';
  return n;
}

/* Same text as snprintf("key:%08llu") without stdio (snprintf was ~14% of the load
 * generator's CPU). */
int load_key_name(uint64_t i, char *buf) {
  memcpy(buf, "key:", 4);
  return 4 + load_u64_text(i, 8, buf + 4);
}

bool load_next_key(load_thread_t *t, uint64_t *key) {
  if (t->preload) {
    if (t->key_lo >= t->key_hi) return false;
    *key = t->key_lo++;
    return true;
  }
  *key = load_rand(t) % (uint64_t)t->opts->keys;
  return true;
}

void load_complete(load_thread_t *t, int err, uint64_t lat_ns, uint64_t now_ns) {
  if (now_ns < t->record_ns || now_ns >= t->stop_ns) return;
  if (err >= 0 && err < LOAD_ERR_COUNT) {
    t->errors[err]++;
    return;
  }
  t->ops++;
  hist_record(t->hist, lat_ns);
}

bool load_issuing(const load_thread_t *t, uint64_t now_ns) {
  if (t->preload) return t->key_lo < t->key_hi;
  return now_ns < t->stop_ns;
}

const char *load_err_name(int err) {
  if (err < 0 || err >= LOAD_ERR_COUNT) return "unknown";
  return load__err_names[err];
}
