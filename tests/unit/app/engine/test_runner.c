/* The runner end to end on the committed fixture checkpoints (GPT-2, Llama with GQA, GPT-NeoX):
 * the KV cache reproduces the full forward, padding does not leak, hooks edit exactly what they
 * select, backward matches finite differences at hook sites and parameters (also with frozen
 * attention patterns), and every kind of bad model folder is refused with an input error. */
#include "app/engine/generate.h"
#include "app/engine/perplexity.h"
#include "tests/unit/app/engine/runner_test_util.h"

static void test_kv_cache(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    int T = 10, V = m->cfg.vocab_size;
    int32_t ids[10];
    rt_ids(ids, T, V, 7);
    LmwbRunner *full = lmwb_runner_new(m), *inc = lmwb_runner_new(m);
    GError *err = NULL;
    g_assert_true(lmwb_runner_forward(full, ids, 1, T, NULL, &err));
    const float *ref = lmwb_runner_logits(full, NULL);
    /* prompt of 4, then one token at a time */
    LmwbForwardOptions fo = {.use_cache = true, .last_logits_only = true};
    g_assert_true(lmwb_runner_forward(inc, ids, 1, 4, &fo, &err));
    g_assert_cmpfloat(rt_max_diff(lmwb_runner_logits(inc, NULL), ref + 3 * V, V), <, 1e-4);
    for (int t = 4; t < T; t++) {
      g_assert_true(lmwb_runner_forward(inc, ids + t, 1, 1, &fo, &err));
      g_assert_cmpfloat(rt_max_diff(lmwb_runner_logits(inc, NULL), ref + (size_t)t * V, V), <, 1e-4);
    }
    g_assert_cmpint(lmwb_runner_cache_length(inc), ==, T);
    lmwb_runner_free(full);
    lmwb_runner_free(inc);
    lmwb_model_unref(m);
  }
}

static void test_padding(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    int T = 8, V = m->cfg.vocab_size;
    int32_t ids[16], one[5];
    rt_ids(ids, 16, V, 11);
    memcpy(one, ids + 8, sizeof one);
    for (int t = 5; t < 8; t++) ids[8 + t] = 0; /* padding of sequence 1 */
    int lens[2] = {8, 5};
    LmwbRunner *r = lmwb_runner_new(m), *s = lmwb_runner_new(m);
    GError *err = NULL;
    LmwbForwardOptions fo = {.lens = lens};
    g_assert_true(lmwb_runner_forward(r, ids, 2, T, &fo, &err));
    g_assert_true(lmwb_runner_forward(s, one, 1, 5, NULL, &err));
    g_assert_cmpfloat(rt_max_diff(lmwb_runner_logits(r, NULL) + (size_t)T * V, lmwb_runner_logits(s, NULL), (size_t)5 * V), <, 1e-4);
    lmwb_runner_free(r);
    lmwb_runner_free(s);
    lmwb_model_unref(m);
  }
}

static void test_hooks_select(void) {
  LmwbModel *m = rt_load("gpt2");
  int T = 8, V = m->cfg.vocab_size;
  int32_t ids[8];
  rt_ids(ids, T, V, 3);
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  g_autofree float *base = g_memdup2(lmwb_runner_logits(r, NULL), sizeof(float) * T * V);
  /* Clamp neuron 5 of layer 1 at position 5 only: earlier positions must not move, later must. */
  int neuron = 5, pos = 5;
  LmwbHook h = {.site = {LMWB_SITE_MLP_POST, 1}, .op = LMWB_HOOK_SET, .positions = &pos, .n_positions = 1,
                .indices = &neuron, .n_indices = 1, .value = 10.0f};
  g_assert_cmpint(lmwb_runner_add_hook(r, &h, &err), >, 0);
  g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  const float *cl = lmwb_runner_logits(r, NULL);
  g_assert_cmpfloat(rt_max_diff(cl, base, (size_t)pos * V), ==, 0.0);
  g_assert_cmpfloat(rt_max_diff(cl + (size_t)pos * V, base + (size_t)pos * V, V), >, 1e-3);
  int64_t shape[4];
  const float *post = lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_MLP_POST, 1}, shape, NULL, &err);
  g_assert_cmpfloat(post[(size_t)pos * m->cfg.d_ff + neuron], ==, 10.0f);
  /* ADD 0 everywhere is the identity. */
  lmwb_runner_clear_hooks(r);
  LmwbHook add = {.site = {LMWB_SITE_RESID_MID, 0}, .op = LMWB_HOOK_ADD, .value = 0.0f};
  g_assert_cmpint(lmwb_runner_add_hook(r, &add, &err), >, 0);
  g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  g_assert_cmpfloat(rt_max_diff(lmwb_runner_logits(r, NULL), base, (size_t)T * V), ==, 0.0);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

