/* CPU ops: embedding, norms, linear, activations and losses (attention and rope live in
 * ops_cpu_attn.c). Row-wise work is split over rows with OpenMP; reductions over rows (weight
 * gradients, bias gradients) are split over column blocks instead, so no two threads ever add
 * into the same float and no scratch buffers are needed. */
#include "app/engine/ops_cpu.h"
#include "app/engine/ops_cpu_math.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Below this many floats a parallel region costs more than it saves (generation runs N = 1). */
#define PAR_MIN 16384
/* Column block for the over-rows reductions: 64 floats = four cache lines per row visited. */
#define COL_BLOCK 64

/* Column-blocked reduction: acc[c] += sum_n a[n,c] (b == NULL) or sum_n a[n,c] * b[n,c]. */
static void col_sum_rows(float *acc, const float *a, const float *b, int N, int C) {
  int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
  for (int blk = 0; blk < nblk; blk++) {
    int c0 = blk * COL_BLOCK;
    int c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
    float s[COL_BLOCK] = {0};
    for (int n = 0; n < N; n++) {
      const float *ar = a + (size_t)n * C;
      if (b) {
        const float *br = b + (size_t)n * C;
        for (int c = c0; c < c1; c++) s[c - c0] += ar[c] * br[c];
      } else {
        for (int c = c0; c < c1; c++) s[c - c0] += ar[c];
      }
    }
    for (int c = c0; c < c1; c++) acc[c] += s[c - c0];
  }
}

/* ---- embedding ---- */

void lmwb_cpu_embed_fwd(float *out, const int32_t *ids, const float *table, int N, int C) {
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
  for (int n = 0; n < N; n++) {
    float *o = out + (size_t)n * C;
    if (ids[n] < 0)
      memset(o, 0, sizeof(float) * (size_t)C);
    else
      memcpy(o, table + (size_t)ids[n] * C, sizeof(float) * (size_t)C);
  }
}

void lmwb_cpu_embed_bwd(float *dtable, const float *dout, const int32_t *ids, int N, int C) {
  if (!dtable) return;
  /* Several rows may share an id: split over columns so each thread owns its slice of dtable. */
  int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
  for (int blk = 0; blk < nblk; blk++) {
    int c0 = blk * COL_BLOCK;
    int c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
    for (int n = 0; n < N; n++) {
      if (ids[n] < 0) continue;
      float *d = dtable + (size_t)ids[n] * C;
      const float *g = dout + (size_t)n * C;
      for (int c = c0; c < c1; c++) d[c] += g[c];
    }
  }
}

/* ---- LayerNorm ---- */

void lmwb_cpu_layernorm_fwd(float *out, float *mean, float *rstd, const float *x, const float *w,
                            const float *b, int N, int C, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
  for (int n = 0; n < N; n++) {
    const float *xr = x + (size_t)n * C;
    float *o = out + (size_t)n * C;
    /* Two passes (mean, then centred variance): no cancellation for rows with a large mean. */
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += xr[c];
    float m = s / (float)C;
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; c++) {
      float d = xr[c] - m;
      v += d * d;
    }
    float r = 1.0f / sqrtf(v / (float)C + eps);
    if (b) {
      for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * w[c] + b[c];
    } else {
      for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * w[c];
    }
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = r;
  }
}

