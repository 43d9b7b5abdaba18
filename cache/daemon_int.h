/* daemon_int: state shared by the files of squall-cache (daemon.c: setup, loop,
 * timers, key-set reports, counters; daemon_requests.c: executor requests, pushed
 * updates and KVS completions). Nothing outside cache/daemon*.c includes this.
 *
 * Ownership: the daemon struct owns every socket, the store, the KVS client, the
 * fetch table and every pending request. A pending GET is referenced by the fetch
 * table's waiters (one per missing key) and freed when its last key is answered; a
 * pending PUT sits in the `puts` list until its KVS call completes.
 */
#ifndef CACHE_DAEMON_INT_H
#define CACHE_DAEMON_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anna.pb-c.h"
#include "cache_lease.h"
#include "cache_store.h"
#include "client.h"
#include "daemon.h"
#include "daemon_fetch.h"
#include "daemon_keyset.h"
#include "sq_log.h"
#include "sq_zmq.h"

typedef struct {
  uint64_t hits;         /* GET keys answered from the cache */
  uint64_t misses;       /* GET keys that were not cached */
  uint64_t coalesced;    /* misses that joined a fetch already in flight */
  uint64_t fetches;      /* KVS GETs started */
  uint64_t puts;         /* PUT keys written through */
  uint64_t put_errors;   /* PUT keys the KVS refused or that timed out */
  uint64_t updates;      /* pushed updates merged */
  uint64_t updates_ignored; /* pushed updates for keys not held, or mismatched */
  uint64_t touches;      /* hits reported by executors */
  uint64_t bad_requests; /* requests refused as invalid */
  uint64_t reply_drops;  /* replies that could not be sent */
  uint64_t revalidated;  /* keys refetched at start */
  uint64_t inline_replies; /* fetched keys answered with the value inline (unix socket) */
  uint64_t refetches;    /* fetched keys read again once announced (daemon_window.c) */
  uint64_t direct;       /* fetches the KVS answered to the executor (direct misses) */
  uint64_t fills;        /* KVS answers executors handed back (FILL datagrams) */
  uint64_t lease_fills;  /* values executors fetched under a lease and handed over */
  uint64_t accept_pauses; /* unix-socket accepts that failed for lack of fds or memory
                            (each pauses the listener, daemon_uds.c) */
} cache_daemon_counters_t;

typedef struct cache__put {
  struct cache__put *next;
  uint64_t call_id;
  KeyRequest *req;       /* the executor's request (payloads to merge on ack) */
} cache__put_t;

typedef struct {
  char *key;
  int err;               /* sq error space */
  sq_lattice_type_t type;
  char *message;         /* malloc'd or NULL */
  const uint8_t *payload; /* inline value (borrowed; set only while being answered) */
  size_t len;
} cache__slot_t;

typedef struct cache__get {
  struct cache__get *next, *prev; /* d->gets: every GET still waiting */
  char *reply;           /* response address (ZeroMQ), NULL for a unix-socket GET */
  uint64_t conn;         /* unix-socket connection id (daemon_uds.c), 0 = ZeroMQ */
  char *request_id;
  char *direct;          /* unix-socket GET: the executor's address for a direct miss
                            (cache_uds.h), NULL = answer on the socket only */
  uint64_t direct_call;  /* its KVS call when the fetch was sent there, else 0 */
  size_t n, outstanding;
  cache__slot_t *slots;
} cache__get_t;


#define CACHE_UDS_MAX_CONNS 128
#define CACHE_UDS_ACCEPT_PAUSE_MS 100 /* listener not polled after EMFILE & co. */
#define CACHE_DEFER_IDLE_MS 1   /* an idle loop stores deferred values after this */
#define CACHE_LARGE_KEYS 1024   /* remembered large keys (d->large) */

typedef struct cache__deferred cache__deferred_t; /* daemon_defer.c */

typedef struct {         /* daemon_window.c: keys fetched but not yet announced */
  char **keys;
  size_t n, cap;
  bool overflow;         /* too many to list: refetch every cached key */
} cache__keys_t;

typedef struct {
  int fd;                /* -1 = free slot */
  uint32_t gen;          /* bumped on close: stale connection ids find nothing */
  size_t max_dgram;      /* largest reply datagram its send buffer takes */
} cache__conn_t;

typedef struct {
  const cache_daemon_config_t *cfg;
  sq_log_t *log;
  void *zctx;
  void *get_sock, *put_sock, *upd_sock;
  int sigfd;
  int uds_fd;            /* <dir>/requests.sock listener (daemon_uds.c) */
  int64_t uds_resume_ms; /* listener not polled before this (monotonic ms): an accept
                            failed for lack of fds or memory; 0 = polled */
  bool uds_starved;      /* in such an episode (warned once); ends at an accept that
                            does not fail so */
  cache__conn_t conns[CACHE_UDS_MAX_CONNS];
  size_t uds_polled[CACHE_UDS_MAX_CONNS + 1]; /* poll item -> conns index */
  sq_buf_t uds_in, uds_out;
  cache_store_t *store;
  kvs_client_t *kvs;
  sq_zmq_cache_t *replies;
  cache_fetch_table_t *fetches;
  cache_lease_table_t *leases; /* <dir>/leases (cache_lease.h), NULL = none */
  cache__put_t *puts;
  cache__get_t *gets;
  cache__deferred_t *deferred; /* fetched values answered inline, not stored yet */
  uint64_t turn;         /* loop turns so far */
  uint64_t large[CACHE_LARGE_KEYS]; /* hashes of keys last fetched with a value over
                            CACHE_UDS_INLINE_MAX (direct-mapped; 0 = empty): their
                            misses are not direct, see daemon_requests.c */
  uint64_t filled_call;  /* KVS call a FILL just answered (its executor has the
                            answer), 0 = none */
  cache__keys_t window;  /* fetched since the last key-set report started */
  cache__keys_t announcing; /* fetched before the report in flight started */
  cache_keyset_t keyset;
  uint64_t keyset_call;  /* id of the key-set PUT in flight, 0 = none */
  uint64_t ts_last;      /* sq_lww_timestamp monotonic slot */
  char keyset_key[512];
  uint64_t seen_values, seen_evictions; /* store stats at the last key-set check */
  cache_daemon_counters_t c;
  bool stop;
} cache__daemon_t;

