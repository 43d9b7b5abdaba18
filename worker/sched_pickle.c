/* sched_pickle: the symbolic pickle machine of sched_pickle.h.
 *
 * Model: every opcode that makes a value appends one node to `vals`; the stack, the
 * mark stack and the memo hold node indices. Containers (tuple, list, dict) keep their
 * elements as a singly linked list in `items` (dict: key, value, key, value ...), so
 * APPENDS/SETITEMS after memoisation mutate the shared node just as pickle does.
 * Every push costs at least one input byte, so nodes and items are bounded by len
 * (and by the caps in the header).
 *
 *   opcode stream --> [stack of node ids] --STOP--> root node
 *                           |  ^
 *                        memo[i] (ids)
 *   root: OBJ_REF -> 1 ref; TUPLE/LIST -> their OBJ_REF elements.
 */
#include "sched_pickle.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sq_error.h"

#define PK_REF_MODULE "cloudburst.shared.reference"
#define PK_REF_CLASS "CloudburstReference"

typedef enum { PV_OPAQUE, PV_STR, PV_BOOL, PV_GLOBAL, PV_REFCLASS, PV_OBJREF,
               PV_TUPLE, PV_LIST, PV_DICT } pv_kind_t;

typedef struct {
  uint8_t kind;
  bool b;            /* PV_BOOL value; PV_OBJREF deserialize */
  bool has_key;      /* PV_OBJREF */
  const char *s;     /* PV_STR text; PV_OBJREF key */
  size_t slen;
  int32_t first, last; /* containers: item list */
} pv_t;

typedef struct {
  int32_t val;
  int32_t next;
} pv_item_t;

typedef struct {
  const uint8_t *buf;
  size_t len, pos;
  pv_t *vals;
  size_t nvals, capvals;
  pv_item_t *items;
  size_t nitems, capitems;
  int32_t *stack;
  size_t nstack;
  size_t *marks;
  size_t nmarks;
  int32_t *memo;
  size_t capmemo, nmemo_next;
} pk_t;

static int pk__need(pk_t *p, size_t n, const uint8_t **out) {
  if (p->len - p->pos < n) return SQ_EPROTO;
  *out = p->buf + p->pos;
  p->pos += n;
  return 0;
}

static uint64_t pk__le(const uint8_t *b, size_t n) {
  uint64_t v = 0;
  for (size_t i = n; i > 0; i--) v = (v << 8) | b[i - 1];
  return v;
}

static int pk__new(pk_t *p, pv_kind_t kind, int32_t *id) {
  if (p->nvals >= p->capvals) return SQ_ETOOBIG;
  pv_t *v = &p->vals[p->nvals];
  memset(v, 0, sizeof(*v));
  v->kind = (uint8_t)kind;
  v->first = v->last = -1;
  *id = (int32_t)p->nvals++;
  return 0;
}

static int pk__push(pk_t *p, int32_t id) {
  if (p->nstack >= SCHED_PICKLE_MAX_STACK) return SQ_ETOOBIG;
  p->stack[p->nstack++] = id;
  return 0;
}

static int pk__push_new(pk_t *p, pv_kind_t kind, int32_t *id) {
  int rc = pk__new(p, kind, id);
  return rc ? rc : pk__push(p, *id);
}

static int pk__pop(pk_t *p, int32_t *id) {
  size_t floor = p->nmarks ? p->marks[p->nmarks - 1] : 0;
  if (p->nstack <= floor) return SQ_EPROTO;
  *id = p->stack[--p->nstack];
  return 0;
}

static int pk__append(pk_t *p, int32_t cont, int32_t val) {
  if (p->nitems >= p->capitems) return SQ_ETOOBIG;
  pv_item_t *it = &p->items[p->nitems];
  it->val = val;
  it->next = -1;
  pv_t *c = &p->vals[cont];
  if (c->last >= 0) p->items[c->last].next = (int32_t)p->nitems;
  else c->first = (int32_t)p->nitems;
  c->last = (int32_t)p->nitems++;
  return 0;
}

/* Pops everything above the top mark into a new container of kind (or appends it to
 * the container below the mark when into >= 0). */
static int pk__pop_mark(pk_t *p, size_t *from) {
  if (!p->nmarks) return SQ_EPROTO;
  *from = p->marks[--p->nmarks];
  return 0;
}

static int pk__collect(pk_t *p, size_t from, int32_t cont) {
  for (size_t i = from; i < p->nstack; i++) {
    int rc = pk__append(p, cont, p->stack[i]);
    if (rc) return rc;
  }
  p->nstack = from;
  return 0;
}

