/* sq_config: declarative daemon options (see sq_config.h for the contract).
 *
 * Every value, whether a built-in default, a file line or a flag, goes through one
 * function, sq__config_set(), which finds the option, parses the text for its type
 * and only then writes the field. A field is therefore never half-written, and a
 * string field is replaced (old one freed) only once the new one is allocated.
 *
 * Load order is fixed by sq_config_load(): a first pass over argv finds --help and
 * --config (the file must be read before the flags, whatever their order), then the
 * defaults, the file and the remaining flags are applied in that order.
 */
#include "sq_config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sq_error.h"

#define SQ__CMDLINE "command line"

static void *sq__field(void *cfg, const sq_opt_t *opt) { return (char *)cfg + opt->offset; }

static const void *sq__cfield(const void *cfg, const sq_opt_t *opt) {
  return (const char *)cfg + opt->offset;
}

static int sq__config_fail(sq_config_result_t *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int sq__config_fail(sq_config_result_t *res, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(res->error, sizeof(res->error), fmt, ap);
  va_end(ap);
  return SQ_ECONFIG;
}

/* ---- names ------------------------------------------------------------------------ */

static char sq__name_char(char c) { return c == '-' ? '_' : c; }

/* Compares names with '-' and '_' equal; n bytes of a (a need not be terminated). */
static bool sq__name_eq(const char *a, size_t n, const char *b) {
  for (size_t i = 0; i < n; i++, b++)
    if (*b == '\0' || sq__name_char(a[i]) != sq__name_char(*b)) return false;
  return *b == '\0';
}

static const sq_opt_t *sq__opt_find(const sq_config_spec_t *spec, const char *key,
                                    size_t n) {
  for (size_t i = 0; i < spec->nopts; i++)
    if (sq__name_eq(key, n, spec->opts[i].name)) return &spec->opts[i];
  return NULL;
}

/* Levenshtein distance of the first 63 bytes of each name ('-' == '_'). */
static size_t sq__edit_distance(const char *a, const char *b) {
  size_t la = strnlen(a, 63), lb = strnlen(b, 63);
  size_t row[64];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t cost = sq__name_char(a[i - 1]) == sq__name_char(b[j - 1]) ? 0 : 1;
      size_t best = diag + cost;
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

/* The closest option name if it is close enough to be a typo, else NULL. */
static const char *sq__suggest(const sq_config_spec_t *spec, const char *key) {
  const char *best = NULL;
  size_t best_d = SIZE_MAX;
  size_t limit = strlen(key) / 3 > 2 ? strlen(key) / 3 : 2;
  for (size_t i = 0; i < spec->nopts; i++) {
    size_t d = sq__edit_distance(key, spec->opts[i].name);
    if (d < best_d) {
      best_d = d;
      best = spec->opts[i].name;
    }
  }
  return best_d <= limit ? best : NULL;
}

/* ---- value parsers ---------------------------------------------------------------- */

int sq_config_parse_size(const char *text, uint64_t *out) {
  static const char units[] = "KMGT";
  const char *p = text;
  if (!isdigit((unsigned char)*p)) return SQ_EINVAL;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(p, &end, 10);
  if (errno == ERANGE) return -ERANGE;
  unsigned shift = 0;
  if (*end) {
    const char *u = strchr(units, toupper((unsigned char)*end));
    if (!u) return SQ_EINVAL;
    shift = 10 * (unsigned)(u - units + 1);
    end++;
    if (*end == 'i' || *end == 'I') {
      end++;
      if (*end != 'B' && *end != 'b') return SQ_EINVAL;
    }
    if (*end == 'B' || *end == 'b') end++;
  }
  if (*end) return SQ_EINVAL;
  if (shift && v > (UINT64_MAX >> shift)) return -ERANGE;
  *out = (uint64_t)v << shift;
  return 0;
}

static int sq__parse_bool(const char *t, bool *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(t, yes[i]) == 0) return *out = true, 0;
    if (strcasecmp(t, no[i]) == 0) return *out = false, 0;
  }
  return SQ_EINVAL;
}

