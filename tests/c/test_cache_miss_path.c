/* test_cache_miss_path: the copy-free pieces of squall-cache's miss path.
 *
 * cache_blob_write_fd (the segment writer: pwritev of head, pickle, padding and
 * buffers) must write exactly the bytes cache_blob_encode produces, including with more
 * pieces than one pwritev batch; and the in-place scan of a KVS Value (daemon_value.c)
 * must store OBJECT only for a Value it can rebuild byte for byte, RAW for every other
 * encoding (non-minimal varints, unknown or repeated fields, truncation), and rebuild
 * the payload exactly either way. The executor's side of the unix-socket channel
 * (cache_uds.h) keeps datagram boundaries, times out, refuses a datagram over the
 * caller's limit without losing step, and reports a closed daemon as SQ_ECLOSED.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_blob.h"
#include "cache_store.h"
#include "cache_uds.h"
#include "daemon_value.h"
#include "lattice.h"
#include "sq_error.h"

typedef struct {
  char dir[256];
  cache_store_t *store;
} fix_t;

static int setup(void **state) {
  fix_t *f = calloc(1, sizeof *f);
  if (!f) return -1;
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(f->dir, sizeof f->dir, "%s/squall-test-miss-XXXXXX", base);
  if (!mkdtemp(f->dir)) return -1;
  cache_store_config_t cfg = {.dir = f->dir, .budget_bytes = 64u << 20, .inline_max = 4096};
  if (cache_store_open(&cfg, &f->store) != 0) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fix_t *f = *state;
  cache_store_close(f->store);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  int rc = system(cmd);
  free(f);
  return rc == 0 ? 0 : -1;
}

/* Reads the whole file at path into a malloc'd buffer; *len gets its size. */
static uint8_t *slurp(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  *len = (size_t)st.st_size;
  uint8_t *p = malloc(*len ? *len : 1);
  assert_non_null(p);
  assert_int_equal(pread(fd, p, *len, 0), (ssize_t)*len);
  close(fd);
  return p;
}

/* Writes obj with cache_blob_write_fd into a fresh file and checks that the file is
 * byte for byte cache_blob_encode's output. */
static void check_write_matches_encode(fix_t *f, const cache_object_t *obj) {
  size_t size = 0;
  assert_int_equal(cache_blob_size(obj, &size), 0);
  uint8_t *want = malloc(size);
  assert_non_null(want);
  memset(want, 0xEE, size); /* encode must overwrite every byte, padding too */
  assert_int_equal(cache_blob_encode(obj, want, size), 0);
  char path[300];
  snprintf(path, sizeof path, "%s/blob", f->dir);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
  assert_true(fd >= 0);
  assert_int_equal(cache_blob_write_fd(obj, fd, size), 0);
  close(fd);
  size_t got_len = 0;
  uint8_t *got = slurp(path, &got_len);
  assert_int_equal(got_len, size);
  assert_memory_equal(got, want, size);
  cache_blob_t b;
  assert_int_equal(cache_blob_parse(got, got_len, &b), 0);
  free(got);
  free(want);
}

static void test_write_fd_writes_exactly_the_encoded_bytes(void **state) {
  fix_t *f = *state;
  uint8_t meta[11], b0[1] = {0xAA}, b1[100], b3[70000];
  memset(meta, 0x5A, sizeof meta);
  memset(b1, 0x11, sizeof b1);
  for (size_t i = 0; i < sizeof b3; i++) b3[i] = (uint8_t)(i * 13);
  const char *pickle = "\x80\x05pickle-stream-of-odd-length";
  cache_span_t bufs[4] = {{b0, 1}, {b1, 100}, {NULL, 0}, {b3, sizeof b3}};
  cache_object_t obj = {SQ_LATTICE_LWW, meta, sizeof meta, pickle, strlen(pickle), bufs, 4};
  check_write_matches_encode(f, &obj);
  cache_object_t bare = {SQ_LATTICE_SET, NULL, 0, "x", 1, NULL, 0};
  check_write_matches_encode(f, &bare);
}

static void test_write_fd_with_more_pieces_than_one_batch(void **state) {
  fix_t *f = *state;
  enum { N = 300 }; /* 2 pieces each (padding + bytes): several pwritev batches */
  cache_span_t bufs[N];
  uint8_t *bytes = malloc(N * 70);
  assert_non_null(bytes);
  for (size_t i = 0; i < N; i++) {
    memset(bytes + i * 70, (int)(i + 1), 70);
    bufs[i] = (cache_span_t){bytes + i * 70, 1 + i % 70};
  }
  cache_object_t obj = {SQ_LATTICE_LWW, "m", 1, "p", 1, bufs, N};
  check_write_matches_encode(f, &obj);
  free(bytes);
}

