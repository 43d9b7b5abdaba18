/* cache_blob: encode and parse the squall object blob (layout in cache_blob.h).
 *
 * Integers are little-endian and read with memcpy, since neither LMDB values nor the
 * buffer table are aligned. Size arithmetic is done in uint64_t against limits far
 * below 2^64, so no sum here can wrap; every limit is checked before it is used.
 * cache_blob_write_fd writes the same bytes as cache_blob_encode, piece by piece
 * (head, pickle, zero padding, buffers) with pwritev, so a large value is copied
 * once, straight into the file, with no mapping and no page faults.
 */
#include "cache_blob.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "sq_error.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "blob layout assumes LE");

#define CACHE__ENTRY_SIZE 16u

static uint64_t cache__align64(uint64_t v) { return (v + 63u) & ~(uint64_t)63u; }

static uint16_t cache__rd16(const uint8_t *p) {
  uint16_t v;
  memcpy(&v, p, sizeof v);
  return v;
}
static uint32_t cache__rd32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}
static uint64_t cache__rd64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}
static void cache__wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, sizeof v); }
static void cache__wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof v); }
static void cache__wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, sizeof v); }

/* Offset of the pickle stream: header, metadata, buffer table. */
static uint64_t cache__pickle_off(uint64_t meta_len, uint64_t nbuffers) {
  return CACHE_BLOB_HEADER_SIZE + meta_len + nbuffers * CACHE__ENTRY_SIZE;
}

int cache_blob_size(const cache_object_t *obj, size_t *size) {
  if (!obj || !size) return SQ_EINVAL;
  if (!sq_lattice_type_valid(obj->lattice_type)) return SQ_EUNKNOWNTYPE;
  if ((!obj->meta && obj->meta_len) || (!obj->pickle && obj->pickle_len) ||
      (!obj->buffers && obj->nbuffers))
    return SQ_EINVAL;
  if (obj->meta_len > CACHE_BLOB_MAX_META || obj->nbuffers > CACHE_BLOB_MAX_BUFFERS ||
      obj->pickle_len > CACHE_BLOB_MAX_SIZE)
    return SQ_ETOOBIG;
  uint64_t end = cache__align64(cache__pickle_off(obj->meta_len, obj->nbuffers) +
                                obj->pickle_len);
  uint64_t cursor = 0;
  for (size_t i = 0; i < obj->nbuffers; i++) {
    if (!obj->buffers[i].data && obj->buffers[i].len) return SQ_EINVAL;
    if (obj->buffers[i].len > CACHE_BLOB_MAX_SIZE) return SQ_ETOOBIG;
    cursor = cache__align64(cursor) + obj->buffers[i].len;
    if (end + cursor > CACHE_BLOB_MAX_SIZE) return SQ_ETOOBIG;
  }
  if (end + cursor > CACHE_BLOB_MAX_SIZE || end + cursor > SIZE_MAX) return SQ_ETOOBIG;
  *size = (size_t)(end + cursor);
  return 0;
}

/* Writes the head of obj's blob (header, metadata, buffer table: the bytes before
 * the pickle stream) to p; size is the whole blob's, from cache_blob_size. */
static void cache__encode_head(const cache_object_t *obj, uint8_t *p, size_t size) {
  uint64_t poff = cache__pickle_off(obj->meta_len, obj->nbuffers);
  memset(p, 0, CACHE_BLOB_HEADER_SIZE);
  cache__wr32(p + 0, CACHE_BLOB_MAGIC);
  cache__wr16(p + 4, CACHE_BLOB_VERSION);
  cache__wr16(p + 8, (uint16_t)obj->lattice_type);
  cache__wr32(p + 12, (uint32_t)obj->meta_len);
  cache__wr32(p + 16, (uint32_t)obj->nbuffers);
  cache__wr64(p + 24, obj->pickle_len);
  cache__wr64(p + 32, cache__align64(poff + obj->pickle_len));
  cache__wr64(p + 40, size);
  if (obj->meta_len) memcpy(p + CACHE_BLOB_HEADER_SIZE, obj->meta, obj->meta_len);
  uint8_t *table = p + CACHE_BLOB_HEADER_SIZE + obj->meta_len;
  uint64_t cursor = 0;
  for (size_t i = 0; i < obj->nbuffers; i++) {
    uint64_t off = cache__align64(cursor);
    cache__wr64(table + i * CACHE__ENTRY_SIZE, off);
    cache__wr64(table + i * CACHE__ENTRY_SIZE + 8, obj->buffers[i].len);
    cursor = off + obj->buffers[i].len;
  }
}

