/* zmtp: just enough ZMTP 3.0 (ZeroMQ's wire protocol, rfc.zeromq.org/spec/23, NULL
 * security mechanism) for the load generator to talk to ZeroMQ PUSH and PULL sockets
 * over plain TCP, without libzmq on its side of the connection.
 *
 * Why: kvs_load's Redis side writes RESP on its own sockets; its Anna side went
 * through libzmq, whose I/O thread, per-message allocations and wake-ups cost the
 * load generator about as much CPU per request as the server's whole work, so on a
 * 2-core machine the load generator, not squall-kvs, set the pace in the pipelined
 * cells. Both sides now work the same way: bytes on a socket, batched writes, one
 * event loop. The server still sees exactly what a libzmq peer sends.
 *
 * Scope: single-frame messages and commands in, single-frame messages out; a peer's
 * multi-frame message is reported as an error. Heartbeat commands (PING) are skipped.
 *
 * Handshakes block (with a timeout) on a fresh connection; afterwards the socket is
 * non-blocking and the caller owns its I/O. Errors: negative errno, SQ_EPROTO for a
 * peer that does not speak ZMTP 3 with NULL security or has an incompatible socket
 * type; `err` gets a sentence.
 */
#ifndef BENCH_ZMTP_H
#define BENCH_ZMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZMTP_HEADER_MAX 9 /* flags + 8-byte length */
#define ZMTP_HANDSHAKE_MS 5000

/* Runs the handshake on connected fd as a socket of type `self` ("PUSH", "PULL")
 * whose peer must be of type `peer`; leaves fd non-blocking. 0 or error. */
int zmtp_handshake(int fd, const char *self, const char *peer, char *err, size_t errlen);

/* Writes a message frame header for a body of len bytes into out; returns its size
 * (2 or 9). */
size_t zmtp_frame_header(uint8_t *out, uint64_t len);

/* The next whole frame in buf[0..len): 1 with *body and *body_len (and *command true for
 * a command frame) and *used the bytes it took; 0 when the frame is not complete yet;
 * SQ_EPROTO for a frame over max_body bytes or one with the MORE flag. */
int zmtp_next_frame(const uint8_t *buf, size_t len, uint64_t max_body, const uint8_t **body,
                    uint64_t *body_len, bool *command, size_t *used);

#endif
