/* Transcoders (circuits/transcoder.h): encode/decode against the formula written out by hand for
 * every activation (ReLU, JumpReLU, TopK, skip, an SAE's b_dec subtraction); both file formats
 * written and read back give the same outputs (and circuit-tracer's W_enc is stored transposed);
 * splicing replaces exactly the MLP output; evaluation's FVU against brute force and a zero
 * transcoder recovering nothing; bad files refused naming the file and tensor. */
#include "circuits/transcoder.h"
#include "app/core/errors.h"
#include "app/formats/safetensors.h"
#include "app/formats/tokenizer.h"
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static LmwbModel *load_fixture(const char *name) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", "tests/fixtures/models", name, NULL);
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  return m;
}

static guint32 rng = 1;
static float urand(void) {
  rng = rng * 1664525u + 1013904223u;
  return (rng >> 8) / 16777216.0f * 2 - 1;
}

static void fill(float *p, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) p[i] = scale * urand();
}

static LmwbTranscoder *random_tc(int d_in, int d_sae, int d_out, LmwbTcActivation act, int k, int layer) {
  GError *err = NULL;
  LmwbTranscoder *tc = lmwb_transcoder_new(d_in, d_sae, d_out, act, k, &err);
  g_assert_no_error(err);
  fill(tc->W_enc, (size_t)d_in * d_sae, 0.3f);
  fill(tc->W_dec, (size_t)d_sae * d_out, 0.3f);
  fill(tc->b_enc, d_sae, 0.2f);
  fill(tc->b_dec, d_out, 0.2f);
  if (tc->threshold)
    for (int j = 0; j < d_sae; j++) tc->threshold[j] = 0.1f + 0.2f * fabsf(urand());
  tc->in = (LmwbSite){LMWB_SITE_LN2, layer};
  tc->out = (LmwbSite){LMWB_SITE_MLP_OUT, layer};
  return tc;
}

/* The formulas, one row at a time, in double. */
static void brute(const LmwbTranscoder *tc, const float *x, float *out_f, float *out) {
  double *pre = g_new(double, tc->d_sae);
  for (int j = 0; j < tc->d_sae; j++) {
    double s = tc->b_enc[j];
    for (int i = 0; i < tc->d_in; i++)
      s += ((double)x[i] - (tc->apply_b_dec_to_input ? tc->b_dec[i] : 0)) * tc->W_enc[(size_t)i * tc->d_sae + j];
    pre[j] = s;
  }
  for (int j = 0; j < tc->d_sae; j++) {
    double v = pre[j];
    if (tc->act == LMWB_TC_RELU) v = v > 0 ? v : 0;
    else if (tc->act == LMWB_TC_JUMPRELU) v = v > tc->threshold[j] ? v : 0;
    else {
      int above = 0;
      for (int q = 0; q < tc->d_sae; q++) above += pre[q] > pre[j] || (pre[q] == pre[j] && q < j);
      v = above < tc->k && v > 0 ? v : 0;
    }
    out_f[j] = (float)v;
  }
  for (int o = 0; o < tc->d_out; o++) {
    double s = tc->b_dec[o];
    for (int j = 0; j < tc->d_sae; j++) s += (double)out_f[j] * tc->W_dec[(size_t)j * tc->d_out + o];
    if (tc->W_skip)
      for (int i = 0; i < tc->d_in; i++) s += (double)x[i] * tc->W_skip[(size_t)o * tc->d_in + i];
    out[o] = (float)s;
  }
  g_free(pre);
}

