// AVX2 GEMV / small-batch GEMM (kernels/gemv.h). Same structure as gemv_avx512.cpp with 8-lane
// vectors: kRows rows share each x load; one partial sum per scale block; f8 via the f16 trick
// (quant_avx2.h); f4 via a PSHUFB table to int8 (2·value) and VPMOVSXBD + VCVTDQ2PS, against x
// split into even and odd elements. Column tails go through scalar code on the decoded values.
#include <immintrin.h>

#include <algorithm>
#include <array>

#include "kernels/codecs.h"
#include "kernels/gemv.h"
#include "kernels/x86/quant_avx2.h"
#include "kernels/x86/scratch.h"

namespace dsv4::kernels {
namespace {
using namespace x86_avx2;

constexpr int kRows = 4;

// Prefetch of later row groups into L2 (see gemv_avx512.cpp, prefetch_ahead).
inline size_t prefetch_distance(size_t group_bytes) {
  constexpr size_t kMinAhead = 8192;
  return group_bytes >= kMinAhead ? group_bytes
                                  : (kMinAhead + group_bytes - 1) / group_bytes * group_bytes;
}
inline void prefetch_ahead(const void* p, size_t distance) {
  _mm_prefetch(static_cast<const char*>(p) + distance, _MM_HINT_T1);
}

constexpr std::array<float, 256> kUe8m0Table = [] {
  std::array<float, 256> t{};
  for (int e = 0; e < 256; ++e) t[static_cast<size_t>(e)] = decode_ue8m0(static_cast<uint8_t>(e));
  return t;
}();

inline __m256 bf16x8(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

template <int R>
void bf16_rows(const WeightsBf16& w, size_t r0, const float* x, float* y) {
  const size_t n = w.cols, ahead = prefetch_distance(kRows * n * sizeof(uint16_t));
  const uint16_t* row[R];
  __m256 acc[R];
  for (int i = 0; i < R; ++i) {
    row[i] = w.data + (r0 + static_cast<size_t>(i)) * n;
    acc[i] = _mm256_setzero_ps();
  }
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 xv = _mm256_loadu_ps(x + k);
    for (int i = 0; i < R; ++i) {
      if (k % 32 == 0) prefetch_ahead(row[i] + k, ahead);
      acc[i] = _mm256_fmadd_ps(bf16x8(row[i] + k), xv, acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) {
    float t = 0.0f;
    for (size_t j = k; j < n; ++j) t += decode_bf16(row[i][j]) * x[j];
    y[i] = hsum(acc[i]) + t;
  }
}

template <int R>
void f8_rows(const WeightsF8e4m3& w, size_t r0, const float* x, float* y) {
  const size_t n = w.cols, ahead = prefetch_distance(kRows * n);
  const uint8_t* row[R];
  __m256 acc[R];
  for (int i = 0; i < R; ++i) {
    row[i] = w.data + (r0 + static_cast<size_t>(i)) * n;
    acc[i] = _mm256_setzero_ps();
  }
  float tail[R] = {};
  for (size_t k0 = 0, cb = 0; k0 < n; k0 += kF8WeightBlock, ++cb) {
    const size_t k1 = std::min(k0 + kF8WeightBlock, n);
    __m256 part[R];
    for (int i = 0; i < R; ++i) {
      part[i] = _mm256_setzero_ps();
      prefetch_ahead(row[i] + k0, ahead);
      prefetch_ahead(row[i] + k0 + 64, ahead);
    }
    size_t k = k0;
    for (; k + 16 <= k1; k += 16) {
      const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
      for (int i = 0; i < R; ++i) {
        __m256 lo, hi;
        f8x16_to_f32_scaled(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row[i] + k)), &lo,
                            &hi);
        part[i] = _mm256_fmadd_ps(lo, x0, part[i]);
        part[i] = _mm256_fmadd_ps(hi, x1, part[i]);
      }
    }
    if (k + 8 <= k1) {
      const __m256 x0 = _mm256_loadu_ps(x + k);
      for (int i = 0; i < R; ++i) {
        const __m256 v =
            f8x8_to_f32_scaled(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row[i] + k)));
        part[i] = _mm256_fmadd_ps(v, x0, part[i]);
      }
      k += 8;
    }
    for (int i = 0; i < R; ++i) {
      const float s = f8_weight_scale(w, r0 + static_cast<size_t>(i), cb);
      acc[i] = _mm256_fmadd_ps(part[i], _mm256_set1_ps(s * kF8HalfRebias), acc[i]);
      if (k < k1) {  // < 8 leftover columns (only in the last block)
        float t = 0.0f;
        for (size_t j = k; j < k1; ++j) t += decode_f8e4m3(row[i][j]) * x[j];
        tail[i] += t * s;
      }
    }
  }
  for (int i = 0; i < R; ++i) y[i] = hsum(acc[i]) + tail[i];
}

