/* Transcoder files: SAELens folders (cfg.json + sae_weights.safetensors, new and pre-6.0
 * configs) and circuit-tracer sets (layer_{i}.safetensors + config.yaml). Contract: transcoder.h. */
#include "circuits/transcoder.h"
#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/half.h"
#include "app/formats/json_input.h"
#include "app/formats/json_text.h"
#include "app/formats/safetensors.h"
#include <string.h>

#define CFG_MAX_BYTES ((uint64_t)1 << 20)
#define WEIGHTS_MAX_BYTES ((uint64_t)64 << 30)

/* ---- reading tensors ----------------------------------------------------------------------------- */

/* A float tensor of exactly this shape (rows, cols; cols 0 for a vector), widened to F32. With
 * transpose, the file holds [cols, rows] and the result is [rows, cols]. NULL with an error naming
 * the file and tensor; optional tensors that are absent give NULL without an error. */
static float *read_tensor(const LmwbSafetensors *st, const char *path, const char *name, int64_t rows, int64_t cols,
                          gboolean transpose, gboolean optional, GError **error) {
  const LmwbTensorView *t = lmwb_safetensors_find(st, name);
  if (!t) {
    if (!optional) lmwb_input_error(error, "%s: tensor \"%s\" is missing", path, name);
    return NULL;
  }
  int64_t r = transpose ? cols : rows, c = transpose ? rows : cols;
  gboolean ok = cols ? t->ndim == 2 && t->shape[0] == r && t->shape[1] == c : t->ndim == 1 && t->shape[0] == r;
  if (!ok) {
    GString *s = g_string_new(NULL);
    for (int i = 0; i < t->ndim; i++) g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? ", " : "", t->shape[i]);
    if (cols)
      lmwb_input_error(error, "%s: tensor \"%s\" has shape [%s], expected [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "]",
                       path, name, s->str, r, c);
    else
      lmwb_input_error(error, "%s: tensor \"%s\" has shape [%s], expected [%" G_GINT64_FORMAT "]", path, name, s->str, r);
    g_string_free(s, TRUE);
    return NULL;
  }
  size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
  float *f = g_try_new(float, n);
  if (!f) {
    lmwb_input_error(error, "%s: out of memory for \"%s\"", path, name);
    return NULL;
  }
  if (!lmwb_tensor_to_f32(t, f, error)) {
    g_free(f);
    return NULL;
  }
  size_t bad = lmwb_f32_find_nonfinite(f, n);
  if (bad < n) {
    lmwb_input_error(error, "%s: tensor \"%s\" holds a non-finite value (%g) at element %zu: the weights are corrupt",
                     path, name, f[bad], bad);
    g_free(f);
    return NULL;
  }
  if (transpose) {
    float *tr = g_try_new(float, n);
    if (!tr) {
      g_free(f);
      lmwb_input_error(error, "%s: out of memory for \"%s\"", path, name);
      return NULL;
    }
    for (int64_t i = 0; i < rows; i++)
      for (int64_t j = 0; j < cols; j++) tr[i * cols + j] = f[j * rows + i];
    g_free(f);
    f = tr;
  }
  return f;
}

/* The weights of a transcoder whose sizes and activation are known, from one safetensors file.
 * W_enc is stored [d_in, d_sae] (SAELens) or [d_sae, d_in] (circuit-tracer). */
static gboolean read_weights(LmwbTranscoder *tc, const char *path, gboolean enc_transposed, const char *threshold_name,
                             GError **error) {
  LmwbSafetensors *st = lmwb_safetensors_open(path, error);
  if (!st) return FALSE;
  gboolean ok = TRUE;
  GError *local = NULL;
#define READ(field, name, r, c, tr, opt) do { \
    if (ok) { g_free(tc->field); tc->field = read_tensor(st, path, name, r, c, tr, opt, &local); \
      if (!tc->field && local) ok = FALSE; } } while (0)
  READ(W_enc, "W_enc", tc->d_in, tc->d_sae, enc_transposed, FALSE);
  READ(b_enc, "b_enc", tc->d_sae, 0, FALSE, FALSE);
  READ(W_dec, "W_dec", tc->d_sae, tc->d_out, FALSE, FALSE);
  READ(b_dec, "b_dec", tc->d_out, 0, FALSE, FALSE);
  READ(W_skip, "W_skip", tc->d_out, tc->d_in, FALSE, TRUE);
  if (tc->act == LMWB_TC_JUMPRELU) {
    READ(threshold, threshold_name, tc->d_sae, 0, FALSE, FALSE);
  }
