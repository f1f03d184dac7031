/* Tokenizer loading (tokenizer.json, GPT-2 vocab.json + merges.txt), the encode pipeline
 * (added tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor) and the decoder chain.
 * Each stage mirrors the corresponding HF `tokenizers` component so ids match byte for byte. */
#include "app/formats/tokenizer_internal.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/json_input.h"

#include <json-glib/json-glib.h>
#include <string.h>

/* Ids beyond this are refused so that a hostile file cannot make us allocate gigabytes for the
 * id -> token table (the largest real vocabularies are ~260k). */
#define LMWB_TOKENIZER_MAX_ID (1 << 24)
/* Word cache bound: cleared when full, so memory stays bounded on endless input. */
#define LMWB_TOKENIZER_CACHE_MAX 200000
/* HF caches only words shorter than this; longer ones are rare and would bloat the cache. */
#define LMWB_TOKENIZER_CACHE_WORD_MAX 256

typedef struct {
  char *content;
  size_t len;
  int32_t id;
  gboolean single_word, lstrip, rstrip, normalized, special;
  char *match; /* what is searched for: content, normalized if `normalized` */
  size_t match_len;
} AddedToken;

typedef enum { NORM_PREPEND, NORM_REPLACE, NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_LOWERCASE } NormKind;
typedef struct {
  NormKind kind;
  char *a, *b;
} NormStep;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } PrependScheme;
typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE } PreKind;
typedef struct {
  PreKind kind;
  LmwbSplitKind split;
  gboolean add_prefix_space, use_regex, split_pieces;
  char *replacement;
  PrependScheme scheme;
} PreStep;

typedef enum { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE } DecKind;
typedef struct {
  DecKind kind;
  char *a, *b; /* Replace pattern/content; Strip content; Metaspace replacement */
  int start, stop;
  PrependScheme scheme;
} DecStep;

/* Added-token matcher: token indices bucketed by first byte, longest first (leftmost-longest). */
typedef struct {
  GArray *bucket[256]; /* of int (index into added) */
  gboolean any;
} AddedSet;

struct LmwbTokenizer {
  char *kind;
  /* BPE model */
  char **vocab; /* by id, holes NULL */
  int32_t vocab_n;
  GHashTable *vocab_map; /* token -> id + 1 (keys borrowed from vocab) */
  LmwbMergeMap merges;
  int32_t unk_id;
  gboolean byte_fallback, fuse_unk, ignore_merges;
  char *cont_prefix, *eow_suffix;
  int32_t byte_ids[256]; /* <0xXX> ids, -1 if absent */
  /* added tokens */
  AddedToken *added;
  int n_added;
  GHashTable *added_by_content; /* content -> index + 1 */
  GHashTable *added_by_id;      /* id -> index + 1 */
  AddedSet raw_set, norm_set;
  /* pipeline */
  GArray *norm; /* NormStep */
  GArray *pre;  /* PreStep */
  GArray *dec;  /* DecStep */
  gboolean has_decoder;
  GArray *tmpl; /* int32: -1 = $A, else special id; NULL = no template */
  int32_t n_total;
  int32_t bos, eos;
  GMutex cache_lock;
  GHashTable *cache; /* word -> int32 array, [0] = count */
};

/* ------------------------------------------------------------------ errors */

static void field_error(GError **error, const char *src, const char *field, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);
static void field_error(GError **error, const char *src, const char *field, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  lmwb_input_error(error, "%s: field '%s': %s", src, field, msg);
  g_free(msg);
}

/* ------------------------------------------------------------------ lifetime */

static LmwbTokenizer *tok_new(void) {
  LmwbTokenizer *t = g_new0(LmwbTokenizer, 1);
  t->vocab_map = g_hash_table_new(g_str_hash, g_str_equal);
  t->added_by_content = g_hash_table_new(g_str_hash, g_str_equal);
  t->added_by_id = g_hash_table_new(g_direct_hash, g_direct_equal);
  t->norm = g_array_new(FALSE, TRUE, sizeof(NormStep));
  t->pre = g_array_new(FALSE, TRUE, sizeof(PreStep));
  t->dec = g_array_new(FALSE, TRUE, sizeof(DecStep));
  t->unk_id = -1;
  t->bos = t->eos = -1;
  for (int b = 0; b < 256; b++) t->byte_ids[b] = -1;
  g_mutex_init(&t->cache_lock);
  t->cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return t;
}

static void added_set_clear(AddedSet *s) {
  for (int i = 0; i < 256; i++)
    if (s->bucket[i]) g_array_free(s->bucket[i], TRUE);
  memset(s, 0, sizeof *s);
}

void lmwb_tokenizer_free(LmwbTokenizer *t) {
  if (!t) return;
  g_free(t->kind);
  for (int32_t i = 0; i < t->vocab_n; i++) g_free(t->vocab[i]);
  g_free(t->vocab);
  g_hash_table_destroy(t->vocab_map);
  lmwb_merge_map_clear(&t->merges);
  g_free(t->cont_prefix);
  g_free(t->eow_suffix);
  for (int i = 0; i < t->n_added; i++) {
    g_free(t->added[i].content);
    g_free(t->added[i].match);
  }
  g_free(t->added);
  g_hash_table_destroy(t->added_by_content);
  g_hash_table_destroy(t->added_by_id);
  added_set_clear(&t->raw_set);
  added_set_clear(&t->norm_set);
  for (guint i = 0; i < t->norm->len; i++) {
    g_free(g_array_index(t->norm, NormStep, i).a);
    g_free(g_array_index(t->norm, NormStep, i).b);
  }
  for (guint i = 0; i < t->pre->len; i++) g_free(g_array_index(t->pre, PreStep, i).replacement);
  for (guint i = 0; i < t->dec->len; i++) {
    g_free(g_array_index(t->dec, DecStep, i).a);
    g_free(g_array_index(t->dec, DecStep, i).b);
  }
  g_array_free(t->norm, TRUE);
  g_array_free(t->pre, TRUE);
  g_array_free(t->dec, TRUE);
  if (t->tmpl) g_array_free(t->tmpl, TRUE);
  g_hash_table_destroy(t->cache);
  g_mutex_clear(&t->cache_lock);
  g_free(t);
}

/* ------------------------------------------------------------------ lookups */

static int32_t vocab_get(const LmwbTokenizer *t, const char *s) {
  gpointer v = g_hash_table_lookup(t->vocab_map, s);
  return v ? GPOINTER_TO_INT(v) - 1 : -1;
}

static int32_t vocab_get_len(const LmwbTokenizer *t, const char *s, size_t len, GString *scratch) {
  if (memchr(s, 0, len)) return -1; /* vocabulary strings are C strings */
  g_string_truncate(scratch, 0);
  g_string_append_len(scratch, s, (gssize)len);
  return vocab_get(t, scratch->str);
}

static const AddedToken *added_for_id(const LmwbTokenizer *t, int32_t id) {
  gpointer v = g_hash_table_lookup(t->added_by_id, GINT_TO_POINTER(id));
  return v ? &t->added[GPOINTER_TO_INT(v) - 1] : NULL;
}

const char *lmwb_tokenizer_token(const LmwbTokenizer *t, int32_t id) {
  if (!t || id < 0) return NULL;
  const AddedToken *a = added_for_id(t, id);
  if (a) return a->content;
  return id < t->vocab_n ? t->vocab[id] : NULL;
}

int32_t lmwb_tokenizer_token_id(const LmwbTokenizer *t, const char *token) {
  if (!t || !token) return -1;
  gpointer v = g_hash_table_lookup(t->added_by_content, token);
  if (v) return t->added[GPOINTER_TO_INT(v) - 1].id;
  return vocab_get(t, token);
}

gboolean lmwb_tokenizer_is_special(const LmwbTokenizer *t, int32_t id) {
  const AddedToken *a = t ? added_for_id(t, id) : NULL;
  return a && a->special;
}

int lmwb_tokenizer_vocab_size(const LmwbTokenizer *t) { return t ? t->n_total : 0; }
int32_t lmwb_tokenizer_bos(const LmwbTokenizer *t) { return t ? t->bos : -1; }
int32_t lmwb_tokenizer_eos(const LmwbTokenizer *t) { return t ? t->eos : -1; }
const char *lmwb_tokenizer_kind(const LmwbTokenizer *t) { return t ? t->kind : NULL; }

/* ------------------------------------------------------------------ JSON helpers */

static JsonNode *member(JsonObject *o, const char *name) {
  return o && json_object_has_member(o, name) ? json_object_get_member(o, name) : NULL;
}

static gboolean node_is_null(JsonNode *n) { return !n || JSON_NODE_HOLDS_NULL(n); }

static gboolean node_is_int(JsonNode *n) {
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64;
}

static const char *node_string(JsonNode *n) {
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING ? json_node_get_string(n)
                                                                                       : NULL;
}

