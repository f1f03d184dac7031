#include "app/train/trainer.h"
#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/json_input.h"
#include <glib/gstdio.h>
#include "app/core/rng.h"
#include "app/engine/optim.h"
#include "app/engine/runner.h"
#include "app/formats/half.h"
#include "app/formats/safetensors.h"
#include "app/formats/tokenizer.h"
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  char *out, *tokenizer, *init_from, *dtype, *base;
  char *window_start; /* "any" or "eos" */
  LmwbConfig cfg;
  gboolean from_scratch;
  char **train_files, **valid_files;
  gint64 seed, batch, seq, grad_accum, steps, warmup, eval_every, eval_batches, checkpoint_every, threads;
  double lr, min_lr, weight_decay, beta1, beta2, eps, grad_clip;
} Recipe;

static void recipe_clear(Recipe *r) {
  g_free(r->out);
  g_free(r->tokenizer);
  g_free(r->init_from);
  g_free(r->dtype);
  g_free(r->window_start);
  g_free(r->base);
  g_strfreev(r->train_files);
  g_strfreev(r->valid_files);
}

static char *resolve(const char *base, const char *p) {
  return g_path_is_absolute(p) ? g_strdup(p) : g_build_filename(base, p, NULL);
}

static gboolean num_member(JsonObject *o, const char *k, double *out, const char *origin, GError **error) {
  if (!json_object_has_member(o, k)) return TRUE;
  JsonNode *n = json_object_get_member(o, k);
  if (!JSON_NODE_HOLDS_VALUE(n) || (json_node_get_value_type(n) != G_TYPE_INT64 && json_node_get_value_type(n) != G_TYPE_DOUBLE)) {
    lmwb_input_error(error, "%s: \"%s\" must be a number", origin, k);
    return FALSE;
  }
  *out = json_node_get_double(n);
  return TRUE;
}

static gboolean int_member(JsonObject *o, const char *k, gint64 *out, const char *origin, GError **error) {
  if (!json_object_has_member(o, k)) return TRUE;
  JsonNode *n = json_object_get_member(o, k);
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) {
    lmwb_input_error(error, "%s: \"%s\" must be an integer", origin, k);
    return FALSE;
  }
  *out = json_node_get_int(n);
  return TRUE;
}

static gboolean str_member(JsonObject *o, const char *k, char **out, const char *origin, GError **error) {
  if (!json_object_has_member(o, k)) return TRUE;
  JsonNode *n = json_object_get_member(o, k);
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
    lmwb_input_error(error, "%s: \"%s\" must be a string", origin, k);
    return FALSE;
  }
  g_free(*out);
  *out = g_strdup(json_node_get_string(n));
  return TRUE;
}

static gboolean files_member(JsonObject *o, const char *k, char ***out, const char *base, const char *origin, GError **error) {
  if (!json_object_has_member(o, k)) {
    lmwb_input_error(error, "%s: \"%s\" (a list of text files) is required", origin, k);
    return FALSE;
  }
  JsonNode *n = json_object_get_member(o, k);
  if (!JSON_NODE_HOLDS_ARRAY(n) || json_array_get_length(json_node_get_array(n)) == 0) {
    lmwb_input_error(error, "%s: \"%s\" must be a non-empty list of file names", origin, k);
    return FALSE;
  }
  JsonArray *a = json_node_get_array(n);
  guint len = json_array_get_length(a);
  char **v = g_new0(char *, len + 1);
  for (guint i = 0; i < len; i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING) {
      g_strfreev(v);
      lmwb_input_error(error, "%s: \"%s\"[%u] must be a file name", origin, k, i);
      return FALSE;
    }
    v[i] = resolve(base, json_node_get_string(e));
  }
  *out = v;
  return TRUE;
}

