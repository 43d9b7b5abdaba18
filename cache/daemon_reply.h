/* daemon_reply: the KeyResponse squall-cache sends for a write-through PUT once its
 * KVS call finished, and the AnnaError mapping its replies share.
 *
 * A PUT's reply lists every key with the KVS's outcome (docs/cache.md "PUT"). Its
 * tuple arrays are the only memory the reply needs before the send itself. Up to
 * CACHE_REPLY_STACK keys (every PUT an executor's CacheClient.put sends: one key) they
 * live inside cache_put_reply_t, so building such a reply cannot fail. A larger PUT
 * takes them from the allocator; when that fails, the reply is still built, as an
 * answer for the whole request: no tuples, error TIMEOUT and a sentence ("out of
 * memory ... the KVS acknowledged k of n keys; a PUT merges, so writing again is
 * safe"). TIMEOUT because, as after a timeout, the writer does not learn each key's
 * outcome; what it must not get is silence (it would wait out its own timeout).
 *
 * Stateless; the reply borrows every string from the request and the completion, so it
 * must not outlive them. Single-threaded use per reply.
 */
#ifndef CACHE_DAEMON_REPLY_H
#define CACHE_DAEMON_REPLY_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "anna.pb-c.h"
#include "client.h"

#define CACHE_REPLY_STACK 16 /* tuples a reply holds without allocating */

/* The reply to one write-through PUT and the memory its tuples live in. */
typedef struct {
  KeyResponse resp;                 /* what to send; valid after build */
  KeyTuple *tuples;                 /* resp's tuples: in_place or heap */
  void *heap;                       /* the allocator's block, or NULL */
  ProtobufCAllocator *alloc;        /* where heap came from (NULL = malloc) */
  KeyTuple in_place[CACHE_REPLY_STACK];
  KeyTuple *in_place_ptrs[CACHE_REPLY_STACK];
  char why[192];                    /* the whole-request sentence, when one is sent */
} cache_put_reply_t;

/* The AnnaError carried in a reply for an sq error (0, SQ_EKEYDNE, SQ_EWRONGTHREAD,
 * SQ_ETIMEOUT, SQ_ENOSERVERS; anything else is a refusal: LATTICE). */
int cache_reply_anna_error(int err);

/* Builds r->resp, the reply to PUT req whose KVS call finished with done: type PUT,
 * req's request id, one tuple per key (min(done->n, req->n_tuples)) with its key,
 * lattice type, the AnnaError of its outcome and, for a failed key, the KVS's sentence.
 * The tuple arrays come from r itself up to CACHE_REPLY_STACK keys, else from alloc
 * (NULL = malloc). Returns 0; or -ENOMEM when they could not be allocated: then r->resp
 * is the whole-request error reply described above (never nothing to send). Either
 * way release r with cache_put_reply_free. Borrows req and done until then. */
int cache_put_reply_build(cache_put_reply_t *r, const KeyRequest *req,
                          const kvs_client_completion_t *done, ProtobufCAllocator *alloc);

/* Releases what cache_put_reply_build allocated. Accepts a zeroed r. */
void cache_put_reply_free(cache_put_reply_t *r);

#endif
