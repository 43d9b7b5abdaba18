/* client_int: internals shared by the kvs_client files (not a public header).
 *
 * client_cache.c holds the three bounded helper structures of a client:
 *   - the address cache: key -> replica endpoints learned from routing, bounded by a
 *     count; when full an arbitrary entry is evicted (a miss only costs one lookup);
 *   - the PUSH socket cache: endpoint -> connected socket, bounded; the least
 *     recently used socket is closed when full, with a short linger so that queued
 *     requests still leave (a socket to a silent server is closed with LINGER 0);
 *   - a binary min-heap of (deadline, request id) timers with lazy deletion: a timer
 *     whose request is gone is skipped when it surfaces.
 * All of them belong to the client's thread.
 */
#ifndef KVS_CLIENT_INT_H
#define KVS_CLIENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "sq_arena.h"

#define KVS__MAX_REPLICAS 64      /* ips accepted per key from routing */
#define KVS__MAX_ENDPOINT 255     /* bytes of an endpoint string */
#define KVS__EVICT_LINGER_MS 200  /* flush time given to an evicted PUSH socket */

/* --- address cache ------------------------------------------------------------------ */

typedef struct kvs__addr {
  struct kvs__addr *next;   /* hash chain */
  uint64_t hash;
  char **eps;               /* owned endpoint strings */
  uint32_t neps;
  char key[];               /* NUL-terminated */
} kvs__addr_t;

typedef struct {
  kvs__addr_t **buckets;
  size_t nbuckets;          /* power of two */
  size_t count;
  size_t max;
  uint64_t evict_cursor;
} kvs__addr_cache_t;

/* Initialises an empty cache holding at most max keys. 0 or -ENOMEM. */
int kvs__addr_init(kvs__addr_cache_t *ac, size_t max);

/* Frees every entry. Accepts a zeroed cache. */
void kvs__addr_free(kvs__addr_cache_t *ac);

/* The cached entry for key, or NULL. Valid until the next change of the cache. */
const kvs__addr_t *kvs__addr_get(const kvs__addr_cache_t *ac, const char *key);

/* Replaces key's endpoints with copies of eps[0..n) (n >= 1). 0 or -ENOMEM (then the
 * key is simply not cached). */
int kvs__addr_set(kvs__addr_cache_t *ac, const char *key, char *const *eps, size_t n);

/* Forgets key. */
void kvs__addr_drop(kvs__addr_cache_t *ac, const char *key);

/* Forgets every key whose endpoints include ep; returns how many. */
size_t kvs__addr_drop_endpoint(kvs__addr_cache_t *ac, const char *ep);

/* --- PUSH socket cache ---------------------------------------------------------------- */

typedef struct {
  char *ep;
  void *sock;
  uint64_t used;
} kvs__sock_t;

typedef struct {
  void *ctx;                /* borrowed */
  kvs__sock_t *v;
  size_t n, max;
  uint64_t tick;
} kvs__sock_cache_t;

/* Sends one frame to ep without blocking, connecting (and caching) a socket first if
 * needed. 0, -EAGAIN (peer queue full), -EINVAL (bad endpoint), -ENOMEM, -errno. */
int kvs__sock_send(kvs__sock_cache_t *sc, const char *ep, const void *buf, size_t len);

/* Closes and forgets the socket to ep, if any. */
void kvs__sock_close(kvs__sock_cache_t *sc, const char *ep);

/* Closes every socket. */
void kvs__sock_free(kvs__sock_cache_t *sc);

/* --- timer heap ----------------------------------------------------------------------- */

typedef struct {
  uint64_t at;              /* monotonic ms (sq_now_ms) */
  uint64_t rid;
} kvs__timer_t;

typedef struct {
  kvs__timer_t *v;
  size_t n, cap;
} kvs__heap_t;

int kvs__heap_push(kvs__heap_t *h, uint64_t at, uint64_t rid);     /* 0 or -ENOMEM */
bool kvs__heap_top(const kvs__heap_t *h, kvs__timer_t *out);       /* false if empty */
void kvs__heap_pop(kvs__heap_t *h);
void kvs__heap_free(kvs__heap_t *h);

/* --- small helpers -------------------------------------------------------------------- */

/* True when s is an endpoint the client will connect to: "tcp://", "ipc://" or
 * "inproc://" followed by 1..KVS__MAX_ENDPOINT printable, non-space bytes. */
bool kvs__endpoint_valid(const char *s, size_t len);

/* --- the request engine (client.c) ------------------------------------------------- */

#define KVS__RID_MAX 160             /* "<client-id>_<20 digits>" + NUL */
#define KVS__CLIENT_ID_MAX 128
#define KVS__SLOT_DONE UINT32_MAX

