/* LM-head neuron decoding, search, clamp sweeps and model comparison (Davies 2025; Geva et al.
 * 2022; LM-Debugger). See /work/shared/methods/neurons.md.
 *
 * A neuron n of layer L has weight vectors that act directly on the residual stream:
 *   IN   its input row: GPT-2 c_fc column / Llama up_proj row / NeoX dense_h_to_4h row
 *        (m->w.layers[L].w_up row n; GPT-2's Conv1D is transposed at load);
 *   GATE the SwiGLU gate_proj row (m->w.layers[L].w_gate row n; gated MLPs only);
 *   OUT  its output vector: GPT-2 c_proj row / Llama down_proj column (w_down column n).
 * Decoding a vector v gives logits = W_U · (v ∘ g) over the vocabulary, where g is the final
 * norm's gain (ln_f weight for LayerNorm, model.norm weight for RMSNorm) when `norm` is on (the
 * default; the LayerNorm bias is ignored because it adds the same vector to every neuron's
 * logits, i.e. it does not depend on the neuron), and g = 1 with norm off. Tokens are ranked by
 * softmax probability of that logit row (same order as the logits); probabilities use the
 * log-sum-exp over the full vocabulary row.
 *
 * The full decode is a blocked GEMM (`block` neurons × vocab at a time through m->be->sgemm)
 * followed by a streaming per-row pass (top-k min-heap + max + sum-exp, rows in parallel with
 * OpenMP): memory stays O(block × vocab), never neurons × vocab. Progress is reported per block
 * and cancel (reporter) is checked per block: a cancelled job returns FALSE with
 * LMWB_ERROR_CANCELLED and computes at most one more block.
 *
 * Every function validates its inputs (layers, neuron indices, which=GATE without a gate, token
 * ids, sizes) and returns FALSE/NULL with LMWB_ERROR_INPUT naming the bad field; nothing aborts.
 * Functions are reentrant; they only read the model (the sweep runs its own runner).
 * The GUI calls these from a worker thread with a reporter; lmwb-batch wraps them in
 * `lmwb-batch neurons decode|search|sweep|compare`. */
#pragma once
#include "app/engine/model.h"
#include "app/engine/runner.h"
#include "app/jobs/reporter.h"
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum { LMWB_NEURON_IN, LMWB_NEURON_OUT, LMWB_NEURON_GATE } LmwbNeuronWhich;

#define LMWB_NEURONS_DEFAULT_TOP_K 10
/* Default block: at most this many bytes of logits per GEMM block (and at most 2048 rows). */
#define LMWB_NEURONS_BLOCK_BYTES (128u << 20)
#define LMWB_NEURONS_MAX_TOP_K 1000

/* "in" / "out" / "gate" and back (parse: input error naming `what`, e.g. "--which"). */
const char *lmwb_neuron_which_name(LmwbNeuronWhich w);
gboolean lmwb_neuron_which_parse(const char *text, LmwbNeuronWhich *out, GError **error);
/* TRUE when the model has vectors of this kind (GATE needs a gated MLP); else an input error. */
gboolean lmwb_neuron_which_check(const LmwbModel *m, LmwbNeuronWhich w, GError **error);

/* Parse a layer list "0,3-5" (spaces allowed) against n_layer; sorted, duplicates removed.
 * NULL or "" or "all" means every layer. Returns g_malloc'd layers and *n. */
gboolean lmwb_neurons_parse_layers(const char *text, int n_layer, int **layers, int *n, GError **error);

typedef struct LmwbNeuronDecodeOptions {
  LmwbNeuronWhich which; /* default IN */
  const int *layers;     /* layers to decode; NULL: all */
  int n_layers;
  int top_k;             /* 1..LMWB_NEURONS_MAX_TOP_K (and <= vocab); 0: default 10 */
  bool no_norm;          /* skip the final norm gain (default: apply it) */
  int block;             /* neurons per GEMM block; 0: from LMWB_NEURONS_BLOCK_BYTES */
} LmwbNeuronDecodeOptions;

void lmwb_neuron_decode_options_init(LmwbNeuronDecodeOptions *o);

/* Result of a decode: rows in order (layer ascending as given, then neuron index ascending).
 * For row r: ids/logits/probs[r*top_k .. +top_k] sorted by logit descending (ties: lower id). */
