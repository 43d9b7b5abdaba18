/* sched_func: ports 5000 (connect), 5001 (register a function), 5002 (call one),
 * 5003 (list), and the set of function names known to be registered.
 *
 * A FunctionCall is re-packed for the executor with every field it arrived with,
 * squall's extensions included (timeout_ms, response_address: the executor pushes the
 * result there instead of writing the KVS), plus skip_status (field 102): this
 * scheduler needs no ThreadStatus after each call, unlike Cloudburst's, which
 * withholds the executor until it comes; a re-send after an executor loss
 * (sched_retry.c) unpacks the same bytes, so it keeps them too.
 *
 * The known set is a sorted array of names: filled by registrations here and by
 * reading funcs/index-allfuncs when a name is missing (another scheduler may have
 * registered it) or a List arrives. That read BLOCKS the scheduler thread, so it is
 * bounded (s->index): a client calling an unknown name in a loop costs one read per
 * SCHED_INDEX_RELOAD_MS, not one per call; a name not looked up since the last read
 * gets an early read (a few per window), so "register on scheduler A, then call on B"
 * works at once (sched__func_known). A List within SCHED_INDEX_RELOAD_MS of the last
 * read answers from the known set without a read (sched__on_list).
 */
#include "sched_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"
#include "sq_proto.h"

/* Longest FunctionCall.response_address accepted (exec_slot.h keeps 1023 bytes). */
#define SCHED_ADDR_MAX 1000

static int sched__cmp_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool sched__func_local(const sched_t *s, const char *name) {
  return s->nfuncs &&
         bsearch(&name, s->funcs, s->nfuncs, sizeof(char *), sched__cmp_name) != NULL;
}

int sched__func_add(sched_t *s, const char *name) {
  if (sched__func_local(s, name)) return 0;
  if (s->nfuncs >= SCHED_MAX_FUNCS) return SQ_ETOOBIG;
  size_t lo = 0, hi = s->nfuncs;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (strcmp(s->funcs[mid], name) < 0) lo = mid + 1;
    else hi = mid;
  }
  char *copy = strdup(name);
  if (!copy) return -ENOMEM;
  memmove(&s->funcs[lo + 1], &s->funcs[lo], (s->nfuncs - lo) * sizeof(char *));
  s->funcs[lo] = copy;
  s->nfuncs++;
  return 0;
}

/* FNV-1a: names remembered as missed (a collision only delays a name's early read). */
static uint64_t sched__name_hash(const char *name) {
  uint64_t h = 14695981039346656037ull;
  for (const unsigned char *p = (const unsigned char *)name; *p; p++)
    h = (h ^ *p) * 1099511628211ull;
  return h;
}

bool sched__func_known(sched_t *s, const char *name) {
  sched_index_t *ix = &s->index;
  if (sched__func_local(s, name)) return true;
  uint64_t now = sq_now_ms(), hash = sched__name_hash(name);
  bool due = now - ix->read_ms >= SCHED_INDEX_RELOAD_MS;
  bool repeat = ix->has_missed && ix->missed == hash; /* missed since the last read */
  if (!due && (ix->fresh >= SCHED_INDEX_FRESH_MAX || repeat)) {
    ix->skipped++;
    return false;
  }
  if (due) ix->fresh = 0;
  else ix->fresh++;
  ix->read_ms = now;
  ix->has_missed = false;
  (void)sched__kvs_load_index(s); /* on failure the local set answers */
  if (sched__func_local(s, name)) return true;
  ix->missed = hash;
  ix->has_missed = true;
  return false;
}

void sched__on_connect(sched_t *s, const uint8_t *b, size_t n) {
  (void)b;
  (void)n;
  sched__reply_bytes(s, SCHED_P_CONNECT, s->kvs_host, strlen(s->kvs_host));
}

static bool sched__name_ok(const char *name) {
  size_t len = strlen(name);
  return len > 0 && len < SCHED_FNAME_MAX - 8 && sched__utf8_valid(name);
}

void sched__on_func_create(sched_t *s, const uint8_t *b, size_t n) {
  const int P = SCHED_P_FCREATE;
  Function *f = NULL;
  ProtobufCMessage *v = NULL;
  char key[SCHED_FNAME_MAX + 8];
  int rc = sq_proto_unpack(&function__descriptor, NULL, b, n, s->cfg->max_message_bytes,
                           (ProtobufCMessage **)&f);
  if (rc) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "malformed Function message: %s", sq_strerror(rc));
    goto out;
  }
  if (!sched__name_ok(f->name)) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "a function needs a UTF-8 name of 1 to %d bytes",
                       SCHED_FNAME_MAX - 9);
    goto out;
  }
  if (f->body.len == 0 || sq_proto_unpack(&value__descriptor, NULL, f->body.data, f->body.len,
                                          s->cfg->max_message_bytes, &v) != 0) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "function '%s': body must be a serialized Value holding the "
                       "cloudpickled function", f->name);
    goto out;
  }
  snprintf(key, sizeof key, "funcs/%s", f->name);
  rc = sched__kvs_put_lww(s, key, f->body.data, f->body.len);
  if (rc == 0) rc = sched__kvs_add_index(s, key);
  if (rc) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "function '%s' was not stored: the KVS write failed: %s (%s)",
                       f->name, sq_strerror(rc), kvs_client_message(s->kvs));
    goto out;
  }
  (void)sched__func_add(s, f->name);
  sq_log_info(s->log, "registered function %s (%zu bytes)", f->name, f->body.len);
  sched__reply_ok(s, P, f->name);
