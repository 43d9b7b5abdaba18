/* kvs_load: closed-loop load generator for key-value stores (squall and Redis).
 *
 *   kvs_load --system squall --port-offset 100 --op get --value-size 8 \
 *            --clients 50 --depth 16 --seconds 5 --preload
 *
 * prints one JSON line with the figures of the cell:
 *   {"system":"squall","op":"get","value_size":8,"depth":16,"clients":50,...,
 *    "ops_per_s":...,"p50_us":...,"p99_us":...,"p999_us":...,"errors":0,...}
 *
 * Phases: (1) squall only: ask routing where every key lives; (2) with --preload, PUT
 * every key once (threads split the key space; not measured, errors reported as
 * preload_errors); (3) the timed phase: `warmup` seconds of load that is not
 * recorded, then `seconds` recorded. See load.h for the model (clients, depth,
 * threads, error kinds) and bench/README.md for how bench/run uses it.
 *
 * Exit status: 0 when the cell ran (errors or not: they are in the JSON line), 1 when
 * it could not run (server unreachable, routing failed), 2 for bad options.
 * Threads: main parses options and starts `threads` load threads per phase; each
 * owns its histogram and counters, merged by main after join.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <zmq.h>

#include "load.h"
#include "sq_config.h"
#include "sq_error.h"

static const sq_opt_t kvs_load__opts[] = {
    SQ_OPT(load_opts_t, system, "system", SQ_OPT_STRING, "squall",
           "squall (Anna protocol over ZeroMQ) or redis (RESP over TCP)"),
    SQ_OPT(load_opts_t, host, "host", SQ_OPT_STRING, "127.0.0.1", "server host"),
    SQ_OPT(load_opts_t, port, "port", SQ_OPT_INT64, "6379", "redis: TCP port"),
    SQ_OPT(load_opts_t, port_offset, "port-offset", SQ_OPT_INT64, "0",
           "squall: Anna port offset (routing at 6450+offset)"),
    SQ_OPT(load_opts_t, op, "op", SQ_OPT_STRING, "get", "get or put"),
    SQ_OPT(load_opts_t, value_size, "value-size", SQ_OPT_SIZE, "8",
           "bytes per value (PUT size; the size GETs expect)"),
    SQ_OPT(load_opts_t, clients, "clients", SQ_OPT_INT64, "50", "logical clients"),
    SQ_OPT(load_opts_t, depth, "depth", SQ_OPT_INT64, "1",
           "requests in flight per client (1 = unpipelined)"),
    SQ_OPT(load_opts_t, threads, "threads", SQ_OPT_INT64, "1", "load threads"),
    SQ_OPT(load_opts_t, keys, "keys", SQ_OPT_INT64, "100000", "key space size"),
    SQ_OPT(load_opts_t, seconds, "seconds", SQ_OPT_DOUBLE, "5", "measured seconds"),
    SQ_OPT(load_opts_t, warmup, "warmup", SQ_OPT_DOUBLE, "1",
           "seconds of load before measuring"),
    SQ_OPT(load_opts_t, preload, "preload", SQ_OPT_BOOL, "false",
           "PUT every key once before the timed phase"),
    SQ_OPT(load_opts_t, timeout, "timeout", SQ_OPT_DOUBLE, "5",
           "seconds before a request counts as timed out"),
    SQ_OPT(load_opts_t, histogram, "histogram", SQ_OPT_BOOL, "false",
           "add every non-empty latency bucket to the output, so runs can be merged"),
    SQ_OPT(load_opts_t, label, "label", SQ_OPT_STRING, "", "text copied into the output"),
    SQ_OPT(load_opts_t, seed, "seed", SQ_OPT_INT64, "1", "random seed"),
};

static const sq_config_spec_t kvs_load__spec = {
    "kvs_load", "Closed-loop GET/PUT load against squall-kvs or Redis; prints one JSON line.",
    kvs_load__opts, sizeof(kvs_load__opts) / sizeof(kvs_load__opts[0])};

/* Checks option ranges; writes the first problem into err. */
static int kvs_load__check(const load_opts_t *o, char *err, size_t errlen) {
  const char *bad = NULL;
  if (strcmp(o->system, "squall") != 0 && strcmp(o->system, "redis") != 0)
    bad = "--system must be squall or redis";
  else if (strcmp(o->op, "get") != 0 && strcmp(o->op, "put") != 0)
    bad = "--op must be get or put";
  else if (o->clients < 1 || o->clients > LOAD_MAX_CLIENTS)
    bad = "--clients must be 1..1000";
  else if (o->depth < 1 || o->depth > LOAD_MAX_DEPTH)
    bad = "--depth must be 1..1024";
  else if (o->threads < 1 || o->threads > LOAD_MAX_THREADS || o->threads > o->clients)
    bad = "--threads must be 1..64 and at most --clients";
  else if (o->keys < 1 || o->keys > 100000000)
    bad = "--keys must be 1..100000000";
  else if (o->value_size > LOAD_MAX_VALUE)
    bad = "--value-size must be at most 64 MiB";
  else if (!(o->seconds > 0) || !(o->warmup >= 0) || !(o->timeout > 0))
    bad = "--seconds and --timeout must be > 0, --warmup >= 0";
  else if (o->port < 1 || o->port > 65535 || o->port_offset < 0 || o->port_offset > 50000)
    bad = "--port must be 1..65535 and --port-offset 0..50000";
  if (bad) snprintf(err, errlen, "%s", bad);
  return bad ? SQ_EINVAL : 0;
}

