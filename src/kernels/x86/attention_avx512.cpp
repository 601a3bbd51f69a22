// AVX-512 (F/BW/VL/DQ + BF16) bodies of kernels/attention.h (the detail::*_raw_avx512 functions).
//
// Per tile of kTile = 64 keys, shared by every head, with hp = n_heads rounded up to 16:
//   1. decode each key once into one row of the tile (f8_e4m3 via the f16 trick of
//      quant_avx512.h, block scale by VSCALEFPS):
//        bf16_dot: vt [kTile, key_dim/2] dwords of two bf16, "split pairs": dword 16c + i of a
//                  row holds dims 32c + i (low half) and 32c + 16 + i (high half), the upper 16
//                  bits of each f32. Exact: a decoded value has 4 significant bits, a RoPE dim
//                  is a bf16, so the lower 16 bits are zero for every normal f32 (block scale
//                  codes >= 10). 1 KiB per key of 512 dims.
//        f32_fma:  vf [kTile, key_dim] f32 (exact for every code).
//   2. QK with heads in lanes: p[j, 16 heads] = the query column (transposed once per call to
//      [key_dim/2, hp] split pairs, or [key_dim, hp] f32) x the key's pair or dim broadcast
//      from memory (VDPBF16PS or FMA); two head registers x 8 keys per pass. Keys never need to
//      be in lanes, so there is no transposed copy of the tile and no horizontal sum.
//   3. online softmax on head vectors (vector exp; running m, l; alpha = exp(m_old - m_new)).
//   4. PV: for each 64-dim chunk of the value, 4 heads x 4 registers of acc, rescaled by alpha
//      once, then per key the chunk as four f32 registers (bf16_dot: two loads widened by a
//      shift and an AND) and one FMA per (head, 16 dims).
// Why this layout: a decode step runs cold (the other layers' weights went through the caches in
// between), and every scratch line a call writes is a line read from DRAM first. The previous
// layout (an f32 tile plus a transposed bf16 copy for keys in lanes: 192 KiB per 64 keys) cost a
// 32-head sliding-window call ~11 us more than this one (64 KiB) per worker, cold; warm the two
// are within 3 %. The f32_fma mode (Intel) keeps f32 values: there, 512-bit integer ops share
// the two ports of the FMAs, so widening bf16 in PV would cost FMA slots.
// Instruction mix per tile and head: key_dim/2 x 4 VDPBF16PS per 64 keys (QK, 32 MAC each) and
// value_dim/16 x 64 FMAs (PV, 16 MAC each); decoding and widening are shared by all heads.
// Only intrinsics and raw pointers here (see kernels/attention.h, "Internal").
// GCC 12.1/12.2 report false -W(maybe-)uninitialized inside AVX-512 intrinsics that use
// _mm512_undefined_*() (GCC PR 105593, fixed in 12.3).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/attention.h"
#include "kernels/x86/prefetch.h"
#include "kernels/x86/quant_avx512.h"

