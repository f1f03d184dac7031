/* Code search: the cache of code ids over a text, regex marks, precision and recall, occurrences
 * and topic codes. Contract: codebook_search.h. */
#include "analysis/codebook_search.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include "app/formats/tokenizer.h"
#include <string.h>

#define FORWARD_WINDOWS 8

void lmwb_code_cache_free(LmwbCodeCache *c) {
  if (!c) return;
  for (int i = 0; c->cb && i < c->cb->n; i++) {
    g_free(c->ids[i]);
    g_free(c->active[i]);
  }
  g_free(c->ids);
  g_free(c->active);
  g_free(c->tokens);
  if (c->model) lmwb_model_unref(c->model);
  g_free(c);
}

LmwbCodeCache *lmwb_code_cache_build(LmwbModel *m, LmwbCodebooks *cb, const int32_t *ids, size_t n_ids, int context,
                                     int64_t max_tokens, LmwbReporter *rep, GError **error) {
  if (context < 1 || context > m->cfg.n_ctx) {
    lmwb_input_error(error, "context %d is not in 1..%d", context, m->cfg.n_ctx);
    return NULL;
  }
  size_t usable = max_tokens > 0 ? MIN(n_ids, (size_t)max_tokens) : n_ids;
  int64_t nw = (int64_t)(usable / (size_t)context);
  if (nw < 1) {
    lmwb_input_error(error, "the text has %zu tokens, fewer than one window of %d", usable, context);
    return NULL;
  }
  if (nw > G_MAXINT / 2) {
    lmwb_input_error(error, "the text is too long for a code cache (%" G_GINT64_FORMAT " windows)", nw);
    return NULL;
  }
  int64_t N = nw * context;
  uint64_t bytes = 0;
  for (int i = 0; i < cb->n; i++)
    bytes += (uint64_t)N * cb->books[i].groups * cb->k * 4 + (uint64_t)cb->books[i].groups * cb->num_codes * 8;
  if (!lmwb_memory_check(bytes, "the code cache", error)) return NULL;
  LmwbCodeCache *c = g_new0(LmwbCodeCache, 1);
  c->cb = cb;
  c->model = lmwb_model_ref(m);
  c->context = context;
  c->n_windows = (int)nw;
  c->n_tokens = N;
  c->tokens = g_memdup2(ids, sizeof(int32_t) * (size_t)N);
  c->ids = g_new0(int32_t *, cb->n);
  c->active = g_new0(int64_t *, cb->n);
  for (int i = 0; i < cb->n; i++) {
    c->ids[i] = g_new(int32_t, (size_t)N * cb->books[i].groups * cb->k);
    c->active[i] = g_new0(int64_t, (size_t)cb->books[i].groups * cb->num_codes);
  }
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbCodebookRun *run = lmwb_codebooks_attach(r, cb, error);
  gboolean ok = run != NULL;
  for (int w0 = 0; ok && w0 < c->n_windows; w0 += FORWARD_WINDOWS) {
    if (lmwb_reporter_cancelled(rep, error)) {
      ok = FALSE;
      break;
    }
    int B = MIN(FORWARD_WINDOWS, c->n_windows - w0);
    ok = lmwb_runner_forward(r, c->tokens + (size_t)w0 * context, B, context, NULL, error);
    for (int i = 0; ok && i < cb->n; i++) {
      int64_t shape[4];
      int nd;
      const int32_t *got = lmwb_codebook_run_codes(run, cb->books[i].layer, cb->books[i].site, shape, &nd, error);
      if (!(ok = got != NULL)) break;
      size_t per = (size_t)cb->books[i].groups * cb->k, n = (size_t)B * context * per;
      memcpy(c->ids[i] + (size_t)w0 * context * per, got, sizeof(int32_t) * n);
    }
    lmwb_report_progress(rep, (double)(w0 + B) / c->n_windows, "caching codes");
  }
  lmwb_codebooks_detach(r, run);
  lmwb_runner_free(r);
  if (!ok) {
    lmwb_code_cache_free(c);
    return NULL;
  }
  /* A code counts once per token even when a clamp repeats it in several slots. */
  for (int i = 0; i < cb->n; i++) {
    int G = cb->books[i].groups, k = cb->k;
    for (int64_t t = 0; t < N; t++)
      for (int g = 0; g < G; g++) {
        const int32_t *row = c->ids[i] + ((size_t)t * G + g) * k;
        for (int s = 0; s < k; s++) {
          gboolean dup = FALSE;
          for (int q = 0; q < s; q++) dup |= row[q] == row[s];
          if (!dup) c->active[i][(size_t)g * cb->num_codes + row[s]]++;
        }
      }
  }
  return c;
}

