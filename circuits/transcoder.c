/* Transcoders: weights, encode/decode, checks, and splicing into a run (transcoder.h). */
#include "circuits/transcoder.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include "app/core/rows.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

const char *lmwb_tc_activation_name(LmwbTcActivation a) {
  return a == LMWB_TC_JUMPRELU ? "jumprelu" : a == LMWB_TC_TOPK ? "topk" : "relu";
}

LmwbTranscoder *lmwb_transcoder_new(int d_in, int d_sae, int d_out, LmwbTcActivation act, int k, GError **error) {
  if (d_in < 1 || d_sae < 1 || d_out < 1 || (act == LMWB_TC_TOPK && (k < 1 || k > d_sae))) {
    lmwb_input_error(error, "transcoder: sizes d_in %d, d_sae %d, d_out %d (k %d) are not valid", d_in, d_sae, d_out, k);
    return NULL;
  }
  uint64_t floats = (uint64_t)d_sae * ((uint64_t)d_in + d_out + 2) + d_out;
  if (!lmwb_memory_check(floats * sizeof(float), "the transcoder's weights", error)) return NULL;
  LmwbTranscoder *tc = g_new0(LmwbTranscoder, 1);
  tc->in = tc->out = (LmwbSite){LMWB_SITE_LN2, 0};
  tc->d_in = d_in, tc->d_sae = d_sae, tc->d_out = d_out, tc->act = act, tc->k = act == LMWB_TC_TOPK ? k : 0;
  tc->W_enc = g_try_new0(float, (size_t)d_in * d_sae);
  tc->W_dec = g_try_new0(float, (size_t)d_sae * d_out);
  tc->b_enc = g_try_new0(float, d_sae);
  tc->b_dec = g_try_new0(float, d_out);
  if (act == LMWB_TC_JUMPRELU) tc->threshold = g_try_new0(float, d_sae);
  if (!tc->W_enc || !tc->W_dec || !tc->b_enc || !tc->b_dec || (act == LMWB_TC_JUMPRELU && !tc->threshold)) {
    lmwb_transcoder_free(tc);
    lmwb_input_error(error, "transcoder: out of memory for %d x %d weights", d_in, d_sae);
    return NULL;
  }
  return tc;
}

void lmwb_transcoder_free(LmwbTranscoder *tc) {
  if (!tc) return;
  g_free(tc->W_enc), g_free(tc->W_dec), g_free(tc->b_enc), g_free(tc->b_dec);
  g_free(tc->threshold), g_free(tc->W_skip), g_free(tc->model_name);
  g_free(tc);
}

void lmwb_transcoder_encode(const LmwbTranscoder *tc, const float *x, int n, float *pre, float *f) {
  int di = tc->d_in, ds = tc->d_sae;
  float *p = pre ? pre : f;
  for (int i = 0; i < n; i++) memcpy(p + (size_t)i * ds, tc->b_enc, sizeof(float) * (size_t)ds);
  if (tc->apply_b_dec_to_input) {
    /* SAE: (x - b_dec) W_enc = x W_enc - b_dec W_enc: subtract b_dec W_enc from the bias rows */
    float *bw = g_new0(float, ds);
    cblas_sgemv(CblasRowMajor, CblasTrans, di, ds, 1.f, tc->W_enc, ds, tc->b_dec, 1, 0.f, bw, 1);
    for (int i = 0; i < n; i++)
      for (int j = 0; j < ds; j++) p[(size_t)i * ds + j] -= bw[j];
    g_free(bw);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, ds, di, 1.f, x, di, tc->W_enc, ds, 1.f, p, ds);
  if (!f) return;
  if (pre) memcpy(f, pre, sizeof(float) * (size_t)n * ds);
  /* TopK scratch per thread on the heap: a file may ask for any k up to d_sae */
  int32_t *ids = NULL;
  float *vals = NULL;
#pragma omp parallel if ((size_t)n * ds > 65536) private(ids, vals)
  {
  ids = tc->act == LMWB_TC_TOPK ? g_new(int32_t, tc->k) : NULL;
  vals = tc->act == LMWB_TC_TOPK ? g_new(float, tc->k) : NULL;
#pragma omp for schedule(static)
  for (int i = 0; i < n; i++) {
    float *row = f + (size_t)i * ds;
    if (tc->act == LMWB_TC_TOPK) {
      lmwb_top_k(row, ds, tc->k, ids, vals);
      memset(row, 0, sizeof(float) * (size_t)ds);
      for (int j = 0; j < tc->k; j++) row[ids[j]] = vals[j] > 0.f ? vals[j] : 0.f;
    } else if (tc->act == LMWB_TC_JUMPRELU) {
      for (int j = 0; j < ds; j++) row[j] = row[j] > tc->threshold[j] ? row[j] : 0.f;
    } else {
      for (int j = 0; j < ds; j++) row[j] = row[j] > 0.f ? row[j] : 0.f;
    }
  }
  g_free(ids);
  g_free(vals);
  }
}

void lmwb_transcoder_decode(const LmwbTranscoder *tc, const float *f, const float *x, int n, float *out) {
  int ds = tc->d_sae, dout = tc->d_out;
  for (int i = 0; i < n; i++) memcpy(out + (size_t)i * dout, tc->b_dec, sizeof(float) * (size_t)dout);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dout, ds, 1.f, f, ds, tc->W_dec, dout, 1.f, out, dout);
  if (tc->W_skip && x)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, dout, tc->d_in, 1.f, x, tc->d_in, tc->W_skip, tc->d_in, 1.f,
                out, dout);
}