/* Optional boolean member: absent/null -> def; wrong type -> error. */
static gboolean get_bool(JsonObject *o, const char *name, gboolean def, gboolean *out, const char *src,
                         const char *path, GError **error) {
  JsonNode *n = member(o, name);
  if (node_is_null(n)) {
    *out = def;
    return TRUE;
  }
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_BOOLEAN) {
    char *f = g_strdup_printf("%s.%s", path, name);
    field_error(error, src, f, "expected true or false");
    g_free(f);
    return FALSE;
  }
  *out = json_node_get_boolean(n);
  return TRUE;
}

/* Optional string member: absent/null -> NULL (allowed only if !required). */
static gboolean get_string(JsonObject *o, const char *name, gboolean required, const char **out, const char *src,
                           const char *path, GError **error) {
  JsonNode *n = member(o, name);
  *out = NULL;
  if (node_is_null(n)) {
    if (!required) return TRUE;
    char *f = g_strdup_printf("%s.%s", path, name);
    field_error(error, src, f, "missing");
    g_free(f);
    return FALSE;
  }
  *out = node_string(n);
  if (!*out) {
    char *f = g_strdup_printf("%s.%s", path, name);
    field_error(error, src, f, "expected a string");
    g_free(f);
    return FALSE;
  }
  return TRUE;
}

static gboolean get_int(JsonObject *o, const char *name, gint64 lo, gint64 hi, gint64 def, gboolean required,
                        gint64 *out, const char *src, const char *path, GError **error) {
  JsonNode *n = member(o, name);
  char *f = g_strdup_printf("%s.%s", path, name);
  gboolean ok = TRUE;
  if (node_is_null(n)) {
    *out = def;
    if (required) {
      field_error(error, src, f, "missing");
      ok = FALSE;
    }
  } else if (!node_is_int(n)) {
    field_error(error, src, f, "expected an integer");
    ok = FALSE;
  } else {
    *out = json_node_get_int(n);
    if (*out < lo || *out > hi) {
      field_error(error, src, f, "%" G_GINT64_FORMAT " is out of range [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "]",
                  *out, lo, hi);
      ok = FALSE;
    }
  }
  g_free(f);
  return ok;
}

/* The "pattern" of Replace/Split: {"String": s} (regexes are only accepted where we know them). */
static const char *pattern_string(JsonObject *o, const char **regex, const char *src, const char *path,
                                  GError **error) {
  JsonNode *n = member(o, "pattern");
  *regex = NULL;
  if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
    char *f = g_strdup_printf("%s.pattern", path);
    field_error(error, src, f, "expected an object {\"String\": ...} or {\"Regex\": ...}");
    g_free(f);
    return NULL;
  }
  JsonObject *p = json_node_get_object(n);
  const char *s = node_string(member(p, "String"));
  if (s) return s;
  *regex = node_string(member(p, "Regex"));
  if (!*regex) {
    char *f = g_strdup_printf("%s.pattern", path);
    field_error(error, src, f, "expected \"String\" or \"Regex\" with a string value");
    g_free(f);
  }
  return NULL;
}

static gboolean parse_scheme(JsonObject *o, PrependScheme *scheme, const char *src, const char *path,
                             GError **error) {
  const char *s;
  if (!get_string(o, "prepend_scheme", FALSE, &s, src, path, error)) return FALSE;
  if (!s) {
    /* Older files: add_prefix_space (default true) instead of prepend_scheme. */
    gboolean aps;
    if (!get_bool(o, "add_prefix_space", TRUE, &aps, src, path, error)) return FALSE;
    *scheme = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
    return TRUE;
  }
  if (strcmp(s, "always") == 0) *scheme = PREPEND_ALWAYS;
  else if (strcmp(s, "first") == 0) *scheme = PREPEND_FIRST;
  else if (strcmp(s, "never") == 0) *scheme = PREPEND_NEVER;
  else {
    char *f = g_strdup_printf("%s.prepend_scheme", path);
    field_error(error, src, f, "unknown value '%s' (expected always, first or never)", s);
    g_free(f);
    return FALSE;
  }
  return TRUE;
}

static const char *node_type(JsonNode *n, const char *src, const char *path, GError **error) {
  if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
    field_error(error, src, path, "expected an object");
    return NULL;
  }
  const char *type = node_string(member(json_node_get_object(n), "type"));
  if (!type) {
    char *f = g_strdup_printf("%s.type", path);
    field_error(error, src, f, "missing or not a string");
    g_free(f);
  }
  return type;
}

static JsonArray *array_member(JsonObject *o, const char *name, const char *src, const char *path,
                               GError **error) {
  JsonNode *n = member(o, name);
  if (!n || !JSON_NODE_HOLDS_ARRAY(n)) {
    char *f = g_strdup_printf("%s.%s", path, name);
    field_error(error, src, f, "expected an array");
    g_free(f);
    return NULL;
  }
  return json_node_get_array(n);
}

/* ------------------------------------------------------------------ Sequence steps */

typedef gboolean (*StepParser)(LmwbTokenizer *t, JsonNode *n, const char *src, const char *path, GError **error);

/* HF's "Sequence" wraps a list of steps under `key`: parse each with `parse`, naming its index. */
static gboolean parse_sequence(LmwbTokenizer *t, JsonObject *o, const char *key, StepParser parse, const char *src,
                               const char *path, GError **error) {
  JsonArray *a = array_member(o, key, src, path, error);
  if (!a) return FALSE;
  for (guint i = 0; i < json_array_get_length(a); i++) {
    char *p = g_strdup_printf("%s.%s[%u]", path, key, i);
    gboolean ok = parse(t, json_array_get_element(a, i), src, p, error);
    g_free(p);
    if (!ok) return FALSE;
  }
  return TRUE;
}

/* ------------------------------------------------------------------ normalizer */

static gboolean parse_normalizer(LmwbTokenizer *t, JsonNode *n, const char *src, const char *path,
                                 GError **error) {
  if (node_is_null(n)) return TRUE;
  const char *type = node_type(n, src, path, error);
  if (!type) return FALSE;
  JsonObject *o = json_node_get_object(n);
  NormStep st = {0};
  if (strcmp(type, "Sequence") == 0) {
    return parse_sequence(t, o, "normalizers", parse_normalizer, src, path, error);
  } else if (strcmp(type, "Prepend") == 0) {
    const char *s;
    if (!get_string(o, "prepend", TRUE, &s, src, path, error)) return FALSE;
    st.kind = NORM_PREPEND;
    st.a = g_strdup(s);
  } else if (strcmp(type, "Replace") == 0) {
    const char *regex, *content;
    const char *pat = pattern_string(o, &regex, src, path, error);
    if (!pat && !regex) return FALSE;
    if (!pat) {
      char *f = g_strdup_printf("%s.pattern.Regex", path);
      field_error(error, src, f, "regex replacement is not supported");
      g_free(f);
      return FALSE;
    }
    if (!get_string(o, "content", TRUE, &content, src, path, error)) return FALSE;
    if (!*pat) {
      char *f = g_strdup_printf("%s.pattern", path);
      field_error(error, src, f, "empty pattern");
      g_free(f);
      return FALSE;
    }
    st.kind = NORM_REPLACE;
    st.a = g_strdup(pat);
    st.b = g_strdup(content);
  } else if (strcmp(type, "NFC") == 0) st.kind = NORM_NFC;
  else if (strcmp(type, "NFD") == 0) st.kind = NORM_NFD;
  else if (strcmp(type, "NFKC") == 0) st.kind = NORM_NFKC;
  else if (strcmp(type, "NFKD") == 0) st.kind = NORM_NFKD;
  else if (strcmp(type, "Lowercase") == 0) st.kind = NORM_LOWERCASE;
  else {
    char *f = g_strdup_printf("%s.type", path);
    field_error(error, src, f, "normalizer type '%s' is not supported", type);
    g_free(f);
    return FALSE;
  }
  g_array_append_val(t->norm, st);
  return TRUE;
}

static void replace_all(GString *out, const char *s, size_t len, const char *pat, const char *with) {
  size_t pl = strlen(pat);
  size_t i = 0;
  while (i < len) {
    if (pl <= len - i && memcmp(s + i, pat, pl) == 0) {
      g_string_append(out, with);
      i += pl;
    } else {
      g_string_append_c(out, s[i]);
      i++;
    }
  }
}

/* Returns a newly allocated normalized copy of s[0..len). */
static GString *normalize(const LmwbTokenizer *t, const char *s, size_t len) {
  GString *cur = g_string_new_len(s, (gssize)len);
  for (guint i = 0; i < t->norm->len; i++) {
    const NormStep *st = &g_array_index(t->norm, NormStep, i);
    GString *next = NULL;
    switch (st->kind) {
    case NORM_PREPEND:
      if (cur->len > 0) g_string_prepend(cur, st->a);
      break;
    case NORM_REPLACE:
      next = g_string_sized_new(cur->len + 16);
      replace_all(next, cur->str, cur->len, st->a, st->b);
      break;
    case NORM_LOWERCASE: {
      char *d = g_utf8_strdown(cur->str, (gssize)cur->len);
      next = g_string_new(d);
      g_free(d);
      break;
    }
    default: {
      GNormalizeMode mode = st->kind == NORM_NFC    ? G_NORMALIZE_NFC
                            : st->kind == NORM_NFD  ? G_NORMALIZE_NFD
                            : st->kind == NORM_NFKC ? G_NORMALIZE_NFKC
                                                    : G_NORMALIZE_NFKD;
      char *d = g_utf8_normalize(cur->str, (gssize)cur->len, mode);
      if (d) {
        next = g_string_new(d);
        g_free(d);
      }
      break;
    }
    }
    if (next) {
      g_string_free(cur, TRUE);
      cur = next;
    }
  }
  return cur;
}

