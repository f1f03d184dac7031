/* Top-activating contexts of a transcoder feature on a text. Contract: feature_contexts.h. */
#include "circuits/feature_contexts.h"
#include "app/core/errors.h"
#include "app/formats/tokenizer.h"
#include <string.h>

#define DEFAULT_CONTEXT 64
#define DEFAULT_BATCH 8
#define ENCODE_ROWS 256       /* rows encoded at once: bounds the [rows, d_sae] scratch */
#define BYTES_PER_TOKEN_MAX 16 /* with max_tokens, only a prefix this many bytes per token is tokenised */

/* ---- the heap of the best windows so far (a min-heap on (max_act, -window)) ----------------- */

typedef struct {
  LmwbFeatureContext *items;
  int n, cap;
} Heap;

/* a ranks below b: smaller peak, or the same peak in a later window */
static gboolean below(const LmwbFeatureContext *a, const LmwbFeatureContext *b) {
  return a->max_act < b->max_act || (a->max_act == b->max_act && a->window > b->window);
}

static void context_clear(LmwbFeatureContext *c) {
  g_free(c->ids);
  g_free(c->acts);
  if (c->texts) g_strfreev(c->texts);
  memset(c, 0, sizeof *c);
}

static void sift_down(Heap *h, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, m = i;
    if (l < h->n && below(&h->items[l], &h->items[m])) m = l;
    if (r < h->n && below(&h->items[r], &h->items[m])) m = r;
    if (m == i) return;
    LmwbFeatureContext t = h->items[i];
    h->items[i] = h->items[m], h->items[m] = t;
    i = m;
  }
}

static void sift_up(Heap *h, int i) {
  while (i > 0) {
    int p = (i - 1) / 2;
    if (!below(&h->items[i], &h->items[p])) return;
    LmwbFeatureContext t = h->items[i];
    h->items[i] = h->items[p], h->items[p] = t;
    i = p;
  }
}

/* Whether a window with this peak would enter the heap (checked before copying its context). */
static gboolean heap_wants(const Heap *h, float max_act, int64_t window) {
  if (h->n < h->cap) return TRUE;
  LmwbFeatureContext probe = {.max_act = max_act, .window = window};
  return below(&h->items[0], &probe);
}

static void heap_push(Heap *h, LmwbFeatureContext *c) {
  if (h->n < h->cap) {
    h->items[h->n] = *c;
    sift_up(h, h->n++);
  } else {
    context_clear(&h->items[0]);
    h->items[0] = *c;
    sift_down(h, 0);
  }
  memset(c, 0, sizeof *c);
}

static int cmp_best_first(const void *pa, const void *pb) {
  const LmwbFeatureContext *a = pa, *b = pb;
  return below(b, a) ? -1 : below(a, b) ? 1 : 0;
}

/* ---- the run -------------------------------------------------------------------------------- */

typedef struct {
  float *rows;  /* [B * T, d_in]: the observed block of the last forward */
  size_t n;     /* floats expected */
  gboolean seen;
} Observed;

static void observe(float *block, const LmwbHookCtx *ctx, void *user) {
  Observed *o = user;
  size_t n = (size_t)ctx->B * ctx->rows_per_seq * ctx->R;
  if (ctx->backward || n != o->n) return;
  memcpy(o->rows, block, n * sizeof(float));
  o->seen = TRUE;
}

