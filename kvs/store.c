/* kvs_store: dense entry array + open-addressing index (see store.h).
 *
 * Invariants:
 *   - index capacity is a power of two and at most 7/8 full (load kept <= 0.875
 *     counting only live slots: nothing is ever deleted, so there are no tombstones);
 *   - a slot holds (hash, entry pointer); NULL means empty. The pointer (not an index
 *     into `entries`) saves a dependent cache miss per lookup: with 100k keys the
 *     index, the entry array and the entries are all out of cache;
 *   - entries[i]->key never changes; entries[i]->payload is replaced on merge.
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sq_error.h"

typedef struct {
  uint8_t *payload; /* owned, cap bytes allocated */
  size_t len;
  size_t cap;
  uint32_t keylen;
  uint8_t type;
  char key[]; /* keylen bytes, not NUL-terminated */
} kvs__entry_t;

typedef struct {
  uint64_t hash;
  kvs__entry_t *entry; /* NULL = empty slot */
} kvs__slot_t;

struct kvs_store {
  kvs__entry_t **entries;
  size_t count;
  size_t entries_cap;
  kvs__slot_t *slots;
  size_t slot_mask; /* capacity - 1 */
  kvs_store_stats_t stats;
  sq_buf_t scratch; /* merge output, reused */
};

#define KVS__INITIAL_SLOTS 1024

int kvs_store_create(kvs_store_t **out) {
  kvs_store_t *s = calloc(1, sizeof(*s));
  if (!s) return -ENOMEM;
  s->slots = calloc(KVS__INITIAL_SLOTS, sizeof(*s->slots));
  if (!s->slots) {
    free(s);
    return -ENOMEM;
  }
  s->slot_mask = KVS__INITIAL_SLOTS - 1;
  *out = s;
  return 0;
}

void kvs_store_destroy(kvs_store_t *store) {
  if (!store) return;
  for (size_t i = 0; i < store->count; i++) {
    free(store->entries[i]->payload);
    free(store->entries[i]);
  }
  free(store->entries);
  free(store->slots);
  sq_buf_free(&store->scratch);
  free(store);
}

/* Returns the slot holding the key, or the empty slot where it would go. */
static kvs__slot_t *kvs__find_slot(const kvs_store_t *s, const char *key, size_t keylen,
                                   uint64_t hash) {
  size_t i = hash & s->slot_mask;
  for (;;) {
    kvs__slot_t *slot = &s->slots[i];
    const kvs__entry_t *e = slot->entry;
    if (!e) return slot;
    if (slot->hash == hash && e->keylen == keylen && memcmp(e->key, key, keylen) == 0)
      return slot;
    i = (i + 1) & s->slot_mask;
  }
}

static int kvs__grow_index(kvs_store_t *s) {
  size_t cap = (s->slot_mask + 1) * 2;
  kvs__slot_t *slots = calloc(cap, sizeof(*slots));
  if (!slots) return -ENOMEM;
  for (size_t i = 0; i <= s->slot_mask; i++) {
    if (!s->slots[i].entry) continue;
    size_t j = s->slots[i].hash & (cap - 1);
    while (slots[j].entry) j = (j + 1) & (cap - 1);
    slots[j] = s->slots[i];
  }
  free(s->slots);
  s->slots = slots;
  s->slot_mask = cap - 1;
  return 0;
}

static void kvs__fill_entry(const kvs__entry_t *e, kvs_store_entry_t *out) {
  out->key = e->key;
  out->keylen = e->keylen;
  out->type = (sq_lattice_type_t)e->type;
  out->payload = e->payload;
  out->len = e->len;
}

void kvs_store_key(kvs_store_key_t *k, const char *key, size_t keylen) {
  k->key = key;
  k->len = keylen;
  k->hash = sq_hash_std(key, keylen);
}

int kvs_store_get_key(const kvs_store_t *store, const kvs_store_key_t *k,
                      kvs_store_entry_t *entry) {
  const kvs__slot_t *slot = kvs__find_slot(store, k->key, k->len, k->hash);
  if (!slot->entry) return SQ_EKEYDNE;
  kvs__fill_entry(slot->entry, entry);
  return 0;
}

int kvs_store_get(const kvs_store_t *store, const char *key, size_t keylen,
                  kvs_store_entry_t *entry) {
  kvs_store_key_t k;
  kvs_store_key(&k, key, keylen);
  return kvs_store_get_key(store, &k, entry);
}

/* Adds a new entry holding a copy of the payload; `slot` is the empty slot found for
 * the key. Grows the dense array and the index as needed. */
static int kvs__insert(kvs_store_t *s, kvs__slot_t *slot, uint64_t hash, const char *key,
                       size_t keylen, sq_lattice_type_t type, const uint8_t *payload,
                       size_t len) {
  if (s->count == s->entries_cap) {
    size_t cap = s->entries_cap ? s->entries_cap * 2 : 1024;
    kvs__entry_t **entries = realloc(s->entries, cap * sizeof(*entries));
    if (!entries) return -ENOMEM;
    s->entries = entries;
    s->entries_cap = cap;
  }
  kvs__entry_t *e = malloc(sizeof(*e) + keylen);
  uint8_t *copy = malloc(len ? len : 1);
  if (!e || !copy) {
    free(e);
    free(copy);
    return -ENOMEM;
  }
  memcpy(e->key, key, keylen);
  memcpy(copy, payload, len);
  e->keylen = (uint32_t)keylen;
  e->type = (uint8_t)type;
  e->payload = copy;
  e->len = len;
  e->cap = len ? len : 1;
  slot->hash = hash;
  slot->entry = e;
  s->entries[s->count++] = e;
  s->stats.keys++;
  s->stats.payload_bytes += len;
  return 0;
}

