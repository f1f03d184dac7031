/* The analysis of one prompt that the window runs when a model loads or the prompt changes, and
 * hands to every view: tokens, each position's top next-token predictions, and the logit lens.
 * Computed on a worker thread with its own runner on the shared model; immutable and refcounted
 * once made. No GTK. */
#pragma once
#include "analysis/logit_lens.h"
#include "app/jobs/reporter.h"

#define LMWB_ANALYSIS_TOP_K 5
#define LMWB_ANALYSIS_MAX_TOKENS 64 /* the prompt is cut here so every view stays readable */

typedef struct LmwbAnalysis {
  gint refs;
  char *prompt;
  int n;              /* tokens */
  int32_t *ids;       /* [n] */
  char **texts;       /* [n] decoded token texts */
  gboolean truncated; /* the prompt had more than LMWB_ANALYSIS_MAX_TOKENS tokens */
  LmwbLogitLens *lens;/* k = LMWB_ANALYSIS_TOP_K; its last row is the model's own prediction */
  char **lens_texts;  /* [n_rows * n * k] decoded texts of lens->top_ids */
} LmwbAnalysis;

typedef struct LmwbAnalysisInput {
  LmwbModel *model; /* a reference held for the job */
  char *prompt;
} LmwbAnalysisInput;

LmwbAnalysisInput *lmwb_analysis_input_new(LmwbModel *m, const char *prompt);
void lmwb_analysis_input_free(gpointer p);
/* A job function (lmwb-job.h): data = LmwbAnalysisInput, result = LmwbAnalysis. */
gpointer lmwb_analysis_run(gpointer data, LmwbReporter *rep, GError **error);
LmwbAnalysis *lmwb_analysis_ref(LmwbAnalysis *a);
void lmwb_analysis_unref(gpointer a);
/* Text of a lens cell's i-th prediction. */
const char *lmwb_analysis_lens_text(const LmwbAnalysis *a, int row, int pos, int i);
/* Printable token text: whitespace and control characters made visible ("␣dog", "↵"). g_free. */
char *lmwb_token_display(const char *text);
