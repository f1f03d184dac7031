/* Text generation with the KV cache: greedy (temperature 0) or sampling with temperature, top-k
 * and top-p, from a seeded generator so that a seed always gives the same text. Hooks on the
 * runner (e.g. neuron clamps) act on the prompt and on every generated position. */
#pragma once
#include "app/engine/runner.h"
#include "app/jobs/reporter.h"

typedef struct LmwbGenerateOptions {
  int max_tokens;    /* new tokens to produce */
  float temperature; /* 0: greedy */
  int top_k;         /* 0: off */
  float top_p;       /* 1: off */
  guint64 seed;
  bool stop_at_eos;
} LmwbGenerateOptions;

void lmwb_generate_options_init(LmwbGenerateOptions *o);
/* Returns the new ids (g_free); *n_out their count. probs_out (optional, g_free) receives the
 * full next-token distribution before each generated token: n_out rows of vocab_size floats. */
int32_t *lmwb_generate(LmwbRunner *r, const int32_t *prompt, int n_prompt, const LmwbGenerateOptions *opt,
                       int *n_out, float **probs_out, LmwbReporter *rep, GError **error);
