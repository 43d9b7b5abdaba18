/* daemon_uds: squall-cache's side of the unix-socket request channel (cache_uds.h).
 *
 * The daemon listens on <dir>/requests.sock (SOCK_SEQPACKET, non-blocking) and keeps
 * up to CACHE_UDS_MAX_CONNS connections in a fixed table; the loop polls the listener
 * and every connection fd in its one zmq_poll. A pending GET names its connection by
 * id = generation << 32 | (slot + 1), so a reply for a connection that closed (and
 * whose slot was reused) is recognised and dropped, never sent to a stranger.
 *
 * Each datagram is one KeyRequest GET, at most CACHE_UDS_MAX_REQUEST bytes (a longer
 * one is truncated by the kernel, detected with MSG_TRUNC and refused), or a FILL /
 * NOFILL (first byte 0, at most CACHE_UDS_MAX_FILL + 2 bytes) handing back a direct
 * miss's KVS answer. Everything
 * read is untrusted and goes through the same checks as the ZeroMQ sockets
 * (cache__handle_get). Replies are sent with MSG_DONTWAIT: an executor that stopped
 * reading loses its replies (counted in reply_drops), the daemon never blocks.
 *
 * An accept that fails for lack of fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM)
 * leaves the connection in the listen queue, so the listener stays readable: the
 * listener is then left out of the poll for CACHE_UDS_ACCEPT_PAUSE_MS (counted in
 * accept_pauses, warned once per episode) instead of the loop spinning. A connection
 * made meanwhile waits in the queue (its requests too, within its client's timeout)
 * until fds are freed; one whose connect fails uses the ZeroMQ sockets.
 *
 * Threads: the daemon loop only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cache_uds.h"
#include "daemon_int.h"
#include "sq_error.h"
#include "sq_proto.h"
#include "sq_time.h"

void cache__uds_init(cache__daemon_t *d) {
  d->uds_fd = -1;
  d->uds_resume_ms = 0;
  d->uds_starved = false;
  for (size_t i = 0; i < CACHE_UDS_MAX_CONNS; i++) d->conns[i].fd = -1;
}

/* Writes the line `text` to <dir>/<name> atomically (a temporary file, then rename):
 * reply-host and kvs-routing (cache_uds.h). A failure only keeps executors on
 * loopback replies, or missing through the daemon (logged). */
static void cache__uds_write_file(cache__daemon_t *d, const char *dir, const char *name,
                                  const char *text, size_t max) {
  char tmp[4096], path[4096];
  int fd = -1;
  if (!text || !text[0] || strlen(text) > max ||
      snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= (int)sizeof tmp ||
      snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
    goto out;
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  size_t n = strlen(text);
  if (fd < 0 || write(fd, text, n) != (ssize_t)n || write(fd, "\n", 1) != 1 ||
      rename(tmp, path) != 0) {
    sq_log_warn(d->log, "cannot write %s: %s", path, strerror(errno));
    (void)unlink(tmp);
  }
out:
  if (fd >= 0) close(fd);
}

int cache__uds_open(cache__daemon_t *d, const char *dir, char *why, size_t cap) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, CACHE_UDS_NAME);
  if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
    snprintf(why, cap, "cache directory name too long for %s", CACHE_UDS_NAME);
    return SQ_ETOOBIG;
  }
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  (void)unlink(sa.sun_path); /* a previous daemon's; the writer lock makes us the owner */
  if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(s, 64) != 0) {
    int rc = -errno;
    snprintf(why, cap, "cannot listen on %s: %s", sa.sun_path, strerror(-rc));
    close(s);
    return rc;
  }
  d->uds_fd = s;
  cache__uds_write_file(d, dir, CACHE_UDS_HOST_NAME, d->cfg->public_ip, CACHE_UDS_HOST_MAX);
  cache__uds_write_file(d, dir, CACHE_UDS_ROUTING_NAME, d->cfg->kvs, CACHE_UDS_ROUTING_MAX);
  return 0;
}

void cache__uds_close(cache__daemon_t *d) {
  for (size_t i = 0; i < CACHE_UDS_MAX_CONNS; i++)
    if (d->conns[i].fd >= 0) close(d->conns[i].fd);
  for (size_t i = 0; i < CACHE_UDS_MAX_CONNS; i++) d->conns[i].fd = -1;
  if (d->uds_fd >= 0) close(d->uds_fd);
  d->uds_fd = -1;
  sq_buf_free(&d->uds_in);
  sq_buf_free(&d->uds_out);
}

static cache__conn_t *cache__conn_find(cache__daemon_t *d, uint64_t id) {
  uint32_t slot = (uint32_t)id;
  if (slot == 0 || slot > CACHE_UDS_MAX_CONNS) return NULL;
  cache__conn_t *c = &d->conns[slot - 1];
  return (c->fd >= 0 && c->gen == (uint32_t)(id >> 32)) ? c : NULL;
}

size_t cache__uds_room(cache__daemon_t *d, uint64_t id) {
  cache__conn_t *c = cache__conn_find(d, id);
  return c ? c->max_dgram : 0;
}

static void cache__conn_close(cache__conn_t *c) {
  close(c->fd);
  c->fd = -1;
  c->gen++; /* replies still pending for it now find nothing */
}

/* Notes an accept's result err (-errno, 0 = accepted): out of fds or memory
 * pauses the listener (see the header); anything else ends such an episode. */