static gboolean check_options(const LmwbModel *m, const LmwbTranscoder *tc, int feature, const char *text,
                              const LmwbFeatureContextOptions *o, GError **error) {
  if (!m->tokenizer) {
    lmwb_input_error(error, "feature contexts: the model has no tokenizer to read the text with");
    return FALSE;
  }
  if (!lmwb_transcoder_check(tc, &m->cfg, "feature contexts", error)) return FALSE;
  if (feature < 0 || feature >= tc->d_sae) {
    lmwb_input_error(error, "feature contexts: feature %d is not one of the transcoder's %d features (0..%d)", feature,
                     tc->d_sae, tc->d_sae - 1);
    return FALSE;
  }
  if (!text || !*text) {
    lmwb_input_error(error, "feature contexts: the text is empty");
    return FALSE;
  }
  if (o->top_n < 0 || o->top_n > LMWB_FEATURE_CONTEXTS_MAX_TOP_N) {
    lmwb_input_error(error, "feature contexts: top_n %d must be in 1..%d (0: %d)", o->top_n,
                     LMWB_FEATURE_CONTEXTS_MAX_TOP_N, LMWB_FEATURE_CONTEXTS_TOP_N);
    return FALSE;
  }
  if (o->context < 0 || o->context > m->cfg.n_ctx) {
    lmwb_input_error(error, "feature contexts: context %d must be in 1..%d, the model's context (0: default)",
                     o->context, m->cfg.n_ctx);
    return FALSE;
  }
  if (o->batch < 0 || o->batch > 4096) {
    lmwb_input_error(error, "feature contexts: batch %d must be in 1..4096 (0: %d)", o->batch, DEFAULT_BATCH);
    return FALSE;
  }
  if (o->max_tokens < 0) {
    lmwb_input_error(error, "feature contexts: max_tokens %" G_GINT64_FORMAT " must not be negative", o->max_tokens);
    return FALSE;
  }
  return TRUE;
}

/* The text's tokens; with max_tokens only a prefix is tokenised, cut at whitespace. */
static int32_t *tokenize(const LmwbModel *m, const char *text, int64_t max_tokens, size_t *n, GError **error) {
  size_t len = strlen(text);
  if (max_tokens > 0 && (uint64_t)len / BYTES_PER_TOKEN_MAX > (uint64_t)max_tokens) {
    size_t cut = (size_t)max_tokens * BYTES_PER_TOKEN_MAX;
    while (cut > 0 && !g_ascii_isspace(text[cut])) cut--;
    if (cut > 0) len = cut;
  }
  int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, len, FALSE, n, error);
  if (ids && max_tokens > 0 && *n > (size_t)max_tokens) *n = (size_t)max_tokens;
  return ids;
}

/* The feature's activation at each of n observed rows. */
static void feature_acts(const LmwbTranscoder *tc, int feature, const float *rows, size_t n, float *scratch,
                         float *acts) {
  for (size_t r0 = 0; r0 < n; r0 += ENCODE_ROWS) {
    int k = (int)MIN((size_t)ENCODE_ROWS, n - r0);
    lmwb_transcoder_encode(tc, rows + r0 * tc->d_in, k, NULL, scratch);
    for (int i = 0; i < k; i++) acts[r0 + i] = scratch[(size_t)i * tc->d_sae + feature];
  }
}

/* Offers window w (tokens ids[0..T), activations acts[0..T), starting at text token start). */
static void offer_window(Heap *h, const int32_t *ids, const float *acts, int T, int64_t w, int64_t start, int half,
                         int64_t *active) {
  int peak = 0;
  for (int t = 0; t < T; t++) {
    if (acts[t] > 0) (*active)++;
    if (acts[t] > acts[peak]) peak = t;
  }
  if (!(acts[peak] > 0) || !heap_wants(h, acts[peak], w)) return;
  int lo = MAX(0, peak - half), hi = MIN(T - 1, peak + half);
  LmwbFeatureContext c = {.max_act = acts[peak], .position = start + peak, .window = w, .peak = peak - lo,
                          .n = hi - lo + 1};
  c.ids = g_memdup2(ids + lo, sizeof(int32_t) * c.n);
  c.acts = g_memdup2(acts + lo, sizeof(float) * c.n);
  heap_push(h, &c);
}

