/* LM-head neuron decoding: the blocked GEMM engine, streaming top-k, decode, search, compare.
 * The clamp sweep lives in neuron_sweep.c. Contract: neurons.h. */
#include "analysis/neurons.h"
#include "app/core/errors.h"
#include "app/core/rows.h"
#include "app/formats/tokenizer.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *lmwb_neuron_which_name(LmwbNeuronWhich w) {
  switch (w) {
  case LMWB_NEURON_IN: return "in";
  case LMWB_NEURON_OUT: return "out";
  case LMWB_NEURON_GATE: return "gate";
  }
  return "?";
}

gboolean lmwb_neuron_which_parse(const char *text, LmwbNeuronWhich *out, GError **error) {
  if (text && !strcmp(text, "in")) *out = LMWB_NEURON_IN;
  else if (text && !strcmp(text, "out")) *out = LMWB_NEURON_OUT;
  else if (text && !strcmp(text, "gate")) *out = LMWB_NEURON_GATE;
  else {
    lmwb_input_error(error, "which \"%s\": expected in, out or gate", text ? text : "");
    return FALSE;
  }
  return TRUE;
}

gboolean lmwb_neuron_which_check(const LmwbModel *m, LmwbNeuronWhich w, GError **error) {
  if ((int)w < LMWB_NEURON_IN || (int)w > LMWB_NEURON_GATE) {
    lmwb_input_error(error, "which: %d is not in, out or gate", (int)w);
    return FALSE;
  }
  if (w == LMWB_NEURON_GATE && (!m->cfg.gated_mlp || !m->w.layers[0].w_gate)) {
    lmwb_input_error(error, "which gate: %s (%s) has no gated MLP, so its neurons have no gate vectors; use in or out",
                     m->dir ? m->dir : "the model", m->cfg.model_type);
    return FALSE;
  }
  return TRUE;
}

static gboolean parse_int_range(const char *s, int lo, int hi, int *out) {
  char *end = NULL;
  while (*s == ' ') s++;
  if (!*s) return FALSE;
  gint64 v = g_ascii_strtoll(s, &end, 10);
  while (*end == ' ') end++;
  if (*end || end == s || v < lo || v > hi) return FALSE;
  *out = (int)v;
  return TRUE;
}

gboolean lmwb_neurons_parse_layers(const char *text, int n_layer, int **layers, int *n, GError **error) {
  *layers = NULL;
  *n = 0;
  if (n_layer <= 0) {
    lmwb_input_error(error, "layers: the model has no layers");
    return FALSE;
  }
  gboolean *on = g_new0(gboolean, n_layer);
  g_autofree char *trimmed = g_strstrip(g_strdup(text ? text : ""));
  if (!*trimmed || !strcmp(trimmed, "all")) {
    for (int i = 0; i < n_layer; i++) on[i] = TRUE;
  } else {
    g_auto(GStrv) parts = g_strsplit(text, ",", -1);
    for (char **p = parts; *p; p++) {
      char *item = g_strstrip(*p);
      char *dash = strchr(item, '-');
      int a, b;
      gboolean ok;
      if (dash) {
        *dash = 0;
        ok = parse_int_range(item, 0, n_layer - 1, &a) && parse_int_range(dash + 1, 0, n_layer - 1, &b) && a <= b;
        *dash = '-';
      } else {
        ok = parse_int_range(item, 0, n_layer - 1, &a);
        b = a;
      }
      if (!ok) {
        lmwb_input_error(error, "layers \"%s\": \"%s\" is not a layer or range A-B within 0..%d", text, item, n_layer - 1);
        g_free(on);
        return FALSE;
      }
      for (int i = a; i <= b; i++) on[i] = TRUE;
    }
  }
  int *out = g_new(int, n_layer), k = 0;
  for (int i = 0; i < n_layer; i++)
    if (on[i]) out[k++] = i;
  g_free(on);
  *layers = out;
  *n = k;
  return TRUE;
}

void lmwb_neuron_decode_options_init(LmwbNeuronDecodeOptions *o) {
  memset(o, 0, sizeof *o);
  o->which = LMWB_NEURON_IN;
  o->top_k = LMWB_NEURONS_DEFAULT_TOP_K;
}

