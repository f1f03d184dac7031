/* Backward from anywhere (runner.h), each against finite differences of its own objective:
 * weighted sums of loss terms (cross-entropy, KL to a reference over all rows or one row per
 * sequence, logit difference, caller dlogits); gradients injected at sites; stopping at a layer;
 * accumulating over runs; and the linearised model of attribution (patterns, norm scales and the
 * MLP nonlinearity frozen), whose finite differences come from a forward that holds those
 * quantities fixed with hooks. */
#include "tests/unit/app/engine/runner_test_util.h"

static LmwbSite S(LmwbSiteKind k, int l) { return (LmwbSite){k, l}; }
#define EMBED S(LMWB_SITE_EMBED, -1)

/* ---- objectives computed on the host from the logits ---------------------------------------- */

typedef struct {
  int B, T, V;
  const float *ref;      /* KL: reference log-probabilities */
  const int *pos;        /* per sequence (NULL: every row) */
  const int32_t *a, *b;  /* logit difference */
  const float *dlogits;
  const LmwbGradSeed *seeds; /* injected: sum of <seed, activation> */
  int n_seeds;
} Obj;

static double log_softmax_at(const float *row, int V, int i) {
  double mx = row[0], s = 0;
  for (int v = 1; v < V; v++) mx = fmax(mx, row[v]);
  for (int v = 0; v < V; v++) s += exp(row[v] - mx);
  return row[i] - mx - log(s);
}

static double kl_row(const float *row, const float *ref, int V) {
  double k = 0;
  for (int v = 0; v < V; v++) k += exp(ref[v]) * (ref[v] - log_softmax_at(row, V, v));
  return k;
}

static double obj_kl(LmwbRunner *r, void *u) {
  Obj *o = u;
  const float *lg = lmwb_runner_logits(r, NULL);
  double s = 0;
  for (int b = 0; b < o->B; b++) {
    if (o->pos) {
      s += kl_row(lg + ((size_t)b * o->T + o->pos[b]) * o->V, o->ref + (size_t)b * o->V, o->V);
      continue;
    }
    for (int t = 0; t < o->T; t++) s += kl_row(lg + ((size_t)b * o->T + t) * o->V, o->ref + ((size_t)b * o->T + t) * o->V, o->V);
  }
  return s / (o->pos ? o->B : o->B * o->T);
}

static double obj_logit_diff(LmwbRunner *r, void *u) {
  Obj *o = u;
  const float *lg = lmwb_runner_logits(r, NULL);
  double s = 0;
  for (int b = 0; b < o->B; b++) {
    const float *row = lg + ((size_t)b * o->T + o->pos[b]) * o->V;
    s += (double)row[o->a[b]] - row[o->b[b]];
  }
  return s / o->B;
}

static double obj_dlogits(LmwbRunner *r, void *u) {
  Obj *o = u;
  const float *lg = lmwb_runner_logits(r, NULL);
  double s = 0;
  for (size_t i = 0; i < (size_t)o->B * o->T * o->V; i++) s += (double)o->dlogits[i] * lg[i];
  return s;
}

static double obj_seeds(LmwbRunner *r, void *u) {
  Obj *o = u;
  double s = 0;
  for (int k = 0; k < o->n_seeds; k++) {
    int64_t shape[4];
    int nd;
    GError *err = NULL;
    const float *a = lmwb_runner_activation(r, o->seeds[k].site, shape, &nd, &err);
    g_assert_no_error(err);
    for (size_t i = 0; i < rt_numel(shape, nd); i++) s += (double)o->seeds[k].grad[i] * a[i];
  }
  return s;
}

static float *randn(size_t n, float scale, guint32 seed) {
  float *x = g_new(float, n);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    double u1 = ((seed >> 8) + 1.0) / 16777217.0;
    seed = seed * 1664525u + 1013904223u;
    double u2 = (seed >> 8) / 16777216.0;
    x[i] = (float)(scale * sqrt(-2 * log(u1)) * cos(2 * G_PI * u2));
  }
  return x;
}

