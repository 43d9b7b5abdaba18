/* sched_policy: which executor runs what (PROTOCOL.md §3.4, §3.10, minus §5 items 23,
 * 29, 38, 39).
 *
 * State, all owned by the scheduler's one thread:
 *
 *   executors[]   (ip, tid) -> type, pinned functions (from its own ThreadStatus and
 *                 from pin acks), utilisation, last time heard, recent picks
 *   cache keys    ip -> sorted set of keys that node's cache holds (the caches'
 *                 ANNA_METADATA|cache_ip|<ip> reports)
 *
 * Liveness (Cloudburst never drops a silent executor, §3.13): an executor is dropped
 * when it says running = false, or when it has not been heard from for
 * `deadline_ms` (sched_policy_expire). A dropped executor is forgotten entirely, so
 * the maps stay bounded by the live cluster (max_executors).
 *
 * Picking (deterministic, so that tests can pin behaviour):
 *   1. candidates: for a one-shot call the live CPU executors with no pinned function,
 *      or, when there are none, every live CPU executor (squall executors run one-shot
 *      calls beside pinned functions); for a DAG function the live executors where it
 *      is pinned; for a pin the live executors of the wanted type, fewest pins first;
 *   2. colocation: prefer candidates on the wanted IP, when one is given;
 *   3. locality: most references whose key the candidate's node caches;
 *   4. load: fewest recent picks plus 10 x utilisation;
 *   5. ties rotate (a counter), so equal executors share the work.
 *
 * Errors: SQ_ENOTFOUND (no candidate), SQ_EINVAL, SQ_ETOOBIG (a bound), -ENOMEM.
 */
#ifndef SCHED_POLICY_H
#define SCHED_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.pb-c.h"
#include "sched_pickle.h"

#define SCHED_IP_MAX 64
#define SCHED_FNAME_MAX 512
#define SCHED_MAX_PINNED 256 /* functions per executor */

typedef struct sched_policy sched_policy_t;

typedef struct {
  char ip[SCHED_IP_MAX];
  uint32_t tid;
} sched_exec_id_t;

typedef struct {
  uint64_t deadline_ms;      /* drop an executor silent this long; 0 = 5000 */
  size_t max_executors;      /* 0 = 4096 */
  size_t max_keys_per_ip;    /* cache report bound; 0 = 1 << 20 */
} sched_policy_options_t;

/* Makes an empty policy. opts may be NULL. 0 or -ENOMEM; *out is the caller's. */
int sched_policy_create(const sched_policy_options_t *opts, sched_policy_t **out);

/* Frees everything. Accepts NULL. */
void sched_policy_destroy(sched_policy_t *p);

/* Applies an executor's ThreadStatus at time now_ms: adds or refreshes it (its pinned
 * functions become exactly st->functions), or drops it when running is false.
 * *dropped (may be NULL) says whether it was dropped. 0, SQ_EINVAL (empty ip, too
 * long ip or function name), SQ_ETOOBIG (max_executors / SCHED_MAX_PINNED), -ENOMEM. */
int sched_policy_status(sched_policy_t *p, const ThreadStatus *st, uint64_t now_ms,
                        bool *dropped);

/* Drops every executor not heard from since now_ms - deadline_ms and stores up to cap
 * of their ids in out (may be NULL). Returns how many were dropped. */
size_t sched_policy_expire(sched_policy_t *p, uint64_t now_ms, sched_exec_id_t *out,
                           size_t cap);

/* True when (ip, tid) is a live executor. */
bool sched_policy_alive(const sched_policy_t *p, const sched_exec_id_t *id);

/* The squall_features bits of (ip, tid)'s last ThreadStatus; 0 when not live. */
uint32_t sched_policy_features(const sched_policy_t *p, const sched_exec_id_t *id);

/* Number of live executors. */
size_t sched_policy_count(const sched_policy_t *p);

/* Records that fname is pinned on id (a pin ack), without waiting for its status.
 * 0, SQ_ENOTFOUND (unknown executor), SQ_ETOOBIG, -ENOMEM. */
int sched_policy_pin_add(sched_policy_t *p, const sched_exec_id_t *id, const char *fname);

/* Forgets fname on id (an unpin we sent). 0 or SQ_ENOTFOUND. */
int sched_policy_pin_remove(sched_policy_t *p, const sched_exec_id_t *id,
                            const char *fname);

/* Stores up to cap executors where fname is pinned; returns how many there are. */
size_t sched_policy_locations(const sched_policy_t *p, const char *fname,
                              sched_exec_id_t *out, size_t cap);

/* Replaces the set of keys cached on node ip (keys are copied; at most
 * max_keys_per_ip are kept, the rest ignored). 0, SQ_EINVAL, -ENOMEM. */
int sched_policy_cache_keys(sched_policy_t *p, const char *ip, const char *const *keys,
                            size_t n);

/* Stores up to cap distinct IPs of live executors (pointers valid until the next
 * change of the policy); returns how many there are. For the locality refresh. */
size_t sched_policy_ips(const sched_policy_t *p, const char **out, size_t cap);

/* Picks an executor for a one-shot call with the given references, never `exclude`
 * (may be NULL). Counts the pick as load. 0 or SQ_ENOTFOUND. */
int sched_policy_pick_call(sched_policy_t *p, const sched_pickle_ref_t *refs, size_t nrefs,
                           const sched_exec_id_t *exclude, sched_exec_id_t *out);

/* Picks among the executors where fname is pinned, preferring prefer_ip (may be
 * NULL). Counts the pick. 0 or SQ_ENOTFOUND (fname pinned nowhere alive). */
int sched_policy_pick_dag(sched_policy_t *p, const char *fname, const sched_pickle_ref_t *refs,
                          size_t nrefs, const char *prefer_ip, sched_exec_id_t *out);

/* Chooses where to pin fname: live executors of type gpu that do not already hold it
 * and are not among the nexclude ids in exclude, fewest pinned functions first,
 * preferring prefer_ip (may be NULL). 0 or SQ_ENOTFOUND. */
int sched_policy_pick_pin(sched_policy_t *p, const char *fname, bool gpu,
                          const char *prefer_ip, const sched_exec_id_t *exclude,
                          size_t nexclude, sched_exec_id_t *out);

/* "ip:tid" of an id into buf. */
void sched_exec_id_format(const sched_exec_id_t *id, char *buf, size_t len);

/* Parses "ip:tid" (the DagSchedule.locations form). 0 or SQ_EINVAL. */
int sched_exec_id_parse(const char *text, sched_exec_id_t *out);

#endif