/* daemon_requests.c; conn = the unix-socket connection id of the request, 0 = ZeroMQ */
void cache__handle_get(cache__daemon_t *d, KeyRequest *req, uint64_t conn);
void cache__handle_put(cache__daemon_t *d, KeyRequest *req); /* takes req */
void cache__handle_update(cache__daemon_t *d, const KeyRequest *req);
/* A FILL (resp = the KVS's KeyResponse, borrowed) or NOFILL (len 0) of kind 'F' / 'N'
 * (cache_uds.h) from unix-socket connection conn (0 = ZeroMQ). */
void cache__handle_fill(cache__daemon_t *d, uint8_t kind, const uint8_t *resp, size_t len,
                        uint64_t conn);
/* A lease FILL (cache_uds.h): head = the first frame after its two kind bytes (token,
 * lattice type, key), payload = the second frame; both borrowed and untrusted. */
void cache__handle_lease_fill(cache__daemon_t *d, const uint8_t *head, size_t hlen,
                              const uint8_t *payload, size_t len);
void cache__on_kvs_done(void *arg, const kvs_client_completion_t *done);
void cache__revalidate(cache__daemon_t *d);
/* Fetches key once more after its announcement; the result does not re-enter the
 * window. 0 or the error of starting the fetch. */
int cache__refetch(cache__daemon_t *d, const char *key);
/* Stores a value fetched from the KVS, after any deferred ones (fetched earlier):
 * merged into what is cached (a PUT acked during
 * the fetch may be there), else stored; errors are logged and returned. Notes
 * key-set changes; unless announced (a refetch), the key joins the window. The
 * payload stays the caller's. */
int cache__store_fetched(cache__daemon_t *d, const char *key, sq_lattice_type_t type,
                         const uint8_t *payload, size_t len, bool announced);
/* As cache__store_fetched, without storing the deferred values first (daemon_defer.c
 * uses it to store them). */
int cache__store_now(cache__daemon_t *d, const char *key, sq_lattice_type_t type,
                     const uint8_t *payload, size_t len, bool announced);
void cache__drop_pending(cache__daemon_t *d);

/* daemon_uds.c: the unix-socket channel (cache_uds.h) */
void cache__uds_init(cache__daemon_t *d); /* no listener, no connections */
int cache__uds_open(cache__daemon_t *d, const char *dir, char *why, size_t cap);
void cache__uds_close(cache__daemon_t *d);
/* Fills items with the listener (no events while paused at now, monotonic ms) then
 * each open connection; returns the count (at most CACHE_UDS_MAX_CONNS + 1; 0
 * without a listener). */
size_t cache__uds_items(cache__daemon_t *d, zmq_pollitem_t *items, int64_t now);
/* Accepts and reads what the poll reported on items (as filled by cache__uds_items). */
void cache__uds_serve(cache__daemon_t *d, const zmq_pollitem_t *items, size_t n);
/* Sends resp on connection conn. 0, SQ_ECLOSED (gone), SQ_ETOOBIG, -errno. */
int cache__uds_reply(cache__daemon_t *d, uint64_t conn, const KeyResponse *resp);
/* The largest reply conn takes in one datagram (0 when it is gone). */
size_t cache__uds_room(cache__daemon_t *d, uint64_t conn);

/* daemon_defer.c: stores deferred until the executor has its inline answer */
/* Defers the store of a fetched value (cache__store_fetched later); takes payload
 * (malloc'd). */
void cache__defer_store(cache__daemon_t *d, const char *key, sq_lattice_type_t type,
                        uint8_t *payload, size_t len, bool announced);
/* Stores key now if its store was deferred. Call before reading or changing key. */
void cache__defer_flush_key(cache__daemon_t *d, const char *key);
/* Stores what was deferred before this loop turn (all: everything). */
void cache__defer_flush(cache__daemon_t *d, bool all);

/* daemon_window.c: refetch of keys fetched before the KVS knew we hold them */
void cache__window_add(cache__daemon_t *d, const char *key);  /* stored from a fetch */
void cache__window_started(cache__daemon_t *d);  /* a key-set report started */
void cache__window_done(cache__daemon_t *d, int err); /* it was acked (0) or failed */
void cache__window_free(cache__daemon_t *d);

/* daemon.c */
void cache__note_store(cache__daemon_t *d);  /* marks the key set dirty on changes */

#endif
