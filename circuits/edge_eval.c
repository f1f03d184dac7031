/* A circuit's metrics by interchange ablation (circuits/edge_circuit.h). */
#include "app/core/errors.h"
#include "circuits/edge_internal.h"
#include <string.h>

/* Last-token logits of the batch under masks z (NULL: all 1) into out [B, V]. */
static gboolean masked_logits(LmwbRunner *r, LmwbEdgeStream *s, const EdgeBatch *b, const float *z, float *out,
                              GError **error) {
  lmwb_edge_stream_set_masks(s, z);
  LmwbForwardOptions fo = {.lens = b->lens, .last_logits_only = true};
  if (!lmwb_runner_forward(r, b->clean, b->B, b->T, &fo, error)) return FALSE;
  memcpy(out, lmwb_runner_logits(r, NULL), (size_t)b->B * lmwb_runner_model(r)->cfg.vocab_size * sizeof(float));
  return TRUE;
}

gboolean lmwb_edge_eval(LmwbModel *m, const LmwbEdgeTask *t, const uint8_t *keep, int batch, LmwbEdgeEval *out,
                        LmwbReporter *rep, GError **error) {
  memset(out, 0, sizeof *out);
  LmwbRunner *r = NULL;
  LmwbEdgeStream *s = edge_stream_open(m, &r, error);
  if (!s) return FALSE;
  const LmwbEdgeGraph *g = lmwb_edge_stream_graph(s);
  int bs = edge_batch_size(batch), V = m->cfg.vocab_size;
  g_autofree float *z = g_new(float, g->n_edges), *zero = g_new0(float, g->n_edges);
  for (int64_t e = 0; e < g->n_edges; e++) z[e] = keep ? (keep[e] ? 1.f : 0.f) : 1.f;
  g_autofree float *full = g_new(float, (size_t)bs * V), *circ = g_new(float, (size_t)bs * V),
                   *corr = g_new(float, (size_t)bs * V);
  gboolean ok = TRUE;
  for (int first = 0; ok && first < t->n; first += bs) {
    EdgeBatch b;
    edge_batch_make(t, first, MIN(bs, t->n - first), &b);
    ok = !lmwb_reporter_cancelled(rep, error) && edge_batch_corrupt(s, &b, error) &&
         masked_logits(r, s, &b, NULL, full, error) && masked_logits(r, s, &b, z, circ, error) &&
         masked_logits(r, s, &b, zero, corr, error);
    if (ok) {
      lmwb_edge_metrics_add(t, first, b.B, circ, full, V, &out->circuit);
      lmwb_edge_metrics_add(t, first, b.B, full, full, V, &out->full);
      lmwb_edge_metrics_add(t, first, b.B, corr, full, V, &out->corrupted);
    }
    edge_batch_clear(&b);
    lmwb_report_progress(rep, (double)MIN(first + bs, t->n) / t->n, "evaluating");
  }
  lmwb_edge_metrics_finish(&out->circuit);
  lmwb_edge_metrics_finish(&out->full);
  lmwb_edge_metrics_finish(&out->corrupted);
  out->edges = lmwb_edge_count(g, keep);
  out->total_edges = g->n_edges;
  edge_stream_close(s, r);
  return ok;
}
