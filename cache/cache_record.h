/* cache_record: the on-disk format of a node cache directory, shared by the writer
 * (cache_store.c) and the readers (cache_reader.c). Nothing outside cache/ includes this.
 *
 *   <dir>/data.mdb, lock.mdb   the LMDB environment (two named DBs)
 *        "values": key -> record     (one per cached value)
 *        "meta":   "format" -> u32 CACHE_FORMAT_VERSION
 *                  "next_segment" -> u64, next segment id (never reused: a reader's
 *                  mapping table is keyed by id, so an id names one content forever)
 *   <dir>/segments/<16 hex digits>   one large value each, a blob at offset 0,
 *                                    written once by the writer, never modified
 *   <dir>/writer.lock                flock()ed by the one live writer
 *
 * A record (LMDB value, untrusted like everything another process wrote):
 *   u32 magic "SQCR" | u8 kind | u8 0 | u16 lattice type | u64 blob_len
 *   kind INLINE : the blob itself follows (blob_len bytes)
 *   kind SEGMENT: u64 segment id | u32 meta_len | meta bytes (the lattice metadata,
 *                 so the writer can merge without mapping the segment)
 */
#ifndef CACHE_RECORD_H
#define CACHE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "cache_blob.h"

#define CACHE_FORMAT_VERSION 1u
#define CACHE_RECORD_MAGIC 0x52435153u /* "SQCR" */
#define CACHE_RECORD_HEADER 16u
#define CACHE_RECORD_SEG_FIXED (CACHE_RECORD_HEADER + 12u)
#define CACHE_RECORD_INLINE 1
#define CACHE_RECORD_SEGMENT 2
#define CACHE_DB_VALUES "values"
#define CACHE_DB_META "meta"
#define CACHE_SEGMENT_DIR "segments"
#define CACHE_PATH_MAX 4096

typedef struct {
  int kind;                       /* CACHE_RECORD_INLINE or CACHE_RECORD_SEGMENT */
  sq_lattice_type_t lattice_type;
  uint64_t blob_len;
  const uint8_t *blob;            /* INLINE: the blob bytes (unaligned) */
  uint64_t segment_id;            /* SEGMENT */
  cache_span_t meta;              /* SEGMENT: lattice metadata */
} cache_record_t;

/* Parses an LMDB value (untrusted). 0 or SQ_ECORRUPT. Pointers point into data. An
 * inline blob is not parsed here (cache_blob_parse does that once it is aligned). */
int cache_record_parse(const void *data, size_t len, cache_record_t *out);

/* Writes the 16-byte header. */
void cache_record_write_header(uint8_t *p, int kind, sq_lattice_type_t type,
                               uint64_t blob_len);

/* Size of a segment record with meta_len bytes of metadata. */
size_t cache_record_segment_size(size_t meta_len);

/* Writes a whole segment record into p (cache_record_segment_size() bytes). */
void cache_record_write_segment(uint8_t *p, sq_lattice_type_t type, uint64_t blob_len,
                                uint64_t id, const void *meta, size_t meta_len);

/* Formats <dir>/segments/<id> into buf. 0 or -ENAMETOOLONG. */
int cache_segment_path(const char *dir, uint64_t id, char *buf, size_t cap);

/* Parses a segment file name (exactly 16 lowercase hex digits). 0 or SQ_EINVAL. */
int cache_segment_name_parse(const char *name, uint64_t *id);

/* Maps an LMDB result code into the squall error space (0 stays 0). */
int cache_mdb_error(int rc);

#endif
