/* Transcoder and SAE training: the optimisation on activations the caller holds (one step:
 * encode, loss, backward, Adam, decoder renormalisation), initialisation, resampling and export.
 * Contract: transcoder_train.h. The run over a model's text is transcoder_train_run.c. */
#include "circuits/transcoder_train_internal.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include "app/core/rng.h"
#include "app/core/rows.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

#define OMP_MIN_WORK 32768 /* below this many floats of work a loop runs on one thread */

/* ---- life ---------------------------------------------------------------------------------------- */

static void free_scratch(LmwbTcTrainer *t) {
  g_clear_pointer(&t->xn, g_free); g_clear_pointer(&t->yn, g_free); g_clear_pointer(&t->pre, g_free);
  g_clear_pointer(&t->f, g_free); g_clear_pointer(&t->out, g_free); g_clear_pointer(&t->dout, g_free);
  g_clear_pointer(&t->row_err, g_free); g_clear_pointer(&t->row_s, g_free);
  g_clear_pointer(&t->cnt_act, g_free); g_clear_pointer(&t->cnt_near, g_free);
  g_clear_pointer(&t->cnt_pat, g_free); g_clear_pointer(&t->row_ptr, g_free);
  g_clear_pointer(&t->aux_j, g_free); g_clear_pointer(&t->aux_ent, g_free); g_clear_pointer(&t->aux_a, g_free);
  g_clear_pointer(&t->aux_dr, g_free); g_clear_pointer(&t->aux_cnt, g_free);
  t->cap = 0;
}

static void free_entries(LmwbTcTrainer *t) {
  g_clear_pointer(&t->ent_j, g_free); g_clear_pointer(&t->ent_i, g_free); g_clear_pointer(&t->col_ent, g_free);
  g_clear_pointer(&t->ent_f, g_free); g_clear_pointer(&t->ent_df, g_free); g_clear_pointer(&t->ent_dpre, g_free);
  g_clear_pointer(&t->ent_near, g_free);
  t->ent_cap = 0;
}

LmwbTcTrainer *lmwb_tc_trainer_new(int d_in, int d_sae, int d_out, gboolean sae, const LmwbTcTrainOptions *o,
                                   GError **error) {
  if (d_in < 1 || d_sae < 1 || d_out < 1 || d_sae > (1 << 24) || d_in > (1 << 20) || d_out > (1 << 20) ||
      (sae && d_in != d_out)) {
    lmwb_input_error(error, "transcoder training: sizes d_in %d, d_sae %d, d_out %d are not valid", d_in, d_sae, d_out);
    return NULL;
  }
  if (o->act == LMWB_TC_TOPK && (o->k < 1 || o->k > MIN(d_sae, LMWB_TC_MAX_K))) {
    lmwb_input_error(error, "transcoder training: k %d must be in 1..%d (the number of features, at most %d)", o->k,
                     MIN(d_sae, LMWB_TC_MAX_K), LMWB_TC_MAX_K);
    return NULL;
  }
  if (!isfinite(o->sparsity) || o->sparsity < 0 || (o->act == LMWB_TC_TOPK && o->sparsity != 0)) {
    lmwb_input_error(error, "transcoder training: the sparsity coefficient %g must be finite and >= 0 (0 for TopK)",
                     o->sparsity);
    return NULL;
  }
  double b1 = o->beta1 > 0 ? o->beta1 : 0.9, b2 = o->beta2 > 0 ? o->beta2 : 0.999, eps = o->eps > 0 ? o->eps : 1e-8;
  if (b1 >= 1 || b2 >= 1 || !isfinite(eps) || eps >= 1) {
    lmwb_input_error(error, "transcoder training: Adam's betas must be in [0, 1) and eps in (0, 1)");
    return NULL;
  }
  size_t ds = (size_t)d_sae;
  size_t n = ds * d_in + ds + ds * d_out + d_out + (o->act == LMWB_TC_JUMPRELU ? ds : 0);
  /* parameters, gradient, two Adam moments, the decay mask; per-feature arrays */
  if (!lmwb_memory_check(n * 17 + ds * 40 + (size_t)d_in * 4, "the transcoder trainer's weights and optimiser", error))
    return NULL;
  LmwbTcTrainer *t = g_new0(LmwbTcTrainer, 1);
  t->d_in = d_in, t->d_sae = d_sae, t->d_out = d_out, t->act = o->act, t->k = o->act == LMWB_TC_TOPK ? o->k : 0;
  t->sae = sae;
  t->sparsity = o->sparsity;
  t->jump_eps = (float)(LMWB_TC_JUMP_EPS / sqrt((double)d_out));
  t->sparse_below = o->sparse_below == 0 ? LMWB_TC_SPARSE_DENSITY : o->sparse_below;
  t->aux_coef = o->act != LMWB_TC_TOPK || o->aux_coef < 0 ? 0 : o->aux_coef == 0 ? LMWB_TC_AUXK_COEF : o->aux_coef;
  t->aux_k = MIN(d_sae, o->aux_k > 0 ? o->aux_k : MAX(1, d_out / 2));
  t->dead_window = MAX(0, o->dead_window);
  t->n_params = n;
  t->p = g_try_new0(float, n);
  t->g = g_try_new0(float, n);
  t->adam = lmwb_adamw_new(n, (float)b1, (float)b2, (float)eps, 0.f, NULL);
  t->mu_x = g_try_new0(float, d_in);
  t->last_active = g_try_new0(int64_t, ds);
  t->dnorm = g_try_new0(float, ds);
  t->theta = g_try_new0(float, ds);
  t->fire = g_try_new0(int, ds);
  t->col_ptr = g_try_new0(int, ds + 1);
  t->col_sum = g_try_new0(double, ds);
  t->dead = g_try_new0(guint8, ds);
  t->aux_ptr = g_try_new0(int, ds + 1);
  if (!t->dead || !t->aux_ptr || !t->p || !t->g || !t->adam || !t->mu_x || !t->last_active || !t->dnorm || !t->theta || !t->fire || !t->col_ptr ||
      !t->col_sum) {
    lmwb_tc_trainer_free(t);
    lmwb_input_error(error, "transcoder training: out of memory for %zu parameters", n);
    return NULL;
  }
  float *q = t->p, *h = t->g;
#define VIEW(field, gfield, count) (t->field = q, t->gfield = h, q += (count), h += (count))
  VIEW(W_enc, gW_enc, ds * d_in);
  VIEW(b_enc, gb_enc, ds);
  VIEW(W_dec, gW_dec, ds * d_out);
  VIEW(b_dec, gb_dec, (size_t)d_out);
  if (o->act == LMWB_TC_JUMPRELU) VIEW(log_theta, glog_theta, ds);
#undef VIEW
  return t;
}

