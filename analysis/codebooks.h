/* Codebook features (Tamkin, Taufeeque & Goodman 2023; taufeeque9/codebook-features).
 * See /work/shared/methods/codebooks.md.
 *
 * A codebook is a bottleneck at a site: every activation x (a row of the site) is replaced by the
 * mean of the k codes (rows of a [C, width] table) that score highest by
 *   score_j = LN(x) · c_j / ‖c_j‖       LN: LayerNorm with unit gain, zero bias, eps 1e-5
 * (the same ranking as cosine similarity). Two kinds of site, both taken after their biases as
 * TransformerLens defines them:
 *   attn  blocks.L.attn.hook_z       one codebook per head, width d_head (z includes b_V)
 *   mlp   blocks.L.hook_mlp_out      one codebook, width d_model (includes the output bias)
 * The scoring of a block is one GEMM per codebook ([rows, width] x [width, C]) and a streaming
 * top-k per row.
 *
 * Code ids. The chosen ids of the last forward are the sites
 *   blocks.L.attn.hook_codes  [B, T, n_heads, k]      blocks.L.mlp.hook_codes  [B, T, k]
 * ordered by score (slot 0 the best; after clamps, the ids actually used). They are integers and
 * their width k belongs to the codebook set, not to the model, so they are not runner buffers: the
 * attachment (LmwbCodebookRun) keeps them for the last forward and lmwb_codebook_run_codes reads
 * them (lmwb-batch `activations --hook blocks.L.attn.hook_codes --codebooks DIR` writes them).
 *
 * Files (codebooks_io.c): a folder with
 *   codebooks.json         {"k": K, "num_codes": C, "sites": [{"layer": L, "site": "attn"|"mlp"}, ...]}
 *   codebooks.safetensors  blocks.{L}.attn.codebook [n_heads, C, d_head], blocks.{L}.mlp.codebook
 *                          [C, d_model] (F32; F16/BF16 are widened)
 * Loading checks every count, shape and value against the model and names the field or tensor. */
#pragma once
#include "app/engine/runner.h"
#include "app/jobs/reporter.h"
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define LMWB_CODEBOOK_LN_EPS 1e-5f     /* torch.nn.LayerNorm's default */
#define LMWB_CODEBOOK_MAX_CODES (1 << 24) /* ids stay exact as floats */

typedef enum { LMWB_CODEBOOK_ATTN, LMWB_CODEBOOK_MLP } LmwbCodebookSite;

typedef struct LmwbCodebook {
  int layer;
  LmwbCodebookSite site;
  int groups;   /* attn: n_heads codebooks (one per head); mlp: 1 */
  int width;    /* attn: head_dim; mlp: d_model */
  float *codes; /* [groups, C, width] */
} LmwbCodebook;

typedef struct LmwbCodebooks {
  int k, num_codes;
  int n;               /* codebooks (sites) */
  LmwbCodebook *books; /* [n], in the order of codebooks.json */
  char *source;        /* the folder it was read from, or NULL */
} LmwbCodebooks;

typedef struct LmwbCodebookSiteSpec {
  int layer;
  LmwbCodebookSite site;
} LmwbCodebookSiteSpec;

const char *lmwb_codebook_site_name(LmwbCodebookSite s);         /* "attn", "mlp" */
gboolean lmwb_codebook_site_parse(const char *s, LmwbCodebookSite *out); /* FALSE if neither */
/* The engine site a codebook replaces (hook_z or hook_mlp_out). */
LmwbSite lmwb_codebook_engine_site(LmwbCodebookSite s, int layer);

/* Zeroed codebooks at these sites (checked against the model: layer, duplicates, 1 <= k <= C,
 * memory). */
LmwbCodebooks *lmwb_codebooks_new(const LmwbConfig *cfg, int k, int num_codes, const LmwbCodebookSiteSpec *sites,
                                  int n_sites, GError **error);
void lmwb_codebooks_free(LmwbCodebooks *cb);
/* The codebook at (layer, site), or NULL. */
LmwbCodebook *lmwb_codebooks_find(const LmwbCodebooks *cb, int layer, LmwbCodebookSite site);
/* Checks sizes against a model and that every code is finite (errors name `origin` and the tensor). */
gboolean lmwb_codebooks_check(const LmwbCodebooks *cb, const LmwbConfig *cfg, const char *origin, GError **error);

/* ---- files (codebooks_io.c) ---- */
LmwbCodebooks *lmwb_codebooks_load(const char *dir, const LmwbConfig *cfg, GError **error);
gboolean lmwb_codebooks_save(const LmwbCodebooks *cb, const char *dir, GError **error);

/* ---- selection (host memory) ---- */
/* Select: for n rows x (row stride ldx) of one codebook group with unit codes chat [C, width]
 * (codes / ‖codes‖; a zero code stays zero), ids [n, k] by falling score (ties: lower id first).
 * scratch holds lmwb_codebook_scratch_floats(n, width, C) floats.
 * Decode: out [n, width] (row stride ldo) = the mean of the chosen codes (codes [C, width]). */
