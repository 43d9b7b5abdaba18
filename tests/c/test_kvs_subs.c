/* Tests of the per-worker cache subscription table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sq_error.h"
#include "subs.h"

static size_t lookup(kvs_subs_t *s, const char *key, const char **eps) {
  return kvs_subs_lookup(s, key, strlen(key), eps, KVS_SUBS_MAX_CACHES);
}

static void test_subs_map_keys_to_every_cache_holding_them(void **state) {
  (void)state;
  kvs_subs_t *s;
  assert_int_equal(kvs_subs_create(7150, &s), 0);
  const char *a_keys[] = {"x", "y"};
  const size_t a_lens[] = {1, 1};
  const char *b_keys[] = {"y"};
  const size_t b_lens[] = {1};
  assert_int_equal(kvs_subs_update(s, "10.0.0.1:7151", 13, a_keys, a_lens, 2, 100), 0);
  assert_int_equal(kvs_subs_update(s, "10.0.0.2", 8, b_keys, b_lens, 1, 100), 0);
  const char *eps[KVS_SUBS_MAX_CACHES];
  assert_int_equal(lookup(s, "x", eps), 1);
  assert_string_equal(eps[0], "tcp://10.0.0.1:7151");
  assert_int_equal(lookup(s, "y", eps), 2);
  assert_string_equal(eps[1], "tcp://10.0.0.2:7150"); /* Anna's bare-ip form */
  assert_int_equal(lookup(s, "z", eps), 0);
  /* A new key set replaces the old one. */
  assert_int_equal(kvs_subs_update(s, "10.0.0.1:7151", 13, b_keys, b_lens, 1, 200), 0);
  assert_int_equal(lookup(s, "x", eps), 0);
  assert_int_equal(lookup(s, "y", eps), 2);
  /* An empty set forgets the cache. */
  assert_int_equal(kvs_subs_update(s, "10.0.0.2", 8, NULL, NULL, 0, 200), 0);
  assert_int_equal(lookup(s, "y", eps), 1);
  assert_int_equal(kvs_subs_caches(s), 1);
  kvs_subs_destroy(s);
}

static void test_subs_forget_silent_caches_and_refuse_bad_ids(void **state) {
  (void)state;
  kvs_subs_t *s;
  assert_int_equal(kvs_subs_create(7150, &s), 0);
  const char *keys[] = {"k"};
  const size_t lens[] = {1};
  assert_int_equal(kvs_subs_update(s, "old:1", 5, keys, lens, 1, 1000), 0);
  assert_int_equal(kvs_subs_update(s, "new:2", 5, keys, lens, 1, 9000), 0);
  assert_int_equal(kvs_subs_expire(s, 10000, 5000), 1);
  const char *eps[KVS_SUBS_MAX_CACHES];
  assert_int_equal(lookup(s, "k", eps), 1);
  assert_string_equal(eps[0], "tcp://new:2");
  assert_int_equal(kvs_subs_update(s, "bad id", 6, keys, lens, 1, 0), SQ_EINVAL);
  assert_int_equal(kvs_subs_update(s, "a/b", 3, keys, lens, 1, 0), SQ_EINVAL);
  assert_int_equal(kvs_subs_update(s, "", 0, keys, lens, 1, 0), SQ_EINVAL);
  char id[32];
  int refused = 0;
  for (int i = 0; i < KVS_SUBS_MAX_CACHES + 5; i++) {
    int n = snprintf(id, sizeof(id), "c%d:1", i);
    if (kvs_subs_update(s, id, (size_t)n, keys, lens, 1, 9000) == SQ_ETOOBIG) refused++;
  }
  assert_int_equal(refused, 6); /* "new:2" holds one of the 64 slots */
  assert_int_equal(lookup(s, "k", eps), KVS_SUBS_MAX_CACHES);
  kvs_subs_destroy(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_subs_map_keys_to_every_cache_holding_them),
      cmocka_unit_test(test_subs_forget_silent_caches_and_refuse_bad_ids),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