typedef struct LmwbNeuronDecode {
  LmwbNeuronWhich which;
  bool norm;     /* final norm gain applied */
  int top_k;
  int n_rows;
  int *layer;    /* [n_rows] */
  int *index;    /* [n_rows] neuron index within the layer */
  int32_t *ids;  /* [n_rows * top_k] */
  float *logits; /* [n_rows * top_k] */
  float *probs;  /* [n_rows * top_k] softmax over the full vocabulary row */
  float *lse;    /* [n_rows] log-sum-exp of the full logit row */
} LmwbNeuronDecode;

/* Decode every neuron of the chosen layers. Returns NULL on error (input, cancel). */
LmwbNeuronDecode *lmwb_neurons_decode(const LmwbModel *m, const LmwbNeuronDecodeOptions *opt,
                                      LmwbReporter *rep, GError **error);
void lmwb_neuron_decode_free(LmwbNeuronDecode *d);

/* Fast path for one neuron (the GUI's click): top-k ids, logits and probabilities into caller
 * arrays of top_k entries (1..vocab). logits/lse may be NULL. */
gboolean lmwb_neurons_decode_one(const LmwbModel *m, LmwbNeuronWhich which, int layer, int neuron,
                                 bool norm, int top_k, int32_t *ids, float *logits, float *probs,
                                 float *lse, GError **error);
/* Any direction of the residual stream decoded the same way (a transcoder feature's decoder row,
 * a code, a steering vector): top-k of W_U · (v ∘ final norm gain) (norm false: W_U · v), as
 * lmwb_neurons_decode_one. v has d_model entries. */
gboolean lmwb_neurons_decode_vector(const LmwbModel *m, const float *v, bool norm, int top_k, int32_t *ids,
                                    float *logits, float *probs, float *lse, GError **error);
/* The full decoded logit row of one neuron into out[vocab] (for plots and tests). */
gboolean lmwb_neurons_decode_row(const LmwbModel *m, LmwbNeuronWhich which, int layer, int neuron,
                                 bool norm, float *out, GError **error);

/* Token lookup for user text: a raw vocabulary string ("Ġdog"), else text that encodes to exactly
 * one token (" dog"). Otherwise an input error naming the text, with a hint (e.g. a leading space,
 * or how it splits). Needs a tokenizer. */
gboolean lmwb_neurons_token_lookup(const LmwbModel *m, const char *text, int32_t *id, GError **error);
/* Every token whose decoded text (" dog") matches a GRegex (bad pattern or no match: input
 * error). Returns g_malloc'd ids sorted ascending. */
int32_t *lmwb_neurons_tokens_matching(const LmwbModel *m, const char *regex, int *n, GError **error);

/* Search: for each neuron, the best rank (1 = top token) among the target tokens in its decoded
 * row, and that token's probability. Results are neurons with rank <= max_rank (0: no filter),
 * sorted by rank ascending, then probability descending, then (layer, index); at most `limit`
 * (0: all). */
typedef struct LmwbNeuronSearchOptions {
  LmwbNeuronDecodeOptions decode; /* which, layers, norm, block (top_k unused) */
  const int32_t *tokens;          /* target token ids */
  int n_tokens;
  int max_rank;                   /* default 0 (no filter) */
  int limit;                      /* default 0 (all) */
} LmwbNeuronSearchOptions;

typedef struct LmwbNeuronHit {
  int layer, index;
  int rank;     /* 1-based rank of `token` in the neuron's decoded row */
  int32_t token;
  float logit, prob;
} LmwbNeuronHit;

/* Returns g_malloc'd hits (*n_hits; non-NULL even for 0 hits), NULL on error. */
LmwbNeuronHit *lmwb_neurons_search(const LmwbModel *m, const LmwbNeuronSearchOptions *opt, int *n_hits,
                                   LmwbReporter *rep, GError **error);

/* Clamping: a neuron's activation set to a value at blocks.L.mlp.hook_post (or hook_pre with
 * at_pre), at chosen absolute positions (every position, including generated ones, when none).
 * The one place that builds the clamp hook: the sweep, lmwb-batch --clamp and the desktop use it.
 * Errors name the field (layer, neuron, value, position) and the clamp's text. */
typedef struct LmwbNeuronClamp {
  int layer, neuron;
  float value;
  bool at_pre;
  int *positions;  /* NULL: every position (owned by a parsed clamp) */
  int n_positions;
} LmwbNeuronClamp;

