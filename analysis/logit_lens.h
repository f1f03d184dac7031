/* Logit lens (nostalgebraist 2020): read each layer's residual stream as if it were the last one,
 * by applying the model's final norm and unembedding to it, and keep the top-k next-token
 * predictions per position. Row 0 is the embeddings (blocks.0.hook_resid_pre), row l+1 is
 * blocks.l.hook_resid_post; the last row therefore reproduces the model's own logits.
 *
 * A pure function of (model, the activations of the runner's last full forward): no GTK, no
 * state. The runner must have run without last_logits_only (every position's residual kept);
 * activations are read on the host, and the final norm and unembedding are lmwb_model_unembed. */
#pragma once
#include "app/engine/runner.h"

#define LMWB_LOGIT_LENS_MAX_K 64

typedef struct LmwbLogitLens {
  int n_rows;        /* n_layer + 1 */
  int n_pos;         /* positions analysed (of sequence `seq` of the forward) */
  int k;             /* predictions kept per cell, best first */
  int32_t *top_ids;  /* [n_rows, n_pos, k] */
  float *top_probs;  /* [n_rows, n_pos, k] softmax probabilities */
} LmwbLogitLens;

/* Compute the lens for positions 0..n_pos-1 of sequence `seq` of the last forward.
 * n_pos <= 0 means every position of that forward. Input error when the runner has no forward,
 * seq/n_pos are out of range, or k is outside 1..LMWB_LOGIT_LENS_MAX_K (or > vocab). */
LmwbLogitLens *lmwb_logit_lens_compute(LmwbRunner *r, int seq, int n_pos, int k, GError **error);
void lmwb_logit_lens_free(LmwbLogitLens *lens);

/* Cell accessors (no bounds surprise: callers index within n_rows × n_pos × k). */
static inline const int32_t *lmwb_logit_lens_ids(const LmwbLogitLens *l, int row, int pos) {
  return l->top_ids + ((size_t)row * l->n_pos + pos) * l->k;
}
static inline const float *lmwb_logit_lens_probs(const LmwbLogitLens *l, int row, int pos) {
  return l->top_probs + ((size_t)row * l->n_pos + pos) * l->k;
}
/* "embed" for row 0, "L0", "L1", ... for the others (g_free). */
char *lmwb_logit_lens_row_name(int row);
