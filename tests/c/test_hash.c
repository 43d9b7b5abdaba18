/* test_hash: sq_hash_std must be libstdc++'s std::hash<std::string>, bit for bit.
 *
 * The oracle is the real std::hash, compiled from hash_reference.cpp with the C++
 * compiler of the build. When that library is not libstdc++ (a clang/libc++ build)
 * the oracle comparisons are skipped; the known answers below, computed once with
 * g++/libstdc++ on x86-64, still pin the values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "hash.h"
#include "hash_reference.h"

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void fill_random(uint64_t *s, uint8_t *buf, size_t len) {
  for (size_t i = 0; i < len; i++)
    buf[i] = (uint8_t)splitmix(s);
}

static void test_hash_matches_libstdcxx_known_answers(void **state) {
  static const struct {
    const char *s;
    size_t len;
    uint64_t h;
  } ka[] = {
      {"", 0, 0x553e93901e462a6eULL},
      {"a", 1, 0x454ddee488c1ed6bULL},
      {"hello", 5, 0x26553298fdbe39c8ULL},
      {"abcdefgh", 8, 0x783db3e38db898bbULL},
      {"abcdefghi", 9, 0xb4ec9257851c8aafULL},
      {"GLOBAL127.0.0.1:0_0", 19, 0x6940e1a7d8edf2c1ULL},
      {"0_0", 3, 0x1666052a502763adULL},
      {"2_2999", 6, 0x779237788e8467d5ULL},
      {"ANNA_METADATA|replication|k", 27, 0x463cbb5665aadaacULL},
      {"\xff\x80\x01\xfe\x7f\x00\x10", 7, 0x5880efbc61028d52ULL},
  };
  (void)state;
  for (size_t i = 0; i < sizeof ka / sizeof ka[0]; i++)
    assert_int_equal(sq_hash_std(ka[i].s, ka[i].len), ka[i].h);
  assert_int_equal(sq_hash_std(NULL, 0), 0x553e93901e462a6eULL);
}

static void test_hash_equals_std_hash_for_random_strings_of_every_length(void **state) {
  uint8_t buf[64];
  uint64_t seed = 42;
  (void)state;
  if (!ref_is_libstdcxx())
    skip();
  for (size_t len = 0; len <= 64; len++)
    for (int i = 0; i < 400; i++) {
      fill_random(&seed, buf, len);
      if (i % 4 == 0)   /* printable keys too, as real keys mostly are */
        for (size_t j = 0; j < len; j++)
          buf[j] = (uint8_t)(0x20 + buf[j] % 95);
      assert_int_equal(sq_hash_std(buf, len), ref_std_hash(buf, len));
    }
}

static void test_hash_equals_std_hash_for_long_strings(void **state) {
  static uint8_t buf[4099];
  uint64_t seed = 7;
  (void)state;
  if (!ref_is_libstdcxx())
    skip();
  fill_random(&seed, buf, sizeof buf);
  for (size_t len = 65; len <= sizeof buf; len += 61)
    assert_int_equal(sq_hash_std(buf, len), ref_std_hash(buf, len));
}

static void test_hash_does_not_depend_on_alignment(void **state) {
  uint8_t aligned[72], shifted[80];
  uint64_t seed = 3;
  (void)state;
  fill_random(&seed, aligned, sizeof aligned);
  for (size_t off = 1; off < 8; off++) {
    memcpy(shifted + off, aligned, sizeof aligned);
    for (size_t len = 0; len <= sizeof aligned; len++)
      assert_int_equal(sq_hash_std(shifted + off, len), sq_hash_std(aligned, len));
  }
}

static void test_concat_equals_hash_of_joined_bytes_at_every_split(void **state) {
  uint8_t buf[48], a[48], b[48];
  uint64_t seed = 11;
  (void)state;
  for (size_t len = 0; len <= sizeof buf; len++)
    for (int rep = 0; rep < 20; rep++) {
      fill_random(&seed, buf, len);
      uint64_t want = sq_hash_std(buf, len);
      for (size_t cut = 0; cut <= len; cut++) {
        /* Copies so that each piece sits at its own address, as in real use. */
        memcpy(a, buf, cut);
        memcpy(b, buf + cut, len - cut);
        assert_int_equal(sq_hash_std_concat(a, cut, b, len - cut), want);
      }
    }
}

static void test_concat_accepts_null_empty_pieces(void **state) {
  (void)state;
  assert_int_equal(sq_hash_std_concat(NULL, 0, NULL, 0), sq_hash_std("", 0));
  assert_int_equal(sq_hash_std_concat("GLOBAL", 6, NULL, 0), sq_hash_std("GLOBAL", 6));
  assert_int_equal(sq_hash_std_concat(NULL, 0, "key", 3), sq_hash_std("key", 3));
  assert_int_equal(sq_hash_std_concat("GLOBAL", 6, "127.0.0.1:0_0", 13),
                   0x6940e1a7d8edf2c1ULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hash_matches_libstdcxx_known_answers),
      cmocka_unit_test(test_hash_equals_std_hash_for_random_strings_of_every_length),
      cmocka_unit_test(test_hash_equals_std_hash_for_long_strings),
      cmocka_unit_test(test_hash_does_not_depend_on_alignment),
      cmocka_unit_test(test_concat_equals_hash_of_joined_bytes_at_every_split),
      cmocka_unit_test(test_concat_accepts_null_empty_pieces),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
