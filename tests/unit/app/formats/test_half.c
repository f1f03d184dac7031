/* F16/BF16/F8 <-> F32 conversions against independent references. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "app/formats/half.h"

static uint32_t bits(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return b;
}

static float from_bits(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}

/* Reference decode from the IEEE definition, by arithmetic rather than bit surgery. */
static float ref_f16(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31) v = m ? NAN : INFINITY;
  else if (e == 0) v = ldexp(m, -24);
  else v = ldexp(1024 + m, e - 25);
  return (float)(s ? -v : v);
}

static void test_f16_to_f32_all(void) {
  for (uint32_t h = 0; h < 65536; h++) {
    float got = lmwb_f16_to_f32((uint16_t)h), want = ref_f16((uint16_t)h);
    if (isnan(want)) {
      g_assert_true(isnan(got));
      g_assert_cmpint(signbit(got) != 0, ==, (h >> 15) != 0);
    } else {
      g_assert_cmphex(bits(got), ==, bits(want)); /* exact, including -0 and subnormals */
    }
  }
}

static void test_f16_bulk_matches_scalar(void) {
  /* An odd length and an odd start offset exercise the vector body, the tail and misalignment. */
  guint8 *raw = g_malloc(2 * 65536 + 1);
  for (uint32_t h = 0; h < 65536; h++) {
    raw[1 + 2 * h] = (guint8)(h & 0xff);
    raw[2 + 2 * h] = (guint8)(h >> 8);
  }
  float *out = g_new(float, 65536);
  lmwb_f16_to_f32_n(raw + 1, out, 65535);
  for (uint32_t h = 0; h < 65535; h++) {
    float s = lmwb_f16_to_f32((uint16_t)h);
    if (isnan(s)) g_assert_true(isnan(out[h]));
    else g_assert_cmphex(bits(out[h]), ==, bits(s));
  }
  g_free(out);
  g_free(raw);
}

static void test_bf16_to_f32(void) {
  g_assert_cmpfloat(lmwb_bf16_to_f32(0x3f80), ==, 1.0f);
  g_assert_cmpfloat(lmwb_bf16_to_f32(0xc000), ==, -2.0f);
  g_assert_cmpfloat(lmwb_bf16_to_f32(0x0001), ==, ldexpf(1.0f, -133)); /* subnormal */
  g_assert_true(isinf(lmwb_bf16_to_f32(0xff80)) && lmwb_bf16_to_f32(0xff80) < 0);
  g_assert_true(isnan(lmwb_bf16_to_f32(0x7fc1)));
}

/* Round-to-nearest-even property: no other F16 is closer, and a tie picks the even one. */
static void check_f16_rounding(float x) {
  uint16_t h = lmwb_f32_to_f16(x);
  if (isnan(x)) {
    g_assert_true(isnan(lmwb_f16_to_f32(h)));
    return;
  }
#ifdef __FLT16_MAX__
  _Float16 ref = (_Float16)x;
  uint16_t rb;
  memcpy(&rb, &ref, 2);
  g_assert_cmphex(h, ==, rb);
#endif
  double v = lmwb_f16_to_f32(h);
  if (isinf(v)) {
    g_assert_true(fabs((double)x) >= 65520.0);
    return;
  }
  double err = fabs(v - (double)x);
  for (int d = -1; d <= 1; d += 2) {
    uint16_t nb = (uint16_t)(h + d);
    if (((nb >> 10) & 31) == 31 || (nb & 0x7fff) == 0x7fff) continue;
    if ((h & 0x7fff) == 0 && d < 0) continue;
    double e2 = fabs((double)lmwb_f16_to_f32(nb) - (double)x);
    g_assert_cmpfloat(err, <=, e2);
    if (err == e2) g_assert_cmpint(h & 1, ==, 0);
  }
}

static void test_f32_to_f16(void) {
  g_assert_cmphex(lmwb_f32_to_f16(1.0f), ==, 0x3c00);
  g_assert_cmphex(lmwb_f32_to_f16(-0.0f), ==, 0x8000);
  g_assert_cmphex(lmwb_f32_to_f16(65504.0f), ==, 0x7bff);
  g_assert_cmphex(lmwb_f32_to_f16(65519.0f), ==, 0x7bff);
  g_assert_cmphex(lmwb_f32_to_f16(65520.0f), ==, 0x7c00); /* tie to even = inf */
  g_assert_cmphex(lmwb_f32_to_f16(-1e10f), ==, 0xfc00);
  g_assert_cmphex(lmwb_f32_to_f16(INFINITY), ==, 0x7c00);
  g_assert_cmphex(lmwb_f32_to_f16(ldexpf(1, -24)), ==, 0x0001);
  g_assert_cmphex(lmwb_f32_to_f16(ldexpf(1, -25)), ==, 0x0000);          /* tie to even = 0 */
  g_assert_cmphex(lmwb_f32_to_f16(ldexpf(1.5f, -25)), ==, 0x0001);
  g_assert_cmphex(lmwb_f32_to_f16(ldexpf(3, -25)), ==, 0x0002);          /* tie 1.5 ulp -> 2 */
  g_assert_cmphex(lmwb_f32_to_f16(ldexpf(1, -14) - ldexpf(1, -26)), ==, 0x0400); /* carry to normal */
  g_assert_cmphex(lmwb_f32_to_f16(1.0f + ldexpf(1, -11)), ==, 0x3c00);   /* tie, even below */
  g_assert_cmphex(lmwb_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), ==, 0x3c02); /* tie, even above */
  g_assert_true(isnan(lmwb_f16_to_f32(lmwb_f32_to_f16(NAN))));
  g_assert_true(isnan(lmwb_f16_to_f32(lmwb_f32_to_f16(from_bits(0x7f800001))))); /* sNaN stays NaN */
  /* Every F16 survives a round trip exactly. */
  for (uint32_t h = 0; h < 65536; h++) {
    if (((h >> 10) & 31) == 31 && (h & 1023)) continue;
    g_assert_cmphex(lmwb_f32_to_f16(lmwb_f16_to_f32((uint16_t)h)), ==, h);
  }
  /* A sweep over the whole F32 range. */
  for (uint64_t b = 0; b < (1ull << 32); b += 65521) check_f16_rounding(from_bits((uint32_t)b));
  /* Dense sweep around the subnormal/normal boundary and the overflow point. */
  for (uint32_t b = 0x33000000u - 64; b < 0x38800000u + 64; b += 97) check_f16_rounding(from_bits(b));
  for (uint32_t b = 0x477fe000u; b < 0x47800100u; b += 7) check_f16_rounding(from_bits(b));
}

