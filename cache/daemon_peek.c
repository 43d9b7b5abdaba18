/* squall-cache-peek: looks at a node cache from outside, as an executor would
 * (cache_reader.h), for tests and operators.
 *
 *   squall-cache-peek DIR get KEY...   one JSON line per key:
 *       {"key":K,"found":true,"lattice_type":1,"kind":"object","timestamp":T,
 *        "serializer":0,"zero_copy":false,"pickle":"<hex>","buffers":["<hex>",...],
 *        "aligned":true}
 *     kind "raw": "pickle" is the whole lattice payload (daemon_value.h); a key that
 *     is not cached gives {"key":K,"found":false}
 *   squall-cache-peek DIR spin KEY     looks KEY up and releases it in a loop forever,
 *     printing "ready" after the first lookup (a reader to SIGKILL mid-read)
 *
 * Exit: 0, 1 on a lookup error, 2 on bad usage. Keys are printed as given (tests use
 * plain ASCII keys).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_reader.h"
#include "daemon_value.h"
#include "sq_error.h"

static void cache__hex(const cache_span_t *s) {
  putchar('"');
  for (size_t i = 0; i < s->len; i++) printf("%02x", s->data[i]);
  putchar('"');
}

static uint64_t cache__le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void cache__print_view(const char *key, const cache_view_t *v) {
  int kind = cache_value_kind(v->meta.data, v->meta.len);
  printf("{\"key\":\"%s\",\"found\":true,\"lattice_type\":%d,\"kind\":\"%s\"", key,
         (int)v->lattice_type, kind == CACHE_META_OBJECT ? "object"
                               : kind == CACHE_META_RAW  ? "raw" : "unknown");
  if (kind == CACHE_META_OBJECT)
    printf(",\"timestamp\":%" PRIu64 ",\"serializer\":%u", cache__le64(v->meta.data + 8),
           (unsigned)v->meta.data[4]);
  printf(",\"zero_copy\":%s,\"pickle\":", v->zero_copy ? "true" : "false");
  cache__hex(&v->pickle);
  bool aligned = true;
  printf(",\"buffers\":[");
  for (size_t i = 0; i < v->nbuffers; i++) {
    if (i) putchar(',');
    cache__hex(&v->buffers[i]);
    aligned = aligned && ((uintptr_t)v->buffers[i].data % CACHE_BLOB_ALIGN) == 0;
  }
  printf("],\"aligned\":%s}\n", aligned ? "true" : "false");
}

static int cache__get(cache_reader_t *r, int n, char **keys) {
  for (int i = 0; i < n; i++) {
    cache_view_t *v = NULL;
    int rc = cache_reader_lookup(r, keys[i], strlen(keys[i]), &v);
    if (rc == SQ_ENOTFOUND) {
      printf("{\"key\":\"%s\",\"found\":false}\n", keys[i]);
      continue;
    }
    if (rc) {
      fprintf(stderr, "lookup %s: %s\n", keys[i], sq_strerror(rc));
      return 1;
    }
    cache__print_view(keys[i], v);
    cache_view_release(v);
  }
  return 0;
}

static int cache__spin(cache_reader_t *r, const char *key) {
  for (uint64_t i = 0;; i++) {
    cache_view_t *v = NULL;
    int rc = cache_reader_lookup(r, key, strlen(key), &v);
    if (rc && rc != SQ_ENOTFOUND) {
      fprintf(stderr, "lookup %s: %s\n", key, sq_strerror(rc));
      return 1;
    }
    volatile uint8_t sink = v && v->pickle.len ? v->pickle.data[v->pickle.len - 1] : 0;
    (void)sink;
    cache_view_release(v);
    if (i == 0) {
      printf("ready\n");
      fflush(stdout);
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 4 || (strcmp(argv[2], "get") != 0 && strcmp(argv[2], "spin") != 0)) {
    fprintf(stderr, "usage: squall-cache-peek DIR get KEY... | DIR spin KEY\n");
    return 2;
  }
  cache_reader_t *r = NULL;
  int rc = cache_reader_open(argv[1], &r);
  if (rc) {
    fprintf(stderr, "cannot open cache %s: %s\n", argv[1], sq_strerror(rc));
    return 1;
  }
  rc = strcmp(argv[2], "get") == 0 ? cache__get(r, argc - 3, argv + 3) : cache__spin(r, argv[3]);
  cache_reader_close(r);
  return rc;
}
