/* test_proto_malformed: every message that crosses a socket survives hostile bytes.
 *
 * For each decoder family (the messages of one .proto file that arrive from the
 * network, PROTOCOL.md §1.10-§1.12) the suite decodes at least FZ_ITERS inputs:
 * random bytes, and valid encodings of randomly filled messages (built by reflection
 * over the protobuf-c descriptors) after 1-4 mutations: bit flips, byte overwrites,
 * truncation, insertion, deletion, splicing, tag rewrites, corrupted length fields and
 * over-long varints. For each input it asserts:
 *   - sq_proto_unpack() either fails with SQ_EPROTO / SQ_ETOOBIG or yields a message;
 *   - it agrees with plain protobuf-c (the depth walk never rejects what protobuf-c
 *     accepts, SQ_EPROTO only where protobuf-c fails too);
 *   - a decoded message re-packs to bytes that decode again and re-pack identically
 *     (decode/encode is idempotent after one pass);
 *   - decoding with the sq_arena allocator (what daemons use) gives the same bytes;
 *   - sq_wire_find_bytes() never points outside the input.
 * Under ASan/UBSan this also proves no out-of-bounds access, leak or UB in the
 * decoders. The PRNG is seeded deterministically; the seed is printed and can be
 * overridden with SQUALL_PROTO_FUZZ_SEED, the per-family count with
 * SQUALL_PROTO_FUZZ_ITERS, to reproduce or extend a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "anna.pb-c.h"
#include "benchmark.pb-c.h"
#include "causal.pb-c.h"
#include "cloudburst.pb-c.h"
#include "internal.pb-c.h"
#include "metadata.pb-c.h"
#include "shared.pb-c.h"
#include "sq_arena.h"
#include "sq_error.h"
#include "sq_proto.h"
#include "sq_wire.h"

#define FZ_ITERS 300000u      /* inputs per decoder family */
#define FZ_SEEDS 8            /* valid seeds per message type */
#define FZ_MAX_INPUT 4096     /* keeps plain protobuf-c recursion shallow */
#define FZ_GEN_DEPTH 5        /* nesting of generated seeds */
#define FZ_DEFAULT_SEED 0x5ea11c0ffee2026ull

typedef struct {
  uint64_t state;
} fz_rng_t;

typedef struct {
  uint8_t *data[FZ_SEEDS];
  size_t len[FZ_SEEDS];
} fz_seeds_t;

typedef struct {
  fz_rng_t rng;
  sq_arena_t arena;
  uint8_t in[FZ_MAX_INPUT];
  size_t in_len;
  unsigned long decoded, rejected, too_deep, field_zero;
} fz_ctx_t;

/* splitmix64: small, fast, and every seed gives a full-period stream. */
static uint64_t fz__next(fz_rng_t *r) {
  uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint32_t fz__below(fz_rng_t *r, uint32_t n) { return n ? (uint32_t)(fz__next(r) % n) : 0; }

static uint64_t fz__env_u64(const char *name, uint64_t dflt) {
  const char *v = getenv(name);
  return v && *v ? strtoull(v, NULL, 0) : dflt;
}

/* ---- random valid messages, by reflection ---------------------------------------- */

static void *fz__xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  assert_non_null(p);
  return p;
}

static size_t fz__elem_size(ProtobufCType type) {
  switch (type) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
      return 8;
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    default: return 4;  /* 32-bit integers, float, enum */
  }
}

static ProtobufCMessage *fz__gen_message(fz_rng_t *r, const ProtobufCMessageDescriptor *d,
                                         unsigned depth);

