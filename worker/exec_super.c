/* exec_super: the squall-worker supervisor (see exec.h).
 *
 * State per executor tid:   (none) --spawn--> RUNNING --dies--> WAITING --backoff--> spawn
 *                                              |  deadline passed: SIGKILL, then "dies"
 * Backoff: 100 ms after a death, doubling up to 5 s while executors keep dying within
 * 10 s of their start (a broken Python install does not spin the machine), reset when
 * one lived longer. Reasons are logged: exit code or signal name.
 *
 * The supervisor is single-threaded: a signalfd (SIGCHLD, SIGTERM, SIGINT) polled
 * every 100 ms drives everything. It shares with each executor only the slot array
 * (exec_slot.h), reads it to learn what was running, and writes error results with its
 * own KVS client / PUSH sockets. On SIGTERM/SIGINT it forwards SIGTERM, waits up to
 * 10 s, then SIGKILLs whatever is left.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "exec.h"
#include "exec_errval.h"
#include "exec_int.h"
#include "internal.pb-c.h"
#include "sq_error.h"

typedef struct {
  pid_t pid;              /* 0 = not running */
  int64_t started_ms;
  int64_t restart_at_ms;  /* when pid == 0 */
  int backoff_ms;
  bool timed_out;         /* we killed it for its deadline */
  bool retired;           /* departed on purpose: not restarted */
} exec__child_t;

typedef struct {
  const exec_config_t *cfg;
  sq_log_t *log;
  int argc;
  char **argv;
  size_t n;
  exec__child_t *kids;
  exec_slot_t *slots;
  int slot_fd;
  void *zctx;
  kvs_client_t *kvs;
  sq_zmq_cache_t *push;
  char **schedulers;
  size_t nschedulers;
  char ip[256];
  bool stopping;
} exec__super_t;

static int exec__spawn(exec__super_t *s, size_t t) {
  char tidarg[64], fdarg[64];
  snprintf(tidarg, sizeof(tidarg), "--executor-tid=%zu", t);
  snprintf(fdarg, sizeof(fdarg), "--slot-fd=%d", s->slot_fd);
  char **argv = calloc((size_t)s->argc + 3, sizeof(*argv));
  if (!argv) return -ENOMEM;
  for (int i = 0; i < s->argc; i++) argv[i] = s->argv[i];
  argv[s->argc] = tidarg;
  argv[s->argc + 1] = fdarg;
  exec_slot_clear(&s->slots[t]);
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  free(argv);
  if (pid < 0) return -errno;
  s->kids[t].pid = pid;
  s->kids[t].started_ms = exec_slot_now_ms();
  s->kids[t].timed_out = false;
  return 0;
}

/* Sends the error result of the call that was running to its caller. */
static void exec__report(exec__super_t *s, size_t t, const exec_slot_t *slot, const char *type,
                         const char *msg) {
  char ident[300];
  snprintf(ident, sizeof(ident), "%s:%zu", s->ip, t);
  exec_errval_t e = {CLOUDBURST_ERROR__EXECUTION_ERROR, type, msg, "", ident};
  sq_buf_t value = {0};
  uint64_t last = 0;
  int rc = exec_errval_value(&e, &value);
  if (rc) goto out;
  if (slot->dest_addr[0]) { /* a direct response: tagged so the client can match it */
    rc = exec_run_tag(&value, slot->dest_key);
    if (!rc) rc = sq_zmq_cache_send(s->push, slot->dest_addr, value.data, value.len);
  } else if (slot->dest_key[0]) {
    sq_lattice_t l = {.type = SQ_LATTICE_LWW};
    l.u.lww.timestamp = sq_lww_writer_timestamp((uint32_t)t, &last);
    l.u.lww.value.data = value.data;
    l.u.lww.value.len = value.len;
    sq_buf_t buf = {0};
    rc = sq_lattice_encode(&l, &buf);
    kvs_client_limits_t lim = {2000, 1};
    if (!rc) rc = kvs_client_put(s->kvs, slot->dest_key, SQ_LATTICE_LWW, buf.data, buf.len, &lim);
    sq_buf_free(&buf);
  }
out:
  if (rc) sq_log_warn(s->log, "could not report the failure of %s: %s", slot->function,
                      sq_strerror(rc));
  sq_buf_free(&value);
}