#undef READ
  lmwb_safetensors_close(st);
  if (!ok) g_propagate_error(error, local);
  return ok;
}

/* ---- SAELens --------------------------------------------------------------------------------------- */

static const char *member_str(JsonObject *o, const char *k) {
  JsonNode *n = o ? json_object_get_member(o, k) : NULL;
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING ? json_node_get_string(n) : NULL;
}

static gboolean member_int(JsonObject *o, const char *k, gint64 *out) {
  JsonNode *n = o ? json_object_get_member(o, k) : NULL;
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) return FALSE;
  *out = json_node_get_int(n);
  return TRUE;
}

static gboolean member_bool(JsonObject *o, const char *k, gboolean dflt) {
  JsonNode *n = o ? json_object_get_member(o, k) : NULL;
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN ? json_node_get_boolean(n) : dflt;
}

static gboolean parse_site(const char *name, const char *origin, const char *field, LmwbSite *out, GError **error) {
  /* The layer count is not known here: parse against a config wide enough for any layer, the
   * model check (lmwb_transcoder_check) does the rest. */
  LmwbConfig wide = {.n_layer = G_MAXINT / 2, .learned_pos = true, .gated_mlp = true};
  g_strlcpy(wide.model_type, "(any)", sizeof wide.model_type);
  if (!name || !lmwb_site_parse(&wide, name, out, NULL)) {
    lmwb_input_error(error, "%s: %s \"%s\" is not a hook site name (e.g. blocks.3.ln2.hook_normalized)", origin, field,
                     name ? name : "");
    return FALSE;
  }
  return TRUE;
}

