/* The key statistics of ROME and MEMIT: C = E[k kᵀ] of an MLP output projection's input over a
 * text, saved and loaded. Contract: rome.h. */
#include "app/core/errors.h"
#include "app/core/memory.h"
#include "app/engine/moments.h"
#include "app/formats/half.h"
#include "app/formats/safetensors.h"
#include "app/formats/tokenizer.h"
#include "editors/rome.h"
#include <math.h>
#include <string.h>

void lmwb_edit_stats_free(LmwbEditStats *s) {
  if (!s) return;
  g_free(s->C);
  g_free(s->model);
  g_free(s);
}

int lmwb_edit_default_layer(const LmwbModel *m) {
  int L = (int)lround(m->cfg.n_layer * 17.0 / 48.0);
  return CLAMP(L, 0, m->cfg.n_layer - 1);
}

static char *model_name(const LmwbModel *m) {
  return m->dir ? g_path_get_basename(m->dir) : g_strdup(lmwb_arch_name(m->cfg.arch));
}

static gboolean check_layer(const LmwbModel *m, int layer, GError **error) {
  if (layer < 0 || layer >= m->cfg.n_layer) {
    lmwb_input_error(error, "layer %d is not in 0..%d", layer, m->cfg.n_layer - 1);
    return FALSE;
  }
  return TRUE;
}

LmwbEditStats *lmwb_edit_stats_collect(LmwbModel *m, int layer, const char *text, const LmwbEditStatsOptions *opt,
                                       LmwbReporter *rep, GError **error) {
  LmwbEditStatsOptions o = opt ? *opt : (LmwbEditStatsOptions){0};
  if (!check_layer(m, layer, error)) return NULL;
  int dim = m->cfg.d_ff, T = o.context > 0 ? o.context : MIN(128, m->cfg.n_ctx), Bmax = o.batch > 0 ? o.batch : 8;
  if (T < 1 || T > m->cfg.n_ctx) {
    lmwb_input_error(error, "context %d is not in 1..%d", T, m->cfg.n_ctx);
    return NULL;
  }
  /* double sums, the float result and the solve's copy */
  uint64_t need = (uint64_t)dim * dim * (8 + 4 + 8);
  if (need > lmwb_memory_available()) {
    lmwb_input_error(error, "the key covariance of %d x %d needs %.1f GB, more than the %.1f GB available", dim, dim,
                     need / 1e9, lmwb_memory_available() / 1e9);
    return NULL;
  }
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s has no tokenizer: statistics are taken over text", m->dir ? m->dir : "the model");
    return NULL;
  }
  size_t n_ids = 0;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, &n_ids, error);
  if (!ids) return NULL;
  size_t windows = n_ids / (size_t)T;
  if (o.max_tokens > 0) windows = MIN(windows, (size_t)(o.max_tokens / T));
  if (windows == 0) {
    lmwb_input_error(error, "the text has %zu tokens, fewer than one window of %d", n_ids, T);
    return NULL;
  }
  LmwbMoments *mom = lmwb_moments_new(dim, error);
  if (!mom) return NULL;
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbEditStats *s = NULL;
  gboolean ok = lmwb_moments_collect(mom, r, (LmwbSite){LMWB_SITE_MLP_POST, layer}, false, false, error) > 0;
  for (size_t w0 = 0; ok && w0 < windows; w0 += (size_t)Bmax) {
    int B = (int)MIN((size_t)Bmax, windows - w0);
    LmwbForwardOptions fo = {.last_logits_only = true};
    ok = lmwb_runner_forward(r, ids + w0 * T, B, T, &fo, error);
    lmwb_report_progress(rep, (double)MIN(w0 + B, windows) / windows, "key statistics");
    if (ok && lmwb_reporter_cancelled(rep, error)) ok = FALSE;
  }
  if (ok) {
    s = g_new0(LmwbEditStats, 1);
    s->layer = layer;
    s->dim = dim;
    s->tokens = (int64_t)lmwb_moments_count(mom);
    s->model = model_name(m);
    double *C = g_new(double, (size_t)dim * dim);
    lmwb_moments_mean(mom, C);
    s->C = g_new(float, (size_t)dim * dim);
    for (size_t i = 0; i < (size_t)dim * dim; i++) s->C[i] = (float)C[i];
    g_free(C);
  }
  lmwb_runner_free(r);
  lmwb_moments_free(mom);
  return s;
}

