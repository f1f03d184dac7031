/* .npy: byte-exact header layout, round trips, and bad files. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "app/formats/npy.h"
#include "formats_test_util.h"

static void test_header_layout(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "a.npy", NULL);
  float v[6] = {1, 2, 3, 4, 5, 6};
  int64_t shape[] = {2, 3};
  GError *err = NULL;
  g_assert_true(lmwb_npy_write_f32(path, v, shape, 2, &err));
  g_assert_no_error(err);
  char *data;
  gsize len;
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  /* 10-byte prefix + 59-byte dict: padded to 128, as numpy writes it. */
  g_assert_cmpuint(len, ==, 128 + 24);
  g_assert_cmpmem(data, 8, "\x93NUMPY\x01\x00", 8);
  g_assert_cmpuint((guint8)data[8] | ((guint8)data[9] << 8), ==, 128 - 10);
  const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  g_assert_cmpmem(data + 10, strlen(dict), dict, strlen(dict));
  g_assert_cmpint(data[127], ==, '\n');
  for (size_t i = 10 + strlen(dict); i < 127; i++) g_assert_cmpint(data[i], ==, ' ');
  g_assert_cmpmem(data + 128, 24, v, 24);
  g_free(data);
  /* 1-d shape gets the Python one-tuple comma, 0-d an empty tuple. */
  int64_t s1[] = {5};
  int32_t iv[5] = {-1, 0, 1, 2147483647, -2147483647 - 1};
  g_assert_true(lmwb_npy_write_i32(path, iv, s1, 1, &err));
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  g_assert_nonnull(strstr(data + 10, "'descr': '<i4'"));
  g_assert_nonnull(strstr(data + 10, "'shape': (5,), }"));
  g_free(data);
  g_assert_true(lmwb_npy_write_f32(path, v, NULL, 0, &err));
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  g_assert_nonnull(strstr(data + 10, "'shape': (), }"));
  g_assert_cmpuint(len, ==, 128 + 4);
  g_free(data);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