void lmwb_tc_trainer_free(LmwbTcTrainer *t) {
  if (!t) return;
  free_scratch(t);
  free_entries(t);
  g_free(t->p), g_free(t->g), g_free(t->mu_x), g_free(t->last_active), g_free(t->dnorm), g_free(t->theta);
  g_free(t->fire), g_free(t->col_ptr), g_free(t->col_sum), g_free(t->dead), g_free(t->aux_ptr);
  lmwb_adamw_free(t->adam);
  g_free(t);
}

gboolean lmwb_tc_trainer_reserve(LmwbTcTrainer *t, int n, GError **error) {
  if (n <= t->cap) return TRUE;
  size_t rows = (size_t)n, ds = (size_t)t->d_sae;
  uint64_t bytes = rows * (ds * 2 + (size_t)t->d_in + (size_t)t->d_out * 3) * sizeof(float) + rows * 40;
  size_t aux = t->aux_coef > 0 ? rows * (size_t)t->aux_k : 0;
  bytes += aux * 12 + (t->aux_coef > 0 ? rows * ((size_t)t->d_out * 4 + 4) : 0);
  if (!lmwb_memory_check(bytes, "the transcoder trainer's batch", error)) return FALSE;
  free_scratch(t);
  t->xn = g_try_new(float, rows * t->d_in);
  t->yn = g_try_new(float, rows * t->d_out);
  t->pre = g_try_new(float, rows * ds);
  t->f = g_try_new(float, rows * ds);
  t->out = g_try_new(float, rows * t->d_out);
  t->dout = g_try_new(float, rows * t->d_out);
  t->row_err = g_try_new(double, rows);
  t->row_s = g_try_new(double, rows);
  t->cnt_act = g_try_new(int, rows);
  t->cnt_near = g_try_new(int, rows);
  t->cnt_pat = g_try_new(int, rows);
  t->row_ptr = g_try_new(int, rows + 1);
  if (aux) {
    t->aux_j = g_try_new(int32_t, aux), t->aux_ent = g_try_new(int32_t, aux), t->aux_a = g_try_new(float, aux);
    t->aux_dr = g_try_new(float, rows * t->d_out), t->aux_cnt = g_try_new(int, rows);
    if (!t->aux_j || !t->aux_ent || !t->aux_a || !t->aux_dr || !t->aux_cnt) {
      free_scratch(t);
      lmwb_input_error(error, "transcoder training: out of memory for a batch of %d rows", n);
      return FALSE;
    }
  }
  if (!t->xn || !t->yn || !t->pre || !t->f || !t->out || !t->dout || !t->row_err || !t->row_s || !t->cnt_act ||
      !t->cnt_near || !t->cnt_pat || !t->row_ptr) {
    free_scratch(t);
    lmwb_input_error(error, "transcoder training: out of memory for a batch of %d rows", n);
    return FALSE;
  }
  t->cap = n;
  return TRUE;
}

/* Room for `count` sparse entries (grows; FALSE when memory runs out). */
static gboolean reserve_entries(LmwbTcTrainer *t, size_t count) {
  if (count <= t->ent_cap) return TRUE;
  size_t cap = MAX(count, t->ent_cap + t->ent_cap / 2);
  free_entries(t);
  t->ent_j = g_try_new(int32_t, cap), t->ent_i = g_try_new(int32_t, cap), t->col_ent = g_try_new(int32_t, cap);
  t->ent_f = g_try_new(float, cap), t->ent_df = g_try_new(float, cap), t->ent_dpre = g_try_new(float, cap);
  t->ent_near = g_try_new(guint8, cap);
  if (!t->ent_j || !t->ent_i || !t->col_ent || !t->ent_f || !t->ent_df || !t->ent_dpre || !t->ent_near) {
    free_entries(t);
    return FALSE;
  }
  t->ent_cap = cap;
  return TRUE;
}

float *lmwb_tc_trainer_params(LmwbTcTrainer *t, size_t *n) {
  if (n) *n = t->n_params;
  return t->p;
}

int64_t lmwb_tc_trainer_tokens_seen(const LmwbTcTrainer *t) { return t->seen; }

/* ---- small row helpers ------------------------------------------------------------------------------ */

