/* Transcoders and sparse autoencoders (Dunefsky, Chlenski & Nanda 2024; SAELens; circuit-tracer).
 * See /work/shared/methods/transcoders.md.
 *
 * A transcoder imitates one MLP: it reads the MLP's normalised input x (blocks.L.ln2.hook_normalized,
 * including the norm's weight and bias) and writes the MLP's output (blocks.L.hook_mlp_out):
 *   pre = x W_enc + b_enc          W_enc [d_in, d_sae] (SAELens orientation), b_enc [d_sae]
 *   f   = act(pre)                 ReLU; JumpReLU: pre where pre > threshold, else 0;
 *                                  TopK: the k largest pre-activations, then ReLU
 *   out = f W_dec + b_dec (+ x W_skipᵀ)   W_dec [d_sae, d_out], b_dec [d_out] the output bias
 * A transcoder never subtracts b_dec from its input. A plain SAE reads and writes one site
 * (d_in = d_out) and, when apply_b_dec_to_input is set (SAELens), encodes x - b_dec.
 *
 * Files (transcoder_io.c): a SAELens folder (cfg.json + sae_weights.safetensors; new and pre-6.0
 * configs); a circuit-tracer layer file (layer_{i}.safetensors, W_enc stored [d_sae, d_in]). A
 * transcoder set covers every MLP layer of a model: SET/layer_{i}/ SAELens folders, or
 * circuit-tracer's layer_{i}.safetensors files with config.yaml. Loading checks every shape against
 * the model and every value for finiteness, naming the file and tensor. */
#pragma once
#include "app/engine/runner.h"
#include "app/formats/safetensors.h"
#include "app/jobs/reporter.h"
#include <glib.h>
#include <stdbool.h>

typedef enum { LMWB_TC_RELU, LMWB_TC_JUMPRELU, LMWB_TC_TOPK } LmwbTcActivation;

typedef struct LmwbTranscoder {
  LmwbSite in, out;       /* the site it reads, the site it writes (the same for an SAE) */
  int d_in, d_sae, d_out;
  LmwbTcActivation act;
  int k;                  /* TopK */
  bool apply_b_dec_to_input; /* SAEs only */
  float *W_enc;           /* [d_in, d_sae] */
  float *b_enc;           /* [d_sae] */
  float *W_dec;           /* [d_sae, d_out] */
  float *b_dec;           /* [d_out] */
  float *threshold;       /* [d_sae], JumpReLU only */
  float *W_skip;          /* [d_out, d_in] or NULL */
  char *model_name;       /* as the file says (informational) */
} LmwbTranscoder;

/* Zeroed weights of these sizes (memory checked); threshold allocated for JumpReLU. */
LmwbTranscoder *lmwb_transcoder_new(int d_in, int d_sae, int d_out, LmwbTcActivation act, int k, GError **error);
void lmwb_transcoder_free(LmwbTranscoder *tc);
const char *lmwb_tc_activation_name(LmwbTcActivation a); /* relu, jumprelu, topk */

/* pre [n, d_sae] = (x - b_dec if apply_b_dec_to_input) W_enc + b_enc for rows x [n, d_in];
 * f [n, d_sae] = act(pre) (pre may be NULL). Host memory; one GEMM. */
void lmwb_transcoder_encode(const LmwbTranscoder *tc, const float *x, int n, float *pre, float *f);
/* out [n, d_out] = f W_dec + b_dec (+ x W_skipᵀ; x may be NULL without a skip). */
void lmwb_transcoder_decode(const LmwbTranscoder *tc, const float *f, const float *x, int n, float *out);

/* Checks sizes against a model (d_in / d_out = d_model for ln2/mlp_out and residual sites, d_ff
 * for MLP-internal sites; the sites exist) and that every weight is finite. */
gboolean lmwb_transcoder_check(const LmwbTranscoder *tc, const LmwbConfig *cfg, const char *origin, GError **error);

