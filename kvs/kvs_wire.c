/* kvs_wire: fast decode of one-tuple KeyRequests and fast packing of KeyResponses
 * (see kvs_wire.h for the contract with protobuf-c).
 *
 * The decoder is a strict grammar, not a general protobuf parser:
 *
 *   KeyRequest := [08 type] 12 len Tuple [1a len address] [22 len request_id]
 *   Tuple      := [0a len key] [10 lattice_type] [18 error] [22 len payload]
 *                 [28 address_cache_size] [30 invalidate]
 *
 * each field at most once and in this order; enum values one byte (0..127), bool
 * 0 or 1, address_cache_size and lengths minimal varints of at most 4 bytes. Every
 * such input is a valid protobuf encoding that protobuf-c decodes to the same values
 * (it accepts far more; all of that goes to the slow path).
 */
#include "kvs_wire.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "sq_error.h"

typedef struct {
  const uint8_t *p;
  const uint8_t *end;
} kvs__rd_t;

/* A minimal varint of at most max_bytes bytes (so at most 28 bits). */
static bool kvs__varint(kvs__rd_t *r, unsigned max_bytes, uint32_t *v) {
  uint32_t x = 0;
  for (unsigned i = 0; i < max_bytes && r->p < r->end; i++) {
    uint8_t b = *r->p++;
    x |= (uint32_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      if (i > 0 && b == 0) return false; /* non-minimal */
      *v = x;
      return true;
    }
  }
  return false;
}

/* A length-delimited field: its bytes, bounds-checked. */
static bool kvs__bytes(kvs__rd_t *r, const uint8_t **data, size_t *len) {
  uint32_t n;
  if (!kvs__varint(r, 4, &n) || n > (size_t)(r->end - r->p)) return false;
  *data = r->p;
  *len = n;
  r->p += n;
  return true;
}

/* A string field, copied NUL-terminated into the arena; its C-string length (up to
 * an embedded NUL, as every reader of the char * sees it) in *out_len. */
static int kvs__string(kvs__rd_t *r, sq_arena_t *arena, char **out, size_t *out_len) {
  const uint8_t *data;
  size_t len;
  if (!kvs__bytes(r, &data, &len)) return SQ_EPROTO;
  char *s = sq_arena_alloc(arena, len + 1);
  if (!s) return -ENOMEM;
  memcpy(s, data, len);
  s[len] = '\0';
  const char *nul = memchr(s, '\0', len);
  *out = s;
  *out_len = nul ? (size_t)(nul - s) : len;
  return 0;
}

/* The next tag: one byte, a field number above *last (fields in order, once each). */
static bool kvs__tag(kvs__rd_t *r, unsigned *last, uint8_t *tag) {
  uint8_t t = *r->p++;
  if ((t & 0x80) || (unsigned)(t >> 3) <= *last) return false;
  *last = t >> 3;
  *tag = t;
  return true;
}

static int kvs__tuple_decode(kvs__rd_t *r, sq_arena_t *arena, KeyTuple *t,
                             size_t *key_len) {
  unsigned last = 0;
  uint32_t v;
  uint8_t tag;
  while (r->p < r->end) {
    if (!kvs__tag(r, &last, &tag)) return SQ_EPROTO;
    if (tag == 0x0a) {
      int rc = kvs__string(r, arena, &t->key, key_len);
      if (rc) return rc;
      continue;
    }
    if (tag == 0x22) {
      const uint8_t *data;
      if (!kvs__bytes(r, &data, &t->payload.len)) return SQ_EPROTO;
      t->payload.data = (uint8_t *)data;
      continue;
    }
    unsigned width = tag == 0x28 ? 4 : 1;
    if ((tag != 0x10 && tag != 0x18 && tag != 0x28 && tag != 0x30) ||
        !kvs__varint(r, width, &v))
      return SQ_EPROTO;
    if (tag == 0x10) t->lattice_type = (LatticeType)v;
    else if (tag == 0x18) t->error = (AnnaError)v;
    else if (tag == 0x28) t->address_cache_size = v;
    else if (v <= 1) t->invalidate = (protobuf_c_boolean)v;
    else return SQ_EPROTO;
  }
  return 0;
}

/* Allocates the request with its one tuple, both initialised as protobuf-c does. */
static int kvs__request_alloc(sq_arena_t *arena, KeyRequest **out) {
  KeyRequest *req = sq_arena_alloc(arena, sizeof(*req));
  KeyTuple **tuples = sq_arena_alloc(arena, sizeof(*tuples));
  KeyTuple *t = sq_arena_alloc(arena, sizeof(*t));
  if (!req || !tuples || !t) return -ENOMEM;
  key_request__init(req);
  key_tuple__init(t);
  tuples[0] = t;
  req->tuples = tuples;
  *out = req;
  return 0;
}

int kvs_wire_request_decode(const uint8_t *p, size_t len, sq_arena_t *arena,
                            KeyRequest **out, kvs_wire_known_t *known) {
  kvs__rd_t r = {p, p + len};
  kvs_wire_known_t k = {0};
  KeyRequest *req = NULL;
  unsigned last = 0;
  uint32_t v;
  uint8_t tag;
  int rc = kvs__request_alloc(arena, &req);
  while (rc == 0 && r.p < r.end) {
    if (!kvs__tag(&r, &last, &tag)) {
      rc = SQ_EPROTO;
    } else if (tag == 0x08) {
      if (kvs__varint(&r, 1, &v)) req->type = (RequestType)v;
      else rc = SQ_EPROTO;
    } else if (tag == 0x12) {
      const uint8_t *body;
      size_t n;
      if (kvs__bytes(&r, &body, &n)) {
        kvs__rd_t sub = {body, body + n};
        rc = kvs__tuple_decode(&sub, arena, req->tuples[0], &k.key_len);
        req->n_tuples = 1;
      } else {
        rc = SQ_EPROTO;
      }
    } else if (tag == 0x1a) {
      rc = kvs__string(&r, arena, &req->response_address, &k.response_address_len);
    } else if (tag == 0x22) {
      rc = kvs__string(&r, arena, &req->request_id, &k.request_id_len);
    } else {
      rc = SQ_EPROTO;
    }
  }
  if (rc == 0 && req->n_tuples != 1) rc = SQ_EPROTO;
  *out = rc ? NULL : req;
  if (rc == 0 && known) {
    k.key = req->tuples[0]->key;
    k.response_address = req->response_address;
    k.request_id = req->request_id;
    *known = k;
  }
  return rc;
}

