/* Throughput of one GPT-2-small-shaped layer forward (B=4, T=128, C=768, 12 heads) on the CPU
 * backend, against the bare GEMMs of the same shapes: how much the non-GEMM ops cost.
 * Prints one JSON line; run with `meson test --suite bench`. */
#include "app/engine/backend.h"

#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { B = 4, T = 128, C = 768, H = 12, HD = 64, N = B * T, F = 4 * C };

static float *buf(size_t n) {
  float *p = g_new(float, n);
  for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u % 1000) / 1000.0 - 0.5) * 0.1f;
  return p;
}

int main(void) {
  const LmwbBackend *be = lmwb_backend_cpu();
  const LmwbOps *O = be->ops;
  float *x = buf((size_t)N * C), *h = buf((size_t)N * C), *qkv = buf((size_t)N * 3 * C);
  float *q = buf((size_t)N * C), *k = buf((size_t)N * C), *v = buf((size_t)N * C);
  float *pat = buf((size_t)B * H * T * T), *z = buf((size_t)N * C), *ao = buf((size_t)N * C);
  float *fc = buf((size_t)N * F), *act = buf((size_t)N * F), *mo = buf((size_t)N * C);
  float *Wqkv = buf((size_t)3 * C * C), *Wo = buf((size_t)C * C), *Wfc = buf((size_t)F * C),
        *Wpr = buf((size_t)C * F);
  float *bqkv = buf(3 * C), *bo = buf(C), *bfc = buf(F), *bpr = buf(C), *lw = buf(C), *lb = buf(C);
  float *mean = buf(N), *rstd = buf(N);
  const int reps = 10;

  /* warm-up, then the layer */
  double t_layer = 1e30, t_gemm = 1e30;
  for (int rep = 0; rep < reps + 1; rep++) {
    gint64 t0 = g_get_monotonic_time();
    O->layernorm_fwd(h, mean, rstd, x, lw, lb, N, C, 1e-5f);
    O->linear_fwd(qkv, h, Wqkv, bqkv, N, C, 3 * C);
    for (int n = 0; n < N; n++) {
      memcpy(q + (size_t)n * C, qkv + (size_t)n * 3 * C, sizeof(float) * C);
      memcpy(k + (size_t)n * C, qkv + (size_t)n * 3 * C + C, sizeof(float) * C);
      memcpy(v + (size_t)n * C, qkv + (size_t)n * 3 * C + 2 * C, sizeof(float) * C);
    }
    O->attn_pattern_fwd(pat, q, k, B, T, 0, T, H, H, HD, NULL);
    O->attn_mix_fwd(z, pat, v, B, T, 0, T, H, H, HD);
    O->linear_fwd(ao, z, Wo, bo, N, C, C);
    for (size_t i = 0; i < (size_t)N * C; i++) x[i] += ao[i] * 1e-3f;
    O->layernorm_fwd(h, mean, rstd, x, lw, lb, N, C, 1e-5f);
    O->linear_fwd(fc, h, Wfc, bfc, N, C, F);
    O->gelu_fwd(act, fc, (size_t)N * F, true);
    O->linear_fwd(mo, act, Wpr, bpr, N, F, C);
    for (size_t i = 0; i < (size_t)N * C; i++) x[i] += mo[i] * 1e-3f;
    gint64 t1 = g_get_monotonic_time();
    be->sgemm(false, true, N, 3 * C, C, 1.f, h, C, Wqkv, C, 0.f, qkv, 3 * C);
    be->sgemm(false, true, N, C, C, 1.f, z, C, Wo, C, 0.f, ao, C);
    be->sgemm(false, true, N, F, C, 1.f, h, C, Wfc, C, 0.f, fc, F);
    be->sgemm(false, true, N, C, F, 1.f, act, F, Wpr, F, 0.f, mo, C);
    gint64 t2 = g_get_monotonic_time();
    if (rep > 0) {
      t_layer = fmin(t_layer, (t1 - t0) * 1e-6);
      t_gemm = fmin(t_gemm, (t2 - t1) * 1e-6);
    }
  }
  double gemm_flops = 2.0 * N * C * (3.0 * C + C + F + F);
  double attn_flops = 2.0 * 2.0 * B * H * (T * (T + 1) / 2.0) * HD;

  /* attention backward alone */
  float *dpat = buf((size_t)B * H * T * T), *dq = buf((size_t)N * C), *dk = buf((size_t)N * C),
        *dv = buf((size_t)N * C);
  double t_abwd = 1e30;
  for (int rep = 0; rep < reps + 1; rep++) {
    gint64 t0 = g_get_monotonic_time();
    O->attn_mix_bwd(dpat, dv, z, pat, v, B, T, 0, T, H, H, HD);
    O->attn_pattern_bwd(dq, dk, dpat, pat, q, k, B, T, 0, T, H, H, HD);
    gint64 t1 = g_get_monotonic_time();
    if (rep > 0) t_abwd = fmin(t_abwd, (t1 - t0) * 1e-6);
  }
  printf("{\"shape\": \"B=%d T=%d C=%d H=%d\", \"layer_fwd_s\": %.5f, \"layer_gflops\": %.1f, "
         "\"bare_gemm_s\": %.5f, \"gemm_gflops\": %.1f, \"layer_vs_gemm\": %.3f, "
         "\"attn_bwd_s\": %.5f, \"tokens_per_s\": %.0f}\n",
         B, T, C, H, t_layer, (gemm_flops + attn_flops) / t_layer * 1e-9, t_gemm,
         gemm_flops / t_gemm * 1e-9, t_layer / t_gemm, t_abwd, N / t_layer);
  g_free(x), g_free(h), g_free(qkv), g_free(q), g_free(k), g_free(v), g_free(pat), g_free(z),
      g_free(ao), g_free(fc), g_free(act), g_free(mo), g_free(Wqkv), g_free(Wo), g_free(Wfc),
      g_free(Wpr), g_free(bqkv), g_free(bo), g_free(bfc), g_free(bpr), g_free(lw), g_free(lb),
      g_free(mean), g_free(rstd), g_free(dpat), g_free(dq), g_free(dk), g_free(dv);
  return 0;
}
