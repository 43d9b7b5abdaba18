/* exec_int.h: internals shared by the executor's files (not a public API).
 *
 * One executor process (see exec_main.c for the supervisor that starts them):
 *
 *   I/O thread (exec_io.c)                 executor thread = main thread (exec_run.c)
 *   ---------------------------------      -------------------------------------------
 *   PULL pin 4000, unpin 4010,             PULL call 4020, schedule 4030, trigger 4040:
 *        depart 4050, inbox 5500           when idle it waits on these and on `jobs`
 *   PUSH cache: status, pins, user msgs    itself (zmq_poll, GIL released), keeps the
 *   KVS puts (io_kvs, asynchronous)        DagSchedule/DagTrigger state (dag), runs one
 *   status every second, SIGTERM           job at a time in Python (exec_py.c), talks to
 *                                          the KVS synchronously (py_kvs)
 *          |  jobs (inproc, job pointers: PIN, wake-up) ->  |
 *          |  <- outbox (inproc, exec_out_t pointers: PUSH, PUT, STATUS)
 *
 * Why the executor thread receives its own work: a call or trigger handed from one
 * thread to another costs a wake-up (30-45 us on a small VM), as much as half a
 * loopback hop. While Python runs, new calls and triggers simply wait in their
 * sockets (unlimited receive queue, as the inproc queue was); the I/O thread keeps
 * everything that must go on meanwhile: status reports, pins, user messages, KVS
 * writes, departure. Timeouts and crash reports do not depend on either thread: the
 * supervisor reads the slot.
 *
 * The executor thread sends what it produces for the network -- results, DAG
 * triggers, direct responses, captured output -- itself, on its own PUSH cache
 * (exec_push), so a result leaves without waking the I/O thread; puts, pin answers,
 * status and user messages still go through the outbox.
 *
 * Ownership: every pointer sent over an inproc socket passes to the receiving thread.
 * Shared under `mu`: the inbox of user messages and the pinned function list; `stop`
 * and `busy_ms` are atomics. Everything else belongs to exactly one thread; the three
 * work sockets are made by the main thread (= the executor thread) and closed by it
 * after the I/O thread was joined.
 */
#ifndef EXEC_INT_H
#define EXEC_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exec_config.h"
#include "exec_dag.h"
#include "exec_job.h"
#include "exec_slot.h"
#include "sq_buf.h"
#include "client.h"
#include "sq_log.h"
#include "sq_zmq.h"

enum { EXEC_PORT_PIN = 4000, EXEC_PORT_UNPIN = 4010, EXEC_PORT_CALL = 4020,
       EXEC_PORT_SCHEDULE = 4030, EXEC_PORT_TRIGGER = 4040, EXEC_PORT_DEPART = 4050,
       EXEC_PORT_INBOX = 5500, EXEC_PORT_SCHED_STATUS = 5007,
       EXEC_PORT_SCHED_PIN = 5010, EXEC_PORT_SCHED_CONT = 5011 };

#define EXEC_NPULL 7
/* Indexes of exec_ctx_t.pull[]: CALL, SCHEDULE and TRIGGER are the executor thread's. */
enum { EXEC_PULL_PIN, EXEC_PULL_UNPIN, EXEC_PULL_CALL, EXEC_PULL_SCHEDULE, EXEC_PULL_TRIGGER,
       EXEC_PULL_DEPART, EXEC_PULL_INBOX };
#define EXEC_MAX_MSG ((int64_t)512 << 20)
#define EXEC_INBOX_MAX_MSGS 10000
#define EXEC_INBOX_MAX_BYTES (256u << 20)
#define EXEC_EXIT_DEPARTED 3 /* exit code: left on purpose, do not restart */

typedef enum { EXEC_OUT_PUSH = 1, EXEC_OUT_PUT = 2, EXEC_OUT_STATUS = 4 } exec_out_kind_t;

/* A request from the executor thread to the I/O thread. */
typedef struct {
  exec_out_kind_t kind;
  char *target;        /* PUSH: endpoint; PUT: key (owned) */
  uint8_t *data;       /* PUSH: frame; PUT: LWW payload (owned) */
  size_t len;
} exec_out_t;

typedef struct {
  uint8_t *data;
  size_t len;
} exec_msg_t;

