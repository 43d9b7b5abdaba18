/* sched_pickle: find CloudburstReferences in a pickle without unpickling it.
 *
 * Cloudburst's scheduler unpickles every client argument to find references
 * (PROTOCOL.md §3.2, §5 item 36): anyone who reaches port 5002 runs code on the
 * scheduler. squall's scheduler only needs the keys of the references (for locality),
 * so it runs a tiny *symbolic* pickle machine instead: it understands the opcodes of
 * protocols 2-5 that build strings, numbers, tuples, lists, dicts, globals, NEWOBJ and
 * BUILD, and represents everything else as an opaque value. It never imports, calls or
 * constructs anything; the only global it recognises is
 *
 *     cloudburst.shared.reference CloudburstReference
 *
 * and an object of that class whose BUILD state is a dict yields its `key` (str) and
 * `deserialize` (bool, default false). A reference counts when it is the pickled value
 * itself, or a direct element of a pickled tuple or list (Cloudburst flattens tuple
 * arguments and batches lists).
 *
 * Invariants: reads only within [buf, buf + len); at most SCHED_PICKLE_MAX_VALUES
 * values, SCHED_PICKLE_MAX_MEMO memo slots and SCHED_PICKLE_MAX_STACK stack entries,
 * so work and memory are linear in len and bounded. Anything it does not understand
 * (protocol 0/1 text opcodes for objects, REDUCE, persistent ids, extension codes)
 * ends the scan with SQ_EUNSUPPORTED: the caller then treats the argument as holding
 * no reference, which costs only a locality hint (the executor resolves references
 * itself). Stateless and thread-safe.
 */
#ifndef SCHED_PICKLE_H
#define SCHED_PICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCHED_PICKLE_MAX_VALUES 65536
#define SCHED_PICKLE_MAX_MEMO 65536
#define SCHED_PICKLE_MAX_STACK 4096

/* One reference found. key points INTO the scanned buffer (not NUL-terminated) and is
 * valid as long as that buffer. */
typedef struct {
  const char *key;
  size_t key_len;
  bool deserialize;
} sched_pickle_ref_t;

/* Scans the pickle in buf[0..len) and stores up to max_refs references in refs (may
 * be NULL when max_refs is 0); *nrefs gets the number found (possibly more than
 * max_refs: only the first max_refs are stored). Returns 0 (a well-formed pickle the
 * scanner followed to STOP, with zero or more references), SQ_EPROTO (truncated or
 * malformed: stack underflow, bad memo index, missing STOP), SQ_EUNSUPPORTED (an
 * opcode it does not model), SQ_ETOOBIG (a bound above was hit), -ENOMEM. On error
 * *nrefs is 0. */
int sched_pickle_find_refs(const uint8_t *buf, size_t len, sched_pickle_ref_t *refs,
                           size_t max_refs, size_t *nrefs);

#endif