static double dot(const float *a, const float *b, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

static void axpy(float *y, float a, const float *x, int n) {
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* A random unit vector (normal entries from the generator, then normalised). */
static void random_unit(float *v, int n, guint64 *rng) {
  double s = 0;
  for (int i = 0; i < n; i += 2) {
    double u1 = lmwb_rng_uniform(rng), u2 = lmwb_rng_uniform(rng), r = sqrt(-2 * log(u1));
    v[i] = (float)(r * cos(2 * G_PI * u2));
    if (i + 1 < n) v[i + 1] = (float)(r * sin(2 * G_PI * u2));
  }
  for (int i = 0; i < n; i++) s += (double)v[i] * v[i];
  float inv = (float)(1 / sqrt(s));
  for (int i = 0; i < n; i++) v[i] *= inv;
}

/* Column sums of a [n, cols] block in double, each column summed over rows in order (deterministic
 * whatever the thread count). */
static void column_sums(const float *a, int n, int cols, double *out) {
  int nb = (cols + 63) / 64;
#pragma omp parallel for schedule(static) if ((size_t)n * cols > OMP_MIN_WORK)
  for (int b = 0; b < nb; b++) {
    int j0 = b * 64, j1 = MIN(cols, j0 + 64);
    double acc[64] = {0};
    for (int i = 0; i < n; i++) {
      const float *r = a + (size_t)i * cols;
      for (int j = j0; j < j1; j++) acc[j - j0] += r[j];
    }
    for (int j = j0; j < j1; j++) out[j] = acc[j - j0];
  }
}

static void normalise(LmwbTcTrainer *t, const float *x, const float *y, int n);
static gboolean forward(LmwbTcTrainer *t, int n, double *l0);

/* ---- initialisation ---------------------------------------------------------------------------------- */

/* rho_x, rho_y and the mean normalised input from a sample. */
static gboolean normalisers(LmwbTcTrainer *t, const float *x, const float *y, int n, double *mean_y, GError **error) {
  if (n < 2) {
    lmwb_input_error(error, "transcoder training: the initial sample has %d rows (at least 2 are needed)", n);
    return FALSE;
  }
  g_autofree double *mx = g_new0(double, t->d_in);
  double sq_y = 0, sq_x = 0;
  for (int j = 0; j < t->d_out; j++) mean_y[j] = 0;
  for (int i = 0; i < n; i++) {
    const float *yr = y + (size_t)i * t->d_out, *xr = x + (size_t)i * t->d_in;
    for (int j = 0; j < t->d_out; j++) mean_y[j] += yr[j], sq_y += (double)yr[j] * yr[j];
    for (int j = 0; j < t->d_in; j++) mx[j] += xr[j], sq_x += (double)xr[j] * xr[j];
  }
  double m2 = 0;
  for (int j = 0; j < t->d_out; j++) mean_y[j] /= n, m2 += mean_y[j] * mean_y[j];
  double var_y = sq_y / n - m2;
  if (!(var_y > 1e-30) || !isfinite(var_y) || !(sq_x > 0) || !isfinite(sq_x)) {
    lmwb_input_error(error, "transcoder training: the %s do not vary over %d tokens (or are not finite): nothing to learn",
                     var_y > 1e-30 ? "inputs" : "targets", n);
    return FALSE;
  }
  t->rho_y = sqrt(var_y);
  t->rho_x = t->sae ? t->rho_y : sqrt(sq_x / n);
  for (int j = 0; j < t->d_in; j++) t->mu_x[j] = (float)(mx[j] / n / t->rho_x);
  return TRUE;
}

static void reset_state(LmwbTcTrainer *t) {
  memset(t->adam->m, 0, t->n_params * sizeof(float));
  memset(t->adam->v, 0, t->n_params * sizeof(float));
  t->adam->step = 0;
  memset(t->last_active, 0, (size_t)t->d_sae * sizeof(int64_t));
  t->seen = t->resampled = 0;
  t->initialised = TRUE;
}

gboolean lmwb_tc_trainer_init(LmwbTcTrainer *t, const float *x, const float *y, int n, guint64 seed, GError **error) {
  g_autofree double *mean_y = g_new(double, t->d_out);
  if (!normalisers(t, x, y, n, mean_y, error)) return FALSE;
  t->rng = seed * 0x9E3779B97F4A7C15ull + 0x5EED;
  int ds = t->d_sae;
  for (int j = 0; j < ds; j++) random_unit(t->W_dec + (size_t)j * t->d_out, t->d_out, &t->rng);
  if (t->d_in == t->d_out) memcpy(t->W_enc, t->W_dec, sizeof(float) * (size_t)ds * t->d_in);
  else
    for (int j = 0; j < ds; j++) random_unit(t->W_enc + (size_t)j * t->d_in, t->d_in, &t->rng);
  /* each feature reads the centred input: b_enc = -mean(x~) . w_enc (an SAE's input is centred by
   * b_dec already); otherwise the mean input, shared by every token, decides which features fire */
  for (int j = 0; j < ds; j++) t->b_enc[j] = t->sae ? 0.f : (float)-dot(t->mu_x, t->W_enc + (size_t)j * t->d_in, t->d_in);
  for (int j = 0; j < t->d_out; j++) t->b_dec[j] = (float)(mean_y[j] / t->rho_y);
  if (t->log_theta)
    for (int j = 0; j < ds; j++) t->log_theta[j] = logf(t->jump_eps);
  /* the encoder's scale: the first reconstruction's mean squared norm about b_dec is
   * LMWB_TC_INIT_SHARE of the targets' variance (1 in these units); one scale for all features
   * keeps TopK's ranking */
  int m = MIN(n, 4096);
  if (!lmwb_tc_trainer_reserve(t, m, error)) return FALSE;
  double l0, sq = 0;
  normalise(t, x, y, m);
  forward(t, m, &l0);
  for (size_t i = 0; i < (size_t)m * t->d_out; i++) {
    double v = t->out[i] - t->b_dec[i % t->d_out];
    sq += v * v;
  }
  double c = sq > 0 ? sqrt(LMWB_TC_INIT_SHARE / (sq / m)) : 1.0;
  for (size_t i = 0; i < (size_t)ds * t->d_in; i++) t->W_enc[i] = (float)(t->W_enc[i] * c);
  for (int j = 0; j < ds; j++) t->b_enc[j] = (float)(t->b_enc[j] * c);
  reset_state(t);
  return TRUE;
}

gboolean lmwb_tc_trainer_init_from(LmwbTcTrainer *t, const LmwbTranscoder *tc, const float *x, const float *y, int n,
                                   GError **error) {
  if (tc->d_in != t->d_in || tc->d_sae != t->d_sae || tc->d_out != t->d_out || tc->act != t->act ||
      (t->act == LMWB_TC_TOPK && tc->k != t->k) || tc->W_skip || tc->apply_b_dec_to_input != t->sae) {
    lmwb_input_error(error, "transcoder training: the transcoder to continue (%d -> %d -> %d, %s) does not match the "
                     "trainer (%d -> %d -> %d, %s), or has a skip connection", tc->d_in, tc->d_sae, tc->d_out,
                     lmwb_tc_activation_name(tc->act), t->d_in, t->d_sae, t->d_out, lmwb_tc_activation_name(t->act));
    return FALSE;
  }
  g_autofree double *mean_y = g_new(double, t->d_out);
  if (!normalisers(t, x, y, n, mean_y, error)) return FALSE;
  t->rng = 0x5EED;
  const double rx = t->rho_x, ry = t->rho_y;
  for (int j = 0; j < t->d_sae; j++) {
    float *d = t->W_dec + (size_t)j * t->d_out;
    memcpy(d, tc->W_dec + (size_t)j * t->d_out, sizeof(float) * t->d_out);
    double s = sqrt(dot(d, d, t->d_out));
    /* TopK ranks features by their pre-activations: a per-feature scale would change the ranking */
    if (!(s > 0) || (t->act == LMWB_TC_TOPK && fabs(s - 1) > 1e-2)) {
      lmwb_input_error(error, "transcoder training: decoder row %d has norm %g (%s)", j, s,
                       t->act == LMWB_TC_TOPK ? "a TopK transcoder must have unit-norm rows" : "zero");
      return FALSE;
    }
    for (int c = 0; c < t->d_out; c++) d[c] = (float)(d[c] / s);
    for (int i = 0; i < t->d_in; i++) t->W_enc[(size_t)j * t->d_in + i] = (float)(tc->W_enc[(size_t)i * t->d_sae + j] * rx * s / ry);
    t->b_enc[j] = (float)(tc->b_enc[j] * s / ry);
    if (t->log_theta) t->log_theta[j] = (float)log(fmax(tc->threshold[j] * s / ry, 1e-12));
  }
  for (int c = 0; c < t->d_out; c++) t->b_dec[c] = (float)(tc->b_dec[c] / ry);
  reset_state(t);
  return TRUE;
}

LmwbTranscoder *lmwb_tc_trainer_export(const LmwbTcTrainer *t, GError **error) {
  LmwbTranscoder *tc = lmwb_transcoder_new(t->d_in, t->d_sae, t->d_out, t->act, t->k, error);
  if (!tc) return NULL;
  const double ry = t->rho_y, enc = t->rho_y / t->rho_x;
  for (int j = 0; j < t->d_sae; j++) {
    for (int i = 0; i < t->d_in; i++) tc->W_enc[(size_t)i * t->d_sae + j] = (float)(t->W_enc[(size_t)j * t->d_in + i] * enc);
    tc->b_enc[j] = (float)(t->b_enc[j] * ry);
    if (tc->threshold) tc->threshold[j] = (float)(exp(t->log_theta[j]) * ry);
  }
  memcpy(tc->W_dec, t->W_dec, sizeof(float) * (size_t)t->d_sae * t->d_out);
  for (int c = 0; c < t->d_out; c++) tc->b_dec[c] = (float)(t->b_dec[c] * ry);
  tc->apply_b_dec_to_input = t->sae;
  return tc;
}

/* ---- forward ------------------------------------------------------------------------------------------ */

/* Normalised rows of a batch: xn = x / rho_x (an SAE: y / rho_y - b~_dec), yn = y / rho_y. */
static void normalise(LmwbTcTrainer *t, const float *x, const float *y, int n) {
  const float ix = (float)(1 / t->rho_x), iy = (float)(1 / t->rho_y);
  size_t nx = (size_t)n * t->d_in, ny = (size_t)n * t->d_out;
  for (size_t i = 0; i < ny; i++) t->yn[i] = y[i] * iy;
  if (t->sae) {
    for (size_t i = 0; i < nx; i++) t->xn[i] = y[i] * iy - t->b_dec[i % t->d_in];
  } else {
    for (size_t i = 0; i < nx; i++) t->xn[i] = x[i] * ix;
  }
}

/* pre = xn W_enc^T + b_enc; f = act(pre); per-row counts of active (f > 0) and near-threshold
 * (JumpReLU) entries and the sparsity term; decides the path and lists the sparse entries: the
 * active and near ones (sparse path), or only the near ones (dense path). Then out = f W_dec +
 * b_dec. Returns whether the sparse path runs (it does not when its entries do not fit in memory). */
static gboolean forward(LmwbTcTrainer *t, int n, double *l0) {
  const int ds = t->d_sae, di = t->d_in, dout = t->d_out;
  for (int i = 0; i < n; i++) memcpy(t->pre + (size_t)i * ds, t->b_enc, sizeof(float) * ds);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ds, di, 1.f, t->xn, di, t->W_enc, di, 1.f, t->pre, ds);
  for (int j = 0; j < ds; j++) t->dnorm[j] = (float)sqrt(dot(t->W_dec + (size_t)j * dout, t->W_dec + (size_t)j * dout, dout));
  if (t->log_theta)
    for (int j = 0; j < ds; j++) t->theta[j] = expf(t->log_theta[j]);
  const float half = t->jump_eps / 2;
  /* pass 1: activation and counts */
#pragma omp parallel for schedule(static) if ((size_t)n * ds > OMP_MIN_WORK)
  for (int i = 0; i < n; i++) {
    const float *p = t->pre + (size_t)i * ds;
    float *f = t->f + (size_t)i * ds;
    int na = 0, nn = 0, np = 0;
    double s = 0;
    if (t->act == LMWB_TC_TOPK) {
      int32_t ids[t->k];
      float vals[t->k];
      lmwb_top_k(p, ds, t->k, ids, vals);
      memset(f, 0, sizeof(float) * ds);
      for (int q = 0; q < t->k; q++)
        if (vals[q] > 0.f) f[ids[q]] = vals[q], na++;
      np = na;
    } else if (t->act == LMWB_TC_JUMPRELU) {
      for (int j = 0; j < ds; j++) {
        gboolean on = p[j] > t->theta[j], near = fabsf(p[j] - t->theta[j]) < half;
        f[j] = on ? p[j] : 0.f;
        na += on, nn += near, np += on || near;
      }
      s = na;
    } else {
      for (int j = 0; j < ds; j++) {
        float v = p[j] > 0.f ? p[j] : 0.f;
        f[j] = v;
        if (v > 0.f) na++, s += (double)v * t->dnorm[j];
      }
      np = na;
    }
    t->cnt_act[i] = na, t->cnt_near[i] = nn, t->cnt_pat[i] = np;
    t->row_s[i] = s;
  }
  size_t total_act = 0, total_pat = 0, total_near = 0;
  for (int i = 0; i < n; i++) total_act += t->cnt_act[i], total_pat += t->cnt_pat[i], total_near += t->cnt_near[i];
  *l0 = (double)total_act / n;
  gboolean sparse = (t->sparse_below >= 1 || (double)total_act < t->sparse_below * (double)n * ds) && reserve_entries(t, total_pat);
  if (!sparse && total_near > 0 && !reserve_entries(t, total_near)) {
    /* no room even for the near-threshold list: drop it (the thresholds get no gradient this step) */
    total_near = 0;
    for (int i = 0; i < n; i++) t->cnt_near[i] = 0;
  }
  /* pass 2: the entries, row by row */
  int *cnt = sparse ? t->cnt_pat : t->cnt_near;
  t->row_ptr[0] = 0;
  for (int i = 0; i < n; i++) t->row_ptr[i + 1] = t->row_ptr[i] + cnt[i];
  if (sparse || total_near > 0) {
#pragma omp parallel for schedule(static) if ((size_t)n * ds > OMP_MIN_WORK)
    for (int i = 0; i < n; i++) {
      const float *p = t->pre + (size_t)i * ds, *f = t->f + (size_t)i * ds;
      int e = t->row_ptr[i];
      for (int j = 0; j < ds; j++) {
        gboolean near = t->log_theta && fabsf(p[j] - t->theta[j]) < half;
        if (sparse ? (f[j] > 0.f || near) : near) {
          t->ent_i[e] = i, t->ent_j[e] = j, t->ent_f[e] = f[j], t->ent_near[e] = (guint8)near;
          e++;
        }
      }
    }
  }
  /* decode */
  if (sparse) {
#pragma omp parallel for schedule(static) if ((size_t)t->row_ptr[n] * dout > OMP_MIN_WORK)
    for (int i = 0; i < n; i++) {
      float *o = t->out + (size_t)i * dout;
      memcpy(o, t->b_dec, sizeof(float) * dout);
      for (int e = t->row_ptr[i]; e < t->row_ptr[i + 1]; e++)
        if (t->ent_f[e] != 0.f) axpy(o, t->ent_f[e], t->W_dec + (size_t)t->ent_j[e] * dout, dout);
    }
  } else {
    for (int i = 0; i < n; i++) memcpy(t->out + (size_t)i * dout, t->b_dec, sizeof(float) * dout);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dout, ds, 1.f, t->f, ds, t->W_dec, dout, 1.f, t->out, dout);
  }
  return sparse;
}

