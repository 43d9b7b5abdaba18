/* zmtp: ZMTP 3.0 greeting, READY handshake and framing (see zmtp.h).
 *
 * Greeting (64 bytes each way): signature FF 00..01 7F, version 3.0, mechanism
 * "NULL", as-server 0, zero filler. Then each side sends a READY command whose
 * Socket-Type property names its socket type; a libzmq peer checks that the pair is
 * valid (PUSH-PULL) and otherwise answers with an ERROR command and closes.
 * Frames: a flags byte (MORE 0x01, LONG 0x02, COMMAND 0x04), a 1-byte or, when LONG,
 * an 8-byte big-endian size, then the body.
 */
#include "zmtp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sq_error.h"
#include "sq_time.h"

#define ZMTP__GREETING 64
#define ZMTP__MORE 0x01
#define ZMTP__LONG 0x02
#define ZMTP__COMMAND 0x04
#define ZMTP__READY_MAX 4096 /* a READY or ERROR command we accept */

/* The 8-byte big-endian size of a LONG frame, from the bytes after its flags. */
static uint64_t zmtp__long_size(const uint8_t *p) {
  uint64_t size = 0;
  for (int i = 0; i < 8; i++) size = size << 8 | p[i];
  return size;
}

/* Waits until fd is ready for `events` or the deadline passes (-ETIMEDOUT). */
static int zmtp__wait(int fd, short events, uint64_t deadline) {
  for (;;) {
    uint64_t now = sq_now_ms();
    if (now >= deadline) return -ETIMEDOUT;
    int64_t left = (int64_t)(deadline - now);
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, (int)left);
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return -errno;
  }
}

/* Moves exactly len bytes through the non-blocking fd before the deadline. */
static int zmtp__io(int fd, void *buf, size_t len, bool writing, uint64_t deadline) {
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = writing ? send(fd, p, len, MSG_NOSIGNAL) : read(fd, p, len);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n == 0) return -ECONNRESET; /* the peer closed during the handshake */
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    int rc = zmtp__wait(fd, writing ? POLLOUT : POLLIN, deadline);
    if (rc != 0) return rc;
  }
  return 0;
}

static int zmtp__send_greeting_and_ready(int fd, const char *self, uint64_t deadline) {
  uint8_t g[ZMTP__GREETING] = {0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0};
  memcpy(g + 12, "NULL", 4);
  uint8_t ready[64];
  size_t tlen = strlen(self), n = 0;
  ready[n++] = ZMTP__COMMAND;
  ready[n++] = (uint8_t)(6 + 1 + 11 + 4 + tlen);
  memcpy(ready + n, "\x05READY\x0bSocket-Type", 18);
  n += 18;
  uint8_t be[4] = {0, 0, 0, (uint8_t)tlen};
  memcpy(ready + n, be, 4);
  n += 4;
  memcpy(ready + n, self, tlen);
  n += tlen;
  int rc = zmtp__io(fd, g, sizeof(g), true, deadline);
  if (rc == 0) rc = zmtp__io(fd, ready, n, true, deadline);
  return rc;
}

static int zmtp__check_greeting(const uint8_t *g, char *err, size_t errlen) {
  if (g[0] != 0xff || g[9] != 0x7f) {
    snprintf(err, errlen, "the peer does not speak ZMTP (no ZeroMQ greeting)");
    return SQ_EPROTO;
  }
  if (g[10] < 3) {
    snprintf(err, errlen, "the peer speaks ZMTP %u.%u; 3.0 or later is needed", g[10], g[11]);
    return SQ_EPROTO;
  }
  if (memcmp(g + 12, "NULL", 5) != 0) {
    snprintf(err, errlen, "the peer asks for a security mechanism other than NULL");
    return SQ_EPROTO;
  }
  return 0;
}

/* Reads the peer's first command (READY, or ERROR when it refused us). */
static int zmtp__read_command(int fd, uint8_t *body, size_t *len, uint64_t deadline,
                              char *err, size_t errlen) {
  uint8_t head[9];
  int rc = zmtp__io(fd, head, 2, false, deadline);
  if (rc != 0) return rc;
  uint64_t size = head[1];
  if (head[0] & ZMTP__LONG) {
    rc = zmtp__io(fd, head + 2, 7, false, deadline);
    if (rc != 0) return rc;
    size = zmtp__long_size(head + 1);
  }
  if (!(head[0] & ZMTP__COMMAND) || size > ZMTP__READY_MAX) {
    snprintf(err, errlen, "the peer's first frame is not a READY command");
    return SQ_EPROTO;
  }
  *len = (size_t)size;
  return zmtp__io(fd, body, *len, false, deadline);
}

