/* CPU attention (pattern / mix, forward and backward) and rotary embeddings.
 *
 * Layouts (ops.h): q, z [B,T,Hq*hd]; k, v [B,Tcap,Hkv*hd]; pattern [B,Hq,T,Tk], Tk = past+T.
 * Row r = (b*Hq + h)*T + t of the pattern is query t of head h in sequence b, so row-parallel
 * loops need no index juggling. Every key row j < Tk = past + T has been written (by this run or
 * the cache), so the GEMMs over all of them read only real values; attention uses only the keys
 * each query may see. */
#include "app/engine/ops_cpu.h"
#include "app/engine/ops_cpu_math.h"

#include <cblas.h>
#include <glib.h>
#include <math.h>
#include <string.h>

/* Work (in multiply-adds) below which a loop runs on one thread. */
#define PAR_MIN 16384

/* kv head read by query head h. Hq is a multiple of Hkv for every real model; if a caller passes
 * something else, clamp rather than read past the cache. */
static inline int kv_head(int h, int Hq, int Hkv) {
  int group = Hkv > 0 && Hq >= Hkv ? Hq / Hkv : 1;
  int kh = h / group;
  return kh < Hkv ? kh : Hkv - 1;
}

static bool shapes_ok(int B, int T, int past, int Tcap, int Hq, int Hkv, int hd) {
  return B > 0 && T > 0 && past >= 0 && past + T <= Tcap && Hq > 0 && Hkv > 0 && hd > 0;
}

/* Row-major GEMM on the calling thread (inside the parallel loops below OpenBLAS runs single-
 * threaded): C = alpha op(A) op(B) + beta C. */
static inline void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *Bm,
                        int ldb, float beta, float *C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
              Bm, ldb, beta, C, ldc);
}

/* Keys query t of sequence b attends: j < jend (0: none, a padded query). */
static inline int keys_of(int t, int past, int b, const int *lens) {
  int qpos = past + t, jend = qpos + 1; /* causal: keys 0..qpos */
  if (lens && lens[b] < jend) jend = lens[b];
  if (lens && qpos >= lens[b]) jend = 0;
  return jend;
}

/* Scratch for one block's score gradients, kept per thread (the pool's threads live on), so the
 * backward allocates only when a block is larger than any before. */
static float *thread_scratch(size_t n) {
  static _Thread_local float *buf;
  static _Thread_local size_t cap;
  if (n > cap) {
    g_free(buf);
    buf = g_new(float, n);
    cap = n;
  }
  return buf;
}

/* Keys a block of pattern rows uses: one past the last non-zero column. Padding keys come last,
 * so the products that read key rows stop there (a padding row may hold anything). */
static int used_keys(const float *P, int T, int Tk) {
  int used = 0;
  for (int t = 0; t < T; t++)
    for (int j = Tk - 1; j >= used; j--)
      if (P[(size_t)t * Tk + j] != 0.f) {
        used = j + 1;
        break;
      }
  return used;
}

/* Each (sequence, head) block is a few small GEMMs on one thread; the blocks run in parallel. The
 * GEMMs cover every key j < Tk (the causal zeros cost less than branching around them); the
 * softmax then keeps only the keys each query attends. */
