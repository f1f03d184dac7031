/* Transcoder training (circuits/transcoder_train.h): the gradient against finite differences for
 * every activation and both backward paths (dense GEMMs and sparse entries); b_dec starts at the
 * targets' mean; decoder rows have unit norm after every step; the exported transcoder computes
 * what the trainer computed; TopK keeps exactly k features; dead features are resampled towards
 * the worst-reconstructed token; training lowers the loss on the fixture models (and the built-in
 * model when present); a run stopped and resumed (by a step limit or a cancel at any moment) ends
 * with bit-identical weights; cancel returns within a second; bad options are input errors that
 * write nothing. */
#include "circuits/transcoder_train.h"
#include "app/core/errors.h"
#include "app/formats/safetensors.h"
#include "app/formats/tokenizer.h"
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static LmwbModel *load_model(const char *rel) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", rel, NULL);
  if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) return NULL;
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  return m;
}

static LmwbModel *fixture(const char *name) {
  g_autofree char *rel = g_build_filename("tests/fixtures/models", name, NULL);
  LmwbModel *m = load_model(rel);
  g_assert_nonnull(m);
  return m;
}

static int32_t *fixture_ids(LmwbModel *m, size_t *n) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *path = g_build_filename(root ? root : ".", "tests/fixtures/train/brown_tiny.txt", NULL);
  g_autofree char *text = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(path, &text, &len, NULL));
  GError *err = NULL;
  int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, len, FALSE, n, &err);
  g_assert_no_error(err);
  /* the fixture vocabularies are small: fold ids into them (the text is only a source of tokens) */
  for (size_t i = 0; i < *n; i++) ids[i] %= m->cfg.vocab_size;
  return ids;
}

static guint32 rng = 7;
static float urand(void) {
  rng = rng * 1664525u + 1013904223u;
  return (rng >> 8) / 16777216.0f * 2 - 1;
}

/* Rows with a mean, a few directions of structure and noise. */
static void make_data(float *x, float *y, int n, int di, int dout) {
  for (int i = 0; i < n; i++) {
    float a = urand(), b = urand(), c = urand();
    for (int j = 0; j < di; j++) x[(size_t)i * di + j] = 0.5f + a * sinf(j + 1.f) + b * cosf(2.f * j) + 0.3f * urand();
    for (int j = 0; j < dout; j++)
      y[(size_t)i * dout + j] = 0.2f * j + 2 * (a > 0 ? a : 0) * sinf(3.f * j) + c * c * cosf(j) + 0.1f * urand();
  }
}

/* dead_window > 0 turns TopK's AuxK on (over the features dead by that window), with a coefficient
 * of 1 so that its gradient is not lost in the finite differences' tolerance. */
static LmwbTcTrainer *trainer_w(int di, int ds, int dout, gboolean sae, LmwbTcActivation act, int k, double sparsity,
                                double sparse_below, int64_t dead_window) {
  LmwbTcTrainOptions o;
  lmwb_tc_train_options_init(&o, 0);
  o.act = act, o.k = k, o.sparsity = sparsity, o.sparse_below = sparse_below, o.dead_window = dead_window;
  o.aux_coef = dead_window > 0 ? 1.0 : 0;
  GError *err = NULL;
  LmwbTcTrainer *t = lmwb_tc_trainer_new(di, ds, dout, sae, &o, &err);
  g_assert_no_error(err);
  return t;
}

static LmwbTcTrainer *trainer(int di, int ds, int dout, gboolean sae, LmwbTcActivation act, int k, double sparsity,
                              double sparse_below) {
  return trainer_w(di, ds, dout, sae, act, k, sparsity, sparse_below, 0);
}

/* ---- the gradient ----------------------------------------------------------------------------------- */

/* aux: TopK with AuxK on, features silent over the last two steps dead. AuxK holds the main error
 * fixed (a stop-gradient, as Gao et al.), so the finite differences of the total loss agree with
 * its gradient only for the dead features' weights (the live ones move the main error): only those
 * are checked then. */
static void check_gradient(LmwbTcActivation act, gboolean sae, double sparse_below, gboolean aux, const char *what) {
  const int di = 6, ds = 24, dout = sae ? 6 : 5, n = 9;
  float x[n * di], y[n * dout];
  make_data(x, y, n, di, dout);
  if (sae) memcpy(x, y, sizeof x);
  LmwbTcTrainer *t = trainer_w(di, ds, dout, sae, act, act == LMWB_TC_TOPK ? 4 : 0, act == LMWB_TC_TOPK ? 0 : 0.05,
                               sparse_below, aux ? 2 * n : 0);
  GError *err = NULL;
  g_assert_true(lmwb_tc_trainer_init(t, x, y, n, 3, &err));
  g_assert_true(lmwb_tc_trainer_reserve(t, n, &err));
  /* move away from the symmetric start, and give the thresholds room */
  for (int s = 0; s < 30; s++) lmwb_tc_trainer_step(t, x, y, n, 1e-2, 1.0, NULL);
  size_t np;
  float *p = lmwb_tc_trainer_params(t, &np);
  g_autofree float *g = g_new(float, np);
  lmwb_tc_trainer_gradient(t, x, y, n, 1.0, g);
  guint8 dead[ds];
  if (aux) {
    g_assert_cmpint(lmwb_tc_trainer_dead(t, 2 * n, dead), >=, 3); /* AuxK has work */
    /* a feature dead by the window may still fire in this batch: then it moves the main error */
    LmwbTranscoder *tc = lmwb_tc_trainer_export(t, &err);
    float f[n * ds];
    lmwb_transcoder_encode(tc, x, n, NULL, f);
    for (int i = 0; i < n * ds; i++)
      if (f[i] != 0.f) dead[i % ds] = 0;
    lmwb_transcoder_free(tc);
  }
  size_t n_theta = act == LMWB_TC_JUMPRELU ? (size_t)ds : 0; /* straight-through: not a true derivative */
  int checked = 0, bad = 0, kinked = 0;
  double worst = 0;
  for (size_t q = 0; q < np - n_theta; q += aux ? 1 : 1 + (q % 3)) {
    if (aux) {
      size_t e = (size_t)ds * di, b = e + ds, d = b + (size_t)ds * dout;
      int j = q < e ? (int)(q / di) : q < b ? (int)(q - e) : q < d ? (int)((q - b) / dout) : -1;
      if (j < 0 || !dead[j]) continue;
    }
    float keep = p[q];
    double fd[2];
    for (int r = 0; r < 2; r++) {
      float h = (r ? 2.5e-4f : 1e-3f) * MAX(1.f, fabsf(keep));
      p[q] = keep + h;
      double lp = lmwb_tc_trainer_gradient(t, x, y, n, 1.0, NULL);
      p[q] = keep - h;
      double lm = lmwb_tc_trainer_gradient(t, x, y, n, 1.0, NULL);
      p[q] = keep;
      fd[r] = (lp - lm) / ((double)(keep + h) - (keep - h));
    }
    /* a kink or jump crossed by the perturbation (ReLU, the TopK boundary, JumpReLU's jump): the
     * two step sizes disagree; such elements are not checked (they must stay rare). A kink almost
     * exactly at the point fools both step sizes alike: one element in a hundred may differ. */
    if (fabs(fd[0] - fd[1]) > 5e-4 + 0.01 * fabs(fd[0])) {
      kinked++;
      continue;
    }
    double diff = fabs(fd[0] - g[q]);
    worst = MAX(worst, diff / (1e-3 + fabs(fd[0])));
    if (diff > 1e-3 + 2e-2 * fabs(fd[0])) {
      bad++;
      if (g_getenv("TC_DEBUG")) g_printerr("%s: param %zu analytic %g fd %g\n", what, q, g[q], fd[0]);
    }
    checked++;
  }
  if (aux) g_assert_cmpint(checked, >=, 30);
  if (bad > checked / 100 || kinked > checked / 10)
    g_error("%s: %d of %d gradient elements differ from finite differences (worst relative %.3g), %d not smooth", what,
            bad, checked, worst, kinked);
  lmwb_tc_trainer_free(t);
}

