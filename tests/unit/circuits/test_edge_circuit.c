/* Edge circuits (circuits/edge_circuit.h, edge_tasks.h):
 *  - a planted circuit: the GPT-2 fixture with weights set by hand so that the answer flows only
 *    through input -> a0.h1<v> -> logits (every other head's W_O, every MLP's output and every
 *    query/key weight zero: other edges carry exactly nothing). EAP ranks those two edges first and
 *    scores every other edge 0; edge pruning keeps exactly them; evaluation of the two edges gives
 *    the full model (KL 0), of none the corrupted run;
 *  - edge pruning stopped by a cancel and resumed from its checkpoint ends bit for bit where an
 *    uninterrupted run ends;
 *  - dangling edges and top-N selection on hand-made circuits, binarisation, names and indices;
 *  - metric gradients against finite differences (logit difference, probability difference);
 *  - JSONL task files: good lines, and every bad one an input error naming the line and field;
 *  - built-in tasks on the built-in model (skipped without it): equal lengths, one-token answers. */
#include "circuits/edge_circuit.h"
#include "app/core/errors.h"
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static LmwbModel *load(const char *rel) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", rel, NULL);
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  return m;
}

/* ---- the planted circuit ------------------------------------------------------------------------ */

/* The GPT-2 fixture rewired: only head 1 of layer 0 writes (uniform attention: W_Q = W_K = 0), its
 * value and output scaled up so the first token decides the answer. */
static LmwbModel *planted_model(void) {
  LmwbModel *m = load("tests/fixtures/models/gpt2");
  const LmwbConfig *c = &m->cfg;
  int C = c->d_model, hd = c->head_dim, qd = c->n_head * hd;
  for (int L = 0; L < c->n_layer; L++) {
    LmwbLayerWeights *w = &m->w.layers[L];
    memset(w->wq, 0, (size_t)qd * C * sizeof(float));
    memset(w->wk, 0, (size_t)qd * C * sizeof(float));
    if (w->bq) memset(w->bq, 0, qd * sizeof(float));
    if (w->bk) memset(w->bk, 0, qd * sizeof(float));
    if (w->bo) memset(w->bo, 0, C * sizeof(float));
    memset(w->w_down, 0, (size_t)C * c->d_ff * sizeof(float));
    if (w->b_down) memset(w->b_down, 0, C * sizeof(float));
    for (int i = 0; i < C; i++)
      for (int j = 0; j < qd; j++) {
        bool live = L == 0 && j / hd == 1;
        w->wo[(size_t)i * qd + j] = live ? 40.f * w->wo[(size_t)i * qd + j] : 0.f;
      }
  }
  return m;
}

/* n examples [A, x, y, z] vs [B, x, y, z]; answer and wrong: the full model's top tokens on each. */
static LmwbEdgeTask *planted_task(LmwbModel *m, int n) {
  LmwbEdgeTask *t = g_new0(LmwbEdgeTask, 1);
  t->kind = LMWB_EDGE_TASK_FILE;
  t->name = g_strdup("planted");
  t->ex = g_new0(LmwbEdgeExample, n);
  LmwbRunner *r = lmwb_runner_new(m);
  int V = m->cfg.vocab_size, T = 4;
  guint32 s = 11;
  GError *err = NULL;
  while (t->n < n) {
    int32_t ids[8];
    for (int i = 0; i < 8; i++) ids[i] = (int32_t)((s = s * 1664525u + 1013904223u) >> 8) % V;
    for (int i = 1; i < T; i++) ids[T + i] = ids[i];
    LmwbForwardOptions fo = {.last_logits_only = true};
    g_assert_true(lmwb_runner_forward(r, ids, 2, T, &fo, &err));
    const float *lg = lmwb_runner_logits(r, NULL);
    int top[2] = {0, 0};
    for (int b = 0; b < 2; b++)
      for (int v = 1; v < V; v++)
        if (lg[(size_t)b * V + v] > lg[(size_t)b * V + top[b]]) top[b] = v;
    if (top[0] == top[1]) continue;
    LmwbEdgeExample *e = &t->ex[t->n++];
    e->clean = g_memdup2(ids, T * sizeof(int32_t));
    e->corrupt = g_memdup2(ids + T, T * sizeof(int32_t));
    e->len = T;
    e->answer = top[0];
    e->wrong = top[1];
  }
  lmwb_runner_free(r);
  return t;
}

