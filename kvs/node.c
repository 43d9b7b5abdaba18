/* kvs_node: life of a storage node (see node.h). */
#include "node.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "placement.h"
#include "routing.h"
#include "server.h"
#include "sq_error.h"

#define KVS__EVENTS "inproc://kvs-events"

typedef struct {
  const kvs_config_t *config;
  sq_log_t *log;
  void *zmq;
  void *events;               /* PULL: worker reports */
  kvs_placement_t *placement;
  kvs_worker_t **workers;
  uint32_t nworkers;
  kvs_routing_t *routing;
  int lock_fd;
} kvs__node_t;

void kvs_node_block_signals(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* mkdir -p for one level below an existing parent, then an exclusive lock. */
static int kvs__claim_dir(kvs__node_t *n) {
  const char *dir = n->config->data_dir;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    int err = errno;
    sq_log_error(n->log, "cannot create data directory %s: %s", dir, strerror(err));
    return -err;
  }
  char path[4096];
  snprintf(path, sizeof(path), "%s/LOCK", dir);
  n->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (n->lock_fd < 0 || flock(n->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    sq_log_error(n->log, "data directory %s is in use by another squall-kvs (%s)", dir,
                 strerror(err));
    return -err;
  }
  return 0;
}

/* The data directory remembers its thread count: thread t's log holds the keys that
 * thread t owned, and a different count would assign them to other threads. */
static int kvs__check_layout(kvs__node_t *n) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/NODE", n->config->data_dir);
  FILE *f = fopen(path, "r");
  if (f) {
    unsigned threads = 0;
    int ok = fscanf(f, "threads=%u", &threads) == 1;
    fclose(f);
    if (ok && threads != n->nworkers) {
      sq_log_error(n->log, "data directory %s was written by %u threads; start with "
                   "--threads %u (changing the thread count of existing data is not "
                   "supported yet)", n->config->data_dir, threads, threads);
      return SQ_ECONFIG;
    }
    if (ok) return 0;
  }
  f = fopen(path, "w");
  if (!f || fprintf(f, "threads=%u\n", n->nworkers) < 0 || fflush(f) || fsync(fileno(f))) {
    int err = errno;
    if (f) fclose(f);
    sq_log_error(n->log, "cannot write %s: %s", path, strerror(err));
    return -err;
  }
  fclose(f);
  return 0;
}

static const char *kvs__durability_name(int64_t durability) {
  return durability == KVS_DURABILITY_FSYNC ? "fsync"
         : durability == KVS_DURABILITY_LOG ? "log (no fsync)"
                                            : "none (memory only)";
}

/* Memory only is a choice a user must not make by accident: say it where they look. */
static void kvs__warn_memory_only(kvs__node_t *n) {
  sq_log_warn(n->log, "--durability none: MEMORY ONLY. Nothing is logged and nothing "
              "is recovered: every value is lost when this node stops or crashes, and "
              "%s is neither read nor written. Use --durability log (survives a killed "
              "process) or fsync (survives a power cut) to keep data.",
              n->config->data_dir);
}

static int kvs__start_workers(kvs__node_t *n) {
  n->workers = calloc(n->nworkers, sizeof(*n->workers));
  if (!n->workers) return -ENOMEM;
  for (uint32_t t = 0; t < n->nworkers; t++) {
    kvs_worker_params_t p = {.config = n->config, .placement = n->placement, .tid = t,
                             .zmq_context = n->zmq, .events_endpoint = KVS__EVENTS,
                             .log = n->log};
    int rc = kvs_worker_create(&p, &n->workers[t]);
    if (rc == 0) rc = kvs_worker_start(n->workers[t]);
    if (rc) {
      sq_log_error(n->log, "cannot start worker thread %u: %s", t, sq_strerror(rc));
      return rc;
    }
  }
  return 0;
}

/* Waits for every worker's "ready"; any "failed" is logged and ends the start. */
static int kvs__await_ready(kvs__node_t *n) {
  uint32_t ready = 0;
  int rc = 0;
  while (ready + (rc ? 1 : 0) < n->nworkers && !rc) {
    char msg[512];
    int len = zmq_recv(n->events, msg, sizeof(msg) - 1, 0);
    if (len < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    msg[len < (int)sizeof(msg) - 1 ? len : (int)sizeof(msg) - 1] = '\0';
    if (strncmp(msg, "ready", 5) == 0) ready++;
    else if (strncmp(msg, "failed", 6) == 0) {
      sq_log_error(n->log, "worker %s", msg + 7);
      rc = SQ_ECONFIG;
    }
  }
  return rc;
}

static void kvs__log_counters(kvs__node_t *n, const char *when) {
  uint64_t c[15] = {0};
  for (uint32_t t = 0; t < n->nworkers; t++) {
    if (!n->workers || !n->workers[t]) continue;
    const kvs_counters_t *k = kvs_worker_counters(n->workers[t]);
    c[0] += k->requests; c[1] += k->gets; c[2] += k->puts; c[3] += k->merges;
    c[4] += k->errors; c[5] += k->bytes_in; c[6] += k->bytes_out; c[7] += k->log_bytes;
    c[8] += k->fsyncs; c[9] += k->recovered; c[10] += k->keys; c[11] += k->send_drops;
    c[12] += k->reply_sockets; c[13] += k->reply_expired; c[14] += k->reply_corks;
  }
  sq_log_info(n->log, "%s: requests=%" PRIu64 " gets=%" PRIu64 " puts=%" PRIu64
              " merges=%" PRIu64 " errors=%" PRIu64 " bytes_in=%" PRIu64 " bytes_out=%"
              PRIu64 " log_bytes=%" PRIu64 " fsyncs=%" PRIu64 " recovered=%" PRIu64
              " keys=%" PRIu64 " reply_drops=%" PRIu64 " reply_sockets=%" PRIu64
              " reply_expired=%" PRIu64 " reply_corks=%" PRIu64 " routing=%" PRIu64, when,
              c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12],
              c[13], c[14],
              n->routing ? kvs_routing_answered(n->routing) : 0);
}

