/* Measuring a model version for memorisation editing: recitation of the memorised set
 * (recitation.h), perplexity on held-out text (app/engine/perplexity.h, token-weighted, the
 * model's context as window and by default half of it as stride) and, with a world manifest, the built-in
 * world's figures (app/train/world_eval.h: facts, secrets, IOI, greater-than). The K-FAC sweep
 * measures the unedited model and each keep-mass ρ with it, and recommends a ρ. */
#pragma once
#include "app/train/world_eval.h"
#include "editors/recitation.h"

/* The goals a recommended ρ must meet beside lower recitation (issue 18's acceptance figures):
 * held-out perplexity up by at most 20%, world-fact recall at least 80% of its value. */
#define LMWB_MEMO_MAX_PPL_RISE 0.20
#define LMWB_MEMO_MIN_FACT_RETAINED 0.80

typedef struct LmwbMemoOptions {
  const LmwbRecitationSet *set; /* required */
  const char *heldout_text;     /* NULL: no perplexity */
  int heldout_stride;           /* perplexity windows advance by this; 0: half the context */
  const char *world_manifest;   /* NULL: no world figures */
  int max_items;                /* per set and world task; 0: all */
} LmwbMemoOptions;

typedef struct LmwbMemoResult {
  LmwbRecitationResult rec;
  double perplexity;            /* NaN without held-out text */
  size_t ppl_tokens;
  bool has_world;
  LmwbWorldEvalResult world;
} LmwbMemoResult;

gboolean lmwb_memo_measure(LmwbModel *m, const LmwbMemoOptions *o, LmwbMemoResult *out, LmwbReporter *rep,
                           GError **error);
void lmwb_memo_result_clear(LmwbMemoResult *r);
/* The result as JSON members added to an open object of b: strict, loose, mean_distance, n_items,
 * perplexity (null when absent), world {…} when measured. */
void lmwb_memo_result_to_json(const LmwbMemoResult *r, JsonBuilder *b);

/* Of n measured edits (and the unedited base), the index of the recommended one: the lowest strict
 * recitation among those whose perplexity rose at most LMWB_MEMO_MAX_PPL_RISE and whose fact recall
 * kept LMWB_MEMO_MIN_FACT_RETAINED (each checked only when measured); ties go to the larger
 * keep (values[i], the smaller edit). -1 when none qualifies. */
int lmwb_memo_recommend(const LmwbMemoResult *base, const LmwbMemoResult *edits, const double *values, int n);
