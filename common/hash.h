/* hash: the placement hash of squall, bit-for-bit libstdc++'s std::hash<std::string>.
 *
 * Anna places keys and virtual nodes with std::hash<std::string> as built by
 * libstdc++ on a 64-bit little-endian machine (PROTOCOL.md §2.3): _Hash_bytes(data,
 * len, 0xc70f6907), a MurmurHash2-64 variant. squall reproduces it exactly so that a
 * squall process computes the same ring positions as an original Anna node and as
 * every other squall process. Words are read explicitly little-endian, so the result
 * is the same on any host, big-endian included (where libstdc++ itself would differ).
 *
 * The functions are pure: no state, safe from any thread. They are not a defence
 * against hash flooding (the seed is public and fixed by compatibility); nothing in
 * squall may rely on them for that.
 */
#ifndef SQ_HASH_H
#define SQ_HASH_H

#include <stddef.h>
#include <stdint.h>

#define SQ_HASH_STD_SEED 0xc70f6907ULL

/* std::hash<std::string>{}(std::string(data, len)) of libstdc++ (64-bit LE).
 * `data` may be NULL when len is 0. */
uint64_t sq_hash_std(const void *data, size_t len);

/* The same hash of the concatenation a + b, without building it: equal to
 * sq_hash_std() of the alen + blen bytes. Either pointer may be NULL when its length
 * is 0. Used for the global ring's "GLOBAL" + key. */
uint64_t sq_hash_std_concat(const void *a, size_t alen, const void *b, size_t blen);

#endif
