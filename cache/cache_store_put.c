/* store_put: writes, eviction and MDB_MAP_FULL handling of the cache writer.
 *
 * A put runs in this order, so that a crash at any point leaves either the old or
 * the new value reachable and at worst an orphan segment file (collected at open):
 *
 *   1. make room: evict LRU victims (own committed transaction) until the new charge
 *      fits the budget;
 *   2. large value: create segments/<id> (O_EXCL) and write the blob into it with
 *      pwritev straight from the caller's pieces (one copy; ENOSPC is an error of the
 *      write, never a SIGBUS; no mapping, so no page faults and no munmap; no fsync:
 *      the directory is on tmpfs);
 *   3. one write transaction: bump "next_segment", put the record (MDB_RESERVE, the
 *      blob or descriptor is encoded straight into the LMDB page), commit;
 *      on MDB_MAP_FULL: abort, clear stale readers, grow the map or evict, retry;
 *   4. after the commit: unlink the replaced segment, update the index.
 *
 * No write transaction is open between calls, so mdb_env_set_mapsize is always legal.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sq_error.h"
#include "cache_store_int.h"

#define CACHE__PUT_ATTEMPTS 64
#define CACHE__FILL_FAILED (-1) /* not an LMDB code: those are >= 0 or <= -30799 */

typedef int (*cache__fill_fn)(void *arg, void *dst, size_t len);
typedef int (*cache__write_fn)(void *arg, int fd, size_t len);

typedef struct {
  const void *key;
  size_t klen;
  sq_lattice_type_t type;
  cache_span_t meta;
  size_t blob_len;
  cache__fill_fn fill;   /* inline: encode into the reserved LMDB record */
  cache__write_fn write; /* segment: write the blob to the new file */
  void *arg;
  int fill_rc;
} cache__put_t;

int cache__fail(cache_store_t *s, int rc) {
  if (rc == SQ_ECORRUPT || rc == -EIO) s->broken = rc;
  return rc;
}

uint64_t cache__charge(const cache_store_t *s, size_t klen, size_t record_len,
                       uint64_t segment_len) {
  uint64_t pages = (segment_len + s->page - 1) / s->page * s->page;
  return klen + record_len + pages + sizeof(cache__entry_t);
}

static void cache__segment_unlink_now(cache_store_t *s, uint64_t id) {
  char path[CACHE_PATH_MAX];
  if (cache_segment_path(s->dir, id, path, sizeof path) == 0) unlink(path);
}

void cache__segment_unlink(cache_store_t *s, uint64_t id) {
  if (s->defer_unlinks && s->nunlinks == s->capunlinks) {
    size_t cap = s->capunlinks ? s->capunlinks * 2 : 16;
    uint64_t *q = realloc(s->unlinks, cap * sizeof *q);
    if (q) {
      s->unlinks = q;
      s->capunlinks = cap;
    }
  }
  if (s->defer_unlinks && s->nunlinks < s->capunlinks) s->unlinks[s->nunlinks++] = id;
  else cache__segment_unlink_now(s, id);
}

void cache_store_defer_unlinks(cache_store_t *s, bool defer) {
  if (!defer) cache_store_flush_unlinks(s);
  s->defer_unlinks = defer;
}

size_t cache_store_flush_unlinks(cache_store_t *s) {
  size_t n = s->nunlinks;
  for (size_t i = 0; i < n; i++) cache__segment_unlink_now(s, s->unlinks[i]);
  s->nunlinks = 0;
  return n;
}

int cache__evict_entries(cache_store_t *s, cache__entry_t **victims, size_t n) {
  MDB_txn *txn = NULL;
  int rc = cache_mdb_error(mdb_txn_begin(s->env, NULL, 0, &txn));
  for (size_t i = 0; rc == 0 && i < n; i++) {
    MDB_val k = {.mv_size = victims[i]->klen, .mv_data = victims[i]->key};
    rc = cache_mdb_error(mdb_del(txn, s->values, &k, NULL));
    if (rc == SQ_ENOTFOUND) rc = 0;
  }
  if (rc == 0) rc = cache_mdb_error(mdb_txn_commit(txn));
  else if (txn) mdb_txn_abort(txn);
  if (rc) return cache__fail(s, rc);
  for (size_t i = 0; i < n; i++) {
    if (victims[i]->segment_id) cache__segment_unlink(s, victims[i]->segment_id);
    s->bytes -= victims[i]->charge;
    cache__index_remove(&s->index, victims[i]);
  }
  return 0;
}

