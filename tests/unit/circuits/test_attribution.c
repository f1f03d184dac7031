/* Attribution graphs (circuits/attribution.h) on random checkpoints and random transcoder sets,
 * against the local replacement model built independently with hooks: attention patterns, norm
 * scales and MLP outputs held at their values on the prompt.
 *  - every edge s -> t equals the change of t's value when s's output is removed from that model
 *    (the model is linear, so this is the finite difference with the whole step);
 *  - a target's incoming weights plus its bias equal its value, the bias being the target's value in
 *    that model with every node's output removed (embeddings zero, MLP outputs = transcoder b_dec);
 *  - nothing flows from later layers or later positions;
 *  - pruning keeps tokens and logits, gives kept features incoming and outgoing edges, and its
 *    influence and scores match a small graph worked out by hand. */
#include "circuits/attribution.h"
#include "app/core/errors.h"
#include "app/formats/tokenizer.h"
#include <math.h>
#include <string.h>

static LmwbSite S(LmwbSiteKind k, int l) { return (LmwbSite){k, l}; }

static LmwbModel *load_fixture(const char *name) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", "tests/fixtures/models", name, NULL);
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  return m;
}

static guint32 rng = 7;
static float urand(void) {
  rng = rng * 1664525u + 1013904223u;
  return (rng >> 8) / 16777216.0f * 2 - 1;
}

static LmwbTranscoderSet *random_set(const LmwbConfig *c, int d_sae) {
  LmwbTranscoderSet *set = lmwb_transcoder_set_new(c->n_layer);
  GError *err = NULL;
  for (int L = 0; L < c->n_layer; L++) {
    LmwbTranscoder *tc = lmwb_transcoder_new(c->d_model, d_sae, c->d_model, LMWB_TC_RELU, 0, &err);
    for (size_t i = 0; i < (size_t)c->d_model * d_sae; i++) tc->W_enc[i] = 0.15f * urand(), tc->W_dec[i] = 0.3f * urand();
    for (int j = 0; j < d_sae; j++) tc->b_enc[j] = 0.1f * urand() - 0.05f;
    for (int j = 0; j < c->d_model; j++) tc->b_dec[j] = 0.1f * urand();
    tc->in = S(LMWB_SITE_LN2, L);
    tc->out = S(LMWB_SITE_MLP_OUT, L);
    set->layers[L] = tc;
  }
  return set;
}

/* ---- the local replacement model, with hooks ------------------------------------------------- */

typedef struct {
  LmwbModel *m;
  int T, nl;
  float **pattern, **mlp_out, *resid0;   /* held: patterns; MLP outputs; the embeddings (set) */
  float **rstd1, **rstd2, *rstdf;          /* norm scales */
  float **in1, **in2, *inf;                /* the norms' current inputs */
} Frozen;

typedef struct {
  Frozen *f;
  int layer, what;
} FHook;

enum { F_RESID0, F_IN1, F_IN2, F_INF, F_LN1, F_LN2, F_LNF, F_PATTERN, F_MLP_OUT };

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

static void fhook(float *block, const LmwbHookCtx *ctx, void *user) {
  FHook *h = user;
  Frozen *f = h->f;
  const LmwbConfig *c = &f->m->cfg;
  size_t NC = (size_t)f->T * c->d_model;
  const LmwbLayerWeights *w = h->layer >= 0 ? &f->m->w.layers[h->layer] : NULL;
  switch (h->what) {
    case F_RESID0: memcpy(block, f->resid0, NC * sizeof(float)); break;
    case F_IN1: memcpy(f->in1[h->layer], block, NC * sizeof(float)); break;
    case F_IN2: memcpy(f->in2[h->layer], block, NC * sizeof(float)); break;
    case F_INF: memcpy(f->inf, block, NC * sizeof(float)); break;
    case F_LN1: frozen_norm(c, block, f->in1[h->layer], f->rstd1[h->layer], w->ln1_w, w->ln1_b, f->T); break;
    case F_LN2:
      frozen_norm(c, block, c->parallel_residual ? f->in1[h->layer] : f->in2[h->layer], f->rstd2[h->layer], w->ln2_w,
                  w->ln2_b, f->T);
      break;
    case F_LNF: frozen_norm(c, block, f->inf, f->rstdf, f->m->w.lnf_w, f->m->w.lnf_b, f->T); break;
    case F_PATTERN: memcpy(block, f->pattern[h->layer], (size_t)ctx->B * ctx->rows_per_seq * ctx->R * sizeof(float)); break;
    case F_MLP_OUT: memcpy(block, f->mlp_out[h->layer], NC * sizeof(float)); break;
  }
}

