/* Tests of analysis/neurons.h on small random models (no files written):
 * - the blocked GEMM + streaming top-k decode equals a brute-force double-precision decode
 *   computed here straight from the weight arrays, for in/out/gate, with and without the final
 *   gain, for block sizes 1, 7, 64 (not dividing d_ff = 200), d_ff and the default;
 * - decode_one equals the full decode's row; cancel stops within one block;
 * - search ranks equal brute-force ranks; compare of a model with itself is 100% and a changed
 *   neuron tops the most-changed list; the sweep equals hand-made clamped forwards;
 * - bad input is an input error. */
#include "analysis/neurons.h"
#include "app/core/errors.h"
#include "app/core/rows.h"
#include "app/engine/generate.h"
#include "app/engine/runner.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static LmwbModel *random_model(const char *fixture, int d_ff, guint64 seed) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *path = g_build_filename(root ? root : ".", "tests", "fixtures", "models", fixture, "config.json", NULL);
  LmwbConfig cfg;
  GError *err = NULL;
  g_assert_true(lmwb_config_load(path, &cfg, &err));
  cfg.d_ff = d_ff;
  LmwbModel *m = lmwb_model_new_random(&cfg, seed, &err);
  g_assert_no_error(err);
  /* Random init leaves the final gain at 1; make it matter. */
  GRand *r = g_rand_new_with_seed((guint32)seed);
  for (int j = 0; j < cfg.d_model; j++) m->w.lnf_w[j] = (float)g_rand_double_range(r, 0.5, 1.5);
  g_rand_free(r);
  return m;
}

/* Brute force: the full logit row in double, straight from the arrays. */
static void brute_row(const LmwbModel *m, LmwbNeuronWhich w, int L, int n, bool norm, double *out) {
  int d = m->cfg.d_model, V = m->cfg.vocab_size, F = m->cfg.d_ff;
  const LmwbLayerWeights *lw = &m->w.layers[L];
  for (int v = 0; v < V; v++) {
    double s = 0;
    for (int j = 0; j < d; j++) {
      double x = w == LMWB_NEURON_OUT ? lw->w_down[(size_t)j * F + n] : (w == LMWB_NEURON_IN ? lw->w_up : lw->w_gate)[(size_t)n * d + j];
      s += x * (norm ? m->w.lnf_w[j] : 1.0) * m->w.head[(size_t)v * d + j];
    }
    out[v] = s;
  }
}

static const double *sort_row;
static int cmp_desc(const void *a, const void *b) {
  int i = *(const int *)a, j = *(const int *)b;
  if (sort_row[i] != sort_row[j]) return sort_row[i] > sort_row[j] ? -1 : 1;
  return i - j;
}

static void check_decode(LmwbModel *m, LmwbNeuronWhich which, bool norm, int block) {
  int V = m->cfg.vocab_size, k = 8;
  int layers[] = {1, 0};
  LmwbNeuronDecodeOptions o;
  lmwb_neuron_decode_options_init(&o);
  o.which = which;
  o.no_norm = !norm;
  o.block = block;
  o.top_k = k;
  o.layers = layers;
  o.n_layers = 2;
  GError *err = NULL;
  LmwbNeuronDecode *d = lmwb_neurons_decode(m, &o, NULL, &err);
  g_assert_no_error(err);
  g_assert_nonnull(d);
  g_assert_cmpint(d->n_rows, ==, 2 * m->cfg.d_ff);
  double *row = g_new(double, V);
  int *order = g_new(int, V);
  for (int r = 0; r < d->n_rows; r++) {
    g_assert_cmpint(d->layer[r], ==, layers[r / m->cfg.d_ff]);
    g_assert_cmpint(d->index[r], ==, r % m->cfg.d_ff);
    brute_row(m, which, d->layer[r], d->index[r], norm, row);
    double mx = -INFINITY, s = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, row[v]);
    for (int v = 0; v < V; v++) s += exp(row[v] - mx);
    double lse = mx + log(s);
    for (int v = 0; v < V; v++) order[v] = v;
    sort_row = row;
    qsort(order, V, sizeof(int), cmp_desc);
    for (int j = 0; j < k; j++) {
      /* Same id, or a float32 near-tie (the j-th best logit agrees to 1e-7 absolute, while
       * logits of this random model are ~1e-2 and adjacent ones differ by ~1e-5). */
      int32_t got = d->ids[r * k + j];
      if (got != order[j]) g_assert_cmpfloat(fabs(row[got] - row[order[j]]), <, 1e-7);
      for (int i = 0; i < j; i++) g_assert_cmpint(d->ids[r * k + i], !=, got);
      g_assert_cmpfloat_with_epsilon(d->probs[r * k + j], exp(row[order[j]] - lse), 1e-6);
      g_assert_cmpfloat_with_epsilon(d->logits[r * k + j], row[order[j]], 1e-6);
    }
    g_assert_cmpfloat_with_epsilon(d->lse[r], lse, 1e-4);
  }
  g_free(row);
  g_free(order);
  lmwb_neuron_decode_free(d);
}

