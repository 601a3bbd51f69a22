// AVX-512 GEMV / small-batch GEMM (kernels/gemv.h).
//
// GEMV: kRows weight rows at a time share each load of x; per row one f32 accumulator per scale
// block (`part`), folded into the row total with the block scale (same factorization as _ref).
//   bf16:        VPMOVZXWD + VPSLLD 16 -> f32, FMA.
//   f8 x f32:    the f16 trick of quant_avx512.h (3 integer ops + VCVTPH2PS per 16 codes); the 2^8
//                rebias is folded into the block scale.
//   f4 x f32:    64-byte loads, VPSRLD + VPERMPS of a 16-entry f32 table (x rearranged, see
//   f4_rows). f8/f4 x bf16: weights decoded straight to bf16 by table lookups (VPERMI2W / VPERMW),
//   products
//                by VDPBF16PS: half the instructions per weight of the f32-activation kernels.
// The decode+FMA instruction count, not DRAM, is what limits one core on f4/f8 (see
// bench/gemv_bench.cpp, `gemv_hot`); the bf16-activation kernels are the ones that keep up.
// GEMM: kRows rows x kChunk columns are decoded (scaled) into an L1 tile, then multiplied with up
// to kGemmMaxBatch activation rows, 4 x 4 (activation rows x weight rows) accumulators at a time.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>

#include "kernels/codecs.h"
#include "kernels/gemv.h"
#include "kernels/x86/quant_avx512.h"
#include "kernels/x86/scratch.h"

