/* sched_int: the scheduler's state, shared by the sched_*.c handler files.
 *
 * Tables (all bounded, all owned by the one scheduler thread):
 *   dags[]      known DAGs (name -> decoded Dag), at most SCHED_MAX_DAGS
 *   funcs[]     function names known to be registered (sorted), SCHED_MAX_FUNCS
 *   oneshots[]  ring of recent one-shot calls, for re-sending when their executor dies
 *   inflight[]  ring of recent DAG calls, for re-running when an executor dies
 *   pending     calls whose re-send found no live executor, retried by the tick until
 *               --resend-wait-ms passed, then failed to their caller (sched_pending.h)
 *   asyncs[]    asynchronous KVS calls in flight and what their answer is for
 *   errw[]      failed calls' error results on their way into the KVS (asynchronous
 *               read-then-write, sched_retry.c), at most SCHED_MAX_ERRWRITES
 */
#ifndef SCHED_INT_H
#define SCHED_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "cloudburst.pb-c.h"
#include "internal.pb-c.h"
#include "sched_pending.h"
#include "sched_policy.h"
#include "sched_server.h"
#include "shared.pb-c.h"
#include "sq_buf.h"
#include "sq_log.h"
#include "sq_time.h"
#include "sq_zmq.h"

#define SCHED_MAX_DAGS 4096
#define SCHED_MAX_FUNCS 65536
#define SCHED_MAX_ONESHOTS 4096
#define SCHED_MAX_INFLIGHT 1024
#define SCHED_MAX_ASYNC 64
#define SCHED_MAX_TRIES 3      /* sends of one call, first included */
#define SCHED_TRACK_MAX_BYTES (1u << 20) /* larger calls are not kept for re-sending */
#define SCHED_MAX_PENDING 1024 /* calls waiting for an executor to come back */
#define SCHED_PENDING_MAX_BYTES (64u << 20) /* their packed bytes, at most */
#define SCHED_PENDING_RETRY_MS 250 /* parked calls are retried at most this often */
#define SCHED_MAX_ERRWRITES 1024 /* error results being written to the KVS at once */
#define SCHED_MAX_REFS 64      /* references considered per function */
#define SCHED_ERRMSG_MAX 512
#define SCHED_ENV_MAX 8        /* routing envelope frames of a request, delimiter included */
#define SCHED_ENV_FRAME_MAX 256 /* bytes of one envelope frame (REQ: 5, Channel: 8) */
/* Reads of the function index for names not known here (sched__func_known): at most
 * one per SCHED_INDEX_RELOAD_MS, plus up to SCHED_INDEX_FRESH_MAX early ones for names
 * not looked up since the last read (every read forgets the earlier misses, so the
 * one name missed since then is all there is to remember). */
#define SCHED_INDEX_RELOAD_MS 50
#define SCHED_INDEX_FRESH_MAX 4

enum { SCHED_P_CONNECT, SCHED_P_FCREATE, SCHED_P_FCALL, SCHED_P_LIST, SCHED_P_DCREATE,
       SCHED_P_DCALL, SCHED_P_DDELETE, SCHED_NREP };

/* Executor port bases (PROTOCOL.md §1.11). */
#define SCHED_EXEC_PIN 4000
#define SCHED_EXEC_UNPIN 4010
#define SCHED_EXEC_CALL 4020
#define SCHED_EXEC_SCHEDULE 4030
#define SCHED_EXEC_TRIGGER 4040

typedef struct {
  char *name;
  Dag *dag; /* protobuf-c unpacked, freed with dag__free_unpacked */
} sched_dagent_t;

typedef struct {
  uint8_t *msg; /* packed FunctionCall, response_key filled */
  size_t len;
  sched_exec_id_t exec;
  uint64_t sent_ms;
  int tries;
} sched_oneshot_t;

typedef struct {
  char id[64];
  uint8_t *call; /* packed DagCall */
  size_t len;
  sched_exec_id_t *execs;
  size_t nexecs;
  uint64_t sent_ms;
  int tries;
} sched_inflight_t;

/* What became of re-sends since start (logged with each failure and at exit). */
typedef struct {
  uint64_t resent;       /* re-sent to another executor at once */
  uint64_t parked;       /* found no live executor: parked */
  uint64_t unparked;     /* parked, then re-sent when an executor came back */
  uint64_t failed;       /* parked past --resend-wait-ms (or list full): error result sent */
  uint64_t undelivered;  /* ... and that error result could not be delivered */
} sched_retry_stats_t;

/* A failed call's error result on its way into the KVS at key (sched_retry.c): first
 * an asynchronous GET (is the key still empty?), then an asynchronous PUT. */
typedef struct {
  uint64_t id;      /* the asynchronous KVS call in flight for it */
  bool writing;     /* false: reading the key; true: writing the error result */
  char *key;        /* malloc'd */
  uint8_t *value;   /* malloc'd packed Value (the error tuple) */
  size_t len;
} sched_errwrite_t;

