/* daemon_keyset: report timing and encoding. See daemon_keyset.h for the policy. */
#include "daemon_keyset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lattice.h"
#include "shared.pb-c.h"
#include "sq_error.h"

void cache_keyset_init(cache_keyset_t *k, int64_t min_interval_ms, int64_t period_ms) {
  memset(k, 0, sizeof(*k));
  k->min_interval_ms = min_interval_ms > 0 ? min_interval_ms : CACHE_KEYSET_MIN_INTERVAL_MS;
  k->period_ms = period_ms > 0 ? period_ms : CACHE_KEYSET_PERIOD_MS;
}

void cache_keyset_mark(cache_keyset_t *k) { k->dirty = true; }

int64_t cache_keyset_wait_ms(const cache_keyset_t *k, int64_t now_ms) {
  if (k->in_flight) return -1;
  if (!k->ever_sent) return 0;
  int64_t since = now_ms - k->last_start_ms;
  int64_t wait = k->period_ms - since;
  if (k->dirty && k->min_interval_ms - since < wait) wait = k->min_interval_ms - since;
  return wait > 0 ? wait : 0;
}

bool cache_keyset_due(const cache_keyset_t *k, int64_t now_ms) {
  return cache_keyset_wait_ms(k, now_ms) == 0;
}

void cache_keyset_started(cache_keyset_t *k, int64_t now_ms) {
  k->last_start_ms = now_ms;
  k->ever_sent = true;
  k->dirty = false;
  k->in_flight = true;
  k->reports++;
}

void cache_keyset_done(cache_keyset_t *k, int err) {
  k->in_flight = false;
  if (err) k->dirty = true;
}

int cache_keyset_key(char *buf, size_t cap, const char *public_ip, unsigned port) {
  int n = snprintf(buf, cap, "%s%s:%u", CACHE_KEYSET_PREFIX, public_ip, port);
  return (n < 0 || (size_t)n >= cap) ? SQ_ETOOBIG : 0;
}

int cache_keyset_encode(const char *const *keys, const size_t *klens, size_t n,
                        uint64_t timestamp, sq_buf_t *out) {
  StringSet set = STRING_SET__INIT;
  char **copies = calloc(n ? n : 1, sizeof(*copies));
  uint8_t *packed = NULL;
  int rc = -ENOMEM;
  if (!copies) goto out;
  for (size_t i = 0; i < n; i++) {
    if (!(copies[i] = malloc(klens[i] + 1))) goto out;
    memcpy(copies[i], keys[i], klens[i]);
    copies[i][klens[i]] = '\0';
  }
  set.n_keys = n;
  set.keys = copies;
  size_t plen = string_set__get_packed_size(&set);
  if (!(packed = malloc(plen ? plen : 1))) goto out;
  string_set__pack(&set, packed);
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = timestamp;
  l.u.lww.value.data = packed;
  l.u.lww.value.len = plen;
  rc = sq_lattice_encode(&l, out);
out:
  for (size_t i = 0; copies && i < n; i++) free(copies[i]);
  free(copies);
  free(packed);
  return rc;
}
