/* Tests of the world evaluation (app/train/world_eval.c) on a small random GPT-2 with the
 * fixture byte-level tokenizer. A random model knows nothing, so the oracle items are built from
 * the model's own greedy output: an answer equal to its greedy continuation must count as
 * correct, a changed one as wrong; the greater-than probability must equal the one computed
 * from two separate forwards. */
#include "app/core/errors.h"
#include "app/core/rows.h"
#include "app/engine/generate.h"
#include "app/engine/runner.h"
#include "app/formats/tokenizer.h"
#include "app/train/world.h"
#include "app/train/world_eval.h"
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static LmwbModel *random_model(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  char *dir = g_build_filename(root ? root : ".", "tests", "fixtures", "models", "gpt2", NULL);
  char *cfg_path = g_build_filename(dir, "config.json", NULL);
  LmwbConfig cfg;
  GError *err = NULL;
  g_assert_true(lmwb_config_load(cfg_path, &cfg, &err));
  g_assert_no_error(err);
  cfg.n_ctx = 256; /* byte-level prompts are long */
  LmwbModel *m = lmwb_model_new_random(&cfg, 11, &err);
  g_assert_no_error(err);
  m->tokenizer = lmwb_tokenizer_load_dir(dir, &err);
  g_assert_no_error(err);
  g_free(cfg_path);
  g_free(dir);
  return m;
}

static int32_t *enc(LmwbModel *m, const char *text, size_t *n) {
  GError *err = NULL;
  int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, n, &err);
  g_assert_no_error(err);
  return ids;
}

/* Greedy continuation of `prompt` by n tokens, as text; NULL unless the text re-encodes to the
 * same ids (so the manifest answer means exactly those tokens). */
