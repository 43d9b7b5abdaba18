/* cache_blob: the "squall object blob", the byte form of one cached value.
 *
 * A cached value is a pickle protocol 5 stream plus its out-of-band buffers, and the
 * lattice it came from (type + the metadata a merge needs, e.g. an LWW timestamp).
 * The blob lays them out so that a reader can hand Python views without copying:
 *
 *   0    +------------------------------------------+
 *        | header (48 bytes, little-endian)          |  magic "SQOB", version 1,
 *        |                                           |  flags, lattice type, sizes
 *   48   | lattice metadata        [meta_len]        |
 *        | buffer table  nbuffers x {u64 off, u64 len}  (off relative to region)
 *        | pickle stream           [pickle_len]      |
 *        | zero padding to a multiple of 64          |
 *   R    +------------------------------------------+  R = region_off, R % 64 == 0
 *        | buffer 0 at R + 0                         |
 *        | zero padding to a multiple of 64          |
 *        | buffer 1 at R + off1 (off1 % 64 == 0) ... |
 *        +------------------------------------------+  total_len
 *
 * Invariant (checked by parse): the layout is canonical. region_off is the pickle end
 * rounded up to 64; buffer i starts at the end of buffer i-1 rounded up to 64; the
 * blob ends exactly at the end of the last buffer (or at region_off with none). So
 * when the blob starts 64-byte aligned in memory every buffer is 64-byte aligned (a
 * NumPy float64 array then sits aligned in shared memory), and one blob has exactly
 * one valid encoding.
 *
 * Blobs come from the network and from shared memory another process writes: parse
 * treats every byte as untrusted (no overflow, no read outside [data, data+len)).
 * Nothing here allocates; parse results point into the caller's bytes.
 */
#ifndef CACHE_BLOB_H
#define CACHE_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "lattice.h"

#define CACHE_BLOB_MAGIC 0x424F5153u /* "SQOB" read as a little-endian u32 */
#define CACHE_BLOB_VERSION 1
#define CACHE_BLOB_ALIGN 64
#define CACHE_BLOB_HEADER_SIZE 48
#define CACHE_BLOB_MAX_META (64u * 1024)           /* lattice metadata bytes */
#define CACHE_BLOB_MAX_BUFFERS 65536u              /* out-of-band buffers */
#define CACHE_BLOB_MAX_SIZE ((uint64_t)1 << 40)    /* whole blob, 1 TiB */

/* A borrowed byte range. */
typedef struct {
  const uint8_t *data;
  size_t len;
} cache_span_t;

/* What a caller wants stored: every pointer is borrowed for the call only. */
typedef struct {
  sq_lattice_type_t lattice_type; /* one of the six storable types */
  const void *meta;               /* lattice metadata, opaque here; may be NULL if 0 */
  size_t meta_len;
  const void *pickle;             /* pickle protocol 5 stream */
  size_t pickle_len;
  const cache_span_t *buffers;    /* out-of-band buffers, in pickle order */
  size_t nbuffers;
} cache_object_t;

/* A parsed blob. Every pointer points into the bytes given to cache_blob_parse and
 * lives as long as they do. Read buffers with cache_blob_buffer(). */
typedef struct {
  sq_lattice_type_t lattice_type;
  cache_span_t meta;
  cache_span_t pickle;
  uint32_t nbuffers;
  const uint8_t *table;  /* raw buffer table (validated), may be unaligned */
  const uint8_t *region; /* start of the buffer region */
  size_t region_len;
  size_t total_len;
} cache_blob_t;

/* Computes the encoded size of `obj` into *size. 0, SQ_EUNKNOWNTYPE (lattice type not
 * storable), SQ_ETOOBIG (meta, buffer count or total above the limits), SQ_EINVAL
 * (NULL pointer with a non-zero length). */
int cache_blob_size(const cache_object_t *obj, size_t *size);

/* Encodes `obj` into dst, which must be exactly cache_blob_size() bytes (dst_len);
 * padding is zeroed. dst needs no alignment, but buffers are aligned in memory only
 * when dst is 64-byte aligned. 0, the errors of cache_blob_size, or SQ_EINVAL when
 * dst_len is not the encoded size. dst is unspecified on error. */
int cache_blob_encode(const cache_object_t *obj, void *dst, size_t dst_len);

/* Writes the blob of `obj` (size bytes, which must be cache_blob_size()) to fd from
 * offset 0 with pwritev: the same bytes as cache_blob_encode, without staging them in
 * memory (only the head -- header, metadata, buffer table -- is built in a temporary
 * buffer). 0, the errors of cache_blob_size, SQ_EINVAL (size mismatch, fd < 0),
 * -ENOMEM, or -errno of the write (-ENOSPC on a full tmpfs). The file's bytes are
 * unspecified on error. */
int cache_blob_write_fd(const cache_object_t *obj, int fd, size_t size);

/* Parses and validates len bytes at data (untrusted) into *out. 0, or SQ_ECORRUPT
 * for anything that is not a canonical version-1 blob of exactly len bytes
 * (SQ_EUNKNOWNTYPE for a lattice type outside the storable ones). *out is
 * unspecified on error. */
int cache_blob_parse(const void *data, size_t len, cache_blob_t *out);

/* Buffer i (i < blob->nbuffers, a programming error otherwise) of a parsed blob. */
cache_span_t cache_blob_buffer(const cache_blob_t *blob, uint32_t i);

/* Fills a cache_object_t that re-encodes to the same blob, using `spans` (room for
 * blob->nbuffers entries, caller-owned) for the buffer list. Used to copy or rewrite. */
void cache_blob_to_object(const cache_blob_t *blob, cache_span_t *spans,
                          cache_object_t *obj);

#endif
