/* sq_proto: decoding protobuf messages that arrive from the network.
 *
 * protobuf-c decodes sub-messages by recursion and has no depth limit, so a small
 * hostile message whose types nest recursively (DagCall.continuation ->
 * Continuation.call -> DagCall ...) exhausts the stack: about 60 KB of such bytes
 * crash protobuf-c 1.4 on an 8 MB main-thread stack, far less on a worker thread.
 * Every daemon therefore decodes network bytes with sq_proto_unpack(), which first
 * enforces a size limit, then walks the wire bytes (its own recursion bounded by the
 * depth limit) to reject over-deep nesting, and only then hands the bytes to
 * protobuf-c.
 *
 * Invariants: the depth walk reads only within [buf, buf + len); it rejects a message
 * protobuf-c would accept only when it nests deeper than max_depth or carries a tag
 * with field number 0 (which protobuf-c accepts in over-long encodings, then cannot
 * re-read after re-packing; see sq_proto.c). Stateless and
 * thread-safe; the caller owns every buffer.
 */
#ifndef SQ_PROTO_H
#define SQ_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Deeper than any message in PROTOCOL.md needs: DagTrigger -> map entry ->
 * KeyVersionList -> KeyVersion -> map entry is depth 4; only DagCall <-> Continuation
 * recurse, and a DagCall carrying 19 chained continuations stays within 40. */
#define SQ_PROTO_MAX_DEPTH 40

/* Largest max_depth sq_proto_check_depth() accepts: bounds its own recursion. */
#define SQ_PROTO_DEPTH_CAP 128

/* Checks that no sub-message of the message described by desc is nested more than
 * max_depth levels below the top level (the top level is depth 0), following only
 * fields that desc declares as messages; unknown fields are skipped unparsed.
 * Returns 0, SQ_ETOOBIG when nested too deeply, SQ_EPROTO when the bytes are not
 * well-formed enough to walk (cut-off varint or length, invalid wire type, field
 * number 0 in any encoding), or
 * SQ_EINVAL when max_depth > SQ_PROTO_DEPTH_CAP. Does not allocate. */
int sq_proto_check_depth(const ProtobufCMessageDescriptor *desc, const uint8_t *buf,
                         size_t len, unsigned max_depth);

/* Decodes untrusted bytes as desc. Rejects len > max_len (SQ_ETOOBIG), nesting
 * deeper than SQ_PROTO_MAX_DEPTH (SQ_ETOOBIG), and bytes protobuf-c cannot decode
 * (SQ_EPROTO); -ENOMEM is not distinguishable from malformed input in protobuf-c and
 * reports as SQ_EPROTO. alloc may be NULL (malloc) or e.g. sq_arena_allocator().
 * On 0, *out is a message the caller frees with protobuf_c_message_free_unpacked(
 * *out, alloc); on error *out is NULL. */
int sq_proto_unpack(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                    const uint8_t *buf, size_t len, size_t max_len, ProtobufCMessage **out);

#endif
