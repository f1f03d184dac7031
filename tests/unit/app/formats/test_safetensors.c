/* safetensors: writer/reader round trips, sharded folders, and one test per kind of bad input. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "app/formats/half.h"
#include "app/formats/safetensors.h"
#include "formats_test_util.h"

/* ---- helpers --------------------------------------------------------------------------- */

/* Parses header+buf and returns the error (the parse must fail). */
static GError *parse_bad(const char *header, const void *buf, size_t buflen) {
  GByteArray *a = tu_safetensors_image(header, buf, buflen);
  GError *err = NULL;
  LmwbSafetensors *st = lmwb_safetensors_open_memory(a->data, a->len, "bad.safetensors", &err);
  g_assert_null(st);
  g_assert_nonnull(err);
  g_byte_array_unref(a);
  return err;
}

static const guint8 zeros[64];

#define EXPECT_BAD(header, buflen, ...)                                    \
  do {                                                                     \
    GError *e_ = parse_bad((header), zeros, (buflen));                     \
    tu_assert_input_error(e_, "bad.safetensors", __VA_ARGS__);             \
    g_error_free(e_);                                                      \
  } while (0)

/* ---- round trips ----------------------------------------------------------------------- */

static const float special[] = {0.0f, -0.0f, 1.0f, -2.5f, 3.14159265f, 1e-6f, 65504.0f, 70000.0f,
                                1e-8f, 6.1e-5f, INFINITY, -INFINITY, 0.1f, 1.0f + 1.0f / 2048.0f,
                                -123.456f, 3e38f};
#define NSPECIAL (sizeof special / sizeof special[0])

