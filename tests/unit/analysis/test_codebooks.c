/* Codebooks (analysis/codebooks.h): the selection against a brute force in double precision (ties
 * to the lower id), save/load round trips, the code ids and the replaced activation of a run, and
 * the training gradient (straight-through LM term + reconstruction term) against central finite
 * differences of the objective on the GPT-2 fixture. */
#include "analysis/codebooks.h"
#include "app/core/errors.h"
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static LmwbModel *load_fixture(void) {
  g_autofree char *dir = g_build_filename(g_getenv("LMWB_SOURCE_ROOT"), "tests", "fixtures", "models", "gpt2", NULL);
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  return m;
}

static float gauss(GRand *g) {
  double u = g_rand_double(g), v = g_rand_double(g);
  return (float)(sqrt(-2 * log(u + 1e-300)) * cos(2 * G_PI * v));
}

static void test_select_brute_force(void) {
  GRand *g = g_rand_new_with_seed(3);
  int C = 300, W = 24, k = 5, n = 200, ldx = 30;
  float *codes = g_new(float, C * W), *chat = g_new(float, C * W), *x = g_new(float, n * ldx);
  for (int i = 0; i < C * W; i++) codes[i] = gauss(g) * (float)(1 + i % 3);
  for (int i = 0; i < n * ldx; i++) x[i] = gauss(g) + 0.5f;
  memcpy(codes + 7 * W, codes + 3 * W, sizeof(float) * W); /* a tie: code 3 ranks before code 7 */
  for (int i = 0; i < W; i++) x[i] = codes[3 * W + i];     /* row 0 is code 3 itself */
  for (int j = 0; j < C; j++) {
    double s = 0;
    for (int d = 0; d < W; d++) s += (double)codes[j * W + d] * codes[j * W + d];
    for (int d = 0; d < W; d++) chat[j * W + d] = (float)(codes[j * W + d] / sqrt(s));
  }
  int32_t *ids = g_new(int32_t, n * k);
  float *scratch = g_new(float, lmwb_codebook_scratch_floats(n, W, C));
  lmwb_codebook_select(chat, C, W, k, x, ldx, n, ids, scratch);
  double *s = g_new(double, C);
  for (int i = 0; i < n; i++) {
    const float *xi = x + i * ldx;
    double mu = 0, var = 0;
    for (int d = 0; d < W; d++) mu += xi[d];
    mu /= W;
    for (int d = 0; d < W; d++) var += (xi[d] - mu) * (xi[d] - mu);
    for (int j = 0; j < C; j++) {
      double dot = 0, nn = 0;
      for (int d = 0; d < W; d++) {
        dot += (xi[d] - mu) / sqrt(var / W + 1e-5) * codes[j * W + d];
        nn += (double)codes[j * W + d] * codes[j * W + d];
      }
      s[j] = dot / sqrt(nn);
    }
    for (int r = 0; r < k; r++) {
      int best = -1;
      for (int j = 0; j < C; j++) {
        gboolean taken = FALSE;
        for (int q = 0; q < r; q++) taken |= ids[i * k + q] == j;
        if (!taken && (best < 0 || s[j] > s[best] + 1e-9)) best = j;
      }
      g_assert_cmpint(ids[i * k + r], ==, best);
    }
  }
  g_assert_cmpint(ids[0], ==, 3); /* the tie: the lower id first */
  g_assert_cmpint(ids[1], ==, 7);
  float *out = g_new(float, n * W);
  lmwb_codebook_decode(codes, W, k, ids, n, out, W);
  for (int d = 0; d < W; d++) {
    double m = 0;
    for (int r = 0; r < k; r++) m += codes[ids[r] * W + d];
    g_assert_cmpfloat_with_epsilon(out[d], m / k, 1e-5);
  }
  g_free(out);
  g_free(s);
  g_free(scratch);
  g_free(ids);
  g_free(codes);
  g_free(chat);
  g_free(x);
  g_rand_free(g);
}

static LmwbCodebooks *random_set(const LmwbConfig *cfg, int k, int C, const LmwbCodebookSiteSpec *sp, int n, float scale,
                                 guint32 seed) {
  GError *err = NULL;
  LmwbCodebooks *cb = lmwb_codebooks_new(cfg, k, C, sp, n, &err);
  g_assert_no_error(err);
  GRand *g = g_rand_new_with_seed(seed);
  for (int i = 0; i < cb->n; i++)
    for (size_t j = 0; j < (size_t)cb->books[i].groups * C * cb->books[i].width; j++) cb->books[i].codes[j] = scale * gauss(g);
  g_rand_free(g);
  return cb;
}