LmwbTranscoder *lmwb_transcoder_load_saelens(const char *dir, GError **error) {
  g_autofree char *cfg_path = g_build_filename(dir, "cfg.json", NULL);
  g_autofree char *w_path = g_build_filename(dir, "sae_weights.safetensors", NULL);
  JsonNode *root = lmwb_json_load_file(cfg_path, CFG_MAX_BYTES, error);
  if (!root) return NULL;
  LmwbTranscoder *tc = NULL;
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  if (!o) {
    lmwb_input_error(error, "%s: the top level is not a JSON object", cfg_path);
    goto out;
  }
  /* 6.x keeps the hook names under "metadata"; pre-6.0 configs are flat. */
  JsonNode *md = json_object_get_member(o, "metadata");
  JsonObject *meta = md && JSON_NODE_HOLDS_OBJECT(md) ? json_node_get_object(md) : o;
  const char *arch = member_str(o, "architecture");
  const char *act_str = member_str(o, "activation_fn_str");
  const char *hook = member_str(meta, "hook_name") ? member_str(meta, "hook_name") : member_str(o, "hook_point");
  const char *hook_out = member_str(meta, "hook_name_out");
  gint64 d_in = 0, d_sae = 0, d_out = 0, k = 0;
  if (!member_int(o, "d_in", &d_in) || !member_int(o, "d_sae", &d_sae) || d_in < 1 || d_sae < 1 || d_in > G_MAXINT ||
      d_sae > G_MAXINT) {
    lmwb_input_error(error, "%s: \"d_in\" and \"d_sae\" must be positive integers", cfg_path);
    goto out;
  }
  gboolean transcoder = arch && g_str_has_suffix(arch, "transcoder");
  if (!member_int(o, "d_out", &d_out)) d_out = d_in;
  if (d_out < 1 || d_out > G_MAXINT) {
    lmwb_input_error(error, "%s: \"d_out\" must be a positive integer", cfg_path);
    goto out;
  }
  LmwbTcActivation act = LMWB_TC_RELU;
  if ((arch && (g_str_has_prefix(arch, "jumprelu"))) || (act_str && !strcmp(act_str, "jumprelu"))) act = LMWB_TC_JUMPRELU;
  else if ((arch && g_str_has_prefix(arch, "topk")) || (act_str && !strcmp(act_str, "topk"))) act = LMWB_TC_TOPK;
  else if (arch && strcmp(arch, "standard") && strcmp(arch, "transcoder") && strcmp(arch, "skip_transcoder")) {
    lmwb_input_error(error, "%s: architecture \"%s\" is not supported (standard, jumprelu, topk, transcoder, "
                     "skip_transcoder, jumprelu_transcoder, topk_transcoder)", cfg_path, arch);
    goto out;
  }
  if (act == LMWB_TC_TOPK) {
    JsonNode *kw = json_object_get_member(o, "activation_fn_kwargs");
    if (!member_int(o, "k", &k) && !(kw && JSON_NODE_HOLDS_OBJECT(kw) && member_int(json_node_get_object(kw), "k", &k))) {
      lmwb_input_error(error, "%s: a TopK SAE needs \"k\"", cfg_path);
      goto out;
    }
  }
  const char *norm = member_str(o, "normalize_activations");
  if (norm && strcmp(norm, "none")) {
    lmwb_input_error(error, "%s: normalize_activations \"%s\" is not supported (only none)", cfg_path, norm);
    goto out;
  }
  LmwbSite in, outs;
  if (!parse_site(hook, cfg_path, "hook_name", &in, error)) goto out;
  if (transcoder && !hook_out) {
    lmwb_input_error(error, "%s: a transcoder needs \"hook_name_out\"", cfg_path);
    goto out;
  }
  if (!parse_site(hook_out ? hook_out : hook, cfg_path, "hook_name_out", &outs, error)) goto out;
  tc = lmwb_transcoder_new((int)d_in, (int)d_sae, (int)d_out, act, (int)k, error);
  if (!tc) goto out;
  tc->in = in;
  tc->out = outs;
  tc->apply_b_dec_to_input = !transcoder && member_bool(o, "apply_b_dec_to_input", TRUE);
  const char *model = member_str(meta, "model_name") ? member_str(meta, "model_name") : member_str(o, "model_name");
  tc->model_name = g_strdup(model);
  if (!read_weights(tc, w_path, FALSE, "threshold", error)) g_clear_pointer(&tc, lmwb_transcoder_free);
out:
  json_node_unref(root);
  return tc;
}

gboolean lmwb_transcoder_save_saelens(const LmwbTranscoder *tc, const char *dir, GError **error) {
  return lmwb_transcoder_save_saelens_as(tc, dir, LMWB_DTYPE_F32, error);
}

gboolean lmwb_transcoder_save_saelens_as(const LmwbTranscoder *tc, const char *dir, LmwbDtype store_as, GError **error) {
  if (store_as != LMWB_DTYPE_F32 && store_as != LMWB_DTYPE_F16 && store_as != LMWB_DTYPE_BF16) {
    lmwb_input_error(error, "transcoder weights can be stored as F32, F16 or BF16, not %s", lmwb_dtype_name(store_as));
    return FALSE;
  }
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    lmwb_input_error(error, "cannot create the folder %s", dir);
    return FALSE;
  }
  gboolean transcoder = tc->in.kind != tc->out.kind || tc->in.layer != tc->out.layer;
  const char *arch = transcoder ? (tc->W_skip ? "skip_transcoder" : tc->act == LMWB_TC_JUMPRELU ? "jumprelu_transcoder"
                                   : tc->act == LMWB_TC_TOPK ? "topk_transcoder" : "transcoder")
                                : tc->act == LMWB_TC_JUMPRELU ? "jumprelu" : tc->act == LMWB_TC_TOPK ? "topk" : "standard";
  g_autofree char *hook = lmwb_site_name(tc->in), *hook_out = lmwb_site_name(tc->out);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