static void test_roundtrip(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "rt.safetensors", NULL);
  float big[6 * 7];
  for (int i = 0; i < 42; i++) big[i] = sinf((float)i) * 100.0f;
  int64_t s1[] = {(int64_t)NSPECIAL}, s2[] = {6, 7}, s3[] = {2, 0, 3};
  int64_t ids[] = {1, -2, 1ll << 40};
  int64_t sid[] = {3};
  float scalar = 42.5f;
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, "a.f16", LMWB_DTYPE_F16, s1, 1, special);
  lmwb_safetensors_writer_add_f32(w, "b.f32", LMWB_DTYPE_F32, s2, 2, big);
  lmwb_safetensors_writer_add_f32(w, "c.bf16", LMWB_DTYPE_BF16, s1, 1, special);
  lmwb_safetensors_writer_add_f32(w, "empty", LMWB_DTYPE_F32, s3, 3, NULL);
  lmwb_safetensors_writer_add_f32(w, "scalar", LMWB_DTYPE_F32, NULL, 0, &scalar);
  lmwb_safetensors_writer_add_raw(w, "ids", LMWB_DTYPE_I64, sid, 1, ids, sizeof ids);
  lmwb_safetensors_writer_add_f32(w, "quote\"name\\\n", LMWB_DTYPE_F32, s2, 2, big);
  lmwb_safetensors_writer_set_metadata(w, "format", "pt");
  lmwb_safetensors_writer_set_metadata(w, "note", "a \"quoted\" value");
  GError *err = NULL;
  g_assert_true(lmwb_safetensors_writer_save(w, path, &err));
  g_assert_no_error(err);
  lmwb_safetensors_writer_free(w);

  LmwbSafetensors *st = lmwb_safetensors_open(path, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(lmwb_safetensors_count(st), ==, 7);
  g_assert_cmpstr(lmwb_safetensors_metadata(st, "format"), ==, "pt");
  g_assert_cmpstr(lmwb_safetensors_metadata(st, "note"), ==, "a \"quoted\" value");
  g_assert_null(lmwb_safetensors_metadata(st, "missing"));
  const char **keys = lmwb_safetensors_metadata_keys(st);
  g_assert_cmpstr(keys[0], ==, "format");
  g_assert_cmpstr(keys[1], ==, "note");
  g_assert_null(keys[2]);
  g_free(keys);

  /* Each tensor is aligned to its element size relative to the file start. */
  GMappedFile *raw = g_mapped_file_new(path, FALSE, &err);
  g_assert_no_error(err);
  const char *base = g_mapped_file_get_contents(raw);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (guint8)base[i];
  g_assert_cmpuint(hlen % 8, ==, 0);
  for (size_t i = 0; i < lmwb_safetensors_count(st); i++) {
    const LmwbTensorView *t = lmwb_safetensors_at(st, i);
    size_t off = (size_t)((const char *)t->data - base);
    g_assert_cmpuint(off % lmwb_dtype_size(t->dtype), ==, 0);
    g_assert_cmpstr(t->file, ==, path);
  }
  /* File order is by offset; the writer put 8-byte dtypes first. */
  g_assert_cmpstr(lmwb_safetensors_at(st, 0)->name, ==, "ids");

  const LmwbTensorView *t = lmwb_safetensors_find(st, "b.f32");
  g_assert_nonnull(t);
  g_assert_cmpint(t->dtype, ==, LMWB_DTYPE_F32);
  g_assert_cmpint(t->ndim, ==, 2);
  g_assert_cmpint(t->shape[0], ==, 6);
  g_assert_cmpint(t->shape[1], ==, 7);
  g_assert_cmpuint(t->nbytes, ==, 42 * 4);
  float out[64];
  g_assert_true(lmwb_tensor_to_f32(t, out, &err));
  g_assert_cmpmem(out, 42 * 4, big, 42 * 4);
  g_assert_true(lmwb_tensor_to_f32(lmwb_safetensors_find(st, "quote\"name\\\n"), out, &err));
  g_assert_cmpmem(out, 42 * 4, big, 42 * 4);

  t = lmwb_safetensors_find(st, "a.f16");
  g_assert_cmpint(t->dtype, ==, LMWB_DTYPE_F16);
  g_assert_cmpuint(t->nbytes, ==, NSPECIAL * 2);
  g_assert_cmphex(((const guint8 *)t->data)[4], ==, 0x00); /* 1.0 = 0x3c00 little-endian */
  g_assert_cmphex(((const guint8 *)t->data)[5], ==, 0x3c);
  g_assert_true(lmwb_tensor_to_f32(t, out, &err));
  for (size_t i = 0; i < NSPECIAL; i++)
    g_assert_cmpfloat(out[i], ==, lmwb_f16_to_f32(lmwb_f32_to_f16(special[i])));
  g_assert_true(isinf(out[7])); /* 70000 overflows F16 */
  g_assert_cmpfloat(out[6], ==, 65504.0f);

  t = lmwb_safetensors_find(st, "c.bf16");
  g_assert_true(lmwb_tensor_to_f32(t, out, &err));
  for (size_t i = 0; i < NSPECIAL; i++) {
    g_assert_cmpfloat(out[i], ==, lmwb_bf16_to_f32(lmwb_f32_to_bf16(special[i])));
    if (isfinite(special[i]) && special[i] != 0)
      g_assert_cmpfloat(fabsf(out[i] - special[i]), <=, fabsf(special[i]) / 256.0f);
  }

  t = lmwb_safetensors_find(st, "empty");
  g_assert_cmpint(t->ndim, ==, 3);
  g_assert_cmpuint(t->nbytes, ==, 0);
  g_assert_cmpint(lmwb_tensor_numel(t), ==, 0);
  t = lmwb_safetensors_find(st, "scalar");
  g_assert_cmpint(t->ndim, ==, 0);
  g_assert_cmpint(lmwb_tensor_numel(t), ==, 1);
  g_assert_true(lmwb_tensor_to_f32(t, out, &err));
  g_assert_cmpfloat(out[0], ==, 42.5f);

  t = lmwb_safetensors_find(st, "ids");
  g_assert_cmpint(t->dtype, ==, LMWB_DTYPE_I64);
  g_assert_cmpmem(t->data, 24, ids, 24);
  /* Integer tensors are not silently converted. */
  g_assert_false(lmwb_tensor_to_f32(t, out, &err));
  tu_assert_input_error(err, "ids", "I64");
  g_clear_error(&err);

  g_mapped_file_unref(raw);
  lmwb_safetensors_close(st);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

/* Saving over a file that is open keeps the open views intact (rename, not overwrite). */
static void test_save_over_open_file(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "m.safetensors", NULL);
  float a[4] = {1, 2, 3, 4}, b[4] = {9, 9, 9, 9};
  int64_t shape[] = {4};
  GError *err = NULL;
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, "w", LMWB_DTYPE_F32, shape, 1, a);
  g_assert_true(lmwb_safetensors_writer_save(w, path, &err));
  lmwb_safetensors_writer_free(w);
  LmwbSafetensors *st = lmwb_safetensors_open(path, &err);
  g_assert_no_error(err);
  w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, "w", LMWB_DTYPE_F32, shape, 1, b);
  g_assert_true(lmwb_safetensors_writer_save(w, path, &err));
  lmwb_safetensors_writer_free(w);
  float out[4];
  g_assert_true(lmwb_tensor_to_f32(lmwb_safetensors_find(st, "w"), out, &err));
  g_assert_cmpmem(out, sizeof out, a, sizeof a);
  lmwb_safetensors_close(st);
  st = lmwb_safetensors_open(path, &err);
  g_assert_true(lmwb_tensor_to_f32(lmwb_safetensors_find(st, "w"), out, &err));
  g_assert_cmpmem(out, sizeof out, b, sizeof b);
  lmwb_safetensors_close(st);
  g_assert_cmpint(tu_count_entries(dir), ==, 1);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

