/* test_ring: placement by the global and local rings.
 *
 * Placement is checked against hash_reference.cpp, a std::map transcription of
 * Anna's rings built with the real std::hash, for thousands of random keys with
 * several nodes and thread counts. Where squall deliberately differs from Anna
 * (collisions, removal, R beyond the node count) the tests pin squall's behaviour. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hash.h"
#include "hash_reference.h"
#include "ring.h"
#include "sq_error.h"

/* Two nodes whose virtual nodes collide on the global ring (found by search):
 * "GLOBAL10.0.0.1:0_1398" and "GLOBAL10.0.2.196:0_2232" both hash to this. */
#define COLL_A "10.0.0.1"
#define COLL_B "10.0.2.196"
#define COLL_POS 1649376573u

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* A random key of 0..64 bytes, printable or arbitrary. */
static size_t random_key(uint64_t *s, char *buf) {
  size_t len = splitmix(s) % 65;
  bool printable = splitmix(s) & 1;
  for (size_t i = 0; i < len; i++) {
    uint8_t c = (uint8_t)splitmix(s);
    buf[i] = (char)(printable ? 0x20 + c % 95 : c);
  }
  return len;
}

static sq_global_ring_t *global_ring(const char *const *ips, size_t n) {
  sq_global_ring_t *r = NULL;
  assert_int_equal(sq_global_ring_create(SQ_RING_VNODES, &r), 0);
  for (size_t i = 0; i < n; i++) {
    char pub[64];
    bool changed = false;
    snprintf(pub, sizeof pub, "pub-%s", ips[i]);
    assert_int_equal(sq_global_ring_insert(r, pub, ips[i], 0, &changed), 0);
    assert_true(changed);
  }
  return r;
}

static const char *const eight[] = {"10.1.0.7", "10.1.0.3", "192.168.4.20", "10.1.0.1",
                                    "172.16.0.9", "10.1.0.12", "10.1.0.5", "10.1.1.1"};
/* The same, sorted by bytes: Anna's std::map keeps the first inserted node on a
 * collision, squall the smaller IP; inserted in this order both agree. */
static const char *const eight_sorted[] = {"10.1.0.1", "10.1.0.12", "10.1.0.3",
                                           "10.1.0.5", "10.1.0.7", "10.1.1.1",
                                           "172.16.0.9", "192.168.4.20"};

static void test_global_ring_places_random_keys_like_anna(void **state) {
  sq_global_ring_t *r = global_ring(eight, 8);
  ref_global_ring_t *ref = ref_global_ring_new();
  const sq_ring_node_t *got[8];
  const char *want[8];
  char key[64];
  uint64_t seed = 1;
  (void)state;
  if (!ref_is_libstdcxx())
    skip();
  for (size_t i = 0; i < 8; i++)
    assert_true(ref_global_ring_insert(ref, "x", eight_sorted[i], 0));
  assert_int_equal(sq_global_ring_entry_count(r), 8 * SQ_RING_VNODES);
  for (int k = 0; k < 20000; k++) {
    size_t len = random_key(&seed, key), n = 0;
    uint32_t R = 1 + k % 8;
    size_t nw = ref_responsible_global(ref, key, len, R, want, 8);
    assert_int_equal(sq_global_ring_responsible(r, key, len, R, got, 8, &n), 0);
    assert_int_equal(n, nw);
    assert_int_equal(n, R);
    for (size_t j = 0; j < n; j++)
      assert_string_equal(got[j]->private_ip, want[j]);
    assert_ptr_equal(sq_global_ring_find_pos(r, sq_ring_global_pos(key, len)), got[0]);
  }
  ref_global_ring_free(ref);
  sq_global_ring_destroy(r);
}

