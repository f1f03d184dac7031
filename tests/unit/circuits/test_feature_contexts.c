/* Top-activating contexts of a feature (circuits/feature_contexts.h) against brute force: every
 * window of the text run alone, the observed site read back from the runner, every feature's
 * pre-activation computed in double and the activation applied by hand (ReLU; TopK by ranking);
 * then all windows sorted by their peak. The method's top list must be that list's head: the same
 * windows, peaks, positions and context activations. Also: the tail window, max_tokens, a feature
 * that never fires, cancel, and input errors naming the field. */
#include "circuits/feature_contexts.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/tokenizer.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static guint32 rng = 11;
static float urand(void) {
  rng = rng * 1664525u + 1013904223u;
  return (rng >> 8) / 16777216.0f * 2 - 1;
}

static LmwbModel *load_fixture(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", "tests/fixtures/models/gpt2", NULL);
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  return m;
}

static char *read_text(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *path = g_build_filename(root ? root : ".", "tests/fixtures/train/brown_tiny.txt", NULL);
  GError *err = NULL;
  char *text = lmwb_file_read(path, LMWB_TEXT_MAX_BYTES, LMWB_READ_REGULAR, NULL, &err);
  g_assert_no_error(err);
  return text;
}

static LmwbTranscoder *random_tc(const LmwbConfig *c, int layer, LmwbTcActivation act, int k) {
  GError *err = NULL;
  int d_sae = 48;
  LmwbTranscoder *tc = lmwb_transcoder_new(c->d_model, d_sae, c->d_model, act, k, &err);
  g_assert_no_error(err);
  for (size_t i = 0; i < (size_t)c->d_model * d_sae; i++) tc->W_enc[i] = 0.2f * urand(), tc->W_dec[i] = 0.2f * urand();
  for (int j = 0; j < d_sae; j++) tc->b_enc[j] = 0.3f * urand() - 0.2f;
  tc->b_enc[d_sae - 1] = -1e6f; /* a feature that never fires */
  tc->in = (LmwbSite){LMWB_SITE_LN2, layer};
  tc->out = (LmwbSite){LMWB_SITE_MLP_OUT, layer};
  return tc;
}

/* The feature's activation on one row, from the formulas. */
static double brute_act(const LmwbTranscoder *tc, const float *x, int feature) {
  g_autofree double *pre = g_new(double, tc->d_sae);
  for (int j = 0; j < tc->d_sae; j++) {
    double s = tc->b_enc[j];
    for (int i = 0; i < tc->d_in; i++) s += (double)x[i] * tc->W_enc[(size_t)i * tc->d_sae + j];
    pre[j] = s;
  }
  double p = pre[feature];
  if (tc->act == LMWB_TC_TOPK) {
    int above = 0; /* features ranked before this one */
    for (int j = 0; j < tc->d_sae; j++) above += pre[j] > p || (pre[j] == p && j < feature);
    if (above >= tc->k) return 0;
  }
  return p > 0 ? p : 0;
}

typedef struct {
  double peak;
  int window, peak_t, T;
  double *acts; /* [T] */
} Window;

static int cmp_window(const void *pa, const void *pb) {
  const Window *a = pa, *b = pb;
  if (a->peak != b->peak) return a->peak > b->peak ? -1 : 1;
  return a->window - b->window;
}

/* Every window of T tokens of ids (the last one shorter), each run alone. */
static Window *brute_windows(LmwbModel *m, const LmwbTranscoder *tc, int feature, const int32_t *ids, size_t n, int T,
                             int *n_windows, int64_t *active) {
  int nw = (int)((n + T - 1) / T);
  Window *w = g_new0(Window, nw);
  LmwbRunner *r = lmwb_runner_new(m);
  *active = 0;
  for (int k = 0; k < nw; k++) {
    int len = (int)MIN((size_t)T, n - (size_t)k * T);
    GError *err = NULL;
    g_assert_true(lmwb_runner_forward(r, ids + (size_t)k * T, 1, len, NULL, &err));
    int64_t shape[4];
    const float *x = lmwb_runner_activation(r, tc->in, shape, NULL, &err);
    g_assert_no_error(err);
    w[k] = (Window){.window = k, .T = len, .acts = g_new(double, len), .peak = -1};
    for (int t = 0; t < len; t++) {
      w[k].acts[t] = brute_act(tc, x + (size_t)t * tc->d_in, feature);
      *active += w[k].acts[t] > 0;
      if (w[k].acts[t] > w[k].peak) w[k].peak = w[k].acts[t], w[k].peak_t = t;
    }
  }
  lmwb_runner_free(r);
  qsort(w, nw, sizeof *w, cmp_window);
  *n_windows = nw;
  return w;
}