/* Mistakes in add calls make save fail without creating anything. */
static void test_writer_rejects(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "x.safetensors", NULL);
  float v[2] = {1, 2};
  int64_t shape[] = {2}, neg[] = {-2};
  GError *err = NULL;

  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, "t", LMWB_DTYPE_F32, shape, 1, v);
  lmwb_safetensors_writer_add_f32(w, "t", LMWB_DTYPE_F32, shape, 1, v);
  g_assert_false(lmwb_safetensors_writer_save(w, path, &err));
  tu_assert_input_error(err, "'t'", "twice");
  g_clear_error(&err);
  lmwb_safetensors_writer_free(w);

  w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, "t", LMWB_DTYPE_I32, shape, 1, v);
  g_assert_false(lmwb_safetensors_writer_save(w, path, &err));
  tu_assert_input_error(err, "I32");
  g_clear_error(&err);
  lmwb_safetensors_writer_free(w);

  w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, "t", LMWB_DTYPE_F32, neg, 1, v);
  g_assert_false(lmwb_safetensors_writer_save(w, path, &err));
  tu_assert_input_error(err, "negative");
  g_clear_error(&err);
  lmwb_safetensors_writer_free(w);

  w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_raw(w, "t", LMWB_DTYPE_I64, shape, 1, v, 8);
  g_assert_false(lmwb_safetensors_writer_save(w, path, &err));
  tu_assert_input_error(err, "8 bytes given", "needs 16");
  g_clear_error(&err);
  lmwb_safetensors_writer_free(w);

  w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, "__metadata__", LMWB_DTYPE_F32, shape, 1, v);
  g_assert_false(lmwb_safetensors_writer_save(w, path, &err));
  tu_assert_input_error(err, "__metadata__");
  g_clear_error(&err);
  lmwb_safetensors_writer_free(w);

  g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
  g_assert_cmpint(tu_count_entries(dir), ==, 0);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

/* ---- sharded folders ------------------------------------------------------------------- */

static void save_shard(const char *dir, const char *file, const char *n1, const char *n2,
                       float base) {
  float v[6];
  for (int i = 0; i < 6; i++) v[i] = base + (float)i;
  int64_t shape[] = {2, 3};
  char *path = g_build_filename(dir, file, NULL);
  GError *err = NULL;
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  lmwb_safetensors_writer_add_f32(w, n1, LMWB_DTYPE_F32, shape, 2, v);
  if (n2) lmwb_safetensors_writer_add_f32(w, n2, LMWB_DTYPE_BF16, shape, 2, v);
  lmwb_safetensors_writer_set_metadata(w, "format", "pt");
  g_assert_true(lmwb_safetensors_writer_save(w, path, &err));
  g_assert_no_error(err);
  lmwb_safetensors_writer_free(w);
  g_free(path);
}

