/* app/engine/linalg.h against the mathematics, not against LAPACK: eigendecompositions rebuild
 * their matrix and have orthonormal vectors (random, repeated eigenvalues, n = 1 to 300) and match
 * closed forms (the second-difference matrix, diagonals); Cholesky solves have small residuals and
 * invert the Hilbert matrix to its known integer inverse; least squares satisfies the normal
 * equations and lies in A's row space (over-, under-determined, rank deficient); SVDs rebuild and
 * are orthogonal, and match closed forms. Every bad input is an LMWB_ERROR_INPUT naming it. The
 * worst errors reached are printed with g_test_message (run with --verbose to see them). */
#include "app/engine/linalg.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "app/core/rng.h"
#include "tests/unit/app/formats/formats_test_util.h"

#define EPS DBL_EPSILON

static double gauss(guint64 *s) {
  return sqrt(-2.0 * log(lmwb_rng_uniform(s))) * cos(2.0 * G_PI * lmwb_rng_uniform(s));
}

static double *randn(int rows, int cols, guint64 seed) {
  double *M = g_new(double, (size_t)rows * cols);
  for (size_t i = 0; i < (size_t)rows * cols; i++) M[i] = gauss(&seed);
  return M;
}

/* C[m×n] = op(A) op(B), op = transpose when the flag is set; A, B row-major as stored. */
static double *matmul(const double *A, bool ta, const double *B, bool tb, int m, int k, int n) {
  double *C = g_new0(double, (size_t)m * n);
  for (int i = 0; i < m; i++)
    for (int p = 0; p < k; p++) {
      double a = ta ? A[(size_t)p * m + i] : A[(size_t)i * k + p];
      for (int j = 0; j < n; j++) C[(size_t)i * n + j] += a * (tb ? B[(size_t)j * k + p] : B[(size_t)p * n + j]);
    }
  return C;
}

static double max_abs(const double *A, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(A[i]));
  return m;
}

static double max_diff(const double *A, const double *B, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(A[i] - B[i]));
  return m;
}

/* max |QᵀQ - I| for the k columns of the m×k matrix Q (rows: pass Qᵀ, i.e. transposed = true). */
static double orth_error(const double *Q, int m, int k, bool rows) {
  double *G = rows ? matmul(Q, false, Q, true, k, m, k) : matmul(Q, true, Q, false, k, m, k);
  for (int i = 0; i < k; i++) G[(size_t)i * k + i] -= 1.0;
  double e = max_abs(G, (size_t)k * k);
  g_free(G);
  return e;
}

/* V diag(w) Vᵀ for V with eigenvectors as columns. */
static double *rebuild_sym(int n, const double *V, const double *w) {
  double *VW = g_new(double, (size_t)n * n);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) VW[(size_t)i * n + j] = V[(size_t)i * n + j] * w[j];
  double *R = matmul(VW, false, V, true, n, n, n);
  g_free(VW);
  return R;
}

/* Column j of M (n×n) equals ±v: returns the smaller of the two max differences. */
static double col_diff_up_to_sign(const double *M, int n, int j, const double *v) {
  double dp = 0, dm = 0;
  for (int i = 0; i < n; i++) {
    dp = fmax(dp, fabs(M[(size_t)i * n + j] - v[i]));
    dm = fmax(dm, fabs(M[(size_t)i * n + j] + v[i]));
  }
  return fmin(dp, dm);
}

/* A random orthogonal n×n matrix: the product of n Householder reflections of random vectors. */
static double *random_orthogonal(int n, guint64 seed) {
  double *Q = g_new0(double, (size_t)n * n);
  for (int i = 0; i < n; i++) Q[(size_t)i * n + i] = 1;
  double *v = g_new(double, n), *t = g_new(double, n);
  for (int r = 0; r < n; r++) {
    double vv = 0;
    for (int i = 0; i < n; i++) {
      v[i] = gauss(&seed);
      vv += v[i] * v[i];
    }
    for (int j = 0; j < n; j++) { /* Q ← Q (I - 2 v vᵀ / vᵀv): t = Q v first */
      t[j] = 0;
      for (int i = 0; i < n; i++) t[j] += Q[(size_t)j * n + i] * v[i];
    }
    for (int j = 0; j < n; j++)
      for (int i = 0; i < n; i++) Q[(size_t)j * n + i] -= 2 * t[j] * v[i] / vv;
  }
  g_free(v);
  g_free(t);
  return Q;
}

/* Runs eigh and checks everything that must hold for any symmetric A: ascending, A = VΛVᵀ,
 * VᵀV = I, eigenvalues-only and in-place calls agree. Returns evals and evecs (g_free). */