static const Window *find_window(const Window *w, int nw, int64_t index) {
  for (int k = 0; k < nw; k++)
    if (w[k].window == index) return &w[k];
  return NULL;
}

#define TOL 1e-3

/* The method's list is the head of the brute-force ranking (order may differ only among peaks equal
 * to rounding), with the right windows, peaks and context activations. */
static void compare(LmwbModel *m, const LmwbTranscoder *tc, int feature, const char *text, const LmwbFeatureContextOptions *o,
                    int T, int half) {
  size_t n = 0;
  GError *err = NULL;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, &n, &err);
  g_assert_no_error(err);
  if (o->max_tokens > 0) n = MIN(n, (size_t)o->max_tokens);
  int nw = 0;
  int64_t active = 0;
  Window *w = brute_windows(m, tc, feature, ids, n, T, &nw, &active);
  int expect = 0;
  while (expect < nw && expect < o->top_n && w[expect].peak > 0) expect++;
  LmwbFeatureContexts *c = lmwb_feature_contexts(m, tc, feature, text, o, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(c->n, ==, expect);
  g_assert_cmpint(c->tokens, ==, (int64_t)n);
  g_assert_cmpint(c->active, ==, active);
  g_assert_cmpint(c->feature, ==, feature);
  for (int i = 0; i < c->n; i++) {
    const LmwbFeatureContext *x = &c->contexts[i];
    g_assert_cmpfloat_with_epsilon(x->max_act, w[i].peak, TOL * (1 + w[i].peak));
    if (i > 0) g_assert_cmpfloat(x->max_act, <=, c->contexts[i - 1].max_act);
    const Window *bw = find_window(w, nw, x->window);
    g_assert_nonnull(bw);
    g_assert_cmpfloat_with_epsilon(x->max_act, bw->peak, TOL * (1 + bw->peak));
    g_assert_cmpint(x->position, ==, x->window * T + bw->peak_t);
    int lo = MAX(0, bw->peak_t - half), hi = MIN(bw->T - 1, bw->peak_t + half);
    g_assert_cmpint(x->n, ==, hi - lo + 1);
    g_assert_cmpint(x->peak, ==, bw->peak_t - lo);
    g_assert_cmpfloat(x->acts[x->peak], ==, x->max_act);
    for (int t = 0; t < x->n; t++) {
      g_assert_cmpint(x->ids[t], ==, ids[x->window * T + lo + t]);
      g_assert_cmpfloat_with_epsilon(x->acts[t], bw->acts[lo + t], TOL * (1 + fabs(bw->acts[lo + t])));
      g_autofree char *tt = lmwb_tokenizer_token_text(m->tokenizer, x->ids[t]);
      g_assert_cmpstr(x->texts[t], ==, tt ? tt : "");
    }
  }
  /* the last kept window beats every window left out (to rounding) */
  if (c->n > 0 && c->n < nw) g_assert_cmpfloat(w[c->n].peak, <=, c->contexts[c->n - 1].max_act + TOL);
  lmwb_feature_contexts_free(c);
  for (int k = 0; k < nw; k++) g_free(w[k].acts);
  g_free(w);
}

/* The feature with the most active tokens in a sample of the text: an interesting one to test. */
static int busy_feature(LmwbModel *m, const LmwbTranscoder *tc, const char *text) {
  int best = 0;
  int64_t best_active = -1;
  for (int f = 0; f < tc->d_sae - 1; f += 7) {
    LmwbFeatureContextOptions o = {.top_n = 1, .context = 16, .max_tokens = 256};
    GError *err = NULL;
    LmwbFeatureContexts *c = lmwb_feature_contexts(m, tc, f, text, &o, NULL, &err);
    g_assert_no_error(err);
    if (c->active > best_active && c->active < c->tokens) best = f, best_active = c->active;
    lmwb_feature_contexts_free(c);
  }
  return best;
}

