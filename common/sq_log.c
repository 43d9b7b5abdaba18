/* sq_log: leveled, line-atomic logging (see sq_log.h for the contract).
 *
 * Layout: a logger is {sink, level, format, component}. A sink is the shared part:
 * the file descriptor and the "say once" memory, reference-counted so that a root
 * logger and its children can be closed in any order. The default logger has no
 * sink (fd 2, nothing to free, no once memory) so that it can be a const object.
 *
 * Formatting never allocates: a record is built in a SQ_LOG_LINE_MAX stack buffer by
 * a small line builder whose appends are all-or-nothing per escaped character, so a
 * cut never splits a UTF-8 sequence or an escape, and a cut JSON record still closes
 * its string and object (a tail of SQ__LOG_TAIL bytes is kept for that).
 */
#include "sq_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "sq_error.h"

#define SQ__LOG_TAIL 16        /* room kept for `..."}` + newline after a cut */
#define SQ__LOG_ONCE_MAX 256   /* distinct say-once keys remembered per sink */

typedef struct {
  atomic_int refs;
  int fd;
  bool owns_fd;
  pthread_mutex_t once_mu;
  char **once_keys;
  size_t once_len;
} sq__log_sink_t;

struct sq_log {
  sq__log_sink_t *sink; /* NULL: stderr, no once memory */
  int level;            /* sq_log_level_t, read and written with __atomic */
  sq_log_format_t format;
  char component[SQ_LOG_COMPONENT_MAX];
};

static const sq_log_t sq__log_default = {NULL, SQ_LOG_INFO, SQ_LOG_TEXT, "squall"};

/* ---- sinks and loggers ------------------------------------------------------------ */

static void sq__log_sink_unref(sq__log_sink_t *sink) {
  if (!sink || atomic_fetch_sub(&sink->refs, 1) != 1) return;
  if (sink->owns_fd) close(sink->fd);
  for (size_t i = 0; i < sink->once_len; i++) free(sink->once_keys[i]);
  free(sink->once_keys);
  pthread_mutex_destroy(&sink->once_mu);
  free(sink);
}

static int sq__log_new(sq__log_sink_t *sink, int level, sq_log_format_t format,
                       const char *component, sq_log_t **out) {
  if (!component) component = "squall";
  if (strlen(component) >= SQ_LOG_COMPONENT_MAX) return SQ_EINVAL;
  sq_log_t *log = calloc(1, sizeof(*log));
  if (!log) return -ENOMEM;
  log->sink = sink;
  log->level = level;
  log->format = format;
  strcpy(log->component, component);
  *out = log;
  return 0;
}

int sq_log_open(const sq_log_options_t *opts, sq_log_t **out) {
  int rc = 0;
  sq__log_sink_t *sink = NULL;
  if ((unsigned)opts->level > SQ_LOG_DEBUG || (unsigned)opts->format > SQ_LOG_JSON)
    return SQ_EINVAL;
  sink = calloc(1, sizeof(*sink));
  if (!sink) return -ENOMEM;
  atomic_init(&sink->refs, 1);
  pthread_mutex_init(&sink->once_mu, NULL);
  sink->fd = STDERR_FILENO;
  if (opts->path && opts->path[0]) {
    int fd = open(opts->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
      rc = -errno;
      goto out;
    }
    sink->fd = fd;
    sink->owns_fd = true;
  }
  rc = sq__log_new(sink, opts->level, opts->format, opts->component, out);
out:
  if (rc) sq__log_sink_unref(sink);
  return rc;
}

int sq_log_child(const sq_log_t *parent, const char *component, sq_log_t **out) {
  if (!parent) parent = &sq__log_default;
  if (parent->sink) atomic_fetch_add(&parent->sink->refs, 1);
  int rc = sq__log_new(parent->sink, __atomic_load_n(&parent->level, __ATOMIC_RELAXED),
                       parent->format, component, out);
  if (rc) sq__log_sink_unref(parent->sink);
  return rc;
}

void sq_log_close(sq_log_t *log) {
  if (!log) return;
  sq__log_sink_unref(log->sink);
  free(log);
}

const sq_log_t *sq_log_default(void) { return &sq__log_default; }

void sq_log_set_level(sq_log_t *log, sq_log_level_t level) {
  __atomic_store_n(&log->level, (int)level, __ATOMIC_RELAXED);
}

bool sq_log_enabled(const sq_log_t *log, sq_log_level_t level) {
  if (!log) log = &sq__log_default;
  return (int)level <= __atomic_load_n(&log->level, __ATOMIC_RELAXED);
}

/* ---- the line builder ------------------------------------------------------------- */

typedef struct {
  char buf[SQ_LOG_LINE_MAX];
  size_t len;
  bool cut; /* something did not fit; later appends are ignored */
} sq__line_t;

