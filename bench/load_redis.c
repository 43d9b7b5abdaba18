/* load_redis: the RESP side of kvs_load -- SET/GET against a Redis server.
 *
 * Each logical client is one TCP connection with up to `depth` commands in flight:
 * after every read the client tops its pipeline up again and writes all new commands
 * in one write, exactly what a pipelining Redis client does. Replies come back in
 * order, so a client's send times form a FIFO ring.
 *
 *   client:  [ out: commands not yet written ]  -> socket -> redis-server
 *            [ in:  reply bytes not yet parsed ] <- socket <-
 *            [ sent_ns ring: head .. head+count ] one per command in flight
 *
 * Everything from the server is untrusted: reply lengths are bounded by
 * LOAD_MAX_VALUE, anything that is not a reply the command can get is a PROTO error
 * and ends the client (its stream can no longer be trusted). A reply missing after
 * the timeout also ends the client: the stream would be out of step otherwise.
 * Threads: one epoll loop per load thread; the clients belong to it.
 */
#include "load.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "sq_buf.h"

#define REDIS__READ_CHUNK 65536

typedef struct {
  int fd;
  bool dead;
  load_out_t out;     /* commands not yet written */
  sq_buf_t in;
  uint64_t *sent_ns;  /* ring of depth entries */
  uint32_t head, count;
} redis__client_t;

typedef struct {
  load_thread_t *t;
  int ep;
  int n;
  uint32_t depth;
  redis__client_t *clients;
  uint64_t outstanding;
  const uint8_t *value;
} redis__loop_t;

/* Appends one command for key to the client's output and starts its timer. */
static int redis__queue(redis__loop_t *lp, redis__client_t *c, uint64_t key,
                        uint64_t now) {
  char name[LOAD_KEY_MAX], head[96];
  int klen = load_key_name(key, name);
  int hlen;
  int rc;
  if (lp->t->op == LOAD_OP_PUT)
    hlen = snprintf(head, sizeof(head), "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%llu\r\n", klen,
                    name, (unsigned long long)lp->t->opts->value_size);
  else
    hlen = snprintf(head, sizeof(head), "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", klen, name);
  rc = sq_buf_append(&c->out.buf, head, (size_t)hlen);
  if (rc == 0 && lp->t->op == LOAD_OP_PUT) {
    rc = sq_buf_append(&c->out.buf, lp->value, lp->t->opts->value_size);
    if (rc == 0) rc = sq_buf_append(&c->out.buf, "\r\n", 2);
  }
  if (rc != 0) return rc;
  c->sent_ns[(c->head + c->count) % lp->depth] = now;
  c->count++;
  lp->outstanding++;
  return 0;
}

/* Counts every command still in flight on c as err and closes the client. */
static void redis__kill(redis__loop_t *lp, redis__client_t *c, int err) {
  if (c->dead) return;
  lp->t->errors[err] += c->count;
  lp->outstanding -= c->count;
  c->count = 0;
  c->dead = true;
  epoll_ctl(lp->ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
}

/* Writes the client's pending commands (load_out_flush); a failure ends the client. */
static void redis__flush(redis__loop_t *lp, redis__client_t *c) {
  if (c->dead) return;
  if (load_out_flush(&c->out, c->fd, lp->ep, EPOLLIN, (uint32_t)(c - lp->clients)) != 0)
    redis__kill(lp, c, LOAD_ERR_SEND);
}

/* Tops the client's pipeline up to depth, then writes. */
static void redis__fill(redis__loop_t *lp, redis__client_t *c, uint64_t now) {
  uint64_t key;
  while (!c->dead && c->count < lp->depth && load_issuing(lp->t, now) &&
         load_next_key(lp->t, &key)) {
    if (redis__queue(lp, c, key, now) != 0) {
      redis__kill(lp, c, LOAD_ERR_SEND);
      return;
    }
  }
  redis__flush(lp, c);
}

/* Parses a decimal line ending in \r\n starting at p (bounded by end). Returns bytes
 * consumed including \r\n, 0 when incomplete, -1 when malformed. */
static long redis__int_line(const uint8_t *p, const uint8_t *end, long long *val) {
  const uint8_t *cr = memchr(p, '\r', (size_t)(end - p));
  if (!cr || cr + 1 >= end) return (end - p > 24) ? -1 : 0;
  if (cr[1] != '\n' || cr == p || cr - p > 20) return -1;
  char tmp[24];
  memcpy(tmp, p, (size_t)(cr - p));
  tmp[cr - p] = '\0';
  char *e = NULL;
  errno = 0;
  long long v = strtoll(tmp, &e, 10);
  if (errno || *e) return -1;
  *val = v;
  return (long)(cr + 2 - p);
}

/* Parses one reply at p. Returns its length (result in *err: -1 ok, or a kind), 0 if
 * incomplete, -1 if the bytes are not a reply to our command. */
static long redis__reply(const redis__loop_t *lp, const uint8_t *p, const uint8_t *end,
                         int *err) {
  if (p >= end) return 0;
  uint8_t type = p[0];
  long long v = 0;
  if (type == '+' || type == '-') {
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return (end - p > 4096) ? -1 : 0;
    bool ok = type == '+' && lp->t->op == LOAD_OP_PUT;
    *err = type == '-' ? LOAD_ERR_SERVER : (ok ? -1 : LOAD_ERR_PROTO);
    return (long)(nl + 1 - p);
  }
  if (type != '$' || lp->t->op != LOAD_OP_GET) return -1;
  long n = redis__int_line(p + 1, end, &v);
  if (n <= 0) return n;
  if (v == -1) {
    *err = LOAD_ERR_KEY_DNE;
    return 1 + n;
  }
  if (v < 0 || v > (long long)LOAD_MAX_VALUE) return -1;
  if (end - (p + 1 + n) < v + 2) return 0;
  if (p[1 + n + v] != '\r' || p[1 + n + v + 1] != '\n') return -1;
  *err = (uint64_t)v == lp->t->opts->value_size ? -1 : LOAD_ERR_BAD_VALUE;
  return 1 + n + (long)v + 2;
}

/* Reads everything available, completes every whole reply, compacts the input. */
static void redis__read(redis__loop_t *lp, redis__client_t *c) {
  for (;;) {
    if (sq_buf_reserve(&c->in, REDIS__READ_CHUNK) != 0) {
      redis__kill(lp, c, LOAD_ERR_PROTO);
      return;
    }
    ssize_t r = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r <= 0) {
      redis__kill(lp, c, r == 0 ? LOAD_ERR_SERVER : LOAD_ERR_PROTO);
      return;
    }
    c->in.len += (size_t)r;
  }
  uint64_t now = load_now_ns();
  size_t off = 0;
  while (off < c->in.len) {
    int err = -1;
    long n = redis__reply(lp, c->in.data + off, c->in.data + c->in.len, &err);
    if (n == 0) break;
    if (n < 0 || c->count == 0) {
      redis__kill(lp, c, LOAD_ERR_PROTO);
      return;
    }
    load_complete(lp->t, err, now - c->sent_ns[c->head], now);
    c->head = (c->head + 1) % lp->depth;
    c->count--;
    lp->outstanding--;
    off += (size_t)n;
  }
  memmove(c->in.data, c->in.data + off, c->in.len - off);
  c->in.len -= off;
}