static gboolean check_keys(JsonObject *o, const char *const *known, const char *where, const char *origin, GError **error) {
  g_autoptr(GList) keys = json_object_get_members(o);
  for (GList *l = keys; l; l = l->next) {
    gboolean ok = FALSE;
    for (const char *const *k = known; *k; k++) ok = ok || !strcmp(*k, l->data);
    if (!ok) {
      g_autofree char *list = g_strjoinv(", ", (char **)known);
      lmwb_input_error(error, "%s: unknown key \"%s\" in %s (known: %s)", origin, (const char *)l->data, where, list);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean parse_recipe(const char *path, Recipe *r, GError **error) {
  memset(r, 0, sizeof *r);
  r->seed = 1; r->batch = 8; r->seq = 128; r->grad_accum = 1; r->steps = 1000; r->warmup = 100;
  r->eval_every = 100; r->eval_batches = 8; r->checkpoint_every = 200; r->threads = 0;
  r->lr = 1e-3; r->min_lr = 1e-4; r->weight_decay = 0.1; r->beta1 = 0.9; r->beta2 = 0.95; r->eps = 1e-8; r->grad_clip = 1.0;
  r->dtype = g_strdup("F32");
  r->window_start = g_strdup("any");
  g_autoptr(JsonNode) root = lmwb_json_load_file(path, (uint64_t)16 << 20, error);
  if (!root) {
    g_prefix_error(error, "recipe ");
    return FALSE;
  }
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(error, "recipe %s: expected a JSON object", path);
    return FALSE;
  }
  JsonObject *o = json_node_get_object(root);
  static const char *const known[] = {"out", "tokenizer", "init_from", "model", "train_files", "valid_files", "seed",
    "batch", "seq", "grad_accum", "steps", "lr", "min_lr", "warmup", "weight_decay", "beta1", "beta2", "eps",
    "grad_clip", "eval_every", "eval_batches", "checkpoint_every", "dtype", "threads", "window_start", "comment", NULL};
  if (!check_keys(o, known, "the recipe", path, error)) return FALSE;
  g_autofree char *dir = g_path_get_dirname(path);
  r->base = g_strdup(dir);
  char *out = NULL, *tok = NULL, *init = NULL;
  gboolean ok = str_member(o, "out", &out, path, error) && str_member(o, "tokenizer", &tok, path, error) &&
                str_member(o, "init_from", &init, path, error) && str_member(o, "dtype", &r->dtype, path, error) &&
                str_member(o, "window_start", &r->window_start, path, error) &&
                int_member(o, "seed", &r->seed, path, error) && int_member(o, "batch", &r->batch, path, error) &&
                int_member(o, "seq", &r->seq, path, error) && int_member(o, "grad_accum", &r->grad_accum, path, error) &&
                int_member(o, "steps", &r->steps, path, error) && int_member(o, "warmup", &r->warmup, path, error) &&
                int_member(o, "eval_every", &r->eval_every, path, error) &&
                int_member(o, "eval_batches", &r->eval_batches, path, error) &&
                int_member(o, "checkpoint_every", &r->checkpoint_every, path, error) &&
                int_member(o, "threads", &r->threads, path, error) && num_member(o, "lr", &r->lr, path, error) &&
                num_member(o, "min_lr", &r->min_lr, path, error) && num_member(o, "weight_decay", &r->weight_decay, path, error) &&
                num_member(o, "beta1", &r->beta1, path, error) && num_member(o, "beta2", &r->beta2, path, error) &&
                num_member(o, "eps", &r->eps, path, error) && num_member(o, "grad_clip", &r->grad_clip, path, error) &&
                files_member(o, "train_files", &r->train_files, dir, path, error) &&
                files_member(o, "valid_files", &r->valid_files, dir, path, error);
  if (out) r->out = resolve(dir, out);
  if (tok) r->tokenizer = resolve(dir, tok);
  if (init) r->init_from = resolve(dir, init);
  g_free(out); g_free(tok); g_free(init);
  if (!ok) return FALSE;
#define NEED(cond, ...) do { if (!(cond)) { lmwb_input_error(error, __VA_ARGS__); return FALSE; } } while (0)
  NEED(r->out, "recipe %s: \"out\" (the output folder) is required", path);
  NEED((r->tokenizer != NULL) != (r->init_from != NULL), "recipe %s: give exactly one of \"tokenizer\" (train from scratch) or \"init_from\" (fine-tune)", path);
  NEED(r->batch >= 1 && r->batch <= 4096, "recipe %s: batch %" G_GINT64_FORMAT " must be in 1..4096", path, r->batch);
  NEED(r->seq >= 2 && r->seq <= 65536, "recipe %s: seq %" G_GINT64_FORMAT " must be in 2..65536", path, r->seq);
  NEED(r->grad_accum >= 1 && r->grad_accum <= 1024, "recipe %s: grad_accum must be in 1..1024", path);
  NEED(r->steps >= 1 && r->steps <= 100000000, "recipe %s: steps must be >= 1", path);
  NEED(r->warmup >= 0 && r->eval_every >= 1 && r->eval_batches >= 1 && r->checkpoint_every >= 1,
       "recipe %s: warmup >= 0, eval_every, eval_batches and checkpoint_every >= 1 are required", path);
  NEED(r->lr > 0 && r->lr < 10 && r->min_lr >= 0 && r->min_lr <= r->lr, "recipe %s: need 0 < lr < 10 and 0 <= min_lr <= lr", path);
  NEED(r->beta1 >= 0 && r->beta1 < 1, "recipe %s: beta1 %g must be in [0, 1)", path, r->beta1);
  NEED(r->beta2 >= 0 && r->beta2 < 1, "recipe %s: beta2 %g must be in [0, 1)", path, r->beta2);
  NEED(r->eps > 0 && r->eps < 1, "recipe %s: eps %g must be in (0, 1)", path, r->eps);
  NEED(r->weight_decay >= 0, "recipe %s: weight_decay %g must be >= 0", path, r->weight_decay);
  NEED(r->grad_clip >= 0, "recipe %s: grad_clip %g must be >= 0 (0 turns clipping off)", path, r->grad_clip);
  NEED(!strcmp(r->dtype, "F32") || !strcmp(r->dtype, "F16") || !strcmp(r->dtype, "BF16"), "recipe %s: dtype \"%s\" must be F32, F16 or BF16", path, r->dtype);
  NEED(r->threads >= 0 && r->threads <= 1024, "recipe %s: threads out of range", path);
  NEED(!strcmp(r->window_start, "any") || !strcmp(r->window_start, "eos"),
       "recipe %s: window_start \"%s\" must be any or eos", path, r->window_start);
  r->from_scratch = r->tokenizer != NULL;
  if (r->from_scratch) {
    NEED(json_object_has_member(o, "model") && JSON_NODE_HOLDS_OBJECT(json_object_get_member(o, "model")),
         "recipe %s: \"model\" (an object with architecture and sizes) is required when training from scratch", path);
    JsonObject *mo = json_object_get_object_member(o, "model");
    static const char *const mknown[] = {"architecture", "n_layer", "d_model", "n_head", "n_kv_head", "d_ff", "context", "rope_theta", NULL};
    if (!check_keys(mo, mknown, "\"model\"", path, error)) return FALSE;
    g_autofree char *arch = g_strdup("gpt2");
    gint64 nl = 0, dm = 0, nh = 0, nkv = 0, dff = 0, ctx = 0;
    double theta = 10000;
    if (!str_member(mo, "architecture", &arch, path, error) || !int_member(mo, "n_layer", &nl, path, error) ||
        !int_member(mo, "d_model", &dm, path, error) || !int_member(mo, "n_head", &nh, path, error) ||
        !int_member(mo, "n_kv_head", &nkv, path, error) || !int_member(mo, "d_ff", &dff, path, error) ||
        !int_member(mo, "context", &ctx, path, error) || !num_member(mo, "rope_theta", &theta, path, error))
      return FALSE;
    NEED(nl >= 1 && nl <= 256 && dm >= 1 && dm <= 65536 && nh >= 1 && nh <= dm && ctx >= 2 && ctx <= 1 << 20,
         "recipe %s: model sizes out of range (n_layer 1..256, d_model >= n_head >= 1, context >= 2)", path);
    NEED(dm % nh == 0, "recipe %s: d_model %" G_GINT64_FORMAT " is not divisible by n_head %" G_GINT64_FORMAT, path, dm, nh);
    NEED(r->seq <= ctx, "recipe %s: seq %" G_GINT64_FORMAT " exceeds the model context %" G_GINT64_FORMAT, path, r->seq, ctx);
    LmwbConfig *c = &r->cfg;
    memset(c, 0, sizeof *c);
    c->n_layer = (int)nl; c->d_model = (int)dm; c->n_head = (int)nh; c->head_dim = (int)(dm / nh);
    c->n_kv_head = nkv > 0 ? (int)nkv : (int)nh; c->n_ctx = (int)ctx; c->bos_id = c->eos_id = -1;
    if (!strcmp(arch, "gpt2")) {
      g_strlcpy(c->model_type, "gpt2", sizeof c->model_type);
      c->arch = LMWB_ARCH_GPT2; c->norm = LMWB_NORM_LAYER; c->norm_eps = 1e-5f; c->learned_pos = true;
      c->act = LMWB_ACT_GELU_TANH; c->d_ff = dff > 0 ? (int)dff : 4 * (int)dm; c->tied_head = true;
      c->qkv_bias = c->o_bias = c->mlp_bias = c->norm_bias = true;
      NEED(c->n_kv_head == c->n_head, "recipe %s: gpt2 has no grouped-query attention (n_kv_head must equal n_head)", path);
    } else if (!strcmp(arch, "llama")) {
      g_strlcpy(c->model_type, "llama", sizeof c->model_type);
      c->arch = LMWB_ARCH_LLAMA; c->norm = LMWB_NORM_RMS; c->norm_eps = 1e-5f; c->rope_theta = (float)theta;
      c->rotary_dim = c->head_dim; c->gated_mlp = true; c->act = LMWB_ACT_SILU;
      c->d_ff = dff > 0 ? (int)dff : (int)(8 * dm / 3); c->tied_head = true;
    } else {
      NEED(FALSE, "recipe %s: architecture \"%s\" cannot be trained (gpt2, llama)", path, arch);
    }
  }
  return TRUE;
#undef NEED
}

/* ---- data ----------------------------------------------------------------------------------- */

static int32_t *tokenize_files(const LmwbTokenizer *tok, char **files, size_t *n, GError **error) {
  GArray *all = g_array_new(FALSE, FALSE, sizeof(int32_t));
  guint n_files = g_strv_length(files);
  g_autofree guint *start = g_new0(guint, n_files + 1); /* file i's tokens: all[start[i], start[i+1]) */
  for (char **f = files; *f; f++) {
    guint i = (guint)(f - files);
    start[i] = all->len;
    /* A file listed again (to weight it) is not read and encoded again: its tokens are copied. */
    guint same = 0;
    while (same < i && strcmp(files[same], *f) != 0) same++;
    if (same < i) {
      guint len = start[same + 1] - start[same];
      g_array_set_size(all, all->len + len);
      memcpy(&g_array_index(all, int32_t, start[i]), &g_array_index(all, int32_t, start[same]), len * sizeof(int32_t));
      start[i + 1] = all->len;
      continue;
    }
    size_t len = 0;
    g_autofree char *text = lmwb_file_read(*f, LMWB_CORPUS_MAX_BYTES, LMWB_READ_REGULAR, &len, error);
    if (!text) {
      g_prefix_error(error, "corpus file ");
      g_array_free(all, TRUE);
      return NULL;
    }
    if (len == 0) {
      lmwb_input_error(error, "corpus file %s is empty", *f);
      g_array_free(all, TRUE);
      return NULL;
    }
    size_t k = 0;
    int32_t *ids = lmwb_tokenizer_encode(tok, text, len, FALSE, &k, error);
    if (!ids) {
      g_prefix_error(error, "%s: ", *f);
      g_array_free(all, TRUE);
      return NULL;
    }
    g_array_append_vals(all, ids, (guint)k);
    g_free(ids);
    start[i + 1] = all->len;
  }
  *n = all->len;
  return (int32_t *)g_array_free(all, FALSE);
}

size_t *lmwb_eos_window_starts(const int32_t *ids, size_t n_ids, int32_t eos, size_t span, size_t *n) {
  GArray *a = g_array_new(FALSE, FALSE, sizeof(size_t));
  for (size_t i = 0; i + span <= n_ids; i++)
    if (ids[i] == eos) g_array_append_val(a, i);
  *n = a->len;
  if (!a->len) {
    g_array_free(a, TRUE);
    return NULL;
  }
  return (size_t *)g_array_free(a, FALSE);
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

static gboolean save_checkpoint(const char *dir, const LmwbModel *m, const LmwbAdamW *opt, gint64 step, guint64 rng,
                                GError **error) {
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    lmwb_input_error(error, "cannot create %s", dir);
    return FALSE;
  }
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  int64_t shape[1] = {(int64_t)m->n_params};
  lmwb_safetensors_writer_add_f32(w, "params", LMWB_DTYPE_F32, shape, 1, m->params);
  lmwb_safetensors_writer_add_f32(w, "adam_m", LMWB_DTYPE_F32, shape, 1, opt->m);
  lmwb_safetensors_writer_add_f32(w, "adam_v", LMWB_DTYPE_F32, shape, 1, opt->v);
  g_autofree char *s_step = g_strdup_printf("%" G_GINT64_FORMAT, step);
  g_autofree char *s_rng = g_strdup_printf("%" G_GUINT64_FORMAT, rng);
  g_autofree char *s_cfg = lmwb_config_to_json(&m->cfg, NULL);
  lmwb_safetensors_writer_set_metadata(w, "step", s_step);
  lmwb_safetensors_writer_set_metadata(w, "rng", s_rng);
  lmwb_safetensors_writer_set_metadata(w, "config", s_cfg);
  g_autofree char *path = g_build_filename(dir, "state.safetensors", NULL);
  gboolean ok = lmwb_safetensors_writer_save(w, path, error);
  lmwb_safetensors_writer_free(w);
  return ok;
}

static gboolean load_checkpoint(const char *dir, LmwbModel *m, LmwbAdamW *opt, gint64 *step, guint64 *rng, GError **error) {
  g_autofree char *path = g_build_filename(dir, "state.safetensors", NULL);
  LmwbSafetensors *st = lmwb_safetensors_open(path, error);
  if (!st) return FALSE;
  gboolean ok = TRUE;
  const char *names[3] = {"params", "adam_m", "adam_v"};
  float *dst[3] = {m->params, opt->m, opt->v};
  g_autofree char *want_cfg = lmwb_config_to_json(&m->cfg, NULL);
  const char *cfg = lmwb_safetensors_metadata(st, "config");
  if (!cfg || strcmp(cfg, want_cfg)) {
    lmwb_input_error(error, "checkpoint %s was made for a model of another shape than this recipe's; "
                     "remove it or train into another \"out\" folder", path);
    ok = FALSE;
  }
  for (int i = 0; ok && i < 3; i++) {
    const LmwbTensorView *t = lmwb_safetensors_find(st, names[i]);
    if (!t || t->ndim != 1 || t->shape[0] != (int64_t)m->n_params || t->dtype != LMWB_DTYPE_F32) {
      lmwb_input_error(error, "checkpoint %s: tensor \"%s\" is missing or has another shape than this model (%zu)",
                       path, names[i], m->n_params);
      ok = FALSE;
    } else {
      ok = lmwb_tensor_to_f32(t, dst[i], error);
      if (ok && lmwb_f32_find_nonfinite(dst[i], m->n_params) < m->n_params) {
        lmwb_input_error(error, "checkpoint %s: tensor \"%s\" holds a non-finite value (NaN or infinity)", path, names[i]);
        ok = FALSE;
      }
    }
  }
  const char *s = ok ? lmwb_safetensors_metadata(st, "step") : NULL;
  const char *rs = ok ? lmwb_safetensors_metadata(st, "rng") : NULL;
  if (ok && (!s || !rs)) {
    lmwb_input_error(error, "checkpoint %s: step or rng state missing", path);
    ok = FALSE;
  }
  if (ok) {
    *step = g_ascii_strtoll(s, NULL, 10);
    *rng = g_ascii_strtoull(rs, NULL, 10);
    opt->step = *step;
  }
  lmwb_safetensors_close(st);
  /* Read only to be continued and replaced: not an input to protect from this run's saves. */
  lmwb_input_guard_forget(path);
  return ok;
}

/* ---- training ------------------------------------------------------------------------------- */

/* Mean validation loss; NAN on error or when cancel was requested (checked between batches). */
static double validate(LmwbRunner *r, const int32_t *val, size_t n_val, const size_t *starts, size_t n_starts,
                       const Recipe *rc, LmwbReporter *rep, GError **error) {
  int B = (int)rc->batch, T = (int)rc->seq;
  size_t span = n_val > (size_t)T + 1 ? n_val - T - 1 : 0;
  g_autofree int32_t *ids = g_new(int32_t, (size_t)B * T);
  g_autofree int32_t *tg = g_new(int32_t, (size_t)B * T);
  g_autofree float *losses = g_new(float, (size_t)B * T);
  double sum = 0;
  size_t cnt = 0;
  size_t total = (size_t)rc->eval_batches * B;
  for (gint64 k = 0; k < rc->eval_batches; k++) {
    for (int b = 0; b < B; b++) {
      size_t start = starts ? starts[(n_starts * (k * B + b)) / total] : span ? (span * (k * B + b)) / total : 0;
      memcpy(ids + (size_t)b * T, val + start, (size_t)T * sizeof(int32_t));
      memcpy(tg + (size_t)b * T, val + start + 1, (size_t)T * sizeof(int32_t));
    }
    if (lmwb_reporter_cancelled(rep, NULL) || !lmwb_runner_forward(r, ids, B, T, NULL, error)) return NAN;
    lmwb_runner_token_losses(r, tg, losses);
    for (size_t i = 0; i < (size_t)B * T; i++) {
      sum += losses[i];
      cnt++;
    }
  }
  return sum / cnt;
}

void lmwb_train_result_clear(LmwbTrainResult *r) { g_clear_pointer(&r->out_dir, g_free); }

gboolean lmwb_train(const char *recipe_path, gboolean resume, int64_t max_steps_this_run, LmwbReporter *rep,
                    LmwbTrainResult *res, GError **error) {
  memset(res, 0, sizeof *res);
  Recipe rc;
  if (!parse_recipe(recipe_path, &rc, error)) {
    recipe_clear(&rc);
    return FALSE;
  }
  gboolean ok = FALSE;
  LmwbModel *m = NULL;
  LmwbTokenizer *tok = NULL;
  LmwbRunner *r = NULL;
  LmwbAdamW *opt = NULL;
  int32_t *train = NULL, *val = NULL;
  FILE *csv = NULL;
  uint8_t *mask = NULL;
  size_t n_train = 0, n_val = 0, n_train_starts = 0, n_val_starts = 0;
  size_t *train_starts = NULL, *val_starts = NULL;
  char *ckpt = NULL, *ckpt_file = NULL, *csv_path = NULL;
  int32_t *ids = NULL, *tg = NULL;
  const char *tok_dir = rc.from_scratch ? rc.tokenizer : rc.init_from;

  /* Everything that can be wrong with the input is checked before training starts. */
  if (rc.from_scratch) {
    tok = lmwb_tokenizer_load_dir(rc.tokenizer, error);
    if (!tok) goto done;
    rc.cfg.vocab_size = lmwb_tokenizer_vocab_size(tok);
    rc.cfg.eos_id = lmwb_tokenizer_eos(tok);
    rc.cfg.bos_id = lmwb_tokenizer_bos(tok);
    if (!lmwb_config_validate(&rc.cfg, error)) goto done;
    m = lmwb_model_new_random(&rc.cfg, (guint64)rc.seed, error);
    if (!m) goto done;
    m->tokenizer = tok;
    m->dir = g_strdup(rc.tokenizer);
  } else {
    m = lmwb_model_load(rc.init_from, error);
    if (!m) goto done;
    if (!m->tokenizer) {
      lmwb_input_error(error, "%s has no tokenizer to train with", rc.init_from);
      goto done;
    }
    if (rc.seq > m->cfg.n_ctx) {
      lmwb_input_error(error, "recipe %s: seq %" G_GINT64_FORMAT " exceeds the model context %d", recipe_path, rc.seq, m->cfg.n_ctx);
      goto done;
    }
    tok = m->tokenizer;
  }
  if (rc.threads > 0 && m->be->set_threads) m->be->set_threads((int)rc.threads);
  lmwb_report_progress(rep, 0, "tokenizing corpus");
  train = tokenize_files(tok, rc.train_files, &n_train, error);
  if (!train) goto done;
  val = tokenize_files(tok, rc.valid_files, &n_val, error);
  if (!val) goto done;
  if (n_train < (size_t)rc.seq + 2 || n_val < (size_t)rc.seq + 2) {
    lmwb_input_error(error, "the corpus is too small: %zu training and %zu validation tokens for windows of %" G_GINT64_FORMAT,
                     n_train, n_val, rc.seq + 1);
    goto done;
  }
  if (!strcmp(rc.window_start, "eos")) {
    int32_t eos = lmwb_tokenizer_eos(tok);
    if (eos < 0) {
      lmwb_input_error(error, "recipe %s: window_start \"eos\" needs a tokenizer with an end-of-text token", recipe_path);
      goto done;
    }
    train_starts = lmwb_eos_window_starts(train, n_train, eos, (size_t)rc.seq + 1, &n_train_starts); /* + targets */
    val_starts = lmwb_eos_window_starts(val, n_val, eos, (size_t)rc.seq + 1, &n_val_starts);
    if (!train_starts || !val_starts) {
      lmwb_input_error(error, "recipe %s: window_start \"eos\": the %s files hold no end-of-text token with a whole window after it",
                       recipe_path, train_starts ? "validation" : "training");
      goto done;
    }
  }
  mask = g_new0(uint8_t, m->n_params);
  for (int i = 0; i < m->n_info; i++)
    if (m->info[i].ndim == 2)
      memset(mask + m->info[i].offset, 1, (size_t)m->info[i].shape[0] * m->info[i].shape[1]);
  opt = lmwb_adamw_new(m->n_params, (float)rc.beta1, (float)rc.beta2, (float)rc.eps, (float)rc.weight_decay, mask);
  if (!opt) {
    lmwb_input_error(error, "out of memory for the optimiser state");
    goto done;
  }
  ckpt = g_build_filename(rc.out, "checkpoint", NULL);
  ckpt_file = g_build_filename(ckpt, "state.safetensors", NULL);
  gint64 step = 0;
  guint64 rng = (guint64)rc.seed * 0x9E3779B97F4A7C15ull + 7;
  if (resume && g_file_test(ckpt_file, G_FILE_TEST_EXISTS)) {
    if (!load_checkpoint(ckpt, m, opt, &step, &rng, error)) goto done;
    lmwb_report_log(rep, "resuming from step %" G_GINT64_FORMAT, step);
  } else if (!resume && g_file_test(ckpt_file, G_FILE_TEST_EXISTS)) {
    lmwb_input_error(error, "%s already holds a checkpoint: use --resume to continue it, or choose another \"out\"", rc.out);
    goto done;
  }
  if (g_mkdir_with_parents(rc.out, 0755) != 0) {
    lmwb_input_error(error, "cannot create the output folder %s", rc.out);
    goto done;
  }
  csv_path = g_build_filename(rc.out, "metrics.csv", NULL);
  /* The output folder may not be an input (the init_from model, a corpus file's folder...). */
  if (!lmwb_input_guard_check_output(csv_path, error)) goto done;
  csv = fopen(csv_path, step > 0 ? "a" : "w");
  if (!csv) {
    lmwb_input_error(error, "cannot write %s", csv_path);
    goto done;
  }
  if (step == 0) fprintf(csv, "step,tokens,lr,train_loss,valid_loss,grad_norm,tokens_per_s,step_seconds\n");

  r = lmwb_runner_new(m);
  int B = (int)rc.batch, T = (int)rc.seq;
  size_t BT = (size_t)B * T;
  ids = g_new(int32_t, BT);
  tg = g_new(int32_t, BT);
  gint64 t_start = g_get_monotonic_time(), steps_run = 0;
  double last_train = NAN, last_val = NAN;
  ok = TRUE;
  gboolean stop = FALSE;
  while (ok && step < rc.steps) {
    if (stop || lmwb_reporter_cancelled(rep, NULL) || (max_steps_this_run > 0 && steps_run >= max_steps_this_run)) {
      ok = save_checkpoint(ckpt, m, opt, step, rng, error);
      if (ok) g_set_error(error, LMWB_ERROR, LMWB_ERROR_CANCELLED, "training stopped at step %" G_GINT64_FORMAT
                          "; the checkpoint is saved: run again with --resume to continue", step);
      ok = FALSE;
      break;
    }
    double lr = lmwb_lr_schedule(step, rc.warmup, rc.steps, rc.lr, rc.min_lr);
    double loss_sum = 0;
    gint64 t_step = g_get_monotonic_time();
    /* Cancel is also checked between forward and backward passes (a step is ~0.5 s): a step cut
     * short is dropped whole, its batch drawn again on resume, so resuming stays exact. */
    const guint64 rng_at_step = rng;
    for (gint64 a = 0; ok && !stop && a < rc.grad_accum; a++) {
      for (int b = 0; b < B; b++) {
        size_t start = train_starts ? train_starts[lmwb_splitmix64(&rng) % (guint64)n_train_starts]
                                    : (size_t)(lmwb_splitmix64(&rng) % (guint64)(n_train - T - 1));
        memcpy(ids + (size_t)b * T, train + start, (size_t)T * sizeof(int32_t));
        memcpy(tg + (size_t)b * T, train + start + 1, (size_t)T * sizeof(int32_t));
      }
      LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN, .targets = tg};
      LmwbBackwardOptions bo = {.param_grads = true, .accumulate_params = a > 0};
      double lv = 0;
      ok = lmwb_runner_forward(r, ids, B, T, NULL, error);
      stop = ok && lmwb_reporter_cancelled(rep, NULL);
      if (ok && !stop) ok = lmwb_runner_backward(r, &loss, 1, &bo, &lv, error);
      stop = stop || (ok && lmwb_reporter_cancelled(rep, NULL));
      loss_sum += lv;
    }
    if (!ok) break;
    if (stop) {
      rng = rng_at_step;
      continue;
    }
    float *g = lmwb_runner_param_grads(r);
    if (rc.grad_accum > 1) {
      float s = 1.0f / (float)rc.grad_accum;
      for (size_t i = 0; i < m->n_params; i++) g[i] *= s;
    }
    double gn = lmwb_clip_grad_norm(g, m->n_params, rc.grad_clip);
    lmwb_adamw_step(opt, m->params, g, (float)lr);
    lmwb_model_weights_changed(m);
    step++;
    steps_run++;
    double step_s = (g_get_monotonic_time() - t_step) / 1e6; /* forward, backward and the update */
    last_train = loss_sum / rc.grad_accum;
    double el = (g_get_monotonic_time() - t_start) / 1e6;
    double tps = steps_run * (double)BT * rc.grad_accum / MAX(el, 1e-9);
    lmwb_report_metric(rep, "train_loss", (double)step, last_train);
    gboolean eval_now = step % rc.eval_every == 0 || step == rc.steps;
    double vl = NAN;
    if (eval_now) {
      vl = validate(r, val, n_val, val_starts, n_val_starts, &rc, rep, error);
      if (isnan(vl) && lmwb_reporter_cancelled(rep, NULL)) {
        stop = TRUE; /* this step is done: the checkpoint keeps it, without its validation loss */
      } else if (isnan(vl)) {
        ok = FALSE;
        break;
      } else {
        last_val = vl;
        lmwb_report_metric(rep, "valid_loss", (double)step, vl);
      }
    }
    char vls[32] = "";
    if (eval_now && !isnan(vl)) g_snprintf(vls, sizeof vls, "%.6f", vl);
    fprintf(csv, "%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",%.6g,%.6f,%s,%.4f,%.1f,%.4f\n", step,
            step * (gint64)BT * rc.grad_accum, lr, last_train, vls, gn, tps, step_s);
    fflush(csv);
    char stage[96];
    g_snprintf(stage, sizeof stage, "step %" G_GINT64_FORMAT " loss %.3f %.0f tok/s", step, last_train, tps);
    lmwb_report_progress(rep, (double)step / rc.steps, stage);
    if (step % rc.checkpoint_every == 0 && step < rc.steps) ok = save_checkpoint(ckpt, m, opt, step, rng, error);
  }
  if (!ok) goto done;
  ok = save_checkpoint(ckpt, m, opt, step, rng, error) && lmwb_model_save(m, rc.out, rc.dtype, tok_dir, error);
  if (ok) {
    size_t len = 0;
    g_autofree char *dst = g_build_filename(rc.out, "recipe.json", NULL);
    GStatBuf sd, sr;
    gboolean same = g_stat(dst, &sd) == 0 && g_stat(recipe_path, &sr) == 0 && sd.st_dev == sr.st_dev && sd.st_ino == sr.st_ino;
    g_autofree char *rec = same ? NULL : lmwb_file_read(recipe_path, (uint64_t)16 << 20, LMWB_READ_REGULAR, &len, NULL);
    if (rec) ok = lmwb_file_write_atomic(dst, rec, len, error);
  }
  res->steps = step;
  res->final_train_loss = last_train;
  res->final_valid_loss = last_val;
  res->seconds = (g_get_monotonic_time() - t_start) / 1e6;
  res->tokens_per_s = steps_run * (double)BT * rc.grad_accum / MAX(res->seconds, 1e-9);
  res->out_dir = g_strdup(rc.out);
done:
  if (csv) fclose(csv);
  g_free(ckpt);
  g_free(ckpt_file);
  g_free(csv_path);
  g_free(ids);
  g_free(tg);
  lmwb_runner_free(r);
  lmwb_adamw_free(opt);
  g_free(mask);
  g_free(train);
  g_free(train_starts);
  g_free(val_starts);
  g_free(val);
  if (m) lmwb_model_unref(m); /* frees the tokenizer it holds */
  else if (tok && rc.from_scratch) lmwb_tokenizer_free(tok);
  recipe_clear(&rc);
  return ok;
}