static char *sharded_dir(void) {
  char *dir = tu_tmpdir();
  save_shard(dir, "model-00001-of-00002.safetensors", "layer.0.w", "layer.0.b", 0);
  save_shard(dir, "model-00002-of-00002.safetensors", "layer.1.w", "stray", 100);
  return dir;
}

static void write_index(const char *dir, const char *json) {
  char *p = g_build_filename(dir, "model.safetensors.index.json", NULL);
  tu_write(p, json, strlen(json));
  g_free(p);
}

#define GOOD_INDEX                                                          \
  "{\"metadata\": {\"total_size\": 84},\n \"weight_map\": {\n"             \
  "  \"layer.1.w\": \"model-00002-of-00002.safetensors\",\n"               \
  "  \"layer.0.w\": \"model-00001-of-00002.safetensors\",\n"               \
  "  \"layer.0.b\": \"model-00001-of-00002.safetensors\"}}"

static void test_sharded(void) {
  char *dir = sharded_dir();
  write_index(dir, GOOD_INDEX);
  GError *err = NULL;
  LmwbSafetensors *st = lmwb_safetensors_open_dir(dir, &err);
  g_assert_no_error(err);
  /* Exactly the index's tensors ("stray" is in a shard but not in the index). */
  g_assert_cmpuint(lmwb_safetensors_count(st), ==, 3);
  g_assert_null(lmwb_safetensors_find(st, "stray"));
  g_assert_cmpstr(lmwb_safetensors_metadata(st, "total_size"), ==, "84");
  g_assert_cmpstr(lmwb_safetensors_metadata(st, "format"), ==, "pt");
  const LmwbTensorView *t = lmwb_safetensors_find(st, "layer.1.w");
  g_assert_nonnull(t);
  g_assert_true(g_str_has_suffix(t->file, "model-00002-of-00002.safetensors"));
  float out[6];
  g_assert_true(lmwb_tensor_to_f32(t, out, &err));
  g_assert_cmpfloat(out[5], ==, 105.0f);
  t = lmwb_safetensors_find(st, "layer.0.b");
  g_assert_cmpint(t->dtype, ==, LMWB_DTYPE_BF16);
  g_assert_true(lmwb_tensor_to_f32(t, out, &err));
  g_assert_cmpfloat(out[3], ==, 3.0f);
  /* Order: first shard, then second. */
  g_assert_true(g_str_has_suffix(lmwb_safetensors_at(st, 0)->file, "00001-of-00002.safetensors"));
  g_assert_true(g_str_has_suffix(lmwb_safetensors_at(st, 2)->file, "00002-of-00002.safetensors"));
  lmwb_safetensors_close(st);
  tu_rmdir(dir);
  g_free(dir);
}

static void expect_bad_index(const char *json, const char *frag1, const char *frag2) {
  char *dir = sharded_dir();
  write_index(dir, json);
  GError *err = NULL;
  LmwbSafetensors *st = lmwb_safetensors_open_dir(dir, &err);
  g_assert_null(st);
  tu_assert_input_error(err, frag1, frag2);
  g_error_free(err);
  tu_rmdir(dir);
  g_free(dir);
}

static void test_sharded_index_malformed(void) {
  expect_bad_index("{\"weight_map\": {\"a\": ", "model.safetensors.index.json", "not valid JSON");
}

static void test_sharded_weight_map_missing(void) {
  expect_bad_index("{\"metadata\": {}}", "model.safetensors.index.json", "\"weight_map\"");
}

static void test_sharded_shard_missing(void) {
  expect_bad_index("{\"weight_map\": {\"layer.0.w\": \"model-00001-of-00002.safetensors\","
                   " \"x\": \"model-00003-of-00003.safetensors\"}}",
                   "model-00003-of-00003.safetensors", "missing");
}

static void test_sharded_tensor_absent(void) {
  expect_bad_index("{\"weight_map\": {\"layer.0.w\": \"model-00001-of-00002.safetensors\","
                   " \"ghost\": \"model-00002-of-00002.safetensors\"}}",
                   "'ghost'", "no such tensor");
}

