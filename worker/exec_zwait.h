/* exec_zwait: waiting on a fixed set of ZeroMQ sockets with one poll(2), for the
 * executor thread (exec_run.c) and the scheduler's loop (sched_server.c).
 *
 * Why not zmq_poll: it polls every fd twice (a first pass with timeout 0) and, after
 * each poll, asks every socket for ZMQ_EVENTS -- each a look into the socket's command
 * mailbox, i.e. more poll and getpid syscalls. On 4 sockets (an executor) that is ~18
 * syscalls per wake-up, on 11 (the scheduler) ~25, on the critical path of every call.
 *
 * How: each socket's ZMQ_FD (libzmq's command mailbox, readable while commands wait:
 * level-triggered) is polled; only a socket whose fd fired is asked for ZMQ_EVENTS,
 * plus the sockets that were ready in the previous wait (the caller served them, which
 * may have consumed the signal of messages still queued) and those marked with
 * exec_zwait_touch (used elsewhere); all of them after a wait that timed out (a safety
 * net: a lost signal costs at most one timeout, never a hang).
 *
 * Not thread-safe: one thread owns an exec_zwait_t and its sockets.
 */
#ifndef EXEC_ZWAIT_H
#define EXEC_ZWAIT_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>

#define EXEC_ZWAIT_MAX 16

typedef struct {
  size_t n;
  void *sock[EXEC_ZWAIT_MAX];
  struct pollfd pfd[EXEC_ZWAIT_MAX];
  bool check[EXEC_ZWAIT_MAX]; /* ask ZMQ_EVENTS in the next wait */
  bool ready[EXEC_ZWAIT_MAX]; /* result of the last wait: socket i has a message */
} exec_zwait_t;

/* Sets w up for socks[0..n) (borrowed; they must outlive w). 0, SQ_EINVAL (n is 0 or
 * over EXEC_ZWAIT_MAX), -errno (ZMQ_FD refused). */
int exec_zwait_init(exec_zwait_t *w, void *const *socks, size_t n);

/* Waits up to timeout_ms (-1: no limit) until a socket has a message and fills
 * w->ready. Returns how many sockets are ready (0: timed out or interrupted), or
 * -errno. */
int exec_zwait_wait(exec_zwait_t *w, int timeout_ms);

/* Socket i was used outside the wait loop's own serving (a send, or a receive by
 * other code): the next wait asks it for ZMQ_EVENTS. */
void exec_zwait_touch(exec_zwait_t *w, size_t i);

#endif
