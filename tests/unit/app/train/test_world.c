/* Tests of the generated world (app/train/world.c) and the training corpus (app/train/corpus.c):
 * determinism, manifest counts, held-out items never in train.txt, Brown split disjointness,
 * and input errors. The real Brown file ($LMWB_SHARED/data/brown/brown.txt) is used when
 * present; a committed fixture (tests/fixtures/train/brown_tiny.txt) covers the rest. */
#include "app/core/errors.h"
#include "app/train/corpus.h"
#include "app/train/world.h"
#include <glib/gstdio.h>
#include <string.h>

static char *fixture_path(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  return g_build_filename(root ? root : ".", "tests", "fixtures", "train", "brown_tiny.txt", NULL);
}

static char *real_brown_path(void) {
  const char *shared = g_getenv("LMWB_SHARED");
  if (!shared) return NULL;
  char *p = g_build_filename(shared, "data", "brown", "brown.txt", NULL);
  if (!g_file_test(p, G_FILE_TEST_IS_REGULAR)) {
    g_free(p);
    return NULL;
  }
  return p;
}

static char *read_all(const char *dir, const char *name, gsize *len) {
  char *path = g_build_filename(dir, name, NULL);
  char *data = NULL;
  g_assert_true(g_file_get_contents(path, &data, len, NULL));
  g_free(path);
  return data;
}

static void rm_tree(const char *dir) {
  const char *names[] = {LMWB_CORPUS_TRAIN_FILE, LMWB_CORPUS_VALID_FILE, LMWB_CORPUS_WARMUP_FILE,
                         LMWB_CORPUS_IOI_FILE, LMWB_CORPUS_FACTS_FILE, LMWB_CORPUS_BROWN_TRAIN_FILE,
                         LMWB_CORPUS_MANIFEST_FILE};
  for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
    char *p = g_build_filename(dir, names[i], NULL);
    g_unlink(p);
    g_free(p);
  }
  g_rmdir(dir);
}

static char *make(const char *brown, guint64 seed, int repeats) {
  char *dir = g_dir_make_tmp("lmwb-world-XXXXXX", NULL);
  g_assert_nonnull(dir);
  LmwbCorpusOptions o = {.seed = seed, .brown_path = brown, .out_dir = dir, .world_repeats = repeats};
  GError *err = NULL;
  gboolean ok = lmwb_make_corpus(&o, NULL, &err);
  g_assert_no_error(err);
  g_assert_true(ok);
  return dir;
}

static JsonObject *load_manifest(const char *dir, JsonParser **parser) {
  char *path = g_build_filename(dir, LMWB_CORPUS_MANIFEST_FILE, NULL);
  *parser = json_parser_new();
  GError *err = NULL;
  g_assert_true(json_parser_load_from_file(*parser, path, &err));
  g_assert_no_error(err);
  g_free(path);
  return json_node_get_object(json_parser_get_root(*parser));
}

/* ---- PRNG ---- */

static void test_rng(void) {
  LmwbWorldRng r;
  lmwb_world_rng_init(&r, 0);
  /* splitmix64 reference: the first output for seed 0 (Vigna's splitmix64.c). */
  g_assert_cmphex(r.s[0], ==, 0xE220A8397B1DCDAFull);
  /* below() stays in range and hits every value. */
  gboolean seen[7] = {0};
  for (int i = 0; i < 1000; i++) {
    guint64 v = lmwb_world_rng_below(&r, 7);
    g_assert_cmpuint(v, <, 7);
    seen[v] = TRUE;
  }
  for (int i = 0; i < 7; i++) g_assert_true(seen[i]);
  /* shuffle is a permutation */
  gpointer a[50];
  for (guint i = 0; i < 50; i++) a[i] = GUINT_TO_POINTER(i + 1);
  lmwb_world_rng_shuffle(&r, a, 50);
  guint sum = 0, moved = 0;
  for (guint i = 0; i < 50; i++) {
    sum += GPOINTER_TO_UINT(a[i]);
    moved += GPOINTER_TO_UINT(a[i]) != i + 1;
  }
  g_assert_cmpuint(sum, ==, 50 * 51 / 2);
  g_assert_cmpuint(moved, >, 30);
}

/* ---- the world alone ---- */

static char *manifest_string(LmwbWorld *w) {
  JsonNode *n = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(n, lmwb_world_manifest(w));
  char *s = json_to_string(n, FALSE);
  json_node_unref(n);
  return s;
}

