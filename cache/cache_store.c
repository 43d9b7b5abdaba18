/* store: opening, validating and reading the cache writer's environment.
 *
 * Open is a small state machine:
 *
 *   lock dir (flock writer.lock, else -EBUSY)
 *     -> [discard requested]  remove data.mdb, lock.mdb and the segments
 *     -> open env  --(LMDB says invalid/corrupt/other format)--> discard, open again
 *     -> load: one write txn walks "values": bad records are deleted, good ones
 *        enter the index (charge recomputed); next_segment = max(stored, ids + 1)
 *     -> collect orphan segments, clear stale reader slots -> ready
 *
 * Why reopen rather than always discard: executors keep the environment open across
 * a daemon restart and go on hitting it; a discarded directory would leave them
 * reading an unlinked file nobody updates. LMDB's copy-on-write commits make a
 * crashed writer's environment consistent, and with MDB_NOSYNC on tmpfs nothing is
 * lost to a process crash (the page cache is the storage). See docs/cache.md.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sq_error.h"
#include "cache_store_int.h"

static int cache__config(const cache_store_config_t *in, cache_store_t *s) {
  if (!in || !in->dir || !in->dir[0] || strlen(in->dir) >= CACHE_PATH_MAX - 64)
    return SQ_ECONFIG;
  s->cfg = *in;
  strcpy(s->dir, in->dir);
  s->cfg.dir = s->dir;
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
  s->page = psz > 0 ? (size_t)psz : 4096;
  if (!s->cfg.budget_bytes) s->cfg.budget_bytes = (uint64_t)(pages > 0 ? pages : 1) * s->page / 4;
  if (!s->cfg.inline_max) s->cfg.inline_max = CACHE_STORE_INLINE_MAX_DEFAULT;
  if (!s->cfg.map_size) s->cfg.map_size = CACHE_STORE_MAP_SIZE_DEFAULT;
  if (!s->cfg.map_size_max) s->cfg.map_size_max = 2 * s->cfg.budget_bytes + ((size_t)64 << 20);
  if (!s->cfg.max_readers) s->cfg.max_readers = 1024;
  if (s->cfg.map_size > s->cfg.map_size_max) return SQ_ECONFIG;
  return 0;
}

/* Removes the environment files and every segment. */
static int cache__discard(cache_store_t *s) {
  char path[CACHE_PATH_MAX + 32]; /* dir is shorter than CACHE_PATH_MAX - 64 */
  static const char *const files[] = {"data.mdb", "lock.mdb"};
  for (size_t i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/%s", s->dir, files[i]);
    if (unlink(path) < 0 && errno != ENOENT) return -errno;
  }
  cache__index_free(&s->index);
  s->bytes = 0;
  return cache_store_collect_orphans(s, NULL);
}

static int cache__env_open(cache_store_t *s) {
  int rc = mdb_env_create(&s->env);
  if (rc == 0) rc = mdb_env_set_maxdbs(s->env, 4);
  if (rc == 0) rc = mdb_env_set_maxreaders(s->env, s->cfg.max_readers);
  if (rc == 0) rc = mdb_env_set_mapsize(s->env, s->cfg.map_size);
  /* tmpfs: syncing buys nothing, and a process crash loses nothing unsynced. */
  if (rc == 0) rc = mdb_env_open(s->env, s->dir, MDB_NOSYNC | MDB_NOMETASYNC |
                                 MDB_NORDAHEAD | MDB_NOTLS, 0644);
  if (rc && s->env) {
    mdb_env_close(s->env);
    s->env = NULL;
  }
  return cache_mdb_error(rc);
}

/* Checks one stored record; fills *seg with its segment id (0 inline). */
static int cache__validate(cache_store_t *s, MDB_val *v, uint64_t *seg, size_t *rec_len) {
  cache_record_t rec;
  cache_blob_t blob;
  char path[CACHE_PATH_MAX];
  struct stat st;
  int rc = cache_record_parse(v->mv_data, v->mv_size, &rec);
  *seg = 0;
  *rec_len = v->mv_size;
  if (rc) return rc;
  if (rec.kind == CACHE_RECORD_INLINE) {
    rc = cache_blob_parse(rec.blob, rec.blob_len, &blob);
    return rc ? rc : (blob.lattice_type == rec.lattice_type ? 0 : SQ_ECORRUPT);
  }
  if (rec.segment_id == 0 || cache_segment_path(s->dir, rec.segment_id, path, sizeof path) ||
      stat(path, &st) < 0 || (uint64_t)st.st_size != rec.blob_len)
    return SQ_ECORRUPT;
  *seg = rec.segment_id;
  return 0;
}

