/* Steering sweeps: sampled generations with code clamps on and off. Contract: codebook_steer.h. */
#include "analysis/codebook_steer.h"
#include "app/core/errors.h"
#include "app/formats/tokenizer.h"
#include <string.h>

void lmwb_steer_result_clear(LmwbSteerResult *r) {
  g_free(r->hits_off);
  g_free(r->hits_on);
  g_strfreev(r->examples_off);
  g_strfreev(r->examples_on);
  memset(r, 0, sizeof *r);
}

/* One continuation's text contains the word (both case-folded). */
static gboolean contains(const char *text, const char *word_folded) {
  g_autofree char *t = g_utf8_casefold(text, -1);
  return strstr(t, word_folded) != NULL;
}

gboolean lmwb_codebook_steer(LmwbModel *m, LmwbCodebooks *cb, const LmwbCodeClamp *clamps, int n_clamps,
                             const LmwbSteerOptions *o, LmwbReporter *rep, LmwbSteerResult *res, GError **error) {
  memset(res, 0, sizeof *res);
  int np = o->prompts ? (int)g_strv_length((char **)o->prompts) : 0;
  if (np < 1 || !o->word || !*o->word) {
    lmwb_input_error(error, "steer: give at least one prompt and a non-empty word");
    return FALSE;
  }
  if (!m->tokenizer) {
    lmwb_input_error(error, "steer: the model has no tokenizer");
    return FALSE;
  }
  if (o->samples < 0 || o->samples > 100000) {
    lmwb_input_error(error, "steer: samples %d is not in 1..100000", o->samples);
    return FALSE;
  }
  int S = o->samples > 0 ? o->samples : 10;
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbCodebookRun *run = lmwb_codebooks_attach(r, cb, error);
  gboolean ok = run != NULL;
  for (int i = 0; ok && i < n_clamps; i++) ok = lmwb_codebook_run_clamp(run, &clamps[i], error);
  g_autofree char *word = g_utf8_casefold(o->word, -1);
  res->n_prompts = np;
  res->samples = S;
  res->hits_off = g_new0(int, np);
  res->hits_on = g_new0(int, np);
  res->examples_off = g_new0(char *, np + 1);
  res->examples_on = g_new0(char *, np + 1);
  for (int p = 0; ok && p < np; p++) {
    size_t n = 0;
    g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, o->prompts[p], strlen(o->prompts[p]), TRUE, &n, error);
    if (!(ok = ids != NULL)) break;
    if (n == 0 || n + (size_t)MAX(o->gen.max_tokens, 0) > (size_t)m->cfg.n_ctx) {
      lmwb_input_error(error, "steer: prompt %d has %zu tokens; with %d new ones it must fit the context of %d", p, n,
                       o->gen.max_tokens, m->cfg.n_ctx);
      ok = FALSE;
      break;
    }
    if (!(ok = lmwb_codebook_run_check_positions(run, (int)n + o->gen.max_tokens, error))) break;
    for (int on = 0; ok && on < 2; on++) {
      lmwb_codebook_run_clear_clamps(run);
      for (int i = 0; ok && on && i < n_clamps; i++) ok = lmwb_codebook_run_clamp(run, &clamps[i], error);
      for (int s = 0; ok && s < S; s++) {
        if (lmwb_reporter_cancelled(rep, error)) {
          ok = FALSE;
          break;
        }
        LmwbGenerateOptions g = o->gen;
        g.seed = o->gen.seed + (guint64)p * 1000003u + (guint64)s;
        int n_out = 0;
        lmwb_runner_reset_cache(r);
        g_autofree int32_t *out = lmwb_generate(r, ids, (int)n, &g, &n_out, NULL, NULL, error);
        if (!(ok = out != NULL)) break;
        g_autofree char *text = lmwb_tokenizer_decode(m->tokenizer, out, n_out, TRUE, NULL);
        if (contains(text ? text : "", word)) (on ? res->hits_on : res->hits_off)[p]++;
        char **ex = on ? res->examples_on : res->examples_off;
        if (!ex[p]) ex[p] = g_strdup(text ? text : "");
        lmwb_report_progress(rep, ((double)p * 2 * S + on * S + s + 1) / (2.0 * S * np), "sampling");
      }
    }
  }
  int off = 0, onn = 0;
  for (int p = 0; p < np; p++) off += res->hits_off[p], onn += res->hits_on[p];
  res->share_off = (double)off / ((double)S * np);
  res->share_on = (double)onn / ((double)S * np);
  lmwb_codebooks_detach(r, run);
  lmwb_runner_free(r);
  if (!ok) lmwb_steer_result_clear(res);
  return ok;
}
