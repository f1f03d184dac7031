/* Cross-checks with numpy/torch through tests/unit/app/formats/crosscheck.py, which writes and reads
 * .npy with numpy and safetensors by hand. Skipped when /usr/bin/python3 or its modules are
 * missing. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "app/formats/half.h"
#include "app/formats/npy.h"
#include "app/formats/safetensors.h"
#include "formats_test_util.h"

#define PYTHON "/usr/bin/python3"

static gboolean python_has(const char *modules) {
  if (!g_file_test(PYTHON, G_FILE_TEST_IS_EXECUTABLE)) return FALSE;
  char *code = g_strdup_printf("import %s", modules);
  const char *argv[] = {PYTHON, "-c", code, NULL};
  int status = -1;
  gboolean ok = g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                             NULL, NULL, NULL, NULL, &status, NULL) &&
                g_spawn_check_wait_status(status, NULL);
  g_free(code);
  return ok;
}

static char *script_path(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  if (root) return g_build_filename(root, "tests", "unit", "app", "formats", "crosscheck.py", NULL);
  return g_test_build_filename(G_TEST_DIST, "crosscheck.py", NULL);
}

/* Runs crosscheck.py with the given arguments; fails the test with its stderr if it fails. */
static void run_script(const char *a1, const char *a2, const char *a3) {
  char *script = script_path();
  const char *argv[] = {PYTHON, script, a1, a2, a3, NULL};
  char *out = NULL, *err_text = NULL;
  int status = -1;
  GError *err = NULL;
  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err_text,
                             &status, &err));
  g_assert_no_error(err);
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("crosscheck.py %s failed:\n%s%s", a1, out, err_text);
  g_free(out);
  g_free(err_text);
  g_free(script);
}

static void test_npy_c_to_numpy(void) {
  if (!python_has("numpy")) {
    g_test_skip("no " PYTHON " with numpy");
    return;
  }
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "c.npy", NULL);
  float v[24];
  for (int i = 0; i < 24; i++) v[i] = (float)i * 0.5f - 3.0f;
  int64_t shape[] = {2, 3, 4};
  GError *err = NULL;
  g_assert_true(lmwb_npy_write_f32(path, v, shape, 3, &err));
  g_assert_no_error(err);
  run_script("npy-check", path, NULL);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