static void test_gradient(void) {
  for (int path = 0; path < 2; path++)
    check_gradient(LMWB_TC_TOPK, FALSE, path ? 1.0 : -1.0, TRUE, path ? "topk AuxK, sparse path" : "topk AuxK, dense path");
  const LmwbTcActivation acts[3] = {LMWB_TC_RELU, LMWB_TC_TOPK, LMWB_TC_JUMPRELU};
  for (int a = 0; a < 3; a++)
    for (int sae = 0; sae < 2; sae++)
      for (int path = 0; path < 2; path++) {
        g_autofree char *what = g_strdup_printf("%s %s, %s path", lmwb_tc_activation_name(acts[a]),
                                                sae ? "SAE" : "transcoder", path ? "sparse" : "dense");
        check_gradient(acts[a], sae, path ? 1.0 : -1.0, FALSE, what);
      }
}

/* The loss as the header writes it, in double, from the flat parameters and the normalisers
 * (recomputed from the sample the trainer was initialised on); for JumpReLU also the
 * straight-through gradient of log_theta. Returns the loss. */
static double reference_loss(int di, int ds, int dout, LmwbTcActivation act, int k, double lambda, const float *p,
                             const float *x, const float *y, int n, double *glog_theta, const guint8 *dead, int aux_k) {
  double rx = 0, ry = 0;
  g_autofree double *my = g_new0(double, dout);
  for (int i = 0; i < n; i++) {
    for (int c = 0; c < dout; c++) my[c] += y[(size_t)i * dout + c] / n;
    for (int c = 0; c < di; c++) rx += (double)x[(size_t)i * di + c] * x[(size_t)i * di + c] / n;
  }
  for (int i = 0; i < n; i++)
    for (int c = 0; c < dout; c++) ry += (y[(size_t)i * dout + c] - my[c]) * (y[(size_t)i * dout + c] - my[c]) / n;
  rx = sqrt(rx), ry = sqrt(ry);
  const float *W_enc = p, *b_enc = W_enc + (size_t)ds * di, *W_dec = b_enc + ds, *b_dec = W_dec + (size_t)ds * dout,
              *lt = b_dec + dout;
  const double eps = 0.001 / sqrt((double)dout);
  g_autofree double *pre = g_new(double, ds), *f = g_new(double, ds), *out = g_new(double, dout);
  double mse = 0, S = 0, aux = 0;
  if (glog_theta)
    for (int j = 0; j < ds; j++) glog_theta[j] = 0;
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < ds; j++) {
      double v = b_enc[j];
      for (int c = 0; c < di; c++) v += x[(size_t)i * di + c] / rx * W_enc[(size_t)j * di + c];
      pre[j] = v;
    }
    for (int j = 0; j < ds; j++) {
      if (act == LMWB_TC_RELU) f[j] = pre[j] > 0 ? pre[j] : 0;
      else if (act == LMWB_TC_JUMPRELU) f[j] = pre[j] > exp(lt[j]) ? pre[j] : 0;
      else {
        int above = 0;
        for (int q = 0; q < ds; q++) above += pre[q] > pre[j] || (pre[q] == pre[j] && q < j);
        f[j] = above < k && pre[j] > 0 ? pre[j] : 0;
      }
      double dn = 0;
      for (int c = 0; c < dout; c++) dn += (double)W_dec[(size_t)j * dout + c] * W_dec[(size_t)j * dout + c];
      S += act == LMWB_TC_JUMPRELU ? (f[j] > 0) : f[j] * sqrt(dn);
    }
    for (int c = 0; c < dout; c++) {
      double v = b_dec[c];
      for (int j = 0; j < ds; j++) v += f[j] * W_dec[(size_t)j * dout + c];
      out[c] = v;
      double r = v - y[(size_t)i * dout + c] / ry;
      mse += r * r;
    }
    if (dead) {
      /* AuxK: the aux_k largest positive pre-activations among the dead features explain the error */
      for (int c = 0; c < dout; c++) {
        double v = out[c] - y[(size_t)i * dout + c] / ry;
        for (int j = 0; j < ds; j++) {
          if (!dead[j] || pre[j] <= 0) continue;
          int above = 0;
          for (int q = 0; q < ds; q++) above += dead[q] && (pre[q] > pre[j] || (pre[q] == pre[j] && q < j));
          if (above < aux_k) v += pre[j] * W_dec[(size_t)j * dout + c];
        }
        aux += v * v;
      }
    }
    if (act == LMWB_TC_JUMPRELU && glog_theta)
      for (int j = 0; j < ds; j++) {
        double th = exp(lt[j]);
        if (fabs(pre[j] - th) >= eps / 2) continue;
        double df = 0; /* dL/df_ij of the squared error */
        for (int c = 0; c < dout; c++) df += 2.0 / n * (out[c] - y[(size_t)i * dout + c] / ry) * W_dec[(size_t)j * dout + c];
        glog_theta[j] += th * (-(th / eps) * df - lambda / n / eps);
      }
  }
  return mse / n + lambda * S / n + aux / n; /* AuxK's coefficient 1 (trainer_w) */
}