static void check_against_brute(LmwbTranscoder *tc, const char *what) {
  int n = 7;
  g_autofree float *x = g_new(float, (size_t)n * tc->d_in), *f = g_new(float, (size_t)n * tc->d_sae),
                   *out = g_new(float, (size_t)n * tc->d_out), *bf = g_new(float, tc->d_sae), *bo = g_new(float, tc->d_out);
  fill(x, (size_t)n * tc->d_in, 1.f);
  lmwb_transcoder_encode(tc, x, n, NULL, f);
  lmwb_transcoder_decode(tc, f, x, n, out);
  int active = 0;
  for (int i = 0; i < n; i++) {
    brute(tc, x + (size_t)i * tc->d_in, bf, bo);
    for (int j = 0; j < tc->d_sae; j++) {
      if (fabsf(bf[j] - f[(size_t)i * tc->d_sae + j]) > 1e-4f) g_error("%s: feature %d of row %d", what, j, i);
      active += bf[j] != 0;
    }
    for (int o = 0; o < tc->d_out; o++)
      if (fabsf(bo[o] - out[(size_t)i * tc->d_out + o]) > 1e-4f * (1 + fabsf(bo[o]))) g_error("%s: output %d of row %d", what, o, i);
  }
  g_assert_cmpint(active, >, 0);
  g_assert_cmpint(active, <, n * tc->d_sae);
}

static void test_formulas(void) {
  LmwbTranscoder *a = random_tc(16, 40, 12, LMWB_TC_RELU, 0, 0);
  check_against_brute(a, "relu");
  a->W_skip = g_new(float, 12 * 16);
  fill(a->W_skip, 12 * 16, 0.2f);
  check_against_brute(a, "relu with skip");
  lmwb_transcoder_free(a);
  LmwbTranscoder *j = random_tc(16, 40, 12, LMWB_TC_JUMPRELU, 0, 0);
  check_against_brute(j, "jumprelu");
  lmwb_transcoder_free(j);
  LmwbTranscoder *t = random_tc(16, 40, 12, LMWB_TC_TOPK, 5, 0);
  check_against_brute(t, "topk");
  lmwb_transcoder_free(t);
  LmwbTranscoder *s = random_tc(16, 40, 16, LMWB_TC_RELU, 0, 0);
  s->apply_b_dec_to_input = true;
  check_against_brute(s, "sae subtracting b_dec");
  lmwb_transcoder_free(s);
}

static LmwbTranscoderSet *random_set(const LmwbConfig *c, LmwbTcActivation act, int k) {
  LmwbTranscoderSet *set = lmwb_transcoder_set_new(c->n_layer);
  for (int L = 0; L < c->n_layer; L++) set->layers[L] = random_tc(c->d_model, 96, c->d_model, act, k, L);
  return set;
}

static void same_outputs(const LmwbTranscoder *a, const LmwbTranscoder *b) {
  g_assert_cmpint(a->d_in, ==, b->d_in);
  g_assert_cmpint(a->d_sae, ==, b->d_sae);
  g_assert_cmpint(a->d_out, ==, b->d_out);
  g_assert_cmpint(a->act, ==, b->act);
  g_assert_cmpint(a->k, ==, b->k);
  g_assert_true(a->in.kind == b->in.kind && a->in.layer == b->in.layer && a->out.kind == b->out.kind &&
                a->out.layer == b->out.layer);
  g_assert_cmpmem(a->W_enc, sizeof(float) * a->d_in * a->d_sae, b->W_enc, sizeof(float) * b->d_in * b->d_sae);
  g_assert_cmpmem(a->W_dec, sizeof(float) * a->d_sae * a->d_out, b->W_dec, sizeof(float) * b->d_sae * b->d_out);
  g_assert_cmpmem(a->b_dec, sizeof(float) * a->d_out, b->b_dec, sizeof(float) * b->d_out);
  int n = 5;
  g_autofree float *x = g_new(float, (size_t)n * a->d_in), *fa = g_new(float, (size_t)n * a->d_sae),
                   *fb = g_new(float, (size_t)n * a->d_sae), *oa = g_new(float, (size_t)n * a->d_out),
                   *ob = g_new(float, (size_t)n * a->d_out);
  fill(x, (size_t)n * a->d_in, 1.f);
  lmwb_transcoder_encode(a, x, n, NULL, fa);
  lmwb_transcoder_encode(b, x, n, NULL, fb);
  lmwb_transcoder_decode(a, fa, x, n, oa);
  lmwb_transcoder_decode(b, fb, x, n, ob);
  g_assert_cmpmem(oa, sizeof(float) * n * a->d_out, ob, sizeof(float) * n * b->d_out);
}

