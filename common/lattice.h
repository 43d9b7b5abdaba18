/* lattice: the six value types of the KVS and their merge (join) operation.
 *
 * Every stored value is a lattice and every write is a merge, so replicas that see
 * the same writes in any order, any number of times, converge. The wire form of each
 * lattice is the protobuf payload of PROTOCOL.md §1.4 (LWWValue, SetValue,
 * SingleKeyCausalValue, MultiKeyCausalValue, PriorityValue); this module decodes it
 * into the structures below, merges, and encodes it back.
 *
 * Canonical form (what decode produces and every function here keeps):
 *   - sets and value lists are sorted by bytes (memcmp, then length) and hold no
 *     duplicates, for SET as well as ORDERED_SET;
 *   - vector clocks are sorted by node id and hold no duplicate ids;
 *   - dependencies of a multi-key causal value are sorted by key, unique;
 *   - vector clocks hold no zero counters (a missing node is 0); priority -0.0 is +0.0.
 * Because of it, decode(encode(x)) equals x and equal lattices encode to equal bytes.
 *
 * Where squall departs from Anna, and why (see docs/lattices.md):
 *   - LWW: the larger timestamp wins; a tie is broken by the larger value bytes, not by
 *     arrival order, so replicas cannot diverge (PROTOCOL.md §5 item 7).
 *   - PRIORITY: the lower priority wins; a tie is broken by the smaller value bytes.
 *     NaN priorities are rejected at decode.
 *   - Causal values: Anna keeps one vector clock for all concurrent siblings, which
 *     makes its merge non-associative. squall keeps a clock per sibling (a new field
 *     of the payload message, ignored by Anna clients) and merges by keeping the
 *     siblings that no other sibling strictly dominates. The top-level clock is the
 *     pointwise max of the siblings' clocks, exactly what Anna clients read. A payload
 *     from an Anna client (no per-sibling clocks) gives every sibling the top clock.
 *     Dependencies merge as a map of key -> pointwise-max clock.
 *
 * Files: lattice.c (free/copy/equal, flat merges), lattice_codec.c (decode/encode),
 * lattice_causal.c + lattice_causal_codec.c (causal values), lattice_payload.c
 * (merge_payloads, validate), lattice_ts.c (timestamps); vclock.h has the vector
 * clock operations (order, join, get/set) for code that builds causal values.
 *
 * Ownership: a decoded lattice owns all its memory (libc malloc, so code that builds
 * an sq_lattice_t by hand uses malloc too); sq_lattice_free() releases it.
 * Merge functions never take ownership of their `incoming` argument.
 * Errors: SQ_EBADLATTICE for malformed payloads, SQ_EUNKNOWNTYPE for a type outside
 * the enum (or NONE where a type is required), SQ_ELATTICE for a merge of two
 * different types, SQ_ETOOBIG for a causal value above SQ_LATTICE_MAX_SIBLINGS,
 * -ENOMEM.
 */
#ifndef SQ_LATTICE_H
#define SQ_LATTICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sq_buf.h"

/* Most siblings a causal value may hold. Pruning dominated siblings compares every
 * pair of distinct sibling clocks, so the count is bounded to keep a hostile payload
 * from costing quadratic time: decode rejects more (SQ_EBADLATTICE) and a merge whose
 * result would exceed it fails with SQ_ETOOBIG, leaving the target unchanged. */
#define SQ_LATTICE_MAX_SIBLINGS 1024

/* Values equal to the wire enum LatticeType (PROTOCOL.md §1.1). */
typedef enum {
  SQ_LATTICE_NONE = 0,
  SQ_LATTICE_LWW = 1,
  SQ_LATTICE_SET = 2,
  SQ_LATTICE_SINGLE_CAUSAL = 3,
  SQ_LATTICE_MULTI_CAUSAL = 4,
  SQ_LATTICE_ORDERED_SET = 5,
  SQ_LATTICE_PRIORITY = 6,
} sq_lattice_type_t;

#define SQ_LATTICE_TYPE_MAX SQ_LATTICE_PRIORITY

typedef struct {
  uint8_t *data; /* owned; may be NULL when len == 0 */
  size_t len;
} sq_bytes_t;

typedef struct {
  char *node;       /* owned, NUL-terminated node / client id */
  uint32_t counter;
} sq_vc_entry_t;

typedef struct {
  sq_vc_entry_t *entries; /* owned, sorted by node, unique */
  size_t count;
} sq_vclock_t;

typedef struct {
  uint64_t timestamp;
  sq_bytes_t value;
} sq_lww_t;

typedef struct {
  double priority;
  sq_bytes_t value;
} sq_priority_t;

typedef struct {
  sq_bytes_t *items; /* owned, sorted, unique */
  size_t count;
} sq_set_t;

typedef struct {
  sq_vclock_t clock; /* this sibling's own version */
  sq_bytes_t value;
} sq_sibling_t;