/* ------------------------------------------------------------------ pre-tokenizer */

static gboolean parse_pretok(LmwbTokenizer *t, JsonNode *n, const char *src, const char *path, GError **error) {
  if (node_is_null(n)) return TRUE;
  const char *type = node_type(n, src, path, error);
  if (!type) return FALSE;
  JsonObject *o = json_node_get_object(n);
  PreStep st = {0};
  if (strcmp(type, "Sequence") == 0) {
    return parse_sequence(t, o, "pretokenizers", parse_pretok, src, path, error);
  } else if (strcmp(type, "Split") == 0) {
    const char *regex, *behavior;
    const char *pat = pattern_string(o, &regex, src, path, error);
    if (!pat && !regex) return FALSE;
    char *f = g_strdup_printf("%s.pattern", path);
    if (!regex || !lmwb_tok_split_kind_from_pattern(regex, &st.split)) {
      field_error(error, src, f, "only the GPT-2, Llama-3 and Qwen2 split regexes are supported");
      g_free(f);
      return FALSE;
    }
    g_free(f);
    if (!get_string(o, "behavior", FALSE, &behavior, src, path, error)) return FALSE;
    gboolean invert;
    if (!get_bool(o, "invert", FALSE, &invert, src, path, error)) return FALSE;
    if ((behavior && strcmp(behavior, "Isolated") != 0) || invert) {
      f = g_strdup_printf("%s.behavior", path);
      field_error(error, src, f, "only behavior Isolated without invert is supported");
      g_free(f);
      return FALSE;
    }
    st.kind = PRE_SPLIT;
  } else if (strcmp(type, "ByteLevel") == 0) {
    st.kind = PRE_BYTELEVEL;
    if (!get_bool(o, "add_prefix_space", TRUE, &st.add_prefix_space, src, path, error)) return FALSE;
    if (!get_bool(o, "use_regex", TRUE, &st.use_regex, src, path, error)) return FALSE;
  } else if (strcmp(type, "Metaspace") == 0) {
    const char *r;
    st.kind = PRE_METASPACE;
    if (!get_string(o, "replacement", TRUE, &r, src, path, error)) return FALSE;
    if (g_utf8_strlen(r, -1) != 1) {
      char *f = g_strdup_printf("%s.replacement", path);
      field_error(error, src, f, "expected a single character");
      g_free(f);
      return FALSE;
    }
    st.replacement = g_strdup(r);
    if (!parse_scheme(o, &st.scheme, src, path, error) ||
        !get_bool(o, "split", TRUE, &st.split_pieces, src, path, error)) {
      g_free(st.replacement);
      return FALSE;
    }
  } else {
    char *f = g_strdup_printf("%s.type", path);
    field_error(error, src, f, "pre-tokenizer type '%s' is not supported", type);
    g_free(f);
    return FALSE;
  }
  g_array_append_val(t->pre, st);
  return TRUE;
}

typedef struct {
  size_t off, len;
  gboolean first; /* starts at offset 0 of the original text (Metaspace prepend_scheme first) */
} Span;

typedef struct {
  GString *buf;
  GArray *spans;
} Pieces;

typedef struct {
  GArray *out;
  size_t base;
  gboolean first;
} SplitCtx;

static void collect_span(const char *text, size_t start, size_t end, void *user) {
  SplitCtx *c = user;
  Span s = {c->base + start, end - start, c->first && start == 0};
  g_array_append_val(c->out, s);
}

static void map_bytes(GString *out, const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) g_string_append(out, lmwb_tok_byte_utf8((uint8_t)s[i]));
}

static void pretokenize(const LmwbTokenizer *t, Pieces *p) {
  for (guint si = 0; si < t->pre->len; si++) {
    const PreStep *st = &g_array_index(t->pre, PreStep, si);
    GArray *spans = g_array_new(FALSE, FALSE, sizeof(Span));
    GString *buf = st->kind == PRE_SPLIT ? p->buf : g_string_sized_new(p->buf->len * 2 + 8);
    for (guint k = 0; k < p->spans->len; k++) {
      Span sp = g_array_index(p->spans, Span, k);
      const char *s = p->buf->str + sp.off;
      if (st->kind == PRE_SPLIT) {
        SplitCtx c = {spans, sp.off, sp.first};
        lmwb_tok_split(st->split, s, sp.len, collect_span, &c);
      } else if (st->kind == PRE_BYTELEVEL) {
        GString *tmp = NULL;
        const char *w = s;
        size_t wl = sp.len;
        if (st->add_prefix_space && (wl == 0 || w[0] != ' ')) {
          tmp = g_string_new(" ");
          g_string_append_len(tmp, w, (gssize)wl);
          w = tmp->str;
          wl = tmp->len;
        }
        if (st->use_regex) {
          GArray *sub = g_array_new(FALSE, FALSE, sizeof(Span));
          SplitCtx c = {sub, 0, sp.first};
          lmwb_tok_split(LMWB_SPLIT_GPT2, w, wl, collect_span, &c);
          for (guint j = 0; j < sub->len; j++) {
            Span q = g_array_index(sub, Span, j);
            Span o = {buf->len, 0, q.first};
            map_bytes(buf, w + q.off, q.len);
            o.len = buf->len - o.off;
            g_array_append_val(spans, o);
          }
          g_array_free(sub, TRUE);
        } else {
          Span o = {buf->len, 0, sp.first};
          map_bytes(buf, w, wl);
          o.len = buf->len - o.off;
          g_array_append_val(spans, o);
        }
        if (tmp) g_string_free(tmp, TRUE);
      } else { /* Metaspace */
        size_t start = buf->len;
        size_t rl = strlen(st->replacement);
        replace_all(buf, s, sp.len, " ", st->replacement);
        gboolean starts = buf->len - start >= rl && memcmp(buf->str + start, st->replacement, rl) == 0;
        if (!starts && (st->scheme == PREPEND_ALWAYS || (st->scheme == PREPEND_FIRST && sp.first)))
          g_string_insert(buf, (gssize)start, st->replacement);
        size_t end = buf->len;
        if (!st->split_pieces) {
          Span o = {start, end - start, sp.first};
          g_array_append_val(spans, o);
        } else {
          /* MergedWithNext: a new piece begins at every replacement character. */
          size_t ps = start;
          for (size_t i = start; i < end;) {
            if (i > ps && end - i >= rl && memcmp(buf->str + i, st->replacement, rl) == 0) {
              Span o = {ps, i - ps, sp.first && ps == start};
              g_array_append_val(spans, o);
              ps = i;
            }
            i += end - i >= rl && memcmp(buf->str + i, st->replacement, rl) == 0 ? rl : 1;
          }
          if (end > ps) {
            Span o = {ps, end - ps, sp.first && ps == start};
            g_array_append_val(spans, o);
          }
        }
      }
    }
    /* HF drops empty pieces. */
    guint w = 0;
    for (guint k = 0; k < spans->len; k++)
      if (g_array_index(spans, Span, k).len > 0) g_array_index(spans, Span, w++) = g_array_index(spans, Span, k);
    g_array_set_size(spans, w);
    g_array_free(p->spans, TRUE);
    p->spans = spans;
    if (buf != p->buf) {
      g_string_free(p->buf, TRUE);
      p->buf = buf;
    }
  }
}

/* ------------------------------------------------------------------ BPE model */

static void bpe_word(const LmwbTokenizer *t, const char *w, size_t len, GArray *out, GString *scratch) {
  if (t->ignore_merges) {
    int32_t id = vocab_get_len(t, w, len, scratch);
    if (id >= 0) {
      g_array_append_val(out, id);
      return;
    }
  }
  GArray *sym = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), len);
  int32_t unk = -1;
  size_t unk_len = 0;
  const char *p = w, *end = w + len;
  while (p < end) {
    const char *nx = g_utf8_next_char(p);
    if (nx > end) nx = end;
    g_string_truncate(scratch, 0);
    if (p != w && t->cont_prefix) g_string_append(scratch, t->cont_prefix);
    g_string_append_len(scratch, p, nx - p);
    if (nx == end && t->eow_suffix) g_string_append(scratch, t->eow_suffix);
    int32_t id = strlen(scratch->str) == scratch->len ? vocab_get(t, scratch->str) : -1;
    if (id >= 0) {
      if (unk >= 0) {
        g_array_append_val(sym, unk);
        unk = -1;
      }
      g_array_append_val(sym, id);
    } else {
      gboolean done = FALSE;
      if (t->byte_fallback) {
        gboolean all = TRUE;
        for (gsize i = 0; i < scratch->len; i++)
          if (t->byte_ids[(uint8_t)scratch->str[i]] < 0) all = FALSE;
        if (all) {
          /* HF does not flush a pending unk here; it is added at the next known char or the end. */
          for (gsize i = 0; i < scratch->len; i++) g_array_append_val(sym, t->byte_ids[(uint8_t)scratch->str[i]]);
          done = TRUE;
        }
      }
      if (!done && t->unk_id >= 0) {
        if (unk >= 0 && t->fuse_unk) unk_len += (size_t)(nx - p);
        else {
          if (unk >= 0) g_array_append_val(sym, unk);
          unk = t->unk_id;
          unk_len = (size_t)(nx - p);
        }
      }
    }
    p = nx;
  }
  (void)unk_len;
  if (unk >= 0) g_array_append_val(sym, unk);
  size_t n = lmwb_bpe_merge_all(&t->merges, (int32_t *)sym->data, sym->len);
  g_array_append_vals(out, sym->data, (guint)n);
  g_array_free(sym, TRUE);
}

