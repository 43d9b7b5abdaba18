/* exec_proc: set-up and tear-down of one executor process (see exec.h, exec_int.h). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

#include "exec.h"
#include "exec_int.h"
#include "sq_error.h"

int exec_strings_split(const char *list, char ***out, size_t *n) {
  char *copy = strdup(list ? list : ""), *save = NULL;
  char **v = NULL;
  size_t k = 0;
  int rc = copy ? 0 : -ENOMEM;
  for (char *t = copy ? strtok_r(copy, ", ", &save) : NULL; t && !rc; t = strtok_r(NULL, ", ", &save)) {
    char **g = realloc(v, (k + 1) * sizeof(*g));
    if (!g || !(g[k] = strdup(t))) {
      if (g) v = g;
      rc = -ENOMEM;
      break;
    }
    v = g;
    k++;
  }
  free(copy);
  if (rc) {
    exec_strings_free(v, k);
    return rc;
  }
  *out = v;
  *n = k;
  return 0;
}

void exec_strings_free(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* Blocks SIGTERM/SIGINT in every thread (threads inherit the mask) and returns a
 * signalfd for the I/O thread to watch. */
static int exec__signals(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &set, NULL)) return -1;
  return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static int exec__ctx_init(exec_ctx_t *x, const exec_config_t *cfg, sq_log_t *log) {
  memset(x, 0, sizeof(*x));
  x->cfg = cfg;
  x->log = log;
  x->tid = (int)cfg->executor_tid;
  x->offset = (int)cfg->port_offset;
  x->sigfd = -1;
  const char *ip = cfg->public_ip && *cfg->public_ip ? cfg->public_ip : cfg->bind;
  snprintf(x->ip, sizeof(x->ip), "%s", ip);
  snprintf(x->ident, sizeof(x->ident), "%s:%d", x->ip, x->tid);
  pthread_mutex_init(&x->mu, NULL);
  x->inbox = calloc(EXEC_INBOX_MAX_MSGS, sizeof(*x->inbox));
  if (!x->inbox) return -ENOMEM;
  int rc = exec_strings_split(cfg->scheduler, &x->schedulers, &x->nschedulers);
  if (rc) return rc;
  if (cfg->slot_fd >= 0) {
    rc = exec_slot_map((int)cfg->slot_fd, (size_t)x->tid + 1, &x->slot);
    if (rc) return rc;
    x->slot = &x->slot[x->tid]; /* our own slot; the mapping starts at slot 0 */
  }
  x->zctx = zmq_ctx_new();
  return x->zctx ? 0 : -errno;
}

int exec_proc_main(const exec_config_t *cfg, sq_log_t *log) {
  exec_ctx_t x;
  int code = 1;
  int rc = exec__ctx_init(&x, cfg, log);
  if (rc) {
    sq_log_error(log, "executor %d cannot start: %s", (int)cfg->executor_tid, sq_strerror(rc));
    goto out;
  }
  x.sigfd = exec__signals();
  if ((rc = exec_io_open(&x))) goto out;
  if ((rc = exec_py_init(&x))) goto out; /* Python before the I/O thread: no jobs yet */
  if ((rc = exec_io_start(&x))) goto out;
  sq_log_info(log, "executor %s ready (ports %d.., inbox %d)", x.ident,
              EXEC_PORT_PIN + x.offset + x.tid, EXEC_PORT_INBOX + x.offset + x.tid);
  exec_run_loop(&x);
  code = __atomic_load_n(&x.departing, __ATOMIC_ACQUIRE) == 2 ? EXEC_EXIT_DEPARTED : 0;
out:
  __atomic_store_n(&x.departing, 1, __ATOMIC_RELEASE);
  __atomic_store_n(&x.exec_done, 1, __ATOMIC_RELEASE);
  exec_io_close(&x);
  if (x.sigfd >= 0) close(x.sigfd);
  if (x.zctx) zmq_ctx_term(x.zctx);
  exec_strings_free(x.schedulers, x.nschedulers);
  free(x.inbox);
  if (x.slot) exec_slot_unmap(x.slot - x.tid, (size_t)x.tid + 1);
  pthread_mutex_destroy(&x.mu);
  return code;
}
