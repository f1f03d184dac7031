/* The CUDA backend: cuBLAS sgemm and plain kernels for the op table (ops.h), same contracts as the
 * CPU ops (backward accumulates, NULL gradients skipped). Kernels favour clarity over speed: one
 * thread per output element or one block per row. Built only when nvcc is found; compiled here
 * without a GPU, so it is tested at run time only where a GPU is present; the checked backend
 * (backend_checked.c) runs the same runner code paths on protected memory without one. lmwb_backend_cuda_probe() returns NULL when no
 * device answers. */
extern "C" {
#include "app/engine/backend.h"
}
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>

#define TPB 256
static cublasHandle_t g_blas;
/* scratch for per-row softmax sums in attention backward, grown on demand */
static float *g_scratch;
static size_t g_scratch_n;

static float *scratch(size_t n) {
  if (n > g_scratch_n) {
    if (g_scratch) cudaFree(g_scratch);
    g_scratch = NULL;
    g_scratch_n = 0;
    if (cudaMalloc((void **)&g_scratch, n * sizeof(float)) != cudaSuccess) return NULL;
    g_scratch_n = n;
  }
  return g_scratch;
}

static unsigned nblocks(size_t n) { return (unsigned)((n + TPB - 1) / TPB); }

/* Block-wide sum / max (blockDim.x == TPB). */
__device__ float block_sum(float v) {
  __shared__ float sh[TPB];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = TPB / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  float r = sh[0];
  __syncthreads();
  return r;
}
__device__ float block_max(float v) {
  __shared__ float sh[TPB];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = TPB / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  float r = sh[0];
  __syncthreads();
  return r;
}

/* ---- memory and GEMM ---- */
static void *cu_alloc(size_t bytes) {
  void *p = NULL;
  return cudaMalloc(&p, bytes ? bytes : 64) == cudaSuccess ? p : NULL;
}
static void cu_free(void *p) { cudaFree(p); }
static void cu_zero(void *p, size_t bytes) { cudaMemset(p, 0, bytes); }
static void cu_to_device(void *d, const void *h, size_t n) { cudaMemcpy(d, h, n, cudaMemcpyHostToDevice); }
static void cu_to_host(void *h, const void *d, size_t n) { cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost); }
static void cu_copy(void *dst, const void *src, size_t n) {
  if (n && dst != src) cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice);
}
static void cu_copy2d(float *dst, int ldd, const float *src, int lds, int rows, int cols) {
  if (rows > 0 && cols > 0)
    cudaMemcpy2D(dst, (size_t)ldd * sizeof(float), src, (size_t)lds * sizeof(float), (size_t)cols * sizeof(float), rows,
                 cudaMemcpyDeviceToDevice);
}
static void cu_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T. */
  cublasSgemm(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
              &alpha, B, ldb, A, lda, &beta, C, ldc);
}
static void cu_set_threads(int n) { (void)n; }

/* ---- embedding ---- */
__global__ void k_embed_fwd(float *out, const int32_t *ids, const float *table, int N, int C) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)N * C) return;
  int n = (int)(i / C), c = (int)(i % C);
  out[i] = ids[n] < 0 ? 0.f : table[(size_t)ids[n] * C + c];
}
__global__ void k_embed_bwd(float *dt, const float *dout, const int32_t *ids, int N, int C) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)N * C) return;
  int n = (int)(i / C), c = (int)(i % C);
  if (ids[n] >= 0) atomicAdd(&dt[(size_t)ids[n] * C + c], dout[i]);
}
static void embed_fwd(float *out, const int32_t *ids, const float *table, int N, int C) {
  if ((size_t)N * C) k_embed_fwd<<<nblocks((size_t)N * C), TPB>>>(out, ids, table, N, C);
}
static void embed_bwd(float *dt, const float *dout, const int32_t *ids, int N, int C) {
  if (dt && (size_t)N * C) k_embed_bwd<<<nblocks((size_t)N * C), TPB>>>(dt, dout, ids, N, C);
}

