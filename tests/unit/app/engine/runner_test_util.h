/* Shared by the runner tests: fixtures, token ids, comparisons, and objectives read off a run. */
#pragma once
#include "app/core/errors.h"
#include "app/engine/runner.h"
#include <math.h>
#include <string.h>

/* The committed random checkpoints of the three architectures (GPT-2; Llama with GQA, RoPE and
 * SwiGLU; GPT-NeoX with a parallel residual and partial rotary). */
static const char *const rt_fixtures[] = {"gpt2", "llama_gqa", "neox"};

static inline LmwbModel *rt_load(const char *name) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", "tests/fixtures/models", name, NULL);
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  return m;
}

static inline void rt_ids(int32_t *ids, int n, int V, guint32 seed) {
  for (int i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    ids[i] = (int32_t)((seed >> 8) % (guint32)V);
  }
}

static inline double rt_max_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
  return m;
}

static inline double rt_max_abs(const float *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
  return m;
}

static inline size_t rt_numel(const int64_t *shape, int nd) {
  size_t n = 1;
  for (int i = 0; i < nd; i++) n *= (size_t)shape[i];
  return n;
}

/* A copy of an activation (or gradient) of the runner's last run, with its size. */
static inline float *rt_copy_site(LmwbRunner *r, LmwbSite s, gboolean grad, size_t *n) {
  int64_t shape[4];
  int nd = 0;
  GError *err = NULL;
  const float *p = grad ? lmwb_runner_grad(r, s, shape, &nd, &err) : lmwb_runner_activation(r, s, shape, &nd, &err);
  g_assert_no_error(err);
  size_t k = rt_numel(shape, nd);
  if (n) *n = k;
  return g_memdup2(p, k * sizeof(float));
}

/* The same check everywhere: analytic against numeric with a tolerance for float32 runs. */
static inline void rt_check(const char *what, double analytic, double numeric) {
  double tol = 3e-3 + 2e-2 * fabs(numeric);
  if (!(fabs(numeric - analytic) <= tol)) g_error("%s: analytic %.6g, finite difference %.6g", what, analytic, numeric);
}

/* An objective read off the runner's last forward. */
typedef double (*RtObjective)(LmwbRunner *r, void *user);

/* Mean next-token cross-entropy of the last forward (the default training loss). */
static inline double rt_mean_loss(LmwbRunner *r, void *user) {
  int B = 0;
  lmwb_runner_logits(r, &B);
  g_autofree float *losses = g_new(float, B);
  size_t n = lmwb_runner_token_losses(r, NULL, losses);
  double s = 0;
  for (int i = 0; i < B; i++)
    if (!isnan(losses[i])) s += losses[i];
  return s / (double)n;
}

/* Central difference of obj in one element of a site's block: sequence b, position t, index i,
 * nudged by an ADD hook (added after the runner's other hooks) of +-h. */
static inline double rt_fd(LmwbRunner *r, const int32_t *ids, int B, int T, const LmwbForwardOptions *fo,
                           LmwbSite s, int b, int t, int i, float h, RtObjective obj, void *user) {
  g_autofree uint8_t *mask = g_new0(uint8_t, (size_t)B * T);
  mask[(size_t)b * T + t] = 1;
  double v[2];
  GError *err = NULL;
  for (int k = 0; k < 2; k++) {
    LmwbHook add = {.site = s, .op = LMWB_HOOK_ADD, .mask = mask, .run_B = B, .run_T = T, .indices = &i,
                    .n_indices = 1, .value = k ? -h : h};
    int id = lmwb_runner_add_hook(r, &add, &err);
    g_assert_no_error(err);
    g_assert_true(lmwb_runner_forward(r, ids, B, T, fo, &err));
    g_assert_no_error(err);
    v[k] = obj(r, user);
    lmwb_runner_remove_hook(r, id);
  }
  return (v[0] - v[1]) / (2.0 * h);
}

/* The element (b, t, i) of a [B, T, R] block. */
static inline float rt_at(const float *block, int T, int R, int b, int t, int i) {
  return block[((size_t)b * T + t) * R + i];
}