static void model_word(const LmwbTokenizer *t, const char *w, size_t len, GArray *out, GString *scratch) {
  if (len >= LMWB_TOKENIZER_CACHE_WORD_MAX || memchr(w, 0, len)) {
    bpe_word(t, w, len, out, scratch);
    return;
  }
  char key[LMWB_TOKENIZER_CACHE_WORD_MAX];
  memcpy(key, w, len);
  key[len] = 0;
  LmwbTokenizer *mt = (LmwbTokenizer *)t; /* the cache is the only mutable state; it is locked */
  g_mutex_lock(&mt->cache_lock);
  int32_t *hit = g_hash_table_lookup(mt->cache, key);
  if (hit) g_array_append_vals(out, hit + 1, (guint)hit[0]);
  g_mutex_unlock(&mt->cache_lock);
  if (hit) return;
  guint before = out->len;
  bpe_word(t, w, len, out, scratch);
  guint n = out->len - before;
  int32_t *val = g_new(int32_t, n + 1);
  val[0] = (int32_t)n;
  if (n) memcpy(val + 1, &g_array_index(out, int32_t, before), n * sizeof(int32_t)); /* out may hold no array yet */
  g_mutex_lock(&mt->cache_lock);
  if (g_hash_table_size(mt->cache) >= LMWB_TOKENIZER_CACHE_MAX) g_hash_table_remove_all(mt->cache);
  g_hash_table_replace(mt->cache, g_strdup(key), val);
  g_mutex_unlock(&mt->cache_lock);
}

/* ------------------------------------------------------------------ added tokens */

typedef struct {
  size_t start, end;
  int32_t id; /* -1: plain text */
} Seg;

static gboolean ends_with_word(const char *s, size_t len) {
  if (len == 0) return FALSE;
  const char *p = g_utf8_find_prev_char(s, s + len);
  return p && lmwb_tok_is_alnum(g_utf8_get_char(p));
}

/* HF AddedVocabulary::find_matches: leftmost-longest matches, then single_word/lstrip/rstrip. */
static void find_added(const LmwbTokenizer *t, const AddedSet *set, const char *s, size_t len, GArray *segs) {
  size_t start_offset = 0;
  size_t pos = 0;
  if (set->any) {
    while (pos < len) {
      GArray *b = set->bucket[(uint8_t)s[pos]];
      const AddedToken *hit = NULL;
      if (b) {
        for (guint k = 0; k < b->len; k++) {
          const AddedToken *a = &t->added[g_array_index(b, int, k)];
          if (a->match_len <= len - pos && memcmp(s + pos, a->match, a->match_len) == 0) {
            hit = a;
            break;
          }
        }
      }
      if (!hit) {
        pos++;
        continue;
      }
      size_t start = pos, stop = pos + hit->match_len;
      pos = stop;
      if (start < start_offset) continue; /* overlaps what an rstrip already consumed */
      if (hit->single_word) {
        gboolean start_space = start == 0 || !ends_with_word(s, start);
        gboolean stop_space = stop == len || !lmwb_tok_is_alnum(g_utf8_get_char(s + stop));
        if (!start_space || !stop_space) continue;
      }
      if (hit->lstrip) {
        size_t ns = start;
        while (ns > start_offset) {
          const char *pc = g_utf8_find_prev_char(s, s + ns);
          if (!pc || !lmwb_tok_is_space(g_utf8_get_char(pc))) break;
          ns = (size_t)(pc - s);
        }
        start = ns;
      }
      if (hit->rstrip) {
        while (stop < len && lmwb_tok_is_space(g_utf8_get_char(s + stop))) stop = (size_t)(g_utf8_next_char(s + stop) - s);
        pos = stop;
      }
      if (start_offset < start) {
        Seg g = {start_offset, start, -1};
        g_array_append_val(segs, g);
      }
      Seg g = {start, stop, hit->id};
      g_array_append_val(segs, g);
      start_offset = stop;
    }
  }
  if (start_offset < len) {
    Seg g = {start_offset, len, -1};
    g_array_append_val(segs, g);
  }
}

/* ------------------------------------------------------------------ encode */

static void encode_text(const LmwbTokenizer *t, const char *s, size_t len, gboolean first, GArray *out,
                        GString *scratch) {
  Pieces p;
  p.buf = g_string_new_len(s, (gssize)len);
  p.spans = g_array_new(FALSE, FALSE, sizeof(Span));
  Span whole = {0, len, first};
  if (len > 0) g_array_append_val(p.spans, whole);
  pretokenize(t, &p);
  for (guint k = 0; k < p.spans->len; k++) {
    Span sp = g_array_index(p.spans, Span, k);
    model_word(t, p.buf->str + sp.off, sp.len, out, scratch);
  }
  g_array_free(p.spans, TRUE);
  g_string_free(p.buf, TRUE);
}

int32_t *lmwb_tokenizer_encode(const LmwbTokenizer *t, const char *text, size_t len, gboolean add_special,
                               size_t *n_ids, GError **error) {
  *n_ids = 0;
  if (!text && len > 0) {
    lmwb_input_error(error, "tokenizer: no text given");
    return NULL;
  }
  size_t bad = 0;
  if (len > 0 && !lmwb_tok_utf8_valid(text, len, &bad)) {
    lmwb_input_error(error, "tokenizer: input text is not valid UTF-8 (byte offset %zu)", bad);
    return NULL;
  }
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  GString *scratch = g_string_new(NULL);
  GArray *segs = g_array_new(FALSE, FALSE, sizeof(Seg));
  find_added(t, &t->raw_set, text ? text : "", len, segs);
  for (guint i = 0; i < segs->len; i++) {
    Seg g = g_array_index(segs, Seg, i);
    if (g.id >= 0) {
      g_array_append_val(ids, g.id);
      continue;
    }
    GString *norm = normalize(t, text + g.start, g.end - g.start);
    GArray *segs2 = g_array_new(FALSE, FALSE, sizeof(Seg));
    find_added(t, &t->norm_set, norm->str, norm->len, segs2);
    for (guint j = 0; j < segs2->len; j++) {
      Seg h = g_array_index(segs2, Seg, j);
      if (h.id >= 0) g_array_append_val(ids, h.id);
      else encode_text(t, norm->str + h.start, h.end - h.start, g.start == 0 && h.start == 0, ids, scratch);
    }
    g_array_free(segs2, TRUE);
    g_string_free(norm, TRUE);
  }
  g_array_free(segs, TRUE);
  g_string_free(scratch, TRUE);
  if (add_special && t->tmpl) {
    GArray *full = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), ids->len + t->tmpl->len);
    for (guint i = 0; i < t->tmpl->len; i++) {
      int32_t v = g_array_index(t->tmpl, int32_t, i);
      if (v < 0) g_array_append_vals(full, ids->data, ids->len);
      else g_array_append_val(full, v);
    }
    g_array_free(ids, TRUE);
    ids = full;
  }
  *n_ids = ids->len;
  if (ids->len == 0) { /* an empty GArray may own no buffer: NULL would read as an error */
    g_array_free(ids, TRUE);
    return g_new0(int32_t, 1);
  }
  return (int32_t *)g_array_free(ids, FALSE);
}

/* ------------------------------------------------------------------ decoder */

