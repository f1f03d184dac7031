/* Pruning an attribution graph by influence, and its replacement and completeness scores, as
 * circuit-tracer defines them. Contract: attribution.h. */
#include "circuits/attribution.h"
#include "app/core/errors.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of |A| scaled to sum to 1 (an all-zero row stays zero). */
static float *normalised(const float *A, int n) {
  float *N = g_try_new(float, (size_t)n * n);
  if (!N) return NULL;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < n; r++) {
    double s = 0;
    for (int c = 0; c < n; c++) s += fabsf(A[(size_t)r * n + c]);
    float inv = s > 1e-10 ? (float)(1.0 / s) : 0.f;
    for (int c = 0; c < n; c++) N[(size_t)r * n + c] = fabsf(A[(size_t)r * n + c]) * inv;
  }
  return N;
}

/* influence = w N + w N² + ... (the graph is acyclic, so the series ends). */
static void influence(const float *N, const double *w, int n, double *out) {
  g_autofree double *cur = g_memdup2(w, sizeof(double) * n), *next = g_new(double, n);
  memset(out, 0, sizeof(double) * n);
  for (int it = 0; it < n + 2; it++) {
    gboolean any = FALSE;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < n; c++) {
      double s = 0;
      for (int r = 0; r < n; r++)
        if (cur[r] != 0) s += cur[r] * N[(size_t)r * n + c];
      next[c] = s;
    }
    for (int c = 0; c < n; c++) {
      out[c] += next[c];
      any = any || next[c] != 0;
    }
    memcpy(cur, next, sizeof(double) * n);
    if (!any) break;
  }
}

static int desc(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* The score whose keeping (every score at least it) keeps `fraction` of the total. */
static double threshold_for(const double *scores, size_t n, double fraction) {
  g_autofree double *s = g_memdup2(scores, sizeof(double) * n);
  qsort(s, n, sizeof(double), desc);
  double total = 0, cum = 0;
  for (size_t i = 0; i < n; i++) total += s[i];
  if (total <= 0) return s[0];
  for (size_t i = 0; i < n; i++) {
    cum += s[i];
    if (cum / total >= fraction) return s[i];
  }
  return s[n - 1];
}

LmwbAttributionPrune *lmwb_attribution_prune(const LmwbAttribution *a, double node_threshold, double edge_threshold,
                                             GError **error) {
  if (!(node_threshold >= 0 && node_threshold <= 1) || !(edge_threshold >= 0 && edge_threshold <= 1)) {
    lmwb_input_error(error, "prune: node and edge thresholds must be in [0, 1] (got %g and %g)", node_threshold,
                     edge_threshold);
    return NULL;
  }
  int n = a->n_nodes, F = a->n_features, E = a->n_layers * a->n_pos, first_fixed = F + E;
  float *N = normalised(a->adj, n);
  if (!N) {
    lmwb_input_error(error, "prune: out of memory for %d x %d", n, n);
    return NULL;
  }
  g_autofree double *w = g_new0(double, n), *infl = g_new(double, n);
  for (int k = 0; k < a->n_logits; k++) w[lmwb_attr_logit_node(a, k)] = a->logit_prob[k];
  influence(N, w, n, infl);
  LmwbAttributionPrune *p = g_new0(LmwbAttributionPrune, 1);
  p->node_threshold = node_threshold;
  p->edge_threshold = edge_threshold;
  /* scores of the whole graph */
  double tok = 0, err = 0, num = 0, den = 0;
  for (int i = F; i < first_fixed; i++) err += infl[i];
  for (int t = 0; t < a->n_pos; t++) tok += infl[lmwb_attr_token_node(a, t)];
  p->replacement = tok + err > 0 ? tok / (tok + err) : NAN;
  for (int r = 0; r < n; r++) {
    double from_err = 0;
    for (int c = F; c < first_fixed; c++) from_err += N[(size_t)r * n + c];
    double out_infl = infl[r] + w[r];
    num += (1 - from_err) * out_infl;
    den += out_infl;
  }
  p->completeness = den > 0 ? num / den : NAN;
  /* nodes */
  p->node_keep = g_new0(guint8, n);
  double thr = threshold_for(infl, n, node_threshold);
  for (int i = 0; i < n; i++) p->node_keep[i] = infl[i] >= thr || i >= first_fixed;
  /* edges, on the graph of the kept nodes */
  g_autofree float *pruned = g_memdup2(a->adj, sizeof(float) * (size_t)n * n);
  for (int r = 0; r < n; r++)
    for (int c = 0; c < n; c++)
      if (!p->node_keep[r] || !p->node_keep[c]) pruned[(size_t)r * n + c] = 0;
  g_free(N);
  N = normalised(pruned, n);
  g_autofree double *pinfl = g_new(double, n), *escore = g_try_new(double, (size_t)n * n);
  if (!N || !escore) {
    g_free(N);
    lmwb_attribution_prune_free(p);
    lmwb_input_error(error, "prune: out of memory for %d x %d", n, n);
    return NULL;
  }
  influence(N, w, n, pinfl);
  for (int r = 0; r < n; r++)
    for (int c = 0; c < n; c++) escore[(size_t)r * n + c] = N[(size_t)r * n + c] * (pinfl[r] + w[r]);
  g_free(N);
  double ethr = threshold_for(escore, (size_t)n * n, edge_threshold);
  p->edge_keep = g_new0(guint8, (size_t)n * n);
  for (size_t i = 0; i < (size_t)n * n; i++) p->edge_keep[i] = escore[i] >= ethr && escore[i] > 0;
  /* features and errors need an outgoing edge, features an incoming one, until nothing changes */
  for (gboolean changed = TRUE; changed;) {
    changed = FALSE;
    for (int r = 0; r < n; r++)
      for (int c = 0; c < n; c++)
        if (!p->node_keep[r] || !p->node_keep[c]) p->edge_keep[(size_t)r * n + c] = 0;
    for (int i = 0; i < first_fixed; i++) {
      if (!p->node_keep[i]) continue;
      gboolean out = FALSE, in = FALSE;
      for (int r = 0; r < n && !out; r++) out = p->edge_keep[(size_t)r * n + i];
      for (int c = 0; c < n && !in && i < F; c++) in = p->edge_keep[(size_t)i * n + c];
      if (!out || (i < F && !in)) {
        p->node_keep[i] = 0;
        changed = TRUE;
      }
    }
  }
  /* cumulative influence fraction of each node (smaller = more important) */
  p->influence = g_new(float, n);
  g_autofree int *order = g_new(int, n);
  for (int i = 0; i < n; i++) order[i] = i;
  for (int i = 1; i < n; i++) /* insertion sort by influence, descending (stable) */
    for (int j = i; j > 0 && infl[order[j]] > infl[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  double total = 0, cum = 0;
  for (int i = 0; i < n; i++) total += infl[i];
  for (int i = 0; i < n; i++) {
    cum += infl[order[i]];
    p->influence[order[i]] = total > 0 ? (float)(cum / total) : 0.f;
  }
  for (int i = 0; i < n; i++) p->nodes_kept += p->node_keep[i];
  for (size_t i = 0; i < (size_t)n * n; i++) p->edges_kept += p->edge_keep[i];
  return p;
}

void lmwb_attribution_prune_free(LmwbAttributionPrune *p) {
  if (!p) return;
  g_free(p->node_keep);
  g_free(p->edge_keep);
  g_free(p->influence);
  g_free(p);
}