namespace dsv4::kernels {
namespace {

using namespace x86_avx512;

constexpr size_t kTile = 64;        // keys per tile
constexpr size_t kFirstAhead = 16;  // first-tile record prefetch distance, records
constexpr size_t kQkKeys = 8;       // QK: keys per pass (x two head registers: 16 accumulators)
constexpr size_t kPvHeads = 4;      // PV: heads per pass
constexpr size_t kChunkVecs = 4;    // PV: 64 value dims per pass

inline size_t round64(size_t n) {
  return (n + 63) / 64 * 64;
}
inline size_t round16(size_t n) {
  return (n + 15) / 16 * 16;
}

// Work buffer carve-up (all offsets multiples of 64 bytes). The query and tile regions are sized
// for f32 and hold either form (one QK mode per call).
struct Work {
  uint32_t* qb;  // bf16_dot: [key_dim/2, hp] split pairs of the query (RNE), heads in lanes
  float* qf;     // f32_fma:  [key_dim, hp] the query rounded to bf16, as f32
  uint32_t* vt;  // bf16_dot: [kTile, key_dim/2] split pairs of the tile's keys (= values)
  float* vf;     // f32_fma:  [kTile, key_dim] the tile's keys as f32
  float* p;      // [kTile, hp] scale * q.k, then exp(s - m_new)
  float* alpha;  // [hp] exp(m_old - m_new)
  size_t hp;     // n_heads rounded up to 16; query lanes of heads >= n_heads are 0
  size_t bytes;
};

Work carve(uint8_t* base, size_t n_heads, size_t key_dim) {
  Work w{};
  w.hp = round16(n_heads);
  size_t off = 0;
  auto take = [&](size_t n) {
    uint8_t* p = base ? base + off : nullptr;
    off += round64(n);
    return p;
  };
  uint8_t* qreg = take(w.hp * key_dim * 4);
  w.qb = reinterpret_cast<uint32_t*>(qreg);
  w.qf = reinterpret_cast<float*>(qreg);
  uint8_t* vreg = take(kTile * key_dim * 4);
  w.vt = reinterpret_cast<uint32_t*>(vreg);
  w.vf = reinterpret_cast<float*>(vreg);
  w.p = reinterpret_cast<float*>(take(kTile * w.hp * 4));
  w.alpha = reinterpret_cast<float*>(take(w.hp * 4));
  w.bytes = off;
  return w;
}

// exp(x) for x <= 0 (the only arguments here: s - max): x = n·ln2 + r, |r| <= ln2/2, degree-7
// Taylor polynomial (truncation < 2^-27 relative), 2^n by VSCALEFPS, which underflows smoothly
// to 0 (-inf -> 0; NaN propagates). About 1 ulp.
inline __m512 exp_neg(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);  // NaN in x stays NaN (second operand)
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// ---- split pairs --------------------------------------------------------------------------------

inline __m512i high_halves() {
  return _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
}

// lo = dims 32c..32c+15, hi = dims 32c+16..32c+31, both exact in bf16 -> 16 split pairs (the
// upper 16 bits of each f32: bf16 without rounding, exact for these values).
inline __m512i pack_pairs(__m512 lo, __m512 hi) {
  // 0xF8 = A | (B & C): A = lo >> 16, B = hi, C = 0xFFFF0000.
  return _mm512_ternarylogic_epi32(_mm512_srli_epi32(_mm512_castps_si512(lo), 16),
                                   _mm512_castps_si512(hi), high_halves(), 0xF8);
}
// The inverse: 16 split pairs -> the low and the high dims as f32 (exact).
inline __m512 pairs_lo(__m512i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
inline __m512 pairs_hi(__m512i v) {
  return _mm512_castsi512_ps(_mm512_and_si512(v, high_halves()));
}
inline __m512 bf16x16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

// 32 bf16 of consecutive dims -> 16 split pairs (a word permutation).
inline __m512i bf16x32_to_pairs(const uint16_t* p) {
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                       23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(idx, _mm512_loadu_si512(p));
}

// ---- the query, transposed: heads in lanes ------------------------------------------------------

// 16 f32 -> bf16 (RNE), zero-extended into the low halves of 16 dwords.
inline __m512i bf16_rne_lo(const float* x) {
  return _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(x))));
}