static gboolean parse_decoder(LmwbTokenizer *t, JsonNode *n, const char *src, const char *path, GError **error) {
  if (node_is_null(n)) return TRUE;
  const char *type = node_type(n, src, path, error);
  if (!type) return FALSE;
  JsonObject *o = json_node_get_object(n);
  DecStep st = {0};
  if (strcmp(type, "Sequence") == 0) {
    return parse_sequence(t, o, "decoders", parse_decoder, src, path, error);
  } else if (strcmp(type, "ByteLevel") == 0) st.kind = DEC_BYTELEVEL;
  else if (strcmp(type, "ByteFallback") == 0) st.kind = DEC_BYTEFALLBACK;
  else if (strcmp(type, "Fuse") == 0) st.kind = DEC_FUSE;
  else if (strcmp(type, "Replace") == 0) {
    const char *regex, *content;
    const char *pat = pattern_string(o, &regex, src, path, error);
    if (!pat && !regex) return FALSE;
    if (!pat || !*pat) {
      char *f = g_strdup_printf("%s.pattern", path);
      field_error(error, src, f, "only a non-empty String pattern is supported");
      g_free(f);
      return FALSE;
    }
    if (!get_string(o, "content", TRUE, &content, src, path, error)) return FALSE;
    st.kind = DEC_REPLACE;
    st.a = g_strdup(pat);
    st.b = g_strdup(content);
  } else if (strcmp(type, "Strip") == 0) {
    const char *content;
    gint64 a, b;
    if (!get_string(o, "content", TRUE, &content, src, path, error)) return FALSE;
    if (!get_int(o, "start", 0, 1 << 20, 0, FALSE, &a, src, path, error) ||
        !get_int(o, "stop", 0, 1 << 20, 0, FALSE, &b, src, path, error))
      return FALSE;
    if (g_utf8_strlen(content, -1) != 1) {
      char *f = g_strdup_printf("%s.content", path);
      field_error(error, src, f, "expected a single character");
      g_free(f);
      return FALSE;
    }
    st.kind = DEC_STRIP;
    st.a = g_strdup(content);
    st.start = (int)a;
    st.stop = (int)b;
  } else if (strcmp(type, "Metaspace") == 0) {
    const char *r;
    if (!get_string(o, "replacement", TRUE, &r, src, path, error)) return FALSE;
    if (g_utf8_strlen(r, -1) != 1) {
      char *f = g_strdup_printf("%s.replacement", path);
      field_error(error, src, f, "expected a single character");
      g_free(f);
      return FALSE;
    }
    if (!parse_scheme(o, &st.scheme, src, path, error)) return FALSE;
    st.kind = DEC_METASPACE;
    st.a = g_strdup(r);
  } else {
    char *f = g_strdup_printf("%s.type", path);
    field_error(error, src, f, "decoder type '%s' is not supported", type);
    g_free(f);
    return FALSE;
  }
  g_array_append_val(t->dec, st);
  return TRUE;
}

