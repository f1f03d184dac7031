/* Efficacy, generalisation and specificity of an edit. Contract: rome.h. */
#include "app/core/errors.h"
#include "app/engine/generate.h"
#include "app/formats/tokenizer.h"
#include "editors/rome.h"
#include <math.h>
#include <string.h>

/* log p(target | prompt) for each (prompt, target) pair, teacher-forced, in one batch. */
static gboolean target_logprobs(LmwbRunner *r, const char *const *prompts, const char *const *targets, int n,
                                double *out, GError **error) {
  const LmwbModel *m = lmwb_runner_model(r);
  int32_t **seq = g_new0(int32_t *, n);
  size_t *len = g_new0(size_t, n), *n_t = g_new0(size_t, n);
  int T = 0;
  gboolean ok = TRUE;
  for (int i = 0; ok && i < n; i++) {
    size_t np = 0;
    g_autofree int32_t *p = lmwb_tokenizer_encode(m->tokenizer, prompts[i], strlen(prompts[i]), TRUE, &np, error);
    g_autofree int32_t *t = p ? lmwb_tokenizer_encode(m->tokenizer, targets[i], strlen(targets[i]), FALSE, &n_t[i], error)
                              : NULL;
    ok = t != NULL && np > 0 && n_t[i] > 0 && (int64_t)(np + n_t[i]) <= m->cfg.n_ctx;
    if (!ok) {
      if (!(error && *error))
        lmwb_input_error(error, "\"%s\" + \"%s\": empty, or longer than the model's context", prompts[i], targets[i]);
      break;
    }
    len[i] = np + n_t[i];
    seq[i] = g_new(int32_t, len[i]);
    memcpy(seq[i], p, np * sizeof(int32_t));
    memcpy(seq[i] + np, t, n_t[i] * sizeof(int32_t));
    T = MAX(T, (int)len[i]);
  }
  if (ok) {
    g_autofree int32_t *ids = g_new0(int32_t, (size_t)n * T), *tg = g_new(int32_t, (size_t)n * T);
    g_autofree int *lens = g_new(int, n);
    g_autofree float *loss = g_new(float, (size_t)n * T);
    for (size_t i = 0; i < (size_t)n * T; i++) tg[i] = -1;
    for (int i = 0; i < n; i++) {
      memcpy(ids + (size_t)i * T, seq[i], len[i] * sizeof(int32_t));
      lens[i] = (int)len[i];
      for (size_t k = 0; k < n_t[i]; k++) tg[(size_t)i * T + len[i] - n_t[i] - 1 + k] = seq[i][len[i] - n_t[i] + k];
    }
    LmwbForwardOptions fo = {.lens = lens};
    ok = lmwb_runner_forward(r, ids, n, T, &fo, error);
    if (ok) {
      lmwb_runner_token_losses(r, tg, loss);
      for (int i = 0; i < n; i++) {
        double s = 0;
        for (int t = 0; t < T; t++)
          if (tg[(size_t)i * T + t] >= 0) s -= loss[(size_t)i * T + t];
        out[i] = s;
      }
    }
  }
  for (int i = 0; i < n; i++) g_free(seq[i]);
  g_free(seq), g_free(len), g_free(n_t);
  return ok;
}

gboolean lmwb_edit_top_answers(LmwbModel *m, char **prompts, int n, int32_t *out, double *p_out, GError **error) {
  LmwbRunner *r = lmwb_runner_new(m);
  gboolean ok = TRUE;
  for (int i = 0; ok && i < n; i++) {
    size_t np = 0;
    g_autofree int32_t *p = lmwb_tokenizer_encode(m->tokenizer, prompts[i], strlen(prompts[i]), TRUE, &np, error);
    LmwbForwardOptions fo = {.last_logits_only = true};
    ok = p && np > 0 && lmwb_runner_forward(r, p, 1, (int)np, &fo, error);
    if (ok) {
      int rows = 0;
      const float *lg = lmwb_runner_logits(r, &rows);
      int32_t best = 0;
      for (int v = 1; v < m->cfg.vocab_size; v++)
        if (lg[v] > lg[best]) best = v;
      out[i] = best;
      if (p_out) {
        double z = 0;
        for (int v = 0; v < m->cfg.vocab_size; v++) z += exp((double)lg[v] - lg[best]);
        p_out[i] = 1.0 / z;
      }
    } else if (!(error && *error)) {
      lmwb_input_error(error, "neighbour prompt %d is empty", i + 1);
    }
  }
  lmwb_runner_free(r);
  return ok;
}