int cache_blob_encode(const cache_object_t *obj, void *dst, size_t dst_len) {
  size_t size;
  int rc = cache_blob_size(obj, &size);
  if (rc) return rc;
  if (size != dst_len || !dst) return SQ_EINVAL;
  uint8_t *p = dst;
  uint64_t poff = cache__pickle_off(obj->meta_len, obj->nbuffers);
  uint64_t region = cache__align64(poff + obj->pickle_len);
  cache__encode_head(obj, p, size);
  if (obj->pickle_len) memcpy(p + poff, obj->pickle, obj->pickle_len);
  memset(p + poff + obj->pickle_len, 0, region - poff - obj->pickle_len);
  uint64_t cursor = 0;
  for (size_t i = 0; i < obj->nbuffers; i++) {
    uint64_t off = cache__align64(cursor);
    memset(p + region + cursor, 0, off - cursor);
    if (obj->buffers[i].len) memcpy(p + region + off, obj->buffers[i].data, obj->buffers[i].len);
    cursor = off + obj->buffers[i].len;
  }
  return 0;
}

/* --- writing to a file: pwritev of the pieces, in batches ----------------------- */

#define CACHE__IOV_BATCH 64
#define CACHE__IOV_BYTES ((size_t)1 << 30) /* per pwritev: far below SSIZE_MAX */

static const uint8_t cache__zeros[CACHE_BLOB_ALIGN];

typedef struct {
  int fd;
  off_t off;
  size_t n, bytes;
  struct iovec v[CACHE__IOV_BATCH];
} cache__iow_t;

/* Writes the batched pieces, resuming after short writes. 0 or -errno. */
static int cache__iow_flush(cache__iow_t *w) {
  size_t i = 0;
  while (i < w->n) {
    ssize_t r = pwritev(w->fd, w->v + i, (int)(w->n - i), w->off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    if (r == 0) return -EIO;
    w->off += r;
    for (size_t done = (size_t)r; done > 0;) {
      size_t step = done < w->v[i].iov_len ? done : w->v[i].iov_len;
      w->v[i].iov_base = (uint8_t *)w->v[i].iov_base + step;
      w->v[i].iov_len -= step;
      done -= step;
      if (w->v[i].iov_len == 0) i++;
    }
  }
  w->n = w->bytes = 0;
  return 0;
}

/* Queues len bytes at p (split so that a batch stays under CACHE__IOV_BYTES). */
static int cache__iow_add(cache__iow_t *w, const void *p, size_t len) {
  const uint8_t *b = p;
  while (len > 0) {
    if (w->n == CACHE__IOV_BATCH || w->bytes == CACHE__IOV_BYTES) {
      int rc = cache__iow_flush(w);
      if (rc) return rc;
    }
    size_t room = CACHE__IOV_BYTES - w->bytes, step = len < room ? len : room;
    w->v[w->n++] = (struct iovec){.iov_base = (void *)b, .iov_len = step};
    w->bytes += step;
    b += step;
    len -= step;
  }
  return 0;
}

int cache_blob_write_fd(const cache_object_t *obj, int fd, size_t size) {
  size_t want;
  int rc = cache_blob_size(obj, &want);
  if (rc) return rc;
  if (want != size || fd < 0) return SQ_EINVAL;
  size_t poff = (size_t)cache__pickle_off(obj->meta_len, obj->nbuffers);
  uint8_t *head = malloc(poff);
  if (!head) return -ENOMEM;
  cache__encode_head(obj, head, size);
  cache__iow_t w = {.fd = fd};
  uint64_t end = cache__align64(poff + obj->pickle_len), cursor = 0;
  rc = cache__iow_add(&w, head, poff);
  if (rc == 0) rc = cache__iow_add(&w, obj->pickle, obj->pickle_len);
  if (rc == 0) rc = cache__iow_add(&w, cache__zeros, end - poff - obj->pickle_len);
  for (size_t i = 0; rc == 0 && i < obj->nbuffers; i++) {
    uint64_t off = cache__align64(cursor);
    rc = cache__iow_add(&w, cache__zeros, off - cursor);
    if (rc == 0) rc = cache__iow_add(&w, obj->buffers[i].data, obj->buffers[i].len);
    cursor = off + obj->buffers[i].len;
  }
  if (rc == 0) rc = cache__iow_flush(&w);
  free(head);
  return rc;
}

/* Checks the buffer table against the canonical layout of the region. */
static int cache__check_table(const uint8_t *table, uint32_t n, const uint8_t *region,
                              uint64_t region_len) {
  uint64_t cursor = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t off = cache__rd64(table + (size_t)i * CACHE__ENTRY_SIZE);
    uint64_t len = cache__rd64(table + (size_t)i * CACHE__ENTRY_SIZE + 8);
    if (off != cache__align64(cursor) || off > region_len || len > region_len - off)
      return SQ_ECORRUPT;
    for (uint64_t j = cursor; j < off; j++)
      if (region[j]) return SQ_ECORRUPT; /* padding is zero: one encoding per blob */
    cursor = off + len;
  }
  return cursor == region_len ? 0 : SQ_ECORRUPT;
}

