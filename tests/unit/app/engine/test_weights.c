/* Weight versions (model.h): forks share every tensor, an edit copies only the tensor it touches,
 * low-rank changes give the same model as their materialised weights (forward, per-head paths,
 * gradients), undo is exact, a version in use cannot be edited, a fork saves as a normal folder,
 * a worker thread keeps its weights while another thread edits, and device copies (the checked
 * backend) follow every edit. */
#include "tests/unit/app/engine/runner_test_util.h"
#include <glib/gstdio.h>

static LmwbSite S(LmwbSiteKind k, int l) { return (LmwbSite){k, l}; }

static float *logits_of(LmwbModel *m, const int32_t *ids, int B, int T, unsigned sites) {
  LmwbRunner *r = lmwb_runner_new(m);
  GError *err = NULL;
  LmwbForwardOptions fo = {.sites = sites};
  g_assert_true(lmwb_runner_forward(r, ids, B, T, &fo, &err));
  g_assert_no_error(err);
  float *out = g_memdup2(lmwb_runner_logits(r, NULL), sizeof(float) * B * T * m->cfg.vocab_size);
  lmwb_runner_free(r);
  return out;
}

static float *randn(size_t n, float scale, guint32 seed) {
  float *x = g_new(float, n);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    x[i] = scale * (((seed >> 8) / 16777216.0f) * 2 - 1);
  }
  return x;
}

static void add_lowrank(LmwbModel *f, const char *name, int rank, guint32 seed) {
  int i = lmwb_model_param_index(f, name);
  g_assert_cmpint(i, >=, 0);
  int64_t out = f->info[i].shape[0], in = f->info[i].shape[1];
  g_autofree float *U = randn((size_t)out * rank, 0.3f, seed), *V = randn((size_t)in * rank, 0.3f, seed + 1);
  GError *err = NULL;
  g_assert_true(lmwb_model_add_lowrank(f, name, rank, U, V, &err));
  g_assert_no_error(err);
}

