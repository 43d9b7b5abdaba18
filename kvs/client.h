/* kvs_client: the C client library of squall-kvs (Anna's wire protocol).
 *
 * A client talks to a squall-kvs cluster (or a stock Anna one) exactly as PROTOCOL.md
 * §1.12 A1-A4 and §2.4 "Client behaviour expected by servers" describe:
 *
 *     app --get/put--> kvs_client --KeyAddressRequest--> routing  (tcp://host:6450+off)
 *                          ^  |  <--KeyAddressResponse--    (ips = "tcp://ip:6200+off+t")
 *                          |  +---KeyRequest----------> storage thread
 *                          +------KeyResponse <-------- (pushed to our response address)
 *
 * It owns one PULL socket, bound for every reply (default tcp://127.0.0.1:* on an
 * ephemeral port), a bounded cache of PUSH sockets to servers (non-blocking sends;
 * when full the least recently used one is closed after a 200 ms linger; a silent
 * server's socket is closed with LINGER 0), the routing endpoints, and a
 * bounded cache key -> replica endpoints. Request ids are "<client-id>_<n>" with a
 * 64-bit counter that never wraps in practice (Anna's wrap at 10000: §5 item 17).
 *
 * What the client does where the reference clients did not (§2.4, §5 item 17):
 *   - every request has a timeout; on timeout it retries (a fresh request id, so a
 *     late answer to the old one is ignored), drops the cached addresses naming the
 *     silent server and closes its socket; when the retries are spent the key fails
 *     with SQ_ETIMEOUT;
 *   - WRONG_THREAD: drops the key's cached addresses and retries through routing (at
 *     most KVS_CLIENT_MAX_REDIRECTS times, so two confused servers cannot loop us);
 *   - invalidate: drops the key's cached addresses and keeps the result;
 *   - NO_SERVERS: asks routing again after a short backoff while retries remain, then
 *     fails with SQ_ENOSERVERS;
 *   - the server's error_message (squall extension, field 100) is kept per key;
 *   - a batch is sent as one KeyRequest per server, a batch lookup as one
 *     KeyAddressRequest; answers that come in pieces (deferred keys) are matched per
 *     key.
 *
 * Values: a payload is the encoded lattice message of PROTOCOL.md §1.4 (build and read
 * it with lattice.h). The client passes payload bytes through untouched.
 *
 * Everything received is untrusted: messages over the size limit are refused by the
 * socket, undecodable ones and answers to unknown request ids are dropped (counted in
 * kvs_client_stats), endpoints and counts in routing answers are checked.
 *
 * Threads: a client belongs to one thread at a time (it is not locked). Many clients
 * may share one borrowed ZeroMQ context. Errors are sticky: after a fatal socket error
 * (e.g. the borrowed context was terminated) every call returns SQ_ECLOSED.
 */
#ifndef KVS_CLIENT_H
#define KVS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "lattice.h"

typedef struct kvs_client kvs_client_t;

#define KVS_CLIENT_MESSAGE_MAX 240       /* server sentences are cut to this (with NUL) */
#define KVS_CLIENT_MAX_REDIRECTS 4       /* WRONG_THREAD re-routes per key and call */
#define KVS_CLIENT_DEFAULT_TIMEOUT_MS 10000
#define KVS_CLIENT_DEFAULT_RETRIES 2
#define KVS_CLIENT_MAX_KEY_BYTES 65536   /* longer keys are refused with SQ_ETOOBIG */
#define KVS_CLIENT_MAX_BATCH 100000      /* keys per call */

typedef struct {
  void *zmq_context;        /* borrowed if non-NULL (must outlive the client); else own */
  const char *const *routing; /* routing endpoints, e.g. "tcp://127.0.0.1:6450"; >= 1 */
  size_t nrouting;
  const char *bind;         /* response socket endpoint; NULL = "tcp://127.0.0.1:*" */
  const char *advertise;    /* tcp binds: the host servers reply to; the response
                               address becomes tcp://<advertise>:<bound port>. NULL =
                               the bound endpoint, which must then not be a wildcard
                               (0.0.0.0, *, [::]) */
  const char *client_id;    /* request-id prefix; NULL = "c<pid>.<random hex>" */
  int timeout_ms;           /* default per-attempt timeout; <= 0 = 10000 */
  int retries;              /* default retries after a timeout / NO_SERVERS; < 0 = 2 */
  size_t max_sockets;       /* PUSH socket cache bound; 0 = 64 */
  size_t max_cached_keys;   /* address cache bound; 0 = 65536 */
  int64_t max_message_bytes; /* replies larger than this are refused; 0 = 256 MiB */
} kvs_client_options_t;

/* Per-call limits; pass NULL to use the client's defaults. */
typedef struct {
  int timeout_ms;           /* per attempt; <= 0 = client default */
  int retries;              /* < 0 = client default */
} kvs_client_limits_t;

/* One key to write. All pointers are borrowed for the duration of the call only. */
typedef struct {
  const char *key;          /* NUL-terminated, non-empty */
  sq_lattice_type_t type;   /* one of the six storable types */
  const uint8_t *payload;   /* encoded lattice (PROTOCOL.md §1.4) */
  size_t len;
} kvs_client_kv_t;