namespace dsv4::kernels {
namespace {
using namespace x86_avx512;

constexpr int kRows = 4;

// Software prefetch of the weights one or more row groups ahead, at the same column. A row of a
// 4096-column matrix is only 2-8 KiB, too short a stream for the hardware prefetchers to reach
// full speed before the kernel moves on to the next rows; one prefetch per 64 bytes consumed,
// >= 8 KiB ahead, into L2 (T1). Measured on Zen 4 (f4 x bf16, 4096x4096, one thread, CPU-time
// rates on a busy machine): no prefetch ~9 GB/s, T0 ~12, T1 ~20; two groups ahead ~ one.
// Prefetches past the end of the matrix are harmless hints.
inline size_t prefetch_distance(size_t group_bytes) {
  constexpr size_t kMinAhead = 8192;
  return group_bytes >= kMinAhead ? group_bytes
                                  : (kMinAhead + group_bytes - 1) / group_bytes * group_bytes;
}
inline void prefetch_ahead(const void* p, size_t distance) {
  _mm_prefetch(static_cast<const char*>(p) + distance, _MM_HINT_T1);
}

// ue8m0 code -> f32 scale, every code precomputed (a broadcast from this table is one load).
constexpr std::array<float, 256> kUe8m0Table = [] {
  std::array<float, 256> t{};
  for (int e = 0; e < 256; ++e) t[static_cast<size_t>(e)] = decode_ue8m0(static_cast<uint8_t>(e));
  return t;
}();

// ---- bf16 ----------------------------------------------------------------------------------

inline __m512 bf16x16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline __m512 bf16x16_masked(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

template <int R>
void bf16_rows(const WeightsBf16& w, size_t r0, const float* x, float* y) {
  const size_t n = w.cols;
  const uint16_t* row[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    row[i] = w.data + (r0 + static_cast<size_t>(i)) * n;
    acc[i] = _mm512_setzero_ps();
  }
  const size_t ahead = prefetch_distance(static_cast<size_t>(kRows) * n * sizeof(uint16_t));
  size_t k = 0;
  for (; k + 32 <= n; k += 32) {  // 64 bytes of each row
    const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
    for (int i = 0; i < R; ++i) {
      prefetch_ahead(row[i] + k, ahead);
      acc[i] = _mm512_fmadd_ps(bf16x16(row[i] + k), x0, acc[i]);
      acc[i] = _mm512_fmadd_ps(bf16x16(row[i] + k + 16), x1, acc[i]);
    }
  }
  for (; k + 16 <= n; k += 16) {
    const __m512 xv = _mm512_loadu_ps(x + k);
    for (int i = 0; i < R; ++i) acc[i] = _mm512_fmadd_ps(bf16x16(row[i] + k), xv, acc[i]);
  }
  if (k < n) {
    const __mmask16 m = tail_mask16(n - k);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
    for (int i = 0; i < R; ++i) acc[i] = _mm512_fmadd_ps(bf16x16_masked(row[i] + k, m), xv, acc[i]);
  }
  for (int i = 0; i < R; ++i) y[i] = _mm512_reduce_add_ps(acc[i]);
}

// ---- f8_e4m3, 128x128 block scales -----------------------------------------------------------

template <int R>
void f8_rows(const WeightsF8e4m3& w, size_t r0, const float* x, float* y) {
  const size_t n = w.cols, ahead = prefetch_distance(kRows * n);
  const uint8_t* row[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    row[i] = w.data + (r0 + static_cast<size_t>(i)) * n;
    acc[i] = _mm512_setzero_ps();
  }
  for (size_t k0 = 0, cb = 0; k0 < n; k0 += kF8WeightBlock, ++cb) {
    const size_t k1 = std::min(k0 + kF8WeightBlock, n);
    __m512 part[R];
    for (int i = 0; i < R; ++i) {
      part[i] = _mm512_setzero_ps();
      prefetch_ahead(row[i] + k0, ahead);
      prefetch_ahead(row[i] + k0 + 64, ahead);
    }
    size_t k = k0;
    for (; k + 16 <= k1; k += 16) {
      const __m512 xv = _mm512_loadu_ps(x + k);
      for (int i = 0; i < R; ++i) {
        const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[i] + k));
        part[i] = _mm512_fmadd_ps(f8x16_to_f32_scaled(c), xv, part[i]);
      }
    }
    if (k < k1) {
      const __mmask16 m = tail_mask16(k1 - k);
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
      for (int i = 0; i < R; ++i) {
        part[i] =
            _mm512_fmadd_ps(f8x16_to_f32_scaled(_mm_maskz_loadu_epi8(m, row[i] + k)), xv, part[i]);
      }
    }
    for (int i = 0; i < R; ++i) {
      const float s = f8_weight_scale(w, r0 + static_cast<size_t>(i), cb) * kF8HalfRebias;
      acc[i] = _mm512_fmadd_ps(part[i], _mm512_set1_ps(s), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) y[i] = _mm512_reduce_add_ps(acc[i]);
}

// ---- f4_e2m1, block-32 ue8m0 scales ------------------------------------------------------------
//
// One 64-byte load covers 128 elements (four scale blocks). Its 32-bit lane j holds bytes
// 4j..4j+3, i.e. elements 8j..8j+7 in its nibbles; VPERMPS reads the low 4 bits of each lane, so
// shifting the whole vector right by 4k and permuting yields element 8j+k in lane j (k = 0..7):
// eight table lookups and seven shifts, no widening loads. x is rearranged once per call to match
// (x8[16k + j] = x[8j + k] per 128 columns), and lane j always belongs to scale block j/4, so one
// FMA with the vector [s0 x4, s1 x4, s2 x4, s3 x4] applies the four block scales.

// Bytes 0..3 of a 32-bit value each spread over four 32-bit lanes (lane j gets byte j/4) by
// VPSHUFB; shifted into an f32 exponent this gives the scale vector 2^(e-127) of four blocks.
inline __m512i scale_spread_control() {
  alignas(64) static constexpr int8_t kSel[64] = {
      0, -1, -1, -1, 0, -1, -1, -1, 0, -1, -1, -1, 0, -1, -1, -1,   // lanes 0..3 <- byte 0
      1, -1, -1, -1, 1, -1, -1, -1, 1, -1, -1, -1, 1, -1, -1, -1,   // lanes 4..7 <- byte 1
      2, -1, -1, -1, 2, -1, -1, -1, 2, -1, -1, -1, 2, -1, -1, -1,   // lanes 8..11 <- byte 2
      3, -1, -1, -1, 3, -1, -1, -1, 3, -1, -1, -1, 3, -1, -1, -1};  // lanes 12..15 <- byte 3
  return _mm512_load_si512(kSel);
}

// Four ue8m0 scale codes (little-endian in s4) -> [s0 x4, s1 x4, s2 x4, s3 x4] as f32.
// kExact: also right for codes 0 (2^-127, an f32 subnormal) and 0xFF (NaN); otherwise codes
// 1..254 only, for which the code shifted into the f32 exponent field is the value.
template <bool kExact>
inline __m512 scale_vector4(uint32_t s4, __m512i spread) {
  if constexpr (!kExact) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_shuffle_epi8(_mm512_set1_epi32(static_cast<int>(s4)), spread), 23));
  } else {
    const __m128 four = _mm_setr_ps(kUe8m0Table[s4 & 0xFF], kUe8m0Table[(s4 >> 8) & 0xFF],
                                    kUe8m0Table[(s4 >> 16) & 0xFF], kUe8m0Table[s4 >> 24]);
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                 _mm512_castps128_ps512(four));
  }
}

// True if any of bytes [p, p+n) is 0 or 0xFF (scale codes that need the exact path).
inline bool any_extreme_scale(const uint8_t* p, size_t n) {
  const __m512i zero = _mm512_setzero_si512(), ones = _mm512_set1_epi8(-1);
  for (size_t i = 0; i < n; i += 64) {
    const __mmask64 m = n - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (n - i)) - 1;
    const __m512i v = _mm512_maskz_loadu_epi8(m, p + i);
    if ((_mm512_mask_cmpeq_epi8_mask(m, v, zero) | _mm512_mask_cmpeq_epi8_mask(m, v, ones)) != 0)
      return true;
  }
  return false;
}