/* Squared error per row; dout = 2 (out - yn) / n. Returns the mean squared error. */
static double errors(LmwbTcTrainer *t, int n, gboolean want_dout) {
  const int d = t->d_out;
  const float sc = 2.f / n;
#pragma omp parallel for schedule(static) if ((size_t)n * d > OMP_MIN_WORK)
  for (int i = 0; i < n; i++) {
    const float *o = t->out + (size_t)i * d, *y = t->yn + (size_t)i * d;
    float *g = t->dout + (size_t)i * d;
    double s = 0;
    for (int c = 0; c < d; c++) {
      float r = o[c] - y[c];
      s += (double)r * r;
      if (want_dout) g[c] = sc * r;
    }
    t->row_err[i] = s;
  }
  double sum = 0;
  for (int i = 0; i < n; i++) sum += t->row_err[i];
  return sum / n;
}

/* Samples are read in chunks of a fixed size, whatever the scratch holds, so that results do not
 * depend on the batches seen before (a resumed run must draw what an uninterrupted one draws). */
#define CHUNK 1024

void lmwb_tc_trainer_row_errors(LmwbTcTrainer *t, const float *x, const float *y, int n, double *err) {
  if (!lmwb_tc_trainer_reserve(t, CHUNK, NULL)) {
    for (int i = 0; i < n; i++) err[i] = NAN;
    return;
  }
  for (int r0 = 0; r0 < n; r0 += CHUNK) {
    int m = MIN(CHUNK, n - r0);
    double l0;
    normalise(t, x + (size_t)r0 * t->d_in, y + (size_t)r0 * t->d_out, m);
    forward(t, m, &l0);
    errors(t, m, FALSE);
    memcpy(err + r0, t->row_err, sizeof(double) * m);
  }
}

