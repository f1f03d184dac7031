/* Vectorisable exp, tanh and erf for the CPU ops. libm's expf/tanhf/erff are opaque calls that
 * GCC only vectorises under -ffast-math (which would also break the -inf/NaN handling the ops
 * rely on), so the hot loops (softmax, cross-entropy over 50k-token vocabularies, GELU, SiLU)
 * use these branch-free versions instead. Pure arithmetic plus bit casts: a loop calling them
 * compiles to AVX2/AVX-512 code.
 *
 * Accuracy: lmwb_expf about 2 ulp on [-87, 88] (Cephes polynomial), 0 below -87.3, +inf above
 * 88.72, NaN in -> NaN out. lmwb_tanhf absolute error < 2e-7. lmwb_erff absolute error < 2e-7
 * (Abramowitz & Stegun 7.1.26). */
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float lmwb_expf(float x) {
  /* Clamp with comparisons (not fminf) so a NaN passes through unchanged. */
  float xc = x < -88.0f ? -88.0f : x;
  xc = xc > 88.5f ? 88.5f : xc;
  /* n = round(x / ln2) by the 1.5*2^23 trick: the integer lands in the mantissa bits, no
   * float-to-int conversion (undefined for NaN). */
  const float magic = 12582912.0f;
  float t = xc * 1.44269504088896341f + magic;
  float n = t - magic;
  float r = xc - n * 0.693359375f + n * 2.12194440e-4f; /* x - n ln2, ln2 split in two */
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  uint32_t tb;
  memcpy(&tb, &t, sizeof tb);
  uint32_t eb = (tb - 0x4B400000u + 127u) << 23; /* 2^n as float bits */
  float scale;
  memcpy(&scale, &eb, sizeof scale);
  y *= scale;
  y = x < -87.3f ? 0.0f : y;
  y = x > 88.72f ? INFINITY : y;
  return y;
}

/* tanh(u) = 1 - 2 / (exp(2u) + 1): saturates to +-1 through exp's inf and 0. */
static inline float lmwb_tanhf(float u) { return 1.0f - 2.0f / (lmwb_expf(2.0f * u) + 1.0f); }

static inline float lmwb_erff(float x) {
  float ax = x < 0.f ? -x : x;
  float t = 1.0f / (1.0f + 0.3275911f * ax);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  float e = 1.0f - p * t * lmwb_expf(-ax * ax);
  return x < 0.f ? -e : e;
}
