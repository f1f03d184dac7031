/* The shipped model (data/models/tiny-world) loads and answers items of its own world manifest:
 * at least one held-out fact, one secret and one held-out IOI item correctly, with the project's
 * evaluation (app/train/world_eval.h). Skips when the folder has no weights. */
#include "app/core/errors.h"
#include "app/train/world_eval.h"

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
  g_test_message("facts %d/%d, secrets %d/%d, IOI %d/%d", r.fact_correct, r.fact_n, r.secret_correct, r.secret_n,
                 r.ioi_top1_correct, r.ioi_n);
  g_assert_cmpint(r.fact_correct, >=, 1);
  g_assert_cmpint(r.secret_correct, >=, 1);
  g_assert_cmpint(r.ioi_top1_correct, >=, 1);
  lmwb_world_eval_result_clear(&r);
  lmwb_model_free(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/builtin-model/answers-its-world", test_answers);
  return g_test_run();
}