static void test_save_load(void) {
  LmwbModel *m = load_fixture();
  LmwbCodebookSiteSpec sp[2] = {{1, LMWB_CODEBOOK_MLP}, {0, LMWB_CODEBOOK_ATTN}};
  LmwbCodebooks *cb = random_set(&m->cfg, 3, 40, sp, 2, 1.f, 5);
  g_autofree char *dir = g_dir_make_tmp("lmwb-cb-XXXXXX", NULL);
  GError *err = NULL;
  g_assert_true(lmwb_codebooks_save(cb, dir, &err));
  LmwbCodebooks *back = lmwb_codebooks_load(dir, &m->cfg, &err);
  g_assert_no_error(err);
  g_assert_cmpint(back->k, ==, 3);
  g_assert_cmpint(back->num_codes, ==, 40);
  g_assert_cmpint(back->n, ==, 2);
  for (int i = 0; i < 2; i++) {
    g_assert_cmpint(back->books[i].layer, ==, cb->books[i].layer);
    g_assert_cmpint(back->books[i].site, ==, cb->books[i].site);
    g_assert_cmpint(memcmp(back->books[i].codes, cb->books[i].codes,
                           sizeof(float) * cb->books[i].groups * 40 * cb->books[i].width), ==, 0);
  }
  g_assert_nonnull(lmwb_codebooks_find(back, 0, LMWB_CODEBOOK_ATTN));
  g_assert_null(lmwb_codebooks_find(back, 0, LMWB_CODEBOOK_MLP));
  lmwb_codebooks_free(back);
  /* a set for a model of another head width is refused, naming the tensor */
  LmwbConfig other = m->cfg;
  other.head_dim = 8;
  other.n_head = 8;
  g_assert_null(lmwb_codebooks_load(dir, &other, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "blocks.0.attn.codebook"));
  g_clear_error(&err);
  g_autofree char *a = g_build_filename(dir, "codebooks.json", NULL), *b = g_build_filename(dir, "codebooks.safetensors", NULL);
  g_unlink(a);
  g_unlink(b);
  g_rmdir(dir);
  lmwb_codebooks_free(cb);
  lmwb_model_unref(m);
}

/* The objective of training: mean next-token loss + lambda * sum over groups of the mean over rows
 * of ‖out - x‖² (x the site's input, kept by the run), and the ids chosen. */
static double objective(LmwbRunner *r, LmwbCodebookRun *run, const LmwbCodebook *b, const int32_t *ids, int B, int T,
                        double lambda, int32_t *chosen) {
  GError *err = NULL;
  g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
  float *tl = g_new(float, B * T);
  size_t n = lmwb_runner_token_losses(r, NULL, tl);
  double lm = 0;
  for (int i = 0; i < B * T; i++)
    if (!isnan(tl[i])) lm += tl[i];
  lm /= (double)n;
  g_free(tl);
  int rows;
  const float *x = lmwb_codebook_run_inputs(run, 0, &rows);
  int64_t shape[4];
  int nd;
  const float *out = lmwb_runner_activation(r, lmwb_codebook_engine_site(b->site, b->layer), shape, &nd, &err);
  g_assert_no_error(err);
  int R = b->groups * b->width;
  double mse = 0;
  for (int i = 0; i < rows * R; i++) mse += (double)(out[i] - x[i]) * (out[i] - x[i]);
  const int32_t *c = lmwb_codebook_run_codes(run, b->layer, b->site, shape, &nd, &err);
  g_assert_no_error(err);
  memcpy(chosen, c, sizeof(int32_t) * (size_t)rows * b->groups * 2);
  return lm + lambda * mse / rows;
}