static bool pk__is_str(const pk_t *p, int32_t id, const char *lit) {
  const pv_t *v = &p->vals[id];
  return v->kind == PV_STR && v->slen == strlen(lit) && memcmp(v->s, lit, v->slen) == 0;
}

static int pk__global(pk_t *p, int32_t mod, int32_t name) {
  int32_t id;
  bool ref = pk__is_str(p, mod, PK_REF_MODULE) && pk__is_str(p, name, PK_REF_CLASS);
  return pk__push_new(p, ref ? PV_REFCLASS : PV_GLOBAL, &id);
}

/* GLOBAL 'c': "module\nname\n" as text lines. */
static int pk__global_text(pk_t *p) {
  const uint8_t *start = p->buf + p->pos;
  const uint8_t *nl1 = memchr(start, '\n', p->len - p->pos);
  if (!nl1) return SQ_EPROTO;
  const uint8_t *nl2 = memchr(nl1 + 1, '\n', (size_t)(p->buf + p->len - (nl1 + 1)));
  if (!nl2) return SQ_EPROTO;
  size_t mlen = (size_t)(nl1 - start), nlen = (size_t)(nl2 - nl1 - 1);
  p->pos = (size_t)(nl2 + 1 - p->buf);
  bool ref = mlen == strlen(PK_REF_MODULE) && memcmp(start, PK_REF_MODULE, mlen) == 0 &&
             nlen == strlen(PK_REF_CLASS) && memcmp(nl1 + 1, PK_REF_CLASS, nlen) == 0;
  int32_t id;
  return pk__push_new(p, ref ? PV_REFCLASS : PV_GLOBAL, &id);
}

/* BUILD on a reference object: copy key / deserialize out of a dict state. */
static void pk__build_ref(pk_t *p, int32_t obj, int32_t state) {
  pv_t *o = &p->vals[obj];
  const pv_t *st = &p->vals[state];
  if (st->kind != PV_DICT) return;
  for (int32_t it = st->first; it >= 0; it = p->items[it].next) {
    int32_t nx = p->items[it].next;
    if (nx < 0) break;
    int32_t k = p->items[it].val, v = p->items[nx].val;
    const pv_t *val = &p->vals[v];
    if (pk__is_str(p, k, "key") && val->kind == PV_STR) {
      o->s = val->s;
      o->slen = val->slen;
      o->has_key = true;
    } else if (pk__is_str(p, k, "deserialize") && val->kind == PV_BOOL) {
      o->b = val->b;
    }
    it = nx;
  }
}

static int pk__str(pk_t *p, size_t lenbytes, bool text) {
  const uint8_t *b;
  int rc = pk__need(p, lenbytes, &b);
  if (rc) return rc;
  uint64_t n = pk__le(b, lenbytes);
  if (n > p->len - p->pos) return SQ_EPROTO;
  int32_t id;
  rc = pk__push_new(p, text ? PV_STR : PV_OPAQUE, &id);
  if (rc) return rc;
  p->vals[id].s = (const char *)p->buf + p->pos;
  p->vals[id].slen = (size_t)n;
  p->pos += (size_t)n;
  return 0;
}

static int pk__skip_push(pk_t *p, size_t n) {
  const uint8_t *b;
  int32_t id;
  int rc = pk__need(p, n, &b);
  return rc ? rc : pk__push_new(p, PV_OPAQUE, &id);
}

static int pk__memo_put(pk_t *p, uint64_t idx) {
  if (!p->nstack || (p->nmarks && p->marks[p->nmarks - 1] == p->nstack)) return SQ_EPROTO;
  if (idx >= p->capmemo) return SQ_ETOOBIG;
  p->memo[idx] = p->stack[p->nstack - 1];
  if (idx >= p->nmemo_next) p->nmemo_next = (size_t)idx + 1;
  return 0;
}

static int pk__memo_get(pk_t *p, uint64_t idx) {
  if (idx >= p->capmemo || p->memo[idx] < 0) return SQ_EPROTO;
  return pk__push(p, p->memo[idx]);
}

static int pk__memo_op(pk_t *p, size_t n, bool put) {
  const uint8_t *b;
  int rc = pk__need(p, n, &b);
  if (rc) return rc;
  uint64_t idx = pk__le(b, n);
  return put ? pk__memo_put(p, idx) : pk__memo_get(p, idx);
}

static int pk__tuple_n(pk_t *p, size_t n) {
  int32_t id, v[3];
  for (size_t i = n; i > 0; i--) {
    int rc = pk__pop(p, &v[i - 1]);
    if (rc) return rc;
  }
  int rc = pk__new(p, PV_TUPLE, &id);
  for (size_t i = 0; rc == 0 && i < n; i++) rc = pk__append(p, id, v[i]);
  return rc ? rc : pk__push(p, id);
}