static void eigh_checked(int n, const double *A, double **w_out, double **V_out, double *rec_err,
                         double *orth_err) {
  double *w = g_new(double, n), *V = g_new(double, (size_t)n * n);
  GError *err = NULL;
  g_assert_true(lmwb_linalg_eigh(n, A, w, V, &err));
  g_assert_no_error(err);
  for (int j = 1; j < n; j++) g_assert_cmpfloat(w[j - 1], <=, w[j]);
  double *R = rebuild_sym(n, V, w), scale = fmax(max_abs(A, (size_t)n * n), DBL_MIN);
  *rec_err = max_diff(R, A, (size_t)n * n) / scale;
  *orth_err = orth_error(V, n, n, false);
  g_assert_cmpfloat(*rec_err, <=, 4.0 * n * EPS);
  g_assert_cmpfloat(*orth_err, <=, 4.0 * n * EPS);
  g_free(R);
  /* Values only: the same eigenvalues (the same algorithm, so to rounding). */
  double *w2 = g_new(double, n);
  g_assert_true(lmwb_linalg_eigh(n, A, w2, NULL, &err));
  g_assert_cmpfloat(max_diff(w, w2, n), <=, 4.0 * n * EPS * scale);
  /* In place: the input buffer becomes the eigenvectors. */
  double *B = g_memdup2(A, sizeof(double) * n * n);
  g_assert_true(lmwb_linalg_eigh(n, B, w2, B, &err));
  g_assert_no_error(err);
  g_assert_cmpmem(B, sizeof(double) * n * n, V, sizeof(double) * n * n);
  g_free(B);
  g_free(w2);
  *w_out = w;
  *V_out = V;
}

static void test_eigh_closed_form(void) {
  double rec, orth, *w, *V;
  /* [[2,1],[1,2]]: 1 with (1,-1)/√2, 3 with (1,1)/√2. Column 0 has opposite signs, so a layout
   * with eigenvectors as rows would fail here. */
  const double A2[4] = {2, 1, 1, 2};
  eigh_checked(2, A2, &w, &V, &rec, &orth);
  g_assert_cmpfloat(fabs(w[0] - 1), <=, 4 * EPS);
  g_assert_cmpfloat(fabs(w[1] - 3), <=, 8 * EPS);
  const double v0[2] = {M_SQRT1_2, -M_SQRT1_2}, v1[2] = {M_SQRT1_2, M_SQRT1_2};
  g_assert_cmpfloat(col_diff_up_to_sign(V, 2, 0, v0), <=, 4 * EPS);
  g_assert_cmpfloat(col_diff_up_to_sign(V, 2, 1, v1), <=, 4 * EPS);
  g_free(w);
  g_free(V);

  /* The second-difference matrix tridiag(-1, 2, -1): λ_j = 2 - 2cos(jπ/(n+1)) with
   * v_j(i) = √(2/(n+1)) sin(ijπ/(n+1)), i, j = 1..n. */
  enum { N = 12 };
  double T[N * N] = {0}, v[N], worst_v = 0, worst_l = 0;
  for (int i = 0; i < N; i++) {
    T[i * N + i] = 2;
    if (i) T[i * N + i - 1] = T[(i - 1) * N + i] = -1;
  }
  eigh_checked(N, T, &w, &V, &rec, &orth);
  for (int j = 1; j <= N; j++) {
    worst_l = fmax(worst_l, fabs(w[j - 1] - (2 - 2 * cos(j * G_PI / (N + 1)))));
    for (int i = 1; i <= N; i++) v[i - 1] = sqrt(2.0 / (N + 1)) * sin(i * j * G_PI / (N + 1));
    worst_v = fmax(worst_v, col_diff_up_to_sign(V, N, j - 1, v));
  }
  g_assert_cmpfloat(worst_l, <=, 1e-14);
  g_assert_cmpfloat(worst_v, <=, 1e-13);
  g_test_message("second difference n=%d: eigenvalues within %.2g, eigenvectors within %.2g", N,
                 worst_l, worst_v);
  g_free(w);
  g_free(V);

  /* n = 1, and an unsorted diagonal: sorted values, unit vectors following them. */
  const double one = -3;
  eigh_checked(1, &one, &w, &V, &rec, &orth);
  g_assert_cmpfloat(w[0], ==, -3);
  g_assert_cmpfloat(fabs(V[0]), ==, 1);
  g_free(w);
  g_free(V);
  const double D[16] = {3, 0, 0, 0, 0, -1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0};
  const double sorted[4] = {-1, 0, 2, 3};
  const int from[4] = {1, 3, 2, 0};
  eigh_checked(4, D, &w, &V, &rec, &orth);
  for (int j = 0; j < 4; j++) {
    g_assert_cmpfloat(fabs(w[j] - sorted[j]), <=, 4 * EPS);
    double e[4] = {0};
    e[from[j]] = 1;
    g_assert_cmpfloat(col_diff_up_to_sign(V, 4, j, e), <=, 4 * EPS);
  }
  g_free(w);
  g_free(V);
}

static void test_eigh_random(void) {
  const int sizes[] = {2, 3, 7, 64, 300};
  for (size_t t = 0; t < G_N_ELEMENTS(sizes); t++) {
    int n = sizes[t];
    double *G = randn(n, n, 100 + t), *A = g_new(double, (size_t)n * n);
    for (int i = 0; i < n; i++)
      for (int j = 0; j < n; j++) A[(size_t)i * n + j] = G[(size_t)i * n + j] + G[(size_t)j * n + i];
    double rec, orth, *w, *V;
    gint64 t0 = g_get_monotonic_time();
    eigh_checked(n, A, &w, &V, &rec, &orth);
    /* The trace is the sum of the eigenvalues. */
    double tr = 0, sw = 0;
    for (int i = 0; i < n; i++) tr += A[(size_t)i * n + i], sw += w[i];
    g_assert_cmpfloat(fabs(tr - sw), <=, 4.0 * n * EPS * n * max_abs(A, (size_t)n * n));
    g_test_message("eigh random n=%d: |A - V L V^T|/|A| = %.2g, |V^T V - I| = %.2g (bound %.2g), %.1f ms",
                   n, rec, orth, 4.0 * n * EPS, (g_get_monotonic_time() - t0) / 1e3);
    g_free(G);
    g_free(A);
    g_free(w);
    g_free(V);
  }
}