static int sq__parse_int64(const char *t, int64_t *out) {
  char *end;
  if (!*t || isspace((unsigned char)*t)) return SQ_EINVAL;
  errno = 0;
  long long v = strtoll(t, &end, 10);
  if (*end) return SQ_EINVAL;
  if (errno == ERANGE) return -ERANGE;
  *out = v;
  return 0;
}

static int sq__parse_uint64(const char *t, uint64_t *out) {
  char *end;
  if (!isdigit((unsigned char)*t)) return SQ_EINVAL; /* strtoull takes "-1" */
  errno = 0;
  unsigned long long v = strtoull(t, &end, 10);
  if (*end) return SQ_EINVAL;
  if (errno == ERANGE) return -ERANGE;
  *out = v;
  return 0;
}

static int sq__parse_double(const char *t, double *out) {
  char *end;
  if (!*t || isspace((unsigned char)*t)) return SQ_EINVAL;
  errno = 0;
  double v = strtod(t, &end);
  if (*end || !isfinite(v)) return SQ_EINVAL;
  if (errno == ERANGE) return -ERANGE;
  *out = v;
  return 0;
}

static int sq__parse_enum(const sq_opt_t *opt, const char *t, int64_t *out) {
  for (int64_t i = 0; opt->choices && opt->choices[i]; i++) {
    if (strcasecmp(t, opt->choices[i]) == 0) {
      *out = i;
      return 0;
    }
  }
  return SQ_EINVAL;
}

/* Writes "an integer", "one of: a, b", ... into buf: what a value must look like. */
static void sq__expected(const sq_opt_t *opt, char *buf, size_t len) {
  static const char *const what[] = {
      [SQ_OPT_INT64] = "an integer",
      [SQ_OPT_UINT64] = "a non-negative integer",
      [SQ_OPT_SIZE] = "a size in bytes such as 4096, 512K, 64M or 2G",
      [SQ_OPT_BOOL] = "a boolean (true/false, yes/no, on/off, 1/0)",
      [SQ_OPT_STRING] = "a string",
      [SQ_OPT_DOUBLE] = "a finite number",
  };
  if (opt->type != SQ_OPT_ENUM) {
    snprintf(buf, len, "%s", what[opt->type]);
    return;
  }
  size_t used = (size_t)snprintf(buf, len, "one of:");
  for (size_t i = 0; opt->choices && opt->choices[i] && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s %s", i ? "," : "",
                             opt->choices[i]);
}

/* Parses text for opt into the field. 0, SQ_EINVAL / -ERANGE (field untouched),
 * -ENOMEM. */
static int sq__opt_assign(void *cfg, const sq_opt_t *opt, const char *text) {
  void *f = sq__field(cfg, opt);
  if (!text) {
    if (opt->type == SQ_OPT_STRING) {
      free(*(char **)f);
      *(char **)f = NULL;
      return 0;
    }
    text = opt->type == SQ_OPT_BOOL ? "false" : "0";
    if (opt->type == SQ_OPT_ENUM) text = opt->choices ? opt->choices[0] : "";
  }
  switch (opt->type) {
    case SQ_OPT_INT64: return sq__parse_int64(text, f);
    case SQ_OPT_UINT64: return sq__parse_uint64(text, f);
    case SQ_OPT_SIZE: return sq_config_parse_size(text, f);
    case SQ_OPT_BOOL: return sq__parse_bool(text, f);
    case SQ_OPT_DOUBLE: return sq__parse_double(text, f);
    case SQ_OPT_ENUM: return sq__parse_enum(opt, text, f);
    case SQ_OPT_STRING: {
      char *copy = strdup(text);
      if (!copy) return -ENOMEM;
      free(*(char **)f);
      *(char **)f = copy;
      return 0;
    }
  }
  return SQ_EINVAL;
}

/* ---- setting one option ----------------------------------------------------------- */

