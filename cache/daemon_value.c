/* daemon_value: KVS lattice payload <-> cached blob (format in daemon_value.h).
 *
 * Store path: an LWW payload is scanned in place; its value is tried as a Cloudburst
 * Value whose body is a cache blob. Only when the Value re-serializes to the very same
 * bytes is it stored as OBJECT (so the payload can be rebuilt exactly); everything
 * else is stored RAW. Payload path: the reverse, for merges.
 *
 * The store path is the miss path of every GET, so it copies nothing: the LWW and the
 * Value are scanned where they lie (bounds-checked; spans point into the payload),
 * the round-trip check packs the Value into a comparing sink rather than a buffer
 * (the body, handed back by pointer, is not even compared), and the blob's pickle
 * stream and buffers are written straight from the payload into the store.
 */
#include "daemon_value.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cloudburst.pb-c.h"
#include "lattice_int.h"
#include "sq_error.h"

static void cache__put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void cache__put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t cache__get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static uint32_t cache__get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

int cache_value_kind(const uint8_t *meta, size_t meta_len) {
  if (meta_len >= CACHE_META_OBJECT_FIXED && meta[0] == CACHE_META_OBJECT)
    return CACHE_META_OBJECT;
  if (meta_len == CACHE_META_RAW_LEN && meta[0] == CACHE_META_RAW) return CACHE_META_RAW;
  return 0;
}

/* A ProtobufCBuffer that compares what is packed with the bytes parsed. */
typedef struct {
  ProtobufCBuffer base;
  const uint8_t *want;
  size_t len, pos;
  bool same;
} cache__cmp_sink_t;

static void cache__cmp_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
  cache__cmp_sink_t *c = (cache__cmp_sink_t *)b;
  if (!c->same || len > c->len - c->pos) {
    c->same = false;
    return;
  }
  /* The body is appended from where it was scanned: same bytes, nothing to compare. */
  if (data != c->want + c->pos && memcmp(data, c->want + c->pos, len) != 0) c->same = false;
  c->pos += len;
}

/* True when v packs to exactly the len bytes it was scanned from (no copy made). */
static bool cache__value_roundtrips(const Value *v, const uint8_t *bytes, size_t len) {
  if (value__get_packed_size(v) != len) return false;
  cache__cmp_sink_t c = {.base = {.append = cache__cmp_append}, .want = bytes, .len = len,
                         .same = true};
  protobuf_c_message_pack_to_buffer(&v->base, &c.base);
  return c.same && c.pos == len;
}