typedef enum { KVS__ADDR, KVS__KEY, KVS__DELAY } kvs__kind_t;

typedef struct {
  char *key;                 /* owned copy */
  uint8_t *val;              /* PUT: owned copy of the payload */
  size_t vlen;
  sq_lattice_type_t vtype;
  uint32_t tries;            /* retries used (timeouts, NO_SERVERS) */
  uint32_t redirects;        /* WRONG_THREAD re-routes used */
  bool done;
} kvs__key_t;

typedef struct kvs__op {
  struct kvs__op *prev, *next;   /* in c->inflight or c->finished */
  uint64_t id;
  int type;                      /* REQUEST_TYPE__GET / __PUT */
  int timeout_ms;
  int retries;
  bool sync;                     /* waited for by a synchronous call, never polled */
  bool done;
  size_t n, nopen;               /* keys, keys without an outcome */
  size_t nwires;                 /* wires that still list this op */
  kvs__key_t *keys;
  const char **names;            /* names[i] == keys[i].key, for completions */
  char *via_addr, *via_tag;      /* redirected read: owned until its first KeyRequest */
  int via_ms;
  kvs_client_result_t *res;
} kvs__op_t;

typedef struct {
  kvs__op_t *head, *tail;
  size_t n;
} kvs__list_t;

typedef struct kvs__wire {
  struct kvs__wire *hnext;
  uint64_t rid;
  kvs__kind_t kind;
  kvs__op_t *op;
  char *endpoint;            /* owned; NULL for DELAY */
  uint32_t *idx;             /* op key indices; KVS__SLOT_DONE once answered */
  size_t nidx, nopen, cursor;
  uint64_t deadline;
  char *tag;                 /* owned; non-NULL iff this KEY is answered to another
                                socket (kvs_client_via_t): its request id ends in
                                ".<tag>", and only a reply with that tag answers it */
} kvs__wire_t;

/* One key to send: op index, chosen endpoint (NULL: ask the cache, then routing) and
 * the number of replicas the client knows (address_cache_size). */
typedef struct {
  uint32_t idx;
  const char *ep;
  uint32_t ncache;
} kvs__route_t;

struct kvs_client {
  void *ctx;
  bool own_ctx;
  void *pull;
  int broken;                    /* sticky error, 0 while healthy */
  char id[KVS__CLIENT_ID_MAX];
  size_t idlen;
  char *response_address;
  char **routing;
  size_t nrouting, routing_rr;
  int timeout_ms, retries;
  size_t max_msg;                /* largest reply accepted, bytes */
  uint64_t next_id;              /* op ids and request ids, never reused */
  uint64_t rng;
  kvs__addr_cache_t addrs;
  kvs__sock_cache_t socks;
  kvs__heap_t timers;
  kvs__wire_t **wbuckets;
  size_t nwbuckets, nwires;
  kvs__list_t inflight, finished;
  sq_arena_t arena;
  kvs_client_stats_t stats;
  char message[KVS_CLIENT_MESSAGE_MAX];
};

void kvs__list_append(kvs__list_t *l, kvs__op_t *op);
void kvs__list_remove(kvs__list_t *l, kvs__op_t *op);

/* xorshift64*: picks replicas. */
uint64_t kvs__rand(kvs_client_t *c);

/* Sets key i's outcome (first outcome wins) with a printf-style sentence (fmt may be
 * NULL for none). */
void kvs__finish_key(kvs__op_t *op, uint32_t i, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Sends routes r[0..n) of op (see client.c). */
void kvs__dispatch(kvs_client_t *c, kvs__op_t *op, kvs__route_t *r, size_t n);

/* Builds an op from the caller's keys (copied) and starts it. *out stays owned by the
 * client (in-flight list). SQ_EINVAL, SQ_ETOOBIG, SQ_ECLOSED, -ENOMEM. */
int kvs__op_start(kvs_client_t *c, int type, const char *const *keys,
                  const kvs_client_kv_t *kvs, size_t n, const kvs_client_limits_t *lim,
                  bool sync, kvs__op_t **out);

/* As kvs__op_start, for a redirected read (via copied into the op; NULL = none). */
int kvs__op_start_via(kvs_client_t *c, int type, const char *const *keys,
                      const kvs_client_kv_t *kvs, size_t n, const kvs_client_limits_t *lim,
                      bool sync, const kvs_client_via_t *via, kvs__op_t **out);

/* Frees an op that is on no list, with its results' payloads. Accepts NULL. */
void kvs__op_free(kvs__op_t *op);

/* Receives and handles replies and due timers, waiting up to wait_ms (-1: until the
 * next timer) for the first reply. 0 or the sticky error. */
int kvs__pump(kvs_client_t *c, int wait_ms);

#endif
