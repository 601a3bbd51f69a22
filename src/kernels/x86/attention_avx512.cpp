// AVX-512 (F/BW/VL/DQ + BF16) bodies of kernels/attention.h (the detail::*_raw_avx512 functions).
//
// Per tile of kTile = 64 keys, shared by every head:
//   1. decode each key once into vt [kTile, key_dim] f32 (row-major: the PV operand);
//      f8_e4m3 via the f16 trick of quant_avx512.h, block scale applied by VSCALEFPS (exact for
//      every scale code), bf16 dims by a 16-bit shift;
//   2. transpose it to kt [key_dim/2, kTile] dwords of two bf16 (dims 2i, 2i+1 of one key; a
//      value e4m3·2^k or bf16 is exact in bf16), 16x16 dword blocks in registers;
//   3. QK: for groups of 4 heads, s[h, 32 keys] in two registers by VDPBF16PS of kt rows with the
//      broadcast bf16 query pair (keys in lanes: no horizontal sums);
//   4. online softmax per head (vector exp; running m, l; alpha = exp(m_old - m_new));
//   5. PV: for each 64-dim chunk of the value, 4 heads x 4 registers of acc, rescaled by alpha
//      once, then one FMA per (head, key, 16 dims) with vt rows that stay in L1.
// Instruction mix per tile and head: key_dim/2 x 2 VDPBF16PS (QK, 32 MAC each) and
// value_dim/16 x 32 FMAs (PV, 16 MAC each); decode/transpose is shared by all heads.
// Only intrinsics and raw pointers here (see kernels/attention.h, "Internal").
// GCC 12.1/12.2 report false -W(maybe-)uninitialized inside AVX-512 intrinsics that use
// _mm512_undefined_*() (GCC PR 105593, fixed in 12.3).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/x86/prefetch.h"
#include "kernels/x86/quant_avx512.h"

namespace dsv4::kernels {
namespace {

using namespace x86_avx512;

constexpr size_t kTile = 64;        // keys per tile: up to four 16-lane score registers per head
constexpr size_t kFirstAhead = 16;  // first-tile record prefetch distance, records
constexpr size_t kHeadGroup = 4;
constexpr size_t kChunkVecs = 4;  // PV: 64 value dims per pass

inline size_t round64(size_t n) {
  return (n + 63) / 64 * 64;
}

// Work buffer carve-up (all offsets multiples of 64 bytes). The query and key-tile regions are
// sized for f32 and hold either form (one QK mode per call).
struct Work {
  uint32_t* qb;  // bf16_dot: [n_heads, key_dim/2] bf16 pairs of the query (RNE)
  float* qf;     // f32_fma:  [n_heads, key_dim] the query rounded to bf16, as f32
  uint32_t* kt;  // bf16_dot: [key_dim/2, kTile] bf16 pairs of the tile's keys, transposed
  float* kt32;   // f32_fma:  [key_dim, kTile] the tile's keys, transposed
  float* vt;     // [kTile, key_dim] f32 decoded keys (= values)
  float* p;      // [n_heads, kTile] exp(s - m_new), 0 beyond the tile's keys
  float* alpha;  // [n_heads] exp(m_old - m_new)
  size_t bytes;
};

Work carve(uint8_t* base, size_t n_heads, size_t key_dim) {
  Work w{};
  size_t off = 0;
  auto take = [&](size_t n) {
    uint8_t* p = base ? base + off : nullptr;
    off += round64(n);
    return p;
  };
  uint8_t* qreg = take(n_heads * key_dim * 4);
  w.qb = reinterpret_cast<uint32_t*>(qreg);
  w.qf = reinterpret_cast<float*>(qreg);
  uint8_t* kreg = take(key_dim * kTile * 4);
  w.kt = reinterpret_cast<uint32_t*>(kreg);
  w.kt32 = reinterpret_cast<float*>(kreg);
  w.vt = reinterpret_cast<float*>(take(kTile * key_dim * 4));
  w.p = reinterpret_cast<float*>(take(n_heads * kTile * 4));
  w.alpha = reinterpret_cast<float*>(take(n_heads * 4));
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

inline float exp_neg1(float x) {
  return _mm512_cvtss_f32(exp_neg(_mm512_set1_ps(x)));
}

// q [n_heads, key_dim] f32 -> bf16 (RNE) pairs.
void prepare_query(const float* q, size_t n, uint32_t* qb) {
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + i + 16), _mm512_loadu_ps(q + i));
    _mm512_storeu_si512(qb + i / 2, reinterpret_cast<__m512i>(v));
  }
  for (; i + 16 <= n; i += 16) {
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(q + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb + i / 2), reinterpret_cast<__m256i>(v));
  }
}

