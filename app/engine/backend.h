/* A backend is a table of functions: memory, GEMM and the fused ops (ops.h). The runner allocates,
 * copies and frees every buffer it hands to an op through this table, so a CUDA backend stands
 * beside the CPU one: device pointers go only to the table's functions, and host code reaches
 * device memory only through to_host / to_device.
 * The CPU backend is OpenBLAS for GEMM and OpenMP for everything else. The checked backend runs
 * the CPU ops on memory that host code cannot touch (backend_checked.c): it finds host/device
 * mix-ups without a GPU. */
#pragma once
#include "app/engine/ops.h"
#include <stdbool.h>
#include <stddef.h>

typedef struct _GError GError; /* glib's; declared here so the CUDA unit needs no glib */

typedef struct LmwbBackend {
  const char *name;
  /* Device memory. On the CPU these are host pointers. alloc returns NULL on failure. */
  void *(*alloc)(size_t bytes);
  void (*free)(void *p);
  void (*zero)(void *p, size_t bytes);
  void (*to_device)(void *dst, const void *host_src, size_t bytes);
  void (*to_host)(void *host_dst, const void *src, size_t bytes);
  /* Device to device. */
  void (*copy)(void *dst, const void *src, size_t bytes);
  /* Device to device, rows of `cols` floats with row strides (in floats) ld_dst and ld_src. */
  void (*copy2d)(float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols);
  /* Row-major C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C. */
  void (*sgemm)(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                int lda, const float *B, int ldb, float beta, float *C, int ldc);
  void (*set_threads)(int n);
  const LmwbOps *ops;
  /* Device memory is host memory (the CPU backend): hooks and readers use it in place. */
  bool host_visible;
} LmwbBackend;

/* The CPU backend (always present). */
const LmwbBackend *lmwb_backend_cpu(void);
/* The CUDA backend when built with nvcc and a GPU is present at run time, else NULL. */
const LmwbBackend *lmwb_backend_cuda(void);
/* The checked test backend (always present). */
const LmwbBackend *lmwb_backend_checked(void);
/* By name ("cpu", "cuda", "checked") or NULL for the default (LMWB_BACKEND, else cpu). An unknown
 * name, or cuda without a usable device, is an input error that says why. */
const LmwbBackend *lmwb_backend_get(const char *name, GError **error);