size_t lmwb_codebook_scratch_floats(int n, int width, int C);
void lmwb_codebook_select(const float *chat, int C, int width, int k, const float *x, int ldx, int n, int32_t *ids,
                          float *scratch);
void lmwb_codebook_decode(const float *codes, int width, int k, const int32_t *ids, int n, float *out, int ldo);

/* ---- in a run (codebook_run.c) ---- */
/* Forcing a code on: at (layer, site), one head or all (head -1), at the listed absolute positions
 * or all (positions NULL; generated positions included), in all k slots (slot -1: the activation
 * becomes the code itself) or in one slot (the mean with that slot swapped). */
typedef struct LmwbCodeClamp {
  int layer;
  LmwbCodebookSite site;
  int head;       /* -1: every head (attn); mlp: -1 */
  int code;
  int slot;       /* -1: all k slots */
  int *positions; /* NULL: every position (owned by a parsed clamp) */
  int n_positions;
} LmwbCodeClamp;

/* Parse "L:SITE[:HEAD]=CODE[@P1,P2,...][#SLOT]" (e.g. 2:attn:1=77@3,4 or 0:mlp=5#0). Checks
 * what the model alone decides (layer, head, positions < n_ctx); the codebook set checks the rest
 * when the clamp is added. Errors name the field and the clamp's text. */
gboolean lmwb_code_clamp_parse(const LmwbConfig *cfg, const char *text, LmwbCodeClamp *out, GError **error);
void lmwb_code_clamp_clear(LmwbCodeClamp *c);

/* The codebooks of cb spliced into every forward of r (CALL hooks at their sites: in a backward
 * the gradient passes straight through). cb is borrowed: it must outlive the attachment, and
 * lmwb_codebook_run_changed must be called after its codes change. NULL on error. */
typedef struct LmwbCodebookRun LmwbCodebookRun;
LmwbCodebookRun *lmwb_codebooks_attach(LmwbRunner *r, LmwbCodebooks *cb, GError **error);
/* Removes the hooks from r (r may be NULL when it is already freed) and frees the attachment. */
void lmwb_codebooks_detach(LmwbRunner *r, LmwbCodebookRun *run);
void lmwb_codebook_run_changed(LmwbCodebookRun *run);
/* Add a clamp (copied; checked: the site has a codebook, code < C, head < n_heads, slot < k). */
gboolean lmwb_codebook_run_clamp(LmwbCodebookRun *run, const LmwbCodeClamp *c, GError **error);
void lmwb_codebook_run_clear_clamps(LmwbCodebookRun *run);
/* Every clamp position is below `length` (the sequence, with generated tokens, a run will reach):
 * else an input error naming the position. */
gboolean lmwb_codebook_run_check_positions(LmwbCodebookRun *run, int length, GError **error);
/* The code ids of the last forward at (layer, site): [B, T, n_heads, k] (ndim 4) or [B, T, k]
 * (ndim 3), owned by the attachment until the next forward. Input error naming the site when it
 * has no codebook or no forward has run. */
const int32_t *lmwb_codebook_run_codes(LmwbCodebookRun *run, int layer, LmwbCodebookSite site, int64_t shape[4],
                                       int *ndim, GError **error);
/* "blocks.L.attn.hook_codes" / "blocks.L.mlp.hook_codes": TRUE and the parts, else FALSE (no
 * error: the caller tries the engine's sites next). */
gboolean lmwb_codebook_codes_site_parse(const char *name, int *layer, LmwbCodebookSite *site);

/* ---- training hooks (used by codebook_train.c) ---- */
/* With grads on, every forward adds to per-code gradients the reconstruction term
 * mse_weight * d/dc mean_rows ‖out - x‖² (rows: valid positions; per head for attn), and every
 * backward adds the gradient reaching the site's output (dL/dout / k to each chosen code): the
 * paper's "aeloss" with a straight-through input gradient. grads [groups, C, width] per codebook
 * (in cb order), zeroed by lmwb_codebook_run_zero_grads; used[] counts a code's choices. */
void lmwb_codebook_run_set_training(LmwbCodebookRun *run, bool on, float mse_weight);
void lmwb_codebook_run_zero_grads(LmwbCodebookRun *run);
float *lmwb_codebook_run_grads(LmwbCodebookRun *run, int book);
const int64_t *lmwb_codebook_run_used(LmwbCodebookRun *run, int book);
/* Sum over books of the mean squared reconstruction error per row (‖out - x‖² averaged over valid
 * rows, and over heads for attn) of the forwards since the last zero_grads, and their count. */
double lmwb_codebook_run_mse(LmwbCodebookRun *run, int64_t *forwards);
/* keep: every forward keeps each site's input rows (before replacement) for
 * lmwb_codebook_run_inputs ([rows, groups * width], rows = B*T of the last forward); passthrough:
 * the codebooks replace nothing and choose nothing (inputs of the plain model, for k-means). */
void lmwb_codebook_run_set_inputs(LmwbCodebookRun *run, bool keep, bool passthrough);
const float *lmwb_codebook_run_inputs(LmwbCodebookRun *run, int book, int *rows);
