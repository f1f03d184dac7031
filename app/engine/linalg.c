/* Float64 linear algebra over LAPACK (see linalg.h). No lapacke.h: the Fortran routines are
 * declared here with the Fortran calling convention (every argument by pointer, INTEGER = int as
 * in the LP64 OpenBLAS/LAPACK we link, and one trailing hidden length per CHARACTER argument, a
 * size_t as gfortran passes it). Row-major buffers are LAPACK's column-major transposes: a
 * symmetric matrix is its own transpose, and the SVD of the transpose is the SVD with U and Vt
 * swapped; only lstsq and the right-hand sides of a solve are transposed explicitly. */
#include "app/engine/linalg.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "app/core/errors.h"
#include "app/core/memory.h"

extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                    double *w, double *work, const int *lwork, int *iwork, const int *liwork,
                    int *info, size_t jobz_len, size_t uplo_len);
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info,
                    size_t uplo_len);
extern void dpocon_(const char *uplo, const int *n, const double *a, const int *lda,
                    const double *anorm, double *rcond, double *work, int *iwork, int *info,
                    size_t uplo_len);
extern void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a,
                    const int *lda, double *b, const int *ldb, int *info, size_t uplo_len);
extern void dgelsd_(const int *m, const int *n, const int *nrhs, double *a, const int *lda,
                    double *b, const int *ldb, double *s, const double *rcond, int *rank,
                    double *work, const int *lwork, int *iwork, int *info);
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda,
                    double *s, double *u, const int *ldu, double *vt, const int *ldvt,
                    double *work, const int *lwork, int *iwork, int *info, size_t jobz_len);

/* ---- checks and allocation ------------------------------------------------------------- */

/* rows, cols >= 1 and rows×cols within LMWB_LINALG_MAX_ELEMENTS; name is the matrix ("A"). */
static gboolean check_shape(const char *fn, const char *name, int rows, int cols,
                            GError **error) {
  if (rows < 1 || cols < 1) {
    lmwb_input_error(error, "%s: %s is %dx%d; sizes must be at least 1", fn, name, rows, cols);
    return FALSE;
  }
  if ((long long)rows * cols > LMWB_LINALG_MAX_ELEMENTS) {
    lmwb_input_error(error, "%s: %s is %dx%d = %lld elements, more than the %lld LAPACK's 32-bit "
                     "integers can index", fn, name, rows, cols, (long long)rows * cols,
                     LMWB_LINALG_MAX_ELEMENTS);
    return FALSE;
  }
  return TRUE;
}

static gboolean check_given(const char *fn, const char *name, const void *p, GError **error) {
  if (!p) lmwb_input_error(error, "%s: %s is NULL", fn, name);
  return p != NULL;
}

static gboolean check_finite(const char *fn, const char *name, int rows, int cols,
                             const double *M, GError **error) {
  for (long long i = 0; i < (long long)rows * cols; i++) {
    if (!isfinite(M[i])) {
      lmwb_input_error(error, "%s: %s[%lld,%lld] is %s", fn, name, i / cols, i % cols,
                       isnan(M[i]) ? "NaN" : M[i] > 0 ? "+Inf" : "-Inf");
      return FALSE;
    }
  }
  return TRUE;
}

/* A new array of `count` doubles (or ints with elsize 4), within the memory budget; else an
 * input error. */
static void *try_alloc(const char *fn, long long count, size_t elsize, GError **error) {
  if (count < 1) count = 1;
  if (count > LMWB_LINALG_MAX_ELEMENTS) {
    lmwb_input_error(error, "%s: a workspace of %lld elements is more than the %lld LAPACK's "
                     "32-bit integers can index", fn, count, LMWB_LINALG_MAX_ELEMENTS);
    return NULL;
  }
  uint64_t bytes = (uint64_t)count * elsize;
  char *what = g_strdup_printf("%s (workspace of %lld elements)", fn, count);
  void *p = lmwb_memory_check(bytes, what, error) ? g_try_malloc((gsize)bytes) : NULL;
  if (!p && error && !*error)
    lmwb_input_error(error, "%s: out of memory for %" G_GUINT64_FORMAT " bytes", what, bytes);
  g_free(what);
  return p;
}

