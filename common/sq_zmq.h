/* sq_zmq: the ZeroMQ habits every squall daemon shares.
 *
 * All of squall's channels are PUSH->PULL, one frame, one protobuf message
 * (PROTOCOL.md §1.10-§1.12), plus a few REQ/REP. Anna's socket handling stalled whole
 * threads (PROTOCOL.md §5 item 11); this module is the answer:
 *
 *   - Sends never block. Every send uses ZMQ_DONTWAIT: a full queue (dead or slow
 *     peer past ZMQ_SNDHWM) returns -EAGAIN at once and the caller drops or retries
 *     later. Sockets also carry SNDTIMEO 0 and a small LINGER, so closing one never
 *     waits long for a peer that is gone.
 *   - Reply sockets are cached by endpoint, bounded: past max_sockets the least
 *     recently used one is closed (its unsent messages are dropped after LINGER).
 *     Endpoints come from the network (response_address), so they are length-limited
 *     and must use tcp://, ipc:// or inproc://.
 *   - A PUSH socket to a departed peer costs little: libzmq retries a refused
 *     connection forever, so reconnects back off exponentially (100 ms doubling up
 *     to ZMQ_RECONNECT_IVL_MAX, 5 s by default), and the cache closes a socket left
 *     unused for idle_ms (60 s by default). Before, a kvs whose clients had exited
 *     made ~10 futile connects per second per departed client, forever.
 *   - Receives are size-limited twice: PULL sockets made here carry ZMQ_MAXMSGSIZE
 *     (libzmq drops a peer that sends more), and each frame is checked again before
 *     unpacking (SQ_ETOOBIG). A frame that is not a valid message is SQ_EPROTO; a
 *     multi-frame message is drained whole and rejected as SQ_EPROTO.
 *
 *      sender thread                            receiver thread
 *   sq_zmq_cache_send_pb(cache, "tcp://b:6200", msg)
 *     -> LRU lookup / connect (PUSH, LINGER, SNDHWM)
 *     -> pack into a zmq_msg_t, zmq_msg_send(DONTWAIT)  ==>  sq_zmq_pull_bind(...)
 *        full queue: -EAGAIN, thread keeps going           sq_zmq_recv_pb(...) -> msg
 *
 * Threads: ZeroMQ sockets belong to one thread, and so does a socket cache. The
 * context (void *zctx) is shared and thread-safe.
 *
 * Errors: 0, -errno (from zmq_errno(): -EAGAIN, -ETERM, -EADDRINUSE, -EINVAL, ...),
 * SQ_ETOOBIG, SQ_EPROTO, SQ_EINVAL, SQ_EUNSUPPORTED.
 */
#ifndef SQ_ZMQ_H
#define SQ_ZMQ_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>
#include <zmq.h>

#define SQ_ZMQ_ENDPOINT_MAX 256  /* bytes of an endpoint, NUL included */
#define SQ_ZMQ_DEFAULT_LINGER_MS 100
#define SQ_ZMQ_DEFAULT_SNDHWM 1000
#define SQ_ZMQ_DEFAULT_CACHE_SOCKETS 1024
/* Reconnect back-off of every PUSH socket made here. libzmq waits RECONNECT_IVL (plus
 * up to as much again of random jitter) before the first retry and doubles the wait
 * after each refused attempt, up to the maximum: a peer back within a second is
 * reached at the ~4th attempt, ~1.5-1.8 s after it left; one back after a minute
 * within 5 s, under the 10 s request timeout of Anna's clients (PROTOCOL.md §2.4),
 * while a peer that never returns costs 0.2 futile connects per second, not 10.
 * libzmq backs off only refused (or timed-out) connects, the case of a departed
 * process: a listener that accepts and then drops the connection restarts the wait
 * at RECONNECT_IVL each time. */
#define SQ_ZMQ_RECONNECT_IVL_MS 100
#define SQ_ZMQ_DEFAULT_RECONNECT_IVL_MAX_MS 5000
/* A cached socket unused this long is closed on a later cache call. */
#define SQ_ZMQ_DEFAULT_CACHE_IDLE_MS 60000
#define SQ_ZMQ_CACHE_IDLE_NEVER (-1)
/* At most this many idle sockets are closed per cache call (bounded work per send;
 * each socket expires once, so the cost is O(1) amortised per socket opened). */
