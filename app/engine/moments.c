/* Streamed second moments (moments.h). */
#include "app/engine/moments.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include <cblas.h>
#include <string.h>

struct LmwbMoments {
  int dim;
  double *sum;    /* upper triangle used while collecting, [dim, dim] */
  float *block;   /* float32 product of one block */
  uint64_t count;
  bool skip_last; /* of the installed hook */
};

LmwbMoments *lmwb_moments_new(int dim, GError **error) {
  uint64_t d2;
  if (dim < 1 || !lmwb_mul_u64((uint64_t)dim, (uint64_t)dim, &d2)) {
    lmwb_input_error(error, "moments: dimension %d is not valid", dim);
    return NULL;
  }
  if (!lmwb_memory_check(d2 * (sizeof(double) + sizeof(float)), "second moments", error)) return NULL;
  LmwbMoments *m = g_new0(LmwbMoments, 1);
  m->dim = dim;
  m->sum = g_try_new0(double, d2);
  m->block = g_try_new(float, d2);
  if (!m->sum || !m->block) {
    lmwb_moments_free(m);
    lmwb_input_error(error, "moments: out of memory for %d x %d sums", dim, dim);
    return NULL;
  }
  return m;
}

void lmwb_moments_free(LmwbMoments *m) {
  if (!m) return;
  g_free(m->sum);
  g_free(m->block);
  g_free(m);
}

int lmwb_moments_dim(const LmwbMoments *m) { return m->dim; }
uint64_t lmwb_moments_count(const LmwbMoments *m) { return m->count; }

void lmwb_moments_add(LmwbMoments *m, const float *rows, int n, int stride) {
  int d = m->dim;
  for (int r0 = 0; r0 < n; r0 += LMWB_MOMENTS_BLOCK) {
    int k = MIN(LMWB_MOMENTS_BLOCK, n - r0);
    /* block = Xᵀ X (upper triangle) for the k rows, then into the double sums */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, d, k, 1.0f, rows + (size_t)r0 * stride, stride, 0.0f,
                m->block, d);
#pragma omp parallel for schedule(static) if ((size_t)d * d > 65536)
    for (int i = 0; i < d; i++)
      for (int j = i; j < d; j++) m->sum[(size_t)i * d + j] += m->block[(size_t)i * d + j];
  }
  m->count += (uint64_t)MAX(n, 0);
}

void lmwb_moments_merge(LmwbMoments *m, const LmwbMoments *o) {
  size_t n = (size_t)m->dim * m->dim;
  for (size_t i = 0; i < n; i++) m->sum[i] += o->sum[i];
  m->count += o->count;
}

void lmwb_moments_sum(const LmwbMoments *m, double *out) {
  int d = m->dim;
  for (int i = 0; i < d; i++)
    for (int j = i; j < d; j++) out[(size_t)i * d + j] = out[(size_t)j * d + i] = m->sum[(size_t)i * d + j];
}

void lmwb_moments_mean(const LmwbMoments *m, double *out) {
  lmwb_moments_sum(m, out);
  double inv = m->count ? 1.0 / (double)m->count : 0.0;
  for (size_t i = 0; i < (size_t)m->dim * m->dim; i++) out[i] *= inv;
}

/* The hook: each sequence's selected rows are contiguous in the block. */
static void collect(float *block, const LmwbHookCtx *c, void *user) {
  LmwbMoments *m = user;
  for (int b = 0; b < c->B; b++) {
    int len = c->lens ? c->lens[b] : c->T;
    int n = m->skip_last ? len - 1 : len;
    if (n > 0) lmwb_moments_add(m, block + (size_t)b * c->rows_per_seq * c->R, n, c->R);
  }
}

int lmwb_moments_collect(LmwbMoments *m, LmwbRunner *r, LmwbSite site, bool gradients, bool skip_last,
                         GError **error) {
  const LmwbConfig *cfg = &lmwb_runner_model(r)->cfg;
  const LmwbSiteInfo *si = lmwb_site_info(site.kind);
  if (!si || si->shape == LMWB_SHAPE_PATTERN || lmwb_site_row_size(cfg, site.kind, 0) != m->dim) {
    g_autofree char *nm = si ? lmwb_site_name(site) : g_strdup("(unknown)");
    lmwb_input_error(error, "moments: the rows of %s do not have %d values", nm, m->dim);
    return 0;
  }
  m->skip_last = skip_last;
  LmwbHook h = {.site = site, .op = LMWB_HOOK_OBSERVE, .user = m};
  if (gradients) h.bwd_fn = collect;
  else h.fn = collect;
  return lmwb_runner_add_hook(r, &h, error);
}
