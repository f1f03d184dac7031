#include "ui/desktop/lmwb-analysis.h"
#include "app/core/errors.h"
#include "app/formats/tokenizer.h"
#include <string.h>

LmwbAnalysisInput *lmwb_analysis_input_new(LmwbModel *m, const char *prompt) {
  LmwbAnalysisInput *in = g_new0(LmwbAnalysisInput, 1);
  in->model = lmwb_model_ref(m);
  in->prompt = g_strdup(prompt);
  return in;
}

void lmwb_analysis_input_free(gpointer p) {
  LmwbAnalysisInput *in = p;
  lmwb_model_unref(in->model);
  g_free(in->prompt);
  g_free(in);
}

LmwbAnalysis *lmwb_analysis_ref(LmwbAnalysis *a) {
  g_atomic_int_inc(&a->refs);
  return a;
}

void lmwb_analysis_unref(gpointer p) {
  LmwbAnalysis *a = p;
  if (!a || !g_atomic_int_dec_and_test(&a->refs)) return;
  if (a->texts)
    for (int i = 0; i < a->n; i++) g_free(a->texts[i]);
  if (a->lens_texts) {
    size_t cells = (size_t)a->lens->n_rows * a->lens->n_pos * a->lens->k;
    for (size_t i = 0; i < cells; i++) g_free(a->lens_texts[i]);
  }
  g_free(a->lens_texts);
  lmwb_logit_lens_free(a->lens);
  g_free(a->texts);
  g_free(a->ids);
  g_free(a->prompt);
  g_free(a);
}

const char *lmwb_analysis_lens_text(const LmwbAnalysis *a, int row, int pos, int i) {
  return a->lens_texts[((size_t)row * a->lens->n_pos + pos) * a->lens->k + i];
}

char *lmwb_token_display(const char *text) {
  if (!text) return g_strdup("?");
  GString *s = g_string_new(NULL);
  for (const char *p = text; *p; p++) {
    if (*p == ' ') g_string_append(s, "\u2423");        /* ␣ */
    else if (*p == '\n') g_string_append(s, "\u21B5"); /* ↵ */
    else if (*p == '\t') g_string_append(s, "\u21E5"); /* ⇥ */
    else if ((unsigned char)*p < 0x20) g_string_append_printf(s, "\\x%02x", (unsigned char)*p);
    else g_string_append_c(s, *p);
  }
  return g_string_free(s, FALSE);
}

gpointer lmwb_analysis_run(gpointer data, LmwbReporter *rep, GError **error) {
  LmwbAnalysisInput *in = data;
  LmwbModel *m = in->model;
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s has no tokenizer (tokenizer.json or vocab.json + merges.txt)", m->dir ? m->dir : "model");
    return NULL;
  }
  lmwb_report_progress(rep, 0.05, "tokenizing");
  size_t n_ids = 0;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, in->prompt, strlen(in->prompt), TRUE, &n_ids, error);
  if (!ids) return NULL;
  if (n_ids == 0) {
    lmwb_input_error(error, *in->prompt ? "the model's tokenizer encodes this prompt to no tokens (its vocabulary has "
                                          "none of its characters)"
                                        : "the prompt is empty: type some text first");
    return NULL;
  }
  LmwbAnalysis *a = g_new0(LmwbAnalysis, 1);
  a->refs = 1;
  a->prompt = g_strdup(in->prompt);
  int limit = MIN(LMWB_ANALYSIS_MAX_TOKENS, m->cfg.n_ctx);
  a->truncated = n_ids > (size_t)limit;
  a->n = (int)MIN(n_ids, (size_t)limit);
  a->ids = g_memdup2(ids, sizeof(int32_t) * a->n);
  a->texts = g_new0(char *, a->n);
  for (int i = 0; i < a->n; i++) a->texts[i] = lmwb_tokenizer_token_text(m->tokenizer, a->ids[i]);
  if (lmwb_reporter_cancelled(rep, error)) goto fail;
  lmwb_report_progress(rep, 0.2, "forward");
  LmwbRunner *r = lmwb_runner_new(m);
  gboolean ok = lmwb_runner_forward(r, a->ids, 1, a->n, NULL, error);
  if (ok) {
    lmwb_report_progress(rep, 0.6, "logit lens");
    a->lens = lmwb_logit_lens_compute(r, 0, a->n, MIN(LMWB_ANALYSIS_TOP_K, m->cfg.vocab_size), error);
  }
  lmwb_runner_free(r);
  if (!a->lens) goto fail;
  size_t cells = (size_t)a->lens->n_rows * a->lens->n_pos * a->lens->k;
  a->lens_texts = g_new0(char *, cells);
  for (size_t i = 0; i < cells; i++) a->lens_texts[i] = lmwb_tokenizer_token_text(m->tokenizer, a->lens->top_ids[i]);
  lmwb_report_progress(rep, 1.0, "done");
  return a;
fail:
  lmwb_analysis_unref(a);
  return NULL;
}