static void cache__uds_accept_result(cache__daemon_t *d, int err) {
  if (err != -EMFILE && err != -ENFILE && err != -ENOBUFS && err != -ENOMEM) {
    if (d->uds_starved)
      sq_log_info(d->log, "accepting executor connections on %s again", CACHE_UDS_NAME);
    d->uds_starved = false;
    return;
  }
  d->c.accept_pauses++;
  d->uds_resume_ms = (int64_t)sq_now_ms() + CACHE_UDS_ACCEPT_PAUSE_MS;
  if (!d->uds_starved)
    sq_log_warn(d->log, "cannot accept executor connections on %s: %s; retrying every %d ms"
                " (new connections wait in the queue)", CACHE_UDS_NAME, strerror(-err),
                CACHE_UDS_ACCEPT_PAUSE_MS);
  d->uds_starved = true;
}

static void cache__uds_accept(cache__daemon_t *d) {
  for (;;) {
    int fd = accept4(d->uds_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    cache__uds_accept_result(d, fd < 0 ? -errno : 0);
    if (fd < 0) return; /* EAGAIN, or a transient error: the next poll retries */
    size_t i = 0;
    while (i < CACHE_UDS_MAX_CONNS && d->conns[i].fd >= 0) i++;
    if (i == CACHE_UDS_MAX_CONNS) {
      sq_log_warn(d->log, "refused an executor connection: %d already open",
                  CACHE_UDS_MAX_CONNS);
      close(fd); /* its client falls back to the ZeroMQ sockets */
      continue;
    }
    int size = CACHE_UDS_SNDBUF;
    socklen_t sl = sizeof(size);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &sl) != 0 || size < 4096) size = 4096;
    d->conns[i].fd = fd;
    d->conns[i].max_dgram = (size_t)size - 1024; /* the kernel wants room for its header */
  }
}

int cache__uds_reply(cache__daemon_t *d, uint64_t id, const KeyResponse *resp) {
  cache__conn_t *c = cache__conn_find(d, id);
  if (!c) return SQ_ECLOSED;
  size_t len = key_response__get_packed_size(resp);
  if (len > c->max_dgram) return SQ_ETOOBIG;
  sq_buf_reset(&d->uds_out);
  int rc = sq_buf_reserve(&d->uds_out, len);
  if (rc) return rc;
  key_response__pack(resp, d->uds_out.data);
  ssize_t n = send(c->fd, d->uds_out.data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n == (ssize_t)len) return 0;
  rc = n < 0 ? -errno : -EIO;
  if (rc == -EPIPE || rc == -ECONNRESET) cache__conn_close(c);
  return rc;
}

/* Reads and handles up to a batch of datagrams from connection i. */
static void cache__uds_read(cache__daemon_t *d, size_t i) {
  cache__conn_t *c = &d->conns[i];
  uint64_t id = ((uint64_t)c->gen << 32) | (uint64_t)(i + 1);
  const size_t cap = CACHE_UDS_MAX_FILL + 2; /* requests are smaller: checked below */
  if (!d->uds_in.data && sq_buf_reserve(&d->uds_in, cap) != 0) return;
  for (int k = 0; k < 64 && c->fd >= 0; k++) {
    ssize_t n = recv(c->fd, d->uds_in.data, cap, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) { /* EOF or a broken connection: its pending replies will be dropped */
      cache__conn_close(c);
      return;
    }
    if (d->uds_in.data[0] == 0 && n >= 2 && (size_t)n <= cap) { /* FILL / NOFILL */
      cache__handle_fill(d, d->uds_in.data[1], d->uds_in.data + 2, (size_t)n - 2, id);
      continue;
    }
    if ((size_t)n > CACHE_UDS_MAX_REQUEST) { /* the kernel cut it: refuse, keep serving */
      d->c.bad_requests++;
      sq_log_warn(d->log, "request of %zd bytes on %s refused (max %zu)", n, CACHE_UDS_NAME,
                  CACHE_UDS_MAX_REQUEST);
      continue;
    }
    KeyRequest *req = NULL;
    int rc = sq_proto_unpack(&key_request__descriptor, NULL, d->uds_in.data, (size_t)n,
                             CACHE_UDS_MAX_REQUEST, (ProtobufCMessage **)&req);
    if (rc) {
      d->c.bad_requests++;
      sq_log_warn(d->log, "undecodable request on %s dropped: %s", CACHE_UDS_NAME,
                  sq_strerror(rc));
      continue;
    }
    cache__handle_get(d, req, id);
    key_request__free_unpacked(req, NULL);
  }
}

size_t cache__uds_items(cache__daemon_t *d, zmq_pollitem_t *items, int64_t now) {
  size_t n = 0;
  if (d->uds_fd < 0) return 0; /* no listener: no connections either */
  short ev = d->uds_resume_ms > now ? 0 : ZMQ_POLLIN; /* paused: keeps item 0 in place */
  items[n++] = (zmq_pollitem_t){NULL, d->uds_fd, ev, 0};
  for (size_t i = 0; i < CACHE_UDS_MAX_CONNS; i++) {
    if (d->conns[i].fd < 0) continue;
    d->uds_polled[n] = i;
    items[n++] = (zmq_pollitem_t){NULL, d->conns[i].fd, ZMQ_POLLIN, 0};
  }
  return n;
}

void cache__uds_serve(cache__daemon_t *d, const zmq_pollitem_t *items, size_t n) {
  for (size_t k = 1; k < n; k++)
    if (items[k].revents && d->conns[d->uds_polled[k]].fd == items[k].fd)
      cache__uds_read(d, d->uds_polled[k]);
  if (n && items[0].revents) cache__uds_accept(d);
}