/* Parse "L:N=VALUE[@P1,P2,...]" (e.g. 3:1021=8 or 3:1021=8@4,5) into a clamp at hook_post. */
gboolean lmwb_neuron_clamp_parse(const LmwbConfig *cfg, const char *text, LmwbNeuronClamp *out, GError **error);
/* A position list "P1,P2,..." checked against the context (g_malloc'd). */
gboolean lmwb_neuron_clamp_parse_positions(const LmwbConfig *cfg, const char *text, int **positions, int *n,
                                           GError **error);
void lmwb_neuron_clamp_clear(LmwbNeuronClamp *c);
/* Install the clamp on a runner: the hook id (remove it with lmwb_runner_remove_hook), or 0. */
int lmwb_neuron_clamp_add(LmwbRunner *r, const LmwbNeuronClamp *c, GError **error);

/* Sweep: clamp one neuron (SET at blocks.L.mlp.hook_post, or hook_pre with at_pre) to each of
 * `steps` values evenly spaced in [from, to] (steps 1: just `from`) and measure the target token's
 * probability: with generate == 0, at the next position after the prompt; with generate == N > 0,
 * the mean over the N generated positions of the next-token probability of the target during a
 * continuation (greedy with temperature 0, else sampled with the seed), the clamp acting on the
 * prompt and on every generated token. One forward (or one generation) per value; each point is
 * also sent as reporter metric "p(target)" (x = value, y = prob) as it arrives. */
typedef struct LmwbNeuronSweepOptions {
  int layer, neuron;
  bool at_pre;                /* clamp hook_pre instead of hook_post */
  const int *positions;       /* absolute positions to clamp; NULL: all */
  int n_positions;
  int32_t target;
  const int32_t *prompt;      /* token ids (>= 1) */
  int n_prompt;
  double from, to;
  int steps;                  /* 1..10000 */
  int generate;               /* 0: next position only */
  float temperature;          /* for generate; 0 = greedy */
  guint64 seed;
} LmwbNeuronSweepOptions;

typedef struct LmwbNeuronSweep {
  int n;
  double *values;     /* [n] clamp values */
  double *probs;      /* [n] target probability (next position, or mean over the continuation) */
  double baseline;    /* the same measurement without a clamp */
  int32_t **generated; /* generate > 0: [n] continuations (n_generated[i] tokens each) */
  int *n_generated;
} LmwbNeuronSweep;

LmwbNeuronSweep *lmwb_neurons_sweep(LmwbModel *m, const LmwbNeuronSweepOptions *opt, LmwbReporter *rep,
                                    GError **error);
void lmwb_neuron_sweep_free(LmwbNeuronSweep *s);

/* Compare two models of the same shapes (n_layer, d_model, d_ff, vocab, gated or not), e.g. base
 * vs fine-tuned: per layer and overall the share of neurons whose top-1 token is the same, and the
 * `n_changed` neurons that changed most, ranked by the cosine similarity of their two
 * mean-centred decoded logit rows (ascending: lowest cosine = most changed; centring because
 * softmax ignores a constant shift). Top-k overlap (|top-k A ∩ top-k B| / k, k = top_k) is
 * reported for each of them too. */
typedef struct LmwbNeuronChange {
  int layer, index;
  float cosine;  /* centred cosine of the two decoded logit rows */
  float overlap; /* top-k overlap in [0, 1] */
  int32_t top_a, top_b; /* top-1 tokens */
} LmwbNeuronChange;

typedef struct LmwbNeuronCompare {
  LmwbNeuronWhich which;
  int n_layers;
  int *layers;          /* [n_layers] */
  double *same_top1;    /* [n_layers] share of the layer's neurons with the same top-1 token */
  double overall;       /* over all compared neurons */
  double mean_cosine;   /* over all compared neurons */
  int n_changed;
  LmwbNeuronChange *changed; /* [n_changed] lowest cosine first */
} LmwbNeuronCompare;

/* opt->top_k is the k of the overlap (default 10); n_changed 0 means 20. */
LmwbNeuronCompare *lmwb_neurons_compare(const LmwbModel *a, const LmwbModel *b, const LmwbNeuronDecodeOptions *opt,
                                        int n_changed, LmwbReporter *rep, GError **error);
void lmwb_neuron_compare_free(LmwbNeuronCompare *c);

/* Internal, exposed for tests and the benchmark: the block size actually used for a model. */
int lmwb_neurons_block_size(const LmwbModel *m, int requested);