/* ---- norms: one block per row; rms = true skips the mean ---- */
__global__ void k_norm_fwd(float *out, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int C, float eps, bool rms) {
  const float *xr = x + (size_t)blockIdx.x * C;
  float *o = out + (size_t)blockIdx.x * C;
  float s = 0.f;
  for (int c = threadIdx.x; c < C; c += TPB) s += xr[c];
  float m = rms ? 0.f : block_sum(s) / C;
  float v = 0.f;
  for (int c = threadIdx.x; c < C; c += TPB) v += (xr[c] - m) * (xr[c] - m);
  float r = rsqrtf(block_sum(v) / C + eps);
  for (int c = threadIdx.x; c < C; c += TPB) o[c] = (xr[c] - m) * r * w[c] + (b ? b[c] : 0.f);
  if (threadIdx.x == 0) {
    if (mean) mean[blockIdx.x] = m;
    if (rstd) rstd[blockIdx.x] = r;
  }
}
__global__ void k_norm_bwd(float *dx, float *dw, float *db, const float *dout, const float *x,
                           const float *w, const float *mean, const float *rstd, int C, bool freeze,
                           bool rms) {
  size_t off = (size_t)blockIdx.x * C;
  float m = rms ? 0.f : mean[blockIdx.x], r = rstd[blockIdx.x];
  float sd = 0.f, sdn = 0.f;
  for (int c = threadIdx.x; c < C; c += TPB) {
    float dn = dout[off + c] * w[c];
    sd += dn;
    sdn += dn * (x[off + c] - m) * r;
  }
  sd = rms ? 0.f : block_sum(sd) / C;
  sdn = freeze ? 0.f : block_sum(sdn) / C;
  for (int c = threadIdx.x; c < C; c += TPB) {
    float norm = (x[off + c] - m) * r;
    if (dx) dx[off + c] += (dout[off + c] * w[c] - sd - norm * sdn) * r;
    if (dw) atomicAdd(&dw[c], dout[off + c] * norm);
    if (db) atomicAdd(&db[c], dout[off + c]);
  }
}
static void layernorm_fwd(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C, float eps) {
  if (N > 0) k_norm_fwd<<<N, TPB>>>(out, mean, rstd, x, w, b, C, eps, false);
}
static void layernorm_bwd(float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *w, const float *mean, const float *rstd, int N, int C,
                          bool freeze) {
  if (N > 0) k_norm_bwd<<<N, TPB>>>(dx, dw, db, dout, x, w, mean, rstd, C, freeze, false);
}
static void rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int N, int C,
                        float eps) {
  if (N > 0) k_norm_fwd<<<N, TPB>>>(out, NULL, rstd, x, w, NULL, C, eps, true);
}
static void rmsnorm_bwd(float *dx, float *dw, const float *dout, const float *x, const float *w,
                        const float *rstd, int N, int C, bool freeze) {
  /* with m = 0 and no mean term, the layernorm formula is RMSNorm's: r (dn - norm mean(dn norm)) */
  if (N > 0) k_norm_bwd<<<N, TPB>>>(dx, dw, NULL, dout, x, w, NULL, rstd, C, freeze, true);
}

/* ---- linear ---- */
__global__ void k_bias_rows(float *y, const float *b, int N, int out) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < (size_t)N * out) y[i] = b[i % out];
}
__global__ void k_col_sum(float *acc, const float *a, int N, int C) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.f;
  for (int n = 0; n < N; n++) s += a[(size_t)n * C + c];
  acc[c] += s;
}
static void linear_fwd(float *y, const float *x, const float *W, const float *b, int N, int in, int out) {
  if (N <= 0 || out <= 0) return;
  if (b) k_bias_rows<<<nblocks((size_t)N * out), TPB>>>(y, b, N, out);
  cu_sgemm(false, true, N, out, in, 1.f, x, in, W, in, b ? 1.f : 0.f, y, out);
}
static void linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                       const float *W, int N, int in, int out) {
  if (N <= 0 || out <= 0) return;
  if (dx) cu_sgemm(false, false, N, in, out, 1.f, dy, out, W, in, 1.f, dx, in);
  if (dW) cu_sgemm(true, false, out, in, N, 1.f, dy, out, x, in, 1.f, dW, in);
  if (db) k_col_sum<<<nblocks(out), TPB>>>(db, dy, N, out);
}