int lmwb_neurons_block_size(const LmwbModel *m, int requested) {
  int d_ff = m->cfg.d_ff, V = m->cfg.vocab_size;
  int b = requested;
  if (b <= 0) {
    size_t rows = LMWB_NEURONS_BLOCK_BYTES / ((size_t)MAX(V, 1) * sizeof(float));
    b = (int)MIN(rows, (size_t)2048);
    b = MAX(b, 16);
  }
  return MAX(1, MIN(b, d_ff));
}

/* ------------------------------------------------------------------------------------------- */
/* The blocked decoder: pack `nb` neuron vectors (times the final gain) into A[nb, d], then      */
/* C[nb, V] = A · W_U^T with one SGEMM.                                                          */
/* ------------------------------------------------------------------------------------------- */

typedef struct {
  const LmwbModel *m;
  LmwbNeuronWhich which;
  const float *gain; /* NULL: no norm */
  int block, d, V, d_ff;
  float *A, *C;
  const LmwbBackend *be;
} Dec;

static gboolean check_layers(const LmwbModel *m, const int *layers, int n_layers, GError **error) {
  if (n_layers < 0 || (n_layers > 0 && !layers)) {
    lmwb_input_error(error, "layers: %d layers given without a list", n_layers);
    return FALSE;
  }
  for (int i = 0; i < n_layers; i++)
    if (layers[i] < 0 || layers[i] >= m->cfg.n_layer) {
      lmwb_input_error(error, "layer %d is not in 0..%d", layers[i], m->cfg.n_layer - 1);
      return FALSE;
    }
  return TRUE;
}

static gboolean dec_init(Dec *D, const LmwbModel *m, LmwbNeuronWhich which, bool norm, int block, GError **error) {
  memset(D, 0, sizeof *D);
  if (!m || !m->w.head || !m->w.layers) {
    lmwb_input_error(error, "neuron decode: the model has no weights");
    return FALSE;
  }
  if (!lmwb_neuron_which_check(m, which, error)) return FALSE;
  D->m = m;
  D->which = which;
  D->gain = norm ? m->w.lnf_w : NULL;
  D->d = m->cfg.d_model;
  D->V = m->cfg.vocab_size;
  D->d_ff = m->cfg.d_ff;
  D->block = lmwb_neurons_block_size(m, block);
  /* The weights are host memory; a device backend's sgemm would need device pointers, so the
   * decode always multiplies on the CPU backend unless the model's backend is the CPU one. */
  D->be = lmwb_backend_cpu(); /* host math on the host weights */
  D->A = g_try_malloc((size_t)D->block * D->d * sizeof(float));
  D->C = g_try_malloc((size_t)D->block * D->V * sizeof(float));
  if (!D->A || !D->C) {
    g_free(D->A);
    g_free(D->C);
    D->A = D->C = NULL;
    lmwb_input_error(error, "neuron decode: out of memory for a block of %d neurons x %d tokens (use a smaller block)",
                     D->block, D->V);
    return FALSE;
  }
  return TRUE;
}

static void dec_clear(Dec *D) {
  g_free(D->A);
  g_free(D->C);
  D->A = D->C = NULL;
}

/* Pack neuron n's vector (times the gain) into dst[d]. */
static void pack_one(const Dec *D, int layer, int n, float *dst) {
  const LmwbLayerWeights *lw = &D->m->w.layers[layer];
  const float *g = D->gain;
  int d = D->d;
  if (D->which == LMWB_NEURON_OUT) {
    const float *w = lw->w_down; /* [d_model, d_ff]: column n */
    for (int j = 0; j < d; j++) dst[j] = w[(size_t)j * D->d_ff + n] * (g ? g[j] : 1.0f);
  } else {
    const float *w = (D->which == LMWB_NEURON_IN ? lw->w_up : lw->w_gate) + (size_t)n * d;
    for (int j = 0; j < d; j++) dst[j] = w[j] * (g ? g[j] : 1.0f);
  }
}