/* The outcome for one key. */
typedef struct {
  int err;                  /* 0, SQ_EKEYDNE, SQ_ELATTICE, SQ_EWRONGTHREAD, SQ_ETIMEOUT,
                               SQ_ENOSERVERS, SQ_EPROTO (unknown error code), -errno */
  sq_lattice_type_t type;   /* GET: the stored type; PUT: the type the server echoed */
  uint8_t *payload;         /* GET: malloc'd payload (owned by the holder of the result;
                               free with kvs_client_result_clear) or NULL; PUT: NULL */
  size_t len;
  char message[KVS_CLIENT_MESSAGE_MAX]; /* server's (or the client's) sentence, or "" */
} kvs_client_result_t;

/* A finished asynchronous call, handed to the poll callback. `results[i]` is the
 * outcome of `keys[i]`. The callback may take a payload by setting results[i].payload
 * to NULL; everything else is freed after the callback returns. */
typedef struct {
  uint64_t id;              /* the id get_async/put_async returned */
  int type;                 /* 1 = GET, 2 = PUT (the wire RequestType) */
  size_t n;
  const char *const *keys;
  kvs_client_result_t *results;
} kvs_client_completion_t;

typedef void (*kvs_client_cb_t)(void *arg, const kvs_client_completion_t *done);

typedef struct {
  uint64_t routing_requests;  /* KeyAddressRequests sent */
  uint64_t key_requests;      /* KeyRequests sent */
  uint64_t timeouts;          /* wire requests that timed out */
  uint64_t redirects;         /* WRONG_THREAD re-routes */
  uint64_t dropped_replies;   /* undecodable, or answering no pending request */
  uint64_t send_failures;     /* sends refused (peer queue full, bad endpoint) */
} kvs_client_stats_t;

/* Creates a client: makes (or borrows) the context, binds the response socket.
 * On success *out owns everything and must be released with kvs_client_destroy.
 * Errors: SQ_EINVAL (no routing endpoint, NULL out), SQ_ECONFIG (wildcard bind
 * without advertise, bad endpoint), -ENOMEM, -errno from ZeroMQ. */
int kvs_client_create(const kvs_client_options_t *opts, kvs_client_t **out);

/* Closes the sockets, drops every pending call and its results, terminates the context
 * if the client made it. Accepts NULL. */
void kvs_client_destroy(kvs_client_t *c);

/* The response address servers are told (e.g. "tcp://127.0.0.1:41234"). Valid for the
 * client's life. */
const char *kvs_client_response_address(const kvs_client_t *c);

/* The client id, the prefix of its request ids. */
const char *kvs_client_id(const kvs_client_t *c);

/* --- synchronous calls: each returns when every key has an outcome ------------------ */

/* Reads one key. On 0, *type, *payload and *len get the value; the caller owns *payload
 * (free()). Otherwise nothing is returned and the sentence is in kvs_client_message.
 * Errors: SQ_EKEYDNE, SQ_ETIMEOUT, SQ_ENOSERVERS, SQ_EWRONGTHREAD, SQ_ELATTICE,
 * SQ_EINVAL, SQ_ETOOBIG, SQ_ECLOSED, -ENOMEM. */
int kvs_client_get(kvs_client_t *c, const char *key, const kvs_client_limits_t *lim,
                   sq_lattice_type_t *type, uint8_t **payload, size_t *len);

/* Writes (merges) one key. 0 once the server acknowledged it; SQ_ELATTICE when the
 * server refused the type or payload (its sentence in kvs_client_message); other
 * errors as kvs_client_get. The payload is only borrowed. */
int kvs_client_put(kvs_client_t *c, const char *key, sq_lattice_type_t type,
                   const uint8_t *payload, size_t len, const kvs_client_limits_t *lim);

/* Reads n keys, one KeyRequest per server. results[i] (caller's array of n) gets key i;
 * release them with kvs_client_result_clear. Returns 0 when every key succeeded, else
 * the error of the first key that failed (all results are filled either way), or an
 * error before anything was sent (SQ_EINVAL, SQ_ETOOBIG, -ENOMEM, SQ_ECLOSED; then the
 * results are zeroed). */
int kvs_client_get_many(kvs_client_t *c, const char *const *keys, size_t n,
                        const kvs_client_limits_t *lim, kvs_client_result_t *results);

/* Writes n keys, one KeyRequest per server. Results and return value as get_many. */
int kvs_client_put_many(kvs_client_t *c, const kvs_client_kv_t *kvs, size_t n,
                        const kvs_client_limits_t *lim, kvs_client_result_t *results);

/* The sentence explaining the last failed synchronous single-key call ("" after a
 * success). Valid until the next call on the client. */
const char *kvs_client_message(const kvs_client_t *c);

/* Frees a result's payload and empties it. Accepts NULL. */
void kvs_client_result_clear(kvs_client_result_t *r);

/* --- asynchronous calls ------------------------------------------------------------ */