void lmwb_cpu_layernorm_bwd(float *dx, float *dw, float *db, const float *dout, const float *x,
                            const float *w, const float *mean, const float *rstd, int N, int C,
                            bool freeze_scale) {
  if (dx) {
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
      const float *xr = x + (size_t)n * C;
      const float *g = dout + (size_t)n * C;
      float *d = dx + (size_t)n * C;
      float m = mean[n], r = rstd[n];
      float sd = 0.f, sdn = 0.f;
#pragma omp simd reduction(+ : sd, sdn)
      for (int c = 0; c < C; c++) {
        float dn = g[c] * w[c];
        sd += dn;
        sdn += dn * (xr[c] - m) * r;
      }
      sd /= (float)C;
      sdn /= (float)C;
      /* Frozen scale: rstd is a constant, only the mean still depends on x. */
      if (freeze_scale) sdn = 0.f;
      for (int c = 0; c < C; c++) {
        float norm = (xr[c] - m) * r;
        d[c] += (g[c] * w[c] - sd - norm * sdn) * r;
      }
    }
  }
  if (db) col_sum_rows(db, dout, NULL, N, C);
  if (dw) {
    int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int blk = 0; blk < nblk; blk++) {
      int c0 = blk * COL_BLOCK;
      int c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
      float s[COL_BLOCK] = {0};
      for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        const float *g = dout + (size_t)n * C;
        float m = mean[n], r = rstd[n];
        for (int c = c0; c < c1; c++) s[c - c0] += g[c] * (xr[c] - m) * r;
      }
      for (int c = c0; c < c1; c++) dw[c] += s[c - c0];
    }
  }
}

/* ---- RMSNorm ---- */

void lmwb_cpu_rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int N, int C,
                          float eps) {
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
  for (int n = 0; n < N; n++) {
    const float *xr = x + (size_t)n * C;
    float *o = out + (size_t)n * C;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += xr[c] * xr[c];
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    for (int c = 0; c < C; c++) o[c] = xr[c] * r * w[c];
    if (rstd) rstd[n] = r;
  }
}

void lmwb_cpu_rmsnorm_bwd(float *dx, float *dw, const float *dout, const float *x, const float *w,
                          const float *rstd, int N, int C, bool freeze_scale) {
  if (dx) {
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
      const float *xr = x + (size_t)n * C;
      const float *g = dout + (size_t)n * C;
      float *d = dx + (size_t)n * C;
      float r = rstd[n];
      /* d/dx of x*r*w with r = (mean(x^2)+eps)^-1/2: r*dn - x r^3 mean(dn*x). */
      float sdn = 0.f;
      if (!freeze_scale) {
#pragma omp simd reduction(+ : sdn)
        for (int c = 0; c < C; c++) sdn += g[c] * w[c] * xr[c];
        sdn = sdn / (float)C * r * r * r;
      }
      for (int c = 0; c < C; c++) d[c] += g[c] * w[c] * r - xr[c] * sdn;
    }
  }
  if (dw) {
    int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int blk = 0; blk < nblk; blk++) {
      int c0 = blk * COL_BLOCK;
      int c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
      float s[COL_BLOCK] = {0};
      for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        const float *g = dout + (size_t)n * C;
        float r = rstd[n];
        for (int c = c0; c < c1; c++) s[c - c0] += g[c] * xr[c] * r;
      }
      for (int c = c0; c < c1; c++) dw[c] += s[c - c0];
    }
  }
}

/* ---- linear ---- */

void lmwb_cpu_linear_fwd(float *y, const float *x, const float *W, const float *b, int N, int in,
                         int out) {
  if (N <= 0 || out <= 0) return;
  if (in <= 0) {
    for (int n = 0; n < N; n++)
      for (int o = 0; o < out; o++) y[(size_t)n * out + o] = b ? b[o] : 0.f;
    return;
  }
  float beta = 0.f;
  if (b) {
    /* Seed y with the bias and let the GEMM add x W^T on top. */
#pragma omp parallel for schedule(static) if ((size_t)N * out > PAR_MIN)
    for (int n = 0; n < N; n++) memcpy(y + (size_t)n * out, b, sizeof(float) * (size_t)out);
    beta = 1.f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.f, x, in, W, in, beta, y, out);
}

void lmwb_cpu_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                         const float *W, int N, int in, int out) {
  if (N <= 0 || out <= 0) return;
  if (in > 0) {
    /* dx[N,in] += dy[N,out] W[out,in] */
    if (dx)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out, 1.f, dy, out, W, in, 1.f,
                  dx, in);
    /* dW[out,in] += dy^T[out,N] x[N,in] */
    if (dW)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1.f, dy, out, x, in, 1.f,
                  dW, in);
  }
  if (db) col_sum_rows(db, dy, NULL, N, out);
}