/* Fills one value of field f at slot with a random valid value. */
static void fz__gen_value(fz_rng_t *r, const ProtobufCFieldDescriptor *f, void *slot,
                          unsigned depth) {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789:/._|";
  switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
      size_t n = fz__below(r, 7);
      char *s = fz__xcalloc(n + 1, 1);
      for (size_t i = 0; i < n; i++) s[i] = alphabet[fz__below(r, sizeof(alphabet) - 1)];
      *(char **)slot = s;
      break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
      ProtobufCBinaryData *b = slot;
      b->len = fz__below(r, 9);
      b->data = b->len ? fz__xcalloc(b->len, 1) : NULL;
      for (size_t i = 0; i < b->len; i++) b->data[i] = (uint8_t)fz__next(r);
      break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
      *(ProtobufCMessage **)slot = fz__gen_message(r, f->descriptor, depth + 1);
      break;
    case PROTOBUF_C_TYPE_ENUM: {
      const ProtobufCEnumDescriptor *e = f->descriptor;
      *(int *)slot = fz__below(r, 8) ? e->values[fz__below(r, e->n_values)].value
                                     : (int)(int32_t)fz__next(r);
      break;
    }
    case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)slot = fz__below(r, 2); break;
    default: {
      uint64_t v = fz__below(r, 2) ? fz__below(r, 300) : fz__next(r);
      memcpy(slot, &v, fz__elem_size(f->type));  /* little endian: low bytes */
      break;
    }
  }
}

/* A message of type d with random fields; sub-messages stop at FZ_GEN_DEPTH. Freed
 * with protobuf_c_message_free_unpacked(m, NULL): everything comes from calloc. */
static ProtobufCMessage *fz__gen_message(fz_rng_t *r, const ProtobufCMessageDescriptor *d,
                                         unsigned depth) {
  ProtobufCMessage *m = fz__xcalloc(1, d->sizeof_message);
  protobuf_c_message_init(d, m);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    bool sub = f->type == PROTOBUF_C_TYPE_MESSAGE;
    if (sub && depth >= FZ_GEN_DEPTH) continue;
    char *field = (char *)m + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = fz__below(r, depth < 2 ? 4 : 2);
      if (n == 0) continue;
      size_t es = fz__elem_size(f->type);
      char *arr = fz__xcalloc(n, es);
      for (size_t k = 0; k < n; k++) fz__gen_value(r, f, arr + k * es, depth);
      *(size_t *)((char *)m + f->quantifier_offset) = n;
      *(void **)field = arr;
    } else if (fz__below(r, 4)) {
      fz__gen_value(r, f, field, depth);
    }
  }
  return m;
}

static void fz__seeds_make(fz_rng_t *r, const ProtobufCMessageDescriptor *d, fz_seeds_t *s) {
  for (int i = 0; i < FZ_SEEDS; i++) {
    ProtobufCMessage *m = fz__gen_message(r, d, 0);
    size_t n = protobuf_c_message_get_packed_size(m);
    while (n > FZ_MAX_INPUT / 2) {  /* rare: regenerate until it leaves room to grow */
      protobuf_c_message_free_unpacked(m, NULL);
      m = fz__gen_message(r, d, 2);
      n = protobuf_c_message_get_packed_size(m);
    }
    s->data[i] = fz__xcalloc(n, 1);
    s->len[i] = protobuf_c_message_pack(m, s->data[i]);
    assert_int_equal(s->len[i], n);
    protobuf_c_message_free_unpacked(m, NULL);
  }
}

static void fz__seeds_free(fz_seeds_t *s) {
  for (int i = 0; i < FZ_SEEDS; i++) free(s->data[i]);
}

/* ---- mutations -------------------------------------------------------------------- */

/* Replaces in[pos, pos+old) with the n bytes at src, within FZ_MAX_INPUT. */
static void fz__splice(fz_ctx_t *c, size_t pos, size_t old, const uint8_t *src, size_t n) {
  if (pos > c->in_len) pos = c->in_len;
  if (old > c->in_len - pos) old = c->in_len - pos;
  size_t tail = c->in_len - pos - old;
  if (pos + n + tail > FZ_MAX_INPUT) return;
  memmove(c->in + pos + n, c->in + pos + old, tail);
  memcpy(c->in + pos, src, n);
  c->in_len = pos + n + tail;
}

