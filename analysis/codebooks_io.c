/* Codebook set folders: codebooks.json + codebooks.safetensors. Contract: codebooks.h. */
#include "analysis/codebooks.h"
#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/formats/json_input.h"
#include "app/formats/safetensors.h"
#include <string.h>

#define JSON_MAX_BYTES ((uint64_t)1 << 20)

static gboolean member_int(JsonObject *o, const char *k, gint64 *out) {
  JsonNode *n = o ? json_object_get_member(o, k) : NULL;
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) return FALSE;
  *out = json_node_get_int(n);
  return TRUE;
}

/* The "sites" array of codebooks.json; n_layer bounds the layers. */
static LmwbCodebookSiteSpec *parse_sites(JsonObject *o, const char *path, int n_layer, int *n, GError **error) {
  JsonNode *sn = json_object_get_member(o, "sites");
  if (!sn || !JSON_NODE_HOLDS_ARRAY(sn) || json_array_get_length(json_node_get_array(sn)) == 0) {
    lmwb_input_error(error, "%s: \"sites\" must be a non-empty array of {\"layer\": L, \"site\": \"attn\"|\"mlp\"}", path);
    return NULL;
  }
  JsonArray *a = json_node_get_array(sn);
  guint len = json_array_get_length(a);
  if (len > (guint)n_layer * 2) {
    lmwb_input_error(error, "%s: \"sites\" has %u entries but the model has only %d layers x 2 sites", path, len, n_layer);
    return NULL;
  }
  LmwbCodebookSiteSpec *s = g_new0(LmwbCodebookSiteSpec, len);
  for (guint i = 0; i < len; i++) {
    JsonNode *e = json_array_get_element(a, i);
    JsonObject *eo = JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
    gint64 L = -1;
    JsonNode *site = eo ? json_object_get_member(eo, "site") : NULL;
    const char *site_s = site && JSON_NODE_HOLDS_VALUE(site) && json_node_get_value_type(site) == G_TYPE_STRING
                             ? json_node_get_string(site) : NULL;
    if (!eo || !member_int(eo, "layer", &L)) {
      lmwb_input_error(error, "%s: sites[%u]: \"layer\" must be an integer", path, i);
      g_free(s);
      return NULL;
    }
    if (L < 0 || L >= n_layer) {
      lmwb_input_error(error, "%s: sites[%u]: layer %" G_GINT64_FORMAT " is not in 0..%d (the model's layers)", path, i,
                       L, n_layer - 1);
      g_free(s);
      return NULL;
    }
    if (!lmwb_codebook_site_parse(site_s, &s[i].site)) {
      lmwb_input_error(error, "%s: sites[%u]: \"site\" must be \"attn\" or \"mlp\"", path, i);
      g_free(s);
      return NULL;
    }
    s[i].layer = (int)L;
  }
  *n = (int)len;
  return s;
}

static char *tensor_name(const LmwbCodebook *b) {
  return g_strdup_printf("blocks.%d.%s.codebook", b->layer, lmwb_codebook_site_name(b->site));
}

static gboolean read_book(const LmwbSafetensors *st, const char *path, LmwbCodebook *b, int C, GError **error) {
  g_autofree char *name = tensor_name(b);
  const LmwbTensorView *t = lmwb_safetensors_find(st, name);
  if (!t) {
    lmwb_input_error(error, "%s: tensor \"%s\" is missing (codebooks.json lists its site)", path, name);
    return FALSE;
  }
  gboolean attn = b->site == LMWB_CODEBOOK_ATTN;
  int64_t want[3] = {attn ? b->groups : C, attn ? C : b->width, b->width};
  int nd = attn ? 3 : 2;
  gboolean ok = t->ndim == nd;
  for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == want[i];
  if (!ok) {
    GString *s = g_string_new(NULL), *w = g_string_new(NULL);
    for (int i = 0; i < t->ndim; i++) g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? ", " : "", t->shape[i]);
    for (int i = 0; i < nd; i++) g_string_append_printf(w, "%s%" G_GINT64_FORMAT, i ? ", " : "", want[i]);
    lmwb_input_error(error, "%s: tensor \"%s\" has shape [%s] but this model and num_codes need [%s]%s", path, name,
                     s->str, w->str, attn ? " ([n_heads, num_codes, d_head])" : " ([num_codes, d_model])");
    g_string_free(s, TRUE);
    g_string_free(w, TRUE);
    return FALSE;
  }
  return lmwb_tensor_to_f32(t, b->codes, error);
}

