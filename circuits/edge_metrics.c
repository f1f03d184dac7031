/* Task metrics at the last position (circuits/edge_tasks.h). */
#include "circuits/edge_tasks.h"
#include <math.h>

/* log-softmax of x [V] into out; returns the argmax. */
static int log_softmax(const float *x, int V, double *out) {
  int best = 0;
  for (int i = 1; i < V; i++)
    if (x[i] > x[best]) best = i;
  double s = 0;
  for (int i = 0; i < V; i++) s += exp((double)x[i] - x[best]);
  double lse = x[best] + log(s);
  for (int i = 0; i < V; i++) out[i] = x[i] - lse;
  return best;
}

/* gt: +1 for years after the threshold, -1 before, 0 at it. */
static int year_side(const LmwbEdgeTask *t, int y, int threshold) { return (y > threshold) - (y < threshold); }

void lmwb_edge_metrics_add(const LmwbEdgeTask *t, int first, int n, const float *circuit, const float *full, int V,
                           LmwbEdgeMetrics *acc) {
  g_autofree double *lc = g_new(double, V), *lf = g_new(double, V);
  for (int i = 0; i < n; i++) {
    const LmwbEdgeExample *e = &t->ex[first + i];
    const float *c = circuit + (size_t)i * V, *f = full + (size_t)i * V;
    int top_c = log_softmax(c, V, lc), top_f = log_softmax(f, V, lf);
    double kl = 0;
    for (int j = 0; j < V; j++) kl += exp(lf[j]) * (lf[j] - lc[j]);
    acc->kl += kl;
    acc->exact_match += top_c == top_f;
    if (t->kind == LMWB_EDGE_TASK_GT) {
      double pd = 0;
      int best = 0;
      for (int y = 0; y < t->n_years; y++) {
        pd += year_side(t, y, e->threshold) * exp(lc[t->year_tok[y]]);
        if (c[t->year_tok[y]] > c[t->year_tok[best]]) best = y;
      }
      acc->prob_diff += pd;
      acc->accuracy += best > e->threshold;
    } else {
      acc->logit_diff += (double)c[e->answer] - c[e->wrong];
      acc->accuracy += top_c == e->answer;
    }
    acc->n++;
  }
}

void lmwb_edge_metrics_finish(LmwbEdgeMetrics *acc) {
  if (acc->n == 0) return;
  double k = 1.0 / acc->n;
  acc->kl *= k;
  acc->logit_diff *= k;
  acc->accuracy *= k;
  acc->exact_match *= k;
  acc->prob_diff *= k;
}

double lmwb_edge_metric_grad(const LmwbEdgeTask *t, int i, const float *logits, int V, float *dl) {
  const LmwbEdgeExample *e = &t->ex[i];
  for (int j = 0; j < V; j++) dl[j] = 0.f;
  if (t->kind != LMWB_EDGE_TASK_GT) {
    dl[e->answer] += 1.f;
    dl[e->wrong] -= 1.f;
    return (double)logits[e->answer] - logits[e->wrong];
  }
  /* PD = sum_y s_y p_y; dPD/dlogit_k = p_k (s_k - PD) (s_k = 0 off the year tokens). */
  g_autofree double *lp = g_new(double, V);
  log_softmax(logits, V, lp);
  double pd = 0;
  for (int y = 0; y < t->n_years; y++) pd += year_side(t, y, e->threshold) * exp(lp[t->year_tok[y]]);
  for (int j = 0; j < V; j++) dl[j] = (float)(-exp(lp[j]) * pd);
  for (int y = 0; y < t->n_years; y++) dl[t->year_tok[y]] += (float)(exp(lp[t->year_tok[y]]) * year_side(t, y, e->threshold));
  return pd;
}
