/* cache_uds: client side of the unix-socket request channel (cache_uds.h).
 *
 * Blocking I/O bounded by poll(): the caller's thread waits on the socket itself, so
 * a request costs two syscalls and one wakeup each way. Sizes come from the daemon
 * and are untrusted: a datagram's length is read with MSG_PEEK | MSG_TRUNC and
 * checked against the caller's maximum before any buffer grows.
 */
#include "cache_uds.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "sq_error.h"
#include "sq_time.h"

int cache_uds_connect(const char *dir, int *fd) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, CACHE_UDS_NAME);
  *fd = -1;
  if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) return SQ_ETOOBIG;
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  int size = CACHE_UDS_SNDBUF;
  (void)setsockopt(s, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)); /* best effort */
  if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    int rc = -errno;
    close(s);
    return rc;
  }
  *fd = s;
  return 0;
}

/* Waits for events on fd until deadline. 1 ready, SQ_ETIMEOUT, SQ_ECLOSED, -errno. */
static int cache__uds_wait(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - (int64_t)sq_now_ms();
    if (left < 0) left = 0;
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, (int)left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return SQ_ETIMEOUT;
    if (p.revents & events) return 1;
    return SQ_ECLOSED; /* POLLHUP / POLLERR without data */
  }
}

int cache_uds_send(int fd, const void *buf, size_t len, int timeout_ms) {
  int64_t deadline = (int64_t)sq_now_ms() + timeout_ms;
  for (;;) {
    ssize_t n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == (ssize_t)len) return 0;
    if (n >= 0) return -EIO; /* seqpacket sends whole datagrams or nothing */
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) return SQ_ECLOSED;
    if (errno != EAGAIN) return -errno;
    int rc = cache__uds_wait(fd, POLLOUT, deadline);
    if (rc < 0) return rc;
  }
}

static int cache__uds_sendmsg(int fd, struct iovec *iov, size_t n, size_t len) {
  struct msghdr mh = {.msg_iov = iov, .msg_iovlen = n};
  ssize_t sent;
  do sent = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  if (sent == (ssize_t)len) return 0;
  if (sent >= 0) return -EIO;
  return errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN ? SQ_ECLOSED : -errno;
}

/* Reads the one line of <dir>/<name> (at most max bytes, cap > max) into buf without
 * its line end. Its length, or -errno, SQ_EINVAL (empty, too long, or a bad path). */
static ssize_t cache__uds_read_line(const char *dir, const char *name, char *buf, size_t cap,
                                    size_t max) {
  char path[4096];
  if (cap <= max || snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
    return SQ_EINVAL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = read(fd, buf, max + 1);
  int rc = n < 0 ? -errno : 0;
  close(fd);
  if (rc) return rc;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
  if (n == 0 || (size_t)n > max) return SQ_EINVAL;
  buf[n] = '\0';
  return n;
}

int cache_uds_routing(const char *dir, char *buf, size_t cap) {
  ssize_t n = cache__uds_read_line(dir, CACHE_UDS_ROUTING_NAME, buf, cap,
                                   cap - 1 < CACHE_UDS_ROUTING_MAX ? cap - 1
                                                                   : CACHE_UDS_ROUTING_MAX);
  if (n < 0) return (int)n;
  for (ssize_t i = 0; i < n; i++)
    if (!buf[i] || !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:/,*_[]-",
                buf[i]))
      return SQ_EINVAL;
  return 0;
}

int cache_uds_reply_host(const char *dir, char *buf, size_t cap) {
  ssize_t n = cache__uds_read_line(dir, CACHE_UDS_HOST_NAME, buf, cap, CACHE_UDS_HOST_MAX);
  if (n < 0) return (int)n;
  bool v6 = buf[0] == '[' && buf[n - 1] == ']';
  for (ssize_t i = v6; i < n - v6; i++) {
    char ch = buf[i];
    bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
              (ch >= 'A' && ch <= 'Z') || ch == '.' || ch == '-' || (v6 && ch == ':');
    if (!ok) return SQ_EINVAL;
  }
  return 0;
}

int cache_uds_send_fill(int fd, const void *resp, size_t len) {
  uint8_t head[2] = {0, CACHE_UDS_FILL};
  if (len > CACHE_UDS_MAX_FILL) return -EMSGSIZE;
  struct iovec iov[2] = {{head, sizeof head}, {(void *)resp, len}};
  int rc = cache__uds_sendmsg(fd, iov, 2, len + sizeof head);
  return rc == -ENOBUFS ? -EMSGSIZE : rc;
}

int cache_uds_send_nofill(int fd) {
  uint8_t head[2] = {0, CACHE_UDS_NOFILL};
  struct iovec iov[1] = {{head, sizeof head}};
  return cache__uds_sendmsg(fd, iov, 1, sizeof head);
}

int cache_uds_recv(int fd, int timeout_ms, size_t max, sq_buf_t *out) {
  int64_t deadline = (int64_t)sq_now_ms() + timeout_ms;
  sq_buf_reset(out);
  for (;;) {
    ssize_t n = recv(fd, NULL, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
    if (n == 0) return SQ_ECLOSED; /* orderly shutdown (empty datagrams are never sent) */
    if (n > 0) {
      if ((size_t)n > max) {
        (void)recv(fd, NULL, 0, MSG_DONTWAIT); /* drop it: the stream stays in step */
        return SQ_ETOOBIG;
      }
      int rc = sq_buf_reserve(out, (size_t)n);
      if (rc) return rc;
      ssize_t got = recv(fd, out->data, (size_t)n, MSG_DONTWAIT);
      if (got != n) return got < 0 ? -errno : -EIO;
      out->len = (size_t)n;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return SQ_ECLOSED;
    if (errno != EAGAIN) return -errno;
    int rc = cache__uds_wait(fd, POLLIN, deadline);
    if (rc < 0) return rc;
  }
}