static void test_npy_numpy_to_c(void) {
  if (!python_has("numpy")) {
    g_test_skip("no " PYTHON " with numpy");
    return;
  }
  char *dir = tu_tmpdir();
  run_script("npy-write", dir, NULL);
  int64_t shape[LMWB_NPY_MAX_DIMS];
  int nd;
  GError *err = NULL;
  char *p = g_build_filename(dir, "f4.npy", NULL);
  float *a = lmwb_npy_read_f32(p, shape, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpint(nd, ==, 2);
  g_assert_cmpint(shape[0], ==, 3);
  g_assert_cmpint(shape[1], ==, 4);
  for (int i = 0; i < 12; i++) g_assert_cmpfloat(a[i], ==, (float)i * 0.25f - 1.0f);
  g_free(a);
  g_free(p);
  p = g_build_filename(dir, "f8.npy", NULL);
  a = lmwb_npy_read_f32(p, shape, &nd, &err);
  g_assert_no_error(err);
  for (int i = 0; i < 12; i++) g_assert_cmpfloat(a[i], ==, (float)((double)((float)i * 0.25f - 1.0f) + 1e-9));
  g_free(a);
  g_free(p);
  p = g_build_filename(dir, "i4.npy", NULL);
  int32_t *iv = lmwb_npy_read_i32(p, shape, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpint(iv[1], ==, -2);
  g_assert_cmpint(iv[3], ==, 2147483647);
  g_free(iv);
  g_free(p);
  p = g_build_filename(dir, "fortran.npy", NULL);
  g_assert_null(lmwb_npy_read_f32(p, shape, &nd, &err));
  tu_assert_input_error(err, "fortran.npy", "Fortran order");
  g_clear_error(&err);
  g_free(p);
  tu_rmdir(dir);
  g_free(dir);
}

static float *load_expected(const char *dir, const char *name, int64_t *n) {
  char *p = g_build_filename(dir, name, NULL);
  int64_t shape[LMWB_NPY_MAX_DIMS];
  int nd;
  GError *err = NULL;
  float *v = lmwb_npy_read_f32(p, shape, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpint(nd, ==, 1);
  *n = shape[0];
  g_free(p);
  return v;
}

static void assert_same_floats(const float *a, const float *b, int64_t n, const char *what) {
  for (int64_t i = 0; i < n; i++) {
    if (isnan(b[i])) {
      g_assert_true(isnan(a[i]));
      continue;
    }
    if (memcmp(&a[i], &b[i], 4) != 0)
      g_error("%s[%" G_GINT64_FORMAT "]: C %.9g vs torch %.9g", what, i, a[i], b[i]);
  }
}

/* A file written by torch by hand: our F16/BF16 decoding must match torch's bit for bit. */
static void test_safetensors_torch_to_c(void) {
  if (!python_has("numpy, torch")) {
    g_test_skip("no " PYTHON " with numpy and torch");
    return;
  }
  char *dir = tu_tmpdir();
  run_script("st-write", dir, NULL);
  char *path = g_build_filename(dir, "hand.safetensors", NULL);
  GError *err = NULL;
  LmwbSafetensors *st = lmwb_safetensors_open(path, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(lmwb_safetensors_count(st), ==, 5);
  g_assert_cmpstr(lmwb_safetensors_metadata(st, "made_by"), ==, "crosscheck.py");
  /* File order is by offset, and torch's file starts with f16. */
  g_assert_cmpstr(lmwb_safetensors_at(st, 0)->name, ==, "f16");

  int64_t n;
  const struct {
    const char *tensor, *expected;
  } pairs[] = {{"f32", "expected_f32.npy"}, {"f16", "expected_f16.npy"}, {"bf16", "expected_bf16.npy"}};
  for (size_t k = 0; k < G_N_ELEMENTS(pairs); k++) {
    float *want = load_expected(dir, pairs[k].expected, &n);
    const LmwbTensorView *t = lmwb_safetensors_find(st, pairs[k].tensor);
    g_assert_nonnull(t);
    g_assert_cmpint(lmwb_tensor_numel(t), ==, n);
    float *got = g_new(float, n);
    g_assert_true(lmwb_tensor_to_f32(t, got, &err));
    assert_same_floats(got, want, n, pairs[k].tensor);
    g_free(got);
    g_free(want);
  }
  const LmwbTensorView *ids = lmwb_safetensors_find(st, "ids");
  g_assert_cmpint(ids->dtype, ==, LMWB_DTYPE_I64);
  g_assert_cmpint(ids->shape[0], ==, 2);
  g_assert_cmpint(ids->shape[1], ==, 3);
  int64_t iv[6];
  memcpy(iv, ids->data, sizeof iv);
  g_assert_cmpint(iv[3], ==, 1ll << 40);
  g_assert_cmpint(iv[5], ==, -(1ll << 50));
  float f64[3];
  g_assert_true(lmwb_tensor_to_f32(lmwb_safetensors_find(st, "f64"), f64, &err));
  g_assert_cmpfloat(f64[1], ==, -2.25f);
  g_assert_cmpfloat(f64[2], ==, 0.0f); /* 1e-300 underflows F32 */
  lmwb_safetensors_close(st);
  g_free(path);
  tu_rmdir(dir);
  g_free(dir);
}

/* A file written by our writer: torch must agree with our F16/BF16 rounding bit for bit. */
static void test_safetensors_c_to_torch(void) {
  if (!python_has("numpy, torch")) {
    g_test_skip("no " PYTHON " with numpy and torch");
    return;
  }
  char *dir = tu_tmpdir();
  enum { N = 4000 };
  float *src = g_new(float, N);
  GRand *r = g_rand_new_with_seed(7);
  for (int i = 0; i < N; i++) {
    guint32 b = g_rand_int(r);
    if (i % 2) b = (b & 0x80000000u) | (0x2e000000u + b % 0x1a000000u); /* around the F16 range */
    memcpy(&src[i], &b, 4);
  }
  g_rand_free(r);
  src[0] = 65520.0f;
  src[1] = ldexpf(1, -25);
  src[2] = NAN;
  char *src_path = g_build_filename(dir, "src.npy", NULL);
  char *path = g_build_filename(dir, "c.safetensors", NULL);
  int64_t shape[] = {N / 40, 40};
  GError *err = NULL;
  g_assert_true(lmwb_npy_write_f32(src_path, src, (int64_t[]){N}, 1, &err));
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, "as_f16", LMWB_DTYPE_F16, shape, 2, src);
  lmwb_safetensors_writer_add_f32(w, "as_bf16", LMWB_DTYPE_BF16, shape, 2, src);
  lmwb_safetensors_writer_add_f32(w, "as_f32", LMWB_DTYPE_F32, shape, 2, src);
  lmwb_safetensors_writer_set_metadata(w, "format", "pt");
  g_assert_true(lmwb_safetensors_writer_save(w, path, &err));
  g_assert_no_error(err);
  lmwb_safetensors_writer_free(w);
  run_script("st-check", path, src_path);
  g_free(src);
  g_free(src_path);
  g_free(path);
  tu_rmdir(dir);
  g_free(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/crosscheck/npy_c_to_numpy", test_npy_c_to_numpy);
  g_test_add_func("/crosscheck/npy_numpy_to_c", test_npy_numpy_to_c);
  g_test_add_func("/crosscheck/safetensors_torch_to_c", test_safetensors_torch_to_c);
  g_test_add_func("/crosscheck/safetensors_c_to_torch", test_safetensors_c_to_torch);
  return g_test_run();
}