static void test_sharded_name_escapes(void) {
  expect_bad_index("{\"weight_map\": {\"layer.0.w\": \"../model-00001-of-00002.safetensors\"}}",
                   "../model-00001-of-00002.safetensors", "not a file in the model folder");
  expect_bad_index("{\"weight_map\": {\"layer.0.w\": \"..\"}}", "'..'", "model folder");
  expect_bad_index("{\"weight_map\": {\"layer.0.w\": \"/etc/passwd\"}}", "/etc/passwd",
                   "model folder");
  expect_bad_index("{\"weight_map\": {\"layer.0.w\": 3}}", "'layer.0.w'", "not a file name");
}

static void test_open_dir_single_and_ambiguous(void) {
  char *dir = tu_tmpdir();
  GError *err = NULL;
  LmwbSafetensors *st = lmwb_safetensors_open_dir(dir, &err);
  g_assert_null(st);
  tu_assert_input_error(err, "no .safetensors file");
  g_clear_error(&err);
  save_shard(dir, "weights.safetensors", "w", NULL, 1);
  st = lmwb_safetensors_open_dir(dir, &err);
  g_assert_no_error(err);
  g_assert_nonnull(lmwb_safetensors_find(st, "w"));
  lmwb_safetensors_close(st);
  save_shard(dir, "other.safetensors", "v", NULL, 1);
  st = lmwb_safetensors_open_dir(dir, &err);
  g_assert_null(st);
  tu_assert_input_error(err, "several .safetensors files");
  g_clear_error(&err);
  save_shard(dir, "model.safetensors", "m", NULL, 1); /* the conventional name wins */
  st = lmwb_safetensors_open_dir(dir, &err);
  g_assert_no_error(err);
  g_assert_nonnull(lmwb_safetensors_find(st, "m"));
  lmwb_safetensors_close(st);
  tu_rmdir(dir);
  g_free(dir);
}

/* ---- bad input: one test per case ------------------------------------------------------ */

static void test_bad_truncated_file(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "short.safetensors", NULL);
  tu_write(path, "\x10\x00\x00", 3);
  GError *err = NULL;
  g_assert_null(lmwb_safetensors_open(path, &err));
  tu_assert_input_error(err, "short.safetensors", "3 bytes", "too short");
  g_clear_error(&err);
  tu_write(path, "", 0);
  g_assert_null(lmwb_safetensors_open(path, &err));
  tu_assert_input_error(err, "short.safetensors", "0 bytes");
  g_clear_error(&err);
  g_unlink(path);
  g_assert_null(lmwb_safetensors_open(path, &err));
  tu_assert_input_error(err, "short.safetensors", "cannot open");
  g_clear_error(&err);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

static void test_bad_header_length_past_end(void) {
  /* Header claims 100 bytes but the file holds 8 + 20. */
  guint8 img[28] = {100};
  memcpy(img + 8, "{}                  ", 20);
  GError *err = NULL;
  g_assert_null(lmwb_safetensors_open_memory(img, sizeof img, "bad.safetensors", &err));
  tu_assert_input_error(err, "bad.safetensors", "header length 100", "past the end");
  g_clear_error(&err);
}

static void test_bad_header_too_large(void) {
  guint8 img[16] = {0, 0, 0, 0, 0, 1, 0, 0}; /* 2^40 */
  GError *err = NULL;
  g_assert_null(lmwb_safetensors_open_memory(img, sizeof img, "bad.safetensors", &err));
  tu_assert_input_error(err, "bad.safetensors", "100 MB");
  g_clear_error(&err);
}

static void test_bad_header_not_utf8(void) {
  EXPECT_BAD("{\"a\xff\": 1}", 0, "not valid UTF-8");
}

static void test_bad_header_not_utf8_nul(void) {
  guint8 img[8 + 4] = {4, 0, 0, 0, 0, 0, 0, 0, '{', 0, '}', ' '};
  GError *err = NULL;
  g_assert_null(lmwb_safetensors_open_memory(img, sizeof img, "bad.safetensors", &err));
  tu_assert_input_error(err, "bad.safetensors", "NUL");
  g_clear_error(&err);
}