// q [n_heads, key_dim] f32 -> qb [key_dim/2, hp] split pairs (bf16_dot) or qf [key_dim, hp] f32
// rounded to bf16 (f32_fma); lanes of heads >= n_heads are 0. 16x16 dword transposes.
template <bool kF32>
void prepare_query(const float* q, size_t n_heads, size_t key_dim, const Work& w) {
  const size_t hp = w.hp;
  for (size_t hb = 0; hb < hp; hb += 16) {
    for (size_t c = 0; c < key_dim; c += 32) {
      __m512i lo[16], hi[16];
      for (size_t i = 0; i < 16; ++i) {
        if (hb + i < n_heads) {
          const float* row = q + (hb + i) * key_dim + c;
          lo[i] = bf16_rne_lo(row);
          hi[i] = bf16_rne_lo(row + 16);
        } else {
          lo[i] = hi[i] = _mm512_setzero_si512();
        }
      }
      if constexpr (kF32) {
        transpose16x16_epi32(lo, lo);
        transpose16x16_epi32(hi, hi);
        for (size_t i = 0; i < 16; ++i) {
          _mm512_store_si512(w.qf + (c + i) * hp + hb, _mm512_slli_epi32(lo[i], 16));
          _mm512_store_si512(w.qf + (c + 16 + i) * hp + hb, _mm512_slli_epi32(hi[i], 16));
        }
      } else {
        for (size_t i = 0; i < 16; ++i)
          lo[i] = _mm512_or_si512(lo[i], _mm512_slli_epi32(hi[i], 16));
        transpose16x16_epi32(lo, lo);
        for (size_t i = 0; i < 16; ++i) _mm512_store_si512(w.qb + (c / 2 + i) * hp + hb, lo[i]);
      }
    }
  }
}

// ---- decoding one key into a tile row -----------------------------------------------------------

// V4 record -> one tile row: f32 [head_dim] (exact) or split pairs [head_dim/2] (exact for block
// scale codes >= 10).
template <bool kF32>
void decode_v4(const uint8_t* rec, size_t head_dim, size_t rope_dim, const Work& w, size_t j) {
  const size_t nope = head_dim - rope_dim;
  const uint8_t* scales = rec + nope + 2 * rope_dim;
  float* of = w.vf + j * head_dim;
  uint32_t* ob = w.vt + j * (head_dim / 2);
  for (size_t b = 0; b * 64 < nope; ++b) {
    // f16 trick gives decode·2^-8; scalef by (e - 127 + 8).
    const __m512 e = _mm512_set1_ps(static_cast<float>(static_cast<int>(scales[b]) - 119));
    __m512 f[4];
    for (size_t i = 0; i < 4; ++i) {
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rec + b * 64 + i * 16));
      f[i] = _mm512_scalef_ps(f8x16_to_f32_scaled(c), e);
    }
    if constexpr (kF32) {
      for (size_t i = 0; i < 4; ++i) _mm512_storeu_ps(of + b * 64 + i * 16, f[i]);
    } else {
      _mm512_storeu_si512(ob + b * 32, pack_pairs(f[0], f[1]));
      _mm512_storeu_si512(ob + b * 32 + 16, pack_pairs(f[2], f[3]));
    }
  }
  const uint16_t* rope = reinterpret_cast<const uint16_t*>(rec + nope);
  for (size_t i = 0; i < rope_dim; i += 32) {
    if constexpr (kF32) {
      _mm512_storeu_ps(of + nope + i, bf16x16(rope + i));
      _mm512_storeu_ps(of + nope + i + 16, bf16x16(rope + i + 16));
    } else {
      _mm512_storeu_si512(ob + (nope + i) / 2, bf16x32_to_pairs(rope + i));
    }
  }
}

template <bool kF32>
void decode_bf16_row(const uint16_t* row, size_t key_dim, const Work& w, size_t j) {
  for (size_t i = 0; i < key_dim; i += 32) {
    if constexpr (kF32) {
      _mm512_storeu_ps(w.vf + j * key_dim + i, bf16x16(row + i));
      _mm512_storeu_ps(w.vf + j * key_dim + i + 16, bf16x16(row + i + 16));
    } else {
      _mm512_storeu_si512(w.vt + j * (key_dim / 2) + i / 2, bf16x32_to_pairs(row + i));
    }
  }
}

// ---- QK: p[j, hb + 16 HV) = scale * q.k for keys j0 .. j0 + NK ----------------------------------

