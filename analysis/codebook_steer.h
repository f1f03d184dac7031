/* Steering with codes (Tamkin, Taufeeque & Goodman 2023, section 5): the share of sampled
 * generations that contain a word, with a set of code clamps on and off. For every prompt, `samples`
 * continuations are sampled with the codebooks spliced in, once without the clamps and once with
 * them (the same seed for the pair, so the difference is the clamp's); a generation counts when
 * its text contains the word (case-insensitive, anywhere in the continuation). */
#pragma once
#include "analysis/codebooks.h"
#include "app/engine/generate.h"

typedef struct LmwbSteerOptions {
  const char *const *prompts; /* NULL-terminated */
  const char *word;
  int samples;                /* per prompt and setting; 0: 10 (the paper) */
  LmwbGenerateOptions gen;    /* temperature, top-k/p, max tokens; seed of the first sample */
} LmwbSteerOptions;

typedef struct LmwbSteerResult {
  int n_prompts, samples;
  int *hits_off, *hits_on;    /* [n_prompts] generations containing the word */
  double share_off, share_on; /* over all prompts */
  char **examples_off, **examples_on; /* the first continuation of each prompt (NULL-terminated) */
} LmwbSteerResult;

/* clamps: n code clamps of the set (checked as lmwb_codebook_run_clamp checks them). Progress and
 * cancel through the reporter. */
gboolean lmwb_codebook_steer(LmwbModel *m, LmwbCodebooks *cb, const LmwbCodeClamp *clamps, int n_clamps,
                             const LmwbSteerOptions *o, LmwbReporter *rep, LmwbSteerResult *res, GError **error);
void lmwb_steer_result_clear(LmwbSteerResult *r);