static void test_write_fd_refuses_a_wrong_size_or_an_unwritable_fd(void **state) {
  fix_t *f = *state;
  cache_object_t obj = {SQ_LATTICE_SET, NULL, 0, "x", 1, NULL, 0};
  size_t size = 0;
  assert_int_equal(cache_blob_size(&obj, &size), 0);
  char path[300];
  snprintf(path, sizeof path, "%s/ro", f->dir);
  int fd = open(path, O_CREAT | O_RDONLY, 0644);
  assert_true(fd >= 0);
  assert_int_equal(cache_blob_write_fd(&obj, fd, size + 1), SQ_EINVAL);
  assert_int_equal(cache_blob_write_fd(&obj, fd, size), -EBADF);
  close(fd);
}

/* ---- the in-place Value scan ----------------------------------------------------- */

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  do {
    p[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) p[n] |= 0x80;
    n++;
  } while (v);
  return n;
}

/* A blob with one buffer of n bytes, malloc'd; *len gets its size. */
static uint8_t *make_blob(size_t n, size_t *len) {
  uint8_t *buf = malloc(n);
  assert_non_null(buf);
  for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(i * 7 + 1);
  cache_span_t span = {buf, n};
  cache_object_t o = {SQ_LATTICE_LWW, NULL, 0, "\x80\x05.", 3, &span, 1};
  assert_int_equal(cache_blob_size(&o, len), 0);
  uint8_t *blob = malloc(*len);
  assert_non_null(blob);
  assert_int_equal(cache_blob_encode(&o, blob, *len), 0);
  free(buf);
  return blob;
}

/* Stores LWW{ts, value bytes} under key; checks the kind it was stored as and that
 * the payload rebuilt from the cache is the payload given. */
static void store_and_check(fix_t *f, const char *key, const uint8_t *value, size_t vlen,
                            bool want_object) {
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = 77;
  l.u.lww.value.data = (uint8_t *)value;
  l.u.lww.value.len = vlen;
  sq_buf_t payload = {0}, blob = {0}, back = {0};
  assert_int_equal(sq_lattice_encode(&l, &payload), 0);
  bool is_object = !want_object;
  assert_int_equal(cache_value_store(f->store, key, strlen(key), SQ_LATTICE_LWW,
                                     payload.data, payload.len, &is_object), 0);
  assert_int_equal(is_object, want_object);
  assert_int_equal(cache_store_get(f->store, key, strlen(key), &blob), 0);
  cache_blob_t b;
  assert_int_equal(cache_blob_parse(blob.data, blob.len, &b), 0);
  assert_int_equal(cache_value_payload(&b, &back), 0);
  assert_int_equal(back.len, payload.len);
  assert_memory_equal(back.data, payload.data, payload.len);
  sq_buf_free(&payload);
  sq_buf_free(&blob);
  sq_buf_free(&back);
}

/* Value{body = blob, type} in canonical protobuf form into v; returns its length. */
static size_t canonical_value(uint8_t *v, const uint8_t *blob, size_t blen, uint64_t type) {
  size_t n = 0;
  v[n++] = 0x0a;
  n += put_varint(v + n, blen);
  memcpy(v + n, blob, blen);
  n += blen;
  if (type) {
    v[n++] = 0x10;
    n += put_varint(v + n, type);
  }
  return n;
}

static void test_canonical_values_are_objects_even_with_a_negative_type(void **state) {
  fix_t *f = *state;
  size_t blen = 0;
  uint8_t *blob = make_blob(9000, &blen); /* above inline_max: a segment */
  uint8_t *v = malloc(blen + 32);
  assert_non_null(v);
  store_and_check(f, "t0", v, canonical_value(v, blob, blen, 0), true);
  store_and_check(f, "t3", v, canonical_value(v, blob, blen, 3), true);
  /* An enum of -1 is packed as a ten-byte sign-extended varint, and rebuilt so. */
  store_and_check(f, "tneg", v, canonical_value(v, blob, blen, UINT64_MAX), true);
  free(v);
  free(blob);
}