static void test_fork_and_edit(void) {
  LmwbModel *base = rt_load("gpt2");
  GError *err = NULL;
  int T = 6, V = base->cfg.vocab_size;
  int32_t ids[6];
  rt_ids(ids, T, V, 5);
  g_autofree float *before = logits_of(base, ids, 1, T, 0);
  /* loaded weights are never edited in place */
  g_assert_null(lmwb_model_edit_tensor(base, "blocks.0.mlp.W_out", &err));
  g_assert_nonnull(strstr(err->message, "not a fork"));
  g_clear_error(&err);
  LmwbModel *f = lmwb_model_fork(base);
  g_assert_true(lmwb_model_parent(f) == base);
  g_assert_true(f->w.layers[1].w_down == base->w.layers[1].w_down); /* shared */
  float *w = lmwb_model_edit_tensor(f, "blocks.1.mlp.W_out", &err);
  g_assert_no_error(err);
  g_assert_true(w == f->w.layers[1].w_down);
  g_assert_true(w != base->w.layers[1].w_down);
  g_assert_true(f->w.layers[0].w_down == base->w.layers[0].w_down); /* the others still shared */
  g_assert_true(lmwb_model_edit_tensor(f, "blocks.1.mlp.W_out", &err) == w); /* one copy */
  size_t n = (size_t)base->cfg.d_model * base->cfg.d_ff;
  g_assert_cmpmem(w, n * sizeof(float), base->w.layers[1].w_down, n * sizeof(float));
  for (size_t i = 0; i < n; i++) w[i] *= 3;
  /* the embedding of a tied head: editing it moves the head too */
  float *e = lmwb_model_edit_tensor(f, "embed.W_E", &err);
  g_assert_true(f->w.head == e);
  g_assert_null(lmwb_model_edit_tensor(f, "blocks.9.mlp.W_out", &err));
  g_assert_nonnull(strstr(err->message, "no tensor"));
  g_clear_error(&err);
  /* undo is exact */
  g_assert_true(lmwb_model_revert_tensor(f, "blocks.1.mlp.W_out", &err));
  g_assert_true(lmwb_model_revert_tensor(f, "embed.W_E", &err));
  g_autofree float *undone = logits_of(f, ids, 1, T, 0);
  g_assert_cmpmem(undone, sizeof(float) * T * V, before, sizeof(float) * T * V);
  /* an edit changes the fork, never the base */
  LmwbModel *f2 = lmwb_model_fork(base);
  w = lmwb_model_edit_tensor(f2, "blocks.1.mlp.W_out", &err);
  for (size_t i = 0; i < n; i++) w[i] *= 3;
  g_autofree float *edited = logits_of(f2, ids, 1, T, 0);
  g_autofree float *base_again = logits_of(base, ids, 1, T, 0);
  g_assert_cmpfloat(rt_max_diff(edited, before, (size_t)T * V), >, 1e-3);
  g_assert_cmpfloat(rt_max_diff(base_again, before, (size_t)T * V), ==, 0.0);
  /* a version that was forked is sealed: its fork reads its tensors */
  LmwbModel *f3 = lmwb_model_fork(base), *u = lmwb_model_fork(f3);
  g_assert_null(lmwb_model_edit_tensor(f3, "blocks.0.mlp.W_in", &err));
  g_assert_nonnull(strstr(err->message, "forked"));
  g_clear_error(&err);
  lmwb_model_unref(f3); /* the fork keeps it alive */
  g_assert_nonnull(lmwb_model_edit_tensor(u, "blocks.0.mlp.W_in", &err));
  lmwb_model_unref(u);
  lmwb_model_unref(f2);
  /* a version a runner uses is sealed */
  g_assert_null(lmwb_model_edit_tensor(f, "blocks.1.mlp.W_out", &err));
  g_assert_nonnull(strstr(err->message, "in use"));
  g_clear_error(&err);
  lmwb_model_unref(f);
  lmwb_model_unref(base);
}

/* Low-rank changes equal their materialised weights, on every architecture, through the plain
 * and the per-head paths, and the effective tensor is W + U Vᵀ. */