/* The trainer's loss is the documented one, for every activation and both paths; JumpReLU's
 * threshold gradient is the straight-through estimate of Rajamanoharan et al. (some rows are put
 * exactly at their threshold so that the kernel sees them). */
static void test_reference(void) {
  const LmwbTcActivation acts[3] = {LMWB_TC_RELU, LMWB_TC_TOPK, LMWB_TC_JUMPRELU};
  const int di = 10, ds = 32, dout = 8, n = 30, k = 5;
  const double lambda = 0.07;
  g_autofree float *x = g_new(float, n * di), *y = g_new(float, n * dout);
  make_data(x, y, n, di, dout);
  for (int a = 0; a < 3; a++)
    for (int path = 0; path < 2; path++) {
      gboolean jump = acts[a] == LMWB_TC_JUMPRELU;
      gboolean topk = acts[a] == LMWB_TC_TOPK;
      LmwbTcTrainer *t = trainer_w(di, ds, dout, FALSE, acts[a], topk ? k : 0, topk ? 0 : lambda, path ? 1.0 : -1.0,
                                   topk ? 2 * n : 0);
      GError *err = NULL;
      g_assert_true(lmwb_tc_trainer_init(t, x, y, n, 8, &err));
      g_assert_true(lmwb_tc_trainer_reserve(t, n, &err));
      for (int s = 0; s < 10; s++) lmwb_tc_trainer_step(t, x, y, n, 5e-3, 1.0, NULL);
      size_t np;
      float *p = lmwb_tc_trainer_params(t, &np);
      if (jump) {
        /* thresholds of features 0..19 at the pre-activation of row j (so row j sits on the kernel) */
        double rx = 0;
        for (size_t i = 0; i < (size_t)n * di; i++) rx += (double)x[i] * x[i] / n;
        rx = sqrt(rx);
        float *lt = p + (size_t)ds * di + ds + (size_t)ds * dout + dout;
        for (int j = 0; j < 20; j++) {
          double v = p[(size_t)ds * di + j];
          for (int c = 0; c < di; c++) v += x[(size_t)j * di + c] / rx * p[(size_t)j * di + c];
          if (v > 1e-4) lt[j] = (float)log(v + 1e-6);
        }
      }
      g_autofree float *g = g_new(float, np);
      g_autofree double *gref = g_new(double, ds);
      double loss = lmwb_tc_trainer_gradient(t, x, y, n, 1.0, g);
      g_autofree guint8 *dead = g_new(guint8, ds);
      int n_dead = topk ? lmwb_tc_trainer_dead(t, 2 * n, dead) : 0;
      if (topk) g_assert_cmpint(n_dead, >=, 3); /* AuxK counts */
      double want = reference_loss(di, ds, dout, acts[a], k, topk ? 0 : lambda, p, x, y, n, gref, topk ? dead : NULL,
                                   dout / 2);
      g_assert_cmpfloat(fabs(loss - want), <, 1e-5 * (1 + want));
      if (jump) {
        const float *glt = g + (size_t)ds * di + ds + (size_t)ds * dout + dout;
        int nonzero = 0;
        for (int j = 0; j < ds; j++) {
          nonzero += gref[j] != 0;
          if (fabs(glt[j] - gref[j]) > 1e-4 * (1 + fabs(gref[j])))
            g_error("%s path: d/dlog_theta[%d] = %g, want %g", path ? "sparse" : "dense", j, glt[j], gref[j]);
        }
        g_assert_cmpint(nonzero, >=, 5);
      }
      lmwb_tc_trainer_free(t);
    }
}

/* The two backward paths give the same gradient (to rounding). */
static void test_paths_agree(void) {
  const LmwbTcActivation acts[3] = {LMWB_TC_RELU, LMWB_TC_TOPK, LMWB_TC_JUMPRELU};
  const int di = 16, ds = 64, dout = 12, n = 40;
  g_autofree float *x = g_new(float, n * di), *y = g_new(float, n * dout);
  make_data(x, y, n, di, dout);
  for (int a = 0; a < 3; a++) {
    LmwbTcTrainer *t[2];
    float *g[2];
    size_t np = 0;
    for (int path = 0; path < 2; path++) {
      t[path] = trainer(di, ds, dout, FALSE, acts[a], acts[a] == LMWB_TC_TOPK ? 5 : 0, acts[a] == LMWB_TC_TOPK ? 0 : 0.1,
                        path ? 1.0 : -1.0);
      GError *err = NULL;
      g_assert_true(lmwb_tc_trainer_init(t[path], x, y, n, 11, &err));
      g_assert_true(lmwb_tc_trainer_reserve(t[path], n, &err));
      lmwb_tc_trainer_params(t[path], &np);
      g[path] = g_new(float, np);
      lmwb_tc_trainer_gradient(t[path], x, y, n, 1.0, g[path]);
    }
    for (size_t q = 0; q < np; q++)
      if (fabsf(g[0][q] - g[1][q]) > 1e-5f + 1e-4f * fabsf(g[0][q]))
        g_error("%s: element %zu: dense %g, sparse %g", lmwb_tc_activation_name(acts[a]), q, g[0][q], g[1][q]);
    for (int path = 0; path < 2; path++) lmwb_tc_trainer_free(t[path]), g_free(g[path]);
  }
}

/* ---- initialisation, unit norms, export --------------------------------------------------------------- */