static void test_relu(void) {
  LmwbModel *m = load_fixture();
  g_autofree char *text = read_text();
  LmwbTranscoder *tc = random_tc(&m->cfg, 1, LMWB_TC_RELU, 0);
  int f = busy_feature(m, tc, text);
  /* batches of 3 windows of 16 tokens, the tail window alone; contexts cut at window edges */
  LmwbFeatureContextOptions o = {.top_n = 9, .half_width = 5, .context = 16, .batch = 3, .max_tokens = 1500};
  compare(m, tc, f, text, &o, 16, 5);
  /* a sparser feature, more contexts than windows where it fires */
  o = (LmwbFeatureContextOptions){.top_n = 400, .half_width = 3, .context = 13, .batch = 7, .max_tokens = 2000};
  compare(m, tc, (f + 5) % (tc->d_sae - 1), text, &o, 13, 3);
  /* a feature that never fires has no contexts */
  o = (LmwbFeatureContextOptions){.top_n = 5, .context = 16, .max_tokens = 400};
  compare(m, tc, tc->d_sae - 1, text, &o, 16, LMWB_FEATURE_CONTEXTS_HALF_WIDTH);
  lmwb_transcoder_free(tc);
  lmwb_model_unref(m);
}

static void test_topk(void) {
  LmwbModel *m = load_fixture();
  g_autofree char *text = read_text();
  LmwbTranscoder *tc = random_tc(&m->cfg, 0, LMWB_TC_TOPK, 6);
  int f = busy_feature(m, tc, text);
  LmwbFeatureContextOptions o = {.top_n = 7, .half_width = 4, .context = 20, .batch = 4, .max_tokens = 1200};
  compare(m, tc, f, text, &o, 20, 4);
  lmwb_transcoder_free(tc);
  lmwb_model_unref(m);
}

static void test_cancel(void) {
  LmwbModel *m = load_fixture();
  g_autofree char *text = read_text();
  LmwbTranscoder *tc = random_tc(&m->cfg, 0, LMWB_TC_RELU, 0);
  LmwbReporter rep = {0};
  lmwb_reporter_cancel(&rep);
  GError *err = NULL;
  g_assert_null(lmwb_feature_contexts(m, tc, 0, text, NULL, &rep, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
  g_error_free(err);
  lmwb_transcoder_free(tc);
  lmwb_model_unref(m);
}

static void expect_input_error(LmwbModel *m, const LmwbTranscoder *tc, int feature, const char *text,
                               const LmwbFeatureContextOptions *o, const char *names) {
  GError *err = NULL;
  g_assert_null(lmwb_feature_contexts(m, tc, feature, text, o, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr(err->message, names)) g_error("error \"%s\" does not name \"%s\"", err->message, names);
  g_error_free(err);
}

static void test_bad_input(void) {
  LmwbModel *m = load_fixture();
  LmwbTranscoder *tc = random_tc(&m->cfg, 0, LMWB_TC_RELU, 0);
  expect_input_error(m, tc, tc->d_sae, "some text", NULL, "feature");
  expect_input_error(m, tc, -1, "some text", NULL, "feature");
  expect_input_error(m, tc, 0, "", NULL, "text");
  expect_input_error(m, tc, 0, "x", &(LmwbFeatureContextOptions){.top_n = -1}, "top_n");
  expect_input_error(m, tc, 0, "x", &(LmwbFeatureContextOptions){.context = m->cfg.n_ctx + 1}, "context");
  expect_input_error(m, tc, 0, "x", &(LmwbFeatureContextOptions){.batch = -2}, "batch");
  expect_input_error(m, tc, 0, "x", &(LmwbFeatureContextOptions){.max_tokens = -2}, "max_tokens");
  /* a transcoder of another width than the model: named by lmwb_transcoder_check with the site */
  GError *err = NULL;
  LmwbTranscoder *wide = lmwb_transcoder_new(m->cfg.d_model + 1, 8, m->cfg.d_model, LMWB_TC_RELU, 0, &err);
  g_assert_no_error(err);
  wide->in = (LmwbSite){LMWB_SITE_LN2, 0};
  wide->out = (LmwbSite){LMWB_SITE_MLP_OUT, 0};
  expect_input_error(m, wide, 0, "some text", NULL, "ln2.hook_normalized");
  lmwb_transcoder_free(wide);
  /* NaN weights: named by the tensor */
  tc->W_enc[3] = NAN;
  expect_input_error(m, tc, 0, "some text", NULL, "W_enc");
  lmwb_transcoder_free(tc);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/feature-contexts/relu", test_relu);
  g_test_add_func("/feature-contexts/topk", test_topk);
  g_test_add_func("/feature-contexts/cancel", test_cancel);
  g_test_add_func("/feature-contexts/bad-input", test_bad_input);
  return g_test_run();
}
