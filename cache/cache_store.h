/* cache_store: the writer side of the node cache (the squall-cache daemon's storage).
 *
 * One store per node, in one process: the only writer of the LMDB environment and of
 * the segment files in its directory (an flock on dir/writer.lock enforces it).
 * Layout and record format: cache_record.h. Placement:
 *   - a blob of at most `inline_max` bytes is stored inline in LMDB;
 *   - a larger blob gets its own segment file, written once and never modified, and
 *     LMDB keeps a small descriptor (segment id, blob size, lattice metadata).
 * Replacement and eviction commit the LMDB change first, then unlink the old segment:
 * a reader that still maps it keeps valid memory until it unmaps.
 *
 * Capacity: every value is charged (key + record + segment file rounded to pages)
 * against `budget_bytes`. A put that would exceed it first evicts least-recently-used
 * values (recency = puts, cache_store_get and cache_store_touch calls, in this
 * process). No reader can be hurt by eviction: inline values are copied out under a
 * read transaction, and segment mappings outlive the unlink, so "in use" never blocks
 * eviction. MDB_MAP_FULL never reaches the caller: the store clears stale reader
 * slots, grows the map (up to `map_size_max`, between transactions) or evicts, and
 * retries.
 *
 * Restart: cache_store_open reopens an existing directory and validates it: every
 * record must parse, inline blobs must parse, segment files must exist with the
 * recorded size; invalid entries are dropped, segment files without a descriptor
 * (a crash between writing the file and committing the descriptor) are deleted.
 * An environment LMDB cannot open is discarded and recreated empty. Reopening keeps
 * executors that hold the environment open working across a daemon restart; the
 * daemon must still revalidate freshness (updates pushed while it was down are lost).
 *
 * Threads: a store is used by one thread at a time. Errors are sticky: after an
 * LMDB failure that leaves the environment in doubt every call but close returns
 * SQ_ECLOSED.
 */
#ifndef CACHE_STORE_H
#define CACHE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache_blob.h"
#include "sq_buf.h"

#define CACHE_STORE_INLINE_MAX_DEFAULT (64u * 1024)
#define CACHE_STORE_MAP_SIZE_DEFAULT ((size_t)64 << 20)

typedef struct cache_store cache_store_t;

typedef struct {
  const char *dir;          /* required; created (mode 0700) if missing */
  uint64_t budget_bytes;    /* 0: a quarter of physical RAM */
  size_t inline_max;        /* 0: CACHE_STORE_INLINE_MAX_DEFAULT */
  size_t map_size;          /* initial LMDB map; 0: CACHE_STORE_MAP_SIZE_DEFAULT */
  size_t map_size_max;      /* 0: 2 * budget + 64 MiB */
  unsigned max_readers;     /* LMDB reader slots; 0: 1024 */
  bool discard;             /* true: delete any previous content and start empty */
} cache_store_config_t;

typedef struct {
  uint64_t values;          /* values cached */
  uint64_t inline_values;   /* of which inline */
  uint64_t bytes;           /* charged bytes */
  uint64_t budget;
  uint64_t evictions;       /* values evicted since open */
  uint64_t map_size;        /* current LMDB map size */
  uint64_t map_grows;       /* times the map was grown */
  uint64_t stale_readers;   /* reader slots cleared by mdb_reader_check since open */
  uint64_t orphans_removed; /* segment files collected since open */
  uint64_t dropped_invalid; /* invalid entries dropped at open */
} cache_store_stats_t;

/* Opens (or creates) the cache directory as its only writer: validates what is
 * there, collects orphan segments and clears stale reader slots. On success *out
 * owns the store. 0, SQ_ECONFIG (bad config), -EBUSY (another writer holds it),
 * -errno, SQ_ECORRUPT. */
int cache_store_open(const cache_store_config_t *cfg, cache_store_t **out);