/* ---- attention: one block per pattern row (b, h, t) ---- */
__device__ int kv_head(int h, int Hq, int Hkv) {
  int g = Hq >= Hkv ? Hq / Hkv : 1;
  int k = h / g;
  return k < Hkv ? k : Hkv - 1;
}
__global__ void k_pattern_fwd(float *pattern, const float *q, const float *k, int T, int past,
                              int Tcap, int Hq, int Hkv, int hd, const int *lens) {
  long r = blockIdx.x;
  int t = r % T, h = (r / T) % Hq, b = r / ((long)T * Hq), Tk = past + T;
  float *p = pattern + r * Tk;
  int qpos = past + t, jend = qpos + 1;
  if (lens && lens[b] < jend) jend = lens[b];
  if (lens && qpos >= lens[b]) jend = 0;
  const float *qv = q + ((size_t)b * T + t) * Hq * hd + (size_t)h * hd;
  const float *kb = k + (size_t)b * Tcap * Hkv * hd + (size_t)kv_head(h, Hq, Hkv) * hd;
  float scale = rsqrtf((float)hd), m = -INFINITY;
  for (int j = threadIdx.x; j < Tk; j += TPB) {
    if (j < jend) {
      float s = 0.f;
      for (int d = 0; d < hd; d++) s += qv[d] * kb[(size_t)j * Hkv * hd + d];
      p[j] = s * scale;
      m = fmaxf(m, p[j]);
    }
  }
  m = block_max(m);
  float sum = 0.f;
  for (int j = threadIdx.x; j < Tk; j += TPB) {
    if (j < jend) {
      p[j] = __expf(p[j] - m);
      sum += p[j];
    }
  }
  sum = block_sum(sum);
  for (int j = threadIdx.x; j < Tk; j += TPB) p[j] = j < jend ? p[j] / sum : 0.f;
}
__global__ void k_mix_fwd(float *z, const float *pattern, const float *v, int T, int past, int Tcap,
                          int Hq, int Hkv, int hd) {
  long r = blockIdx.x;
  int t = r % T, h = (r / T) % Hq, b = r / ((long)T * Hq), Tk = past + T;
  const float *p = pattern + r * Tk;
  const float *vb = v + (size_t)b * Tcap * Hkv * hd + (size_t)kv_head(h, Hq, Hkv) * hd;
  for (int d = threadIdx.x; d < hd; d += TPB) {
    float s = 0.f;
    for (int j = 0; j < Tk; j++)
      if (p[j] != 0.f) s += p[j] * vb[(size_t)j * Hkv * hd + d];
    z[((size_t)b * T + t) * Hq * hd + (size_t)h * hd + d] = s;
  }
}
__global__ void k_dpattern(float *dp, const float *dz, const float *v, int T, int past, int Tcap,
                           int Hq, int Hkv, int hd) {
  long r = blockIdx.x;
  int t = r % T, h = (r / T) % Hq, b = r / ((long)T * Hq), Tk = past + T;
  const float *dzr = dz + ((size_t)b * T + t) * Hq * hd + (size_t)h * hd;
  const float *vb = v + (size_t)b * Tcap * Hkv * hd + (size_t)kv_head(h, Hq, Hkv) * hd;
  for (int j = threadIdx.x; j < Tk; j += TPB) {
    float s = 0.f;
    for (int d = 0; d < hd; d++) s += dzr[d] * vb[(size_t)j * Hkv * hd + d];
    dp[r * Tk + j] += s;
  }
}
/* one thread per (b, j, kv head, d): sums over the heads of its group and all queries */
__global__ void k_dkv(float *dkv, const float *w, const float *rowsum, const float *dp,
                      const float *src, int B, int T, int past, int Tcap, int Hq, int Hkv, int hd,
                      float scale) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  int Tk = past + T;
  if (i >= (size_t)B * Tk * Hkv * hd) return;
  int d = i % hd, kh = (i / hd) % Hkv, j = (i / ((size_t)hd * Hkv)) % Tk, b = i / ((size_t)hd * Hkv * Tk);
  float s = 0.f;
  for (int h = 0; h < Hq; h++) {
    if (kv_head(h, Hq, Hkv) != kh) continue;
    for (int t = 0; t < T; t++) {
      size_t r = ((size_t)b * Hq + h) * T + t;
      float p = w[r * Tk + j];
      if (p == 0.f) continue;
      /* rowsum NULL: dv (weight p); else dk (weight p (dp - rowsum) scale) */
      float c = rowsum ? p * (dp[r * Tk + j] - rowsum[r]) * scale : p;
      s += c * src[((size_t)b * T + t) * Hq * hd + (size_t)h * hd + d];
    }
  }
  dkv[((size_t)b * Tcap + j) * Hkv * hd + (size_t)kh * hd + d] += s;
}
__global__ void k_rowsum(float *rs, const float *p, const float *dp, int Tk) {
  long r = blockIdx.x;
  float s = 0.f;
  for (int j = threadIdx.x; j < Tk; j += TPB)
    if (p[r * Tk + j] != 0.f) s += p[r * Tk + j] * dp[r * Tk + j];
  s = block_sum(s);
  if (threadIdx.x == 0) rs[r] = s;
}
__global__ void k_dq(float *dq, const float *rs, const float *dp, const float *p, const float *k,
                     int T, int past, int Tcap, int Hq, int Hkv, int hd, float scale) {
  long r = blockIdx.x;
  int t = r % T, h = (r / T) % Hq, b = r / ((long)T * Hq), Tk = past + T;
  const float *kb = k + (size_t)b * Tcap * Hkv * hd + (size_t)kv_head(h, Hq, Hkv) * hd;
  for (int d = threadIdx.x; d < hd; d += TPB) {
    float s = 0.f;
    for (int j = 0; j < Tk; j++) {
      float pj = p[r * Tk + j];
      if (pj != 0.f) s += pj * (dp[r * Tk + j] - rs[r]) * scale * kb[(size_t)j * Hkv * hd + d];
    }
    dq[((size_t)b * T + t) * Hq * hd + (size_t)h * hd + d] += s;
  }
}
static bool shapes_ok(int B, int T, int past, int Tcap, int Hq, int Hkv, int hd) {
  return B > 0 && T > 0 && past >= 0 && past + T <= Tcap && Hq > 0 && Hkv > 0 && hd > 0;
}
static void attn_pattern_fwd(float *pattern, const float *q, const float *k, int B, int T, int past,
                             int Tcap, int Hq, int Hkv, int hd, const int *lens) {
  if (shapes_ok(B, T, past, Tcap, Hq, Hkv, hd))
    k_pattern_fwd<<<B * Hq * T, TPB>>>(pattern, q, k, T, past, Tcap, Hq, Hkv, hd, lens);
}
static void attn_mix_fwd(float *z, const float *pattern, const float *v, int B, int T, int past,
                         int Tcap, int Hq, int Hkv, int hd) {
  if (shapes_ok(B, T, past, Tcap, Hq, Hkv, hd))
    k_mix_fwd<<<B * Hq * T, TPB>>>(z, pattern, v, T, past, Tcap, Hq, Hkv, hd);
}
static void attn_mix_bwd(float *dpattern, float *dv, const float *dz, const float *pattern,
                         const float *v, int B, int T, int past, int Tcap, int Hq, int Hkv, int hd) {
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd)) return;
  if (dpattern) k_dpattern<<<B * Hq * T, TPB>>>(dpattern, dz, v, T, past, Tcap, Hq, Hkv, hd);
  if (dv)
    k_dkv<<<nblocks((size_t)B * (past + T) * Hkv * hd), TPB>>>(dv, pattern, NULL, NULL, dz, B, T, past,
                                                                Tcap, Hq, Hkv, hd, 1.f);
}
static void attn_pattern_bwd(float *dq, float *dk, const float *dpattern, const float *pattern,
                             const float *q, const float *k, int B, int T, int past, int Tcap,
                             int Hq, int Hkv, int hd) {
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd)) return;
  float *rs = scratch((size_t)B * Hq * T);
  if (!rs) return;
  float scale = 1.0f / sqrtf((float)hd);
  k_rowsum<<<B * Hq * T, TPB>>>(rs, pattern, dpattern, past + T);
  if (dq) k_dq<<<B * Hq * T, TPB>>>(dq, rs, dpattern, pattern, k, T, past, Tcap, Hq, Hkv, hd, scale);
  if (dk)
    k_dkv<<<nblocks((size_t)B * (past + T) * Hkv * hd), TPB>>>(dk, pattern, rs, dpattern, q, B, T, past,
                                                                Tcap, Hq, Hkv, hd, scale);
}

