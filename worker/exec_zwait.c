/* exec_zwait: one poll(2) over ZeroMQ sockets' fds (design note in exec_zwait.h). */
#include "exec_zwait.h"

#include <errno.h>
#include <zmq.h>

#include "sq_error.h"

int exec_zwait_init(exec_zwait_t *w, void *const *socks, size_t n) {
  if (n == 0 || n > EXEC_ZWAIT_MAX) return SQ_EINVAL;
  w->n = n;
  for (size_t i = 0; i < n; i++) {
    int fd = -1;
    size_t len = sizeof fd;
    if (zmq_getsockopt(socks[i], ZMQ_FD, &fd, &len)) return -zmq_errno();
    w->sock[i] = socks[i];
    w->pfd[i] = (struct pollfd){.fd = fd, .events = POLLIN};
    w->check[i] = true;
    w->ready[i] = false;
  }
  return 0;
}

static bool exec__zreadable(void *sock) {
  int ev = 0;
  size_t len = sizeof ev;
  return zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) == 0 && (ev & ZMQ_POLLIN);
}

int exec_zwait_wait(exec_zwait_t *w, int timeout_ms) {
  for (size_t i = 0; i < w->n; i++) w->check[i] = w->check[i] || w->ready[i];
  for (int pass = 0;; pass++) {
    int n = 0;
    for (size_t i = 0; i < w->n; i++) {
      w->ready[i] = w->check[i] && exec__zreadable(w->sock[i]);
      w->check[i] = false;
      n += w->ready[i];
    }
    if (n || pass) return n;
    int rc = poll(w->pfd, (nfds_t)w->n, timeout_ms);
    if (rc < 0) return errno == EINTR ? 0 : -errno;
    for (size_t i = 0; i < w->n; i++)
      w->check[i] = rc == 0 || (w->pfd[i].revents & (POLLIN | POLLERR));
  }
}

void exec_zwait_touch(exec_zwait_t *w, size_t i) {
  if (i < w->n) w->check[i] = true;
}
