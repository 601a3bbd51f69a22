// kernels/x86/indexer_avx2.cpp — AVX2 lightning-indexer scoring on FP4 records
// (kernels/indexer.h): the AVX-512 design (x86/indexer_avx512.cpp) on 8-key tiles, with
// vpmaddubsw + vpaddw + vpmaddwd in place of vpdpbusd.
//
//   1. Expand a tile of 8 records: load each key's codes 32 bytes at a time, transpose 8x8
//      dwords, split nibbles, vpshufb LUT -> u8 = 2v + 12; key scale bytes as ek << 23.
//   2. Per query, per group of heads, per block b: vpmaddubsw(key u8, query s8 dword
//      broadcast) gives i16 pair sums (|.| <= 2 * 24 * 12 = 576); the 8 dword columns of a block
//      are added in i16 (|.| <= 4608, no overflow), vpmaddwd with ones widens to i32, plus the
//      offset -12 * sum(q s8) -> 4c exactly. s = f32 bits (ek << 23) + ((eq-129) << 23) =
//      2^(eq+ek-256); d = b ? fma(f32(4c), s, d) : f32(4c) * s (the product is exact, so the
//      fma equals the _ref's add). out = fma(w[h], max(d, 0), out) in increasing h.
//   Keys whose scale bytes leave the exact range (indexer.h) are rescored by the _ref code.
// Only intrinsics and raw pointers here: no std:: templates (see kernels/ops.h, "Internal").
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/indexer.h"
#include "kernels/x86/quant_avx2.h"

namespace dsv4::kernels::detail {
namespace {

using x86_avx2::transpose8x8_epi32;

constexpr size_t kTileKeys = 8;

// Expands records [0, n) (n <= 8) into tile[dim/4] (u8 = 2v + 12, lanes = keys; lanes >= n
// hold code 0) and ebits[dim/32] (ek << 23; 127 << 23 in lanes >= n).
void expand_tile(const uint8_t* keys, size_t n, size_t dim, __m256i* tile, int32_t* ebits) {
  const size_t rb = indexer_fp4_record_bytes(dim), n_dw = dim / 8, nb = dim / 32;
  const __m256i lut = _mm256_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0,
                                       12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
  const __m256i nib = _mm256_set1_epi8(0x0F);
  for (size_t c = 0; c < n_dw; c += 8) {
    const size_t m = n_dw - c < 8 ? n_dw - c : 8;  // 4 (dim 32) or 8
    const __m256i dmask =
        m == 8 ? _mm256_set1_epi32(-1) : _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0);
    __m256i r[8], w[8];
    for (size_t j = 0; j < kTileKeys; ++j)
      r[j] = j < n
                 ? _mm256_maskload_epi32(reinterpret_cast<const int*>(keys + j * rb + 4 * c), dmask)
                 : _mm256_setzero_si256();
    transpose8x8_epi32(r, w);
    for (size_t p = 0; p < m; ++p) {
      _mm256_store_si256(tile + 2 * (c + p), _mm256_shuffle_epi8(lut, _mm256_and_si256(w[p], nib)));
      _mm256_store_si256(
          tile + 2 * (c + p) + 1,
          _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi32(w[p], 4), nib)));
    }
  }
  for (size_t b = 0; b < nb; ++b)
    for (size_t j = 0; j < kTileKeys; ++j)
      ebits[b * kTileKeys + j] = (j < n ? keys[j * rb + dim / 2 + b] : 127) * (1 << 23);
}

inline __m256i bcst(const int8_t* q) {
  int32_t v;
  std::memcpy(&v, q, sizeof v);
  return _mm256_set1_epi32(v);
}

// An empty asm that "modifies" v: keeps GCC from reassociating the running i16 sums into a
// tree of partial sums (it did, and spilled most of them to the stack).
inline void pin(__m256i& v) {
  asm("" : "+x"(v));
}

