/* The runner: one transformer body for every architecture. Runs a batch of B token sequences of
 * T tokens (right-padded, with per-sequence lengths) forward with hooks, keeps every activation
 * for reading and for backward, and runs backward to any hook site and to all parameters.
 * A KV cache continues a run token by token for generation.
 *
 * Activations and gradients returned by the runner are owned by it and valid until the next
 * forward/backward. One runner is not thread-safe; use one per thread (they can share a model). */
#pragma once
#include "app/engine/hooks.h"
#include "app/engine/model.h"

typedef struct LmwbRunner LmwbRunner;

typedef struct LmwbForwardOptions {
  const int *lens;       /* valid length of each sequence (right padding); NULL: all T */
  bool last_logits_only; /* logits only at each sequence's last valid position: [B, V] */
  bool use_cache;        /* continue the KV cache (positions start at its length) and extend it */
} LmwbForwardOptions;

typedef enum {
  LMWB_LOSS_NEXT_TOKEN, /* mean next-token cross-entropy over all valid predictions */
  LMWB_LOSS_KL,         /* mean over valid positions of KL(P_ref || P_model) */
  LMWB_LOSS_LOGIT_DIFF, /* mean over sequences of logit[pos_b, a_b] - logit[pos_b, b_b] */
  LMWB_LOSS_DLOGITS,    /* the caller gives dL/dlogits directly */
} LmwbLossKind;

typedef struct LmwbLoss {
  LmwbLossKind kind;
  const int32_t *targets;     /* NEXT_TOKEN: [B*T] explicit targets (-1 = ignore); NULL = inputs shifted */
  const float *ref_logprobs;  /* KL: [B*T, V] reference log-probabilities */
  const int *positions;       /* LOGIT_DIFF: [B] position per sequence */
  const int32_t *tok_a, *tok_b; /* LOGIT_DIFF: [B] tokens */
  const float *dlogits;       /* DLOGITS: [B*T, V] */
} LmwbLoss;

typedef struct LmwbBackwardOptions {
  bool param_grads;      /* also accumulate dL/dparams (flat, model layout) */
  bool accumulate;       /* add to existing parameter gradients instead of zeroing them first */
  bool freeze_pattern;   /* hold attention patterns fixed (no gradient through softmax to q, k) */
  bool freeze_norm;      /* hold norm scales (1/std, 1/rms) fixed */
} LmwbBackwardOptions;

LmwbRunner *lmwb_runner_new(LmwbModel *model);
void lmwb_runner_free(LmwbRunner *r);
LmwbModel *lmwb_runner_model(LmwbRunner *r);

/* Hooks are copied (their position/index/value arrays too). */
void lmwb_runner_add_hook(LmwbRunner *r, const LmwbHook *hook);
void lmwb_runner_clear_hooks(LmwbRunner *r);

/* ids: [B, T] row-major. Token ids and positions are checked (input error when out of range). */
gboolean lmwb_runner_forward(LmwbRunner *r, const int32_t *ids, int B, int T,
                             const LmwbForwardOptions *opt, GError **error);
/* Forget the KV cache (the next use_cache forward starts at position 0). */
void lmwb_runner_reset_cache(LmwbRunner *r);
int lmwb_runner_cache_length(const LmwbRunner *r);

/* Logits of the last forward: [B*T, V], or [B, V] with last_logits_only. */
const float *lmwb_runner_logits(const LmwbRunner *r, int *rows);
/* Activation at a site from the last forward; shape in TransformerLens order, e.g. [B,T,C],
 * [B,T,H,hd], [B,H,T,Tk]. Returns NULL (with an input error) if the site has no data. */
const float *lmwb_runner_activation(const LmwbRunner *r, LmwbSite site, int64_t shape[4], int *ndim,
                                    GError **error);

/* Backward of a loss over the last forward (which must have been run without the cache and with
 * all logits). Returns the loss value in *loss. */
gboolean lmwb_runner_backward(LmwbRunner *r, const LmwbLoss *loss, const LmwbBackwardOptions *opt,
                              double *loss_value, GError **error);
/* dL/d(activation at site) from the last backward, same shape as the activation. */
const float *lmwb_runner_grad(const LmwbRunner *r, LmwbSite site, int64_t shape[4], int *ndim,
                              GError **error);
/* Flat parameter gradients (model layout); NULL before a backward with param_grads. */
float *lmwb_runner_param_grads(LmwbRunner *r);

/* Per-token next-token losses of the last forward (all logits): out[b*T+t] = -log p(target),
 * target = explicit or inputs shifted; NaN where there is no target. Returns the count used. */
size_t lmwb_runner_token_losses(LmwbRunner *r, const int32_t *targets, float *out);