static void dec_block(Dec *D, int layer, int n0, int nb) {
  int d = D->d;
  if (D->which == LMWB_NEURON_OUT) {
    /* Column block of w_down: read rows of w_down contiguously, write strided. */
    const float *w = D->m->w.layers[layer].w_down;
    for (int j = 0; j < d; j++) {
      const float *src = w + (size_t)j * D->d_ff + n0;
      float gj = D->gain ? D->gain[j] : 1.0f;
      for (int i = 0; i < nb; i++) D->A[(size_t)i * d + j] = src[i] * gj;
    }
  } else {
#pragma omp parallel for schedule(static) if (nb >= 64)
    for (int i = 0; i < nb; i++) pack_one(D, layer, n0 + i, D->A + (size_t)i * d);
  }
  D->be->sgemm(false, true, nb, D->V, d, 1.0f, D->A, d, D->m->w.head, d, 0.0f, D->C, D->V);
}

/* ------------------------------------------------------------------------------------------- */
/* Row kernels                                                                                   */
/* ------------------------------------------------------------------------------------------- */

/* exp(x) for x <= 0 (arguments are logit - row max), written so the compiler vectorises it:
 * 2^(x log2 e) = 2^n * 2^f with f in [-0.5, 0.5], degree-6 polynomial (rel. error ~2e-7). */
static inline float fast_exp_neg(float x) {
  /* Clamped to [-87, 0] with NaN mapped to -87, so that the exponent below is always in range
   * (a NaN logit must not become an out-of-range integer shift; the caller reports it). */
  x = x >= -87.0f ? x : -87.0f;
  x = x <= 0.0f ? x : 0.0f;
  float t = x * 1.44269504088896341f;
  float n = nearbyintf(t);
  float f = t - n;
  float p = 1.5403530393381610e-4f;
  p = p * f + 1.3333558146428443e-3f;
  p = p * f + 9.6181291076284772e-3f;
  p = p * f + 5.5504108664821580e-2f;
  p = p * f + 2.4022650695910071e-1f;
  p = p * f + 6.9314718055994531e-1f;
  p = p * f + 1.0f;
  uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
  float s;
  memcpy(&s, &bits, sizeof s);
  return p * s;
}

/* log(sum_i exp(x_i - mx)) + mx. */
static float row_lse(const float *x, int V, float mx) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < V; i++) s += fast_exp_neg(x[i] - mx);
  return mx + logf(s);
}

/* Total blocks over the chosen layers, for progress. */
static int count_blocks(int n_layers, int d_ff, int block) { return n_layers * ((d_ff + block - 1) / block); }

static void layers_or_all(const LmwbModel *m, const LmwbNeuronDecodeOptions *o, int **own, const int **layers, int *n) {
  if (o->layers) {
    *own = NULL;
    *layers = o->layers;
    *n = o->n_layers;
  } else {
    *own = g_new(int, m->cfg.n_layer);
    for (int i = 0; i < m->cfg.n_layer; i++) (*own)[i] = i;
    *layers = *own;
    *n = m->cfg.n_layer;
  }
}

/* ------------------------------------------------------------------------------------------- */
/* Decode                                                                                        */
/* ------------------------------------------------------------------------------------------- */

void lmwb_neuron_decode_free(LmwbNeuronDecode *d) {
  if (!d) return;
  g_free(d->layer);
  g_free(d->index);
  g_free(d->ids);
  g_free(d->logits);
  g_free(d->probs);
  g_free(d->lse);
  g_free(d);
}

static gboolean check_top_k(const LmwbModel *m, int k, GError **error) {
  if (k < 1 || k > LMWB_NEURONS_MAX_TOP_K || k > m->cfg.vocab_size) {
    lmwb_input_error(error, "top_k %d: expected 1..%d", k, MIN(LMWB_NEURONS_MAX_TOP_K, m->cfg.vocab_size));
    return FALSE;
  }
  return TRUE;
}