static void test_bad_header_not_json(void) {
  EXPECT_BAD("{\"a\": {\"dtype\": \"F32\",", 0, "not valid JSON");
  EXPECT_BAD("", 0, "JSON");
}

static void test_bad_header_not_object(void) { EXPECT_BAD("[1, 2, 3]", 0, "not a JSON object"); }

static void test_bad_entry_not_object(void) { EXPECT_BAD("{\"w\": [1, 2]}", 0, "'w'", "not a JSON object"); }

static void test_bad_missing_dtype(void) {
  EXPECT_BAD("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "'w'", "\"dtype\"");
}

static void test_bad_dtype_not_string(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "'w'",
             "\"dtype\"", "not a string");
}

static void test_bad_unknown_dtype(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F128\", \"shape\": [1], \"data_offsets\": [0, 16]}}", 16, "'w'",
             "unknown dtype 'F128'");
  EXPECT_BAD("{\"w\": {\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
             "unknown dtype 'f32'");
}

static void test_bad_missing_shape(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "'w'", "\"shape\"");
}

static void test_bad_shape_wrong_type(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4, "'w'",
             "\"shape\"", "not an array");
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4, "'w'",
             "not an integer");
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8,
             "not an integer");
}

static void test_bad_shape_negative(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -1], \"data_offsets\": [0, 4]}}", 4,
             "'w'", "negative dimension (-1)");
}

static void test_bad_shape_too_many_dims(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}",
             4, "'w'", "9 dimensions");
}

static void test_bad_shape_overflow(void) {
  /* Element count overflows 64 bits. */
  EXPECT_BAD("{\"w\": {\"dtype\": \"U8\", \"shape\": [4294967296, 4294967296], "
             "\"data_offsets\": [0, 0]}}", 0, "'w'", "overflows");
  /* Element count fits, byte count (x 8) does not. */
  EXPECT_BAD("{\"w\": {\"dtype\": \"F64\", \"shape\": [2305843009213693952], "
             "\"data_offsets\": [0, 0]}}", 0, "'w'", "overflows");
  /* A dimension past INT64_MAX wraps negative in JSON parsing and is still refused. */
  GError *e = parse_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [18446744073709551615], "
                        "\"data_offsets\": [0, 0]}}", zeros, 0);
  g_assert_error(e, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_error_free(e);
}

static void test_bad_missing_offsets(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, "'w'", "\"data_offsets\"");
}

static void test_bad_offsets_not_two_ints(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", 8, "'w'",
             "not two integers");
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, \"4\"]}}", 4,
             "not two integers");
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": {\"a\": 0}}}", 4,
             "not two integers");
}

static void test_bad_offsets_negative(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4, "'w'",
             "negative offset");
}

static void test_bad_offsets_begin_after_end(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}", 8, "'w'",
             "begin 8 is after end 4");
}

static void test_bad_offsets_beyond_buffer(void) {
  /* The header promises 16 bytes; the file has 8 (a truncated download). */
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8, "'w'",
             "end 16", "beyond the data buffer (8 bytes");
}

static void test_bad_size_mismatch(void) {
  EXPECT_BAD("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 20]}}", 24, "'w'",
             "span 20 bytes", "[2, 3] x F32 needs 24");
}

static void test_bad_overlap(void) {
  EXPECT_BAD("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
             " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 16,
             "'a' and 'b' overlap");
}

static void test_bad_metadata(void) {
  EXPECT_BAD("{\"__metadata__\": {\"format\": 1}}", 0, "__metadata__", "'format'", "not a string");
  EXPECT_BAD("{\"__metadata__\": [\"x\"]}", 0, "__metadata__", "not a JSON object");
}

