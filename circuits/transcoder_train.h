/* Training transcoders and sparse autoencoders (Dunefsky, Chlenski & Nanda 2024; SAELens; Bricken
 * et al. 2023 "Towards Monosemanticity" for resampling; Rajamanoharan et al. 2024 and Gemma Scope
 * for JumpReLU). See /work/shared/methods/transcoders.md and transcoder.h for the transcoder itself.
 *
 * What is trained. A transcoder for MLP layer L reads x = blocks.L.ln2.hook_normalized and imitates
 * y = blocks.L.hook_mlp_out; a plain SAE (the baseline) reads and writes one site (x = y) and
 * encodes x - b_dec as SAELens does. Activations supported: ReLU with an L1 penalty, TopK (k; no
 * penalty) and JumpReLU with an L0 penalty and straight-through threshold gradients.
 *
 * Units. Training runs on normalised activations, x~ = x / rho_x and y~ = y / rho_y, with
 *   rho_y^2 = E||y - E y||^2 (the targets' variance summed over dimensions) and
 *   rho_x^2 = E||x||^2 (rho_x = rho_y for an SAE),
 * estimated on the first buffer fill and then fixed for the run (kept in checkpoints). The saved
 * transcoder computes the same function in the model's units with unit-norm decoder rows:
 *   W_enc = W~_enc rho_y / rho_x, b_enc = rho_y b~_enc, threshold = rho_y theta~, W_dec = W~_dec,
 *   b_dec = rho_y b~_dec   (so f = rho_y f~ and out = rho_y out~).
 *
 * Loss on a batch of n tokens (in normalised units; f~ the feature activations):
 *   L = (1/n) sum_i ||out~_i - y~_i||^2  +  lambda_t * S
 *   ReLU:     S = (1/n) sum_i sum_j f~_ij ||W~_dec,j||      (the L1 of SAELens, weighted by decoder norms)
 *   JumpReLU: S = (1/n) sum_i sum_j H(pre~_ij - theta~_j)   (the L0 of Gemma Scope)
 *   TopK:     S = 0, and the auxiliary loss AuxK below
 * The first term is the batch's squared error over the targets' variance, i.e. close to its FVU;
 * in model units it is (1/n) sum ||out - y||^2 / rho_y^2 and the L1 term is
 * lambda (1/n) sum f_ij ||W_dec,j|| / rho_y. Decoder rows are kept at unit norm, so the weighting
 * by ||W~_dec,j|| is 1; its gradient with respect to W_dec is parallel to each row and is removed
 * with the rest of that component (below). lambda_t ramps linearly from 0 to lambda over the first
 * sparsity_warmup steps.
 *
 * AuxK (TopK; Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): with e_i = y~_i - out~_i
 * the main error (held fixed) and, for each token, a_i the aux_k largest positive pre-activations
 * among the features dead by the dead window, the loss adds
 *   aux_coef (1/n) sum_i ||a_i W~_dec - e_i||^2       (aux_coef LMWB_TC_AUXK_COEF, aux_k d_out/2)
 * so that dead features learn to explain what the live ones miss. It only counts while some
 * features are dead. TopK runs do not resample by default: resampling thousands of features into
 * the k places of their tokens at once undoes much of what was learnt (measured on the built-in
 * model: data/models/tiny-world/transcoders/CARD.md); AuxK is their cure for dead features.
 *
 * JumpReLU: f = pre H(pre - theta), theta = exp(log_theta) per feature, log_theta trained. Gradients
 * as Rajamanoharan et al. (2024) with a rectangle kernel K(u) = 1 for |u| < 1/2 of bandwidth eps:
 *   df/dpre = H(pre - theta);  df/dtheta = -(theta/eps) K((pre - theta)/eps);
 *   dH/dpre = 0;               dH/dtheta = -(1/eps) K((pre - theta)/eps).
 * eps and the initial threshold are Gemma Scope's 0.001 on activations of norm sqrt(d), that is
 * LMWB_TC_JUMP_EPS / sqrt(d_out) in these units.
 *
 * A step: encode (one GEMM, x~ W~_enc + b~_enc, then the activation), decode, loss, backward,
 * the component of each decoder row's gradient parallel to the row removed, Adam (optim.h; no
 * weight decay), then every decoder row divided by its norm. When few features are active
 * (density below LMWB_TC_SPARSE_DENSITY) the decode and the backward run over the active
 * features only; otherwise they are four GEMMs (the decode, and df, dW_dec, dW_enc). Either way the result is deterministic for a
 * fixed thread count.
 *
 * Initialisation: W~_dec rows random unit vectors (normal, from the seed), W~_enc = c W~_dec^T (for
 * d_in = d_out; otherwise its own random unit columns, times c), b~_enc_j = -mean(x~) . w~_enc,j
 * (each feature reads the centred input, as an SAE's x - b_dec; 0 for an SAE), b~_dec = the mean of
 * the first fill's targets (so b_dec starts at E y), log_theta = log(eps) (JumpReLU). The scale c
 * makes the first reconstruction's mean squared norm about b_dec LMWB_TC_INIT_SHARE of the targets'
 * variance (SAELens's and Anthropic's decoder norm of 0.1 does the same at their shapes): a small
 * start, whatever the width.
 *
 * Dead features and resampling. A feature is dead when it has not been active on any of the last
 * dead_window training tokens (a resampled feature gets a new window). Every resample_every tokens
 * (after the first dead_window) until resample_until of the run, dead features are re-initialised
 * as in "Towards Monosemanticity": the squared error e_i = ||out~_i - y~_i||^2 of every token of
 * (up to 16,384 tokens of) the current buffer fill is computed; for each dead feature a token is
 * drawn with probability proportional to e_i^2; the feature's decoder row becomes that token's
 * normalised error (y~_i - out~_i)/||.|| (for an SAE the error of its input, which is its target);
 * its encoder row s u/||u||, where u is the token's centred input (x~_i - mean x~ for a
 * transcoder, whose b_enc becomes -mean x~ . w_enc so that the feature reads the centred input;
 * x~_i - b~_dec for an SAE, whose b_enc becomes 0, as Bricken et al.) and s is
 * LMWB_TC_RESAMPLE_SCALE (0.2) times the mean encoder norm of the live features; for TopK instead
 * the s that puts the feature's pre-activation on that token LMWB_TC_RESAMPLE_TOPK_MARGIN above
 * the token's k-th largest (a 0.2 encoder would never be among the k largest), so that it wins a
 * place there and on tokens like it. Its threshold becomes the initial one (JumpReLU); Adam's
 * moments of those weights are zeroed.
 *
 * Data (lmwb_tc_train). Windows of `context` tokens are drawn uniformly at random positions of the
 * token stream; a fill of buffer tokens (buffer/context windows, run through the model
 * forward_batch windows at a time) is shuffled and consumed whole, batch tokens a step, before the
 * next fill: memory is bounded by the buffer whatever the token count. Steps = tokens / batch
 * (rounded up). Learning rate: lmwb_lr_schedule (linear warm-up, cosine to lr_min).
 *
 * Checkpoints and exact resume: every checkpoint_every steps, on cancel and on max_steps_this_run
 * the trainer writes checkpoint_dir/state.safetensors (weights, Adam moments, each feature's last
 * active token, the normalisers, the random states and the position in the current fill). A
 * resumed run recomputes the current fill from its random state and continues: it ends with
 * bit-identical weights to an uninterrupted run (for a fixed thread count). Cancel is checked
 * between steps and between forward batches (well within a second). */