static void test_decode_blocks(void) {
  LmwbModel *m = random_model("llama_gqa", 200, 3);
  int blocks[] = {1, 7, 64, 200, 0};
  for (int w = 0; w < 3; w++)
    for (size_t b = 0; b < G_N_ELEMENTS(blocks); b++) {
      check_decode(m, (LmwbNeuronWhich)w, true, blocks[b]);
      if (b == 1) check_decode(m, (LmwbNeuronWhich)w, false, blocks[b]);
    }
  lmwb_model_unref(m);
  /* GPT-2 layout (no gate; in/out only). */
  m = random_model("gpt2", 200, 4);
  check_decode(m, LMWB_NEURON_IN, true, 64);
  check_decode(m, LMWB_NEURON_OUT, true, 7);
  lmwb_model_unref(m);
}

static void test_decode_one(void) {
  LmwbModel *m = random_model("llama_gqa", 200, 5);
  LmwbNeuronDecodeOptions o;
  lmwb_neuron_decode_options_init(&o);
  o.which = LMWB_NEURON_OUT;
  o.top_k = 5;
  GError *err = NULL;
  LmwbNeuronDecode *d = lmwb_neurons_decode(m, &o, NULL, &err);
  g_assert_no_error(err);
  int32_t ids[5];
  float probs[5], logits[5], lse;
  for (int r = 0; r < d->n_rows; r += 37) {
    g_assert_true(lmwb_neurons_decode_one(m, LMWB_NEURON_OUT, d->layer[r], d->index[r], true, 5, ids, logits, probs, &lse, &err));
    for (int j = 0; j < 5; j++) {
      g_assert_cmpint(ids[j], ==, d->ids[r * 5 + j]);
      g_assert_cmpfloat_with_epsilon(probs[j], d->probs[r * 5 + j], 1e-6);
    }
    /* The same neuron's output column decoded as a plain vector gives the same tokens. */
    int dm = m->cfg.d_model, dff = m->cfg.d_ff;
    float *v = g_new(float, dm);
    for (int k = 0; k < dm; k++) v[k] = m->w.layers[d->layer[r]].w_down[(size_t)k * dff + d->index[r]];
    int32_t vids[5];
    float vprobs[5], vlse;
    g_assert_true(lmwb_neurons_decode_vector(m, v, true, 5, vids, NULL, vprobs, &vlse, &err));
    for (int j = 0; j < 5; j++) {
      g_assert_cmpint(vids[j], ==, ids[j]);
      g_assert_cmpfloat_with_epsilon(vprobs[j], probs[j], 1e-6);
    }
    g_assert_cmpfloat_with_epsilon(vlse, lse, 1e-4);
    g_free(v);
  }
  lmwb_neuron_decode_free(d);
  lmwb_model_unref(m);
}

