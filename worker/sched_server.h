/* sched_server: squall-scheduler, the Cloudburst scheduler rebuilt in C.
 *
 * One thread, one zmq_poll loop over the ports of PROTOCOL.md §1.11 (+ port_offset):
 *
 *   REP 5000 connect   -> the KVS routing host (text)
 *   REP 5001 Function  -> funcs/<name> (LWW) + funcs/index-allfuncs (SET), GenericResponse
 *   REP 5002 FunctionCall -> PUSH to an executor's 4020+tid, GenericResponse
 *   REP 5003 prefix    -> StringSet of registered names
 *   REP 5004 Dag       -> validate, store <name> (LWW), pin, GenericResponse
 *   REP 5005 DagCall   -> DagSchedule to 4030+tid, BEGIN DagTrigger to 4040+tid
 *   REP 5006 DAG name  -> unpin, tombstone, GenericResponse
 *   PULL 5007 ThreadStatus, 5008 SchedulerStatus, 5010 pin acks, 5011 Continuation
 *   the KVS client's response socket (asynchronous locality and DAG refreshes)
 *
 * Invariants: every REP request gets exactly one reply, success or a GenericResponse
 * (StringSet / text on 5003 / 5000) with error_message, before the next request is
 * read, so no REP socket wedges; no wait is unbounded (KVS calls carry kvs_timeout_ms,
 * pin waits pin_timeout_ms x pin_tries); every map is bounded (see sched_int.h).
 * Everything received is decoded with sq_proto_unpack under max_message_bytes.
 *
 * Ownership: the sched_t owns its ZeroMQ context, sockets, KVS client, policy and
 * tables; it is used by the thread that created it only.
 */
#ifndef SCHED_SERVER_H
#define SCHED_SERVER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "sq_log.h"

typedef struct {
  int64_t port_offset;
  char *bind_host;          /* interface for every port (loopback by default) */
  char *public_ip;          /* what executors reply to (pin acks) */
  char *kvs;                /* routing endpoint; "" = tcp://127.0.0.1:6450+offset */
  char *peers;              /* comma list of peer scheduler hosts */
  int64_t executor_deadline_ms; /* drop an executor silent this long */
  int64_t pin_timeout_ms;   /* wait for one pin ack */
  int64_t pin_tries;        /* executors tried per function */
  int64_t kvs_timeout_ms;   /* per KVS attempt */
  int64_t refresh_ms;       /* locality, DAG check and gossip period */
  int64_t call_deadline_ms; /* calls are re-sent when their executor dies this soon */
  int64_t resend_wait_ms;   /* a re-send finding no executor waits this long, then fails */
  uint64_t max_message_bytes;
  int64_t log_level;        /* sq_log_level_t */
  int64_t log_format;       /* sq_log_format_t */
  char *log_file;
} sched_config_t;

typedef struct sched sched_t;

/* Binds every port, connects the KVS client. cfg is borrowed for the scheduler's
 * life; log may be NULL (default logger). On failure *out is NULL, err (may be NULL)
 * holds a sentence (e.g. the port in use) and the result is -errno, SQ_ECONFIG or
 * -ENOMEM. */
int sched_create(const sched_config_t *cfg, sq_log_t *log, sched_t **out, char *err,
                 size_t errlen);

/* Serves until *stop becomes non-zero (checked at least every 100 ms). 0 after a
 * stop, or the fatal error of the poll loop (-errno). */
int sched_run(sched_t *s, volatile sig_atomic_t *stop);

/* Closes everything. Accepts NULL. */
void sched_destroy(sched_t *s);

#endif