static float *copy_act(LmwbRunner *r, LmwbSite s, size_t n) {
  int64_t shape[4];
  GError *err = NULL;
  const float *p = lmwb_runner_activation(r, s, shape, NULL, &err);
  g_assert_no_error(err);
  return g_memdup2(p, n * sizeof(float));
}

/* After a plain forward of the prompt: record what the model holds fixed, install its hooks. */
static void frozen_install(Frozen *f, FHook *hs, LmwbRunner *r) {
  const LmwbConfig *c = &f->m->cfg;
  int nl = f->nl = c->n_layer, T = f->T;
  size_t NC = (size_t)T * c->d_model;
  f->pattern = g_new0(float *, nl), f->mlp_out = g_new0(float *, nl), f->rstd1 = g_new0(float *, nl);
  f->rstd2 = g_new0(float *, nl), f->in1 = g_new0(float *, nl), f->in2 = g_new0(float *, nl);
  f->resid0 = copy_act(r, S(LMWB_SITE_RESID_PRE, 0), NC);
  f->inf = g_new(float, NC);
  g_autofree float *last = copy_act(r, S(LMWB_SITE_RESID_POST, nl - 1), NC);
  f->rstdf = rstd_of(c, last, T);
  for (int l = 0; l < nl; l++) {
    g_autofree float *x1 = copy_act(r, S(LMWB_SITE_RESID_PRE, l), NC);
    g_autofree float *x2 = c->parallel_residual ? NULL : copy_act(r, S(LMWB_SITE_RESID_MID, l), NC);
    f->rstd1[l] = rstd_of(c, x1, T);
    f->rstd2[l] = rstd_of(c, x2 ? x2 : x1, T);
    f->pattern[l] = copy_act(r, S(LMWB_SITE_PATTERN, l), (size_t)c->n_head * T * T);
    f->mlp_out[l] = copy_act(r, S(LMWB_SITE_MLP_OUT, l), NC);
    f->in1[l] = g_new(float, NC), f->in2[l] = g_new(float, NC);
  }
  int k = 0;
  GError *err = NULL;
#define HOOK(st, layer, w) do { hs[k] = (FHook){f, layer, w}; \
    LmwbHook hk = {.site = st, .op = LMWB_HOOK_CALL, .fn = fhook, .user = &hs[k]}; \
    g_assert_cmpint(lmwb_runner_add_hook(r, &hk, &err), >, 0); k++; } while (0)
  HOOK(S(LMWB_SITE_RESID_PRE, 0), 0, F_RESID0);
  for (int l = 0; l < nl; l++) {
    HOOK(S(LMWB_SITE_RESID_PRE, l), l, F_IN1);
    HOOK(S(LMWB_SITE_LN1, l), l, F_LN1);
    HOOK(S(LMWB_SITE_PATTERN, l), l, F_PATTERN);
    if (!c->parallel_residual) HOOK(S(LMWB_SITE_RESID_MID, l), l, F_IN2);
    HOOK(S(LMWB_SITE_LN2, l), l, F_LN2);
    HOOK(S(LMWB_SITE_MLP_OUT, l), l, F_MLP_OUT);
  }
  HOOK(S(LMWB_SITE_RESID_POST, nl - 1), nl - 1, F_INF);
  HOOK(S(LMWB_SITE_LN_FINAL, -1), -1, F_LNF);
