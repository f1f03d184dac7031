/* MEMIT: many facts at once, the change spread over layers. Contract: rome.h. */
#include "app/core/errors.h"
#include "app/engine/linalg.h"
#include "editors/rome_internal.h"
#include <math.h>
#include <string.h>

/* h (double, [n, d]) = mean over the templates of blocks.L.hook_resid_post at the subject, and the
 * keys K ([n, F]) at layer l, for every request, on the version r runs. */
static gboolean keys_and_resid(LmwbRunner *r, const LmwbEditRequests *reqs, char **templates, int l, int L, double *K,
                               double *h, GError **error) {
  const LmwbModel *m = lmwb_runner_model(r);
  int d = m->cfg.d_model, F = m->cfg.d_ff;
  for (int i = 0; i < reqs->n; i++) {
    LmwbRomeBatch *b = lmwb_rome_templated(m, &reqs->items[i], templates, NULL, 0, error);
    gboolean ok = b && lmwb_rome_keys(r, b, l, K + (size_t)i * F, NULL, error);
    int64_t shape[4];
    const float *x = ok ? lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_RESID_POST, L}, shape, NULL, error) : NULL;
    if (x) {
      memset(h + (size_t)i * d, 0, sizeof(double) * d);
      for (int s = 0; s < b->B; s++)
        for (int j = 0; j < d; j++) h[(size_t)i * d + j] += x[((size_t)s * b->T + b->lookup[s]) * d + j] / (double)b->B;
    }
    lmwb_rome_batch_free(b);
    if (!x) return FALSE;
  }
  return TRUE;
}

/* ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹ as U = R [d, n], V = (λ C + K Kᵀ)⁻¹ K [F, n] (the matrix is symmetric). */
static gboolean layer_update(const double *K, const double *R, int n, int d, int F, double lambda,
                             const LmwbEditStats *st, float *U, float *Vt, GError **error) {
  g_autofree double *A = g_try_new(double, (size_t)F * F), *KT = g_new(double, (size_t)F * n),
                    *X = g_new(double, (size_t)F * n);
  if (!A) {
    lmwb_input_error(error, "out of memory for the %d x %d key covariance", F, F);
    return FALSE;
  }
  for (int a = 0; a < F; a++)
    for (int c = 0; c < F; c++) A[(size_t)a * F + c] = lambda * (st ? st->C[(size_t)a * F + c] : (a == c));
  for (int i = 0; i < n; i++)
    for (int a = 0; a < F; a++) {
      KT[(size_t)a * n + i] = K[(size_t)i * F + a];
      for (int c = 0; c < F; c++) A[(size_t)a * F + c] += K[(size_t)i * F + a] * K[(size_t)i * F + c];
    }
  if (!lmwb_linalg_cholesky_solve(F, A, 0.0, n, KT, X, NULL, error)) return FALSE;
  for (int a = 0; a < F; a++)
    for (int i = 0; i < n; i++) Vt[(size_t)a * n + i] = (float)X[(size_t)a * n + i];
  for (int j = 0; j < d; j++)
    for (int i = 0; i < n; i++) U[(size_t)j * n + i] = (float)R[(size_t)i * d + j];
  return TRUE;
}

/* ‖U Vᵀ‖_F = sqrt(trace((UᵀU)(VᵀV))), U [d, n], V [F, n]. */
static double lowrank_norm(const float *U, const float *V, int d, int F, int n) {
  double t = 0;
  for (int a = 0; a < n; a++)
    for (int b = 0; b < n; b++) {
      double gu = 0, gv = 0;
      for (int j = 0; j < d; j++) gu += (double)U[(size_t)j * n + a] * U[(size_t)j * n + b];
      for (int j = 0; j < F; j++) gv += (double)V[(size_t)j * n + a] * V[(size_t)j * n + b];
      t += gu * gv;
    }
  return sqrt(fmax(t, 0));
}