void lmwb_cpu_bias_fwd(float *y, const float *b, int N, int C) {
#pragma omp parallel for schedule(static) if ((size_t)N * C > PAR_MIN)
  for (int n = 0; n < N; n++) {
    float *r = y + (size_t)n * C;
#pragma omp simd
    for (int c = 0; c < C; c++) r[c] += b[c];
  }
}

void lmwb_cpu_bias_bwd(float *db, const float *dy, int N, int C) {
  if (db) col_sum_rows(db, dy, NULL, N, C);
}

void lmwb_cpu_add(float *y, const float *a, const float *b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
  for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void lmwb_cpu_heads_spread(float *y, const float *x, int N, int H, int C) {
#pragma omp parallel for schedule(static) if ((size_t)N * H * C > PAR_MIN)
  for (int n = 0; n < N; n++)
    for (int h = 0; h < H; h++) memcpy(y + ((size_t)n * H + h) * C, x + (size_t)n * C, sizeof(float) * (size_t)C);
}

void lmwb_cpu_heads_sum(float *y, const float *x, int N, int H, int C) {
#pragma omp parallel for schedule(static) if ((size_t)N * H * C > PAR_MIN)
  for (int n = 0; n < N; n++) {
    float *r = y + (size_t)n * C;
    for (int h = 0; h < H; h++) {
      const float *xr = x + ((size_t)n * H + h) * C;
#pragma omp simd
      for (int c = 0; c < C; c++) r[c] += xr[c];
    }
  }
}

/* ---- activations ---- */

/* sqrt(2/pi) and the cubic coefficient of gelu_new (Hendrycks & Gimpel 2016, GPT-2's gelu). */
#define GELU_K 0.7978845608028654f
#define GELU_C 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

void lmwb_cpu_gelu_fwd(float *y, const float *x, size_t n, bool tanh_approx) {
  if (tanh_approx) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
      float v = x[i];
      y[i] = 0.5f * v * (1.f + lmwb_tanhf(GELU_K * (v + GELU_C * v * v * v)));
    }
  } else {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
      float v = x[i];
      y[i] = 0.5f * v * (1.f + lmwb_erff(v * INV_SQRT2));
    }
  }
}

void lmwb_cpu_gelu_bwd(float *dx, const float *dy, const float *x, size_t n, bool tanh_approx, bool frozen) {
  if (!dx) return;
  if (frozen) {
    /* The ratio gelu(x)/x as a constant: its limit at 0 is 1/2 in both forms. */
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
      float v = x[i];
      float s = tanh_approx ? 0.5f * (1.f + lmwb_tanhf(GELU_K * (v + GELU_C * v * v * v)))
                            : 0.5f * (1.f + lmwb_erff(v * INV_SQRT2));
      dx[i] += dy[i] * s;
    }
    return;
  }
  if (tanh_approx) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
      float v = x[i];
      float th = lmwb_tanhf(GELU_K * (v + GELU_C * v * v * v));
      float du = GELU_K * (1.f + 3.f * GELU_C * v * v);
      float g = 0.5f * (1.f + th) + 0.5f * v * (1.f - th * th) * du;
      dx[i] += dy[i] * g;
    }
  } else {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
      float v = x[i];
      float g = 0.5f * (1.f + lmwb_erff(v * INV_SQRT2)) + v * INV_SQRT_2PI * lmwb_expf(-0.5f * v * v);
      dx[i] += dy[i] * g;
    }
  }
}

void lmwb_cpu_swiglu_fwd(float *y, const float *gate, const float *up, size_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (size_t i = 0; i < n; i++) {
    float g = gate[i];
    /* expf(-g) overflows to inf for very negative g, giving sigmoid 0: the right limit. */
    float sg = 1.f / (1.f + lmwb_expf(-g));
    y[i] = g * sg * up[i];
  }
}