LmwbNeuronDecode *lmwb_neurons_decode(const LmwbModel *m, const LmwbNeuronDecodeOptions *opt, LmwbReporter *rep,
                                      GError **error) {
  LmwbNeuronDecodeOptions o;
  if (opt) o = *opt;
  else lmwb_neuron_decode_options_init(&o);
  if (o.top_k == 0) o.top_k = LMWB_NEURONS_DEFAULT_TOP_K;
  if (!m || !check_top_k(m, o.top_k, error) || !check_layers(m, o.layers, o.n_layers, error)) return NULL;
  if (o.block < 0) {
    lmwb_input_error(error, "block size %d must be positive", o.block);
    return NULL;
  }
  Dec D;
  if (!dec_init(&D, m, o.which, !o.no_norm, o.block, error)) return NULL;
  int *own;
  const int *layers;
  int nl;
  layers_or_all(m, &o, &own, &layers, &nl);
  int k = o.top_k, d_ff = m->cfg.d_ff, V = D.V;
  size_t rows = (size_t)nl * d_ff;
  LmwbNeuronDecode *r = g_new0(LmwbNeuronDecode, 1);
  r->which = o.which;
  r->norm = !o.no_norm;
  r->top_k = k;
  r->n_rows = (int)rows;
  r->layer = g_new(int, rows);
  r->index = g_new(int, rows);
  r->ids = g_new(int32_t, rows * k);
  r->logits = g_new(float, rows * k);
  r->probs = g_new(float, rows * k);
  r->lse = g_new(float, rows);
  int total = count_blocks(nl, d_ff, D.block), done = 0;
  gboolean ok = TRUE;
  for (int li = 0; li < nl && ok; li++) {
    int L = layers[li];
    for (int n0 = 0; n0 < d_ff; n0 += D.block) {
      if (lmwb_reporter_cancelled(rep, error)) {
        ok = FALSE;
        break;
      }
      int nb = MIN(D.block, d_ff - n0);
      dec_block(&D, L, n0, nb);
      size_t base = (size_t)li * d_ff + n0;
#pragma omp parallel for schedule(dynamic, 4)
      for (int i = 0; i < nb; i++) {
        const float *x = D.C + (size_t)i * V;
        size_t row = base + i;
        float *lg = r->logits + row * k;
        int32_t *id = r->ids + row * k;
        float mx = lmwb_top_k(x, V, k, id, lg);
        float lse = row_lse(x, V, mx);
        r->lse[row] = lse;
        for (int j = 0; j < k; j++) r->probs[row * k + j] = expf(lg[j] - lse);
        r->layer[row] = L;
        r->index[row] = n0 + i;
      }
      done++;
      lmwb_report_progress(rep, (double)done / total, "decoding neurons");
    }
  }
  dec_clear(&D);
  g_free(own);
  if (!ok) {
    lmwb_neuron_decode_free(r);
    return NULL;
  }
  return r;
}

static gboolean check_neuron(const LmwbModel *m, int layer, int neuron, GError **error) {
  if (layer < 0 || layer >= m->cfg.n_layer) {
    lmwb_input_error(error, "layer %d is not in 0..%d", layer, m->cfg.n_layer - 1);
    return FALSE;
  }
  if (neuron < 0 || neuron >= m->cfg.d_ff) {
    lmwb_input_error(error, "neuron %d is not in 0..%d (layer %d has %d neurons)", neuron, m->cfg.d_ff - 1, layer, m->cfg.d_ff);
    return FALSE;
  }
  return TRUE;
}

gboolean lmwb_neurons_decode_row(const LmwbModel *m, LmwbNeuronWhich which, int layer, int neuron, bool norm, float *out,
                                 GError **error) {
  if (!m || !out) {
    lmwb_input_error(error, "neuron decode: no model or output");
    return FALSE;
  }
  if (!check_neuron(m, layer, neuron, error) || !lmwb_neuron_which_check(m, which, error)) return FALSE;
  Dec D = {.m = m, .which = which, .gain = norm ? m->w.lnf_w : NULL, .d = m->cfg.d_model, .V = m->cfg.vocab_size,
           .d_ff = m->cfg.d_ff};
  const LmwbBackend *be = lmwb_backend_cpu();
  float *v = g_new(float, D.d);
  pack_one(&D, layer, neuron, v);
  /* out[V] = W_U[V,d] · v: a matrix-vector product as an SGEMM with N = 1. */
  be->sgemm(false, false, D.V, 1, D.d, 1.0f, m->w.head, D.d, v, 1, 0.0f, out, 1);
  g_free(v);
  return TRUE;
}