/* Stores a blob (untrusted bytes, validated with cache_blob_parse) under key,
 * replacing any previous value. The blob is copied; the caller keeps it. 0,
 * SQ_EEMPTYKEY, SQ_ETOOBIG (key over LMDB's limit or value over the budget),
 * SQ_ECORRUPT (not a blob), -ENOSPC (tmpfs full), -ENOMEM, SQ_ECLOSED. */
int cache_store_put(cache_store_t *s, const void *key, size_t klen, const void *blob,
                    size_t len);

/* As cache_store_put, encoding obj straight into its destination (LMDB page or
 * segment mapping) without an intermediate copy. Errors also as cache_blob_size. */
int cache_store_put_object(cache_store_t *s, const void *key, size_t klen,
                           const cache_object_t *obj);

/* Appends a copy of the stored blob to *out and marks the key recently used. 0,
 * SQ_ENOTFOUND, SQ_ECORRUPT, -ENOMEM, SQ_ECLOSED. *out unchanged on error. */
int cache_store_get(cache_store_t *s, const void *key, size_t klen, sq_buf_t *out);

/* As cache_store_get, without changing recency (for merges: a pushed update or a
 * refetch is not a use of the value). */
int cache_store_read(cache_store_t *s, const void *key, size_t klen, sq_buf_t *out);

/* Lattice type and metadata (appended to *meta) of a stored value, for merges.
 * Does not change recency. 0, SQ_ENOTFOUND, SQ_ECORRUPT, -ENOMEM, SQ_ECLOSED. */
int cache_store_get_meta(cache_store_t *s, const void *key, size_t klen,
                         sq_lattice_type_t *type, sq_buf_t *meta);

/* Marks a key recently used (e.g. a hit an executor reported). 0 or SQ_ENOTFOUND. */
int cache_store_touch(cache_store_t *s, const void *key, size_t klen);

/* Removes a key (and unlinks its segment). 0, SQ_ENOTFOUND, SQ_ECLOSED, -errno. */
int cache_store_delete(cache_store_t *s, const void *key, size_t klen);

/* Evicts least-recently-used values until at most `target` bytes are charged. 0 or
 * an error as cache_store_delete. *evicted (may be NULL) gets the count. */
int cache_store_evict_to(cache_store_t *s, uint64_t target, size_t *evicted);

/* Periodic upkeep: clears reader slots of dead processes (mdb_reader_check). *dead
 * (may be NULL) gets the number cleared. 0 or SQ_ECLOSED / LMDB error. */
int cache_store_check_readers(cache_store_t *s, int *dead);

/* Deletes segment files that no descriptor references. Done by open; callable any
 * time. *removed (may be NULL) gets the count. 0 or -errno. */
int cache_store_collect_orphans(cache_store_t *s, size_t *removed);

/* Calls fn for every cached key (e.g. to resubscribe after a restart), in key
 * order, stopping early when fn returns non-zero (that value is returned). */
int cache_store_foreach_key(cache_store_t *s,
                            int (*fn)(void *arg, const void *key, size_t klen),
                            void *arg);

void cache_store_stats(const cache_store_t *s, cache_store_stats_t *out);

/* Defers the unlinking of segment files the store no longer references (evicted,
 * replaced, deleted values) until cache_store_flush_unlinks: unlinking a large
 * tmpfs file frees its pages, ~8 ms for 80 MB, which a caller answering a request
 * would rather do after answering. Their bytes stay allocated until then (they
 * no longer count against the budget); segment ids are never reused, and an
 * unflushed file left by a crash is an orphan, collected at open. false flushes
 * what is queued and unlinks at once from then on (the default). */
void cache_store_defer_unlinks(cache_store_t *s, bool defer);

/* Unlinks the segment files queued while deferred; returns how many. */
size_t cache_store_flush_unlinks(cache_store_t *s);

/* Closes the store (readers keep working on what is stored; queued unlinks are
 * done). Accepts NULL. */
void cache_store_close(cache_store_t *s);

#endif