// The four scale codes of 128-column chunk c of a row; past the row's last block the codes are 127
// (= 1.0) so that nothing beyond the row is read (those columns have zero codes and zero x).
inline uint32_t chunk_scales(const uint8_t* srow, size_t c, size_t n_blocks) {
  uint32_t s4 = 0x7F7F7F7Fu;
  if (4 * c + 4 <= n_blocks) {
    std::memcpy(&s4, srow + 4 * c, 4);
  } else {
    for (size_t b = 4 * c; b < n_blocks; ++b) reinterpret_cast<uint8_t*>(&s4)[b - 4 * c] = srow[b];
  }
  return s4;
}

// x rearranged for the f4/f8 kernels, zero-padded to whole chunks (per thread, reused).
struct XScratch {
  Scratch<float> x8;     // f4 x f32: [chunk][k = 0..7][j = 0..15] = x[128 chunk + 8j + k]
  Scratch<uint16_t> xw;  // bf16 kernels, see build_xw_f4 / build_xw_f8
};

XScratch& x_scratch() {
  static thread_local XScratch s;
  return s;
}

void build_x8(const float* x, size_t n, Scratch<float>& out) {
  const size_t chunks = (n + 127) / 128, full = n / 128;
  out.resize(chunks * 128);
  for (size_t c = 0; c < full; ++c)
    for (size_t k = 0; k < 8; ++k)
      for (size_t j = 0; j < 16; ++j) out[c * 128 + 16 * k + j] = x[c * 128 + 8 * j + k];
  if (full < chunks) {
    const size_t c = full;
    for (size_t k = 0; k < 8; ++k)
      for (size_t j = 0; j < 16; ++j) {
        const size_t e = c * 128 + 8 * j + k;
        out[c * 128 + 16 * k + j] = e < n ? x[e] : 0.0f;
      }
  }
}

// f4 x f32 for rows r0..r0+R-1: full 128-column chunks unmasked, the last partial one masked.
template <int R, bool kExact>
void f4_rows(const WeightsF4e2m1& w, size_t r0, const float* x8, float* y) {
  const size_t n = w.cols, row_bytes = f4_row_bytes(n), n_blocks = f4_scales_per_row(n);
  const size_t ahead = prefetch_distance(kRows * row_bytes), ahead_s = ahead / row_bytes * n_blocks;
  const size_t chunks = (n + 127) / 128, full_chunks = std::min(row_bytes / 64, n_blocks / 4);
  const __m512 lut = f4_lut();
  const __m512i spread = scale_spread_control();
  const uint8_t* row[R];
  const uint8_t* srow[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    row[i] = w.data + (r0 + static_cast<size_t>(i)) * row_bytes;
    srow[i] = w.scales + (r0 + static_cast<size_t>(i)) * n_blocks;
    acc[i] = _mm512_setzero_ps();
  }
  auto chunk = [&](size_t c, __mmask64 m, bool masked) {
    const float* xc = x8 + c * 128;
    __m512i v[R];
    __m512 part[R];
    const __m512 x0 = _mm512_loadu_ps(xc);
    for (int i = 0; i < R; ++i) {
      v[i] = masked ? _mm512_maskz_loadu_epi8(m, row[i] + 64 * c)
                    : _mm512_loadu_si512(row[i] + 64 * c);
      prefetch_ahead(row[i] + 64 * c, ahead);
      if (c % 16 == 0) prefetch_ahead(srow[i] + 4 * c, ahead_s);
      part[i] = _mm512_mul_ps(_mm512_permutexvar_ps(v[i], lut), x0);
    }
#pragma GCC unroll 8
    for (int k = 1; k < 8; ++k) {
      const __m512 xk = _mm512_loadu_ps(xc + 16 * k);
      for (int i = 0; i < R; ++i) {
        const __m512i t = _mm512_srli_epi32(v[i], static_cast<unsigned>(4 * k));
        part[i] = _mm512_fmadd_ps(_mm512_permutexvar_ps(t, lut), xk, part[i]);
      }
    }
    for (int i = 0; i < R; ++i) {
      uint32_t s4;
      if (masked) {
        s4 = chunk_scales(srow[i], c, n_blocks);
      } else {
        std::memcpy(&s4, srow[i] + 4 * c, 4);
      }
      acc[i] = _mm512_fmadd_ps(part[i], scale_vector4<kExact>(s4, spread), acc[i]);
    }
  };
  for (size_t c = 0; c < full_chunks; ++c) chunk(c, 0, false);
  for (size_t c = full_chunks; c < chunks; ++c) {
    const size_t bytes = std::min<size_t>(64, row_bytes - 64 * c);
    chunk(c, bytes == 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1, true);
  }
  for (int i = 0; i < R; ++i) y[i] = _mm512_reduce_add_ps(acc[i]);
}

// ---- bf16 activations: VDPBF16PS --------------------------------------------------------------