static void test_local_ring_places_random_keys_like_anna(void **state) {
  static const uint32_t counts[] = {1, 2, 4, 7, 16};
  uint32_t got[16];
  unsigned want[16];
  char key[64];
  uint64_t seed = 2;
  (void)state;
  if (!ref_is_libstdcxx())
    skip();
  for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
    sq_local_ring_t *r = NULL;
    ref_local_ring_t *ref = ref_local_ring_new(counts[c]);
    assert_int_equal(sq_local_ring_create(counts[c], SQ_RING_VNODES, &r), 0);
    assert_int_equal(sq_local_ring_thread_count(r), counts[c]);
    for (int k = 0; k < 4000; k++) {
      size_t len = random_key(&seed, key), n = 0;
      uint32_t L = 1 + (uint32_t)k % counts[c];
      size_t nw = ref_responsible_local(ref, key, len, L, want, 16);
      assert_int_equal(sq_local_ring_responsible(r, key, len, L, got, 16, &n), 0);
      assert_int_equal(n, nw);
      for (size_t j = 0; j < n; j++)
        assert_int_equal(got[j], want[j]);
      assert_int_equal(sq_local_ring_find_pos(r, sq_ring_local_pos(key, len)), got[0]);
    }
    ref_local_ring_free(ref);
    sq_local_ring_destroy(r);
  }
}

static void test_replica_set_is_global_times_local_node_major(void **state) {
  sq_global_ring_t *g = global_ring(eight, 8);
  sq_local_ring_t *l = NULL;
  sq_ring_replica_t rep[64];
  const sq_ring_node_t *nodes[8];
  uint32_t tids[4];
  char key[64];
  uint64_t seed = 3;
  (void)state;
  assert_int_equal(sq_local_ring_create(4, SQ_RING_VNODES, &l), 0);
  for (int k = 0; k < 2000; k++) {
    size_t len = random_key(&seed, key), n = 0, nn = 0, nt = 0;
    uint32_t R = 1 + k % 3, L = 1 + k % 4;
    assert_int_equal(sq_ring_replicas(g, l, key, len, R, L, rep, 64, &n), 0);
    sq_global_ring_responsible(g, key, len, R, nodes, 8, &nn);
    sq_local_ring_responsible(l, key, len, L, tids, 4, &nt);
    assert_int_equal(n, R * L);
    for (size_t i = 0; i < n; i++) {
      assert_ptr_equal(rep[i].node, nodes[i / L]);
      assert_int_equal(rep[i].tid, tids[i % L]);
    }
    /* A smaller output array gets a prefix of the same order. */
    assert_int_equal(sq_ring_replicas(g, l, key, len, R, L, rep, 3, &n), 0);
    assert_int_equal(n, R * L < 3 ? R * L : 3);
    for (size_t i = 0; i < n; i++) {
      assert_ptr_equal(rep[i].node, nodes[i / L]);
      assert_int_equal(rep[i].tid, tids[i % L]);
    }
  }
  size_t n0 = 99;
  assert_int_equal(sq_ring_replicas(g, l, "k", 1, 0, 1, rep, 64, &n0), 0);
  assert_int_equal(n0, 0);   /* global replication 0: the key is not in this tier */
  sq_local_ring_destroy(l);
  sq_global_ring_destroy(g);
}

/* Position of node `ip`'s vnode v, computed here from the definition. */
static uint32_t vnode_pos(const char *ip, unsigned v) {
  char name[128];
  int len = snprintf(name, sizeof name, "GLOBAL%s:0_%u", ip, v);
  return (uint32_t)sq_hash_std(name, (size_t)len);
}