static size_t fz__put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Finds the offset and size of a random length prefix of a length-delimited field,
 * descending speculatively into payloads. Returns 0 when none was found. */
static int fz__find_length(fz_ctx_t *c, size_t *at, size_t *size) {
  size_t lo = 0, hi = c->in_len, pos = 0, seen = 0;
  for (int depth = 0; depth < 6; depth++) {
    size_t cand_at = 0, cand_size = 0, cand_lo = 0, cand_hi = 0, count = 0;
    for (pos = lo; pos < hi;) {
      uint64_t tag, n;
      if (sq_wire_varint(c->in, hi, &pos, &tag)) break;
      if ((tag & 7) != 2) break;  /* keep it simple: stop at the first non-LEN field */
      size_t p0 = pos;
      if (sq_wire_varint(c->in, hi, &pos, &n) || n > hi - pos) break;
      if (fz__below(&c->rng, ++count) == 0) {  /* reservoir pick */
        cand_at = p0, cand_size = pos - p0, cand_lo = pos, cand_hi = pos + (size_t)n;
      }
      pos += (size_t)n;
    }
    if (!count) break;
    *at = cand_at, *size = cand_size, seen = 1;
    lo = cand_lo, hi = cand_hi;
    if (fz__below(&c->rng, 2)) break;
  }
  return (int)seen;
}

static void fz__mutate_length(fz_ctx_t *c) {
  static const uint64_t evil[] = {0, 1, 2, 0x7f, 0x80, 0x3fff, 0x7fffffff, 0x80000000,
                                  0xffffffff, 0x100000000ull, 1ull << 62, UINT64_MAX};
  size_t at, size;
  if (!fz__find_length(c, &at, &size)) return;
  uint8_t v[10];
  uint64_t want = fz__below(&c->rng, 2) ? evil[fz__below(&c->rng, 12)]
                                        : c->in_len + fz__below(&c->rng, 5) - 2;
  fz__splice(c, at, size, v, fz__put_varint(v, want));
}

static void fz__mutate_once(fz_ctx_t *c) {
  fz_rng_t *r = &c->rng;
  size_t len = c->in_len, pos = fz__below(r, (uint32_t)len + 1);
  uint8_t tmp[16];
  switch (fz__below(r, 9)) {
    case 0: if (len) c->in[pos % len] ^= (uint8_t)(1u << fz__below(r, 8)); break;
    case 1: {
      static const uint8_t interesting[] = {0x00, 0xff, 0x80, 0x7f, 0x01, 0x0a, 0x12};
      if (len) c->in[pos % len] = fz__below(r, 2) ? (uint8_t)fz__next(r)
                                                  : interesting[fz__below(r, 7)];
      break;
    }
    case 2: c->in_len = pos; break;  /* truncate */
    case 3: {
      size_t n = 1 + fz__below(r, 8);
      for (size_t i = 0; i < n; i++) tmp[i] = (uint8_t)fz__next(r);
      fz__splice(c, pos, 0, tmp, n);
      break;
    }
    case 4: fz__splice(c, pos, 1 + fz__below(r, 16), tmp, 0); break;  /* delete */
    case 5: fz__mutate_length(c); break;
    case 6: {  /* over-long varint: 10 or 11 bytes of continuation */
      size_t n = 10 + fz__below(r, 2);
      memset(tmp, fz__below(r, 2) ? 0xff : 0x80, n - 1);
      tmp[n - 1] = (uint8_t)fz__below(r, 3);
      fz__splice(c, pos, fz__below(r, 2), tmp, n);
      break;
    }
    case 7: {  /* duplicate a chunk elsewhere (repeated/duplicate fields) */
      size_t from = fz__below(r, (uint32_t)len + 1), n = fz__below(r, 32);
      if (n > len - from) n = len - from;
      memcpy(tmp, c->in + from, n > sizeof(tmp) ? sizeof(tmp) : n);
      fz__splice(c, pos, 0, tmp, n > sizeof(tmp) ? sizeof(tmp) : n);
      break;
    }
    default: {  /* a plausible tag: field 1..15 with any wire type */
      tmp[0] = (uint8_t)(((1 + fz__below(r, 15)) << 3) | fz__below(r, 8));
      fz__splice(c, pos, fz__below(r, 2), tmp, 1);
      break;
    }
  }
}

