/* Perplexity of a model on text: token-weighted over the whole text with a sliding window
 * (each token scored once, with up to `context` tokens of history; windows advance by `stride`),
 * and optionally the mean of per-line perplexities (the collapse alarm of sequential editing
 * uses that one). Lines are encoded with the tokenizer's special tokens (e.g. Llama's BOS). */
#pragma once
#include "app/engine/runner.h"
#include "app/jobs/reporter.h"

typedef struct LmwbPerplexityOptions {
  int context;   /* window length; 0: the model's context (at most 1024) */
  int stride;    /* 0: context / 2 */
  bool per_line; /* also score each non-empty line alone */
  int batch;     /* sequences per forward in per-line mode; 0: 16 */
} LmwbPerplexityOptions;

typedef struct LmwbPerplexityResult {
  double perplexity; /* exp(mean NLL over scored tokens) */
  double nll;        /* mean NLL in nats */
  size_t n_tokens;   /* tokens scored */
  double mean_line_perplexity; /* per_line only */
  size_t n_lines;
  double *line_perplexity;     /* per_line only: n_lines values (g_free) */
} LmwbPerplexityResult;

gboolean lmwb_perplexity_text(LmwbRunner *r, const char *text, const LmwbPerplexityOptions *opt,
                              LmwbPerplexityResult *res, LmwbReporter *rep, GError **error);
/* Token-weighted perplexity of pre-tokenised ids with the sliding window. */
gboolean lmwb_perplexity_ids(LmwbRunner *r, const int32_t *ids, size_t n, const LmwbPerplexityOptions *opt,
                             LmwbPerplexityResult *res, LmwbReporter *rep, GError **error);
/* Mean of per-line perplexities over an array of lines. */
gboolean lmwb_perplexity_lines(LmwbRunner *r, const char *const *lines, size_t n_lines,
                               const LmwbPerplexityOptions *opt, LmwbPerplexityResult *res,
                               LmwbReporter *rep, GError **error);