/* <0xXX> -> byte value, else -1 */
static int byte_token(const char *s, size_t len) {
  if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
  int hi = g_ascii_xdigit_value(s[3]), lo = g_ascii_xdigit_value(s[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static void byte_level_to_bytes(GString *out, const char *s, size_t len) {
  /* HF: if every char maps back to a byte use the bytes, else the token's own UTF-8. */
  size_t mark = out->len;
  const char *p = s, *end = s + len;
  while (p < end) {
    int b = lmwb_tok_unichar_to_byte(g_utf8_get_char(p));
    if (b < 0) {
      g_string_truncate(out, mark);
      g_string_append_len(out, s, (gssize)len);
      return;
    }
    g_string_append_c(out, (char)b);
    p = g_utf8_next_char(p);
  }
}

static void apply_decoders(const LmwbTokenizer *t, GPtrArray *toks) {
  for (guint si = 0; si < t->dec->len; si++) {
    const DecStep *st = &g_array_index(t->dec, DecStep, si);
    switch (st->kind) {
    case DEC_BYTELEVEL: {
      GString *bytes = g_string_new(NULL), *s = g_string_new(NULL);
      for (guint i = 0; i < toks->len; i++) {
        GString *g = toks->pdata[i];
        byte_level_to_bytes(bytes, g->str, g->len);
      }
      lmwb_tok_append_lossy(s, bytes->str, bytes->len);
      g_string_free(bytes, TRUE);
      g_ptr_array_set_size(toks, 0);
      g_ptr_array_add(toks, s);
      break;
    }
    case DEC_REPLACE:
    case DEC_METASPACE:
      for (guint i = 0; i < toks->len; i++) {
        GString *g = toks->pdata[i], *n = g_string_sized_new(g->len);
        if (st->kind == DEC_REPLACE) replace_all(n, g->str, g->len, st->a, st->b);
        else replace_all(n, g->str, g->len, st->a, i == 0 && st->scheme != PREPEND_NEVER ? "" : " ");
        toks->pdata[i] = n;
        g_string_free(g, TRUE);
      }
      break;
    case DEC_BYTEFALLBACK: {
      GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)NULL);
      GString *pend = g_string_new(NULL);
      for (guint i = 0; i <= toks->len; i++) {
        GString *g = i < toks->len ? toks->pdata[i] : NULL;
        int b = g ? byte_token(g->str, g->len) : -1;
        if (b >= 0) {
          g_string_append_c(pend, (char)b);
          g_string_free(g, TRUE);
          continue;
        }
        if (pend->len > 0) {
          if (g_utf8_validate_len(pend->str, pend->len, NULL)) g_ptr_array_add(out, g_string_new_len(pend->str, pend->len));
          else
            for (gsize k = 0; k < pend->len; k++) g_ptr_array_add(out, g_string_new("\xEF\xBF\xBD"));
          g_string_truncate(pend, 0);
        }
        if (g) g_ptr_array_add(out, g);
      }
      g_string_free(pend, TRUE);
      g_ptr_array_set_size(toks, 0);
      for (guint i = 0; i < out->len; i++) g_ptr_array_add(toks, out->pdata[i]);
      g_ptr_array_free(out, TRUE);
      break;
    }
    case DEC_FUSE: {
      GString *s = g_string_new(NULL);
      for (guint i = 0; i < toks->len; i++) g_string_append_len(s, ((GString *)toks->pdata[i])->str, ((GString *)toks->pdata[i])->len);
      g_ptr_array_set_size(toks, 0);
      g_ptr_array_add(toks, s);
      break;
    }
    case DEC_STRIP: {
      size_t cl = strlen(st->a);
      for (guint i = 0; i < toks->len; i++) {
        GString *g = toks->pdata[i];
        size_t a = 0, b = g->len;
        for (int k = 0; k < st->start && b - a >= cl && memcmp(g->str + a, st->a, cl) == 0; k++) a += cl;
        for (int k = 0; k < st->stop && b - a >= cl && memcmp(g->str + b - cl, st->a, cl) == 0; k++) b -= cl;
        g_string_truncate(g, b);
        g_string_erase(g, 0, (gssize)a);
      }
      break;
    }
    }
  }
}

char *lmwb_tokenizer_decode(const LmwbTokenizer *t, const int32_t *ids, size_t n, gboolean skip_special,
                            size_t *len_out) {
  GPtrArray *toks = g_ptr_array_new_with_free_func((GDestroyNotify)NULL);
  for (size_t i = 0; i < n; i++) {
    const char *s = lmwb_tokenizer_token(t, ids[i]);
    if (!s) continue;
    if (skip_special && lmwb_tokenizer_is_special(t, ids[i])) continue;
    g_ptr_array_add(toks, g_string_new(s));
  }
  GString *out = g_string_new(NULL);
  if (t->has_decoder) {
    apply_decoders(t, toks);
    for (guint i = 0; i < toks->len; i++) g_string_append_len(out, ((GString *)toks->pdata[i])->str, ((GString *)toks->pdata[i])->len);
  } else {
    for (guint i = 0; i < toks->len; i++) {
      if (i) g_string_append_c(out, ' ');
      g_string_append_len(out, ((GString *)toks->pdata[i])->str, ((GString *)toks->pdata[i])->len);
    }
  }
  for (guint i = 0; i < toks->len; i++) g_string_free(toks->pdata[i], TRUE);
  g_ptr_array_free(toks, TRUE);
  if (len_out) *len_out = out->len;
  return g_string_free(out, FALSE);
}

char *lmwb_tokenizer_token_text(const LmwbTokenizer *t, int32_t id) {
  const char *s = lmwb_tokenizer_token(t, id);
  if (!s) return NULL;
  GString *cur = g_string_new(s);
  if (!added_for_id(t, id)) {
    /* The per-token part of the decoder chain (no fusing or stripping, no lossy conversion). */
    for (guint si = 0; si < t->dec->len; si++) {
      const DecStep *st = &g_array_index(t->dec, DecStep, si);
      GString *n = NULL;
      if (st->kind == DEC_BYTELEVEL) {
        n = g_string_new(NULL);
        byte_level_to_bytes(n, cur->str, cur->len);
      } else if (st->kind == DEC_REPLACE || st->kind == DEC_METASPACE) {
        n = g_string_new(NULL);
        replace_all(n, cur->str, cur->len, st->a, st->kind == DEC_REPLACE ? st->b : " ");
      } else if (st->kind == DEC_BYTEFALLBACK) {
        int b = byte_token(cur->str, cur->len);
        if (b >= 0) {
          n = g_string_new(NULL);
          g_string_append_c(n, (char)b);
        }
      }
      if (n) {
        g_string_free(cur, TRUE);
        cur = n;
      }
    }
  }
  GString *out = g_string_new(NULL);
  lmwb_tok_append_escaped(out, cur->str, cur->len);
  g_string_free(cur, TRUE);
  return g_string_free(out, FALSE);
}

/* ------------------------------------------------------------------ post-processor */

static gboolean parse_post(LmwbTokenizer *t, JsonNode *n, const char *src, const char *path, GError **error) {
  if (node_is_null(n)) return TRUE;
  const char *type = node_type(n, src, path, error);
  if (!type) return FALSE;
  JsonObject *o = json_node_get_object(n);
  if (strcmp(type, "ByteLevel") == 0) return TRUE; /* offsets only */
  if (strcmp(type, "Sequence") == 0) {
    return parse_sequence(t, o, "processors", parse_post, src, path, error);
  }
  if (t->tmpl) {
    field_error(error, src, path, "more than one template post-processor");
    return FALSE;
  }
  if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
    int32_t id[2];
    const char *names[2] = {"cls", "sep"};
    for (int k = 0; k < 2; k++) {
      JsonNode *m = member(o, names[k]);
      char *f = g_strdup_printf("%s.%s", path, names[k]);
      JsonArray *a = m && JSON_NODE_HOLDS_ARRAY(m) ? json_node_get_array(m) : NULL;
      JsonNode *idn = a && json_array_get_length(a) == 2 ? json_array_get_element(a, 1) : NULL;
      if (!node_is_int(idn) || json_node_get_int(idn) < 0 || json_node_get_int(idn) >= LMWB_TOKENIZER_MAX_ID) {
        field_error(error, src, f, "expected [token, id] with a valid id");
        g_free(f);
        return FALSE;
      }
      g_free(f);
      id[k] = (int32_t)json_node_get_int(idn);
    }
    t->tmpl = g_array_new(FALSE, FALSE, sizeof(int32_t));
    int32_t a = -1;
    g_array_append_val(t->tmpl, id[0]);
    g_array_append_val(t->tmpl, a);
    g_array_append_val(t->tmpl, id[1]);
    return TRUE;
  }
  if (strcmp(type, "TemplateProcessing") != 0) {
    char *f = g_strdup_printf("%s.type", path);
    field_error(error, src, f, "post-processor type '%s' is not supported", type);
    g_free(f);
    return FALSE;
  }
  JsonArray *single = array_member(o, "single", src, path, error);
  if (!single) return FALSE;
  JsonNode *stn = member(o, "special_tokens");
  JsonObject *sto = stn && JSON_NODE_HOLDS_OBJECT(stn) ? json_node_get_object(stn) : NULL;
  t->tmpl = g_array_new(FALSE, FALSE, sizeof(int32_t));
  gboolean have_a = FALSE;
  for (guint i = 0; i < json_array_get_length(single); i++) {
    char *f = g_strdup_printf("%s.single[%u]", path, i);
    JsonNode *it = json_array_get_element(single, i);
    JsonObject *io = it && JSON_NODE_HOLDS_OBJECT(it) ? json_node_get_object(it) : NULL;
    JsonNode *seq = member(io, "Sequence"), *sp = member(io, "SpecialToken");
    if (seq && JSON_NODE_HOLDS_OBJECT(seq)) {
      const char *which = node_string(member(json_node_get_object(seq), "id"));
      if (!which || strcmp(which, "A") != 0 || have_a) {
        field_error(error, src, f, "a single-sequence template must hold $A exactly once");
        g_free(f);
        return FALSE;
      }
      have_a = TRUE;
      int32_t a = -1;
      g_array_append_val(t->tmpl, a);
    } else if (sp && JSON_NODE_HOLDS_OBJECT(sp)) {
      const char *name = node_string(member(json_node_get_object(sp), "id"));
      JsonNode *def = name ? member(sto, name) : NULL;
      JsonObject *dobj = def && JSON_NODE_HOLDS_OBJECT(def) ? json_node_get_object(def) : NULL;
      JsonNode *idsn = member(dobj, "ids");
      if (!name || !idsn || !JSON_NODE_HOLDS_ARRAY(idsn)) {
        g_free(f);
        f = g_strdup_printf("%s.special_tokens.%s", path, name ? name : "?");
        field_error(error, src, f, "special token used by the template is not defined with \"ids\"");
        g_free(f);
        return FALSE;
      }
      JsonArray *ids = json_node_get_array(idsn);
      for (guint k = 0; k < json_array_get_length(ids); k++) {
        JsonNode *v = json_array_get_element(ids, k);
        if (!node_is_int(v) || json_node_get_int(v) < 0 || json_node_get_int(v) >= LMWB_TOKENIZER_MAX_ID) {
          g_free(f);
          f = g_strdup_printf("%s.special_tokens.%s.ids[%u]", path, name, k);
          field_error(error, src, f, "expected a token id");
          g_free(f);
          return FALSE;
        }
        int32_t id = (int32_t)json_node_get_int(v);
        g_array_append_val(t->tmpl, id);
      }
    } else {
      field_error(error, src, f, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      g_free(f);
      return FALSE;
    }
    g_free(f);
  }
  if (!have_a) {
    char *f = g_strdup_printf("%s.single", path);
    field_error(error, src, f, "template does not contain $A");
    g_free(f);
    return FALSE;
  }
  return TRUE;
}

/* ------------------------------------------------------------------ model */

static gboolean vocab_add(LmwbTokenizer *t, GPtrArray *by_id, const char *tok, gint64 id, const char *src,
                          const char *path, GError **error) {
  if (id < 0 || id >= LMWB_TOKENIZER_MAX_ID) {
    char *f = g_strdup_printf("%s.%s", path, tok);
    field_error(error, src, f, "id %" G_GINT64_FORMAT " is out of range [0, %d)", id, LMWB_TOKENIZER_MAX_ID);
    g_free(f);
    return FALSE;
  }
  if ((guint)id >= by_id->len) g_ptr_array_set_size(by_id, (guint)id + 1);
  if (by_id->pdata[id]) {
    char *f = g_strdup_printf("%s.%s", path, tok);
    field_error(error, src, f, "duplicate id %" G_GINT64_FORMAT " (also used by '%s')", id, (char *)by_id->pdata[id]);
    g_free(f);
    return FALSE;
  }
  by_id->pdata[id] = g_strdup(tok);
  return TRUE;
}

static gboolean vocab_finish(LmwbTokenizer *t, GPtrArray *by_id, const char *src, const char *path,
                             GError **error) {
  t->vocab_n = (int32_t)by_id->len;
  t->vocab = (char **)g_ptr_array_free(by_id, FALSE);
  for (int32_t i = 0; i < t->vocab_n; i++) {
    if (!t->vocab[i]) continue;
    if (g_hash_table_contains(t->vocab_map, t->vocab[i])) {
      /* JSON objects with repeated keys: json-glib keeps the last, so this is a defensive check. */
      field_error(error, src, path, "token '%s' appears twice", t->vocab[i]);
      return FALSE;
    }
    g_hash_table_insert(t->vocab_map, t->vocab[i], GINT_TO_POINTER(i + 1));
  }
  for (int b = 0; b < 256; b++) {
    char name[8];
    g_snprintf(name, sizeof name, "<0x%02X>", b);
    t->byte_ids[b] = vocab_get(t, name);
  }
  return TRUE;
}

static gboolean merge_add(LmwbTokenizer *t, const char *a, const char *b, uint32_t rank, const char *src,
                          const char *path, GError **error) {
  int32_t ia = vocab_get(t, a), ib = vocab_get(t, b);
  if (ia < 0 || ib < 0) {
    char *f = g_strdup_printf("%s[%u]", path, rank);
    field_error(error, src, f, "merge refers to token '%s' that is not in the vocabulary", ia < 0 ? a : b);
    g_free(f);
    return FALSE;
  }
  const char *bb = b;
  if (t->cont_prefix && g_str_has_prefix(b, t->cont_prefix)) bb = b + strlen(t->cont_prefix);
  char *joined = g_strconcat(a, bb, NULL);
  int32_t in = vocab_get(t, joined);
  if (in < 0) {
    char *f = g_strdup_printf("%s[%u]", path, rank);
    field_error(error, src, f, "merged token '%s' is not in the vocabulary", joined);
    g_free(f);
    g_free(joined);
    return FALSE;
  }
  g_free(joined);
  lmwb_merge_map_put(&t->merges, ia, ib, rank, in);
  return TRUE;
}

static gboolean parse_model(LmwbTokenizer *t, JsonNode *n, const char *src, GError **error) {
  if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
    field_error(error, src, "model", "missing or not an object");
    return FALSE;
  }
  JsonObject *o = json_node_get_object(n);
  const char *type;
  if (!get_string(o, "type", FALSE, &type, src, "model", error)) return FALSE;
  if (type && strcmp(type, "BPE") != 0) {
    field_error(error, src, "model.type", "model type '%s' is not supported (only BPE)", type);
    return FALSE;
  }
  JsonNode *vn = member(o, "vocab");
  if (!vn || !JSON_NODE_HOLDS_OBJECT(vn)) {
    field_error(error, src, "model.vocab", "expected an object mapping tokens to ids");
    return FALSE;
  }
  JsonNode *dn = member(o, "dropout");
  /* Any non-zero dropout makes HF's encoding random; we only reproduce deterministic encoding. */
  if (!node_is_null(dn) && (!JSON_NODE_HOLDS_VALUE(dn) ||
                            (json_node_get_value_type(dn) != G_TYPE_INT64 &&
                             json_node_get_value_type(dn) != G_TYPE_DOUBLE) ||
                            json_node_get_double(dn) != 0.0)) {
    field_error(error, src, "model.dropout", "BPE dropout is not supported (encoding must be deterministic)");
    return FALSE;
  }
  const char *unk, *cp, *eow;
  if (!get_string(o, "unk_token", FALSE, &unk, src, "model", error) ||
      !get_string(o, "continuing_subword_prefix", FALSE, &cp, src, "model", error) ||
      !get_string(o, "end_of_word_suffix", FALSE, &eow, src, "model", error) ||
      !get_bool(o, "byte_fallback", FALSE, &t->byte_fallback, src, "model", error) ||
      !get_bool(o, "fuse_unk", FALSE, &t->fuse_unk, src, "model", error) ||
      !get_bool(o, "ignore_merges", FALSE, &t->ignore_merges, src, "model", error))
    return FALSE;
  t->cont_prefix = cp && *cp ? g_strdup(cp) : NULL;
  t->eow_suffix = eow && *eow ? g_strdup(eow) : NULL;
  JsonObject *vo = json_node_get_object(vn);
  GPtrArray *by_id = g_ptr_array_new();
  GList *names = json_object_get_members(vo);
  gboolean ok = TRUE;
  for (GList *l = names; l && ok; l = l->next) {
    JsonNode *idn = json_object_get_member(vo, l->data);
    if (!node_is_int(idn)) {
      char *f = g_strdup_printf("model.vocab.%s", (char *)l->data);
      field_error(error, src, f, "id is not an integer");
      g_free(f);
      ok = FALSE;
      break;
    }
    ok = vocab_add(t, by_id, l->data, json_node_get_int(idn), src, "model.vocab", error);
  }
  g_list_free(names);
  if (!ok) {
    for (guint i = 0; i < by_id->len; i++) g_free(by_id->pdata[i]);
    g_ptr_array_free(by_id, TRUE);
    return FALSE;
  }
  if (!vocab_finish(t, by_id, src, "model.vocab", error)) return FALSE;
  if (unk) {
    t->unk_id = vocab_get(t, unk);
    if (t->unk_id < 0) {
      field_error(error, src, "model.unk_token", "'%s' is not in the vocabulary", unk);
      return FALSE;
    }
  }
  JsonNode *mn = member(o, "merges");
  JsonArray *ma = mn && JSON_NODE_HOLDS_ARRAY(mn) ? json_node_get_array(mn) : NULL;
  if (!node_is_null(mn) && !ma) {
    field_error(error, src, "model.merges", "expected an array");
    return FALSE;
  }
  guint nm = ma ? json_array_get_length(ma) : 0;
  lmwb_merge_map_init(&t->merges, nm);
  for (guint i = 0; i < nm; i++) {
    JsonNode *e = json_array_get_element(ma, i);
    const char *s = node_string(e);
    char *f = g_strdup_printf("model.merges[%u]", i);
    gboolean good = FALSE;
    if (s) {
      /* Legacy "a b": exactly one space (HF splits on ' ' and wants two parts). */
      const char *sp = strchr(s, ' ');
      if (sp && sp != s && sp[1] && !strchr(sp + 1, ' ')) {
        char *a = g_strndup(s, (gsize)(sp - s));
        good = merge_add(t, a, sp + 1, i, src, "model.merges", error);
        g_free(a);
      } else field_error(error, src, f, "expected \"left right\" with exactly one space, got '%s'", s);
    } else if (e && JSON_NODE_HOLDS_ARRAY(e) && json_array_get_length(json_node_get_array(e)) == 2) {
      JsonArray *pa = json_node_get_array(e);
      const char *a = node_string(json_array_get_element(pa, 0)), *b = node_string(json_array_get_element(pa, 1));
      if (a && b) good = merge_add(t, a, b, i, src, "model.merges", error);
      else field_error(error, src, f, "expected a pair of strings");
    } else field_error(error, src, f, "expected a string \"a b\" or a pair [\"a\", \"b\"]");
    g_free(f);
    if (!good) return FALSE;
  }
  return TRUE;
}