void lmwb_cpu_attn_pattern_fwd(float *pattern, const float *q, const float *k, int B, int T,
                               int past, int Tcap, int Hq, int Hkv, int hd, const int *lens) {
  const int Tk = past + T;
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd)) {
    if (B > 0 && T > 0 && Hq > 0 && Tk > 0)
      memset(pattern, 0, sizeof(float) * (size_t)B * Hq * T * Tk);
    return;
  }
  const float scale = 1.0f / sqrtf((float)hd);
  const int qs = Hq * hd, ks = Hkv * hd;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)B * Hq * T * Tk * hd > PAR_MIN)
  for (long task = 0; task < (long)B * Hq; task++) {
    int b = (int)(task / Hq), h = (int)(task % Hq);
    float *P = pattern + (size_t)task * T * Tk;
    gemm(false, true, T, Tk, hd, scale, q + (size_t)b * T * qs + (size_t)h * hd, qs,
         k + (size_t)b * Tcap * ks + (size_t)kv_head(h, Hq, Hkv) * hd, ks, 0.f, P, Tk);
    for (int t = 0; t < T; t++) {
      float *p = P + (size_t)t * Tk;
      int jend = keys_of(t, past, b, lens);
      float m = -INFINITY, sum = 0.f;
      for (int j = 0; j < jend; j++) m = p[j] > m ? p[j] : m;
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j < jend; j++) {
        p[j] = lmwb_expf(p[j] - m);
        sum += p[j];
      }
      float inv = jend ? 1.0f / sum : 0.f;
      for (int j = 0; j < jend; j++) p[j] *= inv;
      for (int j = jend; j < Tk; j++) p[j] = 0.f;
    }
  }
}

void lmwb_cpu_attn_mix_fwd(float *z, const float *pattern, const float *v, int B, int T, int past,
                           int Tcap, int Hq, int Hkv, int hd) {
  const int Tk = past + T;
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd)) return;
  const int zs = Hq * hd, vs = Hkv * hd;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)B * Hq * T * Tk * hd > PAR_MIN)
  for (long task = 0; task < (long)B * Hq; task++) {
    int b = (int)(task / Hq), h = (int)(task % Hq);
    const float *P = pattern + (size_t)task * T * Tk;
    float *zb = z + (size_t)b * T * zs + (size_t)h * hd;
    int used = used_keys(P, T, Tk);
    if (used == 0) {
      for (int t = 0; t < T; t++) memset(zb + (size_t)t * zs, 0, sizeof(float) * (size_t)hd);
      continue;
    }
    gemm(false, false, T, hd, used, 1.f, P, Tk, v + (size_t)b * Tcap * vs + (size_t)kv_head(h, Hq, Hkv) * hd, vs, 0.f,
         zb, zs);
  }
}

/* The backward tasks are (sequence, kv head) blocks, so the key/value gradients of a group of
 * query heads are written by one thread. */
void lmwb_cpu_attn_mix_bwd(float *dpattern, float *dv, const float *dz, const float *pattern,
                           const float *v, int B, int T, int past, int Tcap, int Hq, int Hkv,
                           int hd) {
  const int Tk = past + T;
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd)) return;
  const int zs = Hq * hd, vs = Hkv * hd;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)B * Hq * T * Tk * hd > PAR_MIN)
  for (long task = 0; task < (long)B * Hkv; task++) {
    int b = (int)(task / Hkv), kh = (int)(task % Hkv);
    const float *vb = v + (size_t)b * Tcap * vs + (size_t)kh * hd;
    for (int h = 0; h < Hq; h++) {
      if (kv_head(h, Hq, Hkv) != kh) continue;
      size_t blk = ((size_t)b * Hq + h) * T * Tk;
      const float *dzb = dz + (size_t)b * T * zs + (size_t)h * hd;
      /* dpattern = dz vᵀ for every key j < Tk, masked ones included: that is the gradient of
       * z = pattern v, and a method may ask what unmasking a key would do. */
      if (dpattern) gemm(false, true, T, Tk, hd, 1.f, dzb, zs, vb, vs, 1.f, dpattern + blk, Tk);
      int used = dv ? used_keys(pattern + blk, T, Tk) : 0;
      if (used)
        gemm(true, false, used, hd, T, 1.f, pattern + blk, Tk, dzb, zs, 1.f, dv + (size_t)b * Tcap * vs + (size_t)kh * hd,
             vs);
    }
  }
}