/* Q diag(λ) Qᵀ with eigenvalues repeated 10, 1, 12 and 7 times: the eigenvalues come back with
 * their multiplicities and each eigenspace is Q's (projectors agree). Also 0 and I. */
static void test_eigh_repeated(void) {
  enum { N = 30 };
  const double vals[] = {-4, 1, 2.5, 7};
  const int mult[] = {12, 10, 1, 7};
  double lam[N];
  for (int c = 0, i = 0; c < 4; c++)
    for (int r = 0; r < mult[c]; r++) lam[i++] = vals[c];
  double *Q = random_orthogonal(N, 7);
  g_assert_cmpfloat(orth_error(Q, N, N, false), <=, 1e-13);
  double *A = rebuild_sym(N, Q, lam), rec, orth, *w, *V;
  lmwb_linalg_symmetrize(N, A);
  eigh_checked(N, A, &w, &V, &rec, &orth);
  double worst_l = 0, worst_p = 0;
  for (int i = 0; i < N; i++) worst_l = fmax(worst_l, fabs(w[i] - lam[i]));
  for (int c = 0, start = 0; c < 4; start += mult[c], c++) {
    /* P = Σ over the cluster's columns of v vᵀ, from ours and from Q. */
    for (int i = 0; i < N; i++)
      for (int j = 0; j < N; j++) {
        double p = 0, q = 0;
        for (int k = start; k < start + mult[c]; k++) {
          p += V[i * N + k] * V[j * N + k];
          q += Q[i * N + k] * Q[j * N + k];
        }
        worst_p = fmax(worst_p, fabs(p - q));
      }
  }
  g_assert_cmpfloat(worst_l, <=, 1e-13);
  g_assert_cmpfloat(worst_p, <=, 1e-12);
  g_test_message("repeated eigenvalues n=%d: values within %.2g, eigenspace projectors within %.2g",
                 N, worst_l, worst_p);
  g_free(w);
  g_free(V);
  g_free(A);
  g_free(Q);

  double Z[25] = {0}, I[25] = {0};
  for (int i = 0; i < 5; i++) I[i * 5 + i] = 1;
  eigh_checked(5, Z, &w, &V, &rec, &orth);
  g_assert_cmpfloat(max_abs(w, 5), ==, 0);
  g_free(w);
  g_free(V);
  eigh_checked(5, I, &w, &V, &rec, &orth);
  for (int i = 0; i < 5; i++) g_assert_cmpfloat(fabs(w[i] - 1), <=, 4 * EPS);
  g_free(w);
  g_free(V);
}

/* max |op(A) X - B| / (|A||X| + |B|) for an m×n A and n×r X. */
static double residual(const double *A, int m, int n, const double *X, int r, const double *B) {
  double *AX = matmul(A, false, X, false, m, n, r);
  double e = max_diff(AX, B, (size_t)m * r) /
             (n * max_abs(A, (size_t)m * n) * max_abs(X, (size_t)n * r) + max_abs(B, (size_t)m * r));
  g_free(AX);
  return e;
}

static double binom(int n, int k) {
  double b = 1;
  for (int i = 1; i <= k; i++) b = b * (n - k + i) / i;
  return b;
}