/* Analytic gradient at hook_embed against finite differences at a few elements. */
static void check_embed(LmwbRunner *r, const float *g, const int32_t *ids, int B, int T, const LmwbForwardOptions *fo,
                        RtObjective obj, void *user, const char *what) {
  int C = lmwb_runner_model(r)->cfg.d_model;
  int pts[][3] = {{0, 1, 3}, {B - 1, T - 2, C - 5}, {0, T - 1, C / 2}};
  for (size_t k = 0; k < G_N_ELEMENTS(pts); k++) {
    int b = pts[k][0], t = pts[k][1], i = pts[k][2];
    double num = rt_fd(r, ids, B, T, fo, EMBED, b, t, i, 1e-2f, obj, user);
    g_autofree char *w = g_strdup_printf("%s at (%d,%d,%d)", what, b, t, i);
    rt_check(w, rt_at(g, T, C, b, t, i), num);
  }
}

/* ---- loss terms ----------------------------------------------------------------------------- */

static void test_loss_terms(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    LmwbRunner *r = lmwb_runner_new(m);
    GError *err = NULL;
    int B = 2, T = 5, V = m->cfg.vocab_size, C = m->cfg.d_model;
    int32_t ids[10], other[10];
    rt_ids(ids, 10, V, 81);
    rt_ids(other, 10, V, 82);
    /* the reference distribution: the model's own on other text */
    g_assert_true(lmwb_runner_forward(r, other, B, T, NULL, &err));
    g_autofree float *ref = g_memdup2(lmwb_runner_logits(r, NULL), sizeof(float) * B * T * V);
    for (size_t row = 0; row < (size_t)B * T; row++) {
      float *x = ref + row * V;
      g_autofree float *lp = g_new(float, V);
      for (int v = 0; v < V; v++) lp[v] = (float)log_softmax_at(x, V, v);
      memcpy(x, lp, sizeof(float) * V);
    }
    int pos[2] = {4, 2};
    int32_t ta[2] = {3, 17}, tb[2] = {9, 3};
    g_autofree float *ref_rows = g_new(float, (size_t)B * V);
    for (int b = 0; b < B; b++) memcpy(ref_rows + (size_t)b * V, ref + ((size_t)b * T + pos[b]) * V, sizeof(float) * V);
    g_autofree float *dl = randn((size_t)B * T * V, 0.1f, 83);
    Obj kl_all = {B, T, V, .ref = ref}, kl_pos = {B, T, V, .ref = ref_rows, .pos = pos};
    Obj ld = {B, T, V, .pos = pos, .a = ta, .b = tb}, dd = {B, T, V, .dlogits = dl};
    struct { const char *name; LmwbLoss term; RtObjective obj; Obj *o; } terms[] = {
      {"kl", {.kind = LMWB_LOSS_KL, .ref_logprobs = ref}, obj_kl, &kl_all},
      {"kl at positions", {.kind = LMWB_LOSS_KL, .ref_logprobs = ref_rows, .positions = pos}, obj_kl, &kl_pos},
      {"logit difference", {.kind = LMWB_LOSS_LOGIT_DIFF, .positions = pos, .tok_a = ta, .tok_b = tb}, obj_logit_diff, &ld},
      {"dlogits", {.kind = LMWB_LOSS_DLOGITS, .dlogits = dl}, obj_dlogits, &dd},
      {"cross-entropy", {.kind = LMWB_LOSS_NEXT_TOKEN}, rt_mean_loss, NULL},
    };
    float *g[G_N_ELEMENTS(terms)];
    for (size_t k = 0; k < G_N_ELEMENTS(terms); k++) {
      g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
      double v = 0;
      g_assert_true(lmwb_runner_backward(r, &terms[k].term, 1, NULL, &v, &err));
      g_assert_no_error(err);
      if (terms[k].term.kind != LMWB_LOSS_DLOGITS) g_assert_cmpfloat(fabs(v - terms[k].obj(r, terms[k].o)), <, 1e-4 * (1 + fabs(v)));
      g[k] = rt_copy_site(r, EMBED, TRUE, NULL);
      g_autofree char *what = g_strdup_printf("%s %s", rt_fixtures[f], terms[k].name);
      check_embed(r, g[k], ids, B, T, NULL, terms[k].obj, terms[k].o, what);
    }
    /* A weighted sum is the sum of the weighted gradients, and its value the weighted sum. */
    LmwbLoss sum[2] = {terms[0].term, terms[2].term};
    sum[0].weight = 0.7;
    sum[1].weight = -2.0;
    g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
    double v = 0;
    g_assert_true(lmwb_runner_backward(r, sum, 2, NULL, &v, &err));
    g_assert_cmpfloat(fabs(v - (0.7 * obj_kl(r, &kl_all) - 2.0 * obj_logit_diff(r, &ld))), <, 1e-4 * (1 + fabs(v)));
    g_autofree float *gs = rt_copy_site(r, EMBED, TRUE, NULL);
    for (size_t i = 0; i < (size_t)B * T * C; i++) g_assert_cmpfloat(fabs(gs[i] - (0.7 * g[0][i] - 2.0 * g[2][i])), <, 1e-5);
    for (size_t k = 0; k < G_N_ELEMENTS(terms); k++) g_free(g[k]);
    lmwb_runner_free(r);
    lmwb_model_unref(m);
  }
}

