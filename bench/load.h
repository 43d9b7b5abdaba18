/* load: the shared core of kvs_load, the closed-loop KVS load generator.
 *
 * kvs_load drives one system (squall over Anna's protocol, or Redis over RESP) with
 * N logical clients, each keeping at most `depth` requests outstanding: depth 1 is
 * the classic unpipelined client, depth 16 a pipelined one. Clients are spread over
 * `threads` load threads; each thread runs its own event loop over its own clients
 * and sockets (load_anna.c: epoll over ZMTP connections, zmtp.h; load_redis.c:
 * epoll over TCP connections) and nothing is shared between threads but the
 * read-only configuration and, for Anna, the read-only key -> endpoint table.
 *
 * One run of a protocol loop is a "phase":
 *   - a timed phase issues random keys until `stop_ns`; completions after
 *     `record_ns` (the end of the warm-up) go into the histogram and the counters;
 *   - a preload phase PUTs the keys of the thread's slice [key_lo, key_hi) once each,
 *     in order, so that every GET of a timed phase finds its key.
 * After stop_ns (or the last preload key) a thread stops issuing and drains what is
 * outstanding for at most LOAD_DRAIN_NS; anything still missing then counts as a
 * timeout. A request outstanding for longer than `timeout_ns` is a timeout too, and
 * its slot is reused, so a lost reply never wedges a client.
 *
 * Errors are counted by kind (load_err_t) and never hidden: a cell with errors is
 * reported with them.
 */
#ifndef BENCH_LOAD_H
#define BENCH_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "histogram.h"
#include "sq_buf.h"

#define LOAD_MAX_DEPTH 1024
#define LOAD_MAX_CLIENTS 1000 /* also the LWW timestamp scale (load_anna.c) */
#define LOAD_MAX_THREADS 64
#define LOAD_MAX_VALUE (64u << 20)
#define LOAD_KEY_MAX 32
#define LOAD_DRAIN_NS 3000000000ull

typedef enum { LOAD_OP_GET = 0, LOAD_OP_PUT = 1 } load_op_t;
typedef enum { LOAD_SYS_SQUALL = 0, LOAD_SYS_REDIS = 1 } load_sys_t;

/* Error kinds, in the order they are printed. */
#define LOAD_ERR_TABLE(X)                                                   \
  X(LOAD_ERR_KEY_DNE, "key_dne")           /* GET found no value */        \
  X(LOAD_ERR_WRONG_THREAD, "wrong_thread") /* Anna: not the key's thread */ \
  X(LOAD_ERR_LATTICE, "lattice")           /* Anna: LATTICE error */        \
  X(LOAD_ERR_SERVER, "server")             /* other server error / -ERR */  \
  X(LOAD_ERR_PROTO, "proto")               /* undecodable or unexpected reply */ \
  X(LOAD_ERR_BAD_VALUE, "bad_value")       /* GET value of the wrong size */ \
  X(LOAD_ERR_TIMEOUT, "timeout")           /* no reply within timeout */    \
  X(LOAD_ERR_SEND, "send")                 /* could not send */

typedef enum {
#define LOAD__ERR_ENUM(name, text) name,
  LOAD_ERR_TABLE(LOAD__ERR_ENUM)
#undef LOAD__ERR_ENUM
  LOAD_ERR_COUNT
} load_err_t;

/* What kvs_load was told (read-only once threads start). Strings are owned by the
 * option loader. */
typedef struct {
  char *system;        /* "squall" or "redis" */
  char *host;          /* server host, default 127.0.0.1 */
  int64_t port;        /* redis: TCP port */
  int64_t port_offset; /* squall: Anna port offset (routing at 6450 + offset) */
  char *op;            /* "get" or "put" */
  uint64_t value_size; /* bytes of each PUT value (and expected GET value) */
  int64_t clients;
  int64_t depth;
  int64_t threads;
  int64_t keys;        /* key space: keys 0 .. keys-1 */
  double seconds;      /* timed phase length (after warm-up) */
  double warmup;       /* seconds issued but not recorded */
  bool preload;        /* PUT every key once before the timed phase */
  bool histogram;      /* add the latency histogram's buckets to the JSON line */
  double timeout;      /* seconds before an outstanding request is a timeout */
  char *label;         /* free text copied into the JSON line */
  int64_t seed;
} load_opts_t;