typedef struct exec_ctx {
  const exec_config_t *cfg;
  sq_log_t *log;
  void *zctx;
  int tid;
  int offset;
  char ip[256];             /* public ip peers are told */
  char ident[300];          /* "ip:tid" */
  char **schedulers;        /* hosts */
  size_t nschedulers;
  exec_slot_t *slot;        /* shared with the supervisor; NULL when run alone */

  /* I/O thread */
  void *pull[EXEC_NPULL];    /* CALL, SCHEDULE, TRIGGER: the executor thread's */
  void *jobs_push, *out_pull;
  kvs_client_t *io_kvs;
  sq_zmq_cache_t *push;
  int sigfd;
  pthread_t io_thread;
  bool io_started;

  /* executor thread */
  void *jobs_pull, *out_push;
  kvs_client_t *py_kvs;
  uint64_t lww_last;
  sq_zmq_cache_t *exec_push; /* PUSH sockets of the executor thread (exec_run_push) */
  exec_dag_t *dag;          /* DAG state: which schedules wait for which triggers */
  void *py_executor;        /* PyObject*: squall._executor.Executor */
  void *py_tstate;          /* PyThreadState* while the GIL is released */

  /* shared */
  pthread_mutex_t mu;
  exec_msg_t *inbox;        /* FIFO ring of user messages */
  size_t inbox_n, inbox_head, inbox_bytes;
  char **functions;         /* pinned names */
  size_t nfunctions;
  int stop;                 /* atomic: 1 = leaving */
  int departing;            /* atomic: 1 = self-depart or SIGTERM */
  int exec_done;            /* atomic: 1 = the executor thread left its loop */
  int64_t busy_ms;          /* atomic */
} exec_ctx_t;

/* exec_io.c */
int exec_io_open(exec_ctx_t *x);   /* binds sockets, makes clients (main thread) */
int exec_io_start(exec_ctx_t *x);  /* starts the I/O thread */
void exec_io_close(exec_ctx_t *x); /* joins the thread, closes everything */
int exec_io_out(exec_ctx_t *x, exec_out_kind_t kind, const char *target, const void *data,
                size_t len); /* executor thread -> I/O thread (copies); 0 or -ENOMEM */
/* The same without the copy: data (malloc'd, or NULL when len is 0) becomes the I/O
 * thread's on success and is freed here on failure. */
int exec_io_out_take(exec_ctx_t *x, exec_out_kind_t kind, const char *target, uint8_t *data,
                     size_t len);
/* Decodes one protobuf frame received on a PULL socket (size-limited by EXEC_MAX_MSG,
 * depth-checked); malformed bytes are logged and give NULL. The message is the
 * caller's (protobuf_c_message_free_unpacked). Either thread. */
ProtobufCMessage *exec_io_decode(exec_ctx_t *x, const void *data, size_t len,
                                 const ProtobufCMessageDescriptor *desc);
int exec_io_inbox_drain(exec_ctx_t *x, exec_msg_t **msgs, size_t *n);
int exec_io_pin_set(exec_ctx_t *x, const char *fn, bool pinned);
void exec_io_endpoint(const exec_ctx_t *x, char *buf, size_t len, const char *host, int base,
                      int tid);

/* exec_py.c */
int exec_py_init(exec_ctx_t *x);
void exec_py_fini(exec_ctx_t *x);
typedef struct {
  bool ok;
  Value whole;              /* the result (or error tuple) as one Value; body malloc'd */
  Value *parts;             /* a tuple result split per element (else one copy of whole);
                               bodies malloc'd */
  size_t nparts;
} exec_result_t;
int exec_py_run(exec_ctx_t *x, const exec_job_t *job, exec_result_t *res);
int exec_py_pin(exec_ctx_t *x, const char *fn, char *err, size_t errlen);
void exec_py_result_clear(exec_result_t *res);

/* exec_run.c */
int exec_run_loop(exec_ctx_t *x);
int exec_run_lww(exec_ctx_t *x, const uint8_t *value, size_t len, uint8_t **payload, size_t *plen);
/* Sends a frame to endpoint from the executor thread, without blocking (exec_push):
 * results, triggers, direct responses and output, in the order of the calls. 0,
 * -EAGAIN (peer's queue full) or the errors of sq_zmq_cache_send. */
int exec_run_push(exec_ctx_t *x, const char *endpoint, const void *data, size_t len);
/* Appends Value{response_id} to the serialized Value in *packed (protobuf merges
 * concatenated messages), tagging a direct response with the id the client matches
 * it by. NULL or "" leaves *packed as it is. 0 or -ENOMEM. Any thread. */
int exec_run_tag(sq_buf_t *packed, const char *response_id);

#endif