/* ---- injected gradients, stopping, accumulating ------------------------------------------------ */

static void test_backward_from(void) {
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    LmwbModel *m = rt_load(rt_fixtures[f]);
    const LmwbConfig *c = &m->cfg;
    LmwbRunner *r = lmwb_runner_new(m);
    GError *err = NULL;
    int B = 2, T = 5, C = c->d_model;
    int32_t ids[10];
    rt_ids(ids, 10, c->vocab_size, 91);
    size_t n = (size_t)B * T * C;
    g_autofree float *s1 = randn(n, 1, 92), *s2 = randn(n, 1, 93), *s3 = randn((size_t)B * T * c->d_ff, 1, 94);
    LmwbGradSeed seeds[] = {{S(LMWB_SITE_LN2, 1), s1}, {S(LMWB_SITE_LN_FINAL, -1), s2}, {S(LMWB_SITE_MLP_POST, 0), s3}};
    Obj o = {B, T, c->vocab_size, .seeds = seeds, .n_seeds = 3};
    LmwbForwardOptions last = {.last_logits_only = true}; /* injected gradients need no logits */
    g_assert_true(lmwb_runner_forward(r, ids, B, T, &last, &err));
    g_assert_true(lmwb_runner_backward_from(r, seeds, 3, NULL, &err));
    g_assert_no_error(err);
    g_autofree float *g = rt_copy_site(r, EMBED, TRUE, NULL);
    g_autofree float *g_l1 = rt_copy_site(r, S(LMWB_SITE_RESID_PRE, 1), TRUE, NULL);
    g_autofree char *what = g_strdup_printf("%s injected", rt_fixtures[f]);
    check_embed(r, g, ids, B, T, &last, obj_seeds, &o, what);
    /* only ln2 of layer 1 seeded: nothing above it has a gradient, and resid_pre 1 matches */
    g_assert_true(lmwb_runner_forward(r, ids, B, T, &last, &err));
    g_assert_true(lmwb_runner_backward_from(r, seeds, 1, NULL, &err));
    g_autofree float *post = rt_copy_site(r, S(LMWB_SITE_RESID_POST, c->n_layer - 1), TRUE, NULL);
    g_assert_cmpfloat(rt_max_abs(post, n), ==, 0.0);
    /* stopping at layer 1 gives the same gradients down to it, and none below */
    g_assert_true(lmwb_runner_forward(r, ids, B, T, &last, &err));
    LmwbBackwardOptions stop = {.stop_layer = 1};
    g_assert_true(lmwb_runner_backward_from(r, seeds, 2, &stop, &err));
    g_autofree float *g_l1_stop = rt_copy_site(r, S(LMWB_SITE_RESID_PRE, 1), TRUE, NULL);
    g_assert_true(lmwb_runner_forward(r, ids, B, T, &last, &err));
    g_assert_true(lmwb_runner_backward_from(r, seeds, 2, NULL, &err));
    g_autofree float *g_l1_two = rt_copy_site(r, S(LMWB_SITE_RESID_PRE, 1), TRUE, NULL);
    g_assert_cmpfloat(rt_max_diff(g_l1_stop, g_l1_two, n), ==, 0.0);
    g_assert_true(lmwb_runner_forward(r, ids, B, T, &last, &err));
    g_assert_true(lmwb_runner_backward_from(r, seeds, 2, &stop, &err));
    int64_t shape[4];
    g_assert_null(lmwb_runner_grad(r, S(LMWB_SITE_MLP_POST, 0), shape, NULL, &err));
    g_assert_nonnull(strstr(err->message, "stopped at layer 1"));
    g_clear_error(&err);
    /* a seed below the stop, or at a site the run did not compute, is refused */
    g_assert_false(lmwb_runner_backward_from(r, seeds + 2, 1, &stop, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    g_clear_error(&err);
    LmwbGradSeed bad = {S(LMWB_SITE_RESULT, 0), s1};
    g_assert_false(lmwb_runner_backward_from(r, &bad, 1, NULL, &err));
    g_assert_nonnull(strstr(err->message, "did not compute"));
    g_clear_error(&err);
    (void)g_l1;
    lmwb_runner_free(r);
    lmwb_model_unref(m);
  }
}

static void test_accumulate(void) {
  LmwbModel *m = rt_load("llama_gqa");
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  int B = 2, T = 5;
  size_t n = (size_t)B * T * m->cfg.d_model;
  int32_t a[10], b[10];
  rt_ids(a, 10, m->cfg.vocab_size, 101);
  rt_ids(b, 10, m->cfg.vocab_size, 102);
  LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
  double v;
  g_assert_true(lmwb_runner_forward(r, b, B, T, NULL, &err));
  g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &v, &err));
  g_autofree float *gb = rt_copy_site(r, S(LMWB_SITE_RESID_MID, 1), TRUE, NULL);
  g_assert_true(lmwb_runner_forward(r, a, B, T, NULL, &err));
  g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &v, &err));
  g_autofree float *ga = rt_copy_site(r, S(LMWB_SITE_RESID_MID, 1), TRUE, NULL);
  /* a's gradients are held; b's run adds to them */
  LmwbBackwardOptions acc = {.accumulate_grads = true};
  g_assert_true(lmwb_runner_forward(r, b, B, T, NULL, &err));
  g_assert_true(lmwb_runner_backward(r, &loss, 1, &acc, &v, &err));
  g_assert_true(lmwb_runner_forward(r, b, B, T, NULL, &err));
  g_assert_true(lmwb_runner_backward(r, &loss, 1, &acc, &v, &err));
  g_autofree float *sum = rt_copy_site(r, S(LMWB_SITE_RESID_MID, 1), TRUE, NULL);
  for (size_t i = 0; i < n; i++) g_assert_cmpfloat(fabsf(sum[i] - (ga[i] + 2 * gb[i])), <, 1e-6f);
  /* a backward without the flag starts over */
  g_assert_true(lmwb_runner_forward(r, a, B, T, NULL, &err));
  g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &v, &err));
  g_autofree float *again = rt_copy_site(r, S(LMWB_SITE_RESID_MID, 1), TRUE, NULL);
  g_assert_cmpfloat(rt_max_diff(again, ga, n), ==, 0.0);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