/* ---- the checks ------------------------------------------------------------------- */

/* Prints the current input as hex so that a failure can be replayed. */
static void fz__dump(const fz_ctx_t *c, const ProtobufCMessageDescriptor *d) {
  fprintf(stderr, "failing %s input (%zu bytes):", d->name, c->in_len);
  for (size_t i = 0; i < c->in_len; i++) fprintf(stderr, " %02x", c->in[i]);
  fprintf(stderr, "\n");
}

/* Asserts cond; on failure first dumps the input. */
#define FZ_CHECK(c, d, cond)      \
  do {                            \
    if (!(cond)) fz__dump(c, d);  \
    assert_true(cond);            \
  } while (0)

/* Packs m into a fresh buffer; *len receives the size. */
static uint8_t *fz__pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *out = fz__xcalloc(*len, 1);
  assert_int_equal(protobuf_c_message_pack(m, out), *len);
  return out;
}

/* Decoding the re-packed bytes must succeed and re-pack to the same bytes. */
static void fz__assert_repack_stable(const fz_ctx_t *c, const ProtobufCMessageDescriptor *d,
                                     const uint8_t *p1, size_t n1) {
  ProtobufCMessage *m2 = NULL;
  int rc = sq_proto_unpack(d, NULL, p1, n1, SIZE_MAX, &m2);
  if (rc) {
    fprintf(stderr, "re-packed bytes (%zu):", n1);
    for (size_t i = 0; i < n1; i++) fprintf(stderr, " %02x", p1[i]);
    fprintf(stderr, "\n");
  }
  FZ_CHECK(c, d, rc == 0);
  size_t n2;
  uint8_t *p2 = fz__pack(m2, &n2);
  assert_int_equal(n2, n1);
  assert_memory_equal(p2, p1, n1);
  free(p2);
  protobuf_c_message_free_unpacked(m2, NULL);
}

/* True when m or any sub-message kept an unknown field with field number 0. */
static bool fz__has_field_zero(const ProtobufCMessage *m) {
  for (unsigned i = 0; i < m->n_unknown_fields; i++)
    if (m->unknown_fields[i].tag == 0) return true;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    const char *field = (const char *)m + f->offset;
    size_t n = f->label == PROTOBUF_C_LABEL_REPEATED
                   ? *(const size_t *)((const char *)m + f->quantifier_offset) : 1;
    ProtobufCMessage *const *subs = f->label == PROTOBUF_C_LABEL_REPEATED
                                        ? *(ProtobufCMessage *const *const *)field
                                        : (ProtobufCMessage *const *)field;
    for (size_t k = 0; k < n; k++)
      if (subs[k] && fz__has_field_zero(subs[k])) return true;
  }
  return false;
}

