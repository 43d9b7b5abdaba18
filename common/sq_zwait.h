/* sq_zwait: waiting on a fixed set of ZeroMQ sockets (and plain fds) with one poll(2).
 * Used by the executor thread (worker/exec_run.c), the scheduler's loop
 * (worker/sched_server.c) and the KVS storage workers (kvs/server.c).
 *
 * Why not zmq_poll: it polls every fd twice (a first pass with timeout 0) and, after
 * each poll, asks every socket for ZMQ_EVENTS -- each a look into the socket's command
 * mailbox, i.e. a getpid and a poll syscall more (~0.2 + ~0.6 us each on this project's
 * machines). On 4 sockets (an executor) that is ~18 syscalls per wake-up, on 11 (the
 * scheduler) ~25; on a KVS worker under load it was a poll per ~9 requests.
 *
 * How: each socket's ZMQ_FD (libzmq's command mailbox, readable while commands wait:
 * level-triggered) is polled; only a socket whose fd fired is asked for ZMQ_EVENTS,
 * plus the sockets that were ready in the previous wait (the caller served them, which
 * may have consumed the signal of messages still queued) and those marked with
 * sq_zwait_touch (used elsewhere); all of them after a wait that timed out (a safety
 * net: a lost signal costs at most one timeout, never a hang). A caller whose
 * non-blocking receive on a socket just failed with EAGAIN says so (sq_zwait_drained):
 * that receive already emptied the mailbox, so the next wait polls the fd without
 * asking ZMQ_EVENTS first. Plain fds (sq_zwait_add_fd) are ready when poll(2) says
 * POLLIN (or an error) on them.
 *
 * Not thread-safe: one thread owns an sq_zwait_t and its sockets.
 */
#ifndef SQ_ZWAIT_H
#define SQ_ZWAIT_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>

#define SQ_ZWAIT_MAX 16

typedef struct {
  size_t n;
  void *sock[SQ_ZWAIT_MAX]; /* NULL for a plain fd */
  struct pollfd pfd[SQ_ZWAIT_MAX];
  bool check[SQ_ZWAIT_MAX]; /* ask ZMQ_EVENTS in the next wait */
  bool ready[SQ_ZWAIT_MAX]; /* result of the last wait: entry i has input */
} sq_zwait_t;

/* Sets w up for socks[0..n) (borrowed; they must outlive w); they are entries 0..n-1.
 * 0, SQ_EINVAL (n is 0 or over SQ_ZWAIT_MAX), -errno (ZMQ_FD refused). */
int sq_zwait_init(sq_zwait_t *w, void *const *socks, size_t n);

/* Adds a plain file descriptor (borrowed) as the next entry; returns its index, or
 * SQ_EINVAL when w is full or fd < 0. */
int sq_zwait_add_fd(sq_zwait_t *w, int fd);

/* Waits up to timeout_ms (-1: no limit; 0: only looks) until an entry has input and
 * fills w->ready. Returns how many entries are ready (0: timed out or interrupted),
 * or -errno. */
int sq_zwait_wait(sq_zwait_t *w, int timeout_ms);

/* Socket i was used outside the wait loop's own serving (a send, or a receive by
 * other code): the next wait asks it for ZMQ_EVENTS. Out of range: ignored. */
void sq_zwait_touch(sq_zwait_t *w, size_t i);

/* The caller's ZMQ_DONTWAIT receive on socket i just failed with EAGAIN and nothing
 * touched the socket since: the next wait polls its fd without asking ZMQ_EVENTS
 * (a receive that finds nothing has already taken every pending command, so any
 * later message makes the fd readable). Out of range: ignored. */
void sq_zwait_drained(sq_zwait_t *w, size_t i);

#endif
