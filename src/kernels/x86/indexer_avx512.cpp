// kernels/x86/indexer_avx512.cpp — AVX-512 VNNI lightning-indexer scoring on FP4 records
// (kernels/indexer.h). The avx512 tier requires VNNI (base/cpu_features.h has_avx512_tier), so
// vpdpbusd is always available here.
//
// Design (lanes = 16 keys, so relu and the head sum stay lane-wise, in the _ref order):
//   1. Expand a tile of 16 records: load each key's codes (64 B for dim 128; unaligned, stride
//      dim/2 + dim/32), transpose 16x16 dwords so vector p holds packed dword p of every key,
//      split low/high nibbles and map them with a vpshufb LUT to u8 = 2*v + 12 (0..24): vector
//      2p + hi = four dims of each key (indexer.h, IndexerFp4Prepared). Key scale bytes come in
//      with one gather per 4 blocks and are kept as f32 ek - 127.
//   2. Per query, per group of 4 heads, per block b: acc = -12*sum(q s8) (the offset of the
//      +12 key bias), 8 vpdpbusd per head with the query dword broadcast from memory
//      (m32bcst) -> acc = 4*c exactly; P = vscalefps(cvt(acc), (ek-127) + (eq-129)) = 4c *
//      2^(eq+ek-256), exact; d = b ? d + P : P. Then out = fma(w[h], max(d, 0), out) in
//      increasing h. Only that last fma shares the VNNI pipes on Zen 4 (indexer.h, "Scaling").
//   The expanded tile (dim/4 vectors, 2 KB for dim 128) stays in L1 and is reused by every head
//   and every query of a multi-query call; keys are never dequantized to f32.
//   Keys whose scale bytes leave the exact range (indexer.h) are rescored by the _ref code.
// Only intrinsics and raw pointers here: no std:: templates (see kernels/ops.h, "Internal").

// GCC 12.2 warns about the self-initialised _mm512_undefined_*() inside its own AVX-512 headers
// when they are inlined at -O3 (GCC bug 105593, fixed in 12.3); silence it for those headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <cstddef>
#include <cstdint>

#include "kernels/indexer.h"
#include "kernels/x86/quant_avx512.h"

namespace dsv4::kernels::detail {
namespace {

using namespace x86_avx512;

constexpr size_t kTileKeys = 16;

// acc += vpdpbusd(k (u8), 4 s8 at q broadcast to every lane). GCC 12 does not fold
// _mm512_set1_epi32(load) into the instruction's m32bcst operand (it issues a separate
// vpbroadcastd per product), hence the one-instruction asm.
inline __m512i dpbusd_bcst(__m512i acc, __m512i k, const int8_t* q) {
  asm("vpdpbusd %2%{1to16%}, %1, %0"
      : "+v"(acc)
      : "v"(k), "m"(*reinterpret_cast<const int32_t*>(q)));
  return acc;
}

// Expands records [0, n) (n <= 16) into tile[dim/4] (u8 = 2v + 12, lanes = keys; lanes >= n
// hold code 0) and ekf[dim/32] (f32 ek - 127; 0 in lanes >= n).
void expand_tile(const uint8_t* keys, size_t n, size_t dim, __m512i* tile, __m512* ekf) {
  const size_t rb = indexer_fp4_record_bytes(dim), n_dw = dim / 8, nb = dim / 32;
  const __m512i lut = _mm512_broadcast_i32x4(
      _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
  const __m512i nib = _mm512_set1_epi8(0x0F);
  for (size_t c = 0; c < n_dw; c += 16) {
    const size_t m = n_dw - c < 16 ? n_dw - c : 16;
    const __mmask16 dmask = static_cast<__mmask16>((1u << m) - 1u);
    __m512i r[16], w[16];
    for (size_t j = 0; j < kTileKeys; ++j)
      r[j] =
          j < n ? _mm512_maskz_loadu_epi32(dmask, keys + j * rb + 4 * c) : _mm512_setzero_si512();
    transpose16x16_epi32(r, w);
    for (size_t p = 0; p < m; ++p) {
      _mm512_store_si512(tile + 2 * (c + p), _mm512_shuffle_epi8(lut, _mm512_and_si512(w[p], nib)));
      _mm512_store_si512(
          tile + 2 * (c + p) + 1,
          _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi32(w[p], 4), nib)));
    }
  }
  // Scale bytes: dwords ending at the record's end (never past it, even for dim 32); the byte
  // position of block b in that stream is 4*n_sdw - nb + b.
  const __mmask16 valid = static_cast<__mmask16>((1u << n) - 1u);
  const __m512i idx =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(rb)));
  const size_t n_sdw = (nb + 3) / 4;
  const uint8_t* sbase = keys + rb - 4 * n_sdw;
  for (size_t g = 0; g < n_sdw; ++g) {
    // Lanes >= n read as 0x7F7F7F7F: ek = 127, a harmless exponent.
    const __m512i x =
        _mm512_mask_i32gather_epi32(_mm512_set1_epi32(0x7F7F7F7F), valid, idx, sbase + 4 * g, 1);
    for (size_t byte = 0; byte < 4; ++byte) {
      const size_t pos = 4 * g + byte;     // position in the scale stream
      if (pos + nb < 4 * n_sdw) continue;  // a code byte before the first scale
      const size_t b = pos + nb - 4 * n_sdw;
      const __m512i e = _mm512_and_si512(_mm512_srli_epi32(x, static_cast<unsigned>(8 * byte)),
                                         _mm512_set1_epi32(0xFF));
      _mm512_store_ps(ekf + b, _mm512_cvtepi32_ps(_mm512_sub_epi32(e, _mm512_set1_epi32(127))));
    }
  }
}