// q [n] f32 -> bf16 (RNE) -> f32.
void prepare_query_f32(const float* q, size_t n, float* qf) {
  for (size_t i = 0; i < n; i += 16) {
    const __m256i h = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(q + i)));
    _mm512_storeu_ps(qf + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
  }
}

// ---- decoding one key into a vt row ----------------------------------------------------------

inline __m512 bf16x16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

// V4 record -> out[head_dim] f32 (exact: e4m3 · 2^(e-127) by VSCALEFPS).
void decode_v4(const uint8_t* rec, size_t head_dim, size_t rope_dim, float* out) {
  const size_t nope = head_dim - rope_dim;
  const uint8_t* scales = rec + nope + 2 * rope_dim;
  for (size_t b = 0; b * 64 < nope; ++b) {
    // f16 trick gives decode·2^-8; scalef by (e - 127 + 8).
    const __m512 e = _mm512_set1_ps(static_cast<float>(static_cast<int>(scales[b]) - 119));
    for (size_t i = 0; i < 64; i += 16) {
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rec + b * 64 + i));
      _mm512_storeu_ps(out + b * 64 + i, _mm512_scalef_ps(f8x16_to_f32_scaled(c), e));
    }
  }
  const uint16_t* rope = reinterpret_cast<const uint16_t*>(rec + nope);
  for (size_t i = 0; i < rope_dim; i += 16) _mm512_storeu_ps(out + nope + i, bf16x16(rope + i));
}

void decode_bf16_row(const uint16_t* row, size_t key_dim, float* out) {
  for (size_t i = 0; i < key_dim; i += 16) _mm512_storeu_ps(out + i, bf16x16(row + i));
}

// ---- vt -> kt: 16 keys x 32 dims (16 dwords of bf16 pairs) per register transpose ----------

// kt[dp, kb*16 + r] = bf16 pair (vt[kb*16 + r, 2dp], vt[kb*16 + r, 2dp + 1]); keys >= nk are 0.
void build_kt(const float* vt, size_t key_dim, size_t nk, uint32_t* kt) {
  const size_t n_blocks = (nk + 15) / 16;
  for (size_t kb = 0; kb < n_blocks; ++kb) {
    for (size_t d0 = 0; d0 < key_dim; d0 += 32) {
      __m512i r[16];
      for (size_t i = 0; i < 16; ++i) {
        const size_t j = kb * 16 + i;
        if (j < nk) {
          const float* row = vt + j * key_dim + d0;
          r[i] = reinterpret_cast<__m512i>(
              _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 16), _mm512_loadu_ps(row)));
        } else {
          r[i] = _mm512_setzero_si512();
        }
      }
      transpose16x16_epi32(r, r);
      for (size_t c = 0; c < 16; ++c) _mm512_store_si512(kt + (d0 / 2 + c) * kTile + kb * 16, r[c]);
    }
  }
}

// kt32[d, kb*16 + r] = vt[kb*16 + r, d]; keys >= nk are 0.
void build_kt32(const float* vt, size_t key_dim, size_t nk, float* kt32) {
  const size_t n_blocks = (nk + 15) / 16;
  for (size_t kb = 0; kb < n_blocks; ++kb) {
    for (size_t d0 = 0; d0 < key_dim; d0 += 16) {
      __m512i r[16];
      for (size_t i = 0; i < 16; ++i) {
        const size_t j = kb * 16 + i;
        r[i] = j < nk ? _mm512_castps_si512(_mm512_loadu_ps(vt + j * key_dim + d0))
                      : _mm512_setzero_si512();
      }
      transpose16x16_epi32(r, r);
      for (size_t c = 0; c < 16; ++c)
        _mm512_store_ps(kt32 + (d0 + c) * kTile + kb * 16, _mm512_castsi512_ps(r[c]));
    }
  }
}

