/* Recitation of memorised sequences: sets, greedy continuations, token Levenshtein (recitation.h). */
#include "editors/recitation.h"
#include "app/core/errors.h"
#include "app/engine/generate.h"
#include "app/formats/json_input.h"
#include "app/formats/tokenizer.h"
#include "app/train/corpus.h"
#include <string.h>

#define SET_MAX_BYTES (256u << 20)

void lmwb_recitation_set_free(LmwbRecitationSet *s) {
  if (!s) return;
  for (int i = 0; i < s->n; i++) {
    g_free(s->items[i].prefix);
    g_free(s->items[i].suffix);
  }
  g_free(s->items);
  g_free(s);
}

static const char *string_member(JsonObject *o, const char *k) {
  JsonNode *n = o ? json_object_get_member(o, k) : NULL;
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING ? json_node_get_string(n)
                                                                                       : NULL;
}

static void add_item(GArray *a, const char *p, const char *s) {
  LmwbRecitationItem it = {g_strdup(p), g_strdup(s)};
  g_array_append_val(a, it);
}

static LmwbRecitationSet *finish_set(GArray *a, const char *path, GError **error) {
  if (a->len == 0) {
    g_array_free(a, TRUE);
    lmwb_input_error(error, "%s: holds no items", path);
    return NULL;
  }
  LmwbRecitationSet *s = g_new0(LmwbRecitationSet, 1);
  s->n = (int)a->len;
  s->items = (LmwbRecitationItem *)g_array_free(a, FALSE);
  return s;
}

static void free_items(GArray *a) {
  for (guint i = 0; i < a->len; i++) {
    g_free(g_array_index(a, LmwbRecitationItem, i).prefix);
    g_free(g_array_index(a, LmwbRecitationItem, i).suffix);
  }
  g_array_free(a, TRUE);
}

LmwbRecitationSet *lmwb_recitation_set_load_jsonl(const char *path, GError **error) {
  g_autofree char *text = NULL;
  gsize len = 0;
  GError *e = NULL;
  if (!g_file_get_contents(path, &text, &len, &e)) {
    lmwb_input_error(error, "%s: %s", path, e->message);
    g_error_free(e);
    return NULL;
  }
  if (len > SET_MAX_BYTES || !g_utf8_validate(text, (gssize)len, NULL)) {
    lmwb_input_error(error, "%s: not UTF-8 text of at most 256 MB", path);
    return NULL;
  }
  GArray *a = g_array_new(FALSE, FALSE, sizeof(LmwbRecitationItem));
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    char *l = g_strstrip(lines[i]);
    if (!*l) continue;
    g_autofree char *origin = g_strdup_printf("%s line %d", path, i + 1);
    JsonNode *n = lmwb_json_parse(l, strlen(l), origin, error);
    if (!n) {
      free_items(a);
      return NULL;
    }
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
    const char *p = string_member(o, "prefix"), *s = string_member(o, "suffix");
    if (!p || !s) {
      json_node_unref(n);
      free_items(a);
      lmwb_input_error(error, "%s: expected {\"prefix\": \"...\", \"suffix\": \"...\"}", origin);
      return NULL;
    }
    add_item(a, p, s);
    json_node_unref(n);
  }
  return finish_set(a, path, error);
}

LmwbRecitationSet *lmwb_recitation_set_load_world(const char *world_json, GError **error) {
  JsonNode *root = lmwb_json_load_file(world_json, SET_MAX_BYTES, error);
  if (!root) return NULL;
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonNode *sn = o ? json_object_get_member(o, "secrets") : NULL;
  GArray *a = g_array_new(FALSE, FALSE, sizeof(LmwbRecitationItem));
  if (!sn || !JSON_NODE_HOLDS_ARRAY(sn)) {
    json_node_unref(root);
    free_items(a);
    lmwb_input_error(error, "%s: \"secrets\" is missing or not an array", world_json);
    return NULL;
  }
  JsonArray *arr = json_node_get_array(sn);
  for (guint i = 0; i < json_array_get_length(arr); i++) {
    JsonNode *e = json_array_get_element(arr, i);
    JsonObject *so = JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
    const char *p = string_member(so, "prefix"), *s = string_member(so, "secret");
    if (!p || !s) {
      json_node_unref(root);
      free_items(a);
      lmwb_input_error(error, "%s: secrets[%u] needs string \"prefix\" and \"secret\"", world_json, i);
      return NULL;
    }
    add_item(a, p, s);
  }
  json_node_unref(root);
  return finish_set(a, world_json, error);
}