static gboolean finite_all(const float *p, size_t n, const char *origin, const char *name, GError **error) {
  for (size_t i = 0; p && i < n; i++)
    if (!isfinite(p[i])) {
      lmwb_input_error(error, "%s: %s holds a value that is not finite (element %zu)", origin, name, i);
      return FALSE;
    }
  return TRUE;
}

gboolean lmwb_transcoder_check(const LmwbTranscoder *tc, const LmwbConfig *cfg, const char *origin, GError **error) {
  const LmwbSite s[2] = {tc->in, tc->out};
  const int dims[2] = {tc->d_in, tc->d_out};
  const char *what[2] = {"input", "output"};
  for (int i = 0; i < 2; i++) {
    const LmwbSiteInfo *si = lmwb_site_info(s[i].kind);
    g_autofree char *nm = si ? lmwb_site_name(s[i]) : g_strdup("(unknown)");
    if (!si || !lmwb_site_exists(cfg, s[i].kind) || (si->model_level ? s[i].layer != -1 : (s[i].layer < 0 || s[i].layer >= cfg->n_layer))) {
      lmwb_input_error(error, "%s: the %s site %s does not exist in this %d-layer %s model", origin, what[i], nm,
                       cfg->n_layer, cfg->model_type);
      return FALSE;
    }
    int want = lmwb_site_row_size(cfg, s[i].kind, 0);
    if (si->shape == LMWB_SHAPE_PATTERN || dims[i] != want) {
      lmwb_input_error(error, "%s: the transcoder's %s has %d values but %s has %d", origin, what[i], dims[i], nm, want);
      return FALSE;
    }
  }
  size_t ds = tc->d_sae;
  return finite_all(tc->W_enc, (size_t)tc->d_in * ds, origin, "W_enc", error) &&
         finite_all(tc->b_enc, ds, origin, "b_enc", error) &&
         finite_all(tc->W_dec, ds * tc->d_out, origin, "W_dec", error) &&
         finite_all(tc->b_dec, tc->d_out, origin, "b_dec", error) &&
         finite_all(tc->threshold, ds, origin, "threshold", error) &&
         finite_all(tc->W_skip, (size_t)tc->d_out * tc->d_in, origin, "W_skip", error);
}

LmwbTranscoderSet *lmwb_transcoder_set_new(int n_layers) {
  LmwbTranscoderSet *s = g_new0(LmwbTranscoderSet, 1);
  s->n_layers = n_layers;
  s->layers = g_new0(LmwbTranscoder *, MAX(n_layers, 1));
  return s;
}

void lmwb_transcoder_set_free(LmwbTranscoderSet *s) {
  if (!s) return;
  for (int i = 0; i < s->n_layers; i++) lmwb_transcoder_free(s->layers[i]);
  g_free(s->layers);
  g_free(s->source);
  g_free(s);
}

/* ---- splicing ---------------------------------------------------------------------------------- */

struct LmwbTcSplice {
  const LmwbTranscoder *tc;
  float *x, *f;    /* the input rows of this run, and their features */
  size_t cap_x, cap_f;
  int ids[2];
};

static void keep_input(float *block, const LmwbHookCtx *c, void *user) {
  LmwbTcSplice *s = user;
  size_t n = (size_t)c->B * c->rows_per_seq * c->R;
  if (n > s->cap_x) {
    g_free(s->x);
    s->x = g_new(float, n);
    s->cap_x = n;
  }
  memcpy(s->x, block, n * sizeof(float));
}

static void replace_output(float *block, const LmwbHookCtx *c, void *user) {
  LmwbTcSplice *s = user;
  int n = c->B * c->rows_per_seq;
  if (!s->tc) {
    memset(block, 0, sizeof(float) * (size_t)n * c->R);
    return;
  }
  size_t nf = (size_t)n * s->tc->d_sae;
  if (nf > s->cap_f) {
    g_free(s->f);
    s->f = g_new(float, nf);
    s->cap_f = nf;
  }
  lmwb_transcoder_encode(s->tc, s->x, n, NULL, s->f);
  lmwb_transcoder_decode(s->tc, s->f, s->x, n, block);
}

LmwbTcSplice *lmwb_transcoder_splice(LmwbRunner *r, const LmwbTranscoder *tc, int layer, GError **error) {
  const LmwbConfig *cfg = &lmwb_runner_model(r)->cfg;
  if (tc && !lmwb_transcoder_check(tc, cfg, "splice", error)) return NULL;
  if (!tc && (layer < 0 || layer >= cfg->n_layer)) {
    lmwb_input_error(error, "splice: layer %d is not in 0..%d", layer, cfg->n_layer - 1);
    return NULL;
  }
  LmwbTcSplice *s = g_new0(LmwbTcSplice, 1);
  s->tc = tc;
  LmwbSite out = tc ? tc->out : (LmwbSite){LMWB_SITE_MLP_OUT, layer};
  if (tc) {
    LmwbHook in = {.site = tc->in, .op = LMWB_HOOK_OBSERVE, .fn = keep_input, .user = s};
    s->ids[0] = lmwb_runner_add_hook(r, &in, error);
  }
  LmwbHook rep = {.site = out, .op = LMWB_HOOK_CALL, .fn = replace_output, .user = s};
  s->ids[1] = (!tc || s->ids[0]) ? lmwb_runner_add_hook(r, &rep, error) : 0;
  if (!s->ids[1]) {
    lmwb_transcoder_unsplice(r, s);
    return NULL;
  }
  return s;
}

void lmwb_transcoder_unsplice(LmwbRunner *r, LmwbTcSplice *s) {
  if (!s) return;
  for (int i = 0; i < 2; i++)
    if (s->ids[i]) lmwb_runner_remove_hook(r, s->ids[i]);
  g_free(s->x);
  g_free(s->f);
  g_free(s);
}