// x split into even and odd elements, zero-padded to a multiple of 8 (per thread, reused).
struct SplitX {
  Scratch<float> even, odd;
  void build(const float* x, size_t n) {
    const size_t half = (n + 1) / 2, padded = (half + 7) / 8 * 8;
    even.assign(padded, 0.0f);
    odd.assign(padded, 0.0f);
    for (size_t i = 0; i < n; ++i) (i & 1 ? odd : even)[i / 2] = x[i];
  }
};

SplitX& split_scratch() {
  static thread_local SplitX s;
  return s;
}

template <int R>
void f4_rows(const WeightsF4e2m1& w, size_t r0, const SplitX& xs, float* y) {
  const size_t n = w.cols, row_bytes = f4_row_bytes(n), n_blocks = f4_scales_per_row(n);
  const size_t ahead = prefetch_distance(kRows * row_bytes), ahead_s = ahead / row_bytes * n_blocks;
  const __m128i lut2x = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  const __m128i nib = _mm_set1_epi8(0x0F);
  const uint8_t* row[R];
  const uint8_t* srow[R];
  __m256 acc[R];
  for (int i = 0; i < R; ++i) {
    row[i] = w.data + (r0 + static_cast<size_t>(i)) * row_bytes;
    srow[i] = w.scales + (r0 + static_cast<size_t>(i)) * n_blocks;
    acc[i] = _mm256_setzero_ps();
  }
  const size_t full_blocks = n / kF4WeightBlock;
  for (size_t cb = 0; cb < full_blocks; ++cb) {
    const float* xe = xs.even.data() + cb * 16;
    const float* xo = xs.odd.data() + cb * 16;
    const __m256 xe0 = _mm256_loadu_ps(xe), xe1 = _mm256_loadu_ps(xe + 8);
    const __m256 xo0 = _mm256_loadu_ps(xo), xo1 = _mm256_loadu_ps(xo + 8);
    for (int i = 0; i < R; ++i) {
      if (cb % 4 == 0) prefetch_ahead(row[i] + cb * 16, ahead);
      if (cb % 64 == 0) prefetch_ahead(srow[i] + cb, ahead_s);
      // Nibbles -> 2·value as int8 through one PSHUFB table (exact: all e2m1 values are
      // multiples of 0.5), then to f32; the factor 1/2 goes into the block scale.
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[i] + cb * 16));
      const __m128i lo = _mm_shuffle_epi8(lut2x, _mm_and_si128(bytes, nib));  // even elements
      const __m128i hi =
          _mm_shuffle_epi8(lut2x, _mm_and_si128(_mm_srli_epi16(bytes, 4), nib));  // odd elements
      __m256 part = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), xe0);
      part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), xo0, part);
      part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), xe1,
                             part);
      part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), xo1,
                             part);
      acc[i] = _mm256_fmadd_ps(part, _mm256_set1_ps(0.5f * kUe8m0Table[srow[i][cb]]), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) {
    float tail = 0.0f;
    if (full_blocks < n_blocks) {  // partial last block, scalar
      const size_t cb = full_blocks;
      float part = 0.0f;
      for (size_t k = cb * kF4WeightBlock; k < n; ++k) {
        const uint8_t byte = row[i][k / 2];
        part += decode_f4e2m1((k & 1) ? static_cast<uint8_t>(byte >> 4) : byte) *
                ((k & 1) ? xs.odd[k / 2] : xs.even[k / 2]);
      }
      tail = part * kUe8m0Table[srow[i][cb]];
    }
    y[i] = hsum(acc[i]) + tail;
  }
}

constexpr size_t kChunk = 256;