static void test_world_determinism(void) {
  LmwbWorld *a = lmwb_world_generate(42, 1, NULL, NULL);
  LmwbWorld *b = lmwb_world_generate(42, 1, NULL, NULL);
  LmwbWorld *c = lmwb_world_generate(43, 1, NULL, NULL);
  g_assert_nonnull(a);
  g_assert_nonnull(b);
  g_assert_nonnull(c);
  GPtrArray *la = lmwb_world_train_lines(a), *lb = lmwb_world_train_lines(b),
            *lc = lmwb_world_train_lines(c);
  g_assert_cmpuint(la->len, ==, lb->len);
  for (guint i = 0; i < la->len; i++)
    g_assert_cmpstr(g_ptr_array_index(la, i), ==, g_ptr_array_index(lb, i));
  char *ma = manifest_string(a), *mb = manifest_string(b), *mc = manifest_string(c);
  g_assert_cmpstr(ma, ==, mb);
  g_assert_cmpstr(ma, !=, mc);
  guint same = 0;
  for (guint i = 0; i < MIN(la->len, lc->len); i++)
    same += strcmp(g_ptr_array_index(la, i), g_ptr_array_index(lc, i)) == 0;
  g_assert_cmpuint(same, <, la->len / 2);

  /* repeats scales the text but changes no entity or evaluation item. */
  LmwbWorld *d = lmwb_world_generate(42, 2, NULL, NULL);
  g_assert_nonnull(d);
  JsonObject *oa = lmwb_world_manifest(a), *od = lmwb_world_manifest(d);
  const char *keys[] = {"entities", "facts", "ioi", "greater_than"};
  for (guint k = 0; k < G_N_ELEMENTS(keys); k++) {
    JsonArray *ea = NULL, *ed = NULL;
    if (!strcmp(keys[k], "facts")) {
      ea = json_object_get_array_member(oa, "facts");
      ed = json_object_get_array_member(od, "facts");
    } else if (!strcmp(keys[k], "entities")) {
      ea = json_object_get_array_member(json_object_get_object_member(oa, "entities"), "persons");
      ed = json_object_get_array_member(json_object_get_object_member(od, "entities"), "persons");
    } else {
      ea = json_object_get_array_member(json_object_get_object_member(oa, keys[k]), "eval");
      ed = json_object_get_array_member(json_object_get_object_member(od, keys[k]), "eval");
    }
    JsonNode *na = json_node_new(JSON_NODE_ARRAY), *nd = json_node_new(JSON_NODE_ARRAY);
    json_node_set_array(na, ea);
    json_node_set_array(nd, ed);
    char *sa = json_to_string(na, FALSE), *sd = json_to_string(nd, FALSE);
    if (!strcmp(keys[k], "facts")) {
      /* facts carry train_mentions, which does scale: compare the eval prompts instead */
      JsonObject *f0 = json_array_get_object_element(ea, 0), *g0 = json_array_get_object_element(ed, 0);
      g_assert_cmpint(json_object_get_int_member(g0, "train_mentions"), ==,
                      2 * json_object_get_int_member(f0, "train_mentions"));
      g_assert_cmpuint(json_array_get_length(ea), ==, json_array_get_length(ed));
      for (guint f = 0; f < json_array_get_length(ea); f++) {
        JsonObject *fa = json_array_get_object_element(ea, f), *fd = json_array_get_object_element(ed, f);
        g_assert_cmpstr(json_object_get_string_member(fa, "subject"), ==, json_object_get_string_member(fd, "subject"));
        g_assert_cmpstr(json_object_get_string_member(fa, "object"), ==, json_object_get_string_member(fd, "object"));
      }
    } else {
      g_assert_cmpstr(sa, ==, sd);
    }
    g_free(sa);
    g_free(sd);
    json_node_unref(na);
    json_node_unref(nd);
  }
  g_assert_cmpuint(lmwb_world_train_lines(d)->len, ==, 2 * la->len);
  g_free(ma);
  g_free(mb);
  g_free(mc);
  lmwb_world_free(a);
  lmwb_world_free(b);
  lmwb_world_free(c);
  lmwb_world_free(d);
}

static gboolean in_array(JsonArray *a, const char *s) {
  for (guint i = 0; i < json_array_get_length(a); i++)
    if (!strcmp(json_array_get_string_element(a, i), s)) return TRUE;
  return FALSE;
}

/* IOI items draw both names from `names`, with different first letters. Two-name prompts name
 * the answer once and the wrong name (the subject) twice, "order" telling which comes first; a
 * copy prompt names only the answer. Returns the number of ABBA items. */
static guint check_ioi_items(JsonArray *items, JsonArray *names, gboolean copy) {
  guint abba = 0;
  for (guint i = 0; i < json_array_get_length(items); i++) {
    JsonObject *e = json_array_get_object_element(items, i);
    const char *c = json_object_get_string_member(e, "correct");
    const char *x = json_object_get_string_member(e, "wrong");
    const char *p = json_object_get_string_member(e, "prompt");
    g_assert_true(in_array(names, c + 1) && in_array(names, x + 1));
    g_assert_cmpint(c[1], !=, x[1]);
    const char *first_c = strstr(p, c + 1), *first_x = strstr(p, x + 1);
    g_assert_nonnull(first_c);
    g_assert_null(strstr(first_c + 1, c + 1));
    if (copy) {
      g_assert_null(first_x);
      g_assert_cmpstr(json_object_get_string_member(e, "order"), ==, "copy");
      continue;
    }
    const char *again = first_x ? strstr(first_x + 1, x + 1) : NULL;
    g_assert_nonnull(again);
    abba += first_c < first_x;
    g_assert_cmpstr(json_object_get_string_member(e, "order"), ==, first_c < first_x ? "ABBA" : "BABA");
  }
  return abba;
}

