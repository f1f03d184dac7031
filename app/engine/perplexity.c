#include "app/engine/perplexity.h"
#include "app/core/errors.h"
#include "app/formats/tokenizer.h"
#include <math.h>
#include <string.h>

/* A loss that is NaN or infinite (weights that overflow) is a failure, never a result. */
static gboolean check_finite(double a, double b, GError **error) {
  if (isfinite(a) && isfinite(b)) return TRUE;
  g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "the model's loss is not finite (NaN or infinity): its weights "
              "overflow; no perplexity to report");
  return FALSE;
}

static int window_of(const LmwbConfig *c, const LmwbPerplexityOptions *o) {
  int w = o->context > 0 ? o->context : MIN(c->n_ctx, 1024);
  return MIN(w, c->n_ctx);
}

gboolean lmwb_perplexity_ids(LmwbRunner *r, const int32_t *ids, size_t n, const LmwbPerplexityOptions *opt,
                             LmwbPerplexityResult *res, LmwbReporter *rep, GError **error) {
  const LmwbConfig *c = &lmwb_runner_model(r)->cfg;
  int win = window_of(c, opt);
  int stride = opt->stride > 0 ? MIN(opt->stride, win) : MAX(1, win / 2);
  if (n < 2) {
    lmwb_input_error(error, "perplexity needs at least 2 tokens of text");
    return FALSE;
  }
  g_autofree float *losses = g_new(float, win);
  double sum = 0;
  size_t count = 0, scored_to = 1; /* token index up to which predictions are scored */
  for (size_t begin = 0;; begin += stride) {
    size_t end = MIN(begin + win, n);
    if (!lmwb_runner_forward(r, ids + begin, 1, (int)(end - begin), NULL, error)) return FALSE;
    lmwb_runner_token_losses(r, NULL, losses);
    /* position t predicts token begin+t+1; score only tokens not scored by an earlier window */
    for (size_t t = 0; t + 1 < end - begin; t++) {
      size_t target = begin + t + 1;
      if (target < scored_to) continue;
      sum += losses[t];
      count++;
    }
    scored_to = end;
    lmwb_report_progress(rep, (double)end / n, "perplexity");
    if (lmwb_reporter_cancelled(rep, error)) return FALSE;
    if (end == n) break;
  }
  res->nll = sum / count;
  res->perplexity = exp(res->nll);
  res->n_tokens = count;
  return check_finite(res->nll, res->perplexity, error);
}

gboolean lmwb_perplexity_lines(LmwbRunner *r, const char *const *lines, size_t n_lines, const LmwbPerplexityOptions *opt,
                               LmwbPerplexityResult *res, LmwbReporter *rep, GError **error) {
  LmwbModel *m = lmwb_runner_model(r);
  const LmwbConfig *c = &m->cfg;
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s: the model has no tokenizer, so text cannot be scored", m->dir ? m->dir : "model");
    return FALSE;
  }
  int win = window_of(c, opt), batch = opt->batch > 0 ? opt->batch : 16;
  GPtrArray *enc = g_ptr_array_new_with_free_func(g_free);
  GArray *lens = g_array_new(FALSE, FALSE, sizeof(int));
  for (size_t i = 0; i < n_lines; i++) {
    size_t k = 0;
    int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, lines[i], strlen(lines[i]), TRUE, &k, error);
    if (!ids) {
      g_ptr_array_free(enc, TRUE);
      g_array_free(lens, TRUE);
      return FALSE;
    }
    if (k < 2) { /* a one-token line has no prediction to score */
      g_free(ids);
      continue;
    }
    int len = (int)MIN(k, (size_t)win);
    g_ptr_array_add(enc, ids);
    g_array_append_val(lens, len);
  }
  size_t nl = enc->len;
  gboolean ok = TRUE;
  double sum_ppl = 0, sum_nll = 0;
  size_t tok = 0;
  res->line_perplexity = g_new0(double, MAX(nl, 1));
  for (size_t s = 0; ok && s < nl; s += batch) {
    int B = (int)MIN((size_t)batch, nl - s), T = 0;
    for (int b = 0; b < B; b++) T = MAX(T, g_array_index(lens, int, s + b));
    g_autofree int32_t *ids = g_new0(int32_t, (size_t)B * T);
    g_autofree int *bl = g_new(int, B);
    for (int b = 0; b < B; b++) {
      bl[b] = g_array_index(lens, int, s + b);
      memcpy(ids + (size_t)b * T, g_ptr_array_index(enc, s + b), (size_t)bl[b] * sizeof(int32_t));
    }
    LmwbForwardOptions fo = {.lens = bl};
    ok = lmwb_runner_forward(r, ids, B, T, &fo, error);
    if (!ok) break;
    g_autofree float *losses = g_new(float, (size_t)B * T);
    lmwb_runner_token_losses(r, NULL, losses);
    for (int b = 0; b < B; b++) {
      double ls = 0;
      for (int t = 0; t + 1 < bl[b]; t++) ls += losses[(size_t)b * T + t];
      double ppl = exp(ls / (bl[b] - 1));
      res->line_perplexity[s + b] = ppl;
      sum_ppl += ppl;
      sum_nll += ls;
      tok += bl[b] - 1;
    }
    lmwb_report_progress(rep, (double)(s + B) / nl, "perplexity per line");
    if (lmwb_reporter_cancelled(rep, error)) ok = FALSE;
  }
  g_ptr_array_free(enc, TRUE);
  g_array_free(lens, TRUE);
  if (!ok) {
    g_clear_pointer(&res->line_perplexity, g_free);
    return FALSE;
  }
  if (nl == 0) {
    g_clear_pointer(&res->line_perplexity, g_free);
    lmwb_input_error(error, "no line has two or more tokens to score");
    return FALSE;
  }
  res->n_lines = nl;
  res->mean_line_perplexity = sum_ppl / nl;
  if (res->n_tokens == 0) {
    res->n_tokens = tok;
    res->nll = sum_nll / tok;
    res->perplexity = exp(res->nll);
  }
  if (!check_finite(res->nll, res->mean_line_perplexity, error)) {
    g_clear_pointer(&res->line_perplexity, g_free);
    return FALSE;
  }
  return TRUE;
}

gboolean lmwb_perplexity_text(LmwbRunner *r, const char *text, const LmwbPerplexityOptions *opt, LmwbPerplexityResult *res,
                              LmwbReporter *rep, GError **error) {
  LmwbModel *m = lmwb_runner_model(r);
  memset(res, 0, sizeof *res);
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s: the model has no tokenizer, so text cannot be scored", m->dir ? m->dir : "model");
    return FALSE;
  }
  size_t n = 0;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), TRUE, &n, error);
  if (!ids) return FALSE;
  if (!lmwb_perplexity_ids(r, ids, n, opt, res, rep, error)) return FALSE;
  if (opt->per_line) {
    g_auto(GStrv) all = g_strsplit(text, "\n", -1);
    GPtrArray *lines = g_ptr_array_new();
    for (char **p = all; *p; p++)
      if (**p && strspn(*p, " \t\r") != strlen(*p)) g_ptr_array_add(lines, *p);
    gboolean ok = lmwb_perplexity_lines(r, (const char *const *)lines->pdata, lines->len, opt, res, rep, error);
    g_ptr_array_free(lines, TRUE);
    if (!ok) return FALSE;
  }
  return TRUE;
}
