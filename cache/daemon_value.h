/* daemon_value: how squall-cache turns a KVS lattice payload into a cached value, and
 * back (for merges).
 *
 * The KVS holds, for an object squall wrote, LWWValue{timestamp, value = serialized
 * Cloudburst Value{body = squall object blob (cache_blob.h), type}}; anything else is
 * just some lattice payload. The cache stores both as cache blobs, told apart by the
 * first byte of the blob's lattice metadata ("cache meta"), little-endian:
 *
 *   OBJECT (kind 1), blob lattice type = LWW, 16 + m bytes:
 *     u8 kind = 1 | u8 inner lattice type | u16 0 | u32 Value.type (serializer)
 *     | u64 LWW timestamp | m bytes: the inner blob's own lattice metadata
 *     pickle + buffers = the inner blob's (so NumPy buffers land 64-byte aligned in
 *     the cache and readers build arrays over shared memory, zero copy)
 *   RAW (kind 2), blob lattice type = the lattice's type, 8 bytes:
 *     u8 kind = 2 | 7 zero bytes
 *     pickle region = the whole lattice payload (PROTOCOL.md §1.4), no buffers
 *
 * A payload becomes OBJECT only when it round-trips exactly: the LWW value parses as
 * a Value whose body is a valid blob and re-serializing that Value gives the same
 * bytes; then cache_value_payload() rebuilds the identical LWW payload (timestamp +
 * value bytes), which LWW merges and tie-breaks need. Everything else is RAW.
 *
 * Stateless; the caller owns every buffer. Payloads come from the network and are
 * untrusted: validated before they are stored.
 */
#ifndef CACHE_DAEMON_VALUE_H
#define CACHE_DAEMON_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache_blob.h"
#include "cache_store.h"
#include "sq_buf.h"

#define CACHE_META_OBJECT 1
#define CACHE_META_RAW 2
#define CACHE_META_OBJECT_FIXED 16u
#define CACHE_META_RAW_LEN 8u

/* Validates `payload` as a lattice of `type` and stores it under key (replacing any
 * previous value) in the format above. *is_object (may be NULL) says which kind was
 * stored. 0, SQ_EUNKNOWNTYPE, SQ_EBADLATTICE, or the errors of cache_store_put_object
 * (SQ_ETOOBIG, -ENOSPC, -ENOMEM, SQ_ECLOSED ...). */
int cache_value_store(cache_store_t *s, const char *key, size_t klen,
                      sq_lattice_type_t type, const uint8_t *payload, size_t len,
                      bool *is_object);

/* Appends to *out the lattice payload a stored blob stands for (the exact bytes
 * cache_value_store was given, in canonical form). 0, SQ_ECORRUPT (meta is neither
 * kind, or inconsistent), -ENOMEM. *out unchanged on error. */
int cache_value_payload(const cache_blob_t *blob, sq_buf_t *out);

/* Reads the kind (CACHE_META_OBJECT / CACHE_META_RAW) of cache meta, 0 if neither. */
int cache_value_kind(const uint8_t *meta, size_t meta_len);

#endif