/* ---- packing -------------------------------------------------------------------- */

static size_t kvs__vlen(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static uint8_t *kvs__vput(uint8_t *o, uint64_t v) {
  while (v >= 0x80) {
    *o++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *o++ = (uint8_t)v;
  return o;
}

/* Size of a length-delimited field with a tag of tag_len bytes; 0 when omitted. */
static size_t kvs__ld_size(size_t tag_len, size_t len) {
  return len ? tag_len + kvs__vlen(len) + len : 0;
}

size_t kvs_wire_strlen(const char *s, const kvs_wire_known_t *known) {
  if (!s || !*s) return 0;
  if (known) {
    if (s == known->key) return known->key_len;
    if (s == known->request_id) return known->request_id_len;
    if (s == known->response_address) return known->response_address_len;
  }
  return strlen(s);
}

static uint8_t *kvs__ld_put(uint8_t *o, const uint8_t *tag, size_t tag_len,
                            const void *data, size_t len) {
  if (!len) return o;
  memcpy(o, tag, tag_len);
  o = kvs__vput(o + tag_len, len);
  memcpy(o, data, len);
  return o + len;
}

/* A varint field of an enum or uint32 (omitted when 0). */
static size_t kvs__enum_size(uint32_t v) { return v ? 1 + kvs__vlen(v) : 0; }

static uint8_t *kvs__enum_put(uint8_t *o, uint8_t tag, uint32_t v) {
  if (!v) return o;
  *o++ = tag;
  return kvs__vput(o, v);
}

static const uint8_t kvs__tag_message[2] = {0xa2, 0x06}; /* field 100, bytes */

/* Size of a tuple's body; false for a negative enum. */
static bool kvs__tuple_size(const KeyTuple *t, const kvs_wire_known_t *known, size_t *size) {
  if ((int)t->lattice_type < 0 || (int)t->error < 0) return false;
  *size = kvs__ld_size(1, kvs_wire_strlen(t->key, known)) +
          kvs__enum_size((uint32_t)t->lattice_type) + kvs__enum_size((uint32_t)t->error) +
          kvs__ld_size(1, t->payload.len) + kvs__enum_size(t->address_cache_size) +
          (t->invalidate ? 2 : 0) + kvs__ld_size(2, kvs_wire_strlen(t->error_message, NULL));
  return true;
}

size_t kvs_wire_response_size(const KeyResponse *resp, const kvs_wire_known_t *known) {
  if ((int)resp->type < 0 || (int)resp->error < 0) return 0;
  size_t size = kvs__enum_size((uint32_t)resp->type) +
                kvs__ld_size(1, kvs_wire_strlen(resp->response_id, known)) +
                kvs__enum_size((uint32_t)resp->error) +
                kvs__ld_size(2, kvs_wire_strlen(resp->error_message, NULL));
  for (size_t i = 0; i < resp->n_tuples; i++) {
    size_t t;
    if (!kvs__tuple_size(resp->tuples[i], known, &t)) return 0;
    size += 1 + kvs__vlen(t) + t;
  }
  return size;
}

static uint8_t *kvs__tuple_put(uint8_t *o, const KeyTuple *t, const kvs_wire_known_t *known) {
  static const uint8_t key_tag = 0x0a, payload_tag = 0x22;
  size_t body = 0;
  kvs__tuple_size(t, known, &body);
  *o++ = 0x12;
  o = kvs__vput(o, body);
  o = kvs__ld_put(o, &key_tag, 1, t->key, kvs_wire_strlen(t->key, known));
  o = kvs__enum_put(o, 0x10, (uint32_t)t->lattice_type);
  o = kvs__enum_put(o, 0x18, (uint32_t)t->error);
  o = kvs__ld_put(o, &payload_tag, 1, t->payload.data, t->payload.len);
  o = kvs__enum_put(o, 0x28, t->address_cache_size);
  if (t->invalidate) {
    *o++ = 0x30;
    *o++ = 1;
  }
  return kvs__ld_put(o, kvs__tag_message, 2, t->error_message,
                     kvs_wire_strlen(t->error_message, NULL));
}

size_t kvs_wire_response_pack(const KeyResponse *resp, const kvs_wire_known_t *known,
                              uint8_t *out) {
  static const uint8_t id_tag = 0x1a;
  uint8_t *o = kvs__enum_put(out, 0x08, (uint32_t)resp->type);
  for (size_t i = 0; i < resp->n_tuples; i++) o = kvs__tuple_put(o, resp->tuples[i], known);
  o = kvs__ld_put(o, &id_tag, 1, resp->response_id, kvs_wire_strlen(resp->response_id, known));
  o = kvs__enum_put(o, 0x20, (uint32_t)resp->error);
  o = kvs__ld_put(o, kvs__tag_message, 2, resp->error_message,
                  kvs_wire_strlen(resp->error_message, NULL));
  return (size_t)(o - out);
}
