/* daemon_reply: squall-cache's PUT reply builder (contract in daemon_reply.h).
 *
 * Memory: a reply of n <= CACHE_REPLY_STACK keys uses r->in_place; a larger one takes
 * one block of n tuples followed by n pointers from the allocator. Nothing else is
 * allocated: keys, request id and sentences are borrowed.
 */
#include "daemon_reply.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"

int cache_reply_anna_error(int err) {
  switch (err) {
    case 0: return ANNA_ERROR__NO_ERROR;
    case SQ_EKEYDNE: return ANNA_ERROR__KEY_DNE;
    case SQ_EWRONGTHREAD: return ANNA_ERROR__WRONG_THREAD;
    case SQ_ETIMEOUT: return ANNA_ERROR__TIMEOUT;
    case SQ_ENOSERVERS: return ANNA_ERROR__NO_SERVERS;
    default: return ANNA_ERROR__LATTICE;
  }
}

/* Points r->tuples and r->resp.tuples at room for n tuples. 0 or -ENOMEM. */
static int cache__reply_room(cache_put_reply_t *r, size_t n) {
  if (n <= CACHE_REPLY_STACK) {
    r->tuples = r->in_place;
    r->resp.tuples = r->in_place_ptrs;
    return 0;
  }
  size_t each = sizeof(KeyTuple) + sizeof(KeyTuple *);
  if (n > SIZE_MAX / each) return -ENOMEM;
  r->heap = r->alloc ? r->alloc->alloc(r->alloc->allocator_data, n * each) : malloc(n * each);
  if (!r->heap) return -ENOMEM;
  r->tuples = r->heap; /* KeyTuple's alignment covers the pointers after it */
  r->resp.tuples = (KeyTuple **)(r->tuples + n);
  return 0;
}

/* Makes r->resp the whole-request answer for a PUT whose tuples had no room. */
static void cache__reply_no_room(cache_put_reply_t *r, const kvs_client_completion_t *done,
                                 size_t n) {
  size_t acked = 0;
  for (size_t i = 0; i < n; i++) acked += done->results[i].err == 0;
  snprintf(r->why, sizeof(r->why),
           "squall-cache ran out of memory answering this PUT: the KVS acknowledged "
           "%zu of %zu keys; a PUT merges, so writing again is safe", acked, n);
  r->resp.n_tuples = 0;
  r->resp.tuples = NULL;
  r->resp.error = ANNA_ERROR__TIMEOUT;
  r->resp.error_message = r->why;
}

int cache_put_reply_build(cache_put_reply_t *r, const KeyRequest *req,
                          const kvs_client_completion_t *done, ProtobufCAllocator *alloc) {
  size_t n = done->n < req->n_tuples ? done->n : req->n_tuples;
  memset(r, 0, sizeof(*r));
  r->alloc = alloc;
  key_response__init(&r->resp);
  r->resp.type = REQUEST_TYPE__PUT;
  r->resp.response_id = req->request_id ? req->request_id : (char *)"";
  if (cache__reply_room(r, n) != 0) {
    cache__reply_no_room(r, done, n);
    return -ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    const KeyTuple *t = req->tuples[i];
    const kvs_client_result_t *res = &done->results[i];
    KeyTuple *out = &r->tuples[i];
    key_tuple__init(out);
    out->key = t->key;
    out->lattice_type = t->lattice_type;
    out->error = (AnnaError)cache_reply_anna_error(res->err);
    if (res->err)
      out->error_message = (char *)(res->message[0] ? res->message : sq_strerror(res->err));
    r->resp.tuples[i] = out;
  }
  r->resp.n_tuples = n;
  return 0;
}

void cache_put_reply_free(cache_put_reply_t *r) {
  if (!r->heap) return;
  if (r->alloc) r->alloc->free(r->alloc->allocator_data, r->heap);
  else free(r->heap);
  r->heap = NULL;
}
