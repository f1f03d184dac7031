/* The CPU backend: host memory, OpenBLAS sgemm, and the OpenMP ops of ops_cpu*.c. */
#include "app/engine/backend.h"
#include "app/engine/ops_cpu.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's own thread count; not in every cblas.h, so declared here. */
void openblas_set_num_threads(int num_threads);

const LmwbOps lmwb_ops_cpu = {
    .embed_fwd = lmwb_cpu_embed_fwd,
    .embed_bwd = lmwb_cpu_embed_bwd,
    .layernorm_fwd = lmwb_cpu_layernorm_fwd,
    .layernorm_bwd = lmwb_cpu_layernorm_bwd,
    .rmsnorm_fwd = lmwb_cpu_rmsnorm_fwd,
    .rmsnorm_bwd = lmwb_cpu_rmsnorm_bwd,
    .linear_fwd = lmwb_cpu_linear_fwd,
    .linear_bwd = lmwb_cpu_linear_bwd,
    .bias_fwd = lmwb_cpu_bias_fwd,
    .bias_bwd = lmwb_cpu_bias_bwd,
    .add = lmwb_cpu_add,
    .heads_spread = lmwb_cpu_heads_spread,
    .heads_sum = lmwb_cpu_heads_sum,
    .attn_pattern_fwd = lmwb_cpu_attn_pattern_fwd,
    .attn_mix_fwd = lmwb_cpu_attn_mix_fwd,
    .attn_mix_bwd = lmwb_cpu_attn_mix_bwd,
    .attn_pattern_bwd = lmwb_cpu_attn_pattern_bwd,
    .rope = lmwb_cpu_rope,
    .gelu_fwd = lmwb_cpu_gelu_fwd,
    .gelu_bwd = lmwb_cpu_gelu_bwd,
    .swiglu_fwd = lmwb_cpu_swiglu_fwd,
    .swiglu_bwd = lmwb_cpu_swiglu_bwd,
    .xent_fwd = lmwb_cpu_xent_fwd,
    .xent_bwd = lmwb_cpu_xent_bwd,
    .kl_fwd = lmwb_cpu_kl_fwd,
    .kl_bwd = lmwb_cpu_kl_bwd,
};

/* 64-byte alignment: a cache line, and what AVX-512 loads like. */
static void *cpu_alloc(size_t bytes) {
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
  return p;
}

static void cpu_free(void *p) { free(p); }

static void cpu_zero(void *p, size_t bytes) {
  if (p && bytes) memset(p, 0, bytes);
}

static void cpu_copy(void *dst, const void *src, size_t bytes) {
  if (dst && src && bytes && dst != src) memmove(dst, src, bytes);
}

static void cpu_copy2d(float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols) {
  for (int r = 0; r < rows; r++) memmove(dst + (size_t)r * ld_dst, src + (size_t)r * ld_src, (size_t)cols * sizeof(float));
}

static void cpu_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    /* Empty product: C = beta * C (BLAS would reject the leading dimensions of an empty A). */
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.f ? 0.f : beta * C[(size_t)i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void cpu_set_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

static const LmwbBackend cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .copy = cpu_copy,
    .copy2d = cpu_copy2d,
    .sgemm = cpu_sgemm,
    .set_threads = cpu_set_threads,
    .ops = &lmwb_ops_cpu,
    .host_visible = true,
};

const LmwbBackend *lmwb_backend_cpu(void) { return &cpu_backend; }
