/* What ROME and MEMIT share inside editors/ (rome_value.c). Not part of the public API. */
#pragma once
#include "editors/rome.h"

/* A right-padded batch of prompts with the position of the subject's last token in each (mask: 1
 * there), and next-token targets (-1 where none). */
typedef struct LmwbRomeBatch {
  int B, T;
  int32_t *ids;    /* [B, T] */
  int *lens;       /* [B] */
  int *lookup;     /* [B] the subject's last token */
  int32_t *targets; /* [B, T] */
  uint8_t *mask;   /* [B, T] */
} LmwbRomeBatch;

void lmwb_rome_batch_free(LmwbRomeBatch *b);
/* text holds "{}" where the subject goes; the ids of the whole text (with the tokenizer's special
 * tokens) and the index of the subject's last token. */
int32_t *lmwb_rome_encode_subject(const LmwbModel *m, const char *text, const char *subject, size_t *n, int *lookup,
                                  GError **error);
/* The request's prompt in every template ("{}" of the template -> the prompt), each followed by
 * the suffix tokens. */
LmwbRomeBatch *lmwb_rome_templated(const LmwbModel *m, const LmwbEditRequest *req, char **templates,
                                   const int32_t *suffix, size_t n_suffix, GError **error);
/* mean[d_ff] (double) = mean over the batch of blocks.L.mlp.hook_post at the lookups; first
 * (optional, float) = the first row's. */
gboolean lmwb_rome_keys(LmwbRunner *r, const LmwbRomeBatch *b, int layer, double *mean, float *first, GError **error);
/* Optimises δ added at `site` (MLP_OUT for ROME, RESID_POST for MEMIT) at the subject's last token
 * (rome.h); v0 receives the site's value at the bare prompt's subject. ‖δ‖ <= clamp ‖v0‖. */
gboolean lmwb_rome_delta(LmwbRunner *r, const LmwbEditRequest *req, char **templates, LmwbSite site, double clamp,
                         const LmwbRomeOptions *o, float *v0, float *delta, LmwbEditInfo *info, LmwbReporter *rep,
                         GError **error);
/* u = C⁻¹ k / ‖C⁻¹ k‖ (stats NULL: C = I); input error for a singular C or a zero key. */
gboolean lmwb_rome_left(const LmwbEditStats *stats, const double *k, int F, float *u, GError **error);
/* out[d_model] = W k + b with the version's effective W_out (low-rank changes included). */
gboolean lmwb_rome_mlp_out(const LmwbModel *m, int layer, const double *k, double *out, GError **error);