/* ------------------------------------------------------------------ added tokens, finishing */

static void added_set_build(const LmwbTokenizer *t, AddedSet *set, gboolean normalized) {
  for (int i = 0; i < t->n_added; i++) {
    const AddedToken *a = &t->added[i];
    if (a->normalized != normalized || a->match_len == 0) continue;
    uint8_t b = (uint8_t)a->match[0];
    if (!set->bucket[b]) set->bucket[b] = g_array_new(FALSE, FALSE, sizeof(int));
    /* insert keeping longest first (ties: earlier token first) */
    GArray *arr = set->bucket[b];
    guint k = 0;
    while (k < arr->len && t->added[g_array_index(arr, int, k)].match_len >= a->match_len) k++;
    g_array_insert_val(arr, k, i);
    set->any = TRUE;
  }
}

static gboolean parse_added(LmwbTokenizer *t, JsonNode *n, const char *src, GError **error) {
  if (node_is_null(n)) return TRUE;
  if (!JSON_NODE_HOLDS_ARRAY(n)) {
    field_error(error, src, "added_tokens", "expected an array");
    return FALSE;
  }
  JsonArray *a = json_node_get_array(n);
  guint len = json_array_get_length(a);
  t->added = g_new0(AddedToken, len);
  for (guint i = 0; i < len; i++) {
    char *path = g_strdup_printf("added_tokens[%u]", i);
    JsonNode *e = json_array_get_element(a, i);
    gboolean ok = FALSE;
    if (!e || !JSON_NODE_HOLDS_OBJECT(e)) field_error(error, src, path, "expected an object");
    else {
      JsonObject *o = json_node_get_object(e);
      AddedToken tk = {0};
      const char *content;
      gint64 id;
      gboolean special;
      if (get_int(o, "id", 0, LMWB_TOKENIZER_MAX_ID - 1, 0, TRUE, &id, src, path, error) &&
          get_string(o, "content", TRUE, &content, src, path, error) &&
          get_bool(o, "special", FALSE, &special, src, path, error) &&
          get_bool(o, "single_word", FALSE, &tk.single_word, src, path, error) &&
          get_bool(o, "lstrip", FALSE, &tk.lstrip, src, path, error) &&
          get_bool(o, "rstrip", FALSE, &tk.rstrip, src, path, error) &&
          get_bool(o, "normalized", !special, &tk.normalized, src, path, error)) {
        if (!*content) {
          char *f = g_strdup_printf("%s.content", path);
          field_error(error, src, f, "empty token");
          g_free(f);
        } else if (g_hash_table_contains(t->added_by_id, GINT_TO_POINTER((int)id))) {
          char *f = g_strdup_printf("%s.id", path);
          field_error(error, src, f, "duplicate added-token id %" G_GINT64_FORMAT, id);
          g_free(f);
        } else {
          tk.special = special;
          tk.id = (int32_t)id;
          tk.content = g_strdup(content);
          tk.len = strlen(content);
          t->added[t->n_added] = tk;
          g_hash_table_insert(t->added_by_id, GINT_TO_POINTER(tk.id), GINT_TO_POINTER(t->n_added + 1));
          if (!g_hash_table_contains(t->added_by_content, t->added[t->n_added].content))
            g_hash_table_insert(t->added_by_content, t->added[t->n_added].content, GINT_TO_POINTER(t->n_added + 1));
          t->n_added++;
          ok = TRUE;
        }
      }
    }
    g_free(path);
    if (!ok) return FALSE;
  }
  return TRUE;
}

static int32_t find_named(const LmwbTokenizer *t, const char *const *names) {
  for (int i = 0; names[i]; i++) {
    int32_t id = lmwb_tokenizer_token_id(t, names[i]);
    if (id >= 0) return id;
  }
  return -1;
}

