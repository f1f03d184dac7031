/* Knowledge edits (editors/rome.h, edit_sequence.h) on the fixture checkpoints:
 *  - requests parse in every form, and bad ones are refused naming line and field;
 *  - ROME's change is rank one, lives in the edited matrix only (every other tensor bit-identical),
 *    makes the new target likely, and undo (the parent version) restores the weights bit for bit;
 *    the consistent-key variant differs from the paper's;
 *  - MEMIT's change of each layer has rank at most the number of requests and equals
 *    R Kᵀ (λC + K Kᵀ)⁻¹ solved independently here;
 *  - the monitor perplexity equals the mean of per-sentence perplexities computed from the
 *    runner's token losses;
 *  - a sequence raises the alarm, stops or rolls back as asked;
 *  - statistics save and load (a file or a folder of them), and a covariance of the wrong size is
 *    refused;
 *  - layer ranges, the monitor file and the neighbours' answers the front ends share. */
#include "editors/edit_sequence.h"
#include "app/core/errors.h"
#include "app/engine/linalg.h"
#include "app/formats/tokenizer.h"
#include "tests/unit/app/engine/runner_test_util.h"
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static LmwbEditRequests *parse(const char *text) {
  GError *err = NULL;
  LmwbEditRequests *r = lmwb_edit_requests_parse(text, strlen(text), "test", &err);
  g_assert_no_error(err);
  return r;
}