static void test_init_norms_export(void) {
  const LmwbTcActivation acts[3] = {LMWB_TC_RELU, LMWB_TC_TOPK, LMWB_TC_JUMPRELU};
  const int di = 20, ds = 80, dout = 20, n = 300;
  g_autofree float *x = g_new(float, n * di), *y = g_new(float, n * dout);
  g_autofree float *f = g_new(float, (size_t)n * ds), *out = g_new(float, (size_t)n * dout);
  make_data(x, y, n, di, dout);
  for (int a = 0; a < 3; a++)
    for (int sae = 0; sae < 2; sae++) {
      const float *xx = sae ? y : x;
      LmwbTcTrainer *t = trainer(di, ds, dout, sae, acts[a], acts[a] == LMWB_TC_TOPK ? 6 : 0,
                                 acts[a] == LMWB_TC_TOPK ? 0 : 0.02, 0);
      GError *err = NULL;
      g_assert_true(lmwb_tc_trainer_init(t, xx, y, n, 5, &err));
      g_assert_true(lmwb_tc_trainer_reserve(t, n, &err));
      /* b_dec starts at the targets' mean */
      LmwbTranscoder *tc = lmwb_tc_trainer_export(t, &err);
      g_assert_no_error(err);
      for (int c = 0; c < dout; c++) {
        double mean = 0;
        for (int i = 0; i < n; i++) mean += y[(size_t)i * dout + c];
        mean /= n;
        g_assert_cmpfloat(fabs(tc->b_dec[c] - mean), <, 1e-5 * (1 + fabs(mean)));
      }
      lmwb_transcoder_free(tc);
      for (int s = 0; s < 25; s++) {
        LmwbTcStepStats st;
        lmwb_tc_trainer_step(t, xx, y, n, 3e-3, 1.0, &st);
        g_assert_true(isfinite(st.loss));
        /* decoder rows have unit norm after every step */
        size_t np;
        const float *p = lmwb_tc_trainer_params(t, &np);
        const float *W_dec = p + (size_t)ds * di + ds;
        for (int j = 0; j < ds; j++) {
          double nn = 0;
          for (int c = 0; c < dout; c++) nn += (double)W_dec[(size_t)j * dout + c] * W_dec[(size_t)j * dout + c];
          g_assert_cmpfloat(fabs(sqrt(nn) - 1), <, 1e-5);
        }
      }
      /* the exported transcoder (model units, transcoder.h's encode/decode) computes what the
       * trainer measured */
      double mse, fvu, l0;
      lmwb_tc_trainer_measure(t, xx, y, n, &mse, &fvu, &l0);
      tc = lmwb_tc_trainer_export(t, &err);
      g_assert_no_error(err);
      lmwb_transcoder_encode(tc, xx, n, NULL, f);
      lmwb_transcoder_decode(tc, f, xx, n, out);
      double e = 0, sq = 0, act = 0;
      g_autofree double *mean = g_new0(double, dout);
      for (int i = 0; i < n; i++)
        for (int c = 0; c < dout; c++) mean[c] += y[(size_t)i * dout + c] / n;
      for (size_t i = 0; i < (size_t)n * dout; i++) {
        double r = out[i] - y[i], d = y[i] - mean[i % dout];
        e += r * r, sq += d * d;
      }
      for (size_t i = 0; i < (size_t)n * ds; i++) act += f[i] != 0;
      g_assert_cmpfloat(fabs(e / sq - fvu), <, 1e-4 * (1 + fvu));
      g_assert_cmpfloat(fabs(act / n - l0), <, 0.02);
      /* and it can be continued: init_from gives the same function back */
      LmwbTcTrainer *t2 = trainer(di, ds, dout, sae, acts[a], acts[a] == LMWB_TC_TOPK ? 6 : 0,
                                  acts[a] == LMWB_TC_TOPK ? 0 : 0.02, 0);
      g_assert_true(lmwb_tc_trainer_init_from(t2, tc, xx, y, n, &err));
      g_assert_no_error(err);
      g_assert_true(lmwb_tc_trainer_reserve(t2, n, &err));
      double mse2, fvu2, l02;
      lmwb_tc_trainer_measure(t2, xx, y, n, &mse2, &fvu2, &l02);
      g_assert_cmpfloat(fabs(fvu2 - fvu), <, 1e-4 * (1 + fvu));
      g_assert_cmpfloat(fabs(l02 - l0), <, 0.02);
      lmwb_tc_trainer_free(t2);
      lmwb_transcoder_free(tc);
      lmwb_tc_trainer_free(t);
    }
}

/* ---- TopK ------------------------------------------------------------------------------------------- */

static void test_topk_exact(void) {
  const int di = 16, ds = 96, dout = 16, n = 256, k = 7;
  g_autofree float *x = g_new(float, n * di), *y = g_new(float, n * dout), *f = g_new(float, (size_t)n * ds);
  make_data(x, y, n, di, dout);
  LmwbTcTrainer *t = trainer(di, ds, dout, FALSE, LMWB_TC_TOPK, k, 0, 0);
  GError *err = NULL;
  g_assert_true(lmwb_tc_trainer_init(t, x, y, n, 9, &err));
  g_assert_true(lmwb_tc_trainer_reserve(t, n, &err));
  for (int s = 0; s < 40; s++) {
    LmwbTcStepStats st;
    lmwb_tc_trainer_step(t, x, y, n, 2e-3, 1.0, &st);
    g_assert_cmpfloat(st.l0, ==, k);
  }
  LmwbTranscoder *tc = lmwb_tc_trainer_export(t, &err);
  g_assert_no_error(err);
  g_assert_cmpint(tc->k, ==, k);
  lmwb_transcoder_encode(tc, x, n, NULL, f);
  for (int i = 0; i < n; i++) {
    int c = 0;
    for (int j = 0; j < ds; j++) c += f[(size_t)i * ds + j] > 0;
    g_assert_cmpint(c, ==, k);
  }
  lmwb_transcoder_free(tc);
  lmwb_tc_trainer_free(t);
}

/* ---- resampling -------------------------------------------------------------------------------------- */