/* Appends n bytes if they fit before the tail; otherwise marks the line cut. */
static bool sq__line_put(sq__line_t *l, const char *s, size_t n) {
  if (l->cut || n > SQ_LOG_LINE_MAX - SQ__LOG_TAIL - l->len) {
    l->cut = true;
    return false;
  }
  memcpy(l->buf + l->len, s, n);
  l->len += n;
  return true;
}

static bool sq__line_str(sq__line_t *l, const char *s) { return sq__line_put(l, s, strlen(s)); }

/* Appends into the reserved tail (closing characters after a cut). */
static void sq__line_close(sq__line_t *l, const char *s) {
  size_t n = strlen(s);
  if (n > SQ_LOG_LINE_MAX - l->len) n = SQ_LOG_LINE_MAX - l->len;
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), 0 if invalid. */
static size_t sq__utf8_len(const uint8_t *s, size_t n) {
  uint8_t c = s[0];
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) len = 3;
  else if (c >= 0xF0 && c <= 0xF4) len = 4;
  else return 0;
  if (c == 0xE0) lo = 0xA0;
  if (c == 0xED) hi = 0x9F;
  if (c == 0xF0) lo = 0x90;
  if (c == 0xF4) hi = 0x8F;
  if (len > n || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

/* Appends s escaped for the format. JSON: a valid JSON string body. Text: control
 * characters escaped; with `quoted`, also '"' and '\\'. Stops at the first unit that
 * does not fit. */
static void sq__line_escape(sq__line_t *l, const char *s, bool json, bool quoted) {
  const uint8_t *p = (const uint8_t *)s;
  size_t n = strlen(s);
  char esc[8];
  for (size_t i = 0; i < n && !l->cut;) {
    uint8_t c = p[i];
    size_t step = 1;
    if (c == '"' && (json || quoted)) sq__line_put(l, "\\\"", 2);
    else if (c == '\\' && (json || quoted)) sq__line_put(l, "\\\\", 2);
    else if (c == '\n') sq__line_put(l, "\\n", 2);
    else if (c == '\r') sq__line_put(l, "\\r", 2);
    else if (c == '\t') sq__line_put(l, "\\t", 2);
    else if (c < 0x20 || c == 0x7F) {
      snprintf(esc, sizeof(esc), json ? "\\u%04x" : "\\x%02x", c);
      sq__line_str(l, esc);
    } else if (c < 0x80 || !json) {
      sq__line_put(l, (const char *)p + i, 1);
    } else if ((step = sq__utf8_len(p + i, n - i)) != 0) {
      sq__line_put(l, (const char *)p + i, step);
    } else {
      step = 1;
      sq__line_put(l, "\\ufffd", 6);
    }
    i += step;
  }
}

/* ---- records ---------------------------------------------------------------------- */

static void sq__log_timestamp(char *out, size_t len) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  /* Fields are bounded by gmtime's ranges; the casts tell the compiler so. */
  snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", (tm.tm_year + 1900) % 10000,
           (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
           tm.tm_sec % 100, (unsigned)(ts.tv_nsec / 1000) % 1000000u);
}

static bool sq__text_needs_quotes(const char *v) {
  return v[0] == '\0' || strpbrk(v, " \"=\\") != NULL;
}

static void sq__log_build_text(sq__line_t *l, const sq_log_t *log, sq_log_level_t level,
                               const char *ts, const char *msg,
                               const sq_log_field_t *fields, size_t nfields) {
  static const char *const names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
  sq__line_str(l, ts);
  sq__line_put(l, " ", 1);
  sq__line_str(l, names[level]);
  sq__line_put(l, " ", 1);
  sq__line_escape(l, log->component, false, false);
  sq__line_put(l, ": ", 2);
  sq__line_escape(l, msg, false, false);
  for (size_t i = 0; i < nfields && !l->cut; i++) {
    const char *v = fields[i].value ? fields[i].value : "(null)";
    bool q = sq__text_needs_quotes(v);
    sq__line_put(l, " ", 1);
    sq__line_escape(l, fields[i].key, false, false);
    sq__line_put(l, q ? "=\"" : "=", q ? 2 : 1);
    sq__line_escape(l, v, false, q);
    if (q) sq__line_put(l, "\"", 1);
  }
  sq__line_close(l, l->cut ? "...\n" : "\n");
}

/* JSON string member `,"key":"value"`; on a cut, the open string is closed. */
static void sq__json_member(sq__line_t *l, const char *key, const char *value, bool first) {
  if (l->cut) return;
  size_t start = l->len;
  sq__line_str(l, first ? "{\"" : ",\"");
  sq__line_escape(l, key, true, true);
  sq__line_str(l, "\":\"");
  if (l->cut) {
    /* The member could not even start its value: drop it whole. */
    l->len = start;
    if (first) sq__line_close(l, "{");
    return;
  }
  sq__line_escape(l, value, true, true);
  sq__line_close(l, l->cut ? "...\"" : "\"");
}