int lmwb_levenshtein(const int32_t *a, int na, const int32_t *b, int nb) {
  g_autofree int *row = g_new(int, nb + 1);
  for (int j = 0; j <= nb; j++) row[j] = j;
  for (int i = 1; i <= na; i++) {
    int diag = row[0];
    row[0] = i;
    for (int j = 1; j <= nb; j++) {
      int up = row[j];
      int best = MIN(row[j] + 1, row[j - 1] + 1);
      row[j] = MIN(best, diag + (a[i - 1] != b[j - 1]));
      diag = up;
    }
  }
  return row[nb];
}

void lmwb_recitation_result_clear(LmwbRecitationResult *res) {
  g_free(res->distance);
  g_strfreev(res->continuation);
  memset(res, 0, sizeof *res);
}

gboolean lmwb_recitation_eval(LmwbRunner *r, const LmwbRecitationSet *set, int max_items, LmwbRecitationResult *out,
                              LmwbReporter *rep, GError **error) {
  memset(out, 0, sizeof *out);
  LmwbModel *m = lmwb_runner_model(r);
  if (!m->tokenizer) {
    lmwb_input_error(error, "recitation: the model has no tokenizer");
    return FALSE;
  }
  int n = max_items > 0 ? MIN(max_items, set->n) : set->n;
  out->n = n;
  out->distance = g_new0(double, MAX(n, 1));
  out->continuation = g_new0(char *, n + 1);
  int strict = 0, loose = 0;
  double sum = 0;
  for (int i = 0; i < n; i++) {
    if (lmwb_reporter_cancelled(rep, error)) goto fail;
    const LmwbRecitationItem *it = &set->items[i];
    size_t np = 0, ns = 0;
    g_autofree int32_t *p = lmwb_tokenizer_encode(m->tokenizer, it->prefix, strlen(it->prefix), FALSE, &np, error);
    if (!p) goto fail;
    g_autofree int32_t *s = lmwb_tokenizer_encode(m->tokenizer, it->suffix, strlen(it->suffix), FALSE, &ns, error);
    if (!s) goto fail;
    if (np == 0 || ns == 0 || np + ns > (size_t)m->cfg.n_ctx) {
      lmwb_input_error(error, "recitation item %d: the prefix (%zu tokens) and the suffix (%zu) must both be "
                              "non-empty and fit the model's context of %d together", i, np, ns, m->cfg.n_ctx);
      goto fail;
    }
    LmwbGenerateOptions go;
    lmwb_generate_options_init(&go);
    go.max_tokens = (int)ns;
    go.temperature = 0;
    go.stop_at_eos = false;
    int ng = 0;
    g_autofree int32_t *g = lmwb_generate(r, p, (int)np, &go, &ng, NULL, NULL, error);
    if (!g) goto fail;
    int d = lmwb_levenshtein(g, ng, s, (int)ns);
    double dn = (double)d / (double)ns;
    out->distance[i] = dn;
    out->continuation[i] = lmwb_tokenizer_decode(m->tokenizer, g, (size_t)ng, FALSE, NULL);
    strict += d == 0;
    loose += 1 - dn >= LMWB_RECITATION_LOOSE;
    sum += dn;
    lmwb_report_progress(rep, (double)(i + 1) / n, "reciting");
  }
  out->strict = n ? (double)strict / n : 0;
  out->loose = n ? (double)loose / n : 0;
  out->mean_distance = n ? sum / n : 0;
  return TRUE;
fail:
  lmwb_recitation_result_clear(out);
  return FALSE;
}

LmwbRecitationSet *lmwb_recitation_set_load_for_model(const char *model_dir, GError **error) {
  g_autofree char *world = model_dir ? g_build_filename(model_dir, LMWB_CORPUS_MANIFEST_FILE, NULL) : NULL;
  g_autofree char *own = model_dir ? g_build_filename(model_dir, LMWB_RECITATION_SET_FILE, NULL) : NULL;
  if (world && g_file_test(world, G_FILE_TEST_IS_REGULAR)) return lmwb_recitation_set_load_world(world, error);
  if (own && g_file_test(own, G_FILE_TEST_IS_REGULAR)) return lmwb_recitation_set_load_jsonl(own, error);
  lmwb_input_error(error, "%s has neither %s (secrets) nor %s: no memorised set to recite", model_dir ? model_dir : "the model",
                   LMWB_CORPUS_MANIFEST_FILE, LMWB_RECITATION_SET_FILE);
  return NULL;
}