// kF32: f32 FMA over single dims (qf x the key's f32 broadcast from memory); else VDPBF16PS over
// pairs (qb x the key's pair broadcast).
template <size_t HV, size_t NK, bool kF32>
void qk_keys(const Work& w, size_t hb, size_t key_dim, size_t j0, float scale) {
  const size_t hp = w.hp;
  __m512 acc[NK][HV];
  for (size_t k = 0; k < NK; ++k)
    for (size_t v = 0; v < HV; ++v) acc[k][v] = _mm512_setzero_ps();
  if constexpr (kF32) {
    const float* keys = w.vf + j0 * key_dim;
    for (size_t d = 0; d < key_dim; ++d) {
      __m512 qv[HV];
      for (size_t v = 0; v < HV; ++v) qv[v] = _mm512_load_ps(w.qf + d * hp + hb + v * 16);
      for (size_t k = 0; k < NK; ++k) {
        const __m512 b = _mm512_set1_ps(keys[k * key_dim + d]);
        for (size_t v = 0; v < HV; ++v) acc[k][v] = _mm512_fmadd_ps(qv[v], b, acc[k][v]);
      }
    }
  } else {
    const size_t pairs = key_dim / 2;
    const uint32_t* keys = w.vt + j0 * pairs;
    for (size_t d = 0; d < pairs; ++d) {
      __m512bh qv[HV];
      for (size_t v = 0; v < HV; ++v)
        qv[v] = reinterpret_cast<__m512bh>(_mm512_load_si512(w.qb + d * hp + hb + v * 16));
      for (size_t k = 0; k < NK; ++k) {
        const __m512bh b =
            reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(keys[k * pairs + d])));
        for (size_t v = 0; v < HV; ++v) acc[k][v] = _mm512_dpbf16_ps(acc[k][v], qv[v], b);
      }
    }
  }
  const __m512 vscale = _mm512_set1_ps(scale);
  for (size_t k = 0; k < NK; ++k)
    for (size_t v = 0; v < HV; ++v)
      _mm512_store_ps(w.p + (j0 + k) * hp + hb + v * 16, _mm512_mul_ps(acc[k][v], vscale));
}

// qk_keys for 1 .. kQkKeys keys, indexed by count - 1 (the tail of a tile).
template <size_t HV, bool kF32, size_t... I>
constexpr auto qk_key_table(std::index_sequence<I...>) {
  return std::array{&qk_keys<HV, I + 1, kF32>...};
}

template <size_t HV, bool kF32>
void qk_heads(const Work& w, size_t hb, size_t key_dim, size_t nk, float scale) {
  static constexpr auto kByCount = qk_key_table<HV, kF32>(std::make_index_sequence<kQkKeys>());
  size_t j = 0;
  for (; j + kQkKeys <= nk; j += kQkKeys) qk_keys<HV, kQkKeys, kF32>(w, hb, key_dim, j, scale);
  if (j < nk) kByCount[nk - j - 1](w, hb, key_dim, j, scale);
}

// ---- online softmax of 16 heads hb.. over the tile's nk keys ------------------------------------

void softmax_heads(const Work& w, size_t hb, size_t n_heads, size_t nk, float* m, float* l) {
  const size_t hp = w.hp;
  const __mmask16 valid = tail_mask16(n_heads - hb < 16 ? n_heads - hb : 16);
  const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
  const __m512 m_old = _mm512_mask_loadu_ps(neg_inf, valid, m + hb);
  __m512 mx = neg_inf;
  for (size_t j = 0; j < nk; ++j) mx = _mm512_max_ps(_mm512_load_ps(w.p + j * hp + hb), mx);
  // m_new = max(m_old, tile max); a head with no finite score yet adds nothing (alpha 1, p 0).
  const __m512 m_new = _mm512_max_ps(mx, m_old);
  const __mmask16 live = _mm512_cmp_ps_mask(m_new, neg_inf, _CMP_NEQ_UQ);
  __m512 sum = _mm512_setzero_ps();
  for (size_t j = 0; j < nk; ++j) {
    float* pj = w.p + j * hp + hb;
    const __m512 e = _mm512_maskz_mov_ps(live, exp_neg(_mm512_sub_ps(_mm512_load_ps(pj), m_new)));
    _mm512_store_ps(pj, e);
    sum = _mm512_add_ps(sum, e);
  }
  // alpha: 0 for a head's first keys (m_old = -inf), 1 while no finite score, else exp.
  const __mmask16 had = _mm512_cmp_ps_mask(m_old, neg_inf, _CMP_NEQ_UQ);
  __m512 alpha = _mm512_maskz_mov_ps(had, exp_neg(_mm512_sub_ps(m_old, m_new)));
  alpha = _mm512_mask_mov_ps(_mm512_set1_ps(1.0f), live, alpha);
  _mm512_store_ps(w.alpha + hb, alpha);
  const __m512 l_old = _mm512_mask_loadu_ps(_mm512_setzero_ps(), valid, l + hb);
  _mm512_mask_storeu_ps(m + hb, valid & live, m_new);
  _mm512_mask_storeu_ps(l + hb, valid & live, _mm512_fmadd_ps(l_old, alpha, sum));
}