static void exec__status_down(exec__super_t *s, size_t t) {
  ThreadStatus st = THREAD_STATUS__INIT;
  st.ip = s->ip;
  st.tid = (uint32_t)t;
  st.running = false;
  char ep[300];
  for (size_t i = 0; i < s->nschedulers; i++) {
    if (sq_zmq_endpoint_tcp(ep, sizeof(ep), s->schedulers[i],
                            (unsigned)(EXEC_PORT_SCHED_STATUS + s->cfg->port_offset)))
      continue;
    sq_zmq_cache_send_pb(s->push, ep, &st.base);
  }
}

static void exec__describe(int status, char *buf, size_t len) {
  if (WIFSIGNALED(status))
    snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    snprintf(buf, len, "exited with code %d", WEXITSTATUS(status));
}

static void exec__on_death(exec__super_t *s, size_t t, int status) {
  exec__child_t *k = &s->kids[t];
  exec_slot_t slot;
  char how[128], msg[1024];
  exec__describe(status, how, sizeof(how));
  int64_t now = exec_slot_now_ms();
  bool running = exec_slot_read(&s->slots[t], &slot) == 0 && slot.state != EXEC_SLOT_IDLE;
  sq_log_fields(s->log, s->stopping ? SQ_LOG_INFO : SQ_LOG_WARN, NULL, 0,
                "executor %zu (pid %d) %s%s%s", t, (int)k->pid, how,
                running ? " while running " : "", running ? slot.function : "");
  if (running && !slot.dest_cut && !s->stopping) {
    if (k->timed_out)
      snprintf(msg, sizeof(msg), "%s exceeded its time limit of %.3f s; its executor was "
               "stopped and replaced", slot.function,
               (double)(slot.deadline_ms - slot.started_ms) / 1000.0);
    else
      snprintf(msg, sizeof(msg), "the executor process running %s %s (crash, os._exit or "
               "out-of-memory kill); it was restarted", slot.function, how);
    exec__report(s, t, &slot, k->timed_out ? "squall.TimeoutError" : "squall.ExecutorCrashed", msg);
  }
  exec__status_down(s, t);
  exec_slot_clear(&s->slots[t]);
  k->retired = WIFEXITED(status) && WEXITSTATUS(status) == EXEC_EXIT_DEPARTED;
  k->backoff_ms = now - k->started_ms < 10000 ? (k->backoff_ms ? k->backoff_ms * 2 : 100) : 100;
  if (k->backoff_ms > 5000) k->backoff_ms = 5000;
  if (k->timed_out) k->backoff_ms = 0; /* a replacement, not a failure of the executor */
  k->restart_at_ms = now + k->backoff_ms;
  k->pid = 0;
}

static void exec__reap(exec__super_t *s) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
    for (size_t t = 0; t < s->n; t++)
      if (s->kids[t].pid == pid) exec__on_death(s, t, status);
}

/* Kills executors past their call's deadline; restarts dead ones whose backoff ended. */
static void exec__tick(exec__super_t *s) {
  int64_t now = exec_slot_now_ms();
  for (size_t t = 0; t < s->n; t++) {
    exec__child_t *k = &s->kids[t];
    exec_slot_t slot;
    if (k->pid > 0 && !k->timed_out && exec_slot_read(&s->slots[t], &slot) == 0 &&
        slot.state != EXEC_SLOT_IDLE && slot.deadline_ms && now > slot.deadline_ms) {
      sq_log_warn(s->log, "executor %zu: %s passed its deadline; replacing the executor", t,
                  slot.function);
      k->timed_out = true;
      kill(k->pid, SIGKILL);
    }
    if (k->pid == 0 && !k->retired && !s->stopping && now >= k->restart_at_ms) {
      int rc = exec__spawn(s, t);
      if (rc) {
        sq_log_error(s->log, "cannot start executor %zu: %s", t, sq_strerror(rc));
        k->restart_at_ms = now + 1000;
      }
    }
  }
  sq_zmq_cache_expire(s->push); /* it sends only failure reports: let idle sockets go */
}

