/* Batches of a task's examples (circuits/edge_internal.h). */
#include "circuits/edge_internal.h"
#include "app/engine/backend.h"
#include <string.h>

void edge_batch_make(const LmwbEdgeTask *t, int first, int B, EdgeBatch *b) {
  b->first = first;
  b->B = B;
  b->T = 0;
  for (int i = 0; i < B; i++) b->T = MAX(b->T, t->ex[first + i].len);
  b->clean = g_new(int32_t, (size_t)B * b->T);
  b->corrupt = g_new(int32_t, (size_t)B * b->T);
  b->lens = g_new(int, B);
  b->last = g_new(int, B);
  for (int i = 0; i < B; i++) {
    const LmwbEdgeExample *e = &t->ex[first + i];
    for (int j = 0; j < b->T; j++) { /* padding sits after the last token: causal attention never reads it */
      b->clean[(size_t)i * b->T + j] = e->clean[j < e->len ? j : 0];
      b->corrupt[(size_t)i * b->T + j] = e->corrupt[j < e->len ? j : 0];
    }
    b->lens[i] = e->len;
    b->last[i] = i * b->T + e->len - 1;
  }
}

void edge_batch_clear(EdgeBatch *b) {
  g_free(b->clean);
  g_free(b->corrupt);
  g_free(b->lens);
  g_free(b->last);
  memset(b, 0, sizeof *b);
}

int edge_batch_size(int batch) { return batch > 0 ? batch : LMWB_EDGE_DEFAULT_BATCH; }

gboolean edge_batch_corrupt(LmwbEdgeStream *s, const EdgeBatch *b, GError **error) {
  return lmwb_edge_stream_corrupt(s, b->corrupt, b->B, b->T, b->lens, error);
}

LmwbEdgeStream *edge_stream_open(LmwbModel *m, LmwbRunner **r, GError **error) {
  *r = lmwb_runner_new(m);
  LmwbEdgeStream *s = lmwb_edge_stream_new(*r, error);
  if (!s) g_clear_pointer(r, lmwb_runner_free);
  return s;
}

void edge_stream_close(LmwbEdgeStream *s, LmwbRunner *r) {
  lmwb_edge_stream_free(s);
  lmwb_runner_free(r);
}

gboolean edge_backward_last(LmwbRunner *r, const EdgeBatch *b, const float *dlast, GError **error) {
  const LmwbModel *m = lmwb_runner_model(r);
  int C = m->cfg.d_model, V = m->cfg.vocab_size;
  g_autofree float *seed = g_new0(float, (size_t)b->B * b->T * C), *rows = g_new(float, (size_t)b->B * C);
  /* d ln_final = dlogits W_U (head [V, C]) */
  lmwb_backend_cpu()->sgemm(false, false, b->B, C, V, 1.f, dlast, V, m->w.head, C, 0.f, rows, C);
  for (int i = 0; i < b->B; i++) memcpy(seed + (size_t)b->last[i] * C, rows + (size_t)i * C, C * sizeof(float));
  LmwbGradSeed s = {.site = {LMWB_SITE_LN_FINAL, -1}, .grad = seed};
  return lmwb_runner_backward_from(r, &s, 1, NULL, error);
}
