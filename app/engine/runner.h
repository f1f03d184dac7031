/* The runner: one transformer body for every architecture. Runs a batch of B token sequences of
 * T tokens (right-padded, with per-sequence lengths) forward with hooks (hooks.h), keeps every
 * activation of the sites (sites.h) for reading and for backward, and runs backward from the
 * logits (a weighted sum of losses) or from gradients a caller injects at any sites, to every site
 * and, when asked, to all parameters. A KV cache continues a run token by token for generation.
 *
 * Backends: every buffer the runner hands to an op is allocated, copied and freed through the
 * model's backend (backend.h), and the weights come from lmwb_model_weights_on. Host code sees
 * activations only through lmwb_runner_activation / _grad / _logits, which return host memory
 * (the buffer itself on the CPU, a host copy otherwise), and hooks get host blocks.
 *
 * Activations and gradients returned by the runner are owned by it and valid until the next
 * forward/backward. One runner is not thread-safe; use one per thread (they can share a model).
 * A runner holds a reference to its model and seals it (model.h): its weights no longer change. */
#pragma once
#include "app/engine/hooks.h"
#include "app/engine/model.h"

typedef struct LmwbRunner LmwbRunner;

typedef struct LmwbForwardOptions {
  const int *lens;       /* valid length of each sequence (right padding); NULL: all T */
  bool last_logits_only; /* logits only at each sequence's last valid position: [B, V] */
  bool use_cache;        /* continue the KV cache (positions start at its length) and extend it */
  unsigned sites;        /* LmwbRunSites: optional per-head sites to compute (hooks at such sites
                            turn theirs on by themselves) */
} LmwbForwardOptions;

typedef enum {
  LMWB_LOSS_NEXT_TOKEN, /* mean next-token cross-entropy over all valid predictions */
  LMWB_LOSS_KL,         /* mean over rows of KL(P_ref || P_model) */
  LMWB_LOSS_LOGIT_DIFF, /* mean over sequences of logit[pos_b, a_b] - logit[pos_b, b_b] */
  LMWB_LOSS_DLOGITS,    /* the caller gives dL/dlogits directly (the value is NaN) */
} LmwbLossKind;

/* One term of a loss; a backward takes a weighted sum of terms. */
typedef struct LmwbLoss {
  LmwbLossKind kind;
  double weight;              /* the term's multiplier; 0 is taken as 1 */
  const int32_t *targets;     /* NEXT_TOKEN: [B*T] explicit targets (-1 = ignore); NULL = inputs shifted */
  const float *ref_logprobs;  /* KL: reference log-probabilities, [B*T, V], or [B, V] with positions */
  const int *positions;       /* KL (optional: one row per sequence), LOGIT_DIFF: [B] position per sequence */
  const int32_t *tok_a, *tok_b; /* LOGIT_DIFF: [B] tokens */
  const float *dlogits;       /* DLOGITS: [B*T, V] */
} LmwbLoss;

/* Quantities a backward holds fixed (gradients pass as if they were constants): the linearised
 * model that attribution graphs need. */
typedef enum {
  LMWB_FREEZE_PATTERN = 1 << 0, /* attention patterns: no gradient through softmax to q and k */
  LMWB_FREEZE_NORM = 1 << 1,    /* every norm's scale (1/std, 1/rms) */
  LMWB_FREEZE_MLP = 1 << 2,     /* the MLP nonlinearity: gelu(x)/x, or silu(gate), held fixed */
  LMWB_FREEZE_MLP_OUT = 1 << 3, /* every MLP's output held fixed: no gradient enters an MLP (the
                                   local replacement model, whose MLP outputs are its nodes) */
} LmwbFreeze;

typedef struct LmwbBackwardOptions {
  bool param_grads;       /* also compute dL/dparams (flat, model layout) */
  bool accumulate_params; /* add to the parameter gradients of earlier backwards */
  bool accumulate_grads;  /* add the site gradients to those of earlier backwards (same B x T) */
  unsigned freeze;        /* LmwbFreeze */
  int stop_layer;         /* lowest layer to go through; 0: all, down to the embeddings */
} LmwbBackwardOptions;