// f4 x bf16: a 64-byte load holds 32 words of four nibbles (elements 4w..4w+3). VPERMW reads the
// low 5 bits of each word, so with a 32-entry table (entry i = value of nibble i & 15) the word
// shifted right by 4k gives element 4w+k (k = 0..3). VDPBF16PS lane l pairs words 2l and 2l+1,
// i.e. elements 8l+k and 8l+4+k — both in scale block l/4 — so x is laid out per chunk and k as
// xw[32k + 2l] = x[8l+k], xw[32k + 2l + 1] = x[8l+4+k], and the scale vector is the one of
// f4_rows.
void build_xw_f4(const uint16_t* x, size_t n, Scratch<uint16_t>& out) {
  const size_t chunks = (n + 127) / 128, full = n / 128;
  out.resize(chunks * 128);
  for (size_t c = 0; c < chunks; ++c)
    for (size_t k = 0; k < 4; ++k)
      for (size_t l = 0; l < 16; ++l)
        for (size_t h = 0; h < 2; ++h) {
          const size_t e = c * 128 + 8 * l + 4 * h + k;
          out[c * 128 + 32 * k + 2 * l + h] = (c < full || e < n) ? x[e] : uint16_t{0};
        }
}

inline __m512i f4_bf16_lut() {
  alignas(64) static constexpr uint16_t kLut[32] = {
      0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,  // 0, .5, 1, 1.5, 2, 3, 4, 6
      0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0,  // the same, negative
      0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,  // index bit 4 is ignored
      0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0};
  return _mm512_load_si512(kLut);
}

template <int R, bool kExact>
void f4_rows_bf16(const WeightsF4e2m1& w, size_t r0, const uint16_t* xw, float* y) {
  const size_t n = w.cols, row_bytes = f4_row_bytes(n), n_blocks = f4_scales_per_row(n);
  const size_t ahead = prefetch_distance(kRows * row_bytes), ahead_s = ahead / row_bytes * n_blocks;
  const size_t chunks = (n + 127) / 128, full_chunks = std::min(row_bytes / 64, n_blocks / 4);
  const __m512i lut = f4_bf16_lut();
  const __m512i spread = scale_spread_control();
  const uint8_t* row[R];
  const uint8_t* srow[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    row[i] = w.data + (r0 + static_cast<size_t>(i)) * row_bytes;
    srow[i] = w.scales + (r0 + static_cast<size_t>(i)) * n_blocks;
    acc[i] = _mm512_setzero_ps();
  }
  auto chunk = [&](size_t c, __mmask64 m, bool masked) {
    const uint16_t* xc = xw + c * 128;
    __m512i v[R];
    __m512 part[R];
    for (int i = 0; i < R; ++i) {
      v[i] = masked ? _mm512_maskz_loadu_epi8(m, row[i] + 64 * c)
                    : _mm512_loadu_si512(row[i] + 64 * c);
      prefetch_ahead(row[i] + 64 * c, ahead);
      if (c % 16 == 0) prefetch_ahead(srow[i] + 4 * c, ahead_s);
      part[i] = _mm512_setzero_ps();
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m512bh xk = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xc + 32 * k));
      for (int i = 0; i < R; ++i) {
        const __m512i t = k == 0 ? v[i] : _mm512_srli_epi16(v[i], static_cast<unsigned>(4 * k));
        part[i] = _mm512_dpbf16_ps(
            part[i], reinterpret_cast<__m512bh>(_mm512_permutexvar_epi16(t, lut)), xk);
      }
    }
    for (int i = 0; i < R; ++i) {
      uint32_t s4;
      if (masked) {
        s4 = chunk_scales(srow[i], c, n_blocks);
      } else {
        std::memcpy(&s4, srow[i] + 4 * c, 4);
      }
      acc[i] = _mm512_fmadd_ps(part[i], scale_vector4<kExact>(s4, spread), acc[i]);
    }
  };
  for (size_t c = 0; c < full_chunks; ++c) chunk(c, 0, false);
  for (size_t c = full_chunks; c < chunks; ++c) {
    const size_t bytes = std::min<size_t>(64, row_bytes - 64 * c);
    chunk(c, bytes == 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1, true);
  }
  for (int i = 0; i < R; ++i) y[i] = _mm512_reduce_add_ps(acc[i]);
}

// f8 x bf16: a 64-byte load is 32 words of two codes (elements 2w, 2w+1). The bf16 value of each
// code comes from a 128-entry table (four registers of 32 words: VPERMI2W picks among 64 entries
// with index bits 0..5, bit 6 chooses the pair) plus the sign bit; e4m3 subnormals are normal in
// bf16, and the NaN codes give NaN, so this decode is exact. VDPBF16PS lane l pairs words 2l, 2l+1:
// elements 4l, 4l+2 (low bytes) and 4l+1, 4l+3 (high bytes); x is laid out per 64 columns as
// [x[4l], x[4l+2]]_l then [x[4l+1], x[4l+3]]_l.
void build_xw_f8(const uint16_t* x, size_t n, Scratch<uint16_t>& out) {
  const size_t chunks = (n + 63) / 64, full = n / 64;
  out.resize(chunks * 64);
  for (size_t c = 0; c < chunks; ++c)
    for (size_t half = 0; half < 2; ++half)
      for (size_t l = 0; l < 16; ++l)
        for (size_t h = 0; h < 2; ++h) {
          const size_t e = c * 64 + 4 * l + 2 * h + half;
          out[c * 64 + 32 * half + 2 * l + h] = (c < full || e < n) ? x[e] : uint16_t{0};
        }
}