/* ---- rope: one thread per rotated pair ---- */
__global__ void k_rope(float *x, int B, int T, int stride, int H, int hd, int half, int rot, int past,
                       float theta, float sgn) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)B * T * H * half) return;
  int j = i % half, h = (i / half) % H, t = (i / ((size_t)half * H)) % T, b = i / ((size_t)half * H * T);
  float inv = 1.0f / powf(theta, (float)(2 * j) / (float)rot);
  float a = (float)(past + t) * inv, c = cosf(a), s = sgn * sinf(a);
  float *x1 = x + ((size_t)b * T + t) * stride + (size_t)h * hd + j, *x2 = x1 + half;
  float u = *x1, w = *x2;
  *x1 = u * c - w * s;
  *x2 = w * c + u * s;
}
/* ---- pieces of a linear computed per head, and the residual sums ---- */
__global__ void k_bias_add(float *y, const float *b, int N, int C) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < (size_t)N * C) y[i] += b[i % C];
}
__global__ void k_add(float *y, const float *a, const float *b, size_t n) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) y[i] = a[i] + b[i];
}
__global__ void k_heads_spread(float *y, const float *x, int N, int H, int C) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)N * H * C) return;
  size_t n = i / ((size_t)H * C), c = i % C;
  y[i] = x[n * C + c];
}
__global__ void k_heads_sum(float *y, const float *x, int N, int H, int C) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)N * C) return;
  size_t n = i / C, c = i % C;
  float s = 0.f;
  for (int h = 0; h < H; h++) s += x[(n * H + h) * C + c];
  y[i] += s;
}
static void bias_fwd(float *y, const float *b, int N, int C) {
  if ((size_t)N * C) k_bias_add<<<nblocks((size_t)N * C), TPB>>>(y, b, N, C);
}
static void bias_bwd(float *db, const float *dy, int N, int C) {
  if (db && N > 0 && C > 0) k_col_sum<<<nblocks(C), TPB>>>(db, dy, N, C);
}
static void add(float *y, const float *a, const float *b, size_t n) { if (n) k_add<<<nblocks(n), TPB>>>(y, a, b, n); }
static void heads_spread(float *y, const float *x, int N, int H, int C) {
  if ((size_t)N * H * C) k_heads_spread<<<nblocks((size_t)N * H * C), TPB>>>(y, x, N, H, C);
}
static void heads_sum(float *y, const float *x, int N, int H, int C) {
  if ((size_t)N * C) k_heads_sum<<<nblocks((size_t)N * C), TPB>>>(y, x, N, H, C);
}

