/* squall-kvs: the storage node daemon.
 *
 * Reads its options (defaults < --config FILE < flags), opens its logger, and runs
 * one node until SIGTERM/SIGINT (kvs_node_run). Exit codes: 0 after a clean stop,
 * 2 for bad options, 1 when the node could not start or failed while serving.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvs_config.h"
#include "node.h"
#include "sq_config.h"
#include "sq_daemon.h"
#include "sq_error.h"
#include "sq_log.h"

static const char *const kvs__durability_names[] = {"none", "log", "fsync", NULL};
static const char *const kvs__backend_names[] = {"auto", "uring", "pwrite", "inline", NULL};

#define KVS_OPT(field, name, type, def, help) SQ_OPT(kvs_config_t, field, name, type, def, help)
#define KVS_ENUM(field, name, choices, def, help) \
  SQ_OPT_ENUMOF(kvs_config_t, field, name, choices, def, help)

static const sq_opt_t kvs__options[] = {
    KVS_OPT(data_dir, "data-dir", SQ_OPT_STRING, "./squall-kvs-data",
            "directory of the logs and snapshots (created if missing)"),
    KVS_OPT(threads, "threads", SQ_OPT_INT64, "0", "worker threads (0 = one per core)"),
    KVS_OPT(bind_host, "bind", SQ_OPT_STRING, "127.0.0.1",
            "interface to listen on (loopback unless told otherwise)"),
    KVS_OPT(public_ip, "public-ip", SQ_OPT_STRING, "127.0.0.1",
            "address clients are told to use for this node"),
    KVS_OPT(private_ip, "private-ip", SQ_OPT_STRING, "127.0.0.1",
            "address that identifies this node on the hash ring"),
    KVS_OPT(port_offset, "port-offset", SQ_OPT_INT64, "0",
            "added to every port (key requests 6200+t, routing 6450)"),
    KVS_ENUM(durability, "durability", kvs__durability_names, "fsync",
             "fsync: acknowledge a PUT once it is on disk; log: once it is in the log "
             "(survives a killed process, not a power cut); none: memory only, "
             "nothing is kept across a restart"),
    KVS_ENUM(wal_backend, "wal-backend", kvs__backend_names, "auto",
             "log writer: io_uring, pwrite+fdatasync on a helper thread, inline (write "
            "and sync on the worker thread, like Redis), or auto (io_uring when usable)"),
    KVS_OPT(max_value_bytes, "max-value-bytes", SQ_OPT_SIZE, "512M",
            "largest payload a PUT may carry"),
    KVS_OPT(max_request_bytes, "max-request-bytes", SQ_OPT_SIZE, "1G",
            "largest request message accepted"),
    KVS_OPT(segment_bytes, "segment-bytes", SQ_OPT_SIZE, "64M",
            "log size after which a thread writes a snapshot and drops older log"),
    KVS_OPT(stats_interval_s, "stats-interval", SQ_OPT_INT64, "60",
            "seconds between counter lines in the log (0 = only at shutdown)"),
    KVS_OPT(reply_cork, "reply-cork", SQ_OPT_BOOL, "on",
            "let the kernel send long runs of replies to one client in full TCP segments "
            "(TCP_CORK while the run lasts; unpipelined clients are never delayed)"),
    KVS_OPT(reply_idle_ms, "reply-idle-ms", SQ_OPT_INT64, "60000",
            "milliseconds a socket to a client's response address may stay unused before "
            "it is closed (a departed client's is otherwise retried forever; 0 = never)"),
    SQ_DAEMON_LOG_LEVEL_OPT(kvs_config_t, log_level),
    SQ_DAEMON_LOG_FORMAT_OPT(kvs_config_t, log_format),
    SQ_DAEMON_LOG_FILE_OPT(kvs_config_t, log_file),
};

static const sq_config_spec_t kvs__spec = {
    .prog = "squall-kvs",
    .summary = "squall's lattice key-value store node (speaks Anna's protocol)",
    .opts = kvs__options,
    .nopts = sizeof(kvs__options) / sizeof(kvs__options[0]),
};

/* Checks what the table cannot express. Returns NULL or the complaint. */
static const char *kvs__config_problem(const void *c) {
  const kvs_config_t *cfg = c;
  if (cfg->threads < 0 || cfg->threads > 1024) return "--threads must be between 0 and 1024";
  if (cfg->port_offset < -6200 || cfg->port_offset > 65535 - 6450 - 1024)
    return "--port-offset puts ports outside 1..65535";
  if (!cfg->data_dir[0]) return "--data-dir must not be empty";
  if (cfg->reply_idle_ms < 0 || cfg->reply_idle_ms > 86400000)
    return "--reply-idle-ms must be between 0 (never) and 86400000 (a day)";
  if (cfg->max_value_bytes == 0 || cfg->max_request_bytes < 1024)
    return "--max-value-bytes must be > 0 and --max-request-bytes at least 1K";
  return NULL;
}

int main(int argc, char **argv) {
  kvs_config_t cfg = {0};
  sq_log_t *log = NULL;
  const sq_daemon_spec_t daemon = {
      .spec = &kvs__spec,
      .check = kvs__config_problem,
      .component = "kvs",
      .log_level_offset = offsetof(kvs_config_t, log_level),
      .log_format_offset = offsetof(kvs_config_t, log_format),
      .log_file_offset = offsetof(kvs_config_t, log_file),
  };
  int rc = sq_daemon_setup(&daemon, &cfg, argc, argv, &log);
  if (rc >= 0) return rc;
  kvs_node_block_signals();
  rc = kvs_node_run(&cfg, log);
  sq_log_close(log);
  sq_config_free(&kvs__spec, &cfg);
  return rc == 0 ? 0 : 1;
}
