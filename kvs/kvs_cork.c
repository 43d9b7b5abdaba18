/* kvs_cork: corking the TCP connections of long reply runs (design note in
 * kvs_cork.h). */
#include "kvs_cork.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sq_time.h"
#include "sq_zmq.h"

/* A connection that could not be found is looked for again this much later (it may
 * still be connecting), twice as late after each further miss up to the maximum; an
 * entry unused for STALE may be taken for another. */
#define KVS__CORK_RETRY_MS 100
#define KVS__CORK_RETRY_MAX_MS 10000
#define KVS__CORK_STALE_MS 10000

_Static_assert(KVS_CORK_ENTRIES <= 32, "kvs_cork_t.live has a bit per entry");

void kvs_cork_init(kvs_cork_t *c, bool enabled) {
  memset(c, 0, sizeof(*c));
  c->enabled = enabled;
  for (size_t i = 0; i < KVS_CORK_ENTRIES; i++) c->e[i].fd = -1;
}

bool kvs_cork_parse_endpoint(const char *endpoint, struct sockaddr_storage *addr,
                             socklen_t *len) {
  sq_zmq_endpoint_t ep;
  if (sq_zmq_endpoint_parse(endpoint, &ep) != 0 || strcmp(ep.transport, "tcp") != 0)
    return false;
  memset(addr, 0, sizeof(*addr));
  struct sockaddr_in *in = (struct sockaddr_in *)addr;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr;
  if (inet_pton(AF_INET, ep.host, &in->sin_addr) == 1) { /* numeric only: no lookups */
    in->sin_family = AF_INET;
    in->sin_port = htons(ep.port);
    *len = sizeof(*in);
  } else if (inet_pton(AF_INET6, ep.host, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(ep.port);
    *len = sizeof(*in6);
  } else {
    return false;
  }
  return true;
}

/* True when fd is a TCP socket connected to e's peer. */
static bool kvs__cork_fd_matches(const kvs_cork_entry_t *e, int fd) {
  struct sockaddr_storage peer;
  socklen_t len = sizeof(peer);
  if (getpeername(fd, (struct sockaddr *)&peer, &len) != 0 || len != e->peer_len) return false;
  if (peer.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)&peer, *b = (const void *)&e->peer;
    if (a->sin_port != b->sin_port || a->sin_addr.s_addr != b->sin_addr.s_addr) return false;
  } else if (peer.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)&peer, *b = (const void *)&e->peer;
    if (a->sin6_port != b->sin6_port || memcmp(&a->sin6_addr, &b->sin6_addr, 16) != 0)
      return false;
  } else {
    return false;
  }
  int proto = 0;
  len = sizeof(proto);
  return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP;
}

/* Looks for e's connection among the process's open fds (libzmq does not say which
 * fd it uses). -1 when none matches yet. */
static int kvs__cork_find_fd(kvs_cork_t *c, const kvs_cork_entry_t *e) {
  c->finds++;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1, self = dirfd(d);
  struct dirent *de;
  while (found < 0 && (de = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(de->d_name, &end, 10);
    if (*end || end == de->d_name || fd == self) continue;
    if (kvs__cork_fd_matches(e, (int)fd)) found = (int)fd;
  }
  closedir(d);
  return found;
}

/* The entry of endpoint, or a free / the stalest one reset for it. NULL when the
 * endpoint cannot be corked or every entry is busy. */
static kvs_cork_entry_t *kvs__cork_entry(kvs_cork_t *c, const char *endpoint, uint64_t now) {
  kvs_cork_entry_t *pick = NULL;
  for (size_t i = 0; i < KVS_CORK_ENTRIES; i++) {
    kvs_cork_entry_t *e = &c->e[i];
    if (e->endpoint[0] && strcmp(e->endpoint, endpoint) == 0) return e;
    bool free_slot = !e->endpoint[0] || (!e->corked && now - e->last_used_ms > KVS__CORK_STALE_MS);
    if (free_slot && (!pick || e->last_used_ms < pick->last_used_ms)) pick = e;
  }
  if (!pick || strlen(endpoint) >= KVS_CORK_ENDPOINT_MAX) return NULL;
  kvs_cork_entry_t fresh = {.fd = -1, .find_wait_ms = KVS__CORK_RETRY_MS};
  if (!kvs_cork_parse_endpoint(endpoint, &fresh.peer, &fresh.peer_len)) return NULL;
  snprintf(fresh.endpoint, sizeof(fresh.endpoint), "%s", endpoint);
  *pick = fresh;
  return pick;
}

static void kvs__cork_set(kvs_cork_entry_t *e, int on) {
  if (e->fd >= 0) (void)setsockopt(e->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
  e->corked = on;
}

void kvs_cork_run(kvs_cork_t *c, const char *endpoint, size_t bytes, size_t replies) {
  if (!c->enabled || bytes < KVS_CORK_MIN_BYTES || replies < KVS_CORK_MIN_REPLIES) return;
  uint64_t now = sq_now_ms();
  kvs_cork_entry_t *e = kvs__cork_entry(c, endpoint, now);
  if (!e || e->used) return; /* one long run per turn counts */
  e->last_used_ms = now;
  e->used = true;
  c->live |= 1u << (unsigned)(e - c->e);
  if (e->corked || e->long_turns + 1 < KVS_CORK_MIN_TURNS) return;
  /* Checked before every cork: libzmq may have reconnected (a new fd) meanwhile. */
  if (e->fd >= 0 && !kvs__cork_fd_matches(e, e->fd)) e->fd = -1;
  if (e->fd < 0) {
    if (now < e->next_find_ms) return;
    e->fd = kvs__cork_find_fd(c, e);
    if (e->fd < 0) {
      e->next_find_ms = now + e->find_wait_ms;
      e->find_wait_ms = e->find_wait_ms * 2 > KVS__CORK_RETRY_MAX_MS ? KVS__CORK_RETRY_MAX_MS
                                                                    : e->find_wait_ms * 2;
      return;
    }
    e->find_wait_ms = KVS__CORK_RETRY_MS;
  }
  kvs__cork_set(e, 1);
  c->corks++;
}

void kvs_cork_turn_end(kvs_cork_t *c) {
  for (uint32_t m = c->live; m; m &= m - 1) {
    unsigned i = (unsigned)__builtin_ctz(m);
    kvs_cork_entry_t *e = &c->e[i];
    if (e->used) {
      e->quiet_turns = 0;
      if (e->long_turns < KVS_CORK_MIN_TURNS) e->long_turns++;
    } else {
      e->long_turns = 0;
      if (e->corked && ++e->quiet_turns >= KVS_CORK_GRACE_TURNS) kvs__cork_set(e, 0);
    }
    e->used = false;
    if (!e->corked && e->long_turns == 0) c->live &= ~(1u << i);
  }
}

bool kvs_cork_any(const kvs_cork_t *c) {
  for (uint32_t m = c->live; m; m &= m - 1)
    if (c->e[__builtin_ctz(m)].corked) return true;
  return false;
}

void kvs_cork_release_all(kvs_cork_t *c) {
  for (uint32_t m = c->live; m; m &= m - 1) {
    unsigned i = (unsigned)__builtin_ctz(m);
    kvs_cork_entry_t *e = &c->e[i];
    if (e->corked) kvs__cork_set(e, 0);
    e->used = false;
    if (e->long_turns == 0) c->live &= ~(1u << i);
  }
}