#define SQ_ZMQ_CACHE_EXPIRE_BATCH 16

/* ---- endpoints -------------------------------------------------------------------- */

typedef struct {
  char transport[8];              /* "tcp", "ipc", "inproc" */
  char host[SQ_ZMQ_ENDPOINT_MAX]; /* tcp: host or "*", IPv6 without brackets;
                                     ipc/inproc: the path or name */
  uint16_t port;                  /* tcp only; 0 otherwise */
} sq_zmq_endpoint_t;

/* Parses "tcp://host:port" (host may be a name, an IPv4 address, "*", or "[v6]"),
 * "ipc://path" or "inproc://name". 0 or SQ_EINVAL (unknown transport, missing or
 * out-of-range port, empty host, too long). */
int sq_zmq_endpoint_parse(const char *text, sq_zmq_endpoint_t *out);

/* Writes "tcp://host:port" (brackets added for IPv6 hosts) into buf. 0 or SQ_EINVAL
 * when it does not fit. */
int sq_zmq_endpoint_tcp(char *buf, size_t len, const char *host, unsigned port);

/* ---- sockets ---------------------------------------------------------------------- */

/* Binds sock to endpoint. On failure returns -errno (e.g. -EADDRINUSE) and writes a
 * sentence naming the address and the reason into err (may be NULL), e.g.
 * "cannot bind tcp://127.0.0.1:6200: Address already in use (another process is
 * listening on that port)". */
int sq_zmq_bind(void *sock, const char *endpoint, char *err, size_t errlen);

/* Makes a PULL socket with ZMQ_MAXMSGSIZE = max_msg_size, ZMQ_RCVHWM = rcvhwm (0 =
 * libzmq default), LINGER 0, and binds it. On success *out is the caller's
 * (zmq_close). Errors as sq_zmq_bind (err filled), or -errno from zmq_socket. */
int sq_zmq_pull_bind(void *zctx, const char *endpoint, int64_t max_msg_size, int rcvhwm,
                     char *err, size_t errlen, void **out);

/* Makes a PUSH socket connected to endpoint with the never-block options: LINGER
 * linger_ms, SNDHWM sndhwm, SNDTIMEO 0, and the reconnect back-off (RECONNECT_IVL
 * SQ_ZMQ_RECONNECT_IVL_MS, RECONNECT_IVL_MAX SQ_ZMQ_DEFAULT_RECONNECT_IVL_MAX_MS).
 * *out is the caller's. 0, SQ_EINVAL (bad endpoint), -errno. */
int sq_zmq_push_connect(void *zctx, const char *endpoint, int sndhwm, int linger_ms,
                        void **out);

/* Makes a REQ socket for the few request/reply exchanges: RCVTIMEO and SNDTIMEO
 * timeout_ms, LINGER 0, ZMQ_REQ_RELAXED and ZMQ_REQ_CORRELATE (a timed-out request
 * does not wedge the socket), ZMQ_MAXMSGSIZE max_msg_size. *out is the caller's. */
int sq_zmq_req_connect(void *zctx, const char *endpoint, int timeout_ms,
                       int64_t max_msg_size, void **out);

/* ---- messages --------------------------------------------------------------------- */

/* Packs msg into one frame (straight into the zmq_msg_t buffer, no extra copy) and
 * sends it with ZMQ_DONTWAIT. 0, -EAGAIN (queue full: nothing sent), -ENOMEM,
 * -errno. msg stays the caller's. */
int sq_zmq_send_pb(void *sock, const ProtobufCMessage *msg);

/* Sends len bytes as one frame with ZMQ_DONTWAIT. 0, -EAGAIN, -errno. */
int sq_zmq_send_bytes(void *sock, const void *data, size_t len);

/* Receives one frame into *msg (which this function initialises). flags: 0 to wait
 * (up to the socket's RCVTIMEO) or ZMQ_DONTWAIT. On success the caller owns *msg,
 * reads zmq_msg_data()/zmq_msg_size() and must zmq_msg_close() it. Returns 0, -EAGAIN
 * (nothing yet / timeout), SQ_ETOOBIG (frame > max_size), SQ_EPROTO (multi-frame),
 * -errno; on any error *msg is already closed. */
int sq_zmq_recv_frame(void *sock, size_t max_size, int flags, zmq_msg_t *msg);

