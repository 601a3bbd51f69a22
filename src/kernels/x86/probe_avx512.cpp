// AVX-512 roofline probes (kernels/probe.h): 512-bit loads, VPDPBUSD, VDPBF16PS, VFMADD231PS.
// The empty asm statements mark an operand as rewritten every round, so the compiler can neither
// hoist the loop-invariant products nor fold the rounds into one multiplication; they emit no
// instruction.
#include <immintrin.h>

#include "kernels/probe.h"

namespace dsv4::kernels {
namespace {

// Lane sums through memory (the _mm512_reduce_* helpers trip gcc 12's -Wuninitialized).
uint64_t sum_u64(__m512i v) {
  alignas(64) uint64_t w[8];
  _mm512_store_si512(w, v);
  uint64_t s = 0;
  for (uint64_t x : w) s += x;
  return s;
}
uint64_t sum_u32(__m512i v) {
  alignas(64) uint32_t w[16];
  _mm512_store_si512(w, v);
  uint64_t s = 0;
  for (uint32_t x : w) s += x;
  return s;
}
double sum_f32(__m512 v) {
  alignas(64) float w[16];
  _mm512_store_ps(w, v);
  double s = 0;
  for (float x : w) s += x;
  return s;
}

}  // namespace

uint64_t probe_read_avx512(const uint8_t* p, size_t n_bytes) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < n_bytes; i += 256) {
    s0 = _mm512_add_epi64(s0, _mm512_load_si512(p + i));
    s1 = _mm512_add_epi64(s1, _mm512_load_si512(p + i + 64));
    s2 = _mm512_add_epi64(s2, _mm512_load_si512(p + i + 128));
    s3 = _mm512_add_epi64(s3, _mm512_load_si512(p + i + 192));
  }
  const __m512i s = _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3));
  return sum_u64(s);
}

uint64_t probe_dot_i8_avx512(uint64_t iters, uint64_t* sink) {
  __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(1);  // u8 x s8; +4 per lane per round
  __m512i acc[kProbeChains];
  for (auto& x : acc) x = _mm512_setzero_si512();
  for (uint64_t it = 0; it < iters; ++it) {
    asm volatile("" : "+v"(a), "+v"(b));
    for (auto& x : acc) x = _mm512_dpbusd_epi32(x, a, b);
  }
  __m512i s = acc[0];
  for (int c = 1; c < kProbeChains; ++c) s = _mm512_add_epi32(s, acc[c]);
  *sink += sum_u32(s);
  return iters * kProbeChains * 64;
}

uint64_t probe_dot_bf16_avx512(uint64_t iters, uint64_t* sink) {
  // bf16 1.0 (0x3F80) x 2^-20 (0x3580): accumulators grow by 2^-19 per round, staying normal.
  __m512i a = _mm512_set1_epi16(0x3F80), b = _mm512_set1_epi16(0x3580);
  __m512 acc[kProbeChains];
  for (auto& x : acc) x = _mm512_set1_ps(1.0f);
  for (uint64_t it = 0; it < iters; ++it) {
    asm volatile("" : "+v"(a), "+v"(b));
    for (auto& x : acc)
      x = _mm512_dpbf16_ps(x, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
  }
  __m512 s = acc[0];
  for (int c = 1; c < kProbeChains; ++c) s = _mm512_add_ps(s, acc[c]);
  *sink += static_cast<uint64_t>(sum_f32(s));
  return iters * kProbeChains * 32;
}

uint64_t probe_fma_f32_avx512(uint64_t iters, uint64_t* sink) {
  __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(0x1p-20f);
  __m512 acc[kProbeChains];
  for (auto& x : acc) x = _mm512_set1_ps(1.0f);
  for (uint64_t it = 0; it < iters; ++it) {
    asm volatile("" : "+v"(a), "+v"(b));
    for (auto& x : acc) x = _mm512_fmadd_ps(a, b, x);
  }
  __m512 s = acc[0];
  for (int c = 1; c < kProbeChains; ++c) s = _mm512_add_ps(s, acc[c]);
  *sink += static_cast<uint64_t>(sum_f32(s));
  return iters * kProbeChains * 16;
}

}  // namespace dsv4::kernels
