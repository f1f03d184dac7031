#include "analysis/logit_lens.h"
#include "app/core/errors.h"
#include "app/core/rows.h"
#include <math.h>
#include <string.h>

LmwbLogitLens *lmwb_logit_lens_compute(LmwbRunner *r, int seq, int n_pos, int k, GError **error) {
  g_return_val_if_fail(r != NULL, NULL);
  LmwbModel *m = lmwb_runner_model(r);
  const LmwbConfig *c = &m->cfg;
  const int C = c->d_model, V = c->vocab_size;
  if (k < 1 || k > LMWB_LOGIT_LENS_MAX_K || k > V) {
    lmwb_input_error(error, "logit lens: k=%d must be in 1..%d", k, MIN(LMWB_LOGIT_LENS_MAX_K, V));
    return NULL;
  }
  int64_t shape[4];
  int nd = 0;
  const float *first = lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_RESID_PRE, 0}, shape, &nd, error);
  if (!first) return NULL;
  if (nd != 3 || shape[2] != C) {
    lmwb_input_error(error, "logit lens: blocks.0.hook_resid_pre has an unexpected shape");
    return NULL;
  }
  const int B = (int)shape[0], T = (int)shape[1];
  if (seq < 0 || seq >= B) {
    lmwb_input_error(error, "logit lens: sequence %d out of range (the forward had %d)", seq, B);
    return NULL;
  }
  if (n_pos <= 0) n_pos = T;
  if (n_pos > T) {
    lmwb_input_error(error, "logit lens: %d positions asked, the forward had %d", n_pos, T);
    return NULL;
  }
  LmwbLogitLens *lens = g_new0(LmwbLogitLens, 1);
  lens->n_rows = c->n_layer + 1;
  lens->n_pos = n_pos;
  lens->k = k;
  lens->top_ids = g_new(int32_t, (size_t)lens->n_rows * n_pos * k);
  lens->top_probs = g_new(float, (size_t)lens->n_rows * n_pos * k);
  float *logits = g_try_new(float, (size_t)n_pos * V);
  if (!logits) {
    g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "logit lens: out of memory for %d×%d logits", n_pos, V);
    goto fail;
  }
  for (int row = 0; row < lens->n_rows; row++) {
    LmwbSite site = row == 0 ? (LmwbSite){LMWB_SITE_RESID_PRE, 0} : (LmwbSite){LMWB_SITE_RESID_POST, row - 1};
    const float *x = lmwb_runner_activation(r, site, shape, &nd, error);
    if (!x) goto fail;
    if (nd != 3 || shape[0] != B || shape[1] != T || shape[2] != C) {
      lmwb_input_error(error, "logit lens: residual of row %d has an unexpected shape", row);
      goto fail;
    }
    x += (size_t)seq * T * C;
    if (!lmwb_model_unembed(m, x, n_pos, logits, error)) goto fail;
    for (int t = 0; t < n_pos; t++) {
      float *lg = logits + (size_t)t * V;
      lmwb_softmax_row(lg, lg, V);
      size_t at = ((size_t)row * n_pos + t) * k;
      lmwb_top_k(lg, V, k, lens->top_ids + at, lens->top_probs + at);
    }
  }
  g_free(logits);
  return lens;
fail:
  g_free(logits);
  lmwb_logit_lens_free(lens);
  return NULL;
}

void lmwb_logit_lens_free(LmwbLogitLens *lens) {
  if (!lens) return;
  g_free(lens->top_ids);
  g_free(lens->top_probs);
  g_free(lens);
}

char *lmwb_logit_lens_row_name(int row) {
  return row == 0 ? g_strdup("embed") : g_strdup_printf("L%d", row - 1);
}
