/* Codebook sets and the selection of codes: scores by one GEMM, a streaming top-k, the mean of the
 * chosen codes. Contract: codebooks.h. */
#include "analysis/codebooks.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include "app/engine/backend.h"
#include <math.h>
#include <string.h>

/* Rows scored per GEMM: bounds the score scratch to ROWS x C floats. */
#define ROWS 256

const char *lmwb_codebook_site_name(LmwbCodebookSite s) { return s == LMWB_CODEBOOK_ATTN ? "attn" : "mlp"; }

gboolean lmwb_codebook_site_parse(const char *s, LmwbCodebookSite *out) {
  if (!s) return FALSE;
  if (!strcmp(s, "attn")) *out = LMWB_CODEBOOK_ATTN;
  else if (!strcmp(s, "mlp")) *out = LMWB_CODEBOOK_MLP;
  else return FALSE;
  return TRUE;
}

LmwbSite lmwb_codebook_engine_site(LmwbCodebookSite s, int layer) {
  return (LmwbSite){s == LMWB_CODEBOOK_ATTN ? LMWB_SITE_Z : LMWB_SITE_MLP_OUT, layer};
}

static void book_shape(const LmwbConfig *cfg, LmwbCodebookSite s, int *groups, int *width) {
  *groups = s == LMWB_CODEBOOK_ATTN ? cfg->n_head : 1;
  *width = s == LMWB_CODEBOOK_ATTN ? cfg->head_dim : cfg->d_model;
}

LmwbCodebooks *lmwb_codebooks_new(const LmwbConfig *cfg, int k, int C, const LmwbCodebookSiteSpec *sites,
                                  int n_sites, GError **error) {
  if (C < 1 || C > LMWB_CODEBOOK_MAX_CODES) {
    lmwb_input_error(error, "num_codes %d is not in 1..%d", C, LMWB_CODEBOOK_MAX_CODES);
    return NULL;
  }
  if (k < 1 || k > C) {
    lmwb_input_error(error, "k %d is not in 1..%d (num_codes)", k, C);
    return NULL;
  }
  if (n_sites < 1) {
    lmwb_input_error(error, "sites: a codebook set needs at least one site");
    return NULL;
  }
  uint64_t total = 0;
  for (int i = 0; i < n_sites; i++) {
    const LmwbCodebookSiteSpec *s = &sites[i];
    if (s->layer < 0 || s->layer >= cfg->n_layer) {
      lmwb_input_error(error, "sites[%d]: layer %d is not in 0..%d", i, s->layer, cfg->n_layer - 1);
      return NULL;
    }
    if (s->site != LMWB_CODEBOOK_ATTN && s->site != LMWB_CODEBOOK_MLP) {
      lmwb_input_error(error, "sites[%d]: unknown site %d", i, (int)s->site);
      return NULL;
    }
    for (int j = 0; j < i; j++)
      if (sites[j].layer == s->layer && sites[j].site == s->site) {
        lmwb_input_error(error, "sites[%d]: layer %d %s appears twice", i, s->layer, lmwb_codebook_site_name(s->site));
        return NULL;
      }
    int g, w;
    book_shape(cfg, s->site, &g, &w);
    total += (uint64_t)g * C * w * sizeof(float);
  }
  if (!lmwb_memory_check(total, "the codebooks", error)) return NULL;
  LmwbCodebooks *cb = g_new0(LmwbCodebooks, 1);
  cb->k = k;
  cb->num_codes = C;
  cb->n = n_sites;
  cb->books = g_new0(LmwbCodebook, n_sites);
  for (int i = 0; i < n_sites; i++) {
    LmwbCodebook *b = &cb->books[i];
    b->layer = sites[i].layer;
    b->site = sites[i].site;
    book_shape(cfg, b->site, &b->groups, &b->width);
    b->codes = g_try_new0(float, (size_t)b->groups * C * b->width);
    if (!b->codes) {
      lmwb_codebooks_free(cb);
      lmwb_input_error(error, "out of memory for the codebooks");
      return NULL;
    }
  }
  return cb;
}

void lmwb_codebooks_free(LmwbCodebooks *cb) {
  if (!cb) return;
  for (int i = 0; i < cb->n; i++) g_free(cb->books[i].codes);
  g_free(cb->books);
  g_free(cb->source);
  g_free(cb);
}

LmwbCodebook *lmwb_codebooks_find(const LmwbCodebooks *cb, int layer, LmwbCodebookSite site) {
  for (int i = 0; i < cb->n; i++)
    if (cb->books[i].layer == layer && cb->books[i].site == site) return &cb->books[i];
  return NULL;
}