static void fz__check_input(fz_ctx_t *c, const ProtobufCMessageDescriptor *d) {
  ProtobufCMessage *m = NULL, *am = NULL;
  int rc = sq_proto_unpack(d, NULL, c->in, c->in_len, SIZE_MAX, &m);
  FZ_CHECK(c, d, rc == 0 || rc == SQ_EPROTO || rc == SQ_ETOOBIG);
  FZ_CHECK(c, d, (rc == 0) == (m != NULL));
  if (rc != SQ_ETOOBIG) {  /* plain protobuf-c agrees (inputs are too small to nest deep) */
    ProtobufCMessage *raw = protobuf_c_message_unpack(d, NULL, c->in_len, c->in);
    /* ... except that squall refuses field number 0, which protobuf-c lets through
     * when it is encoded over-long */
    bool zero = raw && rc == SQ_EPROTO && fz__has_field_zero(raw);
    FZ_CHECK(c, d, (raw != NULL) == (rc == 0) || zero);
    c->field_zero += zero;
    if (raw) protobuf_c_message_free_unpacked(raw, NULL);
  }
  int arc = sq_proto_unpack(d, sq_arena_allocator(&c->arena), c->in, c->in_len, SIZE_MAX, &am);
  FZ_CHECK(c, d, arc == rc);
  if (m) {
    size_t n1, an;
    uint8_t *p1 = fz__pack(m, &n1), *ap = fz__pack(am, &an);
    assert_int_equal(an, n1);
    assert_memory_equal(ap, p1, n1);
    fz__assert_repack_stable(c, d, p1, n1);
    free(p1);
    free(ap);
    protobuf_c_message_free_unpacked(m, NULL);
    c->decoded++;
  } else {
    c->rejected += rc == SQ_EPROTO;
    c->too_deep += rc == SQ_ETOOBIG;
  }
  sq_arena_reset(&c->arena);
  const uint8_t *found = NULL;
  size_t found_len = 0;
  if (sq_wire_find_bytes(c->in, c->in_len, 1 + fz__below(&c->rng, 4), &found, &found_len) == 0)
    assert_true(found >= c->in && found_len <= (size_t)(c->in + c->in_len - found));
}

/* Runs iters inputs spread over the n message types in ds. */
static void fz__run_family(const char *family, const ProtobufCMessageDescriptor *const *ds,
                           size_t n) {
  fz_ctx_t *c = fz__xcalloc(1, sizeof(*c));
  fz_seeds_t *seeds = fz__xcalloc(n, sizeof(*seeds));
  uint64_t seed = fz__env_u64("SQUALL_PROTO_FUZZ_SEED", FZ_DEFAULT_SEED);
  uint64_t iters = fz__env_u64("SQUALL_PROTO_FUZZ_ITERS", FZ_ITERS);
  c->rng.state = seed ^ (uint64_t)n * 0x100000001b3ull ^ (uint64_t)family[0];
  sq_arena_init(&c->arena, 16384);
  for (size_t t = 0; t < n; t++) fz__seeds_make(&c->rng, ds[t], &seeds[t]);
  for (uint64_t i = 0; i < iters; i++) {
    size_t t = i % n;
    if (fz__below(&c->rng, 10) == 0) {  /* plain random bytes */
      c->in_len = fz__below(&c->rng, 65);
      for (size_t k = 0; k < c->in_len; k++) c->in[k] = (uint8_t)fz__next(&c->rng);
    } else {
      unsigned s = fz__below(&c->rng, FZ_SEEDS);
      memcpy(c->in, seeds[t].data[s], seeds[t].len[s]);
      c->in_len = seeds[t].len[s];
      for (unsigned k = 1 + fz__below(&c->rng, 4); k > 0; k--) fz__mutate_once(c);
    }
    fz__check_input(c, ds[t]);
  }
  printf("[ proto    ] %s: seed 0x%llx, %llu inputs over %zu types: %lu decoded, "
         "%lu rejected (%lu with field number 0), %lu too deep\n",
         family, (unsigned long long)seed, (unsigned long long)iters, n, c->decoded,
         c->rejected, c->field_zero, c->too_deep);
  assert_true(c->decoded > iters / 20);  /* mutations must not only produce garbage */
  assert_true(c->rejected > iters / 20);
  for (size_t t = 0; t < n; t++) fz__seeds_free(&seeds[t]);
  free(seeds);
  sq_arena_destroy(&c->arena);
  free(c);
}

#define FZ_RUN(family, ...)                                                              \
  do {                                                                                   \
    static const ProtobufCMessageDescriptor *const ds[] = {__VA_ARGS__};                 \
    fz__run_family(family, ds, sizeof(ds) / sizeof(ds[0]));                              \
  } while (0)

