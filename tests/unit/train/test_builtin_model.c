/* The shipped model (data/models/tiny-world) loads and answers items of its own world manifest
 * with the project's evaluation (app/train/world_eval.h): the first 40 held-out facts, secrets,
 * held-out IOI items and greater-than items, each at a rate a little below the figure in
 * MODEL_CARD.md (which measures all of them), and IOI sentences built from the manifest's
 * training templates and names. Skips when there are no weights. */
#include "app/core/errors.h"
#include "app/engine/runner.h"
#include "app/formats/tokenizer.h"
#include "app/train/world_eval.h"
#include <json-glib/json-glib.h>
#include <string.h>

/* A little below MODEL_CARD.md's figures (measured there on every item, here on the first 40). */
#define MIN_FACT_TOP1 0.85
#define MIN_SECRET_EXACT 0.85
#define MIN_IOI_LOGIT_DIFF_ACC 0.55
#define MIN_GREATER_THAN 0.75

/* Greedy next token after `prompt` equals the first token of `answer`. */
static gboolean predicts(LmwbModel *m, const char *prompt, const char *answer) {
  GError *err = NULL;
  size_t n = 0, na = 0;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, prompt, strlen(prompt), TRUE, &n, &err);
  g_autofree int32_t *ans = lmwb_tokenizer_encode(m->tokenizer, answer, strlen(answer), FALSE, &na, &err);
  g_assert_no_error(err);
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbForwardOptions fo = {.last_logits_only = true};
  g_assert_true(lmwb_runner_forward(r, ids, 1, (int)n, &fo, &err));
  const float *lg = lmwb_runner_logits(r, NULL);
  int best = 0;
  for (int i = 1; i < m->cfg.vocab_size; i++)
    if (lg[i] > lg[best]) best = i;
  lmwb_runner_free(r);
  return na > 0 && best == ans[0];
}

static char *fill(const char *tpl, const char *a, const char *b, const char *s, const char *p, const char *o) {
  GString *g = g_string_new(tpl);
  g_string_replace(g, "{A}", a, 0);
  g_string_replace(g, "{B}", b, 0);
  g_string_replace(g, "{S}", s, 0);
  g_string_replace(g, "{P}", p, 0);
  g_string_replace(g, "{O}", o, 0);
  char *cut = strstr(g->str, " {IO}");
  if (cut) g_string_truncate(g, cut - g->str);
  return g_string_free(g, FALSE);
}

static void test_answers(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", "data", "models", "tiny-world", NULL);
  g_autofree char *cfg = g_build_filename(dir, "config.json", NULL);
  if (!g_file_test(cfg, G_FILE_TEST_EXISTS)) {
    g_test_skip("the built-in model has no weights in data/models/tiny-world");
    return;
  }
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  g_assert_cmpint(m->cfg.arch, ==, LMWB_ARCH_GPT2);
  g_assert_nonnull(m->tokenizer);
  g_autofree char *manifest = g_build_filename(dir, "world.json", NULL);
  LmwbWorldEvalOptions o = {.max_items = 40, .keep_items = true};
  LmwbWorldEvalResult r;
  g_assert_true(lmwb_world_eval_file(m, manifest, &o, NULL, &r, &err));
  g_assert_no_error(err);
  g_test_message("facts %d/%d, secrets %d/%d, held-out IOI %d/%d (logit difference %d), greater-than %.3f",
                 r.fact_correct, r.fact_n, r.secret_correct, r.secret_n, r.ioi_top1_correct, r.ioi_n,
                 r.ioi_ld_correct, r.gt_prob_later);
  g_assert_cmpint(r.fact_n, ==, 40);
  g_assert_cmpfloat(r.fact_top1, >=, MIN_FACT_TOP1);
  g_assert_cmpfloat(r.secret_exact, >=, MIN_SECRET_EXACT);
  g_assert_cmpint(r.ioi_top1_correct, >=, 1);
  g_assert_cmpfloat(r.ioi_logit_diff_acc, >=, MIN_IOI_LOGIT_DIFF_ACC);
  g_assert_cmpfloat(r.gt_prob_later, >=, MIN_GREATER_THAN);
  lmwb_world_eval_result_clear(&r);
  /* IOI in the training distribution: "When A and B went to the P, B gave a O to" -> " A". */
  g_autoptr(JsonParser) jp = json_parser_new();
  g_assert_true(json_parser_load_from_file(jp, manifest, &err));
  JsonObject *ioi = json_object_get_object_member(json_node_get_object(json_parser_get_root(jp)), "ioi");
  JsonArray *names = json_object_get_array_member(ioi, "train_names");
  JsonArray *tpls = json_object_get_array_member(ioi, "train_templates");
  JsonArray *places = json_object_get_array_member(ioi, "places"), *objs = json_object_get_array_member(ioi, "objects");
  int right = 0, total = 0;
  for (guint k = 0; k < 10; k++) {
    const char *a = json_array_get_string_element(names, (7 * k) % json_array_get_length(names));
    const char *b = json_array_get_string_element(names, (7 * k + 60) % json_array_get_length(names));
    const char *tpl = json_array_get_string_element(tpls, k % json_array_get_length(tpls));
    if (!strstr(tpl, "{IO}")) continue;
    g_autofree char *prompt = fill(tpl, a, b, b, json_array_get_string_element(places, k % 7),
                                   json_array_get_string_element(objs, k % 5));
    g_autofree char *answer = g_strconcat(" ", a, NULL);
    gboolean ok = predicts(m, prompt, answer);
    g_test_message("%s ->%s %s", prompt, answer, ok ? "yes" : "no");
    right += ok;
    total++;
  }
  g_assert_cmpint(total, >=, 5);
  g_assert_cmpint(right * 10, >=, total * 8); /* 99% on 300 such items in MODEL_CARD.md */
  lmwb_model_free(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/builtin-model/answers-its-world", test_answers);
  return g_test_run();
}