static void rope(float *x, int B, int T, int stride, int H, int hd, int rot, int past, float theta,
                 bool inverse) {
  if (rot > hd) rot = hd;
  int half = rot / 2;
  if (B <= 0 || T <= 0 || H <= 0 || half <= 0 || past < 0 || stride < H * hd) return;
  k_rope<<<nblocks((size_t)B * T * H * half), TPB>>>(x, B, T, stride, H, hd, half, rot, past, theta,
                                                      inverse ? -1.f : 1.f);
}

/* ---- activations ---- */
#define GK 0.7978845608028654f
#define GC 0.044715f
__global__ void k_gelu_fwd(float *y, const float *x, size_t n, bool th) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i];
  y[i] = th ? 0.5f * v * (1.f + tanhf(GK * (v + GC * v * v * v))) : 0.5f * v * (1.f + erff(v * 0.70710678f));
}
__global__ void k_gelu_bwd(float *dx, const float *dy, const float *x, size_t n, bool th, bool frozen) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i], g;
  if (frozen) { /* the ratio gelu(x)/x held constant */
    g = th ? 0.5f * (1.f + tanhf(GK * (v + GC * v * v * v))) : 0.5f * (1.f + erff(v * 0.70710678f));
  } else if (th) {
    float t = tanhf(GK * (v + GC * v * v * v));
    g = 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * GK * (1.f + 3.f * GC * v * v);
  } else {
    g = 0.5f * (1.f + erff(v * 0.70710678f)) + v * 0.39894228f * expf(-0.5f * v * v);
  }
  dx[i] += dy[i] * g;
}
__global__ void k_swiglu_fwd(float *y, const float *g, const float *u, size_t n) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) y[i] = g[i] / (1.f + expf(-g[i])) * u[i];
}
__global__ void k_swiglu_bwd(float *dg, float *du, const float *dy, const float *g, const float *u, size_t n,
                             bool frozen) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  float sg = 1.f / (1.f + expf(-g[i]));
  if (dg && !frozen) dg[i] += dy[i] * u[i] * sg * (1.f + g[i] * (1.f - sg));
  if (du) du[i] += dy[i] * g[i] * sg;
}
static void gelu_fwd(float *y, const float *x, size_t n, bool th) { if (n) k_gelu_fwd<<<nblocks(n), TPB>>>(y, x, n, th); }
static void gelu_bwd(float *dx, const float *dy, const float *x, size_t n, bool th, bool frozen) {
  if (n && dx) k_gelu_bwd<<<nblocks(n), TPB>>>(dx, dy, x, n, th, frozen);
}
static void swiglu_fwd(float *y, const float *g, const float *u, size_t n) { if (n) k_swiglu_fwd<<<nblocks(n), TPB>>>(y, g, u, n); }
static void swiglu_bwd(float *dg, float *du, const float *dy, const float *g, const float *u, size_t n, bool frozen) {
  if (n) k_swiglu_bwd<<<nblocks(n), TPB>>>(dg, du, dy, g, u, n, frozen);
}

