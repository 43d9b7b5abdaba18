/* sq_proto: untrusted protobuf decoding (see sq_proto.h).
 *
 * The depth walk mirrors protobuf-c's own framing rules: a tag varint, then a value
 * whose extent follows from the wire type (0 varint, 1 eight bytes, 2 length-prefixed,
 * 5 four bytes; 3, 4 and 6, 7 are rejected as protobuf-c rejects them). Only a
 * length-delimited field that desc declares as a message is entered, with that
 * field's descriptor, which is exactly where protobuf-c recurses.
 *
 * Field number 0 is invalid on the wire. protobuf-c 1.4 rejects the tag byte 0x00 but
 * accepts an over-long encoding of it (80 00, 80 80 00, ...) as an unknown field, and
 * then re-packs that field as 0x00, which it rejects: a relayed message would become
 * undecodable. The walk therefore rejects every tag with field number 0.
 */
#include "sq_proto.h"

#include "sq_error.h"
#include "sq_wire.h"

/* Advances *pos past one value of wire_type; for wire type 2 stores its extent. */
static int sq__proto_skip(const uint8_t *buf, size_t len, size_t *pos, unsigned wire_type,
                          size_t *val_len) {
  uint64_t n;
  *val_len = 0;
  switch (wire_type) {
    case 0: return sq_wire_varint(buf, len, pos, &n) ? SQ_EPROTO : 0;
    case 1: n = 8; break;
    case 5: n = 4; break;
    case 2:
      if (sq_wire_varint(buf, len, pos, &n)) return SQ_EPROTO;
      *val_len = (size_t)n;
      break;
    default: return SQ_EPROTO;
  }
  if (n > len - *pos) return SQ_EPROTO;
  *pos += (size_t)n;
  return 0;
}

static int sq__proto_walk(const ProtobufCMessageDescriptor *desc, const uint8_t *buf,
                          size_t len, unsigned depth, unsigned max_depth) {
  size_t pos = 0;
  while (pos < len) {
    uint64_t tag;
    if (sq_wire_varint(buf, len, &pos, &tag)) return SQ_EPROTO;
    if ((tag >> 3) == 0) return SQ_EPROTO;  /* see "field number 0" above */
    unsigned wire_type = (unsigned)(tag & 7);
    size_t val_len;
    int rc = sq__proto_skip(buf, len, &pos, wire_type, &val_len);
    if (rc) return rc;
    if (wire_type != 2 || (tag >> 3) > UINT32_MAX) continue;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(desc, (unsigned)(tag >> 3));
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    if (depth + 1 > max_depth) return SQ_ETOOBIG;
    rc = sq__proto_walk(f->descriptor, buf + (pos - val_len), val_len, depth + 1, max_depth);
    if (rc) return rc;
  }
  return 0;
}

int sq_proto_check_depth(const ProtobufCMessageDescriptor *desc, const uint8_t *buf,
                         size_t len, unsigned max_depth) {
  if (max_depth > SQ_PROTO_DEPTH_CAP) return SQ_EINVAL;
  return sq__proto_walk(desc, buf, len, 0, max_depth);
}

int sq_proto_unpack(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                    const uint8_t *buf, size_t len, size_t max_len, ProtobufCMessage **out) {
  int rc = 0;
  *out = NULL;
  if (len > max_len) {
    rc = SQ_ETOOBIG;
    goto out;
  }
  rc = sq_proto_check_depth(desc, buf, len, SQ_PROTO_MAX_DEPTH);
  if (rc) goto out;
  *out = protobuf_c_message_unpack(desc, alloc, len, buf);
  if (!*out) rc = SQ_EPROTO;
out:
  return rc;
}