static void test_lowrank(void) {
  static const char *names[] = {"blocks.0.attn.W_Q", "blocks.1.attn.W_K", "blocks.0.attn.W_V", "blocks.1.attn.W_O",
                                "blocks.0.mlp.W_in", "blocks.1.mlp.W_out"};
  for (size_t fx = 0; fx < G_N_ELEMENTS(rt_fixtures); fx++) {
    LmwbModel *base = rt_load(rt_fixtures[fx]);
    GError *err = NULL;
    int B = 2, T = 5, V = base->cfg.vocab_size;
    int32_t ids[10];
    rt_ids(ids, B * T, V, 9);
    LmwbModel *f = lmwb_model_fork(base);
    for (size_t k = 0; k < G_N_ELEMENTS(names); k++) add_lowrank(f, names[k], 1 + (int)k % 3, 100 + (guint32)k);
    if (base->cfg.gated_mlp) add_lowrank(f, "blocks.1.mlp.W_gate", 2, 200);
    add_lowrank(f, "blocks.1.mlp.W_out", 1, 300); /* a second change of the same tensor */
    g_assert_true(lmwb_model_has_lowrank(f, -1));
    g_assert_false(lmwb_model_has_lowrank(base, -1));
    /* W + U Vᵀ, by hand */
    int i = lmwb_model_param_index(f, "blocks.0.attn.W_Q");
    g_autofree float *eff = lmwb_model_effective_tensor(f, i, &err);
    const LmwbLowRank *lr = f->w.lowrank[0].wq;
    int64_t out = f->info[i].shape[0], in = f->info[i].shape[1];
    for (int64_t o = 0; o < out; o += 7)
      for (int64_t c = 0; c < in; c += 5) {
        double s = base->w.layers[0].wq[o * in + c];
        for (int k = 0; k < lr->rank; k++) s += (double)lr->U[o * lr->rank + k] * lr->V[c * lr->rank + k];
        g_assert_cmpfloat(fabs(s - eff[o * in + c]), <, 1e-5);
      }
    LmwbModel *flat = lmwb_model_materialize(f, &err);
    g_assert_no_error(err);
    g_autofree float *want = logits_of(flat, ids, B, T, 0);
    g_autofree float *got = logits_of(f, ids, B, T, 0);
    g_autofree float *got_split = logits_of(f, ids, B, T, LMWB_RUN_SPLIT_QKV | LMWB_RUN_ATTN_RESULT | LMWB_RUN_MLP_IN);
    double scale = rt_max_abs(want, (size_t)B * T * V);
    g_assert_cmpfloat(rt_max_diff(got, want, (size_t)B * T * V), <, 1e-5 * scale);
    g_assert_cmpfloat(rt_max_diff(got_split, want, (size_t)B * T * V), <, 2e-5 * scale);
    g_autofree float *plain = logits_of(base, ids, B, T, 0);
    g_assert_cmpfloat(rt_max_diff(got, plain, (size_t)B * T * V), >, 1e-3);
    /* gradients through the changes: the same as through the materialised weights */
    LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
    float *g[2];
    LmwbModel *ms[2] = {f, flat};
    for (int k = 0; k < 2; k++) {
      LmwbRunner *r = lmwb_runner_new(ms[k]);
      LmwbForwardOptions fo = {.sites = k ? 0 : LMWB_RUN_SPLIT_QKV | LMWB_RUN_ATTN_RESULT};
      double v;
      g_assert_true(lmwb_runner_forward(r, ids, B, T, &fo, &err));
      g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, &v, &err));
      g[k] = rt_copy_site(r, S(LMWB_SITE_EMBED, -1), TRUE, NULL);
      lmwb_runner_free(r);
    }
    size_t n = (size_t)B * T * base->cfg.d_model;
    g_assert_cmpfloat(rt_max_diff(g[0], g[1], n), <, 1e-4 * rt_max_abs(g[1], n));
    g_free(g[0]), g_free(g[1]);
    /* the changes are written as part of their tensors */
    g_autofree char *dir = g_dir_make_tmp("lmwb-fork-XXXXXX", NULL);
    g_assert_true(lmwb_model_save(f, dir, "F32", NULL, &err));
    g_assert_no_error(err);
    LmwbModel *back = lmwb_model_load(dir, &err);
    g_assert_no_error(err);
    g_autofree float *reloaded = logits_of(back, ids, B, T, 0);
    g_assert_cmpfloat(rt_max_diff(reloaded, want, (size_t)B * T * V), <, 1e-5 * scale);
    lmwb_model_unref(back);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    g_assert_cmpint(system(cmd), ==, 0);
    /* bad changes */
    LmwbModel *g2 = lmwb_model_fork(base);
    float nanv[64 * 4] = {NAN};
    g_assert_false(lmwb_model_add_lowrank(g2, "ln_final.w", 1, nanv, nanv, &err));
    g_assert_nonnull(strstr(err->message, "linear"));
    g_clear_error(&err);
    g_assert_false(lmwb_model_add_lowrank(g2, "blocks.0.attn.W_Q", 1, nanv, nanv, &err));
    g_assert_nonnull(strstr(err->message, "non-finite"));
    g_clear_error(&err);
    lmwb_model_unref(g2);
    lmwb_model_unref(flat);
    lmwb_model_unref(f);
    lmwb_model_unref(base);
  }
}

/* A worker keeps reading the weights it started with while another thread makes new versions. */
typedef struct {
  LmwbModel *m;
  const float *want;
  int32_t ids[6];
  int T, V, runs;
  volatile gint stop;
  gboolean ok;
} Worker;

