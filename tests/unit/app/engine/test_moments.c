/* Streamed second moments (moments.h) against brute force in double precision: activations over
 * valid positions (padding left out), gradients in a backward, the last position left out, merge,
 * and a block boundary inside a run; bad sites are refused. */
#include "tests/unit/app/engine/runner_test_util.h"
#include "app/engine/moments.h"

static LmwbSite S(LmwbSiteKind k, int l) { return (LmwbSite){k, l}; }

/* Σ x xᵀ over rows t < n_b of each sequence b of a [B, T, d] block. */
static double *brute(const float *x, int B, int T, int d, const int *n_b) {
  double *s = g_new0(double, (size_t)d * d);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < n_b[b]; t++) {
      const float *row = x + ((size_t)b * T + t) * d;
      for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) s[(size_t)i * d + j] += (double)row[i] * row[j];
    }
  return s;
}

static void expect_sums(const LmwbMoments *m, const double *want, uint64_t count) {
  int d = lmwb_moments_dim(m);
  g_autofree double *got = g_new(double, (size_t)d * d), *mean = g_new(double, (size_t)d * d);
  lmwb_moments_sum(m, got);
  lmwb_moments_mean(m, mean);
  g_assert_cmpuint(lmwb_moments_count(m), ==, count);
  double scale = 0;
  for (size_t i = 0; i < (size_t)d * d; i++) scale = fmax(scale, fabs(want[i]));
  for (size_t i = 0; i < (size_t)d * d; i++) {
    g_assert_cmpfloat(fabs(got[i] - want[i]), <, 1e-5 * scale);
    g_assert_cmpfloat(fabs(mean[i] - want[i] / (double)count), <, 1e-5 * scale / (double)count);
  }
}

static void test_activations_and_grads(void) {
  LmwbModel *m = rt_load("llama_gqa");
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  int B = 3, T = 7, C = m->cfg.d_model, F = m->cfg.d_ff, lens[3] = {7, 4, 6};
  int32_t ids[21];
  rt_ids(ids, 21, m->cfg.vocab_size, 121);
  LmwbMoments *a = lmwb_moments_new(C, &err), *g = lmwb_moments_new(F, &err), *a2 = lmwb_moments_new(C, &err);
  g_assert_no_error(err);
  g_assert_cmpint(lmwb_moments_collect(a, r, S(LMWB_SITE_LN2, 1), false, false, &err), >, 0);
  g_assert_cmpint(lmwb_moments_collect(g, r, S(LMWB_SITE_MLP_PRE, 0), true, true, &err), >, 0);
  LmwbForwardOptions fo = {.lens = lens};
  g_assert_true(lmwb_runner_forward(r, ids, B, T, &fo, &err));
  LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
  double v;
  g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &v, &err));
  g_autofree float *x = rt_copy_site(r, S(LMWB_SITE_LN2, 1), FALSE, NULL);
  g_autofree float *dx = rt_copy_site(r, S(LMWB_SITE_MLP_PRE, 0), TRUE, NULL);
  g_autofree double *wa = brute(x, B, T, C, lens);
  int skip[3] = {6, 3, 5};
  g_autofree double *wg = brute(dx, B, T, F, skip);
  expect_sums(a, wa, 17);
  expect_sums(g, wg, 14);
  /* a second run adds; merging two collectors is the same */
  g_assert_true(lmwb_runner_forward(r, ids, B, T, &fo, &err));
  for (size_t i = 0; i < (size_t)C * C; i++) wa[i] *= 2;
  expect_sums(a, wa, 34);
  lmwb_moments_merge(a2, a);
  lmwb_moments_merge(a2, a);
  for (size_t i = 0; i < (size_t)C * C; i++) wa[i] *= 2;
  expect_sums(a2, wa, 68);
  /* the pattern, or a width that is not the site's, is refused */
  g_assert_cmpint(lmwb_moments_collect(a, r, S(LMWB_SITE_PATTERN, 0), false, false, &err), ==, 0);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_assert_cmpint(lmwb_moments_collect(a, r, S(LMWB_SITE_MLP_POST, 0), false, false, &err), ==, 0);
  g_clear_error(&err);
  lmwb_moments_free(a), lmwb_moments_free(g), lmwb_moments_free(a2);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

/* More rows than one block: the block boundary changes nothing. */
static void test_blocks(void) {
  int d = 5, n = LMWB_MOMENTS_BLOCK + 37;
  GError *err = NULL;
  g_autofree float *x = g_new(float, (size_t)n * d);
  guint32 s = 7;
  for (size_t i = 0; i < (size_t)n * d; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = (s >> 8) / 16777216.0f - 0.5f;
  }
  LmwbMoments *m = lmwb_moments_new(d, &err);
  lmwb_moments_add(m, x, n, d);
  int one[1] = {n};
  g_autofree double *want = brute(x, 1, n, d, one);
  expect_sums(m, want, (uint64_t)n);
  lmwb_moments_free(m);
  g_assert_null(lmwb_moments_new(0, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/moments/activations-and-grads", test_activations_and_grads);
  g_test_add_func("/moments/blocks", test_blocks);
  return g_test_run();
}
