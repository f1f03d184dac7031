/* The optional per-head sites (sites.h) on GPT-2, Llama with GQA and GPT-NeoX: with them on the
 * model still equals the plain forward (logits and gradients); hook_result sums to hook_attn_out;
 * every head's q/k/v input is its own copy, so setting one head's input changes exactly that
 * head's q (or kv head's k, v) into what the other input gives; hook_mlp_in feeds the MLP alone;
 * and gradients at the new sites match finite differences. */
#include "tests/unit/app/engine/runner_test_util.h"

#define ALL_SITES (LMWB_RUN_ATTN_RESULT | LMWB_RUN_SPLIT_QKV | LMWB_RUN_MLP_IN)

static LmwbSite S(LmwbSiteKind k, int l) { return (LmwbSite){k, l}; }

static void test_equals_plain(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    LmwbRunner *r = lmwb_runner_new(m);
    GError *err = NULL;
    int B = 2, T = 7, V = m->cfg.vocab_size, C = m->cfg.d_model;
    int32_t ids[14];
    rt_ids(ids, 14, V, 41);
    LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
    double l0, l1;
    g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
    g_autofree float *plain = g_memdup2(lmwb_runner_logits(r, NULL), sizeof(float) * B * T * V);
    g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &l0, &err));
    g_autofree float *gplain = rt_copy_site(r, S(LMWB_SITE_RESID_PRE, 0), TRUE, NULL);
    LmwbForwardOptions fo = {.sites = ALL_SITES};
    g_assert_true(lmwb_runner_forward(r, ids, B, T, &fo, &err));
    double scale = rt_max_abs(plain, (size_t)B * T * V);
    g_assert_cmpfloat(rt_max_diff(lmwb_runner_logits(r, NULL), plain, (size_t)B * T * V), <, 2e-5 * scale);
    g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &l1, &err));
    g_assert_cmpfloat(fabs(l1 - l0), <, 1e-5);
    g_autofree float *gsplit = rt_copy_site(r, S(LMWB_SITE_RESID_PRE, 0), TRUE, NULL);
    g_assert_cmpfloat(rt_max_diff(gsplit, gplain, (size_t)B * T * C), <, 1e-4 * rt_max_abs(gplain, (size_t)B * T * C));
    /* the per-head pieces: result sums to attn_out (+ b_O); each head's input is resid_pre */
    for (int l = 0; l < m->cfg.n_layer; l++) {
      size_t nr, no;
      int H = m->cfg.n_head, Hk = m->cfg.n_kv_head;
      g_autofree float *res = rt_copy_site(r, S(LMWB_SITE_RESULT, l), FALSE, &nr);
      g_autofree float *out = rt_copy_site(r, S(LMWB_SITE_ATTN_OUT, l), FALSE, &no);
      g_autofree float *pre = rt_copy_site(r, S(LMWB_SITE_RESID_PRE, l), FALSE, NULL);
      g_autofree float *kin = rt_copy_site(r, S(LMWB_SITE_K_INPUT, l), FALSE, NULL);
      g_assert_cmpuint(nr, ==, no * H);
      const float *bo = m->w.layers[l].bo;
      for (size_t n = 0; n < (size_t)B * T; n++)
        for (int c = 0; c < C; c++) {
          double s = bo ? bo[c] : 0;
          for (int h = 0; h < H; h++) s += res[(n * H + h) * C + c];
          g_assert_cmpfloat(fabs(s - out[n * C + c]), <, 1e-5 * (1 + fabs(s)));
          for (int h = 0; h < Hk; h++) g_assert_cmpfloat(kin[(n * Hk + h) * C + c], ==, pre[n * C + c]);
        }
      int64_t shape[4];
      int nd;
      lmwb_runner_activation(r, S(LMWB_SITE_V_INPUT, l), shape, &nd, &err);
      g_assert_cmpint(nd, ==, 4);
      g_assert_cmpint(shape[2], ==, Hk);
      g_assert_cmpint(shape[3], ==, C);
    }
    /* ln1.hook_normalized does not exist when the norm runs per head */
    int64_t shape[4];
    g_assert_null(lmwb_runner_activation(r, S(LMWB_SITE_LN1, 0), shape, NULL, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    g_clear_error(&err);
    /* and a plain run does not compute the optional sites */
    g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
    g_assert_null(lmwb_runner_activation(r, S(LMWB_SITE_RESULT, 0), shape, NULL, &err));
    g_assert_nonnull(strstr(err->message, "not computed"));
    g_clear_error(&err);
    lmwb_runner_free(r);
    lmwb_model_unref(m);
  }
}

