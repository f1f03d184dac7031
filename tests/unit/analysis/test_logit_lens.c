/* Logit lens: the last row must reproduce the model's own next-token distribution, row 0 must be
 * the embeddings read through the final norm and head (checked by hand in double precision), and
 * bad arguments are input errors. Uses the GPT-2 fixture (random weights, real tokenizer). */
#include "analysis/logit_lens.h"
#include "app/core/errors.h"
#include "app/core/rows.h"
#include "app/engine/generate.h"
#include <math.h>

static LmwbModel *load_fixture(void) {
  g_autofree char *dir = g_build_filename(g_getenv("LMWB_SOURCE_ROOT"), "tests", "fixtures", "models", "gpt2", NULL);
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  return m;
}

static const int32_t ids[] = {3, 17, 99, 250, 7, 42};
#define T 6
#define K 5

static void test_last_row_is_model_output(void) {
  LmwbModel *m = load_fixture();
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  LmwbLogitLens *lens = lmwb_logit_lens_compute(r, 0, 0, K, &err);
  g_assert_no_error(err);
  g_assert_cmpint(lens->n_rows, ==, m->cfg.n_layer + 1);
  g_assert_cmpint(lens->n_pos, ==, T);
  int rows = 0, V = m->cfg.vocab_size;
  const float *logits = lmwb_runner_logits(r, &rows);
  g_assert_cmpint(rows, ==, T);
  float *p = g_new(float, V);
  for (int t = 0; t < T; t++) {
    lmwb_softmax_row(p, logits + (size_t)t * V, V);
    const int32_t *li = lmwb_logit_lens_ids(lens, lens->n_rows - 1, t);
    const float *lp = lmwb_logit_lens_probs(lens, lens->n_rows - 1, t);
    for (int i = 0; i < K; i++) {
      g_assert_cmpfloat_with_epsilon(lp[i], p[li[i]], 1e-5);
      if (i) g_assert_cmpfloat(lp[i], <=, lp[i - 1]);
    }
    /* The first entry is the arg-max of the model's own distribution. */
    for (int v = 0; v < V; v++) g_assert_cmpfloat(p[v], <=, lp[0] + 1e-6f);
  }
  g_free(p);
  lmwb_logit_lens_free(lens);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

static void test_embedding_row_by_hand(void) {
  LmwbModel *m = load_fixture();
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  LmwbLogitLens *lens = lmwb_logit_lens_compute(r, 0, 3, K, &err);
  g_assert_no_error(err);
  g_assert_cmpint(lens->n_pos, ==, 3);
  const int C = m->cfg.d_model, V = m->cfg.vocab_size;
  double *x = g_new(double, C), *lg = g_new(double, V);
  for (int t = 0; t < 3; t++) {
    /* GPT-2 embeddings: token + learned position; then LayerNorm(ln_f) and the tied head. */
    double mean = 0, var = 0;
    for (int c = 0; c < C; c++) {
      x[c] = m->w.wte[(size_t)ids[t] * C + c] + m->w.wpe[(size_t)t * C + c];
      mean += x[c];
    }
    mean /= C;
    for (int c = 0; c < C; c++) var += (x[c] - mean) * (x[c] - mean);
    double rstd = 1.0 / sqrt(var / C + m->cfg.norm_eps);
    for (int c = 0; c < C; c++) x[c] = (x[c] - mean) * rstd * m->w.lnf_w[c] + (m->w.lnf_b ? m->w.lnf_b[c] : 0);
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < V; v++) {
      double s = 0;
      for (int c = 0; c < C; c++) s += x[c] * m->w.head[(size_t)v * C + c];
      lg[v] = s;
      mx = fmax(mx, s);
    }
    for (int v = 0; v < V; v++) sum += exp(lg[v] - mx);
    const int32_t *li = lmwb_logit_lens_ids(lens, 0, t);
    const float *lp = lmwb_logit_lens_probs(lens, 0, t);
    for (int i = 0; i < K; i++) g_assert_cmpfloat_with_epsilon(lp[i], exp(lg[li[i]] - mx) / sum, 1e-4);
  }
  g_free(x), g_free(lg);
  lmwb_logit_lens_free(lens);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

static void test_bad_arguments(void) {
  LmwbModel *m = load_fixture();
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  /* No forward yet. */
  g_assert_null(lmwb_logit_lens_compute(r, 0, 0, K, &err));
  g_assert_nonnull(err);
  g_clear_error(&err);
  g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  g_assert_null(lmwb_logit_lens_compute(r, 0, 0, 0, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_assert_null(lmwb_logit_lens_compute(r, 1, 0, K, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_assert_null(lmwb_logit_lens_compute(r, 0, T + 1, K, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/logit_lens/last_row_is_model_output", test_last_row_is_model_output);
  g_test_add_func("/logit_lens/embedding_row_by_hand", test_embedding_row_by_hand);
  g_test_add_func("/logit_lens/bad_arguments", test_bad_arguments);
  return g_test_run();
}