static void test_global_lookup_takes_first_entry_at_or_after_and_wraps(void **state) {
  static const char *const ips[] = {"10.9.0.1", "10.9.0.2", "10.9.0.3"};
  sq_global_ring_t *r = global_ring(ips, 3);
  uint32_t lo = UINT32_MAX, hi = 0;
  const char *lo_ip = NULL, *hi_ip = NULL;
  (void)state;
  for (size_t i = 0; i < 3; i++)
    for (unsigned v = 0; v < SQ_RING_VNODES; v++) {
      uint32_t p = vnode_pos(ips[i], v);
      if (p < lo || lo_ip == NULL)
        lo = p, lo_ip = ips[i];
      if (p > hi || hi_ip == NULL)
        hi = p, hi_ip = ips[i];
      /* A key exactly at a vnode's position belongs to that vnode. */
      assert_string_equal(sq_global_ring_find_pos(r, p)->private_ip, ips[i]);
    }
  assert_true(hi < UINT32_MAX);   /* true for these IPs; the wrap needs room above */
  assert_string_equal(sq_global_ring_find_pos(r, 0)->private_ip, lo_ip);
  assert_string_equal(sq_global_ring_find_pos(r, hi)->private_ip, hi_ip);
  assert_string_equal(sq_global_ring_find_pos(r, hi + 1)->private_ip, lo_ip);
  assert_string_equal(sq_global_ring_find_pos(r, UINT32_MAX)->private_ip, lo_ip);
  sq_global_ring_destroy(r);
}

static void test_local_lookup_wraps_past_the_last_entry(void **state) {
  sq_local_ring_t *r = NULL;
  uint64_t lo = UINT64_MAX, hi = 0;
  uint32_t lo_t = 0, hi_t = 0;
  char name[32];
  (void)state;
  assert_int_equal(sq_local_ring_create(3, SQ_RING_VNODES, &r), 0);
  for (uint32_t t = 0; t < 3; t++)
    for (unsigned v = 0; v < SQ_RING_VNODES; v++) {
      int len = snprintf(name, sizeof name, "%u_%u", t, v);
      uint64_t p = sq_hash_std(name, (size_t)len);
      if (p < lo)
        lo = p, lo_t = t;
      if (p > hi)
        hi = p, hi_t = t;
      assert_int_equal(sq_local_ring_find_pos(r, p), t);
    }
  assert_true(hi < UINT64_MAX);
  assert_int_equal(sq_local_ring_find_pos(r, 0), lo_t);
  assert_int_equal(sq_local_ring_find_pos(r, hi), hi_t);
  assert_int_equal(sq_local_ring_find_pos(r, hi + 1), lo_t);
  assert_int_equal(sq_local_ring_find_pos(r, UINT64_MAX), lo_t);
  sq_local_ring_destroy(r);
}

static void test_responsible_stops_at_every_node_when_R_exceeds_nodes(void **state) {
  static const char *const ips[] = {"10.2.0.1", "10.2.0.2", "10.2.0.3"};
  sq_global_ring_t *r = global_ring(ips, 3);
  sq_local_ring_t *l = NULL;
  const sq_ring_node_t *got[8], *pre[2];
  uint32_t tids[8];
  sq_ring_replica_t rep[64];
  size_t n = 0, np = 0;
  (void)state;
  assert_int_equal(sq_global_ring_responsible(r, "key", 3, UINT32_MAX, got, 8, &n), 0);
  assert_int_equal(n, 3);   /* Anna's loop would never end here */
  assert_true(got[0] != got[1] && got[1] != got[2] && got[0] != got[2]);
  assert_ptr_equal(got[0], sq_global_ring_find_pos(r, sq_ring_global_pos("key", 3)));
  /* The output capacity bounds the walk too, keeping the clockwise prefix. */
  assert_int_equal(sq_global_ring_responsible(r, "key", 3, UINT32_MAX, pre, 2, &np), 0);
  assert_int_equal(np, 2);
  assert_ptr_equal(pre[0], got[0]);
  assert_ptr_equal(pre[1], got[1]);

  assert_int_equal(sq_local_ring_create(4, SQ_RING_VNODES, &l), 0);
  assert_int_equal(sq_local_ring_responsible(l, "key", 3, UINT32_MAX, tids, 8, &n), 0);
  assert_int_equal(n, 4);
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      assert_true(tids[i] != tids[j] && tids[i] < 4);
  assert_int_equal(sq_ring_replicas(r, l, "key", 3, UINT32_MAX, UINT32_MAX, rep, 64, &n),
                   0);
  assert_int_equal(n, 12);
  sq_local_ring_destroy(l);
  sq_global_ring_destroy(r);
}

