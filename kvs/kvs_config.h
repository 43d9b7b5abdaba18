/* kvs_config: everything a squall-kvs node is told at start (flags or config file).
 * Filled by kvs/main.c from the option table; read-only once the node runs, so every
 * thread may read it without locks. Strings are owned by the config loader. */
#ifndef KVS_CONFIG_H
#define KVS_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "sq_zmq.h"

/* Anna's port bases (PROTOCOL.md §1.10); a node adds port_offset to each. */
#define KVS_PORT_KEY_REQUEST 6200
#define KVS_PORT_GOSSIP 6250
#define KVS_PORT_KEY_ADDRESS 6450

/* What an acknowledged PUT survives (--durability; the order of the names in main.c):
 *   NONE  memory only: no log, no snapshot, nothing recovered at start (like Redis
 *         without persistence, and like Anna). A stopped node forgets everything.
 *   LOG   every write is appended to the log before its reply, without fsync: it
 *         survives a killed process (the page cache), not a power cut or a kernel
 *         crash (Redis's appendfsync no).
 *   FSYNC acknowledged only once its log record is on disk (default). */
typedef enum {
  KVS_DURABILITY_NONE = 0,
  KVS_DURABILITY_LOG = 1,
  KVS_DURABILITY_FSYNC = 2,
} kvs_durability_t;

typedef struct {
  char *data_dir;          /* where logs and snapshots live */
  char *bind_host;         /* interface the sockets bind to (default 127.0.0.1) */
  char *public_ip;         /* address handed to clients in KeyAddressResponse */
  char *private_ip;        /* identity on the global ring */
  int64_t threads;         /* worker threads (0 = one per core) */
  int64_t port_offset;     /* added to every port base */
  int64_t durability;      /* kvs_durability_t */
  int64_t wal_backend;     /* kvs_wal_backend_t: auto, uring, pwrite */
  uint64_t max_value_bytes;    /* largest payload accepted in a PUT */
  uint64_t max_request_bytes;  /* largest request message accepted */
  uint64_t segment_bytes;      /* log size that triggers a snapshot */
  int64_t stats_interval_s;    /* period of the counters line in the log (0 = off) */
  int64_t reply_idle_ms;       /* a reply socket unused this long is closed (0 = never) */
  bool reply_cork;             /* cork reply connections during long runs (kvs_cork.h) */
  int64_t log_level;           /* sq_log_level_t: error, warn, info, debug */
  int64_t log_format;          /* sq_log_format_t: text, json */
  char *log_file;              /* empty = stderr */
} kvs_config_t;

/* The idle time of reply sockets as sq_zmq_cache_options_t.idle_ms wants it. */
static inline int kvs_config_reply_idle(const kvs_config_t *cfg) {
  return cfg->reply_idle_ms > 0 ? (int)cfg->reply_idle_ms : SQ_ZMQ_CACHE_IDLE_NEVER;
}

#endif