/* Entropy in bits of the n-gram frequencies of words. */
static double ngram_entropy(char **words, int n_words, int n) {
  if (n_words < n) return 0;
  GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (int i = 0; i + n <= n_words; i++) {
    GString *k = g_string_new(words[i]);
    for (int j = 1; j < n; j++) g_string_append_printf(k, "\x1f%s", words[i + j]);
    char *key = g_string_free(k, FALSE);
    gpointer c = g_hash_table_lookup(h, key);
    g_hash_table_replace(h, key, GINT_TO_POINTER(GPOINTER_TO_INT(c) + 1));
  }
  double total = n_words - n + 1, e = 0;
  GHashTableIter it;
  gpointer key, val;
  g_hash_table_iter_init(&it, h);
  while (g_hash_table_iter_next(&it, &key, &val)) {
    double f = GPOINTER_TO_INT(val) / total;
    e -= f * log2(f);
  }
  g_hash_table_destroy(h);
  return e;
}

static gboolean fluency(LmwbModel *m, const char *prompt, double *out, GError **error) {
  size_t np = 0;
  g_autofree int32_t *p = lmwb_tokenizer_encode(m->tokenizer, prompt, strlen(prompt), TRUE, &np, error);
  if (!p) return FALSE;
  LmwbGenerateOptions go;
  lmwb_generate_options_init(&go);
  go.max_tokens = MIN(LMWB_EDIT_FLUENCY_TOKENS, m->cfg.n_ctx - (int)np);
  go.temperature = 1.0f, go.top_k = 5, go.seed = 1, go.stop_at_eos = false;
  LmwbRunner *r = lmwb_runner_new(m);
  int n_new = 0;
  g_autofree int32_t *gen = go.max_tokens > 0 ? lmwb_generate(r, p, (int)np, &go, &n_new, NULL, NULL, error) : g_new0(int32_t, 1);
  lmwb_runner_free(r);
  if (!gen) return FALSE;
  g_autofree char *text = lmwb_tokenizer_decode(m->tokenizer, gen, (size_t)n_new, TRUE, NULL);
  g_auto(GStrv) words = g_regex_split_simple("[\\s]+", text ? text : "", 0, 0);
  GPtrArray *w = g_ptr_array_new();
  for (int i = 0; words[i]; i++)
    if (*words[i]) g_ptr_array_add(w, words[i]);
  *out = (2.0 / 3.0 * ngram_entropy((char **)w->pdata, (int)w->len, 2) +
          4.0 / 3.0 * ngram_entropy((char **)w->pdata, (int)w->len, 3)) / 2.0;
  g_ptr_array_free(w, TRUE);
  return TRUE;
}

gboolean lmwb_edit_score(LmwbModel *edited, LmwbModel *base, const LmwbEditRequest *req, LmwbEditScores *out,
                         GError **error) {
  *out = (LmwbEditScores){.p_true = NAN, .generalisation = NAN, .specificity = NAN, .fluency = NAN};
  int n_para = req->paraphrases ? (int)g_strv_length(req->paraphrases) : 0;
  int n_pairs = 1 + n_para;
  gboolean has_true = req->target_true != NULL;
  int n = n_pairs * (has_true ? 2 : 1);
  g_autofree const char **prompts = g_new(const char *, n), **targets = g_new(const char *, n);
  g_autofree char *text = lmwb_edit_request_text(req);
  for (int i = 0; i < n_pairs; i++) {
    const char *p = i == 0 ? text : req->paraphrases[i - 1];
    prompts[i] = p, targets[i] = req->target_new;
    if (has_true) prompts[n_pairs + i] = p, targets[n_pairs + i] = req->target_true;
  }
  g_autofree double *lp = g_new(double, n);
  LmwbRunner *r = lmwb_runner_new(edited);
  gboolean ok = target_logprobs(r, prompts, targets, n, lp, error);
  lmwb_runner_free(r);
  if (!ok || !fluency(edited, text, &out->fluency, error)) return FALSE;
  out->p_new = exp(lp[0]);
  if (has_true) out->p_true = exp(lp[n_pairs]);
  out->efficacy = has_true ? lp[0] > lp[n_pairs] : out->p_new > 0.5;
  if (n_para) {
    int good = 0;
    for (int i = 1; i < n_pairs; i++) good += has_true ? lp[i] > lp[n_pairs + i] : exp(lp[i]) > 0.5;
    out->generalisation = (double)good / n_para;
  }
  int n_nb = req->neighbours ? (int)g_strv_length(req->neighbours) : 0;
  if (n_nb && base) {
    g_autofree int32_t *a = g_new(int32_t, n_nb), *b = g_new(int32_t, n_nb);
    if (!lmwb_edit_top_answers(base, req->neighbours, n_nb, a, NULL, error) ||
        !lmwb_edit_top_answers(edited, req->neighbours, n_nb, b, NULL, error))
      return FALSE;
    int same = 0;
    for (int i = 0; i < n_nb; i++) same += a[i] == b[i];
    out->specificity = (double)same / n_nb;
  }
  return TRUE;
}
