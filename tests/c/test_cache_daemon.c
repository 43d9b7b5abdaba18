/* test_cache_daemon: the logic pieces of squall-cache -- the coalescing table of the
 * miss path (daemon_fetch.h), the key-set report policy and encoding
 * (daemon_keyset.h), the KVS payload <-> cached blob conversion
 * (daemon_value.h) against a real store and reader in a temporary directory, and the
 * write-through PUT's reply (daemon_reply.h), with and without memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anna.pb-c.h"
#include "cache_reader.h"
#include "cache_store.h"
#include "cloudburst.pb-c.h"
#include "daemon_fetch.h"
#include "daemon_keyset.h"
#include "daemon_reply.h"
#include "daemon_value.h"
#include "lattice.h"
#include "shared.pb-c.h"
#include "sq_error.h"

/* ---- coalescing table ------------------------------------------------------------ */

static int r1, r2, r3; /* addresses used as opaque waiting requests */

static void test_first_miss_opens_a_fetch_and_later_misses_join_it(void **state) {
  (void)state;
  cache_fetch_table_t *t = NULL;
  assert_int_equal(cache_fetch_table_create(0, &t), 0);
  bool first = false;
  assert_int_equal(cache_fetch_join(t, "k", 1, (cache_waiter_t){&r1, 0}, &first), 0);
  assert_true(first);
  assert_int_equal(cache_fetch_set_call(t, "k", 1, 42), 0);
  assert_int_equal(cache_fetch_join(t, "k", 1, (cache_waiter_t){&r2, 3}, &first), 0);
  assert_false(first);
  assert_int_equal(cache_fetch_join(t, "k2", 2, (cache_waiter_t){&r3, 1}, &first), 0);
  assert_true(first);
  assert_int_equal(cache_fetch_count(t), 2);
  assert_true(cache_fetch_pending(t, "k", 1));
  assert_false(cache_fetch_pending(t, "k3", 2));
  cache_fetch_table_destroy(t);
}

static void test_finish_hands_back_waiters_in_arrival_order(void **state) {
  (void)state;
  cache_fetch_table_t *t = NULL;
  assert_int_equal(cache_fetch_table_create(0, &t), 0);
  bool first;
  cache_fetch_join(t, "key", 3, (cache_waiter_t){&r1, 0}, &first);
  cache_fetch_set_call(t, "key", 3, 7);
  cache_fetch_join(t, "key", 3, (cache_waiter_t){&r2, 5}, &first);
  cache_fetch_join(t, "key", 3, (cache_waiter_t){&r1, 2}, &first);
  cache_waiter_t *w = NULL;
  size_t n = 0;
  assert_int_equal(cache_fetch_finish(t, "key", 3, 7, &w, &n), 0);
  assert_int_equal(n, 3);
  assert_ptr_equal(w[0].req, &r1);
  assert_int_equal(w[0].slot, 0);
  assert_ptr_equal(w[1].req, &r2);
  assert_int_equal(w[1].slot, 5);
  assert_int_equal(w[2].slot, 2);
  free(w);
  assert_false(cache_fetch_pending(t, "key", 3));
  assert_int_equal(cache_fetch_count(t), 0);
  /* The next miss opens a new fetch. */
  assert_int_equal(cache_fetch_join(t, "key", 3, (cache_waiter_t){&r3, 0}, &first), 0);
  assert_true(first);
  cache_fetch_table_destroy(t);
}

static void test_finish_by_another_call_id_changes_nothing(void **state) {
  (void)state;
  cache_fetch_table_t *t = NULL;
  assert_int_equal(cache_fetch_table_create(0, &t), 0);
  bool first;
  cache_fetch_join(t, "k", 1, (cache_waiter_t){&r1, 0}, &first);
  cache_fetch_set_call(t, "k", 1, 9);
  cache_waiter_t *w = NULL;
  size_t n = 0;
  assert_int_equal(cache_fetch_finish(t, "k", 1, 8, &w, &n), SQ_ENOTFOUND);
  assert_int_equal(cache_fetch_finish(t, "other", 5, 9, &w, &n), SQ_ENOTFOUND);
  assert_true(cache_fetch_pending(t, "k", 1));
  assert_int_equal(cache_fetch_set_call(t, "zz", 2, 1), SQ_ENOTFOUND);
  cache_fetch_table_destroy(t); /* frees the open entry and its waiters */
}