static void test_values_protobuf_c_would_not_rebuild_are_stored_raw(void **state) {
  fix_t *f = *state;
  size_t blen = 0;
  uint8_t *blob = make_blob(9000, &blen);
  uint8_t *v = malloc(2 * blen + 64);
  assert_non_null(v);
  /* Body length as a non-minimal varint (one extra 0x80 .. 0x00 byte). */
  size_t n = 0;
  v[n++] = 0x0a;
  n += put_varint(v + n, blen);
  v[n - 1] |= 0x80;
  v[n++] = 0x00;
  memcpy(v + n, blob, blen);
  n += blen;
  store_and_check(f, "nonmin", v, n, false);
  /* An unknown field after a canonical Value. */
  n = canonical_value(v, blob, blen, 1);
  v[n++] = 0x18;
  v[n++] = 0x05;
  store_and_check(f, "unknown", v, n, false);
  /* The body twice (protobuf keeps the last; packing writes it once). */
  n = canonical_value(v, blob, blen, 0);
  n += canonical_value(v + n, blob, blen, 0);
  store_and_check(f, "twice", v, n, false);
  /* A body length running past the end. */
  n = canonical_value(v, blob, blen, 0);
  store_and_check(f, "short", v, n - 1, false);
  /* type 0 written out explicitly (proto3 packing omits it). */
  n = canonical_value(v, blob, blen, 0);
  v[n++] = 0x10;
  v[n++] = 0x00;
  store_and_check(f, "zero", v, n, false);
  free(v);
  free(blob);
}

static void test_uds_keeps_datagrams_and_refuses_oversized_ones(void **state) {
  (void)state;
  int sv[2];
  sq_buf_t in = {0};
  assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
  assert_int_equal(cache_uds_recv(sv[0], 20, 1024, &in), SQ_ETIMEOUT); /* nothing yet */
  uint8_t big[4096];
  memset(big, 0xab, sizeof big);
  assert_int_equal(cache_uds_send(sv[1], "one", 3, 100), 0);
  assert_int_equal(cache_uds_send(sv[1], big, sizeof big, 100), 0);
  assert_int_equal(cache_uds_send(sv[1], "three", 5, 100), 0);
  assert_int_equal(cache_uds_recv(sv[0], 100, 1024, &in), 0);
  assert_int_equal(in.len, 3);
  assert_memory_equal(in.data, "one", 3);
  assert_int_equal(cache_uds_recv(sv[0], 100, 1024, &in), SQ_ETOOBIG); /* dropped whole */
  assert_int_equal(cache_uds_recv(sv[0], 100, 1024, &in), 0);          /* still in step */
  assert_int_equal(in.len, 5);
  assert_memory_equal(in.data, "three", 5);
  assert_int_equal(cache_uds_send(sv[1], big, sizeof big, 100), 0);
  assert_int_equal(cache_uds_recv(sv[0], 100, sizeof big, &in), 0); /* exactly the limit */
  assert_int_equal(in.len, sizeof big);
  assert_memory_equal(in.data, big, sizeof big);
  close(sv[1]);
  assert_int_equal(cache_uds_recv(sv[0], 100, 1024, &in), SQ_ECLOSED);
  assert_int_equal(cache_uds_send(sv[0], "x", 1, 100), SQ_ECLOSED);
  close(sv[0]);
  sq_buf_free(&in);
}

static void test_uds_connect_without_a_daemon_fails_cleanly(void **state) {
  fix_t *f = *state;
  int fd = 123;
  assert_int_equal(cache_uds_connect(f->dir, &fd), -ENOENT);
  assert_int_equal(fd, -1);
  char longdir[200];
  memset(longdir, 'd', sizeof longdir - 1);
  longdir[sizeof longdir - 1] = '\0';
  assert_int_equal(cache_uds_connect(longdir, &fd), SQ_ETOOBIG);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uds_keeps_datagrams_and_refuses_oversized_ones),
      cmocka_unit_test_setup_teardown(test_uds_connect_without_a_daemon_fails_cleanly, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_write_fd_writes_exactly_the_encoded_bytes,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_fd_with_more_pieces_than_one_batch, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_write_fd_refuses_a_wrong_size_or_an_unwritable_fd,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_canonical_values_are_objects_even_with_a_negative_type, setup, teardown),
      cmocka_unit_test_setup_teardown(test_values_protobuf_c_would_not_rebuild_are_stored_raw,
                                      setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
