/* Factors over several texts as one weighted mixture (kfac.h, lmwb_kfac_merge). */
#include "editors/kfac.h"
#include "app/core/errors.h"
#include <math.h>
#include <string.h>

/* The first difference between part k and part 0 that makes them unmergeable, as an input error. */
static gboolean same_collection(const LmwbKfacFactors *a, const LmwbKfacFactors *b, const char *na, const char *nb,
                                GError **error) {
  if (strcmp(a->fingerprint, b->fingerprint)) {
    lmwb_input_error(error, "%s: collected on another model than %s (fingerprint %.12s…, not %.12s…)", nb, na,
                     b->fingerprint, a->fingerprint);
    return FALSE;
  }
  if (a->labels != b->labels) {
    lmwb_input_error(error, "%s: labels \"%s\", but %s has \"%s\": merge collections of one kind", nb,
                     lmwb_kfac_labels_name(b->labels), na, lmwb_kfac_labels_name(a->labels));
    return FALSE;
  }
  if (a->context != b->context) {
    lmwb_input_error(error, "%s: context %d, but %s has %d", nb, b->context, na, a->context);
    return FALSE;
  }
  if (a->n != b->n) {
    lmwb_input_error(error, "%s: %d matrices, but %s has %d", nb, b->n, na, a->n);
    return FALSE;
  }
  for (int i = 0; i < a->n; i++) { /* both are sorted by layer, then matrix */
    const LmwbKfacFactor *x = &a->f[i], *y = &b->f[i];
    if (x->layer != y->layer || x->matrix != y->matrix || x->d_in != y->d_in || x->d_out != y->d_out) {
      lmwb_input_error(error, "%s: tensor blocks.%d.mlp.%s.A [%d, %d] does not match %s's blocks.%d.mlp.%s.A [%d, %d]",
                       nb, y->layer, lmwb_kfac_matrix_name(y->matrix), y->d_in, y->d_in, na, x->layer,
                       lmwb_kfac_matrix_name(x->matrix), x->d_in, x->d_in);
      return FALSE;
    }
  }
  return TRUE;
}

LmwbKfacFactors *lmwb_kfac_merge(LmwbKfacFactors *const *parts, const char *const *names, int n,
                                 const double *weights, GError **error) {
  if (n < 1) {
    lmwb_input_error(error, "kfac merge: no factors to merge");
    return NULL;
  }
  for (int k = 1; k < n; k++)
    if (!same_collection(parts[0], parts[k], names[0], names[k], error)) return NULL;
  double *w = g_new(double, n), total = 0;
  for (int k = 0; k < n; k++) {
    w[k] = weights ? weights[k] : (double)parts[k]->positions;
    if (!isfinite(w[k]) || w[k] <= 0) {
      lmwb_input_error(error, "%s: its weight %g must be a finite number above 0%s", names[k], w[k],
                       weights ? "" : " (a collection with no positions)");
      g_free(w);
      return NULL;
    }
    total += w[k];
  }
  for (int k = 0; k < n; k++) w[k] /= total;

  const LmwbKfacFactors *p0 = parts[0];
  LmwbKfacFactors *m = g_new0(LmwbKfacFactors, 1);
  m->n = p0->n;
  m->f = g_new0(LmwbKfacFactor, p0->n);
  m->model = g_strdup(p0->model);
  memcpy(m->fingerprint, p0->fingerprint, sizeof m->fingerprint);
  m->context = p0->context;
  m->labels = p0->labels;
  m->seed = p0->seed;
  m->n_parts = n;
  m->parts = g_new0(LmwbKfacPart, n);
  for (int k = 0; k < n; k++) {
    const LmwbKfacFactors *p = parts[k];
    m->tokens += p->tokens, m->positions += p->positions, m->windows += p->windows;
    m->parts[k] = (LmwbKfacPart){g_strdup(names[k]), p->tokens, p->positions, p->windows, p->seed, w[k]};
  }
  for (int i = 0; i < m->n; i++) {
    LmwbKfacFactor *x = &m->f[i];
    *x = p0->f[i];
    size_t na = (size_t)x->d_in * x->d_in, ng = (size_t)x->d_out * x->d_out;
    x->A = g_new0(double, na);
    x->G = g_new0(double, ng);
    for (int k = 0; k < n; k++) {
      const LmwbKfacFactor *y = &parts[k]->f[i];
      for (size_t j = 0; j < na; j++) x->A[j] += w[k] * y->A[j];
      for (size_t j = 0; j < ng; j++) x->G[j] += w[k] * y->G[j];
    }
  }
  g_free(w);
  return m;
}

LmwbKfacFactors *lmwb_kfac_load_merged(const char *const *dirs, int n, const double *weights, const LmwbModel *model,
                                       GError **error) {
  if (n == 1 && !weights) return lmwb_kfac_load(dirs[0], model, error);
  LmwbKfacFactors **parts = g_new0(LmwbKfacFactors *, MAX(n, 1)), *m = NULL;
  gboolean ok = TRUE;
  for (int i = 0; i < n && ok; i++) ok = (parts[i] = lmwb_kfac_load(dirs[i], model, error)) != NULL;
  if (ok) m = lmwb_kfac_merge(parts, dirs, n, weights, error);
  for (int i = 0; i < n; i++) lmwb_kfac_factors_free(parts[i]);
  g_free(parts);
  return m;
}