/* top-k, probabilities and log-sum-exp of a full decoded row (freed here). */
static gboolean top_of_row(float *row, int V, int top_k, int32_t *ids, float *logits, float *probs, float *lse) {
  float *lg = g_new(float, top_k);
  float mx = lmwb_top_k(row, V, top_k, ids, lg);
  float z = row_lse(row, V, mx);
  for (int j = 0; j < top_k; j++) {
    probs[j] = expf(lg[j] - z);
    if (logits) logits[j] = lg[j];
  }
  if (lse) *lse = z;
  g_free(lg);
  g_free(row);
  return TRUE;
}

static float *decode_alloc(const LmwbModel *m, int top_k, const void *ids, const void *probs, GError **error) {
  if (!m || !ids || !probs) {
    lmwb_input_error(error, "decode: no model or output arrays");
    return NULL;
  }
  if (!m->w.head) {
    lmwb_input_error(error, "decode: the model has no weights");
    return NULL;
  }
  if (top_k < 1 || top_k > m->cfg.vocab_size) {
    lmwb_input_error(error, "top-k %d is not in 1..%d", top_k, m->cfg.vocab_size);
    return NULL;
  }
  float *row = g_try_new(float, m->cfg.vocab_size);
  if (!row) lmwb_input_error(error, "decode: out of memory for a row of %d tokens", m->cfg.vocab_size);
  return row;
}

gboolean lmwb_neurons_decode_one(const LmwbModel *m, LmwbNeuronWhich which, int layer, int neuron, bool norm, int top_k,
                                 int32_t *ids, float *logits, float *probs, float *lse, GError **error) {
  float *row = decode_alloc(m, top_k, ids, probs, error);
  if (!row) return FALSE;
  if (!lmwb_neurons_decode_row(m, which, layer, neuron, norm, row, error)) {
    g_free(row);
    return FALSE;
  }
  return top_of_row(row, m->cfg.vocab_size, top_k, ids, logits, probs, lse);
}

gboolean lmwb_neurons_decode_vector(const LmwbModel *m, const float *v, bool norm, int top_k, int32_t *ids,
                                    float *logits, float *probs, float *lse, GError **error) {
  float *row = decode_alloc(m, top_k, ids, probs, error);
  if (!row) return FALSE;
  int d = m->cfg.d_model;
  float *x = g_new(float, d);
  for (int j = 0; j < d; j++) x[j] = v[j] * (norm && m->w.lnf_w ? m->w.lnf_w[j] : 1.0f);
  lmwb_backend_cpu()->sgemm(false, false, m->cfg.vocab_size, 1, d, 1.0f, m->w.head, d, x, 1, 0.0f, row, 1);
  g_free(x);
  return top_of_row(row, m->cfg.vocab_size, top_k, ids, logits, probs, lse);
}

/* ------------------------------------------------------------------------------------------- */
/* Tokens                                                                                        */
/* ------------------------------------------------------------------------------------------- */

gboolean lmwb_neurons_token_lookup(const LmwbModel *m, const char *text, int32_t *id, GError **error) {
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s has no tokenizer, so token \"%s\" cannot be looked up", m->dir ? m->dir : "the model", text);
    return FALSE;
  }
  if (!text || !*text) {
    lmwb_input_error(error, "token: empty text");
    return FALSE;
  }
  int32_t raw = lmwb_tokenizer_token_id(m->tokenizer, text);
  if (raw >= 0 && raw < m->cfg.vocab_size) {
    *id = raw;
    return TRUE;
  }
  size_t n = 0;
  GError *e = NULL;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, &n, &e);
  if (!ids) {
    g_propagate_error(error, e);
    return FALSE;
  }
  if (n == 1 && ids[0] >= 0 && ids[0] < m->cfg.vocab_size) {
    *id = ids[0];
    return TRUE;
  }
  /* Not one token: say how it splits and whether a leading space would make it one. */
  GString *split = g_string_new(NULL);
  for (size_t i = 0; i < n && i < 8; i++) {
    g_autofree char *t = lmwb_tokenizer_token_text(m->tokenizer, ids[i]);
    g_string_append_printf(split, "%s\"%s\"", i ? " + " : "", t ? t : "?");
  }
  g_autofree char *spaced = g_strconcat(" ", text, NULL);
  size_t ns = 0;
  g_autofree int32_t *sids = text[0] != ' ' ? lmwb_tokenizer_encode(m->tokenizer, spaced, strlen(spaced), FALSE, &ns, NULL) : NULL;
  if (sids && ns == 1)
    lmwb_input_error(error, "token \"%s\" is not in the vocabulary (it encodes as %s); the word inside a sentence is "
                     "usually the token with a leading space: write \" %s\"", text, split->str, text);
  else
    lmwb_input_error(error, "token \"%s\" is not in the vocabulary as one token (it encodes as %s); give a single "
                     "token, e.g. with a leading space (\" dog\"), or the raw vocabulary string (\"Ġdog\"), or use --regex",
                     text, split->str);
  g_string_free(split, TRUE);
  return FALSE;
}