typedef struct {
  sq_vclock_t clock;       /* pointwise max of the siblings' clocks */
  sq_sibling_t *siblings;  /* owned; antichain, sorted by (value, clock), unique */
  size_t nsiblings;
} sq_causal_t;

typedef struct {
  char *key;         /* owned */
  sq_vclock_t clock;
} sq_dependency_t;

typedef struct {
  sq_causal_t causal;
  sq_dependency_t *deps; /* owned, sorted by key, unique */
  size_t ndeps;
} sq_multi_causal_t;

typedef struct {
  sq_lattice_type_t type;
  union {
    sq_lww_t lww;
    sq_set_t set;          /* SET and ORDERED_SET */
    sq_causal_t single;    /* SINGLE_CAUSAL */
    sq_multi_causal_t multi;
    sq_priority_t priority;
  } u;
} sq_lattice_t;

/* Name of a lattice type ("LWW", "SET", ...) or "INVALID". Static string. */
const char *sq_lattice_type_name(int type);

/* True when type is one of the six storable types (not NONE). */
bool sq_lattice_type_valid(int type);

/* Decodes a payload of the given type into *out (which the caller then owns and
 * frees with sq_lattice_free). Input is untrusted: any malformed, truncated or
 * non-canonical-but-valid input is either normalised or rejected with
 * SQ_EBADLATTICE; it never crashes. On error *out is left empty (type NONE). */
int sq_lattice_decode(sq_lattice_type_t type, const uint8_t *payload, size_t len,
                      sq_lattice_t *out);

/* Appends the canonical payload encoding of `l` to `out`. 0, SQ_EUNKNOWNTYPE, -ENOMEM. */
int sq_lattice_encode(const sq_lattice_t *l, sq_buf_t *out);

/* Merges `incoming` into `into` (join). Both must have the same type, else
 * SQ_ELATTICE and `into` is unchanged. On -ENOMEM `into` is unchanged too, and on
 * SQ_ETOOBIG (a causal result above SQ_LATTICE_MAX_SIBLINGS siblings). Causal results
 * are rebuilt in canonical form even from hand-built inputs whose siblings are
 * unsorted, duplicated or dominated (each clock must still be sorted by node).
 * *changed (may be NULL) says whether `into` changed. */
int sq_lattice_merge(sq_lattice_t *into, const sq_lattice_t *incoming, bool *changed);

/* Deep equality of two lattices in canonical form (type included). */
bool sq_lattice_equal(const sq_lattice_t *a, const sq_lattice_t *b);

/* Deep copy. 0 or -ENOMEM (then *dst is empty). */
int sq_lattice_copy(sq_lattice_t *dst, const sq_lattice_t *src);

/* True when the lattice holds no data (empty LWW/PRIORITY value bytes, empty set, no
 * causal siblings): Anna answers KEY_DNE for such a value (PROTOCOL.md §2.2). */
bool sq_lattice_is_empty(const sq_lattice_t *l);

/* Releases everything `l` owns and leaves it as type NONE. Accepts NULL. */
void sq_lattice_free(sq_lattice_t *l);

/* Merges two encoded payloads of one type: decode both, merge, encode into `out`
 * (appended). The KVS uses this on its stored bytes. LWW and PRIORITY take a fast
 * path that never allocates beyond `out`. *changed (may be NULL) says whether the
 * result differs from `stored`. Errors as decode/merge; `out` unchanged on error. */
int sq_lattice_merge_payloads(sq_lattice_type_t type, const uint8_t *stored,
                              size_t stored_len, const uint8_t *incoming,
                              size_t incoming_len, sq_buf_t *out, bool *changed);

/* Checks that a payload decodes as `type` without building the structure where it
 * can avoid it (LWW, PRIORITY, SETs: no allocation). 0 or exactly the error
 * sq_lattice_decode would return (except -ENOMEM). */
int sq_lattice_validate(sq_lattice_type_t type, const uint8_t *payload, size_t len);

/* An LWW timestamp as Anna makes it (PROTOCOL.md §2.2): now_ms * 10^k + id, where
 * 10^k is the smallest power of ten greater than id, starting at 10. Monotonic per
 * `last` slot: if the clock did not advance past *last, the next slot is used.
 * `last` may be NULL (no monotonic guarantee). Thread-safe when each thread passes
 * its own `last`. */
uint64_t sq_lww_timestamp(uint32_t id, uint64_t *last);

/* The LWW timestamp squall's own writers use (executors, supervisor, scheduler,
 * cache, Python client): Anna's format with the writer id folded to one digit,
 * now_ms * 10 + id % 10. Anna's variable scale lets a writer with a wide id win
 * against every later write of a narrow one (ms*100 + 12 outweighs ms'*10 + 3 for
 * centuries), so squall keeps all its writers on one scale, the one Anna's clients
 * with ids 0..9 use. Two writers in one millisecond with the same digit tie, and
 * the LWW merge breaks the tie by value bytes (docs/lattices.md). Monotonic per
 * `last` as sq_lww_timestamp. */
uint64_t sq_lww_writer_timestamp(uint32_t writer, uint64_t *last);

#endif
