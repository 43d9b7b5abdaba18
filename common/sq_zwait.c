/* sq_zwait: one poll(2) over ZeroMQ sockets' fds and plain fds (design note in
 * sq_zwait.h). */
#include "sq_zwait.h"

#include <errno.h>
#include <zmq.h>

#include "sq_error.h"

int sq_zwait_init(sq_zwait_t *w, void *const *socks, size_t n) {
  if (n == 0 || n > SQ_ZWAIT_MAX) return SQ_EINVAL;
  w->n = n;
  for (size_t i = 0; i < n; i++) {
    int fd = -1;
    size_t len = sizeof fd;
    if (!socks[i]) return SQ_EINVAL;
    if (zmq_getsockopt(socks[i], ZMQ_FD, &fd, &len)) return -zmq_errno();
    w->sock[i] = socks[i];
    w->pfd[i] = (struct pollfd){.fd = fd, .events = POLLIN};
    w->check[i] = true;
    w->ready[i] = false;
  }
  return 0;
}

int sq_zwait_add_fd(sq_zwait_t *w, int fd) {
  if (fd < 0 || w->n >= SQ_ZWAIT_MAX) return SQ_EINVAL;
  size_t i = w->n++;
  w->sock[i] = NULL;
  w->pfd[i] = (struct pollfd){.fd = fd, .events = POLLIN};
  w->check[i] = false;
  w->ready[i] = false;
  return (int)i;
}

static bool sq__zreadable(void *sock) {
  int ev = 0;
  size_t len = sizeof ev;
  return zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) == 0 && (ev & ZMQ_POLLIN);
}

/* The plain fds among the entries poll(2) just looked at. */
static int sq__zwait_fds_ready(sq_zwait_t *w) {
  int n = 0;
  for (size_t i = 0; i < w->n; i++)
    if (!w->sock[i]) n += (w->ready[i] = w->pfd[i].revents & (POLLIN | POLLERR | POLLHUP));
  return n;
}

/* After poll(2) returned rc: plain fds are ready by their revents; sockets are
 * checked when their fd fired, or all of them when the poll timed out. */
static int sq__zwait_after_poll(sq_zwait_t *w, int rc) {
  int n = 0;
  for (size_t i = 0; i < w->n; i++) {
    bool fired = w->pfd[i].revents & (POLLIN | POLLERR | POLLHUP);
    if (!w->sock[i]) continue;
    w->ready[i] = (rc == 0 || fired) && sq__zreadable(w->sock[i]);
    w->check[i] = false;
    n += w->ready[i];
  }
  return n + sq__zwait_fds_ready(w);
}

int sq_zwait_wait(sq_zwait_t *w, int timeout_ms) {
  int n = 0;
  bool fds = false;
  for (size_t i = 0; i < w->n; i++) {
    if (!w->sock[i]) {
      fds = true;
      continue;
    }
    w->ready[i] = (w->check[i] || w->ready[i]) && sq__zreadable(w->sock[i]);
    w->check[i] = false;
    n += w->ready[i];
  }
  if (n && !fds) return n;
  /* With a socket ready the poll only looks, so that plain fds that are ready too
   * are reported with it. */
  int rc = poll(w->pfd, (nfds_t)w->n, n ? 0 : timeout_ms);
  if (rc < 0) {
    if (errno != EINTR) return -errno;
    for (size_t i = 0; i < w->n; i++) w->pfd[i].revents = 0;
    rc = 0;
  }
  if (n) return n + sq__zwait_fds_ready(w);
  return sq__zwait_after_poll(w, rc);
}

void sq_zwait_touch(sq_zwait_t *w, size_t i) {
  if (i < w->n && w->sock[i]) w->check[i] = true;
}

void sq_zwait_drained(sq_zwait_t *w, size_t i) {
  if (i < w->n && w->sock[i]) w->check[i] = w->ready[i] = false;
}
