#include "app/engine/optim.h"
#include <math.h>
#include <string.h>

LmwbAdamW *lmwb_adamw_new(size_t n, float beta1, float beta2, float eps, float wd, const uint8_t *mask) {
  LmwbAdamW *o = g_new0(LmwbAdamW, 1);
  o->n = n;
  o->m = g_try_malloc0(n * sizeof(float));
  o->v = g_try_malloc0(n * sizeof(float));
  o->decay = g_try_malloc0(n);
  if (!o->m || !o->v || !o->decay) {
    lmwb_adamw_free(o);
    return NULL;
  }
  if (mask) memcpy(o->decay, mask, n);
  o->beta1 = beta1;
  o->beta2 = beta2;
  o->eps = eps;
  o->weight_decay = wd;
  return o;
}

void lmwb_adamw_free(LmwbAdamW *o) {
  if (!o) return;
  g_free(o->m);
  g_free(o->v);
  g_free(o->decay);
  g_free(o);
}

void lmwb_adamw_step(LmwbAdamW *o, float *p, const float *g, float lr) {
  o->step++;
  const float b1 = o->beta1, b2 = o->beta2, eps = o->eps, wd = o->weight_decay;
  const float c1 = 1.0f / (1.0f - powf(b1, (float)o->step)), c2 = 1.0f / (1.0f - powf(b2, (float)o->step));
  float *m = o->m, *v = o->v;
  const uint8_t *dm = o->decay;
  ptrdiff_t n = (ptrdiff_t)o->n;
#pragma omp parallel for simd schedule(static)
  for (ptrdiff_t i = 0; i < n; i++) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float upd = (mi * c1) / (sqrtf(vi * c2) + eps);
    if (dm[i]) upd += wd * p[i];
    p[i] -= lr * upd;
  }
}

double lmwb_clip_grad_norm(float *g, size_t n, double max_norm) {
  /* Fixed blocks summed in order: the same result whatever the thread count (reproducible runs). */
  enum { BLOCKS = 256 };
  double part[BLOCKS];
  ptrdiff_t nn = (ptrdiff_t)n, per = (nn + BLOCKS - 1) / BLOCKS;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < BLOCKS; b++) {
    double s = 0;
    ptrdiff_t lo = b * per, hi = MIN(nn, lo + per);
    for (ptrdiff_t i = lo; i < hi; i++) s += (double)g[i] * g[i];
    part[b] = s;
  }
  double s = 0;
  for (int b = 0; b < BLOCKS; b++) s += part[b];
  double norm = sqrt(s);
  if (max_norm > 0 && norm > max_norm) {
    float sc = (float)(max_norm / (norm + 1e-6));
#pragma omp parallel for simd schedule(static)
    for (ptrdiff_t i = 0; i < nn; i++) g[i] *= sc;
  }
  return norm;
}

double lmwb_lr_schedule(int64_t step, int64_t warmup, int64_t total, double peak, double min_lr) {
  if (warmup > 0 && step < warmup) return peak * (double)(step + 1) / (double)warmup;
  if (step >= total) return min_lr;
  double t = (double)(step - warmup) / (double)MAX(1, total - warmup);
  return min_lr + 0.5 * (peak - min_lr) * (1.0 + cos(M_PI * t));
}
