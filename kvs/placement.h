/* kvs_placement: which thread of which node serves a key (PROTOCOL.md §2.3).
 *
 * Built once at start from the configuration and then read-only, so every worker
 * and the routing thread share one instance without locks. Today a node knows only
 * itself on the global ring; membership changes (a later issue) will publish a new
 * placement and swap it in atomically rather than mutate this one.
 *
 * Replication: global 1, local 1 (Anna's defaults), so a key has exactly one owner
 * thread. The ring code already supports more; the replica set API is shaped for it.
 */
#ifndef KVS_PLACEMENT_H
#define KVS_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "kvs_config.h"

typedef struct kvs_placement kvs_placement_t;

#define KVS_ENDPOINT_MAX 300

/* Builds the rings for this node and `threads` worker threads. 0, -ENOMEM, SQ_EINVAL. */
int kvs_placement_create(const kvs_config_t *config, uint32_t threads,
                         kvs_placement_t **out);

void kvs_placement_destroy(kvs_placement_t *p);

/* Number of worker threads of this node. */
uint32_t kvs_placement_threads(const kvs_placement_t *p);

/* The thread of this node that owns the key. */
uint32_t kvs_placement_owner(const kvs_placement_t *p, const char *key, size_t keylen);

/* Writes up to `max` client endpoints ("tcp://<public_ip>:<6200+offset+tid>") of the
 * replicas of `key` into out[]; *n gets how many. 0 or SQ_ENOSERVERS. */
int kvs_placement_endpoints(const kvs_placement_t *p, const char *key, size_t keylen,
                            char (*out)[KVS_ENDPOINT_MAX], size_t max, size_t *n);

#endif