static void test_roundtrip(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "r.npy", NULL);
  enum { N = 3 * 5 * 7 };
  float v[N];
  for (int i = 0; i < N; i++) v[i] = cosf((float)i) * 1e3f;
  v[3] = NAN;
  v[4] = -INFINITY;
  int64_t shape[] = {3, 5, 7};
  GError *err = NULL;
  g_assert_true(lmwb_npy_write_f32(path, v, shape, 3, &err));
  int64_t got[LMWB_NPY_MAX_DIMS];
  int nd = -1;
  float *r = lmwb_npy_read_f32(path, got, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpint(nd, ==, 3);
  g_assert_cmpint(got[0], ==, 3);
  g_assert_cmpint(got[1], ==, 5);
  g_assert_cmpint(got[2], ==, 7);
  g_assert_cmpmem(r, sizeof v, v, sizeof v); /* bit-exact, NaN included */
  g_free(r);

  int32_t iv[4] = {7, -7, 1 << 30, 0};
  int64_t s1[] = {4};
  g_assert_true(lmwb_npy_write_i32(path, iv, s1, 1, &err));
  int32_t *ir = lmwb_npy_read_i32(path, got, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpint(nd, ==, 1);
  g_assert_cmpmem(ir, sizeof iv, iv, sizeof iv);
  g_free(ir);
  /* Integers are not floats. */
  g_assert_null(lmwb_npy_read_f32(path, got, &nd, &err));
  tu_assert_input_error(err, "r.npy", "'<i4'", "not a float");
  g_clear_error(&err);

  int64_t lv[3] = {1, -5, 2147483648ll};
  int64_t s3[] = {3};
  g_assert_true(lmwb_npy_write_i64(path, lv, s3, 1, &err));
  g_assert_null(lmwb_npy_read_i32(path, got, &nd, &err));
  tu_assert_input_error(err, "element 2", "does not fit");
  g_clear_error(&err);

  /* float64: bit-exact round trip (values no float holds, NaN, -0, subnormal); f4 widens exactly;
   * integers are refused. */
  double dv[6] = {0.1, -1.0 / 3.0, 1e300, NAN, -0.0, 4.9e-324};
  int64_t s23[] = {2, 3};
  g_assert_true(lmwb_npy_write_f64(path, dv, s23, 2, &err));
  g_assert_no_error(err);
  char *raw;
  gsize rawlen;
  g_assert_true(g_file_get_contents(path, &raw, &rawlen, NULL));
  g_assert_nonnull(strstr(raw + 10, "'descr': '<f8'"));
  g_assert_cmpuint(rawlen, ==, 128 + sizeof dv);
  g_free(raw);
  double *dr = lmwb_npy_read_f64(path, got, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpint(nd, ==, 2);
  g_assert_cmpint(got[0], ==, 2);
  g_assert_cmpint(got[1], ==, 3);
  g_assert_cmpmem(dr, sizeof dv, dv, sizeof dv);
  g_free(dr);
  float fv[2] = {0.1f, -3.5f};
  int64_t s2[] = {2};
  g_assert_true(lmwb_npy_write_f32(path, fv, s2, 1, &err));
  dr = lmwb_npy_read_f64(path, got, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpfloat(dr[0], ==, (double)0.1f);
  g_assert_cmpfloat(dr[1], ==, -3.5);
  g_free(dr);
  g_assert_true(lmwb_npy_write_i32(path, iv, s1, 1, &err));
  g_assert_null(lmwb_npy_read_f64(path, got, &nd, &err));
  tu_assert_input_error(err, "r.npy", "'<i4'", "not a float");
  g_clear_error(&err);

  /* Zero elements: success, non-NULL. */
  int64_t s0[] = {0, 4};
  g_assert_true(lmwb_npy_write_f32(path, NULL, s0, 2, &err));
  r = lmwb_npy_read_f32(path, got, &nd, &err);
  g_assert_no_error(err);
  g_assert_nonnull(r);
  g_assert_cmpint(nd, ==, 2);
  g_assert_cmpint(got[0], ==, 0);
  g_free(r);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

/* A hand-built .npy image: version 1.0, given header text, given data. */
static GByteArray *npy_image(int major, const char *header, const void *data, size_t len) {
  GByteArray *a = g_byte_array_new();
  g_byte_array_append(a, (const guint8 *)"\x93NUMPY", 6);
  guint8 ver[2] = {(guint8)major, 0};
  g_byte_array_append(a, ver, 2);
  size_t hl = strlen(header);
  guint8 l[4] = {(guint8)hl, (guint8)(hl >> 8), (guint8)(hl >> 16), (guint8)(hl >> 24)};
  g_byte_array_append(a, l, major == 1 ? 2 : 4);
  g_byte_array_append(a, (const guint8 *)header, (guint)hl);
  if (len) g_byte_array_append(a, data, (guint)len);
  return a;
}

static void test_reads_other_layouts(void) {
  /* f8 and f2, keys in another order, v2 header, big-endian. */
  double d[3] = {1.5, -2.25, 1e-3};
  GByteArray *a = npy_image(2, "{'shape': (3,), 'fortran_order': False, 'descr': '<f8'}\n", d, sizeof d);
  int64_t shape[LMWB_NPY_MAX_DIMS];
  int nd;
  GError *err = NULL;
  float *r = lmwb_npy_parse_f32(a->data, a->len, "v2.npy", shape, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpint(nd, ==, 1);
  g_assert_cmpfloat(r[1], ==, -2.25f);
  g_assert_cmpfloat(r[2], ==, (float)1e-3);
  g_free(r);
  g_byte_array_unref(a);

  guint8 h[4] = {0x00, 0x3c, 0x00, 0xc0}; /* 1.0, -2.0 as <f2 */
  a = npy_image(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2), }", h, 4);
  r = lmwb_npy_parse_f32(a->data, a->len, "h.npy", shape, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpfloat(r[0], ==, 1.0f);
  g_assert_cmpfloat(r[1], ==, -2.0f);
  g_free(r);
  g_byte_array_unref(a);

  guint8 be[4] = {0x3f, 0x80, 0x00, 0x00}; /* 1.0 as >f4 */
  a = npy_image(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (), }", be, 4);
  r = lmwb_npy_parse_f32(a->data, a->len, "be.npy", shape, &nd, &err);
  g_assert_no_error(err);
  g_assert_cmpint(nd, ==, 0);
  g_assert_cmpfloat(r[0], ==, 1.0f);
  g_free(r);
  g_byte_array_unref(a);
}

#define EXPECT_BAD_NPY(major, header, nbytes, ...)                                        \
  do {                                                                                 \
    static const guint8 z_[64];                                                        \
    GByteArray *a_ = npy_image((major), (header), z_, (nbytes));                          \
    GError *e_ = NULL;                                                                 \
    int64_t s_[LMWB_NPY_MAX_DIMS];                                                     \
    int n_;                                                                            \
    g_assert_null(lmwb_npy_parse_f32(a_->data, a_->len, "bad.npy", s_, &n_, &e_));     \
    tu_assert_input_error(e_, "bad.npy", __VA_ARGS__);                                 \
    g_error_free(e_);                                                                  \
    g_byte_array_unref(a_);                                                            \
  } while (0)

static void test_bad_files(void) {
  GError *err = NULL;
  int64_t s[LMWB_NPY_MAX_DIMS];
  int nd;
  g_assert_null(lmwb_npy_parse_f32("PK\x03\x04 not npy", 15, "bad.npy", s, &nd, &err));
  tu_assert_input_error(err, "bad.npy", "magic");
  g_clear_error(&err);
  g_assert_null(lmwb_npy_parse_f32("\x93NUM", 4, "bad.npy", s, &nd, &err));
  tu_assert_input_error(err, "bad.npy", "magic");
  g_clear_error(&err);
  EXPECT_BAD_NPY(9, "{}", 0, "version 9");
  /* Header length beyond the file. */
  guint8 img[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0xff, 0x00, '{', '}'};
  g_assert_null(lmwb_npy_parse_f32(img, sizeof img, "bad.npy", s, &nd, &err));
  tu_assert_input_error(err, "bad.npy", "header length 255", "past the end");
  g_clear_error(&err);
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8, "Fortran order");
  EXPECT_BAD_NPY(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", 8, "'<c8'",
                 "not supported");
  EXPECT_BAD_NPY(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 4,
                 "structured");
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 8, "8 bytes",
                 "need 12", "truncated");
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 8, "8 bytes",
                 "need 4");
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
                 0, "overflows");
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                 0, "overflows");
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 0, "not a valid dict");
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4,
                 "more than 8");
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'shape': (1,), }", 4, "lacks 'fortran_order'");
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4,
                 "unexpected key 'x'");
  EXPECT_BAD_NPY(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,) ", 4, "not a valid dict");
  EXPECT_BAD_NPY(1, "", 4, "not a valid dict");
  /* Missing file. */
  g_assert_null(lmwb_npy_read_f32("/nonexistent/x.npy", s, &nd, &err));
  tu_assert_input_error(err, "/nonexistent/x.npy", "cannot open");
  g_clear_error(&err);
}

static void test_write_rejects(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "w.npy", NULL);
  GError *err = NULL;
  int64_t neg[] = {-3};
  float v[1] = {0};
  g_assert_false(lmwb_npy_write_f32(path, v, neg, 1, &err));
  tu_assert_input_error(err, "w.npy", "negative");
  g_clear_error(&err);
  int64_t s[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  g_assert_false(lmwb_npy_write_f32(path, v, s, 9, &err));
  tu_assert_input_error(err, "w.npy", "9 dimensions");
  g_clear_error(&err);
  g_assert_cmpint(tu_count_entries(dir), ==, 0);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/npy/header_layout", test_header_layout);
  g_test_add_func("/npy/roundtrip", test_roundtrip);
  g_test_add_func("/npy/reads_other_layouts", test_reads_other_layouts);
  g_test_add_func("/npy/bad_files", test_bad_files);
  g_test_add_func("/npy/write_rejects", test_write_rejects);
  return g_test_run();
}
