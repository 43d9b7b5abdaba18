/* cache_reader: the read side of the node cache, linked by executors and _squall.
 *
 * An executor opens the node's cache directory read-only and resolves keys into
 * views: the pickle stream, the out-of-band buffers and the lattice metadata of the
 * stored blob (cache_blob.h). Resolution never blocks on the writer and a view never pins
 * an LMDB snapshot:
 *   - small values (stored inline in LMDB) are copied out, into a 64-byte aligned
 *     private buffer, under one short read transaction;
 *   - large values live in segment files; one short read transaction fetches the
 *     descriptor, then the segment is mapped read-only (or an existing mapping is
 *     reused) and the view points straight into the shared mapping: no byte is copied.
 *     The writer may unlink the segment (eviction, replacement) at any time; the
 *     mapping stays valid until the last view over it is released (POSIX).
 *
 * Threads: a cache_reader_t and its views belong to one thread at a time (the
 * executor thread); open one reader per thread otherwise. LMDB runs with MDB_NOTLS, so
 * the reader's one read transaction is reset after each lookup and renewed by the
 * next, keeping the reader slot but no snapshot.
 * Mappings: the reader keeps a table segment id -> mapping with a count of views.
 * A mapping no view uses stays cached (up to CACHE_READER_IDLE_MAX of them) so a
 * repeated lookup costs no mmap; cache_reader_trim() drops idle mappings whose
 * segment was unlinked, which returns their memory to tmpfs.
 */
#ifndef CACHE_READER_H
#define CACHE_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache_blob.h"

#define CACHE_READER_IDLE_MAX 32

typedef struct cache_reader cache_reader_t;

/* A resolved value. Every pointer stays valid until cache_view_release(), whatever
 * the writer does meanwhile; the memory is read-only. */
typedef struct {
  sq_lattice_type_t lattice_type;
  cache_span_t meta;             /* lattice metadata */
  cache_span_t pickle;           /* pickle protocol 5 stream */
  size_t nbuffers;
  const cache_span_t *buffers;   /* each buffer's address is 64-byte aligned */
  bool zero_copy;                /* true: points into a shared segment mapping */
} cache_view_t;

/* Opens the cache directory `dir` (which the writer created) read-only. The process
 * needs write access to dir/lock.mdb (LMDB keeps reader slots there). On success
 * *out owns the reader (close with cache_reader_close). 0, SQ_ENOTFOUND (no cache
 * environment in dir), -errno, SQ_ECORRUPT. */
int cache_reader_open(const char *dir, cache_reader_t **out);

/* Resolves `key` into *view (caller releases it with cache_view_release). 0,
 * SQ_ENOTFOUND (not cached), SQ_EEMPTYKEY, SQ_ETOOBIG (key longer than LMDB allows),
 * SQ_ECORRUPT (the stored bytes or segment do not parse), -ENOMEM, -errno. On error
 * *view is NULL. */
int cache_reader_lookup(cache_reader_t *r, const void *key, size_t klen,
                        cache_view_t **view);

/* True when key has a record (nothing is read or mapped: one short read
 * transaction); false when it has none or the lookup failed. */
bool cache_reader_contains(cache_reader_t *r, const void *key, size_t klen);

/* Releases a view. Accepts NULL. May be called after cache_reader_close(). */
void cache_view_release(cache_view_t *view);

/* Unmaps idle mappings whose segment file is gone; returns how many. */
size_t cache_reader_trim(cache_reader_t *r);

/* Number of segment mappings held (in use or idle). */
size_t cache_reader_mappings(const cache_reader_t *r);

/* Closes the reader, releasing its LMDB slot and idle mappings. Views still out stay
 * valid; their mappings go when they are released. Accepts NULL. */
void cache_reader_close(cache_reader_t *r);

#endif
