/* Runs one app/engine/linalg.h operation on .npy files, for test_linalg_numpy.py:
 *   linalg_driver eigh DIR            A.npy -> w.npy, V.npy
 *   linalg_driver eigvals DIR         A.npy -> w.npy
 *   linalg_driver solve DIR RIDGE     A.npy, B.npy -> X.npy, rcond.npy
 *   linalg_driver lstsq DIR RCOND     A.npy, B.npy -> X.npy, rank.npy
 *   linalg_driver svd DIR             A.npy -> U.npy, S.npy, Vt.npy
 *   linalg_driver svdvals DIR         A.npy -> S.npy
 * Matrices are 2-d float64. Errors go to stderr as "linalg_driver: MESSAGE" with exit status 2
 * for input errors (lmwb_error_exit_status), 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/core/errors.h"
#include "app/engine/linalg.h"
#include "app/formats/npy.h"

typedef struct {
  double *data;
  int rows, cols;
} Mat;

static gboolean load(const char *dir, const char *name, Mat *m, GError **error) {
  g_autofree char *path = g_build_filename(dir, name, NULL);
  int64_t shape[LMWB_NPY_MAX_DIMS];
  int nd = 0;
  m->data = lmwb_npy_read_f64(path, shape, &nd, error);
  if (!m->data) return FALSE;
  if (nd != 2 || shape[0] > INT_MAX || shape[1] > INT_MAX) {
    lmwb_input_error(error, "%s: expected a 2-d array with int sizes", path);
    return FALSE;
  }
  m->rows = (int)shape[0];
  m->cols = (int)shape[1];
  return TRUE;
}

static gboolean save(const char *dir, const char *name, const double *data, int ndim, int64_t d0,
                     int64_t d1, GError **error) {
  g_autofree char *path = g_build_filename(dir, name, NULL);
  const int64_t shape[2] = {d0, d1};
  return lmwb_npy_write_f64(path, data, shape, ndim, error);
}

static gboolean run(const char *op, const char *dir, const char *param, GError **error) {
  Mat A = {0}, B = {0};
  double *o1 = NULL, *o2 = NULL, *o3 = NULL;
  gboolean ok = FALSE;
  if (!load(dir, "A.npy", &A, error)) goto out;
  int m = A.rows, n = A.cols, k = m < n ? m : n;
  if (!strcmp(op, "eigh") || !strcmp(op, "eigvals")) {
    gboolean vecs = !strcmp(op, "eigh");
    o1 = g_new(double, n);
    o2 = vecs ? g_new(double, (size_t)n * n) : NULL;
    if (m != n) {
      lmwb_input_error(error, "A.npy is %dx%d, not square", m, n);
      goto out;
    }
    ok = lmwb_linalg_eigh(n, A.data, o1, o2, error) &&
         save(dir, "w.npy", o1, 1, n, 0, error) && (!vecs || save(dir, "V.npy", o2, 2, n, n, error));
  } else if (!strcmp(op, "solve") || !strcmp(op, "lstsq")) {
    if (!param || !load(dir, "B.npy", &B, error)) {
      if (!param) lmwb_input_error(error, "%s needs a parameter", op);
      goto out;
    }
    if (B.rows != m || (!strcmp(op, "solve") && m != n)) {
      lmwb_input_error(error, "A.npy is %dx%d and B.npy %dx%d: they do not fit", m, n, B.rows, B.cols);
      goto out;
    }
    double p = g_ascii_strtod(param, NULL), r = 0;
    o1 = g_new(double, (size_t)n * B.cols);
    if (!strcmp(op, "solve")) {
      ok = lmwb_linalg_cholesky_solve(n, A.data, p, B.cols, B.data, o1, &r, error) &&
           save(dir, "X.npy", o1, 2, n, B.cols, error) && save(dir, "rcond.npy", &r, 0, 0, 0, error);
    } else {
      int rank = -1;
      ok = lmwb_linalg_lstsq(m, n, A.data, B.cols, B.data, o1, p, &rank, error);
      r = rank;
      ok = ok && save(dir, "X.npy", o1, 2, n, B.cols, error) &&
           save(dir, "rank.npy", &r, 0, 0, 0, error);
    }
  } else if (!strcmp(op, "svd") || !strcmp(op, "svdvals")) {
    gboolean vecs = !strcmp(op, "svd");
    o1 = vecs ? g_new(double, (size_t)m * k) : NULL;
    o2 = g_new(double, k);
    o3 = vecs ? g_new(double, (size_t)k * n) : NULL;
    ok = lmwb_linalg_svd(m, n, A.data, o1, o2, o3, error) && save(dir, "S.npy", o2, 1, k, 0, error) &&
         (!vecs || (save(dir, "U.npy", o1, 2, m, k, error) && save(dir, "Vt.npy", o3, 2, k, n, error)));
  } else {
    lmwb_input_error(error, "unknown operation '%s'", op);
  }
out:
  g_free(A.data);
  g_free(B.data);
  g_free(o1);
  g_free(o2);
  g_free(o3);
  return ok;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: linalg_driver eigh|eigvals|solve|lstsq|svd|svdvals DIR [PARAM]\n");
    return 2;
  }
  GError *err = NULL;
  if (!run(argv[1], argv[2], argc > 3 ? argv[3] : NULL, &err)) {
    fprintf(stderr, "linalg_driver: %s\n", err ? err->message : "failed without a message");
    int rc = err ? lmwb_error_exit_status(err) : 1;
    g_clear_error(&err);
    return rc;
  }
  return 0;
}