static void check_resample(LmwbTcActivation act) {
  const int di = 12, ds = 40, dout = 10, n = 200, k = 4;
  g_autofree float *x = g_new(float, n * di), *y = g_new(float, n * dout);
  make_data(x, y, n, di, dout);
  gboolean topk = act == LMWB_TC_TOPK;
  LmwbTcTrainer *t = trainer(di, ds, dout, FALSE, act, topk ? k : 0, topk ? 0 : 0.01, 0);
  GError *err = NULL;
  g_assert_true(lmwb_tc_trainer_init(t, x, y, n, 2, &err));
  g_assert_true(lmwb_tc_trainer_reserve(t, n, &err));
  size_t np;
  float *p = lmwb_tc_trainer_params(t, &np);
  float *W_enc = p, *b_enc = p + (size_t)ds * di, *W_dec = b_enc + ds;
  /* features 3, 17 and 30 can never fire */
  const int killed[3] = {3, 17, 30};
  for (int q = 0; q < 3; q++) b_enc[killed[q]] = -1e6f;
  for (int s = 0; s < 6; s++) lmwb_tc_trainer_step(t, x, y, n, 1e-3, 1.0, NULL);
  for (int q = 0; q < 3; q++) b_enc[killed[q]] = -1e6f; /* Adam may have moved them a little */
  g_autofree guint8 *dead = g_new(guint8, ds);
  int64_t window = 5 * n;
  int n_dead = lmwb_tc_trainer_dead(t, window, dead);
  g_assert_cmpint(n_dead, >=, 3);
  g_assert_cmpint(n_dead, <, topk ? ds / 2 : ds / 4);
  for (int q = 0; q < 3; q++) g_assert_true(dead[killed[q]]);
  /* a sample whose row 123 is reconstructed far worse than every other row */
  g_autofree float *ys = g_memdup2(y, sizeof(float) * n * dout);
  for (int c = 0; c < dout; c++) ys[123 * dout + c] += 40.f * (c % 2 ? 1 : -1);
  g_assert_cmpint(lmwb_tc_trainer_resample(t, window, x, ys, n), ==, n_dead);
  g_assert_cmpint(lmwb_tc_trainer_dead(t, window, NULL), ==, 0);
  /* the new decoder rows point along that row's error, the encoders read its centred input */
  for (int q = 0; q < 3; q++) {
    int j = killed[q];
    const float *d = W_dec + (size_t)j * dout;
    double nn = 0, dotp = 0, ne = 0;
    for (int c = 0; c < dout; c++) {
      double e = c % 2 ? 1 : -1; /* the planted error dominates that row's error */
      nn += (double)d[c] * d[c], dotp += d[c] * e, ne += e * e;
    }
    g_assert_cmpfloat(fabs(sqrt(nn) - 1), <, 1e-5);
    g_assert_cmpfloat(dotp / sqrt(ne), >, 0.95);
    g_assert_cmpfloat(b_enc[j], >, -1e3); /* the bias was reset */
    double en = 0;
    for (int i = 0; i < di; i++) en += (double)W_enc[(size_t)j * di + i] * W_enc[(size_t)j * di + i];
    g_assert_cmpfloat(sqrt(en), >, 0);
  }
  /* and they fire again: a TopK feature wins a place among the k largest on its token */
  if (topk) {
    LmwbTranscoder *tc = lmwb_tc_trainer_export(t, &err);
    float f[ds];
    lmwb_transcoder_encode(tc, x + 123 * di, 1, NULL, f);
    int won = 0;
    for (int q = 0; q < 3; q++) won += f[killed[q]] > 0;
    g_assert_cmpint(won, >=, 1); /* they drew the same token: they share its place */
    lmwb_transcoder_free(tc);
  }
  LmwbTcStepStats st;
  lmwb_tc_trainer_step(t, x, ys, n, 1e-3, 1.0, &st);
  g_assert_cmpint(lmwb_tc_trainer_dead(t, 1, dead), <, ds);
  int fired = 0;
  for (int q = 0; q < 3; q++) fired += !dead[killed[q]];
  g_assert_cmpint(fired, >=, 1);
  lmwb_tc_trainer_free(t);
}

static void test_resample(void) {
  check_resample(LMWB_TC_RELU);
  check_resample(LMWB_TC_TOPK);
}

/* ---- training on models ------------------------------------------------------------------------------- */

static void base_options(LmwbTcTrainOptions *o, int layer) {
  lmwb_tc_train_options_init(o, layer);
  o->d_sae = 256;
  o->sparsity = 0.01;
  o->tokens = 256 * 100;
  o->context = 16;
  o->batch = 256;
  o->buffer = 512;
  o->forward_batch = 8;
  o->lr = 3e-3;
  o->dead_window = 256 * 10;
  o->seed = 4;
}

static void keep_fvu(LmwbReporter *r, const char *series, double x, double y) {
  (void)x;
  if (!strcmp(series, "fvu")) g_array_append_val((GArray *)r->user, y);
}

static char *fixture_text(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *path = g_build_filename(root ? root : ".", "tests/fixtures/train/brown_tiny.txt", NULL);
  char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  return text;
}

/* Trains layer L of a model; checks that the loss fell, that the saved transcoder measured by
 * lmwb_transcoder_eval on other text reconstructs as well, and (min_recovered > 0; random fixture
 * models have no loss worth recovering) that spliced in it recovers the next-token loss its MLP
 * is worth. */
static void train_and_check(LmwbModel *m, const int32_t *ids, size_t n, const LmwbTcTrainOptions *o, const char *what,
                            double max_fvu, double min_recovered, const char *eval_text) {
  g_autoptr(GArray) fvu = g_array_new(FALSE, FALSE, sizeof(double));
  LmwbReporter rep = {.metric = keep_fvu, .user = fvu};
  LmwbTcTrainResult res;
  GError *err = NULL;
  g_assert_true(lmwb_tc_train(m, ids, n, o, &rep, &res, &err));
  g_assert_no_error(err);
  g_assert_cmpint(res.steps, ==, (o->tokens + o->batch - 1) / o->batch);
  g_assert_cmpuint(fvu->len, ==, res.steps);
  double first = (g_array_index(fvu, double, 0) + g_array_index(fvu, double, 1)) / 2;
  g_test_message("%s: FVU %.3f (first steps %.3f), L0 %.1f, dead %.3f, %.0f tokens/s (steps alone %.0f)", what, res.fvu,
                 first, res.l0, res.dead_fraction, res.tokens_per_s, res.step_tokens_per_s);
  g_assert_cmpfloat(res.fvu, <, max_fvu);
  g_assert_cmpfloat(res.fvu, <, 0.7 * first);
  int L = o->in.layer;
  LmwbTranscoderSet *set = lmwb_transcoder_set_new(m->cfg.n_layer);
  for (int l = 0; l < m->cfg.n_layer; l++) {
    if (l == L) {
      set->layers[l] = res.tc;
      continue;
    }
    set->layers[l] = lmwb_transcoder_new(m->cfg.d_model, 1, m->cfg.d_model, LMWB_TC_RELU, 0, &err);
    set->layers[l]->in = (LmwbSite){LMWB_SITE_LN2, l};
    set->layers[l]->out = (LmwbSite){LMWB_SITE_MLP_OUT, l};
  }
  res.tc = NULL;
  LmwbTcEvalOptions eo = {.context = o->context, .max_tokens = 4096};
  LmwbTcEval *e = lmwb_transcoder_eval(m, set, eval_text, &eo, NULL, &err);
  g_assert_no_error(err);
  const LmwbTcLayerEval *le = &e->layers[L];
  g_test_message("%s: on other text FVU %.3f, L0 %.1f; CE clean %.4f, spliced %.4f, ablated %.4f: %.1f%% recovered",
                 what, le->fvu, le->l0, e->ce_clean, le->ce_spliced, le->ce_ablated, 100 * le->ce_recovered);
  g_assert_cmpfloat(le->fvu, <, 1.5 * max_fvu);
  if (min_recovered > 0) g_assert_cmpfloat(le->ce_recovered, >, min_recovered);
  lmwb_tc_eval_free(e);
  lmwb_transcoder_set_free(set);
  lmwb_tc_train_result_clear(&res);
}