#pragma once
#include "circuits/transcoder.h"

#define LMWB_TC_DEFAULT_BATCH 4096         /* tokens per step (Dunefsky et al.) */
#define LMWB_TC_DEFAULT_LR 4e-4            /* Dunefsky et al. */
#define LMWB_TC_DEFAULT_EXPANSION 16       /* d_sae = 16 d_in when not given */
#define LMWB_TC_JUMP_EPS 0.001             /* JumpReLU bandwidth and initial threshold (Gemma Scope) */
#define LMWB_TC_RESAMPLE_SCALE 0.2         /* encoder norm of a resampled feature (Bricken et al. 2023) */
#define LMWB_TC_RESAMPLE_TOPK_MARGIN 1.05  /* a resampled TopK feature's lead on its token's k-th largest */
#define LMWB_TC_SPARSE_DENSITY (1.0 / 12)  /* active fraction below which the sparse backward runs */
#define LMWB_TC_MAX_K 4096
#define LMWB_TC_INIT_SHARE 0.01            /* initial reconstruction's share of the targets' variance */
#define LMWB_TC_AUXK_COEF (1.0 / 32)       /* TopK's auxiliary loss (Gao et al. 2024) */

typedef struct LmwbTcTrainOptions {
  /* what: in != out: a transcoder (lmwb_tc_train_options_init: ln2 of `layer` -> its mlp_out);
   * in == out: a plain SAE at that site */
  LmwbSite in, out;
  int d_sae;                  /* features; 0: LMWB_TC_DEFAULT_EXPANSION x d_in */
  LmwbTcActivation act;       /* RELU (L1), TOPK (k), JUMPRELU (L0) */
  int k;                      /* TopK: 1..min(d_sae, LMWB_TC_MAX_K) */
  double sparsity;            /* lambda: the L1 (ReLU) or L0 (JumpReLU) coefficient; TopK: must be 0 */
  int64_t sparsity_warmup;    /* steps over which lambda ramps up from 0; 0: 5% of the steps; < 0: none */
  /* data */
  int64_t tokens;             /* training tokens (required) */
  int context;                /* window length; 0: min(128, the model's context) */
  int batch;                  /* tokens per step; 0: LMWB_TC_DEFAULT_BATCH */
  int buffer;                 /* tokens per shuffled fill; 0: 8 batches (at least one window) */
  int forward_batch;          /* windows per forward; 0: 16 */
  double sparse_below;        /* active fraction below which the sparse path runs; 0: LMWB_TC_SPARSE_DENSITY;
                                 < 0: never; 1: always (the two paths agree to rounding) */
  double aux_coef;            /* TopK's AuxK coefficient; 0: LMWB_TC_AUXK_COEF; < 0: off */
  int aux_k;                  /* dead features a token may use in AuxK; 0: d_out / 2 */
  /* optimiser */
  double lr;                  /* peak; 0: LMWB_TC_DEFAULT_LR */
  double lr_min;              /* at the end of the cosine; 0 */
  int64_t warmup;             /* steps of linear warm-up; 0: 5% of the steps; < 0: none */
  double beta1, beta2, eps;   /* Adam; 0: 0.9, 0.999, 1e-8 */
  /* dead features */
  int64_t dead_window;        /* tokens; 0: max(tokens / 10, 4 batches) (lmwb_tc_trainer_new: AuxK off) */
  int64_t resample_every;     /* tokens between resamplings; 0: dead_window (TopK: never); < 0: never */
  double resample_until;      /* fraction of the run after which no feature is resampled; 0: 0.7 */
  guint64 seed;
  /* checkpoints */
  const char *checkpoint_dir; /* NULL: none (cancel then loses the run) */
  int64_t checkpoint_every;   /* steps; 0: 500 */
  gboolean resume;            /* continue from checkpoint_dir/state.safetensors */
  int64_t max_steps_this_run; /* > 0: stop with a checkpoint after this many steps (as an interruption) */
  const char *metrics_csv;    /* NULL, or a CSV written a row per step (appended on resume) */
} LmwbTcTrainOptions;

