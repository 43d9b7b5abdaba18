/* cache_reader: read-only lookups over the node cache (contract in cache_reader.h).
 *
 * State: one LMDB env opened MDB_RDONLY | MDB_NOTLS, one read transaction that is
 * either reset (holds the reader slot, no snapshot) or live for the few instructions
 * of one lookup, and a list of segment mappings:
 *
 *     map { id, addr, len, refs, tick, parsed blob }
 *       refs > 0 : views point into it
 *       refs == 0: idle, kept for reuse (at most CACHE_READER_IDLE_MAX)
 *
 * A map's owner pointer is cleared when the reader closes; the last view release
 * then unmaps and frees it. Race with the writer: the descriptor is read under the
 * snapshot but the segment file is opened after the snapshot ends, so the writer may
 * have unlinked it in between. ENOENT then means "the descriptor we saw is no longer
 * current", and the lookup starts over (bounded).
 */
#include "cache_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_record.h"
#include "sq_error.h"

#define CACHE__LOOKUP_RETRIES 4

typedef struct cache__map {
  struct cache__map *next;
  cache_reader_t *owner; /* NULL once the reader is closed */
  uint64_t id;
  void *addr;
  size_t len;
  uint32_t refs;
  uint64_t tick;         /* when it last became idle */
  cache_blob_t blob;
} cache__map_t;

struct cache_reader {
  MDB_env *env;
  MDB_dbi dbi;
  MDB_txn *txn; /* reset between lookups; NULL until first use */
  cache__map_t *maps;
  size_t nmaps, nidle;
  uint64_t tick;
  char dir[CACHE_PATH_MAX];
};

typedef struct {
  cache_view_t pub;
  cache__map_t *map; /* segment view */
  void *copy;        /* inline view: aligned private copy */
  cache_span_t spans[];
} cache__view_t;

int cache_reader_open(const char *dir, cache_reader_t **out) {
  cache_reader_t *r = NULL;
  MDB_txn *txn = NULL;
  int rc;
  *out = NULL;
  if (strlen(dir) >= CACHE_PATH_MAX - 64) return -ENAMETOOLONG;
  r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  strcpy(r->dir, dir);
  rc = cache_mdb_error(mdb_env_create(&r->env));
  if (rc) goto out;
  mdb_env_set_maxdbs(r->env, 4);
  rc = mdb_env_open(r->env, dir, MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD, 0644);
  if (rc) {
    rc = rc == ENOENT ? SQ_ENOTFOUND : cache_mdb_error(rc);
    goto out;
  }
  rc = cache_mdb_error(mdb_txn_begin(r->env, NULL, MDB_RDONLY, &txn));
  if (rc) goto out;
  rc = cache_mdb_error(mdb_dbi_open(txn, CACHE_DB_VALUES, 0, &r->dbi));
  if (rc) {
    mdb_txn_abort(txn);
    goto out;
  }
  /* Commit, not abort: an abort would close the handle opened in this txn. */
  rc = cache_mdb_error(mdb_txn_commit(txn));
  if (rc) goto out;
  *out = r;
  r = NULL;
out:
  cache_reader_close(r);
  return rc;
}

/* Starts the lookup's snapshot, adopting a map size the writer grew. */
static int cache__txn_start(cache_reader_t *r) {
  int rc = r->txn ? mdb_txn_renew(r->txn) : mdb_txn_begin(r->env, NULL, MDB_RDONLY, &r->txn);
  if (rc == MDB_SUCCESS) return 0;
  if (r->txn) mdb_txn_abort(r->txn);
  r->txn = NULL;
  if (rc != MDB_MAP_RESIZED) return cache_mdb_error(rc);
  rc = mdb_env_set_mapsize(r->env, 0);
  if (rc == MDB_SUCCESS) rc = mdb_txn_begin(r->env, NULL, MDB_RDONLY, &r->txn);
  if (rc != MDB_SUCCESS) r->txn = NULL;
  return cache_mdb_error(rc);
}

