/* kvs_store: one worker thread's in-memory map from key to stored lattice.
 *
 * A store belongs to exactly one thread (shared-nothing: no locks). It keeps, for
 * each key, the lattice type and the canonical encoded payload (PROTOCOL.md §1.4),
 * because GETs vastly outnumber merges and a GET then costs no encoding at all.
 *
 * Layout: entries live in a dense array (append-only; the KVS has no DELETE), indexed
 * by an open-addressing table of (hash, entry index) with linear probing. The dense
 * array gives snapshots a cursor that stays valid while the table grows: entry i is
 * entry i forever. Each entry owns its key bytes (inline) and its payload buffer.
 *
 * Errors: -ENOMEM; SQ_ELATTICE when a PUT's type differs from the stored type;
 * lattice decode errors (SQ_EBADLATTICE, SQ_EUNKNOWNTYPE) for bad payloads.
 */
#ifndef KVS_STORE_H
#define KVS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lattice.h"

typedef struct kvs_store kvs_store_t;

typedef struct {
  const char *key;   /* not NUL-terminated; valid until the store is destroyed */
  size_t keylen;
  sq_lattice_type_t type;
  const uint8_t *payload; /* valid until the next merge into this key */
  size_t len;
} kvs_store_entry_t;

typedef struct {
  uint64_t keys;
  uint64_t payload_bytes; /* sum of stored payload sizes */
  uint64_t merges;        /* PUTs merged into an existing value */
} kvs_store_stats_t;

/* Creates an empty store. 0 or -ENOMEM. */
int kvs_store_create(kvs_store_t **out);

/* Frees the store and everything in it. Accepts NULL. */
void kvs_store_destroy(kvs_store_t *store);

/* A key with its length and hash, computed once by kvs_store_key() and handed to
 * every store call about it: the worker prefetches, looks up and merges each key of
 * a batch several times, and strlen + hash were a tenth of a GET's CPU. `key` is
 * borrowed (it must outlive the view). */
typedef struct {
  const char *key;
  size_t len;
  uint64_t hash;
} kvs_store_key_t;

/* Fills *k for `key` of `keylen` bytes. */
void kvs_store_key(kvs_store_key_t *k, const char *key, size_t keylen);

/* Looks a key up. Returns 0 and fills *entry, or SQ_EKEYDNE. */
int kvs_store_get(const kvs_store_t *store, const char *key, size_t keylen,
                  kvs_store_entry_t *entry);

/* kvs_store_get() of a key whose view is already made. */
int kvs_store_get_key(const kvs_store_t *store, const kvs_store_key_t *k,
                      kvs_store_entry_t *entry);

/* Merges `payload` (a lattice of `type`) into the key's value, creating the key when
 * absent. On success *changed (may be NULL) says whether the stored bytes changed.
 * When `validated` is false the payload is checked first (new keys store it as given
 * only after it decodes). Type mismatch -> SQ_ELATTICE, store unchanged. */
int kvs_store_merge(kvs_store_t *store, const char *key, size_t keylen,
                    sq_lattice_type_t type, const uint8_t *payload, size_t len,
                    bool *changed);

/* kvs_store_merge() of a key whose view is already made. */
int kvs_store_merge_key(kvs_store_t *store, const kvs_store_key_t *k, sq_lattice_type_t type,
                        const uint8_t *payload, size_t len, bool *changed);

/* Number of entries; entry indices run 0 .. count-1 and never move. */
size_t kvs_store_count(const kvs_store_t *store);

/* Reads entry i (0 <= i < count). */
void kvs_store_entry_at(const kvs_store_t *store, size_t i, kvs_store_entry_t *entry);

void kvs_store_stats(const kvs_store_t *store, kvs_store_stats_t *stats);

/* A hint, for a lookup of `key` soon after: step 0 asks the CPU to bring the key's
 * index slot into cache, step 1 its entry, step 2 the first line of its value, step 3
 * the rest of its value (up to KVS_STORE_PREFETCH_MAX bytes). Each step reads what
 * the previous one fetched, so run steps 0-2 over a whole batch of keys, one pass per
 * step, and step 3 a few keys ahead of their use: a whole value is many lines, and a
 * burst of them for every key of a batch stalls on the CPU's few outstanding misses.
 * Changes nothing; harmless for absent keys (it may fetch another key's entry). */
#define KVS_STORE_PREFETCH_MAX 4096
void kvs_store_prefetch(const kvs_store_t *store, const kvs_store_key_t *k, int step);

#endif
