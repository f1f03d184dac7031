/* EAP and EAP-IG scores (circuits/edge_circuit.h). */
#include "app/core/errors.h"
#include "circuits/edge_internal.h"
#include <string.h>

/* One forward and the backward of the metric at the last tokens; mask gradients accumulate. */
static gboolean grad_run(LmwbRunner *r, const LmwbEdgeTask *t, const EdgeBatch *b, float *dl, GError **error) {
  LmwbForwardOptions fo = {.lens = b->lens, .last_logits_only = true};
  if (!lmwb_runner_forward(r, b->clean, b->B, b->T, &fo, error)) return FALSE;
  int V = lmwb_runner_model(r)->cfg.vocab_size;
  const float *logits = lmwb_runner_logits(r, NULL);
  for (int i = 0; i < b->B; i++)
    lmwb_edge_metric_grad(t, b->first + i, logits + (size_t)i * V, V, dl + (size_t)i * V);
  return edge_backward_last(r, b, dl, error);
}

/* EAP-IG: the clean run fixes delta, then the runs on inputs interpolated from the corrupted one. */
static gboolean ig_runs(LmwbRunner *r, LmwbEdgeStream *s, const LmwbEdgeTask *t, const EdgeBatch *b, int steps,
                        float *dl, GError **error) {
  LmwbSite in0 = {LMWB_SITE_RESID_PRE, 0};
  int64_t shape[4];
  const float *src = lmwb_runner_activation(r, in0, shape, NULL, error); /* the corrupted run's input */
  if (!src) return FALSE;
  size_t n = (size_t)b->B * b->T * lmwb_runner_model(r)->cfg.d_model;
  g_autofree float *corrupt_in = g_memdup2(src, n * sizeof(float));
  LmwbForwardOptions fo = {.lens = b->lens, .last_logits_only = true};
  if (!lmwb_runner_forward(r, b->clean, b->B, b->T, &fo, error)) return FALSE; /* delta of the clean run */
  lmwb_edge_stream_hold_delta(s, true);
  gboolean ok = TRUE;
  for (int k = 1; ok && k <= steps; k++) {
    /* x = clean + (1 - k/steps) (corrupt - clean): k = steps is the clean input */
    LmwbHook patch = {.site = in0, .op = LMWB_HOOK_PATCH, .source = corrupt_in, .alpha = 1.f - (float)k / steps,
                      .run_B = b->B, .run_T = b->T};
    int id = lmwb_runner_add_hook(r, &patch, error);
    ok = id && grad_run(r, t, b, dl, error);
    if (id) lmwb_runner_remove_hook(r, id);
  }
  lmwb_edge_stream_hold_delta(s, false);
  return ok;
}

float *lmwb_edge_eap(LmwbModel *m, const LmwbEdgeTask *t, const LmwbEapOptions *opt, LmwbReporter *rep,
                     GError **error) {
  static const LmwbEapOptions defaults = {0};
  if (!opt) opt = &defaults;
  if (opt->ig_steps < 0 || opt->ig_steps > 1000) {
    lmwb_input_error(error, "eap: ig_steps %d is not in 0..1000", opt->ig_steps);
    return NULL;
  }
  LmwbRunner *r = NULL;
  LmwbEdgeStream *s = edge_stream_open(m, &r, error);
  if (!s) return NULL;
  const LmwbEdgeGraph *g = lmwb_edge_stream_graph(s);
  int bs = edge_batch_size(opt->batch), V = m->cfg.vocab_size;
  g_autofree float *dl = g_new(float, (size_t)bs * V);
  gboolean ok = TRUE;
  for (int first = 0; ok && first < t->n; first += bs) {
    EdgeBatch b;
    edge_batch_make(t, first, MIN(bs, t->n - first), &b);
    ok = !lmwb_reporter_cancelled(rep, error) && edge_batch_corrupt(s, &b, error) &&
         (opt->ig_steps ? ig_runs(r, s, t, &b, opt->ig_steps, dl, error) : grad_run(r, t, &b, dl, error));
    edge_batch_clear(&b);
    lmwb_report_progress(rep, (double)MIN(first + bs, t->n) / t->n, opt->ig_steps ? "EAP-IG" : "EAP");
  }
  float *score = NULL;
  if (ok) {
    /* dM/dz_wv = delta_w . g_v; removing the edge moves M by about -dM/dz (z from 1 to 0) */
    const float *dz = lmwb_edge_stream_mask_grads(s);
    double k = -1.0 / ((double)t->n * MAX(opt->ig_steps, 1));
    score = g_new(float, g->n_edges);
    for (int64_t e = 0; e < g->n_edges; e++) score[e] = (float)(dz[e] * k);
  }
  edge_stream_close(s, r);
  return score;
}