void lmwb_cpu_attn_pattern_bwd(float *dq, float *dk, const float *dpattern, const float *pattern,
                               const float *q, const float *k, int B, int T, int past, int Tcap,
                               int Hq, int Hkv, int hd) {
  const int Tk = past + T;
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd) || (!dq && !dk)) return;
  const float scale = 1.0f / sqrtf((float)hd);
  const int qs = Hq * hd, ks = Hkv * hd;
#pragma omp parallel if ((size_t)B * Hq * T * Tk * hd > PAR_MIN)
  {
    /* Softmax backward: ds_j = p_j (dp_j - sum_i p_i dp_i), times the score's scale. */
    float *ds = thread_scratch((size_t)T * Tk);
#pragma omp for schedule(dynamic, 1)
    for (long task = 0; task < (long)B * Hkv; task++) {
      int b = (int)(task / Hkv), kh = (int)(task % Hkv);
      const float *kb = k + (size_t)b * Tcap * ks + (size_t)kh * hd;
      for (int h = 0; h < Hq; h++) {
        if (kv_head(h, Hq, Hkv) != kh) continue;
        size_t blk = ((size_t)b * Hq + h) * T * Tk;
        for (int t = 0; t < T; t++) {
          const float *p = pattern + blk + (size_t)t * Tk, *dp = dpattern + blk + (size_t)t * Tk;
          float *d = ds + (size_t)t * Tk, pdp = 0.f;
          for (int j = 0; j < Tk; j++)
            if (p[j] != 0.f) pdp += p[j] * dp[j];
          /* keys a query does not attend have p = 0: no gradient, whatever dp holds there */
          for (int j = 0; j < Tk; j++) d[j] = p[j] != 0.f ? p[j] * (dp[j] - pdp) * scale : 0.f;
        }
        const float *qb = q + (size_t)b * T * qs + (size_t)h * hd;
        int used = used_keys(pattern + blk, T, Tk);
        if (!used) continue;
        if (dq) gemm(false, false, T, hd, used, 1.f, ds, Tk, kb, ks, 1.f, dq + (size_t)b * T * qs + (size_t)h * hd, qs);
        if (dk) gemm(true, false, used, hd, T, 1.f, ds, Tk, qb, qs, 1.f, dk + (size_t)b * Tcap * ks + (size_t)kh * hd, ks);
      }
    }
  }
}

void lmwb_cpu_rope(float *x, int B, int T, int row_stride, int H, int hd, int rot_dim, int past,
                   float theta, bool inverse) {
  if (rot_dim > hd) rot_dim = hd;
  const int half = rot_dim / 2; /* an odd rot_dim leaves its last dim unrotated */
  if (B <= 0 || T <= 0 || H <= 0 || half <= 0 || past < 0 || row_stride < H * hd) return;
  /* inv_freq as Hugging Face computes it, all in float32:
   * 1 / theta^(float(2j) / rot_dim), angle = float(pos) * inv_freq. */
  float inv_freq[half];
  for (int j = 0; j < half; j++)
    inv_freq[j] = 1.0f / powf(theta, (float)(2 * j) / (float)rot_dim);
  const float sgn = inverse ? -1.f : 1.f;
#pragma omp parallel for schedule(static) if ((size_t)B * T * H * rot_dim > PAR_MIN)
  for (int t = 0; t < T; t++) {
    float cs[half], sn[half];
    const float pos = (float)(past + t);
    for (int j = 0; j < half; j++) {
      float a = pos * inv_freq[j];
      cs[j] = cosf(a);
      sn[j] = sgn * sinf(a);
    }
    for (int b = 0; b < B; b++) {
      float *row = x + ((size_t)b * T + t) * row_stride;
      for (int h = 0; h < H; h++) {
        float *x1 = row + (size_t)h * hd, *x2 = x1 + half;
#pragma omp simd
        for (int j = 0; j < half; j++) {
          float a = x1[j], c = x2[j];
          x1[j] = a * cs[j] - c * sn[j];
          x2[j] = c * cs[j] + a * sn[j];
        }
      }
    }
  }
}
