/* kvs_node: one squall-kvs storage node: its worker threads, its routing thread, and
 * the supervision around them (start-up, readiness, signals, counters, shutdown).
 *
 * kvs_node_run() is the whole life of a daemon process: it claims the data directory
 * (an exclusive lock, so two nodes never share one), checks that the directory was
 * written with the same thread count (each thread owns its own log), builds the
 * placement, starts every worker (each recovers its log in parallel), waits until all
 * report ready, logs where it serves and where its data is, then waits for SIGTERM or
 * SIGINT, logging the counters every stats_interval_s. On a signal it stops routing,
 * lets every worker finish its in-flight writes and send their acknowledgements, logs
 * the final counters and returns 0.
 */
#ifndef KVS_NODE_H
#define KVS_NODE_H

#include "kvs_config.h"
#include "sq_log.h"

/* Runs the node until a stop signal. Returns 0 after a clean stop, or an error code
 * after logging a sentence that says what went wrong. The caller must have blocked
 * SIGTERM, SIGINT and SIGHUP in every thread (kvs_node_block_signals) first. */
int kvs_node_run(const kvs_config_t *config, sq_log_t *log);

/* Blocks the stop signals in the calling thread (and the threads it creates later). */
void kvs_node_block_signals(void);

#endif