/* Returns an error when a worker reported that it stopped on its own: a thread whose
 * log failed must take the node down rather than leave its keys unserved. */
static int kvs__check_workers(kvs__node_t *n) {
  char msg[512];
  int len;
  while ((len = zmq_recv(n->events, msg, sizeof(msg) - 1, ZMQ_DONTWAIT)) >= 0) {
    msg[len < (int)sizeof(msg) - 1 ? len : (int)sizeof(msg) - 1] = '\0';
    if (strncmp(msg, "failed", 6) == 0 || strncmp(msg, "stopped", 7) == 0) {
      sq_log_error(n->log, "worker %s; stopping the node", msg + (msg[0] == 'f' ? 7 : 8));
      return SQ_ECLOSED;
    }
  }
  return 0;
}

/* Sleeps until a stop signal or a worker failure, logging counters every interval.
 * Returns 0 after a signal, or the failure. */
static int kvs__wait_for_stop(kvs__node_t *n) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  int64_t every = n->config->stats_interval_s;
  struct timespec last;
  clock_gettime(CLOCK_MONOTONIC, &last);
  for (;;) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000 * 1000};
    int sig = sigtimedwait(&set, NULL, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      sq_log_info(n->log, "received %s: finishing in-flight writes and stopping",
                  sig == SIGTERM ? "SIGTERM" : "SIGINT");
      return 0;
    }
    int rc = kvs__check_workers(n);
    if (rc) return rc;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (every > 0 && now.tv_sec - last.tv_sec >= every) {
      kvs__log_counters(n, "counters");
      last = now;
    }
  }
}

static void kvs__node_teardown(kvs__node_t *n) {
  kvs_routing_stop(n->routing);
  n->routing = NULL;
  for (uint32_t t = 0; n->workers && t < n->nworkers; t++) kvs_worker_stop(n->workers[t]);
  kvs__log_counters(n, "final counters");
  for (uint32_t t = 0; n->workers && t < n->nworkers; t++) kvs_worker_destroy(n->workers[t]);
  free(n->workers);
  if (n->events) zmq_close(n->events);
  if (n->zmq) zmq_ctx_term(n->zmq);
  kvs_placement_destroy(n->placement);
  if (n->lock_fd >= 0) close(n->lock_fd);
}

int kvs_node_run(const kvs_config_t *config, sq_log_t *log) {
  kvs__node_t n = {.config = config, .log = log, .lock_fd = -1};
  n.nworkers = config->threads > 0 ? (uint32_t)config->threads
                                   : (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
  int rc = 0;
  if (config->durability == KVS_DURABILITY_NONE) kvs__warn_memory_only(&n);
  else rc = kvs__claim_dir(&n);
  if (rc == 0 && config->durability != KVS_DURABILITY_NONE) rc = kvs__check_layout(&n);
  if (rc == 0) rc = kvs_placement_create(config, n.nworkers, &n.placement);
  if (rc == 0) {
    n.zmq = zmq_ctx_new();
    n.events = n.zmq ? zmq_socket(n.zmq, ZMQ_PULL) : NULL;
    if (!n.events || zmq_bind(n.events, KVS__EVENTS) != 0) rc = -ENOMEM;
  }
  if (rc == 0) rc = kvs__start_workers(&n);
  if (rc == 0) rc = kvs__await_ready(&n);
  char why[400] = "";
  if (rc == 0) rc = kvs_routing_start(config, n.placement, n.zmq, log, &n.routing, why,
                                      sizeof(why));
  if (rc && why[0]) sq_log_error(log, "%s", why);
  if (rc == 0) {
    sq_log_info(log, "ready: %u threads serving tcp://%s:%" PRId64 "..%" PRId64 ", routing on "
                "tcp://%s:%" PRId64 ", data in %s, durability %s", n.nworkers,
                config->bind_host, KVS_PORT_KEY_REQUEST + config->port_offset,
                KVS_PORT_KEY_REQUEST + config->port_offset + n.nworkers - 1, config->bind_host,
                KVS_PORT_KEY_ADDRESS + config->port_offset, config->data_dir,
                kvs__durability_name(config->durability));
    rc = kvs__wait_for_stop(&n);
  }
  kvs__node_teardown(&n);
  if (rc == 0) sq_log_info(log, "stopped cleanly");
  return rc;
}