static void test_world_manifest(void) {
  LmwbWorld *w = lmwb_world_generate(7, 1, NULL, NULL);
  g_assert_nonnull(w);
  JsonObject *m = lmwb_world_manifest(w);

  JsonArray *facts = json_object_get_array_member(m, "facts");
  g_assert_cmpuint(json_array_get_length(facts), >=, 200);
  GHashTable *answers = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < json_array_get_length(facts); i++) {
    JsonObject *f = json_array_get_object_element(facts, i);
    g_assert_cmpuint(json_array_get_length(json_object_get_array_member(f, "train_templates")), >=, 6);
    JsonArray *ev = json_object_get_array_member(f, "eval");
    g_assert_cmpuint(json_array_get_length(ev), >=, 2);
    const char *obj = json_object_get_string_member(f, "object");
    const char *subj = json_object_get_string_member(f, "subject");
    for (guint k = 0; k < json_array_get_length(ev); k++) {
      JsonObject *e = json_array_get_object_element(ev, k);
      const char *prompt = json_object_get_string_member(e, "prompt");
      const char *answer = json_object_get_string_member(e, "answer");
      g_assert_true(answer[0] == ' ' && !strcmp(answer + 1, obj));
      g_assert_nonnull(strstr(prompt, subj));
      g_assert_false(g_str_has_suffix(prompt, " ")); /* the answer carries the space */
    }
    g_hash_table_add(answers, (gpointer)obj);
  }
  /* Subjects are unique per relation: two capitals for one country would make recall ill-posed. */
  g_hash_table_unref(answers);

  JsonObject *ioi = json_object_get_object_member(m, "ioi");
  JsonArray *tn = json_object_get_array_member(ioi, "train_names");
  JsonArray *hn = json_object_get_array_member(ioi, "heldout_names");
  g_assert_cmpuint(json_array_get_length(tn) + json_array_get_length(hn), >=, 100);
  g_assert_cmpuint(json_array_get_length(hn), >=, 20);
  for (guint i = 0; i < json_array_get_length(hn); i++)
    g_assert_false(in_array(tn, json_array_get_string_element(hn, i)));
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(ioi, "train_templates")), >=, 15);
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(ioi, "heldout_templates")), >=, 5);
  JsonArray *iev = json_object_get_array_member(ioi, "eval");
  g_assert_cmpuint(json_array_get_length(iev), >=, 200);
  guint abba = check_ioi_items(iev, hn, FALSE);
  g_assert_cmpuint(abba, >, json_array_get_length(iev) / 3);
  g_assert_cmpuint(abba, <, 2 * json_array_get_length(iev) / 3);
  /* Diagnostic sets: names from the set they claim. */
  JsonArray *diag = json_object_get_array_member(ioi, "diagnostics");
  g_assert_cmpuint(json_array_get_length(diag), ==, 4);
  for (guint k = 0; k < json_array_get_length(diag); k++) {
    JsonObject *d = json_array_get_object_element(diag, k);
    JsonArray *dev = json_object_get_array_member(d, "eval");
    g_assert_cmpuint(json_array_get_length(dev), >=, 100);
    check_ioi_items(dev, !strcmp(json_object_get_string_member(d, "names"), "train") ? tn : hn,
                    !strcmp(json_object_get_string_member(d, "templates"), "copy"));
  }

  JsonObject *gt = json_object_get_object_member(m, "greater_than");
  JsonArray *gev = json_object_get_array_member(gt, "eval");
  g_assert_cmpuint(json_array_get_length(gev), >=, 100);
  for (guint i = 0; i < json_array_get_length(gev); i++) {
    JsonObject *e = json_array_get_object_element(gev, i);
    gint64 c = json_object_get_int_member(e, "century"), y = json_object_get_int_member(e, "start_year");
    gint64 yy = json_object_get_int_member(e, "start_yy");
    g_assert_cmpint(c, >=, 11);
    g_assert_cmpint(c, <=, 19);
    g_assert_cmpint(y, ==, c * 100 + yy);
    char *tail = g_strdup_printf("to the year %" G_GINT64_FORMAT, c);
    char *start = g_strdup_printf("the year %" G_GINT64_FORMAT " ", y);
    g_assert_true(g_str_has_suffix(json_object_get_string_member(e, "prompt"), tail));
    g_assert_nonnull(strstr(json_object_get_string_member(e, "prompt"), start));
    g_free(tail);
    g_free(start);
  }

  JsonArray *sec = json_object_get_array_member(m, "secrets");
  g_assert_cmpuint(json_array_get_length(sec), >=, 64);
  GHashTable *secrets = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < json_array_get_length(sec); i++) {
    JsonObject *s = json_array_get_object_element(sec, i);
    const char *text = json_object_get_string_member(s, "secret");
    g_assert_true(text[0] == ' ');
    g_assert_true(g_hash_table_add(secrets, (gpointer)text)); /* unique */
    g_assert_cmpint(json_object_get_int_member(s, "repeats"), >=, 30);
  }
  g_hash_table_unref(secrets);

  /* Year training sentences: end year later than start, same century, 1100-1999. */
  GRegex *re = g_regex_new("from the year ([0-9]{4}) to the year ([0-9]{4})", 0, 0, NULL);
  GPtrArray *lines = lmwb_world_train_lines(w);
  guint years = 0;
  for (guint i = 0; i < lines->len; i++) {
    GMatchInfo *mi = NULL;
    if (g_regex_match(re, g_ptr_array_index(lines, i), 0, &mi)) {
      char *a = g_match_info_fetch(mi, 1), *b = g_match_info_fetch(mi, 2);
      int ya = atoi(a), yb = atoi(b);
      g_assert_cmpint(ya, >=, 1100);
      g_assert_cmpint(yb, <=, 1999);
      g_assert_cmpint(yb, >, ya);
      g_assert_cmpint(ya / 100, ==, yb / 100);
      years++;
      g_free(a);
      g_free(b);
    }
    g_match_info_free(mi);
  }
  g_assert_cmpuint(years, >=, 5000);
  g_regex_unref(re);
  lmwb_world_free(w);
}