int32_t *lmwb_neurons_tokens_matching(const LmwbModel *m, const char *regex, int *n, GError **error) {
  *n = 0;
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s has no tokenizer, so a regex cannot match token texts", m->dir ? m->dir : "the model");
    return NULL;
  }
  GError *e = NULL;
  GRegex *re = g_regex_new(regex ? regex : "", G_REGEX_OPTIMIZE, 0, &e);
  if (!re) {
    lmwb_input_error(error, "regex \"%s\": %s", regex ? regex : "", e->message);
    g_error_free(e);
    return NULL;
  }
  GArray *out = g_array_new(FALSE, FALSE, sizeof(int32_t));
  for (int32_t i = 0; i < m->cfg.vocab_size; i++) {
    g_autofree char *t = lmwb_tokenizer_token_text(m->tokenizer, i);
    if (t && g_regex_match(re, t, 0, NULL)) g_array_append_val(out, i);
  }
  g_regex_unref(re);
  if (out->len == 0) {
    lmwb_input_error(error, "regex \"%s\" matches no token text of the vocabulary", regex);
    g_array_free(out, TRUE);
    return NULL;
  }
  *n = (int)out->len;
  return (int32_t *)g_array_free(out, FALSE);
}

/* ------------------------------------------------------------------------------------------- */
/* Search                                                                                        */
/* ------------------------------------------------------------------------------------------- */

static int hit_cmp(const void *pa, const void *pb) {
  const LmwbNeuronHit *a = pa, *b = pb;
  if (a->rank != b->rank) return a->rank < b->rank ? -1 : 1;
  if (a->prob != b->prob) return a->prob > b->prob ? -1 : 1;
  if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
  return (a->index > b->index) - (a->index < b->index);
}

LmwbNeuronHit *lmwb_neurons_search(const LmwbModel *m, const LmwbNeuronSearchOptions *opt, int *n_hits, LmwbReporter *rep,
                                   GError **error) {
  *n_hits = 0;
  if (!m || !opt || opt->n_tokens <= 0 || !opt->tokens) {
    lmwb_input_error(error, "neuron search: no target tokens");
    return NULL;
  }
  for (int i = 0; i < opt->n_tokens; i++)
    if (opt->tokens[i] < 0 || opt->tokens[i] >= m->cfg.vocab_size) {
      lmwb_input_error(error, "neuron search: token id %d is not in 0..%d", opt->tokens[i], m->cfg.vocab_size - 1);
      return NULL;
    }
  if (opt->max_rank < 0 || opt->limit < 0) {
    lmwb_input_error(error, "neuron search: max_rank and limit must not be negative");
    return NULL;
  }
  if (!check_layers(m, opt->decode.layers, opt->decode.n_layers, error)) return NULL;
  Dec D;
  if (!dec_init(&D, m, opt->decode.which, !opt->decode.no_norm, opt->decode.block, error)) return NULL;
  int *own;
  const int *layers;
  int nl;
  layers_or_all(m, &opt->decode, &own, &layers, &nl);
  int d_ff = m->cfg.d_ff, V = D.V, nt = opt->n_tokens;
  LmwbNeuronHit *all = g_new(LmwbNeuronHit, (size_t)nl * d_ff);
  int total = count_blocks(nl, d_ff, D.block), done = 0;
  gboolean ok = TRUE;
  for (int li = 0; li < nl && ok; li++) {
    int L = layers[li];
    for (int n0 = 0; n0 < d_ff; n0 += D.block) {
      if (lmwb_reporter_cancelled(rep, error)) {
        ok = FALSE;
        break;
      }
      int nb = MIN(D.block, d_ff - n0);
      dec_block(&D, L, n0, nb);
#pragma omp parallel for schedule(dynamic, 4)
      for (int i = 0; i < nb; i++) {
        const float *x = D.C + (size_t)i * V;
        int32_t best = opt->tokens[0];
        for (int t = 1; t < nt; t++) {
          int32_t c = opt->tokens[t];
          if (x[c] > x[best] || (x[c] == x[best] && c < best)) best = c; /* ties: the lower id */
        }
        float bv = x[best], mx = -INFINITY;
        int above = 0;
        for (int j = 0; j < V; j++) {
          mx = fmaxf(mx, x[j]);
          above += x[j] > bv;
        }
        float lse = row_lse(x, V, mx);
        LmwbNeuronHit *h = &all[(size_t)li * d_ff + n0 + i];
        h->layer = L;
        h->index = n0 + i;
        h->rank = 1 + above;
        h->token = best;
        h->logit = bv;
        h->prob = expf(bv - lse);
      }
      done++;
      lmwb_report_progress(rep, (double)done / total, "searching neurons");
    }
  }
  dec_clear(&D);
  g_free(own);
  if (!ok) {
    g_free(all);
    return NULL;
  }
  size_t kept = 0, rows = (size_t)nl * d_ff;
  for (size_t i = 0; i < rows; i++)
    if (!opt->max_rank || all[i].rank <= opt->max_rank) all[kept++] = all[i];
  qsort(all, kept, sizeof *all, hit_cmp);
  if (opt->limit && kept > (size_t)opt->limit) kept = opt->limit;
  *n_hits = (int)kept;
  return g_renew(LmwbNeuronHit, all, MAX(kept, 1));
}