// ---- QK + online softmax for NH heads starting at h0 ----------------------------------------

// kF32: f32 FMA over single dims (kt32, qf); else VDPBF16PS over dim pairs (kt, qb).
template <size_t NH, size_t NV, bool kF32>
void scores_softmax(const Work& w, size_t h0, size_t key_dim, size_t nk, float scale, float* m,
                    float* l) {
  __m512 acc[NH][NV];
  for (size_t h = 0; h < NH; ++h)
    for (size_t v = 0; v < NV; ++v) acc[h][v] = _mm512_setzero_ps();
  if constexpr (kF32) {
    const float* qrow[NH];
    for (size_t h = 0; h < NH; ++h) qrow[h] = w.qf + (h0 + h) * key_dim;
    for (size_t d = 0; d < key_dim; ++d) {
      __m512 k[NV];
      for (size_t v = 0; v < NV; ++v) k[v] = _mm512_load_ps(w.kt32 + d * kTile + v * 16);
      for (size_t h = 0; h < NH; ++h) {
        const __m512 qv = _mm512_set1_ps(qrow[h][d]);
        for (size_t v = 0; v < NV; ++v) acc[h][v] = _mm512_fmadd_ps(qv, k[v], acc[h][v]);
      }
    }
  } else {
    const size_t pairs = key_dim / 2;
    const uint32_t* qrow[NH];
    for (size_t h = 0; h < NH; ++h) qrow[h] = w.qb + (h0 + h) * pairs;
    for (size_t dp = 0; dp < pairs; ++dp) {
      __m512bh k[NV];
      for (size_t v = 0; v < NV; ++v)
        k[v] = reinterpret_cast<__m512bh>(_mm512_load_si512(w.kt + dp * kTile + v * 16));
      for (size_t h = 0; h < NH; ++h) {
        const __m512bh qv =
            reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(qrow[h][dp])));
        for (size_t v = 0; v < NV; ++v) acc[h][v] = _mm512_dpbf16_ps(acc[h][v], k[v], qv);
      }
    }
  }
  // Raw dot products to p (the rows are rewritten below): indexing acc by the non-unrolled head
  // loop would make gcc keep acc in memory for the whole dot-product loop.
  for (size_t h = 0; h < NH; ++h)
    for (size_t v = 0; v < NV; ++v) _mm512_store_ps(w.p + (h0 + h) * kTile + v * 16, acc[h][v]);
  const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
  const __m512 vscale = _mm512_set1_ps(scale);
  for (size_t h = 0; h < NH; ++h) {
    const size_t hh = h0 + h;
    __m512 s[NV];
    __m512 mx = neg_inf;
    for (size_t v = 0; v < NV; ++v) {
      const size_t valid = nk > v * 16 ? (nk - v * 16 >= 16 ? 16 : nk - v * 16) : 0;
      s[v] = _mm512_mask_mov_ps(neg_inf, tail_mask16(valid),
                                _mm512_mul_ps(_mm512_load_ps(w.p + hh * kTile + v * 16), vscale));
      mx = _mm512_max_ps(mx, s[v]);
    }
    const float m_old = m[hh];
    const float m_tile = _mm512_reduce_max_ps(mx);
    const float m_new = m_tile > m_old ? m_tile : m_old;
    float* p = w.p + hh * kTile;
    if (m_new == -__builtin_inff()) {  // no finite score yet: nothing to add
      w.alpha[hh] = 1.0f;
      for (size_t v = 0; v < kTile / 16; ++v) _mm512_store_ps(p + v * 16, _mm512_setzero_ps());
      continue;
    }
    const __m512 vm = _mm512_set1_ps(m_new);
    __m512 sum = _mm512_setzero_ps();
    for (size_t v = 0; v < NV; ++v) {
      const __m512 e = exp_neg(_mm512_sub_ps(s[v], vm));  // masked lanes: exp(-inf) = 0
      _mm512_store_ps(p + v * 16, e);
      sum = _mm512_add_ps(sum, e);
    }
    for (size_t v = NV; v < kTile / 16; ++v) _mm512_store_ps(p + v * 16, _mm512_setzero_ps());
    const float alpha = m_old == -__builtin_inff() ? 0.0f : exp_neg1(m_old - m_new);
    w.alpha[hh] = alpha;
    m[hh] = m_new;
    l[hh] = l[hh] * alpha + _mm512_reduce_add_ps(sum);
  }
}

