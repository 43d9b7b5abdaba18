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
} cache__slot_t;

typedef struct cache__get {
  struct cache__get *next, *prev; /* d->gets: every GET still waiting */
  char *reply;           /* response address */
  char *request_id;
  size_t n, outstanding;
  cache__slot_t *slots;
} cache__get_t;


typedef struct {
  const cache_daemon_config_t *cfg;
  sq_log_t *log;
  void *zctx;
  void *get_sock, *put_sock, *upd_sock;
  int sigfd;
  cache_store_t *store;
  kvs_client_t *kvs;
  sq_zmq_cache_t *replies;
  cache_fetch_table_t *fetches;
  cache__put_t *puts;
  cache__get_t *gets;
  cache_keyset_t keyset;
  uint64_t keyset_call;  /* id of the key-set PUT in flight, 0 = none */
  uint64_t ts_last;      /* sq_lww_timestamp monotonic slot */
  char keyset_key[512];
  uint64_t seen_values, seen_evictions; /* store stats at the last key-set check */
  cache_daemon_counters_t c;
  bool stop;
} cache__daemon_t;

/* daemon_requests.c */
void cache__handle_get(cache__daemon_t *d, KeyRequest *req);
void cache__handle_put(cache__daemon_t *d, KeyRequest *req); /* takes req */
void cache__handle_update(cache__daemon_t *d, const KeyRequest *req);
void cache__on_kvs_done(void *arg, const kvs_client_completion_t *done);
void cache__revalidate(cache__daemon_t *d);
void cache__drop_pending(cache__daemon_t *d);

/* daemon.c */
void cache__note_store(cache__daemon_t *d);  /* marks the key set dirty on changes */

#endif