#define KS(k, v) (json_builder_set_member_name(b, k), json_builder_add_string_value(b, v))
#define KI(k, v) (json_builder_set_member_name(b, k), json_builder_add_int_value(b, v))
#define KB(k, v) (json_builder_set_member_name(b, k), json_builder_add_boolean_value(b, v))
  KS("architecture", arch);
  KI("d_in", tc->d_in);
  KI("d_sae", tc->d_sae);
  if (transcoder) KI("d_out", tc->d_out);
  KS("dtype", "float32");
  KS("device", "cpu");
  KB("apply_b_dec_to_input", tc->apply_b_dec_to_input);
  KS("normalize_activations", "none");
  KS("reshape_activations", "none");
  if (tc->act == LMWB_TC_TOPK) KI("k", tc->k);
  json_builder_set_member_name(b, "metadata");
  json_builder_begin_object(b);
  KS("model_name", tc->model_name ? tc->model_name : "");
  KS("hook_name", hook);
  if (transcoder) KS("hook_name_out", hook_out);
  KS("sae_lens_version", "6.0.0 (written by LM Workbench)");
  json_builder_end_object(b);
  json_builder_end_object(b);
#undef KS
#undef KI
#undef KB
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  size_t len = 0;
  g_autofree char *text = lmwb_json_generate(root, TRUE, &len);
  g_autofree char *cfg_path = g_build_filename(dir, "cfg.json", NULL);
  g_autofree char *w_path = g_build_filename(dir, "sae_weights.safetensors", NULL);
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  int64_t enc[2] = {tc->d_in, tc->d_sae}, dec[2] = {tc->d_sae, tc->d_out}, bs[1] = {tc->d_sae}, bd[1] = {tc->d_out},
          skip[2] = {tc->d_out, tc->d_in};
  lmwb_safetensors_writer_add_f32(w, "W_enc", store_as, enc, 2, tc->W_enc);
  lmwb_safetensors_writer_add_f32(w, "b_enc", store_as, bs, 1, tc->b_enc);
  lmwb_safetensors_writer_add_f32(w, "W_dec", store_as, dec, 2, tc->W_dec);
  lmwb_safetensors_writer_add_f32(w, "b_dec", store_as, bd, 1, tc->b_dec);
  if (tc->threshold) lmwb_safetensors_writer_add_f32(w, "threshold", store_as, bs, 1, tc->threshold);
  if (tc->W_skip) lmwb_safetensors_writer_add_f32(w, "W_skip", store_as, skip, 2, tc->W_skip);
  gboolean ok = lmwb_safetensors_writer_save(w, w_path, error) && lmwb_file_write_atomic(cfg_path, text, len, error);
  lmwb_safetensors_writer_free(w);
  return ok;
}

/* ---- circuit-tracer -------------------------------------------------------------------------------- */

/* The subset of YAML a circuit-tracer config.yaml uses: "key: scalar" lines and "key:" followed by
 * "  - item" lines; comments and blank lines. Values lose their quotes. Anything else is an error
 * naming the line. */
static GHashTable *read_yaml(const char *path, GError **error) {
  g_autofree char *text = lmwb_file_read(path, CFG_MAX_BYTES, LMWB_READ_REGULAR, NULL, error);
  if (!text) return NULL;
  GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  GString *list = NULL;
  char *list_key = NULL;
  for (int i = 0; lines[i]; i++) {
    char *line = lines[i];
    char *hash = strchr(line, '#');
    if (hash && (hash == line || hash[-1] == ' ')) *hash = 0;
    g_strchomp(line);
    char *t = line + strspn(line, " \t");
    if (!*t) continue;
    if (t[0] == '-' && (t[1] == ' ' || !t[1]) && list_key) {
      char *v = g_strstrip(t + 1);
      size_t n = strlen(v);
      if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) v[n - 1] = 0, v++;
      if (list->len) g_string_append_c(list, '\n');
      g_string_append(list, v);
      continue;
    }
    if (list_key) {
      g_hash_table_replace(h, list_key, g_string_free(list, FALSE));
      list_key = NULL;
    }
    char *colon = strchr(t, ':');
    if (t != line || !colon || colon == t) {
      lmwb_input_error(error, "%s: line %d: expected \"key: value\" or a \"- item\" list", path, i + 1);
      g_hash_table_destroy(h);
      return NULL;
    }
    *colon = 0;
    char *key = g_strstrip(t), *v = g_strstrip(colon + 1);
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) v[n - 1] = 0, v++;
    if (!*v) {
      list_key = g_strdup(key);
      list = g_string_new(NULL);
    } else {
      g_hash_table_replace(h, g_strdup(key), g_strdup(v));
    }
  }
  if (list_key) g_hash_table_replace(h, list_key, g_string_free(list, FALSE));
  return h;
}

