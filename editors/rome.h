/* Rank-one and batched knowledge edits: ROME (Meng et al. 2022, kmeng01/rome) and MEMIT (Meng et
 * al. 2023, kmeng01/memit), with the consistent-key variant of ROME (the same key in the update's
 * numerator and denominator, as r-ROME / C-ROME propose). See
 * /work/shared/methods/editing-collapse.md.
 *
 * The edited matrix is the MLP output projection W (blocks.L.mlp.W_out: GPT-2 c_proj, Llama
 * down_proj, NeoX dense_4h_to_h), mlp_out = W k + b with the key k = blocks.L.mlp.hook_post.
 *
 * Statistics: C = E[k kᵀ] over every position of a text (uncentred, double sums; moments.h),
 * saved as `C.safetensors` ("blocks.L.mlp.W_out.C" [d_ff, d_ff] F32, metadata: model, layer,
 * tokens). A model whose C would not fit in memory is refused before allocating.
 *
 * Context templates: the bare "{}" plus n_short and n_long prefixes sampled from the model
 * (seeded, top-k 5) after the seeds "The", "Therefore", "Because", "I", "You", each followed by
 * ". {}" (ROME's get_context_templates).
 *
 * ROME on one request, at layer L:
 *   key    k* = mean over the templates of k at the subject's last token of template(prompt);
 *          u = C⁻¹ k* / ‖C⁻¹ k*‖ (identity C when none is given: u = k* / ‖k*‖)
 *   value  δ is added to mlp_out at the subject's last token of every prompt (the templated
 *          prompts followed by the target's tokens but its last, and "{subject} is a"); Adam (lr,
 *          steps) minimises   mean NLL of the target tokens
 *                           + kl_weight · KL(P_δ ‖ P_0) of the next token after "{subject} is a"
 *                           + weight_decay · ‖δ‖ / ‖v0‖²
 *          stopping early when the loss is below stop_loss; after each step ‖δ‖ ≤ clamp · ‖v0‖, where
 *          v0 is mlp_out at the subject of the bare prompt; v* = v0 + δ.
 *   update keys PAPER:      k_u = k at the subject of the bare prompt;
 *          keys CONSISTENT: k_u = k*;
 *          right = (v* − (W k_u + b)) / (k_u · u),  ΔW = right uᵀ (a rank-one low-rank change of a
 *          fork of the model; the model itself is never changed).
 * MEMIT on n requests over layers l_1 < … < l_m (the last one L):
 *   targets z_i = h_L + δ_i at blocks.L.hook_resid_post, δ_i optimised as above (added there,
 *   clamp clamp_memit · ‖h_L‖); then for each layer l in order, with the model edited so far:
 *   K = keys of the requests at l [d_ff, n] (template means), R = (z − h_L(current)) / (layers
 *   left, l included), ΔW_l = R Kᵀ (λ C_l + K Kᵀ)⁻¹, solved in double precision (Cholesky).
 * Every result is a new fork with low-rank changes; NaN or infinity anywhere is an input error
 * naming the stage, and the model is left as it was. */
#pragma once
#include "app/engine/runner.h"
#include "app/jobs/reporter.h"
#include "editors/edit_request.h"

/* ---- statistics (rome_stats.c) ---- */
typedef struct LmwbEditStats {
  int layer, dim;
  int64_t tokens;
  float *C;     /* [dim, dim], E[k kᵀ] */
  char *model;  /* the model's name as recorded */
} LmwbEditStats;

typedef struct LmwbEditStatsOptions {
  int context;        /* window length; 0: min(128, n_ctx) */
  int64_t max_tokens; /* 0: the whole text */
  int batch;          /* windows per forward; 0: 8 */
} LmwbEditStatsOptions;

LmwbEditStats *lmwb_edit_stats_collect(LmwbModel *m, int layer, const char *text, const LmwbEditStatsOptions *opt,
                                       LmwbReporter *rep, GError **error);
gboolean lmwb_edit_stats_save(const LmwbEditStats *s, const char *path, GError **error);
/* Loads and checks against the model and layer (input error naming the tensor). */
LmwbEditStats *lmwb_edit_stats_load(const char *path, const LmwbModel *m, int layer, GError **error);
void lmwb_edit_stats_free(LmwbEditStats *s);
/* The layer ROME edits when none is given: about a third of the way up (GPT-2 XL: 17 of 48). */
int lmwb_edit_default_layer(const LmwbModel *m);