/* ---- the linearised model --------------------------------------------------------------------- */

/* What a frozen forward holds: the plain run's patterns, norm scales and MLP multipliers, and the
 * current run's norm inputs (observed on the way). */
typedef struct {
  LmwbModel *m;
  int N, nl;
  unsigned freeze;
  float **pattern, **rstd1, **rstd2, *rstdf, **mult, **mlp_out;
  float **in1, **in2, *inf, **lin; /* current norm inputs; gated: the current up projection */
} Lin;

typedef struct {
  Lin *lin;
  int layer, which;
} LinHook;

static float *rstd_of(const LmwbConfig *c, const float *x, int N) {
  float *r = g_new(float, N);
  for (int n = 0; n < N; n++) {
    const float *row = x + (size_t)n * c->d_model;
    double mean = 0, var = 0;
    if (c->norm == LMWB_NORM_LAYER)
      for (int i = 0; i < c->d_model; i++) mean += row[i] / c->d_model;
    for (int i = 0; i < c->d_model; i++) var += (row[i] - mean) * (row[i] - mean) / c->d_model;
    r[n] = (float)(1 / sqrt(var + c->norm_eps));
  }
  return r;
}

/* A norm with its scale held at rstd: (x - mean(x)) * rstd * w + b (RMSNorm: x * rstd * w). */
static void frozen_norm(const LmwbConfig *c, float *out, const float *x, const float *rstd, const float *w, const float *b,
                        int N) {
  for (int n = 0; n < N; n++) {
    const float *row = x + (size_t)n * c->d_model;
    double mean = 0;
    if (c->norm == LMWB_NORM_LAYER)
      for (int i = 0; i < c->d_model; i++) mean += row[i] / c->d_model;
    for (int i = 0; i < c->d_model; i++)
      out[(size_t)n * c->d_model + i] = (float)((row[i] - mean) * rstd[n] * w[i] + (b ? b[i] : 0));
  }
}

enum { H_IN1, H_IN2, H_INF, H_LN1, H_LN2, H_LNF, H_PATTERN, H_LIN, H_POST, H_MLP_OUT };

