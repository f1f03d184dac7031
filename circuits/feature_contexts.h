/* The top-activating contexts of one transcoder (or SAE) feature on a text: what a person reads to
 * learn what a feature stands for (Neuronpedia's feature pages; Bricken et al. 2023).
 *
 * The text is tokenised with the model's tokenizer (no BOS added) and cut into consecutive windows
 * of `context` tokens (the last one shorter when the text does not fill it). Each window runs
 * through the model with an OBSERVE hook at the transcoder's input site (blocks.L.ln2.hook_normalized
 * for MLP layer L's transcoder); the observed rows are encoded with the transcoder
 * (lmwb_transcoder_encode: its own activation, TopK included) and the feature's activation read at
 * every position. Each window is one candidate: its peak is the position of its largest activation
 * (the first one on ties). A bounded heap keeps the top_n windows by peak activation (ties: the
 * earlier window); windows where the feature never fires (peak <= 0) are not candidates.
 *
 * For each kept window the result gives the peak activation, its position in the text's token
 * stream, and the context: the window's tokens from peak - half_width to peak + half_width (cut at
 * the window's ends), with their ids, texts and the feature's activation at each, from the same run.
 *
 * Memory is bounded by one batch of windows and the heap, whatever the text's length. Progress and
 * cancel through the reporter (checked between batches). Input errors name the field. */
#pragma once
#include "circuits/transcoder.h"

#define LMWB_FEATURE_CONTEXTS_TOP_N 12
#define LMWB_FEATURE_CONTEXTS_HALF_WIDTH 8
#define LMWB_FEATURE_CONTEXTS_MAX_TOP_N 10000

typedef struct LmwbFeatureContextOptions {
  int top_n;          /* contexts kept; 0: LMWB_FEATURE_CONTEXTS_TOP_N (1..MAX_TOP_N) */
  int half_width;     /* tokens shown either side of the peak; 0: LMWB_FEATURE_CONTEXTS_HALF_WIDTH; < 0: none */
  int context;        /* window length in tokens; 0: min(64, the model's context) */
  int batch;          /* windows per forward; 0: 8 */
  int64_t max_tokens; /* read at most this many tokens of the text; 0: all of it */
} LmwbFeatureContextOptions;

typedef struct LmwbFeatureContext {
  float max_act;      /* the feature's activation at the peak */
  int64_t position;   /* the peak's index in the text's token stream */
  int64_t window;     /* the window's index (window w starts at token w * context) */
  int peak;           /* the peak's index within ids / acts */
  int n;              /* tokens of the context */
  int32_t *ids;       /* [n] */
  char **texts;       /* [n] token texts (lmwb_tokenizer_token_text) */
  float *acts;        /* [n] the feature's activation at each token */
} LmwbFeatureContext;

typedef struct LmwbFeatureContexts {
  int feature;
  LmwbSite site;       /* where the transcoder reads */
  int64_t tokens;      /* tokens read */
  int64_t active;      /* of those, where the feature fired (activation > 0) */
  int n;               /* contexts kept, strongest first */
  LmwbFeatureContext *contexts;
} LmwbFeatureContexts;

/* Input errors: no tokenizer, an empty text, a feature outside 0..d_sae-1, a transcoder that does
 * not fit the model (lmwb_transcoder_check), options out of range (named). */
LmwbFeatureContexts *lmwb_feature_contexts(LmwbModel *m, const LmwbTranscoder *tc, int feature, const char *text,
                                           const LmwbFeatureContextOptions *opt, LmwbReporter *rep, GError **error);
void lmwb_feature_contexts_free(LmwbFeatureContexts *c);