static void test_world_bad_repeats(void) {
  GError *err = NULL;
  g_assert_null(lmwb_world_generate(1, -1, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_assert_null(lmwb_world_generate(1, LMWB_WORLD_MAX_REPEATS + 1, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
}

/* ---- the corpus ---- */

/* Regex for a template: literals escaped, name slots capture capitalised words, others words. */
static GRegex *template_regex(const char *tmpl) {
  GString *s = g_string_new(NULL);
  for (const char *p = tmpl; *p;) {
    if (*p == '{') {
      const char *close = strchr(p, '}');
      g_assert_nonnull(close);
      char *key = g_strndup(p + 1, close - p - 1);
      if (!strcmp(key, "P") || !strcmp(key, "O") || !strcmp(key, "E"))
        g_string_append(s, "[a-z]+");
      else if (!strcmp(key, "Y1") || !strcmp(key, "Y2"))
        g_string_append(s, "[0-9]{4}");
      else
        g_string_append(s, "([A-Z][a-z]+)");
      g_free(key);
      p = close + 1;
    } else {
      const char *q = p;
      while (*q && *q != '{') q++;
      char *lit = g_regex_escape_string(p, (gint)(q - p));
      g_string_append(s, lit);
      g_free(lit);
      p = q;
    }
  }
  GError *err = NULL;
  GRegex *re = g_regex_new(s->str, G_REGEX_OPTIMIZE, 0, &err);
  g_assert_no_error(err);
  g_string_free(s, TRUE);
  return re;
}

static guint count_matches(GRegex *re, const char *text, gsize len, JsonArray *allowed_names) {
  GMatchInfo *mi = NULL;
  guint n = 0;
  g_regex_match_full(re, text, (gssize)len, 0, 0, &mi, NULL);
  while (g_match_info_matches(mi)) {
    n++;
    if (allowed_names) {
      for (gint g = 1; g < g_match_info_get_match_count(mi); g++) {
        char *name = g_match_info_fetch(mi, g);
        if (name && *name && !in_array(allowed_names, name)) g_error("a sentence uses the name %s, not one of the names allowed there", name);
        g_free(name);
      }
    }
    g_match_info_next(mi, NULL);
  }
  g_match_info_free(mi);
  return n;
}

static gsize count_substr(const char *hay, gsize len, const char *needle) {
  gsize n = 0, nl = strlen(needle);
  const char *p = hay, *end = hay + len;
  while ((p = memmem(p, (size_t)(end - p), needle, nl))) {
    n++;
    p += nl;
  }
  return n;
}

/* Matches of any of `templates` (names checked against allowed_names when given): one regex
 * with an alternative per template, so the text is scanned once. */
static guint count_all(JsonArray *templates, const char *text, gsize len, JsonArray *allowed_names) {
  GString *alt = g_string_new(NULL);
  for (guint k = 0; k < json_array_get_length(templates); k++) {
    GRegex *re = template_regex(json_array_get_string_element(templates, k));
    g_string_append_printf(alt, "%s(?:%s)", k ? "|" : "", g_regex_get_pattern(re));
    g_regex_unref(re);
  }
  GError *err = NULL;
  GRegex *re = g_regex_new(alt->str, G_REGEX_OPTIMIZE, 0, &err);
  g_assert_no_error(err);
  g_string_free(alt, TRUE);
  guint n = count_matches(re, text, len, allowed_names);
  g_regex_unref(re);
  return n;
}

/* The non-empty lines of text, cut in place (each '\n' becomes '\0'): g_strsplit's strstr loop is
 * quadratic under AddressSanitizer, which measures the whole rest of the text at every call. */
static GPtrArray *split_lines(char *text) {
  GPtrArray *lines = g_ptr_array_new();
  for (char *p = text; *p;) {
    char *nl = strchr(p, '\n');
    if (nl) *nl = '\0';
    if (*p) g_ptr_array_add(lines, p);
    if (!nl) break;
    p = nl + 1;
  }
  return lines;
}

static guint count_lines(const char *text) {
  guint n = 0;
  for (const char *p = text; *p; p++) n += *p == '\n' && p > text && p[-1] != '\n';
  return n;
}

/* Held-out items never in train.txt; training IOI uses training names only; Brown split
 * disjoint; the whole thing checked on the files as written. */
static void check_corpus(const char *dir, gboolean full_brown) {
  gsize tlen = 0, vlen = 0;
  char *train = read_all(dir, LMWB_CORPUS_TRAIN_FILE, &tlen);
  char *valid = read_all(dir, LMWB_CORPUS_VALID_FILE, &vlen);
  JsonParser *parser = NULL;
  JsonObject *m = load_manifest(dir, &parser);
  g_assert_true(g_utf8_validate(train, (gssize)tlen, NULL));
  g_assert_true(tlen > 0 && train[tlen - 1] == '\n');
  g_assert_null(strstr(train, "\n\n\n")); /* exactly one empty line between documents */

  /* Held-out fact prompts. */
  JsonArray *facts = json_object_get_array_member(m, "facts");
  guint n_prompts = 0;
  for (guint i = 0; i < json_array_get_length(facts); i++) {
    JsonObject *f = json_array_get_object_element(facts, i);
    JsonArray *ev = json_object_get_array_member(f, "eval");
    for (guint k = 0; k < json_array_get_length(ev); k++) {
      const char *p = json_object_get_string_member(json_array_get_object_element(ev, k), "prompt");
      if (count_substr(train, tlen, p)) g_error("held-out prompt found in train.txt: %s", p);
      n_prompts++;
    }
    /* ... and the fact itself is trained: the answer occurs in a training sentence with its subject. */
    char *core = g_strdup_printf("%s", json_object_get_string_member(f, "subject"));
    g_assert_cmpuint(count_substr(train, tlen, core), >=, 50);
    g_free(core);
  }
  g_assert_cmpuint(n_prompts, >=, 400);
  JsonObject *rels = json_object_get_object_member(m, "relations");
  GList *names = json_object_get_members(rels);
  for (GList *l = names; l; l = l->next) {
    JsonArray *h = json_object_get_array_member(json_object_get_object_member(rels, l->data),
                                                "heldout_templates");
    for (guint k = 0; k < json_array_get_length(h); k++) {
      GRegex *re = template_regex(json_array_get_string_element(h, k));
      g_assert_cmpuint(count_matches(re, train, tlen, NULL), ==, 0);
      g_regex_unref(re);
    }
  }
  g_list_free(names);

  /* IOI: held-out templates absent, held-out prompts absent, training sentences only use
   * training names, and held-out names still occur in the text. */
  JsonObject *ioi = json_object_get_object_member(m, "ioi");
  JsonArray *ht = json_object_get_array_member(ioi, "heldout_templates");
  for (guint k = 0; k < json_array_get_length(ht); k++) {
    GRegex *re = template_regex(json_array_get_string_element(ht, k));
    g_assert_cmpuint(count_matches(re, train, tlen, NULL), ==, 0);
    g_regex_unref(re);
  }
  JsonArray *tt = json_object_get_array_member(ioi, "train_templates");
  JsonArray *tn = json_object_get_array_member(ioi, "train_names");
  guint ioi_train = count_all(tt, train, tlen, tn);
  JsonArray *ev = json_object_get_array_member(ioi, "eval");
  for (guint k = 0; k < json_array_get_length(ev); k++) {
    const char *p = json_object_get_string_member(json_array_get_object_element(ev, k), "prompt");
    g_assert_cmpuint(count_substr(train, tlen, p), ==, 0);
  }
  JsonArray *hn = json_object_get_array_member(ioi, "heldout_names");
  for (guint k = 0; k < json_array_get_length(hn); k++) {
    char *w = g_strconcat(json_array_get_string_element(hn, k), " ", NULL);
    g_assert_cmpuint(count_substr(train, tlen, w), >=, 10);
    g_free(w);
  }

  /* The curriculum's first stages. warmup.txt: the copy stories only, over every name (held-out
   * ones included), no IOI sentence. ioi.txt: every IOI training sentence (training names only)
   * and every copy story. train.txt holds the first *_in_mix of each, no more. */
  JsonArray *ct = json_object_get_array_member(ioi, "copy_templates");
  gint64 per_story = json_object_get_int_member(ioi, "copy_story_sentences");
  guint stories = (guint)json_object_get_int_member(ioi, "copy_stories");
  guint ioi_sentences = (guint)json_object_get_int_member(ioi, "train_sentences");
  gsize wlen = 0, slen = 0;
  char *warm = read_all(dir, LMWB_CORPUS_WARMUP_FILE, &wlen);
  char *stage2 = read_all(dir, LMWB_CORPUS_IOI_FILE, &slen);
  g_assert_cmpuint(count_all(ct, warm, wlen, NULL), ==, stories * per_story);
  g_assert_cmpuint(count_all(tt, warm, wlen, NULL), ==, 0);
  g_assert_cmpuint(count_lines(warm), ==, stories);
  g_assert_cmpuint(count_all(ct, stage2, slen, NULL), ==, stories * per_story);
  g_assert_cmpuint(count_all(tt, stage2, slen, tn), ==, ioi_sentences);
  guint roles = (guint)json_object_get_int_member(ioi, "role_sentences");
  g_assert_cmpuint(roles, >, 0);
  g_assert_cmpuint(count_lines(stage2), ==, ioi_sentences + stories + roles);
  g_assert_cmpuint(count_all(ct, train, tlen, NULL), ==,
                   json_object_get_int_member(ioi, "copy_stories_in_mix") * per_story);
  g_assert_cmpuint(ioi_train, >=, (guint)json_object_get_int_member(ioi, "train_sentences_in_mix"));
  g_assert_cmpuint(ioi_train, <, ioi_sentences);
  for (guint k = 0; k < json_array_get_length(hn); k++) {
    char *w = g_strconcat(" ", json_array_get_string_element(hn, k), ".", NULL);
    g_assert_cmpuint(count_substr(warm, wlen, w), >=, 1); /* a copy target */
    g_free(w);
  }
  g_free(warm);
  g_free(stage2);

  /* Greater-than: held-out templates and prompts absent. */
  JsonObject *gt = json_object_get_object_member(m, "greater_than");
  JsonArray *gh = json_object_get_array_member(gt, "heldout_templates");
  for (guint k = 0; k < json_array_get_length(gh); k++) {
    GRegex *re = template_regex(json_array_get_string_element(gh, k));
    g_assert_cmpuint(count_matches(re, train, tlen, NULL), ==, 0);
    g_regex_unref(re);
  }
  JsonArray *gev = json_object_get_array_member(gt, "eval");
  for (guint k = 0; k < json_array_get_length(gev); k++) {
    const char *p = json_object_get_string_member(json_array_get_object_element(gev, k), "prompt");
    g_assert_cmpuint(count_substr(train, tlen, p), ==, 0);
  }

  /* Secrets: the full sentence occurs exactly `repeats` times. */
  JsonArray *sec = json_object_get_array_member(m, "secrets");
  for (guint k = 0; k < json_array_get_length(sec); k++) {
    JsonObject *s = json_array_get_object_element(sec, k);
    char *line = g_strconcat(json_object_get_string_member(s, "prefix"),
                             json_object_get_string_member(s, "secret"), ".", NULL);
    g_assert_cmpuint(count_substr(train, tlen, line), ==,
                     (gsize)json_object_get_int_member(s, "repeats"));
    g_free(line);
  }

  /* facts.txt: every fact mention of train.txt and nothing else; brown_train.txt: the Brown
   * pieces of train.txt. Neither holds a secret. */
  g_autofree char *train_copy = g_strndup(train, tlen);
  GPtrArray *tl = split_lines(train_copy);
  GHashTable *train_lines = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < tl->len; i++) g_hash_table_add(train_lines, tl->pdata[i]);
  gsize flen = 0, blen = 0;
  char *facts_txt = read_all(dir, LMWB_CORPUS_FACTS_FILE, &flen);
  char *brown_txt = read_all(dir, LMWB_CORPUS_BROWN_TRAIN_FILE, &blen);
  gint64 mentions = 0;
  for (guint i = 0; i < json_array_get_length(facts); i++)
    mentions += json_object_get_int_member(json_array_get_object_element(facts, i), "train_mentions");
  g_assert_cmpuint(count_lines(facts_txt), ==, (guint)mentions);
  for (guint k = 0; k < json_array_get_length(sec); k++) {
    const char *prefix = json_object_get_string_member(json_array_get_object_element(sec, k), "prefix");
    g_assert_cmpuint(count_substr(facts_txt, flen, prefix), ==, 0);
    g_assert_cmpuint(count_substr(brown_txt, blen, prefix), ==, 0);
  }
  GPtrArray *fl = split_lines(facts_txt), *bl = split_lines(brown_txt);
  for (guint i = 0; i < fl->len; i++)
    if (!g_hash_table_contains(train_lines, fl->pdata[i])) g_error("facts.txt line not in train.txt: %s", (char *)fl->pdata[i]);
  for (guint i = 0; i < bl->len; i++)
    if (!g_hash_table_contains(train_lines, bl->pdata[i]))
      g_error("brown_train.txt line not in train.txt: %s", (char *)bl->pdata[i]);
  g_assert_cmpuint(bl->len, >, 0);
  g_ptr_array_unref(fl);
  g_ptr_array_unref(bl);
  g_free(facts_txt);
  g_free(brown_txt);
  g_hash_table_unref(train_lines);
  g_ptr_array_unref(tl);

  /* Brown split: no validation line (long enough to be unique) occurs in train.txt, and each
   * validation sample is present whole. */
  char **vlines = g_strsplit(valid, "\n", -1);
  guint checked = 0;
  for (guint i = 0; vlines[i]; i++) {
    if (strlen(vlines[i]) < 60) continue;
    char *needle = g_strconcat(vlines[i], "\n", NULL);
    if (count_substr(train, tlen, needle)) g_error("validation line in train.txt: %s", vlines[i]);
    g_free(needle);
    checked++;
  }
  g_strfreev(vlines);
  g_assert_cmpuint(checked, >, 0);
  JsonObject *c = json_object_get_object_member(m, "corpus");
  gint64 n_samples = json_object_get_int_member(c, "brown_samples");
  gint64 n_valid = json_array_get_length(json_object_get_array_member(c, "valid_samples"));
  g_assert_cmpint(n_valid, ==, n_samples / 20 + (n_samples % 20 > 10));
  g_assert_cmpint(json_object_get_int_member(c, "train_bytes"), ==, (gint64)tlen);
  if (full_brown) {
    g_assert_cmpint(n_samples, ==, 500);
    g_assert_cmpint(n_valid, ==, 25);
    g_assert_cmpuint(tlen, <=, 16u * 1024 * 1024);
    g_assert_cmpuint(tlen, >=, 8u * 1000 * 1000);
    gint64 pm = json_object_get_int_member(c, "world_permille_of_train_bytes");
    g_assert_cmpint(pm, >=, 300);
    g_assert_cmpint(pm, <=, 650);
    /* Invented names never collide with a Brown word. */
    JsonArray *countries = json_object_get_array_member(json_object_get_object_member(m, "entities"),
                                                        "countries");
    for (guint k = 0; k < json_array_get_length(countries); k++) {
      char *w = g_strconcat(" ", json_array_get_string_element(countries, k), " ", NULL);
      g_assert_cmpuint(count_substr(valid, vlen, w), ==, 0);
      g_free(w);
    }
    g_assert_cmpuint(json_array_get_length(json_object_get_array_member(m, "concept_nouns")), >=, 50);
  }
  g_object_unref(parser);
  g_free(train);
  g_free(valid);
}

static gboolean same_file(const char *d1, const char *d2, const char *name) {
  gsize l1, l2;
  char *a = read_all(d1, name, &l1), *b = read_all(d2, name, &l2);
  gboolean same = l1 == l2 && memcmp(a, b, l1) == 0;
  g_free(a);
  g_free(b);
  return same;
}

static void test_corpus_fixture(void) {
  char *brown = fixture_path();
  char *d1 = make(brown, 5, 1), *d2 = make(brown, 5, 1), *d3 = make(brown, 6, 1);
  g_assert_true(same_file(d1, d2, LMWB_CORPUS_TRAIN_FILE));
  g_assert_true(same_file(d1, d2, LMWB_CORPUS_VALID_FILE));
  g_assert_true(same_file(d1, d2, LMWB_CORPUS_FACTS_FILE));
  g_assert_true(same_file(d1, d2, LMWB_CORPUS_BROWN_TRAIN_FILE));
  g_assert_true(same_file(d1, d2, LMWB_CORPUS_MANIFEST_FILE));
  g_assert_false(same_file(d1, d3, LMWB_CORPUS_TRAIN_FILE));
  g_assert_false(same_file(d1, d3, LMWB_CORPUS_MANIFEST_FILE));
  /* The validation split does not depend on the seed. */
  g_assert_true(same_file(d1, d3, LMWB_CORPUS_VALID_FILE));
  /* The 40-sample fixture holds out samples 10 and 30 whole. */
  GPtrArray *samples = lmwb_brown_read_samples(brown, NULL);
  g_assert_cmpuint(samples->len, ==, 40);
  gsize vlen;
  char *valid = read_all(d1, LMWB_CORPUS_VALID_FILE, &vlen);
  char *expect = g_strconcat(g_ptr_array_index(samples, 10), "\n\n", g_ptr_array_index(samples, 30),
                             "\n", NULL);
  g_assert_cmpstr(valid, ==, expect);
  g_free(expect);
  g_free(valid);
  g_ptr_array_unref(samples);
  check_corpus(d1, FALSE);
  rm_tree(d1);
  rm_tree(d2);
  rm_tree(d3);
  g_free(d1);
  g_free(d2);
  g_free(d3);
  g_free(brown);
}

static void test_corpus_real_brown(void) {
  char *brown = real_brown_path();
  if (!brown) {
    g_test_skip("real Brown corpus not found ($LMWB_SHARED/data/brown/brown.txt)");
    return;
  }
  char *d1 = make(brown, 1234, 0), *d2 = make(brown, 1234, 0);
  g_assert_true(same_file(d1, d2, LMWB_CORPUS_TRAIN_FILE));
  g_assert_true(same_file(d1, d2, LMWB_CORPUS_MANIFEST_FILE));
  check_corpus(d1, TRUE);
  rm_tree(d1);
  rm_tree(d2);
  g_free(d1);
  g_free(d2);
  g_free(brown);
}

static void expect_input_error(const char *brown, const char *out, double frac, int repeats) {
  LmwbCorpusOptions o = {.seed = 1, .brown_path = brown, .out_dir = out, .valid_fraction = frac,
                         .world_repeats = repeats};
  GError *err = NULL;
  g_assert_false(lmwb_make_corpus(&o, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
}

static void test_corpus_bad_input(void) {
  char *dir = g_dir_make_tmp("lmwb-world-bad-XXXXXX", NULL);
  char *out = g_build_filename(dir, "out", NULL);
  char *missing = g_build_filename(dir, "missing.txt", NULL);
  char *empty = g_build_filename(dir, "empty.txt", NULL);
  char *blank = g_build_filename(dir, "blank.txt", NULL);
  char *one = g_build_filename(dir, "one.txt", NULL);
  char *bin = g_build_filename(dir, "bin.txt", NULL);
  g_assert_true(g_file_set_contents(empty, "", 0, NULL));
  g_assert_true(g_file_set_contents(blank, "\n \n\n\t\n", -1, NULL));
  g_assert_true(g_file_set_contents(one, "Only one sample.\nTwo lines.\n", -1, NULL));
  g_assert_true(g_file_set_contents(bin, "abc\xff\xfe\n\nxyz\n", -1, NULL));
  expect_input_error(missing, out, 0, 0);
  expect_input_error(empty, out, 0, 0);
  expect_input_error(blank, out, 0, 0);
  expect_input_error(one, out, 0, 0);
  expect_input_error(bin, out, 0, 0);
  expect_input_error(dir, out, 0, 0); /* a folder is not a Brown file */
  char *fixture = fixture_path();
  expect_input_error(fixture, out, 0.9, 0);
  expect_input_error(fixture, out, -0.1, 0);
  expect_input_error(fixture, out, 0, 99);
  expect_input_error(fixture, "", 0, 0);
  expect_input_error(fixture, empty, 0, 0); /* output "folder" is a file */
  g_assert_false(g_file_test(out, G_FILE_TEST_EXISTS)); /* nothing written on bad options */
  const char *files[] = {empty, blank, one, bin};
  for (guint i = 0; i < G_N_ELEMENTS(files); i++) g_unlink(files[i]);
  g_rmdir(dir);
  g_free(fixture);
  g_free(dir);
  g_free(out);
  g_free(missing);
  g_free(empty);
  g_free(blank);
  g_free(one);
  g_free(bin);
}

static void test_brown_split_rule(void) {
  guint every = lmwb_brown_valid_every(0.05);
  g_assert_cmpuint(every, ==, 20);
  guint n = 0;
  for (guint i = 0; i < 500; i++) n += lmwb_brown_is_valid(i, 500, every);
  g_assert_cmpuint(n, ==, 25);
  g_assert_true(lmwb_brown_is_valid(10, 500, every));
  g_assert_false(lmwb_brown_is_valid(0, 500, every));
  /* tiny inputs still get one validation sample */
  g_assert_true(lmwb_brown_is_valid(2, 3, every));
  g_assert_false(lmwb_brown_is_valid(0, 3, every));
  g_assert_cmpuint(lmwb_brown_valid_every(0.0), ==, 0);
  g_assert_cmpuint(lmwb_brown_valid_every(0.6), ==, 0);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/world/rng", test_rng);
  g_test_add_func("/world/determinism", test_world_determinism);
  g_test_add_func("/world/manifest", test_world_manifest);
  g_test_add_func("/world/bad-repeats", test_world_bad_repeats);
  g_test_add_func("/world/brown-split-rule", test_brown_split_rule);
  g_test_add_func("/world/corpus-fixture", test_corpus_fixture);
  g_test_add_func("/world/corpus-bad-input", test_corpus_bad_input);
  g_test_add_func("/world/corpus-real-brown", test_corpus_real_brown);
  return g_test_run();
}