/* "ln2.hook_normalized" (circuit-tracer names hooks per block) -> the site at a layer. */
static gboolean ct_site(const LmwbConfig *cfg, const char *path, const char *field, const char *hook, int layer,
                        LmwbSite *out, GError **error) {
  g_autofree char *full = g_strdup_printf("blocks.%d.%s", layer, hook ? hook : "");
  if (!hook || !lmwb_site_parse(cfg, full, out, NULL)) {
    lmwb_input_error(error, "%s: %s \"%s\" is not a per-layer hook site (e.g. ln2.hook_normalized)", path, field,
                     hook ? hook : "");
    return FALSE;
  }
  return TRUE;
}

static LmwbTranscoderSet *load_circuit_tracer(const char *dir, const LmwbConfig *cfg, GError **error) {
  g_autofree char *yaml = g_build_filename(dir, "config.yaml", NULL);
  GHashTable *h = read_yaml(yaml, error);
  if (!h) return NULL;
  const char *hin = g_hash_table_lookup(h, "feature_input_hook"), *hout = g_hash_table_lookup(h, "feature_output_hook");
  const char *act_s = g_hash_table_lookup(h, "activation"), *k_s = g_hash_table_lookup(h, "k");
  LmwbTranscoderSet *set = lmwb_transcoder_set_new(cfg->n_layer);
  set->source = g_strdup(dir);
  gboolean ok = TRUE;
  for (int L = 0; ok && L < cfg->n_layer; L++) {
    g_autofree char *name = g_strdup_printf("layer_%d.safetensors", L);
    g_autofree char *path = g_build_filename(dir, name, NULL);
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
      lmwb_input_error(error, "%s: the set has no %s (every layer of the %d-layer model needs a transcoder)", dir, name,
                       cfg->n_layer);
      ok = FALSE;
      break;
    }
    LmwbSite in, out;
    ok = ct_site(cfg, yaml, "feature_input_hook", hin, L, &in, error) &&
         ct_site(cfg, yaml, "feature_output_hook", hout, L, &out, error);
    if (!ok) break;
    /* The sizes come from the biases; the activation from the file or the config. */
    LmwbSafetensors *st = lmwb_safetensors_open(path, error);
    if (!st) {
      ok = FALSE;
      break;
    }
    const LmwbTensorView *be = lmwb_safetensors_find(st, "b_enc"), *bd = lmwb_safetensors_find(st, "b_dec");
    gboolean jump = lmwb_safetensors_find(st, "activation_function.threshold") != NULL;
    const LmwbTensorView *kt = lmwb_safetensors_find(st, "k");
    int64_t d_sae = be && be->ndim == 1 ? be->shape[0] : 0, d_model = bd && bd->ndim == 1 ? bd->shape[0] : 0;
    int k = 0;
    if (kt && lmwb_tensor_numel(kt) == 1 && (kt->dtype == LMWB_DTYPE_I64 || kt->dtype == LMWB_DTYPE_I32)) {
      int64_t v = 0;
      memcpy(&v, kt->data, kt->dtype == LMWB_DTYPE_I64 ? 8 : 4);
      k = (int)(kt->dtype == LMWB_DTYPE_I64 ? v : (int32_t)v);
    } else if (k_s) {
      k = atoi(k_s);
    }
    lmwb_safetensors_close(st);
    if (d_sae < 1 || d_model < 1 || d_sae > G_MAXINT || d_model > G_MAXINT) {
      lmwb_input_error(error, "%s: b_enc and b_dec must be vectors (they give d_sae and d_model)", path);
      ok = FALSE;
      break;
    }
    LmwbTcActivation act = jump ? LMWB_TC_JUMPRELU : (act_s && !strcmp(act_s, "topk")) || kt ? LMWB_TC_TOPK : LMWB_TC_RELU;
    LmwbTranscoder *tc = lmwb_transcoder_new((int)d_model, (int)d_sae, (int)d_model, act, k, error);
    if (!tc) {
      ok = FALSE;
      break;
    }
    tc->in = in;
    tc->out = out;
    tc->model_name = g_strdup(g_hash_table_lookup(h, "model_name"));
    set->layers[L] = tc;
    ok = read_weights(tc, path, TRUE, "activation_function.threshold", error) &&
         lmwb_transcoder_check(tc, cfg, path, error);
  }
  g_hash_table_destroy(h);
  if (!ok) g_clear_pointer(&set, lmwb_transcoder_set_free);
  return set;
}