/* One head's q input (and one kv head's v input) set to the residual of another run: that head's
 * q (v) becomes the other run's, every other head keeps its own. */
static void test_reader_per_head(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    const LmwbConfig *c = &m->cfg;
    LmwbRunner *r = lmwb_runner_new(m);
    GError *err = NULL;
    int T = 6, C = c->d_model, H = c->n_head, Hk = c->n_kv_head, hd = c->head_dim, L = 1;
    int32_t clean[6], other[6];
    rt_ids(clean, T, c->vocab_size, 51);
    rt_ids(other, T, c->vocab_size, 52);
    LmwbForwardOptions fo = {.sites = LMWB_RUN_SPLIT_QKV};
    g_assert_true(lmwb_runner_forward(r, other, 1, T, &fo, &err));
    g_autofree float *q_src = rt_copy_site(r, S(LMWB_SITE_Q_INPUT, L), FALSE, NULL);
    g_autofree float *v_src = rt_copy_site(r, S(LMWB_SITE_V_INPUT, L), FALSE, NULL);
    g_autofree float *q_other = rt_copy_site(r, S(LMWB_SITE_Q, L), FALSE, NULL);
    g_autofree float *v_other = rt_copy_site(r, S(LMWB_SITE_V, L), FALSE, NULL);
    g_assert_true(lmwb_runner_forward(r, clean, 1, T, &fo, &err));
    g_autofree float *q_clean = rt_copy_site(r, S(LMWB_SITE_Q, L), FALSE, NULL);
    g_autofree float *k_clean = rt_copy_site(r, S(LMWB_SITE_K, L), FALSE, NULL);
    g_autofree float *v_clean = rt_copy_site(r, S(LMWB_SITE_V, L), FALSE, NULL);
    int hq = H - 1, hv = Hk - 1;
    int *qi = g_new(int, C), *vi = g_new(int, C);
    for (int i = 0; i < C; i++) qi[i] = hq * C + i, vi[i] = hv * C + i;
    LmwbHook pq = {.site = S(LMWB_SITE_Q_INPUT, L), .op = LMWB_HOOK_PATCH, .source = q_src, .alpha = 1, .run_B = 1,
                   .run_T = T, .indices = qi, .n_indices = C};
    LmwbHook pv = {.site = S(LMWB_SITE_V_INPUT, L), .op = LMWB_HOOK_PATCH, .source = v_src, .alpha = 1, .run_B = 1,
                   .run_T = T, .indices = vi, .n_indices = C};
    lmwb_runner_add_hook(r, &pq, &err);
    lmwb_runner_add_hook(r, &pv, &err);
    g_assert_no_error(err);
    g_assert_true(lmwb_runner_forward(r, clean, 1, T, NULL, &err)); /* the hooks turn the split on themselves */
    g_autofree float *q = rt_copy_site(r, S(LMWB_SITE_Q, L), FALSE, NULL);
    g_autofree float *k = rt_copy_site(r, S(LMWB_SITE_K, L), FALSE, NULL);
    g_autofree float *v = rt_copy_site(r, S(LMWB_SITE_V, L), FALSE, NULL);
    for (int t = 0; t < T; t++)
      for (int i = 0; i < H * hd; i++) {
        const float *want = i / hd == hq ? q_other : q_clean;
        g_assert_cmpfloat(fabsf(q[t * H * hd + i] - want[t * H * hd + i]), <, 1e-5f);
      }
    for (int t = 0; t < T; t++)
      for (int i = 0; i < Hk * hd; i++) {
        const float *want = i / hd == hv ? v_other : v_clean;
        g_assert_cmpfloat(fabsf(v[t * Hk * hd + i] - want[t * Hk * hd + i]), <, 1e-5f);
        g_assert_cmpfloat(fabsf(k[t * Hk * hd + i] - k_clean[t * Hk * hd + i]), <, 1e-6f);
      }
    g_free(qi);
    g_free(vi);
    lmwb_runner_free(r);
    lmwb_model_unref(m);
  }
}