/* A transcoder per MLP layer. */
typedef struct LmwbTranscoderSet {
  int n_layers;
  LmwbTranscoder **layers; /* [n_layers] */
  char *source;            /* the folder it was read from, or NULL */
} LmwbTranscoderSet;

LmwbTranscoderSet *lmwb_transcoder_set_new(int n_layers);
void lmwb_transcoder_set_free(LmwbTranscoderSet *s);

/* ---- files (transcoder_io.c) ---- */
typedef enum { LMWB_TC_FORMAT_SAELENS, LMWB_TC_FORMAT_CIRCUIT_TRACER } LmwbTcFormat;

/* One SAELens folder (cfg.json + sae_weights.safetensors). */
LmwbTranscoder *lmwb_transcoder_load_saelens(const char *dir, GError **error);
gboolean lmwb_transcoder_save_saelens(const LmwbTranscoder *tc, const char *dir, GError **error);
/* The same with the weights stored as F32, F16 or BF16 (rounded to nearest even; the loader widens
 * them back; cfg.json's dtype stays float32, the precision computed in). */
gboolean lmwb_transcoder_save_saelens_as(const LmwbTranscoder *tc, const char *dir, LmwbDtype store_as, GError **error);
/* A set for a model: SET/layer_{i}/ SAELens folders or circuit-tracer's layer_{i}.safetensors +
 * config.yaml; every layer of the model must be covered, each checked against the model. */
LmwbTranscoderSet *lmwb_transcoder_set_load(const char *dir, const LmwbConfig *cfg, GError **error);
gboolean lmwb_transcoder_set_save(const LmwbTranscoderSet *s, const char *dir, LmwbTcFormat format,
                                  const char *model_name, GError **error);

/* ---- in a run ---- */
/* The MLP of tc's layer replaced by the transcoder in every forward of r (its output written at
 * tc->out from the input it reads at tc->in), or, with tc NULL, the MLP zero-ablated at layer.
 * Returns a handle for removing it, NULL on error. */
typedef struct LmwbTcSplice LmwbTcSplice;
LmwbTcSplice *lmwb_transcoder_splice(LmwbRunner *r, const LmwbTranscoder *tc, int layer, GError **error);
void lmwb_transcoder_unsplice(LmwbRunner *r, LmwbTcSplice *s);

/* ---- evaluation (transcoder_eval.c) ---- */
typedef struct LmwbTcEvalOptions {
  int context;        /* window length in tokens; 0: 128 (at most the model's context) */
  int64_t max_tokens; /* 0: the whole text */
  int batch;          /* windows per forward; 0: 8 */
} LmwbTcEvalOptions;

typedef struct LmwbTcLayerEval {
  double fvu;          /* Σ‖out - target‖² / Σ‖target - mean target‖² */
  double l0;           /* mean active features per token */
  double dead_fraction; /* features never active on the text */
  double ce_spliced;   /* next-token CE with this layer's MLP replaced */
  double ce_ablated;   /* ... with this layer's MLP output zero */
  double ce_recovered; /* (ce_ablated - ce_spliced) / (ce_ablated - ce_clean) */
} LmwbTcLayerEval;

typedef struct LmwbTcEval {
  int n_layers;
  int64_t tokens;
  double ce_clean;
  LmwbTcLayerEval *layers; /* [n_layers] */
  double ce_all_spliced;   /* every MLP replaced at once */
  double ce_all_ablated;   /* every MLP's output zero at once */
  double ce_all_recovered; /* (ce_all_ablated - ce_all_spliced) / (ce_all_ablated - ce_clean) */
} LmwbTcEval;

/* On the token windows of a text (tokenised with the model's tokenizer). Progress and cancel
 * through the reporter. */
LmwbTcEval *lmwb_transcoder_eval(LmwbModel *m, const LmwbTranscoderSet *set, const char *text,
                                 const LmwbTcEvalOptions *opt, LmwbReporter *rep, GError **error);
void lmwb_tc_eval_free(LmwbTcEval *e);