void lmwb_tc_trainer_measure(LmwbTcTrainer *t, const float *x, const float *y, int n, double *mse, double *fvu,
                             double *l0) {
  const int d = t->d_out;
  double err = 0, act = 0, sq = 0;
  g_autofree double *sum = g_new0(double, d), *cs = g_new(double, d);
  if (!lmwb_tc_trainer_reserve(t, CHUNK, NULL)) {
    *mse = *fvu = *l0 = NAN;
    return;
  }
  for (int r0 = 0; r0 < n; r0 += CHUNK) {
    int m = MIN(CHUNK, n - r0);
    double l;
    normalise(t, x + (size_t)r0 * t->d_in, y + (size_t)r0 * d, m);
    forward(t, m, &l);
    err += errors(t, m, FALSE) * m;
    act += l * m;
    column_sums(t->yn, m, d, cs);
    for (int c = 0; c < d; c++) sum[c] += cs[c];
    for (size_t i = 0; i < (size_t)m * d; i++) sq += (double)t->yn[i] * t->yn[i];
  }
  double m2 = 0;
  for (int c = 0; c < d; c++) m2 += sum[c] * sum[c] / n;
  *mse = err / n;
  *fvu = sq - m2 > 0 ? err / (sq - m2) : NAN;
  *l0 = act / n;
}

/* ---- backward ------------------------------------------------------------------------------------------ */

/* The feature-wise entries of the sparse path: col_ptr / col_ent (entry indices in row order). */
static void group_by_feature(LmwbTcTrainer *t, int n) {
  const int ds = t->d_sae;
  size_t ne = (size_t)t->row_ptr[n];
  memset(t->col_ptr, 0, sizeof(int) * (ds + 1));
  for (size_t e = 0; e < ne; e++) t->col_ptr[t->ent_j[e] + 1]++;
  for (int j = 0; j < ds; j++) t->col_ptr[j + 1] += t->col_ptr[j];
  g_autofree int *pos = g_memdup2(t->col_ptr, sizeof(int) * ds);
  for (size_t e = 0; e < ne; e++) t->col_ent[pos[t->ent_j[e]]++] = (int32_t)e;
}

