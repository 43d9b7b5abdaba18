/* sq_wire: bounds-checked protobuf wire reading (see sq_wire.h). */
#include "sq_wire.h"

#include "sq_error.h"

int sq_wire_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out) {
  uint64_t v = 0;
  for (unsigned shift = 0; shift < 70; shift += 7) {
    if (*pos >= len) return SQ_EPROTO;
    uint8_t b = buf[(*pos)++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return SQ_EPROTO;
}

/* Skips one field's value of the given wire type. */
static int sq__wire_skip(const uint8_t *buf, size_t len, size_t *pos, unsigned wire_type) {
  uint64_t n;
  switch (wire_type) {
    case 0: return sq_wire_varint(buf, len, pos, &n);
    case 1: n = 8; break;
    case 5: n = 4; break;
    case 2:
      if (sq_wire_varint(buf, len, pos, &n)) return SQ_EPROTO;
      break;
    default: return SQ_EPROTO;
  }
  if (n > len - *pos) return SQ_EPROTO;
  *pos += n;
  return 0;
}

int sq_wire_find_bytes(const uint8_t *buf, size_t len, uint32_t field, const uint8_t **out,
                       size_t *out_len) {
  size_t pos = 0;
  while (pos < len) {
    uint64_t tag;
    if (sq_wire_varint(buf, len, &pos, &tag)) return SQ_ENOTFOUND;
    unsigned wire_type = tag & 7;
    if ((tag >> 3) == field && wire_type == 2) {
      uint64_t n;
      if (sq_wire_varint(buf, len, &pos, &n) || n > len - pos) return SQ_EPROTO;
      *out = buf + pos;
      *out_len = (size_t)n;
      return 0;
    }
    if (sq__wire_skip(buf, len, &pos, wire_type)) return SQ_ENOTFOUND;
  }
  return SQ_ENOTFOUND;
}