// Prefetch [p, p + bytes) `distance` bytes ahead, one hint per cache line.
inline void prefetch_range_ahead(const void* p, size_t bytes, size_t distance) {
  const char* c = static_cast<const char*>(p);
  for (size_t o = 0; o < bytes; o += 64) prefetch_ahead(c + o, distance);
}

template <typename Decode>
void gemm_driver(size_t n, const float* x, size_t ldx, size_t batch, float* y, size_t ldy,
                 size_t row_begin, size_t row_end, const Decode& decode) {
  alignas(32) float tile[kRows][kChunk];
  alignas(32) float acc[kGemmMaxBatch][kRows][8];
  for (size_t b0 = 0; b0 < batch; b0 += kGemmMaxBatch) {
    const size_t nb = std::min(kGemmMaxBatch, batch - b0);
    const float* xb = x + b0 * ldx;
    for (size_t r0 = row_begin; r0 < row_end; r0 += kRows) {
      const int nr = static_cast<int>(std::min<size_t>(kRows, row_end - r0));
      std::fill(&acc[0][0][0], &acc[0][0][0] + kGemmMaxBatch * kRows * 8, 0.0f);
      float tail_acc[kGemmMaxBatch][kRows] = {};
      for (size_t k0 = 0; k0 < n; k0 += kChunk) {
        const size_t len = std::min(kChunk, n - k0), full = len / 8 * 8;
        for (int i = 0; i < kRows; ++i) {
          if (i < nr)
            decode(r0 + static_cast<size_t>(i), k0, len, tile[i]);
          else
            std::fill(tile[i], tile[i] + len, 0.0f);
        }
        size_t b = 0;
        for (; b + 2 <= nb; b += 2) {  // two activation rows share each tile load
          const float* x0 = xb + b * ldx + k0;
          const float* x1 = x0 + ldx;
          __m256 a0[kRows], a1[kRows];
          for (int i = 0; i < kRows; ++i) {
            a0[i] = _mm256_load_ps(acc[b][i]);
            a1[i] = _mm256_load_ps(acc[b + 1][i]);
          }
          for (size_t kk = 0; kk < full; kk += 8) {
            const __m256 v0 = _mm256_loadu_ps(x0 + kk), v1 = _mm256_loadu_ps(x1 + kk);
            for (int i = 0; i < kRows; ++i) {
              const __m256 t = _mm256_load_ps(tile[i] + kk);
              a0[i] = _mm256_fmadd_ps(t, v0, a0[i]);
              a1[i] = _mm256_fmadd_ps(t, v1, a1[i]);
            }
          }
          for (int i = 0; i < kRows; ++i) {
            _mm256_store_ps(acc[b][i], a0[i]);
            _mm256_store_ps(acc[b + 1][i], a1[i]);
            for (size_t kk = full; kk < len; ++kk) {
              tail_acc[b][i] += tile[i][kk] * x0[kk];
              tail_acc[b + 1][i] += tile[i][kk] * x1[kk];
            }
          }
        }
        for (; b < nb; ++b) {
          const float* x0 = xb + b * ldx + k0;
          __m256 a0[kRows];
          for (int i = 0; i < kRows; ++i) a0[i] = _mm256_load_ps(acc[b][i]);
          for (size_t kk = 0; kk < full; kk += 8) {
            const __m256 v0 = _mm256_loadu_ps(x0 + kk);
            for (int i = 0; i < kRows; ++i)
              a0[i] = _mm256_fmadd_ps(_mm256_load_ps(tile[i] + kk), v0, a0[i]);
          }
          for (int i = 0; i < kRows; ++i) {
            _mm256_store_ps(acc[b][i], a0[i]);
            for (size_t kk = full; kk < len; ++kk) tail_acc[b][i] += tile[i][kk] * x0[kk];
          }
        }
      }
      for (size_t b = 0; b < nb; ++b)
        for (int i = 0; i < nr; ++i)
          y[(b0 + b) * ldy + r0 + static_cast<size_t>(i)] =
              hsum(_mm256_load_ps(acc[b][i])) + tail_acc[b][i];
    }
  }
}

}  // namespace

void gemv_bf16_f32_avx2(const WeightsBf16& w, const float* x, float* y, size_t row_begin,
                        size_t row_end) {
  size_t r = row_begin;
  for (; r + kRows <= row_end; r += kRows) bf16_rows<kRows>(w, r, x, y + r);
  for (; r < row_end; ++r) bf16_rows<1>(w, r, x, y + r);
}

