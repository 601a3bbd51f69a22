// AVX-512 bulk codecs (kernels/codecs.h); bit-identical to the _ref twins.
#include <immintrin.h>

#include "kernels/codecs.h"
#include "kernels/x86/quant_avx512.h"

namespace dsv4::kernels {
namespace {
using namespace x86_avx512;

// f32 -> bf16 with integer round-to-nearest-even (VCVTNEPS2BF16 would flush subnormal inputs to
// zero, which encode_bf16 does not).
__m256i f32x16_to_bf16(__m512i b) {
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF)),
                                                _mm512_set1_epi32(0x7F800000));
  r = _mm512_mask_or_epi32(r, nan, b, _mm512_set1_epi32(0x00400000));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

// 16 f8 codes -> exact f32 (NaN codes -> sign | 0x7FC00000, as decode_f8e4m3).
__m512 f8x16_to_f32_exact(__m128i codes) {
  __m512 v = _mm512_mul_ps(f8x16_to_f32_scaled(codes), _mm512_set1_ps(kF8HalfRebias));
  const __mmask16 nan = f8_nan_mask16(codes);
  const __m512i sign_qnan = _mm512_or_si512(
      _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(static_cast<int>(0x80000000u))),
      _mm512_set1_epi32(0x7FC00000));
  return _mm512_mask_mov_ps(v, nan, _mm512_castsi512_ps(sign_qnan));
}

}  // namespace

void convert_bf16_to_f32_avx512(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i w =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
  if (i < n) {
    const __mmask16 m = tail_mask16(n - i);
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
    _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
}

void convert_f32_to_bf16_avx512(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = f32x16_to_bf16(_mm512_castps_si512(_mm512_loadu_ps(src + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h);
  }
  if (i < n) {
    const __mmask16 m = tail_mask16(n - i);
    const __m256i h = f32x16_to_bf16(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, src + i)));
    _mm256_mask_storeu_epi16(dst + i, m, h);
  }
}

void convert_f8e4m3_to_f32_avx512(const uint8_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(
        dst + i, f8x16_to_f32_exact(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  if (i < n) {
    const __mmask16 m = tail_mask16(n - i);
    _mm512_mask_storeu_ps(dst + i, m, f8x16_to_f32_exact(_mm_maskz_loadu_epi8(m, src + i)));
  }
}

void dequant_f4e2m1_to_f32_avx512(const uint8_t* src, const uint8_t* scales, float* dst, size_t n) {
  const __m512 lut = f4_lut();
  // Interleave the low-nibble (even elements) and high-nibble (odd elements) vectors.
  const __m512i idx_first =
      _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i idx_second =
      _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {  // one 32-element block = one scale
    const __m512i b =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i / 2)));
    __m512 lo = _mm512_permutexvar_ps(b, lut);
    __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), lut);
    if (scales) {
      const __m512 s = _mm512_set1_ps(ue8m0_to_f32(scales[i / kF4Block]));
      lo = _mm512_mul_ps(lo, s);
      hi = _mm512_mul_ps(hi, s);
    }
    _mm512_storeu_ps(dst + i, _mm512_permutex2var_ps(lo, idx_first, hi));
    _mm512_storeu_ps(dst + i + 16, _mm512_permutex2var_ps(lo, idx_second, hi));
  }
  if (i < n)
    dequant_f4e2m1_to_f32_ref(src + i / 2, scales ? scales + i / kF4Block : nullptr, dst + i,
                              n - i);
}

}  // namespace dsv4::kernels