static void test_planted(void) {
  LmwbModel *m = planted_model();
  LmwbEdgeTask *t = planted_task(m, 8);
  GError *err = NULL;
  g_autoptr(GError) gerr = NULL;
  LmwbEdgeGraph *g = lmwb_edge_graph_new(&m->cfg, &err);
  int64_t e_v = lmwb_edge_index(g, 0, lmwb_edge_reader(g, LMWB_EDGE_READ_V, 0, 1));
  int64_t e_out = lmwb_edge_index(g, lmwb_edge_writer_head(g, 0, 1), g->n_readers - 1);
  g_assert_cmpint(e_v, >=, 0);
  g_assert_cmpint(e_out, >=, 0);

  /* EAP and EAP-IG: the two edges carry the score, every other edge none */
  for (int ig = 0; ig <= 3; ig += 3) {
    LmwbEapOptions o = {.ig_steps = ig, .batch = 3};
    g_autofree float *score = lmwb_edge_eap(m, t, &o, NULL, &err);
    g_assert_no_error(err);
    double biggest_other = 0;
    for (int64_t e = 0; e < g->n_edges; e++)
      if (e != e_v && e != e_out) biggest_other = fmax(biggest_other, fabs(score[e]));
    g_assert_cmpfloat(fabs(score[e_v]), >, 0.1);
    g_assert_cmpfloat(fabs(score[e_out]), >, 0.1);
    g_assert_cmpfloat(biggest_other, <, 1e-4 * fabs(score[e_out]));
    g_autofree uint8_t *keep = g_new(uint8_t, g->n_edges);
    g_assert_cmpint(lmwb_edge_select_top(g, score, 2, keep), ==, 2);
    g_assert_true(keep[e_v] && keep[e_out]);
  }

  /* evaluation: the planted edges are the full model, none is the corrupted run */
  g_autofree uint8_t *two = g_new0(uint8_t, g->n_edges), *none = g_new0(uint8_t, g->n_edges);
  two[e_v] = two[e_out] = 1;
  LmwbEdgeEval ev;
  g_assert_true(lmwb_edge_eval(m, t, two, 3, &ev, NULL, &err));
  g_assert_cmpfloat(ev.circuit.kl, <, 1e-6);
  g_assert_cmpfloat(fabs(ev.circuit.logit_diff - ev.full.logit_diff), <, 1e-4);
  g_assert_cmpfloat(ev.full.logit_diff, >, 0.5);
  g_assert_cmpfloat(ev.circuit.accuracy, ==, 1.0);
  g_assert_true(lmwb_edge_eval(m, t, none, 3, &ev, NULL, &err));
  g_assert_cmpfloat(fabs(ev.circuit.kl - ev.corrupted.kl), <, 1e-6);
  g_assert_cmpfloat(ev.circuit.kl, >, 0.1);
  g_assert_cmpfloat(ev.circuit.accuracy, ==, 0.0);

  /* edge pruning recovers exactly the planted set */
  LmwbEdgePruneOptions po = {.target_sparsity = 1.0 - 2.0 / (double)g->n_edges, .steps = 300, .warmup = 150,
                             .lr = 0.3, .batch = 8, .seed = 1};
  LmwbEdgePruneResult *res = lmwb_edge_prune(m, t, &po, NULL, &err);
  g_assert_no_error(err);
  for (int64_t e = 0; e < g->n_edges; e++)
    if (res->keep[e] != (e == e_v || e == e_out)) {
      int w = 0, v = 0;
      lmwb_edge_ends(g, e, &w, &v);
      g_autofree char *a = lmwb_edge_writer_name(g, w), *b = lmwb_edge_reader_name(g, v);
      g_error("pruning %s edge %s -> %s (log_alpha %.3g)", res->keep[e] ? "kept" : "dropped", a, b, res->log_alpha[e]);
    }
  g_assert_cmpint(res->edges, ==, 2);
  lmwb_edge_prune_result_free(res);
  lmwb_edge_graph_free(g);
  lmwb_edge_task_free(t);
  lmwb_model_unref(m);
}

/* ---- cancel and resume -------------------------------------------------------------------------- */

static void cancel_at(LmwbReporter *r, const char *series, double x, double y) {
  if (!strcmp(series, "loss") && x >= *(int *)r->user) lmwb_reporter_cancel(r);
}