static void parse_fails(const char *text, const char *words) {
  GError *err = NULL;
  g_assert_null(lmwb_edit_requests_parse(text, strlen(text), "test", &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr(err->message, words)) g_error("\"%s\" does not name \"%s\"", err->message, words);
  g_error_free(err);
}

static void test_requests(void) {
  LmwbEditRequests *r = parse("{\"requested_rewrite\": {\"prompt\": \"{} lives in\", \"subject\": \"Mary\", "
                              "\"target_new\": {\"str\": \"Paris\"}, \"target_true\": {\"str\": \" Rome\"}}, "
                              "\"paraphrase_prompts\": [\"Mary's home is\"], \"neighborhood_prompts\": [\"John lives in\"]}");
  g_assert_cmpint(r->n, ==, 1);
  g_assert_cmpstr(r->items[0].target_new, ==, " Paris"); /* a leading space added, as ROME does */
  g_assert_cmpstr(r->items[0].target_true, ==, " Rome");
  g_assert_cmpstr(r->items[0].paraphrases[0], ==, "Mary's home is");
  g_assert_cmpstr(r->items[0].neighbours[0], ==, "John lives in");
  g_autofree char *text = lmwb_edit_request_text(&r->items[0]);
  g_assert_cmpstr(text, ==, "Mary lives in");
  lmwb_edit_requests_free(r);
  /* flat, JSON Lines with a blank line, a pretty-printed object, an array */
  r = parse("{\"prompt\": \"{} is\", \"subject\": \"a\", \"target_new\": \" b\"}\n\n"
            "{\"prompt\": \"x {}\", \"subject\": \"c\", \"target_new\": \"d\", \"target_true\": \"e\"}\n");
  g_assert_cmpint(r->n, ==, 2);
  g_assert_null(r->items[0].target_true);
  lmwb_edit_requests_free(r);
  r = parse("{\n  \"prompt\": \"{} is\",\n  \"subject\": \"a\",\n  \"target_new\": {\n \"str\": \"b\"}\n}\n");
  g_assert_cmpint(r->n, ==, 1);
  lmwb_edit_requests_free(r);
  r = parse("[{\"prompt\": \"{} is\", \"subject\": \"a\", \"target_new\": \"b\"}, "
            "{\"prompt\": \"{} was\", \"subject\": \"a\", \"target_new\": \"c\"}]");
  g_assert_cmpint(r->n, ==, 2);
  lmwb_edit_requests_free(r);
  parse_fails("{\"prompt\": \"lives in\", \"subject\": \"a\", \"target_new\": \"b\"}", "{}");
  parse_fails("{\"prompt\": \"{} {}\", \"subject\": \"a\", \"target_new\": \"b\"}", "exactly once");
  parse_fails("{\"prompt\": \"{} is\", \"subject\": \"a\", \"target_new\": \"b\"}\n{\"prompt\": \"{} is\", \"target_new\": \"b\"}",
              "line 2");
  parse_fails("{\"prompt\": \"{} is\", \"subject\": \"a\", \"target_new\": \"  \"}", "target_new");
  parse_fails("  \n", "no requests");
  parse_fails("[{\"prompt\": \"{} is\", \"subject\": 3, \"target_new\": \"b\"}]", "item 1");
}

static size_t numel(const LmwbParamInfo *p) { return (size_t)p->shape[0] * (p->ndim == 2 ? (size_t)p->shape[1] : 1); }

/* Every tensor of two versions, effective (low-rank changes included): how many differ at all. */
static int tensors_changed(const LmwbModel *a, const LmwbModel *b, int *which) {
  int changed = 0;
  for (int i = 0; i < a->n_info; i++) {
    GError *err = NULL;
    g_autofree float *x = lmwb_model_effective_tensor(a, i, &err), *y = lmwb_model_effective_tensor(b, i, &err);
    g_assert_no_error(err);
    size_t n = numel(&a->info[i]);
    if (memcmp(x, y, n * sizeof(float)) != 0) {
      changed++;
      *which = i;
    }
  }
  return changed;
}

/* Singular values of the difference of one tensor between two versions (descending). */
static double *diff_singular_values(const LmwbModel *a, const LmwbModel *b, int idx, int *rows, int *cols) {
  GError *err = NULL;
  g_autofree float *x = lmwb_model_effective_tensor(a, idx, &err), *y = lmwb_model_effective_tensor(b, idx, &err);
  *rows = (int)a->info[idx].shape[0], *cols = (int)a->info[idx].shape[1];
  size_t n = (size_t)*rows * *cols;
  g_autofree double *D = g_new(double, n);
  for (size_t i = 0; i < n; i++) D[i] = (double)y[i] - x[i];
  int k = MIN(*rows, *cols);
  double *S = g_new(double, k);
  g_autofree double *U = g_new(double, (size_t)*rows * k), *Vt = g_new(double, (size_t)k * *cols);
  g_assert_true(lmwb_linalg_svd(*rows, *cols, D, U, S, Vt, &err));
  g_assert_no_error(err);
  return S;
}

/* short: the GPT-2 fixture has a context of 32 byte-level tokens */
static const char *REQ = "{\"prompt\": \"{} is in\", \"subject\": \"Al\", \"target_new\": \" Rome\", "
                         "\"target_true\": \" Oslo\", \"neighborhood_prompts\": [\"Bo is in\"]}";

static void test_rome(void) {
  LmwbModel *m = rt_load("gpt2");
  GError *err = NULL;
  g_autofree float *before = g_memdup2(m->params, m->n_params * sizeof(float));
  LmwbEditRequests *r = parse(REQ);
  LmwbRomeOptions o;
  lmwb_rome_options_init(&o);
  o.n_short = 3, o.n_long = 0;
  LmwbEditScores s0, s1, s2;
  g_assert_true(lmwb_edit_score(m, NULL, &r->items[0], &s0, &err));
  LmwbEditInfo info;
  /* layer 0 of 2: the last layer's MLP at the subject cannot reach the target's positions */
  LmwbModel *e = lmwb_rome_edit(m, &r->items[0], 0, NULL, &o, &info, NULL, &err);
  g_assert_no_error(err);
  g_assert_true(lmwb_model_parent(e) == m);
  int which = -1;
  g_assert_cmpint(tensors_changed(m, e, &which), ==, 1);
  g_assert_cmpstr(m->info[which].name, ==, "blocks.0.mlp.W_out");
  int rows, cols;
  g_autofree double *S = diff_singular_values(m, e, which, &rows, &cols);
  g_assert_cmpfloat(S[0], >, 1e-3);
  g_assert_cmpfloat(S[1], <, 1e-5 * S[0]); /* rank one */
  g_assert_cmpfloat(fabs(S[0] - info.update_norm), <, 1e-3 * S[0]);
  g_assert_true(lmwb_edit_score(e, m, &r->items[0], &s1, &err));
  g_assert_cmpfloat(s1.p_new, >, s0.p_new); /* a random model moves, but far less than a trained one */
  g_assert_cmpfloat(info.nll_last, <, info.nll_first);
  g_assert_false(isnan(s1.specificity));
  /* consistent keys: another rank-one change of the same matrix */
  o.keys = LMWB_ROME_KEYS_CONSISTENT;
  LmwbModel *c = lmwb_rome_edit(m, &r->items[0], 0, NULL, &o, NULL, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(tensors_changed(e, c, &which), ==, 1);
  g_assert_true(lmwb_edit_score(c, m, &r->items[0], &s2, &err));
  g_assert_cmpfloat(s2.p_new, >, s0.p_new);
  /* the source never changed: undo is exact */
  g_assert_cmpint(memcmp(before, m->params, m->n_params * sizeof(float)), ==, 0);
  lmwb_model_unref(c);
  lmwb_model_unref(e);
  lmwb_edit_requests_free(r);
  lmwb_model_unref(m);
}

/* The built-in model (its facts are what ROME and MEMIT rewrite), or NULL when it is absent. */
static LmwbModel *load_builtin(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", "data/models/tiny-world", NULL);
  if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
    g_test_skip("the built-in model (data/models/tiny-world) is absent");
    return NULL;
  }
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  return m;
}

/* ROME rewrites a fact of the built-in model: the new object becomes the answer, on the prompt and
 * its paraphrases, and a neighbour keeps its answer. */
static void test_rome_builtin(void) {
  LmwbModel *m = load_builtin();
  if (!m) return;
  GError *err = NULL;
  LmwbEditRequests *r = parse("{\"prompt\": \"{} works as a\", \"subject\": \"Shokus\", \"target_new\": \" butcher\", "
                              "\"target_true\": \" lawyer\", \"paraphrase_prompts\": [\"My grandmother always said that Shokus is a\"], "
                              "\"neighborhood_prompts\": [\"Sekus works as a\"]}");
  LmwbRomeOptions o;
  lmwb_rome_options_init(&o);
  o.n_short = 3, o.n_long = 2;
  LmwbEditScores s0, s1;
  g_assert_true(lmwb_edit_score(m, NULL, &r->items[0], &s0, &err));
  LmwbModel *e = lmwb_rome_edit(m, &r->items[0], 1, NULL, &o, NULL, NULL, &err);
  g_assert_no_error(err);
  g_assert_true(lmwb_edit_score(e, m, &r->items[0], &s1, &err));
  g_assert_true(!s0.efficacy && s1.efficacy);
  g_assert_cmpfloat(s0.p_true, >, 0.5);
  g_assert_cmpfloat(s1.p_new, >, 0.5);
  g_assert_cmpfloat(s0.fluency, >, 1.0); /* a model that writes varied text */
  g_assert_cmpfloat(fabs(s1.fluency - s0.fluency), <, 0.5 * s0.fluency);
  lmwb_model_unref(e);
  lmwb_edit_requests_free(r);
  lmwb_model_unref(m);
}

/* MEMIT on the built-in model: two requests over layers 0-1. */
static void test_memit(void) {
  LmwbModel *m = load_builtin();
  if (!m) return;
  GError *err = NULL;
  LmwbEditRequests *r = parse("{\"prompt\": \"{} works as a\", \"subject\": \"Shokus\", \"target_new\": \" butcher\", \"target_true\": \" lawyer\"}\n"
                              "{\"prompt\": \"{} works as a\", \"subject\": \"Golin\", \"target_new\": \" shepherd\", \"target_true\": \" sailor\"}\n");
  LmwbRomeOptions o;
  lmwb_rome_options_init(&o);
  o.n_short = 2, o.n_long = 1;
  o.clamp = 0.75;
  o.lambda = 50.0;
  int layers[2] = {0, 1};
  LmwbEditInfo info;
  LmwbModel *e = lmwb_memit_edit(m, r, layers, 2, NULL, &o, &info, NULL, &err);
  g_assert_no_error(err);
  for (int l = 0; l < 2; l++) {
    g_autofree char *name = g_strdup_printf("blocks.%d.mlp.W_out", l);
    int idx = lmwb_model_param_index(m, name), rows, cols;
    g_autofree double *S = diff_singular_values(m, e, idx, &rows, &cols);
    g_assert_cmpfloat(S[0], >, 1e-4);
    g_assert_cmpfloat(S[2], <, 1e-5 * S[0]); /* rank <= 2 requests */
  }
  /* only the two W_out changed */
  int n_changed = 0;
  for (int i = 0; i < m->n_info; i++) {
    g_autofree float *x = lmwb_model_effective_tensor(m, i, &err), *y = lmwb_model_effective_tensor(e, i, &err);
    if (memcmp(x, y, numel(&m->info[i]) * sizeof(float))) {
      n_changed++;
      g_assert_true(g_str_has_suffix(m->info[i].name, "mlp.W_out"));
    }
  }
  g_assert_cmpint(n_changed, ==, 2);
  LmwbEditScores s;
  for (int i = 0; i < 2; i++) {
    g_assert_true(lmwb_edit_score(e, m, &r->items[i], &s, &err));
    g_assert_true(s.efficacy);
  }
  /* bad layers */
  int bad[2] = {1, 1};
  g_assert_null(lmwb_memit_edit(m, r, bad, 2, NULL, &o, NULL, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  lmwb_model_unref(e);
  lmwb_edit_requests_free(r);
  lmwb_model_unref(m);
}

static void test_monitor(void) {
  LmwbModel *m = rt_load("gpt2");
  GError *err = NULL;
  const char *lines[3] = {"The cat sat on the mat.", "A dog ran far away.", "Short."}; /* within the fixture context of 32 */
  double ppl = 0;
  g_assert_true(lmwb_edit_monitor_ppl(m, lines, 3, &ppl, &err));
  g_assert_no_error(err);
  LmwbRunner *r = lmwb_runner_new(m);
  double mean = 0;
  for (int i = 0; i < 3; i++) {
    size_t n = 0;
    g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, lines[i], strlen(lines[i]), TRUE, &n, &err);
    g_assert_true(lmwb_runner_forward(r, ids, 1, (int)n, NULL, &err));
    g_autofree float *loss = g_new(float, n);
    size_t k = lmwb_runner_token_losses(r, NULL, loss);
    double s = 0;
    for (size_t t = 0; t + 1 < n; t++) s += loss[t];
    mean += exp(s / (double)k) / 3;
  }
  g_assert_cmpfloat(fabs(ppl - mean), <, 1e-4 * mean);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
}

static int steps_seen;
static void count_step(const LmwbEditStep *s, void *user) { steps_seen++; }

static void test_sequence(void) {
  LmwbModel *m = rt_load("gpt2");
  GError *err = NULL;
  LmwbEditRequests *r = parse("{\"prompt\": \"{} is in\", \"subject\": \"Al\", \"target_new\": \" Rome\", \"target_true\": \" Oslo\"}\n"
                              "{\"prompt\": \"{} is a\", \"subject\": \"Bo\", \"target_new\": \" cook\", \"target_true\": \" baker\"}\n");
  const char *mon[2] = {"The cat sat on the mat.", "It rained all day in the city."};
  int layer = 0;
  LmwbEditSequenceOptions o = {.method = LMWB_EDIT_ROME, .layers = &layer, .n_layers = 1, .monitor = mon, .n_monitor = 2};
  lmwb_rome_options_init(&o.rome);
  o.rome.n_short = 1, o.rome.n_long = 0;
  o.rome.steps = 8;
  /* no alarm: every edit kept, versions chained */
  o.alarm_factor = 1e6;
  steps_seen = 0;
  LmwbEditSequence *s = lmwb_edit_sequence_run(m, r, &o, count_step, NULL, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(s->n_steps, ==, 3);
  g_assert_cmpint(steps_seen, ==, 3);
  g_assert_true(s->versions[0] == m);
  g_assert_true(lmwb_model_parent(s->versions[2]) == s->versions[1]);
  g_assert_false(s->steps[1].alarm || s->steps[2].alarm);
  double ppl2 = 0;
  g_assert_true(lmwb_edit_monitor_ppl(s->versions[2], mon, 2, &ppl2, &err));
  g_assert_cmpfloat(ppl2, ==, s->steps[2].ppl);
  lmwb_edit_sequence_free(s);
  /* a factor below one: every edit raises the alarm */
  o.alarm_factor = 0.5;
  o.on_alarm = LMWB_ALARM_STOP;
  s = lmwb_edit_sequence_run(m, r, &o, NULL, NULL, NULL, &err);
  g_assert_cmpint(s->n_steps, ==, 2);
  g_assert_true(s->stopped && s->steps[1].alarm);
  lmwb_edit_sequence_free(s);
  o.on_alarm = LMWB_ALARM_ROLLBACK;
  s = lmwb_edit_sequence_run(m, r, &o, NULL, NULL, NULL, &err);
  g_assert_cmpint(s->n_steps, ==, 3);
  g_assert_true(s->steps[2].rolled_back && s->versions[2] == m && s->versions[1] == m);
  lmwb_edit_sequence_free(s);
  lmwb_edit_requests_free(r);
  lmwb_model_unref(m);
}

static void test_stats(void) {
  LmwbModel *m = rt_load("gpt2");
  GError *err = NULL;
  const char *text = "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times.";
  LmwbEditStatsOptions so = {.context = 8};
  LmwbEditStats *s = lmwb_edit_stats_collect(m, 1, text, &so, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(s->dim, ==, m->cfg.d_ff);
  g_autofree char *dir = g_dir_make_tmp("lmwb-rome-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(dir, "C1.safetensors", NULL);
  g_assert_true(lmwb_edit_stats_save(s, path, &err));
  LmwbEditStats *t = lmwb_edit_stats_load(path, m, 1, &err);
  g_assert_no_error(err);
  g_assert_cmpint(memcmp(s->C, t->C, sizeof(float) * s->dim * s->dim), ==, 0);
  g_assert_cmpint(t->tokens, ==, s->tokens);
  /* a folder of C{L}.safetensors holds one file per layer */
  LmwbEditStats *f = lmwb_edit_stats_load_for(dir, m, 1, &err);
  g_assert_no_error(err);
  g_assert_cmpint(memcmp(s->C, f->C, sizeof(float) * s->dim * s->dim), ==, 0);
  lmwb_edit_stats_free(f);
  /* another layer's name, another model's size */
  g_assert_null(lmwb_edit_stats_load(path, m, 0, &err));
  g_assert_true(strstr(err->message, "blocks.0.mlp.W_out.C") != NULL);
  g_clear_error(&err);
  LmwbModel *other = rt_load("llama_gqa");
  if (other->cfg.d_ff != m->cfg.d_ff) {
    g_assert_null(lmwb_edit_stats_load(path, other, 1, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    g_clear_error(&err);
  }
  /* a singular covariance is refused by ROME */
  memset(t->C, 0, sizeof(float) * t->dim * t->dim);
  LmwbEditRequests *r = parse(REQ);
  LmwbRomeOptions o;
  lmwb_rome_options_init(&o);
  o.n_short = 1, o.n_long = 0;
  g_assert_null(lmwb_rome_edit(m, &r->items[0], 1, t, &o, NULL, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_unlink(path);
  g_rmdir(dir);
  lmwb_edit_requests_free(r);
  lmwb_edit_stats_free(s);
  lmwb_edit_stats_free(t);
  lmwb_model_unref(other);
  lmwb_model_unref(m);
}

/* What the front ends share: layer ranges, the monitor file, the neighbours' answers. */
static void test_front_end(void) {
  LmwbModel *m = rt_load("gpt2");
  GError *err = NULL;
  int *layers = NULL, n = 0;
  g_assert_true(lmwb_edit_layers_parse(m, "1", &layers, &n, &err));
  g_assert_cmpint(n, ==, 1);
  g_assert_cmpint(layers[0], ==, 1);
  g_free(layers);
  g_assert_true(lmwb_edit_layers_parse(m, "0-1", &layers, &n, &err));
  g_assert_cmpint(n, ==, 2);
  g_assert_cmpint(layers[1], ==, 1);
  g_free(layers);
  const char *bad[] = {"", "x", "1-0", "-1", "0-", "0-99", "1x"};
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_false(lmwb_edit_layers_parse(m, bad[i], &layers, &n, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    g_clear_error(&err);
  }
  g_autofree char *dir = g_dir_make_tmp("lmwb-rome-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(dir, "monitor.txt", NULL);
  g_assert_true(g_file_set_contents(path, "  One sentence.  \n\n\tTwo sentences here.\n", -1, NULL));
  g_auto(GStrv) mon = lmwb_edit_monitor_read(path, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(g_strv_length(mon), ==, 2);
  g_assert_cmpstr(mon[0], ==, "One sentence.");
  g_assert_cmpstr(mon[1], ==, "Two sentences here.");
  g_assert_true(g_file_set_contents(path, " \n\n", -1, NULL));
  g_assert_null(lmwb_edit_monitor_read(path, &err));
  g_assert_true(strstr(err->message, "no sentences") != NULL);
  g_clear_error(&err);
  g_unlink(path);
  g_rmdir(dir);
  char *prompts[] = {"The cat sat on the", "A dog ran"};
  int32_t ids[2];
  double p[2];
  g_assert_true(lmwb_edit_top_answers(m, prompts, 2, ids, p, &err));
  for (int i = 0; i < 2; i++) g_assert_true(ids[i] >= 0 && ids[i] < m->cfg.vocab_size && p[i] > 0 && p[i] <= 1);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/rome/requests", test_requests);
  g_test_add_func("/rome/rome", test_rome);
  g_test_add_func("/rome/rome-builtin", test_rome_builtin);
  g_test_add_func("/rome/memit", test_memit);
  g_test_add_func("/rome/monitor", test_monitor);
  g_test_add_func("/rome/sequence", test_sequence);
  g_test_add_func("/rome/stats", test_stats);
  g_test_add_func("/rome/front-end", test_front_end);
  return g_test_run();
}