/* Zeroes o and sets a transcoder for MLP layer `layer` (defaults everywhere else). */
void lmwb_tc_train_options_init(LmwbTcTrainOptions *o, int layer);

typedef struct LmwbTcTrainResult {
  LmwbTranscoder *tc;         /* the trained transcoder, in model units (the caller frees it) */
  int64_t steps, tokens;      /* done in all (resumed runs included) */
  /* the final weights measured on (up to 16,384 tokens of) one buffer fill: the current one, or a
   * new one when the last was used up */
  double mse;                 /* normalised squared error, the loss's first term */
  double fvu, l0;
  double dead_fraction;       /* features dead by the dead window at the end */
  int64_t resampled;          /* feature re-initialisations in all */
  double seconds;             /* this run's wall time */
  double tokens_per_s;        /* this run's training tokens per second, model forwards included */
  double step_tokens_per_s;   /* ... of the training steps alone */
} LmwbTcTrainResult;

/* Trains on windows of a token stream of the model's vocabulary. Everything the caller can get
 * wrong (sizes, sites, options, too few tokens, a checkpoint of another run) is an input error
 * before anything is written. Progress, metrics (series "loss", "mse", "fvu", "l0",
 * "dead_fraction", "lr" at x = step, every step) and cancel through the reporter; a cancelled run
 * leaves a checkpoint (when checkpoint_dir is set) and returns LMWB_ERROR_CANCELLED. */