/* A workspace size LAPACK's query returned (as a double) as an int, at least `minimum`. */
static gboolean query_size(const char *fn, const char *routine, double q, int minimum, int *out,
                           GError **error) {
  if (!(q <= (double)INT_MAX)) {
    lmwb_input_error(error, "%s: LAPACK %s wants a workspace of %.0f elements, more than its "
                     "32-bit integers can index", fn, routine, q);
    return FALSE;
  }
  *out = (int)q > minimum ? (int)q : minimum;
  return TRUE;
}

/* TRUE (with an error) when info < 0: LAPACK says argument -info of ours is illegal (a bug here,
 * not the caller's). */
static gboolean rejected(const char *fn, const char *routine, int info, GError **error) {
  if (info >= 0) return FALSE;
  g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED,
              "%s: LAPACK %s rejected its argument %d (internal error)", fn, routine, -info);
  return TRUE;
}

/* Row-major rows×cols src to column-major dst with leading dimension ld >= rows, and back. */
static void to_col_major(int rows, int cols, const double *src, int ld, double *dst) {
  for (size_t i = 0; i < (size_t)rows; i++)
    for (size_t j = 0; j < (size_t)cols; j++) dst[j * ld + i] = src[i * cols + j];
}

static void from_col_major(int rows, int cols, const double *src, int ld, double *dst) {
  for (size_t i = 0; i < (size_t)rows; i++)
    for (size_t j = 0; j < (size_t)cols; j++) dst[i * cols + j] = src[j * ld + i];
}

/* ---- symmetric matrices ---------------------------------------------------------------- */

gboolean lmwb_linalg_sym_check(int n, const double *A, const char *what, GError **error) {
  if (!what) what = "matrix";
  if (!check_shape(what, "A", n, n, error) || !check_given(what, "A", A, error) ||
      !check_finite(what, "A", n, n, A, error))
    return FALSE;
  double amax = 0, worst = 0;
  int wi = 0, wj = 0;
  for (long long k = 0; k < (long long)n * n; k++) amax = fmax(amax, fabs(A[k]));
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < i; j++) {
      double d = fabs(A[(size_t)i * n + j] - A[(size_t)j * n + i]);
      if (d > worst) {
        worst = d;
        wi = i;
        wj = j;
      }
    }
  }
  if (worst > LMWB_LINALG_SYM_RTOL * amax) {
    lmwb_input_error(error, "%s: A is not symmetric: |A[%d,%d] - A[%d,%d]| = %.3g exceeds %g * "
                     "max|A| = %.3g", what, wi, wj, wj, wi, worst, LMWB_LINALG_SYM_RTOL,
                     LMWB_LINALG_SYM_RTOL * amax);
    return FALSE;
  }
  return TRUE;
}

/* dst = (src + srcᵀ)/2 + shift·I; dst may be src. */
static void symmetrized_copy(int n, const double *src, double shift, double *dst) {
  for (size_t i = 0; i < (size_t)n; i++) {
    for (size_t j = 0; j < i; j++) {
      double s = 0.5 * (src[i * n + j] + src[j * n + i]);
      dst[i * n + j] = dst[j * n + i] = s;
    }
    dst[i * n + i] = src[i * n + i] + shift;
  }
}

void lmwb_linalg_symmetrize(int n, double *A) {
  if (n > 0 && A) symmetrized_copy(n, A, 0.0, A);
}

/* Square in-place transpose. */
static void transpose_square(int n, double *M) {
  for (size_t i = 0; i < (size_t)n; i++) {
    for (size_t j = 0; j < i; j++) {
      double t = M[i * n + j];
      M[i * n + j] = M[j * n + i];
      M[j * n + i] = t;
    }
  }
}