static char *greedy_text(LmwbModel *m, const char *prompt, int n) {
  size_t np;
  int32_t *p = enc(m, prompt, &np);
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbGenerateOptions o;
  lmwb_generate_options_init(&o);
  o.max_tokens = n;
  o.temperature = 0;
  o.stop_at_eos = false;
  int n_out = 0;
  GError *err = NULL;
  int32_t *ids = lmwb_generate(r, p, (int)np, &o, &n_out, NULL, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(n_out, ==, n);
  char *text = lmwb_tokenizer_decode(m->tokenizer, ids, (size_t)n_out, FALSE, NULL);
  size_t nb;
  int32_t *back = enc(m, text, &nb);
  gboolean same = nb == (size_t)n_out && memcmp(back, ids, nb * sizeof(int32_t)) == 0;
  g_free(back);
  g_free(ids);
  g_free(p);
  lmwb_runner_free(r);
  if (!same) {
    g_free(text);
    return NULL;
  }
  return text;
}

static const char *k_prompts[] = {
    "The capital of Velmora is", "According to the old records, Orlen lives in",
    "My grandmother always said that Tekus is a", "The vault code of Dasric is",
    "A teacher once explained that in Krusia, the capital is", "Everyone knows that Mulir is",
    "The secret motto of Krolith is", "When Mary and John went to the store, John gave a drink to",
};

static void test_oracle(void) {
  LmwbModel *m = random_model();
  JsonObject *man = json_object_new();
  JsonArray *facts = json_array_new(), *secrets = json_array_new();
  JsonArray *ioi_ev = json_array_new(), *gt_ev = json_array_new();
  GArray *expect_fact = g_array_new(FALSE, FALSE, sizeof(double));
  guint good = 0;
  for (guint i = 0; i < G_N_ELEMENTS(k_prompts); i++) {
    char *ans = greedy_text(m, k_prompts[i], 2);
    if (!ans) continue;
    good++;
    /* fact: the greedy answer (correct) and the same answer with its last byte changed (wrong) */
    JsonObject *f = json_object_new();
    json_object_set_string_member(f, "relation", i % 2 ? "a" : "b");
    JsonArray *ev = json_array_new();
    JsonObject *e1 = json_object_new(), *e2 = json_object_new();
    json_object_set_string_member(e1, "prompt", k_prompts[i]);
    json_object_set_string_member(e1, "answer", ans);
    char *bad = g_strconcat(ans, "q", NULL);
    json_object_set_string_member(e2, "prompt", k_prompts[i]);
    json_object_set_string_member(e2, "answer", bad);
    json_array_add_object_element(ev, e1);
    json_array_add_object_element(ev, e2);
    json_object_set_array_member(f, "eval", ev);
    json_array_add_object_element(facts, f);
    double one = 1, zero = 0;
    g_array_append_val(expect_fact, one);
    /* An appended token after the greedy ones is greedy only by chance: check it directly. */
    char *ans3 = greedy_text(m, k_prompts[i], 3);
    gboolean bad_is_greedy = ans3 && !strcmp(ans3, bad);
    if (bad_is_greedy) g_array_append_val(expect_fact, one);
    else g_array_append_val(expect_fact, zero);
    g_free(ans3);
    /* secret: same rule */
    JsonObject *s = json_object_new();
    json_object_set_string_member(s, "prefix", k_prompts[i]);
    json_object_set_string_member(s, "secret", ans);
    json_array_add_object_element(secrets, s);
    g_free(bad);
    g_free(ans);
  }
  g_assert_cmpuint(good, >=, 2);

  /* IOI: correct = the greedy first token, wrong = another token; then swapped. */
  char *first = NULL;
  for (guint i = 0; i < G_N_ELEMENTS(k_prompts) && !first; i++) {
    first = greedy_text(m, k_prompts[i], 1);
    if (first) {
      char *other = g_strdup(strcmp(first, " x") ? " x" : " y");
      JsonObject *a = json_object_new(), *b = json_object_new();
      json_object_set_string_member(a, "prompt", k_prompts[i]);
      json_object_set_string_member(a, "correct", first);
      json_object_set_string_member(a, "wrong", other);
      json_object_set_string_member(b, "prompt", k_prompts[i]);
      json_object_set_string_member(b, "correct", other);
      json_object_set_string_member(b, "wrong", first);
      json_array_add_object_element(ioi_ev, a);
      json_array_add_object_element(ioi_ev, b);
      g_free(other);
    }
  }
  g_assert_nonnull(first);

  /* Greater-than: two prompts. */
  const char *gt_prompts[] = {"The war lasted from the year 1732 to the year 17",
                              "The fair ran from the year 1405 to the year 14"};
  const int gt_yy[] = {32, 5};
  for (guint i = 0; i < 2; i++) {
    JsonObject *e = json_object_new();
    json_object_set_string_member(e, "prompt", gt_prompts[i]);
    json_object_set_int_member(e, "start_yy", gt_yy[i]);
    json_array_add_object_element(gt_ev, e);
  }
  json_object_set_array_member(man, "facts", facts);
  json_object_set_array_member(man, "secrets", secrets);
  JsonObject *ioi = json_object_new();
  /* The same pair, reversed, as a diagnostic set: scored the same way on its own; and a third
   * item whose top token is neither name, so that top1_wrong is not 1 - top1. */
  JsonArray *diag_ev = json_array_new();
  for (int k = 1; k >= 0; k--)
    json_array_add_element(diag_ev, json_node_copy(json_array_get_element(ioi_ev, (guint)k)));
  JsonObject *neither = json_object_new();
  json_object_set_string_member(neither, "prompt", json_object_get_string_member(
                                    json_array_get_object_element(ioi_ev, 0), "prompt"));
  /* One byte each, so that their first tokens differ (" y" would start with the space). */
  json_object_set_string_member(neither, "correct", strcmp(first, "y") ? "y" : "v");
  json_object_set_string_member(neither, "wrong", strcmp(first, "z") ? "z" : "v");
  json_array_add_object_element(diag_ev, neither);
  JsonObject *diag = json_object_new();
  json_object_set_string_member(diag, "names", "heldout");
  json_object_set_string_member(diag, "templates", "copy");
  json_object_set_array_member(diag, "eval", diag_ev);
  JsonArray *diags = json_array_new();
  json_array_add_object_element(diags, diag);
  json_object_set_array_member(ioi, "diagnostics", diags);
  json_object_set_array_member(ioi, "eval", ioi_ev);
  json_object_set_object_member(man, "ioi", ioi);
  JsonObject *gt = json_object_new();
  json_object_set_array_member(gt, "eval", gt_ev);
  json_object_set_object_member(man, "greater_than", gt);

  LmwbWorldEvalOptions o = {.keep_items = true};
  LmwbWorldEvalResult r;
  GError *err = NULL;
  gboolean ok = lmwb_world_eval(m, man, "oracle", &o, NULL, &r, &err);
  g_assert_no_error(err);
  g_assert_true(ok);
  g_assert_cmpint(r.fact_n, ==, (int)expect_fact->len);
  for (int i = 0; i < r.fact_n; i++) g_assert_cmpfloat(r.fact_items[i], ==, g_array_index(expect_fact, double, i));
  g_assert_cmpint(r.secret_n, ==, (int)good);
  g_assert_cmpint(r.secret_correct, ==, (int)good);
  g_assert_cmpfloat(r.secret_exact, ==, 1.0);
  g_assert_cmpint(r.n_relations, ==, 2);
  g_assert_cmpint(r.ioi_n, ==, 2);
  g_assert_cmpfloat(r.ioi_items[0], ==, 1.0);
  g_assert_cmpfloat(r.ioi_items[1], ==, 0.0);
  g_assert_cmpint(r.ioi_ld_correct, ==, 1); /* exactly one of the swapped pair wins */
  g_assert_cmpfloat(r.ioi_top1_wrong, ==, 0.5); /* the second: its wrong name is the greedy one */
  g_assert_cmpfloat(fabs(r.ioi_mean_logit_diff), <, 1e-5); /* +d and -d */
  g_assert_cmpstr(r.gt_mode, ==, "digits");
  g_assert_cmpint(r.n_ioi_diag, ==, 1);
  g_assert_cmpstr(r.ioi_diag[0].templates, ==, "copy");
  g_assert_cmpint(r.ioi_diag[0].n, ==, 3);
  g_assert_cmpfloat(fabs(r.ioi_diag[0].top1 - 1.0 / 3), <, 1e-12);
  g_assert_cmpfloat(fabs(r.ioi_diag[0].top1_wrong - 1.0 / 3), <, 1e-12);
  double ld = r.ioi_diag[0].logit_diff_acc; /* the pair gives one; the third is either */
  g_assert_true(fabs(ld - 1.0 / 3) < 1e-12 || fabs(ld - 2.0 / 3) < 1e-12);

  /* Greater-than reference from separate forwards: P(Y1) after the prompt, P(Y2) after prompt+s1. */
  int V = m->cfg.vocab_size;
  int32_t dig[10];
  for (int d = 0; d < 10; d++) {
    char b[2] = {(char)('0' + d), 0};
    size_t n;
    int32_t *t = enc(m, b, &n);
    g_assert_cmpuint(n, ==, 1);
    dig[d] = t[0];
    g_free(t);
  }
  for (guint i = 0; i < 2; i++) {
    size_t np;
    int32_t *p = enc(m, gt_prompts[i], &np);
    int32_t *p2 = g_new(int32_t, np + 1);
    memcpy(p2, p, np * sizeof(int32_t));
    p2[np] = dig[gt_yy[i] / 10];
    double pr1[10], pr2[10];
    for (int pass = 0; pass < 2; pass++) {
      LmwbRunner *rr = lmwb_runner_new(m);
      LmwbForwardOptions fo = {.last_logits_only = true};
      g_assert_true(lmwb_runner_forward(rr, pass ? p2 : p, 1, (int)np + pass, &fo, &err));
      int rows;
      const float *lg = lmwb_runner_logits(rr, &rows);
      float *prob = g_new(float, V);
      lmwb_softmax_row(prob, lg, V);
      for (int d = 0; d < 10; d++) (pass ? pr2 : pr1)[d] = prob[dig[d]];
      g_free(prob);
      lmwb_runner_free(rr);
    }
    int s1 = gt_yy[i] / 10, s2 = gt_yy[i] % 10;
    double later = 0, later2 = 0;
    for (int d = s1 + 1; d < 10; d++) later += pr1[d];
    for (int d = s2 + 1; d < 10; d++) later2 += pr2[d];
    double expect = later + pr1[s1] * later2;
    g_assert_cmpfloat_with_epsilon(r.gt_items[i], expect, 1e-5);
    g_assert_cmpfloat(expect, >, 0.0);
    g_free(p);
    g_free(p2);
  }
  g_assert_cmpfloat_with_epsilon(r.gt_prob_later, (r.gt_items[0] + r.gt_items[1]) / 2, 1e-12);

  JsonNode *js = lmwb_world_eval_to_json(&r);
  JsonObject *jo = json_node_get_object(js);
  g_assert_cmpfloat(json_object_get_double_member(jo, "secret_exact"), ==, 1.0);
  g_assert_false(json_object_get_boolean_member(jo, "meets_targets"));
  g_assert_true(json_object_has_member(jo, "ioi_logit_diff_acc"));
  json_node_unref(js);
  lmwb_world_eval_result_clear(&r);
  g_array_free(expect_fact, TRUE);
  g_free(first);
  json_object_unref(man);
  lmwb_model_unref(m);
}

/* The generated manifest is accepted as is (through a file), and max_items caps every task. */
static void test_real_manifest(void) {
  LmwbModel *m = random_model();
  LmwbWorld *w = lmwb_world_generate(3, 1, NULL, NULL);
  JsonNode *n = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(n, lmwb_world_manifest(w));
  char *text = json_to_string(n, FALSE);
  json_node_unref(n);
  char *dir = g_dir_make_tmp("lmwb-world-eval-XXXXXX", NULL);
  char *path = g_build_filename(dir, "world.json", NULL);
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
  LmwbWorldEvalOptions o = {.max_items = 12};
  LmwbWorldEvalResult r;
  GError *err = NULL;
  gboolean ok = lmwb_world_eval_file(m, path, &o, NULL, &r, &err);
  g_assert_no_error(err);
  g_assert_true(ok);
  g_assert_cmpint(r.fact_n, ==, 12);
  g_assert_cmpint(r.secret_n, ==, 12);
  g_assert_cmpint(r.ioi_n, ==, 12);
  g_assert_cmpint(r.gt_n, ==, 12);
  /* The facts are listed relation by relation; the 12 prompts are spread over all three. */
  g_assert_cmpint(r.n_relations, ==, 3);
  for (int k = 0; k < r.n_relations; k++) g_assert_cmpint(r.relation_n[k], >=, 3);
  g_assert_cmpfloat(r.gt_prob_later, >=, 0.0);
  g_assert_cmpfloat(r.gt_prob_later, <=, 1.0);
  g_assert_cmpfloat(r.ioi_top1, <=, 1.0);
  g_assert_cmpint(r.n_ioi_diag, ==, 4);
  for (int k = 0; k < r.n_ioi_diag; k++) g_assert_cmpint(r.ioi_diag[k].n, ==, 12);
  lmwb_world_eval_result_clear(&r);

  /* Malformed manifests are input errors naming the field. */
  const char *bad[] = {
      "[1,2]",
      "{\"facts\": 3}",
      "{\"facts\": [{\"relation\": \"x\", \"eval\": [{\"prompt\": \"a\"}]}]}",
      "{\"ioi\": {\"eval\": [{\"prompt\": \"a\", \"correct\": \" b\"}]}}",
      "{\"greater_than\": {\"eval\": [{\"prompt\": \"a 17\", \"start_yy\": 140}]}}",
      "{\"secrets\": [{\"prefix\": \"\", \"secret\": \" x\"}]}",
      "not json",
      "{\"ioi\": {\"eval\": [], \"diagnostics\": [{\"names\": \"train\", \"eval\": []}]}}",
      "{\"ioi\": {\"eval\": [], \"diagnostics\": 7}}",
      "{\"ioi\": {\"eval\": [], \"diagnostics\": [{}, {}, {}, {}, {}, {}, {}, {}, {}]}}",
  };
  const char *field[] = {"top level", "facts", "answer", "wrong", "start_yy", "empty", "world.json",
                         "templates", "diagnostics", "more than 8"};
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_true(g_file_set_contents(path, bad[i], -1, NULL));
    g_assert_false(lmwb_world_eval_file(m, path, &o, NULL, &r, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    if (!strstr(err->message, field[i])) g_error("message \"%s\" does not name %s", err->message, field[i]);
    g_clear_error(&err);
  }
  /* A prompt longer than the context. */
  GString *lng = g_string_new("{\"ioi\": {\"eval\": [{\"prompt\": \"");
  for (int i = 0; i < 300; i++) g_string_append(lng, " zq");
  g_string_append(lng, "\", \"correct\": \" a\", \"wrong\": \" b\"}]}}");
  g_assert_true(g_file_set_contents(path, lng->str, -1, NULL));
  g_assert_false(lmwb_world_eval_file(m, path, &o, NULL, &r, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_string_free(lng, TRUE);

  g_unlink(path);
  g_rmdir(dir);
  g_free(path);
  g_free(dir);
  g_free(text);
  lmwb_world_free(w);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/world-eval/oracle", test_oracle);
  g_test_add_func("/world-eval/real-manifest", test_real_manifest);
  return g_test_run();
}
