/* Softmax and top-k of a row (rows.h). */
#include "app/core/rows.h"
#include <math.h>

void lmwb_softmax_row(float *p, const float *x, int V) {
  float mx = -INFINITY;
  for (int i = 0; i < V; i++) mx = fmaxf(mx, x[i]);
  double s = 0;
  for (int i = 0; i < V; i++) {
    p[i] = expf(x[i] - mx);
    s += p[i];
  }
  float inv = (float)(1.0 / s);
  for (int i = 0; i < V; i++) p[i] *= inv;
}

void lmwb_log_softmax_row(float *out, const float *x, int V) {
  float mx = -INFINITY;
  for (int i = 0; i < V; i++) mx = fmaxf(mx, x[i]);
  double s = 0;
  for (int i = 0; i < V; i++) s += exp((double)x[i] - mx);
  float lse = (float)(mx + log(s));
  for (int i = 0; i < V; i++) out[i] = x[i] - lse;
}

/* "a is worse than b": lower value, or equal value and higher id. */
static inline int worse(float va, int32_t ia, float vb, int32_t ib) { return va < vb || (va == vb && ia > ib); }

static void sift_down(float *v, int32_t *id, int k, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, w = i;
    if (l < k && worse(v[l], id[l], v[w], id[w])) w = l;
    if (r < k && worse(v[r], id[r], v[w], id[w])) w = r;
    if (w == i) return;
    float tv = v[i]; v[i] = v[w]; v[w] = tv;
    int32_t ti = id[i]; id[i] = id[w]; id[w] = ti;
    i = w;
  }
}

float lmwb_top_k(const float *x, int V, int k, int32_t *ids, float *vals) {
  for (int i = 0; i < k; i++) {
    vals[i] = x[i];
    ids[i] = i;
  }
  for (int i = k / 2 - 1; i >= 0; i--) sift_down(vals, ids, k, i);
  float thr = vals[0];
  for (int i = k; i < V; i++) {
    if (x[i] > thr) { /* ties keep the lower id already in the heap */
      vals[0] = x[i];
      ids[0] = i;
      sift_down(vals, ids, k, 0);
      thr = vals[0];
    }
  }
  /* Heap sort into best-first order: repeatedly move the worst to the end. */
  for (int end = k - 1; end > 0; end--) {
    float tv = vals[0]; vals[0] = vals[end]; vals[end] = tv;
    int32_t ti = ids[0]; ids[0] = ids[end]; ids[end] = ti;
    sift_down(vals, ids, end, 0);
  }
  return vals[0];
}