static void test_formats(void) {
  LmwbModel *m = load_fixture("gpt2");
  const LmwbConfig *c = &m->cfg;
  GError *err = NULL;
  const LmwbTcActivation acts[] = {LMWB_TC_RELU, LMWB_TC_JUMPRELU, LMWB_TC_TOPK};
  for (size_t a = 0; a < G_N_ELEMENTS(acts); a++) {
    LmwbTranscoderSet *set = random_set(c, acts[a], 8);
    for (int fmt = 0; fmt < 2; fmt++) {
      g_autofree char *dir = g_dir_make_tmp("lmwb-tc-XXXXXX", NULL);
      g_assert_true(lmwb_transcoder_set_save(set, dir, fmt, "gpt2-fixture", &err));
      g_assert_no_error(err);
      LmwbTranscoderSet *back = lmwb_transcoder_set_load(dir, c, &err);
      g_assert_no_error(err);
      for (int L = 0; L < c->n_layer; L++) same_outputs(set->layers[L], back->layers[L]);
      if (fmt == LMWB_TC_FORMAT_CIRCUIT_TRACER) {
        /* W_enc [d_sae, d_model] in circuit-tracer's files */
        g_autofree char *p = g_build_filename(dir, "layer_1.safetensors", NULL);
        LmwbSafetensors *st = lmwb_safetensors_open(p, &err);
        const LmwbTensorView *t = lmwb_safetensors_find(st, "W_enc");
        g_assert_cmpint(t->shape[0], ==, 96);
        g_assert_cmpint(t->shape[1], ==, c->d_model);
        lmwb_safetensors_close(st);
      }
      lmwb_transcoder_set_free(back);
      g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
      g_assert_cmpint(system(cmd), ==, 0);
    }
    lmwb_transcoder_set_free(set);
  }
  lmwb_model_unref(m);
}

/* A pre-6.0 SAELens config (flat, activation_fn_str, hook_point) of an SAE on the residual. */
static void test_old_saelens(void) {
  GError *err = NULL;
  g_autofree char *dir = g_dir_make_tmp("lmwb-sae-XXXXXX", NULL);
  LmwbTranscoder *sae = random_tc(64, 32, 64, LMWB_TC_RELU, 0, 1);
  sae->in = sae->out = (LmwbSite){LMWB_SITE_RESID_PRE, 1};
  sae->apply_b_dec_to_input = true;
  g_assert_true(lmwb_transcoder_save_saelens(sae, dir, &err));
  g_autofree char *cfg = g_build_filename(dir, "cfg.json", NULL);
  const char *old = "{\"architecture\": \"standard\", \"d_in\": 64, \"d_sae\": 32, \"dtype\": \"float32\", "
                    "\"model_name\": \"gpt2\", \"hook_point\": \"blocks.1.hook_resid_pre\", \"hook_point_layer\": 1, "
                    "\"activation_fn_str\": \"relu\", \"apply_b_dec_to_input\": true, \"context_size\": 128}";
  g_assert_true(g_file_set_contents(cfg, old, -1, NULL));
  LmwbTranscoder *back = lmwb_transcoder_load_saelens(dir, &err);
  g_assert_no_error(err);
  g_assert_true(back->apply_b_dec_to_input);
  same_outputs(sae, back);
  lmwb_transcoder_free(back);
  lmwb_transcoder_free(sae);
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
  g_assert_cmpint(system(cmd), ==, 0);
}