static gpointer worker(gpointer p) {
  Worker *w = p;
  LmwbRunner *r = lmwb_runner_new(w->m);
  GError *err = NULL;
  w->ok = TRUE;
  while (!g_atomic_int_get(&w->stop) || w->runs < 20) {
    if (!lmwb_runner_forward(r, w->ids, 1, w->T, NULL, &err) ||
        memcmp(lmwb_runner_logits(r, NULL), w->want, sizeof(float) * w->T * w->V) != 0) {
      w->ok = FALSE;
      break;
    }
    w->runs++;
  }
  lmwb_runner_free(r);
  return NULL;
}

static void test_two_threads(void) {
  LmwbModel *v0 = rt_load("llama_gqa");
  Worker w = {.m = v0, .T = 6, .V = v0->cfg.vocab_size};
  rt_ids(w.ids, w.T, w.V, 17);
  g_autofree float *want = logits_of(v0, w.ids, 1, w.T, 0);
  w.want = want;
  GThread *t = g_thread_new("worker", worker, &w);
  GError *err = NULL;
  LmwbModel *cur = lmwb_model_ref(v0);
  for (int e = 0; e < 12; e++) {
    LmwbModel *next = lmwb_model_fork(cur);
    float *x = lmwb_model_edit_tensor(next, e % 2 ? "blocks.0.mlp.W_out" : "blocks.1.attn.W_V", &err);
    g_assert_no_error(err);
    int i = lmwb_model_param_index(next, e % 2 ? "blocks.0.mlp.W_out" : "blocks.1.attn.W_V");
    size_t n = (size_t)next->info[i].shape[0] * next->info[i].shape[1];
    for (size_t k = 0; k < n; k++) x[k] = -x[k] * 1.5f;
    add_lowrank(next, "blocks.0.attn.W_O", 2, 400 + e);
    g_autofree float *lg = logits_of(next, w.ids, 1, w.T, 0); /* and run it, as an editing view would */
    g_assert_cmpfloat(rt_max_diff(lg, want, (size_t)w.T * w.V), >, 1e-4);
    lmwb_model_unref(cur);
    cur = next;
  }
  g_atomic_int_set(&w.stop, 1);
  g_thread_join(t);
  g_assert_true(w.ok);
  g_assert_cmpint(w.runs, >=, 20);
  lmwb_model_unref(cur);
  lmwb_model_unref(v0);
}

/* Device copies follow edits: the checked backend (memory the host cannot touch) gives the CPU's
 * logits for an edited fork with low-rank changes. */
static void test_device_copies(void) {
  LmwbModel *base = rt_load("neox");
  GError *err = NULL;
  int T = 5, V = base->cfg.vocab_size;
  int32_t ids[5];
  rt_ids(ids, T, V, 23);
  LmwbModel *f = lmwb_model_fork(base);
  float *x = lmwb_model_edit_tensor(f, "blocks.1.mlp.W_in", &err);
  x[3] += 2.0f;
  add_lowrank(f, "blocks.0.mlp.W_out", 2, 500);
  g_autofree float *cpu = logits_of(f, ids, 1, T, LMWB_RUN_ATTN_RESULT);
  LmwbModel *g = lmwb_model_fork(f);
  g->be = lmwb_backend_checked();
  g_autofree float *dev = logits_of(g, ids, 1, T, LMWB_RUN_ATTN_RESULT);
  g_assert_cmpfloat(rt_max_diff(dev, cpu, (size_t)T * V), <, 1e-5 * rt_max_abs(cpu, (size_t)T * V));
  lmwb_model_unref(g);
  lmwb_model_unref(f);
  lmwb_model_unref(base);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/weights/fork-and-edit", test_fork_and_edit);
  g_test_add_func("/weights/lowrank", test_lowrank);
  g_test_add_func("/weights/two-threads", test_two_threads);
  g_test_add_func("/weights/device-copies", test_device_copies);
  return g_test_run();
}
