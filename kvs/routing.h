/* kvs_routing: the node's answer to "who serves these keys?" (PROTOCOL.md §2.4, A1/A2).
 *
 * One thread bound to tcp://<bind>:6450+offset (Anna's kKeyAddressPort) answers every
 * KeyAddressRequest with one KeyAddress per key, in request order, holding the full
 * endpoints of the threads that serve it. Unlike Anna's routing tier it never parks a
 * request: placement is known locally, so every key of a batch is answered at once
 * (PROTOCOL.md §5 item 2). An empty key gets an entry with no endpoints; a request
 * that does not decode is answered with error NO_SERVERS only if its reply address
 * can be found, and is otherwise counted and logged.
 */
#ifndef KVS_ROUTING_H
#define KVS_ROUTING_H

#include "kvs_config.h"
#include "placement.h"
#include "sq_log.h"

typedef struct kvs_routing kvs_routing_t;

/* Binds the routing socket and starts the thread. On failure writes a sentence into
 * why. 0 or an error code. */
int kvs_routing_start(const kvs_config_t *config, const kvs_placement_t *placement,
                      void *zmq_context, sq_log_t *log, kvs_routing_t **out, char *why,
                      size_t why_len);

/* Stops the thread and frees everything. Accepts NULL. */
void kvs_routing_stop(kvs_routing_t *r);

/* Requests answered so far (any thread may read). */
uint64_t kvs_routing_answered(const kvs_routing_t *r);

#endif