static cache__view_t *cache__view_new(const cache_blob_t *blob) {
  cache__view_t *v = malloc(sizeof *v + blob->nbuffers * sizeof(cache_span_t));
  if (!v) return NULL;
  for (uint32_t i = 0; i < blob->nbuffers; i++) v->spans[i] = cache_blob_buffer(blob, i);
  v->pub = (cache_view_t){.lattice_type = blob->lattice_type, .meta = blob->meta,
                          .pickle = blob->pickle, .nbuffers = blob->nbuffers,
                          .buffers = v->spans};
  v->map = NULL;
  v->copy = NULL;
  return v;
}

/* Inline value: copy it (still under the snapshot) into aligned private memory. */
static int cache__view_inline(const cache_record_t *rec, cache__view_t **out) {
  size_t cap = (rec->blob_len + 63) & ~(size_t)63;
  void *copy = aligned_alloc(CACHE_BLOB_ALIGN, cap ? cap : CACHE_BLOB_ALIGN);
  cache_blob_t blob;
  int rc;
  if (!copy) return -ENOMEM;
  memcpy(copy, rec->blob, rec->blob_len);
  rc = cache_blob_parse(copy, rec->blob_len, &blob);
  if (rc == 0 && blob.lattice_type != rec->lattice_type) rc = SQ_ECORRUPT;
  if (rc == 0 && !(*out = cache__view_new(&blob))) rc = -ENOMEM;
  if (rc) {
    free(copy);
    return rc;
  }
  (*out)->copy = copy;
  return 0;
}

static void cache__map_destroy(cache__map_t *m) {
  if (m->addr) munmap(m->addr, m->len);
  free(m);
}

static void cache__map_unlink(cache_reader_t *r, cache__map_t *m) {
  for (cache__map_t **pp = &r->maps; *pp; pp = &(*pp)->next)
    if (*pp == m) {
      *pp = m->next;
      r->nmaps--;
      if (m->refs == 0) r->nidle--;
      return;
    }
}

/* Maps segment `id` read-only. -ENOENT when the writer unlinked it meanwhile. */
static int cache__map_segment(cache_reader_t *r, const cache_record_t *rec,
                              cache__map_t **out) {
  char path[CACHE_PATH_MAX];
  struct stat st;
  int fd = -1, rc;
  cache__map_t *m = calloc(1, sizeof *m);
  if (!m) return -ENOMEM;
  rc = cache_segment_path(r->dir, rec->segment_id, path, sizeof path);
  if (rc) goto out;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) < 0) {
    rc = -errno;
    goto out;
  }
  if ((uint64_t)st.st_size != rec->blob_len || rec->blob_len > SIZE_MAX) {
    rc = SQ_ECORRUPT;
    goto out;
  }
  m->len = (size_t)rec->blob_len;
  m->addr = mmap(NULL, m->len, PROT_READ, MAP_SHARED, fd, 0);
  if (m->addr == MAP_FAILED) {
    m->addr = NULL;
    rc = -errno;
    goto out;
  }
  rc = cache_blob_parse(m->addr, m->len, &m->blob);
  if (rc == 0 && m->blob.lattice_type != rec->lattice_type) rc = SQ_ECORRUPT;
  if (rc) goto out;
  m->id = rec->segment_id;
  m->owner = r;
  m->next = r->maps;
  r->maps = m;
  r->nmaps++;
  r->nidle++; /* refs == 0 until the caller takes a view */
  *out = m;
  m = NULL;
out:
  if (fd >= 0) close(fd);
  if (m) cache__map_destroy(m);
  return rc;
}

static int cache__view_segment(cache_reader_t *r, const cache_record_t *rec,
                               cache__view_t **out) {
  cache__map_t *m = r->maps;
  int rc = 0;
  while (m && m->id != rec->segment_id) m = m->next;
  if (!m && (rc = cache__map_segment(r, rec, &m))) return rc;
  if (!(*out = cache__view_new(&m->blob))) return -ENOMEM;
  if (m->refs++ == 0) r->nidle--;
  (*out)->map = m;
  (*out)->pub.zero_copy = true;
  return 0;
}

