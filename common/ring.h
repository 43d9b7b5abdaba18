/* ring: Anna's consistent-hash rings (PROTOCOL.md §2.3), as sorted arrays.
 *
 * Global ring (one per tier): which physical nodes hold a key. Each node contributes
 * `vnodes` (Anna: 3000) virtual nodes named "<private_ip>:0_<v>", at position
 * (uint32)hash("GLOBAL" + name); a key sits at (uint32)hash("GLOBAL" + key).
 * Local ring (one per tier, identical on every node of the tier): which worker
 * threads of a node hold a key. Thread t contributes virtual nodes "<t>_<v>" at the
 * full 64-bit hash(name); a key sits at hash(key). hash is sq_hash_std().
 *
 * Lookup: the first entry whose position is >= the key's, wrapping to the first entry.
 * The replicas of a key are the distinct owners met walking clockwise from there.
 *
 *      pos[]:  [ 17 | 912 | 4077 | ... | 4294960000 ]   sorted ascending, searched
 *      owner[]:[  2 |   0 |    2 | ... |          1 ]   by binary search
 *                      ^ key at 300 lands here; a key above the last entry wraps to [0]
 *
 * Differences from Anna, all deliberate (PROTOCOL.md §5 items 6 and 14):
 *  - Collisions: two virtual nodes at one position are both kept, ordered by
 *    (position, private IP bytes, virtual number) for the global ring and (position,
 *    thread, virtual number) for the local one, so every process builds the same
 *    ring whatever order it learnt the nodes in. Anna's std::map kept whichever was
 *    inserted first (the local-ring order equals Anna's), and its erase-by-position
 *    removed the other node's entry; here a removal takes only the node's own entries.
 *  - The responsible_* walks stop after min(R, owners) distinct owners (and never pass
 *    an entry twice), so an absurd replication factor cannot hang a thread.
 *  - A rejoin (known private IP, higher join count) also refreshes the public IP.
 *
 * Node identity is the private IP; join counts are tracked per private IP. Inserting a
 * known private IP is ignored unless the join count is higher (a rejoin), which
 * reports a change but leaves the positions as they are.
 *
 * Threads and ownership: a ring has no lock. Any number of threads may read a ring
 * that nobody mutates (the KVS builds a ring, then publishes it read-only, and swaps
 * in a modified clone on membership change). Every mutating call needs exclusive
 * access. A failed call leaves the ring exactly as it was, so no error is sticky.
 * Node records returned by the global ring are owned by it and stay valid until the
 * node is removed or the ring destroyed (inserting other nodes does not move them).
 * Strings from the network (IPs in join messages) are checked: 1..SQ_RING_HOST_MAX
 * printable ASCII bytes without spaces, and a ring holds at most SQ_RING_MAX_NODES.
 */
#ifndef SQ_RING_H
#define SQ_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SQ_RING_VNODES 3000u          /* Anna's kVirtualThreadNum */
#define SQ_RING_MAX_VNODES 100000u    /* per node or thread */
#define SQ_RING_MAX_NODES 1024u       /* per global ring */
#define SQ_RING_MAX_THREADS 1024u     /* per local ring */
#define SQ_RING_MAX_ENTRIES (1u << 23) /* virtual nodes per ring, all owners together */
#define SQ_RING_HOST_MAX 253u         /* longest IP / host name accepted, in bytes */
#define SQ_RING_KEY_PORT_BASE 6200u   /* kKeyRequestPort: clients send here + tid */
/* "tcp://" + host + ":" + 5 digits + NUL fits in this. */
#define SQ_RING_ADDR_MAX (6u + SQ_RING_HOST_MAX + 1u + 5u + 1u)

typedef struct sq_ring_node {
  char public_ip[SQ_RING_HOST_MAX + 1];   /* where clients send key requests */
  char private_ip[SQ_RING_HOST_MAX + 1];  /* identity; peers talk to it */
  uint32_t join_count;                    /* highest seen; > 0 after a restart */
} sq_ring_node_t;

typedef struct sq_global_ring sq_global_ring_t;
typedef struct sq_local_ring sq_local_ring_t;

/* One replica of a key: a thread of a node. `node` is owned by the global ring. */
typedef struct {
  const sq_ring_node_t *node;
  uint32_t tid;
} sq_ring_replica_t;

/* ---- key helpers (pure, any thread) ---- */

/* Position of a key on a global ring: (uint32)hash("GLOBAL" + key). The same for
 * every tier, so a router may compute it once and look in several rings. */
uint32_t sq_ring_global_pos(const void *key, size_t len);

/* Position of a key on a local ring: hash(key). */
uint64_t sq_ring_local_pos(const void *key, size_t len);

/* True when the text before the key's first '|' (the whole key if it has none) is
 * exactly "ANNA_METADATA", as Anna's is_metadata(). Such keys always live in the
 * memory tier with global replication 1 (PROTOCOL.md §2.3). */
bool sq_key_is_metadata(const void *key, size_t len);

/* Writes "tcp://<node->public_ip>:<port_base + tid>" and its NUL into buf. Clients get
 * port_base SQ_RING_KEY_PORT_BASE plus the daemon's port offset. Returns the string's
 * length (>= 0), SQ_EINVAL when port_base + tid exceeds 65535, or SQ_ETOOBIG when
 * cap is too small (SQ_RING_ADDR_MAX always suffices); buf is then an empty string
 * if cap > 0. */
int sq_ring_address(const sq_ring_node_t *node, uint32_t tid, uint32_t port_base,
                    char *buf, size_t cap);

/* ---- global ring ---- */