/* Opcodes that pop a marked slice into something. */
static int pk__marked(pk_t *p, uint8_t op) {
  size_t from;
  int32_t id, cont;
  int rc = pk__pop_mark(p, &from);
  if (rc) return rc;
  switch (op) {
    case 't': case 'l': case 'd': case 0x91:
      rc = pk__new(p, op == 't' ? PV_TUPLE : op == 'l' ? PV_LIST
                      : op == 'd' ? PV_DICT : PV_OPAQUE, &id);
      if (!rc) rc = pk__collect(p, from, id);
      return rc ? rc : pk__push(p, id);
    case '1':
      p->nstack = from;
      return 0;
    default: /* 'e' APPENDS, 'u' SETITEMS, 0x90 ADDITEMS */
      if (from == 0 || (p->nmarks && p->marks[p->nmarks - 1] >= from)) return SQ_EPROTO;
      cont = p->stack[from - 1];
      if (p->vals[cont].kind == PV_OPAQUE) { p->nstack = from; return 0; }
      return pk__collect(p, from, cont);
  }
}

static int pk__two(pk_t *p, int32_t *a, int32_t *b) {
  int rc = pk__pop(p, b);
  return rc ? rc : pk__pop(p, a);
}

/* Opcodes that combine stack values (globals, objects, items). */
static int pk__combine(pk_t *p, uint8_t op) {
  int32_t a, b, c, id;
  int rc;
  switch (op) {
    case 0x93: /* STACK_GLOBAL */
      rc = pk__two(p, &a, &b);
      return rc ? rc : pk__global(p, a, b);
    case 0x81: /* NEWOBJ cls args */
      rc = pk__two(p, &a, &b);
      if (rc) return rc;
      return pk__push_new(p, p->vals[a].kind == PV_REFCLASS ? PV_OBJREF : PV_OPAQUE, &id);
    case 0x92: /* NEWOBJ_EX cls args kwargs */
      rc = pk__two(p, &b, &c);
      if (!rc) rc = pk__pop(p, &a);
      if (rc) return rc;
      return pk__push_new(p, p->vals[a].kind == PV_REFCLASS ? PV_OBJREF : PV_OPAQUE, &id);
    case 'b': /* BUILD obj state */
      rc = pk__two(p, &a, &b);
      if (rc) return rc;
      if (p->vals[a].kind == PV_OBJREF) pk__build_ref(p, a, b);
      return pk__push(p, a);
    case 'a': /* APPEND list value */
      rc = pk__two(p, &a, &b);
      if (rc) return rc;
      if (p->vals[a].kind == PV_LIST && (rc = pk__append(p, a, b))) return rc;
      return pk__push(p, a);
    default: /* 's' SETITEM dict key value */
      rc = pk__two(p, &b, &c);
      if (!rc) rc = pk__pop(p, &a);
      if (rc) return rc;
      if (p->vals[a].kind == PV_DICT &&
          ((rc = pk__append(p, a, b)) || (rc = pk__append(p, a, c))))
        return rc;
      return pk__push(p, a);
  }
}

/* Constants and scalars. Returns 1 when op is not one of them. */
static int pk__scalar(pk_t *p, uint8_t op) {
  int32_t id;
  int rc;
  switch (op) {
    case 0x88: case 0x89:
      rc = pk__push_new(p, PV_BOOL, &id);
      if (!rc) p->vals[id].b = op == 0x88;
      return rc;
    case 'N': case ')': case ']': case '}': case 0x8f:
      rc = pk__push_new(p, op == ']' ? PV_LIST : op == '}' ? PV_DICT
                         : op == ')' ? PV_TUPLE : PV_OPAQUE, &id);
      return rc;
    case 'K': return pk__skip_push(p, 1);
    case 'M': return pk__skip_push(p, 2);
    case 'J': return pk__skip_push(p, 4);
    case 'G': return pk__skip_push(p, 8);
    case 0x8a: return pk__str(p, 1, false);  /* LONG1 */
    case 0x8b: return pk__str(p, 4, false);  /* LONG4 */
    case 0x8c: return pk__str(p, 1, true);   /* SHORT_BINUNICODE */
    case 'X': return pk__str(p, 4, true);    /* BINUNICODE */
    case 0x8d: return pk__str(p, 8, true);   /* BINUNICODE8 */
    case 'U': case 'C': return pk__str(p, 1, false);
    case 'T': case 'B': return pk__str(p, 4, false);
    case 0x8e: case 0x96: return pk__str(p, 8, false);
    case 0x97: return pk__push_new(p, PV_OPAQUE, &id); /* NEXT_BUFFER */
    default: return 1;
  }
}

