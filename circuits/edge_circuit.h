/* Edge circuits of a task (methods/edge-pruning.md): scores by edge attribution patching (EAP,
 * EAP-IG), learned masks (edge pruning), the evaluation of a circuit by interchange ablation, and
 * circuit files. A circuit is keep[n_edges] (1: the edge is in it) over the edges of
 * circuits/edge_stream.h; edges left out read the corrupted run's writer output.
 *
 * Batches: examples go in batches of `batch` (0: 32) sequences, right-padded to the batch's longest
 * example; each example's metric is read at its last token. */
#pragma once
#include "app/jobs/reporter.h"
#include "circuits/edge_stream.h"
#include "circuits/edge_tasks.h"
#include <json-glib/json-glib.h>

#define LMWB_EDGE_DEFAULT_BATCH 32

/* ---- EAP / EAP-IG (edge_eap.c) ----------------------------------------------------------------
 * score(w -> v) = mean over examples of sum over positions (ã_w - a_w) . dM/dx_v, M the task's
 * metric (logit difference; gt: probability difference) at the last position, the gradient on the
 * clean run: the first-order change of M when the edge is removed (Nanda; Syed et al. 2023).
 * EAP-IG (Hanna et al. 2024): the gradient averaged over ig_steps runs whose input embeddings lie
 * at k / ig_steps (k = 1 .. ig_steps) on the line from the corrupted to the clean input. */
typedef struct LmwbEapOptions {
  int ig_steps; /* 0: EAP; else EAP-IG with this many points (5 - 30 in the paper) */
  int batch;    /* 0: LMWB_EDGE_DEFAULT_BATCH */
} LmwbEapOptions;

/* Scores [n_edges] (g_free), or NULL with an error (cancelled: LMWB_ERROR_CANCELLED). */
float *lmwb_edge_eap(LmwbModel *m, const LmwbEdgeTask *t, const LmwbEapOptions *opt, LmwbReporter *rep,
                     GError **error);

/* ---- selection (edge_select.c) ----------------------------------------------------------------- */

/* keep = the n edges of largest |score| (ties: lower index first), then dangling edges removed.
 * Returns the edges kept. */
int64_t lmwb_edge_select_top(const LmwbEdgeGraph *g, const float *score, int64_t n, uint8_t *keep);
/* Removes the edges not on a path from `input` to `logits` through kept edges (a head is reached
 * when any of its q, k, v readers is; it reaches on when it has a kept edge to a reader that
 * does). Returns the edges left. */
int64_t lmwb_edge_remove_dangling(const LmwbEdgeGraph *g, uint8_t *keep);
int64_t lmwb_edge_count(const LmwbEdgeGraph *g, const uint8_t *keep);

/* ---- evaluation (edge_eval.c) ------------------------------------------------------------------ */

typedef struct LmwbEdgeEval {
  LmwbEdgeMetrics circuit;   /* the circuit against the full model */
  LmwbEdgeMetrics full;      /* the full model against itself (kl 0, exact match 1) */
  LmwbEdgeMetrics corrupted; /* every edge removed: the corrupted run, against the full model */
  int64_t edges, total_edges;
} LmwbEdgeEval;

/* keep NULL: every edge. */
gboolean lmwb_edge_eval(LmwbModel *m, const LmwbEdgeTask *t, const uint8_t *keep, int batch, LmwbEdgeEval *out,
                        LmwbReporter *rep, GError **error);

/* ---- edge pruning (edge_prune.c) ----------------------------------------------------------------
 * Hard-concrete masks (Louizos et al. 2018) on every edge, log_alpha ~ N(init, 0.01); per step a
 * sample z = clamp(sigmoid((log u - log(1-u) + log_alpha) / beta) (r - l) + l, 0, 1) per edge;
 * loss = KL(p_full || p_circuit) at the last position + l1 (s - t) + l2 (s - t)^2 with s the
 * expected sparsity 1 - mean P(z > 0) and t ramped linearly from 0 to the target over the warm-up;
 * masks by Adam descent, l1 and l2 by ascent (the paper's min-max); model weights frozen. At the end
 * masks are binarised as the paper does and dangling edges removed. */