/* Evicts from the LRU tail, never `keep`, until bytes <= target or `max` victims. */
static int cache__evict_lru(cache_store_t *s, uint64_t target, size_t max,
                            const cache__entry_t *keep, size_t *evicted) {
  cache__entry_t *batch[64];
  size_t total = 0;
  int rc = 0;
  while (rc == 0 && s->bytes > target && total < max) {
    size_t n = 0;
    uint64_t freed = 0;
    for (cache__entry_t *e = s->index.tail; e && n < 64 && total + n < max &&
                                            s->bytes - freed > target; e = e->prev)
      if (e != keep) {
        batch[n++] = e;
        freed += e->charge;
      }
    if (n == 0) break;
    rc = cache__evict_entries(s, batch, n);
    if (rc == 0) total += n;
  }
  s->stats.evictions += total;
  if (evicted) *evicted = total;
  return rc;
}

int cache_store_evict_to(cache_store_t *s, uint64_t target, size_t *evicted) {
  if (evicted) *evicted = 0;
  if (s->broken) return SQ_ECLOSED;
  return cache__evict_lru(s, target, SIZE_MAX, NULL, evicted);
}

/* MDB_MAP_FULL: free stale slots, then grow the map, or once at the maximum, evict
 * an eighth of the values. SQ_ETOOBIG when nothing is left to try. */
static int cache__relieve_map_full(cache_store_t *s, const cache__entry_t *keep) {
  MDB_envinfo info;
  int dead = 0;
  mdb_reader_check(s->env, &dead);
  s->stats.stale_readers += (uint64_t)dead;
  mdb_env_info(s->env, &info);
  if (info.me_mapsize < s->cfg.map_size_max) {
    size_t grown = info.me_mapsize * 2;
    if (grown > s->cfg.map_size_max) grown = s->cfg.map_size_max;
    int rc = cache_mdb_error(mdb_env_set_mapsize(s->env, grown));
    if (rc == 0) s->stats.map_grows++;
    return rc;
  }
  size_t evicted = 0, n = s->index.count / 8 + 1;
  int rc = cache__evict_lru(s, 0, n, keep, &evicted);
  if (rc == 0 && evicted == 0) rc = SQ_ETOOBIG;
  return rc;
}

/* Fills the reserved record and commits txn (aborting it on failure). Returns an
 * LMDB code, or CACHE__FILL_FAILED with the fill error in p->fill_rc. */
static int cache__record_commit(cache_store_t *s, MDB_txn *txn, cache__put_t *p,
                                  uint64_t id, MDB_val *v) {
  (void)s;
  if (id) {
    cache_record_write_segment(v->mv_data, p->type, p->blob_len, id, p->meta.data,
                               p->meta.len);
  } else {
    cache_record_write_header(v->mv_data, CACHE_RECORD_INLINE, p->type, p->blob_len);
    p->fill_rc = p->fill(p->arg, (uint8_t *)v->mv_data + CACHE_RECORD_HEADER, p->blob_len);
    if (p->fill_rc) {
      mdb_txn_abort(txn);
      return CACHE__FILL_FAILED;
    }
  }
  return mdb_txn_commit(txn);
}

/* Creates and writes segment `id`. The file is removed again on failure. */
static int cache__segment_write(cache_store_t *s, uint64_t id, const cache__put_t *p) {
  char path[CACHE_PATH_MAX];
  int rc = cache_segment_path(s->dir, id, path, sizeof path);
  if (rc) return rc;
  int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EEXIST) { /* an orphan of a crashed run carries this unused id */
    unlink(path);
    fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  }
  if (fd < 0) return -errno;
  rc = p->write(p->arg, fd, p->blob_len);
  close(fd);
  if (rc) unlink(path);
  return rc;
}

/* One write transaction for the record (and the segment counter). Returns a squall
 * code; *map_full says the failure was MDB_MAP_FULL (worth relieving and retrying). */
static int cache__put_txn(cache_store_t *s, cache__put_t *p, uint64_t id,
                          size_t rec_len, bool *map_full) {
  MDB_txn *txn = NULL;
  MDB_val k = {.mv_size = p->klen, .mv_data = (void *)p->key};
  MDB_val v = {.mv_size = rec_len, .mv_data = NULL};
  int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
  if (rc == 0 && id) {
    uint64_t next = id + 1;
    MDB_val mk = {.mv_size = 12, .mv_data = "next_segment"};
    MDB_val mv = {.mv_size = sizeof next, .mv_data = &next};
    rc = mdb_put(txn, s->meta, &mk, &mv, 0);
  }
  if (rc == 0) rc = mdb_put(txn, s->values, &k, &v, MDB_RESERVE);
  if (rc == 0) rc = cache__record_commit(s, txn, p, id, &v);
  else if (txn) mdb_txn_abort(txn);
  *map_full = rc == MDB_MAP_FULL;
  return rc == CACHE__FILL_FAILED ? p->fill_rc : cache_mdb_error(rc);
}

