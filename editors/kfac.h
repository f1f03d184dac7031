/* Curvature-based memorisation editing with K-FAC (Merullo et al. 2025, "From memorization to
 * reasoning in the spectrum of loss curvature", arXiv 2510.24256; goodfire-ai/memorization_kfac).
 * See /work/shared/methods/kfac-memorisation.md.
 *
 * Matrices. Only MLP projections W [out, in] (canonical layout, y = x Wᵀ + b) are edited:
 *   up    GPT-2 c_fc, Llama up_proj, NeoX dense_h_to_4h   in: ln2.hook_normalized  out: mlp.hook_pre
 *                                                          (gated MLPs: mlp.hook_pre_linear)
 *   gate  Llama gate_proj (gated MLPs only)                in: ln2.hook_normalized  out: mlp.hook_pre
 *   down  GPT-2 c_proj, Llama down_proj, NeoX dense_4h_to_h in: mlp.hook_post       out: hook_mlp_out
 * The gradient at the output site is the gradient before the bias (a bias does not change it).
 *
 * Factors (lmwb_kfac_collect). A = E[a aᵀ] over the matrix's input a, G = E[g gᵀ] over the
 * gradient g of the loss at its output; uncentred, divided by the number of positions used. The
 * text's tokens are cut into consecutive windows of `context` tokens (a last partial window is
 * dropped), ceil(tokens / context) of them or as many as the text holds. The loss of a window is
 * the SUM of its next-token losses; the last position of each window has no target and is left
 * out of both A and G, so positions = windows × (context − 1). Labels: sampled from the model's
 * own next-token distribution at each position (true Fisher; the default; window w draws from its
 * own generator seeded by (seed, w), so a resumed run draws the same labels), or the text's next
 * tokens. Sums are double precision (app/engine/moments.h); no per-token gradient is kept, so
 * memory is the factors plus one batch of activations.
 *
 * The edit (lmwb_kfac_edit_matrix). G = U_G diag(λ) U_Gᵀ, A = U_A diag(μ) U_Aᵀ (LAPACK; tiny
 * negative eigenvalues from rounding count as 0). C = U_Gᵀ W U_A; component (i, j) has curvature
 * Π_ij = λ_i μ_j and the total mass is M = (Σλ)(Σμ). The components of largest Π are kept until
 * their mass reaches ρ M: the kept set is {Π_ij ≥ τ} for the largest τ whose kept mass is
 * ≥ ρ M, found by bisection on τ (for each i, the count of j with μ_j ≥ τ/λ_i comes from the
 * sorted μ and its prefix sums; all out × in products are never sorted). The rest are zeroed and
 * W' = U_G (C ⊙ mask) U_Aᵀ. ρ = 1 returns W unchanged, bit for bit. Low curvature = flat loss =
 * where the paper finds memorised text.
 *
 * Files (lmwb_kfac_save / _load): a folder with factors.safetensors holding
 * blocks.{L}.mlp.{up|gate|down}.A [in, in] and .G [out, out] as F32, and factors.json (model,
 * fingerprint, tokens, positions, windows, context, labels, seed). Loading checks every tensor's
 * name, shape against the model, finiteness and symmetry, and that the fingerprint is the
 * model's, naming the tensor in the input error. */
#pragma once
#include "app/engine/runner.h"
#include "app/jobs/reporter.h"
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum { LMWB_KFAC_UP, LMWB_KFAC_GATE, LMWB_KFAC_DOWN, LMWB_KFAC_N_MATRICES } LmwbKfacMatrix;
typedef enum { LMWB_KFAC_LABELS_SAMPLE, LMWB_KFAC_LABELS_DATA } LmwbKfacLabels;

#define LMWB_KFAC_DEFAULT_CONTEXT 512   /* the paper's sequence length (capped at the model's context) */
#define LMWB_KFAC_DEFAULT_BATCH 8       /* windows per forward/backward */
#define LMWB_KFAC_FACTORS_FILE "factors.safetensors"
#define LMWB_KFAC_META_FILE "factors.json"
#define LMWB_KFAC_CHECKPOINT_FILE "checkpoint.safetensors"

const char *lmwb_kfac_matrix_name(LmwbKfacMatrix m); /* up, gate, down */
const char *lmwb_kfac_labels_name(LmwbKfacLabels l); /* sample, data */
/* "up,gate,down" -> a bit mask of (1 << LmwbKfacMatrix); input error naming the unknown word. */
gboolean lmwb_kfac_matrices_parse(const char *list, unsigned *mask, GError **error);
/* "2-3", "0,2", "all" -> a sorted list of distinct layers (g_free) within [0, n_layer): input
 * error naming the layer out of range. */
