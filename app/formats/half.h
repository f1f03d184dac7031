/* Scalar and bulk conversion between F32 and the 16-/8-bit float formats found in checkpoints.
 * Contract: every conversion is exact where the target can represent the value (F16, BF16 and
 * F8 -> F32 are always exact, including subnormals, +-inf and NaN); F32 -> F16/BF16 rounds to
 * nearest, ties to even, overflows to +-inf and keeps NaN a (quiet) NaN with its sign.
 * The bulk loops read their 16-bit source through memcpy, so `src` need not be aligned
 * (safetensors does not promise alignment). Values are little-endian in memory. */
#pragma once
#include <stddef.h>
#include <stdint.h>

float lmwb_f16_to_f32(uint16_t h);
float lmwb_bf16_to_f32(uint16_t h);
uint16_t lmwb_f32_to_f16(float f);
uint16_t lmwb_f32_to_bf16(float f);

/* F8 formats of the safetensors spec: E4M3 is the "FN" variant (no infinities, S.1111.111 is
 * NaN, max 448); E5M2 follows IEEE rules (inf and NaN like F16). */
float lmwb_f8e4m3_to_f32(uint8_t v);
float lmwb_f8e5m2_to_f32(uint8_t v);

/* n little-endian 16-bit values at src (any alignment) -> n floats at dst. */
void lmwb_f16_to_f32_n(const void *src, float *dst, size_t n);
void lmwb_bf16_to_f32_n(const void *src, float *dst, size_t n);
/* n floats -> n little-endian 16-bit values at dst (any alignment). */
void lmwb_f32_to_f16_n(const float *src, void *dst, size_t n);
void lmwb_f32_to_bf16_n(const float *src, void *dst, size_t n);

/* Index of the first NaN or infinity among n floats; n when all are finite (a bit test, so it
 * holds whatever the compiler's floating-point options). */
size_t lmwb_f32_find_nonfinite(const float *p, size_t n);
