/* kvs_wire: hand-written fast paths for the two messages on squall-kvs's hot path.
 *
 * Almost every KeyRequest a storage worker sees is one GET or PUT of one key, encoded
 * the way every protobuf library encodes it: fields in number order, each once,
 * short varints. Decoding that through protobuf-c (a depth check walk, then a
 * descriptor-driven unpack) and packing the reply through it (a size pass and a pack
 * pass) cost about a fifth of the worker's time per GET. These functions do the same
 * job directly for that common shape only.
 *
 * Contract with the slow path (what the differential test and the fuzz target pin):
 *   - kvs_wire_request_decode() accepts a strict subset of what sq_proto_unpack()
 *     accepts, and for every input it accepts, it yields the same KeyRequest field for
 *     field. Anything else -- more or fewer than one tuple, fields out of order or
 *     repeated, unknown fields, multi-byte tags or enum varints, lengths of 2^28 or
 *     more, non-minimal varints -- returns SQ_EPROTO and the caller falls back to
 *     sq_proto_unpack(), which decides.
 *   - kvs_wire_response_size()/kvs_wire_response_pack() produce exactly the bytes of
 *     key_response__get_packed_size()/key_response__pack() (proto3: zero, empty and
 *     NULL fields omitted, fields in number order). Negative enum values (which
 *     protobuf-c writes as ten-byte varints) are not handled: size returns 0 and the
 *     caller uses protobuf-c.
 *
 * Input is untrusted: every read is bounds-checked against len. No state; callers
 * own all memory (decoded strings are copied into the caller's arena; the payload
 * points into the input bytes, which must outlive the request).
 */
#ifndef KVS_WIRE_H
#define KVS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "anna.pb-c.h"
#include "sq_arena.h"

/* Strings whose lengths are already known: the decoder measured them, so the worker
 * and the packer need no strlen of them (a GET's reply quotes the request's key and
 * id; strlen was ~2% of the server's CPU per GET). A string is recognised by its
 * address; NULL entries match nothing. Zero-initialised: nothing known. */
typedef struct {
  const char *key; /* tuple 0's key */
  size_t key_len;
  const char *response_address;
  size_t response_address_len;
  const char *request_id;
  size_t request_id_len;
} kvs_wire_known_t;

/* Length of s (0 for NULL), from `known` when s is one of its strings (known may be
 * NULL), else strlen. */
size_t kvs_wire_strlen(const char *s, const kvs_wire_known_t *known);

/* Decodes a one-tuple KeyRequest of the common shape into *out (arena memory,
 * payload pointing into p) and, when known is not NULL, fills it with the lengths
 * of its strings. 0, SQ_EPROTO (not the fast shape: use the slow path) or -ENOMEM. */
int kvs_wire_request_decode(const uint8_t *p, size_t len, sq_arena_t *arena,
                            KeyRequest **out, kvs_wire_known_t *known);

/* Packed size of resp, or 0 when the fast packer does not handle it (a negative enum
 * value) -- or when every field is default, which packs to nothing either way: 0
 * always means "use protobuf-c". known (may be NULL) saves measuring its strings. */
size_t kvs_wire_response_size(const KeyResponse *resp, const kvs_wire_known_t *known);

/* Packs resp into out (kvs_wire_response_size(resp) bytes, which must be nonzero);
 * returns the bytes written. */
size_t kvs_wire_response_pack(const KeyResponse *resp, const kvs_wire_known_t *known,
                              uint8_t *out);

#endif
