/* exec_errval: error results as Cloudburst-compatible pickled tuples (see
 * exec_errval.h). */
#include "exec_errval.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cloudburst.pb-c.h"
#include "sq_error.h"

static char *exec__s(const char *s) { return (char *)(s ? s : ""); }

int exec_errval_response(const exec_errval_t *e, sq_buf_t *out) {
  GenericResponse r = GENERIC_RESPONSE__INIT;
  r.success = 0;
  r.error = (CloudburstError)e->code;
  r.error_message = exec__s(e->message);
  r.error_type = exec__s(e->type);
  r.traceback = exec__s(e->traceback);
  r.executor = exec__s(e->executor);
  size_t n = generic_response__get_packed_size(&r);
  int rc = sq_buf_reserve(out, n);
  if (rc) return rc;
  generic_response__pack(&r, out->data + out->len);
  out->len += n;
  return 0;
}

static int exec__u32(sq_buf_t *out, uint8_t op, size_t n) {
  if (n > UINT32_MAX) return SQ_ETOOBIG;
  uint8_t h[5] = {op, (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
  return sq_buf_append(out, h, sizeof(h));
}

int exec_errval_pickle(const char *text, const uint8_t *data, size_t len, sq_buf_t *out) {
  static const uint8_t proto[2] = {0x80, 3};
  static const uint8_t tail[2] = {0x86, '.'}; /* TUPLE2, STOP */
  size_t tlen = strlen(text);
  int rc = sq_buf_append(out, proto, sizeof(proto));
  if (!rc) rc = exec__u32(out, 'X', tlen); /* BINUNICODE */
  if (!rc) rc = sq_buf_append(out, text, tlen);
  if (!rc) rc = exec__u32(out, 'B', len); /* BINBYTES */
  if (!rc && len) rc = sq_buf_append(out, data, len);
  if (!rc) rc = sq_buf_append(out, tail, sizeof(tail));
  return rc;
}

int exec_errval_value(const exec_errval_t *e, sq_buf_t *out) {
  sq_buf_t resp = {0}, pick = {0};
  char *text = NULL;
  const char *msg = exec__s(e->message);
  int rc = exec_errval_response(e, &resp);
  if (rc) goto out;
  rc = -ENOMEM;
  text = malloc(strlen(msg) + 8);
  if (!text) goto out;
  memcpy(text, "ERROR: ", 7);
  strcpy(text + 7, msg);
  rc = exec_errval_pickle(text, resp.data, resp.len, &pick);
  if (rc) goto out;
  Value v = VALUE__INIT;
  v.body.data = pick.data;
  v.body.len = pick.len;
  v.type = SERIALIZER_TYPE__DEFAULT;
  size_t n = value__get_packed_size(&v);
  rc = sq_buf_reserve(out, n);
  if (rc) goto out;
  value__pack(&v, out->data + out->len);
  out->len += n;
out:
  free(text);
  sq_buf_free(&resp);
  sq_buf_free(&pick);
  return rc;
}
