/* Transcoder evaluation: reconstruction (FVU), sparsity (L0, dead features) and next-token loss
 * with each MLP replaced or zero-ablated, on the windows of a text. Contract: transcoder.h. */
#include "circuits/transcoder.h"
#include "app/core/errors.h"
#include "app/formats/tokenizer.h"
#include <math.h>
#include <string.h>

typedef struct {
  double err, sum_sq, l0;   /* Σ‖out - target‖², Σ‖target‖², Σ active */
  double *sum;              /* Σ target, per dimension */
  guint8 *alive;            /* [d_sae] */
  double ce_spliced, ce_ablated;
} LayerAcc;

/* Sum of the next-token losses of the last forward (and how many). */
static double sum_losses(LmwbRunner *r, float *losses, size_t *count) {
  size_t n = lmwb_runner_token_losses(r, NULL, losses);
  int rows = 0;
  lmwb_runner_logits(r, &rows);
  double s = 0;
  for (int i = 0; i < rows; i++)
    if (!isnan(losses[i])) s += losses[i];
  if (count) *count = n;
  return s;
}

/* Reconstruction statistics of one layer from the clean run's activations. */
static void accumulate_layer(const LmwbTranscoder *tc, const float *x, const float *target, int n, LayerAcc *a,
                             float *f, float *out) {
  lmwb_transcoder_encode(tc, x, n, NULL, f);
  lmwb_transcoder_decode(tc, f, x, n, out);
  for (int i = 0; i < n; i++) {
    const float *fr = f + (size_t)i * tc->d_sae, *t = target + (size_t)i * tc->d_out, *o = out + (size_t)i * tc->d_out;
    for (int j = 0; j < tc->d_sae; j++)
      if (fr[j] != 0.f) {
        a->l0 += 1;
        a->alive[j] = 1;
      }
    for (int j = 0; j < tc->d_out; j++) {
      double d = (double)o[j] - t[j];
      a->err += d * d;
      a->sum_sq += (double)t[j] * t[j];
      a->sum[j] += t[j];
    }
  }
}

static double ce_with(LmwbRunner *r, const int32_t *ids, int B, int T, const LmwbTranscoder *tc, int layer,
                      float *losses, GError **error) {
  LmwbTcSplice *s = lmwb_transcoder_splice(r, tc, layer, error);
  if (!s) return NAN;
  double v = lmwb_runner_forward(r, ids, B, T, NULL, error) ? sum_losses(r, losses, NULL) : NAN;
  lmwb_transcoder_unsplice(r, s);
  return v;
}