static void test_anna_decoders_survive_mutated_and_random_bytes(void **state) {
  (void)state;
  FZ_RUN("anna+shared", &key_request__descriptor, &key_response__descriptor,
         &key_address_request__descriptor, &key_address_response__descriptor,
         &key_tuple__descriptor, &lwwvalue__descriptor, &set_value__descriptor,
         &single_key_causal_value__descriptor, &multi_key_causal_value__descriptor,
         &priority_value__descriptor, &string_set__descriptor, &key_version__descriptor,
         &key_version_list__descriptor);
}

static void test_cloudburst_decoders_survive_mutated_and_random_bytes(void **state) {
  (void)state;
  FZ_RUN("cloudburst", &function__descriptor, &value__descriptor, &arguments__descriptor,
         &function_call__descriptor, &dag__descriptor, &dag_call__descriptor,
         &dag_schedule__descriptor, &dag_trigger__descriptor, &generic_response__descriptor,
         &continuation__descriptor);
}

static void test_causal_decoders_survive_mutated_and_random_bytes(void **state) {
  (void)state;
  FZ_RUN("causal", &causal_request__descriptor, &causal_response__descriptor,
         &key_version_request__descriptor, &key_version_response__descriptor,
         &causal_tuple__descriptor);
}

static void test_internal_decoders_survive_mutated_and_random_bytes(void **state) {
  (void)state;
  FZ_RUN("internal", &thread_status__descriptor, &scheduler_status__descriptor,
         &pin_function__descriptor, &executor_statistics__descriptor);
}

static void test_metadata_decoders_survive_mutated_and_random_bytes(void **state) {
  (void)state;
  FZ_RUN("metadata+benchmark", &cluster_membership__descriptor,
         &replication_factor_update__descriptor, &replication_factor__descriptor,
         &server_thread_statistics__descriptor, &key_access_data__descriptor,
         &key_size_data__descriptor, &user_feedback__descriptor);
}

/* ---- targeted hostile inputs ------------------------------------------------------ */

/* Writes DagCall{continuation: Continuation{call: DagCall{...}}} with `pairs` levels
 * of each, built from the inside out; returns a malloc'd buffer. */
static uint8_t *fz__nested_dag_call(size_t pairs, size_t *len) {
  size_t cap = pairs * 12 + 16, end = cap, n = 0;
  uint8_t *buf = fz__xcalloc(cap, 1), v[10];
  for (size_t i = 0; i < pairs; i++) {
    size_t k = fz__put_varint(v, n);  /* Continuation.call (4, LEN) */
    end -= k, memcpy(buf + end, v, k), buf[--end] = 0x22, n += k + 1;
    k = fz__put_varint(v, n);         /* DagCall.continuation (7, LEN) */
    end -= k, memcpy(buf + end, v, k), buf[--end] = 0x3a, n += k + 1;
  }
  memmove(buf, buf + end, n);
  *len = n;
  return buf;
}

static void test_deeply_nested_dag_call_is_rejected_without_recursing(void **state) {
  (void)state;
  /* 200,000 levels in about 1.6 MB: plain protobuf-c overflows the stack on this. */
  size_t len;
  uint8_t *buf = fz__nested_dag_call(100000, &len);
  ProtobufCMessage *m = (ProtobufCMessage *)0x1;
  assert_int_equal(sq_proto_unpack(&dag_call__descriptor, NULL, buf, len, SIZE_MAX, &m),
                   SQ_ETOOBIG);
  assert_null(m);
  assert_int_equal(sq_proto_check_depth(&dag_call__descriptor, buf, len, SQ_PROTO_MAX_DEPTH),
                   SQ_ETOOBIG);
  free(buf);
}