/* Executes one opcode. 1 = STOP reached. */
static int pk__step(pk_t *p) {
  const uint8_t *b;
  int rc = pk__need(p, 1, &b);
  if (rc) return rc;
  uint8_t op = *b;
  if ((rc = pk__scalar(p, op)) != 1) return rc;
  switch (op) {
    case 0x80: return pk__need(p, 1, &b);     /* PROTO */
    case 0x95: return pk__need(p, 8, &b);     /* FRAME: frames are transparent */
    case '.': return 1;
    case 'c': return pk__global_text(p);
    case '(':
      if (p->nmarks >= SCHED_PICKLE_MAX_STACK) return SQ_ETOOBIG;
      p->marks[p->nmarks++] = p->nstack;
      return 0;
    case 't': case 'l': case 'd': case 0x91: case '1': case 'e': case 'u': case 0x90:
      return pk__marked(p, op);
    case 0x85: return pk__tuple_n(p, 1);
    case 0x86: return pk__tuple_n(p, 2);
    case 0x87: return pk__tuple_n(p, 3);
    case 0x93: case 0x81: case 0x92: case 'b': case 'a': case 's':
      return pk__combine(p, op);
    case 'q': return pk__memo_op(p, 1, true);
    case 'r': return pk__memo_op(p, 4, true);
    case 0x94: return pk__memo_put(p, p->nmemo_next);
    case 'h': return pk__memo_op(p, 1, false);
    case 'j': return pk__memo_op(p, 4, false);
    case '0': { int32_t id; return pk__pop(p, &id); }
    case '2':
      if (!p->nstack) return SQ_EPROTO;
      return pk__push(p, p->stack[p->nstack - 1]);
    case 0x98: return p->nstack ? 0 : SQ_EPROTO; /* READONLY_BUFFER */
    default: return SQ_EUNSUPPORTED;
  }
}

static void pk__emit(const pk_t *p, int32_t id, sched_pickle_ref_t *refs, size_t max,
                     size_t *n) {
  const pv_t *v = &p->vals[id];
  if (v->kind != PV_OBJREF || !v->has_key) return;
  if (*n < max) {
    refs[*n].key = v->s;
    refs[*n].key_len = v->slen;
    refs[*n].deserialize = v->b;
  }
  (*n)++;
}

static int pk__alloc(pk_t *p, const uint8_t *buf, size_t len) {
  memset(p, 0, sizeof(*p));
  p->buf = buf;
  p->len = len;
  p->capvals = len + 2 < SCHED_PICKLE_MAX_VALUES ? len + 2 : SCHED_PICKLE_MAX_VALUES;
  p->capitems = p->capvals * 2;
  p->capmemo = len + 256 < SCHED_PICKLE_MAX_MEMO ? len + 256 : SCHED_PICKLE_MAX_MEMO;
  p->vals = malloc(p->capvals * sizeof(*p->vals));
  p->items = malloc(p->capitems * sizeof(*p->items));
  p->stack = malloc(SCHED_PICKLE_MAX_STACK * sizeof(*p->stack));
  p->marks = malloc(SCHED_PICKLE_MAX_STACK * sizeof(*p->marks));
  p->memo = malloc(p->capmemo * sizeof(*p->memo));
  if (!p->vals || !p->items || !p->stack || !p->marks || !p->memo) return -ENOMEM;
  memset(p->memo, 0xff, p->capmemo * sizeof(*p->memo)); /* every slot -1 */
  return 0;
}

int sched_pickle_find_refs(const uint8_t *buf, size_t len, sched_pickle_ref_t *refs,
                           size_t max_refs, size_t *nrefs) {
  pk_t p;
  int rc = 0;
  *nrefs = 0;
  if (!buf && len) return SQ_EINVAL;
  rc = pk__alloc(&p, buf, len);
  while (rc == 0) rc = pk__step(&p);
  if (rc != 1) goto out;
  if (p.nstack != 1 || p.nmarks) { rc = SQ_EPROTO; goto out; }
  rc = 0;
  int32_t root = p.stack[0];
  const pv_t *r = &p.vals[root];
  if (r->kind == PV_TUPLE || r->kind == PV_LIST) {
    for (int32_t it = r->first; it >= 0; it = p.items[it].next)
      pk__emit(&p, p.items[it].val, refs, max_refs, nrefs);
  } else {
    pk__emit(&p, root, refs, max_refs, nrefs);
  }
out:
  if (rc) *nrefs = 0;
  free(p.vals);
  free(p.items);
  free(p.stack);
  free(p.marks);
  free(p.memo);
  return rc;
}