// ---- PV: acc[h, c..c+16*NV) = alpha[h]·acc + sum_j p[j,h]·v[j, c..] for NH heads ----------------

template <size_t NH, size_t NV, bool kF32>
void pv_block(const Work& w, size_t h0, size_t c, size_t key_dim, size_t value_dim, size_t nk,
              float* acc) {
  static_assert(NV % 2 == 0);
  __m512 a[NH][NV];
  for (size_t h = 0; h < NH; ++h) {
    const float al = w.alpha[h0 + h];
    float* row = acc + (h0 + h) * value_dim + c;
    for (size_t v = 0; v < NV; ++v) a[h][v] = _mm512_loadu_ps(row + v * 16);
    if (al != 1.0f)  // once the running max settles, alpha is exactly 1 (exp(0))
      for (size_t v = 0; v < NV; ++v) a[h][v] = _mm512_mul_ps(a[h][v], _mm512_set1_ps(al));
  }
  const float* pp = w.p + h0;
  const size_t hp = w.hp;
  for (size_t j = 0; j < nk; ++j) {
    __m512 x[NV];
    if constexpr (kF32) {
      const float* vrow = w.vf + j * key_dim + c;
      for (size_t v = 0; v < NV; ++v) x[v] = _mm512_loadu_ps(vrow + v * 16);
    } else {
      const uint32_t* vrow = w.vt + j * (key_dim / 2) + c / 2;
      for (size_t v = 0; v < NV; v += 2) {
        const __m512i xv = _mm512_loadu_si512(vrow + v * 8);
        x[v] = pairs_lo(xv);
        x[v + 1] = pairs_hi(xv);
      }
    }
    for (size_t h = 0; h < NH; ++h) {
      const __m512 pj = _mm512_set1_ps(pp[j * hp + h]);
      for (size_t v = 0; v < NV; ++v) a[h][v] = _mm512_fmadd_ps(pj, x[v], a[h][v]);
    }
  }
  for (size_t h = 0; h < NH; ++h) {
    float* row = acc + (h0 + h) * value_dim + c;
    for (size_t v = 0; v < NV; ++v) _mm512_storeu_ps(row + v * 16, a[h][v]);
  }
}

// Value chunks outermost: a chunk of the tile (kTile x 64 dims, 8 KiB as bf16) stays in L1 for
// every head.
template <size_t NV, bool kF32>
void pv_chunk(const Work& w, size_t n_heads, size_t c, size_t key_dim, size_t value_dim, size_t nk,
              float* acc) {
  size_t h = 0;
  for (; h + kPvHeads <= n_heads; h += kPvHeads)
    pv_block<kPvHeads, NV, kF32>(w, h, c, key_dim, value_dim, nk, acc);
  for (; h < n_heads; ++h) pv_block<1, NV, kF32>(w, h, c, key_dim, value_dim, nk, acc);
}