typedef struct {
  load_thread_t t;
  void *zctx;
  pthread_t tid;
  bool started;
} kvs_load__worker_t;

static void *kvs_load__main(void *arg) {
  kvs_load__worker_t *w = arg;
  if (w->t.sys == LOAD_SYS_SQUALL)
    load_anna_run(&w->t);
  else
    load_redis_run(&w->t);
  return NULL;
}

/* What one phase measured, merged over its threads. */
typedef struct {
  hist_t *hist;
  uint64_t ops;
  uint64_t errors[LOAD_ERR_COUNT];
  uint64_t error_total;
  double cpu_s;  /* load generator CPU seconds over the whole phase (warm-up too) */
} kvs_load__result_t;

/* Fills thread i's share of a phase: clients and (preload) keys split evenly. */
static void kvs_load__share(const load_opts_t *o, int i, bool preload, uint64_t start,
                            load_thread_t *t) {
  int64_t n = o->threads;
  t->opts = o;
  t->op = (preload || strcmp(o->op, "put") == 0) ? LOAD_OP_PUT : LOAD_OP_GET;
  t->sys = strcmp(o->system, "squall") == 0 ? LOAD_SYS_SQUALL : LOAD_SYS_REDIS;
  t->index = i;
  t->client_lo = (int)(o->clients * i / n);
  t->client_hi = (int)(o->clients * (i + 1) / n);
  t->preload = preload;
  t->key_lo = (uint64_t)(o->keys * i / n);
  t->key_hi = (uint64_t)(o->keys * (i + 1) / n);
  t->record_ns = preload ? 0 : start + (uint64_t)(o->warmup * 1e9);
  t->stop_ns = preload ? UINT64_MAX : t->record_ns + (uint64_t)(o->seconds * 1e9);
  t->timeout_ns = (uint64_t)(o->timeout * 1e9);
  t->rng = ((uint64_t)o->seed * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(i + 1) << 32) ^ 1u;
  if (t->rng == 0) t->rng = 1;
}

/* Runs one phase on all threads and merges what they measured into res. */
static int kvs_load__phase(const load_opts_t *o, void *zctx, const void *shared,
                           bool preload, kvs_load__result_t *res, char *err, size_t errlen) {
  kvs_load__worker_t *ws = calloc((size_t)o->threads, sizeof(*ws));
  int rc = -ENOMEM;
  if (!ws) goto out;
  uint64_t start = load_now_ns();
  for (int i = 0; i < o->threads; i++) {
    kvs_load__share(o, i, preload, start, &ws[i].t);
    ws[i].t.shared = shared;
    ws[i].zctx = zctx;
    ws[i].t.hist = malloc(sizeof(hist_t));
    if (!ws[i].t.hist) goto out;
    hist_reset(ws[i].t.hist);
  }
  rc = 0;
  for (int i = 0; i < o->threads && rc == 0; i++) {
    rc = -pthread_create(&ws[i].tid, NULL, kvs_load__main, &ws[i]);
    ws[i].started = rc == 0;
  }
out:
  for (int i = 0; ws && i < o->threads; i++) {
    if (ws[i].started) pthread_join(ws[i].tid, NULL);
    if (ws[i].started && ws[i].t.fatal != 0 && rc == 0) {
      rc = ws[i].t.fatal;
      snprintf(err, errlen, "%s", ws[i].t.fatal_msg);
    }
    if (ws[i].t.hist) hist_merge(res->hist, ws[i].t.hist);
    res->ops += ws[i].t.ops;
    for (int e = 0; e < LOAD_ERR_COUNT; e++) {
      res->errors[e] += ws[i].t.errors[e];
      res->error_total += ws[i].t.errors[e];
    }
    free(ws[i].t.hist);
  }
  if (rc == -ENOMEM && err[0] == '\0') snprintf(err, errlen, "out of memory");
  free(ws);
  return rc;
}

/* Writes s as a JSON string (quotes and escapes included). */
static void kvs_load__json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

/* CPU seconds (user + system) this process has used so far. */
static double kvs_load__cpu_s(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The latency histogram as "histogram": [[lower_ns, upper_ns, count], ...] over its
 * non-empty buckets (upper exclusive), with the exact "min_ns" and "max_ns": enough
 * for a reader to merge several runs and take quantiles as hist_quantile() does. */
static void kvs_load__print_histogram(FILE *f, const hist_t *h) {
  fprintf(f, ",\"min_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64 ",\"histogram\":[",
          h->count ? h->min : 0, h->count ? h->max : 0);
  const char *sep = "";
  for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
    if (!h->counts[i]) continue;
    uint64_t upper = i + 1 < HIST_BUCKETS ? hist_bucket_lower(i + 1) : UINT64_MAX;
    fprintf(f, "%s[%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]", sep, hist_bucket_lower(i), upper,
            h->counts[i]);
    sep = ",";
  }
  fputc(']', f);
}