static void test_splice(void) {
  LmwbModel *m = load_fixture("llama_gqa");
  const LmwbConfig *c = &m->cfg;
  GError *err = NULL;
  LmwbTranscoder *tc = random_tc(c->d_model, 80, c->d_model, LMWB_TC_RELU, 0, 1);
  LmwbRunner *r = lmwb_runner_new(m);
  int32_t ids[6] = {3, 9, 27, 81, 1, 5};
  LmwbTcSplice *s = lmwb_transcoder_splice(r, tc, 1, &err);
  g_assert_no_error(err);
  g_assert_true(lmwb_runner_forward(r, ids, 1, 6, NULL, &err));
  int64_t shape[4];
  g_autofree float *x = g_memdup2(lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_LN2, 1}, shape, NULL, &err),
                                  sizeof(float) * 6 * c->d_model);
  const float *out = lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_MLP_OUT, 1}, shape, NULL, &err);
  g_autofree float *f = g_new(float, 6 * 80), *want = g_new(float, 6 * c->d_model);
  lmwb_transcoder_encode(tc, x, 6, NULL, f);
  lmwb_transcoder_decode(tc, f, x, 6, want);
  g_assert_cmpmem(out, sizeof(float) * 6 * c->d_model, want, sizeof(float) * 6 * c->d_model);
  lmwb_transcoder_unsplice(r, s);
  s = lmwb_transcoder_splice(r, NULL, 0, &err); /* zero-ablation */
  g_assert_true(lmwb_runner_forward(r, ids, 1, 6, NULL, &err));
  out = lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_MLP_OUT, 0}, shape, NULL, &err);
  for (int i = 0; i < 6 * c->d_model; i++) g_assert_cmpfloat(out[i], ==, 0.f);
  lmwb_transcoder_unsplice(r, s);
  lmwb_runner_free(r);
  lmwb_transcoder_free(tc);
  lmwb_model_unref(m);
}

/* FVU against brute force over the same windows; a transcoder that outputs nothing recovers none
 * of the loss (its CE is the ablated CE). */
static void test_eval(void) {
  LmwbModel *m = load_fixture("gpt2");
  const LmwbConfig *c = &m->cfg;
  GError *err = NULL;
  LmwbTranscoderSet *set = random_set(c, LMWB_TC_RELU, 0);
  memset(set->layers[0]->W_dec, 0, sizeof(float) * 96 * c->d_model);
  memset(set->layers[0]->b_dec, 0, sizeof(float) * c->d_model);
  const char *text = "the cat sat on the mat and the dog ran to the park while the bird sang in the tree "
                     "and the children played in the garden until the sun went down over the hills";
  LmwbTcEvalOptions o = {.context = 8, .batch = 3};
  LmwbTcEval *e = lmwb_transcoder_eval(m, set, text, &o, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpfloat(fabs(e->layers[0].ce_spliced - e->layers[0].ce_ablated), <, 1e-6);
  g_assert_cmpfloat(fabs(e->layers[0].ce_recovered), <, 1e-5);
  /* brute-force FVU of layer 1 over the same windows */
  size_t n = 0;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, &n, &err);
  int windows = (int)(n / 8);
  g_assert_cmpint(e->tokens, ==, windows * 8);
  LmwbRunner *r = lmwb_runner_new(m);
  g_assert_true(lmwb_runner_forward(r, ids, windows, 8, NULL, &err));
  int64_t shape[4];
  int N = windows * 8, C = c->d_model;
  g_autofree float *x = g_memdup2(lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_LN2, 1}, shape, NULL, &err),
                                  sizeof(float) * N * C);
  const float *t = lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_MLP_OUT, 1}, shape, NULL, &err);
  double err2 = 0, mean[256] = {0}, var = 0;
  g_autofree float *bf = g_new(float, 96), *bo = g_new(float, C);
  for (int i = 0; i < N; i++) {
    brute(set->layers[1], x + (size_t)i * C, bf, bo);
    for (int j = 0; j < C; j++) {
      err2 += ((double)bo[j] - t[(size_t)i * C + j]) * ((double)bo[j] - t[(size_t)i * C + j]);
      mean[j] += t[(size_t)i * C + j] / N;
    }
  }
  for (int i = 0; i < N; i++)
    for (int j = 0; j < C; j++) var += (t[(size_t)i * C + j] - mean[j]) * (t[(size_t)i * C + j] - mean[j]);
  g_assert_cmpfloat(fabs(e->layers[1].fvu - err2 / var), <, 1e-4 * (err2 / var));
  g_assert_cmpfloat(e->layers[1].l0, >, 0);
  lmwb_runner_free(r);
  lmwb_tc_eval_free(e);
  lmwb_transcoder_set_free(set);
  lmwb_model_unref(m);
}

