/* store_read: the writer's own reads, upkeep and statistics (contracts in cache_store.h).
 *
 * The writer reads through short read transactions of its own; it never maps its
 * segments for long (a get copies the blob out, which is what the daemon needs to
 * answer a remote request or to merge).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sq_error.h"
#include "cache_store_int.h"

/* Looks the record up and hands it to fn inside the read transaction. */
static int cache__with_record(cache_store_t *s, const void *key, size_t klen,
                              int (*fn)(cache_store_t *, const cache_record_t *, void *),
                              void *arg) {
  MDB_txn *txn = NULL;
  MDB_val k = {.mv_size = klen, .mv_data = (void *)key}, v;
  cache_record_t rec;
  if (s->broken) return SQ_ECLOSED;
  if (klen == 0) return SQ_EEMPTYKEY;
  if (klen > (size_t)mdb_env_get_maxkeysize(s->env)) return SQ_ENOTFOUND;
  int rc = cache_mdb_error(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));
  if (rc) return cache__fail(s, rc);
  rc = cache_mdb_error(mdb_get(txn, s->values, &k, &v));
  if (rc == 0) rc = cache_record_parse(v.mv_data, v.mv_size, &rec);
  if (rc == 0) rc = fn(s, &rec, arg);
  mdb_txn_abort(txn);
  return rc;
}

/* Appends segment `id` (len bytes) to out. */
static int cache__segment_copy(cache_store_t *s, uint64_t id, uint64_t len, sq_buf_t *out) {
  char path[CACHE_PATH_MAX];
  int rc = cache_segment_path(s->dir, id, path, sizeof path);
  int fd = rc ? -1 : open(path, O_RDONLY | O_CLOEXEC);
  if (rc) return rc;
  if (fd < 0) return -errno;
  void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return -errno;
  cache_blob_t blob;
  rc = cache_blob_parse(map, len, &blob);
  if (rc == 0) rc = sq_buf_append(out, map, len);
  munmap(map, len);
  return rc;
}

static int cache__get_fn(cache_store_t *s, const cache_record_t *rec, void *arg) {
  if (rec->kind == CACHE_RECORD_INLINE) return sq_buf_append(arg, rec->blob, rec->blob_len);
  return cache__segment_copy(s, rec->segment_id, rec->blob_len, arg);
}

int cache_store_read(cache_store_t *s, const void *key, size_t klen, sq_buf_t *out) {
  size_t before = out->len;
  int rc = cache__with_record(s, key, klen, cache__get_fn, out);
  if (rc) out->len = before;
  return rc;
}

int cache_store_get(cache_store_t *s, const void *key, size_t klen, sq_buf_t *out) {
  int rc = cache_store_read(s, key, klen, out);
  if (rc == 0) cache_store_touch(s, key, klen);
  return rc;
}

typedef struct {
  sq_lattice_type_t *type;
  sq_buf_t *meta;
} cache__meta_arg_t;

static int cache__meta_fn(cache_store_t *s, const cache_record_t *rec, void *arg) {
  cache__meta_arg_t *m = arg;
  cache_blob_t blob;
  cache_span_t meta = rec->meta;
  (void)s;
  if (rec->kind == CACHE_RECORD_INLINE) {
    int rc = cache_blob_parse(rec->blob, rec->blob_len, &blob);
    if (rc) return rc;
    meta = blob.meta;
  }
  *m->type = rec->lattice_type;
  return sq_buf_append(m->meta, meta.data, meta.len);
}

int cache_store_get_meta(cache_store_t *s, const void *key, size_t klen,
                         sq_lattice_type_t *type, sq_buf_t *meta) {
  cache__meta_arg_t arg = {type, meta};
  return cache__with_record(s, key, klen, cache__meta_fn, &arg);
}

int cache_store_touch(cache_store_t *s, const void *key, size_t klen) {
  cache__entry_t *e = cache__index_find(&s->index, key, klen);
  if (!e) return SQ_ENOTFOUND;
  cache__index_touch(&s->index, e);
  return 0;
}

int cache_store_check_readers(cache_store_t *s, int *dead) {
  int n = 0;
  if (dead) *dead = 0;
  if (s->broken) return SQ_ECLOSED;
  int rc = cache_mdb_error(mdb_reader_check(s->env, &n));
  if (rc) return cache__fail(s, rc);
  s->stats.stale_readers += (uint64_t)n;
  if (dead) *dead = n;
  return 0;
}

int cache_store_foreach_key(cache_store_t *s,
                            int (*fn)(void *arg, const void *key, size_t klen),
                            void *arg) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  if (s->broken) return SQ_ECLOSED;
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
  if (rc == 0) rc = mdb_cursor_open(txn, s->values, &cur);
  if (rc) goto out;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    int urc = fn(arg, k.mv_data, k.mv_size);
    if (urc) {
      mdb_cursor_close(cur);
      mdb_txn_abort(txn);
      return urc;
    }
  }
  if (rc == MDB_NOTFOUND) rc = 0;
out:
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  return cache_mdb_error(rc);
}

void cache_store_stats(const cache_store_t *s, cache_store_stats_t *out) {
  MDB_envinfo info;
  *out = s->stats;
  out->values = s->index.count;
  out->inline_values = 0;
  for (const cache__entry_t *e = s->index.head; e; e = e->next)
    out->inline_values += e->segment_id == 0;
  out->bytes = s->bytes;
  out->budget = s->cfg.budget_bytes;
  out->map_size = mdb_env_info(s->env, &info) == 0 ? info.me_mapsize : 0;
}

void cache_store_close(cache_store_t *s) {
  if (!s) return;
  cache_store_flush_unlinks(s);
  free(s->unlinks);
  if (s->env) mdb_env_close(s->env);
  cache__index_free(&s->index);
  if (s->lock_fd >= 0) close(s->lock_fd);
  free(s);
}