out:
  if (v) protobuf_c_message_free_unpacked(v, NULL);
  if (f) function__free_unpacked(f, NULL);
}

/* Sends a packed call to a picked executor. 0 or SQ_ENOTFOUND / send error. */
static int sched__send_call(sched_t *s, FunctionCall *fc, const sched_exec_id_t *exclude,
                            int tries) {
  sched_pickle_ref_t refs[SCHED_MAX_REFS];
  size_t nrefs = fc->arguments ? sched__refs(fc->arguments->values, fc->arguments->n_values,
                                             refs, SCHED_MAX_REFS) : 0;
  sched_exec_id_t ex;
  int rc = sched_policy_pick_call(s->policy, refs, nrefs, exclude, &ex);
  if (rc) return rc;
  fc->skip_status = true; /* load is our pick count, liveness the periodic status */
  size_t len = function_call__get_packed_size(fc);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return -ENOMEM;
  function_call__pack(fc, buf);
  rc = sched__push_bytes(s, &ex, SCHED_EXEC_CALL, buf, len);
  if (rc == 0) sched__track_oneshot(s, buf, len, &ex, tries); /* keeps buf */
  else free(buf);
  return rc;
}

void sched__on_func_call(sched_t *s, const uint8_t *b, size_t n) {
  const int P = SCHED_P_FCALL;
  FunctionCall *fc = NULL;
  char uuid[37];
  int rc = sq_proto_unpack(&function_call__descriptor, NULL, b, n, s->cfg->max_message_bytes,
                           (ProtobufCMessage **)&fc);
  if (rc) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "malformed FunctionCall message: %s", sq_strerror(rc));
    goto out;
  }
  if (!sched__name_ok(fc->name) || !sched__func_known(s, fc->name)) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__FUNC_NOT_FOUND,
                       "function '%.200s' is not registered", fc->name);
    goto out;
  }
  if (!sched__utf8_valid(fc->response_key)) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "response_key must be UTF-8 text");
    goto out;
  }
  /* squall extension 101: forwarded untouched (re-sends keep it); bounded so that the
   * executor's crash report can still name it (exec_slot.h). */
  if (!sched__utf8_valid(fc->response_address) ||
      strlen(fc->response_address) >= SCHED_ADDR_MAX) {
    sched__reply_error(s, P, CLOUDBURST_ERROR__EXECUTION_ERROR,
                       "response_address must be UTF-8 text of under %d bytes", SCHED_ADDR_MAX);
    goto out;
  }
  char *orig_key = fc->response_key;
  if (!fc->response_key[0]) {
    sched__uuid4(uuid);
    fc->response_key = uuid;
  }
  rc = sched__send_call(s, fc, NULL, 1);
  if (rc == SQ_ENOTFOUND)
    sched__reply_error(s, P, CLOUDBURST_ERROR__NO_RESOURCES,
                       "no live executor can run '%s' (none has reported status recently)",
                       fc->name);
  else if (rc)
    sched__reply_error(s, P, CLOUDBURST_ERROR__NO_RESOURCES,
                       "the call of '%s' could not be sent: %s", fc->name, sq_strerror(rc));
  else
    sched__reply_ok(s, P, fc->response_key);
  fc->response_key = orig_key; /* freed by protobuf-c */
out:
  if (fc) function_call__free_unpacked(fc, NULL);
}

int sched__resend_call(sched_t *s, const uint8_t *msg, size_t len,
                       const sched_exec_id_t *dead, int tries) {
  FunctionCall *fc = function_call__unpack(NULL, len, msg); /* our own bytes */
  if (!fc) return SQ_EPROTO;
  int rc = sched__send_call(s, fc, dead, tries);
  function_call__free_unpacked(fc, NULL);
  return rc;
}

void sched__on_list(sched_t *s, const uint8_t *b, size_t n) {
  char prefix[SCHED_FNAME_MAX];
  if (n >= sizeof prefix || memchr(b, '\0', n)) {
    StringSet empty = STRING_SET__INIT;
    sched__reply_pb(s, SCHED_P_LIST, &empty.base);
    return;
  }
  memcpy(prefix, b, n);
  prefix[n] = '\0';
  uint64_t now = sq_now_ms();
  if (now - s->index.read_ms >= SCHED_INDEX_RELOAD_MS) {
    s->index.read_ms = now; /* a timed read: unknown names start a new window */
    s->index.fresh = 0;
    s->index.has_missed = false;
    (void)sched__kvs_load_index(s); /* best effort: the local set answers if it fails */
  } else {
    s->index.lists_cached++;
  }
  char **names = calloc(s->nfuncs ? s->nfuncs : 1, sizeof(char *));
  StringSet set = STRING_SET__INIT;
  for (size_t i = 0; names && i < s->nfuncs; i++)
    if (strncmp(s->funcs[i], prefix, n) == 0) names[set.n_keys++] = s->funcs[i];
  set.keys = names;
  sched__reply_pb(s, SCHED_P_LIST, &set.base);
  free(names);
}
