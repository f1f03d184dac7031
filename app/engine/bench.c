#include "app/engine/bench.h"
#include "app/engine/runner.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include <string.h>

double lmwb_bench_forward_flops(const LmwbConfig *c, int B, int T) {
  double N = (double)B * T, C = c->d_model, F = c->d_ff, qd = (double)c->n_head * c->head_dim,
         kd = (double)c->n_kv_head * c->head_dim;
  double per_layer = 2 * N * (C * qd + 2 * C * kd + qd * C + (c->gated_mlp ? 3 : 2) * C * F);
  double attn = 2.0 * 2.0 * B * c->n_head * (double)T * (T + 1) / 2.0 * c->head_dim; /* causal half */
  return c->n_layer * (per_layer + attn) + 2 * N * C * c->vocab_size;
}

gboolean lmwb_bench_model(LmwbModel *m, int B, int T, gboolean backward, int runs, LmwbBenchResult *res, GError **error) {
  if (B < 1 || T < 1 || T > m->cfg.n_ctx) {
    lmwb_input_error(error, "bench: --batch %d --seq %d: need at least one sequence, of 1 to %d tokens (the model's context)",
                     B, T, m->cfg.n_ctx);
    return FALSE;
  }
  if ((int64_t)B * T > G_MAXINT32 / 4) {
    lmwb_input_error(error, "bench: a batch of %d sequences of %d tokens is too large", B, T);
    return FALSE;
  }
  size_t N = (size_t)B * T;
  if (!lmwb_memory_check(N * sizeof(int32_t), "the benchmark's token ids", error)) return FALSE;
  g_autofree int32_t *ids = g_new(int32_t, N);
  guint32 s = 12345;
  for (size_t i = 0; i < N; i++) {
    s = s * 1664525u + 1013904223u;
    ids[i] = (int32_t)((s >> 8) % (guint32)m->cfg.vocab_size);
  }
  LmwbRunner *r = lmwb_runner_new(m);
  double best = 1e30;
  gboolean ok = TRUE;
  for (int k = 0; ok && k <= runs; k++) {
    gint64 t0 = g_get_monotonic_time();
    ok = lmwb_runner_forward(r, ids, B, T, NULL, error);
    if (ok && backward) {
      LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
      LmwbBackwardOptions bo = {.param_grads = true};
      double lv;
      ok = lmwb_runner_backward(r, &loss, 1, &bo, &lv, error);
    }
    double dt = (g_get_monotonic_time() - t0) / 1e6;
    if (k > 0 && dt < best) best = dt; /* run 0 is the warm-up */
  }
  lmwb_runner_free(r);
  if (!ok) return FALSE;
  double flops = lmwb_bench_forward_flops(&m->cfg, B, T) * (backward ? 3.0 : 1.0);
  res->seconds = best;
  res->tokens_per_s = N / best;
  res->gflops = flops / best / 1e9;
  return TRUE;
}

double lmwb_bench_sgemm_peak(const LmwbBackend *be) {
  const int n = 2048;
  float *a = g_new(float, (size_t)n * n), *b = g_new(float, (size_t)n * n), *c = g_new0(float, (size_t)n * n);
  for (size_t i = 0; i < (size_t)n * n; i++) {
    a[i] = (float)((i * 7) % 13) * 0.01f;
    b[i] = (float)((i * 5) % 11) * 0.01f;
  }
  double best = 1e30;
  for (int k = 0; k < 4; k++) {
    gint64 t0 = g_get_monotonic_time();
    be->sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double dt = (g_get_monotonic_time() - t0) / 1e6;
    if (k > 0 && dt < best) best = dt;
  }
  g_free(a);
  g_free(b);
  g_free(c);
  return 2.0 * n * n * (double)n / best / 1e9;
}