/* Checks a READY body's Socket-Type against `peer` (an ERROR body's reason goes to
 * err). */
static int zmtp__check_ready(const uint8_t *b, size_t len, const char *peer, char *err,
                             size_t errlen) {
  if (len >= 6 && memcmp(b, "\x05" "ERROR", 6) == 0) {
    size_t rlen = len > 6 ? b[6] : 0;
    if (rlen > len - 7) rlen = len > 7 ? len - 7 : 0;
    snprintf(err, errlen, "the peer refused the connection: %.*s", (int)rlen, b + 7);
    return SQ_EPROTO;
  }
  if (len < 6 || memcmp(b, "\x05READY", 6) != 0) {
    snprintf(err, errlen, "the peer's first command is not READY");
    return SQ_EPROTO;
  }
  for (size_t i = 6; i < len;) {
    size_t nlen = b[i++];
    if (nlen + 4 > len - i) break;
    const uint8_t *name = b + i;
    i += nlen;
    uint32_t vlen = (uint32_t)b[i] << 24 | (uint32_t)b[i + 1] << 16 | (uint32_t)b[i + 2] << 8 |
                    b[i + 3];
    i += 4;
    if (vlen > len - i) break;
    if (nlen == 11 && strncasecmp((const char *)name, "Socket-Type", 11) == 0) {
      if (vlen == strlen(peer) && memcmp(b + i, peer, vlen) == 0) return 0;
      snprintf(err, errlen, "the peer is a %.*s socket; a %s socket was expected",
               (int)vlen, b + i, peer);
      return SQ_EPROTO;
    }
    i += vlen;
  }
  snprintf(err, errlen, "the peer's READY names no valid Socket-Type");
  return SQ_EPROTO;
}

int zmtp_handshake(int fd, const char *self, const char *peer, char *err, size_t errlen) {
  uint64_t deadline = sq_now_ms() + ZMTP_HANDSHAKE_MS;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
  uint8_t g[ZMTP__GREETING], body[ZMTP__READY_MAX];
  size_t len = 0;
  err[0] = '\0';
  int rc = zmtp__send_greeting_and_ready(fd, self, deadline);
  if (rc == 0) rc = zmtp__io(fd, g, sizeof(g), false, deadline);
  if (rc == 0) rc = zmtp__check_greeting(g, err, errlen);
  if (rc == 0) rc = zmtp__read_command(fd, body, &len, deadline, err, errlen);
  if (rc == 0) rc = zmtp__check_ready(body, len, peer, err, errlen);
  if (rc == -ECONNRESET && err[0] == '\0') {
    /* libzmq closes without a word when our socket type does not pair with its own */
    snprintf(err, errlen, "the peer closed the connection during the ZMTP handshake: it is "
             "not a ZeroMQ %s socket", peer);
    rc = SQ_EPROTO;
  }
  if (rc != 0 && err[0] == '\0')
    snprintf(err, errlen, "ZMTP handshake: %s", rc == -ETIMEDOUT ? "the peer did not answer "
             "within 5 s" : sq_strerror(rc));
  return rc;
}

size_t zmtp_frame_header(uint8_t *out, uint64_t len) {
  if (len <= 255) {
    out[0] = 0;
    out[1] = (uint8_t)len;
    return 2;
  }
  out[0] = ZMTP__LONG;
  for (int i = 8; i >= 1; i--, len >>= 8) out[i] = (uint8_t)len;
  return 9;
}

int zmtp_next_frame(const uint8_t *buf, size_t len, uint64_t max_body, const uint8_t **body,
                    uint64_t *body_len, bool *command, size_t *used) {
  if (len < 2) return 0;
  uint8_t flags = buf[0];
  if (flags & ~(ZMTP__MORE | ZMTP__LONG | ZMTP__COMMAND) || flags & ZMTP__MORE)
    return SQ_EPROTO;
  size_t head = 2;
  uint64_t size = buf[1];
  if (flags & ZMTP__LONG) {
    if (len < 9) return 0;
    head = 9;
    size = zmtp__long_size(buf + 1);
  }
  if (size > max_body) return SQ_EPROTO;
  if (len - head < size) return 0;
  *body = buf + head;
  *body_len = size;
  *command = (flags & ZMTP__COMMAND) != 0;
  *used = head + (size_t)size;
  return 1;
}