LmwbModel *lmwb_memit_edit(LmwbModel *m, const LmwbEditRequests *reqs, const int *layers, int n_layers,
                           LmwbEditStats *const *stats, const LmwbRomeOptions *opt, LmwbEditInfo *info,
                           LmwbReporter *rep, GError **error) {
  LmwbRomeOptions o;
  if (opt) o = *opt;
  else lmwb_rome_options_init(&o), o.clamp = 0.75;
  LmwbEditInfo local = {0};
  if (!info) info = &local;
  memset(info, 0, sizeof *info);
  if (!reqs || reqs->n < 1 || n_layers < 1) {
    lmwb_input_error(error, "MEMIT needs at least one request and one layer");
    return NULL;
  }
  for (int i = 0; i < n_layers; i++)
    if (layers[i] < 0 || layers[i] >= m->cfg.n_layer || (i && layers[i] <= layers[i - 1])) {
      lmwb_input_error(error, "layer %d is not in 0..%d in ascending order", layers[i], m->cfg.n_layer - 1);
      return NULL;
    }
  for (int i = 0; i < reqs->n; i++)
    if (!lmwb_edit_request_check(m, &reqs->items[i], i, error)) return NULL;
  for (int i = 0; stats && i < n_layers; i++)
    if (stats[i] && (stats[i]->layer != layers[i] || stats[i]->dim != m->cfg.d_ff)) {
      lmwb_input_error(error, "the statistics for layer %d are of layer %d", layers[i], stats[i]->layer);
      return NULL;
    }
  int n = reqs->n, d = m->cfg.d_model, F = m->cfg.d_ff, L = layers[n_layers - 1];
  char **templates = o.templates ? g_strdupv(o.templates) : lmwb_edit_context_templates(m, o.n_short, o.n_long, o.seed, error);
  if (!templates) return NULL;
  g_autofree double *z = g_new(double, (size_t)n * d), *h = g_new(double, (size_t)n * d),
                    *K = g_new(double, (size_t)n * F), *R = g_new(double, (size_t)n * d);
  g_autofree float *v0 = g_new(float, d), *delta = g_new(float, d), *U = g_new(float, (size_t)d * n),
                   *Vt = g_new(float, (size_t)F * n);
  /* the targets z_i = h_L + δ_i */
  LmwbRunner *r = lmwb_runner_new(m);
  gboolean ok = TRUE;
  double nll0 = 0, nll1 = 0, dn = 0;
  for (int i = 0; ok && i < n; i++) {
    LmwbEditInfo one = {0};
    lmwb_report_progress(rep, 0.8 * i / n, "MEMIT: targets");
    ok = lmwb_rome_delta(r, &reqs->items[i], templates, (LmwbSite){LMWB_SITE_RESID_POST, L}, o.clamp, &o, v0, delta,
                         &one, NULL, error);
    for (int j = 0; ok && j < d; j++) z[(size_t)i * d + j] = (double)v0[j] + delta[j];
    info->steps += one.steps;
    nll0 += one.nll_first / n, nll1 += one.nll_last / n, dn += one.delta_norm / n;
    if (ok && lmwb_reporter_cancelled(rep, error)) ok = FALSE;
  }
  lmwb_runner_free(r);
  info->nll_first = nll0, info->nll_last = nll1, info->delta_norm = dn;
  LmwbModel *cur = ok ? lmwb_model_ref(m) : NULL;
  for (int li = 0; ok && li < n_layers; li++) {
    int l = layers[li];
    lmwb_report_progress(rep, 0.8 + 0.2 * li / n_layers, "MEMIT: layers");
    r = lmwb_runner_new(cur);
    ok = keys_and_resid(r, reqs, templates, l, L, K, h, error);
    lmwb_runner_free(r);
    for (size_t k = 0; ok && k < (size_t)n * d; k++) R[k] = (z[k] - h[k]) / (n_layers - li);
    ok = ok && layer_update(K, R, n, d, F, o.lambda, stats ? stats[li] : NULL, U, Vt, error);
    if (ok) {
      info->update_norm += lowrank_norm(U, Vt, d, F, n);
      LmwbModel *next = lmwb_model_fork(cur);
      g_autofree char *name = g_strdup_printf("blocks.%d.mlp.W_out", l);
      ok = lmwb_model_add_lowrank(next, name, n, U, Vt, error);
      lmwb_model_unref(cur);
      cur = next;
    }
  }
  if (!ok) g_clear_pointer(&cur, lmwb_model_unref);
  g_strfreev(templates);
  lmwb_report_progress(rep, 1.0, "MEMIT: done");
  return cur;
}