void gemv_f8e4m3_f32_avx2(const WeightsF8e4m3& w, const float* x, float* y, size_t row_begin,
                          size_t row_end) {
  size_t r = row_begin;
  for (; r + kRows <= row_end; r += kRows) f8_rows<kRows>(w, r, x, y + r);
  for (; r < row_end; ++r) f8_rows<1>(w, r, x, y + r);
}

void gemv_f4e2m1_f32_avx2(const WeightsF4e2m1& w, const float* x, float* y, size_t row_begin,
                          size_t row_end) {
  if (row_begin >= row_end) return;
  SplitX& xs = split_scratch();
  xs.build(x, w.cols);
  size_t r = row_begin;
  for (; r + kRows <= row_end; r += kRows) f4_rows<kRows>(w, r, xs, y + r);
  for (; r < row_end; ++r) f4_rows<1>(w, r, xs, y + r);
}

namespace {
const float* widen(const uint16_t* x, size_t n) {
  static thread_local Scratch<float> buf;
  buf.resize(n);
  convert_bf16_to_f32_avx2(x, buf.data(), n);
  return buf.data();
}
}  // namespace

void gemv_f8e4m3_bf16_avx2(const WeightsF8e4m3& w, const uint16_t* x, float* y, size_t row_begin,
                           size_t row_end) {
  gemv_f8e4m3_f32_avx2(w, widen(x, w.cols), y, row_begin, row_end);
}

void gemv_f4e2m1_bf16_avx2(const WeightsF4e2m1& w, const uint16_t* x, float* y, size_t row_begin,
                           size_t row_end) {
  gemv_f4e2m1_f32_avx2(w, widen(x, w.cols), y, row_begin, row_end);
}

void gemm_bf16_f32_avx2(const WeightsBf16& w, const float* x, size_t ldx, size_t batch, float* y,
                        size_t ldy, size_t row_begin, size_t row_end) {
  const size_t ahead = prefetch_distance(kRows * w.cols * sizeof(uint16_t));
  gemm_driver(w.cols, x, ldx, batch, y, ldy, row_begin, row_end,
              [&](size_t r, size_t k0, size_t len, float* dst) {
                prefetch_range_ahead(w.data + r * w.cols + k0, len * sizeof(uint16_t), ahead);
                convert_bf16_to_f32_avx2(w.data + r * w.cols + k0, dst, len);
              });
}

void gemm_f8e4m3_f32_avx2(const WeightsF8e4m3& w, const float* x, size_t ldx, size_t batch,
                          float* y, size_t ldy, size_t row_begin, size_t row_end) {
  const size_t ahead = prefetch_distance(kRows * w.cols);
  gemm_driver(w.cols, x, ldx, batch, y, ldy, row_begin, row_end,
              [&](size_t r, size_t k0, size_t len, float* dst) {
                prefetch_range_ahead(w.data + r * w.cols + k0, len, ahead);
                convert_f8e4m3_to_f32_avx2(w.data + r * w.cols + k0, dst, len);
                for (size_t j = 0; j < len; j += kF8WeightBlock) {  // k0 is a multiple of the block
                  const float s = f8_weight_scale(w, r, (k0 + j) / kF8WeightBlock);
                  for (size_t t = j; t < std::min(j + kF8WeightBlock, len); ++t) dst[t] *= s;
                }
              });
}

void gemm_f4e2m1_f32_avx2(const WeightsF4e2m1& w, const float* x, size_t ldx, size_t batch,
                          float* y, size_t ldy, size_t row_begin, size_t row_end) {
  const size_t row_bytes = f4_row_bytes(w.cols), n_blocks = f4_scales_per_row(w.cols);
  const size_t ahead = prefetch_distance(kRows * row_bytes);
  gemm_driver(w.cols, x, ldx, batch, y, ldy, row_begin, row_end,
              [&](size_t r, size_t k0, size_t len, float* dst) {
                prefetch_range_ahead(w.data + r * row_bytes + k0 / 2, (len + 1) / 2, ahead);
                dequant_f4e2m1_to_f32_avx2(w.data + r * row_bytes + k0 / 2,
                                           w.scales + r * n_blocks + k0 / kF4WeightBlock, dst, len);
              });
}

}  // namespace dsv4::kernels