static void test_full_table_refuses_new_keys_but_joins_open_ones(void **state) {
  (void)state;
  cache_fetch_table_t *t = NULL;
  assert_int_equal(cache_fetch_table_create(2, &t), 0);
  bool first;
  assert_int_equal(cache_fetch_join(t, "a", 1, (cache_waiter_t){&r1, 0}, &first), 0);
  assert_int_equal(cache_fetch_join(t, "b", 1, (cache_waiter_t){&r1, 1}, &first), 0);
  assert_int_equal(cache_fetch_join(t, "c", 1, (cache_waiter_t){&r1, 2}, &first), SQ_ETOOBIG);
  assert_int_equal(cache_fetch_join(t, "a", 1, (cache_waiter_t){&r2, 0}, &first), 0);
  assert_false(first);
  assert_int_equal(cache_fetch_join(t, "", 0, (cache_waiter_t){&r2, 0}, &first), SQ_EEMPTYKEY);
  assert_int_equal(cache_fetch_count(t), 2);
  cache_fetch_table_destroy(t);
}

static void test_keys_differing_in_length_or_bytes_are_distinct_through_growth(void **state) {
  (void)state;
  cache_fetch_table_t *t = NULL;
  assert_int_equal(cache_fetch_table_create(0, &t), 0);
  char key[32];
  bool first;
  for (int i = 0; i < 5000; i++) {
    int len = snprintf(key, sizeof key, "key-%d", i);
    assert_int_equal(cache_fetch_join(t, key, (size_t)len, (cache_waiter_t){&r1, (uint32_t)i},
                                      &first), 0);
    assert_true(first);
    cache_fetch_set_call(t, key, (size_t)len, (uint64_t)i + 1);
  }
  assert_int_equal(cache_fetch_join(t, "key-1", 4, (cache_waiter_t){&r2, 0}, &first), 0);
  assert_true(first); /* "key-" is not "key-1" */
  for (int i = 4999; i >= 0; i--) {
    int len = snprintf(key, sizeof key, "key-%d", i);
    cache_waiter_t *w = NULL;
    size_t n = 0;
    assert_int_equal(cache_fetch_finish(t, key, (size_t)len, (uint64_t)i + 1, &w, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(w[0].slot, (uint32_t)i);
    free(w);
  }
  assert_int_equal(cache_fetch_count(t), 1);
  cache_fetch_table_destroy(t);
}

/* ---- key-set reporter ------------------------------------------------------------ */

static void test_first_report_is_due_at_once(void **state) {
  (void)state;
  cache_keyset_t k;
  cache_keyset_init(&k, 0, 0);
  assert_int_equal(k.min_interval_ms, 100);
  assert_int_equal(k.period_ms, 5000);
  assert_true(cache_keyset_due(&k, 1000));
  cache_keyset_started(&k, 1000);
  assert_false(cache_keyset_due(&k, 1000));
  assert_int_equal(cache_keyset_wait_ms(&k, 1000), -1); /* in flight */
}

static void test_change_is_reported_after_min_interval_and_not_before(void **state) {
  (void)state;
  cache_keyset_t k;
  cache_keyset_init(&k, 100, 5000);
  cache_keyset_started(&k, 1000);
  cache_keyset_done(&k, 0);
  assert_int_equal(cache_keyset_wait_ms(&k, 1010), 4990);
  cache_keyset_mark(&k);
  assert_false(cache_keyset_due(&k, 1050));
  assert_int_equal(cache_keyset_wait_ms(&k, 1050), 50);
  assert_true(cache_keyset_due(&k, 1100));
  cache_keyset_started(&k, 1100);
  cache_keyset_mark(&k); /* changes while in flight wait for the answer ... */
  assert_false(cache_keyset_due(&k, 1300));
  cache_keyset_done(&k, 0);
  assert_true(cache_keyset_due(&k, 1300)); /* ... and are then reported */
}

static void test_clean_set_is_reported_every_period(void **state) {
  (void)state;
  cache_keyset_t k;
  cache_keyset_init(&k, 100, 5000);
  cache_keyset_started(&k, 0);
  cache_keyset_done(&k, 0);
  assert_false(cache_keyset_due(&k, 4999));
  assert_true(cache_keyset_due(&k, 5000));
  assert_int_equal(k.reports, 1);
}

static void test_failed_report_is_retried_after_min_interval(void **state) {
  (void)state;
  cache_keyset_t k;
  cache_keyset_init(&k, 100, 5000);
  cache_keyset_started(&k, 0);
  cache_keyset_done(&k, SQ_ETIMEOUT);
  assert_false(cache_keyset_due(&k, 99));
  assert_true(cache_keyset_due(&k, 100));
}

static void test_metadata_key_names_ip_and_update_port(void **state) {
  (void)state;
  char buf[64];
  assert_int_equal(cache_keyset_key(buf, sizeof buf, "10.0.0.7", 7151), 0);
  assert_string_equal(buf, "ANNA_METADATA|cache_ip|10.0.0.7:7151");
  assert_int_equal(cache_keyset_key(buf, 20, "10.0.0.7", 7151), SQ_ETOOBIG);
}

static void test_report_payload_is_lww_of_a_string_set(void **state) {
  (void)state;
  const char *keys[] = {"alpha", "beta-XX"};
  size_t lens[] = {5, 4}; /* keys need not be NUL-terminated */
  sq_buf_t out = {0};
  assert_int_equal(cache_keyset_encode(keys, lens, 2, 12345, &out), 0);
  LWWValue *l = lwwvalue__unpack(NULL, out.len, out.data);
  assert_non_null(l);
  assert_int_equal(l->timestamp, 12345);
  StringSet *s = string_set__unpack(NULL, l->value.len, l->value.data);
  assert_non_null(s);
  assert_int_equal(s->n_keys, 2);
  assert_string_equal(s->keys[0], "alpha");
  assert_string_equal(s->keys[1], "beta");
  string_set__free_unpacked(s, NULL);
  lwwvalue__free_unpacked(l, NULL);
  sq_buf_free(&out);
  assert_int_equal(cache_keyset_encode(NULL, NULL, 0, 1, &out), 0);
  l = lwwvalue__unpack(NULL, out.len, out.data);
  assert_non_null(l);
  assert_int_equal(l->value.len, 0); /* the empty set */
  lwwvalue__free_unpacked(l, NULL);
  sq_buf_free(&out);
}

/* ---- value conversion ------------------------------------------------------------ */

typedef struct {
  char dir[256];
  cache_store_t *store;
  cache_reader_t *reader;
} vfix_t;

static int vsetup(void **state) {
  vfix_t *f = calloc(1, sizeof *f);
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(f->dir, sizeof f->dir, "%s/squall-test-daemon-XXXXXX", base);
  if (!mkdtemp(f->dir)) return -1;
  cache_store_config_t cfg = {.dir = f->dir, .budget_bytes = 64u << 20, .inline_max = 4096};
  if (cache_store_open(&cfg, &f->store) != 0) return -1;
  if (cache_reader_open(f->dir, &f->reader) != 0) return -1;
  *state = f;
  return 0;
}

static int vteardown(void **state) {
  vfix_t *f = *state;
  cache_reader_close(f->reader);
  cache_store_close(f->store);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  int rc = system(cmd);
  free(f);
  return rc == 0 ? 0 : -1;
}

/* LWW{ts, Value{blob(stream, one buffer), type}} into out. */
static void make_object_payload(const uint8_t *buf, size_t blen, uint64_t ts, sq_buf_t *out) {
  static const uint8_t stream[] = {0x80, 0x05, 0x95, 'x', '.'};
  static const uint8_t inner_meta[] = {9, 9};
  cache_span_t span = {buf, blen};
  cache_object_t o = {.lattice_type = SQ_LATTICE_LWW, .meta = inner_meta, .meta_len = 2,
                      .pickle = stream, .pickle_len = sizeof stream, .buffers = &span,
                      .nbuffers = 1};
  size_t size = 0;
  assert_int_equal(cache_blob_size(&o, &size), 0);
  uint8_t *blob = malloc(size);
  assert_int_equal(cache_blob_encode(&o, blob, size), 0);
  Value v = VALUE__INIT;
  v.body.data = blob;
  v.body.len = size;
  v.type = SERIALIZER_TYPE__NUMPY;
  size_t vlen = value__get_packed_size(&v);
  uint8_t *vb = malloc(vlen);
  value__pack(&v, vb);
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = ts;
  l.u.lww.value.data = vb;
  l.u.lww.value.len = vlen;
  assert_int_equal(sq_lattice_encode(&l, out), 0);
  free(vb);
  free(blob);
}

/* The stored blob of key, parsed, and the payload it stands for. */
static void stored_payload(vfix_t *f, const char *key, sq_buf_t *blob, sq_buf_t *payload) {
  assert_int_equal(cache_store_get(f->store, key, strlen(key), blob), 0);
  cache_blob_t b;
  assert_int_equal(cache_blob_parse(blob->data, blob->len, &b), 0);
  assert_int_equal(cache_value_payload(&b, payload), 0);
}

static void test_object_payload_is_stored_as_object_and_rebuilt_exactly(void **state) {
  vfix_t *f = *state;
  uint8_t *arr = malloc(100000);
  for (size_t i = 0; i < 100000; i++) arr[i] = (uint8_t)(i * 7);
  sq_buf_t payload = {0}, blob = {0}, back = {0};
  make_object_payload(arr, 100000, 991, &payload);
  bool is_object = false;
  assert_int_equal(cache_value_store(f->store, "obj", 3, SQ_LATTICE_LWW, payload.data,
                                     payload.len, &is_object), 0);
  assert_true(is_object);
  cache_view_t *v = NULL;
  assert_int_equal(cache_reader_lookup(f->reader, "obj", 3, &v), 0);
  assert_int_equal(cache_value_kind(v->meta.data, v->meta.len), CACHE_META_OBJECT);
  assert_int_equal(v->nbuffers, 1);
  assert_int_equal(v->buffers[0].len, 100000);
  assert_memory_equal(v->buffers[0].data, arr, 100000);
  assert_int_equal((uintptr_t)v->buffers[0].data % 64, 0);
  assert_true(v->zero_copy);
  cache_view_release(v);
  stored_payload(f, "obj", &blob, &back);
  assert_int_equal(back.len, payload.len);
  assert_memory_equal(back.data, payload.data, payload.len);
  sq_buf_free(&payload);
  sq_buf_free(&blob);
  sq_buf_free(&back);
  free(arr);
}

static void test_plain_lww_and_sets_are_stored_raw(void **state) {
  vfix_t *f = *state;
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = 5;
  l.u.lww.value.data = (uint8_t *)"just bytes, not a Value of a blob";
  l.u.lww.value.len = 33;
  sq_buf_t payload = {0}, blob = {0}, back = {0};
  assert_int_equal(sq_lattice_encode(&l, &payload), 0);
  bool is_object = true;
  assert_int_equal(cache_value_store(f->store, "p", 1, SQ_LATTICE_LWW, payload.data,
                                     payload.len, &is_object), 0);
  assert_false(is_object);
  stored_payload(f, "p", &blob, &back);
  assert_int_equal(back.len, payload.len);
  assert_memory_equal(back.data, payload.data, payload.len);
  sq_buf_reset(&blob);
  sq_buf_reset(&back);
  static const uint8_t set[] = {0x0a, 0x01, 'a', 0x0a, 0x01, 'b'}; /* SetValue{a, b} */
  assert_int_equal(cache_value_store(f->store, "s", 1, SQ_LATTICE_SET, set, sizeof set,
                                     &is_object), 0);
  assert_false(is_object);
  sq_lattice_type_t type;
  sq_buf_t meta = {0};
  assert_int_equal(cache_store_get_meta(f->store, "s", 1, &type, &meta), 0);
  assert_int_equal(type, SQ_LATTICE_SET);
  assert_int_equal(cache_value_kind(meta.data, meta.len), CACHE_META_RAW);
  stored_payload(f, "s", &blob, &back);
  assert_memory_equal(back.data, set, sizeof set);
  sq_buf_free(&meta);
  sq_buf_free(&payload);
  sq_buf_free(&blob);
  sq_buf_free(&back);
}

static void test_value_that_does_not_reserialize_identically_is_stored_raw(void **state) {
  vfix_t *f = *state;
  sq_buf_t obj = {0}, blob = {0}, back = {0};
  make_object_payload((const uint8_t *)"abc", 3, 4, &obj);
  LWWValue *l = lwwvalue__unpack(NULL, obj.len, obj.data);
  assert_non_null(l);
  /* Move the Value's trailing type field (0x10 0x01) in front of its body: valid
   * protobuf, but protobuf-c re-serializes in field order, so the daemon could not
   * rebuild these bytes and must keep the payload whole. */
  assert_true(l->value.len > 2);
  assert_int_equal(l->value.data[l->value.len - 2], 0x10);
  sq_buf_t value = {0};
  sq_buf_append(&value, l->value.data + l->value.len - 2, 2);
  sq_buf_append(&value, l->value.data, l->value.len - 2);
  sq_lattice_t lw = {.type = SQ_LATTICE_LWW};
  lw.u.lww.timestamp = 4;
  lw.u.lww.value.data = value.data;
  lw.u.lww.value.len = value.len;
  sq_buf_t payload = {0};
  assert_int_equal(sq_lattice_encode(&lw, &payload), 0);
  bool is_object = true;
  assert_int_equal(cache_value_store(f->store, "u", 1, SQ_LATTICE_LWW, payload.data,
                                     payload.len, &is_object), 0);
  assert_false(is_object);
  stored_payload(f, "u", &blob, &back);
  assert_memory_equal(back.data, payload.data, payload.len);
  lwwvalue__free_unpacked(l, NULL);
  sq_buf_free(&obj);
  sq_buf_free(&value);
  sq_buf_free(&payload);
  sq_buf_free(&blob);
  sq_buf_free(&back);
}

static void test_malformed_payload_is_refused_and_nothing_stored(void **state) {
  vfix_t *f = *state;
  static const uint8_t junk[] = {0xff, 0xff, 0xff};
  assert_int_equal(cache_value_store(f->store, "j", 1, SQ_LATTICE_LWW, junk, sizeof junk,
                                     NULL), SQ_EBADLATTICE);
  assert_int_equal(cache_value_store(f->store, "j", 1, SQ_LATTICE_NONE, junk, 0, NULL),
                   SQ_EUNKNOWNTYPE);
  sq_buf_t blob = {0};
  assert_int_equal(cache_store_get(f->store, "j", 1, &blob), SQ_ENOTFOUND);
}

static void test_payload_of_a_blob_with_foreign_meta_is_corrupt(void **state) {
  (void)state;
  static const uint8_t meta[] = {7, 0, 0, 0, 0, 0, 0, 0};
  cache_object_t o = {.lattice_type = SQ_LATTICE_LWW, .meta = meta, .meta_len = sizeof meta};
  uint8_t buf[128];
  size_t size = 0;
  assert_int_equal(cache_blob_size(&o, &size), 0);
  assert_true(size <= sizeof buf);
  assert_int_equal(cache_blob_encode(&o, buf, size), 0);
  cache_blob_t b;
  assert_int_equal(cache_blob_parse(buf, size, &b), 0);
  sq_buf_t out = {0};
  assert_int_equal(cache_value_payload(&b, &out), SQ_ECORRUPT);
  assert_int_equal(out.len, 0);
  assert_int_equal(cache_value_kind(meta, 3), 0);
}

/* ---- the write-through PUT's reply --------------------------------------------- */

#define PUT_KEYS_MAX 40

typedef struct { /* a PUT of n keys and its KVS completion; key i fails when i % 3 == 2 */
  KeyRequest req;
  KeyTuple tuples[PUT_KEYS_MAX], *ptrs[PUT_KEYS_MAX];
  char keys[PUT_KEYS_MAX][16];
  kvs_client_result_t results[PUT_KEYS_MAX];
  kvs_client_completion_t done;
} put_case_t;

static void put_case(put_case_t *pc, size_t n) {
  memset(pc, 0, sizeof(*pc));
  key_request__init(&pc->req);
  pc->req.type = REQUEST_TYPE__PUT;
  pc->req.request_id = "exec-7_99";
  pc->req.response_address = "tcp://127.0.0.1:9";
  pc->req.n_tuples = n;
  pc->req.tuples = pc->ptrs;
  for (size_t i = 0; i < n; i++) {
    snprintf(pc->keys[i], sizeof pc->keys[i], "k%zu", i);
    key_tuple__init(&pc->tuples[i]);
    pc->tuples[i].key = pc->keys[i];
    pc->tuples[i].lattice_type = LATTICE_TYPE__LWW;
    pc->ptrs[i] = &pc->tuples[i];
    if (i % 3 == 2) {
      pc->results[i].err = SQ_ETIMEOUT;
      snprintf(pc->results[i].message, sizeof pc->results[i].message, "no reply from %s", "s1");
    }
  }
  pc->done = (kvs_client_completion_t){.id = 1, .type = REQUEST_TYPE__PUT, .n = n,
                                       .results = pc->results};
}

/* An allocator with no memory; allocator_data counts the attempts (an int). */
static void *alloc_fails(void *data, size_t size) {
  (void)size;
  (*(int *)data)++;
  return NULL;
}

static void alloc_free(void *data, void *p) {
  (void)data;
  free(p);
}

/* An allocator whose every alloc fails, counting the attempts in *tries. */
static ProtobufCAllocator no_memory(int *tries) {
  return (ProtobufCAllocator){.alloc = alloc_fails, .free = alloc_free, .allocator_data = tries};
}

/* Asserts that r's reply lists every key of pc with its outcome, and packs. */
static void assert_put_reply_lists_each_key(const cache_put_reply_t *r, const put_case_t *pc) {
  assert_int_equal(r->resp.type, REQUEST_TYPE__PUT);
  assert_string_equal(r->resp.response_id, "exec-7_99");
  assert_int_equal(r->resp.error, ANNA_ERROR__NO_ERROR);
  assert_int_equal(r->resp.n_tuples, pc->req.n_tuples);
  for (size_t i = 0; i < r->resp.n_tuples; i++) {
    const KeyTuple *t = r->resp.tuples[i];
    assert_string_equal(t->key, pc->keys[i]);
    assert_int_equal(t->lattice_type, LATTICE_TYPE__LWW);
    assert_int_equal(t->payload.len, 0);
    if (i % 3 == 2) {
      assert_int_equal(t->error, ANNA_ERROR__TIMEOUT);
      assert_string_equal(t->error_message, "no reply from s1");
    } else {
      assert_int_equal(t->error, ANNA_ERROR__NO_ERROR);
      assert_true(!t->error_message || !t->error_message[0]); /* the default "" */
    }
  }
  uint8_t buf[4096];
  assert_true(key_response__get_packed_size(&r->resp) <= sizeof buf);
  KeyResponse *back = key_response__unpack(NULL, key_response__pack(&r->resp, buf), buf);
  assert_non_null(back);
  assert_int_equal(back->n_tuples, pc->req.n_tuples);
  key_response__free_unpacked(back, NULL);
}

static void test_put_reply_lists_each_keys_kvs_outcome(void **state) {
  (void)state;
  static put_case_t pc;
  cache_put_reply_t r;
  for (size_t n = 1; n <= PUT_KEYS_MAX; n += PUT_KEYS_MAX - 1) { /* in place, then heap */
    put_case(&pc, n);
    assert_int_equal(cache_put_reply_build(&r, &pc.req, &pc.done, NULL), 0);
    assert_put_reply_lists_each_key(&r, &pc);
    cache_put_reply_free(&r);
  }
}

static void test_put_reply_of_few_keys_needs_no_memory(void **state) {
  (void)state;
  static put_case_t pc;
  cache_put_reply_t r;
  put_case(&pc, CACHE_REPLY_STACK);
  int tries = 0;
  ProtobufCAllocator none = no_memory(&tries);
  assert_int_equal(cache_put_reply_build(&r, &pc.req, &pc.done, &none), 0);
  assert_int_equal(tries, 0);
  assert_put_reply_lists_each_key(&r, &pc);
  cache_put_reply_free(&r);
}

static void test_put_reply_without_memory_is_an_error_for_the_whole_put(void **state) {
  (void)state;
  static put_case_t pc;
  cache_put_reply_t r;
  put_case(&pc, PUT_KEYS_MAX);
  int tries = 0;
  ProtobufCAllocator none = no_memory(&tries);
  assert_int_equal(cache_put_reply_build(&r, &pc.req, &pc.done, &none), -ENOMEM);
  assert_int_equal(tries, 1);
  assert_int_equal(r.resp.type, REQUEST_TYPE__PUT);
  assert_string_equal(r.resp.response_id, "exec-7_99");
  assert_int_equal(r.resp.n_tuples, 0);
  assert_int_equal(r.resp.error, ANNA_ERROR__TIMEOUT);
  assert_non_null(strstr(r.resp.error_message, "out of memory"));
  assert_non_null(strstr(r.resp.error_message, "acknowledged 27 of 40 keys"));
  uint8_t buf[512];
  assert_true(key_response__get_packed_size(&r.resp) <= sizeof buf);
  KeyResponse *back = key_response__unpack(NULL, key_response__pack(&r.resp, buf), buf);
  assert_non_null(back);
  assert_int_equal(back->error, ANNA_ERROR__TIMEOUT);
  assert_string_equal(back->response_id, "exec-7_99");
  key_response__free_unpacked(back, NULL);
  cache_put_reply_free(&r);
}

static void test_reply_error_mapping_keeps_outcomes_and_refuses_the_rest(void **state) {
  (void)state;
  assert_int_equal(cache_reply_anna_error(0), ANNA_ERROR__NO_ERROR);
  assert_int_equal(cache_reply_anna_error(SQ_EKEYDNE), ANNA_ERROR__KEY_DNE);
  assert_int_equal(cache_reply_anna_error(SQ_EWRONGTHREAD), ANNA_ERROR__WRONG_THREAD);
  assert_int_equal(cache_reply_anna_error(SQ_ETIMEOUT), ANNA_ERROR__TIMEOUT);
  assert_int_equal(cache_reply_anna_error(SQ_ENOSERVERS), ANNA_ERROR__NO_SERVERS);
  assert_int_equal(cache_reply_anna_error(SQ_ELATTICE), ANNA_ERROR__LATTICE);
  assert_int_equal(cache_reply_anna_error(-ENOMEM), ANNA_ERROR__LATTICE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_first_miss_opens_a_fetch_and_later_misses_join_it),
      cmocka_unit_test(test_finish_hands_back_waiters_in_arrival_order),
      cmocka_unit_test(test_finish_by_another_call_id_changes_nothing),
      cmocka_unit_test(test_full_table_refuses_new_keys_but_joins_open_ones),
      cmocka_unit_test(test_keys_differing_in_length_or_bytes_are_distinct_through_growth),
      cmocka_unit_test(test_first_report_is_due_at_once),
      cmocka_unit_test(test_change_is_reported_after_min_interval_and_not_before),
      cmocka_unit_test(test_clean_set_is_reported_every_period),
      cmocka_unit_test(test_failed_report_is_retried_after_min_interval),
      cmocka_unit_test(test_metadata_key_names_ip_and_update_port),
      cmocka_unit_test(test_report_payload_is_lww_of_a_string_set),
      cmocka_unit_test_setup_teardown(test_object_payload_is_stored_as_object_and_rebuilt_exactly,
                                      vsetup, vteardown),
      cmocka_unit_test_setup_teardown(test_plain_lww_and_sets_are_stored_raw, vsetup, vteardown),
      cmocka_unit_test_setup_teardown(
          test_value_that_does_not_reserialize_identically_is_stored_raw, vsetup, vteardown),
      cmocka_unit_test_setup_teardown(test_malformed_payload_is_refused_and_nothing_stored,
                                      vsetup, vteardown),
      cmocka_unit_test(test_payload_of_a_blob_with_foreign_meta_is_corrupt),
      cmocka_unit_test(test_put_reply_lists_each_keys_kvs_outcome),
      cmocka_unit_test(test_put_reply_of_few_keys_needs_no_memory),
      cmocka_unit_test(test_put_reply_without_memory_is_an_error_for_the_whole_put),
      cmocka_unit_test(test_reply_error_mapping_keeps_outcomes_and_refuses_the_rest),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
