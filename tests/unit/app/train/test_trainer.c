/* The trainer: a tiny run must learn, be bit-reproducible, resume exactly, and refuse bad input
 * before doing any work. Uses only files in the repository. */
#include "app/core/errors.h"
#include "app/engine/model.h"
#include "app/formats/safetensors.h"
#include "app/train/trainer.h"
#include <glib/gstdio.h>
#include <string.h>

static char *src_root(void) { return g_getenv("LMWB_SOURCE_ROOT") ? g_strdup(g_getenv("LMWB_SOURCE_ROOT")) : g_get_current_dir(); }

/* Writes a recipe into dir with the given extra/overriding JSON members. */
static char *write_recipe(const char *dir, const char *out, const char *extra) {
  g_autofree char *root = src_root();
  g_autofree char *tok = g_build_filename(root, "tests/fixtures/models/gpt2", NULL);
  g_autofree char *corpus = g_build_filename(root, "tests/fixtures/train/brown_tiny.txt", NULL);
  g_autofree char *json = g_strdup_printf(
      "{\"out\": \"%s\", \"tokenizer\": \"%s\",\n"
      " \"model\": {\"architecture\": \"gpt2\", \"n_layer\": 2, \"d_model\": 32, \"n_head\": 4, \"context\": 32},\n"
      " \"train_files\": [\"%s\"], \"valid_files\": [\"%s\"],\n"
      " \"batch\": 8, \"seq\": 32, \"steps\": 60, \"warmup\": 5, \"lr\": 0.01, \"min_lr\": 0.001,\n"
      " \"eval_every\": 30, \"eval_batches\": 2, \"checkpoint_every\": 10, \"threads\": 1%s}\n",
      out, tok, corpus, corpus, extra ? extra : "");
  char *path = g_build_filename(dir, "recipe.json", NULL);
  g_assert_true(g_file_set_contents(path, json, -1, NULL));
  return path;
}

static GBytes *read_bytes(const char *dir, const char *name) {
  g_autofree char *p = g_build_filename(dir, name, NULL);
  char *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(p, &data, &len, NULL));
  return g_bytes_new_take(data, len);
}

static void rm_rf(const char *path) {
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", path);
  g_assert_cmpint(system(cmd), ==, 0);
}

static void test_learns_and_reproduces(void) {
  g_autofree char *tmp = g_dir_make_tmp("lmwb-train-XXXXXX", NULL);
  g_autofree char *out1 = g_build_filename(tmp, "a", NULL);
  g_autofree char *out2 = g_build_filename(tmp, "b", NULL);
  g_autofree char *r1 = write_recipe(tmp, out1, NULL);
  LmwbTrainResult res;
  GError *err = NULL;
  gboolean ok = lmwb_train(r1, FALSE, 0, NULL, &res, &err);
  g_assert_no_error(err);
  g_assert_true(ok);
  /* Uniform guessing over 320 tokens costs ln 320 = 5.77 nats; a working trainer gets far below. */
  g_assert_cmpfloat(res.final_valid_loss, <, 4.0);
  g_assert_cmpint(res.steps, ==, 60);
  lmwb_train_result_clear(&res);
  /* The output folder loads as a model. */
  LmwbModel *m = lmwb_model_load(out1, &err);
  g_assert_no_error(err);
  g_assert_nonnull(m->tokenizer);
  lmwb_model_unref(m);
  /* Same recipe and seed, another folder: the same bytes. */
  g_autofree char *r2 = write_recipe(tmp, out2, NULL);
  g_assert_true(lmwb_train(r2, FALSE, 0, NULL, &res, &err));
  lmwb_train_result_clear(&res);
  g_autoptr(GBytes) a = read_bytes(out1, "model.safetensors");
  g_autoptr(GBytes) b = read_bytes(out2, "model.safetensors");
  g_assert_true(g_bytes_equal(a, b));
  rm_rf(tmp);
}