static bool cache__varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *out) {
  uint64_t v = 0;
  for (unsigned shift = 0; shift < 64 && *pos < len; shift += 7) {
    uint8_t b = p[(*pos)++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (b < 0x80) {
      *out = v;
      return true;
    }
  }
  return false;
}

/* Scans a Value {bytes body = 1; SerializerType type = 2;} in place: v->body points
 * into p. False for anything else (other fields, wire types, truncation); the caller
 * still checks the round trip, which rejects every non-canonical encoding. */
static bool cache__value_scan(const uint8_t *p, size_t len, Value *v) {
  size_t pos = 0;
  value__init(v);
  while (pos < len) {
    uint64_t tag = 0, x = 0;
    if (!cache__varint(p, len, &pos, &tag)) return false;
    if (tag == ((1u << 3) | 2u)) {
      if (!cache__varint(p, len, &pos, &x) || x > len - pos) return false;
      v->body.data = (uint8_t *)(uintptr_t)(p + pos);
      v->body.len = (size_t)x;
      pos += (size_t)x;
    } else if (tag == ((2u << 3) | 0u)) {
      if (!cache__varint(p, len, &pos, &x)) return false;
      v->type = (SerializerType)(int32_t)(uint32_t)x;
    } else {
      return false;
    }
  }
  return true;
}

/* Stores an LWW whose value is a Value{blob}. Returns 1 when the value is not such
 * an object (caller stores RAW), 0 when stored, or an error. Copies nothing but the
 * blob into the store. */
static int cache__store_object(cache_store_t *s, const char *key, size_t klen,
                               uint64_t timestamp, const uint8_t *vbytes, size_t vlen) {
  Value v;
  cache_span_t *spans = NULL;
  uint8_t *meta = NULL;
  cache_blob_t inner;
  int rc = 1;
  if (vlen < CACHE_BLOB_HEADER_SIZE || !cache__value_scan(vbytes, vlen, &v)) goto out;
  if (cache_blob_parse(v.body.data, v.body.len, &inner) != 0) goto out;
  if (!cache__value_roundtrips(&v, vbytes, vlen)) goto out;
  rc = -ENOMEM;
  spans = calloc(inner.nbuffers ? inner.nbuffers : 1, sizeof(*spans));
  meta = malloc(CACHE_META_OBJECT_FIXED + inner.meta.len);
  if (!spans || !meta) goto out;
  cache_object_t obj;
  cache_blob_to_object(&inner, spans, &obj);
  memset(meta, 0, CACHE_META_OBJECT_FIXED);
  meta[0] = CACHE_META_OBJECT;
  meta[1] = (uint8_t)inner.lattice_type;
  cache__put_u32(meta + 4, (uint32_t)v.type);
  cache__put_u64(meta + 8, timestamp);
  if (inner.meta.len) memcpy(meta + CACHE_META_OBJECT_FIXED, inner.meta.data, inner.meta.len);
  obj.lattice_type = SQ_LATTICE_LWW;
  obj.meta = meta;
  obj.meta_len = CACHE_META_OBJECT_FIXED + inner.meta.len;
  rc = cache_store_put_object(s, key, klen, &obj);
out:
  free(spans);
  free(meta);
  return rc;
}

int cache_value_store(cache_store_t *s, const char *key, size_t klen,
                      sq_lattice_type_t type, const uint8_t *payload, size_t len,
                      bool *is_object) {
  int rc = sq_lattice_validate(type, payload, len);
  if (rc) return rc;
  if (type == SQ_LATTICE_LWW) {
    lattice__scalar_t lww; /* validated above; the scan points into payload */
    rc = lattice__scalar_scan(payload, len, false, &lww);
    if (rc == 0) rc = cache__store_object(s, key, klen, lww.num, lww.value, lww.vlen);
    if (rc <= 0) {
      if (rc == 0 && is_object) *is_object = true;
      return rc;
    }
  }
  uint8_t meta[CACHE_META_RAW_LEN] = {CACHE_META_RAW};
  cache_object_t obj = {.lattice_type = type, .meta = meta, .meta_len = sizeof(meta),
                        .pickle = payload, .pickle_len = len};
  rc = cache_store_put_object(s, key, klen, &obj);
  if (rc == 0 && is_object) *is_object = false;
  return rc;
}

/* Rebuilds LWWValue{ts, Value{inner blob, type}} from an OBJECT blob. */
static int cache__object_payload(const cache_blob_t *blob, sq_buf_t *out) {
  const uint8_t *m = blob->meta.data;
  cache_span_t *spans = NULL;
  uint8_t *body = NULL, *vbytes = NULL;
  int rc = SQ_ECORRUPT;
  if (!sq_lattice_type_valid(m[1]) || blob->lattice_type != SQ_LATTICE_LWW) goto out;
  rc = -ENOMEM;
  spans = calloc(blob->nbuffers ? blob->nbuffers : 1, sizeof(*spans));
  if (!spans) goto out;
  cache_object_t inner;
  cache_blob_to_object(blob, spans, &inner);
  inner.lattice_type = (sq_lattice_type_t)m[1];
  inner.meta = m + CACHE_META_OBJECT_FIXED;
  inner.meta_len = blob->meta.len - CACHE_META_OBJECT_FIXED;
  size_t blen = 0;
  if ((rc = cache_blob_size(&inner, &blen)) != 0) goto out;
  rc = -ENOMEM;
  if (!(body = malloc(blen))) goto out;
  if ((rc = cache_blob_encode(&inner, body, blen)) != 0) goto out;
  Value v = VALUE__INIT;
  v.body.data = body;
  v.body.len = blen;
  v.type = (SerializerType)cache__get_u32(m + 4);
  size_t vlen = value__get_packed_size(&v);
  rc = -ENOMEM;
  if (!(vbytes = malloc(vlen ? vlen : 1))) goto out;
  value__pack(&v, vbytes);
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = cache__get_u64(m + 8);
  l.u.lww.value.data = vbytes;
  l.u.lww.value.len = vlen;
  rc = sq_lattice_encode(&l, out);
out:
  free(spans);
  free(body);
  free(vbytes);
  return rc;
}

int cache_value_payload(const cache_blob_t *blob, sq_buf_t *out) {
  switch (cache_value_kind(blob->meta.data, blob->meta.len)) {
    case CACHE_META_OBJECT:
      return cache__object_payload(blob, out);
    case CACHE_META_RAW:
      if (blob->nbuffers != 0) return SQ_ECORRUPT;
      return sq_buf_append(out, blob->pickle.data, blob->pickle.len);
    default:
      return SQ_ECORRUPT;
  }
}