/* is_flag: the key came as --key (errors then show the flag). */
static int sq__config_set(const sq_config_spec_t *spec, void *cfg, const char *key,
                          size_t keylen, const char *value, const char *origin,
                          bool is_flag, sq_config_result_t *res) {
  const char *dash = is_flag ? "--" : "";
  const sq_opt_t *opt = sq__opt_find(spec, key, keylen);
  if (!opt) {
    char name[128];
    snprintf(name, sizeof(name), "%.*s", (int)(keylen < 100 ? keylen : 100), key);
    const char *hint = sq__suggest(spec, name);
    return sq__config_fail(res, "%s: unknown option '%s%s'%s%s%s%s", origin, dash, name,
                           hint ? " (did you mean '" : "", hint ? dash : "",
                           hint ? hint : "", hint ? "'?)" : "; see --help");
  }
  int rc = sq__opt_assign(cfg, opt, value);
  if (rc == -ENOMEM) return rc;
  if (rc) {
    char want[256];
    sq__expected(opt, want, sizeof(want));
    return sq__config_fail(res, "%s: %s%s: expected %s, got '%.100s'%s", origin, dash,
                           opt->name, want, value ? value : "",
                           rc == -ERANGE ? " (out of range)" : "");
  }
  return 0;
}

int sq_config_set(const sq_config_spec_t *spec, void *cfg, const char *key,
                  const char *value, const char *origin, sq_config_result_t *res) {
  return sq__config_set(spec, cfg, key, strlen(key), value, origin ? origin : SQ__CMDLINE,
                        false, res);
}

void sq_config_free(const sq_config_spec_t *spec, void *cfg) {
  if (!cfg) return;
  for (size_t i = 0; i < spec->nopts; i++) {
    if (spec->opts[i].type != SQ_OPT_STRING) continue;
    char **f = sq__field(cfg, &spec->opts[i]);
    free(*f);
    *f = NULL;
  }
}

static int sq__config_defaults(const sq_config_spec_t *spec, void *cfg,
                               sq_config_result_t *res) {
  for (size_t i = 0; i < spec->nopts; i++) {
    const sq_opt_t *opt = &spec->opts[i];
    if ((opt->type == SQ_OPT_ENUM && !(opt->choices && opt->choices[0])) ||
        sq__name_eq("config", 6, opt->name) || sq__name_eq("help", 4, opt->name))
      return sq__config_fail(res, "option table: '%s' is reserved or an enum without "
                                  "choices", opt->name);
    int rc = sq__config_set(spec, cfg, opt->name, strlen(opt->name), opt->def,
                            "built-in default", false, res);
    if (rc) return rc;
  }
  return 0;
}

/* ---- the config file -------------------------------------------------------------- */

static char *sq__trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
  return s;
}

/* Turns the text after '=' into the value in place: a "quoted" string with \" and \\
 * escapes, or bare text up to a '#' comment. Returns the value or NULL if a quoted
 * string is not closed or is followed by something other than a comment. */
static char *sq__file_value(char *v) {
  v = sq__trim(v);
  if (*v != '"') {
    char *hash = strchr(v, '#');
    if (hash) *hash = '\0';
    return sq__trim(v);
  }
  char *r = v + 1, *w = v;
  while (*r && *r != '"') {
    if (*r == '\\' && (r[1] == '"' || r[1] == '\\')) r++;
    *w++ = *r++;
  }
  if (*r != '"') return NULL;
  r = sq__trim(r + 1);
  if (*r && *r != '#') return NULL;
  *w = '\0';
  return v;
}

/* Applies one line (already without its newline). `where` is "file:line". */
static int sq__config_line(const sq_config_spec_t *spec, void *cfg, char *line,
                           const char *where, sq_config_result_t *res) {
  char *s = sq__trim(line);
  if (*s == '\0' || *s == '#') return 0;
  char *eq = strchr(s, '=');
  if (!eq) return sq__config_fail(res, "%s: expected 'key = value', got '%.100s'", where, s);
  *eq = '\0';
  char *key = sq__trim(s);
  char *value = sq__file_value(eq + 1);
  if (!*key) return sq__config_fail(res, "%s: missing key before '='", where);
  if (!value)
    return sq__config_fail(res, "%s: key '%.100s': unterminated quoted value", where, key);
  return sq__config_set(spec, cfg, key, strlen(key), value, where, false, res);
}