static void test_cholesky(void) {
  GError *err = NULL;
  /* Random SPD: G Gᵀ + I, three right-hand sides. */
  enum { N = 50, R = 3 };
  double *G = randn(N, N, 11), *A = matmul(G, false, G, true, N, N, N), *B = randn(N, R, 12);
  for (int i = 0; i < N; i++) A[i * N + i] += 1;
  double X[N * R], rcond = -1;
  g_assert_true(lmwb_linalg_cholesky_solve(N, A, 0, R, B, X, &rcond, &err));
  g_assert_no_error(err);
  double res = residual(A, N, N, X, R, B);
  g_assert_cmpfloat(res, <=, 4.0 * N * EPS);
  g_assert_cmpfloat(rcond, >, 0);
  g_assert_cmpfloat(rcond, <=, 1);
  g_test_message("cholesky n=%d nrhs=%d: relative residual %.2g, rcond %.3g", N, R, res, rcond);
  /* X may be B; one column at a time gives the same columns. */
  double Xa[N * R], x1[N], b1[N];
  memcpy(Xa, B, sizeof Xa);
  g_assert_true(lmwb_linalg_cholesky_solve(N, A, 0, R, Xa, Xa, NULL, &err));
  g_assert_cmpmem(Xa, sizeof Xa, X, sizeof X);
  for (int i = 0; i < N; i++) b1[i] = B[i * R + 2];
  g_assert_true(lmwb_linalg_cholesky_solve(N, A, 0, 1, b1, x1, NULL, &err));
  for (int i = 0; i < N; i++) g_assert_cmpfloat(fabs(x1[i] - X[i * R + 2]), <=, 1e-12 * max_abs(X, N * R));
  /* Ridge: (A + λI) X = B. */
  const double lambda = 3.5;
  g_assert_true(lmwb_linalg_cholesky_solve(N, A, lambda, R, B, X, NULL, &err));
  for (int i = 0; i < N; i++) A[i * N + i] += lambda;
  g_assert_cmpfloat(residual(A, N, N, X, R, B), <=, 4.0 * N * EPS);
  g_free(G);
  g_free(A);
  g_free(B);

  /* The Hilbert matrix H_ij = 1/(i+j-1) has the integer inverse
   * (-1)^(i+j) (i+j-1) C(n+i-1, n-j) C(n+j-1, n-i) C(i+j-2, i-1)², i, j = 1..n. */
  enum { H = 6 };
  double Hm[H * H], Id[H * H] = {0}, Hinv[H * H], want[H * H];
  for (int i = 1; i <= H; i++)
    for (int j = 1; j <= H; j++) {
      Hm[(i - 1) * H + j - 1] = 1.0 / (i + j - 1);
      Id[(i - 1) * H + j - 1] = i == j;
      double c = binom(i + j - 2, i - 1);
      want[(i - 1) * H + j - 1] = ((i + j) % 2 ? -1 : 1) * (i + j - 1) * binom(H + i - 1, H - j) *
                                  binom(H + j - 1, H - i) * c * c;
    }
  g_assert_true(lmwb_linalg_cholesky_solve(H, Hm, 0, H, Id, Hinv, &rcond, &err));
  g_assert_no_error(err);
  double rel = max_diff(Hinv, want, H * H) / max_abs(want, H * H);
  g_assert_cmpfloat(rel, <=, 1e-8); /* cond(H_6) ≈ 1.5e7 */
  g_assert_cmpfloat(rcond, <, 1e-7);
  g_assert_cmpfloat(rcond, >, 1e-9);
  g_test_message("Hilbert %d: inverse within %.2g relative, rcond %.3g", H, rel, rcond);

  /* rcond of a diagonal matrix is exact: min/max. */
  const double Dg[4] = {2, 0, 0, 2e-3}, b2[2] = {1, 1};
  double x2[2];
  g_assert_true(lmwb_linalg_cholesky_solve(2, Dg, 0, 1, b2, x2, &rcond, &err));
  g_assert_cmpfloat(fabs(rcond - 1e-3), <=, 1e-15);
  g_assert_cmpfloat(fabs(x2[0] - 0.5), <=, EPS);
  g_assert_cmpfloat(fabs(x2[1] - 500), <=, 500 * EPS);

  /* Indefinite: refused at the pivot where it fails. */
  const double ind[4] = {1, 2, 2, 1};
  g_assert_false(lmwb_linalg_cholesky_solve(2, ind, 0, 1, b2, x2, NULL, &err));
  tu_assert_input_error(err, "cholesky_solve", "not positive definite", "pivot 2 of 2");
  g_clear_error(&err);
  double D4[16] = {0}, b4[4] = {1, 2, 3, 4}, x4[4];
  for (int i = 0; i < 4; i++) D4[i * 4 + i] = i == 2 ? -1 : 1;
  g_assert_false(lmwb_linalg_cholesky_solve(4, D4, 0, 1, b4, x4, NULL, &err));
  tu_assert_input_error(err, "not positive definite", "pivot 3 of 4");
  g_clear_error(&err);
  /* A ridge larger than the negative eigenvalue makes it definite. */
  g_assert_true(lmwb_linalg_cholesky_solve(4, D4, 2, 1, b4, x4, NULL, &err));
  g_assert_cmpfloat(fabs(x4[2] - 3), <=, 4 * EPS);
  g_assert_cmpfloat(fabs(x4[0] - 1.0 / 3), <=, EPS);

  /* A singular covariance (rank 2 of 6, as from too few samples): refused; a ridge solves it. */
  enum { S = 6 };
  double *F = randn(S, 2, 13), *C = matmul(F, false, F, true, S, 2, S), bs[S], xs[S];
  for (int i = 0; i < S; i++) bs[i] = i + 1;
  g_assert_false(lmwb_linalg_cholesky_solve(S, C, 0, 1, bs, xs, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_true(strstr(err->message, "not positive definite") || strstr(err->message, "numerically singular"));
  g_test_message("singular covariance: %s", err->message);
  g_clear_error(&err);
  g_assert_true(lmwb_linalg_cholesky_solve(S, C, 1e-3, 1, bs, xs, NULL, &err));
  for (int i = 0; i < S; i++) C[i * S + i] += 1e-3;
  g_assert_cmpfloat(residual(C, S, S, xs, 1, bs), <=, 1e-12);
  g_free(F);
  g_free(C);
}

/* The minimum-norm least-squares solution X of A X ≈ B is characterised by Aᵀ(AX - B) = 0 and X in
 * the row space of A: checks both, the latter as X = P X with P the projector onto the span of
 * Rᵀ's columns (R: a matrix with A's row space). */
static void check_min_norm(int m, int n, const double *A, int r, const double *B, const double *X,
                           const double *R, int k, double tol) {
  double *AX = matmul(A, false, X, false, m, n, r);
  for (size_t i = 0; i < (size_t)m * r; i++) AX[i] -= B[i];
  double *g = matmul(A, true, AX, false, n, m, r);
  double scale = max_abs(A, (size_t)m * n);
  g_assert_cmpfloat(max_abs(g, (size_t)n * r), <=, tol * scale * (scale * max_abs(X, (size_t)n * r) + max_abs(B, (size_t)m * r)));
  /* P X = Rᵀ (R Rᵀ)⁻¹ R X, with R Rᵀ solved by cholesky_solve. */
  double *RRt = matmul(R, false, R, true, k, n, k), *RX = matmul(R, false, X, false, k, n, r);
  double *Y = g_new(double, (size_t)k * r);
  GError *err = NULL;
  g_assert_true(lmwb_linalg_cholesky_solve(k, RRt, 0, r, RX, Y, NULL, &err));
  g_assert_no_error(err);
  double *PX = matmul(R, true, Y, false, n, k, r);
  g_assert_cmpfloat(max_diff(PX, X, (size_t)n * r), <=, tol * max_abs(X, (size_t)n * r));
  g_free(AX);
  g_free(g);
  g_free(RRt);
  g_free(RX);
  g_free(Y);
  g_free(PX);
}

static void test_lstsq(void) {
  GError *err = NULL;
  int rank = -1;
  /* Over-determined, full rank: X solves the normal equations AᵀA X = AᵀB. */
  {
    enum { M = 40, N = 7, R = 2 };
    double *A = randn(M, N, 21), *B = randn(M, R, 22), X[N * R], Xn[N * R];
    g_assert_true(lmwb_linalg_lstsq(M, N, A, R, B, X, -1, &rank, &err));
    g_assert_no_error(err);
    g_assert_cmpint(rank, ==, N);
    double *AtA = matmul(A, true, A, false, N, M, N), *AtB = matmul(A, true, B, false, N, M, R);
    g_assert_true(lmwb_linalg_cholesky_solve(N, AtA, 0, R, AtB, Xn, NULL, &err));
    double d = max_diff(X, Xn, N * R) / max_abs(Xn, N * R);
    g_assert_cmpfloat(d, <=, 1e-12);
    g_test_message("lstsq %dx%d: within %.2g of the normal equations", M, N, d);
    /* A consistent system is solved exactly. */
    double x0[N], b0[M], x[N];
    for (int j = 0; j < N; j++) x0[j] = j - 3;
    for (int i = 0; i < M; i++) {
      b0[i] = 0;
      for (int j = 0; j < N; j++) b0[i] += A[i * N + j] * x0[j];
    }
    g_assert_true(lmwb_linalg_lstsq(M, N, A, 1, b0, x, -1, NULL, &err));
    g_assert_cmpfloat(max_diff(x, x0, N), <=, 1e-13);
    g_free(A);
    g_free(B);
    g_free(AtA);
    g_free(AtB);
  }
  /* Under-determined, full rank: the minimum-norm solution Aᵀ(AAᵀ)⁻¹B, which solves A X = B. */
  {
    enum { M = 5, N = 12, R = 3 };
    double *A = randn(M, N, 23), *B = randn(M, R, 24), X[N * R], Y[M * R];
    g_assert_true(lmwb_linalg_lstsq(M, N, A, R, B, X, -1, &rank, &err));
    g_assert_no_error(err);
    g_assert_cmpint(rank, ==, M);
    double *AAt = matmul(A, false, A, true, M, N, M);
    g_assert_true(lmwb_linalg_cholesky_solve(M, AAt, 0, R, B, Y, NULL, &err));
    double *Xm = matmul(A, true, Y, false, N, M, R);
    double d = max_diff(X, Xm, N * R) / max_abs(Xm, N * R);
    g_assert_cmpfloat(d, <=, 1e-12);
    g_assert_cmpfloat(residual(A, M, N, X, R, B), <=, 1e-14);
    g_test_message("lstsq %dx%d: within %.2g of A^T (A A^T)^-1 B", M, N, d);
    g_free(A);
    g_free(B);
    g_free(AAt);
    g_free(Xm);
  }
  /* Rank deficient: A = L Rk with rank 4 in a 20×10; rank found, and the normal equations plus
   * the row-space condition (which make the solution unique) hold. */
  {
    enum { M = 20, N = 10, K = 4, R = 2 };
    double *L = randn(M, K, 25), *Rk = randn(K, N, 26), *A = matmul(L, false, Rk, false, M, K, N);
    double *B = randn(M, R, 27), X[N * R];
    g_assert_true(lmwb_linalg_lstsq(M, N, A, R, B, X, -1, &rank, &err));
    g_assert_no_error(err);
    g_assert_cmpint(rank, ==, K);
    check_min_norm(M, N, A, R, B, X, Rk, K, 1e-12);
    /* Aᵀ: under-determined and rank deficient; its row space is spanned by L's columns. */
    double At[N * M], Lt[K * M], *B2 = randn(N, R, 28), X2[M * R];
    for (int i = 0; i < M; i++) {
      for (int j = 0; j < N; j++) At[j * M + i] = A[i * N + j];
      for (int j = 0; j < K; j++) Lt[j * M + i] = L[i * K + j];
    }
    g_assert_true(lmwb_linalg_lstsq(N, M, At, R, B2, X2, -1, &rank, &err));
    g_assert_no_error(err);
    g_assert_cmpint(rank, ==, K);
    check_min_norm(N, M, At, R, B2, X2, Lt, K, 1e-12);
    g_free(B2);
    g_free(L);
    g_free(Rk);
    g_free(A);
    g_free(B);
  }
  /* rcond decides the rank: diag(1, 1e-12). */
  const double Dg[4] = {1, 0, 0, 1e-12}, b[2] = {2, 3};
  double x[2];
  g_assert_true(lmwb_linalg_lstsq(2, 2, Dg, 1, b, x, 1e-10, &rank, &err));
  g_assert_cmpint(rank, ==, 1);
  g_assert_cmpfloat(fabs(x[0] - 2), <=, 2 * EPS);
  g_assert_cmpfloat(x[1], ==, 0);
  g_assert_true(lmwb_linalg_lstsq(2, 2, Dg, 1, b, x, -1, &rank, &err));
  g_assert_cmpint(rank, ==, 2);
  g_assert_cmpfloat(fabs(x[1] - 3e12), <=, 3e12 * 1e-12);
  /* 1×1 and a single row (min-norm: x = aᵀ b / |a|²). */
  const double a1 = 2, b1 = 6, row[3] = {1, 2, 2};
  g_assert_true(lmwb_linalg_lstsq(1, 1, &a1, 1, &b1, x, -1, &rank, &err));
  g_assert_cmpfloat(fabs(x[0] - 3), <=, 4 * EPS);
  double x3[3];
  g_assert_true(lmwb_linalg_lstsq(1, 3, row, 1, &b1, x3, -1, &rank, &err));
  for (int j = 0; j < 3; j++) g_assert_cmpfloat(fabs(x3[j] - row[j] * 6 / 9), <=, 8 * EPS);
}

static void svd_checked(int m, int n, const double *A, double **U_out, double **S_out,
                        double **Vt_out) {
  int k = MIN(m, n);
  double *U = g_new(double, (size_t)m * k), *S = g_new(double, k), *Vt = g_new(double, (size_t)k * n);
  GError *err = NULL;
  g_assert_true(lmwb_linalg_svd(m, n, A, U, S, Vt, &err));
  g_assert_no_error(err);
  for (int i = 0; i < k; i++) {
    g_assert_cmpfloat(S[i], >=, 0);
    if (i) g_assert_cmpfloat(S[i - 1], >=, S[i]);
  }
  double *US = g_new(double, (size_t)m * k);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < k; j++) US[(size_t)i * k + j] = U[(size_t)i * k + j] * S[j];
  double *R = matmul(US, false, Vt, false, m, k, n);
  double scale = fmax(max_abs(A, (size_t)m * n), DBL_MIN), tol = 4.0 * MAX(m, n) * EPS;
  double rec = max_diff(R, A, (size_t)m * n) / scale, ou = orth_error(U, m, k, false),
         ov = orth_error(Vt, n, k, true);
  g_assert_cmpfloat(rec, <=, tol);
  g_assert_cmpfloat(ou, <=, tol);
  g_assert_cmpfloat(ov, <=, tol);
  g_test_message("svd %dx%d: |A - U S Vt|/|A| = %.2g, |U^T U - I| = %.2g, |Vt Vt^T - I| = %.2g (bound %.2g)",
                 m, n, rec, ou, ov, tol);
  double *S2 = g_new(double, k);
  g_assert_true(lmwb_linalg_svd(m, n, A, NULL, S2, NULL, &err));
  g_assert_no_error(err);
  g_assert_cmpfloat(max_diff(S, S2, k), <=, tol * S[0]);
  g_free(S2);
  g_free(US);
  g_free(R);
  *U_out = U;
  *S_out = S;
  *Vt_out = Vt;
}

static void test_svd(void) {
  double *U, *S, *Vt;
  /* Random, tall, wide and square; S² are the eigenvalues of AᵀA (or AAᵀ), in reverse. */
  const int shapes[][2] = {{30, 8}, {8, 30}, {15, 15}, {1, 1}, {1, 5}, {5, 1}};
  for (size_t t = 0; t < G_N_ELEMENTS(shapes); t++) {
    int m = shapes[t][0], n = shapes[t][1], k = MIN(m, n);
    double *A = randn(m, n, 31 + t);
    svd_checked(m, n, A, &U, &S, &Vt);
    double *Gm = m >= n ? matmul(A, true, A, false, n, m, n) : matmul(A, false, A, true, m, n, m);
    double *w = g_new(double, k);
    GError *err = NULL;
    g_assert_true(lmwb_linalg_eigh(k, Gm, w, NULL, &err));
    for (int i = 0; i < k; i++) g_assert_cmpfloat(fabs(S[i] * S[i] - w[k - 1 - i]), <=, 1e-13 * S[0] * S[0]);
    g_free(A);
    g_free(Gm);
    g_free(w);
    g_free(U);
    g_free(S);
    g_free(Vt);
  }
  /* [[1,2,3],[4,5,6]]: S² = (91 ± √8065)/2, the eigenvalues of AAᵀ = [[14,32],[32,77]]. */
  const double A23[6] = {1, 2, 3, 4, 5, 6};
  svd_checked(2, 3, A23, &U, &S, &Vt);
  g_assert_cmpfloat(fabs(S[0] - sqrt((91 + sqrt(8065.0)) / 2)), <=, 1e-14 * S[0]);
  g_assert_cmpfloat(fabs(S[1] - sqrt((91 - sqrt(8065.0)) / 2)), <=, 1e-13);
  g_free(U);
  g_free(S);
  g_free(Vt);
  /* Rank one u vᵀ (|u| = 3, |v| = 2): S = (6, 0, 0), U's first column ±u/3 and Vt's first row
   * ±v/2 with the same sign; a layout mix-up of U or Vt fails here (4×3, not square). */
  const double u[4] = {1, 2, 0, 2}, v[3] = {0, 2 * 0.6, 2 * 0.8};
  double R1[12];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) R1[i * 3 + j] = u[i] * v[j];
  svd_checked(4, 3, R1, &U, &S, &Vt);
  g_assert_cmpfloat(fabs(S[0] - 6), <=, 8 * EPS);
  g_assert_cmpfloat(S[1], <=, 1e-15);
  double su = 0, sv = 0;
  for (int i = 0; i < 4; i++) su += U[i * 3 + 0] * u[i] / 3;
  for (int j = 0; j < 3; j++) sv += Vt[0 * 3 + j] * v[j] / 2;
  g_assert_cmpfloat(fabs(fabs(su) - 1), <=, 4 * EPS);
  g_assert_cmpfloat(su * sv, >, 0);
  g_free(U);
  g_free(S);
  g_free(Vt);
}