static void kvs_load__print(FILE *f, const load_opts_t *o, const kvs_load__result_t *r,
                            uint64_t preload_errors) {
  const hist_t *h = r->hist;
  fprintf(f, "{\"system\":");
  kvs_load__json_str(f, o->system);
  fprintf(f, ",\"op\":\"%s\",\"value_size\":%" PRIu64 ",\"depth\":%" PRId64
             ",\"clients\":%" PRId64 ",\"threads\":%" PRId64 ",\"keys\":%" PRId64
             ",\"seconds\":%.3f,\"ops\":%" PRIu64 ",\"ops_per_s\":%.1f",
          o->op, o->value_size, o->depth, o->clients, o->threads, o->keys, o->seconds,
          r->ops, (double)r->ops / o->seconds);
  fprintf(f, ",\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"mean_us\":%.1f,"
             "\"max_us\":%.1f",
          hist_quantile(h, 0.5) / 1e3, hist_quantile(h, 0.99) / 1e3,
          hist_quantile(h, 0.999) / 1e3, hist_mean(h) / 1e3,
          (h->count ? (double)h->max : 0.0) / 1e3);
  fprintf(f, ",\"errors\":%" PRIu64 ",\"error_kinds\":{", r->error_total);
  const char *sep = "";
  for (int e = 0; e < LOAD_ERR_COUNT; e++) {
    if (!r->errors[e]) continue;
    fprintf(f, "%s\"%s\":%" PRIu64, sep, load_err_name(e), r->errors[e]);
    sep = ",";
  }
  fprintf(f, "},\"preload_errors\":%" PRIu64 ",\"client_cpu_us_per_op\":%.2f,\"label\":",
          preload_errors, r->ops ? r->cpu_s * 1e6 / (double)r->ops : 0.0);
  kvs_load__json_str(f, o->label);
  if (o->histogram) kvs_load__print_histogram(f, h);
  fprintf(f, "}\n");
  fflush(f);
}

/* Routing (squall), preload, timed phase; prints the JSON line. 0 or an error with
 * a sentence in err. */
static int kvs_load__run(const load_opts_t *o, char *err, size_t errlen) {
  void *zctx = NULL, *shared = NULL;
  kvs_load__result_t pre = {0}, res = {0};
  int rc = -ENOMEM;
  pre.hist = malloc(sizeof(hist_t));
  res.hist = malloc(sizeof(hist_t));
  if (!pre.hist || !res.hist) goto out;
  hist_reset(pre.hist);
  hist_reset(res.hist);
  if (strcmp(o->system, "squall") == 0) {
    zctx = zmq_ctx_new();
    if (!zctx) goto out;
    rc = load_anna_prepare(o, zctx, &shared, err, errlen);
    if (rc != 0) goto out;
  }
  if (o->preload) {
    rc = kvs_load__phase(o, zctx, shared, true, &pre, err, errlen);
    if (rc != 0) goto out;
    if (pre.error_total)
      fprintf(stderr, "kvs_load: preload: %" PRIu64 " of %" PRId64 " PUTs failed\n",
              pre.error_total, o->keys);
  }
  double cpu0 = kvs_load__cpu_s();
  rc = kvs_load__phase(o, zctx, shared, false, &res, err, errlen);
  /* scaled to the measured window so that it is comparable with ops */
  res.cpu_s = (kvs_load__cpu_s() - cpu0) * o->seconds / (o->seconds + o->warmup);
  if (rc == 0) kvs_load__print(stdout, o, &res, pre.error_total);
out:
  if (rc == -ENOMEM && err[0] == '\0') snprintf(err, errlen, "out of memory");
  load_anna_release(shared);
  if (zctx) zmq_ctx_term(zctx);
  free(pre.hist);
  free(res.hist);
  return rc;
}

int main(int argc, char **argv) {
  load_opts_t opts = {0};
  sq_config_result_t cres = {0};
  char err[512] = "";
  int status = 2;
  int rc = sq_config_load(&kvs_load__spec, &opts, argc, argv, &cres);
  if (rc != 0) {
    fprintf(stderr, "kvs_load: %s\n", rc == SQ_ECONFIG ? cres.error : sq_strerror(rc));
    goto out;
  }
  if (cres.help) {
    sq_config_print_usage(&kvs_load__spec, stdout);
    status = 0;
    goto out;
  }
  if (kvs_load__check(&opts, err, sizeof(err)) != 0) {
    fprintf(stderr, "kvs_load: %s\n", err);
    goto out;
  }
  rc = kvs_load__run(&opts, err, sizeof(err));
  status = rc == 0 ? 0 : 1;
  if (rc != 0) fprintf(stderr, "kvs_load: %s\n", err[0] ? err : sq_strerror(rc));
out:
  sq_config_free(&kvs_load__spec, &opts);
  return status;
}