static void test_good_edge_cases(void) {
  /* Empty tensors may share offsets; holes are tolerated; trailing spaces pad the header. */
  GByteArray *a = tu_safetensors_image("{\"e1\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]},"
                        " \"e2\": {\"dtype\": \"BOOL\", \"shape\": [0, 5], \"data_offsets\": [0, 0]},"
                        " \"x\": {\"dtype\": \"U8\", \"shape\": [], \"data_offsets\": [3, 4]}}   ",
                        "\x01\x02\x03\x04", 4);
  GError *err = NULL;
  LmwbSafetensors *st = lmwb_safetensors_open_memory(a->data, a->len, "ok.safetensors", &err);
  g_assert_no_error(err);
  g_assert_cmpuint(lmwb_safetensors_count(st), ==, 3);
  const LmwbTensorView *x = lmwb_safetensors_find(st, "x");
  g_assert_cmpint(((const guint8 *)x->data)[0], ==, 4);
  lmwb_safetensors_close(st);
  g_byte_array_unref(a);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/safetensors/roundtrip", test_roundtrip);
  g_test_add_func("/safetensors/save_over_open_file", test_save_over_open_file);
  g_test_add_func("/safetensors/writer_rejects", test_writer_rejects);
  g_test_add_func("/safetensors/sharded", test_sharded);
  g_test_add_func("/safetensors/sharded/index_malformed", test_sharded_index_malformed);
  g_test_add_func("/safetensors/sharded/weight_map_missing", test_sharded_weight_map_missing);
  g_test_add_func("/safetensors/sharded/shard_missing", test_sharded_shard_missing);
  g_test_add_func("/safetensors/sharded/tensor_absent", test_sharded_tensor_absent);
  g_test_add_func("/safetensors/sharded/name_escapes", test_sharded_name_escapes);
  g_test_add_func("/safetensors/open_dir", test_open_dir_single_and_ambiguous);
  g_test_add_func("/safetensors/good_edge_cases", test_good_edge_cases);
  g_test_add_func("/safetensors/bad/truncated_file", test_bad_truncated_file);
  g_test_add_func("/safetensors/bad/header_length_past_end", test_bad_header_length_past_end);
  g_test_add_func("/safetensors/bad/header_too_large", test_bad_header_too_large);
  g_test_add_func("/safetensors/bad/header_not_utf8", test_bad_header_not_utf8);
  g_test_add_func("/safetensors/bad/header_nul", test_bad_header_not_utf8_nul);
  g_test_add_func("/safetensors/bad/header_not_json", test_bad_header_not_json);
  g_test_add_func("/safetensors/bad/header_not_object", test_bad_header_not_object);
  g_test_add_func("/safetensors/bad/entry_not_object", test_bad_entry_not_object);
  g_test_add_func("/safetensors/bad/missing_dtype", test_bad_missing_dtype);
  g_test_add_func("/safetensors/bad/dtype_not_string", test_bad_dtype_not_string);
  g_test_add_func("/safetensors/bad/unknown_dtype", test_bad_unknown_dtype);
  g_test_add_func("/safetensors/bad/missing_shape", test_bad_missing_shape);
  g_test_add_func("/safetensors/bad/shape_wrong_type", test_bad_shape_wrong_type);
  g_test_add_func("/safetensors/bad/shape_negative", test_bad_shape_negative);
  g_test_add_func("/safetensors/bad/shape_too_many_dims", test_bad_shape_too_many_dims);
  g_test_add_func("/safetensors/bad/shape_overflow", test_bad_shape_overflow);
  g_test_add_func("/safetensors/bad/missing_offsets", test_bad_missing_offsets);
  g_test_add_func("/safetensors/bad/offsets_not_two_ints", test_bad_offsets_not_two_ints);
  g_test_add_func("/safetensors/bad/offsets_negative", test_bad_offsets_negative);
  g_test_add_func("/safetensors/bad/offsets_begin_after_end", test_bad_offsets_begin_after_end);
  g_test_add_func("/safetensors/bad/offsets_beyond_buffer", test_bad_offsets_beyond_buffer);
  g_test_add_func("/safetensors/bad/size_mismatch", test_bad_size_mismatch);
  g_test_add_func("/safetensors/bad/overlap", test_bad_overlap);
  g_test_add_func("/safetensors/bad/metadata", test_bad_metadata);
  return g_test_run();
}
