/* Built-in tasks (IOI, greater-than, gendered pronouns) from the model folder's world or GPT-2
 * style lists (circuits/edge_tasks.h). */
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/core/rng.h"
#include "app/formats/json_input.h"
#include "app/formats/tokenizer.h"
#include "circuits/edge_tasks.h"
#include <stdarg.h>
#include <string.h>

/* GPT-2 style lists (ACDC / Edge-Pruning's IOI; Mathwin et al.'s gendered pronouns). */
static const char *const ioi_templates[] = {
  "Then, {A} and {B} went to the {P}. {S} gave a {O} to",
  "When {A} and {B} got a {O} at the {P}, {S} decided to give it to",
  "Then, {A} and {B} were working at the {P}. {S} decided to give a {O} to",
  "While {A} and {B} were commuting to the {P}, {S} gave a {O} to",
  "After the lunch, {A} and {B} went to the {P}. {S} gave a {O} to",
  "Afterwards, {A} and {B} went to the {P}. {S} gave a {O} to",
  "When {A} and {B} arrived at the {P}, {S} gave a {O} to",
  "Friends {A} and {B} found a {O} at the {P}. {S} gave it to",
  NULL};
static const char *const names_plain[] = {"Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Lisa", "Michael",
                                          "Anna", "Paul", "Kate", "Mark", "Sarah", "David", "Laura", "Peter", "Emma", "Jack",
                                          NULL};
static const char *const places_plain[] = {"store", "garden", "restaurant", "school", "hospital", "office", "house",
                                           "station", NULL};
static const char *const objects_plain[] = {"ring", "kiss", "bone", "basketball", "computer", "necklace", "drink",
                                            "snack", NULL};
static const char *const gt_templates[] = {"The {E} lasted from the year {Y} to the year {X}", NULL};
static const char *const events_plain[] = {"war", "drought", "famine", "siege", "reign", "truce", "expedition", "plague",
                                           "strike", "rebellion", NULL};
static const char *const gp_templates[] = {"So {N} is such a good cook, isn't", "So {N} always remembers birthdays, doesn't",
                                           "Then {N} said that", "Because {N} was late,", NULL};
static const char *const male_names[] = {"John", "David", "Michael", "James", "Robert", "Paul", "Mark", "George",
                                         "Thomas", "Richard", "Peter", "Daniel", "Jack", "Tom", "Henry", "Frank", NULL};
static const char *const female_names[] = {"Mary", "Sarah", "Anna", "Lisa", "Emma", "Laura", "Kate", "Susan", "Linda",
                                           "Helen", "Alice", "Jane", "Ruth", "Betty", "Nancy", "Karen", NULL};

typedef struct {
  const LmwbTokenizer *tok;
  guint64 rng;
  GPtrArray *templates, *names, *places, *objects, *events, *countries; /* of char* (owned) */
} Gen;

static void gen_clear(Gen *g) {
  GPtrArray **all[] = {&g->templates, &g->names, &g->places, &g->objects, &g->events, &g->countries};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) g_clear_pointer(all[i], g_ptr_array_unref);
}

static GPtrArray *list_of(const char *const *items) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  for (; *items; items++) g_ptr_array_add(a, g_strdup(*items));
  return a;
}

/* Strings of a JSON array member path "a" in object o (missing: NULL). */
static GPtrArray *json_list(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  if (!n || !JSON_NODE_HOLDS_ARRAY(n)) return NULL;
  JsonArray *a = json_node_get_array(n);
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING)
      g_ptr_array_add(out, g_strdup(json_node_get_string(e)));
  }
  if (out->len == 0) g_clear_pointer(&out, g_ptr_array_unref);
  return out;
}