static void test_resume(void) {
  LmwbModel *m = load("tests/fixtures/models/llama_gqa");
  LmwbEdgeTask *t = planted_task(m, 6);
  g_autofree char *dir = g_dir_make_tmp("edge-prune-XXXXXX", NULL);
  g_autofree char *ckpt = g_build_filename(dir, "state.bin", NULL);
  GError *err = NULL;
  LmwbEdgePruneOptions po = {.target_sparsity = 0.5, .steps = 40, .lr = 0.2, .batch = 4, .seed = 3};
  LmwbEdgePruneResult *whole = lmwb_edge_prune(m, t, &po, NULL, &err);
  g_assert_no_error(err);
  po.checkpoint = ckpt;
  po.checkpoint_every = 7;
  int stop = 17;
  LmwbReporter rep = {.metric = cancel_at, .user = &stop};
  g_assert_null(lmwb_edge_prune(m, t, &po, &rep, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
  g_clear_error(&err);
  g_assert_true(g_file_test(ckpt, G_FILE_TEST_EXISTS));
  LmwbEdgePruneResult *resumed = lmwb_edge_prune(m, t, &po, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(resumed->steps_done, ==, 40);
  LmwbEdgeGraph *g = lmwb_edge_graph_new(&m->cfg, &err);
  int64_t E = g->n_edges;
  g_assert_cmpmem(whole->log_alpha, E * sizeof(float), resumed->log_alpha, E * sizeof(float));
  g_assert_cmpmem(whole->keep, E, resumed->keep, E);
  /* a checkpoint of other options is refused */
  po.steps = 41;
  g_assert_null(lmwb_edge_prune(m, t, &po, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_unlink(ckpt);
  g_rmdir(dir);
  lmwb_edge_graph_free(g);
  lmwb_edge_prune_result_free(whole);
  lmwb_edge_prune_result_free(resumed);
  lmwb_edge_task_free(t);
  lmwb_model_unref(m);
}

/* ---- selection, names, binarisation ------------------------------------------------------------- */

static void test_select(void) {
  LmwbModel *m = load("tests/fixtures/models/llama_gqa"); /* 2 layers, 4 query heads, 2 key-value heads */
  GError *err = NULL;
  LmwbEdgeGraph *g = lmwb_edge_graph_new(&m->cfg, &err);
  g_assert_cmpint(g->n_writers, ==, 11);
  g_assert_cmpint(g->n_readers, ==, 2 * (4 + 2 + 2 + 1) + 1);
  /* every edge's name parses back to it */
  for (int64_t e = 0; e < g->n_edges; e++) {
    int w = 0, v = 0;
    lmwb_edge_ends(g, e, &w, &v);
    g_autofree char *a = lmwb_edge_writer_name(g, w), *b = lmwb_edge_reader_name(g, v);
    g_assert_cmpint(lmwb_edge_index(g, lmwb_edge_writer_parse(g, a, NULL), lmwb_edge_reader_parse(g, b, NULL)), ==, e);
  }
  g_assert_cmpint(lmwb_edge_reader_parse(g, "a1.h1.k", NULL), ==, lmwb_edge_reader(g, LMWB_EDGE_READ_K, 1, 1));
  g_assert_cmpint(lmwb_edge_reader_parse(g, "a1.h2<k>", &err), ==, -1); /* only 2 key-value heads */
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_assert_cmpint(lmwb_edge_writer_parse(g, "a2.h0", NULL), ==, -1);
  g_assert_cmpint(lmwb_edge_index(g, lmwb_edge_writer_mlp(g, 1), lmwb_edge_reader(g, LMWB_EDGE_READ_Q, 1, 0)), ==, -1);
  /* a path input -> a0.h3<q> -> a0.h3 -> a1.h0<v> (key-value head 0: heads a1.h0 and a1.h1) and
   * a1.h1 -> logits; dangling: a0.h2 -> m0 (m0 goes nowhere) and a1.h2 -> logits (nothing feeds a1.h2);
   * input -> a0.h1<k> stays (key-value head 1 serves a0.h2 and a0.h3, which is used) */
  uint8_t *keep = g_new0(uint8_t, g->n_edges);
  int h03 = lmwb_edge_writer_head(g, 0, 3), h02 = lmwb_edge_writer_head(g, 0, 2), h11 = lmwb_edge_writer_head(g, 1, 1);
  int h12 = lmwb_edge_writer_head(g, 1, 2), logits = g->n_readers - 1;
  int64_t path[] = {lmwb_edge_index(g, 0, lmwb_edge_reader(g, LMWB_EDGE_READ_Q, 0, 3)),
                    lmwb_edge_index(g, h03, lmwb_edge_reader(g, LMWB_EDGE_READ_V, 1, 0)), /* kv head 0 serves q heads 0, 1 */
                    lmwb_edge_index(g, h11, logits)};
  int64_t dangling[] = {lmwb_edge_index(g, 0, lmwb_edge_reader(g, LMWB_EDGE_READ_K, 0, 1)),
                        lmwb_edge_index(g, h02, lmwb_edge_reader(g, LMWB_EDGE_READ_MLP, 0, 0)),
                        lmwb_edge_index(g, h12, logits)};
  for (int i = 0; i < 3; i++) keep[path[i]] = keep[dangling[i]] = 1;
  g_assert_cmpint(lmwb_edge_remove_dangling(g, keep), ==, 4);
  for (int i = 0; i < 3; i++) g_assert_true(keep[path[i]]);
  g_assert_true(keep[dangling[0]]);
  g_assert_false(keep[dangling[1]]);
  g_assert_false(keep[dangling[2]]);
  /* binarisation keeps the expected number of open masks, the largest */
  float la[6] = {10, -10, 10, 10, -10, -3}; /* P(z > 0): 1, 0, 1, 1, 0, 0.2: three open */
  uint8_t k[6];
  lmwb_edge_binarize(la, 6, k);
  g_assert_cmpmem(k, 6, ((uint8_t[]){1, 0, 1, 1, 0, 0}), 6);
  g_free(keep);
  lmwb_edge_graph_free(g);
  lmwb_model_unref(m);
}

/* ---- metrics ----------------------------------------------------------------------------------- */

static void test_metric_grad(void) {
  int V = 12;
  LmwbEdgeExample ex[2] = {{.answer = 3, .wrong = 5}, {.answer = -1, .wrong = -1, .threshold = 4}};
  LmwbEdgeTask t = {.kind = LMWB_EDGE_TASK_IOI, .ex = ex, .n = 2, .n_years = 10};
  for (int y = 0; y < 10; y++) t.year_tok[y] = y + 1;
  float x[12], dl[12], d2[12];
  for (int i = 0; i < V; i++) x[i] = sinf(1.7f * i);
  for (int kind = 0; kind < 2; kind++) {
    t.kind = kind ? LMWB_EDGE_TASK_GT : LMWB_EDGE_TASK_IOI;
    lmwb_edge_metric_grad(&t, kind, x, V, dl);
    for (int i = 0; i < V; i++) {
      float xp[12], xm[12];
      memcpy(xp, x, sizeof x);
      memcpy(xm, x, sizeof x);
      xp[i] += 1e-3f;
      xm[i] -= 1e-3f;
      double fd = (lmwb_edge_metric_grad(&t, kind, xp, V, d2) - lmwb_edge_metric_grad(&t, kind, xm, V, d2)) / 2e-3;
      g_assert_cmpfloat(fabs(fd - dl[i]), <, 1e-3);
    }
  }
  /* probability difference and accuracy by hand: all mass on year 7 (> 4) */
  float lg[12];
  for (int i = 0; i < V; i++) lg[i] = i == 8 ? 50.f : 0.f;
  LmwbEdgeMetrics acc = {0};
  lmwb_edge_metrics_add(&t, 1, 1, lg, lg, V, &acc);
  lmwb_edge_metrics_finish(&acc);
  g_assert_cmpfloat(fabs(acc.prob_diff - 1.0), <, 1e-6);
  g_assert_cmpfloat(acc.accuracy, ==, 1.0);
  g_assert_cmpfloat(acc.kl, <, 1e-9);
}

/* ---- task files ----------------------------------------------------------------------------------- */

static void expect_bad(LmwbModel *m, const char *text, const char *needle) {
  GError *err = NULL;
  LmwbEdgeTask *t = lmwb_edge_task_parse_jsonl(text, strlen(text), "t.jsonl", m, &err);
  g_assert_null(t);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr(err->message, needle)) g_error("\"%s\" does not name %s", err->message, needle);
  g_error_free(err);
}

static void test_task_files(void) {
  LmwbModel *m = load("tests/fixtures/models/gpt2");
  GError *err = NULL;
  const char *good = "{\"clean\": \"abcab\", \"corrupted\": \"abdab\", \"answer\": \"x\", \"wrong\": \"y\", \"split\": \"train\"}\n"
                     "\n{\"clean\": \"aa\", \"corrupted\": \"bb\", \"answer\": \"c\", \"wrong\": \"d\"}";
  LmwbEdgeTask *t = lmwb_edge_task_parse_jsonl(good, strlen(good), "t.jsonl", m, &err);
  g_assert_no_error(err);
  g_assert_cmpint(t->n, ==, 2);
  g_assert_cmpint(t->ex[0].len, ==, 5);
  g_assert_cmpint(t->ex[1].len, ==, 2);
  g_assert_cmpint(t->ex[0].answer, ==, 'x'); /* the fixture's byte tokens */
  lmwb_edge_task_free(t);
  const char *line1 = "{\"clean\": \"ab\", \"corrupted\": \"cd\", \"answer\": \"x\", \"wrong\": \"y\"}\n";
  g_autofree char *t1 = g_strconcat(line1, "{\"clean\": \"ab\", \"corrupted\": \"abc\", \"answer\": \"x\", \"wrong\": \"y\"}", NULL);
  expect_bad(m, t1, "t.jsonl:2: field \"corrupted\"");
  expect_bad(m, "{\"clean\": \"ab\", \"corrupted\": \"cd\", \"answer\": \"xyz\", \"wrong\": \"y\"}", "t.jsonl:1: field \"answer\" is 3 tokens");
  expect_bad(m, "{\"clean\": \"ab\", \"corrupted\": \"cd\", \"answer\": \"x\"}", "t.jsonl:1: field \"wrong\" is missing");
  expect_bad(m, "{\"clean\": 3, \"corrupted\": \"cd\", \"answer\": \"x\", \"wrong\": \"y\"}", "field \"clean\" is not a string");
  expect_bad(m, "\n\n{\"clean\": \"ab\",", "t.jsonl:3");
  expect_bad(m, "[1, 2]", "t.jsonl:1: not a JSON object");
  expect_bad(m, "", "no examples");
  expect_bad(m, "  \n\n", "no examples");
  lmwb_model_unref(m);
}

/* ---- built-in tasks on the built-in model --------------------------------------------------------- */

static void test_builtin_tasks(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *cfg = g_build_filename(root ? root : ".", "data/models/tiny-world/model.safetensors", NULL);
  if (!g_file_test(cfg, G_FILE_TEST_EXISTS)) {
    g_test_skip("the built-in model is absent");
    return;
  }
  LmwbModel *m = load("data/models/tiny-world");
  const char *kinds[] = {"ioi", "gt", "gp"};
  for (int k = 0; k < 3; k++) {
    GError *err = NULL;
    LmwbEdgeTask *t = lmwb_edge_task_open(kinds[k], m, 20, 5, &err);
    g_assert_no_error(err);
    g_assert_cmpint(t->n, ==, 20);
    for (int i = 0; i < t->n; i++) {
      const LmwbEdgeExample *e = &t->ex[i];
      g_assert_cmpint(e->len, >, 3);
      g_assert_cmpmem(e->clean + e->len - 1, 4, e->corrupt + e->len - 1, 4); /* the read position's token agrees */
      if (k != 1) g_assert_true(e->answer >= 0 && e->wrong >= 0 && e->answer != e->wrong);
    }
    if (k == 1) g_assert_cmpint(t->n_years, ==, 10); /* the built-in tokenizer never merges digits */
    lmwb_edge_task_free(t);
  }
  /* the built-in model does IOI: the full model's accuracy (eval with every edge) is high */
  GError *err = NULL;
  LmwbEdgeTask *t = lmwb_edge_task_open("ioi", m, 16, 1, &err);
  LmwbEdgeEval ev;
  g_assert_true(lmwb_edge_eval(m, t, NULL, 16, &ev, NULL, &err));
  g_assert_cmpfloat(ev.full.accuracy, >=, 0.8);
  g_assert_cmpfloat(ev.circuit.kl, <, 1e-6);
  lmwb_edge_task_free(t);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/edge/planted", test_planted);
  g_test_add_func("/edge/resume", test_resume);
  g_test_add_func("/edge/select", test_select);
  g_test_add_func("/edge/metric-grad", test_metric_grad);
  g_test_add_func("/edge/task-files", test_task_files);
  g_test_add_func("/edge/builtin-tasks", test_builtin_tasks);
  return g_test_run();
}
