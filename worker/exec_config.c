/* exec_config: the option table of squall-worker (see exec_config.h). */
#include "exec_config.h"

#include <stddef.h>

#include "sq_daemon.h"

#define EXEC_OPT(field, name, type, def, help) SQ_OPT(exec_config_t, field, name, type, def, help)

static const sq_opt_t exec__opts[] = {
    EXEC_OPT(executors, "executors", SQ_OPT_INT64, "0", "executor processes (0 = one per core)"),
    EXEC_OPT(port_offset, "port-offset", SQ_OPT_INT64, "0",
             "added to every port (executor tid t binds 4000..4050+offset+t, 5500+offset+t)"),
    EXEC_OPT(scheduler, "scheduler", SQ_OPT_STRING, "127.0.0.1",
             "scheduler hosts (comma list) that get ThreadStatus at 5007+offset"),
    EXEC_OPT(kvs, "kvs", SQ_OPT_STRING, "",
             "KVS routing endpoint (default tcp://127.0.0.1:6450+offset)"),
    EXEC_OPT(bind, "bind", SQ_OPT_STRING, "127.0.0.1", "address the executors bind"),
    EXEC_OPT(public_ip, "public-ip", SQ_OPT_STRING, "", "address peers are told (default: bind)"),
    EXEC_OPT(call_timeout, "call-timeout", SQ_OPT_DOUBLE, "300",
             "seconds a call may run before its executor is replaced (0 = no limit)"),
    EXEC_OPT(function_ttl_ms, "function-ttl-ms", SQ_OPT_INT64, "500",
             "ms a fetched function is used before its KVS timestamp is checked again"),
    EXEC_OPT(kvs_timeout_ms, "kvs-timeout-ms", SQ_OPT_INT64, "5000", "per-attempt KVS timeout"),
    EXEC_OPT(ref_timeout_ms, "ref-timeout-ms", SQ_OPT_INT64, "10000",
             "ms a referenced key may be missing before the call fails"),
    EXEC_OPT(cache_dir, "cache-dir", SQ_OPT_STRING, "",
             "squall-cache directory: references resolve from it, zero copy (default: KVS only)"),
    EXEC_OPT(python, "python", SQ_OPT_STRING, "",
             "interpreter whose installation (and venv) executors use (default: the build's)"),
    SQ_DAEMON_LOG_LEVEL_OPT(exec_config_t, log_level),
    EXEC_OPT(executor_tid, "executor-tid", SQ_OPT_INT64, "-1",
             "internal: run one executor with this tid (set by the supervisor)"),
    EXEC_OPT(slot_fd, "slot-fd", SQ_OPT_INT64, "-1", "internal: the supervisor's slot memfd"),
};

const sq_config_spec_t exec_config_spec = {
    "squall-worker",
    "Runs E executor processes (embedded CPython) for squall/Cloudburst functions and DAGs.",
    exec__opts,
    sizeof(exec__opts) / sizeof(exec__opts[0]),
};