static JsonObject *member_object(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

/* IOI templates of the world cut before the indirect object ("... gave a {O} to {IO}." -> "... to"). */
static void add_cut_templates(GPtrArray *out, GPtrArray *in) {
  for (guint i = 0; in && i < in->len; i++) {
    const char *t = in->pdata[i], *io = strstr(t, " {IO}");
    if (io) g_ptr_array_add(out, g_strndup(t, (gsize)(io - t)));
    else if (g_str_has_suffix(t, " to")) g_ptr_array_add(out, g_strdup(t));
  }
}

/* The world's lists when the model folder has a world.json (the built-in model). */
static void load_world(Gen *g, const LmwbModel *m, LmwbEdgeTaskKind kind) {
  if (!m->dir) return;
  g_autofree char *path = g_build_filename(m->dir, "world.json", NULL);
  if (!g_file_test(path, G_FILE_TEST_IS_REGULAR)) return;
  g_autoptr(GError) err = NULL;
  JsonNode *root = lmwb_json_load_file(path, (uint64_t)64 << 20, &err);
  if (!root) return; /* not a world: the built-in lists */
  JsonObject *w = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonObject *ioi = member_object(w, "ioi"), *gt = member_object(w, "greater_than");
  if (kind == LMWB_EDGE_TASK_IOI && ioi) {
    GPtrArray *t = g_ptr_array_new_with_free_func(g_free), *held = json_list(ioi, "heldout_templates"),
              *train = json_list(ioi, "train_templates"), *names = json_list(ioi, "train_names"),
              *places = json_list(ioi, "places"), *objects = json_list(ioi, "objects");
    add_cut_templates(t, held);
    add_cut_templates(t, train);
    if (t->len && names && places && objects) {
      gen_clear(g);
      g->templates = g_ptr_array_ref(t);
      g->names = g_ptr_array_ref(names);
      g->places = g_ptr_array_ref(places);
      g->objects = g_ptr_array_ref(objects);
    }
    GPtrArray *all[] = {t, held, train, names, places, objects};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
      if (all[i]) g_ptr_array_unref(all[i]);
  } else if (kind == LMWB_EDGE_TASK_GT && gt) {
    GPtrArray *held = json_list(gt, "heldout_templates"), *events = json_list(gt, "events");
    JsonObject *ent = member_object(w, "entities");
    GPtrArray *countries = json_list(ent, "countries");
    if (held && events) {
      /* "... from the year {Y1} to the year {Y2}." -> "... from the year {Y} to the year {X}" */
      GPtrArray *t = g_ptr_array_new_with_free_func(g_free);
      for (guint i = 0; i < held->len; i++) {
        const char *s = held->pdata[i], *y2 = strstr(s, "{Y2}");
        if (!y2 || !strstr(s, "{Y1}")) continue;
        g_autofree char *head = g_strndup(s, (gsize)(y2 - s));
        g_auto(GStrv) parts = g_strsplit(head, "{Y1}", 2);
        g_ptr_array_add(t, g_strconcat(parts[0], "{Y}", parts[1] ? parts[1] : "", "{X}", NULL));
      }
      if (t->len) {
        g_clear_pointer(&g->templates, g_ptr_array_unref);
        g_clear_pointer(&g->events, g_ptr_array_unref);
        g->templates = g_ptr_array_ref(t);
        g->events = g_ptr_array_ref(events);
        if (countries) g->countries = g_ptr_array_ref(countries);
      }
      g_ptr_array_unref(t);
    }
    if (held) g_ptr_array_unref(held);
    if (events) g_ptr_array_unref(events);
    if (countries) g_ptr_array_unref(countries);
  }
  json_node_unref(root);
}

static int32_t *encode(const Gen *g, const char *text, size_t *n, GError **error) {
  return lmwb_tokenizer_encode(g->tok, text, strlen(text), FALSE, n, error);
}

/* The single token of " word", or -1. */
static int32_t one_token(const Gen *g, const char *word) {
  g_autofree char *sp = g_strconcat(" ", word, NULL);
  size_t n = 0;
  g_autofree int32_t *ids = encode(g, sp, &n, NULL);
  return ids && n == 1 ? ids[0] : -1;
}

/* Only the names that are one token. */
static GPtrArray *one_token_names(const Gen *g, GPtrArray *names) {
  GPtrArray *out = g_ptr_array_new();
  for (guint i = 0; names && i < names->len; i++)
    if (one_token(g, names->pdata[i]) >= 0) g_ptr_array_add(out, names->pdata[i]);
  return out;
}

static const char *pick(Gen *g, GPtrArray *a) {
  return a->pdata[lmwb_splitmix64(&g->rng) % a->len];
}

/* Template with {KEY} replaced: keys and values given in pairs, NULL-terminated. */
static char *fill(const char *tmpl, ...) {
  GString *s = g_string_new(tmpl);
  va_list ap;
  va_start(ap, tmpl);
  for (const char *key; (key = va_arg(ap, const char *));) {
    const char *val = va_arg(ap, const char *);
    g_string_replace(s, key, val, 0);
  }
  va_end(ap);
  return g_string_free(s, FALSE);
}

/* Encodes clean and corrupted texts into example e; FALSE when their lengths differ. */
static gboolean set_pair(Gen *g, LmwbEdgeExample *e, const char *clean, const char *corrupt, GError **error) {
  size_t n1 = 0, n2 = 0;
  int32_t *a = encode(g, clean, &n1, error), *b = a ? encode(g, corrupt, &n2, error) : NULL;
  if (!b || n1 != n2 || n1 == 0) {
    g_free(a);
    g_free(b);
    return FALSE;
  }
  e->clean = a;
  e->corrupt = b;
  e->len = (int)n1;
  return TRUE;
}

static gboolean gen_ioi(Gen *g, LmwbEdgeTask *t, GError **error) {
  g_autoptr(GPtrArray) names = one_token_names(g, g->names);
  if (names->len < 5) {
    lmwb_input_error(error, "ioi: the tokenizer has %u of the task's names as one token; 5 are needed", names->len);
    return FALSE;
  }
  for (int i = 0, tries = 0; i < t->n; tries++) {
    if (tries > 100 * t->n + 1000) {
      lmwb_input_error(error, "ioi: the templates do not tokenize to equal lengths with these names");
      return FALSE;
    }
    const char *n5[5];
    for (int k = 0; k < 5; k++) { /* five distinct names: A, B and three for the corruption */
      n5[k] = pick(g, names);
      for (int j = 0; j < k; j++)
        if (n5[j] == n5[k]) k--, j = k;
    }
    const char *tmpl = pick(g, g->templates), *P = pick(g, g->places), *O = pick(g, g->objects);
    bool abba = i % 2 == 0; /* S is B (ABBA) or A (BABA); the answer is the other one */
    const char *A = n5[0], *Bn = n5[1], *S = abba ? Bn : A, *IO = abba ? A : Bn;
    g_autofree char *clean = fill(tmpl, "{A}", A, "{B}", Bn, "{S}", S, "{P}", P, "{O}", O, NULL);
    g_autofree char *corrupt = fill(tmpl, "{A}", n5[2], "{B}", n5[3], "{S}", n5[4], "{P}", P, "{O}", O, NULL);
    LmwbEdgeExample *e = &t->ex[i];
    if (!set_pair(g, e, clean, corrupt, NULL)) continue;
    e->answer = one_token(g, IO);
    e->wrong = one_token(g, S);
    i++;
  }
  return TRUE;
}

static gboolean gen_gp(Gen *g, LmwbEdgeTask *t, GError **error) {
  g_autoptr(GPtrArray) ml = list_of(male_names), fl = list_of(female_names);
  g_autoptr(GPtrArray) male = one_token_names(g, ml), female = one_token_names(g, fl);
  int32_t he = one_token(g, "he"), she = one_token(g, "she");
  if (male->len < 1 || female->len < 1 || he < 0 || she < 0) {
    lmwb_input_error(error, "gp: the tokenizer lacks one-token \" he\" / \" she\" or one-token names of each gender");
    return FALSE;
  }
  for (int i = 0, tries = 0; i < t->n; tries++) {
    if (tries > 100 * t->n + 1000) {
      lmwb_input_error(error, "gp: the templates do not tokenize to equal lengths with these names");
      return FALSE;
    }
    bool is_male = i % 2 == 0;
    const char *name = pick(g, is_male ? male : female), *other = pick(g, is_male ? female : male);
    const char *tmpl = gp_templates[lmwb_splitmix64(&g->rng) % (G_N_ELEMENTS(gp_templates) - 1)];
    g_autofree char *clean = fill(tmpl, "{N}", name, NULL), *corrupt = fill(tmpl, "{N}", other, NULL);
    LmwbEdgeExample *e = &t->ex[i];
    if (!set_pair(g, e, clean, corrupt, NULL)) continue;
    e->answer = is_male ? he : she;
    e->wrong = is_male ? she : he;
    i++;
  }
  return TRUE;
}

/* Year tokens: "00".."99" when each is one token, else the digits. */
static gboolean year_tokens(Gen *g, LmwbEdgeTask *t) {
  bool two = true;
  for (int y = 0; y < 100 && two; y++) {
    char s[3] = {(char)('0' + y / 10), (char)('0' + y % 10), 0};
    t->year_tok[y] = lmwb_tokenizer_token_id(g->tok, s);
    two = t->year_tok[y] >= 0;
  }
  if (two) return t->n_years = 100, TRUE;
  for (int d = 0; d < 10; d++) {
    char s[2] = {(char)('0' + d), 0};
    if ((t->year_tok[d] = lmwb_tokenizer_token_id(g->tok, s)) < 0) return FALSE;
  }
  t->n_years = 10;
  return TRUE;
}

static gboolean gen_gt(Gen *g, LmwbEdgeTask *t, GError **error) {
  if (!year_tokens(g, t)) {
    lmwb_input_error(error, "gt: the tokenizer has neither every two-digit year nor every digit as one token");
    return FALSE;
  }
  for (int i = 0, tries = 0; i < t->n; tries++) {
    if (tries > 100 * t->n + 1000) {
      lmwb_input_error(error, "gt: the templates do not tokenize to equal lengths");
      return FALSE;
    }
    int xx = 11 + (int)(lmwb_splitmix64(&g->rng) % 7); /* 11..17 */
    /* YY in 02..98 (paper); with digit years its tens digit in 1..8 so that both sides exist */
    int yy = t->n_years == 100 ? 2 + (int)(lmwb_splitmix64(&g->rng) % 97) : 10 + (int)(lmwb_splitmix64(&g->rng) % 80);
    char y[8], yc[8], c[4];
    g_snprintf(y, sizeof y, "%02d%02d", xx, yy);
    g_snprintf(yc, sizeof yc, "%02d01", xx);
    g_snprintf(c, sizeof c, "%02d", xx);
    const char *tmpl = pick(g, g->templates), *E = pick(g, g->events), *C = g->countries ? pick(g, g->countries) : "";
    g_autofree char *clean = fill(tmpl, "{E}", E, "{C}", C, "{Y}", y, "{X}", c, NULL);
    g_autofree char *corrupt = fill(tmpl, "{E}", E, "{C}", C, "{Y}", yc, "{X}", c, NULL);
    LmwbEdgeExample *e = &t->ex[i];
    if (!set_pair(g, e, clean, corrupt, NULL)) continue;
    e->answer = e->wrong = -1;
    e->threshold = t->n_years == 100 ? yy : yy / 10;
    i++;
  }
  return TRUE;
}

static LmwbEdgeTask *generate(LmwbEdgeTaskKind kind, const char *name, const LmwbModel *m, int n, guint64 seed,
                              GError **error) {
  Gen g = {.tok = m->tokenizer, .rng = seed * 0x9E3779B97F4A7C15ull + 1};
  g.templates = list_of(kind == LMWB_EDGE_TASK_IOI ? ioi_templates : gt_templates);
  g.names = list_of(names_plain);
  g.places = list_of(places_plain);
  g.objects = list_of(objects_plain);
  g.events = list_of(events_plain);
  load_world(&g, m, kind);
  LmwbEdgeTask *t = g_new0(LmwbEdgeTask, 1);
  t->kind = kind;
  t->name = g_strdup(name);
  t->n = n > 0 ? n : 64;
  t->ex = g_new0(LmwbEdgeExample, t->n);
  gboolean ok = kind == LMWB_EDGE_TASK_IOI ? gen_ioi(&g, t, error)
                : kind == LMWB_EDGE_TASK_GT ? gen_gt(&g, t, error)
                                            : gen_gp(&g, t, error);
  gen_clear(&g);
  int V = m->cfg.vocab_size;
  for (int i = 0; ok && i < t->n; i++) /* a tokenizer larger than the model's vocabulary */
    if (t->ex[i].answer >= V || t->ex[i].wrong >= V) {
      lmwb_input_error(error, "%s: an answer token is beyond the model's vocabulary of %d", name, V);
      ok = FALSE;
    }
  for (int y = 0; ok && y < t->n_years; y++)
    if (t->year_tok[y] >= V) {
      lmwb_input_error(error, "%s: a year token is beyond the model's vocabulary of %d", name, V);
      ok = FALSE;
    }
  if (!ok) g_clear_pointer(&t, lmwb_edge_task_free);
  return t;
}

LmwbEdgeTask *lmwb_edge_task_open(const char *spec, const LmwbModel *m, int n, guint64 seed, GError **error) {
  if (!m->tokenizer) {
    lmwb_input_error(error, "task %s: the model has no tokenizer", spec);
    return NULL;
  }
  if (n < 0 || n > LMWB_EDGE_TASK_MAX_EXAMPLES) {
    lmwb_input_error(error, "task %s: %d examples is not in 0..%d", spec, n, LMWB_EDGE_TASK_MAX_EXAMPLES);
    return NULL;
  }
  if (!strcmp(spec, "ioi")) return generate(LMWB_EDGE_TASK_IOI, spec, m, n, seed, error);
  if (!strcmp(spec, "gt")) return generate(LMWB_EDGE_TASK_GT, spec, m, n, seed, error);
  if (!strcmp(spec, "gp")) return generate(LMWB_EDGE_TASK_GP, spec, m, n, seed, error);
  size_t len = 0;
  g_autofree char *text = lmwb_file_read(spec, LMWB_EDGE_TASK_FILE_MAX_BYTES, LMWB_READ_REGULAR, &len, error);
  if (!text) return NULL;
  LmwbEdgeTask *t = lmwb_edge_task_parse_jsonl(text, len, spec, m, error);
  for (; t && n > 0 && t->n > n; t->n--) { /* the first n */
    g_free(t->ex[t->n - 1].clean);
    g_free(t->ex[t->n - 1].corrupt);
  }
  return t;
}

void lmwb_edge_task_free(LmwbEdgeTask *t) {
  if (!t) return;
  for (int i = 0; i < t->n; i++) {
    g_free(t->ex[i].clean);
    g_free(t->ex[i].corrupt);
  }
  g_free(t->ex);
  g_free(t->name);
  g_free(t);
}

int lmwb_edge_task_max_len(const LmwbEdgeTask *t) {
  int mx = 0;
  for (int i = 0; i < t->n; i++) mx = MAX(mx, t->ex[i].len);
  return mx;
}