// ---- PV: acc[h, c..c+16*NV) = alpha[h]·acc + sum_j p[h,j]·vt[j, c..] for NH heads -----------

template <size_t NH, size_t NV>
void pv_block(const Work& w, size_t h0, size_t c, size_t key_dim, size_t value_dim, size_t nk,
              float* acc) {
  __m512 a[NH][NV];
  for (size_t h = 0; h < NH; ++h) {
    const float al = w.alpha[h0 + h];
    float* row = acc + (h0 + h) * value_dim + c;
    for (size_t v = 0; v < NV; ++v) a[h][v] = _mm512_loadu_ps(row + v * 16);
    if (al != 1.0f)  // once the running max settles, alpha is exactly 1 (exp(0))
      for (size_t v = 0; v < NV; ++v) a[h][v] = _mm512_mul_ps(a[h][v], _mm512_set1_ps(al));
  }
  const float* pp = w.p + h0 * kTile;
  for (size_t j = 0; j < nk; ++j) {
    const float* vrow = w.vt + j * key_dim + c;
    __m512 x[NV];
    for (size_t v = 0; v < NV; ++v) x[v] = _mm512_loadu_ps(vrow + v * 16);
    for (size_t h = 0; h < NH; ++h) {
      const __m512 pj = _mm512_set1_ps(pp[h * kTile + j]);
      for (size_t v = 0; v < NV; ++v) a[h][v] = _mm512_fmadd_ps(pj, x[v], a[h][v]);
    }
  }
  for (size_t h = 0; h < NH; ++h) {
    float* row = acc + (h0 + h) * value_dim + c;
    for (size_t v = 0; v < NV; ++v) _mm512_storeu_ps(row + v * 16, a[h][v]);
  }
}

// Value chunks outermost: a chunk of vt (kTile x 64 dims, 16 KiB) stays in L1 for every head.
template <size_t NV>
void pv_chunk(const Work& w, size_t n_heads, size_t c, size_t key_dim, size_t value_dim, size_t nk,
              float* acc) {
  size_t h = 0;
  for (; h + kHeadGroup <= n_heads; h += kHeadGroup)
    pv_block<kHeadGroup, NV>(w, h, c, key_dim, value_dim, nk, acc);
  for (; h < n_heads; ++h) pv_block<1, NV>(w, h, c, key_dim, value_dim, nk, acc);
}

// QK + softmax for heads [0, n_heads) with NV = ceil(nk/16) score registers per head.
template <size_t NV, bool kF32>
void scores_all(const Work& w, size_t n_heads, size_t key_dim, size_t nk, float scale, float* m,
                float* l) {
  size_t h = 0;
  for (; h + kHeadGroup <= n_heads; h += kHeadGroup)
    scores_softmax<kHeadGroup, NV, kF32>(w, h, key_dim, nk, scale, m, l);
  switch (n_heads - h) {
    case 3:
      return scores_softmax<3, NV, kF32>(w, h, key_dim, nk, scale, m, l);
    case 2:
      return scores_softmax<2, NV, kF32>(w, h, key_dim, nk, scale, m, l);
    case 1:
      return scores_softmax<1, NV, kF32>(w, h, key_dim, nk, scale, m, l);
    default:
      return;
  }
}

template <bool kF32>
void scores_tile(const Work& w, size_t n_heads, size_t key_dim, size_t nk, float scale, float* m,
                 float* l) {
  if constexpr (kF32)
    build_kt32(w.vt, key_dim, nk, w.kt32);
  else
    build_kt(w.vt, key_dim, nk, w.kt);
  switch ((nk + 15) / 16) {
    case 4:
      return scores_all<4, kF32>(w, n_heads, key_dim, nk, scale, m, l);
    case 3:
      return scores_all<3, kF32>(w, n_heads, key_dim, nk, scale, m, l);
    case 2:
      return scores_all<2, kF32>(w, n_heads, key_dim, nk, scale, m, l);
    default:
      return scores_all<1, kF32>(w, n_heads, key_dim, nk, scale, m, l);
  }
}

