/* sched_dag: validation and shape queries of a Cloudburst Dag (PROTOCOL.md §1.6).
 *
 * Cloudburst states the rules of a DAG informally and enforces none of them (§1.6,
 * §5 item 31-33). squall's scheduler refuses, at registration, a DAG that breaks any:
 *
 *   - a non-empty name of at most SCHED_DAG_NAME_MAX bytes, no '|' prefix collision
 *     with Anna metadata keys (a name starting with "ANNA_METADATA" is refused);
 *   - 1..SCHED_DAG_MAX_FUNCTIONS functions with unique, non-empty names, each
 *     registered (the caller's `known` predicate);
 *   - connections only between member functions, no self-loops, no duplicate edges,
 *     at most SCHED_DAG_MAX_LINKS of them;
 *   - acyclic; weakly connected; exactly one sink (a function with no outgoing link);
 *   - `colocated` names only member functions.
 *
 * The error is one of the CloudburstError codes the reply carries (FUNC_NOT_FOUND for
 * an unregistered function, NO_SUCH_DAG is never produced here, EXECUTION_ERROR for a
 * malformed DAG, which is what Cloudburst clients know) plus a sentence naming the
 * offending function or edge.
 *
 * The shape helpers read a Dag that passed validation. Stateless; thread-safe.
 */
#ifndef SCHED_DAG_H
#define SCHED_DAG_H

#include <stdbool.h>
#include <stddef.h>

#include "cloudburst.pb-c.h"

#define SCHED_DAG_NAME_MAX 1024
#define SCHED_DAG_MAX_FUNCTIONS 1024
#define SCHED_DAG_MAX_LINKS 8192
#define SCHED_DAG_ERROR_MAX 512

/* Says whether a function name is registered. */
typedef bool (*sched_dag_known_fn)(void *arg, const char *name);

/* Checks every rule above. known may be NULL (registration is not checked). Returns
 * 0, or SQ_EINVAL with *cb_error set to the CloudburstError to reply with and err
 * (errlen bytes, may be NULL) holding the sentence. */
int sched_dag_validate(const Dag *dag, sched_dag_known_fn known, void *arg,
                       int *cb_error, char *err, size_t errlen);

/* Index of the function called name in dag->functions, or -1. */
int sched_dag_find(const Dag *dag, const char *name);

/* True when no connection has name as its sink (a source of the DAG). */
bool sched_dag_is_source(const Dag *dag, const char *name);

/* Stores into preds (caller's array of cap entries) the sources of the connections
 * whose sink is name, in the order of dag->connections (the deterministic fan-in
 * order squall promises, §5 item 33). Returns how many there are (may exceed cap;
 * only cap are stored). */
size_t sched_dag_predecessors(const Dag *dag, const char *name, const char **preds,
                              size_t cap);

#endif