/* A gradient a caller injects at a site: [B, rows, R] as the site's block (host memory). */
typedef struct LmwbGradSeed {
  LmwbSite site;
  const float *grad;
} LmwbGradSeed;

/* A new runner holds a reference to the model and seals it. */
LmwbRunner *lmwb_runner_new(LmwbModel *model);
void lmwb_runner_free(LmwbRunner *r);
LmwbModel *lmwb_runner_model(LmwbRunner *r);

/* Hooks (hooks.h): adding validates and returns an id (> 0), or 0 with an input error. */
int lmwb_runner_add_hook(LmwbRunner *r, const LmwbHook *hook, GError **error);
gboolean lmwb_runner_remove_hook(LmwbRunner *r, int id);
void lmwb_runner_clear_hooks(LmwbRunner *r);

/* ids: [B, T] row-major. Token ids and positions are checked (input error when out of range). */
gboolean lmwb_runner_forward(LmwbRunner *r, const int32_t *ids, int B, int T,
                             const LmwbForwardOptions *opt, GError **error);
/* Forget the KV cache (the next use_cache forward starts at position 0). */
void lmwb_runner_reset_cache(LmwbRunner *r);
int lmwb_runner_cache_length(const LmwbRunner *r);

/* Logits of the last forward: [B*T, V], or [B, V] with last_logits_only (host memory). */
const float *lmwb_runner_logits(LmwbRunner *r, int *rows);
/* Activation at a site from the last forward, shape in TransformerLens order ([B,T,C],
 * [B,T,H,hd], [B,H,T,Tk]). NULL with an input error if the run did not compute the site. */
const float *lmwb_runner_activation(LmwbRunner *r, LmwbSite site, int64_t shape[4], int *ndim, GError **error);

/* Backward of a weighted sum of loss terms over the last forward (which must have been run
 * without the KV cache and with all logits). *loss_value receives the weighted sum (NaN when a
 * term has no value, as DLOGITS). */
gboolean lmwb_runner_backward(LmwbRunner *r, const LmwbLoss *terms, int n_terms, const LmwbBackwardOptions *opt,
                              double *loss_value, GError **error);
/* Backward from gradients injected at sites (e.g. an encoder row at ln2.hook_normalized, an
 * unembedding column at ln_final.hook_normalized): the gradient of sum over seeds of
 * <seed.grad, activation at seed.site>. Starts at the highest seeded layer; the last forward may
 * have kept only the last logits (unless a seed is at ln_final). */
gboolean lmwb_runner_backward_from(LmwbRunner *r, const LmwbGradSeed *seeds, int n_seeds,
                                   const LmwbBackwardOptions *opt, GError **error);
/* dL/d(activation at site) from the last backward(s), same shape as the activation: the gradient
 * of the value the site computed, before its hooks (a SET hook zeroes it). */
const float *lmwb_runner_grad(LmwbRunner *r, LmwbSite site, int64_t shape[4], int *ndim, GError **error);
/* Flat parameter gradients (model layout, host memory); NULL before a backward with param_grads. */
float *lmwb_runner_param_grads(LmwbRunner *r);

/* Per-token next-token losses of the last forward (all logits): out[b*T+t] = -log p(target),
 * target = explicit or inputs shifted; NaN where there is no target. Returns the count used. */
size_t lmwb_runner_token_losses(LmwbRunner *r, const int32_t *targets, float *out);

/* The final norm and the unembedding of rows of the residual stream, on the host: x [n, d_model]
 * -> logits [n, vocab] (the logit lens, and anything else that reads a residual as the model's
 * output would). */
gboolean lmwb_model_unembed(const LmwbModel *m, const float *x, int n, float *logits, GError **error);
