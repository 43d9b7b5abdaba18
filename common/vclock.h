/* vclock: vector clocks (node id -> counter) as used by the causal lattices.
 *
 * An sq_vclock_t (lattice.h) is an array of entries sorted by node id (strcmp) with
 * unique ids. A missing node counts as 0, so canonical clocks hold no zero counters:
 * decode drops them, sq_vclock_copy/join drop them, and encode skips them, so a clock
 * built by hand with zero entries still encodes canonically.
 *
 * Two orders are used:
 *   - the causal partial order (sq_vclock_order): a <= b when every counter of a is
 *     <= the same node's counter in b; this decides which siblings survive a merge;
 *   - a total order (sq_vclock_cmp) only for sorting siblings canonically.
 *
 * Ownership: a clock owns its entries array and every node string (malloc'd); the
 * functions below never share memory between clocks.
 */
#ifndef SQ_VCLOCK_H
#define SQ_VCLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "lattice.h"

typedef enum {
  SQ_VC_EQUAL = 0,      /* same counters everywhere */
  SQ_VC_BEFORE = 1,     /* a < b: b strictly dominates a */
  SQ_VC_AFTER = 2,      /* a > b: a strictly dominates b */
  SQ_VC_CONCURRENT = 3, /* neither dominates */
} sq_vc_order_t;

/* Causal relation of two sorted clocks (zero counters count as absent). */
sq_vc_order_t sq_vclock_order(const sq_vclock_t *a, const sq_vclock_t *b);

/* Total order for canonical sorting: entries compared in turn by (node, counter), a
 * prefix first. <0, 0, >0. 0 exactly when sq_vclock_equal. */
int sq_vclock_cmp(const sq_vclock_t *a, const sq_vclock_t *b);

/* Structural equality (same entries). */
bool sq_vclock_equal(const sq_vclock_t *a, const sq_vclock_t *b);

/* Deep copy into *dst (overwritten, not freed), dropping zero counters.
 * 0 or -ENOMEM (then *dst is empty). */
int sq_vclock_copy(sq_vclock_t *dst, const sq_vclock_t *src);

/* *dst = pointwise max of a and b, freshly allocated (dst is overwritten, not freed;
 * it may not alias a or b). 0 or -ENOMEM (then *dst is empty). */
int sq_vclock_join(sq_vclock_t *dst, const sq_vclock_t *a, const sq_vclock_t *b);

/* Counter of `node`, 0 when absent. */
uint32_t sq_vclock_get(const sq_vclock_t *vc, const char *node);

/* Sets node's counter, inserting in order; counter 0 removes the entry.
 * 0 or -ENOMEM (clock unchanged). */
int sq_vclock_set(sq_vclock_t *vc, const char *node, uint32_t counter);

/* Releases entries and names and leaves an empty clock. Accepts NULL. */
void sq_vclock_free(sq_vclock_t *vc);

/* ---- wire helpers for the lattice codecs (not for general use) ------------------- */

/* A clock under construction from map entries in arbitrary order. Zero-init = empty. */
typedef struct {
  sq_vc_entry_t *e;
  size_t n, cap;
} lattice__vcb_t;

/* Parses one map<string,uint32> entry message and appends it. Node ids with a NUL
 * byte and counters above UINT32_MAX are SQ_EBADLATTICE; -ENOMEM. */
int lattice__vcb_add(lattice__vcb_t *b, const uint8_t *p, size_t len);

/* Sorts, merges duplicate ids by max, drops zeros; moves the result to *out and
 * leaves the builder empty. 0 or -ENOMEM (builder freed, *out empty). */
int lattice__vcb_finish(lattice__vcb_t *b, sq_vclock_t *out);

void lattice__vcb_free(lattice__vcb_t *b);

/* Decodes a message whose field `field` is a map<string,uint32> (SiblingClock,
 * KeyVersion's clock), skipping other fields except `keep` (a LEN field whose bytes
 * are stored in *kept / *kept_len when keep != 0; last one wins). */
int lattice__vclock_decode_msg(const uint8_t *p, size_t len, uint32_t field, uint32_t keep,
                               const uint8_t **kept, size_t *kept_len, sq_vclock_t *out);

/* Encoded size of the clock as repeated map entries of `field`, and the writer
 * (room reserved by the caller). Zero counters are skipped. */
size_t lattice__vclock_size(const sq_vclock_t *vc, uint32_t field);
void lattice__vclock_put(sq_buf_t *b, const sq_vclock_t *vc, uint32_t field);

#endif
