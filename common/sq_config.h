/* sq_config: declarative daemon options from defaults, a config file and flags.
 *
 * A daemon describes its options once, as a table of sq_opt_t rows (name, type,
 * default, help, offset of the field in the daemon's own config struct), and
 * sq_config_load() fills that struct in three layers, later wins:
 *
 *   1. the defaults of the table (written as text, parsed like any other value);
 *   2. the file named by `--config FILE` / `--config=FILE`, made of `key = value`
 *      lines; `#` starts a comment (outside double quotes), blank lines are skipped,
 *      keys may be dotted ("log.level"), values may be "double quoted" (\" and \\);
 *   3. command-line flags `--name=value`, `--name value`, and for booleans `--name`
 *      and `--no-name`.
 *
 * In names '-' and '_' are the same character, so `--max-value-bytes` sets
 * "max_value_bytes". Types and the C field each one writes:
 *
 *   SQ_OPT_INT64   int64_t   decimal, optional sign
 *   SQ_OPT_UINT64  uint64_t  decimal
 *   SQ_OPT_SIZE    uint64_t  decimal with optional K, M, G, T suffix (powers of 1024,
 *                            "KB"/"KiB" spellings accepted, case-insensitive)
 *   SQ_OPT_BOOL    bool      true/false, yes/no, on/off, 1/0
 *   SQ_OPT_STRING  char *    owned by the config; freed by sq_config_free()
 *   SQ_OPT_DOUBLE  double    strtod syntax, finite
 *   SQ_OPT_ENUM    int64_t   one of the names in `choices`; stores its index
 *
 * Errors name where the value came from (file and line, or "command line"), the key,
 * and what was expected; an unknown key gets a did-you-mean suggestion. The usage
 * text of `--help` is generated from the same table.
 *
 * Table mistakes (an enum without choices, an option named "config" or "help") make
 * every load fail with "option table: ...".
 *
 * Ownership: string fields belong to the struct after a successful load and are
 * released by sq_config_free(). A failed load frees what it set, leaving every string
 * field NULL. The struct must start zeroed (or freed by sq_config_free).
 * Not thread-safe per struct; tables are read-only and may be shared.
 */
#ifndef SQ_CONFIG_H
#define SQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sq_buf.h"

typedef enum {
  SQ_OPT_INT64,
  SQ_OPT_UINT64,
  SQ_OPT_SIZE,
  SQ_OPT_BOOL,
  SQ_OPT_STRING,
  SQ_OPT_DOUBLE,
  SQ_OPT_ENUM,
} sq_opt_type_t;

typedef struct {
  const char *name;             /* "threads", "log.level"; not "config" or "help" */
  sq_opt_type_t type;
  size_t offset;                /* offsetof(daemon_config_t, field) */
  const char *def;              /* default as text; NULL = 0 / false / NULL string */
  const char *help;             /* one line for --help */
  const char *const *choices;   /* SQ_OPT_ENUM: NULL-terminated names; else NULL */
} sq_opt_t;

/* Table rows: SQ_OPT(my_cfg_t, threads, "threads", SQ_OPT_INT64, "0", "worker threads") */
#define SQ_OPT(ctype, field, name, type, def, help) \
  { (name), (type), offsetof(ctype, field), (def), (help), NULL }
#define SQ_OPT_ENUMOF(ctype, field, name, choices, def, help) \
  { (name), SQ_OPT_ENUM, offsetof(ctype, field), (def), (help), (choices) }

typedef struct {
  const char *prog;      /* program name in the usage line, e.g. "squall-kvs" */
  const char *summary;   /* one sentence under the usage line; may be NULL */
  const sq_opt_t *opts;
  size_t nopts;
} sq_config_spec_t;

#define SQ_CONFIG_ERROR_MAX 512

typedef struct {
  bool help;                        /* --help was given; nothing was loaded */
  char error[SQ_CONFIG_ERROR_MAX];  /* on failure: "kvs.conf:12: unknown key ..." */
} sq_config_result_t;

/* Loads defaults, then the --config file, then the flags of argv[1..argc) into cfg.
 * Returns 0 on success (res->help tells whether --help was asked for, in which case
 * cfg is untouched and the caller prints sq_config_usage()); SQ_ECONFIG for a bad
 * key, value or flag, or an unreadable file (res->error says which and why);
 * -ENOMEM. On failure every string field of cfg is NULL. */
int sq_config_load(const sq_config_spec_t *spec, void *cfg, int argc, char *const *argv,
                   sq_config_result_t *res);

/* Sets one option from text, as the file and flags do. `origin` names the source in
 * the error ("command line", "kvs.conf:3"). 0, SQ_ECONFIG (res->error filled) or
 * -ENOMEM. */
int sq_config_set(const sq_config_spec_t *spec, void *cfg, const char *key,
                  const char *value, const char *origin, sq_config_result_t *res);

/* Frees every string field of cfg and sets it to NULL. Accepts NULL cfg. */
void sq_config_free(const sq_config_spec_t *spec, void *cfg);

/* Appends the --help text generated from the table to out. 0 or -ENOMEM. */
int sq_config_usage(const sq_config_spec_t *spec, sq_buf_t *out);

/* Writes the usage text to f (convenience for main()). */
void sq_config_print_usage(const sq_config_spec_t *spec, FILE *f);

/* Appends the effective configuration as `key = value` lines (a valid config file,
 * for the start-up log). 0 or -ENOMEM. */
int sq_config_dump(const sq_config_spec_t *spec, const void *cfg, sq_buf_t *out);

/* Parses a byte size: "4096", "64K", "16MiB", "2g" (integers only: "1.5G" is
 * rejected). 0, SQ_EINVAL (syntax) or -ERANGE (does not fit in uint64). */
int sq_config_parse_size(const char *text, uint64_t *out);

#endif