static void test_learns_fixtures(void) {
  /* random MLPs: GELU ones are nearly linear in their input, a gated one is a quadratic form,
   * both harder for a sparse dictionary than a trained model's MLP */
  const char *names[3] = {"gpt2", "llama_gqa", "neox"};
  const double max_fvu[3] = {0.3, 0.68, 0.3};
  g_autofree char *text = fixture_text();
  for (int q = 0; q < 3; q++) {
    LmwbModel *m = fixture(names[q]);
    size_t n = 0;
    g_autofree int32_t *ids = fixture_ids(m, &n);
    /* the first layer of one, the last of the others */
    int L = q == 0 ? 0 : m->cfg.n_layer - 1;
    LmwbTcTrainOptions o;
    base_options(&o, L);
    g_autofree char *what = g_strdup_printf("%s layer %d", names[q], L);
    train_and_check(m, ids, n, &o, what, max_fvu[q], 0, text);
    lmwb_model_unref(m);
  }
}

/* Every activation, and a plain SAE on the residual stream. */
static void test_learns_variants(void) {
  LmwbModel *m = fixture("gpt2");
  size_t n = 0;
  g_autofree int32_t *ids = fixture_ids(m, &n);
  g_autofree char *text = fixture_text();
  LmwbTcTrainOptions o;
  base_options(&o, 1);
  o.act = LMWB_TC_TOPK, o.k = 16, o.sparsity = 0;
  train_and_check(m, ids, n, &o, "gpt2 layer 1, TopK 16", 0.45, 0, text);
  base_options(&o, 1);
  o.act = LMWB_TC_JUMPRELU, o.sparsity = 0.05;
  train_and_check(m, ids, n, &o, "gpt2 layer 1, JumpReLU", 0.45, 0, text);
  /* the SAE: FVU falls; its cfg says apply_b_dec_to_input */
  base_options(&o, 0);
  o.in = o.out = (LmwbSite){LMWB_SITE_RESID_POST, 0};
  LmwbTcTrainResult res;
  GError *err = NULL;
  g_assert_true(lmwb_tc_train(m, ids, n, &o, NULL, &res, &err));
  g_assert_no_error(err);
  g_test_message("gpt2 SAE at blocks.0.hook_resid_post: FVU %.3f, L0 %.1f", res.fvu, res.l0);
  g_assert_cmpfloat(res.fvu, <, 0.35);
  g_assert_true(res.tc->apply_b_dec_to_input);
  g_assert_cmpint(res.tc->in.kind, ==, LMWB_SITE_RESID_POST);
  g_assert_cmpint(res.tc->out.kind, ==, LMWB_SITE_RESID_POST);
  lmwb_tc_train_result_clear(&res);
  lmwb_model_unref(m);
}

/* ---- checkpoints, resume, cancel ---------------------------------------------------------------------- */

static void rm_rf(const char *dir) {
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d) {
    const char *name;
    while ((name = g_dir_read_name(d))) {
      g_autofree char *p = g_build_filename(dir, name, NULL);
      if (g_file_test(p, G_FILE_TEST_IS_DIR)) rm_rf(p);
      else g_unlink(p);
    }
    g_dir_close(d);
  }
  g_rmdir(dir);
}

static void same_weights(const LmwbTranscoder *a, const LmwbTranscoder *b, const char *what) {
  size_t ds = a->d_sae;
  gboolean same = !memcmp(a->W_enc, b->W_enc, sizeof(float) * ds * a->d_in) &&
                  !memcmp(a->b_enc, b->b_enc, sizeof(float) * ds) &&
                  !memcmp(a->W_dec, b->W_dec, sizeof(float) * ds * a->d_out) &&
                  !memcmp(a->b_dec, b->b_dec, sizeof(float) * a->d_out) &&
                  (!a->threshold || !memcmp(a->threshold, b->threshold, sizeof(float) * ds));
  if (!same) g_error("%s: the weights differ", what);
}

/* A run stopped after some steps (a checkpoint mid-fill, resampling before and after) and resumed
 * ends with the same bits as an uninterrupted one. */
