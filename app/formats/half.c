#include "app/formats/half.h"

#include <math.h>
#include <string.h>
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#define LMWB_HAVE_F16C 1
#endif

static inline float bits_to_f32(uint32_t b) {
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

static inline uint32_t f32_to_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b;
}

static inline uint16_t load_le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline void store_le16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)(v & 0xff);
  p[1] = (unsigned char)(v >> 8);
}

float lmwb_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    if (mant == 0) return bits_to_f32(sign);
    /* Subnormal: renormalise; every F16 subnormal is an F32 normal. */
    uint32_t e = 113; /* 127 - 15 + 1 */
    while (!(mant & 0x400)) {
      mant <<= 1;
      e--;
    }
    mant &= 0x3ff;
    return bits_to_f32(sign | (e << 23) | (mant << 13));
  }
  if (exp == 31) {
    /* Inf stays inf; NaN keeps its payload and is quieted, as F16C hardware does. */
    if (mant == 0) return bits_to_f32(sign | 0x7f800000u);
    return bits_to_f32(sign | 0x7fc00000u | (mant << 13));
  }
  return bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

float lmwb_bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

uint16_t lmwb_f32_to_f16(float f) {
  uint32_t x = f32_to_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) {
    if (x == 0x7f800000u) return sign | 0x7c00;
    return (uint16_t)(sign | 0x7e00 | ((x >> 13) & 0x3ff)); /* quiet NaN, top payload bits */
  }
  /* 65520 is the tie between 65504 (odd mantissa) and 65536: ties-to-even gives inf. */
  if (x >= 0x477ff000u) return sign | 0x7c00;
  if (x < 0x38800000u) {
    /* Result is an F16 subnormal (or zero): count in units of 2^-24. 2^-25 ties to 0 (even). */
    if (x <= 0x33000000u) return sign;
    uint32_t e = x >> 23;
    uint32_t mant = (x & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t r = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++; /* may carry into the min normal: fine */
    return (uint16_t)(sign | r);
  }
  uint32_t h = (x >> 13) - (112u << 10);
  uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* carry may bump the exponent: fine */
  return (uint16_t)(sign | h);
}

uint16_t lmwb_f32_to_bf16(float f) {
  uint32_t x = f32_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1); /* round to nearest even; overflow carries into inf */
  return (uint16_t)(x >> 16);
}

float lmwb_f8e4m3_to_f32(uint8_t v) {
  float sign = (v & 0x80) ? -1.0f : 1.0f;
  int exp = (v >> 3) & 0xf;
  int mant = v & 0x7;
  if (exp == 15 && mant == 7) return copysignf(NAN, sign);
  if (exp == 0) return sign * ldexpf((float)mant, -9);
  return sign * ldexpf((float)(8 + mant), exp - 10);
}

float lmwb_f8e5m2_to_f32(uint8_t v) { return lmwb_f16_to_f32((uint16_t)(v << 8)); }

void lmwb_f16_to_f32_n(const void *src, float *dst, size_t n) {
  const unsigned char *p = src;
  size_t i = 0;
#ifdef LMWB_HAVE_F16C
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; i++) dst[i] = lmwb_f16_to_f32(load_le16(p + 2 * i));
}

void lmwb_bf16_to_f32_n(const void *src, float *dst, size_t n) {
  const unsigned char *p = src;
  for (size_t i = 0; i < n; i++) dst[i] = lmwb_bf16_to_f32(load_le16(p + 2 * i));
}

void lmwb_f32_to_f16_n(const float *src, void *dst, size_t n) {
  unsigned char *p = dst;
  size_t i = 0;
#ifdef LMWB_HAVE_F16C
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128((__m128i *)(void *)(p + 2 * i), h);
  }
#endif
  for (; i < n; i++) store_le16(p + 2 * i, lmwb_f32_to_f16(src[i]));
}

void lmwb_f32_to_bf16_n(const float *src, void *dst, size_t n) {
  unsigned char *p = dst;
  for (size_t i = 0; i < n; i++) store_le16(p + 2 * i, lmwb_f32_to_bf16(src[i]));
}

size_t lmwb_f32_find_nonfinite(const float *p, size_t n) {
  enum { BLOCK = 4096 };
  for (size_t b = 0; b < n; b += BLOCK) {
    size_t e = b + BLOCK < n ? b + BLOCK : n;
    uint32_t any = 0;
    for (size_t i = b; i < e; i++) any |= (f32_to_bits(p[i]) & 0x7f800000u) == 0x7f800000u;
    if (any)
      for (size_t i = b; i < e; i++)
        if ((f32_to_bits(p[i]) & 0x7f800000u) == 0x7f800000u) return i;
  }
  return n;
}
