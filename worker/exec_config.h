/* exec_config: the options of squall-worker (supervisor and executors share them; the
 * supervisor passes its own command line on to each executor plus the two internal
 * options executor-tid and slot-fd). */
#ifndef EXEC_CONFIG_H
#define EXEC_CONFIG_H

#include <stdint.h>

#include "sq_config.h"

typedef struct {
  int64_t executors;        /* 0 = one per core */
  int64_t port_offset;
  char *scheduler;          /* comma-separated scheduler hosts */
  char *kvs;                /* routing endpoint; "" = tcp://127.0.0.1:6450+offset */
  char *bind;
  char *public_ip;          /* "" = bind */
  double call_timeout;      /* seconds, default limit of one call */
  int64_t function_ttl_ms;  /* how long a fetched function is trusted unchecked */
  int64_t kvs_timeout_ms;
  int64_t ref_timeout_ms;   /* how long a reference may be missing before it fails */
  char *cache_dir;          /* squall-cache directory; "" = no node cache, KVS only */
  char *python;             /* interpreter whose prefix/venv the executors use */
  int64_t log_level;
  int64_t executor_tid;     /* internal: >= 0 runs one executor */
  int64_t slot_fd;          /* internal: shared slot memfd */
} exec_config_t;

extern const sq_config_spec_t exec_config_spec;

#endif