gboolean lmwb_linalg_eigh(int n, const double *A, double *evals, double *evecs, GError **error) {
  const char *fn = "eigh";
  if (!check_shape(fn, "A", n, n, error) || !check_given(fn, "evals", evals, error) ||
      !lmwb_linalg_sym_check(n, A, fn, error))
    return FALSE;
  const char *jobz = evecs ? "V" : "N";
  gboolean ok = FALSE;
  double *work = NULL;
  int *iwork = NULL;
  double *a = evecs ? evecs : try_alloc(fn, (long long)n * n, sizeof(double), error);
  if (!a) return FALSE;
  symmetrized_copy(n, A, 0.0, a);
  int info = 0, lwork = -1, liwork = -1, iq = 0;
  double wq = 0;
  dsyevd_(jobz, "L", &n, a, &n, evals, &wq, &lwork, &iq, &liwork, &info, 1, 1);
  if (rejected(fn, "dsyevd", info, error)) goto out;
  /* The documented minimum: 1 + 6n + 2n² (vectors) or 2n + 1 doubles, 3 + 5n or 1 ints. */
  long long lw_min = evecs ? 1 + 6LL * n + 2LL * n * n : 2LL * n + 1;
  if (!query_size(fn, "dsyevd", fmax(wq, (double)lw_min), 1, &lwork, error) ||
      !query_size(fn, "dsyevd", (double)iq, evecs ? 3 + 5 * n : 1, &liwork, error))
    goto out;
  work = try_alloc(fn, lwork, sizeof(double), error);
  iwork = work ? try_alloc(fn, liwork, sizeof(int), error) : NULL;
  if (!iwork) goto out;
  dsyevd_(jobz, "L", &n, a, &n, evals, work, &lwork, iwork, &liwork, &info, 1, 1);
  if (rejected(fn, "dsyevd", info, error)) goto out;
  if (info > 0) {
    lmwb_input_error(error, "%s: LAPACK dsyevd did not converge (%d eigenvalues failed)", fn,
                     info);
    goto out;
  }
  /* Column-major columns are row-major rows: transpose so eigenvector j is column j. */
  if (evecs) transpose_square(n, evecs);
  ok = TRUE;
out:
  if (a != evecs) g_free(a);
  g_free(work);
  g_free(iwork);
  return ok;
}

/* ---- Cholesky solve -------------------------------------------------------------------- */