typedef struct {
  float *patterns; /* per layer, B*H*T*T */
  size_t per_layer;
} Frozen;

static void put_pattern(float *act, const LmwbHookCtx *ctx, void *user) {
  Frozen *fz = user;
  memcpy(act, fz->patterns + fz->per_layer * ctx->site.layer, fz->per_layer * sizeof(float));
}

static void test_grad_fd(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    const LmwbConfig *c = &m->cfg;
    int B = 2, T = 6;
    int32_t ids[12];
    rt_ids(ids, B * T, c->vocab_size, 5);
    LmwbRunner *r = lmwb_runner_new(m);
    GError *err = NULL;
    LmwbSite sites[] = {{LMWB_SITE_RESID_PRE, 0}, {LMWB_SITE_MLP_POST, 0}, {LMWB_SITE_Q, 1}, {LMWB_SITE_LN_FINAL, -1}};
    for (int frozen = 0; frozen < 2; frozen++) {
      Frozen fz = {0};
      g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
      fz.per_layer = (size_t)B * c->n_head * T * T;
      fz.patterns = g_new(float, fz.per_layer * c->n_layer);
      for (int L = 0; L < c->n_layer; L++) {
        int64_t shape[4];
        const float *p = lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_PATTERN, L}, shape, NULL, &err);
        memcpy(fz.patterns + fz.per_layer * L, p, fz.per_layer * sizeof(float));
      }
      for (size_t s = 0; s < G_N_ELEMENTS(sites); s++) {
        LmwbSite site = sites[s];
        if (frozen && site.kind == LMWB_SITE_LN_FINAL) continue;
        int pos = 2, index = 3;
        /* analytic */
        lmwb_runner_clear_hooks(r);
        g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
        LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
        LmwbBackwardOptions bo = {.freeze = frozen ? LMWB_FREEZE_PATTERN : 0};
        double lv;
        g_assert_true(lmwb_runner_backward(r, &loss, 1, &bo, &lv, &err));
        int64_t shape[4];
        int nd;
        const float *g = lmwb_runner_grad(r, site, shape, &nd, &err);
        g_assert_no_error(err);
        size_t row = (size_t)shape[nd == 4 ? 2 : 2] * (nd == 4 ? shape[3] : 1);
        double analytic = g[(size_t)pos * row + index] + g[((size_t)T + pos) * row + index];
        /* numeric: nudge the element in both sequences at once (positions are per sequence) */
        double vals[2];
        for (int k = 0; k < 2; k++) {
          float d = k ? -1e-2f : 1e-2f;
          lmwb_runner_clear_hooks(r);
          LmwbHook h = {.site = site, .op = LMWB_HOOK_ADD, .positions = &pos, .n_positions = 1,
                        .indices = &index, .n_indices = 1, .value = d};
          g_assert_cmpint(lmwb_runner_add_hook(r, &h, &err), >, 0);
          if (frozen)
            for (int L = 0; L < c->n_layer; L++) {
              LmwbHook p = {.site = {LMWB_SITE_PATTERN, L}, .op = LMWB_HOOK_CALL, .fn = put_pattern, .user = &fz};
              g_assert_cmpint(lmwb_runner_add_hook(r, &p, &err), >, 0);
            }
          g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
          g_autofree float *losses = g_new(float, B * T);
          lmwb_runner_token_losses(r, NULL, losses);
          double sum = 0;
          int cnt = 0;
          for (int i = 0; i < B * T; i++)
            if (!isnan(losses[i])) { sum += losses[i]; cnt++; }
          vals[k] = sum / cnt;
        }
        double numeric = (vals[0] - vals[1]) / 2e-2;
        double tol = 2e-3 + 2e-2 * fabs(numeric);
        if (fabs(numeric - analytic) > tol)
          g_error("%s site %d/%d frozen=%d: analytic %.6g numeric %.6g", rt_fixtures[f], site.kind, site.layer, frozen, analytic, numeric);
      }
      g_free(fz.patterns);
    }
    lmwb_runner_free(r);
    lmwb_model_unref(m);
  }
}

