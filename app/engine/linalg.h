/* Dense float64 linear algebra over LAPACK, for the editors: symmetric eigendecomposition (K-FAC
 * factors), Cholesky solves (ROME's C u = k, MEMIT's ridge-regularised solves), minimum-norm least
 * squares and thin SVDs (rank checks of edits).
 *
 * Contract for every function:
 *  - Matrices are dense row-major double buffers: element (i, j) of an m×n matrix M is
 *    M[i*n + j]. Sizes are ints given by the caller. The column-major layout LAPACK wants is
 *    handled inside; callers never transpose.
 *  - Inputs are never modified (only lmwb_linalg_symmetrize writes to its argument). Outputs are
 *    overwritten and must not overlap the inputs, except where a function says so.
 *  - Every size must be >= 1 and every matrix (inputs, outputs and LAPACK's workspace) must hold
 *    at most LMWB_LINALG_MAX_ELEMENTS elements: the LAPACK linked here counts with 32-bit
 *    integers. Larger or non-positive sizes, NULL buffers, non-finite entries (NaN, ±Inf) and
 *    memory the budget (app/core/memory.h) cannot give are refused before any work with
 *    LMWB_ERROR_INPUT naming the function and what was wrong ("eigh: A[3,5] is NaN").
 *  - Data LAPACK cannot handle (not positive definite, no convergence) is LMWB_ERROR_INPUT too,
 *    with the reason; LAPACK refusing one of our arguments (a bug here) is LMWB_ERROR_FAILED.
 *    Nothing aborts; on failure the outputs hold unspecified values.
 *  - Reentrant: no static state; any thread may call at any time. LAPACK/BLAS run on OpenBLAS's
 *    threads (OMP_NUM_THREADS).
 * Like numpy.linalg (eigh, solve, lstsq, svd), which tests/unit/app/engine/test_linalg_numpy.py checks
 * them against. */
#pragma once
#include <glib.h>
#include <limits.h>
#include <stdbool.h>

/* The most elements one matrix or workspace may have (LAPACK's 32-bit integers). */
#define LMWB_LINALG_MAX_ELEMENTS ((long long)INT_MAX)

/* Symmetry tolerance: A counts as symmetric when every |A[i,j] - A[j,i]| <= LMWB_LINALG_SYM_RTOL
 * × max|A|. Loose enough for sums of products rounded in a different order in float64, tight
 * enough to refuse a matrix that is not symmetric at all (a wrong layout, a wrong factor).
 * Factors accumulated in float32 over many samples can be further off: symmetrise them
 * (lmwb_linalg_symmetrize) first. Accepted matrices are used as (A + Aᵀ)/2, so the result never
 * depends on which triangle LAPACK reads. */
#define LMWB_LINALG_SYM_RTOL 1e-6

/* Checks that the n×n matrix A is finite and symmetric within LMWB_LINALG_SYM_RTOL; else an
 * input error "<what>: A[i,j] is NaN" / "<what>: A is not symmetric: |A[i,j] - A[j,i]| = …
 * exceeds 1e-06 * max|A| = …" naming the worst pair. `what` prefixes the message (NULL: "matrix"). */
gboolean lmwb_linalg_sym_check(int n, const double *A, const char *what, GError **error);

/* A ← (A + Aᵀ)/2 in place (n×n); for factors summed in float32 before they are decomposed. */
void lmwb_linalg_symmetrize(int n, double *A);

/* Symmetric eigendecomposition A = V diag(evals) Vᵀ (LAPACK dsyevd, divide and conquer), like
 * numpy.linalg.eigh:
 *   evals [n]    eigenvalues in ASCENDING order;
 *   evecs [n×n]  orthonormal eigenvectors as COLUMNS: evecs[i*n + j] is component i of the
 *                eigenvector of evals[j]. Each eigenvector's sign (and, for a repeated
 *                eigenvalue, the basis of its eigenspace) is whatever LAPACK gives.
 * evecs may be NULL (eigenvalues only, faster) and may be A itself (decomposed in place: A is
 * then overwritten by the eigenvectors). A must pass lmwb_linalg_sym_check. */
gboolean lmwb_linalg_eigh(int n, const double *A, double *evals, double *evecs, GError **error);

/* Solves (A + ridge·I) X = B for symmetric positive definite A (LAPACK dpotrf, dpocon, dpotrs):
 *   A [n×n], B [n×nrhs] (one right-hand side per column; nrhs 1: B is a vector), X [n×nrhs];
 *   X may be B itself. ridge >= 0 (finite) is added to the diagonal first: MEMIT's λ, or the
 *   way to make a positive semidefinite covariance solvable; 0 for a plain solve.
 * A (+ ridge) must pass lmwb_linalg_sym_check and be positive definite; when the Cholesky
 * factorisation stops at pivot k (1-based: the leading k×k minor is not positive definite) the
 * input error says "not positive definite (pivot k of n)". A factorisation that succeeds but
 * whose reciprocal condition number (1-norm estimate) is below LMWB_LINALG_MIN_RCOND is refused
 * as "numerically singular" with the estimate: such an X would be noise (a singular covariance
 * that rounding made look positive). rcond_out (may be NULL) receives the estimate on success. */
#define LMWB_LINALG_MIN_RCOND 2.220446049250313e-16 /* DBL_EPSILON */
gboolean lmwb_linalg_cholesky_solve(int n, const double *A, double ridge, int nrhs,
                                    const double *B, double *X, double *rcond_out,
                                    GError **error);

/* Minimum-norm least squares, like numpy.linalg.lstsq (LAPACK dgelsd, SVD based): X minimises
 * ||A X - B|| (Frobenius, i.e. each column separately) and, among the minimisers, ||X||:
 *   A [m×n], B [m×nrhs], X [n×nrhs]; m may be larger (over-determined), smaller
 *   (under-determined) or equal to n, and A may be rank deficient.
 * Singular values s_i <= rcond × s_max count as zero; rcond < 0 means numpy's default
 * DBL_EPSILON × max(m, n). rank_out (may be NULL) receives the effective rank. */
gboolean lmwb_linalg_lstsq(int m, int n, const double *A, int nrhs, const double *B, double *X,
                           double rcond, int *rank_out, GError **error);

/* Thin SVD A = U diag(S) Vt, like numpy.linalg.svd(A, full_matrices=False) (LAPACK dgesdd):
 *   k = min(m, n); A [m×n], U [m×k] (orthonormal columns), S [k] singular values, DESCENDING
 *   and >= 0, Vt [k×n] (orthonormal rows). Signs of singular vector pairs are LAPACK's.
 * U and Vt may both be NULL (singular values only); giving just one is an input error. Meant
 * for small matrices (tests, rank checks): besides a copy of A, LAPACK's workspace is several k²
 * doubles plus a few max(m, n)·k. */
gboolean lmwb_linalg_svd(int m, int n, const double *A, double *U, double *S, double *Vt,
                         GError **error);