static void lin_hook(float *block, const LmwbHookCtx *ctx, void *user) {
  LinHook *h = user;
  Lin *L = h->lin;
  const LmwbConfig *c = &L->m->cfg;
  size_t NC = (size_t)L->N * c->d_model, NF = (size_t)L->N * c->d_ff;
  const LmwbLayerWeights *w = h->layer >= 0 ? &L->m->w.layers[h->layer] : NULL;
  switch (h->which) {
    case H_IN1: memcpy(L->in1[h->layer], block, NC * sizeof(float)); break;
    case H_IN2: memcpy(L->in2[h->layer], block, NC * sizeof(float)); break;
    case H_INF: memcpy(L->inf, block, NC * sizeof(float)); break;
    case H_LN1: frozen_norm(c, block, L->in1[h->layer], L->rstd1[h->layer], w->ln1_w, w->ln1_b, L->N); break;
    case H_LN2:
      frozen_norm(c, block, c->parallel_residual ? L->in1[h->layer] : L->in2[h->layer], L->rstd2[h->layer], w->ln2_w,
                  w->ln2_b, L->N);
      break;
    case H_LNF: frozen_norm(c, block, L->inf, L->rstdf, L->m->w.lnf_w, L->m->w.lnf_b, L->N); break;
    case H_PATTERN:
      memcpy(block, L->pattern[h->layer], (size_t)ctx->B * ctx->rows_per_seq * ctx->R * sizeof(float));
      break;
    case H_LIN: memcpy(L->lin[h->layer], block, NF * sizeof(float)); break;
    case H_POST:
      /* gelu: the multiplier times the current pre-activation; swiglu: silu(gate0) times up */
      for (size_t i = 0; i < NF; i++) block[i] = L->mult[h->layer][i] * L->lin[h->layer][i];
      break;
    case H_MLP_OUT: memcpy(block, L->mlp_out[h->layer], NC * sizeof(float)); break;
  }
}

static void lin_free(Lin *L) {
  for (int l = 0; l < L->nl; l++) {
    g_free(L->pattern[l]), g_free(L->rstd1[l]), g_free(L->rstd2[l]), g_free(L->mult[l]);
    g_free(L->in1[l]), g_free(L->in2[l]), g_free(L->lin[l]), g_free(L->mlp_out[l]);
  }
  g_free(L->pattern), g_free(L->rstd1), g_free(L->rstd2), g_free(L->mult), g_free(L->in1), g_free(L->in2), g_free(L->lin);
  g_free(L->mlp_out);
  g_free(L->rstdf), g_free(L->inf);
}

