/* AdamW, gradient clipping and the learning-rate schedule against the formulas of Loshchilov &
 * Hutter (decoupled weight decay) and Kingma & Ba (bias-corrected moments), recomputed here in
 * double precision from the paper's definitions, not from app/engine/optim.c. */
#include "app/engine/optim.h"
#include <glib.h>
#include <math.h>

enum { N = 5, STEPS = 7 };

/* The gradient of parameter i at step t: varied signs and scales, one parameter with none. */
static float grad_at(int i, int t) {
  static const float scale[N] = {1.0f, 1e-3f, 0.5f, 0.0f, 2.0f};
  return scale[i] * (float)((t % 3) - 1 + 0.25 * (i + 1)) * (t % 2 ? -1.0f : 1.0f);
}

static void test_adamw_matches_formula(void) {
  const double b1 = 0.9, b2 = 0.95, eps = 1e-6, wd = 0.1;
  const uint8_t mask[N] = {1, 0, 1, 1, 0};
  float p[N] = {0.5f, -0.25f, 1.0f, 2.0f, -1.5f};
  double ref[N], m[N] = {0}, v[N] = {0};
  for (int i = 0; i < N; i++) ref[i] = p[i];
  LmwbAdamW *o = lmwb_adamw_new(N, (float)b1, (float)b2, (float)eps, (float)wd, mask);
  g_assert_nonnull(o);
  for (int t = 1; t <= STEPS; t++) {
    const double lr = 1e-2 * t; /* a changing rate, as the schedule gives */
    float g[N];
    for (int i = 0; i < N; i++) {
      g[i] = grad_at(i, t);
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * (double)g[i] * g[i];
      double mhat = m[i] / (1 - pow(b1, t)), vhat = v[i] / (1 - pow(b2, t));
      ref[i] -= lr * (mhat / (sqrt(vhat) + eps) + (mask[i] ? wd * ref[i] : 0));
    }
    lmwb_adamw_step(o, p, g, (float)lr);
    for (int i = 0; i < N; i++) g_assert_cmpfloat_with_epsilon(p[i], ref[i], 1e-5 + 1e-5 * fabs(ref[i]));
  }
  /* A parameter with no gradient and no decay never moves; with decay it shrinks. */
  g_assert_cmpfloat(p[3], <, 2.0f);
  g_assert_cmpfloat(p[3], >, 1.9f);
  lmwb_adamw_free(o);
}

/* eps decides whether a tiny, steady gradient (the softmax's push on a token the data never uses)
 * becomes a full-size step: about lr with eps 1e-8, about lr/11 with eps 1e-6. */
static void test_adamw_eps_damps_tiny_gradients(void) {
  const float lr = 1e-3f, g = 1e-7f;
  for (int k = 0; k < 2; k++) {
    const float eps = k ? 1e-6f : 1e-8f;
    LmwbAdamW *o = lmwb_adamw_new(1, 0.9f, 0.95f, eps, 0.0f, NULL);
    float p = 0;
    for (int t = 0; t < 100; t++) lmwb_adamw_step(o, &p, &g, lr);
    double per_step = -p / 100 / lr, expect = 1e-7 / (1e-7 + eps);
    g_assert_cmpfloat_with_epsilon(per_step, expect, 0.01);
    lmwb_adamw_free(o);
  }
}

static void test_clip_and_schedule(void) {
  float g[4] = {3, 0, -4, 0};
  g_assert_cmpfloat_with_epsilon(lmwb_clip_grad_norm(g, 4, 1.0), 5.0, 1e-9);
  g_assert_cmpfloat_with_epsilon(g[0], 0.6, 1e-6);
  g_assert_cmpfloat_with_epsilon(g[2], -0.8, 1e-6);
  g_assert_cmpfloat_with_epsilon(lmwb_clip_grad_norm(g, 4, 2.0), 1.0, 1e-6); /* under the cap: unchanged */
  g_assert_cmpfloat_with_epsilon(g[0], 0.6, 1e-6);

  const double peak = 2e-3, lo = 1e-4;
  const int64_t warm = 10, total = 110;
  /* Linear warm-up, then half a cosine from peak to min_lr, flat after the end. */
  g_assert_cmpfloat_with_epsilon(lmwb_lr_schedule(warm, warm, total, peak, lo), peak, 1e-12);
  g_assert_cmpfloat(lmwb_lr_schedule(0, warm, total, peak, lo), <, peak / 5);
  g_assert_cmpfloat_with_epsilon(lmwb_lr_schedule(60, warm, total, peak, lo), lo + (peak - lo) / 2, 1e-6 * peak);
  g_assert_cmpfloat_with_epsilon(lmwb_lr_schedule(total, warm, total, peak, lo), lo, 1e-12);
  g_assert_cmpfloat_with_epsilon(lmwb_lr_schedule(total + 50, warm, total, peak, lo), lo, 1e-12);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/optim/adamw-formula", test_adamw_matches_formula);
  g_test_add_func("/optim/adamw-eps", test_adamw_eps_damps_tiny_gradients);
  g_test_add_func("/optim/clip-and-schedule", test_clip_and_schedule);
  return g_test_run();
}
