/* Hooks on the runner (hooks.h): ids and removal one at a time, per-sequence masks, PATCH (an
 * interchange with alpha 1 reproduces the other run exactly; alpha interpolates), OBSERVE (sees
 * the block, the token ids and lengths, forward and backward), the chain rule through hooks in a
 * backward (finite differences), and the input errors of bad hooks. */
#include "tests/unit/app/engine/runner_test_util.h"

static LmwbSite S(LmwbSiteKind k, int l) { return (LmwbSite){k, l}; }

static void test_ids_and_removal(void) {
  LmwbModel *m = rt_load("gpt2");
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  int32_t ids[8];
  rt_ids(ids, 8, m->cfg.vocab_size, 3);
  int V = m->cfg.vocab_size, n0 = 5, n1 = 9;
  LmwbHook a = {.site = S(LMWB_SITE_MLP_POST, 0), .op = LMWB_HOOK_SET, .indices = &n0, .n_indices = 1, .value = 4};
  LmwbHook b = {.site = S(LMWB_SITE_MLP_POST, 1), .op = LMWB_HOOK_SCALE, .value = 0.5f};
  LmwbHook c = {.site = S(LMWB_SITE_MLP_POST, 1), .op = LMWB_HOOK_SET, .indices = &n1, .n_indices = 1, .value = -3};
  int ia = lmwb_runner_add_hook(r, &a, &err), ib = lmwb_runner_add_hook(r, &b, &err), ic = lmwb_runner_add_hook(r, &c, &err);
  g_assert_no_error(err);
  g_assert_cmpint(ia, >, 0);
  g_assert_cmpint(ib, !=, ia);
  g_assert_cmpint(ic, !=, ib);
  g_assert_true(lmwb_runner_remove_hook(r, ib));
  g_assert_false(lmwb_runner_remove_hook(r, ib)); /* already gone */
  g_assert_true(lmwb_runner_forward(r, ids, 1, 8, NULL, &err));
  g_autofree float *two = g_memdup2(lmwb_runner_logits(r, NULL), sizeof(float) * 8 * V);
  /* the same two hooks on a fresh runner give the same logits */
  LmwbRunner *q = lmwb_runner_new(m);
  lmwb_runner_add_hook(q, &a, &err);
  lmwb_runner_add_hook(q, &c, &err);
  g_assert_true(lmwb_runner_forward(q, ids, 1, 8, NULL, &err));
  g_assert_cmpfloat(rt_max_diff(two, lmwb_runner_logits(q, NULL), 8 * (size_t)V), ==, 0.0);
  /* removing the rest gives the plain model */
  g_assert_true(lmwb_runner_remove_hook(r, ia));
  g_assert_true(lmwb_runner_remove_hook(r, ic));
  lmwb_runner_clear_hooks(q);
  g_assert_true(lmwb_runner_forward(r, ids, 1, 8, NULL, &err));
  g_assert_true(lmwb_runner_forward(q, ids, 1, 8, NULL, &err));
  g_assert_cmpfloat(rt_max_diff(lmwb_runner_logits(r, NULL), lmwb_runner_logits(q, NULL), 8 * (size_t)V), ==, 0.0);
  g_assert_cmpfloat(rt_max_diff(two, lmwb_runner_logits(q, NULL), 8 * (size_t)V), >, 1e-4);
  lmwb_runner_free(q);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

static void test_mask_per_sequence(void) {
  LmwbModel *m = rt_load("llama_gqa");
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  int B = 2, T = 6, V = m->cfg.vocab_size;
  int32_t ids[12];
  rt_ids(ids, 6, V, 5);
  memcpy(ids + 6, ids, 6 * sizeof(int32_t)); /* the same sequence twice */
  g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
  g_autofree float *base = g_memdup2(lmwb_runner_logits(r, NULL), sizeof(float) * B * T * V);
  uint8_t mask[12] = {0};
  mask[2] = 1; /* sequence 0, position 2 only */
  int idx = 7;
  LmwbHook h = {.site = S(LMWB_SITE_MLP_POST, 0), .op = LMWB_HOOK_SET, .mask = mask, .run_B = B, .run_T = T,
                .indices = &idx, .n_indices = 1, .value = 20};
  g_assert_cmpint(lmwb_runner_add_hook(r, &h, &err), >, 0);
  g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
  const float *lg = lmwb_runner_logits(r, NULL);
  g_assert_cmpfloat(rt_max_diff(lg, base, 2 * (size_t)V), ==, 0.0);                           /* before it */
  g_assert_cmpfloat(rt_max_diff(lg + 2 * (size_t)V, base + 2 * (size_t)V, V), >, 1e-4);      /* at it */
  g_assert_cmpfloat(rt_max_diff(lg + (size_t)T * V, base + (size_t)T * V, (size_t)T * V), ==, 0.0); /* the other sequence */
  /* a run of another shape is refused, naming the hook's site */
  g_assert_false(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "blocks.0.mlp.hook_post"));
  g_clear_error(&err);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

/* Interchange: resid_pre of layer 1 patched from another run at every position reproduces that
 * run's logits exactly (all later computation reads only the residual stream); alpha 0.25 moves
 * the block a quarter of the way. */
static void test_patch(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    LmwbRunner *r = lmwb_runner_new(m);
    GError *err = NULL;
    int T = 7, V = m->cfg.vocab_size;
    int32_t clean[7], corrupt[7];
    rt_ids(clean, T, V, 11);
    rt_ids(corrupt, T, V, 12);
    LmwbSite site = S(LMWB_SITE_RESID_PRE, 1);
    g_assert_true(lmwb_runner_forward(r, corrupt, 1, T, NULL, &err));
    size_t n;
    g_autofree float *src = rt_copy_site(r, site, FALSE, &n);
    g_autofree float *want = g_memdup2(lmwb_runner_logits(r, NULL), sizeof(float) * T * V);
    g_assert_true(lmwb_runner_forward(r, clean, 1, T, NULL, &err));
    g_autofree float *orig = rt_copy_site(r, site, FALSE, NULL);
    LmwbHook p = {.site = site, .op = LMWB_HOOK_PATCH, .source = src, .alpha = 1, .run_B = 1, .run_T = T};
    int id = lmwb_runner_add_hook(r, &p, &err);
    g_assert_true(lmwb_runner_forward(r, clean, 1, T, NULL, &err));
    g_assert_cmpfloat(rt_max_diff(lmwb_runner_logits(r, NULL), want, (size_t)T * V), <, 1e-5);
    lmwb_runner_remove_hook(r, id);
    p.alpha = 0.25f;
    lmwb_runner_add_hook(r, &p, &err);
    g_assert_true(lmwb_runner_forward(r, clean, 1, T, NULL, &err));
    g_autofree float *mid = rt_copy_site(r, site, FALSE, NULL);
    for (size_t i = 0; i < n; i++) g_assert_cmpfloat(fabsf(mid[i] - (orig[i] + 0.25f * (src[i] - orig[i]))), <, 1e-5f);
    lmwb_runner_free(r);
    lmwb_model_unref(m);
  }
}

