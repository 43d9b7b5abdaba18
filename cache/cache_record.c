/* cache_record: LMDB records, segment names and LMDB error mapping (see cache_record.h). */
#include "cache_record.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>

#include "sq_error.h"

int cache_record_parse(const void *data, size_t len, cache_record_t *out) {
  const uint8_t *p = data;
  uint32_t magic;
  uint16_t type;
  if (!p || len < CACHE_RECORD_HEADER) return SQ_ECORRUPT;
  memcpy(&magic, p, 4);
  memcpy(&type, p + 6, 2);
  memcpy(&out->blob_len, p + 8, 8);
  if (magic != CACHE_RECORD_MAGIC || p[5] != 0 || !sq_lattice_type_valid(type))
    return SQ_ECORRUPT;
  out->kind = p[4];
  out->lattice_type = (sq_lattice_type_t)type;
  if (out->kind == CACHE_RECORD_INLINE) {
    if (out->blob_len != len - CACHE_RECORD_HEADER) return SQ_ECORRUPT;
    out->blob = p + CACHE_RECORD_HEADER;
    out->segment_id = 0;
    out->meta = (cache_span_t){NULL, 0};
    return 0;
  }
  if (out->kind != CACHE_RECORD_SEGMENT || len < CACHE_RECORD_SEG_FIXED) return SQ_ECORRUPT;
  uint32_t meta_len;
  memcpy(&out->segment_id, p + CACHE_RECORD_HEADER, 8);
  memcpy(&meta_len, p + CACHE_RECORD_HEADER + 8, 4);
  if (meta_len != len - CACHE_RECORD_SEG_FIXED || out->blob_len < CACHE_BLOB_HEADER_SIZE ||
      out->blob_len > CACHE_BLOB_MAX_SIZE)
    return SQ_ECORRUPT;
  out->blob = NULL;
  out->meta = (cache_span_t){p + CACHE_RECORD_SEG_FIXED, meta_len};
  return 0;
}

void cache_record_write_header(uint8_t *p, int kind, sq_lattice_type_t type,
                               uint64_t blob_len) {
  uint32_t magic = CACHE_RECORD_MAGIC;
  uint16_t t = (uint16_t)type;
  memcpy(p, &magic, 4);
  p[4] = (uint8_t)kind;
  p[5] = 0;
  memcpy(p + 6, &t, 2);
  memcpy(p + 8, &blob_len, 8);
}

size_t cache_record_segment_size(size_t meta_len) {
  return CACHE_RECORD_SEG_FIXED + meta_len;
}

void cache_record_write_segment(uint8_t *p, sq_lattice_type_t type, uint64_t blob_len,
                                uint64_t id, const void *meta, size_t meta_len) {
  uint32_t ml = (uint32_t)meta_len;
  cache_record_write_header(p, CACHE_RECORD_SEGMENT, type, blob_len);
  memcpy(p + CACHE_RECORD_HEADER, &id, 8);
  memcpy(p + CACHE_RECORD_HEADER + 8, &ml, 4);
  if (meta_len) memcpy(p + CACHE_RECORD_SEG_FIXED, meta, meta_len);
}

int cache_segment_path(const char *dir, uint64_t id, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "%s/" CACHE_SEGMENT_DIR "/%016llx", dir,
                   (unsigned long long)id);
  return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

int cache_segment_name_parse(const char *name, uint64_t *id) {
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = name[i];
    if (c >= '0' && c <= '9') v = v << 4 | (uint64_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v = v << 4 | (uint64_t)(c - 'a' + 10);
    else return SQ_EINVAL;
  }
  if (name[16] != '\0') return SQ_EINVAL;
  *id = v;
  return 0;
}

int cache_mdb_error(int rc) {
  switch (rc) {
  case MDB_SUCCESS: return 0;
  case MDB_NOTFOUND: return SQ_ENOTFOUND;
  case MDB_KEYEXIST: return SQ_EEXISTS;
  case MDB_MAP_FULL: return -ENOSPC;
  case MDB_READERS_FULL: return -EUSERS;
  case MDB_BAD_VALSIZE: return SQ_ETOOBIG;
  case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: case MDB_INVALID:
  case MDB_VERSION_MISMATCH: case MDB_PANIC: return SQ_ECORRUPT;
  default: return rc > 0 ? -rc : SQ_EINVAL;
  }
}
