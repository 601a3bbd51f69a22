// kernels/x86/quant_avx2.h — AVX2 building blocks for decoding quantized formats.
// Include only from *_avx2.cpp files (compiled with AVX2+FMA+F16C flags).
// The f8_e4m3 decode goes through f16 exactly as described in quant_avx512.h.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::kernels::x86_avx2 {

inline constexpr float kF8HalfRebias = 256.0f;  // decode(b) = f16_value(b) · 2^8

// 8 f8_e4m3 codes (low 8 bytes of `codes`) -> decode(code)·2^-8 as 8 f32 (NaN codes -> ±1.875).
static inline __m256 f8x8_to_f32_scaled(__m128i codes) {
  __m128i h = _mm_cvtepi8_epi16(codes);
  h = _mm_and_si128(_mm_slli_epi16(h, 7), _mm_set1_epi16(static_cast<short>(0xBFFF)));
  return _mm256_cvtph_ps(h);
}

// 16 f8_e4m3 codes -> two vectors of 8 (elements 0..7, 8..15), scaled as above.
static inline void f8x16_to_f32_scaled(__m128i codes, __m256* lo, __m256* hi) {
  __m256i h = _mm256_cvtepi8_epi16(codes);
  h = _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
  *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

// f4_e2m1 magnitudes indexed by the low 3 bits (VPERMPS on 8 lanes); the sign is bit 3.
static inline __m256 f4_mag_lut() {
  return _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
}

// 8 packed bytes zero-extended to 32-bit lanes -> the f32 values of their low nibbles (*lo,
// elements 0,2,..,14) and high nibbles (*hi, elements 1,3,..,15).
static inline void f4x16_to_f32_split(__m256i bytes32, __m256 lut, __m256* lo, __m256* hi) {
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256 mag_lo = _mm256_permutevar8x32_ps(lut, bytes32);
  const __m256 mag_hi = _mm256_permutevar8x32_ps(lut, _mm256_srli_epi32(bytes32, 4));
  const __m256i s_lo = _mm256_and_si256(_mm256_slli_epi32(bytes32, 28), sign);
  const __m256i s_hi = _mm256_and_si256(_mm256_slli_epi32(bytes32, 24), sign);
  *lo = _mm256_or_ps(mag_lo, _mm256_castsi256_ps(s_lo));
  *hi = _mm256_or_ps(mag_hi, _mm256_castsi256_ps(s_hi));
}

static inline float ue8m0_to_f32(uint8_t e) {
  const uint32_t bits =
      e == 0 ? 0x00400000u : (e == 0xFF ? 0x7FC00000u : static_cast<uint32_t>(e) << 23);
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

// 8 x 8 dword transpose in registers: in[j] dword p -> out[p] dword j. in == out is allowed
// (the input is read completely before the first output is written). Used where keys go into
// SIMD lanes: the indexer's FP4 key tiles and the attention kernel's f32 key tile (bitwise, so
// floats go through _mm256_castps_si256).
static inline void transpose8x8_epi32(const __m256i* in, __m256i* out) {
  __m256i a[8], b[8];
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = _mm256_unpacklo_epi32(in[2 * i], in[2 * i + 1]);
    a[2 * i + 1] = _mm256_unpackhi_epi32(in[2 * i], in[2 * i + 1]);
  }
  // b[4i + m], 128-bit lane L: rows 4i..4i+3 at dword 4L + m.
  for (int i = 0; i < 2; ++i) {
    b[4 * i + 0] = _mm256_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm256_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm256_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm256_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  for (int m = 0; m < 4; ++m) {
    out[m] = _mm256_permute2x128_si256(b[m], b[4 + m], 0x20);
    out[4 + m] = _mm256_permute2x128_si256(b[m], b[4 + m], 0x31);
  }
}

// Horizontal sum of 8 lanes.
static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace dsv4::kernels::x86_avx2