struct F8Bf16Tables {
  __m512i t[4];  // bf16 of e4m3 magnitude codes 0..127, 32 per register
};

F8Bf16Tables f8_bf16_tables() {
  alignas(64) uint16_t v[128];
  for (uint32_t c = 0; c < 128; ++c)
    v[c] = encode_bf16(decode_f8e4m3(static_cast<uint8_t>(c)));  // exact
  F8Bf16Tables t;
  for (int i = 0; i < 4; ++i) t.t[i] = _mm512_load_si512(v + 32 * i);
  return t;
}

// bf16 of the code in bits 0..7 of each word of `idx` (bits 8..15 ignored except as noted):
// magnitude from the tables, sign from `sign_src` & 0x8000.
inline __m512i f8_bf16_decode(const F8Bf16Tables& t, __m512i idx, __mmask32 bit6,
                              __m512i sign_src) {
  const __m512i lo = _mm512_permutex2var_epi16(t.t[0], idx, t.t[1]);
  const __m512i hi = _mm512_permutex2var_epi16(t.t[2], idx, t.t[3]);
  const __m512i mag = _mm512_mask_blend_epi16(bit6, lo, hi);
  return _mm512_ternarylogic_epi32(mag, sign_src, _mm512_set1_epi16(static_cast<short>(0x8000)),
                                   0xF8);  // A | (B & C)
}

