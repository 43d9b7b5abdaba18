/* sq_buf: growable byte buffer (see sq_buf.h). */
#include "sq_buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int sq_buf_reserve(sq_buf_t *buf, size_t extra) {
  if (extra > SIZE_MAX - buf->len) return -ENOMEM;
  size_t need = buf->len + extra;
  if (need <= buf->cap) return 0;
  size_t cap = buf->cap ? buf->cap : 64;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  uint8_t *data = realloc(buf->data, cap);
  if (!data) return -ENOMEM;
  buf->data = data;
  buf->cap = cap;
  return 0;
}

int sq_buf_append(sq_buf_t *buf, const void *src, size_t n) {
  if (n == 0) return 0;
  int rc = sq_buf_reserve(buf, n);
  if (rc) return rc;
  memcpy(buf->data + buf->len, src, n);
  buf->len += n;
  return 0;
}

void sq_buf_reset(sq_buf_t *buf) { buf->len = 0; }

void sq_buf_free(sq_buf_t *buf) {
  if (!buf) return;
  free(buf->data);
  buf->data = NULL;
  buf->len = buf->cap = 0;
}

uint8_t *sq_buf_take(sq_buf_t *buf, size_t *len) {
  uint8_t *data = buf->data;
  *len = buf->len;
  buf->data = NULL;
  buf->len = buf->cap = 0;
  return data;
}