typedef struct {
  LmwbReporter r;
  int progress_calls;
  int cancel_after;
} CountRep;

static void count_progress(LmwbReporter *r, double f, const char *stage) {
  CountRep *c = (CountRep *)r;
  if (++c->progress_calls == c->cancel_after) lmwb_reporter_cancel(r);
}

static void test_cancel(void) {
  LmwbModel *m = random_model("llama_gqa", 200, 6);
  LmwbNeuronDecodeOptions o;
  lmwb_neuron_decode_options_init(&o);
  o.block = 16; /* 13 blocks per layer, 26 in all */
  for (int after = 1; after <= 3; after++) {
    CountRep c = {.r = {.progress = count_progress}, .cancel_after = after};
    GError *err = NULL;
    LmwbNeuronDecode *d = lmwb_neurons_decode(m, &o, &c.r, &err);
    g_assert_null(d);
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
    g_clear_error(&err);
    /* Cancel requested during block `after`: no further block ran. */
    g_assert_cmpint(c.progress_calls, ==, after);
  }
  lmwb_model_unref(m);
}

static void test_search(void) {
  LmwbModel *m = random_model("gpt2", 200, 7);
  int V = m->cfg.vocab_size;
  int32_t toks[] = {33, 101};
  LmwbNeuronSearchOptions so = {.tokens = toks, .n_tokens = 2};
  lmwb_neuron_decode_options_init(&so.decode);
  so.decode.block = 64;
  int n = 0;
  GError *err = NULL;
  LmwbNeuronHit *h = lmwb_neurons_search(m, &so, &n, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(n, ==, 2 * 200);
  double *row = g_new(double, V);
  for (int i = 0; i < n; i++) {
    if (i) g_assert_cmpint(h[i - 1].rank, <=, h[i].rank);
    if (i % 13) continue;
    brute_row(m, LMWB_NEURON_IN, h[i].layer, h[i].index, true, row);
    int32_t best = row[33] >= row[101] ? 33 : 101;
    int rank = 1;
    for (int v = 0; v < V; v++) rank += row[v] > row[best];
    g_assert_cmpint(h[i].token, ==, best);
    g_assert_cmpint(h[i].rank, ==, rank);
  }
  g_free(h);
  so.max_rank = 3;
  so.limit = 5;
  h = lmwb_neurons_search(m, &so, &n, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(n, <=, 5);
  for (int i = 0; i < n; i++) g_assert_cmpint(h[i].rank, <=, 3);
  g_free(h);
  g_free(row);
  lmwb_model_unref(m);
}

static void test_compare(void) {
  LmwbModel *a = random_model("llama_gqa", 200, 8), *b = random_model("llama_gqa", 200, 8);
  GError *err = NULL;
  LmwbNeuronCompare *c = lmwb_neurons_compare(a, b, NULL, 5, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpfloat(c->overall, ==, 1.0);
  g_assert_cmpfloat_with_epsilon(c->mean_cosine, 1.0, 1e-5);
  lmwb_neuron_compare_free(c);
  /* Replace layer 1 neuron 42's input vector with the negation of another's: it must head the list. */
  int d = a->cfg.d_model;
  for (int j = 0; j < d; j++) b->w.layers[1].w_up[42 * d + j] = -a->w.layers[1].w_up[7 * d + j];
  c = lmwb_neurons_compare(a, b, NULL, 5, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(c->changed[0].layer, ==, 1);
  g_assert_cmpint(c->changed[0].index, ==, 42);
  g_assert_cmpfloat(c->same_top1[0], ==, 1.0);
  g_assert_cmpfloat(c->same_top1[1], >=, 199.0 / 200);
  lmwb_neuron_compare_free(c);
  lmwb_model_unref(b);
  /* Different shapes -> input error. */
  b = random_model("llama_gqa", 100, 8);
  g_assert_null(lmwb_neurons_compare(a, b, NULL, 5, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  lmwb_model_unref(b);
  lmwb_model_unref(a);
}

typedef struct {
  LmwbReporter r;
  int n;
  double x[8], y[8];
} MetricRep;

static void on_metric(LmwbReporter *r, const char *series, double x, double y) {
  MetricRep *m = (MetricRep *)r;
  if (m->n < 8) {
    m->x[m->n] = x;
    m->y[m->n] = y;
  }
  m->n++;
}

static void test_sweep(void) {
  LmwbModel *m = random_model("gpt2", 200, 9);
  int32_t prompt[] = {5, 9, 77, 120};
  LmwbNeuronSweepOptions o = {.layer = 1, .neuron = 17, .target = 66, .prompt = prompt, .n_prompt = 4,
                              .from = -4, .to = 8, .steps = 4};
  MetricRep rep = {.r = {.metric = on_metric}};
  GError *err = NULL;
  LmwbNeuronSweep *s = lmwb_neurons_sweep(m, &o, &rep.r, &err);
  g_assert_no_error(err);
  g_assert_cmpint(rep.n, ==, 4);
  LmwbRunner *r = lmwb_runner_new(m);
  int V = m->cfg.vocab_size;
  float *p = g_new(float, V);
  for (int i = 0; i < 4; i++) {
    g_assert_cmpfloat_with_epsilon(s->values[i], -4 + 4.0 * i, 1e-12);
    g_assert_cmpfloat(rep.x[i], ==, s->values[i]);
    lmwb_runner_clear_hooks(r);
    int idx = 17;
    LmwbHook h = {.site = {LMWB_SITE_MLP_POST, 1}, .op = LMWB_HOOK_SET, .indices = &idx, .n_indices = 1, .value = (float)s->values[i]};
    g_assert_cmpint(lmwb_runner_add_hook(r, &h, &err), >, 0);
    LmwbForwardOptions fo = {.last_logits_only = true};
    g_assert_true(lmwb_runner_forward(r, prompt, 1, 4, &fo, &err));
    lmwb_softmax_row(p, lmwb_runner_logits(r, NULL), V);
    g_assert_cmpfloat_with_epsilon(s->probs[i], p[66], 1e-7);
  }
  /* The clamp does something: the curve is not flat. */
  g_assert_cmpfloat(fabs(s->probs[3] - s->probs[0]), >, 1e-6);
  lmwb_neuron_sweep_free(s);
  /* Mean over a greedy continuation. */
  o.generate = 3;
  o.steps = 2;
  s = lmwb_neurons_sweep(m, &o, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(s->n_generated[1], ==, 3);
  g_assert_cmpfloat(s->probs[1], >, 0);
  lmwb_neuron_sweep_free(s);
  o.neuron = 200;
  g_assert_null(lmwb_neurons_sweep(m, &o, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_free(p);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

static void test_bad_input(void) {
  LmwbModel *m = random_model("gpt2", 64, 10);
  GError *err = NULL;
  LmwbNeuronDecodeOptions o;
  lmwb_neuron_decode_options_init(&o);
  o.which = LMWB_NEURON_GATE;
  g_assert_null(lmwb_neurons_decode(m, &o, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "gate"));
  g_clear_error(&err);
  int bad_layer = 2;
  lmwb_neuron_decode_options_init(&o);
  o.layers = &bad_layer;
  o.n_layers = 1;
  g_assert_null(lmwb_neurons_decode(m, &o, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  o.layers = NULL;
  o.n_layers = 0;
  o.top_k = -1;
  g_assert_null(lmwb_neurons_decode(m, &o, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  int32_t ids[3];
  float probs[3];
  g_assert_false(lmwb_neurons_decode_one(m, LMWB_NEURON_IN, 0, 64, true, 3, ids, NULL, probs, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  int *layers = NULL, n = 0;
  g_assert_true(lmwb_neurons_parse_layers(" 1, 0-1 ", 2, &layers, &n, &err));
  g_assert_cmpint(n, ==, 2);
  g_assert_cmpint(layers[0], ==, 0);
  g_free(layers);
  const char *bad[] = {"2", "-1", "1-0", "a", "0,,1", "0-", "1x"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_false(lmwb_neurons_parse_layers(bad[i], 2, &layers, &n, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    g_clear_error(&err);
  }
  lmwb_model_unref(m);
}

/* The clamp parser and the clamp hook: what it sets, where, and the fields its errors name. */
static void test_clamp(void) {
  LmwbModel *m = random_model("gpt2", 64, 11);
  GError *err = NULL;
  LmwbNeuronClamp c;
  const char *bad[] = {"1:5", "x:5=1", "1:9999=1", "1:5=abc", "1:5=1@", "1:5=1@999"};
  const char *field[] = {"expected LAYER:NEURON=VALUE", "layer", "neuron", "value", "position", "position"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_false(lmwb_neuron_clamp_parse(&m->cfg, bad[i], &c, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    if (!strstr(err->message, field[i]) || strstr(err->message, "--"))
      g_error("clamp \"%s\": \"%s\" should name the %s, not a flag", bad[i], err->message, field[i]);
    g_clear_error(&err);
  }
  g_assert_true(lmwb_neuron_clamp_parse(&m->cfg, "1:5=2.5@0,3", &c, &err));
  g_assert_cmpint(c.layer, ==, 1);
  g_assert_cmpint(c.neuron, ==, 5);
  g_assert_cmpfloat(c.value, ==, 2.5f);
  g_assert_cmpint(c.n_positions, ==, 2);
  /* The hook sets exactly that neuron at exactly those positions. */
  LmwbRunner *r = lmwb_runner_new(m);
  int32_t ids[5] = {1, 2, 3, 4, 5};
  g_assert_true(lmwb_runner_forward(r, ids, 1, 5, NULL, &err));
  int64_t shape[4];
  int F = m->cfg.d_ff;
  g_autofree float *before = g_memdup2(lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_MLP_POST, 1}, shape, NULL, &err),
                                       sizeof(float) * 5 * F);
  int id = lmwb_neuron_clamp_add(r, &c, &err);
  g_assert_cmpint(id, >, 0);
  g_assert_true(lmwb_runner_forward(r, ids, 1, 5, NULL, &err));
  const float *after = lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_MLP_POST, 1}, shape, NULL, &err);
  for (int t = 0; t < 5; t++)
    for (int n = 0; n < F; n++) {
      gboolean clamped = n == 5 && (t == 0 || t == 3);
      if (clamped) g_assert_cmpfloat(after[t * F + n], ==, 2.5f);
      else if (t == 0) g_assert_cmpfloat(after[t * F + n], ==, before[t * F + n]); /* nothing earlier changed */
    }
  g_assert_true(lmwb_runner_remove_hook(r, id));
  g_assert_true(lmwb_runner_forward(r, ids, 1, 5, NULL, &err));
  after = lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_MLP_POST, 1}, shape, NULL, &err);
  g_assert_cmpmem(after, sizeof(float) * 5 * F, before, sizeof(float) * 5 * F);
  c.at_pre = true;
  c.neuron = F; /* out of range when added directly */
  g_assert_cmpint(lmwb_neuron_clamp_add(r, &c, &err), ==, 0);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "neuron"));
  g_clear_error(&err);
  lmwb_neuron_clamp_clear(&c);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/neurons/decode-blocks", test_decode_blocks);
  g_test_add_func("/neurons/decode-one", test_decode_one);
  g_test_add_func("/neurons/cancel", test_cancel);
  g_test_add_func("/neurons/search", test_search);
  g_test_add_func("/neurons/compare", test_compare);
  g_test_add_func("/neurons/sweep", test_sweep);
  g_test_add_func("/neurons/clamp", test_clamp);
  g_test_add_func("/neurons/bad-input", test_bad_input);
  return g_test_run();
}