gboolean lmwb_codebooks_check(const LmwbCodebooks *cb, const LmwbConfig *cfg, const char *origin, GError **error) {
  if (cb->num_codes < 1 || cb->num_codes > LMWB_CODEBOOK_MAX_CODES || cb->k < 1 || cb->k > cb->num_codes) {
    lmwb_input_error(error, "%s: k %d and num_codes %d must satisfy 1 <= k <= num_codes <= %d", origin, cb->k,
                     cb->num_codes, LMWB_CODEBOOK_MAX_CODES);
    return FALSE;
  }
  for (int i = 0; i < cb->n; i++) {
    const LmwbCodebook *b = &cb->books[i];
    const char *sn = lmwb_codebook_site_name(b->site);
    if (b->layer < 0 || b->layer >= cfg->n_layer) {
      lmwb_input_error(error, "%s: codebook %d: layer %d is not in 0..%d", origin, i, b->layer, cfg->n_layer - 1);
      return FALSE;
    }
    int g, w;
    book_shape(cfg, b->site, &g, &w);
    if (b->groups != g || b->width != w) {
      lmwb_input_error(error, "%s: blocks.%d.%s.codebook is %d x [C, %d] but the model needs %d x [C, %d]", origin,
                       b->layer, sn, b->groups, b->width, g, w);
      return FALSE;
    }
    size_t n = (size_t)g * cb->num_codes * w;
    for (size_t j = 0; j < n; j++)
      if (!isfinite(b->codes[j])) {
        lmwb_input_error(error, "%s: blocks.%d.%s.codebook: value %zu is not finite", origin, b->layer, sn, j);
        return FALSE;
      }
  }
  return TRUE;
}

/* ---- selection --------------------------------------------------------------------------------- */

size_t lmwb_codebook_scratch_floats(int n, int width, int C) {
  int rows = MIN(n, ROWS);
  return (size_t)rows * width + (size_t)rows * C;
}

/* Insert (s, j) into the k best so far, kept falling by score; ties keep the lower id first
 * (ids arrive in increasing order, so a tie never displaces). */
static inline void topk_push(float *bs, int32_t *bi, int k, float s, int32_t j) {
  if (!(s > bs[k - 1])) return;
  int p = k - 1;
  while (p > 0 && s > bs[p - 1]) {
    bs[p] = bs[p - 1];
    bi[p] = bi[p - 1];
    p--;
  }
  bs[p] = s;
  bi[p] = j;
}

/* The k best of a row of C scores. Blocks of 16 whose maximum cannot enter are skipped: after the
 * first few blocks almost all are, and the maximum vectorises. */
static void topk_row(const float *s, int C, int k, float *bs, int32_t *bi) {
  for (int j = 0; j < k; j++) {
    bs[j] = -INFINITY;
    bi[j] = j;
  }
  int j = 0;
  for (; j + 16 <= C; j += 16) {
    float mx = s[j];
    for (int q = 1; q < 16; q++) mx = s[j + q] > mx ? s[j + q] : mx;
    if (!(mx > bs[k - 1])) continue;
    for (int q = 0; q < 16; q++) topk_push(bs, bi, k, s[j + q], j + q);
  }
  for (; j < C; j++) topk_push(bs, bi, k, s[j], j);
}

void lmwb_codebook_select(const float *chat, int C, int width, int k, const float *x, int ldx, int n, int32_t *ids,
                          float *scratch) {
  const LmwbBackend *cpu = lmwb_backend_cpu();
  float *xn = scratch, *S = scratch + (size_t)MIN(n, ROWS) * width;
  for (int r0 = 0; r0 < n; r0 += ROWS) {
    int m = MIN(ROWS, n - r0);
    /* LN with unit gain and zero bias; the scale does not change the ranking but keeps the
     * scores those of the definition. */
#pragma omp parallel for schedule(static) if (m * width > 32768)
    for (int i = 0; i < m; i++) {
      const float *xi = x + (size_t)(r0 + i) * ldx;
      double mu = 0, var = 0;
      for (int d = 0; d < width; d++) mu += xi[d];
      mu /= width;
      for (int d = 0; d < width; d++) var += (xi[d] - mu) * (xi[d] - mu);
      float rs = (float)(1.0 / sqrt(var / width + LMWB_CODEBOOK_LN_EPS));
      for (int d = 0; d < width; d++) xn[(size_t)i * width + d] = (float)(xi[d] - mu) * rs;
    }
    cpu->sgemm(false, true, m, C, width, 1.f, xn, width, chat, width, 0.f, S, C);
#pragma omp parallel for schedule(static) if ((size_t)m * C > 65536)
    for (int i = 0; i < m; i++) {
      float bs[64];
      int32_t *out = ids + (size_t)(r0 + i) * k;
      const float *s = S + (size_t)i * C;
      /* k > 64 is rare: its scores go to the heap */
      float *ks = k <= 64 ? bs : g_new(float, k);
      topk_row(s, C, k, ks, out);
      if (ks != bs) g_free(ks);
    }
  }
}

void lmwb_codebook_decode(const float *codes, int width, int k, const int32_t *ids, int n, float *out, int ldo) {
  float inv = 1.0f / (float)k;
#pragma omp parallel for schedule(static) if ((size_t)n * k * width > 65536)
  for (int i = 0; i < n; i++) {
    float *o = out + (size_t)i * ldo;
    memset(o, 0, sizeof(float) * width);
    for (int s = 0; s < k; s++) {
      const float *c = codes + (size_t)ids[(size_t)i * k + s] * width;
      for (int d = 0; d < width; d++) o[d] += c[d];
    }
    for (int d = 0; d < width; d++) o[d] *= inv;
  }
}