static void test_resume_equals_uninterrupted(void) {
  g_autofree char *tmp = g_dir_make_tmp("lmwb-train-XXXXXX", NULL);
  g_autofree char *full = g_build_filename(tmp, "full", NULL);
  g_autofree char *cut = g_build_filename(tmp, "cut", NULL);
  g_autofree char *rf = write_recipe(tmp, full, NULL);
  LmwbTrainResult res;
  GError *err = NULL;
  g_assert_true(lmwb_train(rf, FALSE, 0, NULL, &res, &err));
  lmwb_train_result_clear(&res);
  g_autofree char *rc = write_recipe(tmp, cut, NULL);
  /* Interrupted after 23 steps: a checkpoint is left, the run reports a cancellation. */
  g_assert_false(lmwb_train(rc, FALSE, 23, NULL, &res, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
  g_clear_error(&err);
  g_autofree char *ck = g_build_filename(cut, "checkpoint", "state.safetensors", NULL);
  g_assert_true(g_file_test(ck, G_FILE_TEST_EXISTS));
  /* A fresh run into a folder with a checkpoint must be asked to resume. */
  g_assert_false(lmwb_train(rc, FALSE, 0, NULL, &res, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_assert_true(lmwb_train(rc, TRUE, 0, NULL, &res, &err));
  g_assert_no_error(err);
  lmwb_train_result_clear(&res);
  g_autoptr(GBytes) a = read_bytes(full, "model.safetensors");
  g_autoptr(GBytes) b = read_bytes(cut, "model.safetensors");
  g_assert_true(g_bytes_equal(a, b));
  rm_rf(tmp);
}

/* Cancels when the train loss of step 30 (an evaluation step) is reported: the validation that
 * follows sees the request between its batches. */
static void cancel_at_step_30(LmwbReporter *r, const char *series, double x, double y) {
  (void)y;
  if (!strcmp(series, "train_loss") && x == 30) lmwb_reporter_cancel(r);
}

static gpointer cancel_later(gpointer data) {
  LmwbReporter *rep = data;
  g_usleep(GPOINTER_TO_UINT(rep->user));
  lmwb_reporter_cancel(rep);
  return NULL;
}

/* Cancel at any moment (inside validation, between a forward and a backward pass, between steps)
 * and resume: the same weights as a run never interrupted. */
static void test_cancel_anywhere_then_resume(void) {
  g_autofree char *tmp = g_dir_make_tmp("lmwb-train-XXXXXX", NULL);
  g_autofree char *full = g_build_filename(tmp, "full", NULL);
  g_autofree char *rf = write_recipe(tmp, full, NULL);
  LmwbTrainResult res;
  GError *err = NULL;
  g_assert_true(lmwb_train(rf, FALSE, 0, NULL, &res, &err));
  lmwb_train_result_clear(&res);
  g_autoptr(GBytes) want = read_bytes(full, "model.safetensors");
  const guint delays_us[] = {0, 3000, 11000, 23000, 47000}; /* 0: the step-30 callback instead */
  guint cancelled = 0;
  for (guint k = 0; k < G_N_ELEMENTS(delays_us); k++) {
    g_autofree char *name = g_strdup_printf("cut%u", k);
    g_autofree char *cut = g_build_filename(tmp, name, NULL);
    g_autofree char *rc = write_recipe(tmp, cut, NULL);
    LmwbReporter rep = {.user = GUINT_TO_POINTER(delays_us[k])};
    GThread *th = NULL;
    if (delays_us[k]) th = g_thread_new("cancel", cancel_later, &rep);
    else rep.metric = cancel_at_step_30;
    gboolean finished = lmwb_train(rc, FALSE, 0, &rep, &res, &err);
    if (th) g_thread_join(th);
    if (finished) {
      lmwb_train_result_clear(&res); /* the run was faster than the delay */
    } else {
      g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
      g_clear_error(&err);
      cancelled++;
      if (!delays_us[k]) {
        /* Step 30 was complete when its validation was cut short: the checkpoint keeps it. */
        g_autofree char *ck = g_build_filename(cut, "checkpoint", "state.safetensors", NULL);
        LmwbSafetensors *st = lmwb_safetensors_open(ck, &err);
        g_assert_no_error(err);
        g_assert_cmpstr(lmwb_safetensors_metadata(st, "step"), ==, "30");
        lmwb_safetensors_close(st);
      }
      g_assert_true(lmwb_train(rc, TRUE, 0, NULL, &res, &err));
      g_assert_no_error(err);
      lmwb_train_result_clear(&res);
    }
    g_autoptr(GBytes) got = read_bytes(cut, "model.safetensors");
    g_assert_true(g_bytes_equal(want, got));
  }
  g_assert_cmpuint(cancelled, >=, 1);
  rm_rf(tmp);
}

static void expect_input_error(const char *extra, const char *needle) {
  g_autofree char *tmp = g_dir_make_tmp("lmwb-train-XXXXXX", NULL);
  g_autofree char *out = g_build_filename(tmp, "out", NULL);
  g_autofree char *r = write_recipe(tmp, out, extra);
  LmwbTrainResult res;
  GError *err = NULL;
  g_assert_false(lmwb_train(r, FALSE, 0, NULL, &res, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr(err->message, needle)) g_error("message \"%s\" lacks \"%s\"", err->message, needle);
  g_error_free(err);
  /* Nothing was started: no output folder. */
  g_assert_false(g_file_test(out, G_FILE_TEST_EXISTS));
  rm_rf(tmp);
}

static void test_bad_recipes(void) {
  expect_input_error(", \"learning_rate\": 0.1", "unknown key \"learning_rate\"");
  expect_input_error(", \"batch\": 0", "batch");
  expect_input_error(", \"seq\": 64", "exceeds the model context");
  expect_input_error(", \"train_files\": [\"/nonexistent/corpus.txt\"]", "/nonexistent/corpus.txt");
  expect_input_error(", \"dtype\": \"F8\"", "dtype");
  /* Each optimiser setting is named in its own message. */
  expect_input_error(", \"eps\": 0", "eps 0 must be");
  expect_input_error(", \"beta2\": 1", "beta2 1 must be");
  expect_input_error(", \"weight_decay\": -0.1", "weight_decay -0.1 must be");
}

static void test_bad_model_sizes(void) {
  g_autofree char *tmp = g_dir_make_tmp("lmwb-train-XXXXXX", NULL);
  g_autofree char *out = g_build_filename(tmp, "out", NULL);
  g_autofree char *root = src_root();
  g_autofree char *tok = g_build_filename(root, "tests/fixtures/models/gpt2", NULL);
  g_autofree char *corpus = g_build_filename(root, "tests/fixtures/train/brown_tiny.txt", NULL);
  g_autofree char *empty = g_build_filename(tmp, "empty.txt", NULL);
  g_assert_true(g_file_set_contents(empty, "", 0, NULL));
  struct { const char *model, *train, *needle; } cases[] = {
    {"{\"architecture\": \"gpt2\", \"n_layer\": 2, \"d_model\": 30, \"n_head\": 4, \"context\": 32}", corpus, "not divisible"},
    {"{\"architecture\": \"gpt2\", \"n_layer\": 0, \"d_model\": 32, \"n_head\": 4, \"context\": 32}", corpus, "out of range"},
    {"{\"architecture\": \"t5\", \"n_layer\": 2, \"d_model\": 32, \"n_head\": 4, \"context\": 32}", corpus, "cannot be trained"},
    {"{\"architecture\": \"gpt2\", \"n_layer\": 2, \"d_model\": 32, \"n_head\": 4, \"context\": 32, \"width\": 3}", corpus, "unknown key"},
    {"{\"architecture\": \"gpt2\", \"n_layer\": 2, \"d_model\": 32, \"n_head\": 4, \"context\": 32}", empty, "is empty"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *json = g_strdup_printf(
        "{\"out\": \"%s\", \"tokenizer\": \"%s\", \"model\": %s, \"train_files\": [\"%s\"], \"valid_files\": [\"%s\"],"
        " \"batch\": 2, \"seq\": 16, \"steps\": 2}", out, tok, cases[i].model, cases[i].train, corpus);
    g_autofree char *path = g_build_filename(tmp, "r.json", NULL);
    g_assert_true(g_file_set_contents(path, json, -1, NULL));
    LmwbTrainResult res;
    GError *err = NULL;
    g_assert_false(lmwb_train(path, FALSE, 0, NULL, &res, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    if (!strstr(err->message, cases[i].needle)) g_error("case %zu: \"%s\" lacks \"%s\"", i, err->message, cases[i].needle);
    g_error_free(err);
    g_assert_false(g_file_test(out, G_FILE_TEST_EXISTS));
  }
  rm_rf(tmp);
}

static void test_resume_other_shape(void) {
  g_autofree char *tmp = g_dir_make_tmp("lmwb-train-XXXXXX", NULL);
  g_autofree char *out = g_build_filename(tmp, "out", NULL);
  g_autofree char *r = write_recipe(tmp, out, NULL);
  LmwbTrainResult res;
  GError *err = NULL;
  g_assert_false(lmwb_train(r, FALSE, 5, NULL, &res, &err));
  g_clear_error(&err);
  /* Same folder, wider model: the checkpoint must be refused before any work. */
  g_autofree char *root = src_root();
  g_autofree char *tok = g_build_filename(root, "tests/fixtures/models/gpt2", NULL);
  g_autofree char *corpus = g_build_filename(root, "tests/fixtures/train/brown_tiny.txt", NULL);
  g_autofree char *json = g_strdup_printf(
      "{\"out\": \"%s\", \"tokenizer\": \"%s\", \"model\": {\"architecture\": \"gpt2\", \"n_layer\": 2, \"d_model\": 64,"
      " \"n_head\": 4, \"context\": 32}, \"train_files\": [\"%s\"], \"valid_files\": [\"%s\"], \"batch\": 2, \"seq\": 16, \"steps\": 9}",
      out, tok, corpus, corpus);
  g_assert_true(g_file_set_contents(r, json, -1, NULL));
  g_autofree char *ck = g_build_filename(out, "checkpoint", "state.safetensors", NULL);
  g_autoptr(GBytes) before = read_bytes(out, "checkpoint/state.safetensors");
  g_assert_false(lmwb_train(r, TRUE, 0, NULL, &res, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "another shape"));
  g_error_free(err);
  /* The checkpoint is intact. */
  g_autoptr(GBytes) after = read_bytes(out, "checkpoint/state.safetensors");
  g_assert_true(g_bytes_equal(before, after));
  rm_rf(tmp);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/trainer/learns-and-reproduces", test_learns_and_reproduces);
  g_test_add_func("/trainer/resume-equals-uninterrupted", test_resume_equals_uninterrupted);
  g_test_add_func("/trainer/cancel-anywhere-then-resume", test_cancel_anywhere_then_resume);
  g_test_add_func("/trainer/bad-recipes", test_bad_recipes);
  g_test_add_func("/trainer/bad-model-sizes", test_bad_model_sizes);
  g_test_add_func("/trainer/resume-other-shape", test_resume_other_shape);
  return g_test_run();
}