/* Walks "values": drops invalid records, indexes the rest. Runs inside txn. */
static int cache__load(cache_store_t *s, MDB_txn *txn) {
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  int rc = mdb_cursor_open(txn, s->values, &cur), mrc;
  if (rc) return cache_mdb_error(rc);
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    uint64_t seg;
    size_t rec_len;
    if (cache__validate(s, &v, &seg, &rec_len) != 0) {
      s->stats.dropped_invalid++;
      if ((rc = cache_mdb_error(mdb_cursor_del(cur, 0)))) break;
      continue;
    }
    uint64_t blob_len = 0;
    if (seg) memcpy(&blob_len, (uint8_t *)v.mv_data + 8, 8);
    uint64_t charge = cache__charge(s, k.mv_size, rec_len, blob_len);
    if ((rc = cache__index_add(&s->index, k.mv_data, k.mv_size, charge, seg, NULL))) break;
    s->bytes += charge;
    if (seg >= s->next_segment) s->next_segment = seg + 1;
  }
  mdb_cursor_close(cur);
  if (rc == 0 && mrc != MDB_NOTFOUND) rc = cache_mdb_error(mrc);
  return rc;
}

/* Opens the DBs, checks the format, loads the index; one write transaction. */
static int cache__env_load(cache_store_t *s) {
  MDB_txn *txn = NULL;
  uint32_t fmt = CACHE_FORMAT_VERSION;
  MDB_val fk = {6, "format"}, fv = {sizeof fmt, &fmt}, nk = {12, "next_segment"}, nv;
  int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
  if (rc == 0) rc = mdb_dbi_open(txn, CACHE_DB_VALUES, MDB_CREATE, &s->values);
  if (rc == 0) rc = mdb_dbi_open(txn, CACHE_DB_META, MDB_CREATE, &s->meta);
  if (rc == 0) rc = mdb_put(txn, s->meta, &fk, &fv, MDB_NOOVERWRITE);
  if (rc == MDB_KEYEXIST)
    rc = (fv.mv_size == 4 && memcmp(fv.mv_data, &fmt, 4) == 0) ? 0 : MDB_INVALID;
  s->next_segment = 1;
  if (rc == 0 && mdb_get(txn, s->meta, &nk, &nv) == 0 && nv.mv_size == 8)
    memcpy(&s->next_segment, nv.mv_data, 8);
  rc = cache_mdb_error(rc);
  if (rc == 0) rc = cache__load(s, txn);
  if (rc == 0) rc = cache_mdb_error(mdb_txn_commit(txn));
  else if (txn) mdb_txn_abort(txn);
  if (s->next_segment == 0) s->next_segment = 1;
  return rc;
}

static int cache__lock_dir(cache_store_t *s) {
  char path[CACHE_PATH_MAX + 32]; /* dir is shorter than CACHE_PATH_MAX - 64 */
  if (mkdir(s->dir, 0700) < 0 && errno != EEXIST) return -errno;
  snprintf(path, sizeof path, "%s/" CACHE_SEGMENT_DIR, s->dir);
  if (mkdir(path, 0755) < 0 && errno != EEXIST) return -errno;
  snprintf(path, sizeof path, "%s/writer.lock", s->dir);
  s->lock_fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (s->lock_fd < 0) return -errno;
  if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) return errno == EWOULDBLOCK ? -EBUSY : -errno;
  return 0;
}

int cache_store_open(const cache_store_config_t *cfg, cache_store_t **out) {
  cache_store_t *s = calloc(1, sizeof *s);
  int rc;
  *out = NULL;
  if (!s) return -ENOMEM;
  s->lock_fd = -1;
  if ((rc = cache__config(cfg, s)) || (rc = cache__lock_dir(s))) goto out;
  if (cfg->discard && (rc = cache__discard(s))) goto out;
  rc = cache__env_open(s);
  if (rc == 0) rc = cache__env_load(s);
  if (rc == SQ_ECORRUPT) { /* not an environment we can trust: start empty */
    mdb_env_close(s->env);
    s->env = NULL;
    if ((rc = cache__discard(s)) || (rc = cache__env_open(s))) goto out;
    rc = cache__env_load(s);
  }
  if (rc == 0) rc = cache_store_collect_orphans(s, NULL);
  if (rc == 0) rc = cache_store_check_readers(s, NULL);
  if (rc) goto out;
  *out = s;
  s = NULL;
out:
  cache_store_close(s);
  return rc;
}

static int cache__cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int cache_store_collect_orphans(cache_store_t *s, size_t *removed) {
  char path[CACHE_PATH_MAX + 32]; /* dir is shorter than CACHE_PATH_MAX - 64 */
  size_t n = 0, nids = 0;
  struct dirent *de;
  DIR *d = NULL;
  uint64_t *ids = malloc((s->index.count + 1) * sizeof *ids);
  int rc = 0;
  if (!ids) return -ENOMEM;
  for (cache__entry_t *e = s->index.head; e; e = e->next)
    if (e->segment_id) ids[nids++] = e->segment_id;
  qsort(ids, nids, sizeof *ids, cache__cmp_u64);
  snprintf(path, sizeof path, "%s/" CACHE_SEGMENT_DIR, s->dir);
  if (!(d = opendir(path))) {
    rc = -errno;
    goto out;
  }
  while ((de = readdir(d))) {
    uint64_t id;
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    if (cache_segment_name_parse(de->d_name, &id) == 0 &&
        bsearch(&id, ids, nids, sizeof *ids, cache__cmp_u64))
      continue;
    if (unlinkat(dirfd(d), de->d_name, 0) == 0) n++;
  }
  s->stats.orphans_removed += n;
out:
  if (d) closedir(d);
  free(ids);
  if (removed) *removed = n;
  return rc;
}
