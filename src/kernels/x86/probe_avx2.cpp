// AVX2 roofline probes (kernels/probe.h): 256-bit loads; int8 dot as the AVX2 kernels do it
// (VPMADDUBSW u8 x s8 -> s16 pairs, VPMADDWD by ones -> s32, VPADDD); bf16 dot as bf16 -> f32
// by shift / mask then VFMADD231PS (AVX2 has no bf16 instruction); f32 VFMADD231PS ymm.
// The empty asm statements mark an operand as rewritten every round (see probe_avx512.cpp).
#include <immintrin.h>

#include "kernels/probe.h"

namespace dsv4::kernels {

uint64_t probe_read_avx2(const uint8_t* p, size_t n_bytes) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < n_bytes; i += 128) {
    s0 = _mm256_add_epi64(s0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    s2 = _mm256_add_epi64(s2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    s3 = _mm256_add_epi64(s3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
  alignas(32) uint64_t w[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(w), s);
  return w[0] + w[1] + w[2] + w[3];
}

uint64_t probe_dot_i8_avx2(uint64_t iters, uint64_t* sink) {
  __m256i a = _mm256_set1_epi8(1), b = _mm256_set1_epi8(1);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[kProbeChains];
  for (auto& x : acc) x = _mm256_setzero_si256();
  for (uint64_t it = 0; it < iters; ++it) {
    asm volatile("" : "+x"(a), "+x"(b));
    for (auto& x : acc)
      x = _mm256_add_epi32(x, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
  }
  __m256i s = acc[0];
  for (int c = 1; c < kProbeChains; ++c) s = _mm256_add_epi32(s, acc[c]);
  alignas(32) uint32_t w[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(w), s);
  uint64_t t = 0;
  for (uint32_t v : w) t += v;
  *sink += t;
  return iters * kProbeChains * 32;
}

uint64_t probe_dot_bf16_avx2(uint64_t iters, uint64_t* sink) {
  // 16 bf16 pairs per round and chain: even elements by shift, odd by mask, two FMAs.
  __m256i a = _mm256_set1_epi16(0x3F80), b = _mm256_set1_epi16(0x3580);
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m256 acc[kProbeChains];
  for (auto& x : acc) x = _mm256_set1_ps(1.0f);
  for (uint64_t it = 0; it < iters; ++it) {
    asm volatile("" : "+x"(a), "+x"(b));
    const __m256 a_even = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
    const __m256 a_odd = _mm256_castsi256_ps(_mm256_and_si256(a, hi));
    const __m256 b_even = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
    const __m256 b_odd = _mm256_castsi256_ps(_mm256_and_si256(b, hi));
    for (auto& x : acc) x = _mm256_fmadd_ps(a_odd, b_odd, _mm256_fmadd_ps(a_even, b_even, x));
  }
  __m256 s = acc[0];
  for (int c = 1; c < kProbeChains; ++c) s = _mm256_add_ps(s, acc[c]);
  alignas(32) float w[8];
  _mm256_store_ps(w, s);
  double t = 0;
  for (float v : w) t += v;
  *sink += static_cast<uint64_t>(t);
  return iters * kProbeChains * 16;
}

uint64_t probe_fma_f32_avx2(uint64_t iters, uint64_t* sink) {
  __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(0x1p-20f);
  __m256 acc[kProbeChains];
  for (auto& x : acc) x = _mm256_set1_ps(1.0f);
  for (uint64_t it = 0; it < iters; ++it) {
    asm volatile("" : "+x"(a), "+x"(b));
    for (auto& x : acc) x = _mm256_fmadd_ps(a, b, x);
  }
  __m256 s = acc[0];
  for (int c = 1; c < kProbeChains; ++c) s = _mm256_add_ps(s, acc[c]);
  alignas(32) float w[8];
  _mm256_store_ps(w, s);
  double t = 0;
  for (float v : w) t += v;
  *sink += static_cast<uint64_t>(t);
  return iters * kProbeChains * 8;
}

}  // namespace dsv4::kernels