template <int R>
void f8_rows_bf16(const WeightsF8e4m3& w, size_t r0, const uint16_t* xw, const F8Bf16Tables& tab,
                  float* y) {
  const size_t n = w.cols, ahead = prefetch_distance(kRows * n);
  const uint8_t* row[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    row[i] = w.data + (r0 + static_cast<size_t>(i)) * n;
    acc[i] = _mm512_setzero_ps();
  }
  const __m512i bit6_lo = _mm512_set1_epi16(0x0040), bit6_hi = _mm512_set1_epi16(0x4000);
  // 64 columns [k, k+64) of every row into part[] (masked: only the first `m` bytes exist).
  auto step = [&](size_t k, __m512* part, __mmask64 m, bool masked) {
    const __m512bh x_lo = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xw + k));
    const __m512bh x_hi = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xw + k + 32));
    for (int i = 0; i < R; ++i) {
      const __m512i v =
          masked ? _mm512_maskz_loadu_epi8(m, row[i] + k) : _mm512_loadu_si512(row[i] + k);
      prefetch_ahead(row[i] + k, ahead);
      const __m512i lo =
          f8_bf16_decode(tab, v, _mm512_test_epi16_mask(v, bit6_lo), _mm512_slli_epi16(v, 8));
      const __m512i hi =
          f8_bf16_decode(tab, _mm512_srli_epi16(v, 8), _mm512_test_epi16_mask(v, bit6_hi), v);
      part[i] = _mm512_dpbf16_ps(part[i], reinterpret_cast<__m512bh>(lo), x_lo);
      part[i] = _mm512_dpbf16_ps(part[i], reinterpret_cast<__m512bh>(hi), x_hi);
    }
  };
  for (size_t k0 = 0, cb = 0; k0 < n; k0 += kF8WeightBlock, ++cb) {
    const size_t k1 = std::min(k0 + kF8WeightBlock, n);
    __m512 part[R];
    for (int i = 0; i < R; ++i) part[i] = _mm512_setzero_ps();
    if (k1 - k0 == kF8WeightBlock) {
      step(k0, part, 0, false);
      step(k0 + 64, part, 0, false);
    } else {
      for (size_t k = k0; k < k1; k += 64) {
        const size_t len = std::min<size_t>(64, k1 - k);
        step(k, part, len == 64 ? ~__mmask64{0} : (__mmask64{1} << len) - 1, true);
      }
    }
    for (int i = 0; i < R; ++i) {
      const float s = f8_weight_scale(w, r0 + static_cast<size_t>(i), cb);
      acc[i] = _mm512_fmadd_ps(part[i], _mm512_set1_ps(s), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) y[i] = _mm512_reduce_add_ps(acc[i]);
}

// ---- GEMM driver -------------------------------------------------------------------------------
//
// Each Y[b, r] goes through exactly the arithmetic of the GEMV kernel of the same dtype (same lane
// assignment, same FMA order, same per-block scale folds, same final reduction), only with the
// decoded weights taken from an L1 tile shared by all batch rows instead of from registers. So
// gemm == gemv bit for bit, whatever the batch, and batch 1 simply calls the GEMV kernel.

constexpr size_t kChunk = 256;  // columns per decoded tile (a multiple of 128)
constexpr size_t kSeg = 128;    // columns per scale fold (f8 block, f4 4-block chunk)

struct Tile {
  alignas(64) float w[kRows][kChunk];  // decoded, unscaled weights in the GEMV lane layout
  alignas(64) float s[kRows][2][16];   // per row and 128-column segment: the scale vector
};

// bf16: acc[b][i] += tile[i][0, len16) · x_b[0, len16) (x rows past `full` read with mask `tail`).
template <int NB>
inline void tile_mac_direct(const Tile& t, const float* x0, size_t ldx, size_t len16, size_t full,
                            __mmask16 tail, float (*acc)[kRows][16]) {
  __m512 a[NB][kRows];
  for (int b = 0; b < NB; ++b)
    for (int i = 0; i < kRows; ++i) a[b][i] = _mm512_load_ps(acc[b][i]);
  for (size_t kk = 0; kk < len16; kk += 16) {
    __m512 xv[NB];
    for (int b = 0; b < NB; ++b) {
      const float* xp = x0 + static_cast<size_t>(b) * ldx + kk;
      xv[b] = kk < full ? _mm512_loadu_ps(xp) : _mm512_maskz_loadu_ps(tail, xp);
    }
    for (int i = 0; i < kRows; ++i) {
      const __m512 w = _mm512_load_ps(t.w[i] + kk);
      for (int b = 0; b < NB; ++b) a[b][i] = _mm512_fmadd_ps(w, xv[b], a[b][i]);
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int i = 0; i < kRows; ++i) _mm512_store_ps(acc[b][i], a[b][i]);
}

// f8 / f4: per 128-column segment, part = Σ w·x over its vectors (f8: from zero with FMAs, as
// f8_rows; f4: the first product by a multiply, as f4_rows), then acc = fma(part, scale, acc).
template <int NB, bool kFirstMul>
inline void tile_mac_blocked(const Tile& t, const float* x0, size_t ldx, size_t len, size_t full,
                             __mmask16 tail, float (*acc)[kRows][16]) {
  for (size_t seg = 0, k0 = 0; k0 < len; ++seg, k0 += kSeg) {
    const size_t k1 = std::min(k0 + kSeg, len);
    __m512 part[NB][kRows];
    for (size_t kk = k0; kk < k1; kk += 16) {
      __m512 xv[NB];
      for (int b = 0; b < NB; ++b) {
        const float* xp = x0 + static_cast<size_t>(b) * ldx + kk;
        xv[b] = kk < full ? _mm512_loadu_ps(xp) : _mm512_maskz_loadu_ps(tail, xp);
      }
      for (int i = 0; i < kRows; ++i) {
        const __m512 w = _mm512_load_ps(t.w[i] + kk);
        for (int b = 0; b < NB; ++b) {
          if (kk == k0) {
            part[b][i] = kFirstMul ? _mm512_mul_ps(w, xv[b])
                                   : _mm512_fmadd_ps(w, xv[b], _mm512_setzero_ps());
          } else {
            part[b][i] = _mm512_fmadd_ps(w, xv[b], part[b][i]);
          }
        }
      }
    }
    for (int i = 0; i < kRows; ++i) {
      const __m512 sv = _mm512_load_ps(t.s[i][seg]);
      for (int b = 0; b < NB; ++b)
        _mm512_store_ps(acc[b][i], _mm512_fmadd_ps(part[b][i], sv, _mm512_load_ps(acc[b][i])));
    }
  }
}

enum class TileMode { direct, f8, f4 };

// Prefetch [p, p + bytes) `distance` bytes ahead, one hint per cache line (the decode of a tile
// then streams like the GEMV kernels do).
inline void prefetch_range_ahead(const void* p, size_t bytes, size_t distance) {
  const char* c = static_cast<const char*>(p);
  for (size_t o = 0; o < bytes; o += 64) prefetch_ahead(c + o, distance);
}

// decode(r, k0, len, w_row, s_row): fills tile row w_row[0, len) (zero-padded by the callee up to
// the segment's vector count) and its scale vectors s_row[seg]. x: [batch, ...] with row stride
// ldx, indexed by column (f4: the x8 layout, which is indexed like columns chunk by chunk).
template <TileMode kMode, typename Decode>
void gemm_driver(size_t n, const float* x, size_t ldx, size_t batch, float* y, size_t ldy,
                 size_t row_begin, size_t row_end, const Decode& decode) {
  Tile t;
  alignas(64) float acc[kGemmMaxBatch][kRows][16];
  for (size_t b0 = 0; b0 < batch; b0 += kGemmMaxBatch) {
    const size_t nb = std::min(kGemmMaxBatch, batch - b0);
    const float* xb = x + b0 * ldx;
    for (size_t r0 = row_begin; r0 < row_end; r0 += kRows) {
      const int nr = static_cast<int>(std::min<size_t>(kRows, row_end - r0));
      std::fill(&acc[0][0][0], &acc[0][0][0] + kGemmMaxBatch * kRows * 16, 0.0f);
      for (size_t k0 = 0; k0 < n; k0 += kChunk) {
        // f4 tiles always hold whole 128-column chunks (x8 is zero-padded to them).
        const size_t len = kMode == TileMode::f4
                               ? std::min(kChunk, (n - k0 + kSeg - 1) / kSeg * kSeg)
                               : std::min(kChunk, n - k0);
        const size_t len16 = (len + 15) / 16 * 16;
        for (int i = 0; i < kRows; ++i) {
          if (i < nr) {
            decode(r0 + static_cast<size_t>(i), k0, len, t.w[i], t.s[i]);
          } else {
            std::fill(t.w[i], t.w[i] + len16, 0.0f);
            std::fill(&t.s[i][0][0], &t.s[i][0][0] + 32, 0.0f);
          }
        }
        const size_t full = kMode == TileMode::f4 ? len : len / 16 * 16;
        const __mmask16 tail = tail_mask16(len - len / 16 * 16);
        auto mac = [&](auto nb_const, size_t b) {
          constexpr int NB = decltype(nb_const)::value;
          const float* xp = xb + b * ldx + k0;
          if constexpr (kMode == TileMode::direct)
            tile_mac_direct<NB>(t, xp, ldx, len16, full, tail, acc + b);
          else
            tile_mac_blocked<NB, kMode == TileMode::f4>(t, xp, ldx, len, full, tail, acc + b);
        };
        size_t b = 0;
        for (; b + 4 <= nb; b += 4) mac(std::integral_constant<int, 4>{}, b);
        for (; b + 2 <= nb; b += 2) mac(std::integral_constant<int, 2>{}, b);
        for (; b < nb; ++b) mac(std::integral_constant<int, 1>{}, b);
      }
      for (size_t b = 0; b < nb; ++b)
        for (int i = 0; i < nr; ++i)
          y[(b0 + b) * ldy + r0 + static_cast<size_t>(i)] =
              _mm512_reduce_add_ps(_mm512_load_ps(acc[b][i]));
    }
  }
}

}  // namespace

void gemv_bf16_f32_avx512(const WeightsBf16& w, const float* x, float* y, size_t row_begin,
                          size_t row_end) {
  size_t r = row_begin;
  for (; r + kRows <= row_end; r += kRows) bf16_rows<kRows>(w, r, x, y + r);
  for (; r < row_end; ++r) bf16_rows<1>(w, r, x, y + r);
}

void gemv_f8e4m3_f32_avx512(const WeightsF8e4m3& w, const float* x, float* y, size_t row_begin,
                            size_t row_end) {
  size_t r = row_begin;
  for (; r + kRows <= row_end; r += kRows) f8_rows<kRows>(w, r, x, y + r);
  for (; r < row_end; ++r) f8_rows<1>(w, r, x, y + r);
}

// Rows in groups of kRows; each group takes the exact scale path only if one of its scale codes
// is 0 or 0xFF (never in practice).
template <typename RowsFast, typename RowsExact>
void f4_row_groups(const WeightsF4e2m1& w, size_t row_begin, size_t row_end, const RowsFast& fast,
                   const RowsExact& exact) {
  const size_t nb = f4_scales_per_row(w.cols);
  size_t r = row_begin;
  for (; r + kRows <= row_end; r += kRows) {
    if (any_extreme_scale(w.scales + r * nb, kRows * nb))
      exact(r, kRows);
    else
      fast(r, kRows);
  }
  for (; r < row_end; ++r) exact(r, 1);
}

void gemv_f4e2m1_f32_avx512(const WeightsF4e2m1& w, const float* x, float* y, size_t row_begin,
                            size_t row_end) {
  if (row_begin >= row_end) return;
  Scratch<float>& x8 = x_scratch().x8;
  build_x8(x, w.cols, x8);
  f4_row_groups(
      w, row_begin, row_end,
      [&](size_t r, size_t) { f4_rows<kRows, false>(w, r, x8.data(), y + r); },
      [&](size_t r, size_t nr) {
        if (nr == kRows)
          f4_rows<kRows, true>(w, r, x8.data(), y + r);
        else
          f4_rows<1, true>(w, r, x8.data(), y + r);
      });
}

void gemv_f4e2m1_bf16_avx512(const WeightsF4e2m1& w, const uint16_t* x, float* y, size_t row_begin,
                             size_t row_end) {
  if (row_begin >= row_end) return;
  Scratch<uint16_t>& xw = x_scratch().xw;
  build_xw_f4(x, w.cols, xw);
  f4_row_groups(
      w, row_begin, row_end,
      [&](size_t r, size_t) { f4_rows_bf16<kRows, false>(w, r, xw.data(), y + r); },
      [&](size_t r, size_t nr) {
        if (nr == kRows)
          f4_rows_bf16<kRows, true>(w, r, xw.data(), y + r);
        else
          f4_rows_bf16<1, true>(w, r, xw.data(), y + r);
      });
}

void gemv_f8e4m3_bf16_avx512(const WeightsF8e4m3& w, const uint16_t* x, float* y, size_t row_begin,
                             size_t row_end) {
  if (row_begin >= row_end) return;
  Scratch<uint16_t>& xw = x_scratch().xw;
  build_xw_f8(x, w.cols, xw);
  const F8Bf16Tables tab = f8_bf16_tables();
  size_t r = row_begin;
  for (; r + kRows <= row_end; r += kRows) f8_rows_bf16<kRows>(w, r, xw.data(), tab, y + r);
  for (; r < row_end; ++r) f8_rows_bf16<1>(w, r, xw.data(), tab, y + r);
}

void gemm_bf16_f32_avx512(const WeightsBf16& w, const float* x, size_t ldx, size_t batch, float* y,
                          size_t ldy, size_t row_begin, size_t row_end) {
  if (batch == 1) return gemv_bf16_f32_avx512(w, x, y, row_begin, row_end);  // same arithmetic
  const size_t ahead = prefetch_distance(kRows * w.cols * sizeof(uint16_t));
  gemm_driver<TileMode::direct>(w.cols, x, ldx, batch, y, ldy, row_begin, row_end,
                                [&](size_t r, size_t k0, size_t len, float* wt, float(*)[16]) {
                                  const uint16_t* src = w.data + r * w.cols + k0;
                                  prefetch_range_ahead(src, len * sizeof(uint16_t), ahead);
                                  convert_bf16_to_f32_avx512(src, wt, len);
                                  std::fill(wt + len, wt + (len + 15) / 16 * 16, 0.0f);
                                });
}

void gemm_f8e4m3_f32_avx512(const WeightsF8e4m3& w, const float* x, size_t ldx, size_t batch,
                            float* y, size_t ldy, size_t row_begin, size_t row_end) {
  if (batch == 1) return gemv_f8e4m3_f32_avx512(w, x, y, row_begin, row_end);  // same arithmetic
  const size_t ahead = prefetch_distance(kRows * w.cols);
  gemm_driver<TileMode::f8>(
      w.cols, x, ldx, batch, y, ldy, row_begin, row_end,
      [&](size_t r, size_t k0, size_t len, float* wt, float(*st)[16]) {
        const uint8_t* src = w.data + r * w.cols + k0;
        prefetch_range_ahead(src, len, ahead);
        for (size_t j = 0, seg = 0; j < len; j += kSeg, ++seg) {  // k0 is a multiple of the block
          const float s = f8_weight_scale(w, r, (k0 + j) / kF8WeightBlock) * kF8HalfRebias;
          _mm512_store_ps(st[seg], _mm512_set1_ps(s));
          const size_t end = std::min(j + kSeg, len);
          size_t q = j;
          for (; q + 16 <= end; q += 16)
            _mm512_store_ps(
                wt + q,
                f8x16_to_f32_scaled(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + q))));
          if (q < end)
            _mm512_store_ps(
                wt + q, f8x16_to_f32_scaled(_mm_maskz_loadu_epi8(tail_mask16(end - q), src + q)));
        }
      });
}