/* Starts a read of n keys and returns at once; *id identifies the call in the
 * completion. Keys are copied. Errors (nothing started): SQ_EINVAL, SQ_ETOOBIG,
 * -ENOMEM, SQ_ECLOSED. */
int kvs_client_get_async(kvs_client_t *c, const char *const *keys, size_t n,
                         const kvs_client_limits_t *lim, uint64_t *id);

/* Starts a write of n keys (keys and payloads copied). Errors as get_async. */
int kvs_client_put_async(kvs_client_t *c, const kvs_client_kv_t *kvs, size_t n,
                         const kvs_client_limits_t *lim, uint64_t *id);

/* --- redirected reads (additive; squall-cache's direct misses, docs/cache.md) ------- */

/* Where the first KeyRequest of a redirected read is answered. The call is otherwise
 * an ordinary asynchronous GET (routing, retries, completion through poll): only its
 * first KeyRequest names another process's socket, whose owner is expected to hand the
 * KeyResponse back with kvs_client_deliver. If nothing is handed back within wait_ms
 * (or kvs_client_resend is called), the key is read again to the client's own socket,
 * without counting a timeout against the server or a retry against the call. A
 * WRONG_THREAD answer handed back is re-routed to the client's own socket. */
typedef struct {
  const char *response_address; /* tcp:// ipc:// inproc:// endpoint (copied) */
  const char *tag;          /* 1..KVS_CLIENT_TAG_MAX of [A-Za-z0-9_-] (copied): the request
                               id becomes "<client-id>_<n>.<tag>", so the socket's owner
                               can tell which of its requests a reply answers */
  int wait_ms;              /* hand-back bound; <= 0 = the call's per-attempt timeout */
} kvs_client_via_t;

#define KVS_CLIENT_TAG_MAX 64

/* Starts a read of one key whose first KeyRequest is answered to via->response_address
 * (see kvs_client_via_t); *id identifies the call in the completion. Errors (nothing
 * started): SQ_EINVAL (bad key, endpoint or tag), SQ_ETOOBIG, -ENOMEM, SQ_ECLOSED. */
int kvs_client_get_async_via(kvs_client_t *c, const char *key, const kvs_client_limits_t *lim,
                             const kvs_client_via_t *via, uint64_t *id);

/* Handles a reply that reached someone else's socket (a KeyResponse to a redirected
 * read, bytes borrowed) exactly as if the client had received it: a finished call is
 * then delivered by the next kvs_client_poll. 0 when it answered a request in flight
 * (*id, if id is non-NULL, gets the call's id); SQ_ENOTFOUND when it answers nothing
 * pending (late, a stranger's, undecodable, or with a tag other than the one the
 * request was sent with; counted in dropped_replies); SQ_ETOOBIG
 * over max_message_bytes; SQ_ECLOSED when broken. */
int kvs_client_deliver(kvs_client_t *c, const void *buf, size_t len, uint64_t *id);

/* Stops waiting for the hand-back of call id's redirected KeyRequest: its key is read
 * again to the client's own socket at the next poll (e.g. the other process said it
 * cannot hand the reply back). 0, or SQ_ENOTFOUND when the call has no redirected
 * request in flight. */
int kvs_client_resend(kvs_client_t *c, uint64_t id);

/* Receives replies, fires timeouts (retrying or failing keys) and calls cb once per
 * finished asynchronous call. Waits up to timeout_ms (-1: until one call finishes, 0:
 * never blocks) for at least one completion; returns at once when nothing is in
 * flight. Returns the number of completions delivered (>= 0), or SQ_ECLOSED / -errno
 * when the response socket failed (sticky). cb may be NULL (results are discarded).
 * cb must not call back into this client except kvs_client_*_async. */
int kvs_client_poll(kvs_client_t *c, int timeout_ms, kvs_client_cb_t cb, void *arg);

/* The response PULL socket, for a caller's own zmq_poll (ZMQ_POLLIN); after it fires,
 * call kvs_client_poll(c, 0, ...). Never receive from it yourself. */
void *kvs_client_socket(const kvs_client_t *c);

/* The response socket's ZMQ_FD (edge-triggered: drain with kvs_client_poll(c, 0, ..)).
 * 0 or -errno. */
int kvs_client_fd(const kvs_client_t *c, int *fd);

/* Milliseconds until the client's next timer must fire (0 = now; -1 = none), so an
 * external loop can bound its wait. Completions waiting for delivery count as 0. */
int kvs_client_next_timeout(const kvs_client_t *c);

/* Calls started and not yet delivered by kvs_client_poll. */
size_t kvs_client_pending(const kvs_client_t *c);

/* Counters since creation. */
void kvs_client_stats(const kvs_client_t *c, kvs_client_stats_t *out);

/* Maps a wire AnnaError value to the sq_error space: 0, SQ_EKEYDNE, SQ_EWRONGTHREAD,
 * SQ_ETIMEOUT, SQ_ELATTICE, SQ_ENOSERVERS, or SQ_EPROTO for an unknown value. */
int kvs_client_error_from_anna(int anna_error);

#endif