#undef HOOK
}

static void frozen_free(Frozen *f) {
  for (int l = 0; l < f->nl; l++) {
    g_free(f->pattern[l]), g_free(f->mlp_out[l]), g_free(f->rstd1[l]), g_free(f->rstd2[l]);
    g_free(f->in1[l]), g_free(f->in2[l]);
  }
  g_free(f->pattern), g_free(f->mlp_out), g_free(f->rstd1), g_free(f->rstd2), g_free(f->in1), g_free(f->in2);
  g_free(f->resid0), g_free(f->inf), g_free(f->rstdf);
}

/* Every target's value in the current run of the frozen model (features: pre-activation;
 * logits: demeaned logit at the last position). */
static void target_values(LmwbRunner *r, const LmwbAttribution *a, const LmwbTranscoderSet *set, double *out) {
  const LmwbConfig *c = &lmwb_runner_model(r)->cfg;
  int T = a->n_pos, C = c->d_model, V = c->vocab_size;
  int64_t shape[4];
  GError *err = NULL;
  for (int k = 0; k < a->n_features; k++) {
    const LmwbTranscoder *tc = set->layers[a->feat_layer[k]];
    const float *x = lmwb_runner_activation(r, S(LMWB_SITE_LN2, a->feat_layer[k]), shape, NULL, &err);
    double s = tc->b_enc[a->feat_index[k]];
    for (int i = 0; i < C; i++) s += (double)x[(size_t)a->feat_pos[k] * C + i] * tc->W_enc[(size_t)i * tc->d_sae + a->feat_index[k]];
    out[k] = s;
  }
  const float *lg = lmwb_runner_logits(r, NULL) + (size_t)(T - 1) * V;
  double mean = 0;
  for (int v = 0; v < V; v++) mean += lg[v] / V;
  for (int i = 0; i < a->n_logits; i++) out[a->n_features + i] = lg[a->logit_token[i]] - mean;
}

static int row_of_target(const LmwbAttribution *a, int k) {
  return k < a->n_features ? k : lmwb_attr_logit_node(a, k - a->n_features);
}

