/* The compute ops, as forward/backward pairs (llm.c style).
 *
 * Contract for every pair:
 *  - Tensors are dense row-major float32 buffers; shapes are given as ints.
 *  - Forward writes its output (overwrites) and keeps nothing hidden: whatever backward needs is an
 *    explicit argument (e.g. mean/rstd of a norm).
 *  - Backward ACCUMULATES (+=) into every gradient buffer it is given; callers zero them first.
 *    Any gradient pointer may be NULL when that gradient is not wanted.
 *  - Ops never allocate on the hot path, and never know which backend runs them: the runner calls
 *    them through the backend's op table (backend.h).
 *
 * Layouts: activations are [N, C] with N = B*T rows. Linear weights are [out, in] (Hugging Face /
 * PyTorch nn.Linear): y = x W^T + b. Attention q is [B, T, Hq*hd]; k and v live in a buffer of
 * capacity Tcap rows per sequence, [B, Tcap, Hkv*hd], so the same op serves a KV cache.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct LmwbOps {
  /* out[n,:] = table[ids[n],:] ; backward: dtable[ids[n],:] += dout[n,:] */
  void (*embed_fwd)(float *out, const int32_t *ids, const float *table, int N, int C);
  void (*embed_bwd)(float *dtable, const float *dout, const int32_t *ids, int N, int C);

  /* LayerNorm over the last dim: out = (x - mean) * rstd * w + b (b may be NULL). mean, rstd [N].
   * freeze_scale: treat rstd as a constant in backward (attribution with frozen norm scales). */
  void (*layernorm_fwd)(float *out, float *mean, float *rstd, const float *x, const float *w,
                        const float *b, int N, int C, float eps);
  void (*layernorm_bwd)(float *dx, float *dw, float *db, const float *dout, const float *x,
                        const float *w, const float *mean, const float *rstd, int N, int C,
                        bool freeze_scale);

  /* RMSNorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). */
  void (*rmsnorm_fwd)(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps);
  void (*rmsnorm_bwd)(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int C, bool freeze_scale);

  /* y[N,out] = x[N,in] W[out,in]^T + b (b may be NULL). */
  void (*linear_fwd)(float *y, const float *x, const float *W, const float *b, int N, int in, int out);
  void (*linear_bwd)(float *dx, float *dW, float *db, const float *dy, const float *x,
                     const float *W, int N, int in, int out);
  /* y[n,:] += b, for a linear computed piecewise (per head); backward: db += sum_n dy[n,:]. */
  void (*bias_fwd)(float *y, const float *b, int N, int C);
  void (*bias_bwd)(float *db, const float *dy, int N, int C);
  /* y = a + b elementwise (y may alias a or b): the residual stream's sums. */
  void (*add)(float *y, const float *a, const float *b, size_t n);
  /* Per-head copies of rows, y[n,h,:] = x[n,:] (overwrites); and the sum over heads,
   * y[n,:] += sum_h x[n,h,:] (accumulates): the backward of the copies, and the sum of the
   * heads' outputs. */
  void (*heads_spread)(float *y, const float *x, int N, int H, int C);
  void (*heads_sum)(float *y, const float *x, int N, int H, int C);

  /* Causal attention, split at the pattern so hooks can read or edit it.
   * q [B,T,Hq*hd]; k,v [B,Tcap,Hkv*hd]; query t of sequence b sits at absolute position past+t and
   * attends keys j <= past+t with j < lens[b] (lens NULL: no padding). Rows of a padded query
   * (past+t >= lens[b]) get an all-zero pattern. GQA: head h reads kv head h / (Hq/Hkv).
   * pattern [B,Hq,T,Tk] with Tk = past+T keys; scale = 1/sqrt(hd). */
  void (*attn_pattern_fwd)(float *pattern, const float *q, const float *k, int B, int T, int past,
                           int Tcap, int Hq, int Hkv, int hd, const int *lens);
  /* z[B,T,Hq*hd] = pattern . v */
  void (*attn_mix_fwd)(float *z, const float *pattern, const float *v, int B, int T, int past,
                       int Tcap, int Hq, int Hkv, int hd);
  /* backward of attn_mix: dpattern [B,Hq,T,Tk] and dv [B,Tcap,Hkv*hd] (accumulate) */
  void (*attn_mix_bwd)(float *dpattern, float *dv, const float *dz, const float *pattern,
                       const float *v, int B, int T, int past, int Tcap, int Hq, int Hkv, int hd);
  /* backward of attn_pattern (softmax and the scaled dot product): dq, dk (accumulate). */
  void (*attn_pattern_bwd)(float *dq, float *dk, const float *dpattern, const float *pattern,
                           const float *q, const float *k, int B, int T, int past, int Tcap,
                           int Hq, int Hkv, int hd);

  /* Rotary embedding in place, rotate-half form on the first rot_dim dims of each head:
   * pairs (j, j + rot_dim/2), angle = pos * theta^(-2j/rot_dim), pos = past + t.
   * x is [B, T, H*hd] with a row stride of row_stride floats (so it can run inside a KV cache).
   * inverse=true applies the transposed rotation (the backward of the forward). */
  void (*rope)(float *x, int B, int T, int row_stride, int H, int hd, int rot_dim, int past,
               float theta, bool inverse);

  /* GELU, tanh approximation (gelu_new) or exact erf form.
   * frozen: the linearised MLP of attribution, y = x * s with the ratio s = gelu(x)/x held
   * constant (s = 1/2 at x = 0), so dx += dy * gelu(x)/x. */
  void (*gelu_fwd)(float *y, const float *x, size_t n, bool tanh_approx);
  void (*gelu_bwd)(float *dx, const float *dy, const float *x, size_t n, bool tanh_approx, bool frozen);
  /* SwiGLU: y = silu(gate) * up.
   * frozen: silu(gate) held constant, so dup += dy * silu(gate) and the gate gets nothing. */
  void (*swiglu_fwd)(float *y, const float *gate, const float *up, size_t n);
  void (*swiglu_bwd)(float *dgate, float *dup, const float *dy, const float *gate, const float *up, size_t n,
                     bool frozen);

  /* Softmax cross-entropy per row: losses[n] = -log softmax(logits[n])[targets[n]];
   * rows with targets[n] < 0 get loss 0 and no gradient.
   * Backward: dlogits[n] += scale[n] * (softmax(logits[n]) - onehot(targets[n])) (scale NULL: 1);
   * with losses non-NULL it also writes the forward's losses, from the same pass over the row. */
  void (*xent_fwd)(float *losses, const float *logits, const int32_t *targets, int N, int V);
  void (*xent_bwd)(float *dlogits, float *losses, const float *logits, const int32_t *targets, const float *scale,
                   int N, int V);
  /* KL(P_ref || softmax(logits)) per row, with the reference given as log-probabilities [N,V].
   * Rows with mask[n] == 0 are skipped (mask NULL: all rows).
   * Backward: dlogits[n] += scale[n] * (softmax(logits[n]) - P_ref[n]). */
  void (*kl_fwd)(float *losses, const float *logits, const float *ref_logprobs, const uint8_t *mask,
                 int N, int V);
  void (*kl_bwd)(float *dlogits, const float *logits, const float *ref_logprobs, const float *scale,
                 int N, int V);
} LmwbOps;