int *lmwb_kfac_layers_parse(const char *spec, int n_layer, int *n, GError **error);
/* "0.6,0.4" -> n values (g_free), each in (0, upper] (upper INFINITY: any number above 0); an input
 * error naming `what` and the value otherwise. */
gboolean lmwb_kfac_values_parse(const char *text, const char *what, double upper, double **values, int *n,
                                GError **error);

/* Where one matrix lives in a model. */
typedef struct LmwbKfacInfo {
  LmwbSite in, out;  /* the input site (A) and the output site whose gradient gives G */
  char param[64];    /* canonical tensor name, e.g. "blocks.2.mlp.W_in" */
  int d_in, d_out;
} LmwbKfacInfo;
/* Input error for `gate` without a gated MLP and a layer out of range. */
gboolean lmwb_kfac_info(const LmwbConfig *cfg, int layer, LmwbKfacMatrix m, LmwbKfacInfo *out, GError **error);

/* The factors of one matrix: A [d_in, d_in], G [d_out, d_out], row-major, symmetric. */
typedef struct LmwbKfacFactor {
  int layer;
  LmwbKfacMatrix matrix;
  int d_in, d_out;
  double *A, *G;
} LmwbKfacFactor;

/* One collection that a merge took in (kfac_merge.c): what it was and its share. */
typedef struct LmwbKfacPart {
  char *source;        /* the factor folder it was read from */
  int64_t tokens, positions, windows;
  guint64 seed;
  double weight;       /* its share of the merged A and G (the shares sum to 1) */
} LmwbKfacPart;

typedef struct LmwbKfacFactors {
  int n;
  LmwbKfacFactor *f;   /* by layer, then up, gate, down */
  char *model;         /* the model's folder as given (informational) */
  char fingerprint[65];/* lmwb_kfac_fingerprint of the model they were collected on */
  int64_t tokens;      /* windows × context */
  int64_t positions;   /* rows in each factor's mean: windows × (context − 1) */
  int64_t windows;
  int context;
  LmwbKfacLabels labels;
  guint64 seed;
  int n_parts;          /* > 0 for merged factors: the collections they combine */
  LmwbKfacPart *parts;
} LmwbKfacFactors;

void lmwb_kfac_factors_free(LmwbKfacFactors *f);
/* The factor of (layer, matrix), or NULL. */
const LmwbKfacFactor *lmwb_kfac_factors_find(const LmwbKfacFactors *f, int layer, LmwbKfacMatrix m);

/* SHA-256 (hex) of the model's shape and every effective weight: factors belong to one version. */
gboolean lmwb_kfac_fingerprint(const LmwbModel *m, char out[65], GError **error);

typedef struct LmwbKfacCollectOptions {
  const int *layers;
  int n_layers;
  unsigned matrices;         /* mask of (1 << LmwbKfacMatrix) */
  int64_t tokens;            /* tokens to use (>= 1); fewer when the text is shorter */
  int context;               /* window length, 2 .. the model's context; 0: the default */
  int batch;                 /* windows per forward; 0: LMWB_KFAC_DEFAULT_BATCH */
  LmwbKfacLabels labels;
  guint64 seed;
  /* Resume: with a checkpoint path, the sums are written there every checkpoint_every windows
   * (0: 256), on cancel and after stop_after windows of this run (0: no stop); a run given the
   * same options and the same path continues from it. NULL: no checkpoints. */
  const char *checkpoint;
  int64_t checkpoint_every;
  int64_t stop_after;
} LmwbKfacCollectOptions;

void lmwb_kfac_collect_options_init(LmwbKfacCollectOptions *o);
/* Collects the factors of every chosen (layer, matrix) over ids [n]. Progress per batch, metric
 * "tokens_per_s"; cancel is checked between batches (LMWB_ERROR_CANCELLED, after a checkpoint).
 * Stopping after stop_after windows returns NULL with LMWB_ERROR_CANCELLED too. */
LmwbKfacFactors *lmwb_kfac_collect(LmwbModel *m, const int32_t *ids, size_t n, const LmwbKfacCollectOptions *o,
                                   LmwbReporter *rep, GError **error);