/* Ends every client whose oldest command is older than the timeout. */
static void redis__check_timeouts(redis__loop_t *lp, uint64_t now) {
  for (int i = 0; i < lp->n; i++) {
    redis__client_t *c = &lp->clients[i];
    if (!c->dead && c->count && now > c->sent_ns[c->head] &&
        now - c->sent_ns[c->head] > lp->t->timeout_ns)
      redis__kill(lp, c, LOAD_ERR_TIMEOUT);
  }
}

/* Connects every client and registers it with epoll. */
static int redis__open(redis__loop_t *lp) {
  const load_opts_t *o = lp->t->opts;
  for (int i = 0; i < lp->n; i++) {
    redis__client_t *c = &lp->clients[i];
    c->fd = -1;
    c->dead = true;
    c->sent_ns = calloc(lp->depth, sizeof(uint64_t));
    if (!c->sent_ns) return -ENOMEM;
    int rc = load_tcp_connect(o->host, (int)o->port, &c->fd);
    if (rc != 0) return rc;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(lp->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) return -errno;
    c->dead = false;
  }
  return 0;
}

/* The event loop: issue until the phase ends, then drain for LOAD_DRAIN_NS. */
static void redis__loop(redis__loop_t *lp) {
  struct epoll_event evs[256];
  uint64_t now = load_now_ns(), last_check = now, drain_end = 0;
  for (int i = 0; i < lp->n; i++) redis__fill(lp, &lp->clients[i], now);
  for (;;) {
    now = load_now_ns();
    if (!load_issuing(lp->t, now)) {
      if (lp->outstanding == 0) break;
      if (drain_end == 0) drain_end = now + LOAD_DRAIN_NS;
      if (now > drain_end) break;
    }
    int n = epoll_wait(lp->ep, evs, 256, 10);
    for (int i = 0; i < n; i++) {
      redis__client_t *c = &lp->clients[evs[i].data.u32];
      if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) redis__read(lp, c);
      if (!c->dead) redis__fill(lp, c, load_now_ns());
    }
    now = load_now_ns();
    if (now - last_check > 10000000ull) {
      redis__check_timeouts(lp, now);
      last_check = now;
    }
  }
  for (int i = 0; i < lp->n; i++) redis__kill(lp, &lp->clients[i], LOAD_ERR_TIMEOUT);
}

int load_redis_run(load_thread_t *t) {
  redis__loop_t lp = {.t = t, .ep = -1, .n = t->client_hi - t->client_lo,
                      .depth = (uint32_t)t->opts->depth};
  uint8_t *value = NULL;
  int rc = 0;
  lp.clients = calloc((size_t)(lp.n > 0 ? lp.n : 1), sizeof(*lp.clients));
  value = malloc(t->opts->value_size ? t->opts->value_size : 1);
  if (!lp.clients || !value) {
    rc = -ENOMEM;
    goto out;
  }
  for (uint64_t i = 0; i < t->opts->value_size; i++) value[i] = (uint8_t)('a' + i % 26);
  lp.value = value;
  lp.ep = epoll_create1(EPOLL_CLOEXEC);
  if (lp.ep < 0) {
    rc = -errno;
    goto out;
  }
  rc = redis__open(&lp);
  if (rc != 0) {
    snprintf(t->fatal_msg, sizeof(t->fatal_msg), "cannot connect to redis at %s:%lld: %s",
             t->opts->host, (long long)t->opts->port, strerror(-rc));
    goto out;
  }
  redis__loop(&lp);
out:
  for (int i = 0; lp.clients && i < lp.n; i++) {
    if (lp.clients[i].fd >= 0) close(lp.clients[i].fd);
    sq_buf_free(&lp.clients[i].out.buf);
    sq_buf_free(&lp.clients[i].in);
    free(lp.clients[i].sent_ns);
  }
  free(lp.clients);
  free(value);
  if (lp.ep >= 0) close(lp.ep);
  t->fatal = rc;
  return rc;
}