static void test_resume_exact(void) {
  LmwbModel *m = fixture("gpt2");
  size_t n = 0;
  g_autofree int32_t *ids = fixture_ids(m, &n);
  g_autofree char *tmp = g_dir_make_tmp("lmwb-tctrain-XXXXXX", NULL);
  const LmwbTcActivation acts[3] = {LMWB_TC_RELU, LMWB_TC_TOPK, LMWB_TC_JUMPRELU};
  for (int a = 0; a < 3; a++) {
    LmwbTcTrainOptions o;
    base_options(&o, 1);
    o.act = acts[a];
    o.k = acts[a] == LMWB_TC_TOPK ? 6 : 0;
    o.sparsity = acts[a] == LMWB_TC_TOPK ? 0 : o.sparsity;
    o.tokens = 256 * 30;
    o.dead_window = 256 * 4; /* resampling every 4 steps until step 21 (TopK too; and its AuxK) */
    o.resample_every = o.dead_window;
    o.resample_until = 0.7;
    LmwbTcTrainResult full, cut;
    GError *err = NULL;
    g_assert_true(lmwb_tc_train(m, ids, n, &o, NULL, &full, &err));
    g_assert_no_error(err);
    g_assert_cmpint(full.resampled, >, 0);
    g_autofree char *ck = g_build_filename(tmp, lmwb_tc_activation_name(acts[a]), NULL);
    o.checkpoint_dir = ck;
    o.checkpoint_every = 4;
    o.max_steps_this_run = 11; /* stops mid-fill (2 batches a fill), after a checkpoint at step 8 */
    g_assert_false(lmwb_tc_train(m, ids, n, &o, NULL, &cut, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
    g_clear_error(&err);
    /* a fresh run into a folder with a checkpoint must be asked to resume */
    o.max_steps_this_run = 0;
    g_assert_false(lmwb_tc_train(m, ids, n, &o, NULL, &cut, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    g_clear_error(&err);
    /* resumed twice */
    o.resume = TRUE;
    o.max_steps_this_run = 6;
    g_assert_false(lmwb_tc_train(m, ids, n, &o, NULL, &cut, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
    g_clear_error(&err);
    o.max_steps_this_run = 0;
    g_assert_true(lmwb_tc_train(m, ids, n, &o, NULL, &cut, &err));
    g_assert_no_error(err);
    g_assert_cmpint(cut.steps, ==, full.steps);
    g_assert_cmpint(cut.resampled, ==, full.resampled);
    g_assert_cmpfloat(cut.fvu, ==, full.fvu);
    same_weights(full.tc, cut.tc, lmwb_tc_activation_name(acts[a]));
    /* a resume with other settings is refused, naming the setting */
    o.lr *= 2;
    LmwbTcTrainOptions o2 = o;
    o2.max_steps_this_run = 1;
    g_autofree char *ck2 = g_strconcat(ck, "-2", NULL);
    o2.checkpoint_dir = ck2;
    o2.resume = FALSE;
    g_assert_false(lmwb_tc_train(m, ids, n, &o2, NULL, &cut, &err));
    g_clear_error(&err);
    o2.lr /= 2;
    o2.resume = TRUE;
    o2.max_steps_this_run = 0;
    g_assert_false(lmwb_tc_train(m, ids, n, &o2, NULL, &cut, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    g_assert_nonnull(strstr(err->message, "lr="));
    g_clear_error(&err);
    lmwb_tc_train_result_clear(&full);
    lmwb_tc_train_result_clear(&cut);
  }
  rm_rf(tmp);
  lmwb_model_unref(m);
}

typedef struct {
  LmwbReporter rep;
  int cancel_at;          /* step whose metrics cancel, or 0 */
  guint delay_us;         /* or: a thread cancels after this delay */
  gint64 cancelled_at;    /* when cancel was asked */
} CancelRep;

static void cancel_at_step(LmwbReporter *r, const char *series, double x, double y) {
  (void)y;
  CancelRep *c = (CancelRep *)r;
  if (!strcmp(series, "lr") && x == c->cancel_at) {
    c->cancelled_at = g_get_monotonic_time();
    lmwb_reporter_cancel(r);
  }
}

static gpointer cancel_later(gpointer data) {
  CancelRep *c = data;
  g_usleep(c->delay_us);
  c->cancelled_at = g_get_monotonic_time();
  lmwb_reporter_cancel(&c->rep);
  return NULL;
}

/* Cancel at any moment (during a fill's forwards, between steps, right after a checkpoint): the
 * call returns within a second with a checkpoint, and resuming gives the uninterrupted weights. */
static void test_cancel_then_resume(void) {
  LmwbModel *m = fixture("gpt2");
  size_t n = 0;
  g_autofree int32_t *ids = fixture_ids(m, &n);
  g_autofree char *tmp = g_dir_make_tmp("lmwb-tctrain-XXXXXX", NULL);
  LmwbTcTrainOptions o;
  base_options(&o, 0);
  o.tokens = 256 * 40;
  o.buffer = 256 * 4;
  LmwbTcTrainResult full, cut;
  GError *err = NULL;
  g_assert_true(lmwb_tc_train(m, ids, n, &o, NULL, &full, &err));
  const int at_step[] = {4, 9, 0, 0, 0};
  const guint delays_us[] = {0, 0, 2000, 15000, 40000};
  int cancelled = 0;
  for (guint k = 0; k < G_N_ELEMENTS(at_step); k++) {
    g_autofree char *name = g_strdup_printf("c%u", k);
    g_autofree char *ck = g_build_filename(tmp, name, NULL);
    o.checkpoint_dir = ck;
    o.checkpoint_every = 9;
    o.resume = FALSE;
    CancelRep c = {.cancel_at = at_step[k], .delay_us = delays_us[k]};
    if (at_step[k]) c.rep.metric = cancel_at_step;
    GThread *th = delays_us[k] ? g_thread_new("cancel", cancel_later, &c) : NULL;
    gboolean finished = lmwb_tc_train(m, ids, n, &o, &c.rep, &cut, &err);
    gint64 returned = g_get_monotonic_time();
    if (th) g_thread_join(th);
    if (finished) {
      lmwb_tc_train_result_clear(&cut); /* faster than the delay */
      continue;
    }
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
    g_clear_error(&err);
    g_assert_cmpint(returned - c.cancelled_at, <, 1000000);
    cancelled++;
    if (at_step[k]) {
      g_autofree char *file = g_build_filename(ck, "state.safetensors", NULL);
      LmwbSafetensors *st = lmwb_safetensors_open(file, &err);
      g_assert_no_error(err);
      char want[16];
      g_snprintf(want, sizeof want, "%d", at_step[k]);
      g_assert_cmpstr(lmwb_safetensors_metadata(st, "step"), ==, want);
      lmwb_safetensors_close(st);
    }
    o.resume = TRUE;
    g_assert_true(lmwb_tc_train(m, ids, n, &o, NULL, &cut, &err));
    g_assert_no_error(err);
    same_weights(full.tc, cut.tc, name);
    lmwb_tc_train_result_clear(&cut);
  }
  g_assert_cmpint(cancelled, >=, 3);
  lmwb_tc_train_result_clear(&full);
  rm_rf(tmp);
  lmwb_model_unref(m);
}

/* Cancel while a long fill is read through the model returns within a second. */
static void test_cancel_is_prompt(void) {
  LmwbModel *m = fixture("gpt2");
  size_t n = 0;
  g_autofree int32_t *ids = fixture_ids(m, &n);
  LmwbTcTrainOptions o;
  base_options(&o, 1);
  o.context = 32;
  o.batch = 4096;
  o.buffer = 1 << 20; /* a fill of a million tokens: many seconds of forwards */
  o.tokens = 1 << 22;
  CancelRep c = {.delay_us = 300000};
  GThread *th = g_thread_new("cancel", cancel_later, &c);
  LmwbTcTrainResult res;
  GError *err = NULL;
  g_assert_false(lmwb_tc_train(m, ids, n, &o, &c.rep, &res, &err));
  gint64 returned = g_get_monotonic_time();
  g_thread_join(th);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
  g_clear_error(&err);
  g_test_message("returned %.3f s after the cancel", (returned - c.cancelled_at) / 1e6);
  g_assert_cmpint(returned - c.cancelled_at, <, 1000000);
  lmwb_model_unref(m);
}

/* ---- bad options ------------------------------------------------------------------------------------- */

static void expect_bad(LmwbModel *m, const int32_t *ids, size_t n, const LmwbTcTrainOptions *o, const char *needle) {
  LmwbTcTrainResult res;
  GError *err = NULL;
  if (lmwb_tc_train(m, ids, n, o, NULL, &res, &err)) g_error("accepted; expected an error with \"%s\"", needle);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr(err->message, needle)) g_error("message \"%s\" lacks \"%s\"", err->message, needle);
  g_clear_error(&err);
}

static void test_bad_options(void) {
  LmwbModel *m = fixture("gpt2");
  size_t n = 0;
  g_autofree int32_t *ids = fixture_ids(m, &n);
  g_autofree char *tmp = g_dir_make_tmp("lmwb-tctrain-XXXXXX", NULL);
  g_autofree char *ck = g_build_filename(tmp, "ck", NULL);
  LmwbTcTrainOptions o;
#define BAD(stmt, needle) do { base_options(&o, 1); o.checkpoint_dir = ck; stmt; expect_bad(m, ids, n, &o, needle); } while (0)
  BAD(o.in.layer = o.out.layer = 2, "does not exist in this 2-layer");
  BAD(o.in.layer = o.out.layer = -1, "does not exist");
  BAD((o.in = (LmwbSite){LMWB_SITE_PATTERN, 0}), "attention patterns");
  BAD((o.act = LMWB_TC_TOPK, o.k = 4), "0 with TopK");
  BAD((o.act = LMWB_TC_TOPK, o.k = 0, o.sparsity = 0), "k 0 must be in");
  BAD((o.act = LMWB_TC_TOPK, o.k = 257, o.sparsity = 0), "k 257 must be in 1..256");
  BAD(o.sparsity = NAN, "sparsity coefficient");
  BAD(o.sparsity = -1, "sparsity coefficient");
  BAD(o.tokens = 0, "number of training tokens");
  BAD(o.context = 33, "context 33 must be in 2..32");
  BAD(o.buffer = 100, "must hold at least one batch");
  BAD(o.d_sae = -3, "number of features");
  BAD(o.lr = -1, "lr");
  BAD(o.resample_until = 2, "resample_until");
  BAD((o.checkpoint_dir = NULL, o.resume = TRUE), "resume needs a checkpoint folder");
  base_options(&o, 1);
  expect_bad(m, ids, 10, &o, "fewer than one window of 16");
  expect_bad(m, ids, 0, &o, "fewer than one window");
  /* targets that never vary: nothing to learn */
  {
    float x[8 * 4], y[8 * 4];
    for (int i = 0; i < 32; i++) x[i] = (float)i, y[i] = 1.5f;
    LmwbTcTrainer *t = trainer(4, 8, 4, FALSE, LMWB_TC_RELU, 0, 0.1, 0);
    GError *err = NULL;
    g_assert_false(lmwb_tc_trainer_init(t, x, y, 8, 1, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    g_assert_nonnull(strstr(err->message, "targets do not vary"));
    g_clear_error(&err);
    lmwb_tc_trainer_free(t);
  }
  /* nothing was written by any of them */
  g_assert_false(g_file_test(ck, G_FILE_TEST_EXISTS));
#undef BAD
  rm_rf(tmp);
  lmwb_model_unref(m);
}

/* ---- the built-in model ------------------------------------------------------------------------------- */

static void test_learns_builtin(void) {
  LmwbModel *m = load_model("data/models/tiny-world");
  if (!m) {
    g_test_skip("data/models/tiny-world is absent");
    return;
  }
  const char *shared = g_getenv("LMWB_SHARED");
  g_autofree char *brown = g_build_filename(shared ? shared : "../shared", "data", "brown", "brown.txt", NULL);
  g_autofree char *text = NULL;
  gsize len = 0;
  if (!g_file_get_contents(brown, &text, &len, NULL)) {
    g_autofree char *fx = fixture_text();
    text = g_steal_pointer(&fx);
    len = strlen(text);
  }
  len = MIN(len, (gsize)400000);
  while (len > 0 && (text[len] & 0xC0) == 0x80) len--;
  text[len] = 0;
  size_t n = 0;
  GError *err = NULL;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, len, FALSE, &n, &err);
  g_assert_no_error(err);
  LmwbTcTrainOptions o;
  lmwb_tc_train_options_init(&o, 1);
  o.d_sae = 1024;
  o.sparsity = 0.02;
  o.tokens = 1024 * 60;
  o.batch = 1024;
  o.context = 64;
  o.lr = 1e-3;
  o.seed = 1;
  char *eval = text + len * 9 / 10;
  while ((*eval & 0xC0) == 0x80) eval++;
  train_and_check(m, ids, n * 9 / 10, &o, "tiny-world layer 1", 0.6, 0.3, eval);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/transcoder-train/gradient", test_gradient);
  g_test_add_func("/transcoder-train/reference", test_reference);
  g_test_add_func("/transcoder-train/paths-agree", test_paths_agree);
  g_test_add_func("/transcoder-train/init-norms-export", test_init_norms_export);
  g_test_add_func("/transcoder-train/topk-exact", test_topk_exact);
  g_test_add_func("/transcoder-train/resample", test_resample);
  g_test_add_func("/transcoder-train/learns-fixtures", test_learns_fixtures);
  g_test_add_func("/transcoder-train/learns-variants", test_learns_variants);
  g_test_add_func("/transcoder-train/resume-exact", test_resume_exact);
  g_test_add_func("/transcoder-train/cancel-then-resume", test_cancel_then_resume);
  g_test_add_func("/transcoder-train/cancel-is-prompt", test_cancel_is_prompt);
  g_test_add_func("/transcoder-train/bad-options", test_bad_options);
  g_test_add_func("/transcoder-train/learns-builtin", test_learns_builtin);
  return g_test_run();
}