static gboolean save_circuit_tracer(const LmwbTranscoderSet *s, const char *dir, const char *model_name, GError **error) {
  GString *y = g_string_new("# A per-layer transcoder set (circuit-tracer format), written by LM Workbench.\n");
  g_string_append_printf(y, "model_name: \"%s\"\nmodel_kind: transcoder_set\nscan: \"%s\"\n", model_name ? model_name : "",
                         model_name ? model_name : "lmwb");
  const LmwbTranscoder *t0 = s->layers[0];
  g_autofree char *in = lmwb_site_name(t0->in), *out = lmwb_site_name(t0->out);
  /* blocks.0.ln2.hook_normalized -> ln2.hook_normalized */
  g_string_append_printf(y, "feature_input_hook: \"%s\"\nfeature_output_hook: \"%s\"\n", strchr(in + 7, '.') + 1,
                         strchr(out + 7, '.') + 1);
  g_string_append_printf(y, "activation: %s\n", lmwb_tc_activation_name(t0->act));
  if (t0->act == LMWB_TC_TOPK) g_string_append_printf(y, "k: %d\n", t0->k);
  g_string_append(y, "transcoders:\n");
  gboolean ok = TRUE;
  for (int L = 0; ok && L < s->n_layers; L++) {
    const LmwbTranscoder *tc = s->layers[L];
    g_autofree char *name = g_strdup_printf("layer_%d.safetensors", L);
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_string_append_printf(y, "  - \"%s\"\n", name);
    /* W_enc is stored [d_sae, d_in] here */
    float *enc_t = g_try_new(float, (size_t)tc->d_in * tc->d_sae);
    if (!enc_t) {
      lmwb_input_error(error, "out of memory writing %s", path);
      ok = FALSE;
      break;
    }
    for (int i = 0; i < tc->d_in; i++)
      for (int j = 0; j < tc->d_sae; j++) enc_t[(size_t)j * tc->d_in + i] = tc->W_enc[(size_t)i * tc->d_sae + j];
    LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
    int64_t enc[2] = {tc->d_sae, tc->d_in}, dec[2] = {tc->d_sae, tc->d_out}, bs[1] = {tc->d_sae}, bd[1] = {tc->d_out},
            skip[2] = {tc->d_out, tc->d_in}, one[1] = {1};
    int64_t k = tc->k;
    lmwb_safetensors_writer_add_f32(w, "W_enc", LMWB_DTYPE_F32, enc, 2, enc_t);
    lmwb_safetensors_writer_add_f32(w, "b_enc", LMWB_DTYPE_F32, bs, 1, tc->b_enc);
    lmwb_safetensors_writer_add_f32(w, "W_dec", LMWB_DTYPE_F32, dec, 2, tc->W_dec);
    lmwb_safetensors_writer_add_f32(w, "b_dec", LMWB_DTYPE_F32, bd, 1, tc->b_dec);
    if (tc->threshold) lmwb_safetensors_writer_add_f32(w, "activation_function.threshold", LMWB_DTYPE_F32, bs, 1, tc->threshold);
    if (tc->W_skip) lmwb_safetensors_writer_add_f32(w, "W_skip", LMWB_DTYPE_F32, skip, 2, tc->W_skip);
    if (tc->act == LMWB_TC_TOPK) lmwb_safetensors_writer_add_raw(w, "k", LMWB_DTYPE_I64, one, 1, &k, sizeof k);
    ok = lmwb_safetensors_writer_save(w, path, error);
    lmwb_safetensors_writer_free(w);
    g_free(enc_t);
  }
  g_autofree char *yaml = g_build_filename(dir, "config.yaml", NULL);
  ok = ok && lmwb_file_write_atomic(yaml, y->str, y->len, error);
  g_string_free(y, TRUE);
  return ok;
}