static void check_model(const char *fixture) {
  LmwbModel *m = load_fixture(fixture);
  const LmwbConfig *c = &m->cfg;
  GError *err = NULL;
  LmwbTranscoderSet *set = random_set(c, 48);
  int32_t ids[7] = {11, 4, 60, 23, 8, 90, 31};
  int T = 7, nl = c->n_layer, C = c->d_model;
  LmwbAttributionOptions o = {.batch = 5};
  LmwbAttribution *a = lmwb_attribute(m, set, ids, T, &o, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(a->n_features, >, 10);
  g_assert_cmpint(a->n_logits, >=, 1);
  int nt = a->n_features + a->n_logits;
  /* the frozen model on the prompt gives back the targets' values */
  LmwbRunner *r = lmwb_runner_new(m);
  g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  Frozen f = {.m = m, .T = T};
  FHook hs[256];
  frozen_install(&f, hs, r);
  g_autofree double *v = g_new(double, nt), *v0 = g_new(double, nt), *vs = g_new(double, nt);
  g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  target_values(r, a, set, v);
  for (int k = 0; k < a->n_features; k++) g_assert_cmpfloat(fabs(v[k] - a->feat_pre[k]), <, 1e-4 * (1 + fabs(v[k])));
  for (int i = 0; i < a->n_logits; i++) g_assert_cmpfloat(fabs(v[a->n_features + i] - a->logit_value[i]), <, 1e-4);
  /* incoming weights + bias = value, the bias from the model with every node's output removed */
  g_autofree float *resid0 = f.resid0;
  float **outs = f.mlp_out;
  f.resid0 = g_new0(float, (size_t)T * C);
  f.mlp_out = g_new0(float *, nl);
  for (int L = 0; L < nl; L++) {
    f.mlp_out[L] = g_new(float, (size_t)T * C);
    for (int t = 0; t < T; t++) memcpy(f.mlp_out[L] + (size_t)t * C, set->layers[L]->b_dec, sizeof(float) * C);
  }
  g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
  target_values(r, a, set, v0);
  for (int k = 0; k < nt; k++) {
    const float *row = a->adj + (size_t)row_of_target(a, k) * a->n_nodes;
    double sum = 0, scale = fabs(v[k]) + fabs(v0[k]);
    for (int s = 0; s < a->n_nodes; s++) sum += row[s], scale += fabs(row[s]);
    if (fabs(sum + v0[k] - v[k]) > 1e-4 * scale) g_error("%s target %d: edges %.6g + bias %.6g != value %.6g", fixture, k, sum, v0[k], v[k]);
  }
  g_free(f.resid0);
  for (int L = 0; L < nl; L++) g_free(f.mlp_out[L]);
  g_free(f.mlp_out);
  f.resid0 = resid0, f.mlp_out = outs;
  resid0 = NULL; /* owned by f again */
  /* single edges: remove one source's output, the target moves by the edge's weight */
  int checked = 0;
  for (int k = 0; k < nt && checked < 12; k += 3) {
    const float *row = a->adj + (size_t)row_of_target(a, k) * a->n_nodes;
    for (int s = 0; s < a->n_nodes && checked < 12; s += 7) {
      int L = -1, pos = -1;
      g_autofree float *keep = NULL;
      float *dst = NULL;
      if (s < a->n_features) {
        L = a->feat_layer[s], pos = a->feat_pos[s];
        const LmwbTranscoder *tc = set->layers[L];
        dst = f.mlp_out[L] + (size_t)pos * C;
        keep = g_memdup2(dst, sizeof(float) * C);
        for (int i = 0; i < C; i++) dst[i] -= a->feat_act[s] * tc->W_dec[(size_t)a->feat_index[s] * C + i];
      } else if (s < lmwb_attr_token_node(a, 0)) {
        L = (s - a->n_features) / T, pos = (s - a->n_features) % T;
        /* the error's output: the clean MLP output minus the reconstruction */
        LmwbRunner *q = lmwb_runner_new(m);
        g_assert_true(lmwb_runner_forward(q, ids, 1, T, NULL, &err));
        g_autofree float *x = copy_act(q, S(LMWB_SITE_LN2, L), (size_t)T * C), *fe = g_new(float, (size_t)T * 48),
                         *rec = g_new(float, (size_t)T * C);
        lmwb_runner_free(q);
        lmwb_transcoder_encode(set->layers[L], x, T, NULL, fe);
        lmwb_transcoder_decode(set->layers[L], fe, x, T, rec);
        dst = f.mlp_out[L] + (size_t)pos * C;
        keep = g_memdup2(dst, sizeof(float) * C);
        for (int i = 0; i < C; i++) dst[i] = rec[(size_t)pos * C + i];
      } else if (s < lmwb_attr_logit_node(a, 0)) {
        pos = s - lmwb_attr_token_node(a, 0);
        dst = f.resid0 + (size_t)pos * C;
        keep = g_memdup2(dst, sizeof(float) * C);
        memset(dst, 0, sizeof(float) * C);
      } else {
        continue;
      }
      g_assert_true(lmwb_runner_forward(r, ids, 1, T, NULL, &err));
      target_values(r, a, set, vs);
      memcpy(dst, keep, sizeof(float) * C);
      double want = v[k] - vs[k];
      if (fabs(row[s] - want) > 1e-4 * (fabs(want) + fabs(v[k])) + 1e-6)
        g_error("%s edge %d -> target %d: %.6g, removing the source moves the target by %.6g", fixture, s, k, row[s], want);
      checked++;
    }
  }
  g_assert_cmpint(checked, >=, 6);
  /* nothing from later layers or later positions */
  for (int t = 0; t < a->n_features; t++)
    for (int s = 0; s < a->n_features; s++)
      if (a->feat_layer[s] >= a->feat_layer[t] || a->feat_pos[s] > a->feat_pos[t])
        g_assert_cmpfloat(a->adj[(size_t)t * a->n_nodes + s], ==, 0.f);
  frozen_free(&f);
  lmwb_runner_free(r);
  lmwb_attribution_free(a);
  lmwb_transcoder_set_free(set);
  lmwb_model_unref(m);
}

static void test_edges(void) {
  check_model("gpt2");
  check_model("llama_gqa");
  check_model("neox");
}

/* A feature budget keeps the most influential features and the same edges among them. */
static void test_budget(void) {
  LmwbModel *m = load_fixture("gpt2");
  GError *err = NULL;
  LmwbTranscoderSet *set = random_set(&m->cfg, 48);
  int32_t ids[6] = {3, 14, 15, 92, 65, 35};
  LmwbAttribution *all = lmwb_attribute(m, set, ids, 6, NULL, NULL, &err);
  LmwbAttributionOptions o = {.max_feature_nodes = all->n_features / 2, .batch = 4};
  LmwbAttribution *some = lmwb_attribute(m, set, ids, 6, &o, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(some->n_features, ==, all->n_features / 2);
  g_assert_cmpint(some->n_active, ==, all->n_features);
  /* each kept feature's row to a logit is the same in both */
  for (int k = 0; k < some->n_features; k++) {
    int j = -1;
    for (int q = 0; q < all->n_features; q++)
      if (all->feat_layer[q] == some->feat_layer[k] && all->feat_pos[q] == some->feat_pos[k] &&
          all->feat_index[q] == some->feat_index[k])
        j = q;
    g_assert_cmpint(j, >=, 0);
    float x = some->adj[(size_t)lmwb_attr_logit_node(some, 0) * some->n_nodes + k];
    float y = all->adj[(size_t)lmwb_attr_logit_node(all, 0) * all->n_nodes + j];
    g_assert_cmpfloat(fabsf(x - y), <, 1e-5f * (1 + fabsf(y)));
  }
  lmwb_attribution_free(all);
  lmwb_attribution_free(some);
  lmwb_transcoder_set_free(set);
  lmwb_model_unref(m);
}

/* A graph small enough to prune by hand: one layer, two positions, features f0 (pos 0), f1 (pos 1),
 * error nodes e0 e1, tokens t0 t1, one logit. Edges: f1 <- f0 (2), f1 <- t1 (1), f0 <- t0 (1),
 * logit <- f1 (3), logit <- e1 (1), logit <- t1 (0.001). */
static void test_prune_by_hand(void) {
  LmwbAttribution a = {.n_layers = 1, .n_pos = 2, .n_features = 2, .n_logits = 1};
  int fl[2] = {0, 0}, fp[2] = {0, 1}, fi[2] = {0, 1};
  float prob[1] = {1.0f};
  a.feat_layer = fl, a.feat_pos = fp, a.feat_index = fi, a.logit_prob = prob;
  a.n_nodes = 2 + 2 + 2 + 1;
  float adj[49] = {0};
  enum { F0, F1, E0, E1, T0, T1, LG };
#define A(t, s) adj[(t) * 7 + (s)]
  A(F1, F0) = 2, A(F1, T1) = 1, A(F0, T0) = 1, A(LG, F1) = 3, A(LG, E1) = 1, A(LG, T1) = 0.001f;
  a.adj = adj;
  GError *err = NULL;
  LmwbAttributionPrune *p = lmwb_attribution_prune(&a, 0.8, 0.98, &err);
  g_assert_no_error(err);
  /* influence: logit row normalised: f1 3/4.001, e1 1/4.001, t1 .001/4.001; f1's row: f0 2/3, t1 1/3;
   * f0's row: t0 1. So f1 .7498, f0 .4999, t0 .4999, e1 .2499, t1 .2502; total 2.2497. */
  double f1 = 3 / 4.001, e1 = 1 / 4.001, t1 = 0.001 / 4.001 + f1 / 3, f0 = 2 * f1 / 3, t0 = f0;
  double total = f1 + e1 + t1 + f0 + t0;
  g_assert_cmpfloat(fabs(p->influence[F1] - f1 / total), <, 1e-5); /* the most influential */
  g_assert_true(p->node_keep[T0] && p->node_keep[T1] && p->node_keep[LG]);
  g_assert_true(p->node_keep[F1]);
  /* replacement: tokens' influence / (tokens' + errors') */
  g_assert_cmpfloat(fabs(p->replacement - (t0 + t1) / (t0 + t1 + e1)), <, 1e-5);
  /* completeness: influence-weighted share of incoming weight not from errors: only the logit's row
   * has error input (1/4.001), its output influence is 1 */
  double w_total = total + 1, comp = (w_total - 1.0 / 4.001) / w_total;
  g_assert_cmpfloat(fabs(p->completeness - comp), <, 1e-5);
  /* every kept feature has an incoming and an outgoing kept edge */
  for (int i = 0; i < 2; i++)
    if (p->node_keep[i]) {
      gboolean in = FALSE, out = FALSE;
      for (int j = 0; j < 7; j++) in |= p->edge_keep[i * 7 + j], out |= p->edge_keep[j * 7 + i];
      g_assert_true(in && out);
    }
  g_assert_null(lmwb_attribution_prune(&a, 1.5, 0.98, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  lmwb_attribution_prune_free(p);
#undef A
}

/* The attribution as a circuit graph: unpruned, every node and every non-zero edge with its weight;
 * pruned, exactly the kept nodes and edges; ids, activations, labels and probabilities as the
 * attribution says; JSON export and import give the same graph. */
static void test_to_graph(void) {
  LmwbModel *m = load_fixture("gpt2");
  GError *err = NULL;
  LmwbTranscoderSet *set = random_set(&m->cfg, 48);
  int32_t ids[5] = {3, 14, 15, 92, 65};
  LmwbAttribution *a = lmwb_attribute(m, set, ids, 5, NULL, NULL, &err);
  g_assert_no_error(err);
  LmwbGraph *g = lmwb_attribution_to_graph(a, NULL, m, set, "a prompt", &err);
  g_assert_no_error(err);
  g_assert_cmpint(g->n_nodes, ==, a->n_nodes);
  g_assert_cmpint(g->n_prompt, ==, 5);
  g_assert_false(g->has_node_threshold);
  size_t nz = 0, n = (size_t)a->n_nodes;
  for (size_t i = 0; i < n * n; i++) nz += a->adj[i] != 0.0f;
  g_assert_cmpint(g->n_edges, ==, (int)nz);
  for (int e = 0; e < g->n_edges; e++) /* unpruned: node i of the graph is node i of the attribution */
    g_assert_cmpfloat(g->edges[e].weight, ==, a->adj[(size_t)g->edges[e].target * n + g->edges[e].source]);
  for (int i = 0; i < a->n_features; i++) {
    g_autofree char *id = lmwb_graph_node_id(g, i);
    g_autofree char *want = g_strdup_printf("%d_%d_%d", a->feat_layer[i], a->feat_index[i], a->feat_pos[i]);
    g_assert_cmpstr(id, ==, want);
    g_assert_cmpfloat(g->nodes[i].activation, ==, a->feat_act[i]);
    g_assert_true(g_str_has_prefix(g->nodes[i].label, "→ \""));
    int32_t top[1];
    float pr[1];
    g_assert_true(lmwb_attribution_feature_tokens(m, set->layers[a->feat_layer[i]], a->feat_index[i], 1, top, NULL, pr, &err));
    g_autofree char *first = lmwb_tokenizer_token_text(m->tokenizer, top[0]);
    g_autofree char *quoted = g_strdup_printf("→ \"%s\"", first);
    g_assert_true(g_str_has_prefix(g->nodes[i].label, quoted));
  }
  int l0 = lmwb_attr_logit_node(a, 0);
  g_assert_true(g->nodes[l0].target_logit);
  g_assert_cmpfloat(g->nodes[l0].token_prob, ==, a->logit_prob[0]);
  g_autofree char *lid = lmwb_graph_node_id(g, l0);
  g_autofree char *lwant = g_strdup_printf("%d_%d_%d", m->cfg.n_layer + 1, a->logit_token[0], 4);
  g_assert_cmpstr(lid, ==, lwant);
  g_autofree char *eid = lmwb_graph_node_id(g, lmwb_attr_error_node(a, 1, 3));
  g_assert_cmpstr(eid, ==, "1_-1_3");
  g_autofree char *tid = lmwb_graph_node_id(g, lmwb_attr_token_node(a, 2));
  g_assert_cmpstr(tid, ==, "E_15_2");
  g_autofree char *t15 = lmwb_tokenizer_token_text(m->tokenizer, 15);
  g_autofree char *tlabel = g_strdup_printf("\"%s\" @2", t15);
  g_assert_cmpstr(g->nodes[lmwb_attr_token_node(a, 2)].label, ==, tlabel);
  g_assert_cmpstr(g->nodes[lmwb_attr_error_node(a, 1, 3)].label, ==, "MLP 1 error @3");

  /* pruned */
  LmwbAttributionPrune *p = lmwb_attribution_prune(a, 0.8, 0.98, &err);
  g_assert_no_error(err);
  LmwbGraph *gp = lmwb_attribution_to_graph(a, p, m, set, "a prompt", &err);
  g_assert_no_error(err);
  g_assert_cmpint(gp->n_nodes, ==, p->nodes_kept);
  int kept = 0;
  for (size_t i = 0; i < n * n; i++) kept += p->edge_keep[i] && a->adj[i] != 0.0f && p->node_keep[i / n] && p->node_keep[i % n];
  g_assert_cmpint(gp->n_edges, ==, kept);
  g_assert_true(gp->has_node_threshold);
  g_assert_cmpfloat(gp->node_threshold, ==, 0.8);
  for (int i = 0; i < gp->n_nodes; i++) g_assert_true(gp->nodes[i].has_influence);

  /* JSON round trip */
  size_t len = 0;
  g_autofree char *json = lmwb_graph_to_json(gp, &len, &err);
  g_assert_no_error(err);
  LmwbGraph *back = lmwb_graph_from_json(json, len, "test", &err);
  g_assert_no_error(err);
  g_assert_cmpint(back->n_nodes, ==, gp->n_nodes);
  g_assert_cmpint(back->n_edges, ==, gp->n_edges);
  g_autofree char *json2 = lmwb_graph_to_json(back, NULL, &err);
  g_assert_cmpstr(json, ==, json2);

  /* a feature that does not exist */
  int32_t t1[1];
  float p1[1];
  g_assert_false(lmwb_attribution_feature_tokens(m, set->layers[0], 48, 1, t1, NULL, p1, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);

  lmwb_graph_free(back);
  lmwb_graph_free(gp);
  lmwb_graph_free(g);
  lmwb_attribution_prune_free(p);
  lmwb_attribution_free(a);
  lmwb_transcoder_set_free(set);
  lmwb_model_unref(m);
}

static void test_bad_input(void) {
  LmwbModel *m = load_fixture("gpt2");
  GError *err = NULL;
  LmwbTranscoderSet *set = random_set(&m->cfg, 16);
  int32_t ids[2] = {1, 2};
  g_assert_null(lmwb_attribute(m, set, ids, 0, NULL, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  set->layers[1]->in = S(LMWB_SITE_LN2, 0);
  g_assert_null(lmwb_attribute(m, set, ids, 2, NULL, NULL, &err));
  g_assert_nonnull(strstr(err->message, "layer 1"));
  g_clear_error(&err);
  lmwb_transcoder_set_free(set);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/attribution/edges", test_edges);
  g_test_add_func("/attribution/budget", test_budget);
  g_test_add_func("/attribution/prune-by-hand", test_prune_by_hand);
  g_test_add_func("/attribution/to-graph", test_to_graph);
  g_test_add_func("/attribution/bad-input", test_bad_input);
  return g_test_run();
}