/* ---- losses: one block per row ---- */
__device__ void row_stats(const float *l, int V, float *m, float *s) {
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < V; i += TPB) mx = fmaxf(mx, l[i]);
  mx = block_max(mx);
  float sum = 0.f;
  for (int i = threadIdx.x; i < V; i += TPB) sum += expf(l[i] - mx);
  *m = mx;
  *s = block_sum(sum);
}
/* kind 0: xent, 1: kl. */
__global__ void k_loss_fwd(float *loss, const float *logits, const int32_t *tg, const float *ref,
                           const uint8_t *mask, int V, int kind) {
  int n = blockIdx.x;
  const float *l = logits + (size_t)n * V;
  bool skip = kind == 0 ? (tg[n] < 0 || tg[n] >= V) : (mask && !mask[n]);
  if (skip) {
    if (threadIdx.x == 0) loss[n] = 0.f;
    return;
  }
  float m, s;
  row_stats(l, V, &m, &s);
  float lse = m + logf(s);
  if (kind == 0) {
    if (threadIdx.x == 0) loss[n] = lse - l[tg[n]];
    return;
  }
  const float *r = ref + (size_t)n * V;
  float kl = 0.f;
  for (int i = threadIdx.x; i < V; i += TPB) {
    float p = expf(r[i]);
    if (p > 0.f) kl += p * (r[i] - (l[i] - lse));
  }
  kl = block_sum(kl);
  if (threadIdx.x == 0) loss[n] = kl;
}
__global__ void k_loss_bwd(float *d, float *loss, const float *logits, const int32_t *tg, const float *ref,
                           const float *scale, int V, int kind) {
  int n = blockIdx.x;
  if (kind == 0 && (tg[n] < 0 || tg[n] >= V)) {
    if (loss && threadIdx.x == 0) loss[n] = 0.f;
    return;
  }
  float sc = scale ? scale[n] : 1.f;
  const float *l = logits + (size_t)n * V;
  float m, s;
  row_stats(l, V, &m, &s);
  if (loss && kind == 0 && threadIdx.x == 0) loss[n] = m + logf(s) - l[tg[n]];
  for (int i = threadIdx.x; i < V; i += TPB) {
    float p = expf(l[i] - m) / s;
    float target = kind == 0 ? (i == tg[n] ? 1.f : 0.f) : expf(ref[(size_t)n * V + i]);
    d[(size_t)n * V + i] += sc * (p - target);
  }
}
static void xent_fwd(float *loss, const float *logits, const int32_t *tg, int N, int V) {
  if (N > 0) k_loss_fwd<<<N, TPB>>>(loss, logits, tg, NULL, NULL, V, 0);
}
static void xent_bwd(float *d, float *loss, const float *logits, const int32_t *tg, const float *scale, int N, int V) {
  if (N > 0 && d) k_loss_bwd<<<N, TPB>>>(d, loss, logits, tg, NULL, scale, V, 0);
}
static void kl_fwd(float *loss, const float *logits, const float *ref, const uint8_t *mask, int N, int V) {
  if (N > 0) k_loss_fwd<<<N, TPB>>>(loss, logits, NULL, ref, mask, V, 1);
}
static void kl_bwd(float *d, const float *logits, const float *ref, const float *scale, int N, int V) {
  if (N > 0 && d) k_loss_bwd<<<N, TPB>>>(d, NULL, logits, NULL, ref, scale, V, 1);
}