int64_t *lmwb_code_cache_match(const LmwbCodeCache *c, const char *regex, int64_t *n, GError **error) {
  GError *re_err = NULL;
  GRegex *re = g_regex_new(regex, G_REGEX_OPTIMIZE, 0, &re_err);
  if (!re) {
    lmwb_input_error(error, "regex \"%s\" does not compile: %s", regex, re_err->message);
    g_error_free(re_err);
    return NULL;
  }
  gboolean group = g_regex_get_capture_count(re) > 0;
  const LmwbTokenizer *tok = c->model->tokenizer;
  GArray *out = g_array_new(FALSE, FALSE, sizeof(int64_t));
  size_t *ends = g_new(size_t, c->context);
  for (int w = 0; w < c->n_windows; w++) {
    GString *text = g_string_new(NULL);
    for (int t = 0; t < c->context; t++) {
      int32_t id = c->tokens[(size_t)w * c->context + t];
      g_autofree char *s = tok ? lmwb_tokenizer_token_text(tok, id) : NULL;
      if (s) g_string_append(text, s);
      ends[t] = text->len;
    }
    GMatchInfo *mi = NULL;
    g_regex_match(re, text->str, 0, &mi);
    int64_t last = -1;
    while (g_match_info_matches(mi)) {
      int s = -1, e = -1;
      g_match_info_fetch_pos(mi, group ? 1 : 0, &s, &e);
      if (s >= 0 && e > s) {
        int t = 0; /* the token holding the first byte */
        while (t < c->context && ends[t] <= (size_t)s) t++;
        int64_t at = (int64_t)w * c->context + MIN(t, c->context - 1);
        if (at != last) g_array_append_val(out, at);
        last = at;
      }
      g_match_info_next(mi, NULL);
    }
    g_match_info_free(mi);
    g_string_free(text, TRUE);
  }
  g_free(ends);
  g_regex_unref(re);
  *n = out->len;
  return (int64_t *)g_array_free(out, FALSE);
}

static int hit_cmp(gconstpointer a, gconstpointer b) {
  const LmwbCodeHit *x = a, *y = b;
  if (x->precision != y->precision) return x->precision > y->precision ? -1 : 1;
  if (x->recall != y->recall) return x->recall > y->recall ? -1 : 1;
  if (x->book != y->book) return x->book - y->book;
  if (x->head != y->head) return x->head - y->head;
  return x->code - y->code;
}

LmwbCodeHit *lmwb_code_search(const LmwbCodeCache *c, const int64_t *marked, int64_t n_marked,
                              const LmwbCodeSearchOptions *o, int *n_hits) {
  static const LmwbCodeSearchOptions defaults = {0};
  if (!o) o = &defaults;
  int top = o->top > 0 ? o->top : 5;
  double min_p = o->min_precision == 0 ? 0.5 : o->min_precision, min_r = o->min_recall == 0 ? 0.01 : o->min_recall;
  const LmwbCodebooks *cb = c->cb;
  int C = cb->num_codes, k = cb->k;
  GArray *all = g_array_new(FALSE, FALSE, sizeof(LmwbCodeHit));
  int64_t *cnt = g_new(int64_t, C);
  for (int i = 0; n_marked > 0 && i < cb->n; i++) {
    int G = cb->books[i].groups;
    for (int g = 0; g < G; g++) {
      memset(cnt, 0, sizeof(int64_t) * C);
      for (int64_t m = 0; m < n_marked; m++) {
        const int32_t *row = c->ids[i] + ((size_t)marked[m] * G + g) * k;
        for (int s = 0; s < k; s++) {
          gboolean dup = FALSE;
          for (int q = 0; q < s; q++) dup |= row[q] == row[s];
          if (!dup) cnt[row[s]]++;
        }
      }
      GArray *book = g_array_new(FALSE, FALSE, sizeof(LmwbCodeHit));
      for (int j = 0; j < C; j++) {
        double recall = (double)cnt[j] / n_marked;
        if (!cnt[j] || recall <= min_r) continue;
        int64_t act = c->active[i][(size_t)g * C + j];
        LmwbCodeHit h = {.book = i, .layer = cb->books[i].layer, .site = cb->books[i].site,
                         .head = cb->books[i].site == LMWB_CODEBOOK_ATTN ? g : -1, .code = j,
                         .precision = (double)cnt[j] / act, .recall = recall, .matched = cnt[j], .activations = act};
        g_array_append_val(book, h);
      }
      g_array_sort(book, hit_cmp);
      for (guint q = 0; q < book->len && q < (guint)top; q++) {
        LmwbCodeHit *h = &g_array_index(book, LmwbCodeHit, q);
        if (h->precision > min_p) g_array_append_val(all, *h);
      }
      g_array_free(book, TRUE);
    }
  }
  g_free(cnt);
  g_array_sort(all, hit_cmp);
  *n_hits = (int)all->len;
  return (LmwbCodeHit *)g_array_free(all, FALSE);
}