static size_t exec__alive(const exec__super_t *s) {
  size_t n = 0;
  for (size_t t = 0; t < s->n; t++) n += s->kids[t].pid > 0;
  return n;
}

static void exec__stop_all(exec__super_t *s, int sigfd) {
  s->stopping = true;
  for (size_t t = 0; t < s->n; t++)
    if (s->kids[t].pid > 0) kill(s->kids[t].pid, SIGTERM);
  int64_t until = exec_slot_now_ms() + 10000;
  while (exec__alive(s) && exec_slot_now_ms() < until) {
    struct pollfd p = {sigfd, POLLIN, 0};
    poll(&p, 1, 100);
    struct signalfd_siginfo si;
    while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {}
    exec__reap(s);
  }
  for (size_t t = 0; t < s->n; t++)
    if (s->kids[t].pid > 0) kill(s->kids[t].pid, SIGKILL);
  while (exec__alive(s)) {
    usleep(10000);
    exec__reap(s);
  }
}

static int exec__loop(exec__super_t *s) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, NULL);
  int sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) return -errno;
  for (;;) {
    exec__tick(s);
    struct pollfd p = {sigfd, POLLIN, 0};
    poll(&p, 1, 100);
    struct signalfd_siginfo si;
    bool stop = false;
    while (read(sigfd, &si, sizeof(si)) == sizeof(si))
      stop |= si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT;
    exec__reap(s);
    if (stop) break;
  }
  sq_log_info(s->log, "stopping %zu executors", exec__alive(s));
  exec__stop_all(s, sigfd);
  close(sigfd);
  return 0;
}

static int exec__super_open(exec__super_t *s) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  s->n = s->cfg->executors > 0 ? (size_t)s->cfg->executors : (size_t)(cores > 0 ? cores : 1);
  const char *ip = s->cfg->public_ip && *s->cfg->public_ip ? s->cfg->public_ip : s->cfg->bind;
  snprintf(s->ip, sizeof(s->ip), "%s", ip);
  s->kids = calloc(s->n, sizeof(*s->kids));
  if (!s->kids) return -ENOMEM;
  int rc = exec_slot_create(s->n, &s->slot_fd, &s->slots);
  if (rc) return rc;
  if ((rc = exec_strings_split(s->cfg->scheduler, &s->schedulers, &s->nschedulers))) return rc;
  if (!(s->zctx = zmq_ctx_new())) return -errno;
  if ((rc = sq_zmq_cache_create(s->zctx, NULL, &s->push))) return rc;
  char routing[512], bind[300];
  if (s->cfg->kvs && *s->cfg->kvs) snprintf(routing, sizeof(routing), "%s", s->cfg->kvs);
  else snprintf(routing, sizeof(routing), "tcp://127.0.0.1:%d", 6450 + (int)s->cfg->port_offset);
  snprintf(bind, sizeof(bind), "tcp://%s:*", s->cfg->bind);
  const char *r[1] = {routing};
  kvs_client_options_t o = {.zmq_context = s->zctx, .routing = r, .nrouting = 1,
                            .bind = bind, .advertise = s->ip, .timeout_ms = 2000};
  return kvs_client_create(&o, &s->kvs);
}

int exec_super_main(const exec_config_t *cfg, sq_log_t *log, int argc, char **argv) {
  exec__super_t s = {.cfg = cfg, .log = log, .argc = argc, .argv = argv, .slot_fd = -1};
  int rc = exec__super_open(&s);
  if (rc) {
    sq_log_error(log, "squall-worker cannot start: %s", sq_strerror(rc));
    goto out;
  }
  sq_log_info(log, "squall-worker: %zu executors, port offset %d", s.n, (int)cfg->port_offset);
  rc = exec__loop(&s);
out:
  kvs_client_destroy(s.kvs);
  sq_zmq_cache_destroy(s.push);
  if (s.zctx) zmq_ctx_term(s.zctx);
  exec_strings_free(s.schedulers, s.nschedulers);
  exec_slot_unmap(s.slots, s.n);
  if (s.slot_fd >= 0) close(s.slot_fd);
  free(s.kids);
  return rc ? 1 : 0;
}