/* The bound on function index reads (sched_func.c). */
typedef struct {
  uint64_t read_ms;                    /* last read (unknown name or List) */
  uint64_t missed;                     /* hash of the name that missed in it ... */
  bool has_missed;                     /* ... if any */
  unsigned fresh;                      /* early reads since the last timed one */
  uint64_t reads;                      /* index reads since start (lookups and lists) */
  uint64_t skipped;                    /* unknown-name lookups answered without a read */
  uint64_t lists_cached;               /* Lists answered without a read */
} sched_index_t;

typedef enum { SCHED_A_NONE, SCHED_A_LOCALITY, SCHED_A_DAG_FETCH, SCHED_A_DAG_CHECK } sched_akind_t;

typedef struct {
  uint64_t id;
  sched_akind_t kind;
} sched_async_t;

struct sched {
  const sched_config_t *cfg;
  sq_log_t *log;
  void *zctx;
  void *rep[SCHED_NREP];
  void *status_pull, *peer_pull, *pin_pull, *cont_pull;
  sq_zmq_cache_t *push;
  kvs_client_t *kvs;
  sched_policy_t *policy;
  kvs_client_limits_t kvs_lim;
  char kvs_host[SQ_ZMQ_ENDPOINT_MAX];
  char **peers;
  size_t npeers;
  sched_dagent_t *dags;
  size_t ndags;
  char **funcs;
  size_t nfuncs;
  sched_index_t index;
  sched_oneshot_t *oneshots;
  size_t oneshot_next;
  sched_inflight_t *inflight;
  size_t inflight_next;
  sched_pending_t *pending;
  uint64_t pending_next_ms; /* next retry pass over pending */
  sched_retry_stats_t retry_stats;
  sched_async_t asyncs[SCHED_MAX_ASYNC];
  sched_errwrite_t *errw; /* SCHED_MAX_ERRWRITES slots, made with the first one */
  size_t nerrw;
  /* > 0 while sched__dag_pin waits for acks. That wait applies ThreadStatus messages,
   * and an executor lost then is only queued in lost[] (each one once): re-sending its
   * calls can pin again (a DAG re-run), which must not happen inside a pin wait (the
   * inner wait would take the outer one's acks). sched__tick re-sends them after. */
  unsigned pinning;
  sched_exec_id_t *lost;
  size_t nlost, caplost;
  uint64_t lww_last;
  uint64_t next_refresh_ms;
  bool replied;       /* the request being handled got its reply (or needs none) */
  /* The request's routing envelope (ROUTER identity, the peer's envelope frames, the
   * empty delimiter), sent back in front of its reply, as a REP socket would. */
  zmq_msg_t env[SCHED_ENV_MAX];
  size_t nenv;
};

/* ---- sched_server.c: plumbing --------------------------------------------------- */
double sched__now_s(void);
void sched__uuid4(char out[37]);
/* Replies on REP socket `port` with a packed message / bytes. */
void sched__reply_pb(sched_t *s, int port, const ProtobufCMessage *msg);
void sched__reply_bytes(sched_t *s, int port, const void *data, size_t len);
/* Marks the request handled without sending anything: its client asked for no reply
 * on success (DagCall.ack_failures_only). */
