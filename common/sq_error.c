/* sq_error: names and messages of the one error space (see sq_error.h). */
#include "sq_error.h"

#include <errno.h>
#include <string.h>

typedef struct {
  int code;
  const char *name;
  const char *msg;
} sq__error_entry_t;

static const sq__error_entry_t sq__errors[] = {
#define SQ__ERR_ROW(name, off, msg) {name, #name, msg},
    SQ_ERROR_TABLE(SQ__ERR_ROW)
#undef SQ__ERR_ROW
};

#define SQ__NERRORS (int)(sizeof(sq__errors) / sizeof(sq__errors[0]))

static const sq__error_entry_t *sq__error_find(int err) {
  for (int i = 0; i < SQ__NERRORS; i++)
    if (sq__errors[i].code == err) return &sq__errors[i];
  return NULL;
}

const char *sq_strerror(int err) {
  if (err == 0) return "success";
  const sq__error_entry_t *e = sq__error_find(err);
  if (e) return e->msg;
  if (err < 0 && err > SQ_ERR_BASE) return strerror(-err); /* glibc: thread-safe text */
  return "unknown error";
}

const char *sq_errname(int err) {
  if (err == 0) return "OK";
  const sq__error_entry_t *e = sq__error_find(err);
  if (e) return e->name;
  if (err < 0 && err > SQ_ERR_BASE) {
    const char *n = strerrorname_np(-err);
    return n ? n : "UNKNOWN";
  }
  return "UNKNOWN";
}

int sq_error_at(int i, const char **name, const char **msg, int *code) {
  if (i < 0 || i >= SQ__NERRORS) return SQ_ENOTFOUND;
  *name = sq__errors[i].name;
  *msg = sq__errors[i].msg;
  *code = sq__errors[i].code;
  return 0;
}