static void finish(LmwbTokenizer *t) {
  for (int i = 0; i < t->n_added; i++) {
    AddedToken *a = &t->added[i];
    if (a->normalized && t->norm->len > 0) {
      GString *g = normalize(t, a->content, a->len);
      a->match_len = g->len;
      a->match = g_string_free(g, FALSE);
    } else {
      a->match = g_strdup(a->content);
      a->match_len = a->len;
    }
  }
  added_set_build(t, &t->raw_set, FALSE);
  added_set_build(t, &t->norm_set, TRUE);
  int32_t n = t->vocab_n;
  for (int i = 0; i < t->n_added; i++)
    if (t->added[i].id + 1 > n) n = t->added[i].id + 1;
  t->n_total = n;
  t->has_decoder = t->dec->len > 0;

  static const char *const bos_names[] = {"<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>", NULL};
  static const char *const eos_names[] = {"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>", "<|im_end|>", NULL};
  if (t->tmpl && t->tmpl->len > 0 && g_array_index(t->tmpl, int32_t, 0) >= 0) t->bos = g_array_index(t->tmpl, int32_t, 0);
  else t->bos = find_named(t, bos_names);
  t->eos = find_named(t, eos_names);

  /* Name the pipeline. */
  const PreStep *p0 = t->pre->len > 0 ? &g_array_index(t->pre, PreStep, 0) : NULL;
  const PreStep *p1 = t->pre->len > 1 ? &g_array_index(t->pre, PreStep, 1) : NULL;
  gboolean sp_norm = FALSE;
  for (guint i = 0; i < t->norm->len; i++)
    if (g_array_index(t->norm, NormStep, i).kind == NORM_PREPEND) sp_norm = TRUE;
  const char *kind = "bpe";
  if (t->pre->len == 1 && p0->kind == PRE_BYTELEVEL && p0->use_regex) kind = "bpe-bytelevel-gpt2";
  else if (t->pre->len == 2 && p0->kind == PRE_SPLIT && p1->kind == PRE_BYTELEVEL && !p1->use_regex)
    kind = p0->split == LMWB_SPLIT_LLAMA3 ? "bpe-bytelevel-llama3"
           : p0->split == LMWB_SPLIT_QWEN2 ? "bpe-bytelevel-qwen2"
                                           : "bpe";
  else if ((t->pre->len == 0 && sp_norm) || (t->pre->len == 1 && p0->kind == PRE_METASPACE))
    kind = "bpe-sentencepiece";
  if (!t->kind) t->kind = g_strdup(kind);
}

static gboolean check_pipeline(LmwbTokenizer *t, const char *src, GError **error) {
  for (guint i = 0; i + 1 < t->pre->len; i++)
    if (g_array_index(t->pre, PreStep, i).kind == PRE_BYTELEVEL) {
      field_error(error, src, "pre_tokenizer", "ByteLevel must be the last pre-tokenizer of a Sequence");
      return FALSE;
    }
  return TRUE;
}

static LmwbTokenizer *load_root(JsonNode *root, const char *src, GError **error) {
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(error, "%s: the top level is not a JSON object", src);
    return NULL;
  }
  JsonObject *o = json_node_get_object(root);
  LmwbTokenizer *t = tok_new();
  if (!parse_model(t, member(o, "model"), src, error) || !parse_added(t, member(o, "added_tokens"), src, error) ||
      !parse_normalizer(t, member(o, "normalizer"), src, "normalizer", error) ||
      !parse_pretok(t, member(o, "pre_tokenizer"), src, "pre_tokenizer", error) ||
      !parse_post(t, member(o, "post_processor"), src, "post_processor", error) ||
      !parse_decoder(t, member(o, "decoder"), src, "decoder", error) || !check_pipeline(t, src, error)) {
    lmwb_tokenizer_free(t);
    return NULL;
  }
  finish(t);
  return t;
}

/* Large multilingual tokenizer.json files are tens of MB. */
#define MAX_TOKENIZER_FILE_BYTES ((uint64_t)256 << 20)

static LmwbTokenizer *load_data(const char *data, size_t len, const char *src, GError **error) {
  JsonNode *root = lmwb_json_parse(data, len, src, error);
  if (!root) return NULL;
  LmwbTokenizer *t = load_root(root, src, error);
  json_node_unref(root);
  return t;
}

LmwbTokenizer *lmwb_tokenizer_load_json_data(const char *data, size_t len, GError **error) {
  if (!data) {
    lmwb_input_error(error, "tokenizer.json data: none given");
    return NULL;
  }
  return load_data(data, len, "tokenizer.json data", error);
}

static char *read_file(const char *path, size_t *len, GError **error) {
  return lmwb_file_read(path, MAX_TOKENIZER_FILE_BYTES, LMWB_READ_REGULAR, len, error);
}

LmwbTokenizer *lmwb_tokenizer_load_json(const char *path, GError **error) {
  size_t len;
  char *data = read_file(path, &len, error);
  if (!data) return NULL;
  LmwbTokenizer *t = load_data(data, len, path, error);
  g_free(data);
  return t;
}

LmwbTokenizer *lmwb_tokenizer_load_gpt2_pair(const char *vocab_json, const char *merges_txt, GError **error) {
  size_t vlen, mlen;
  char *vdata = read_file(vocab_json, &vlen, error);
  if (!vdata) return NULL;
  char *mdata = read_file(merges_txt, &mlen, error);
  if (!mdata) {
    g_free(vdata);
    return NULL;
  }
  LmwbTokenizer *t = NULL;
  JsonNode *root = lmwb_json_parse(vdata, vlen, vocab_json, error);
  if (!root) goto out;
  /* Reuse the tokenizer.json model parser on {"type": "BPE", "vocab": <vocab.json>, "merges": [...]}. */
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(error, "%s: expected a JSON object mapping tokens to ids", vocab_json);
    goto out;
  }
  JsonArray *merges = json_array_new();
  char **lines = g_strsplit(mdata, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    char *l = g_strchomp(lines[i]);
    if (i == 0 && g_str_has_prefix(l, "#version")) continue;
    if (!*l) continue;
    json_array_add_string_element(merges, l);
  }
  g_strfreev(lines);
  JsonObject *model = json_object_new();
  json_object_set_string_member(model, "type", "BPE");
  json_object_set_member(model, "vocab", json_node_copy(root));
  json_object_set_array_member(model, "merges", merges);
  JsonNode *mnode = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(mnode, model);
  t = tok_new();
  GError *e = NULL;
  if (!parse_model(t, mnode, vocab_json, &e)) {
    /* Point merge errors at merges.txt (line numbers are index + 2 after "#version"). */
    lmwb_input_error(error, "%s (with %s): %s", merges_txt, vocab_json, e->message);
    g_error_free(e);
    lmwb_tokenizer_free(t);
    t = NULL;
    json_node_unref(mnode);
    goto out;
  }
  json_node_unref(mnode);
  PreStep ps = {.kind = PRE_BYTELEVEL, .use_regex = TRUE};
  g_array_append_val(t->pre, ps);
  DecStep ds = {.kind = DEC_BYTELEVEL};
  g_array_append_val(t->dec, ds);
  int32_t eot = vocab_get(t, "<|endoftext|>");
  if (eot >= 0) {
    t->added = g_new0(AddedToken, 1);
    t->added[0] = (AddedToken){.content = g_strdup("<|endoftext|>"), .len = 13, .id = eot, .special = TRUE};
    t->n_added = 1;
    g_hash_table_insert(t->added_by_id, GINT_TO_POINTER(eot), GINT_TO_POINTER(1));
    g_hash_table_insert(t->added_by_content, t->added[0].content, GINT_TO_POINTER(1));
  }
  t->kind = g_strdup("bpe-bytelevel-legacy-pair");
  finish(t);
out:
  if (root) json_node_unref(root);
  g_free(vdata);
  g_free(mdata);
  return t;
}

/* bos_token / eos_token in tokenizer_config.json: a string or {"content": string}. */
static void apply_config(LmwbTokenizer *t, const char *dir) {
  char *path = g_build_filename(dir, "tokenizer_config.json", NULL);
  /* Optional: a file that cannot be read or parsed is ignored, as before. */
  JsonNode *root = g_file_test(path, G_FILE_TEST_EXISTS) ? lmwb_json_load_file(path, MAX_TOKENIZER_FILE_BYTES, NULL) : NULL;
  if (root) {
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
    const char *keys[2] = {"bos_token", "eos_token"};
    for (int k = 0; k < 2 && o; k++) {
      JsonNode *n = member(o, keys[k]);
      const char *s = node_string(n);
      if (!s && n && JSON_NODE_HOLDS_OBJECT(n)) s = node_string(member(json_node_get_object(n), "content"));
      int32_t id = s ? lmwb_tokenizer_token_id(t, s) : -1;
      if (id >= 0) *(k == 0 ? &t->bos : &t->eos) = id;
    }
    json_node_unref(root);
  }
  g_free(path);
}

LmwbTokenizer *lmwb_tokenizer_load_dir(const char *dir, GError **error) {
  char *tj = g_build_filename(dir, "tokenizer.json", NULL);
  char *vj = g_build_filename(dir, "vocab.json", NULL);
  char *mt = g_build_filename(dir, "merges.txt", NULL);
  LmwbTokenizer *t = NULL;
  if (g_file_test(tj, G_FILE_TEST_EXISTS)) t = lmwb_tokenizer_load_json(tj, error);
  else if (g_file_test(vj, G_FILE_TEST_EXISTS) && g_file_test(mt, G_FILE_TEST_EXISTS))
    t = lmwb_tokenizer_load_gpt2_pair(vj, mt, error);
  else
    lmwb_input_error(error, "%s: no tokenizer found (expected tokenizer.json, or vocab.json + merges.txt)", dir);
  if (t) apply_config(t, dir);
  g_free(tj);
  g_free(vj);
  g_free(mt);
  return t;
}
