/* kvs_placement: rings of one node (see placement.h). */
#include "placement.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"
#include "sq_error.h"

struct kvs_placement {
  sq_global_ring_t *global;
  sq_local_ring_t *local;
  uint32_t port_base; /* 6200 + offset */
};

int kvs_placement_create(const kvs_config_t *config, uint32_t threads,
                         kvs_placement_t **out) {
  kvs_placement_t *p = calloc(1, sizeof(*p));
  if (!p) return -ENOMEM;
  p->port_base = (uint32_t)(KVS_PORT_KEY_REQUEST + config->port_offset);
  int rc = sq_global_ring_create(SQ_RING_VNODES, &p->global);
  if (rc == 0)
    rc = sq_global_ring_insert(p->global, config->public_ip, config->private_ip, 0, NULL);
  if (rc == 0) rc = sq_local_ring_create(threads, SQ_RING_VNODES, &p->local);
  if (rc) {
    kvs_placement_destroy(p);
    return rc;
  }
  *out = p;
  return 0;
}

void kvs_placement_destroy(kvs_placement_t *p) {
  if (!p) return;
  sq_global_ring_destroy(p->global);
  sq_local_ring_destroy(p->local);
  free(p);
}

uint32_t kvs_placement_threads(const kvs_placement_t *p) {
  return sq_local_ring_thread_count(p->local);
}

uint32_t kvs_placement_owner(const kvs_placement_t *p, const char *key, size_t keylen) {
  return sq_local_ring_find_pos(p->local, sq_ring_local_pos(key, keylen));
}

int kvs_placement_endpoints(const kvs_placement_t *p, const char *key, size_t keylen,
                            char (*out)[KVS_ENDPOINT_MAX], size_t max, size_t *n) {
  sq_ring_replica_t replicas[8];
  size_t count = 0;
  size_t cap = max < 8 ? max : 8;
  /* Replication factors: Anna's defaults (global 1, local 1) for every key. */
  int rc = sq_ring_replicas(p->global, p->local, key, keylen, 1, 1, replicas, cap, &count);
  if (rc) return rc;
  *n = 0;
  for (size_t i = 0; i < count; i++) {
    int len = sq_ring_address(replicas[i].node, replicas[i].tid, p->port_base, out[*n],
                              KVS_ENDPOINT_MAX);
    if (len < 0) return len;
    (*n)++;
  }
  return 0;
}
