/* hash_reference: the REAL libstdc++ std::hash<std::string> and a straightforward
 * transcription of Anna's rings (std::map, anna:include/consistent_hash_map.hpp,
 * hash_ring.hpp, src/hash_ring/hash_ring.cpp), used by the tests as an oracle.
 * Implemented in hash_reference.cpp; test-only. */
#ifndef HASH_REFERENCE_H
#define HASH_REFERENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* True when the C++ standard library is libstdc++ (the only one Anna matches). */
bool ref_is_libstdcxx(void);

/* std::hash<std::string>{}(std::string(data, len)). */
uint64_t ref_std_hash(const void *data, size_t len);

typedef struct ref_global_ring ref_global_ring_t;
typedef struct ref_local_ring ref_local_ring_t;

ref_global_ring_t *ref_global_ring_new(void);
void ref_global_ring_free(ref_global_ring_t *r);
/* Anna's HashRing::insert (3000 vnodes, tid 0): true if new or a rejoin. */
bool ref_global_ring_insert(ref_global_ring_t *r, const char *public_ip,
                            const char *private_ip, int join_count);
/* Anna's HashRing::remove: erases the node's vnode positions (whoever owns them). */
void ref_global_ring_remove(ref_global_ring_t *r, const char *public_ip,
                            const char *private_ip);
size_t ref_global_ring_entry_count(const ref_global_ring_t *r);
/* Anna's responsible_global with R capped at the node count (Anna loops forever
 * beyond it). Writes private IPs (as pointers into static storage of the ring, valid
 * until the next mutation) into out[], returns how many. */
size_t ref_responsible_global(ref_global_ring_t *r, const char *key, size_t len,
                              unsigned R, const char **out, size_t max);

ref_local_ring_t *ref_local_ring_new(unsigned threads);
void ref_local_ring_free(ref_local_ring_t *r);
/* Anna's responsible_local, L capped at the thread count. */
size_t ref_responsible_local(ref_local_ring_t *r, const char *key, size_t len,
                             unsigned L, unsigned *out, size_t max);

#ifdef __cplusplus
}
#endif

#endif