// One tile whose keys are already in w.vt (nk <= kTile). value_dim % 32 == 0.
template <bool kF32>
void tile(const Work& w, size_t n_heads, size_t key_dim, size_t value_dim, size_t nk, float scale,
          float* m, float* l, float* acc) {
  static_assert(kTile == 64 && kPvHeads == 4 && kChunkVecs == 4);
  size_t hb = 0;
  for (; hb + 32 <= w.hp; hb += 32) qk_heads<2, kF32>(w, hb, key_dim, nk, scale);
  if (hb < w.hp) qk_heads<1, kF32>(w, hb, key_dim, nk, scale);
  for (hb = 0; hb < n_heads; hb += 16) softmax_heads(w, hb, n_heads, nk, m, l);
  size_t c = 0;
  for (; c + kChunkVecs * 16 <= value_dim; c += kChunkVecs * 16)
    pv_chunk<kChunkVecs, kF32>(w, n_heads, c, key_dim, value_dim, nk, acc);
  if (c < value_dim) pv_chunk<2, kF32>(w, n_heads, c, key_dim, value_dim, nk, acc);
}

template <bool kF32>
void v4_body(const float* q, size_t n_heads, size_t head_dim, size_t rope_dim,
             const uint8_t* const* recs, size_t n_keys, float scale, float* m, float* l, float* acc,
             const Work& w) {
  prepare_query<kF32>(q, n_heads, head_dim, w);
  x86::walk_record_tiles<kTile, kFirstAhead>(
      recs, n_keys, x86::v4_record_bytes(head_dim, rope_dim),
      [&](const uint8_t* rec, size_t j) { decode_v4<kF32>(rec, head_dim, rope_dim, w, j); },
      [&](size_t nk) { tile<kF32>(w, n_heads, head_dim, head_dim, nk, scale, m, l, acc); });
}

template <bool kF32>
void mla_body(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
              const uint16_t* latents, size_t n_keys, float scale, float* m, float* l, float* acc,
              const Work& w) {
  prepare_query<kF32>(q, n_heads, key_dim, w);
  for (size_t j0 = 0; j0 < n_keys; j0 += kTile) {
    const size_t nk = n_keys - j0 < kTile ? n_keys - j0 : kTile;
    for (size_t j = 0; j < nk; ++j)
      decode_bf16_row<kF32>(latents + (j0 + j) * key_dim, key_dim, w, j);
    tile<kF32>(w, n_heads, key_dim, value_dim, nk, scale, m, l, acc);
  }
}

// body(std::bool_constant<kF32>) for the call's QK mode.
template <typename Body>
void with_mode(detail::AttnQk qk, Body&& body) {
  if (qk == detail::AttnQk::f32_fma)
    body(std::true_type{});
  else
    body(std::false_type{});
}

}  // namespace

namespace detail {

size_t attn_work_bytes_avx512(size_t n_heads, size_t key_dim, size_t /*value_dim*/) {
  return carve(nullptr, n_heads, key_dim).bytes;
}

void attend_v4_fp8_raw_avx512(const float* q, size_t n_heads, size_t head_dim, size_t rope_dim,
                              const uint8_t* const* recs, size_t n_keys, float scale, float* m,
                              float* l, float* acc, uint8_t* work, AttnQk qk) {
  if (n_keys == 0) return;
  const Work w = carve(work, n_heads, head_dim);
  with_mode(qk, [&](auto f32) {
    v4_body<decltype(f32)::value>(q, n_heads, head_dim, rope_dim, recs, n_keys, scale, m, l, acc,
                                  w);
  });
}

void attend_mla_bf16_raw_avx512(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                                const uint16_t* latents, size_t n_keys, float scale, float* m,
                                float* l, float* acc, uint8_t* work, AttnQk qk) {
  if (n_keys == 0) return;
  const Work w = carve(work, n_heads, key_dim);
  with_mode(qk, [&](auto f32) {
    mla_body<decltype(f32)::value>(q, n_heads, key_dim, value_dim, latents, n_keys, scale, m, l,
                                   acc, w);
  });
}

}  // namespace detail
}  // namespace dsv4::kernels