static void expect_bad(const char *dir, const LmwbConfig *c, const char *needle) {
  GError *err = NULL;
  LmwbTranscoderSet *s = lmwb_transcoder_set_load(dir, c, &err);
  g_assert_null(s);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr(err->message, needle)) g_error("\"%s\" lacks \"%s\"", err->message, needle);
  g_error_free(err);
}

static void test_bad_files(void) {
  LmwbModel *m = load_fixture("gpt2");
  const LmwbConfig *c = &m->cfg;
  GError *err = NULL;
  LmwbTranscoderSet *set = random_set(c, LMWB_TC_RELU, 0);
  g_autofree char *dir = g_dir_make_tmp("lmwb-tcbad-XXXXXX", NULL);
  g_assert_true(lmwb_transcoder_set_save(set, dir, LMWB_TC_FORMAT_SAELENS, "x", &err));
  /* a missing layer */
  g_autofree char *l1 = g_build_filename(dir, "layer_1", NULL), *l1b = g_build_filename(dir, "gone", NULL);
  g_assert_cmpint(g_rename(l1, l1b), ==, 0);
  expect_bad(dir, c, "layer_1/cfg.json");
  g_assert_cmpint(g_rename(l1b, l1), ==, 0);
  /* sizes that do not fit the model */
  LmwbTranscoderSet *narrow = lmwb_transcoder_set_new(c->n_layer);
  for (int L = 0; L < c->n_layer; L++) narrow->layers[L] = random_tc(32, 16, 32, LMWB_TC_RELU, 0, L);
  g_autofree char *d2 = g_dir_make_tmp("lmwb-tcbad-XXXXXX", NULL);
  g_assert_true(lmwb_transcoder_set_save(narrow, d2, LMWB_TC_FORMAT_CIRCUIT_TRACER, "x", &err));
  expect_bad(d2, c, "has 32 values but blocks.0.ln2.hook_normalized has 64");
  /* NaN weights */
  set->layers[1]->W_dec[5] = NAN;
  g_assert_true(lmwb_transcoder_set_save(set, dir, LMWB_TC_FORMAT_SAELENS, "x", &err));
  expect_bad(dir, c, "W_dec");
  set->layers[1]->W_dec[5] = 0;
  /* a truncated weights file */
  g_assert_true(lmwb_transcoder_set_save(set, dir, LMWB_TC_FORMAT_SAELENS, "x", &err));
  g_autofree char *w = g_build_filename(dir, "layer_0", "sae_weights.safetensors", NULL);
  g_assert_cmpint(truncate(w, 4000), ==, 0);
  expect_bad(dir, c, "sae_weights.safetensors");
  /* a config.yaml that is not the subset we read */
  g_autofree char *y = g_build_filename(d2, "config.yaml", NULL);
  g_assert_true(g_file_set_contents(y, "feature_input_hook: ln2.hook_normalized\n  stray: [1, 2\n", -1, NULL));
  expect_bad(d2, c, "line 2");
  expect_bad("/nonexistent/set", c, "not a folder");
  lmwb_transcoder_set_free(narrow);
  lmwb_transcoder_set_free(set);
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s' '%s'", dir, d2);
  g_assert_cmpint(system(cmd), ==, 0);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/transcoder/formulas", test_formulas);
  g_test_add_func("/transcoder/formats", test_formats);
  g_test_add_func("/transcoder/old-saelens", test_old_saelens);
  g_test_add_func("/transcoder/splice", test_splice);
  g_test_add_func("/transcoder/eval", test_eval);
  g_test_add_func("/transcoder/bad-files", test_bad_files);
  return g_test_run();
}