static void gradient_check(LmwbCodebookSite site, int layer) {
  LmwbModel *m = load_fixture();
  LmwbCodebookSiteSpec sp = {layer, site};
  const int k = 2, C = 12, B = 2, T = 7;
  LmwbCodebooks *cb = random_set(&m->cfg, k, C, &sp, 1, site == LMWB_CODEBOOK_ATTN ? 0.3f : 0.5f, 11);
  LmwbCodebook *b = &cb->books[0];
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  LmwbCodebookRun *run = lmwb_codebooks_attach(r, cb, &err);
  g_assert_no_error(err);
  const double lambda = 0.7;
  int32_t ids[B * T];
  for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 37 + 11) % m->cfg.vocab_size);
  lmwb_codebook_run_set_training(run, true, (float)lambda);
  lmwb_codebook_run_set_inputs(run, true, false);
  lmwb_codebook_run_zero_grads(run);
  LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
  LmwbBackwardOptions bo = {.stop_layer = layer};
  g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
  g_assert_true(lmwb_runner_backward(r, &loss, 1, &bo, NULL, &err));
  size_t nc = (size_t)b->groups * C * b->width;
  float *grad = g_memdup2(lmwb_codebook_run_grads(run, 0), sizeof(float) * nc);
  const int64_t *used = lmwb_codebook_run_used(run, 0);
  lmwb_codebook_run_set_training(run, false, 0);
  int rows = B * T, nid = rows * b->groups * k;
  int32_t *base = g_new(int32_t, nid), *chosen = g_new(int32_t, nid);
  objective(r, run, b, ids, B, T, lambda, base);
  int checked = 0, unused_zero = 0, unused = 0;
  double worst = 0;
  for (int gc = 0; gc < b->groups * C; gc++) {
    if (!used[gc]) {
      unused++;
      for (int d = 0; d < b->width; d++) unused_zero += grad[(size_t)gc * b->width + d] == 0;
      continue;
    }
    for (int d = 0; d < b->width; d += 5) {
      size_t q = (size_t)gc * b->width + d;
      float keep = b->codes[q], h = 1e-2f;
      b->codes[q] = keep + h;
      lmwb_codebook_run_changed(run);
      double jp = objective(r, run, b, ids, B, T, lambda, chosen);
      gboolean same = memcmp(chosen, base, sizeof(int32_t) * nid) == 0;
      b->codes[q] = keep - h;
      lmwb_codebook_run_changed(run);
      double jm = objective(r, run, b, ids, B, T, lambda, chosen);
      same = same && memcmp(chosen, base, sizeof(int32_t) * nid) == 0;
      b->codes[q] = keep;
      lmwb_codebook_run_changed(run);
      if (!same) continue; /* the perturbation changed a choice: no derivative there */
      double fd = (jp - jm) / (2 * h), an = grad[q];
      double e = fabs(fd - an) / MAX(1e-3, fabs(fd) + fabs(an));
      if (g_getenv("CB_DEBUG")) g_printerr("code %d dim %d: analytic %g fd %g\n", gc, d, an, fd);
      worst = MAX(worst, e);
      checked++;
    }
  }
  g_assert_cmpint(checked, >=, 10);
  g_assert_cmpint(unused, >, 0);
  g_assert_cmpint(unused_zero, ==, unused * b->width); /* only chosen codes get a gradient */
  g_assert_cmpfloat(worst, <, 2e-2);
  g_free(base);
  g_free(chosen);
  g_free(grad);
  lmwb_codebooks_detach(r, run);
  lmwb_runner_free(r);
  lmwb_codebooks_free(cb);
  lmwb_model_unref(m);
}

static void test_clamp_parse(void) {
  LmwbModel *m = load_fixture();
  GError *err = NULL;
  LmwbCodeClamp c;
  g_assert_true(lmwb_code_clamp_parse(&m->cfg, "1:attn:3=77@3,4#2", &c, &err));
  g_assert_cmpint(c.layer, ==, 1);
  g_assert_cmpint(c.site, ==, LMWB_CODEBOOK_ATTN);
  g_assert_cmpint(c.head, ==, 3);
  g_assert_cmpint(c.code, ==, 77);
  g_assert_cmpint(c.slot, ==, 2);
  g_assert_cmpint(c.n_positions, ==, 2);
  g_assert_cmpint(c.positions[1], ==, 4);
  lmwb_code_clamp_clear(&c);
  g_assert_true(lmwb_code_clamp_parse(&m->cfg, "0:mlp=5", &c, &err));
  g_assert_true(c.site == LMWB_CODEBOOK_MLP && c.head == -1 && c.slot == -1 && !c.positions && c.code == 5);
  lmwb_code_clamp_clear(&c);
  /* each names what is wrong */
  const char *bad[][2] = {{"2:attn=1", "layer"}, {"0:mlp:1=3", "head"}, {"0:attn:4=3", "head"}, {"0:resid=3", "site"},
                          {"0:attn=-1", "code"}, {"0:attn=x", "code"}, {"0:attn=3#x", "slot"}, {"0:attn=3@", "position"},
                          {"0:attn=3@40", "position"}, {"0:attn=3#1@2", "positions"}, {"0:attn", "expected"},
                          {"0=3", "expected"}};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_false(lmwb_code_clamp_parse(&m->cfg, bad[i][0], &c, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    if (!strstr(err->message, bad[i][1])) g_error("%s: \"%s\" does not name %s", bad[i][0], err->message, bad[i][1]);
    g_clear_error(&err);
    lmwb_code_clamp_clear(&c);
  }
  lmwb_model_unref(m);
}

static void test_gradient_mlp(void) { gradient_check(LMWB_CODEBOOK_MLP, 1); }
static void test_gradient_attn(void) { gradient_check(LMWB_CODEBOOK_ATTN, 0); }

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/codebooks/select_brute_force", test_select_brute_force);
  g_test_add_func("/codebooks/save_load", test_save_load);
  g_test_add_func("/codebooks/clamp_parse", test_clamp_parse);
  g_test_add_func("/codebooks/gradient_mlp", test_gradient_mlp);
  g_test_add_func("/codebooks/gradient_attn", test_gradient_attn);
  return g_test_run();
}