static void backward(LmwbTcTrainer *t, int n, gboolean sparse, double lambda) {
  const int ds = t->d_sae, di = t->d_in, dout = t->d_out;
  const gboolean relu = t->act == LMWB_TC_RELU, jump = t->act == LMWB_TC_JUMPRELU;
  const float l1 = relu ? (float)(lambda / n) : 0.f;
  memset(t->g, 0, sizeof(float) * t->n_params);
  /* b_dec: the column sums of dout */
  g_autofree double *cs = g_new(double, dout);
  column_sums(t->dout, n, dout, cs);
  for (int c = 0; c < dout; c++) t->gb_dec[c] = (float)cs[c];
  const float inv_eps = 1.f / t->jump_eps;
  if (sparse) {
    size_t ne = (size_t)t->row_ptr[n];
#pragma omp parallel for schedule(static) if ((size_t)t->row_ptr[n] * dout > OMP_MIN_WORK)
    for (int i = 0; i < n; i++) {
      const float *g = t->dout + (size_t)i * dout;
      for (int e = t->row_ptr[i]; e < t->row_ptr[i + 1]; e++) {
        int j = t->ent_j[e];
        float df = (float)dot(g, t->W_dec + (size_t)j * dout, dout);
        t->ent_df[e] = df;
        t->ent_dpre[e] = t->ent_f[e] > 0.f ? df + l1 * t->dnorm[j] : 0.f;
      }
    }
    (void)ne;
    group_by_feature(t, n);
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)t->row_ptr[n] * (dout + di) > OMP_MIN_WORK)
    for (int j = 0; j < ds; j++) {
      float *gd = t->gW_dec + (size_t)j * dout, *ge = t->gW_enc + (size_t)j * di;
      double gb = 0, fs = 0, gth = 0;
      int fire = 0;
      for (int q = t->col_ptr[j]; q < t->col_ptr[j + 1]; q++) {
        int e = t->col_ent[q], i = t->ent_i[e];
        float fv = t->ent_f[e], dp = t->ent_dpre[e];
        if (fv > 0.f) {
          axpy(gd, fv, t->dout + (size_t)i * dout, dout);
          axpy(ge, dp, t->xn + (size_t)i * di, di);
          gb += dp, fs += fv, fire++;
        }
        if (jump && t->ent_near[e]) gth += -(double)t->theta[j] * inv_eps * t->ent_df[e] - lambda / n * inv_eps;
      }
      t->gb_enc[j] = (float)gb;
      t->fire[j] = fire;
      t->col_sum[j] = fs;
      if (jump) t->glog_theta[j] = (float)(t->theta[j] * gth);
    }
  } else {
    float *df = t->pre; /* the pre-activations are no longer needed */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ds, dout, 1.f, t->dout, dout, t->W_dec, dout, 0.f, df, ds);
    if (jump) {
      /* the near-threshold entries, in row order (deterministic) */
      g_autofree double *gth = g_new0(double, ds);
      for (int e = 0; e < t->row_ptr[n]; e++) {
        int j = t->ent_j[e];
        gth[j] += -(double)t->theta[j] * inv_eps * df[(size_t)t->ent_i[e] * ds + j] - lambda / n * inv_eps;
      }
      for (int j = 0; j < ds; j++) t->glog_theta[j] = (float)(t->theta[j] * gth[j]);
    }
#pragma omp parallel for schedule(static) if ((size_t)n * ds > OMP_MIN_WORK)
    for (int i = 0; i < n; i++) {
      float *d = df + (size_t)i * ds;
      const float *f = t->f + (size_t)i * ds;
      for (int j = 0; j < ds; j++) d[j] = f[j] > 0.f ? d[j] + l1 * t->dnorm[j] : 0.f;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ds, dout, n, 1.f, t->f, ds, t->dout, dout, 0.f, t->gW_dec, dout);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ds, di, n, 1.f, df, ds, t->xn, di, 0.f, t->gW_enc, di);
    g_autofree double *gb = g_new(double, ds);
    column_sums(df, n, ds, gb);
    for (int j = 0; j < ds; j++) t->gb_enc[j] = (float)gb[j];
    column_sums(t->f, n, ds, t->col_sum);
    int nb = (ds + 63) / 64;
#pragma omp parallel for schedule(static) if ((size_t)n * ds > OMP_MIN_WORK)
    for (int b = 0; b < nb; b++) {
      int j0 = b * 64, j1 = MIN(ds, j0 + 64);
      for (int j = j0; j < j1; j++) t->fire[j] = 0;
      for (int i = 0; i < n; i++) {
        const float *f = t->f + (size_t)i * ds;
        for (int j = j0; j < j1; j++) t->fire[j] += f[j] > 0.f;
      }
    }
  }
  /* the L1 term's decoder part: lambda/n sum_i f_ij d_j / ||d_j|| (parallel to the row) */
  if (relu && lambda > 0)
    for (int j = 0; j < ds; j++)
      if (t->col_sum[j] > 0 && t->dnorm[j] > 0)
        axpy(t->gW_dec + (size_t)j * dout, (float)(lambda / n * t->col_sum[j] / t->dnorm[j]), t->W_dec + (size_t)j * dout, dout);
  /* an SAE encodes yn - b_dec: b_dec's gradient through the encoder */
  if (t->sae) cblas_sgemv(CblasRowMajor, CblasTrans, ds, di, -1.f, t->W_enc, di, t->gb_enc, 1, 1.f, t->gb_dec, 1);
}

/* ---- AuxK (TopK) -------------------------------------------------------------------------------------- */

/* For every row, the aux_k largest positive pre-activations among the dead features; the
 * auxiliary error r_i = a_i W_dec - e_i (e_i = yn_i - out_i) into aux_dr as its gradient
 * 2 aux_coef / n r_i. Returns (1/n) sum ||r_i||^2, 0 when no feature is dead. Reads the
 * pre-activations, so it runs before the backward (which may overwrite them). */
