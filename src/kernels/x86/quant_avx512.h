// kernels/x86/quant_avx512.h — AVX-512 building blocks for decoding quantized formats.
// Include only from *_avx512.cpp files (compiled with AVX-512 F/BW/VL/DQ flags).
//
// f8_e4m3 decode via f16: for a code byte b, the f16 with bits ((sext(b) << 7) & 0xBFFF) has the
// sign of b, exponent field 0eeee and mantissa mmm0000000, i.e. the value decode(b)·2^-8 for every
// finite code (e4m3 subnormals land on f16 subnormals, which VCVTPH2PS converts exactly). The
// factor 2^8 is folded into a block scale or multiplied back (exact). NaN codes (0x7F, 0xFF) come
// out as ±480·2^-8; callers that must propagate NaN fix them up (see f8_nan_mask16).
#pragma once

// GCC 12.1/12.2 report false -W(maybe-)uninitialized inside AVX-512 intrinsics that use
// _mm512_undefined_*() (GCC PR 105593, fixed in 12.3); silenced in AVX-512 translation units only.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::kernels::x86_avx512 {

inline constexpr float kF8HalfRebias = 256.0f;  // decode(b) = f16_value(b) · 2^8

// 16 f8_e4m3 codes -> decode(code)·2^-8 as 16 f32 (NaN codes -> ±1.875).
static inline __m512 f8x16_to_f32_scaled(__m128i codes) {
  __m256i h = _mm256_cvtepi8_epi16(codes);
  h = _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
  return _mm512_cvtph_ps(h);
}

// Bit i set where codes[i] is a NaN code (0x7F or 0xFF).
static inline __mmask16 f8_nan_mask16(__m128i codes) {
  return _mm_cmpeq_epi8_mask(_mm_or_si128(codes, _mm_set1_epi8(static_cast<char>(0x80))),
                             _mm_set1_epi8(static_cast<char>(0xFF)));
}

// f4_e2m1 magnitudes and signs as f32, indexed by the 4-bit code (VPERMPS uses the low 4 bits of
// each 32-bit index).
static inline __m512 f4_lut() {
  return _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f,
                        -2.0f, -3.0f, -4.0f, -6.0f);
}

// ue8m0 -> f32 (2^(e-127); 0 -> 2^-127; 0xFF -> NaN), scalar, branch-free enough for block loops.
static inline float ue8m0_to_f32(uint8_t e) {
  const uint32_t bits =
      e == 0 ? 0x00400000u : (e == 0xFF ? 0x7FC00000u : static_cast<uint32_t>(e) << 23);
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

// Mask with the low n bits set (n <= 16).
static inline __mmask16 tail_mask16(size_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

// 16 x 16 dword transpose in registers: in[j] dword p -> out[p] dword j. in == out is allowed
// (the input is read completely before the first output is written). Used where keys go into
// SIMD lanes: the indexer's FP4 key tiles and the attention kernel's bf16 key tile.
static inline void transpose16x16_epi32(const __m512i* in, __m512i* out) {
  __m512i a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_epi32(in[2 * i], in[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(in[2 * i], in[2 * i + 1]);
  }
  // b[4i + m], 128-bit lane L: rows 4i..4i+3 at dword 4L + m.
  for (int i = 0; i < 4; ++i) {
    b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  // 4 x 4 transpose of 128-bit lanes among b[m], b[4+m], b[8+m], b[12+m].
  for (int m = 0; m < 4; ++m) {
    const __m512i c0 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0x44);
    const __m512i c1 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0xEE);
    const __m512i c2 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0x44);
    const __m512i c3 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0xEE);
    out[m] = _mm512_shuffle_i32x4(c0, c2, 0x88);
    out[4 + m] = _mm512_shuffle_i32x4(c0, c2, 0xDD);
    out[8 + m] = _mm512_shuffle_i32x4(c1, c3, 0x88);
    out[12 + m] = _mm512_shuffle_i32x4(c1, c3, 0xDD);
  }
}

}  // namespace dsv4::kernels::x86_avx512
