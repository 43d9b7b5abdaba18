/* client_sync: the synchronous calls of kvs_client (contracts in client.h).
 *
 * Each one starts an op marked `sync` and pumps the engine until that op is finished;
 * asynchronous calls in flight meanwhile keep progressing, and their completions wait
 * in the done list for the next kvs_client_poll. A synchronous call always returns:
 * every key of its op is on a wire with a deadline (client.c invariant).
 */
#include "client_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anna.pb-c.h"
#include "sq_error.h"

/* Waits for op, moves its results to out[0..n) and frees it. Returns the first
 * failed key's error (0 if none) and copies its sentence to c->message. */
static int kvs__sync_run(kvs_client_t *c, kvs__op_t *op, kvs_client_result_t *out) {
  while (!op->done) {
    int rc = kvs__pump(c, -1);
    if (rc != 0) return rc; /* the op stays in flight; destroy frees it */
  }
  kvs__list_remove(&c->finished, op);
  int first = 0;
  c->message[0] = '\0';
  for (size_t i = 0; i < op->n; i++) {
    out[i] = op->res[i];
    op->res[i].payload = NULL;
    if (out[i].err != 0 && first == 0) {
      first = out[i].err;
      snprintf(c->message, sizeof c->message, "%s", out[i].message);
    }
  }
  kvs__op_free(op);
  return first;
}

static int kvs__sync_start(kvs_client_t *c, int type, const char *const *keys,
                           const kvs_client_kv_t *kvs, size_t n,
                           const kvs_client_limits_t *lim, kvs_client_result_t *results) {
  kvs__op_t *op = NULL;
  if (!results) return SQ_EINVAL;
  memset(results, 0, n * sizeof *results);
  int rc = kvs__op_start(c, type, keys, kvs, n, lim, true, &op);
  if (rc != 0) {
    snprintf(c->message, sizeof c->message, "client: %s", sq_strerror(rc));
    return rc;
  }
  return kvs__sync_run(c, op, results);
}

int kvs_client_get_many(kvs_client_t *c, const char *const *keys, size_t n,
                        const kvs_client_limits_t *lim, kvs_client_result_t *results) {
  if (!keys) return SQ_EINVAL;
  return kvs__sync_start(c, REQUEST_TYPE__GET, keys, NULL, n, lim, results);
}

int kvs_client_put_many(kvs_client_t *c, const kvs_client_kv_t *kvs, size_t n,
                        const kvs_client_limits_t *lim, kvs_client_result_t *results) {
  if (!kvs) return SQ_EINVAL;
  return kvs__sync_start(c, REQUEST_TYPE__PUT, NULL, kvs, n, lim, results);
}

int kvs_client_get(kvs_client_t *c, const char *key, const kvs_client_limits_t *lim,
                   sq_lattice_type_t *type, uint8_t **payload, size_t *len) {
  kvs_client_result_t r;
  if (!type || !payload || !len) return SQ_EINVAL;
  int rc = kvs__sync_start(c, REQUEST_TYPE__GET, &key, NULL, 1, lim, &r);
  if (rc == 0) {
    *type = r.type;
    *payload = r.payload;
    *len = r.len;
    r.payload = NULL;
  }
  kvs_client_result_clear(&r);
  return rc;
}

int kvs_client_put(kvs_client_t *c, const char *key, sq_lattice_type_t type,
                   const uint8_t *payload, size_t len, const kvs_client_limits_t *lim) {
  kvs_client_result_t r;
  kvs_client_kv_t kv = {.key = key, .type = type, .payload = payload, .len = len};
  int rc = kvs__sync_start(c, REQUEST_TYPE__PUT, NULL, &kv, 1, lim, &r);
  kvs_client_result_clear(&r);
  return rc;
}
