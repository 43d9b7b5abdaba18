/* squall-cache: the per-node cache daemon (cache/daemon.h).
 *
 * Reads its options (defaults < --config FILE < flags), opens its logger, and runs
 * until SIGTERM/SIGINT. Exit codes: 0 after a clean stop, 2 for bad options, 1 when
 * the daemon could not start or failed while serving.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "sq_config.h"
#include "sq_daemon.h"
#include "sq_error.h"
#include "sq_log.h"

#define CACHE_OPT(field, name, type, def, help) \
  SQ_OPT(cache_daemon_config_t, field, name, type, def, help)

static const sq_opt_t cache__options[] = {
    CACHE_OPT(dir, "dir", SQ_OPT_STRING, "",
              "cache directory on tmpfs (default /dev/shm/squall-<cluster>-<node>)"),
    CACHE_OPT(cluster, "cluster", SQ_OPT_STRING, "default", "cluster name (for --dir)"),
    CACHE_OPT(node, "node", SQ_OPT_STRING, "", "node name (for --dir; default host name)"),
    CACHE_OPT(port_offset, "port-offset", SQ_OPT_INT64, "0",
              "added to the update port 7150 the KVS pushes to"),
    CACHE_OPT(kvs, "kvs", SQ_OPT_STRING, "tcp://127.0.0.1:6450",
              "squall-kvs routing endpoints, comma-separated"),
    CACHE_OPT(budget, "budget", SQ_OPT_SIZE, "0", "bytes the cache may use (0 = RAM / 4)"),
    CACHE_OPT(public_ip, "public-ip", SQ_OPT_STRING, "127.0.0.1",
              "address the KVS pushes updates to and replies to"),
    CACHE_OPT(bind, "bind", SQ_OPT_STRING, "127.0.0.1",
              "interface to listen on (loopback unless told otherwise)"),
    CACHE_OPT(inline_max, "inline-max", SQ_OPT_SIZE, "64K",
              "values up to this size are kept inside LMDB, larger ones in segments"),
    CACHE_OPT(max_request_bytes, "max-request-bytes", SQ_OPT_SIZE, "1G",
              "largest request or KVS reply accepted"),
    CACHE_OPT(kvs_timeout_ms, "kvs-timeout-ms", SQ_OPT_INT64, "5000",
              "per-attempt timeout of KVS requests"),
    CACHE_OPT(kvs_retries, "kvs-retries", SQ_OPT_INT64, "2", "retries after a KVS timeout"),
    CACHE_OPT(stats_interval_s, "stats-interval", SQ_OPT_INT64, "60",
              "seconds between counter lines in the log (0 = at shutdown and SIGHUP)"),
    CACHE_OPT(keyset_interval_ms, "keyset-interval-ms", SQ_OPT_INT64, "100",
              "least milliseconds between two key-set reports to the KVS"),
    CACHE_OPT(discard, "discard", SQ_OPT_BOOL, "false",
              "start with an empty cache instead of reopening the previous one"),
    SQ_DAEMON_LOG_LEVEL_OPT(cache_daemon_config_t, log_level),
    SQ_DAEMON_LOG_FORMAT_OPT(cache_daemon_config_t, log_format),
    SQ_DAEMON_LOG_FILE_OPT(cache_daemon_config_t, log_file),
};

static const sq_config_spec_t cache__spec = {
    .prog = "squall-cache",
    .summary = "squall's per-node shared-memory cache daemon (LMDB on tmpfs)",
    .opts = cache__options,
    .nopts = sizeof(cache__options) / sizeof(cache__options[0]),
};

/* Checks what the table cannot express. Returns NULL or the complaint. */
static const char *cache__config_problem(const void *c) {
  const cache_daemon_config_t *cfg = c;
  if (cfg->port_offset < -7150 || cfg->port_offset > 65535 - 7150)
    return "--port-offset puts the update port outside 1..65535";
  if (!cfg->kvs[0]) return "--kvs must name the KVS routing endpoint";
  if (!cfg->public_ip[0] || !cfg->bind[0]) return "--public-ip and --bind must not be empty";
  if (cfg->max_request_bytes < 1024) return "--max-request-bytes must be at least 1K";
  if (cfg->kvs_timeout_ms <= 0 || cfg->kvs_retries < 0)
    return "--kvs-timeout-ms must be > 0 and --kvs-retries >= 0";
  if (cfg->stats_interval_s < 0) return "--stats-interval must be >= 0";
  if (cfg->keyset_interval_ms < 1 || cfg->keyset_interval_ms > 60000)
    return "--keyset-interval-ms must be between 1 and 60000";
  return NULL;
}

int main(int argc, char **argv) {
  cache_daemon_config_t cfg = {0};
  sq_log_t *log = NULL;
  const sq_daemon_spec_t daemon = {
      .spec = &cache__spec,
      .check = cache__config_problem,
      .component = "cache",
      .log_level_offset = offsetof(cache_daemon_config_t, log_level),
      .log_format_offset = offsetof(cache_daemon_config_t, log_format),
      .log_file_offset = offsetof(cache_daemon_config_t, log_file),
  };
  int rc = sq_daemon_setup(&daemon, &cfg, argc, argv, &log);
  if (rc >= 0) return rc;
  cache_daemon_block_signals();
  rc = cache_daemon_run(&cfg, log);
  sq_log_close(log);
  sq_config_free(&cache__spec, &cfg);
  return rc == 0 ? 0 : 1;
}