/* One load thread's share of a phase, and what it measured. */
typedef struct {
  const load_opts_t *opts;
  const void *shared;      /* protocol's read-only state (Anna: the endpoint table) */
  load_op_t op;
  load_sys_t sys;
  int index;               /* thread number */
  int client_lo, client_hi;  /* the thread's clients [lo, hi) */
  bool preload;            /* preload phase: PUT keys [key_lo, key_hi) in order */
  uint64_t key_lo, key_hi;
  uint64_t record_ns;      /* CLOCK_MONOTONIC ns: record completions from here */
  uint64_t stop_ns;        /* stop issuing here (timed phase) */
  uint64_t timeout_ns;
  uint64_t rng;            /* xorshift state, never 0 */
  /* results */
  hist_t *hist;            /* latencies (ns) of recorded completions */
  uint64_t ops;            /* recorded completions without error */
  uint64_t errors[LOAD_ERR_COUNT];
  int fatal;               /* nonzero: the loop itself failed (0 / -errno / SQ_E*) */
  char fatal_msg[256];
} load_thread_t;

/* Monotonic clock in nanoseconds. */
uint64_t load_now_ns(void);

/* Next pseudo-random number of the thread (xorshift64*). */
uint64_t load_rand(load_thread_t *t);

/* Writes v in decimal, zero-padded to at least min_digits (at most 20), NUL-terminated,
 * into buf (room for 21 bytes); returns the number of digits. */
int load_u64_text(uint64_t v, int min_digits, char *buf);

/* Writes the name of key i ("key:00000042") into buf (LOAD_KEY_MAX bytes); returns
 * its length. The same names are used for both systems. */
int load_key_name(uint64_t i, char *buf);

/* The key index a client issues next: random in [0, keys) in a timed phase, the
 * next of [key_lo, key_hi) in a preload phase. Returns false when a preload phase
 * has no key left. */
bool load_next_key(load_thread_t *t, uint64_t *key);

/* Accounts one completion: an error of kind err (or -1 for success) with latency
 * lat_ns, completed at now_ns. Only completions after record_ns (and, in a timed
 * phase, before stop_ns + drain) count. */
void load_complete(load_thread_t *t, int err, uint64_t lat_ns, uint64_t now_ns);

/* True while the thread should issue new requests. */
bool load_issuing(const load_thread_t *t, uint64_t now_ns);

/* Opens a non-blocking TCP connection to host:port with TCP_NODELAY, waiting at most
 * LOAD_CONNECT_TIMEOUT_MS for it. 0 or negative errno (-EHOSTUNREACH when host does
 * not resolve, -ETIMEDOUT when nothing answered). */
#define LOAD_CONNECT_TIMEOUT_MS 5000
int load_tcp_connect(const char *host, int port, int *out);

/* Bytes queued for a non-blocking socket that an epoll set watches. */
typedef struct {
  sq_buf_t buf;   /* queued bytes (the caller appends; load_out_flush consumes) */
  size_t off;     /* bytes of buf already written */
  bool want_out;  /* EPOLLOUT registered for the socket */
} load_out_t;

/* Writes as much of out as socket fd takes; while bytes remain, fd is registered in
 * ep for `events` | EPOLLOUT (with data.u32 = tag), else for `events` alone. 0, or
 * negative errno when the connection failed (a peer that closed gives -EPIPE, never
 * SIGPIPE); the caller then drops the connection. */
int load_out_flush(load_out_t *out, int fd, int ep, uint32_t events, uint32_t tag);

/* Listens on host at an ephemeral port (non-blocking, backlog 64); *port gets it.
 * 0 or negative errno. */
int load_tcp_listen(const char *host, int *out, int *port);

/* Name of an error kind for the JSON line. */
const char *load_err_name(int err);

/* ---- protocols --------------------------------------------------------------------- */

/* Anna / squall. load_anna_prepare() asks the routing thread at
 * tcp://host:6450+port_offset where every key of the key space lives and builds the
 * read-only table that every thread then uses (*shared, freed with
 * load_anna_release). 0 or an error with a sentence in err. */
int load_anna_prepare(const load_opts_t *opts, void *zctx, void **shared, char *err,
                      size_t errlen);
void load_anna_release(void *shared);

/* Runs one phase of one thread (t->shared is the table), speaking ZMTP on its own
 * sockets (zmtp.h).
 * Returns 0 or the fatal error also stored in t->fatal. */
int load_anna_run(load_thread_t *t);

/* Redis RESP: one TCP connection per client, SET/GET pipelined up to depth. */
int load_redis_run(load_thread_t *t);

#endif