/* ------------------------------------------------------------------------------------------- */
/* Compare                                                                                       */
/* ------------------------------------------------------------------------------------------- */

void lmwb_neuron_compare_free(LmwbNeuronCompare *c) {
  if (!c) return;
  g_free(c->layers);
  g_free(c->same_top1);
  g_free(c->changed);
  g_free(c);
}

static int change_cmp(const void *pa, const void *pb) {
  const LmwbNeuronChange *a = pa, *b = pb;
  if (a->cosine != b->cosine) return a->cosine < b->cosine ? -1 : 1;
  if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
  return (a->index > b->index) - (a->index < b->index);
}

static int i32_cmp(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

LmwbNeuronCompare *lmwb_neurons_compare(const LmwbModel *a, const LmwbModel *b, const LmwbNeuronDecodeOptions *opt,
                                        int n_changed, LmwbReporter *rep, GError **error) {
  LmwbNeuronDecodeOptions o;
  if (opt) o = *opt;
  else lmwb_neuron_decode_options_init(&o);
  if (o.top_k == 0) o.top_k = LMWB_NEURONS_DEFAULT_TOP_K;
  if (n_changed == 0) n_changed = 20;
  if (!a || !b) {
    lmwb_input_error(error, "compare: two models are needed");
    return NULL;
  }
  const LmwbConfig *ca = &a->cfg, *cb = &b->cfg;
  if (ca->n_layer != cb->n_layer || ca->d_model != cb->d_model || ca->d_ff != cb->d_ff || ca->vocab_size != cb->vocab_size ||
      ca->gated_mlp != cb->gated_mlp) {
    lmwb_input_error(error, "compare: %s (%d layers, d_model %d, d_ff %d, vocab %d) and %s (%d layers, d_model %d, d_ff %d, "
                     "vocab %d) do not have the same shapes",
                     a->dir ? a->dir : "model A", ca->n_layer, ca->d_model, ca->d_ff, ca->vocab_size,
                     b->dir ? b->dir : "model B", cb->n_layer, cb->d_model, cb->d_ff, cb->vocab_size);
    return NULL;
  }
  if (n_changed < 0 || !check_top_k(a, o.top_k, error) || !check_layers(a, o.layers, o.n_layers, error)) {
    if (n_changed < 0) lmwb_input_error(error, "compare: --changed must be positive");
    return NULL;
  }
  Dec DA, DB;
  if (!dec_init(&DA, a, o.which, !o.no_norm, o.block, error)) return NULL;
  if (!dec_init(&DB, b, o.which, !o.no_norm, DA.block, error)) {
    dec_clear(&DA);
    return NULL;
  }
  int *own;
  const int *layers;
  int nl;
  layers_or_all(a, &o, &own, &layers, &nl);
  int d_ff = ca->d_ff, V = ca->vocab_size, k = o.top_k;
  size_t rows = (size_t)nl * d_ff;
  LmwbNeuronChange *all = g_new(LmwbNeuronChange, rows);
  LmwbNeuronCompare *r = g_new0(LmwbNeuronCompare, 1);
  r->which = o.which;
  r->n_layers = nl;
  r->layers = g_memdup2(layers, sizeof(int) * nl);
  r->same_top1 = g_new0(double, nl);
  int total = count_blocks(nl, d_ff, DA.block), done = 0;
  gboolean ok = TRUE;
  for (int li = 0; li < nl && ok; li++) {
    int L = layers[li];
    for (int n0 = 0; n0 < d_ff; n0 += DA.block) {
      if (lmwb_reporter_cancelled(rep, error)) {
        ok = FALSE;
        break;
      }
      int nb = MIN(DA.block, d_ff - n0);
      dec_block(&DA, L, n0, nb);
      dec_block(&DB, L, n0, nb);
#pragma omp parallel
      {
        int32_t *ia = g_new(int32_t, k), *ib = g_new(int32_t, k);
        float *va = g_new(float, k), *vb = g_new(float, k);
#pragma omp for schedule(dynamic, 4)
        for (int i = 0; i < nb; i++) {
          const float *x = DA.C + (size_t)i * V, *y = DB.C + (size_t)i * V;
          lmwb_top_k(x, V, k, ia, va);
          lmwb_top_k(y, V, k, ib, vb);
          double sx = 0, sy = 0, sxy = 0, sxx = 0, syy = 0;
          for (int j = 0; j < V; j++) {
            double p = x[j], q = y[j];
            sx += p;
            sy += q;
            sxy += p * q;
            sxx += p * p;
            syy += q * q;
          }
          double cxy = sxy - sx * sy / V, cxx = sxx - sx * sx / V, cyy = syy - sy * sy / V;
          double cos = (cxx > 0 && cyy > 0) ? cxy / sqrt(cxx * cyy) : (cxx == 0 && cyy == 0 ? 1.0 : 0.0);
          int32_t tb = ib[0]; /* B's top-1 before the ids are sorted for the overlap */
          qsort(ib, k, sizeof(int32_t), i32_cmp);
          int common = 0;
          for (int j = 0; j < k; j++)
            if (bsearch(&ia[j], ib, k, sizeof(int32_t), i32_cmp)) common++;
          LmwbNeuronChange *c = &all[(size_t)li * d_ff + n0 + i];
          c->layer = L;
          c->index = n0 + i;
          c->cosine = (float)cos;
          c->overlap = (float)common / k;
          c->top_a = ia[0];
          c->top_b = tb;
        }
        g_free(ia);
        g_free(ib);
        g_free(va);
        g_free(vb);
      }
      done++;
      lmwb_report_progress(rep, (double)done / total, "comparing neurons");
    }
  }
  dec_clear(&DA);
  dec_clear(&DB);
  g_free(own);
  if (!ok) {
    g_free(all);
    lmwb_neuron_compare_free(r);
    return NULL;
  }
  size_t same_all = 0;
  double cos_sum = 0;
  for (int li = 0; li < nl; li++) {
    size_t same = 0;
    for (int n = 0; n < d_ff; n++) {
      const LmwbNeuronChange *c = &all[(size_t)li * d_ff + n];
      same += c->top_a == c->top_b;
      cos_sum += c->cosine;
    }
    r->same_top1[li] = (double)same / d_ff;
    same_all += same;
  }
  r->overall = rows ? (double)same_all / rows : 0;
  r->mean_cosine = rows ? cos_sum / rows : 0;
  qsort(all, rows, sizeof *all, change_cmp);
  r->n_changed = (int)MIN((size_t)n_changed, rows);
  r->changed = g_memdup2(all, sizeof *all * MAX(r->n_changed, 1));
  g_free(all);
  return r;
}
