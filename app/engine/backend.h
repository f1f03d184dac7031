/* A backend is a table of functions: memory, GEMM and the fused ops (ops.h). The runner and the
 * methods only call through this table, so a CUDA backend can stand beside the CPU one.
 * The CPU backend is OpenBLAS for GEMM and OpenMP for everything else. */
#pragma once
#include "app/engine/ops.h"
#include <stdbool.h>
#include <stddef.h>

typedef struct LmwbBackend {
  const char *name;
  /* Device memory. On the CPU these are host pointers. alloc returns NULL on failure. */
  void *(*alloc)(size_t bytes);
  void (*free)(void *p);
  void (*zero)(void *p, size_t bytes);
  void (*to_device)(void *dst, const void *host_src, size_t bytes);
  void (*to_host)(void *host_dst, const void *src, size_t bytes);
  /* Row-major C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C. */
  void (*sgemm)(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                int lda, const float *B, int ldb, float beta, float *C, int ldc);
  void (*set_threads)(int n);
  const LmwbOps *ops;
} LmwbBackend;

/* The CPU backend (always present). */
const LmwbBackend *lmwb_backend_cpu(void);
/* The CUDA backend when built with nvcc and a GPU is present at run time, else NULL. */
const LmwbBackend *lmwb_backend_cuda(void);
/* By name ("cpu", "cuda") or NULL for the default (LMWB_BACKEND env, else cpu). */
const LmwbBackend *lmwb_backend_get(const char *name);