static void test_nesting_up_to_the_depth_limit_decodes(void **state) {
  (void)state;
  size_t len;
  uint8_t *buf = fz__nested_dag_call(SQ_PROTO_MAX_DEPTH / 2, &len);  /* depth == limit */
  ProtobufCMessage *m = NULL;
  assert_int_equal(sq_proto_unpack(&dag_call__descriptor, NULL, buf, len, SIZE_MAX, &m), 0);
  DagCall *dc = (DagCall *)m;
  unsigned levels = 0;
  while (dc->continuation) {
    levels++;
    dc = dc->continuation->call;
    if (!dc) break;
  }
  assert_int_equal(levels, SQ_PROTO_MAX_DEPTH / 2);
  protobuf_c_message_free_unpacked(m, NULL);
  free(buf);
  buf = fz__nested_dag_call(SQ_PROTO_MAX_DEPTH / 2 + 1, &len);  /* one pair too deep */
  assert_int_equal(sq_proto_unpack(&dag_call__descriptor, NULL, buf, len, SIZE_MAX, &m),
                   SQ_ETOOBIG);
  free(buf);
}

static void test_unpack_enforces_the_size_limit_and_reports_garbage(void **state) {
  (void)state;
  static const uint8_t value[] = {0x0a, 0x03, 'a', 'b', 'c'};
  ProtobufCMessage *m = NULL;
  assert_int_equal(sq_proto_unpack(&value__descriptor, NULL, value, sizeof(value), 4, &m),
                   SQ_ETOOBIG);
  assert_null(m);
  assert_int_equal(sq_proto_unpack(&value__descriptor, NULL, value, sizeof(value), 5, &m), 0);
  assert_int_equal(((Value *)m)->body.len, 3);
  protobuf_c_message_free_unpacked(m, NULL);
  /* length 4 with 3 bytes left; group wire type; 11-byte varint */
  static const uint8_t cut[] = {0x0a, 0x04, 'a', 'b', 'c'};
  static const uint8_t group[] = {0x0b, 0x0c};
  static const uint8_t longv[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0x01};
  assert_int_equal(sq_proto_unpack(&value__descriptor, NULL, cut, sizeof(cut), 64, &m),
                   SQ_EPROTO);
  assert_int_equal(sq_proto_unpack(&value__descriptor, NULL, group, sizeof(group), 64, &m),
                   SQ_EPROTO);
  assert_int_equal(sq_proto_unpack(&value__descriptor, NULL, longv, sizeof(longv), 64, &m),
                   SQ_EPROTO);
  assert_null(m);
  assert_int_equal(sq_proto_check_depth(&value__descriptor, value, sizeof(value),
                                        SQ_PROTO_DEPTH_CAP + 1),
                   SQ_EINVAL);
}

/* protobuf-c accepts an over-long field-0 tag and re-packs it as 0x00, which it then
 * rejects; squall refuses such input up front so relayed messages stay readable. */
static void test_field_number_zero_is_rejected_in_every_encoding(void **state) {
  (void)state;
  static const uint8_t overlong[] = {0x0a, 0x01, 'b', 0x80, 0x00, 0x07}; /* body, tag 0 */
  static const uint8_t plain[] = {0x0a, 0x01, 'b', 0x00, 0x07};
  ProtobufCMessage *m = NULL;
  assert_int_equal(sq_proto_unpack(&value__descriptor, NULL, overlong, sizeof(overlong),
                                   64, &m), SQ_EPROTO);
  assert_int_equal(sq_proto_unpack(&value__descriptor, NULL, plain, sizeof(plain), 64, &m),
                   SQ_EPROTO);
  assert_null(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unpack_enforces_the_size_limit_and_reports_garbage),
      cmocka_unit_test(test_field_number_zero_is_rejected_in_every_encoding),
      cmocka_unit_test(test_nesting_up_to_the_depth_limit_decodes),
      cmocka_unit_test(test_deeply_nested_dag_call_is_rejected_without_recursing),
      cmocka_unit_test(test_anna_decoders_survive_mutated_and_random_bytes),
      cmocka_unit_test(test_cloudburst_decoders_survive_mutated_and_random_bytes),
      cmocka_unit_test(test_causal_decoders_survive_mutated_and_random_bytes),
      cmocka_unit_test(test_internal_decoders_survive_mutated_and_random_bytes),
      cmocka_unit_test(test_metadata_decoders_survive_mutated_and_random_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