/* ---- sets ------------------------------------------------------------------------------------------ */

LmwbTranscoderSet *lmwb_transcoder_set_load(const char *dir, const LmwbConfig *cfg, GError **error) {
  if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
    lmwb_input_error(error, "%s: not a folder (a transcoder set is a folder of layer_{i}/ or layer_{i}.safetensors)", dir);
    return NULL;
  }
  g_autofree char *yaml = g_build_filename(dir, "config.yaml", NULL);
  if (g_file_test(yaml, G_FILE_TEST_EXISTS)) return load_circuit_tracer(dir, cfg, error);
  LmwbTranscoderSet *set = lmwb_transcoder_set_new(cfg->n_layer);
  set->source = g_strdup(dir);
  for (int L = 0; L < cfg->n_layer; L++) {
    g_autofree char *sub = g_strdup_printf("layer_%d", L);
    g_autofree char *path = g_build_filename(dir, sub, NULL);
    g_autofree char *cfg_json = g_build_filename(path, "cfg.json", NULL);
    if (!g_file_test(cfg_json, G_FILE_TEST_EXISTS)) {
      lmwb_input_error(error, "%s: no %s/cfg.json (a SAELens transcoder per layer) and no config.yaml (circuit-tracer): "
                       "every layer of the %d-layer model needs a transcoder", dir, sub, cfg->n_layer);
      lmwb_transcoder_set_free(set);
      return NULL;
    }
    set->layers[L] = lmwb_transcoder_load_saelens(path, error);
    if (!set->layers[L] || !lmwb_transcoder_check(set->layers[L], cfg, path, error)) {
      lmwb_transcoder_set_free(set);
      return NULL;
    }
    if (set->layers[L]->in.layer != L || set->layers[L]->in.kind != LMWB_SITE_LN2 ||
        set->layers[L]->out.kind != LMWB_SITE_MLP_OUT || set->layers[L]->out.layer != L) {
      g_autofree char *a = lmwb_site_name(set->layers[L]->in), *b = lmwb_site_name(set->layers[L]->out);
      lmwb_input_error(error, "%s: reads %s and writes %s, but layer %d's transcoder must read "
                       "blocks.%d.ln2.hook_normalized and write blocks.%d.hook_mlp_out", path, a, b, L, L, L);
      lmwb_transcoder_set_free(set);
      return NULL;
    }
  }
  return set;
}

gboolean lmwb_transcoder_set_save(const LmwbTranscoderSet *s, const char *dir, LmwbTcFormat format,
                                  const char *model_name, GError **error) {
  if (s->n_layers < 1) {
    lmwb_input_error(error, "an empty transcoder set cannot be saved");
    return FALSE;
  }
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    lmwb_input_error(error, "cannot create the folder %s", dir);
    return FALSE;
  }
  if (format == LMWB_TC_FORMAT_CIRCUIT_TRACER) return save_circuit_tracer(s, dir, model_name, error);
  for (int L = 0; L < s->n_layers; L++) {
    g_autofree char *sub = g_strdup_printf("layer_%d", L);
    g_autofree char *path = g_build_filename(dir, sub, NULL);
    if (!lmwb_transcoder_save_saelens(s->layers[L], path, error)) return FALSE;
  }
  return TRUE;
}