/* What factors.json holds: format, model, fingerprint, tokens, positions, windows, context, seed,
 * labels and the list of factors (layer, matrix, in, out). */
JsonNode *lmwb_kfac_factors_json(const LmwbKfacFactors *f);
/* factors.safetensors + factors.json into dir (created if missing; each file atomic). */
gboolean lmwb_kfac_save(const LmwbKfacFactors *f, const char *dir, GError **error);
/* Reads a factor folder; when model is non-NULL checks it against the model (shapes, the gated
 * MLP for gate, the fingerprint). Every tensor is checked finite and symmetric. */
LmwbKfacFactors *lmwb_kfac_load(const char *dir, const LmwbModel *model, GError **error);

/* ---- merging (kfac_merge.c) ---- */

/* Factors over several texts as one. Each A and G is the mean of the parts' weighted by
 * `weights` (n entries, finite and > 0, normalised to sum 1), or, when weights is NULL, by each
 * part's positions, which equals collecting over every part's windows. K-FAC keeps what its
 * collection text exercises, so a mixture says what to keep, and in which proportion (e.g. the
 * facts a model should know and ordinary English, without the memorised text). The parts must
 * have the same fingerprint, labels, context and matrices (shapes included): otherwise an input
 * error naming the part (`names`, for messages) and what differs. tokens, positions and windows
 * are summed; seed is the first part's; `parts` records each part and its share. */
LmwbKfacFactors *lmwb_kfac_merge(LmwbKfacFactors *const *parts, const char *const *names, int n,
                                 const double *weights, GError **error);
/* Loads each folder (lmwb_kfac_load, checked against model when non-NULL) and merges them as
 * above, the folders' paths naming the parts; one folder without weights is simply loaded. */
LmwbKfacFactors *lmwb_kfac_load_merged(const char *const *dirs, int n, const double *weights, const LmwbModel *model,
                                       GError **error);

/* ---- the edit (kfac_edit.c) ---- */

/* One factor decomposed: eigenvalues DESCENDING (negatives clamped to 0), eigenvectors as columns
 * in the same order. */
typedef struct LmwbKfacEigen {
  int d_in, d_out;
  double *mu, *UA;     /* A: [d_in], [d_in, d_in] */
  double *lambda, *UG; /* G: [d_out], [d_out, d_out] */
} LmwbKfacEigen;

gboolean lmwb_kfac_eigen(const LmwbKfacFactor *f, LmwbKfacEigen *out, GError **error);
void lmwb_kfac_eigen_clear(LmwbKfacEigen *e);
/* The threshold τ of a keep-mass ρ in (0, 1] (0 for ρ = 1: everything is kept), and the kept
 * share of the mass (1 for ρ = 1) and count of components. */
double lmwb_kfac_threshold(const LmwbKfacEigen *e, double rho, double *kept_mass, int64_t *kept);
/* W [d_out, d_in] float -> W' (may be W itself). ρ outside (0, 1] is an input error. */
gboolean lmwb_kfac_edit_matrix(const LmwbKfacEigen *e, const float *W, double rho, float *W_out,
                               double *kept_mass, int64_t *kept, GError **error);
/* The curvature mass curve: for nq thresholds spread over the products' range, kept share of the
 * components (x) against kept share of mass (y). */
void lmwb_kfac_mass_curve(const LmwbKfacEigen *e, int nq, double *frac_components, double *frac_mass);

typedef struct LmwbKfacEditStats {
  int layer;
  LmwbKfacMatrix matrix;
  double kept_mass;     /* share of the curvature mass kept (>= ρ) */
  double kept_fraction; /* share of the components kept */
  double rel_change;    /* ||W' − W||_F / ||W||_F */
} LmwbKfacEditStats;

/* Edits every (layer, matrix) of the lists in a fork of the model (a new version; the model is
 * not touched): the overlay a runner can compare with its parent. Every factor must be in
 * `factors` (checked against the model beforehand with lmwb_kfac_load). stats (optional) gets
 * n_layers × (matrices chosen) entries (g_free). eig (optional) is a cache of decompositions in
 * the order of factors->f (NULL entries are computed and kept): a sweep decomposes once. */
LmwbModel *lmwb_kfac_edit(LmwbModel *m, const LmwbKfacFactors *factors, const int *layers, int n_layers,
                          unsigned matrices, double rho, LmwbKfacEigen **eig, LmwbKfacEditStats **stats,
                          int *n_stats, GError **error);