typedef struct {
  int calls, grad_calls;
  int B, T, layer;
  int32_t first_id;
  int len1;
  float *seen, *seen_grad;
  size_t n;
} Observed;

static void observe(float *block, const LmwbHookCtx *c, void *user) {
  Observed *o = user;
  float **dst = c->backward ? &o->seen_grad : &o->seen;
  if (c->backward) o->grad_calls++;
  else o->calls++;
  o->B = c->B, o->T = c->T, o->layer = c->site.layer, o->first_id = c->ids[0], o->len1 = c->lens ? c->lens[1] : -1;
  o->n = (size_t)c->B * c->rows_per_seq * c->R;
  g_free(*dst);
  *dst = g_memdup2(block, o->n * sizeof(float));
}

static void test_observe(void) {
  LmwbModel *m = rt_load("gpt2");
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  int B = 2, T = 5, lens[2] = {5, 3};
  int32_t ids[10];
  rt_ids(ids, 10, m->cfg.vocab_size, 21);
  Observed o = {0};
  LmwbSite site = S(LMWB_SITE_LN2, 1);
  LmwbHook h = {.site = site, .op = LMWB_HOOK_OBSERVE, .fn = observe, .bwd_fn = observe, .user = &o};
  lmwb_runner_add_hook(r, &h, &err);
  LmwbForwardOptions fo = {.lens = lens};
  g_assert_true(lmwb_runner_forward(r, ids, B, T, &fo, &err));
  g_assert_cmpint(o.calls, ==, 1);
  g_assert_cmpint(o.B, ==, 2);
  g_assert_cmpint(o.T, ==, 5);
  g_assert_cmpint(o.layer, ==, 1);
  g_assert_cmpint(o.first_id, ==, ids[0]);
  g_assert_cmpint(o.len1, ==, 3);
  g_autofree float *act = rt_copy_site(r, site, FALSE, NULL);
  g_assert_cmpfloat(rt_max_diff(act, o.seen, o.n), ==, 0.0);
  LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
  double lv;
  g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &lv, &err));
  g_assert_cmpint(o.grad_calls, ==, 1);
  size_t n;
  g_autofree float *g = rt_copy_site(r, site, TRUE, &n);
  g_assert_cmpuint(n, ==, o.n);
  g_assert_cmpfloat(rt_max_abs(g, n), >, 0);
  /* the observer saw the gradient the site ends with */
  g_assert_cmpfloat(rt_max_diff(g, o.seen_grad, n), <, 1e-6);
  g_free(o.seen);
  g_free(o.seen_grad);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

/* Gradients through hooks are those of the hooked model: SET cuts the path at what it selects,
 * SCALE multiplies, PATCH keeps (1 - alpha) of it. */