static void test_symmetry(void) {
  GError *err = NULL;
  double A[9] = {1, 2, 3, 2, 5, 6, 3, 6, 9};
  g_assert_true(lmwb_linalg_sym_check(3, A, "t", &err));
  g_assert_no_error(err);
  /* Within the tolerance: accepted, and used as (A + Aᵀ)/2. */
  A[1] += 5e-6; /* 9 × 1e-6 = 9e-6 allowed */
  g_assert_true(lmwb_linalg_sym_check(3, A, "t", &err));
  double w[3], V[9], Asym[9];
  memcpy(Asym, A, sizeof A);
  lmwb_linalg_symmetrize(3, Asym);
  g_assert_cmpfloat(Asym[1], ==, Asym[3]);
  g_assert_cmpfloat(fabs(Asym[1] - (2 + 2.5e-6)), <=, 4 * EPS);
  g_assert_true(lmwb_linalg_eigh(3, A, w, V, &err));
  double *Rb = rebuild_sym(3, V, w);
  g_assert_cmpfloat(max_diff(Rb, Asym, 9), <=, 3 * 4 * EPS * 9);
  g_free(Rb);
  /* Beyond it: refused, naming the worst pair. */
  A[5] = 6.5;
  g_assert_false(lmwb_linalg_sym_check(3, A, "t", &err));
  tu_assert_input_error(err, "t: A is not symmetric", "A[2,1]", "A[1,2]", "0.5");
  g_clear_error(&err);
  g_assert_false(lmwb_linalg_eigh(3, A, w, V, &err));
  tu_assert_input_error(err, "eigh: A is not symmetric");
  g_clear_error(&err);
  g_assert_false(lmwb_linalg_cholesky_solve(3, A, 0, 1, w, w, NULL, &err));
  tu_assert_input_error(err, "cholesky_solve: A is not symmetric");
  g_clear_error(&err);
}