static int sq__config_file(const sq_config_spec_t *spec, void *cfg, const char *path,
                           sq_config_result_t *res) {
  int rc = 0;
  char *line = NULL;
  size_t cap = 0;
  FILE *f = fopen(path, "re");
  if (!f) {
    int err = errno;
    return sq__config_fail(res, "%s: cannot read config file: %s", path, strerror(err));
  }
  char where[320];
  for (unsigned lineno = 1; getline(&line, &cap, f) >= 0; lineno++) {
    line[strcspn(line, "\r\n")] = '\0';
    snprintf(where, sizeof(where), "%.300s:%u", path, lineno);
    rc = sq__config_line(spec, cfg, line, where, res);
    if (rc) goto out;
  }
  if (ferror(f)) rc = sq__config_fail(res, "%s: read error", path);
out:
  free(line);
  fclose(f);
  return rc;
}

/* ---- flags ------------------------------------------------------------------------ */

/* Pass 1: finds --help and --config. Returns 0 or SQ_ECONFIG (--config without file). */
static int sq__config_prescan(int argc, char *const *argv, const char **file,
                              sq_config_result_t *res) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) res->help = true;
    else if (strncmp(a, "--config=", 9) == 0) *file = a + 9;
    else if (strcmp(a, "--config") == 0) {
      if (i + 1 >= argc)
        return sq__config_fail(res, SQ__CMDLINE ": --config needs a file name");
      *file = argv[++i];
    }
  }
  return 0;
}

/* Applies argv[*i] (and maybe its value argv[*i + 1]) and advances *i. */
static int sq__config_flag(const sq_config_spec_t *spec, void *cfg, int argc,
                           char *const *argv, int *i, sq_config_result_t *res) {
  const char *a = argv[*i];
  if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
    return sq__config_fail(res, SQ__CMDLINE ": unexpected argument '%.100s' (options are "
                           "--name=value; see --help)", a);
  const char *name = a + 2;
  const char *eq = strchr(name, '=');
  size_t n = eq ? (size_t)(eq - name) : strlen(name);
  if (sq__name_eq(name, n, "config")) { /* read in pass 1; skip it and its value */
    if (!eq) (*i)++;
    return 0;
  }
  const sq_opt_t *opt = sq__opt_find(spec, name, n);
  if (eq) return sq__config_set(spec, cfg, name, n, eq + 1, SQ__CMDLINE, true, res);
  if (!opt && n > 3 && strncmp(name, "no-", 3) == 0) {
    const sq_opt_t *neg = sq__opt_find(spec, name + 3, n - 3);
    if (neg && neg->type == SQ_OPT_BOOL)
      return sq__config_set(spec, cfg, name + 3, n - 3, "false", SQ__CMDLINE, true, res);
  }
  if (opt && opt->type == SQ_OPT_BOOL)
    return sq__config_set(spec, cfg, name, n, "true", SQ__CMDLINE, true, res);
  if (opt && *i + 1 >= argc)
    return sq__config_fail(res, SQ__CMDLINE ": --%s needs a value", opt->name);
  const char *value = opt ? argv[++(*i)] : NULL;
  return sq__config_set(spec, cfg, name, n, value, SQ__CMDLINE, true, res);
}

int sq_config_load(const sq_config_spec_t *spec, void *cfg, int argc, char *const *argv,
                   sq_config_result_t *res) {
  const char *file = NULL;
  res->help = false;
  res->error[0] = '\0';
  int rc = sq__config_prescan(argc, argv, &file, res);
  if (rc || res->help) return rc;
  rc = sq__config_defaults(spec, cfg, res);
  if (rc) goto out;
  if (file) {
    rc = sq__config_file(spec, cfg, file, res);
    if (rc) goto out;
  }
  for (int i = 1; i < argc; i++) {
    rc = sq__config_flag(spec, cfg, argc, argv, &i, res);
    if (rc) goto out;
  }
out:
  if (rc == -ENOMEM) snprintf(res->error, sizeof(res->error), "out of memory");
  if (rc) sq_config_free(spec, cfg);
  return rc;
}

/* ---- usage and dump --------------------------------------------------------------- */

