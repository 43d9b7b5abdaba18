/* kvs_cork: lets the kernel send a storage worker's long runs of replies in full
 * segments instead of libzmq's 8 KiB writes.
 *
 * Why: libzmq's I/O thread writes a connection's queued messages at most 8 KiB per
 * send(2) (its out_batch_size, a draft option Debian's libzmq is built without), and
 * on loopback each send costs ~6 us of fixed kernel work (segment, receive path,
 * wake-up) plus ~0.3 us per KiB. With 1 KiB values that is ~0.8 us per reply, twice
 * what Redis pays writing 16 KiB per client (measured with a plain TCP sender: 8 KiB
 * writes 5.5 us each, corked 2.7 us). TCP_CORK on the reply connection makes those
 * writes queue until a full segment (64 KiB on loopback) or the uncork.
 *
 * How: when a run of small replies to one response address reaches KVS_CORK_MIN_BYTES
 * (one full loopback segment) in KVS_CORK_MIN_TURNS worker turns in a row -- a client
 * streaming requests, not one that asked for one large value (libzmq writes a message
 * over 8 KiB in one send anyway, and corking such a reply only delayed its tail: an
 * 80 KB miss of the cache benchmark went from 1.05x to 1.3x a direct get) -- that
 * address's TCP connection is corked (found once by its peer address among the
 * process's sockets, and checked again before every cork). It stays corked while the client keeps the worker busy, and is
 * uncorked (flushing the partial segment) after KVS_CORK_GRACE_TURNS busy turns
 * without such a run for it, and always before the worker sleeps. An idle worker
 * with a corked connection first yields the CPU once (kvs/server.c), so that on a
 * shared core ZeroMQ's I/O thread writes the turn's replies while still corked; the
 * flush follows at once if no request came meanwhile. So corked bytes wait at most a
 * yield or a few busy turns, never across an idle worker, and the kernel's own
 * 200 ms cork limit is the last resort. Shorter runs (unpipelined clients: 50 of
 * them with 1 KiB values never reach 64 KiB) are never corked, so their latency is
 * unchanged. The connection belongs to libzmq; only its TCP_CORK option is touched
 * (the kernel serialises that with libzmq's writes), and a wrong guess costs speed,
 * never data: a connection that cannot be found or no longer matches is not corked.
 *
 * Measured (GET 1KiB d16, pinned, interleaved pairs): +29% throughput, -20% server
 * CPU per GET, p99 2.5-3.1 ms instead of 3.5-3.9; GET 1KiB d1 and GET 8B d16
 * unchanged. An earlier version that uncorked at the first turn without a long run,
 * or at once when idle, gained nothing: ZeroMQ's I/O thread mostly writes while the
 * worker sleeps.
 *
 * Only tcp:// endpoints with a numeric IPv4/IPv6 address are corked (no name lookups
 * on the worker). A search reads every fd of the process (a getpeername each), so a
 * connection that is not found is searched for again after 100 ms, then 200 ms, ...
 * up to 10 s: with tens of thousands of fds a search costs milliseconds, and a client
 * whose connection never shows (reached through a proxy, say) must not cost the
 * worker that every 100 ms. One worker thread owns a kvs_cork_t; nothing is shared.
 */
#ifndef KVS_CORK_H
#define KVS_CORK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define KVS_CORK_MIN_BYTES (64 * 1024) /* a run this long in one turn ... */
#define KVS_CORK_MIN_REPLIES 16        /* ... of at least this many replies ... */
#define KVS_CORK_MIN_TURNS 2           /* ... in this many turns in a row corks */
#define KVS_CORK_ENTRIES 16           /* response addresses tracked at once */
#define KVS_CORK_ENDPOINT_MAX 256
#define KVS_CORK_GRACE_TURNS 8        /* busy turns without a long run before uncorking */

typedef struct {
  char endpoint[KVS_CORK_ENDPOINT_MAX]; /* "" = free entry */
  struct sockaddr_storage peer;         /* the endpoint, parsed */
  socklen_t peer_len;
  int fd;                /* the connection, -1 while not found */
  uint64_t next_find_ms; /* when to look for it again */
  uint32_t find_wait_ms; /* the wait after the next failed search (doubles, see .c) */
  uint64_t last_used_ms;
  unsigned quiet_turns; /* turns since its last long run */
  unsigned long_turns;  /* turns in a row with a long run (up to KVS_CORK_MIN_TURNS) */
  bool corked;
  bool used; /* had a long run this turn */
} kvs_cork_entry_t;

typedef struct {
  bool enabled;
  /* Bit i: e[i] had a long run this turn, has a streak or is corked. The others are
   * idle, so a turn end, release or kvs_cork_any looks at these only: with nobody
   * streaming they cost the worker one load per turn, not a pass over every entry. */
  uint32_t live;
  kvs_cork_entry_t e[KVS_CORK_ENTRIES];
  uint64_t corks;   /* connections corked */
  uint64_t finds;   /* searches for a connection among the process's fds */
} kvs_cork_t;

/* Sets c up, corking nothing when enabled is false. */
void kvs_cork_init(kvs_cork_t *c, bool enabled);

/* A run of `replies` replies to endpoint has reached `bytes` in this turn. A long run
 * (KVS_CORK_MIN_BYTES in KVS_CORK_MIN_REPLIES or more replies) is recorded; the
 * connection is corked once KVS_CORK_MIN_TURNS turns in a row had one and the
 * connection can be found. A single large reply never counts: libzmq writes a
 * message over 8 KiB in one send already, and a client that only sometimes asks for
 * much does not pay for the search of its connection. Cheap when nothing is due. */
void kvs_cork_run(kvs_cork_t *c, const char *endpoint, size_t bytes, size_t replies);

/* End of a worker turn: uncorks every connection that had no long run in it. */
void kvs_cork_turn_end(kvs_cork_t *c);

/* True when some connection is corked. */
bool kvs_cork_any(const kvs_cork_t *c);

/* The worker is about to sleep (or stop): uncorks every connection. */
void kvs_cork_release_all(kvs_cork_t *c);

/* Parses "tcp://a.b.c.d:port" or "tcp://[v6]:port" into *addr. false for anything
 * else (names, other transports, bad ports). Exposed for tests. */
bool kvs_cork_parse_endpoint(const char *endpoint, struct sockaddr_storage *addr,
                             socklen_t *len);

#endif