static char *tensor_name(int layer) { return g_strdup_printf("blocks.%d.mlp.W_out.C", layer); }

gboolean lmwb_edit_stats_save(const LmwbEditStats *s, const char *path, GError **error) {
  g_autofree char *name = tensor_name(s->layer);
  g_autofree char *layer = g_strdup_printf("%d", s->layer), *tokens = g_strdup_printf("%" G_GINT64_FORMAT, s->tokens);
  int64_t shape[2] = {s->dim, s->dim};
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, name, LMWB_DTYPE_F32, shape, 2, s->C);
  lmwb_safetensors_writer_set_metadata(w, "format", "lmwb-edit-stats");
  lmwb_safetensors_writer_set_metadata(w, "model", s->model ? s->model : "");
  lmwb_safetensors_writer_set_metadata(w, "layer", layer);
  lmwb_safetensors_writer_set_metadata(w, "tokens", tokens);
  gboolean ok = lmwb_safetensors_writer_save(w, path, error);
  lmwb_safetensors_writer_free(w);
  return ok;
}

LmwbEditStats *lmwb_edit_stats_load(const char *path, const LmwbModel *m, int layer, GError **error) {
  if (!check_layer(m, layer, error)) return NULL;
  LmwbSafetensors *st = lmwb_safetensors_open(path, error);
  if (!st) return NULL;
  g_autofree char *name = tensor_name(layer);
  const LmwbTensorView *t = lmwb_safetensors_find(st, name);
  int dim = m->cfg.d_ff;
  LmwbEditStats *s = NULL;
  if (!t) {
    lmwb_input_error(error, "%s: no tensor \"%s\" (statistics of another layer?)", path, name);
  } else if (t->ndim != 2 || t->shape[0] != dim || t->shape[1] != dim) {
    lmwb_input_error(error, "%s: tensor \"%s\" is not [%d, %d] (statistics of another model?)", path, name, dim, dim);
  } else {
    s = g_new0(LmwbEditStats, 1);
    s->layer = layer;
    s->dim = dim;
    s->C = g_try_new(float, (size_t)dim * dim);
    const char *tok = lmwb_safetensors_metadata(st, "tokens"), *mod = lmwb_safetensors_metadata(st, "model");
    s->tokens = tok ? g_ascii_strtoll(tok, NULL, 10) : 0;
    s->model = g_strdup(mod ? mod : "");
    size_t bad = (size_t)dim * dim;
    if (!s->C || !lmwb_tensor_to_f32(t, s->C, error) ||
        (bad = lmwb_f32_find_nonfinite(s->C, (size_t)dim * dim)) < (size_t)dim * dim) {
      if (s->C && bad < (size_t)dim * dim)
        lmwb_input_error(error, "%s: tensor \"%s\" holds a non-finite value at element %zu", path, name, bad);
      else if (!s->C)
        lmwb_input_error(error, "%s: out of memory for \"%s\"", path, name);
      g_clear_pointer(&s, lmwb_edit_stats_free);
    }
    for (int i = 0; s && i < dim; i++)
      for (int j = 0; j < i; j++) {
        float a = s->C[(size_t)i * dim + j], b = s->C[(size_t)j * dim + i];
        if (fabsf(a - b) > 1e-5f * (fabsf(a) + fabsf(b)) + 1e-30f) {
          lmwb_input_error(error, "%s: tensor \"%s\" is not symmetric (element [%d, %d])", path, name, i, j);
          g_clear_pointer(&s, lmwb_edit_stats_free);
          break;
        }
      }
  }
  lmwb_safetensors_close(st);
  return s;
}
