/* The K-FAC edit: eigendecompose the factors, keep the components of largest curvature up to a
 * share of the mass, rotate back (kfac.h). */
#include "editors/kfac.h"
#include "app/core/errors.h"
#include "app/engine/linalg.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

/* evals ascending, evecs columns (eigh) -> descending, clamped at 0, columns reordered */
static gboolean eigen_desc(int n, const double *M, double *vals, double *vecs, const char *what, GError **error) {
  g_autofree double *ev = g_new(double, n);
  g_autofree double *V = g_new(double, (size_t)n * n);
  if (!lmwb_linalg_eigh(n, M, ev, V, error)) {
    g_prefix_error(error, "%s: ", what);
    return FALSE;
  }
  for (int j = 0; j < n; j++) vals[j] = MAX(ev[n - 1 - j], 0.0);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) vecs[(size_t)i * n + j] = V[(size_t)i * n + (n - 1 - j)];
  return TRUE;
}

gboolean lmwb_kfac_eigen(const LmwbKfacFactor *f, LmwbKfacEigen *e, GError **error) {
  memset(e, 0, sizeof *e);
  e->d_in = f->d_in;
  e->d_out = f->d_out;
  e->mu = g_new(double, f->d_in);
  e->UA = g_new(double, (size_t)f->d_in * f->d_in);
  e->lambda = g_new(double, f->d_out);
  e->UG = g_new(double, (size_t)f->d_out * f->d_out);
  g_autofree char *wa = g_strdup_printf("blocks.%d.mlp.%s.A", f->layer, lmwb_kfac_matrix_name(f->matrix));
  g_autofree char *wg = g_strdup_printf("blocks.%d.mlp.%s.G", f->layer, lmwb_kfac_matrix_name(f->matrix));
  if (eigen_desc(f->d_in, f->A, e->mu, e->UA, wa, error) && eigen_desc(f->d_out, f->G, e->lambda, e->UG, wg, error))
    return TRUE;
  lmwb_kfac_eigen_clear(e);
  return FALSE;
}

void lmwb_kfac_eigen_clear(LmwbKfacEigen *e) {
  g_free(e->mu);
  g_free(e->UA);
  g_free(e->lambda);
  g_free(e->UG);
  memset(e, 0, sizeof *e);
}

/* Components of row i (curvature λ_i) with λ_i μ_j >= tau: a prefix of the descending μ. */
static int row_count(const double *mu, int n, double lambda, double tau) {
  int lo = 0, hi = n; /* the answer is in [lo, hi] */
  while (lo < hi) {
    int mid = lo + (hi - lo + 1) / 2;
    if (lambda * mu[mid - 1] >= tau) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* Kept mass Σ_i λ_i Σ_{j < c_i} μ_j at threshold tau (prefix: prefix sums of μ). */
static double kept_at(const LmwbKfacEigen *e, const double *prefix, double tau, int64_t *count) {
  double k = 0;
  int64_t c = 0;
  for (int i = 0; i < e->d_out; i++) {
    int ci = row_count(e->mu, e->d_in, e->lambda[i], tau);
    k += e->lambda[i] * prefix[ci];
    c += ci;
  }
  if (count) *count = c;
  return k;
}

static double *prefix_sums(const LmwbKfacEigen *e) {
  double *p = g_new(double, e->d_in + 1);
  p[0] = 0;
  for (int j = 0; j < e->d_in; j++) p[j + 1] = p[j] + e->mu[j];
  return p;
}

static double total_mass(const LmwbKfacEigen *e, const double *prefix) {
  double sl = 0;
  for (int i = 0; i < e->d_out; i++) sl += e->lambda[i];
  return sl * prefix[e->d_in];
}

double lmwb_kfac_threshold(const LmwbKfacEigen *e, double rho, double *kept_mass, int64_t *kept) {
  int64_t all = (int64_t)e->d_in * e->d_out;
  g_autofree double *prefix = prefix_sums(e);
  double M = total_mass(e, prefix);
  if (rho >= 1 || !(M > 0)) {
    if (kept_mass) *kept_mass = 1;
    if (kept) *kept = all;
    return 0;
  }
  double target = rho * M;
  /* K(tau) falls as tau rises; find the largest tau with K(tau) >= target: K(lo) >= target > K(hi) */
  double lo = 0, hi = e->lambda[0] * e->mu[0];
  if (kept_at(e, prefix, hi, NULL) >= target) {
    lo = hi;
  } else {
    for (int it = 0; it < 4096; it++) {
      double mid = lo + (hi - lo) / 2;
      if (mid <= lo || mid >= hi) break;
      if (kept_at(e, prefix, mid, NULL) >= target) lo = mid;
      else hi = mid;
    }
  }
  int64_t c;
  double k = kept_at(e, prefix, lo, &c);
  if (kept_mass) *kept_mass = k / M;
  if (kept) *kept = c;
  return lo;
}

gboolean lmwb_kfac_edit_matrix(const LmwbKfacEigen *e, const float *W, double rho, float *W_out, double *kept_mass,
                               int64_t *kept, GError **error) {
  if (!(rho > 0 && rho <= 1)) {
    lmwb_input_error(error, "keep-mass %g must be in (0, 1]", rho);
    return FALSE;
  }
  int nO = e->d_out, nI = e->d_in;
  size_t n = (size_t)nO * nI;
  double tau = lmwb_kfac_threshold(e, rho, kept_mass, kept);
  if (rho >= 1) { /* everything kept: W itself, bit for bit */
    if (W_out != W) memcpy(W_out, W, n * sizeof(float));
    return TRUE;
  }
  double *Wd = g_try_new(double, n), *T = g_try_new(double, n);
  if (!Wd || !T) {
    g_free(Wd);
    g_free(T);
    lmwb_input_error(error, "k-fac edit: out of memory for a %d x %d matrix", nO, nI);
    return FALSE;
  }
  for (size_t i = 0; i < n; i++) Wd[i] = W[i];
  /* C = U_Gᵀ W U_A */
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nO, nI, nO, 1.0, e->UG, nO, Wd, nI, 0.0, T, nI);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nO, nI, nI, 1.0, T, nI, e->UA, nI, 0.0, Wd, nI);
  /* zero the components below the threshold: row i keeps a prefix of the descending μ */
  for (int i = 0; i < nO; i++) {
    int c = row_count(e->mu, nI, e->lambda[i], tau);
    memset(Wd + (size_t)i * nI + c, 0, (size_t)(nI - c) * sizeof(double));
  }
  /* W' = U_G C' U_Aᵀ */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nO, nI, nO, 1.0, e->UG, nO, Wd, nI, 0.0, T, nI);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nO, nI, nI, 1.0, T, nI, e->UA, nI, 0.0, Wd, nI);
  for (size_t i = 0; i < n; i++) W_out[i] = (float)Wd[i];
  g_free(Wd);
  g_free(T);
  return TRUE;
}