static double aux_forward(LmwbTcTrainer *t, int n) {
  const int ds = t->d_sae, d = t->d_out;
  if (!(t->aux_coef > 0) || t->dead_window <= 0) return 0;
  int n_dead = lmwb_tc_trainer_dead(t, t->dead_window, t->dead);
  if (n_dead == 0) return 0;
  g_autofree int32_t *dead_ids = g_new(int32_t, n_dead);
  for (int j = 0, q = 0; j < ds; j++)
    if (t->dead[j]) dead_ids[q++] = j;
  const int ka = MIN(t->aux_k, n_dead);
  const float sc = (float)(2 * t->aux_coef / n);
#pragma omp parallel if ((size_t)n * n_dead > OMP_MIN_WORK)
  {
    float *vals = g_new(float, n_dead), *top = g_new(float, ka), *r = g_new(float, d);
    int32_t *ids = g_new(int32_t, ka);
#pragma omp for schedule(static)
    for (int i = 0; i < n; i++) {
      const float *p = t->pre + (size_t)i * ds;
      for (int q = 0; q < n_dead; q++) vals[q] = p[dead_ids[q]];
      lmwb_top_k(vals, n_dead, ka, ids, top);
      int c = 0;
      int32_t *aj = t->aux_j + (size_t)i * t->aux_k;
      float *aa = t->aux_a + (size_t)i * t->aux_k;
      for (int q = 0; q < ka; q++)
        if (top[q] > 0.f) aj[c] = dead_ids[ids[q]], aa[c] = top[q], c++;
      t->aux_cnt[i] = c;
      const float *o = t->out + (size_t)i * d, *y = t->yn + (size_t)i * d;
      for (int k = 0; k < d; k++) r[k] = o[k] - y[k]; /* -e_i */
      for (int q = 0; q < c; q++) axpy(r, aa[q], t->W_dec + (size_t)aj[q] * d, d);
      double s = 0;
      float *dr = t->aux_dr + (size_t)i * d;
      for (int k = 0; k < d; k++) s += (double)r[k] * r[k], dr[k] = sc * r[k];
      t->row_err[i] = s; /* the main errors are summed already */
    }
    g_free(vals), g_free(top), g_free(r), g_free(ids);
  }
  double sum = 0;
  for (int i = 0; i < n; i++) sum += t->row_err[i];
  return sum / n;
}

/* The auxiliary loss's gradient, feature by feature (in row order: deterministic). */
static void aux_backward(LmwbTcTrainer *t, int n) {
  const int ds = t->d_sae, di = t->d_in, d = t->d_out;
  memset(t->aux_ptr, 0, sizeof(int) * (ds + 1));
  for (int i = 0; i < n; i++)
    for (int q = 0; q < t->aux_cnt[i]; q++) t->aux_ptr[t->aux_j[(size_t)i * t->aux_k + q] + 1]++;
  for (int j = 0; j < ds; j++) t->aux_ptr[j + 1] += t->aux_ptr[j];
  g_autofree int *pos = g_memdup2(t->aux_ptr, sizeof(int) * ds);
  for (int i = 0; i < n; i++)
    for (int q = 0; q < t->aux_cnt[i]; q++) {
      size_t e = (size_t)i * t->aux_k + q;
      t->aux_ent[pos[t->aux_j[e]]++] = (int32_t)e;
    }
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)t->aux_ptr[ds] * (d + di) > OMP_MIN_WORK)
  for (int j = 0; j < ds; j++) {
    if (t->aux_ptr[j] == t->aux_ptr[j + 1]) continue;
    const float *w = t->W_dec + (size_t)j * d;
    float *gd = t->gW_dec + (size_t)j * d, *ge = t->gW_enc + (size_t)j * di;
    double gb = 0;
    for (int q = t->aux_ptr[j]; q < t->aux_ptr[j + 1]; q++) {
      size_t e = (size_t)t->aux_ent[q];
      int i = (int)(e / (size_t)t->aux_k);
      const float *dr = t->aux_dr + (size_t)i * d;
      float da = (float)dot(dr, w, d);
      axpy(gd, t->aux_a[e], dr, d);
      axpy(ge, da, t->xn + (size_t)i * di, di);
      gb += da;
    }
    t->gb_enc[j] += (float)gb;
  }
}

/* ---- a step -------------------------------------------------------------------------------------------- */

static double loss_and_grad(LmwbTcTrainer *t, const float *x, const float *y, int n, double sparsity_scale,
                            LmwbTcStepStats *st) {
  g_assert(n >= 1 && n <= t->cap);
  double l0 = 0;
  normalise(t, x, y, n);
  gboolean sparse = forward(t, n, &l0);
  double mse = errors(t, n, TRUE);
  double aux = aux_forward(t, n);
  double s = 0;
  for (int i = 0; i < n; i++) s += t->row_s[i];
  s /= n;
  double lambda = t->sparsity * sparsity_scale;
  backward(t, n, sparse, lambda);
  if (aux > 0) aux_backward(t, n);
  double loss = mse + lambda * s + t->aux_coef * aux;
  if (st) {
    /* FVU on the batch: the error over the targets' variance about the batch mean */
    g_autofree double *cs = g_new(double, t->d_out);
    column_sums(t->yn, n, t->d_out, cs);
    double sq = 0, m2 = 0;
    for (size_t i = 0; i < (size_t)n * t->d_out; i++) sq += (double)t->yn[i] * t->yn[i];
    for (int c = 0; c < t->d_out; c++) m2 += cs[c] * cs[c] / n;
    st->loss = loss, st->mse = mse, st->sparsity = s, st->l0 = l0, st->sparse = sparse;
    st->fvu = sq - m2 > 0 ? mse * n / (sq - m2) : NAN;
  }
  return loss;
}

double lmwb_tc_trainer_gradient(LmwbTcTrainer *t, const float *x, const float *y, int n, double sparsity_scale,
                                float *grad) {
  if (!lmwb_tc_trainer_reserve(t, n, NULL)) return NAN;
  double loss = loss_and_grad(t, x, y, n, sparsity_scale, NULL);
  if (grad) memcpy(grad, t->g, sizeof(float) * t->n_params);
  return loss;
}