/* Merges into the entry through the store's scratch buffer. A result of at least
 * KVS__SWAP_MIN bytes whose scratch allocation is at most twice its size (the common
 * PUT of a sizeable value) is not copied: the entry and the scratch swap allocations
 * (the same 2x bound the entry's own allocation already allows). Smaller results are
 * copied into the entry's allocation when they fit, into a new one when they do not. */
#define KVS__SWAP_MIN 256

static int kvs__merge_into(kvs_store_t *s, kvs__entry_t *e, sq_lattice_type_t type,
                           const uint8_t *payload, size_t len, bool *changed) {
  if (e->type != type) return SQ_ELATTICE;
  bool differs = false;
  sq_buf_reset(&s->scratch);
  int rc = sq_lattice_merge_payloads(type, e->payload, e->len, payload, len, &s->scratch,
                                     &differs);
  if (rc) return rc;
  s->stats.merges++;
  if (differs) {
    size_t new_len = s->scratch.len;
    if (new_len >= KVS__SWAP_MIN && s->scratch.cap <= 2 * new_len) {
      uint8_t *old = e->payload;
      size_t old_cap = e->cap;
      e->payload = s->scratch.data;
      e->cap = s->scratch.cap;
      s->scratch.data = old;
      s->scratch.cap = old_cap;
      s->scratch.len = 0;
    } else {
      /* A new allocation when it does not fit, or to give back most of a big one. */
      if (new_len > e->cap || (e->cap > 4096 && new_len < e->cap / 2)) {
        uint8_t *bytes = malloc(new_len ? new_len : 1);
        if (!bytes) return -ENOMEM; /* the stored value is unchanged */
        free(e->payload);
        e->payload = bytes;
        e->cap = new_len ? new_len : 1;
      }
      memcpy(e->payload, s->scratch.data, new_len);
    }
    s->stats.payload_bytes += new_len;
    s->stats.payload_bytes -= e->len;
    e->len = new_len;
  }
  if (s->scratch.cap > (1u << 20)) sq_buf_free(&s->scratch); /* keep no huge scratch */
  if (changed) *changed = differs;
  return 0;
}

int kvs_store_merge(kvs_store_t *store, const char *key, size_t keylen,
                    sq_lattice_type_t type, const uint8_t *payload, size_t len,
                    bool *changed) {
  kvs_store_key_t k;
  kvs_store_key(&k, key, keylen);
  return kvs_store_merge_key(store, &k, type, payload, len, changed);
}

int kvs_store_merge_key(kvs_store_t *store, const kvs_store_key_t *k, sq_lattice_type_t type,
                        const uint8_t *payload, size_t len, bool *changed) {
  if (!sq_lattice_type_valid(type)) return SQ_EUNKNOWNTYPE;
  /* Grow before inserting, so that a failed growth leaves the store unchanged. */
  if ((store->count + 1) * 8 > (store->slot_mask + 1) * 7) {
    int grown = kvs__grow_index(store);
    if (grown) return grown;
  }
  const char *key = k->key;
  size_t keylen = k->len;
  uint64_t hash = k->hash;
  kvs__slot_t *slot = kvs__find_slot(store, key, keylen, hash);
  if (slot->entry)
    return kvs__merge_into(store, slot->entry, type, payload, len, changed);
  sq_lattice_t value = {0};
  sq_buf_t canonical = {0};
  int rc;
  if (type == SQ_LATTICE_LWW || type == SQ_LATTICE_PRIORITY) {
    /* Single-value lattices: merges copy the winner's bytes as they came, so the
     * canonical form buys nothing; checking is enough. */
    rc = sq_lattice_validate(type, payload, len);
    if (rc == 0) rc = kvs__insert(store, slot, hash, key, keylen, type, payload, len);
  } else {
    /* Collections store the canonical form, so equal values have equal bytes. */
    rc = sq_lattice_decode(type, payload, len, &value);
    if (rc == 0) rc = sq_lattice_encode(&value, &canonical);
    if (rc == 0)
      rc = kvs__insert(store, slot, hash, key, keylen, type, canonical.data, canonical.len);
  }
  if (rc == 0 && changed) *changed = true;
  sq_lattice_free(&value);
  sq_buf_free(&canonical);
  return rc;
}

size_t kvs_store_count(const kvs_store_t *store) { return store->count; }

void kvs_store_entry_at(const kvs_store_t *store, size_t i, kvs_store_entry_t *entry) {
  kvs__fill_entry(store->entries[i], entry);
}

void kvs_store_stats(const kvs_store_t *store, kvs_store_stats_t *stats) {
  *stats = store->stats;
}

void kvs_store_prefetch(const kvs_store_t *store, const kvs_store_key_t *k, int step) {
  uint64_t hash = k->hash;
  size_t i = hash & store->slot_mask;
  if (step == 0) {
    __builtin_prefetch(&store->slots[i]);
    return;
  }
  /* The first slot of this hash: no key comparison (that would wait for the entry). */
  while (store->slots[i].entry && store->slots[i].hash != hash) i = (i + 1) & store->slot_mask;
  const kvs__entry_t *e = store->slots[i].entry;
  if (!e) return;
  if (step == 1) {
    __builtin_prefetch(e);
  } else if (step == 2) {
    __builtin_prefetch(e->payload);
  } else {
    size_t len = e->len < KVS_STORE_PREFETCH_MAX ? e->len : KVS_STORE_PREFETCH_MAX;
    for (size_t off = 64; off < len; off += 64) __builtin_prefetch(e->payload + off);
  }
}