LmwbCodebooks *lmwb_codebooks_load(const char *dir, const LmwbConfig *cfg, GError **error) {
  g_autofree char *jpath = g_build_filename(dir, "codebooks.json", NULL);
  g_autofree char *wpath = g_build_filename(dir, "codebooks.safetensors", NULL);
  JsonNode *root = lmwb_json_load_file(jpath, JSON_MAX_BYTES, error);
  if (!root) return NULL;
  LmwbCodebooks *cb = NULL;
  LmwbSafetensors *st = NULL;
  LmwbCodebookSiteSpec *sites = NULL;
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  gint64 k = 0, C = 0;
  int n = 0;
  if (!o) {
    lmwb_input_error(error, "%s: the top level is not a JSON object", jpath);
    goto out;
  }
  if (!member_int(o, "num_codes", &C) || C < 1 || C > LMWB_CODEBOOK_MAX_CODES) {
    lmwb_input_error(error, "%s: \"num_codes\" must be an integer in 1..%d", jpath, LMWB_CODEBOOK_MAX_CODES);
    goto out;
  }
  if (!member_int(o, "k", &k) || k < 1 || k > C) {
    lmwb_input_error(error, "%s: \"k\" must be an integer in 1..num_codes (%" G_GINT64_FORMAT ")", jpath, C);
    goto out;
  }
  if (!(sites = parse_sites(o, jpath, cfg->n_layer, &n, error))) goto out;
  GError *local = NULL;
  cb = lmwb_codebooks_new(cfg, (int)k, (int)C, sites, n, &local);
  if (!cb) {
    lmwb_input_error(error, "%s: %s", jpath, local->message);
    g_error_free(local);
    goto out;
  }
  if (!(st = lmwb_safetensors_open(wpath, error))) goto fail;
  for (int i = 0; i < cb->n; i++)
    if (!read_book(st, wpath, &cb->books[i], cb->num_codes, error)) goto fail;
  for (size_t i = 0; i < lmwb_safetensors_count(st); i++) {
    const char *nm = lmwb_safetensors_at(st, i)->name;
    gboolean known = FALSE;
    for (int j = 0; j < cb->n && !known; j++) {
      g_autofree char *tn = tensor_name(&cb->books[j]);
      known = !strcmp(tn, nm);
    }
    if (!known) {
      lmwb_input_error(error, "%s: tensor \"%s\" has no site in codebooks.json", wpath, nm);
      goto fail;
    }
  }
  if (!lmwb_codebooks_check(cb, cfg, wpath, error)) goto fail;
  cb->source = g_strdup(dir);
  goto out;
fail:
  g_clear_pointer(&cb, lmwb_codebooks_free);
out:
  if (st) lmwb_safetensors_close(st);
  g_free(sites);
  json_node_unref(root);
  return cb;
}

gboolean lmwb_codebooks_save(const LmwbCodebooks *cb, const char *dir, GError **error) {
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    lmwb_input_error(error, "cannot create the folder %s", dir);
    return FALSE;
  }
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "k");
  json_builder_add_int_value(b, cb->k);
  json_builder_set_member_name(b, "num_codes");
  json_builder_add_int_value(b, cb->num_codes);
  json_builder_set_member_name(b, "sites");
  json_builder_begin_array(b);
  for (int i = 0; i < cb->n; i++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "layer");
    json_builder_add_int_value(b, cb->books[i].layer);
    json_builder_set_member_name(b, "site");
    json_builder_add_string_value(b, lmwb_codebook_site_name(cb->books[i].site));
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_pretty(gen, TRUE);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  gsize len = 0;
  g_autofree char *text = json_generator_to_data(gen, &len);
  g_autofree char *jpath = g_build_filename(dir, "codebooks.json", NULL);
  g_autofree char *wpath = g_build_filename(dir, "codebooks.safetensors", NULL);
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  for (int i = 0; i < cb->n; i++) {
    const LmwbCodebook *bk = &cb->books[i];
    char *nm = tensor_name(bk);
    g_ptr_array_add(names, nm);
    int64_t s3[3] = {bk->groups, cb->num_codes, bk->width}, s2[2] = {cb->num_codes, bk->width};
    if (bk->site == LMWB_CODEBOOK_ATTN) lmwb_safetensors_writer_add_f32(w, nm, LMWB_DTYPE_F32, s3, 3, bk->codes);
    else lmwb_safetensors_writer_add_f32(w, nm, LMWB_DTYPE_F32, s2, 2, bk->codes);
  }
  /* Weights first: a reader that finds the new json finds the weights it describes. */
  gboolean ok = lmwb_safetensors_writer_save(w, wpath, error) && lmwb_file_write_atomic(jpath, text, len, error);
  lmwb_safetensors_writer_free(w);
  g_ptr_array_free(names, TRUE);
  return ok;
}