static int sq__buf_printf(sq_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int sq__buf_printf(sq_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return SQ_EINVAL;
  int rc = sq_buf_reserve(b, (size_t)n + 1);
  if (rc) return rc;
  va_start(ap, fmt);
  vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

/* "--name=INT", "--[no-]name", "--name=a|b" into buf. */
static void sq__usage_flag(const sq_opt_t *opt, char *buf, size_t len) {
  static const char *const meta[] = {
      [SQ_OPT_INT64] = "INT", [SQ_OPT_UINT64] = "UINT", [SQ_OPT_SIZE] = "SIZE",
      [SQ_OPT_STRING] = "STR", [SQ_OPT_DOUBLE] = "NUM",
  };
  if (opt->type == SQ_OPT_BOOL) {
    snprintf(buf, len, "--[no-]%s", opt->name);
    return;
  }
  if (opt->type != SQ_OPT_ENUM) {
    snprintf(buf, len, "--%s=%s", opt->name, meta[opt->type]);
    return;
  }
  size_t used = (size_t)snprintf(buf, len, "--%s=", opt->name);
  for (size_t i = 0; opt->choices && opt->choices[i] && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "|" : "", opt->choices[i]);
}

int sq_config_usage(const sq_config_spec_t *spec, sq_buf_t *out) {
  int rc = sq__buf_printf(out, "Usage: %s [--config FILE] [--name=value ...]\n%s%s\n",
                          spec->prog, spec->summary ? spec->summary : "",
                          spec->summary ? "\n" : "");
  if (rc) return rc;
  rc = sq__buf_printf(out, "Options (later wins: defaults, then --config FILE, then "
                           "flags):\n  %-30s %s\n  %-30s %s\n",
                      "--config FILE", "read `key = value` lines from FILE",
                      "--help", "print this text and exit");
  for (size_t i = 0; i < spec->nopts && !rc; i++) {
    const sq_opt_t *o = &spec->opts[i];
    char flag[256];
    sq__usage_flag(o, flag, sizeof(flag));
    rc = sq__buf_printf(out, "  %-30s %s%s%s%s\n", flag, o->help ? o->help : "",
                        o->def ? " [default: " : "", o->def ? o->def : "",
                        o->def ? "]" : "");
  }
  return rc;
}

void sq_config_print_usage(const sq_config_spec_t *spec, FILE *f) {
  sq_buf_t b = {0};
  if (sq_config_usage(spec, &b) == 0) fwrite(b.data, 1, b.len, f);
  sq_buf_free(&b);
}

/* A string as the file parser reads it back: bare when safe, else quoted. */
static int sq__dump_string(sq_buf_t *out, const char *s) {
  size_t n = strlen(s);
  bool bare = n && !strpbrk(s, "#\"\\") && !isspace((unsigned char)s[0]) &&
              !isspace((unsigned char)s[n - 1]);
  if (bare) return sq__buf_printf(out, "%s\n", s);
  int rc = sq__buf_printf(out, "\"");
  for (size_t i = 0; i < n && !rc; i++)
    rc = sq__buf_printf(out, "%s%c", (s[i] == '"' || s[i] == '\\') ? "\\" : "", s[i]);
  return rc ? rc : sq__buf_printf(out, "\"\n");
}

int sq_config_dump(const sq_config_spec_t *spec, const void *cfg, sq_buf_t *out) {
  int rc = 0;
  for (size_t i = 0; i < spec->nopts && !rc; i++) {
    const sq_opt_t *o = &spec->opts[i];
    const void *f = sq__cfield(cfg, o);
    rc = sq__buf_printf(out, "%s = ", o->name);
    if (rc) break;
    switch (o->type) {
      case SQ_OPT_INT64: rc = sq__buf_printf(out, "%" PRId64 "\n", *(const int64_t *)f); break;
      case SQ_OPT_UINT64:
      case SQ_OPT_SIZE: rc = sq__buf_printf(out, "%" PRIu64 "\n", *(const uint64_t *)f); break;
      case SQ_OPT_BOOL: rc = sq__buf_printf(out, "%s\n", *(const bool *)f ? "true" : "false"); break;
      case SQ_OPT_DOUBLE: rc = sq__buf_printf(out, "%.17g\n", *(const double *)f); break;
      case SQ_OPT_STRING: {
        const char *s = *(char *const *)f;
        rc = sq__dump_string(out, s ? s : "");
        break;
      }
      case SQ_OPT_ENUM: {
        int64_t v = *(const int64_t *)f, n = 0;
        while (o->choices && o->choices[n]) n++;
        rc = sq__buf_printf(out, "%s\n", v >= 0 && v < n ? o->choices[v] : "?");
        break;
      }
    }
  }
  return rc;
}