LmwbFeatureContexts *lmwb_feature_contexts(LmwbModel *m, const LmwbTranscoder *tc, int feature, const char *text,
                                           const LmwbFeatureContextOptions *opt, LmwbReporter *rep, GError **error) {
  static const LmwbFeatureContextOptions defaults = {0};
  if (!opt) opt = &defaults;
  if (!check_options(m, tc, feature, text, opt, error)) return NULL;
  int top_n = opt->top_n > 0 ? opt->top_n : LMWB_FEATURE_CONTEXTS_TOP_N;
  int half = opt->half_width > 0 ? opt->half_width : opt->half_width < 0 ? 0 : LMWB_FEATURE_CONTEXTS_HALF_WIDTH;
  int Tw = opt->context > 0 ? opt->context : MIN(DEFAULT_CONTEXT, m->cfg.n_ctx);
  int Bmax = opt->batch > 0 ? opt->batch : DEFAULT_BATCH;
  lmwb_report_progress(rep, 0, "tokenising the text");
  size_t n_ids = 0;
  g_autofree int32_t *ids = tokenize(m, text, opt->max_tokens, &n_ids, error);
  if (!ids) return NULL;
  if (n_ids == 0) {
    lmwb_input_error(error, "feature contexts: the text has no tokens");
    return NULL;
  }
  size_t full = n_ids / (size_t)Tw, tail = n_ids % (size_t)Tw;
  size_t rows_max = (size_t)Bmax * Tw;
  Observed obs = {.rows = g_try_new(float, rows_max * tc->d_in)};
  float *scratch = g_try_new(float, (size_t)ENCODE_ROWS * tc->d_sae), *acts = g_new(float, rows_max);
  Heap h = {.items = g_new0(LmwbFeatureContext, top_n), .cap = top_n};
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbHook hook = {.site = tc->in, .op = LMWB_HOOK_OBSERVE, .fn = observe, .user = &obs};
  gboolean ok = obs.rows && scratch;
  if (!ok) lmwb_input_error(error, "feature contexts: out of memory for %zu rows of %d features", rows_max, tc->d_sae);
  if (ok) ok = lmwb_runner_add_hook(r, &hook, error) > 0;
  LmwbForwardOptions fo = {.last_logits_only = true};
  int64_t active = 0;
  size_t windows = full + (tail > 0);
  /* full windows a batch at a time, then the shorter tail window alone */
  for (size_t w0 = 0; ok && w0 < windows;) {
    int T = w0 < full ? Tw : (int)tail;
    int B = w0 < full ? (int)MIN((size_t)Bmax, full - w0) : 1;
    const int32_t *win = ids + w0 * (size_t)Tw;
    obs.n = (size_t)B * T * tc->d_in;
    obs.seen = FALSE;
    ok = lmwb_runner_forward(r, win, B, T, &fo, error);
    if (ok && !obs.seen) {
      g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "feature contexts: the run did not reach the transcoder's input");
      ok = FALSE;
    }
    if (!ok) break;
    feature_acts(tc, feature, obs.rows, (size_t)B * T, scratch, acts);
    for (int b = 0; b < B; b++)
      offer_window(&h, win + (size_t)b * T, acts + (size_t)b * T, T, (int64_t)(w0 + b), (int64_t)((w0 + b) * Tw), half,
                   &active);
    w0 += (size_t)B;
    lmwb_report_progress(rep, (double)w0 / windows, "reading the text");
    if (lmwb_reporter_cancelled(rep, error)) ok = FALSE;
  }
  lmwb_runner_free(r);
  g_free(obs.rows), g_free(scratch), g_free(acts);
  if (!ok) {
    for (int i = 0; i < h.n; i++) context_clear(&h.items[i]);
    g_free(h.items);
    return NULL;
  }
  LmwbFeatureContexts *res = g_new0(LmwbFeatureContexts, 1);
  res->feature = feature;
  res->site = tc->in;
  res->tokens = (int64_t)n_ids;
  res->active = active;
  res->n = h.n;
  res->contexts = h.items;
  qsort(res->contexts, (size_t)res->n, sizeof *res->contexts, cmp_best_first);
  for (int i = 0; i < res->n; i++) {
    LmwbFeatureContext *c = &res->contexts[i];
    c->texts = g_new0(char *, c->n + 1);
    for (int t = 0; t < c->n; t++) {
      char *s = lmwb_tokenizer_token_text(m->tokenizer, c->ids[t]);
      c->texts[t] = s ? s : g_strdup("");
    }
  }
  return res;
}

void lmwb_feature_contexts_free(LmwbFeatureContexts *c) {
  if (!c) return;
  for (int i = 0; i < c->n; i++) context_clear(&c->contexts[i]);
  g_free(c->contexts);
  g_free(c);
}