/* hook_mlp_in from another run: the MLP's output is that run's, attention is this run's. */
static void test_mlp_in(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    LmwbRunner *r = lmwb_runner_new(m);
    GError *err = NULL;
    int T = 6, L = 0;
    int32_t clean[6], other[6];
    rt_ids(clean, T, m->cfg.vocab_size, 61);
    rt_ids(other, T, m->cfg.vocab_size, 62);
    LmwbForwardOptions fo = {.sites = LMWB_RUN_MLP_IN};
    g_assert_true(lmwb_runner_forward(r, other, 1, T, &fo, &err));
    size_t n;
    g_autofree float *src = rt_copy_site(r, S(LMWB_SITE_MLP_IN, L), FALSE, NULL);
    g_autofree float *mlp_other = rt_copy_site(r, S(LMWB_SITE_MLP_OUT, L), FALSE, &n);
    g_assert_true(lmwb_runner_forward(r, clean, 1, T, &fo, &err));
    g_autofree float *attn_clean = rt_copy_site(r, S(LMWB_SITE_ATTN_OUT, L), FALSE, NULL);
    LmwbHook p = {.site = S(LMWB_SITE_MLP_IN, L), .op = LMWB_HOOK_PATCH, .source = src, .alpha = 1, .run_B = 1, .run_T = T};
    lmwb_runner_add_hook(r, &p, &err);
    g_assert_true(lmwb_runner_forward(r, clean, 1, T, NULL, &err));
    g_autofree float *mlp = rt_copy_site(r, S(LMWB_SITE_MLP_OUT, L), FALSE, NULL);
    g_autofree float *attn = rt_copy_site(r, S(LMWB_SITE_ATTN_OUT, L), FALSE, NULL);
    g_assert_cmpfloat(rt_max_diff(mlp, mlp_other, n), <, 1e-5);
    g_assert_cmpfloat(rt_max_diff(attn, attn_clean, n), ==, 0.0);
    lmwb_runner_free(r);
    lmwb_model_unref(m);
  }
}

static void test_grad_fd(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    const LmwbConfig *c = &m->cfg;
    LmwbRunner *r = lmwb_runner_new(m);
    GError *err = NULL;
    int B = 2, T = 6, C = c->d_model;
    int32_t ids[12];
    rt_ids(ids, 12, c->vocab_size, 71);
    LmwbForwardOptions fo = {.sites = ALL_SITES};
    g_assert_true(lmwb_runner_forward(r, ids, B, T, &fo, &err));
    LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
    double lv;
    g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &lv, &err));
    struct { LmwbSite s; int R; } sites[] = {
      {S(LMWB_SITE_Q_INPUT, 0), c->n_head * C}, {S(LMWB_SITE_K_INPUT, 1), c->n_kv_head * C},
      {S(LMWB_SITE_V_INPUT, 0), c->n_kv_head * C}, {S(LMWB_SITE_RESULT, 0), c->n_head * C},
      {S(LMWB_SITE_MLP_IN, 1), C},
    };
    float *grads[G_N_ELEMENTS(sites)];
    for (size_t s = 0; s < G_N_ELEMENTS(sites); s++) grads[s] = rt_copy_site(r, sites[s].s, TRUE, NULL);
    for (size_t s = 0; s < G_N_ELEMENTS(sites); s++) {
      g_autofree float *g = grads[s];
      int pts[][3] = {{0, 3, 1}, {1, 1, sites[s].R - 2}};
      for (int k = 0; k < 2; k++) {
        int b = pts[k][0], t = pts[k][1], i = pts[k][2];
        double num = rt_fd(r, ids, B, T, &fo, sites[s].s, b, t, i, 1e-2f, rt_mean_loss, NULL);
        g_autofree char *what = g_strdup_printf("%s %s (%d,%d,%d)", rt_fixtures[f], lmwb_site_info(sites[s].s.kind)->name,
                                                b, t, i);
        rt_check(what, rt_at(g, T, sites[s].R, b, t, i), num);
      }
    }
    lmwb_runner_free(r);
    lmwb_model_unref(m);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/sites/equals-plain", test_equals_plain);
  g_test_add_func("/sites/reader-per-head", test_reader_per_head);
  g_test_add_func("/sites/mlp-in", test_mlp_in);
  g_test_add_func("/sites/grad-fd", test_grad_fd);
  return g_test_run();
}
