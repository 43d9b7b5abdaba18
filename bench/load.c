/* load: helpers shared by the protocol loops (clock, keys, randomness, accounting).
 * Everything here works on one load_thread_t and is called only by its thread. */
#include "load.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

/* host:port resolved for TCP (the first address); NULL when it does not resolve. */
static struct addrinfo *load__resolve(const char *host, int port, bool passive) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = passive ? AI_PASSIVE : 0};
  struct addrinfo *res = NULL;
  char portstr[16];
  snprintf(portstr, sizeof(portstr), "%d", port);
  if (getaddrinfo(host, portstr, &hints, &res) != 0) return NULL;
  return res;
}

/* Waits for a non-blocking connect on fd to finish within timeout_ms. */
static int load__connect_wait(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  int n;
  do {
    n = poll(&p, 1, timeout_ms);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return -ETIMEDOUT;
  if (n < 0) return -errno;
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
  return -err;
}

int load_tcp_connect(const char *host, int port, int *out) {
  struct addrinfo *res = load__resolve(host, port, false);
  int fd = -1, rc = 0, one = 1;
  if (!res) return -EHOSTUNREACH;
  fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) rc = -errno;
  else if (connect(fd, res->ai_addr, res->ai_addrlen) < 0)
    rc = errno == EINPROGRESS ? load__connect_wait(fd, LOAD_CONNECT_TIMEOUT_MS) : -errno;
  if (rc == 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  freeaddrinfo(res);
  if (rc != 0) {
    if (fd >= 0) close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}

int load_tcp_listen(const char *host, int *out, int *port) {
  struct addrinfo *res = load__resolve(host, 0, true);
  struct sockaddr_storage sa;
  socklen_t salen = sizeof(sa);
  int fd = -1, rc = 0;
  if (!res) return -EHOSTUNREACH;
  fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &salen) < 0)
    rc = -errno;
  freeaddrinfo(res);
  if (rc != 0) {
    if (fd >= 0) close(fd);
    return rc;
  }
  *port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                         : ((struct sockaddr_in *)&sa)->sin_port);
  *out = fd;
  return 0;
}

/* Writes data[*off..len) to the non-blocking socket fd until all is written or the
 * socket is full, advancing *off. 0 or negative errno. */
static int load__write_pending(int fd, const uint8_t *data, size_t len, size_t *off) {
  while (*off < len) {
    ssize_t w = send(fd, data + *off, len - *off, MSG_NOSIGNAL); /* no SIGPIPE */
    if (w > 0) *off += (size_t)w;
    else if (w < 0 && errno == EINTR) continue;
    else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    else return w < 0 ? -errno : -EPIPE;
  }
  return 0;
}

int load_out_flush(load_out_t *out, int fd, int ep, uint32_t events, uint32_t tag) {
  int rc = load__write_pending(fd, out->buf.data, out->buf.len, &out->off);
  if (rc != 0) return rc;
  if (out->off == out->buf.len) {
    sq_buf_reset(&out->buf);
    out->off = 0;
  }
  bool want = out->off < out->buf.len;
  if (want != out->want_out) {
    struct epoll_event ev = {.events = events | (want ? EPOLLOUT : 0u), .data.u32 = tag};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) return -errno;
    out->want_out = want;
  }
  return 0;
}