static void test_f32_to_f16_bulk(void) {
  enum { N = 100003 };
  float *x = g_new(float, N);
  guint8 *out = g_malloc(2 * N + 1);
  for (int i = 0; i < N; i++) x[i] = from_bits((uint32_t)i * 42949u + 0x30000000u);
  x[5] = NAN;
  x[6] = -INFINITY;
  lmwb_f32_to_f16_n(x, out + 1, N);
  for (int i = 0; i < N; i++) {
    uint16_t got = (uint16_t)(out[1 + 2 * i] | (out[2 + 2 * i] << 8));
    uint16_t want = lmwb_f32_to_f16(x[i]);
    if (isnan(x[i])) g_assert_true(isnan(lmwb_f16_to_f32(got)));
    else g_assert_cmphex(got, ==, want);
  }
  g_free(x);
  g_free(out);
}

static void test_f32_to_bf16(void) {
  g_assert_cmphex(lmwb_f32_to_bf16(1.0f), ==, 0x3f80);
  g_assert_cmphex(lmwb_f32_to_bf16(1.0f + ldexpf(1, -8)), ==, 0x3f80);      /* tie, even below */
  g_assert_cmphex(lmwb_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), ==, 0x3f82);  /* tie, even above */
  g_assert_cmphex(lmwb_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), ==, 0x3f81);
  g_assert_cmphex(lmwb_f32_to_bf16(from_bits(0x7f7fffff)), ==, 0x7f80);     /* max float -> inf */
  g_assert_cmphex(lmwb_f32_to_bf16(-INFINITY), ==, 0xff80);
  g_assert_cmphex(lmwb_f32_to_bf16(from_bits(0x00010000)), ==, 0x0001);     /* subnormal exact */
  g_assert_true(isnan(lmwb_bf16_to_f32(lmwb_f32_to_bf16(from_bits(0x7f800001)))));
  g_assert_true(isnan(lmwb_bf16_to_f32(lmwb_f32_to_bf16(from_bits(0xffffffff)))));
  for (uint32_t h = 0; h < 65536; h++) {
    if (((h >> 7) & 255) == 255 && (h & 127)) continue;
    g_assert_cmphex(lmwb_f32_to_bf16(lmwb_bf16_to_f32((uint16_t)h)), ==, h);
  }
  float x[37];
  guint8 out[2 * 37];
  for (int i = 0; i < 37; i++) x[i] = (float)i * 0.3f - 5.0f;
  lmwb_f32_to_bf16_n(x, out, 37);
  for (int i = 0; i < 37; i++)
    g_assert_cmphex((uint16_t)(out[2 * i] | (out[2 * i + 1] << 8)), ==, lmwb_f32_to_bf16(x[i]));
}

static void test_f8(void) {
  g_assert_cmpfloat(lmwb_f8e4m3_to_f32(0x7e), ==, 448.0f);
  g_assert_true(isnan(lmwb_f8e4m3_to_f32(0x7f)));
  g_assert_true(isnan(lmwb_f8e4m3_to_f32(0xff)));
  g_assert_cmpfloat(lmwb_f8e4m3_to_f32(0x78), ==, 256.0f); /* exponent 15 is finite in FN */
  g_assert_cmpfloat(lmwb_f8e4m3_to_f32(0x38), ==, 1.0f);
  g_assert_cmpfloat(lmwb_f8e4m3_to_f32(0x01), ==, ldexpf(1, -9));
  g_assert_cmpfloat(lmwb_f8e4m3_to_f32(0x08), ==, ldexpf(1, -6));
  g_assert_cmpfloat(lmwb_f8e4m3_to_f32(0xb8), ==, -1.0f);
  g_assert_cmpfloat(lmwb_f8e5m2_to_f32(0x3c), ==, 1.0f);
  g_assert_cmpfloat(lmwb_f8e5m2_to_f32(0x7b), ==, 57344.0f);
  g_assert_true(isinf(lmwb_f8e5m2_to_f32(0x7c)));
  g_assert_true(isnan(lmwb_f8e5m2_to_f32(0x7d)));
  g_assert_cmpfloat(lmwb_f8e5m2_to_f32(0x01), ==, ldexpf(1, -16));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/half/f16_to_f32_all", test_f16_to_f32_all);
  g_test_add_func("/half/f16_bulk_matches_scalar", test_f16_bulk_matches_scalar);
  g_test_add_func("/half/bf16_to_f32", test_bf16_to_f32);
  g_test_add_func("/half/f32_to_f16", test_f32_to_f16);
  g_test_add_func("/half/f32_to_f16_bulk", test_f32_to_f16_bulk);
  g_test_add_func("/half/f32_to_bf16", test_f32_to_bf16);
  g_test_add_func("/half/f8", test_f8);
  return g_test_run();
}
