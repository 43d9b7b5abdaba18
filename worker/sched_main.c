/* squall-scheduler: the scheduler daemon (sched_server.h).
 *
 * Reads its options (defaults < --config FILE < flags; repeated --peer flags are
 * joined into one comma list), opens its logger, serves until SIGTERM/SIGINT.
 * Exit codes: 0 after a clean stop, 2 for bad options, 1 when it could not start.
 */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched_server.h"
#include "sq_config.h"
#include "sq_daemon.h"
#include "sq_error.h"
#include "sq_log.h"

#define S_OPT(field, name, type, def, help) SQ_OPT(sched_config_t, field, name, type, def, help)

static const sq_opt_t sched__options[] = {
    S_OPT(port_offset, "port-offset", SQ_OPT_INT64, "0", "added to every port (5000-5011)"),
    S_OPT(bind_host, "bind", SQ_OPT_STRING, "127.0.0.1",
          "interface to listen on (loopback unless told otherwise)"),
    S_OPT(public_ip, "public-ip", SQ_OPT_STRING, "127.0.0.1",
          "address executors send pin acknowledgements to"),
    S_OPT(kvs, "kvs", SQ_OPT_STRING, "",
          "KVS routing endpoint (default tcp://127.0.0.1:6450+offset)"),
    S_OPT(peers, "peer", SQ_OPT_STRING, "",
          "other schedulers' hosts (repeatable, or a comma list)"),
    S_OPT(executor_deadline_ms, "executor-deadline-ms", SQ_OPT_INT64, "3000",
          "drop an executor not heard from for this long"),
    S_OPT(pin_timeout_ms, "pin-timeout-ms", SQ_OPT_INT64, "2000",
          "wait this long for an executor to acknowledge a pin"),
    S_OPT(pin_tries, "pin-tries", SQ_OPT_INT64, "3", "executors tried per function to pin"),
    S_OPT(kvs_timeout_ms, "kvs-timeout-ms", SQ_OPT_INT64, "1000",
          "per-attempt KVS timeout (one retry)"),
    S_OPT(refresh_ms, "refresh-ms", SQ_OPT_INT64, "1000",
          "period of locality refresh, DAG checks and peer gossip"),
    S_OPT(call_deadline_ms, "call-deadline-ms", SQ_OPT_INT64, "30000",
          "calls sent this recently are re-sent when their executor is lost"),
    S_OPT(resend_wait_ms, "resend-wait-ms", SQ_OPT_INT64, "5000",
          "a re-sent call that finds no live executor waits this long for one, then fails"),
    S_OPT(max_message_bytes, "max-message-bytes", SQ_OPT_SIZE, "256M",
          "largest request accepted"),
    SQ_DAEMON_LOG_LEVEL_OPT(sched_config_t, log_level),
    SQ_DAEMON_LOG_FORMAT_OPT(sched_config_t, log_format),
    SQ_DAEMON_LOG_FILE_OPT(sched_config_t, log_file),
};

static const sq_config_spec_t sched__spec = {
    .prog = "squall-scheduler",
    .summary = "squall's scheduler: registers functions and DAGs and places calls "
               "(speaks Cloudburst's protocol)",
    .opts = sched__options,
    .nopts = sizeof(sched__options) / sizeof(sched__options[0]),
};

static volatile sig_atomic_t sched__stop;

static void sched__on_signal(int sig) {
  (void)sig;
  sched__stop = 1;
}

/* Checks what the table cannot express. Returns NULL or the complaint. */
static const char *sched__config_problem(const void *cfg) {
  const sched_config_t *c = cfg;
  if (c->port_offset < -4000 || c->port_offset > 60000) return "--port-offset puts ports outside 1..65535";
  if (c->executor_deadline_ms < 100) return "--executor-deadline-ms must be at least 100";
  if (c->pin_timeout_ms < 10 || c->pin_tries < 1 || c->pin_tries > 12)
    return "--pin-timeout-ms must be >= 10 and --pin-tries 1..12";
  if (c->kvs_timeout_ms < 10 || c->refresh_ms < 10 || c->call_deadline_ms < 0)
    return "--kvs-timeout-ms and --refresh-ms must be >= 10, --call-deadline-ms >= 0";
  if (c->resend_wait_ms < 0 || c->resend_wait_ms > 3600000)
    return "--resend-wait-ms must be 0..3600000";
  if (c->max_message_bytes < 4096) return "--max-message-bytes must be at least 4K";
  return NULL;
}

/* Joins every "--peer X" / "--peer=X" into one "--peer=a,b" at the end of argv.
 * Returns a new argv (caller frees it and *joined) or NULL on -ENOMEM. */
static char **sched__join_peers(int argc, char **argv, int *outc, char **joined) {
  char **out = calloc((size_t)argc + 2, sizeof(char *));
  size_t cap = 8;
  for (int i = 0; i < argc; i++) cap += strlen(argv[i]) + 1;
  *joined = calloc(1, cap);
  if (!out || !*joined) {
    free(out);
    free(*joined);
    return NULL;
  }
  strcpy(*joined, "--peer=");
  int n = 0, peers = 0;
  for (int i = 0; i < argc; i++) {
    const char *v = NULL;
    if (i > 0 && strcmp(argv[i], "--peer") == 0 && i + 1 < argc) v = argv[++i];
    else if (i > 0 && strncmp(argv[i], "--peer=", 7) == 0) v = argv[i] + 7;
    if (!v) {
      out[n++] = argv[i];
      continue;
    }
    if (peers++) strcat(*joined, ",");
    strcat(*joined, v);
  }
  if (peers) out[n++] = *joined;
  *outc = n;
  return out;
}

int main(int argc, char **argv) {
  sched_config_t cfg = {0};
  sq_log_t *log = NULL;
  sched_t *s = NULL;
  char *joined = NULL, err[512] = "";
  int nargc = 0;
  char **nargv = sched__join_peers(argc, argv, &nargc, &joined);
  if (!nargv) return 1;
  const sq_daemon_spec_t daemon = {
      .spec = &sched__spec,
      .check = sched__config_problem,
      .component = "scheduler",
      .log_level_offset = offsetof(sched_config_t, log_level),
      .log_format_offset = offsetof(sched_config_t, log_format),
      .log_file_offset = offsetof(sched_config_t, log_file),
      .log_exit_code = 1,
  };
  int code = sq_daemon_setup(&daemon, &cfg, nargc, nargv, &log);
  if (code >= 0) goto out;
  code = 1;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, sched__on_signal);
  signal(SIGINT, sched__on_signal);
  int rc = sched_create(&cfg, log, &s, err, sizeof err);
  if (rc) {
    sq_log_error(log, "cannot start: %s", err);
    goto out;
  }
  rc = sched_run(s, &sched__stop);
  if (rc) sq_log_error(log, "stopped on error: %s", sq_strerror(rc));
  else sq_log_info(log, "stopped");
  code = rc ? 1 : 0;
out:
  sched_destroy(s);
  sq_log_close(log);
  sq_config_free(&sched__spec, &cfg);
  free(nargv);
  free(joined);
  return code;
}