/* After a plain forward: record what the frozen forward holds, and install its hooks. */
static void lin_install(Lin *L, LinHook *hs, LmwbRunner *r) {
  const LmwbConfig *c = &L->m->cfg;
  GError *err = NULL;
  int nl = L->nl = c->n_layer;
  size_t NC = (size_t)L->N * c->d_model, NF = (size_t)L->N * c->d_ff;
#define NEWV(x) x = g_new0(float *, nl)
  NEWV(L->pattern), NEWV(L->rstd1), NEWV(L->rstd2), NEWV(L->mult), NEWV(L->in1), NEWV(L->in2), NEWV(L->lin);
  NEWV(L->mlp_out);
#undef NEWV
  L->inf = g_new(float, NC);
  g_autofree float *last = rt_copy_site(r, S(LMWB_SITE_RESID_POST, nl - 1), FALSE, NULL);
  L->rstdf = rstd_of(c, last, L->N);
  int k = 0;
#define HOOK(kind, layer, which) do { \
    hs[k] = (LinHook){L, layer, which}; \
    LmwbHook hk = {.site = S(kind, (layer)), .op = LMWB_HOOK_CALL, .fn = lin_hook, .user = &hs[k]}; \
    g_assert_cmpint(lmwb_runner_add_hook(r, &hk, &err), >, 0); \
    k++; } while (0)
  for (int l = 0; l < nl; l++) {
    g_autofree float *x1 = rt_copy_site(r, S(LMWB_SITE_RESID_PRE, l), FALSE, NULL);
    L->rstd1[l] = rstd_of(c, x1, L->N);
    g_autofree float *x2 = c->parallel_residual ? NULL : rt_copy_site(r, S(LMWB_SITE_RESID_MID, l), FALSE, NULL);
    L->rstd2[l] = rstd_of(c, x2 ? x2 : x1, L->N);
    L->pattern[l] = rt_copy_site(r, S(LMWB_SITE_PATTERN, l), FALSE, NULL);
    L->mlp_out[l] = rt_copy_site(r, S(LMWB_SITE_MLP_OUT, l), FALSE, NULL);
    L->in1[l] = g_new(float, NC);
    L->in2[l] = g_new(float, NC);
    L->lin[l] = g_new(float, NF);
    g_autofree float *pre = rt_copy_site(r, S(LMWB_SITE_MLP_PRE, l), FALSE, NULL);
    L->mult[l] = g_new(float, NF);
    for (size_t i = 0; i < NF; i++) {
      double x = pre[i];
      L->mult[l][i] = (float)(c->gated_mlp ? x / (1 + exp(-x))
                              : c->act == LMWB_ACT_GELU_TANH ? 0.5 * (1 + tanh(sqrt(2 / G_PI) * (x + 0.044715 * x * x * x)))
                                                             : 0.5 * (1 + erf(x / sqrt(2.0))));
    }
  }
  for (int l = 0; l < nl; l++) {
    if (L->freeze & LMWB_FREEZE_NORM) {
      HOOK(LMWB_SITE_RESID_PRE, l, H_IN1);
      HOOK(LMWB_SITE_LN1, l, H_LN1);
      if (!c->parallel_residual) HOOK(LMWB_SITE_RESID_MID, l, H_IN2);
      HOOK(LMWB_SITE_LN2, l, H_LN2);
    }
    if (L->freeze & LMWB_FREEZE_PATTERN) HOOK(LMWB_SITE_PATTERN, l, H_PATTERN);
    if (L->freeze & LMWB_FREEZE_MLP) {
      HOOK(c->gated_mlp ? LMWB_SITE_MLP_PRE_LINEAR : LMWB_SITE_MLP_PRE, l, H_LIN);
      HOOK(LMWB_SITE_MLP_POST, l, H_POST);
    }
    if (L->freeze & LMWB_FREEZE_MLP_OUT) HOOK(LMWB_SITE_MLP_OUT, l, H_MLP_OUT);
  }
  if (L->freeze & LMWB_FREEZE_NORM) {
    HOOK(LMWB_SITE_RESID_POST, nl - 1, H_INF);
    HOOK(LMWB_SITE_LN_FINAL, -1, H_LNF);
  }
#undef HOOK
}

static void test_frozen(void) {
  const unsigned modes[] = {LMWB_FREEZE_NORM, LMWB_FREEZE_MLP, LMWB_FREEZE_MLP_OUT,
                            LMWB_FREEZE_PATTERN | LMWB_FREEZE_NORM | LMWB_FREEZE_MLP,
                            LMWB_FREEZE_PATTERN | LMWB_FREEZE_NORM | LMWB_FREEZE_MLP_OUT};
  for (size_t f = 0; f < G_N_ELEMENTS(rt_fixtures); f++) {
    for (size_t md = 0; md < G_N_ELEMENTS(modes); md++) {
      LmwbModel *m = rt_load(rt_fixtures[f]);
      LmwbRunner *r = lmwb_runner_new(m);
      GError *err = NULL;
      int B = 2, T = 5;
      int32_t ids[10];
      rt_ids(ids, 10, m->cfg.vocab_size, 111);
      g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
      LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
      LmwbBackwardOptions bo = {.freeze = modes[md]};
      double v;
      g_assert_true(lmwb_runner_backward(r, &loss, 1, &bo, &v, &err));
      g_autofree float *g = rt_copy_site(r, EMBED, TRUE, NULL);
      Lin L = {.m = m, .N = B * T, .freeze = modes[md]};
      LinHook hs[128];
      lin_install(&L, hs, r);
      /* the frozen forward reproduces the plain one at the point it was frozen at */
      g_assert_true(lmwb_runner_forward(r, ids, B, T, NULL, &err));
      g_assert_cmpfloat(fabs(rt_mean_loss(r, NULL) - v), <, 1e-4);
      g_autofree char *what = g_strdup_printf("%s frozen %#x", rt_fixtures[f], modes[md]);
      check_embed(r, g, ids, B, T, NULL, rt_mean_loss, NULL, what);
      lin_free(&L);
      lmwb_runner_free(r);
      lmwb_model_unref(m);
    }
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/backward/loss-terms", test_loss_terms);
  g_test_add_func("/backward/from-sites", test_backward_from);
  g_test_add_func("/backward/accumulate", test_accumulate);
  g_test_add_func("/backward/frozen", test_frozen);
  return g_test_run();
}
