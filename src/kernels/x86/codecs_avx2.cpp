// AVX2 bulk codecs (kernels/codecs.h); bit-identical to the _ref twins.
#include <immintrin.h>

#include "kernels/codecs.h"
#include "kernels/x86/quant_avx2.h"

namespace dsv4::kernels {
namespace {
using namespace x86_avx2;

// 8 f32 -> 8 bf16 (in the low 128 bits), integer round-to-nearest-even, NaN kept NaN.
__m128i f32x8_to_bf16(__m256i b) {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7FFFFFFF)),
                                         _mm256_set1_epi32(0x7F800000));
  r = _mm256_blendv_epi8(r, _mm256_or_si256(b, _mm256_set1_epi32(0x00400000)), nan);
  r = _mm256_srli_epi32(r, 16);
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

// 8 f8 codes -> exact f32 (NaN codes -> sign | 0x7FC00000): after the f16 decode, |v| == 480
// only for the NaN codes.
__m256 f8x8_to_f32_exact(__m128i codes) {
  const __m256 v = _mm256_mul_ps(f8x8_to_f32_scaled(codes), _mm256_set1_ps(kF8HalfRebias));
  const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  const __m256 nan = _mm256_cmp_ps(_mm256_andnot_ps(sign, v), _mm256_set1_ps(480.0f), _CMP_EQ_OQ);
  const __m256 sign_qnan =
      _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000)));
  return _mm256_blendv_ps(v, sign_qnan, nan);
}

}  // namespace

void convert_bf16_to_f32_avx2(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
  convert_bf16_to_f32_ref(src + i, dst + i, n - i);
}

void convert_f32_to_bf16_avx2(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = f32x8_to_bf16(_mm256_castps_si256(_mm256_loadu_ps(src + i)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  convert_f32_to_bf16_ref(src + i, dst + i, n - i);
}

void convert_f8e4m3_to_f32_avx2(const uint8_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i,
                     f8x8_to_f32_exact(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i))));
  }
  convert_f8e4m3_to_f32_ref(src + i, dst + i, n - i);
}

void dequant_f4e2m1_to_f32_avx2(const uint8_t* src, const uint8_t* scales, float* dst, size_t n) {
  const __m256 lut = f4_mag_lut();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {  // one block of 32 = 16 bytes = two groups of 8 bytes
    const __m256 s = _mm256_set1_ps(scales ? ue8m0_to_f32(scales[i / kF4Block]) : 1.0f);
    for (size_t g = 0; g < 2; ++g) {
      const __m256i b = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i / 2 + 8 * g)));
      __m256 lo, hi;
      f4x16_to_f32_split(b, lut, &lo, &hi);
      if (scales) {
        lo = _mm256_mul_ps(lo, s);
        hi = _mm256_mul_ps(hi, s);
      }
      // Interleave: unpack within 128-bit lanes, then put the lanes in order.
      const __m256 a = _mm256_unpacklo_ps(lo, hi);  // e0 e1 e2 e3 | e8 e9 e10 e11
      const __m256 c = _mm256_unpackhi_ps(lo, hi);  // e4 e5 e6 e7 | e12 e13 e14 e15
      _mm256_storeu_ps(dst + i + 16 * g, _mm256_permute2f128_ps(a, c, 0x20));
      _mm256_storeu_ps(dst + i + 16 * g + 8, _mm256_permute2f128_ps(a, c, 0x31));
    }
  }
  if (i < n)
    dequant_f4e2m1_to_f32_ref(src + i / 2, scales ? scales + i / kF4Block : nullptr, dst + i,
                              n - i);
}

}  // namespace dsv4::kernels