static void test_empty_ring_has_no_servers_and_zero_replication_no_replicas(void **state) {
  sq_global_ring_t *r = NULL;
  sq_local_ring_t *l = NULL;
  const sq_ring_node_t *got[2];
  sq_ring_replica_t rep[2];
  size_t n = 7;
  (void)state;
  assert_int_equal(sq_global_ring_create(SQ_RING_VNODES, &r), 0);
  assert_int_equal(sq_local_ring_create(1, 8, &l), 0);
  assert_null(sq_global_ring_find_pos(r, 5));
  assert_int_equal(sq_global_ring_responsible(r, "k", 1, 1, got, 2, &n), SQ_ENOSERVERS);
  assert_int_equal(n, 0);
  assert_int_equal(sq_ring_replicas(r, l, "k", 1, 1, 1, rep, 2, &n), SQ_ENOSERVERS);
  assert_int_equal(sq_global_ring_responsible(r, "k", 1, 0, got, 2, &n), 0);
  assert_int_equal(n, 0);
  sq_local_ring_destroy(l);
  sq_global_ring_destroy(r);
}

static void test_ring_of_one_and_two_entries_finds_and_wraps(void **state) {
  sq_global_ring_t *r = NULL;
  uint32_t pa = vnode_pos("10.7.0.1", 0), pb = vnode_pos("10.7.0.2", 0);
  uint32_t lo = pa < pb ? pa : pb, hi = pa < pb ? pb : pa;
  const char *lo_ip = pa < pb ? "10.7.0.1" : "10.7.0.2";
  const char *hi_ip = pa < pb ? "10.7.0.2" : "10.7.0.1";
  (void)state;
  assert_int_equal(sq_global_ring_create(1, &r), 0);
  assert_int_equal(sq_global_ring_insert(r, "p", "10.7.0.1", 0, NULL), 0);
  assert_string_equal(sq_global_ring_find_pos(r, 0)->private_ip, "10.7.0.1");
  assert_string_equal(sq_global_ring_find_pos(r, UINT32_MAX)->private_ip, "10.7.0.1");
  assert_int_equal(sq_global_ring_insert(r, "p", "10.7.0.2", 0, NULL), 0);
  assert_true(lo < hi && hi < UINT32_MAX);
  assert_string_equal(sq_global_ring_find_pos(r, lo)->private_ip, lo_ip);
  assert_string_equal(sq_global_ring_find_pos(r, lo + 1)->private_ip, hi_ip);
  assert_string_equal(sq_global_ring_find_pos(r, hi)->private_ip, hi_ip);
  assert_string_equal(sq_global_ring_find_pos(r, hi + 1)->private_ip, lo_ip);
  sq_global_ring_destroy(r);
}

