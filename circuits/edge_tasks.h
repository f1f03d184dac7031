/* Tasks for circuit discovery (methods/edge-pruning.md "Datasets"): pairs of clean and corrupted
 * prompts of the same token length, the answer read at the last position, and the metrics of a
 * circuit's logits there against the full model's.
 *
 *   ioi   indirect object identification: "When {A} and {B} went to the {P}, {S} gave a {O} to"
 *         -> the other name; corrupted: three other names (A, B, S all replaced).
 *   gt    greater-than: "The {E} lasted from the year {XX}{YY} to the year {XX}" -> a year after
 *         YY; corrupted: YY = 01. When the vocabulary holds every "00".."99" as one token (GPT-2)
 *         the year tokens are those; else (digits are single tokens, as in the built-in model) the
 *         next token is the tens digit and the years are the digits 0..9 against YY's tens digit.
 *   gp    gendered pronouns: "So {name} is such a good cook, isn't" -> " he" / " she";
 *         corrupted: a name of the other gender.
 *   FILE  JSONL, one example a line: {"clean": "...", "corrupted": "...", "answer": " X",
 *         "wrong": " Y"} (other fields, e.g. "split", are ignored); answer and wrong one token
 *         each, clean and corrupted the same number of tokens.
 * Names, places, objects, events and templates come from the model folder's world.json when there
 * is one (the built-in model's world: its held-out IOI templates, its names), else from built-in
 * GPT-2 style lists; only names that are one token (with their leading space) are used, so the
 * corrupted prompt has the clean one's length.
 *
 * Metrics at the last position (sums over examples; lmwb_edge_metrics_finish takes the means):
 *   kl           KL(p_full || p_circuit) over the whole vocabulary
 *   logit_diff   logit(answer) - logit(wrong)                         (not gt)
 *   accuracy     the top token is the answer (gt: the most probable year is after YY)
 *   exact_match  the circuit's top token is the full model's
 *   prob_diff    gt: sum of p(year > YY) - sum of p(year < YY)
 * Errors in task files are input errors naming the file, line and field. */
#pragma once
#include "app/engine/model.h"

typedef enum { LMWB_EDGE_TASK_IOI, LMWB_EDGE_TASK_GT, LMWB_EDGE_TASK_GP, LMWB_EDGE_TASK_FILE } LmwbEdgeTaskKind;

#define LMWB_EDGE_TASK_MAX_EXAMPLES 1000000
#define LMWB_EDGE_TASK_FILE_MAX_BYTES ((uint64_t)256 << 20)

typedef struct LmwbEdgeExample {
  int32_t *clean, *corrupt; /* [len] each */
  int len;
  int32_t answer, wrong;    /* token ids; -1 for gt */
  int threshold;            /* gt: YY (or its tens digit with digit years) */
} LmwbEdgeExample;

typedef struct LmwbEdgeTask {
  LmwbEdgeTaskKind kind;
  char *name;                 /* "ioi", "gt", "gp" or the file's path */
  LmwbEdgeExample *ex;
  int n;
  int n_years;                /* gt: 100 or 10 */
  int32_t year_tok[100];      /* gt: token of each year value */
} LmwbEdgeTask;

/* A built-in task ("ioi", "gt", "gp") of n examples from the seed, or a JSONL file (any other
 * text: a path); n 0: 64 for built-in tasks, a file's every line. Input errors: a model without a
 * tokenizer, too few one-token names, a bad file (naming line and field), an empty file. */
LmwbEdgeTask *lmwb_edge_task_open(const char *spec, const LmwbModel *m, int n, guint64 seed, GError **error);
/* JSONL text (origin names it in errors). */
LmwbEdgeTask *lmwb_edge_task_parse_jsonl(const char *text, size_t len, const char *origin, const LmwbModel *m,
                                         GError **error);
void lmwb_edge_task_free(LmwbEdgeTask *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(LmwbEdgeTask, lmwb_edge_task_free)

/* The longest example. */
int lmwb_edge_task_max_len(const LmwbEdgeTask *t);

typedef struct LmwbEdgeMetrics {
  double kl, logit_diff, accuracy, exact_match, prob_diff;
  int n;
} LmwbEdgeMetrics;

/* Adds examples first .. first+n-1: circuit and full logits at their last positions ([n, V]). */
void lmwb_edge_metrics_add(const LmwbEdgeTask *t, int first, int n, const float *circuit, const float *full, int V,
                           LmwbEdgeMetrics *acc);
/* Means over the examples added. */
void lmwb_edge_metrics_finish(LmwbEdgeMetrics *acc);

/* dM/dlogits at the last position of example i for the task's metric M (logit difference; gt:
 * probability difference), from its logits [V]; returns M. */
double lmwb_edge_metric_grad(const LmwbEdgeTask *t, int i, const float *logits, int V, float *dlogits);