/* ---- ROME and MEMIT (rome.c, rome_value.c, memit.c) ---- */
typedef enum { LMWB_ROME_KEYS_PAPER, LMWB_ROME_KEYS_CONSISTENT } LmwbRomeKeys;

typedef struct LmwbRomeOptions {
  LmwbRomeKeys keys;
  int steps;            /* Adam steps for δ; default 25 */
  double lr;            /* 0.5 */
  double kl_weight;     /* 0.0625 */
  double weight_decay;  /* 0.5 */
  double clamp;         /* ‖δ‖ ≤ clamp ‖v0‖: ROME 4, MEMIT 0.75 (of ‖h_L‖) */
  double stop_loss;     /* stop once the whole loss is below this: 0.05 */
  int n_short, n_long;  /* context templates: 10 of 5 tokens and 10 of 10 tokens */
  double lambda;        /* MEMIT: the covariance weight λ; default 15000 */
  guint64 seed;
  char **templates;     /* borrowed context templates (lmwb_edit_context_templates); NULL: sampled
                           from the model being edited (a sequence samples them once, as ROME caches them) */
} LmwbRomeOptions;

void lmwb_rome_options_init(LmwbRomeOptions *o);
/* "paper" / "consistent" and back (input error naming the text). */
gboolean lmwb_rome_keys_parse(const char *text, LmwbRomeKeys *out, GError **error);

/* What an edit did, for reports. */
typedef struct LmwbEditInfo {
  int steps;             /* Adam steps taken (summed over requests for MEMIT) */
  double nll_first, nll_last; /* target NLL before and after the optimisation (mean over requests) */
  double delta_norm;     /* ‖δ‖ (mean) */
  double denominator;    /* ROME: k_u · u */
  double update_norm;    /* Frobenius norm of ΔW (summed over layers) */
} LmwbEditInfo;

/* ROME: a fork of m with W_out of `layer` changed by a rank-one ΔW. stats may be NULL (C = I). */
LmwbModel *lmwb_rome_edit(LmwbModel *m, const LmwbEditRequest *req, int layer, const LmwbEditStats *stats,
                          const LmwbRomeOptions *opt, LmwbEditInfo *info, LmwbReporter *rep, GError **error);
/* MEMIT: a fork of m with W_out of every layer in `layers` (ascending) changed. stats[i] for
 * layers[i] (NULL entries or a NULL array: C = I). */
LmwbModel *lmwb_memit_edit(LmwbModel *m, const LmwbEditRequests *reqs, const int *layers, int n_layers,
                           LmwbEditStats *const *stats, const LmwbRomeOptions *opt, LmwbEditInfo *info,
                           LmwbReporter *rep, GError **error);

/* ---- shared by both (rome_value.c) ---- */
/* The context templates (see above): NULL-terminated, g_strfreev. */
char **lmwb_edit_context_templates(LmwbModel *m, int n_short, int n_long, guint64 seed, GError **error);

/* ---- metrics of an edit (edit_metrics.c), as CounterFact scores them ----
 * p(target | prompt) is teacher-forced over the target's tokens (the product of their
 * probabilities). Efficacy: p(new) > p(true) on the prompt (p(new) > 0.5 without target_true);
 * generalisation: the share of paraphrases where it holds; specificity: the share of neighbour
 * prompts whose most probable next token is the same as in the unedited model; fluency: ROME's
 * generation entropy, (2/3 H2 + 4/3 H3) / 2 with Hn the entropy (bits) of the word n-gram
 * frequencies of LMWB_EDIT_FLUENCY_TOKENS tokens sampled (top-k 5, seeded) after the prompt
 * (low when the model repeats itself). */
#define LMWB_EDIT_FLUENCY_TOKENS 60
typedef struct LmwbEditScores {
  double p_new, p_true;   /* on the prompt (p_true NaN without target_true) */
  bool efficacy;
  double generalisation;  /* NaN when the request has no paraphrases */
  double specificity;     /* NaN when it has no neighbours */
  double fluency;
} LmwbEditScores;

gboolean lmwb_edit_score(LmwbModel *edited, LmwbModel *base, const LmwbEditRequest *req, LmwbEditScores *out,
                         GError **error);
/* The most probable next token after each prompt (what specificity compares), and its probability
 * (p may be NULL). */
gboolean lmwb_edit_top_answers(LmwbModel *m, char **prompts, int n, int32_t *out, double *p, GError **error);