// One tile whose keys are already in w.vt (nk <= kTile).
void tile(const Work& w, detail::AttnQk qk, size_t n_heads, size_t key_dim, size_t value_dim,
          size_t nk, float scale, float* m, float* l, float* acc) {
  static_assert(kTile == 64 && kHeadGroup == 4);
  if (qk == detail::AttnQk::f32_fma)
    scores_tile<true>(w, n_heads, key_dim, nk, scale, m, l);
  else
    scores_tile<false>(w, n_heads, key_dim, nk, scale, m, l);
  size_t c = 0;
  for (; c + kChunkVecs * 16 <= value_dim; c += kChunkVecs * 16)
    pv_chunk<kChunkVecs>(w, n_heads, c, key_dim, value_dim, nk, acc);
  for (; c < value_dim; c += 16) pv_chunk<1>(w, n_heads, c, key_dim, value_dim, nk, acc);
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
  if (qk == AttnQk::f32_fma)
    prepare_query_f32(q, n_heads * head_dim, w.qf);
  else
    prepare_query(q, n_heads * head_dim, w.qb);
  const size_t nope = head_dim - rope_dim;
  const size_t rec_bytes = nope + 2 * rope_dim + (nope / 64 + 7) / 8 * 8;
  // The first tile's records are prefetched kFirstAhead records ahead of its decode where they
  // are scattered: a call of one tile (a 64-key block of a CSA token, its selected entries)
  // would otherwise wait on memory for every record. Adjacent records (the window, HCA entries)
  // are left to the hardware prefetcher. In-process A/B, alternate reps, cold: CSA decode at
  // 64K -3 to -5 %, its 64-token prefill -3 %; HCA unchanged.
  const size_t first = n_keys < kTile ? n_keys : kTile;
  for (size_t j = 0; j < kFirstAhead && j < first; ++j) x86::prefetch_record(recs[j], rec_bytes);
  for (size_t j0 = 0; j0 < n_keys; j0 += kTile) {
    const size_t nk = n_keys - j0 < kTile ? n_keys - j0 : kTile;
    // Record j of the next tile is prefetched while record j of this one is decoded (pointers may
    // be scattered: CSA selections); all at once, the prefetches stall on miss buffers.
    const size_t next = n_keys - j0 - nk < kTile ? n_keys - j0 - nk : kTile;
    for (size_t j = 0; j < nk; ++j) {
      if (j0 == 0 && j + kFirstAhead < nk && x86::scattered(recs, j + kFirstAhead, rec_bytes))
        x86::prefetch_record(recs[j + kFirstAhead], rec_bytes);
      if (j < next) x86::prefetch_record(recs[j0 + nk + j], rec_bytes);
      decode_v4(recs[j0 + j], head_dim, rope_dim, w.vt + j * head_dim);
    }
    tile(w, qk, n_heads, head_dim, head_dim, nk, scale, m, l, acc);
  }
}

void attend_mla_bf16_raw_avx512(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                                const uint16_t* latents, size_t n_keys, float scale, float* m,
                                float* l, float* acc, uint8_t* work, AttnQk qk) {
  if (n_keys == 0) return;
  const Work w = carve(work, n_heads, key_dim);
  if (qk == AttnQk::f32_fma)
    prepare_query_f32(q, n_heads * key_dim, w.qf);
  else
    prepare_query(q, n_heads * key_dim, w.qb);
  for (size_t j0 = 0; j0 < n_keys; j0 += kTile) {
    const size_t nk = n_keys - j0 < kTile ? n_keys - j0 : kTile;
    for (size_t j = 0; j < nk; ++j)
      decode_bf16_row(latents + (j0 + j) * key_dim, key_dim, w.vt + j * key_dim);
    tile(w, qk, n_heads, key_dim, value_dim, nk, scale, m, l, acc);
  }
}

}  // namespace detail
}  // namespace dsv4::kernels