/* Creates an empty global ring giving each node `vnodes` virtual nodes (Anna:
 * SQ_RING_VNODES; 1..SQ_RING_MAX_VNODES). On success *out owns the ring (free with
 * sq_global_ring_destroy). 0, SQ_EINVAL, -ENOMEM. */
int sq_global_ring_create(uint32_t vnodes, sq_global_ring_t **out);

/* Frees the ring and its node records. Accepts NULL. */
void sq_global_ring_destroy(sq_global_ring_t *r);

/* A deep copy of `r` (node records are new; positions identical). 0 or -ENOMEM. */
int sq_global_ring_clone(const sq_global_ring_t *r, sq_global_ring_t **out);

/* Adds a node, or records a rejoin. The strings are copied.
 *  - unknown private IP: adds its vnodes; *changed = true.
 *  - known, join_count higher than recorded: records the count and the public IP,
 *    positions unchanged; *changed = true.
 *  - known, join_count not higher: nothing; *changed = false.
 * `changed` may be NULL. Returns 0, SQ_EINVAL (bad IP string), SQ_ETOOBIG (ring
 * already has SQ_RING_MAX_NODES nodes or would exceed SQ_RING_MAX_ENTRIES) or
 * -ENOMEM; on error the ring is unchanged. */
int sq_global_ring_insert(sq_global_ring_t *r, const char *public_ip,
                          const char *private_ip, uint32_t join_count, bool *changed);

/* Removes the node with this private IP and only its own entries (and forgets its
 * join count, as Anna does). Its record is freed; other records stay where they are.
 * 0 or SQ_ENOTFOUND. Never allocates. */
int sq_global_ring_remove(sq_global_ring_t *r, const char *private_ip);

/* Number of physical nodes / of virtual-node entries. */
size_t sq_global_ring_node_count(const sq_global_ring_t *r);
size_t sq_global_ring_entry_count(const sq_global_ring_t *r);

/* The i-th node (0 <= i < node_count, no particular order; removal may reorder), or
 * NULL when i is out of range. */
const sq_ring_node_t *sq_global_ring_node_at(const sq_global_ring_t *r, size_t i);

/* The node with this private IP, or NULL. */
const sq_ring_node_t *sq_global_ring_get(const sq_global_ring_t *r,
                                         const char *private_ip);

/* The node owning position `pos` (first entry >= pos, wrapping), or NULL when the
 * ring is empty. */
const sq_ring_node_t *sq_global_ring_find_pos(const sq_global_ring_t *r, uint32_t pos);

/* Anna's responsible_global: walks clockwise from find_pos(pos) and writes the first
 * min(R, node_count, max) distinct nodes to out[], primary first; *n gets how many.
 * Stops after one full turn whatever R is. Returns 0 (also for R == 0 or max == 0,
 * with *n = 0) or SQ_ENOSERVERS when the ring is empty and R > 0. */
int sq_global_ring_responsible_pos(const sq_global_ring_t *r, uint32_t pos, uint32_t R,
                                   const sq_ring_node_t **out, size_t max, size_t *n);

/* The same for a key: responsible_pos(sq_ring_global_pos(key, len), ...). */
int sq_global_ring_responsible(const sq_global_ring_t *r, const void *key, size_t len,
                               uint32_t R, const sq_ring_node_t **out, size_t max,
                               size_t *n);

/* ---- local ring ---- */

/* Creates the local ring of `threads` threads (1..SQ_RING_MAX_THREADS) with `vnodes`
 * virtual nodes each (Anna: SQ_RING_VNODES; 1..SQ_RING_MAX_VNODES). Immutable
 * afterwards, so it may be shared by all threads. *out owns it. 0, SQ_EINVAL,
 * SQ_ETOOBIG (threads x vnodes > SQ_RING_MAX_ENTRIES), -ENOMEM. */
int sq_local_ring_create(uint32_t threads, uint32_t vnodes, sq_local_ring_t **out);

/* Accepts NULL. */
void sq_local_ring_destroy(sq_local_ring_t *r);

uint32_t sq_local_ring_thread_count(const sq_local_ring_t *r);

/* The thread owning local position `pos`. */
uint32_t sq_local_ring_find_pos(const sq_local_ring_t *r, uint64_t pos);

/* Anna's responsible_local: the first min(L, threads, max) distinct thread IDs
 * clockwise from find_pos(pos), primary first, into tids[]; *n gets how many.
 * Always 0. */
int sq_local_ring_responsible_pos(const sq_local_ring_t *r, uint64_t pos, uint32_t L,
                                  uint32_t *tids, size_t max, size_t *n);

/* The same for a key: responsible_pos(sq_ring_local_pos(key, len), ...). */
int sq_local_ring_responsible(const sq_local_ring_t *r, const void *key, size_t len,
                              uint32_t L, uint32_t *tids, size_t max, size_t *n);

/* ---- replica sets ---- */

/* The replica set of a key in one tier: every (node, tid) of
 * responsible_global(key, R) x responsible_local(key, L), node-major in clockwise
 * order (the first pair is the primary). Writes at most `max` pairs (a prefix of that
 * order) to out[]; *n gets how many. For a metadata key pass the memory tier's rings
 * and R = 1 (PROTOCOL.md §2.3). 0 (with *n = 0 when R or L is 0) or SQ_ENOSERVERS. */
int sq_ring_replicas(const sq_global_ring_t *g, const sq_local_ring_t *l,
                     const void *key, size_t len, uint32_t R, uint32_t L,
                     sq_ring_replica_t *out, size_t max, size_t *n);

#endif