static void test_backward_through_hooks(void) {
  LmwbModel *m = rt_load("gpt2");
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  int B = 2, T = 6, C = m->cfg.d_model;
  int32_t ids[12], other[12];
  rt_ids(ids, 12, m->cfg.vocab_size, 31);
  rt_ids(other, 12, m->cfg.vocab_size, 32);
  g_assert_true(lmwb_runner_forward(r, other, B, T, NULL, &err));
  g_autofree float *src = rt_copy_site(r, S(LMWB_SITE_RESID_MID, 0), FALSE, NULL);
  int cut = 3;
  LmwbHook hooks[] = {
    {.site = S(LMWB_SITE_RESID_MID, 0), .op = LMWB_HOOK_PATCH, .source = src, .alpha = 0.3f, .run_B = B, .run_T = T},
    {.site = S(LMWB_SITE_ATTN_OUT, 1), .op = LMWB_HOOK_SCALE, .value = 1.7f},
    {.site = S(LMWB_SITE_MLP_PRE, 1), .op = LMWB_HOOK_SET, .positions = &cut, .n_positions = 1, .value = 0.25f},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(hooks); i++) lmwb_runner_add_hook(r, &hooks[i], &err);
  g_assert_no_error(err);
  g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
  LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
  double lv;
  g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &lv, &err));
  g_autofree float *g = rt_copy_site(r, S(LMWB_SITE_RESID_PRE, 0), TRUE, NULL);
  g_autofree float *gp = rt_copy_site(r, S(LMWB_SITE_MLP_PRE, 1), TRUE, NULL);
  int F = m->cfg.d_ff;
  for (int i = 0; i < F; i++) g_assert_cmpfloat(rt_at(gp, T, F, 1, cut, i), ==, 0.f); /* SET cuts */
  int pts[][3] = {{0, 2, 5}, {1, 4, 17}, {1, 0, 40}};
  for (size_t k = 0; k < G_N_ELEMENTS(pts); k++) {
    int b = pts[k][0], t = pts[k][1], i = pts[k][2];
    double num = rt_fd(r, ids, B, T, NULL, S(LMWB_SITE_RESID_PRE, 0), b, t, i, 1e-2f, rt_mean_loss, NULL);
    rt_check("through hooks", rt_at(g, T, C, b, t, i), num);
  }
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

static void expect_bad(LmwbRunner *r, const LmwbHook *h, const char *needle) {
  GError *err = NULL;
  g_assert_cmpint(lmwb_runner_add_hook(r, h, &err), ==, 0);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr(err->message, needle)) g_error("\"%s\" lacks \"%s\"", err->message, needle);
  g_error_free(err);
}

static void test_bad_hooks(void) {
  LmwbModel *m = rt_load("gpt2");
  LmwbRunner *r = lmwb_runner_new(m);
  int big = m->cfg.d_ff, neg = -1;
  float src = 0;
  expect_bad(r, &(LmwbHook){.site = S(LMWB_SITE_MLP_POST, 7), .op = LMWB_HOOK_SET}, "does not exist");
  expect_bad(r, &(LmwbHook){.site = S(LMWB_SITE_ROT_Q, 0), .op = LMWB_HOOK_SET}, "does not exist"); /* no rotary */
  expect_bad(r, &(LmwbHook){.site = S(LMWB_SITE_MLP_POST, 0), .op = LMWB_HOOK_SET, .indices = &big, .n_indices = 1},
             "index 128");
  expect_bad(r, &(LmwbHook){.site = S(LMWB_SITE_MLP_POST, 0), .op = LMWB_HOOK_SET, .positions = &neg, .n_positions = 1},
             "position -1");
  expect_bad(r, &(LmwbHook){.site = S(LMWB_SITE_MLP_POST, 0), .op = LMWB_HOOK_PATCH, .alpha = 1}, "source");
  expect_bad(r, &(LmwbHook){.site = S(LMWB_SITE_MLP_POST, 0), .op = LMWB_HOOK_PATCH, .source = &src, .alpha = 1},
             "run shape");
  expect_bad(r, &(LmwbHook){.site = S(LMWB_SITE_MLP_POST, 0), .op = LMWB_HOOK_CALL}, "function");
  expect_bad(r, &(LmwbHook){.site = S(LMWB_SITE_MLP_POST, 0), .op = LMWB_HOOK_SET, .value = NAN}, "finite");
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/hooks/ids-and-removal", test_ids_and_removal);
  g_test_add_func("/hooks/mask-per-sequence", test_mask_per_sequence);
  g_test_add_func("/hooks/patch", test_patch);
  g_test_add_func("/hooks/observe", test_observe);
  g_test_add_func("/hooks/backward-through-hooks", test_backward_through_hooks);
  g_test_add_func("/hooks/bad", test_bad_hooks);
  return g_test_run();
}