static void test_param_grad_fd(void) {
  LmwbModel *m = rt_load("llama_gqa");
  int B = 2, T = 6;
  int32_t ids[12];
  rt_ids(ids, B * T, m->cfg.vocab_size, 9);
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
  LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
  LmwbBackwardOptions bo = {.param_grads = true};
  double lv;
  g_assert_true(lmwb_runner_backward(r, &loss, 1, &bo, &lv, &err));
  g_autofree float *grads = g_memdup2(lmwb_runner_param_grads(r), m->n_params * sizeof(float));
  for (int i = 0; i < m->n_info; i += 3) { /* a spread of tensors */
    size_t at = m->info[i].offset + 1;
    float keep = m->params[at];
    double v[2];
    for (int k = 0; k < 2; k++) {
      m->params[at] = keep + (k ? -1e-2f : 1e-2f);
      lmwb_model_weights_changed(m);
      g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
      g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &v[k], &err));
    }
    m->params[at] = keep;
    lmwb_model_weights_changed(m);
    double numeric = (v[0] - v[1]) / 2e-2;
    if (fabs(numeric - grads[at]) > 2e-3 + 2e-2 * fabs(numeric))
      g_error("parameter %s: analytic %.6g numeric %.6g", m->info[i].name, grads[at], numeric);
  }
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

static void test_generate_seeded(void) {
  LmwbModel *m = rt_load("gpt2");
  LmwbRunner *r = lmwb_runner_new(m);
  int32_t prompt[3] = {5, 9, 12};
  LmwbGenerateOptions o;
  lmwb_generate_options_init(&o);
  o.max_tokens = 12;
  o.stop_at_eos = false;
  o.temperature = 1.0f;
  o.seed = 42;
  GError *err = NULL;
  int n1, n2, n3;
  g_autofree int32_t *a = lmwb_generate(r, prompt, 3, &o, &n1, NULL, NULL, &err);
  g_autofree int32_t *b = lmwb_generate(r, prompt, 3, &o, &n2, NULL, NULL, &err);
  g_assert_cmpint(n1, ==, 12);
  g_assert_cmpmem(a, n1 * sizeof(int32_t), b, n2 * sizeof(int32_t));
  /* top-k 1 sampling is greedy decoding */
  o.top_k = 1;
  g_autofree int32_t *c = lmwb_generate(r, prompt, 3, &o, &n3, NULL, NULL, &err);
  LmwbGenerateOptions g;
  lmwb_generate_options_init(&g);
  g.max_tokens = 12;
  g.stop_at_eos = false;
  g_autofree int32_t *d = lmwb_generate(r, prompt, 3, &g, &n2, NULL, NULL, &err);
  g_assert_cmpmem(c, n3 * sizeof(int32_t), d, n2 * sizeof(int32_t));
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

static void test_perplexity_window(void) {
  LmwbModel *m = rt_load("gpt2");
  LmwbRunner *r = lmwb_runner_new(m);
  int32_t ids[40];
  rt_ids(ids, 40, m->cfg.vocab_size, 13);
  GError *err = NULL;
  /* Disjoint windows of 20 (stride 20) score 38 tokens: all but the first of each window. */
  LmwbPerplexityOptions o = {.context = 20, .stride = 20};
  LmwbPerplexityResult res = {0};
  g_assert_true(lmwb_perplexity_ids(r, ids, 40, &o, &res, NULL, &err));
  g_assert_cmpuint(res.n_tokens, ==, 38);
  /* Sliding by 10 scores every token after the first exactly once. */
  o.stride = 10;
  LmwbPerplexityResult res2 = {0};
  g_assert_true(lmwb_perplexity_ids(r, ids, 40, &o, &res2, NULL, &err));
  g_assert_cmpuint(res2.n_tokens, ==, 39);
  g_assert_cmpfloat(res.perplexity, >, 1.0);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

/* ---- bad model folders ---------------------------------------------------------------------- */

static char *copy_fixture(const char *name) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *src = g_build_filename(root ? root : ".", "tests/fixtures/models", name, NULL);
  char *tmp = g_dir_make_tmp("lmwb-bad-XXXXXX", NULL);
  g_autofree char *cmd = g_strdup_printf("cp -r '%s'/config.json '%s'/model.safetensors '%s'/tokenizer.json '%s'/", src, src, src, tmp);
  g_assert_cmpint(system(cmd), ==, 0);
  return tmp;
}

static void expect_load_error(const char *dir, const char *needle) {
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_null(m);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr(err->message, needle)) g_error("\"%s\" lacks \"%s\"", err->message, needle);
  g_error_free(err);
}