void gemm_f4e2m1_f32_avx512(const WeightsF4e2m1& w, const float* x, size_t ldx, size_t batch,
                            float* y, size_t ldy, size_t row_begin, size_t row_end) {
  if (batch == 1) return gemv_f4e2m1_f32_avx512(w, x, y, row_begin, row_end);  // same arithmetic
  const size_t n = w.cols, row_bytes = f4_row_bytes(n), n_blocks = f4_scales_per_row(n);
  const size_t chunks = (n + 127) / 128, ld8 = chunks * 128;
  // x rows in the x8 layout of f4_rows, one after another (per thread, reused).
  static thread_local Scratch<float> x8_all;
  x8_all.resize(batch * ld8);
  Scratch<float> one;
  for (size_t b = 0; b < batch; ++b) {
    build_x8(x + b * ldx, n, one);
    std::memcpy(x8_all.data() + b * ld8, one.data(), one.size() * sizeof(float));
  }
  const size_t ahead = prefetch_distance(kRows * row_bytes);
  const __m512 lut = f4_lut();
  const __m512i spread = scale_spread_control();
  gemm_driver<TileMode::f4>(
      n, x8_all.data(), ld8, batch, y, ldy, row_begin, row_end,
      [&](size_t r, size_t k0, size_t len, float* wt, float(*st)[16]) {
        const uint8_t* row = w.data + r * row_bytes;
        const uint8_t* srow = w.scales + r * n_blocks;
        prefetch_range_ahead(row + k0 / 2, len / 2, ahead);
        for (size_t j = 0, seg = 0; j < len; j += kSeg, ++seg) {
          const size_t c = (k0 + j) / 128;  // 128-column chunk of the row, as in f4_rows
          const size_t bytes = std::min<size_t>(64, row_bytes - 64 * c);
          const __m512i v =
              bytes == 64 ? _mm512_loadu_si512(row + 64 * c)
                          : _mm512_maskz_loadu_epi8((__mmask64{1} << bytes) - 1, row + 64 * c);
          for (int k = 0; k < 8; ++k)
            _mm512_store_ps(
                wt + j + 16 * static_cast<size_t>(k),
                _mm512_permutexvar_ps(_mm512_srl_epi32(v, _mm_cvtsi32_si128(4 * k)), lut));
          _mm512_store_ps(st[seg], scale_vector4<true>(chunk_scales(srow, c, n_blocks), spread));
        }
      });
}

}  // namespace dsv4::kernels