/* Commits the record, relieving MDB_MAP_FULL as often as it takes. */
static int cache__put_commit(cache_store_t *s, cache__put_t *p, uint64_t id,
                             size_t rec_len, const cache__entry_t *old) {
  for (int attempt = 0; attempt < CACHE__PUT_ATTEMPTS; attempt++) {
    bool map_full = false;
    int rc = cache__put_txn(s, p, id, rec_len, &map_full);
    if (!map_full) return rc;
    rc = cache__relieve_map_full(s, old);
    if (rc) return rc;
  }
  return SQ_ETOOBIG;
}

static int cache__put(cache_store_t *s, cache__put_t *p) {
  if (s->broken) return SQ_ECLOSED;
  if (p->klen == 0) return SQ_EEMPTYKEY;
  if (p->klen > (size_t)mdb_env_get_maxkeysize(s->env)) return SQ_ETOOBIG;
  bool seg = p->blob_len > s->cfg.inline_max;
  size_t rec_len = seg ? cache_record_segment_size(p->meta.len)
                       : CACHE_RECORD_HEADER + p->blob_len;
  uint64_t charge = cache__charge(s, p->klen, rec_len, seg ? p->blob_len : 0);
  if (charge > s->cfg.budget_bytes) return SQ_ETOOBIG;
  cache__entry_t *old = cache__index_find(&s->index, p->key, p->klen);
  uint64_t keep = old ? old->charge : 0;
  int rc = cache__evict_lru(s, s->cfg.budget_bytes - charge + keep, SIZE_MAX, old, NULL);
  uint64_t id = seg ? s->next_segment : 0;
  if (rc == 0 && seg) rc = cache__segment_write(s, id, p);
  if (rc) return cache__fail(s, rc);
  rc = cache__put_commit(s, p, id, rec_len, old);
  if (rc) {
    if (seg) cache__segment_unlink(s, id);
    return cache__fail(s, rc);
  }
  if (seg) s->next_segment = id + 1;
  if (old) {
    if (old->segment_id) cache__segment_unlink(s, old->segment_id);
    s->bytes -= old->charge;
    cache__index_remove(&s->index, old);
  }
  rc = cache__index_add(&s->index, p->key, p->klen, charge, id, NULL);
  if (rc) return cache__fail(s, SQ_ECORRUPT); /* index no longer mirrors LMDB */
  s->bytes += charge;
  return 0;
}

static int cache__fill_copy(void *arg, void *dst, size_t len) {
  memcpy(dst, arg, len);
  return 0;
}

static int cache__write_copy(void *arg, int fd, size_t len) {
  const uint8_t *b = arg;
  for (size_t done = 0; done < len;) {
    ssize_t r = pwrite(fd, b + done, len - done, (off_t)done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r < 0 ? -errno : -EIO;
    done += (size_t)r;
  }
  return 0;
}

static int cache__fill_encode(void *arg, void *dst, size_t len) {
  return cache_blob_encode(arg, dst, len);
}

static int cache__write_encode(void *arg, int fd, size_t len) {
  return cache_blob_write_fd(arg, fd, len);
}

int cache_store_put(cache_store_t *s, const void *key, size_t klen, const void *blob,
                    size_t len) {
  cache_blob_t b;
  int rc = cache_blob_parse(blob, len, &b);
  if (rc) return rc;
  cache__put_t p = {.key = key, .klen = klen, .type = b.lattice_type, .meta = b.meta,
                    .blob_len = len, .fill = cache__fill_copy, .write = cache__write_copy,
                    .arg = (void *)blob};
  return cache__put(s, &p);
}

int cache_store_put_object(cache_store_t *s, const void *key, size_t klen,
                           const cache_object_t *obj) {
  size_t len;
  int rc = cache_blob_size(obj, &len);
  if (rc) return rc;
  cache__put_t p = {.key = key, .klen = klen, .type = obj->lattice_type,
                    .meta = {obj->meta, obj->meta_len}, .blob_len = len,
                    .fill = cache__fill_encode, .write = cache__write_encode,
                    .arg = (void *)obj};
  return cache__put(s, &p);
}

int cache_store_delete(cache_store_t *s, const void *key, size_t klen) {
  if (s->broken) return SQ_ECLOSED;
  cache__entry_t *e = cache__index_find(&s->index, key, klen);
  if (!e) return SQ_ENOTFOUND;
  return cache__evict_entries(s, &e, 1);
}