// Heads [h0, h0 + G) of one prepared query against the expanded tile; fma into *out.
template <int G>
inline void score_heads(const IndexerFp4Prepared& q, size_t h0, size_t dim, const __m512i* tile,
                        const __m512* ekf, __m512* out) {
  const size_t nb = dim / 32;
  __m512 d[G];
  for (int g = 0; g < G; ++g) d[g] = _mm512_setzero_ps();  // set at b == 0 (nb >= 1)
  for (size_t b = 0; b < nb; ++b) {
    const __m512i* kv = tile + 8 * b;
    const __m512i k0 = _mm512_load_si512(kv + 0), k1 = _mm512_load_si512(kv + 1);
    const __m512i k2 = _mm512_load_si512(kv + 2), k3 = _mm512_load_si512(kv + 3);
    const __m512i k4 = _mm512_load_si512(kv + 4), k5 = _mm512_load_si512(kv + 5);
    const __m512i k6 = _mm512_load_si512(kv + 6), k7 = _mm512_load_si512(kv + 7);
    __m512i acc[G];
    const int8_t* qd[G];
    for (int g = 0; g < G; ++g) {
      acc[g] = _mm512_set1_epi32(q.offset[(h0 + g) * nb + b]);
      qd[g] = q.q + (h0 + g) * dim + 32 * b;
    }
    for (int g = 0; g < G; ++g) acc[g] = dpbusd_bcst(acc[g], k0, qd[g] + 0);
    for (int g = 0; g < G; ++g) acc[g] = dpbusd_bcst(acc[g], k1, qd[g] + 4);
    for (int g = 0; g < G; ++g) acc[g] = dpbusd_bcst(acc[g], k2, qd[g] + 8);
    for (int g = 0; g < G; ++g) acc[g] = dpbusd_bcst(acc[g], k3, qd[g] + 12);
    for (int g = 0; g < G; ++g) acc[g] = dpbusd_bcst(acc[g], k4, qd[g] + 16);
    for (int g = 0; g < G; ++g) acc[g] = dpbusd_bcst(acc[g], k5, qd[g] + 20);
    for (int g = 0; g < G; ++g) acc[g] = dpbusd_bcst(acc[g], k6, qd[g] + 24);
    for (int g = 0; g < G; ++g) acc[g] = dpbusd_bcst(acc[g], k7, qd[g] + 28);
    const __m512 ek = _mm512_load_ps(ekf + b);
    for (int g = 0; g < G; ++g) {
      const __m512 e = _mm512_add_ps(ek, _mm512_set1_ps(q.scale_exp[(h0 + g) * nb + b]));
      const __m512 p = _mm512_scalef_ps(_mm512_cvtepi32_ps(acc[g]), e);  // exact
      d[g] = b == 0 ? p : _mm512_add_ps(d[g], p);
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int g = 0; g < G; ++g)
    *out = _mm512_fmadd_ps(_mm512_set1_ps(q.src->weights[h0 + g]), _mm512_max_ps(d[g], zero), *out);
}

// Scores of keys [0, n) of the expanded tile for one query -> out[0, n).
void score_tile(const IndexerFp4Prepared& q, const uint8_t* keys, size_t n, size_t dim,
                const __m512i* tile, const __m512* ekf, float* out) {
  const size_t nh = q.src->n_heads, nb = dim / 32;
  __m512 acc = _mm512_setzero_ps();
  size_t h = 0;
  for (; h + 4 <= nh; h += 4) score_heads<4>(q, h, dim, tile, ekf, &acc);
  for (; h < nh; ++h) score_heads<1>(q, h, dim, tile, ekf, &acc);
  const __mmask16 valid = static_cast<__mmask16>((1u << n) - 1u);
  _mm512_mask_storeu_ps(out, valid, acc);
  // Keys with a scale byte outside the exact fast-path range: the _ref code.
  const __m512 lo = _mm512_set1_ps(static_cast<float>(q.key_exp_lo - 127));
  const __m512 hi = _mm512_set1_ps(static_cast<float>(q.key_exp_hi - 127));
  __mmask16 safe = valid;
  for (size_t b = 0; b < nb; ++b) {
    const __m512 e = _mm512_load_ps(ekf + b);
    safe &= _mm512_cmp_ps_mask(e, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(e, hi, _CMP_LE_OQ);
  }
  if (safe != valid) {
    const size_t rb = indexer_fp4_record_bytes(dim);
    for (size_t j = 0; j < n; ++j)
      if (!((safe >> j) & 1u)) indexer_scores_fp4_ref(*q.src, keys + j * rb, 1, out + j, nullptr);
  }
}

}  // namespace

void indexer_fp4_run_avx512(const IndexerFp4Prepared* qs, size_t n_queries, const uint8_t* keys,
                            size_t n_keys, float* out, size_t out_stride, uint8_t* tile_mem) {
  if (n_queries == 0 || n_keys == 0) return;
  const size_t dim = qs[0].src->dim, rb = indexer_fp4_record_bytes(dim);
  auto* tile = reinterpret_cast<__m512i*>(tile_mem);
  auto* ekf = reinterpret_cast<__m512*>(tile + dim / 4);
  // Queries outside the exact range were scored by the driver (kernels/indexer.cpp).
  for (size_t j0 = 0; j0 < n_keys; j0 += kTileKeys) {
    const size_t n = n_keys - j0 < kTileKeys ? n_keys - j0 : kTileKeys;
    const uint8_t* k = keys + j0 * rb;
    expand_tile(k, n, dim, tile, ekf);
    for (size_t t = 0; t < n_queries; ++t) {
      if (qs[t].key_exp_lo > qs[t].key_exp_hi) continue;
      score_tile(qs[t], k, n, dim, tile, ekf, out + t * out_stride + j0);
    }
  }
}

}  // namespace dsv4::kernels::detail