/* Every function refuses bad sizes (before reading the buffers: the buffers here are tiny),
 * NULLs and non-finite entries with LMWB_ERROR_INPUT naming them. */
static void test_bad_input(void) {
  GError *err = NULL;
  double A[4] = {1, 0, 0, 1}, b[2] = {1, 1}, o[4], w[2];
  int rank;
#define REFUSED(call, ...)                      \
  do {                                          \
    g_assert_false(call);                       \
    tu_assert_input_error(err, __VA_ARGS__);    \
    g_clear_error(&err);                        \
  } while (0)
  REFUSED(lmwb_linalg_eigh(0, A, w, o, &err), "eigh", "0x0", "at least 1");
  REFUSED(lmwb_linalg_eigh(-3, A, w, o, &err), "eigh", "-3x-3");
  REFUSED(lmwb_linalg_eigh(50000, A, w, o, &err), "eigh", "50000x50000", "32-bit");
  REFUSED(lmwb_linalg_eigh(2, NULL, w, o, &err), "eigh", "A is NULL");
  REFUSED(lmwb_linalg_eigh(2, A, NULL, o, &err), "eigh", "evals is NULL");
  REFUSED(lmwb_linalg_sym_check(INT_MAX, A, NULL, &err), "matrix", "32-bit");
  double bad[4] = {1, 0, 0, 1};
  bad[3] = NAN;
  REFUSED(lmwb_linalg_eigh(2, bad, w, o, &err), "eigh: A[1,1] is NaN");
  bad[3] = 1;
  bad[1] = bad[2] = -INFINITY;
  REFUSED(lmwb_linalg_eigh(2, bad, w, o, &err), "eigh: A[0,1] is -Inf");

  REFUSED(lmwb_linalg_cholesky_solve(0, A, 0, 1, b, o, NULL, &err), "cholesky_solve", "at least 1");
  REFUSED(lmwb_linalg_cholesky_solve(2, A, 0, 0, b, o, NULL, &err), "cholesky_solve", "B is 2x0");
  REFUSED(lmwb_linalg_cholesky_solve(60000, A, 0, 1, b, o, NULL, &err), "cholesky_solve", "32-bit");
  REFUSED(lmwb_linalg_cholesky_solve(2, A, 0, 1 << 30, b, o, NULL, &err), "B is 2x1073741824", "32-bit");
  REFUSED(lmwb_linalg_cholesky_solve(2, A, -1, 1, b, o, NULL, &err), "ridge", ">= 0");
  REFUSED(lmwb_linalg_cholesky_solve(2, A, NAN, 1, b, o, NULL, &err), "ridge", "finite");
  REFUSED(lmwb_linalg_cholesky_solve(2, A, 0, 1, NULL, o, NULL, &err), "B is NULL");
  REFUSED(lmwb_linalg_cholesky_solve(2, A, 0, 1, b, NULL, NULL, &err), "X is NULL");
  REFUSED(lmwb_linalg_cholesky_solve(2, bad, 0, 1, b, o, NULL, &err), "cholesky_solve: A[0,1] is -Inf");
  double nb[2] = {1, NAN};
  REFUSED(lmwb_linalg_cholesky_solve(2, A, 0, 1, nb, o, NULL, &err), "cholesky_solve: B[1,0] is NaN");

  REFUSED(lmwb_linalg_lstsq(0, 2, A, 1, b, o, -1, &rank, &err), "lstsq", "A is 0x2");
  REFUSED(lmwb_linalg_lstsq(2, 2, A, -1, b, o, -1, &rank, &err), "lstsq", "B is 2x-1");
  REFUSED(lmwb_linalg_lstsq(70000, 70000, A, 1, b, o, -1, &rank, &err), "lstsq", "A is 70000x70000");
  REFUSED(lmwb_linalg_lstsq(1, 1 << 29, A, 8, b, o, -1, &rank, &err), "lstsq", "X is", "32-bit");
  REFUSED(lmwb_linalg_lstsq(2, 2, A, 1, b, o, NAN, &rank, &err), "lstsq: rcond is NaN");
  REFUSED(lmwb_linalg_lstsq(2, 2, A, 1, nb, o, -1, &rank, &err), "lstsq: B[1,0] is NaN");
  REFUSED(lmwb_linalg_lstsq(2, 2, bad, 1, b, o, -1, &rank, &err), "lstsq: A[0,1] is -Inf");
  REFUSED(lmwb_linalg_lstsq(2, 2, A, 1, b, NULL, -1, &rank, &err), "lstsq: X is NULL");

  REFUSED(lmwb_linalg_svd(2, 0, A, o, w, o, &err), "svd", "A is 2x0");
  REFUSED(lmwb_linalg_svd(1 << 16, 1 << 16, A, o, w, o, &err), "svd", "32-bit");
  REFUSED(lmwb_linalg_svd(2, 2, A, o, w, NULL, &err), "svd", "both U and Vt");
  REFUSED(lmwb_linalg_svd(2, 2, A, o, NULL, o, &err), "svd: S is NULL");
  REFUSED(lmwb_linalg_svd(2, 2, bad, o, w, o, &err), "svd: A[0,1] is -Inf");
#undef REFUSED
  /* The memory budget is asked before allocating. */
  g_setenv("LMWB_MEMORY_LIMIT", "1000", TRUE);
  double big[256] = {0}; /* 2 KiB of copy for LAPACK */
  for (int i = 0; i < 16; i++) big[i * 16 + i] = 1;
  double w8[16];
  g_assert_false(lmwb_linalg_eigh(16, big, w8, NULL, &err));
  tu_assert_input_error(err, "eigh", "memory");
  g_clear_error(&err);
  g_unsetenv("LMWB_MEMORY_LIMIT");
  g_assert_true(lmwb_linalg_eigh(16, big, w8, NULL, &err));
  g_assert_no_error(err);
}