LmwbTcEval *lmwb_transcoder_eval(LmwbModel *m, const LmwbTranscoderSet *set, const char *text,
                                 const LmwbTcEvalOptions *opt, LmwbReporter *rep, GError **error) {
  static const LmwbTcEvalOptions defaults = {0};
  if (!opt) opt = &defaults;
  const LmwbConfig *c = &m->cfg;
  if (!m->tokenizer) {
    lmwb_input_error(error, "transcoder eval: the model has no tokenizer to read the text with");
    return NULL;
  }
  if (set->n_layers != c->n_layer) {
    lmwb_input_error(error, "transcoder eval: the set has %d layers, the model %d", set->n_layers, c->n_layer);
    return NULL;
  }
  for (int L = 0; L < set->n_layers; L++)
    if (!set->layers[L] || !lmwb_transcoder_check(set->layers[L], c, "transcoder eval", error)) return NULL;
  int T = opt->context > 0 ? opt->context : 128;
  T = MIN(T, c->n_ctx);
  int Bmax = opt->batch > 0 ? opt->batch : 8;
  if (T < 2 || opt->max_tokens < 0) {
    lmwb_input_error(error, "transcoder eval: context %d must be at least 2 and max_tokens not negative", T);
    return NULL;
  }
  size_t n_ids = 0;
  if (!*text) {
    lmwb_input_error(error, "transcoder eval: the text is empty");
    return NULL;
  }
  g_autofree int32_t *all = lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, &n_ids, error);
  if (!all) return NULL;
  size_t windows = n_ids / (size_t)T;
  if (opt->max_tokens > 0) windows = MIN(windows, (size_t)(opt->max_tokens / T));
  if (windows == 0) {
    lmwb_input_error(error, "transcoder eval: the text has %zu tokens, fewer than one window of %d", n_ids, T);
    return NULL;
  }
  int nl = c->n_layer, C = c->d_model;
  LayerAcc *acc = g_new0(LayerAcc, nl);
  int dmax = 0;
  for (int L = 0; L < nl; L++) {
    acc[L].sum = g_new0(double, set->layers[L]->d_out);
    acc[L].alive = g_new0(guint8, set->layers[L]->d_sae);
    dmax = MAX(dmax, set->layers[L]->d_sae);
  }
  LmwbRunner *r = lmwb_runner_new(m);
  size_t rows_max = (size_t)Bmax * T;
  float *losses = g_new(float, rows_max), *f = g_try_new(float, rows_max * dmax), *out = g_new(float, rows_max * C);
  double ce_clean = 0, ce_all = 0, ce_all_abl = 0;
  size_t n_pred = 0, tokens = 0;
  gboolean ok = f != NULL;
  if (!ok) lmwb_input_error(error, "transcoder eval: out of memory for %zu x %d features", rows_max, dmax);
  for (size_t w0 = 0; ok && w0 < windows; w0 += (size_t)Bmax) {
    int B = (int)MIN((size_t)Bmax, windows - w0);
    const int32_t *ids = all + w0 * (size_t)T;
    size_t cnt = 0;
    ok = lmwb_runner_forward(r, ids, B, T, NULL, error);
    if (!ok) break;
    ce_clean += sum_losses(r, losses, &cnt);
    n_pred += cnt;
    tokens += (size_t)B * T;
    for (int L = 0; ok && L < nl; L++) {
      int64_t shape[4];
      g_autofree float *x = g_memdup2(lmwb_runner_activation(r, set->layers[L]->in, shape, NULL, error),
                                      sizeof(float) * (size_t)B * T * set->layers[L]->d_in);
      const float *target = lmwb_runner_activation(r, set->layers[L]->out, shape, NULL, error);
      accumulate_layer(set->layers[L], x, target, B * T, &acc[L], f, out);
    }
    for (int L = 0; ok && L < nl; L++) {
      acc[L].ce_spliced += ce_with(r, ids, B, T, set->layers[L], L, losses, error);
      acc[L].ce_ablated += ce_with(r, ids, B, T, NULL, L, losses, error);
      ok = !isnan(acc[L].ce_spliced) && !isnan(acc[L].ce_ablated);
      if (ok && lmwb_reporter_cancelled(rep, error)) ok = FALSE;
    }
    /* every MLP replaced at once */
    LmwbTcSplice **sp = g_new0(LmwbTcSplice *, nl);
    for (int L = 0; ok && L < nl; L++) ok = (sp[L] = lmwb_transcoder_splice(r, set->layers[L], L, error)) != NULL;
    if (ok) ok = lmwb_runner_forward(r, ids, B, T, NULL, error);
    if (ok) ce_all += sum_losses(r, losses, NULL);
    for (int L = 0; L < nl; L++) lmwb_transcoder_unsplice(r, sp[L]), sp[L] = NULL;
    /* every MLP zero-ablated at once */
    for (int L = 0; ok && L < nl; L++) ok = (sp[L] = lmwb_transcoder_splice(r, NULL, L, error)) != NULL;
    if (ok) ok = lmwb_runner_forward(r, ids, B, T, NULL, error);
    if (ok) ce_all_abl += sum_losses(r, losses, NULL);
    for (int L = 0; L < nl; L++) lmwb_transcoder_unsplice(r, sp[L]);
    g_free(sp);
    lmwb_report_progress(rep, (double)MIN(w0 + B, windows) / windows, "evaluating transcoders");
    if (ok && lmwb_reporter_cancelled(rep, error)) ok = FALSE;
  }
  lmwb_runner_free(r);
  g_free(losses), g_free(f), g_free(out);
  LmwbTcEval *e = NULL;
  if (ok) {
    e = g_new0(LmwbTcEval, 1);
    e->n_layers = nl;
    e->tokens = (int64_t)tokens;
    e->ce_clean = ce_clean / n_pred;
    e->ce_all_spliced = ce_all / n_pred;
    e->ce_all_ablated = ce_all_abl / n_pred;
    double gap_all = e->ce_all_ablated - e->ce_clean;
    e->ce_all_recovered = gap_all != 0 ? (e->ce_all_ablated - e->ce_all_spliced) / gap_all : NAN;
    e->layers = g_new0(LmwbTcLayerEval, nl);
    for (int L = 0; L < nl; L++) {
      const LmwbTranscoder *tc = set->layers[L];
      LmwbTcLayerEval *le = &e->layers[L];
      double mean_sq = 0;
      for (int j = 0; j < tc->d_out; j++) mean_sq += acc[L].sum[j] * acc[L].sum[j] / ((double)tokens * tokens);
      double var = acc[L].sum_sq - (double)tokens * mean_sq; /* Σ‖t - mean‖² */
      le->fvu = var > 0 ? acc[L].err / var : NAN;
      le->l0 = acc[L].l0 / tokens;
      size_t dead = 0;
      for (int j = 0; j < tc->d_sae; j++) dead += !acc[L].alive[j];
      le->dead_fraction = (double)dead / tc->d_sae;
      le->ce_spliced = acc[L].ce_spliced / n_pred;
      le->ce_ablated = acc[L].ce_ablated / n_pred;
      double gap = le->ce_ablated - e->ce_clean;
      le->ce_recovered = gap != 0 ? (le->ce_ablated - le->ce_spliced) / gap : NAN;
    }
  }
  for (int L = 0; L < nl; L++) g_free(acc[L].sum), g_free(acc[L].alive);
  g_free(acc);
  return e;
}

void lmwb_tc_eval_free(LmwbTcEval *e) {
  if (!e) return;
  g_free(e->layers);
  g_free(e);
}