#define LMWB_EDGE_HC_BETA (2.0 / 3.0)
#define LMWB_EDGE_HC_L (-0.1)
#define LMWB_EDGE_HC_R 1.1
#define LMWB_EDGE_LOG_ALPHA_INIT 10.0

/* The paper's GPT-2 settings (Bhaskar et al. 2024, appendix): 3000 steps, 2500 of them ramping the
 * target, lr 0.8 for masks and lambdas. */
#define LMWB_EDGE_PAPER_STEPS 3000
#define LMWB_EDGE_PAPER_WARMUP 2500
#define LMWB_EDGE_PAPER_LR 0.8

typedef struct LmwbEdgePruneOptions {
  double target_sparsity; /* share of edges removed, in [0, 1) */
  int steps;              /* 0: 600 (paper: 3000) */
  int warmup;             /* steps of the target ramp; 0: steps * 5 / 6 (paper: 2500 of 3000) */
  double lr;              /* masks and lambdas; 0: 0.1 (paper: 0.8 with its longer schedule) */
  int batch;              /* 0: LMWB_EDGE_DEFAULT_BATCH */
  guint64 seed;
  const char *checkpoint; /* file to save the state to every checkpoint_every steps and at a cancel;
                             resume from it when it exists (NULL: none) */
  int checkpoint_every;   /* 0: 50 */
} LmwbEdgePruneOptions;

typedef struct LmwbEdgePruneResult {
  float *log_alpha;       /* [n_edges] */
  uint8_t *keep;          /* [n_edges] the binarised circuit, dangling edges removed */
  int64_t edges;
  int steps_done;
  double final_kl, final_sparsity;
} LmwbEdgePruneResult;

/* Progress as "step" fraction; metrics "loss", "kl", "sparsity", "target", "lambda1" against the
 * step. Cancel saves the checkpoint (when one is named) and returns LMWB_ERROR_CANCELLED. */
LmwbEdgePruneResult *lmwb_edge_prune(LmwbModel *m, const LmwbEdgeTask *t, const LmwbEdgePruneOptions *opt,
                                     LmwbReporter *rep, GError **error);
void lmwb_edge_prune_result_free(LmwbEdgePruneResult *r);
/* Binarisation: keep the round(sum_e P(z_e > 0)) edges of largest log_alpha (the expected number
 * of open masks; the paper zeroes the round(sum P(z <= 0)) lowest). */
void lmwb_edge_binarize(const float *log_alpha, int64_t n, uint8_t *keep);

/* ---- files (edge_files.c) -----------------------------------------------------------------------
 * A circuit file is Edge-Pruning's edges.json (a list of [source, target] names) or the scores JSON
 * {"edges": [{"source": "a0.h1", "target": "a2.h3<q>", "score": s, "in_circuit": true}, ...], ...}
 * (the edges with in_circuit true; "tok_embeds" is read as input, "resid_post" as logits, and
 * "a2.h3.q" as "a2.h3<q>"). Unknown names and edges the model does not have are input errors
 * naming the entry. */
gboolean lmwb_edge_circuit_read(const LmwbEdgeGraph *g, const char *path, uint8_t *keep, GError **error);
/* The scores JSON: `fields` (a JSON object's members, NULL: none) first, "n_edges", "in_circuit"
 * (the count), then "edges": every edge with its score and in_circuit (keep NULL: all TRUE). A
 * score that is not finite: LMWB_ERROR_FAILED naming the edge, nothing written. _json returns the
 * text (g_free; *len may be NULL); _write writes it atomically. */
char *lmwb_edge_scores_json(const LmwbEdgeGraph *g, const float *score, const uint8_t *keep, JsonObject *fields,
                            size_t *len, GError **error);
gboolean lmwb_edge_scores_write(const LmwbEdgeGraph *g, const float *score, const uint8_t *keep, JsonObject *fields,
                                const char *path, GError **error);
/* Edge-Pruning's edges.json of the kept edges. */
gboolean lmwb_edge_list_write(const LmwbEdgeGraph *g, const uint8_t *keep, const char *path, GError **error);
