/* CPU attention (pattern / mix, forward and backward) and rotary embeddings.
 *
 * Layouts (ops.h): q, z [B,T,Hq*hd]; k, v [B,Tcap,Hkv*hd]; pattern [B,Hq,T,Tk], Tk = past+T.
 * Row r = (b*Hq + h)*T + t of the pattern is query t of head h in sequence b, so row-parallel
 * loops need no index juggling. The forward mix and both softmax-side backward loops use a key
 * only where the pattern is non-zero: a cache row that was never written may hold anything, and
 * 0 * NaN would poison the row. */
#include "app/engine/ops_cpu.h"
#include "app/engine/ops_cpu_math.h"

#include <math.h>
#include <omp.h>
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

static inline float dot(const float *a, const float *b, int n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

static inline void axpy(float *y, float a, const float *x, int n) {
#pragma omp simd
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static bool shapes_ok(int B, int T, int past, int Tcap, int Hq, int Hkv, int hd) {
  return B > 0 && T > 0 && past >= 0 && past + T <= Tcap && Hq > 0 && Hkv > 0 && hd > 0;
}

void lmwb_cpu_attn_pattern_fwd(float *pattern, const float *q, const float *k, int B, int T,
                               int past, int Tcap, int Hq, int Hkv, int hd, const int *lens) {
  const int Tk = past + T;
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd)) {
    if (B > 0 && T > 0 && Hq > 0 && Tk > 0)
      memset(pattern, 0, sizeof(float) * (size_t)B * Hq * T * Tk);
    return;
  }
  const float scale = 1.0f / sqrtf((float)hd);
  const long rows = (long)B * Hq * T;
  const size_t qs = (size_t)Hq * hd, ks = (size_t)Hkv * hd;
#pragma omp parallel for schedule(dynamic, 4) if ((size_t)rows * Tk * hd > PAR_MIN)
  for (long r = 0; r < rows; r++) {
    int t = (int)(r % T);
    int h = (int)((r / T) % Hq);
    int b = (int)(r / ((long)T * Hq));
    float *p = pattern + (size_t)r * Tk;
    int qpos = past + t;
    int jend = qpos + 1; /* causal: keys 0..qpos */
    if (lens && lens[b] < jend) jend = lens[b];
    if (lens && qpos >= lens[b]) jend = 0; /* a padded query attends nothing */
    if (jend <= 0) {
      memset(p, 0, sizeof(float) * (size_t)Tk);
      continue;
    }
    const float *qv = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
    const float *kb = k + (size_t)b * Tcap * ks + (size_t)kv_head(h, Hq, Hkv) * hd;
    float m = -INFINITY;
    for (int j = 0; j < jend; j++) {
      float s = dot(qv, kb + (size_t)j * ks, hd) * scale;
      p[j] = s;
      m = s > m ? s : m;
    }
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < jend; j++) {
      p[j] = lmwb_expf(p[j] - m);
      sum += p[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < jend; j++) p[j] *= inv;
    for (int j = jend; j < Tk; j++) p[j] = 0.f;
  }
}

void lmwb_cpu_attn_mix_fwd(float *z, const float *pattern, const float *v, int B, int T, int past,
                           int Tcap, int Hq, int Hkv, int hd) {
  const int Tk = past + T;
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd)) return;
  const long rows = (long)B * Hq * T;
  const size_t zs = (size_t)Hq * hd, vs = (size_t)Hkv * hd;
#pragma omp parallel for schedule(dynamic, 4) if ((size_t)rows * Tk * hd > PAR_MIN)
  for (long r = 0; r < rows; r++) {
    int t = (int)(r % T);
    int h = (int)((r / T) % Hq);
    int b = (int)(r / ((long)T * Hq));
    const float *p = pattern + (size_t)r * Tk;
    float *zr = z + ((size_t)b * T + t) * zs + (size_t)h * hd;
    const float *vb = v + (size_t)b * Tcap * vs + (size_t)kv_head(h, Hq, Hkv) * hd;
    memset(zr, 0, sizeof(float) * (size_t)hd);
    for (int j = 0; j < Tk; j++)
      if (p[j] != 0.f) axpy(zr, p[j], vb + (size_t)j * vs, hd);
  }
}

/* How many key blocks to cut the (b, kv head) tasks into so every thread has work, without
 * recomputing the per-row softmax sums more often than needed. */
static int key_blocks(int B, int Hkv, int Tk) {
  int want = 4 * omp_get_max_threads();
  int tasks = B * Hkv;
  int nblk = tasks >= want ? 1 : (want + tasks - 1) / tasks;
  int maxblk = (Tk + 15) / 16;
  if (nblk > maxblk) nblk = maxblk;
  return nblk < 1 ? 1 : nblk;
}