static void sq__log_build_json(sq__line_t *l, const sq_log_t *log, sq_log_level_t level,
                               const char *ts, const char *msg,
                               const sq_log_field_t *fields, size_t nfields) {
  sq__json_member(l, "ts", ts, true);
  sq__json_member(l, "level", sq_log_level_name(level), false);
  sq__json_member(l, "component", log->component, false);
  sq__json_member(l, "msg", msg, false);
  for (size_t i = 0; i < nfields; i++)
    sq__json_member(l, fields[i].key, fields[i].value ? fields[i].value : "", false);
  sq__line_close(l, "}\n");
}

/* One write(2) per record; only the unwritten tail is retried. */
static void sq__log_write(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    buf += n;
    len -= (size_t)n;
  }
}

void sq_log_vemit(const sq_log_t *log, sq_log_level_t level, const sq_log_field_t *fields,
                  size_t nfields, const char *fmt, va_list ap) {
  if (!log) log = &sq__log_default;
  if ((unsigned)level > SQ_LOG_DEBUG || !sq_log_enabled(log, level)) return;
  char msg[SQ_LOG_LINE_MAX];
  char ts[40];
  sq__line_t line;
  int saved_errno = errno; /* callers may log between a failure and its errno */
  vsnprintf(msg, sizeof(msg), fmt, ap);
  sq__log_timestamp(ts, sizeof(ts));
  line.len = 0;
  line.cut = false;
  if (log->format == SQ_LOG_JSON)
    sq__log_build_json(&line, log, level, ts, msg, fields, nfields);
  else
    sq__log_build_text(&line, log, level, ts, msg, fields, nfields);
  sq__log_write(log->sink ? log->sink->fd : STDERR_FILENO, line.buf, line.len);
  errno = saved_errno;
}

void sq_log_emit(const sq_log_t *log, sq_log_level_t level, const sq_log_field_t *fields,
                 size_t nfields, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sq_log_vemit(log, level, fields, nfields, fmt, ap);
  va_end(ap);
}

/* True when `key` was not yet said on the sink (and remembers it). */
static bool sq__log_once_due(sq__log_sink_t *sink, const char *key) {
  bool due = true;
  if (!sink) return true;
  pthread_mutex_lock(&sink->once_mu);
  for (size_t i = 0; i < sink->once_len; i++) {
    if (strcmp(sink->once_keys[i], key) == 0) {
      due = false;
      goto out;
    }
  }
  if (sink->once_len >= SQ__LOG_ONCE_MAX) goto out; /* memory full: keep saying */
  if (sink->once_len % 16 == 0) {
    char **keys = realloc(sink->once_keys, (sink->once_len + 16) * sizeof(*keys));
    if (!keys) goto out;
    sink->once_keys = keys;
  }
  char *copy = strdup(key);
  if (copy) sink->once_keys[sink->once_len++] = copy;
out:
  pthread_mutex_unlock(&sink->once_mu);
  return due;
}

bool sq_log_say_once(const sq_log_t *log, sq_log_level_t level, const char *key,
                     const char *fmt, ...) {
  if (!log) log = &sq__log_default;
  if (!sq__log_once_due(log->sink, key)) return false;
  va_list ap;
  va_start(ap, fmt);
  sq_log_vemit(log, level, NULL, 0, fmt, ap);
  va_end(ap);
  return true;
}

/* ---- names ------------------------------------------------------------------------ */

int sq_log_level_parse(const char *name, sq_log_level_t *out) {
  static const struct { const char *name; sq_log_level_t level; } table[] = {
      {"error", SQ_LOG_ERROR}, {"warn", SQ_LOG_WARN}, {"warning", SQ_LOG_WARN},
      {"info", SQ_LOG_INFO},   {"debug", SQ_LOG_DEBUG},
  };
  for (size_t i = 0; name && i < sizeof(table) / sizeof(table[0]); i++) {
    if (strcasecmp(name, table[i].name) == 0) {
      *out = table[i].level;
      return 0;
    }
  }
  return SQ_EINVAL;
}

int sq_log_format_parse(const char *name, sq_log_format_t *out) {
  if (name && strcasecmp(name, "text") == 0) *out = SQ_LOG_TEXT;
  else if (name && strcasecmp(name, "json") == 0) *out = SQ_LOG_JSON;
  else return SQ_EINVAL;
  return 0;
}

const char *sq_log_level_name(sq_log_level_t level) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  return (unsigned)level <= SQ_LOG_DEBUG ? names[level] : "?";
}
