/* Attribution graphs of a prompt, with circuit-tracer's semantics (Ameisen et al. 2025, "Circuit
 * Tracing"; safety-research/circuit-tracer). See /work/shared/methods/transcoders.md.
 *
 * The local replacement model: every MLP's output is replaced by its transcoder's reconstruction
 * plus an error node (mlp_out - reconstruction, a constant), attention patterns and every norm's
 * scale are frozen at their values on the prompt. The model is then linear in its nodes' outputs:
 *   features   active transcoder features (layer, position, feature): output a_f W_dec[f] at the
 *              layer's hook_mlp_out; input: the encoder pre-activation x W_enc[:, f] + b_enc[f] of
 *              blocks.L.ln2.hook_normalized (its target value)
 *   errors     one per (layer, position): output mlp_out - reconstruction at hook_mlp_out
 *   tokens     one per position: the whole blocks.0.hook_resid_pre vector there (embedding and
 *              position embedding)
 *   logits     the top logits of the last position until their probability reaches 0.95 (at most
 *              10): target value the demeaned logit, read through the demeaned unembedding row
 * The weight of edge s -> t is the direct effect of s's output on t's input in that linear model:
 * injected as a gradient (t's encoder column at ln2, or its demeaned unembedding row at
 * ln_final), backward with patterns, norm scales and MLP outputs frozen, contracted with s's output
 * vector. Rows (targets) are computed in batches of injected gradients (copies of the prompt), so
 * memory stays bounded by the batch. A target's incoming weights plus its bias (b_enc, norm and
 * attention biases, transcoder output biases) equal its value.
 *
 * Node order: features (layer, then position, then feature), errors (layer-major, layer * n_pos +
 * pos), tokens, logits (most probable first). Rows of `adj` are targets, columns sources. Features
 * at position 0 are dropped when the prompt starts with the model's BOS token (circuit-tracer
 * zeroes that position). */
#pragma once
#include "circuits/graph.h"
#include "circuits/transcoder.h"

#define LMWB_ATTRIBUTION_MAX_LOGITS 10
#define LMWB_ATTRIBUTION_LOGIT_MASS 0.95
#define LMWB_ATTRIBUTION_NODE_THRESHOLD 0.8
#define LMWB_ATTRIBUTION_EDGE_THRESHOLD 0.98

typedef struct LmwbAttributionOptions {
  int max_logits;        /* 0: 10 */
  double logit_mass;     /* 0: 0.95 */
  int batch;             /* targets per backward; 0: 32 */
  int max_feature_nodes; /* 0: every active feature; else the most influential, chosen as rows arrive */
} LmwbAttributionOptions;

typedef struct LmwbAttribution {
  int n_layers, n_pos;
  int32_t *tokens;       /* [n_pos] */
  int n_features;
  int *feat_layer, *feat_pos, *feat_index; /* [n_features] */
  float *feat_act;       /* activation a_f */
  float *feat_pre;       /* encoder pre-activation (the target value) */
  int n_active;          /* active features before max_feature_nodes */
  int n_logits;
  int32_t *logit_token;  /* [n_logits] */
  float *logit_prob;     /* softmax probability */
  float *logit_value;    /* demeaned logit (the target value) */
  int n_nodes;           /* n_features + n_layers * n_pos + n_pos + n_logits */
  float *adj;            /* [n_nodes, n_nodes], row = target, column = source */
} LmwbAttribution;

static inline int lmwb_attr_error_node(const LmwbAttribution *a, int layer, int pos) {
  return a->n_features + layer * a->n_pos + pos;
}
static inline int lmwb_attr_token_node(const LmwbAttribution *a, int pos) {
  return a->n_features + a->n_layers * a->n_pos + pos;
}
static inline int lmwb_attr_logit_node(const LmwbAttribution *a, int i) {
  return a->n_features + (a->n_layers + 1) * a->n_pos + i;
}

LmwbAttribution *lmwb_attribute(LmwbModel *m, const LmwbTranscoderSet *set, const int32_t *ids, int n,
                                const LmwbAttributionOptions *opt, LmwbReporter *rep, GError **error);
void lmwb_attribution_free(LmwbAttribution *a);

/* Pruning as circuit-tracer does: |adj| row-normalised; node influence on the logits (weighted by
 * their probabilities) summed over paths of every length; keep the fewest nodes reaching
 * node_threshold of the total (tokens and logits always), then edges by influence-weighted score to
 * edge_threshold; drop features and errors left without outgoing edges and features without
 * incoming ones. Scores: replacement (the share of token-to-logit influence not through error
 * nodes) and completeness (the influence-weighted share of incoming weight not from errors). */
typedef struct LmwbAttributionPrune {
  guint8 *node_keep;   /* [n_nodes] */
  guint8 *edge_keep;   /* [n_nodes * n_nodes], like adj */
  float *influence;    /* [n_nodes] cumulative influence fraction (smaller = more important) */
  double replacement, completeness; /* NaN when undefined (no influence reaches the logits) */
  int nodes_kept, edges_kept;
  double node_threshold, edge_threshold; /* as asked */
} LmwbAttributionPrune;

LmwbAttributionPrune *lmwb_attribution_prune(const LmwbAttribution *a, double node_threshold, double edge_threshold,
                                             GError **error);
void lmwb_attribution_prune_free(LmwbAttributionPrune *p);

/* ---- as a circuit graph (attribution_graph.c) -------------------------------------------------
 * The graph every exporter and the desktop read (circuits/graph.h, method "attribution"): with
 * prune NULL every node and every non-zero edge (`graph --no-prune`), else the kept nodes and
 * edges. Nodes carry activation (features), influence (when pruned), token_prob and labels
 * (logits: circuit-tracer's Output "tok" (p=…); features: their top decoded output tokens,
 * lmwb_attribution_feature_tokens, `→ " a" " b" " c"`; tokens `"tok" @pos`; errors
 * `MLP L error @pos`); the most probable logit is the target
 * logit. Metadata: prompt and its token texts and ids, the model's name, the transcoder set's
 * folder, the thresholds when pruned, and extras replacement / completeness. The model gives the
 * token texts and the decoded labels and must be the one the attribution ran on. */
#define LMWB_ATTRIBUTION_LABEL_TOKENS 3
LmwbGraph *lmwb_attribution_to_graph(const LmwbAttribution *a, const LmwbAttributionPrune *prune, const LmwbModel *m,
                                     const LmwbTranscoderSet *set, const char *prompt, GError **error);
/* A feature's decoded output tokens: the top_k tokens of W_dec[f] · W_U (through the final norm's
 * gain, as neuron decoding does; analysis/neurons.h lmwb_neurons_decode_vector). */
gboolean lmwb_attribution_feature_tokens(const LmwbModel *m, const LmwbTranscoder *tc, int feature, int top_k,
                                         int32_t *ids, float *logits, float *probs, GError **error);
