/* hash: libstdc++'s _Hash_bytes (64-bit), see hash.h.
 *
 *   h = seed ^ (len * mul)
 *   for each full 8-byte little-endian word w:  h ^= shift_mix(w * mul) * mul; h *= mul
 *   if 1..7 bytes remain, t = those bytes LE:   h ^= t; h *= mul
 *   h = shift_mix(h) * mul; h = shift_mix(h)        where shift_mix(v) = v ^ (v >> 47)
 *
 * The concatenating variant streams the two pieces through the same word loop; only
 * the one word that straddles the boundary is assembled in a small stack buffer.
 */
#include "hash.h"

#include <endian.h>
#include <string.h>

#define SQ__HASH_MUL 0xc6a4a7935bd1e995ULL

static inline uint64_t sq__shift_mix(uint64_t v) { return v ^ (v >> 47); }

static inline uint64_t sq__load64(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, sizeof w);
  return le64toh(w);
}

/* Little-endian value of n (< 8) bytes, as libstdc++'s load_bytes. */
static inline uint64_t sq__load_tail(const uint8_t *p, size_t n) {
  uint64_t r = 0;
  for (size_t i = n; i-- > 0;)
    r = (r << 8) | p[i];
  return r;
}

static inline uint64_t sq__mix_word(uint64_t h, uint64_t w) {
  h ^= sq__shift_mix(w * SQ__HASH_MUL) * SQ__HASH_MUL;
  return h * SQ__HASH_MUL;
}

static inline uint64_t sq__mix_words(uint64_t h, const uint8_t *p, size_t nwords) {
  for (size_t i = 0; i < nwords; i++)
    h = sq__mix_word(h, sq__load64(p + 8 * i));
  return h;
}

/* Mixes the last len & 7 bytes of p[0..len) (if any) and finalises. Never forms a
 * pointer from a NULL p (len is 0 then). */
static inline uint64_t sq__finish(uint64_t h, const uint8_t *p, size_t len) {
  size_t n = len & 7;
  if (n != 0) {
    h ^= sq__load_tail(p + (len - n), n);
    h *= SQ__HASH_MUL;
  }
  h = sq__shift_mix(h) * SQ__HASH_MUL;
  return sq__shift_mix(h);
}

uint64_t sq_hash_std(const void *data, size_t len) {
  const uint8_t *p = data;
  uint64_t h = SQ_HASH_STD_SEED ^ ((uint64_t)len * SQ__HASH_MUL);
  h = sq__mix_words(h, p, len / 8);
  return sq__finish(h, p, len);
}

uint64_t sq_hash_std_concat(const void *a, size_t alen, const void *b, size_t blen) {
  const uint8_t *pa = a, *pb = b;
  uint8_t w[8];
  size_t fill = alen & 7, used = 0;
  uint64_t h = SQ_HASH_STD_SEED ^ ((uint64_t)(alen + blen) * SQ__HASH_MUL);

  h = sq__mix_words(h, pa, alen / 8);
  if (fill != 0) {
    memcpy(w, pa + (alen - fill), fill);
    used = blen < 8 - fill ? blen : 8 - fill;
    if (used != 0)
      memcpy(w + fill, pb, used);
    fill += used;
    if (fill < 8)
      return sq__finish(h, w, fill);   /* b ended inside the straddling word */
    h = sq__mix_word(h, sq__load64(w));
  }
  pb = blen != 0 ? pb + used : pb;
  blen -= used;
  h = sq__mix_words(h, pb, blen / 8);
  return sq__finish(h, pb, blen);
}