gboolean lmwb_tc_train(LmwbModel *m, const int32_t *ids, size_t n_ids, const LmwbTcTrainOptions *o,
                       LmwbReporter *rep, LmwbTcTrainResult *res, GError **error);
void lmwb_tc_train_result_clear(LmwbTcTrainResult *r);

/* ---- the optimisation itself, on activations the caller holds (tests, benchmarks) ---- */
typedef struct LmwbTcTrainer LmwbTcTrainer;

typedef struct LmwbTcStepStats {
  double loss, mse, sparsity; /* L, its first term, S (before lambda) */
  double fvu;                 /* sum ||out - y||^2 / sum ||y - batch mean||^2 */
  double l0;                  /* mean active features per token */
  gboolean sparse;            /* the sparse backward ran */
} LmwbTcStepStats;

/* A trainer for these sizes with o's activation, k, sparsity, AuxK, dead window and Adam settings
 * (sites, data and schedule fields are not used). sae: encode x - b_dec (in and out are one site). */
LmwbTcTrainer *lmwb_tc_trainer_new(int d_in, int d_sae, int d_out, gboolean sae, const LmwbTcTrainOptions *o,
                                   GError **error);
void lmwb_tc_trainer_free(LmwbTcTrainer *t);
/* Normalisers and weights from a sample of n rows of inputs x [n, d_in] and targets y [n, d_out]
 * (the initialisation above); input error when the targets do not vary. */
gboolean lmwb_tc_trainer_init(LmwbTcTrainer *t, const float *x, const float *y, int n, guint64 seed, GError **error);
/* Or start from an existing transcoder of the same sizes and activation (normalisers from the
 * sample; decoder rows rescaled to unit norm with the scale moved into the encoder). */
gboolean lmwb_tc_trainer_init_from(LmwbTcTrainer *t, const LmwbTranscoder *tc, const float *x, const float *y, int n,
                                   GError **error);
/* One step on n rows (n at most what lmwb_tc_trainer_reserve made room for). lr: Adam's rate;
 * sparsity_scale: lambda_t / lambda. */
void lmwb_tc_trainer_step(LmwbTcTrainer *t, const float *x, const float *y, int n, double lr, double sparsity_scale,
                          LmwbTcStepStats *st);
/* Scratch for batches of up to n rows (memory checked). */
gboolean lmwb_tc_trainer_reserve(LmwbTcTrainer *t, int n, GError **error);
/* The loss and its gradient with respect to the flat parameters (before the decoder projection;
 * the JumpReLU threshold part is the straight-through estimate, AuxK holds the main error fixed),
 * without updating. */
double lmwb_tc_trainer_gradient(LmwbTcTrainer *t, const float *x, const float *y, int n, double sparsity_scale,
                                float *grad);
/* The current weights on n rows (in chunks of 1,024): the mean normalised squared error,
 * the FVU (about the rows' mean) and the mean number of active features. */
void lmwb_tc_trainer_measure(LmwbTcTrainer *t, const float *x, const float *y, int n, double *mse, double *fvu,
                             double *l0);
/* Flat parameters, in normalised units: W~_enc stored [d_sae, d_in] (a row per feature), b~_enc
 * [d_sae], W~_dec [d_sae, d_out], b~_dec [d_out], then log_theta [d_sae] for JumpReLU. */
float *lmwb_tc_trainer_params(LmwbTcTrainer *t, size_t *n);
/* Re-initialise the features dead by the window (see above) from a sample of rows (drawn from
 * with the trainer's own random state); returns how many were resampled. */
int lmwb_tc_trainer_resample(LmwbTcTrainer *t, int64_t window, const float *x, const float *y, int n);
/* Features dead by the window (not active in the last `window` tokens the trainer has seen). */
int lmwb_tc_trainer_dead(const LmwbTcTrainer *t, int64_t window, guint8 *dead /* [d_sae] or NULL */);
int64_t lmwb_tc_trainer_tokens_seen(const LmwbTcTrainer *t);
/* The transcoder in model units (a new one; sites left as lmwb_transcoder_new sets them). */
LmwbTranscoder *lmwb_tc_trainer_export(const LmwbTcTrainer *t, GError **error);