gboolean lmwb_linalg_cholesky_solve(int n, const double *A, double ridge, int nrhs,
                                    const double *B, double *X, double *rcond_out,
                                    GError **error) {
  const char *fn = "cholesky_solve";
  if (!check_shape(fn, "B", n, nrhs, error) || !check_given(fn, "B", B, error) ||
      !check_given(fn, "X", X, error))
    return FALSE;
  if (!isfinite(ridge) || ridge < 0) {
    lmwb_input_error(error, "%s: ridge must be finite and >= 0 (got %g)", fn, ridge);
    return FALSE;
  }
  if (!lmwb_linalg_sym_check(n, A, fn, error) || !check_finite(fn, "B", n, nrhs, B, error))
    return FALSE;
  gboolean ok = FALSE;
  double *work = NULL, *b = NULL;
  int *iwork = NULL;
  double *l = try_alloc(fn, (long long)n * n, sizeof(double), error);
  if (!l) return FALSE;
  symmetrized_copy(n, A, ridge, l);
  /* 1-norm of the matrix factorised (for the condition estimate): the largest column sum. */
  double anorm = 0;
  for (size_t j = 0; j < (size_t)n; j++) {
    double s = 0;
    for (size_t i = 0; i < (size_t)n; i++) s += fabs(l[i * n + j]);
    anorm = fmax(anorm, s);
  }
  int info = 0;
  dpotrf_("L", &n, l, &n, &info, 1);
  if (rejected(fn, "dpotrf", info, error)) goto out;
  if (info > 0) {
    lmwb_input_error(error, "%s: A%s is not positive definite (pivot %d of %d: its leading "
                     "%dx%d minor is not positive)", fn, ridge > 0 ? " + ridge*I" : "", info, n,
                     info, info);
    goto out;
  }
  double rcond = 0;
  work = try_alloc(fn, 3LL * n, sizeof(double), error);
  iwork = work ? try_alloc(fn, n, sizeof(int), error) : NULL;
  if (!iwork) goto out;
  dpocon_("L", &n, l, &n, &anorm, &rcond, work, iwork, &info, 1);
  if (rejected(fn, "dpocon", info, error)) goto out;
  if (!(rcond >= LMWB_LINALG_MIN_RCOND)) {
    lmwb_input_error(error, "%s: A%s is numerically singular (reciprocal condition number %.3g < "
                     "%.3g)", fn, ridge > 0 ? " + ridge*I" : "", rcond, LMWB_LINALG_MIN_RCOND);
    goto out;
  }
  /* Right-hand sides to column-major (column r of B is contiguous), solve, and back. */
  b = try_alloc(fn, (long long)n * nrhs, sizeof(double), error);
  if (!b) goto out;
  to_col_major(n, nrhs, B, n, b);
  dpotrs_("L", &n, &nrhs, l, &n, b, &n, &info, 1);
  if (rejected(fn, "dpotrs", info, error)) goto out;
  from_col_major(n, nrhs, b, n, X);
  if (rcond_out) *rcond_out = rcond;
  ok = TRUE;
out:
  g_free(l);
  g_free(work);
  g_free(iwork);
  g_free(b);
  return ok;
}

/* ---- least squares --------------------------------------------------------------------- */

gboolean lmwb_linalg_lstsq(int m, int n, const double *A, int nrhs, const double *B, double *X,
                           double rcond, int *rank_out, GError **error) {
  const char *fn = "lstsq";
  int ldb = m > n ? m : n, k = m < n ? m : n;
  if (!check_shape(fn, "A", m, n, error) || !check_shape(fn, "B", m, nrhs, error) ||
      !check_shape(fn, "X", n, nrhs, error) || !check_shape(fn, "B's workspace", ldb, nrhs, error) ||
      !check_given(fn, "A", A, error) || !check_given(fn, "B", B, error) ||
      !check_given(fn, "X", X, error))
    return FALSE;
  if (isnan(rcond)) {
    lmwb_input_error(error, "%s: rcond is NaN", fn);
    return FALSE;
  }
  if (rcond < 0) rcond = DBL_EPSILON * ldb;
  if (!check_finite(fn, "A", m, n, A, error) || !check_finite(fn, "B", m, nrhs, B, error))
    return FALSE;
  gboolean ok = FALSE;
  double *a = try_alloc(fn, (long long)m * n, sizeof(double), error);
  double *b = a ? try_alloc(fn, (long long)ldb * nrhs, sizeof(double), error) : NULL;
  double *s = b ? try_alloc(fn, k, sizeof(double), error) : NULL;
  double *work = NULL;
  int *iwork = NULL;
  if (!s) goto out;
  /* A and B to column-major; B padded to max(m, n) rows, where dgelsd leaves X. */
  to_col_major(m, n, A, m, a);
  memset(b, 0, sizeof(double) * (size_t)ldb * nrhs);
  to_col_major(m, nrhs, B, ldb, b);
  int info = 0, rank = 0, lwork = -1, iq = 0, liwork = 0;
  double wq = 0;
  dgelsd_(&m, &n, &nrhs, a, &m, b, &ldb, s, &rcond, &rank, &wq, &lwork, &iq, &info);
  if (rejected(fn, "dgelsd", info, error)) goto out;
  /* The documented minimum LIWORK (older LAPACKs do not return it from the query):
   * 3·k·nlvl + 11·k with nlvl = max(INT(log2(k / (SMLSIZ + 1))) + 1, 0), SMLSIZ = 25, INT
   * truncating toward zero as Fortran's does. */
  int nlvl = (int)(log2((double)k / 26.0)) + 1;
  if (nlvl < 0) nlvl = 0;
  if (!query_size(fn, "dgelsd", wq, 1, &lwork, error) ||
      !query_size(fn, "dgelsd", (double)iq, 3 * k * nlvl + 11 * k, &liwork, error))
    goto out;
  work = try_alloc(fn, lwork, sizeof(double), error);
  iwork = work ? try_alloc(fn, liwork, sizeof(int), error) : NULL;
  if (!iwork) goto out;
  dgelsd_(&m, &n, &nrhs, a, &m, b, &ldb, s, &rcond, &rank, work, &lwork, iwork, &info);
  if (rejected(fn, "dgelsd", info, error)) goto out;
  if (info > 0) {
    lmwb_input_error(error, "%s: LAPACK dgelsd's SVD did not converge (%d off-diagonal elements "
                     "left)", fn, info);
    goto out;
  }
  from_col_major(n, nrhs, b, ldb, X);
  if (rank_out) *rank_out = rank;
  ok = TRUE;
out:
  g_free(a);
  g_free(b);
  g_free(s);
  g_free(work);
  g_free(iwork);
  return ok;
}