/* Receives one frame and unpacks it as desc. alloc may be NULL (malloc) or e.g.
 * sq_arena_allocator(). On success *out is the caller's: free with
 * protobuf_c_message_free_unpacked(*out, alloc). Returns 0, -EAGAIN, SQ_ETOOBIG,
 * SQ_EPROTO (bad bytes, multi-frame, or out of memory while unpacking), -errno. */
int sq_zmq_recv_pb(void *sock, const ProtobufCMessageDescriptor *desc, size_t max_size,
                   ProtobufCAllocator *alloc, int flags, ProtobufCMessage **out);

/* ---- the PUSH socket cache -------------------------------------------------------- */

typedef struct sq_zmq_cache sq_zmq_cache_t;

/* Zero (as in a designated initializer that leaves a field out) means the default
 * for every field, so a caller that names only max_sockets still gets back-off and
 * idle expiry. */
typedef struct {
  size_t max_sockets;       /* 0 = SQ_ZMQ_DEFAULT_CACHE_SOCKETS */
  int sndhwm;               /* 0 = SQ_ZMQ_DEFAULT_SNDHWM */
  int linger_ms;            /* < 0 = SQ_ZMQ_DEFAULT_LINGER_MS */
  int reconnect_ivl_max_ms; /* 0 = SQ_ZMQ_DEFAULT_RECONNECT_IVL_MAX_MS; < 0 = no
                               back-off (a retry every ~100-200 ms, libzmq's default) */
  int idle_ms;              /* 0 = SQ_ZMQ_DEFAULT_CACHE_IDLE_MS; SQ_ZMQ_CACHE_IDLE_NEVER
                               (any value < 0) = never expire */
} sq_zmq_cache_options_t;

typedef struct {
  uint64_t connects;    /* sockets opened */
  uint64_t evictions;   /* sockets closed to stay under max_sockets */
  uint64_t expirations; /* sockets closed after idle_ms unused */
  uint64_t drops;       /* sends refused with -EAGAIN */
} sq_zmq_cache_stats_t;

/* Makes an empty cache for the calling thread. opts may be NULL (defaults).
 * 0 or -ENOMEM. *out is the caller's (sq_zmq_cache_destroy). */
int sq_zmq_cache_create(void *zctx, const sq_zmq_cache_options_t *opts,
                        sq_zmq_cache_t **out);

/* Closes every socket and frees the cache. Accepts NULL. */
void sq_zmq_cache_destroy(sq_zmq_cache_t *cache);

/* Returns in *sock the PUSH socket for endpoint, connecting (and evicting the least
 * recently used socket when full) if needed, and marks it used now. Every call also
 * closes up to SQ_ZMQ_CACHE_EXPIRE_BATCH sockets unused for idle_ms, oldest first
 * (their unsent messages are dropped after LINGER). The socket stays the cache's and
 * is valid until the next cache call. 0, SQ_EINVAL (endpoint not tcp/ipc/inproc or
 * too long), -ENOMEM, -errno. */
int sq_zmq_cache_get(sq_zmq_cache_t *cache, const char *endpoint, void **sock);

/* Sends bytes / a packed message to endpoint without blocking. 0, -EAGAIN (queue
 * full), or the errors of sq_zmq_cache_get and sq_zmq_send_pb. */
int sq_zmq_cache_send(sq_zmq_cache_t *cache, const char *endpoint, const void *data,
                      size_t len);
int sq_zmq_cache_send_pb(sq_zmq_cache_t *cache, const char *endpoint,
                         const ProtobufCMessage *msg);

/* Closes and forgets the socket of endpoint (e.g. a peer that departed). 0 or
 * SQ_ENOTFOUND. */
int sq_zmq_cache_drop(sq_zmq_cache_t *cache, const char *endpoint);

/* Closes up to SQ_ZMQ_CACHE_EXPIRE_BATCH sockets unused for idle_ms, as every
 * sq_zmq_cache_get does; for a daemon's periodic tick, so that a cache no longer
 * sent through still lets its idle sockets go. Returns how many it closed. */
size_t sq_zmq_cache_expire(sq_zmq_cache_t *cache);

/* Number of cached sockets. */
size_t sq_zmq_cache_size(const sq_zmq_cache_t *cache);

/* Counters since creation. */
sq_zmq_cache_stats_t sq_zmq_cache_stats(const sq_zmq_cache_t *cache);

#endif
