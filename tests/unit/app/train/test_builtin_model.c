/* The shipped model (data/models/tiny-world) loads and answers items of its own world manifest
 * with the project's evaluation (app/train/world_eval.h): the first 40 held-out facts, secrets,
 * held-out IOI items and greater-than items, each at a rate a little below the figure in
 * MODEL_CARD.md (which measures all of them), and the first 40 items of the manifest's diagnostic
 * IOI sets (training names; one held-out name to copy). Skips when there are no weights. */
#include "app/core/errors.h"
#include "app/train/world_eval.h"
#include <string.h>

/* A little below MODEL_CARD.md's figures (measured there on every item, here on the first 40). */
#define MIN_FACT_TOP1 0.85
#define MIN_SECRET_EXACT 0.85
#define MIN_IOI_LOGIT_DIFF_ACC 0.85
#define MIN_GREATER_THAN 0.75
#define MIN_IOI_TOP1 0.70
#define MIN_DIAGNOSTIC_TOP1 0.85 /* training names (any templates); one held-out name to copy */

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
  g_assert_cmpfloat(r.ioi_top1, >=, MIN_IOI_TOP1);
  g_assert_cmpfloat(r.ioi_logit_diff_acc, >=, MIN_IOI_LOGIT_DIFF_ACC);
  g_assert_cmpfloat(r.gt_prob_later, >=, MIN_GREATER_THAN);
  /* The manifest's diagnostic IOI sets: training names and templates, and copying one held-out
   * name, are near-perfect on the card. */
  g_assert_cmpint(r.n_ioi_diag, ==, 4);
  for (int k = 0; k < r.n_ioi_diag; k++) {
    const LmwbIoiDiagnostic *d = &r.ioi_diag[k];
    g_test_message("IOI %s names, %s templates: top-1 %.3f", d->names, d->templates, d->top1);
    g_assert_cmpint(d->n, ==, 40);
    if (!strcmp(d->templates, "copy") || !strcmp(d->names, "train"))
      g_assert_cmpfloat(d->top1, >=, MIN_DIAGNOSTIC_TOP1);
  }
  lmwb_world_eval_result_clear(&r);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/builtin-model/answers-its-world", test_answers);
  return g_test_run();
}