void lmwb_tc_trainer_step(LmwbTcTrainer *t, const float *x, const float *y, int n, double lr, double sparsity_scale,
                          LmwbTcStepStats *st) {
  g_assert(t->initialised && n <= t->cap);
  loss_and_grad(t, x, y, n, sparsity_scale, st);
  const int ds = t->d_sae, d = t->d_out;
  /* remove from each decoder row's gradient its component along the row */
#pragma omp parallel for schedule(static) if ((size_t)ds * d > OMP_MIN_WORK)
  for (int j = 0; j < ds; j++) {
    const float *w = t->W_dec + (size_t)j * d;
    float *g = t->gW_dec + (size_t)j * d;
    double ww = dot(w, w, d);
    if (ww > 0) axpy(g, (float)(-dot(g, w, d) / ww), w, d);
  }
  lmwb_adamw_step(t->adam, t->p, t->g, (float)lr);
#pragma omp parallel for schedule(static) if ((size_t)ds * d > OMP_MIN_WORK)
  for (int j = 0; j < ds; j++) {
    float *w = t->W_dec + (size_t)j * d;
    double nn = sqrt(dot(w, w, d));
    if (nn > 0)
      for (int c = 0; c < d; c++) w[c] = (float)(w[c] / nn);
  }
  t->seen += n;
  for (int j = 0; j < ds; j++)
    if (t->fire[j]) t->last_active[j] = t->seen;
}

/* ---- dead features and resampling ------------------------------------------------------------------------ */

int lmwb_tc_trainer_dead(const LmwbTcTrainer *t, int64_t window, guint8 *dead) {
  int count = 0;
  for (int j = 0; j < t->d_sae; j++) {
    gboolean d = t->seen - t->last_active[j] >= window;
    if (dead) dead[j] = (guint8)d;
    count += d;
  }
  return count;
}

int lmwb_tc_trainer_resample(LmwbTcTrainer *t, int64_t window, const float *x, const float *y, int n) {
  const int ds = t->d_sae, di = t->d_in, dout = t->d_out;
  g_autofree guint8 *dead = g_new(guint8, ds);
  int n_dead = lmwb_tc_trainer_dead(t, window, dead);
  if (n_dead == 0 || n < 1 || !lmwb_tc_trainer_reserve(t, CHUNK, NULL)) return 0;
  /* every row's squared error; a row is drawn with probability proportional to its square */
  g_autofree double *err = g_new(double, n), *cum = g_new(double, n);
  lmwb_tc_trainer_row_errors(t, x, y, n, err);
  double tot = 0;
  for (int i = 0; i < n; i++) cum[i] = (tot += err[i] * err[i]);
  if (!(tot > 0)) return 0;
  double enc_norm = 0;
  int alive = 0;
  for (int j = 0; j < ds; j++)
    if (!dead[j]) enc_norm += sqrt(dot(t->W_enc + (size_t)j * di, t->W_enc + (size_t)j * di, di)), alive++;
  enc_norm = alive ? enc_norm / alive : 1.0;
  const double scale = LMWB_TC_RESAMPLE_SCALE * enc_norm;
  /* the drawn rows, one per dead feature, run again together for their errors */
  g_autofree int *feat = g_new(int, n_dead), *row = g_new(int, n_dead);
  int m = 0;
  for (int j = 0; j < ds; j++) {
    if (!dead[j]) continue;
    double u = lmwb_rng_uniform(&t->rng) * tot;
    int lo = 0, hi = n - 1;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (cum[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    feat[m] = j, row[m] = lo, m++;
  }
  int done = 0;
  g_autofree float *xs = g_new(float, (size_t)MIN(m, CHUNK) * di), *ys = g_new(float, (size_t)MIN(m, CHUNK) * dout);
  g_autofree float *err_dir = g_new(float, dout), *in_dir = g_new(float, di);
  for (int q0 = 0; q0 < m; q0 += CHUNK) {
    int c = MIN(CHUNK, m - q0);
    for (int q = 0; q < c; q++) {
      memcpy(xs + (size_t)q * di, x + (size_t)row[q0 + q] * di, sizeof(float) * di);
      memcpy(ys + (size_t)q * dout, y + (size_t)row[q0 + q] * dout, sizeof(float) * dout);
    }
    double l0;
    normalise(t, xs, ys, c);
    forward(t, c, &l0);
    for (int q = 0; q < c; q++) {
      int j = feat[q0 + q];
      const float *o = t->out + (size_t)q * dout, *yr = t->yn + (size_t)q * dout, *xr = t->xn + (size_t)q * di;
      for (int k = 0; k < dout; k++) err_dir[k] = yr[k] - o[k];
      /* an SAE's encoder already sees the centred input x - b_dec; a transcoder's is centred here */
      for (int k = 0; k < di; k++) in_dir[k] = t->sae ? xr[k] : xr[k] - t->mu_x[k];
      double ne = sqrt(dot(err_dir, err_dir, dout)), ni = sqrt(dot(in_dir, in_dir, di));
      if (!(ne > 0) || !(ni > 0)) continue;
      float *w_dec = t->W_dec + (size_t)j * dout, *w_enc = t->W_enc + (size_t)j * di;
      /* TopK: the new feature's pre-activation on its token (s ||u||) just above that token's k-th
       * largest, so that it wins a place there and on tokens like it */
      double s = scale;
      if (t->act == LMWB_TC_TOPK) {
        int32_t ids[t->k];
        float vals[t->k];
        lmwb_top_k(t->pre + (size_t)q * ds, ds, t->k, ids, vals);
        if (vals[t->k - 1] > 0.f) s = LMWB_TC_RESAMPLE_TOPK_MARGIN * vals[t->k - 1] / ni;
      }
      for (int k = 0; k < dout; k++) w_dec[k] = (float)(err_dir[k] / ne);
      for (int k = 0; k < di; k++) w_enc[k] = (float)(in_dir[k] / ni * s);
      t->b_enc[j] = t->sae ? 0.f : (float)-dot(t->mu_x, w_enc, di);
      if (t->log_theta) t->log_theta[j] = logf(t->jump_eps);
      /* Adam forgets these weights */
      size_t offs[4] = {(size_t)(w_enc - t->p), (size_t)(t->b_enc + j - t->p), (size_t)(w_dec - t->p),
                        t->log_theta ? (size_t)(t->log_theta + j - t->p) : 0};
      size_t lens[4] = {(size_t)di, 1, (size_t)dout, t->log_theta ? 1 : 0};
      for (int k = 0; k < 4; k++) {
        memset(t->adam->m + offs[k], 0, sizeof(float) * lens[k]);
        memset(t->adam->v + offs[k], 0, sizeof(float) * lens[k]);
      }
      t->last_active[j] = t->seen;
      done++;
    }
  }
  t->resampled += done;
  return done;
}