static const LmwbOps cuda_ops = {
    .embed_fwd = embed_fwd, .embed_bwd = embed_bwd, .layernorm_fwd = layernorm_fwd, .layernorm_bwd = layernorm_bwd,
    .rmsnorm_fwd = rmsnorm_fwd, .rmsnorm_bwd = rmsnorm_bwd, .linear_fwd = linear_fwd, .linear_bwd = linear_bwd,
    .bias_fwd = bias_fwd, .bias_bwd = bias_bwd, .add = add, .heads_spread = heads_spread, .heads_sum = heads_sum,
    .attn_pattern_fwd = attn_pattern_fwd, .attn_mix_fwd = attn_mix_fwd, .attn_mix_bwd = attn_mix_bwd,
    .attn_pattern_bwd = attn_pattern_bwd, .rope = rope, .gelu_fwd = gelu_fwd, .gelu_bwd = gelu_bwd,
    .swiglu_fwd = swiglu_fwd, .swiglu_bwd = swiglu_bwd, .xent_fwd = xent_fwd, .xent_bwd = xent_bwd,
    .kl_fwd = kl_fwd, .kl_bwd = kl_bwd,
};

static const LmwbBackend cuda_backend = {
    .name = "cuda", .alloc = cu_alloc, .free = cu_free, .zero = cu_zero, .to_device = cu_to_device,
    .to_host = cu_to_host, .copy = cu_copy, .copy2d = cu_copy2d, .sgemm = cu_sgemm, .set_threads = cu_set_threads,
    .ops = &cuda_ops, .host_visible = false,
};

extern "C" const LmwbBackend *lmwb_backend_cuda_probe(void) {
  static int state = 0; /* 0 unknown, 1 ready, -1 absent */
  if (state == 0) {
    int n = 0;
    state = -1;
    if (cudaGetDeviceCount(&n) == cudaSuccess && n > 0 && cublasCreate(&g_blas) == CUBLAS_STATUS_SUCCESS)
      state = 1;
  }
  return state == 1 ? &cuda_backend : NULL;
}
