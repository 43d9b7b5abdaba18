/* sched_kvs: the scheduler's keys in the KVS (PROTOCOL.md §1.13), synchronous and
 * bounded by kvs_timeout_ms x (1 retry).
 *
 *   funcs/<name>          LWW(serialized Value of the function)
 *   funcs/index-allfuncs  SET of "funcs/<name>": registration PUTs a one-element set;
 *                         the KVS's union merge adds it (no read-modify-write race)
 *   <dag name>            LWW(raw Dag bytes); deletion writes a newer LWW with an
 *                         EMPTY value, which the KVS answers as KEY_DNE (§2.2): a
 *                         tombstone that every scheduler reads as "no such DAG"
 *
 * Timestamps come from sq_lww_writer_timestamp with the scheduler's own monotonic slot.
 */
#include "sched_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lattice.h"
#include "sq_error.h"

int sched__lww_encode(sched_t *s, const uint8_t *v, size_t len, sq_buf_t *out) {
  sq_lattice_t l = {.type = SQ_LATTICE_LWW};
  l.u.lww.timestamp = sq_lww_writer_timestamp(0, &s->lww_last);
  l.u.lww.value.data = (uint8_t *)v;
  l.u.lww.value.len = len;
  return sq_lattice_encode(&l, out);
}

int sched__kvs_put_lww(sched_t *s, const char *key, const uint8_t *v, size_t len) {
  sq_buf_t buf = {0};
  int rc = sched__lww_encode(s, v, len, &buf);
  if (rc == 0)
    rc = kvs_client_put(s->kvs, key, SQ_LATTICE_LWW, buf.data, buf.len, &s->kvs_lim);
  sq_buf_free(&buf);
  return rc;
}

int sched__kvs_add_index(sched_t *s, const char *fullname) {
  sq_lattice_t l = {.type = SQ_LATTICE_SET};
  sq_bytes_t item = {.data = (uint8_t *)fullname, .len = strlen(fullname)};
  sq_buf_t buf = {0};
  l.u.set.items = &item;
  l.u.set.count = 1;
  int rc = sq_lattice_encode(&l, &buf);
  if (rc == 0)
    rc = kvs_client_put(s->kvs, "funcs/index-allfuncs", SQ_LATTICE_SET, buf.data, buf.len,
                        &s->kvs_lim);
  sq_buf_free(&buf);
  return rc;
}

int sched__lww_value(const uint8_t *payload, size_t plen, uint8_t **out, size_t *len) {
  sq_lattice_t l = {0};
  int rc = sq_lattice_decode(SQ_LATTICE_LWW, payload, plen, &l);
  if (rc) return rc;
  *len = l.u.lww.value.len;
  *out = malloc(*len ? *len : 1);
  if (!*out) rc = -ENOMEM;
  else if (*len) memcpy(*out, l.u.lww.value.data, *len);
  if (rc == 0 && *len == 0) {
    free(*out);
    *out = NULL;
    rc = SQ_EKEYDNE; /* an empty LWW value is a tombstone */
  }
  sq_lattice_free(&l);
  return rc;
}

int sched__kvs_get_lww(sched_t *s, const char *key, uint8_t **out, size_t *len) {
  sq_lattice_type_t type;
  uint8_t *payload = NULL;
  size_t plen = 0;
  *out = NULL;
  int rc = kvs_client_get(s->kvs, key, &s->kvs_lim, &type, &payload, &plen);
  if (rc == 0 && type != SQ_LATTICE_LWW) rc = SQ_ELATTICE;
  if (rc == 0) rc = sched__lww_value(payload, plen, out, len);
  free(payload);
  return rc;
}

int sched__kvs_load_index(sched_t *s) {
  sq_lattice_type_t type;
  uint8_t *payload = NULL;
  size_t plen = 0;
  sq_lattice_t l = {0};
  s->index.reads++;
  int rc = kvs_client_get(s->kvs, "funcs/index-allfuncs", &s->kvs_lim, &type, &payload,
                          &plen);
  if (rc == 0 && type != SQ_LATTICE_SET) rc = SQ_ELATTICE;
  if (rc == 0) rc = sq_lattice_decode(SQ_LATTICE_SET, payload, plen, &l);
  for (size_t i = 0; rc == 0 && i < l.u.set.count; i++) {
    const sq_bytes_t *it = &l.u.set.items[i];
    char name[SCHED_FNAME_MAX];
    if (it->len <= 6 || it->len - 6 >= sizeof name || memcmp(it->data, "funcs/", 6) != 0)
      continue;
    memcpy(name, it->data + 6, it->len - 6);
    name[it->len - 6] = '\0';
    if (memchr(name, '\0', it->len - 6)) continue;
    int arc = sched__func_add(s, name);
    if (arc == SQ_ETOOBIG) break;
    if (arc) rc = arc;
  }
  sq_lattice_free(&l);
  free(payload);
  return rc;
}
