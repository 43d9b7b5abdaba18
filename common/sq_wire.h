/* sq_wire: minimal, allocation-free reading of protobuf wire format.
 *
 * For the few places that must look inside bytes without decoding a whole message:
 * answering a request that failed to decode (find its response address and request
 * id so the sender gets an error instead of silence), and cheap checks on stored
 * lattice payloads. Every read is bounds-checked; input is untrusted.
 */
#ifndef SQ_WIRE_H
#define SQ_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reads a varint at *pos (< len). Advances *pos. 0 or SQ_EPROTO (truncated, > 10 bytes). */
int sq_wire_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out);

/* Finds the first top-level length-delimited field `field` in a message and returns
 * its bytes (pointing into buf). Scans until the field is found or the bytes stop
 * making sense; fields before a malformed region are still found.
 * 0, SQ_ENOTFOUND, or SQ_EPROTO if the field itself is cut off. */
int sq_wire_find_bytes(const uint8_t *buf, size_t len, uint32_t field, const uint8_t **out,
                       size_t *out_len);

#endif