void lmwb_cpu_swiglu_bwd(float *dgate, float *dup, const float *dy, const float *gate,
                         const float *up, size_t n, bool frozen) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (size_t i = 0; i < n; i++) {
    float g = gate[i];
    float sg = 1.f / (1.f + lmwb_expf(-g));
    if (dgate && !frozen) dgate[i] += dy[i] * up[i] * sg * (1.f + g * (1.f - sg));
    if (dup) dup[i] += dy[i] * g * sg;
  }
}

/* ---- losses ---- */

/* Max and sum of exp(l - max) of one row: softmax = exp(l - m) / s, log-sum-exp = m + log s.
 * Softmax is formed from these rather than exp(l - lse), which would lose the low bits of a large
 * lse (logits of magnitude 1000 have a float spacing of 6e-5). */
static void row_max_sum(const float *l, int V, float *m_out, float *s_out) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int i = 0; i < V; i++) m = l[i] > m ? l[i] : m;
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < V; i++) s += lmwb_expf(l[i] - m);
  *m_out = m;
  *s_out = s;
}

void lmwb_cpu_xent_fwd(float *losses, const float *logits, const int32_t *targets, int N, int V) {
#pragma omp parallel for schedule(static) if ((size_t)N * V > PAR_MIN)
  for (int n = 0; n < N; n++) {
    int32_t t = targets[n];
    if (t < 0 || t >= V) {
      losses[n] = 0.f;
      continue;
    }
    const float *l = logits + (size_t)n * V;
    float m, se;
    row_max_sum(l, V, &m, &se);
    losses[n] = (m - l[t]) + logf(se);
  }
}

void lmwb_cpu_xent_bwd(float *dlogits, float *losses, const float *logits, const int32_t *targets,
                       const float *scale, int N, int V) {
  if (!dlogits) return;
#pragma omp parallel for schedule(static) if ((size_t)N * V > PAR_MIN)
  for (int n = 0; n < N; n++) {
    int32_t t = targets[n];
    if (t < 0 || t >= V) {
      if (losses) losses[n] = 0.f;
      continue;
    }
    const float *l = logits + (size_t)n * V;
    float *d = dlogits + (size_t)n * V;
    float s = scale ? scale[n] : 1.f;
    float m, se;
    row_max_sum(l, V, &m, &se);
    if (losses) losses[n] = (m - l[t]) + logf(se);
    float k = s / se;
    for (int i = 0; i < V; i++) d[i] += k * lmwb_expf(l[i] - m);
    d[t] -= s;
  }
}

void lmwb_cpu_kl_fwd(float *losses, const float *logits, const float *ref_logprobs,
                     const uint8_t *mask, int N, int V) {
#pragma omp parallel for schedule(static) if ((size_t)N * V > PAR_MIN)
  for (int n = 0; n < N; n++) {
    if (mask && !mask[n]) {
      losses[n] = 0.f;
      continue;
    }
    const float *l = logits + (size_t)n * V;
    const float *r = ref_logprobs + (size_t)n * V;
    float m, se;
    row_max_sum(l, V, &m, &se);
    float logse = logf(se);
    float kl = 0.f;
    for (int i = 0; i < V; i++) {
      float p = lmwb_expf(r[i]);
      /* Tokens the reference gives zero probability (log p = -inf) add nothing: 0 log 0 = 0. */
      kl += p > 0.f ? p * (r[i] - ((l[i] - m) - logse)) : 0.f;
    }
    losses[n] = kl;
  }
}

void lmwb_cpu_kl_bwd(float *dlogits, const float *logits, const float *ref_logprobs,
                     const float *scale, int N, int V) {
  if (!dlogits) return;
#pragma omp parallel for schedule(static) if ((size_t)N * V > PAR_MIN)
  for (int n = 0; n < N; n++) {
    float s = scale ? scale[n] : 1.f;
    if (s == 0.f) continue;
    const float *l = logits + (size_t)n * V;
    const float *r = ref_logprobs + (size_t)n * V;
    float *d = dlogits + (size_t)n * V;
    float m, se;
    row_max_sum(l, V, &m, &se);
    float k = 1.f / se;
    for (int i = 0; i < V; i++) d[i] += s * (k * lmwb_expf(l[i] - m) - lmwb_expf(r[i]));
  }
}
