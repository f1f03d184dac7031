/* The K-FAC keep-mass sweep (kfac_sweep.h). */
#include "editors/kfac_sweep.h"
#include <string.h>

gboolean lmwb_kfac_sweep_parse(const char *text, double **rho, int *n, GError **error) {
  return lmwb_kfac_values_parse(text, "keep-mass", 1, rho, n, error);
}

gboolean lmwb_kfac_sweep_run(LmwbModel *m, const LmwbKfacFactors *factors, const int *layers, int n_layers,
                             unsigned matrices, const double *rho, int n, LmwbKfacEigen **eig, const LmwbMemoOptions *o,
                             LmwbKfacSweep *out, LmwbReporter *rep, GError **error) {
  memset(out, 0, sizeof *out);
  out->n = n;
  out->rho = g_memdup2(rho, sizeof(double) * (size_t)n);
  out->res = g_new0(LmwbMemoResult, n);
  out->stats = g_new0(LmwbKfacEditStats *, n);
  out->n_stats = g_new0(int, n);
  out->seconds = g_new0(double, n);
  out->recommended = -1;
  LmwbReporterPart part;
  gboolean ok = lmwb_memo_measure(m, o, &out->base, lmwb_reporter_part_init(&part, rep, 0, 1.0 / (n + 1)), error);
  for (int i = 0; ok && i < n; i++) {
    gint64 t0 = g_get_monotonic_time();
    LmwbModel *ed = lmwb_kfac_edit(m, factors, layers, n_layers, matrices, rho[i], eig, &out->stats[i],
                                   &out->n_stats[i], error);
    ok = ed != NULL;
    if (ok) {
      LmwbReporter *r = lmwb_reporter_part_init(&part, rep, (double)(i + 1) / (n + 1), (double)(i + 2) / (n + 1));
      ok = lmwb_memo_measure(ed, o, &out->res[i], r, error);
      lmwb_model_unref(ed);
    }
    out->seconds[i] = (double)(g_get_monotonic_time() - t0) / 1e6;
    if (ok)
      lmwb_report_log(rep, "keep-mass %g: strict %.3f loose %.3f perplexity %.2f", rho[i], out->res[i].rec.strict,
                      out->res[i].rec.loose, out->res[i].perplexity);
  }
  if (!ok) {
    lmwb_kfac_sweep_clear(out);
    return FALSE;
  }
  out->recommended = lmwb_memo_recommend(&out->base, out->res, out->rho, n);
  return TRUE;
}

void lmwb_kfac_sweep_clear(LmwbKfacSweep *s) {
  if (!s) return;
  lmwb_memo_result_clear(&s->base);
  for (int i = 0; i < s->n; i++) {
    if (s->res) lmwb_memo_result_clear(&s->res[i]);
    if (s->stats) g_free(s->stats[i]);
  }
  g_free(s->res), g_free(s->stats), g_free(s->n_stats), g_free(s->seconds), g_free(s->rho);
  memset(s, 0, sizeof *s);
  s->recommended = -1;
}