/* ---- SVD ------------------------------------------------------------------------------- */

gboolean lmwb_linalg_svd(int m, int n, const double *A, double *U, double *S, double *Vt,
                         GError **error) {
  const char *fn = "svd";
  int k = m < n ? m : n;
  if (!check_shape(fn, "A", m, n, error) || !check_given(fn, "A", A, error) ||
      !check_given(fn, "S", S, error))
    return FALSE;
  if (!U != !Vt) {
    lmwb_input_error(error, "%s: give both U and Vt, or neither (singular values only)", fn);
    return FALSE;
  }
  if (!check_finite(fn, "A", m, n, A, error)) return FALSE;
  /* The row-major m×n A is the column-major n×m Aᵀ = U' S VT', so A = VT'ᵀ S U'ᵀ: LAPACK's VT'
   * (k×m, column-major) is our U (m×k, row-major) and its U' (n×k) is our Vt (k×n), as laid out
   * in memory; no transposes. */
  const char *jobz = U ? "S" : "N";
  int ldu = U ? n : 1, ldvt = U ? k : 1, info = 0, lwork = -1;
  double dummy = 0, wq = 0, *work = NULL;
  double *u = U ? Vt : &dummy, *vt = U ? U : &dummy;
  gboolean ok = FALSE;
  double *a = try_alloc(fn, (long long)m * n, sizeof(double), error);
  int *iwork = a ? try_alloc(fn, 8LL * k, sizeof(int), error) : NULL;
  if (!iwork) goto out;
  memcpy(a, A, sizeof(double) * (size_t)m * n);
  dgesdd_(jobz, &n, &m, a, &n, S, u, &ldu, vt, &ldvt, &wq, &lwork, iwork, &info, 1);
  if (rejected(fn, "dgesdd", info, error)) goto out;
  if (!query_size(fn, "dgesdd", wq, 1, &lwork, error)) goto out;
  work = try_alloc(fn, lwork, sizeof(double), error);
  if (!work) goto out;
  dgesdd_(jobz, &n, &m, a, &n, S, u, &ldu, vt, &ldvt, work, &lwork, iwork, &info, 1);
  if (rejected(fn, "dgesdd", info, error)) goto out;
  if (info > 0) {
    lmwb_input_error(error, "%s: LAPACK dgesdd did not converge (info %d)", fn, info);
    goto out;
  }
  ok = TRUE;
out:
  g_free(a);
  g_free(iwork);
  g_free(work);
  return ok;
}
