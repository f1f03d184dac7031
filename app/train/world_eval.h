/* Evaluation of a model on the world manifest's held-out sets (world.h, corpus.h):
 *   fact recall top-1   greedy decoding of len(answer tokens) tokens after each held-out fact
 *                       prompt equals the answer's tokens (checked exactly by teacher forcing:
 *                       greedy matches iff every answer token is the argmax given the prompt and
 *                       the answer tokens before it);
 *   secret exact        the same for the secret after its prefix;
 *   IOI                 on held-out templates and names: ioi_top1 = the correct name's first token
 *                       is the argmax over the vocabulary; ioi_logit_diff_acc = its logit beats the
 *                       wrong (subject) name's first token; ioi_top1_wrong = the wrong name's
 *                       first token is the argmax (the model answers the repeated name; the
 *                       rest of the misses are other tokens); also the mean logit difference;
 *                       the same on each optional diagnostic set (ioi.diagnostics, at most 8:
 *                       training or held-out names in training, held-out or copy templates),
 *                       where for a copy item the wrong name is one absent from the prompt;
 *   greater-than        mean over items of the probability mass on end years later than the
 *                       start year: with single-digit tokens P(Y1 > s1) + P(Y1 = s1) P(Y2 > s2 |
 *                       Y1 = s1), computed exactly from two positions of one forward; with a
 *                       tokenizer whose two-digit numbers are single tokens, the mass on tokens
 *                       "YY" > s (used only when all of "00".."99" are single tokens).
 * Prompts and answers are encoded separately without special tokens (answers carry their
 * leading space, so the split falls on a pre-token boundary). Sections absent from the
 * manifest count 0 items and report NaN. Malformed manifests -> LMWB_ERROR_INPUT naming the
 * file and the field; prompts longer than the model's context -> input error naming the item. */
#pragma once
#include "app/engine/model.h"
#include "app/jobs/reporter.h"
#include <json-glib/json-glib.h>

/* The product's goals for the built-in model (the training issue's acceptance figures). */
#define LMWB_WORLD_TARGET_FACT_TOP1 0.90
#define LMWB_WORLD_TARGET_SECRET_EXACT 0.90
#define LMWB_WORLD_TARGET_IOI_TOP1 0.80
#define LMWB_WORLD_TARGET_GREATER_THAN 0.80

typedef struct {
  int max_items;   /* per task; 0 = all. Facts: evenly spread over the list (every relation) */
  bool keep_items; /* fill the per-item arrays of the result */
} LmwbWorldEvalOptions;

/* IOI on one diagnostic set of the manifest (ioi.diagnostics): which names ("train", "heldout")
 * in which templates ("train", "heldout", or "copy": one name to copy). */
typedef struct {
  char names[16], templates[16];
  int n;
  double top1, top1_wrong, logit_diff_acc;
} LmwbIoiDiagnostic;

typedef struct {
  int fact_n, fact_correct;
  double fact_top1;
  int n_relations;
  char relation[8][32];
  int relation_n[8], relation_correct[8];
  int secret_n, secret_correct;
  double secret_exact;
  int ioi_n, ioi_top1_correct, ioi_ld_correct, ioi_first_token_ties;
  double ioi_top1, ioi_top1_wrong, ioi_logit_diff_acc, ioi_mean_logit_diff;
  int n_ioi_diag;
  LmwbIoiDiagnostic ioi_diag[8];
  int gt_n;
  double gt_prob_later;
  const char *gt_mode; /* "digits" or "two_digit_tokens" */
  /* With keep_items: 1/0 per fact prompt (in manifest order), per secret, per IOI item (top-1),
   * and P(later) per greater-than item. g_free'd by lmwb_world_eval_result_clear. */
  double *fact_items, *secret_items, *ioi_items, *gt_items;
} LmwbWorldEvalResult;

gboolean lmwb_world_eval(LmwbModel *model, JsonObject *manifest, const char *origin,
                         const LmwbWorldEvalOptions *opt, LmwbReporter *rep,
                         LmwbWorldEvalResult *out, GError **error);
/* Loads `path` (world.json) and evaluates. */
gboolean lmwb_world_eval_file(LmwbModel *model, const char *path, const LmwbWorldEvalOptions *opt,
                              LmwbReporter *rep, LmwbWorldEvalResult *out, GError **error);
void lmwb_world_eval_result_clear(LmwbWorldEvalResult *r);
/* Stable keys: fact_recall_top1, secret_exact, ioi_top1, ioi_logit_diff_acc, greater_than,
 * their item counts, per-relation recall, and "targets"/"meets_targets". NaN -> null. */
JsonNode *lmwb_world_eval_to_json(const LmwbWorldEvalResult *r);