// Heads [h0, h0 + G) of one prepared query against the expanded tile; fma into *out.
template <int G>
inline void score_heads(const IndexerFp4Prepared& q, size_t h0, size_t dim, const __m256i* tile,
                        const int32_t* ebits, __m256* out) {
  const size_t nb = dim / 32;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 d[G];
  for (int g = 0; g < G; ++g) d[g] = _mm256_setzero_ps();  // set at b == 0 (nb >= 1)
  for (size_t b = 0; b < nb; ++b) {
    const __m256i* kv = tile + 8 * b;
    __m256i acc[G];
    const int8_t* qd[G];
    for (int g = 0; g < G; ++g) {
      qd[g] = q.q + (h0 + g) * dim + 32 * b;
      acc[g] = _mm256_maddubs_epi16(_mm256_load_si256(kv), bcst(qd[g]));
    }
    for (int t = 1; t < 8; ++t) {
      const __m256i k = _mm256_load_si256(kv + t);
      for (int g = 0; g < G; ++g) {
        acc[g] = _mm256_add_epi16(acc[g], _mm256_maddubs_epi16(k, bcst(qd[g] + 4 * t)));
        pin(acc[g]);
      }
    }
    const __m256i eb = _mm256_load_si256(reinterpret_cast<const __m256i*>(ebits + 8 * b));
    for (int g = 0; g < G; ++g) {
      const size_t hb = (h0 + g) * nb + b;
      const __m256i c4 =
          _mm256_add_epi32(_mm256_madd_epi16(acc[g], ones), _mm256_set1_epi32(q.offset[hb]));
      const __m256 s = _mm256_castsi256_ps(_mm256_add_epi32(
          eb, _mm256_set1_epi32(static_cast<int32_t>(q.scale_exp[hb]) * (1 << 23))));
      const __m256 f = _mm256_cvtepi32_ps(c4);
      d[g] = b == 0 ? _mm256_mul_ps(f, s) : _mm256_fmadd_ps(f, s, d[g]);
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  for (int g = 0; g < G; ++g)
    *out = _mm256_fmadd_ps(_mm256_set1_ps(q.src->weights[h0 + g]), _mm256_max_ps(d[g], zero), *out);
}

// Scores of keys [0, n) of the expanded tile for one query -> out[0, n).
void score_tile(const IndexerFp4Prepared& q, const uint8_t* keys, size_t n, size_t dim,
                const __m256i* tile, const int32_t* ebits, float* out) {
  const size_t nh = q.src->n_heads, nb = dim / 32;
  __m256 acc = _mm256_setzero_ps();
  size_t h = 0;
  for (; h + 4 <= nh; h += 4) score_heads<4>(q, h, dim, tile, ebits, &acc);
  for (; h < nh; ++h) score_heads<1>(q, h, dim, tile, ebits, &acc);
  if (n == kTileKeys) {
    _mm256_storeu_ps(out, acc);
  } else {
    alignas(32) float tmp[kTileKeys];
    _mm256_store_ps(tmp, acc);
    for (size_t j = 0; j < n; ++j) out[j] = tmp[j];
  }
  // Keys with a scale byte outside the exact fast-path range: the _ref code. ek << 23 is
  // non-negative, so signed compares order it.
  const __m256i lo = _mm256_set1_epi32(q.key_exp_lo * (1 << 23) - 1);
  const __m256i hi = _mm256_set1_epi32(q.key_exp_hi * (1 << 23) + 1);
  __m256i bad = _mm256_setzero_si256();
  for (size_t b = 0; b < nb; ++b) {
    const __m256i e = _mm256_load_si256(reinterpret_cast<const __m256i*>(ebits + 8 * b));
    bad =
        _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpgt_epi32(lo, e), _mm256_cmpgt_epi32(e, hi)));
  }
  const unsigned unsafe = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(bad)));
  if (unsafe & ((1u << n) - 1u)) {
    const size_t rb = indexer_fp4_record_bytes(dim);
    for (size_t j = 0; j < n; ++j)
      if ((unsafe >> j) & 1u) indexer_scores_fp4_ref(*q.src, keys + j * rb, 1, out + j, nullptr);
  }
}

}  // namespace

void indexer_fp4_run_avx2(const IndexerFp4Prepared* qs, size_t n_queries, const uint8_t* keys,
                          size_t n_keys, float* out, size_t out_stride, uint8_t* tile_mem) {
  if (n_queries == 0 || n_keys == 0) return;
  const size_t dim = qs[0].src->dim, rb = indexer_fp4_record_bytes(dim);
  auto* tile = reinterpret_cast<__m256i*>(tile_mem);
  auto* ebits = reinterpret_cast<int32_t*>(tile + dim / 4);
  // Queries outside the exact range were scored by the driver (kernels/indexer.cpp).
  for (size_t j0 = 0; j0 < n_keys; j0 += kTileKeys) {
    const size_t n = n_keys - j0 < kTileKeys ? n_keys - j0 : kTileKeys;
    const uint8_t* k = keys + j0 * rb;
    expand_tile(k, n, dim, tile, ebits);
    for (size_t t = 0; t < n_queries; ++t) {
      if (qs[t].key_exp_lo > qs[t].key_exp_hi) continue;
      score_tile(qs[t], k, n, dim, tile, ebits, out + t * out_stride + j0);
    }
  }
}

}  // namespace dsv4::kernels::detail
