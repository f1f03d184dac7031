/* Training codebooks (Tamkin, Taufeeque & Goodman 2023; see /work/shared/methods/codebooks.md and
 * codebooks.h for the bottleneck itself).
 *
 * Loss on a batch of windows: the LM loss (mean next-token cross-entropy) of the model with every
 * codebook spliced in, plus lambda times, per codebook (per head for attn), the mean over tokens of
 * ‖codebook(x) - stopgrad(x)‖² (the paper's "aeloss", lambda 1). Gradients: straight-through to the
 * input (the model below a codebook sees the gradient of its output unchanged); each chosen code
 * gets 1/k of the output's gradient plus the reconstruction term's. By default the model is frozen
 * and only the codes are trained; with finetune the model's weights are trained with them, as in
 * the paper (AdamW without weight decay, gradients clipped to norm 1, on a copy of the model).
 * Only the codes chosen in a step are updated (Adam on those rows: their moments move only when
 * they are chosen).
 *
 * Initialisation: codes ~ N(0, s²) with s the inputs' RMS per dimension on the first batch (the
 * paper's N(0, 1) suits unit-scale activations only), or, with kmeans, spherical k-means under the
 * codebook's own score (LN(x)·c/‖c‖; centres the mean of their rows) on the plain model's inputs
 * of kmeans_batches batches. Dead codes (optional, off by default): every dead_every steps, codes
 * no row chose since the last replacement become a random input row of the current batch plus
 * Gaussian noise of norm dead_noise·‖x‖, with their Adam moments zeroed.
 *
 * Data: windows of `context` tokens at uniform random positions of the token stream (with
 * eos_windows: at uniform random end-of-text tokens), `batch` windows a step, drawn from the seed. Evaluation (before and after): the mean next-token loss
 * and accuracy on eval_windows fixed windows spread over the stream, for the plain model, the
 * initial codebooks and the trained ones, and the mean reconstruction error.
 *
 * Checkpoints: every checkpoint_every steps, on cancel and after max_steps_this_run steps, the
 * trainer writes checkpoint_dir/state.safetensors (codes, Adam moments, the dead-code counts, the
 * step and the random state); resume continues it and ends with the same codes as a run never
 * stopped (for a fixed thread count). A fine-tuning run writes no checkpoints (the model's Adam
 * state would be as large as three models) and cannot be resumed. */
#pragma once
#include "analysis/codebooks.h"

#define LMWB_CB_DEFAULT_LR 5e-4      /* the paper, constant */
#define LMWB_CB_DEFAULT_LAMBDA 1.0   /* weight of the reconstruction term (the paper's aeloss) */
#define LMWB_CB_DEFAULT_DEAD_NOISE 0.01

typedef struct LmwbCodebookTrainOptions {
  int k, num_codes;                  /* of a new set (ignored when one is given) */
  const LmwbCodebookSiteSpec *sites; /* of a new set */
  int n_sites;
  int64_t steps;                     /* required */
  int batch;                         /* windows per step; 0: 8 */
  int context;                       /* tokens per window; 0: min(64, the model's context) */
  double lr;                         /* 0: LMWB_CB_DEFAULT_LR */
  double lambda;                     /* 0: LMWB_CB_DEFAULT_LAMBDA; < 0: no reconstruction term */
  double beta1, beta2, eps;          /* Adam; 0: 0.9, 0.999, 1e-8 */
  bool kmeans;                       /* k-means initialisation */
  int kmeans_batches, kmeans_iters;  /* 0: 4, 10 */
  int64_t dead_every;                /* steps between dead-code replacements; 0: never */
  double dead_noise;                 /* 0: LMWB_CB_DEFAULT_DEAD_NOISE */
  int eval_windows;                  /* 0: 16; < 0: no evaluation */
  guint64 seed;
  const char *checkpoint_dir;        /* NULL: none */
  int64_t checkpoint_every;          /* 0: 200 */
  bool resume;
  int64_t max_steps_this_run;        /* > 0: stop with a checkpoint after this many steps */
  bool finetune;                     /* train the model's weights too */
  double model_lr;                   /* their learning rate; 0: lr */
  bool eos_windows;                  /* windows (training and evaluation) start only at the model's
                                        end-of-text token: document boundaries (TokFSM) */
} LmwbCodebookTrainOptions;

typedef struct LmwbCodebookEval {
  double loss, accuracy; /* mean next-token loss and top-1 accuracy */
  double mse;            /* mean reconstruction error per codebook, summed over codebooks (0 plain) */
} LmwbCodebookEval;

typedef struct LmwbCodebookTrainResult {
  LmwbCodebooks *cb;      /* the trained set (the caller frees it) */
  LmwbModel *model;       /* finetune: the trained model (the caller unrefs it); else NULL */
  int64_t steps;          /* done in all (resumed runs included) */
  LmwbCodebookEval plain, before, after; /* the model alone, with the initial and the trained codes */
  int64_t dead_replaced;  /* codes re-seeded in this run */
  double active_fraction; /* share of codes chosen at least once in the evaluation (after) */
  double seconds;
} LmwbCodebookTrainResult;

/* Trains a new set (init NULL: o->k, o->num_codes, o->sites) or continues `init` (copied). Errors
 * the caller can cause are input errors before any work; progress, metrics ("loss", "lm_loss",
 * "mse" at x = step) and cancel through the reporter; a cancelled run leaves a checkpoint (when
 * checkpoint_dir is set) and returns LMWB_ERROR_CANCELLED. */
gboolean lmwb_codebook_train(LmwbModel *m, const int32_t *ids, size_t n_ids, const LmwbCodebooks *init,
                             const LmwbCodebookTrainOptions *o, LmwbReporter *rep, LmwbCodebookTrainResult *res,
                             GError **error);
void lmwb_codebook_train_result_clear(LmwbCodebookTrainResult *r);
/* The evaluation above on eval windows of the stream (cb NULL: the plain model). */
gboolean lmwb_codebook_evaluate(LmwbModel *m, const LmwbCodebooks *cb, const int32_t *ids, size_t n_ids, int context,
                                int windows, LmwbCodebookEval *ev, double *active_fraction, GError **error);
