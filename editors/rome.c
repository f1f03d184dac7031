/* ROME: one fact rewritten by a rank-one change of an MLP output projection. Contract: rome.h. */
#include "app/core/errors.h"
#include "app/engine/linalg.h"
#include "editors/rome_internal.h"
#include <math.h>
#include <string.h>

/* u = C⁻¹ k / ‖C⁻¹ k‖ (C = I when stats is NULL). */
gboolean lmwb_rome_left(const LmwbEditStats *stats, const double *k, int F, float *u, GError **error) {
  g_autofree double *x = g_new(double, F);
  if (stats) {
    g_autofree double *C = g_try_new(double, (size_t)F * F);
    if (!C) {
      lmwb_input_error(error, "out of memory for the %d x %d key covariance", F, F);
      return FALSE;
    }
    for (size_t i = 0; i < (size_t)F * F; i++) C[i] = stats->C[i];
    if (!lmwb_linalg_cholesky_solve(F, C, 0.0, 1, k, x, NULL, error)) {
      g_prefix_error(error, "the key covariance of layer %d: ", stats->layer);
      return FALSE;
    }
  } else {
    memcpy(x, k, sizeof(double) * F);
  }
  double n = 0;
  for (int i = 0; i < F; i++) n += x[i] * x[i];
  n = sqrt(n);
  if (!(n > 0) || !isfinite(n)) {
    lmwb_input_error(error, "the key is zero or not finite: the subject's MLP is silent");
    return FALSE;
  }
  for (int i = 0; i < F; i++) u[i] = (float)(x[i] / n);
  return TRUE;
}

/* out[d] = W k + b with the version's effective W_out of the layer. */
gboolean lmwb_rome_mlp_out(const LmwbModel *m, int layer, const double *k, double *out, GError **error) {
  g_autofree char *name = g_strdup_printf("blocks.%d.mlp.W_out", layer);
  int idx = lmwb_model_param_index(m, name);
  g_autofree float *W = idx >= 0 ? lmwb_model_effective_tensor(m, idx, error) : NULL;
  if (!W) return FALSE;
  int d = m->cfg.d_model, F = m->cfg.d_ff;
  const float *b = m->w.layers[layer].b_down;
  for (int i = 0; i < d; i++) {
    double s = b ? b[i] : 0;
    for (int j = 0; j < F; j++) s += (double)W[(size_t)i * F + j] * k[j];
    out[i] = s;
  }
  return TRUE;
}

static gboolean check_stats(const LmwbModel *m, const LmwbEditStats *s, int layer, GError **error) {
  if (s && (s->layer != layer || s->dim != m->cfg.d_ff)) {
    lmwb_input_error(error, "the statistics are of layer %d with %d keys; the edit is at layer %d with %d", s->layer,
                     s->dim, layer, m->cfg.d_ff);
    return FALSE;
  }
  return TRUE;
}

LmwbModel *lmwb_rome_edit(LmwbModel *m, const LmwbEditRequest *req, int layer, const LmwbEditStats *stats,
                          const LmwbRomeOptions *opt, LmwbEditInfo *info, LmwbReporter *rep, GError **error) {
  LmwbRomeOptions o;
  if (opt) o = *opt;
  else lmwb_rome_options_init(&o);
  LmwbEditInfo local = {0};
  if (!info) info = &local;
  memset(info, 0, sizeof *info);
  if (layer < 0 || layer >= m->cfg.n_layer) {
    lmwb_input_error(error, "layer %d is not in 0..%d", layer, m->cfg.n_layer - 1);
    return NULL;
  }
  if (!check_stats(m, stats, layer, error) || !lmwb_edit_request_check(m, req, 0, error)) return NULL;
  int d = m->cfg.d_model, F = m->cfg.d_ff;
  char **templates = o.templates ? g_strdupv(o.templates) : lmwb_edit_context_templates(m, o.n_short, o.n_long, o.seed, error);
  if (!templates) return NULL;
  lmwb_report_progress(rep, 0.05, "ROME: key");
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbModel *out = NULL;
  g_autofree double *kstar = g_new(double, F), *ku = g_new(double, F), *cur = g_new(double, d);
  g_autofree float *kbare = g_new(float, F), *u = g_new(float, F), *v0 = g_new(float, d), *delta = g_new(float, d),
                   *right = g_new(float, d);
  LmwbRomeBatch *kb = lmwb_rome_templated(m, req, templates, NULL, 0, error);
  gboolean ok = kb && lmwb_rome_keys(r, kb, layer, kstar, kbare, error) && lmwb_rome_left(stats, kstar, F, u, error);
  lmwb_rome_batch_free(kb);
  if (ok) {
    lmwb_report_progress(rep, 0.15, "ROME: value");
    ok = lmwb_rome_delta(r, req, templates, (LmwbSite){LMWB_SITE_MLP_OUT, layer}, o.clamp, &o, v0, delta, info, rep,
                         error);
  }
  if (ok) {
    for (int j = 0; j < F; j++) ku[j] = o.keys == LMWB_ROME_KEYS_CONSISTENT ? kstar[j] : kbare[j];
    ok = lmwb_rome_mlp_out(m, layer, ku, cur, error);
  }
  if (ok) {
    double den = 0, un = 0;
    for (int j = 0; j < F; j++) den += ku[j] * u[j];
    for (int i = 0; i < d; i++) {
      right[i] = (float)(((double)v0[i] + delta[i] - cur[i]) / den);
      un += (double)right[i] * right[i];
    }
    info->denominator = den;
    info->update_norm = sqrt(un); /* ‖right uᵀ‖ = ‖right‖ with ‖u‖ = 1 */
    if (!isfinite(info->update_norm) || den == 0) {
      lmwb_input_error(error, "the rank-one update is not finite (key · u = %g)", den);
      ok = FALSE;
    }
  }
  if (ok) {
    out = lmwb_model_fork(m);
    g_autofree char *name = g_strdup_printf("blocks.%d.mlp.W_out", layer);
    if (!lmwb_model_add_lowrank(out, name, 1, right, u, error)) g_clear_pointer(&out, lmwb_model_unref);
  }
  lmwb_report_progress(rep, 1.0, "ROME: done");
  lmwb_runner_free(r);
  g_strfreev(templates);
  return out;
}