void lmwb_kfac_mass_curve(const LmwbKfacEigen *e, int nq, double *fc, double *fm) {
  g_autofree double *prefix = prefix_sums(e);
  double M = total_mass(e, prefix), all = (double)e->d_in * e->d_out;
  double hi = e->lambda[0] * e->mu[0], lo = hi;
  for (int i = 0; i < e->d_out; i++)
    if (e->lambda[i] > 0) lo = MIN(lo, e->lambda[i] * e->mu[0]);
  for (int j = 0; j < e->d_in; j++)
    if (e->mu[j] > 0) lo = MIN(lo, e->lambda[0] * e->mu[j]);
  lo = MAX(lo * 1e-3, hi * 1e-300);
  for (int q = 0; q < nq; q++) {
    double tau = nq > 1 ? exp(log(hi) + (log(lo) - log(hi)) * q / (nq - 1)) : hi;
    int64_t c = 0;
    double k = hi > 0 ? kept_at(e, prefix, tau, &c) : 0;
    fc[q] = c / all;
    fm[q] = M > 0 ? k / M : 0;
  }
}

LmwbModel *lmwb_kfac_edit(LmwbModel *m, const LmwbKfacFactors *factors, const int *layers, int n_layers,
                          unsigned matrices, double rho, LmwbKfacEigen **eig, LmwbKfacEditStats **stats,
                          int *n_stats, GError **error) {
  if (!(rho > 0 && rho <= 1)) {
    lmwb_input_error(error, "keep-mass %g must be in (0, 1]", rho);
    return NULL;
  }
  /* everything is checked before the fork is made */
  for (int li = 0; li < n_layers; li++)
    for (int k = 0; k < LMWB_KFAC_N_MATRICES; k++) {
      if (!(matrices & (1u << k))) continue;
      LmwbKfacInfo info;
      if (!lmwb_kfac_info(&m->cfg, layers[li], (LmwbKfacMatrix)k, &info, error)) return NULL;
      if (!lmwb_kfac_factors_find(factors, layers[li], (LmwbKfacMatrix)k)) {
        lmwb_input_error(error, "blocks.%d.mlp.%s: the factors do not hold this matrix (collect it first)", layers[li],
                         lmwb_kfac_matrix_name((LmwbKfacMatrix)k));
        return NULL;
      }
    }
  LmwbModel *fork = lmwb_model_fork(m);
  GArray *st = g_array_new(FALSE, TRUE, sizeof(LmwbKfacEditStats));
  for (int li = 0; li < n_layers; li++)
    for (int k = 0; k < LMWB_KFAC_N_MATRICES; k++) {
      if (!(matrices & (1u << k))) continue;
      const LmwbKfacFactor *f = lmwb_kfac_factors_find(factors, layers[li], (LmwbKfacMatrix)k);
      LmwbKfacEigen local = {0}, *e = &local;
      if (eig) e = &(*eig)[f - factors->f];
      if (!e->mu && !lmwb_kfac_eigen(f, e, error)) goto fail;
      LmwbKfacInfo info;
      lmwb_kfac_info(&m->cfg, layers[li], (LmwbKfacMatrix)k, &info, NULL);
      float *W = lmwb_model_edit_tensor(fork, info.param, error);
      if (!W) goto fail;
      size_t n = (size_t)info.d_out * info.d_in;
      g_autofree float *W0 = g_memdup2(W, n * sizeof(float));
      LmwbKfacEditStats s = {.layer = layers[li], .matrix = (LmwbKfacMatrix)k};
      int64_t kept = 0;
      gboolean ok = lmwb_kfac_edit_matrix(e, W0, rho, W, &s.kept_mass, &kept, error);
      if (e == &local) lmwb_kfac_eigen_clear(&local);
      if (!ok) goto fail;
      double d2 = 0, w2 = 0;
      for (size_t i = 0; i < n; i++) {
        d2 += ((double)W[i] - W0[i]) * ((double)W[i] - W0[i]);
        w2 += (double)W0[i] * W0[i];
      }
      s.kept_fraction = (double)kept / (double)n;
      s.rel_change = w2 > 0 ? sqrt(d2 / w2) : 0;
      g_array_append_val(st, s);
    }
  if (n_stats) *n_stats = (int)st->len;
  if (stats) *stats = (LmwbKfacEditStats *)g_array_free(st, FALSE);
  else g_array_free(st, TRUE);
  return fork;
fail:
  g_array_free(st, TRUE);
  lmwb_model_unref(fork);
  return NULL;
}