static void test_vnode_collision_keeps_both_entries_ordered_by_ip(void **state) {
  static const char *const ab[] = {COLL_A, COLL_B}, *const ba[] = {COLL_B, COLL_A};
  sq_global_ring_t *r1 = global_ring(ab, 2), *r2 = global_ring(ba, 2);
  const sq_ring_node_t *got[2];
  size_t n = 0;
  (void)state;
  assert_int_equal(vnode_pos(COLL_A, 1398), COLL_POS);   /* the premise */
  assert_int_equal(vnode_pos(COLL_B, 2232), COLL_POS);
  assert_int_equal(sq_global_ring_entry_count(r1), 2 * SQ_RING_VNODES);
  /* Same owner whatever the insertion order: the smaller private IP. */
  assert_string_equal(sq_global_ring_find_pos(r1, COLL_POS)->private_ip, COLL_A);
  assert_string_equal(sq_global_ring_find_pos(r2, COLL_POS)->private_ip, COLL_A);
  assert_int_equal(sq_global_ring_responsible_pos(r2, COLL_POS, 2, got, 2, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(got[0]->private_ip, COLL_A);
  assert_string_equal(got[1]->private_ip, COLL_B);
  sq_global_ring_destroy(r1);
  sq_global_ring_destroy(r2);
}

static void test_remove_after_collision_leaves_the_other_nodes_entry(void **state) {
  static const char *const ab[] = {COLL_A, COLL_B};
  sq_global_ring_t *r = global_ring(ab, 2);
  ref_global_ring_t *ref = ref_global_ring_new();
  (void)state;
  /* Anna's erase by position takes A's colliding entry along with B's. */
  ref_global_ring_insert(ref, "x", COLL_A, 0);
  ref_global_ring_insert(ref, "x", COLL_B, 0);
  ref_global_ring_remove(ref, "x", COLL_B);
  if (ref_is_libstdcxx())
    assert_int_equal(ref_global_ring_entry_count(ref), SQ_RING_VNODES - 1);

  assert_int_equal(sq_global_ring_remove(r, COLL_B), 0);
  assert_int_equal(sq_global_ring_entry_count(r), SQ_RING_VNODES);
  assert_int_equal(sq_global_ring_node_count(r), 1);
  assert_string_equal(sq_global_ring_find_pos(r, COLL_POS)->private_ip, COLL_A);
  assert_int_equal(sq_global_ring_remove(r, COLL_B), SQ_ENOTFOUND);

  /* And the other way round: B keeps its colliding entry when A leaves. */
  assert_int_equal(sq_global_ring_insert(r, "pb", COLL_B, 0, NULL), 0);
  assert_int_equal(sq_global_ring_remove(r, COLL_A), 0);
  assert_int_equal(sq_global_ring_entry_count(r), SQ_RING_VNODES);
  assert_string_equal(sq_global_ring_find_pos(r, COLL_POS)->private_ip, COLL_B);
  ref_global_ring_free(ref);
  sq_global_ring_destroy(r);
}

static void test_remove_places_keys_as_if_the_node_never_joined(void **state) {
  sq_global_ring_t *r = global_ring(eight, 8);
  static const char *const seven[] = {"10.1.0.7", "10.1.0.3", "192.168.4.20",
                                      "172.16.0.9", "10.1.0.12", "10.1.0.5", "10.1.1.1"};
  sq_global_ring_t *fresh = global_ring(seven, 7);
  const sq_ring_node_t *kept = sq_global_ring_get(r, "10.1.1.1");
  const sq_ring_node_t *a[3], *b[3];
  char key[64];
  uint64_t seed = 5;
  (void)state;
  assert_int_equal(sq_global_ring_remove(r, "10.1.0.1"), 0);
  assert_null(sq_global_ring_get(r, "10.1.0.1"));
  assert_ptr_equal(sq_global_ring_get(r, "10.1.1.1"), kept);   /* records do not move */
  assert_int_equal(sq_global_ring_node_count(r), 7);
  assert_int_equal(sq_global_ring_entry_count(r), 7 * SQ_RING_VNODES);
  for (size_t i = 0; i < 7; i++)
    assert_non_null(sq_global_ring_get(r, sq_global_ring_node_at(r, i)->private_ip));
  assert_null(sq_global_ring_node_at(r, 7));
  for (int k = 0; k < 5000; k++) {
    size_t len = random_key(&seed, key), na = 0, nb = 0;
    sq_global_ring_responsible(r, key, len, 3, a, 3, &na);
    sq_global_ring_responsible(fresh, key, len, 3, b, 3, &nb);
    assert_int_equal(na, nb);
    for (size_t j = 0; j < na; j++)
      assert_string_equal(a[j]->private_ip, b[j]->private_ip);
  }
  sq_global_ring_destroy(fresh);
  sq_global_ring_destroy(r);
}

static void test_rejoin_needs_a_higher_join_count_and_keeps_positions(void **state) {
  sq_global_ring_t *r = NULL;
  ref_global_ring_t *ref = ref_global_ring_new();
  const sq_ring_node_t *before, *node;
  bool changed = true;
  uint32_t probe = 123456789u;
  (void)state;
  assert_int_equal(sq_global_ring_create(SQ_RING_VNODES, &r), 0);
  assert_int_equal(sq_global_ring_insert(r, "1.1.1.1", "10.0.0.1", 0, &changed), 0);
  assert_true(changed);
  assert_int_equal(sq_global_ring_insert(r, "2.2.2.2", "10.0.0.9", 0, NULL), 0);
  before = sq_global_ring_find_pos(r, probe);
  /* Known IP, same count (even with another public IP): ignored, as in Anna. */
  assert_int_equal(sq_global_ring_insert(r, "3.3.3.3", "10.0.0.1", 0, &changed), 0);
  assert_false(changed);
  node = sq_global_ring_get(r, "10.0.0.1");
  assert_string_equal(node->public_ip, "1.1.1.1");
  /* A higher count is a rejoin: reported, recorded, positions untouched. */
  assert_int_equal(sq_global_ring_insert(r, "3.3.3.3", "10.0.0.1", 2, &changed), 0);
  assert_true(changed);
  assert_ptr_equal(sq_global_ring_get(r, "10.0.0.1"), node);
  assert_int_equal(node->join_count, 2);
  assert_string_equal(node->public_ip, "3.3.3.3");
  assert_int_equal(sq_global_ring_entry_count(r), 2 * SQ_RING_VNODES);
  assert_int_equal(sq_global_ring_node_count(r), 2);
  assert_ptr_equal(sq_global_ring_find_pos(r, probe), before);
  /* A stale, lower count changes nothing. */
  assert_int_equal(sq_global_ring_insert(r, "4.4.4.4", "10.0.0.1", 1, &changed), 0);
  assert_false(changed);
  assert_int_equal(node->join_count, 2);
  /* Anna's answers for the same sequence. */
  assert_true(ref_global_ring_insert(ref, "1.1.1.1", "10.0.0.1", 0));
  assert_false(ref_global_ring_insert(ref, "3.3.3.3", "10.0.0.1", 0));
  assert_true(ref_global_ring_insert(ref, "3.3.3.3", "10.0.0.1", 2));
  assert_false(ref_global_ring_insert(ref, "4.4.4.4", "10.0.0.1", 1));
  /* After a remove the join count is forgotten: count 0 is a new join again. */
  assert_int_equal(sq_global_ring_remove(r, "10.0.0.1"), 0);
  assert_int_equal(sq_global_ring_insert(r, "1.1.1.1", "10.0.0.1", 0, &changed), 0);
  assert_true(changed);
  ref_global_ring_free(ref);
  sq_global_ring_destroy(r);
}

static void test_metadata_keys_are_those_whose_first_field_is_anna_metadata(void **state) {
  (void)state;
  assert_true(sq_key_is_metadata("ANNA_METADATA|replication|k", 27));
  assert_true(sq_key_is_metadata("ANNA_METADATA|", 14));
  assert_true(sq_key_is_metadata("ANNA_METADATA", 13));   /* no '|': the whole key */
  assert_true(sq_key_is_metadata("ANNA_METADATA|\0x", 16));
  assert_false(sq_key_is_metadata("ANNA_METADATAX|stats", 20));
  assert_false(sq_key_is_metadata("ANNA_METADAT", 12));
  assert_false(sq_key_is_metadata("ANNA_METADATA|", 12));  /* length rules, not NUL */
  assert_false(sq_key_is_metadata("anna_metadata|x", 15));
  assert_false(sq_key_is_metadata("x|ANNA_METADATA|y", 17));
  assert_false(sq_key_is_metadata(" ANNA_METADATA|y", 16));
  assert_false(sq_key_is_metadata("", 0));
  assert_false(sq_key_is_metadata("funcs/f", 7));
}

static void test_client_address_is_public_ip_and_port_base_plus_tid(void **state) {
  sq_ring_node_t node = {.public_ip = "54.1.2.3", .private_ip = "10.0.0.1"};
  char buf[SQ_RING_ADDR_MAX], tiny[12];
  (void)state;
  assert_int_equal(sq_ring_address(&node, 3, SQ_RING_KEY_PORT_BASE, buf, sizeof buf), 19);
  assert_string_equal(buf, "tcp://54.1.2.3:6203");
  assert_int_equal(sq_ring_address(&node, 0, SQ_RING_KEY_PORT_BASE + 100, buf,
                                   sizeof buf), 19);
  assert_string_equal(buf, "tcp://54.1.2.3:6300");
  assert_int_equal(sq_ring_address(&node, 65535 - 6200 + 1, 6200, buf, sizeof buf),
                   SQ_EINVAL);
  assert_string_equal(buf, "");
  assert_int_equal(sq_ring_address(&node, 0, 70000, buf, sizeof buf), SQ_EINVAL);
  assert_int_equal(sq_ring_address(&node, 1, 6200, tiny, sizeof tiny), SQ_ETOOBIG);
  assert_string_equal(tiny, "");
  memset(node.public_ip, 'h', SQ_RING_HOST_MAX);
  node.public_ip[SQ_RING_HOST_MAX] = '\0';
  assert_int_equal(sq_ring_address(&node, 65535 - 6200, 6200, buf, sizeof buf),
                   (int)sizeof buf - 1);   /* the longest address fits exactly */
}

static void test_insert_rejects_malformed_ips_and_leaves_ring_unchanged(void **state) {
  sq_global_ring_t *r = NULL;
  char long_ip[SQ_RING_HOST_MAX + 2];
  bool changed = true;
  (void)state;
  memset(long_ip, '1', sizeof long_ip - 1);
  long_ip[sizeof long_ip - 1] = '\0';
  assert_int_equal(sq_global_ring_create(SQ_RING_VNODES, &r), 0);
  const char *bad[] = {NULL, "", "10.0.0.1 ", "10.0\n", "10.\x7f", "\xc3\xa9", long_ip};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(sq_global_ring_insert(r, "1.1.1.1", bad[i], 0, &changed), SQ_EINVAL);
    assert_false(changed);
    assert_int_equal(sq_global_ring_insert(r, bad[i], "10.0.0.1", 0, NULL), SQ_EINVAL);
  }
  assert_int_equal(sq_global_ring_node_count(r), 0);
  assert_int_equal(sq_global_ring_entry_count(r), 0);
  long_ip[SQ_RING_HOST_MAX] = '\0';   /* the longest accepted */
  assert_int_equal(sq_global_ring_insert(r, long_ip, long_ip, 0, &changed), 0);
  assert_true(changed);
  assert_int_equal(sq_global_ring_remove(r, NULL), SQ_ENOTFOUND);
  sq_global_ring_destroy(r);
}

static void test_clone_is_a_deep_independent_copy(void **state) {
  sq_global_ring_t *r = global_ring(eight, 8), *c = NULL;
  const sq_ring_node_t *a[8], *b[8];
  char key[64];
  uint64_t seed = 9;
  (void)state;
  assert_int_equal(sq_global_ring_clone(r, &c), 0);
  assert_ptr_not_equal(sq_global_ring_get(c, "10.1.0.1"), sq_global_ring_get(r, "10.1.0.1"));
  for (int k = 0; k < 1000; k++) {
    size_t len = random_key(&seed, key), na = 0, nb = 0;
    sq_global_ring_responsible(r, key, len, 8, a, 8, &na);
    sq_global_ring_responsible(c, key, len, 8, b, 8, &nb);
    assert_int_equal(na, nb);
    for (size_t j = 0; j < na; j++)
      assert_string_equal(a[j]->private_ip, b[j]->private_ip);
  }
  assert_int_equal(sq_global_ring_remove(c, "10.1.0.1"), 0);
  assert_int_equal(sq_global_ring_node_count(r), 8);
  assert_int_equal(sq_global_ring_entry_count(r), 8 * SQ_RING_VNODES);
  assert_non_null(sq_global_ring_get(r, "10.1.0.1"));
  sq_global_ring_destroy(c);
  sq_global_ring_destroy(r);
}

static void test_sizes_out_of_range_are_refused(void **state) {
  sq_global_ring_t *g = NULL;
  sq_local_ring_t *l = NULL;
  char ip[32];
  (void)state;
  assert_int_equal(sq_global_ring_create(0, &g), SQ_EINVAL);
  assert_null(g);
  assert_int_equal(sq_global_ring_create(SQ_RING_MAX_VNODES + 1, &g), SQ_EINVAL);
  assert_int_equal(sq_local_ring_create(0, SQ_RING_VNODES, &l), SQ_EINVAL);
  assert_int_equal(sq_local_ring_create(SQ_RING_MAX_THREADS + 1, 1, &l), SQ_EINVAL);
  assert_int_equal(sq_local_ring_create(4, 0, &l), SQ_EINVAL);
  assert_int_equal(sq_local_ring_create(SQ_RING_MAX_THREADS, SQ_RING_MAX_VNODES, &l),
                   SQ_ETOOBIG);
  assert_null(l);
  /* A flood of joins stops at SQ_RING_MAX_NODES (one vnode each keeps this fast). */
  assert_int_equal(sq_global_ring_create(1, &g), 0);
  for (unsigned i = 0; i < SQ_RING_MAX_NODES; i++) {
    snprintf(ip, sizeof ip, "10.%u.%u.1", i / 256, i % 256);
    assert_int_equal(sq_global_ring_insert(g, ip, ip, 0, NULL), 0);
  }
  assert_int_equal(sq_global_ring_insert(g, "9.9.9.9", "9.9.9.9", 0, NULL), SQ_ETOOBIG);
  assert_int_equal(sq_global_ring_node_count(g), SQ_RING_MAX_NODES);
  assert_int_equal(sq_global_ring_entry_count(g), SQ_RING_MAX_NODES);
  sq_global_ring_destroy(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_global_ring_places_random_keys_like_anna),
      cmocka_unit_test(test_local_ring_places_random_keys_like_anna),
      cmocka_unit_test(test_replica_set_is_global_times_local_node_major),
      cmocka_unit_test(test_global_lookup_takes_first_entry_at_or_after_and_wraps),
      cmocka_unit_test(test_local_lookup_wraps_past_the_last_entry),
      cmocka_unit_test(test_responsible_stops_at_every_node_when_R_exceeds_nodes),
      cmocka_unit_test(test_empty_ring_has_no_servers_and_zero_replication_no_replicas),
      cmocka_unit_test(test_ring_of_one_and_two_entries_finds_and_wraps),
      cmocka_unit_test(test_vnode_collision_keeps_both_entries_ordered_by_ip),
      cmocka_unit_test(test_remove_after_collision_leaves_the_other_nodes_entry),
      cmocka_unit_test(test_remove_places_keys_as_if_the_node_never_joined),
      cmocka_unit_test(test_rejoin_needs_a_higher_join_count_and_keeps_positions),
      cmocka_unit_test(test_metadata_keys_are_those_whose_first_field_is_anna_metadata),
      cmocka_unit_test(test_client_address_is_public_ip_and_port_base_plus_tid),
      cmocka_unit_test(test_insert_rejects_malformed_ips_and_leaves_ring_unchanged),
      cmocka_unit_test(test_clone_is_a_deep_independent_copy),
      cmocka_unit_test(test_sizes_out_of_range_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
