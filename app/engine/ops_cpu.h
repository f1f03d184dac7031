/* CPU implementations of the op table (ops.h): OpenBLAS for the GEMMs inside linear, OpenMP for
 * everything else. Each function follows the contract written beside its slot in LmwbOps
 * (backward accumulates, NULL gradients are skipped). Callers normally reach these through
 * lmwb_backend_cpu()->ops; they are declared here so backend_cpu.c can build the table.
 *
 * Inputs are trusted to match the shapes passed in (the runner validated them when it loaded the
 * model); what a user can still get wrong (a token id outside the vocabulary, a negative target)
 * is handled without reading out of bounds: embedding rows with a negative id are zero, targets
 * outside [0, V) are treated as ignored. */
#pragma once
#include "app/engine/ops.h"

/* The filled-in table. */
extern const LmwbOps lmwb_ops_cpu;

void lmwb_cpu_embed_fwd(float *out, const int32_t *ids, const float *table, int N, int C);
void lmwb_cpu_embed_bwd(float *dtable, const float *dout, const int32_t *ids, int N, int C);

void lmwb_cpu_layernorm_fwd(float *out, float *mean, float *rstd, const float *x, const float *w,
                            const float *b, int N, int C, float eps);
void lmwb_cpu_layernorm_bwd(float *dx, float *dw, float *db, const float *dout, const float *x,
                            const float *w, const float *mean, const float *rstd, int N, int C,
                            bool freeze_scale);
void lmwb_cpu_rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int N, int C,
                          float eps);
void lmwb_cpu_rmsnorm_bwd(float *dx, float *dw, const float *dout, const float *x, const float *w,
                          const float *rstd, int N, int C, bool freeze_scale);

void lmwb_cpu_bias_fwd(float *y, const float *b, int N, int C);
void lmwb_cpu_bias_bwd(float *db, const float *dy, int N, int C);
void lmwb_cpu_add(float *y, const float *a, const float *b, size_t n);
void lmwb_cpu_heads_spread(float *y, const float *x, int N, int H, int C);
void lmwb_cpu_heads_sum(float *y, const float *x, int N, int H, int C);
void lmwb_cpu_linear_fwd(float *y, const float *x, const float *W, const float *b, int N, int in,
                         int out);
void lmwb_cpu_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                         const float *W, int N, int in, int out);

void lmwb_cpu_attn_pattern_fwd(float *pattern, const float *q, const float *k, int B, int T,
                               int past, int Tcap, int Hq, int Hkv, int hd, const int *lens);
void lmwb_cpu_attn_mix_fwd(float *z, const float *pattern, const float *v, int B, int T, int past,
                           int Tcap, int Hq, int Hkv, int hd);
void lmwb_cpu_attn_mix_bwd(float *dpattern, float *dv, const float *dz, const float *pattern,
                           const float *v, int B, int T, int past, int Tcap, int Hq, int Hkv,
                           int hd);
void lmwb_cpu_attn_pattern_bwd(float *dq, float *dk, const float *dpattern, const float *pattern,
                               const float *q, const float *k, int B, int T, int past, int Tcap,
                               int Hq, int Hkv, int hd);
void lmwb_cpu_rope(float *x, int B, int T, int row_stride, int H, int hd, int rot_dim, int past,
                   float theta, bool inverse);

void lmwb_cpu_gelu_fwd(float *y, const float *x, size_t n, bool tanh_approx);
void lmwb_cpu_gelu_bwd(float *dx, const float *dy, const float *x, size_t n, bool tanh_approx, bool frozen);
void lmwb_cpu_swiglu_fwd(float *y, const float *gate, const float *up, size_t n);
void lmwb_cpu_swiglu_bwd(float *dgate, float *dup, const float *dy, const float *gate,
                         const float *up, size_t n, bool frozen);

void lmwb_cpu_xent_fwd(float *losses, const float *logits, const int32_t *targets, int N, int V);
void lmwb_cpu_xent_bwd(float *dlogits, float *losses, const float *logits, const int32_t *targets,
                       const float *scale, int N, int V);
void lmwb_cpu_kl_fwd(float *losses, const float *logits, const float *ref_logprobs,
                     const uint8_t *mask, int N, int V);
void lmwb_cpu_kl_bwd(float *dlogits, const float *logits, const float *ref_logprobs,
                     const float *scale, int N, int V);