int cache_blob_parse(const void *data, size_t len, cache_blob_t *out) {
  const uint8_t *p = data;
  if (!p || !out || len < CACHE_BLOB_HEADER_SIZE || len > CACHE_BLOB_MAX_SIZE)
    return SQ_ECORRUPT;
  if (cache__rd32(p) != CACHE_BLOB_MAGIC || cache__rd16(p + 4) != CACHE_BLOB_VERSION ||
      cache__rd16(p + 6) != 0 || cache__rd16(p + 10) != 0 || cache__rd32(p + 20) != 0)
    return SQ_ECORRUPT;
  uint16_t type = cache__rd16(p + 8);
  uint32_t meta_len = cache__rd32(p + 12), n = cache__rd32(p + 16);
  uint64_t pickle_len = cache__rd64(p + 24), region = cache__rd64(p + 32);
  uint64_t total = cache__rd64(p + 40);
  if (meta_len > CACHE_BLOB_MAX_META || n > CACHE_BLOB_MAX_BUFFERS || total != len ||
      pickle_len > len)
    return SQ_ECORRUPT;
  uint64_t poff = cache__pickle_off(meta_len, n);
  if (poff + pickle_len > len || region != cache__align64(poff + pickle_len) ||
      region > len)
    return SQ_ECORRUPT;
  for (uint64_t i = poff + pickle_len; i < region; i++)
    if (p[i]) return SQ_ECORRUPT;
  const uint8_t *table = p + CACHE_BLOB_HEADER_SIZE + meta_len;
  if (cache__check_table(table, n, p + region, len - region)) return SQ_ECORRUPT;
  if (!sq_lattice_type_valid(type)) return SQ_EUNKNOWNTYPE;
  out->lattice_type = (sq_lattice_type_t)type;
  out->meta = (cache_span_t){p + CACHE_BLOB_HEADER_SIZE, meta_len};
  out->pickle = (cache_span_t){p + poff, (size_t)pickle_len};
  out->nbuffers = n;
  out->table = table;
  out->region = p + region;
  out->region_len = (size_t)(len - region);
  out->total_len = len;
  return 0;
}

cache_span_t cache_blob_buffer(const cache_blob_t *blob, uint32_t i) {
  const uint8_t *e = blob->table + (size_t)i * CACHE__ENTRY_SIZE;
  return (cache_span_t){blob->region + cache__rd64(e), (size_t)cache__rd64(e + 8)};
}

void cache_blob_to_object(const cache_blob_t *blob, cache_span_t *spans,
                          cache_object_t *obj) {
  for (uint32_t i = 0; i < blob->nbuffers; i++) spans[i] = cache_blob_buffer(blob, i);
  *obj = (cache_object_t){
      .lattice_type = blob->lattice_type,
      .meta = blob->meta.data,
      .meta_len = blob->meta.len,
      .pickle = blob->pickle.data,
      .pickle_len = blob->pickle.len,
      .buffers = spans,
      .nbuffers = blob->nbuffers,
  };
}