void lmwb_cpu_attn_mix_bwd(float *dpattern, float *dv, const float *dz, const float *pattern,
                           const float *v, int B, int T, int past, int Tcap, int Hq, int Hkv,
                           int hd) {
  const int Tk = past + T;
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd)) return;
  const long rows = (long)B * Hq * T;
  const size_t zs = (size_t)Hq * hd, vs = (size_t)Hkv * hd;
  if (dpattern) {
    /* dpattern[j] = dz . v_j for every key j < Tk, masked ones included: that is the gradient of
     * z = pattern . v, and a method may ask what unmasking a key would do. (Softmax backward
     * skips masked keys, so junk in a never-written cache row cannot reach dq or dk.) */
#pragma omp parallel for schedule(dynamic, 4) if ((size_t)rows * Tk * hd > PAR_MIN)
    for (long r = 0; r < rows; r++) {
      int t = (int)(r % T);
      int h = (int)((r / T) % Hq);
      int b = (int)(r / ((long)T * Hq));
      float *dp = dpattern + (size_t)r * Tk;
      const float *dzr = dz + ((size_t)b * T + t) * zs + (size_t)h * hd;
      const float *vb = v + (size_t)b * Tcap * vs + (size_t)kv_head(h, Hq, Hkv) * hd;
      for (int j = 0; j < Tk; j++) dp[j] += dot(dzr, vb + (size_t)j * vs, hd);
    }
  }
  if (dv) {
    /* dv_j = sum over the heads of the group and all queries of p[t,j] dz_t: split over
     * (b, kv head, key block) so each task owns its dv rows. */
    const int nblk = key_blocks(B, Hkv, Tk);
    const int JB = (Tk + nblk - 1) / nblk;
    const long tasks = (long)B * Hkv * nblk;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)rows * Tk * hd > PAR_MIN)
    for (long task = 0; task < tasks; task++) {
      int blk = (int)(task % nblk);
      int kh = (int)((task / nblk) % Hkv);
      int b = (int)(task / ((long)nblk * Hkv));
      int j0 = blk * JB, j1 = j0 + JB < Tk ? j0 + JB : Tk;
      float *dvb = dv + (size_t)b * Tcap * vs + (size_t)kh * hd;
      for (int h = 0; h < Hq; h++) {
        if (kv_head(h, Hq, Hkv) != kh) continue;
        for (int t = 0; t < T; t++) {
          const float *p = pattern + (((size_t)b * Hq + h) * T + t) * Tk;
          const float *dzr = dz + ((size_t)b * T + t) * zs + (size_t)h * hd;
          for (int j = j0; j < j1; j++)
            if (p[j] != 0.f) axpy(dvb + (size_t)j * vs, p[j], dzr, hd);
        }
      }
    }
  }
}

/* sum_j p_j dp_j over the keys the row attends (p != 0). */
static inline float row_pdp(const float *p, const float *dp, int Tk) {
  float s = 0.f;
  for (int j = 0; j < Tk; j++)
    if (p[j] != 0.f) s += p[j] * dp[j];
  return s;
}

void lmwb_cpu_attn_pattern_bwd(float *dq, float *dk, const float *dpattern, const float *pattern,
                               const float *q, const float *k, int B, int T, int past, int Tcap,
                               int Hq, int Hkv, int hd) {
  const int Tk = past + T;
  if (!shapes_ok(B, T, past, Tcap, Hq, Hkv, hd)) return;
  const float scale = 1.0f / sqrtf((float)hd);
  const long rows = (long)B * Hq * T;
  const size_t qs = (size_t)Hq * hd, ks = (size_t)Hkv * hd;
  /* Softmax backward: ds_j = p_j (dp_j - sum_i p_i dp_i); scores s_j = scale q . k_j. */
  if (dq) {
#pragma omp parallel for schedule(dynamic, 4) if ((size_t)rows * Tk * hd > PAR_MIN)
    for (long r = 0; r < rows; r++) {
      int t = (int)(r % T);
      int h = (int)((r / T) % Hq);
      int b = (int)(r / ((long)T * Hq));
      const float *p = pattern + (size_t)r * Tk;
      const float *dp = dpattern + (size_t)r * Tk;
      float *dqr = dq + ((size_t)b * T + t) * qs + (size_t)h * hd;
      const float *kb = k + (size_t)b * Tcap * ks + (size_t)kv_head(h, Hq, Hkv) * hd;
      float pdp = row_pdp(p, dp, Tk);
      for (int j = 0; j < Tk; j++)
        if (p[j] != 0.f) axpy(dqr, p[j] * (dp[j] - pdp) * scale, kb + (size_t)j * ks, hd);
    }
  }
  if (dk) {
    const int nblk = key_blocks(B, Hkv, Tk);
    const int JB = (Tk + nblk - 1) / nblk;
    const long tasks = (long)B * Hkv * nblk;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)rows * Tk * hd > PAR_MIN)
    for (long task = 0; task < tasks; task++) {
      int blk = (int)(task % nblk);
      int kh = (int)((task / nblk) % Hkv);
      int b = (int)(task / ((long)nblk * Hkv));
      int j0 = blk * JB, j1 = j0 + JB < Tk ? j0 + JB : Tk;
      float *dkb = dk + (size_t)b * Tcap * ks + (size_t)kh * hd;
      for (int h = 0; h < Hq; h++) {
        if (kv_head(h, Hq, Hkv) != kh) continue;
        for (int t = 0; t < T; t++) {
          size_t r = ((size_t)b * Hq + h) * T + t;
          const float *p = pattern + r * Tk;
          bool any = false;
          for (int j = j0; j < j1; j++) any |= p[j] != 0.f;
          if (!any) continue; /* e.g. keys after this query: causal zeros */
          const float *dp = dpattern + r * Tk;
          const float *qr = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
          float pdp = row_pdp(p, dp, Tk);
          for (int j = j0; j < j1; j++)
            if (p[j] != 0.f) axpy(dkb + (size_t)j * ks, p[j] * (dp[j] - pdp) * scale, qr, hd);
        }
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