int64_t *lmwb_code_cache_occurrences(const LmwbCodeCache *c, int book, int head, int code, int max, int *n) {
  const LmwbCodebooks *cb = c->cb;
  int G = cb->books[book].groups, k = cb->k;
  GArray *out = g_array_new(FALSE, FALSE, sizeof(int64_t));
  for (int s = 0; s < k && (int)out->len < max; s++)
    for (int64_t t = 0; t < c->n_tokens && (int)out->len < max; t++) {
      const int32_t *row = c->ids[book] + ((size_t)t * G + head) * k;
      gboolean earlier = FALSE; /* listed under an earlier slot already */
      for (int q = 0; q < s; q++) earlier |= row[q] == code;
      if (row[s] == code && !earlier) g_array_append_val(out, t);
    }
  *n = (int)out->len;
  return (int64_t *)g_array_free(out, FALSE);
}

char *lmwb_code_cache_context(const LmwbCodeCache *c, int64_t t, int before, int after) {
  const LmwbTokenizer *tok = c->model->tokenizer;
  int64_t w0 = t / c->context * c->context, a = MAX(w0, t - before), b = MIN(w0 + c->context - 1, t + after);
  GString *s = g_string_new(NULL);
  for (int64_t i = a; i <= b; i++) {
    g_autofree char *x = tok ? lmwb_tokenizer_token_text(tok, c->tokens[i]) : g_strdup_printf("[%d]", c->tokens[i]);
    if (i == t) g_string_append(s, "\u00ab");
    g_string_append(s, x ? x : "");
    if (i == t) g_string_append(s, "\u00bb");
  }
  return g_string_free(s, FALSE);
}

LmwbCodeHit *lmwb_code_cache_topics(const LmwbCodeCache *c, int **windows, int *n) {
  const LmwbCodebooks *cb = c->cb;
  int C = cb->num_codes, k = cb->k;
  GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal); /* (book, head, code) -> hit + 1 */
  GArray *hits = g_array_new(FALSE, FALSE, sizeof(LmwbCodeHit)), *wins = g_array_new(FALSE, FALSE, sizeof(int));
  int *cnt = g_new(int, C);
  for (int i = 0; i < cb->n; i++) {
    int G = cb->books[i].groups;
    for (int g = 0; g < G; g++)
      for (int w = 0; w < c->n_windows; w++) {
        memset(cnt, 0, sizeof(int) * C);
        for (int t = 0; t < c->context; t++) {
          const int32_t *row = c->ids[i] + (((size_t)w * c->context + t) * G + g) * k;
          for (int s = 0; s < k; s++) {
            gboolean dup = FALSE;
            for (int q = 0; q < s; q++) dup |= row[q] == row[s];
            if (!dup) cnt[row[s]]++;
          }
        }
        for (int j = 0; j < C; j++) {
          if (2 * cnt[j] <= c->context) continue;
          gpointer key = GSIZE_TO_POINTER(((gsize)(i + 1) << 40) | ((gsize)g << 24) | (gsize)j); /* j < 2^24 */
          gpointer at = g_hash_table_lookup(seen, key);
          if (at) {
            g_array_index(wins, int, GPOINTER_TO_INT(at) - 1)++;
            continue;
          }
          LmwbCodeHit h = {.book = i, .layer = cb->books[i].layer, .site = cb->books[i].site,
                           .head = cb->books[i].site == LMWB_CODEBOOK_ATTN ? g : -1, .code = j,
                           .activations = c->active[i][(size_t)g * C + j]};
          g_array_append_val(hits, h);
          int one = 1;
          g_array_append_val(wins, one);
          g_hash_table_insert(seen, key, GINT_TO_POINTER((int)hits->len));
        }
      }
  }
  g_free(cnt);
  g_hash_table_destroy(seen);
  *n = (int)hits->len;
  *windows = (int *)g_array_free(wins, FALSE);
  return (LmwbCodeHit *)g_array_free(hits, FALSE);
}