void sched__reply_none(sched_t *s);
/* Replies GenericResponse{success=false, error=code, error_message=printf(...)}. */
void sched__reply_error(sched_t *s, int port, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void sched__reply_ok(sched_t *s, int port, const char *response_id);
/* True when text is valid UTF-8 (names from the network must be, to be echoed). */
bool sched__utf8_valid(const char *text);
/* PUSHes msg to tcp://<ip>:<base + offset + tid>. 0 or the sq_zmq error. */
int sched__push(sched_t *s, const sched_exec_id_t *ex, int base, const ProtobufCMessage *msg);
int sched__push_bytes(sched_t *s, const sched_exec_id_t *ex, int base, const void *d,
                      size_t len);
/* Collects reference keys of DEFAULT values (bounded, pointing into the values). */
size_t sched__refs(Value *const *values, size_t n, sched_pickle_ref_t *refs, size_t cap);
/* Processes queued ThreadStatus messages without blocking (used during pin waits). */
void sched__drain_status(sched_t *s);

/* ---- sched_kvs.c: the storage conventions of PROTOCOL.md §1.13 -------------------- */
/* Encodes LWW(v) with the scheduler's next timestamp into out (appended). 0 or the
 * encoder's error. */
int sched__lww_encode(sched_t *s, const uint8_t *v, size_t len, sq_buf_t *out);
int sched__kvs_put_lww(sched_t *s, const char *key, const uint8_t *v, size_t len);
int sched__kvs_add_index(sched_t *s, const char *fullname);
/* GETs an LWW key; on 0 *out (malloc'd, caller frees) holds the value bytes. */
int sched__kvs_get_lww(sched_t *s, const char *key, uint8_t **out, size_t *len);
/* GETs the function index into the known-function set (BLOCKING, counted in
 * s->index.reads). */
int sched__kvs_load_index(sched_t *s);
/* Decodes an LWW payload's value into a malloc'd copy. */
int sched__lww_value(const uint8_t *payload, size_t plen, uint8_t **out, size_t *len);

/* ---- sched_func.c: functions ----------------------------------------------------- */
/* True when name is registered. A name not in the local set is looked up in the KVS
 * index (a blocking read), bounded: a read happens when SCHED_INDEX_RELOAD_MS passed
 * since the last one, or early (at most SCHED_INDEX_FRESH_MAX times between timed
 * reads) for a name not looked up since the last read. So a repeated unknown name costs
 * at most one read per SCHED_INDEX_RELOAD_MS. Guarantee: a name registered anywhere
 * is found by every lookup from SCHED_INDEX_RELOAD_MS after its registration on, and
 * by its first lookup here unless the early reads of this window were used up. */
bool sched__func_known(sched_t *s, const char *name);
int sched__func_add(sched_t *s, const char *name);
void sched__on_connect(sched_t *s, const uint8_t *b, size_t n);
void sched__on_func_create(sched_t *s, const uint8_t *b, size_t n);
void sched__on_func_call(sched_t *s, const uint8_t *b, size_t n);
/* Answers a List with the registered names starting with the prefix b. Reads the KVS
 * index first only when SCHED_INDEX_RELOAD_MS passed since the last index read (a
 * spammed List costs at most one blocking read per window). Guarantee: a List reflects
 * every registration made on any scheduler at least SCHED_INDEX_RELOAD_MS before it,
 * and every registration through this scheduler at once. */
void sched__on_list(sched_t *s, const uint8_t *b, size_t n);
/* Sends the packed FunctionCall msg again, to an executor other than dead (NULL: any),
 * as its send number tries. 0, SQ_ENOTFOUND (no live executor) or the send error. */
int sched__resend_call(sched_t *s, const uint8_t *msg, size_t len,
                       const sched_exec_id_t *dead, int tries);

/* ---- sched_dagreg.c: DAG registration, pinning, deletion ------------------------ */
sched_dagent_t *sched__dag_find(sched_t *s, const char *name);
/* Takes ownership of dag on 0. SQ_ETOOBIG when the table is full. */
int sched__dag_add(sched_t *s, Dag *dag);
void sched__dag_remove(sched_t *s, const char *name);
/* Makes sure every function of dag is pinned on a live executor. 0, or SQ_ENOTFOUND
 * with err filled (no executor accepted). */
int sched__dag_pin(sched_t *s, const Dag *dag, char *err, size_t errlen);
void sched__on_dag_create(sched_t *s, const uint8_t *b, size_t n);
void sched__on_dag_delete(sched_t *s, const uint8_t *b, size_t n);

/* ---- sched_dagcall.c: DAG calls and continuations --------------------------------- */
/* Schedules call under id (NULL = a fresh UUID4) as its send number `tries` (1 = first;
 * kept with the call for sched_retry). On 0, id_out holds the schedule id. On error
 * *cb_error and err say why. */
int sched__dag_run(sched_t *s, const DagCall *call, const char *id, int tries,
                   char id_out[64], int *cb_error, char *err, size_t errlen);
void sched__on_dag_call(sched_t *s, const uint8_t *b, size_t n);
void sched__on_continuation(sched_t *s, const uint8_t *b, size_t n);

/* ---- sched_status.c: executors, peers, periodic work ---------------------------- */
void sched__on_status(sched_t *s, const uint8_t *b, size_t n);
void sched__on_peer(sched_t *s, const uint8_t *b, size_t n);
void sched__tick(sched_t *s, uint64_t now_ms);
void sched__kvs_poll(sched_t *s);

/* ---- sched_retry.c: at-least-once re-sending --------------------------------------- */
/* Keeps a sent FunctionCall for re-sending; takes ownership of msg (malloc'd). */
void sched__track_oneshot(sched_t *s, uint8_t *msg, size_t len, const sched_exec_id_t *ex,
                          int tries);
void sched__track_dag(sched_t *s, const char *id, const DagCall *call,
                      const sched_exec_id_t *execs, size_t n, int tries);
/* Re-sends the recent work of a dropped executor elsewhere; what finds no live
 * executor is parked in s->pending. During a pin wait (s->pinning) it only queues ex
 * in s->lost, for sched__lost_flush. */
void sched__executor_lost(sched_t *s, const sched_exec_id_t *ex, uint64_t now_ms);
/* Re-sends the work of the executors queued in s->lost (oldest first), unless a pin
 * wait is running. Called by the loop's tick. */
void sched__lost_flush(sched_t *s, uint64_t now_ms);
/* Retries parked calls (when executors are live, at most every SCHED_PENDING_RETRY_MS)
 * and fails those whose wait passed: their caller gets a squall.NoExecutors error
 * result at its response address, else in the KVS at its response/output key. */
void sched__pending_tick(sched_t *s, uint64_t now_ms);
/* Takes the completion of an error result's KVS read or write (see sched_errwrite_t):
 * starts the write after a read that found the key empty, logs the outcome. False when
 * done is not one of them. */
bool sched__errwrite_done(sched_t *s, const kvs_client_completion_t *done);
/* Makes the pending list. 0 or -ENOMEM. */
int sched__retry_init(sched_t *s);
/* Frees the rings, the pending list and the error results still unwritten (logs the
 * re-send counts). */
void sched__retry_free(sched_t *s);

#endif