static void set_file(const char *dir, const char *name, const char *text) {
  g_autofree char *p = g_build_filename(dir, name, NULL);
  g_assert_true(g_file_set_contents(p, text, -1, NULL));
}

static void test_bad_folders(void) {
  g_autofree char *d = copy_fixture("gpt2");
  g_autofree char *cfg_path = g_build_filename(d, "config.json", NULL);
  g_autofree char *good = NULL;
  g_assert_true(g_file_get_contents(cfg_path, &good, NULL, NULL));
  set_file(d, "config.json", "{\"model_type\": \"gpt2\", \"n_layer\": ");
  expect_load_error(d, "not valid JSON");
  set_file(d, "config.json", "{\"model_type\": \"t5\"}");
  expect_load_error(d, "supported architectures: gpt2, llama, mistral, qwen2, gpt_neox");
  set_file(d, "config.json", "{\"model_type\": \"gpt2\", \"n_layer\": \"two\", \"n_embd\": 64, \"n_head\": 4, \"vocab_size\": 320}");
  expect_load_error(d, "\"n_layer\" must be an integer");
  set_file(d, "config.json", "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_embd\": 64, \"n_head\": 5, \"vocab_size\": 320}");
  expect_load_error(d, "not divisible");
  /* A config that promises more layers than the weights hold. */
  set_file(d, "config.json", "{\"model_type\": \"gpt2\", \"n_layer\": 3, \"n_embd\": 64, \"n_head\": 4, \"n_inner\": 128, \"vocab_size\": 320, \"n_positions\": 32}");
  expect_load_error(d, "tensor \"transformer.h.2.ln_1.weight\" is missing");
  /* Wrong shape: a wider model than the file. */
  set_file(d, "config.json", "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_embd\": 128, \"n_head\": 4, \"n_inner\": 128, \"vocab_size\": 320, \"n_positions\": 32}");
  expect_load_error(d, "has shape");
  /* Too large for memory: refused before allocating. */
  set_file(d, "config.json", "{\"model_type\": \"gpt2\", \"n_layer\": 200, \"n_embd\": 8192, \"n_head\": 64, \"vocab_size\": 50257}");
  expect_load_error(d, "refusing before allocating");
  set_file(d, "config.json", good);
  /* A corrupt tokenizer is refused too. */
  set_file(d, "tokenizer.json", "{\"model\": {\"type\": \"WordLevel\"}}");
  expect_load_error(d, "tokenizer");
  expect_load_error("/nonexistent/model", "not a folder");
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", d);
  g_assert_cmpint(system(cmd), ==, 0);
}

static void test_bad_runs(void) {
  LmwbModel *m = rt_load("gpt2");
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  int32_t ids[3] = {1, 2, 320};
  g_assert_false(lmwb_runner_forward(r, ids, 1, 3, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_autofree int32_t *longer = g_new0(int32_t, m->cfg.n_ctx + 1);
  g_assert_false(lmwb_runner_forward(r, longer, 1, m->cfg.n_ctx + 1, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  LmwbSite s;
  g_assert_false(lmwb_site_parse(&m->cfg, "blocks.0.attn.hook_rot_q", &s, &err)); /* GPT-2 has no rotary */
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/runner/kv-cache", test_kv_cache);
  g_test_add_func("/runner/padding", test_padding);
  g_test_add_func("/runner/hooks-select", test_hooks_select);
  g_test_add_func("/runner/grad-fd", test_grad_fd);
  g_test_add_func("/runner/param-grad-fd", test_param_grad_fd);
  g_test_add_func("/runner/generate-seeded", test_generate_seeded);
  g_test_add_func("/runner/perplexity-window", test_perplexity_window);
  g_test_add_func("/model/bad-folders", test_bad_folders);
  g_test_add_func("/runner/bad-runs", test_bad_runs);
  return g_test_run();
}