/* Reentrancy: threads decomposing, solving and factoring their own matrices at the same time get
 * bit for bit what one thread gets alone. */
enum { TH_N = 48, TH_THREADS = 4, TH_ROUNDS = 4 };

static gpointer thread_work(gpointer data) {
  const double *A = data;
  double *out = g_new(double, TH_N + TH_N * TH_N + TH_N * 2 + TH_N);
  double *w = out, *V = w + TH_N, *X = V + TH_N * TH_N, *S = X + TH_N * 2, B[TH_N * 2];
  for (int i = 0; i < TH_N * 2; i++) B[i] = i % 7 - 3;
  GError *err = NULL;
  for (int r = 0; r < TH_ROUNDS; r++) {
    if (!lmwb_linalg_eigh(TH_N, A, w, V, &err) ||
        !lmwb_linalg_cholesky_solve(TH_N, A, TH_N * 8.0, 2, B, X, NULL, &err) ||
        !lmwb_linalg_svd(TH_N, TH_N, A, NULL, S, NULL, &err))
      g_error("thread: %s", err->message);
  }
  return out;
}

static void test_threads(void) {
  double *A[TH_THREADS], *alone[TH_THREADS];
  GThread *t[TH_THREADS];
  size_t bytes = sizeof(double) * (TH_N + TH_N * TH_N + TH_N * 2 + TH_N);
  for (int k = 0; k < TH_THREADS; k++) {
    double *G = randn(TH_N, TH_N, 500 + k);
    A[k] = g_new(double, TH_N * TH_N);
    for (int i = 0; i < TH_N; i++)
      for (int j = 0; j < TH_N; j++) A[k][i * TH_N + j] = G[i * TH_N + j] + G[j * TH_N + i];
    g_free(G);
    alone[k] = thread_work(A[k]);
  }
  for (int k = 0; k < TH_THREADS; k++) t[k] = g_thread_new("linalg", thread_work, A[k]);
  for (int k = 0; k < TH_THREADS; k++) {
    double *got = g_thread_join(t[k]);
    g_assert_cmpmem(got, bytes, alone[k], bytes);
    g_free(got);
    g_free(alone[k]);
    g_free(A[k]);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/linalg/eigh-closed-form", test_eigh_closed_form);
  g_test_add_func("/linalg/eigh-random", test_eigh_random);
  g_test_add_func("/linalg/eigh-repeated", test_eigh_repeated);
  g_test_add_func("/linalg/cholesky", test_cholesky);
  g_test_add_func("/linalg/lstsq", test_lstsq);
  g_test_add_func("/linalg/svd", test_svd);
  g_test_add_func("/linalg/symmetry", test_symmetry);
  g_test_add_func("/linalg/bad-input", test_bad_input);
  g_test_add_func("/linalg/threads", test_threads);
  return g_test_run();
}