/* One attempt: snapshot, get, copy or note the descriptor, end snapshot, map. */
static int cache__lookup_once(cache_reader_t *r, MDB_val *k, cache__view_t **out) {
  MDB_val v;
  cache_record_t rec = {.kind = 0};
  int rc = cache__txn_start(r);
  if (rc) return rc;
  rc = cache_mdb_error(mdb_get(r->txn, r->dbi, k, &v));
  if (rc == 0) rc = cache_record_parse(v.mv_data, v.mv_size, &rec);
  if (rc == 0 && rec.kind == CACHE_RECORD_INLINE) rc = cache__view_inline(&rec, out);
  mdb_txn_reset(r->txn);
  if (rc || rec.kind == CACHE_RECORD_INLINE) return rc;
  return cache__view_segment(r, &rec, out);
}

int cache_reader_lookup(cache_reader_t *r, const void *key, size_t klen,
                        cache_view_t **view) {
  MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
  cache__view_t *v = NULL;
  int rc = -ENOENT;
  *view = NULL;
  if (klen == 0) return SQ_EEMPTYKEY;
  if (klen > (size_t)mdb_env_get_maxkeysize(r->env)) return SQ_ETOOBIG;
  for (int i = 0; i < CACHE__LOOKUP_RETRIES && rc == -ENOENT; i++)
    rc = cache__lookup_once(r, &k, &v);
  if (rc == -ENOENT) rc = SQ_ENOTFOUND; /* replaced faster than we could follow */
  if (rc == 0) *view = &v->pub;
  if (r->nidle > CACHE_READER_IDLE_MAX) cache_reader_trim(r);
  return rc;
}

bool cache_reader_contains(cache_reader_t *r, const void *key, size_t klen) {
  MDB_val k = {.mv_size = klen, .mv_data = (void *)key}, v;
  if (klen == 0 || klen > (size_t)mdb_env_get_maxkeysize(r->env) || cache__txn_start(r) != 0)
    return false;
  bool found = mdb_get(r->txn, r->dbi, &k, &v) == MDB_SUCCESS;
  mdb_txn_reset(r->txn);
  return found;
}

void cache_view_release(cache_view_t *view) {
  if (!view) return;
  cache__view_t *v = (cache__view_t *)view;
  cache__map_t *m = v->map;
  free(v->copy);
  free(v);
  if (!m || --m->refs > 0) return;
  cache_reader_t *r = m->owner;
  if (!r) {
    cache__map_destroy(m);
    return;
  }
  m->tick = ++r->tick;
  r->nidle++;
  if (r->nidle > CACHE_READER_IDLE_MAX) cache_reader_trim(r);
}

/* Drops the idle mapping that went idle longest ago. */
static void cache__drop_oldest_idle(cache_reader_t *r) {
  cache__map_t *old = NULL;
  for (cache__map_t *m = r->maps; m; m = m->next)
    if (m->refs == 0 && (!old || m->tick < old->tick)) old = m;
  if (!old) return;
  cache__map_unlink(r, old);
  cache__map_destroy(old);
}

size_t cache_reader_trim(cache_reader_t *r) {
  char path[CACHE_PATH_MAX];
  struct stat st;
  size_t dropped = 0;
  cache__map_t *m = r->maps, *next;
  for (; m; m = next) {
    next = m->next;
    if (m->refs || cache_segment_path(r->dir, m->id, path, sizeof path)) continue;
    if (stat(path, &st) == 0 || errno != ENOENT) continue;
    cache__map_unlink(r, m);
    cache__map_destroy(m);
    dropped++;
  }
  while (r->nidle > CACHE_READER_IDLE_MAX) cache__drop_oldest_idle(r);
  return dropped;
}

size_t cache_reader_mappings(const cache_reader_t *r) { return r->nmaps; }

void cache_reader_close(cache_reader_t *r) {
  if (!r) return;
  cache__map_t *m = r->maps, *next;
  for (; m; m = next) {
    next = m->next;
    if (m->refs == 0) cache__map_destroy(m);
    else m->owner = NULL;
  }
  if (r->txn) mdb_txn_abort(r->txn);
  if (r->env) mdb_env_close(r->env);
  free(r);
}
