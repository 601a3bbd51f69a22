// AVX2 + FMA bodies of kernels/attention.h (the detail::*_raw_avx2 functions).
//
// All in f32 (AVX2 has no bf16 dot product), keys in lanes for QK: per tile of kTile = 16 keys,
// decode once into vt [kTile, key_dim] f32, transpose to kt [key_dim, kTile] (8x8 blocks in
// registers), QK as 4 heads x 2 registers of 8 keys with the broadcast query dim
// (q rounded to bf16 first, so every product is exact in f32 as in _ref), online softmax per
// head, PV as 6 heads x 16 value dims of acc in registers per pass over the tile's keys.
// Only intrinsics and raw pointers here (see kernels/attention.h, "Internal").
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/x86/prefetch.h"
#include "kernels/x86/quant_avx2.h"

namespace dsv4::kernels {
namespace {

using x86_avx2::f8x16_to_f32_scaled;
using x86_avx2::transpose8x8_epi32;

constexpr size_t kTile = 16;       // keys per tile: two 8-lane score registers per head
constexpr size_t kFirstAhead = 8;  // first-tile record prefetch distance, records
// Heads per register block: QK 4 x 2 accumulators (with 6, gcc 12 spills them), PV 6 x 2 (+ 2
// value registers + 1 broadcast = 15 of 16 ymm).
constexpr size_t kQkHeads = 4;
constexpr size_t kPvHeads = 6;

inline size_t round64(size_t n) {
  return (n + 63) / 64 * 64;
}

struct Work {
  float* qf;     // [n_heads, key_dim] the query rounded to bf16 (RNE), as f32
  float* kt;     // [key_dim, kTile] the tile's keys, transposed
  float* vt;     // [kTile, key_dim] decoded keys (= values)
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
    return reinterpret_cast<float*>(p);
  };
  w.qf = take(n_heads * key_dim * 4);
  w.kt = take(key_dim * kTile * 4);
  w.vt = take(kTile * key_dim * 4);
  w.p = take(n_heads * kTile * 4);
  w.alpha = take(n_heads * 4);
  w.bytes = off;
  return w;
}

// exp(x) for x <= 0: x = n·ln2 + r, |r| <= ln2/2, degree-7 Taylor, 2^n through the exponent
// field; below ln(FLT_MIN) the result is 0 (-inf -> 0; NaN propagates). About 1 ulp.
inline __m256 exp_neg(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3365447504f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(lo, x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // n >= -126 here (x >= -87.34): 2^n is a normal f32.
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

inline float exp_neg1(float x) {
  return _mm256_cvtss_f32(exp_neg(_mm256_set1_ps(x)));
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// f32 -> bf16 (RNE) -> f32, 8 lanes (NaN is not special-cased: queries are finite).
inline __m256 round_bf16(__m256 x) {
  const __m256i b = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)), lsb);
  return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

inline __m256 bf16x8(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

// 2^(e - 127 + 8) (the f16 trick's 2^-8 folded in) for ue8m0 codes 0..246; larger codes need two
// steps (see decode_v4).
inline float scale_with_rebias(int e) {
  const uint32_t bits = static_cast<uint32_t>(e + 8) << 23;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

void decode_v4(const uint8_t* rec, size_t head_dim, size_t rope_dim, float* out) {
  const size_t nope = head_dim - rope_dim;
  const uint8_t* scales = rec + nope + 2 * rope_dim;
  for (size_t b = 0; b * 64 < nope; ++b) {
    const int e = scales[b];
    // Codes <= 246: one exact multiply. Above: 256 first, then 2^(e-127) (also exact); 0xFF
    // (NaN) gives inf·x, unspecified per the header.
    const __m256 s1 = _mm256_set1_ps(e <= 246 ? scale_with_rebias(e) : 256.0f);
    const __m256 s2 = _mm256_set1_ps(e <= 246 ? 1.0f : scale_with_rebias(e - 8));
    for (size_t i = 0; i < 64; i += 16) {
      __m256 lo, hi;
      f8x16_to_f32_scaled(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec + b * 64 + i)), &lo,
                          &hi);
      _mm256_storeu_ps(out + b * 64 + i, _mm256_mul_ps(_mm256_mul_ps(lo, s1), s2));
      _mm256_storeu_ps(out + b * 64 + i + 8, _mm256_mul_ps(_mm256_mul_ps(hi, s1), s2));
    }
  }
  const uint16_t* rope = reinterpret_cast<const uint16_t*>(rec + nope);
  for (size_t i = 0; i < rope_dim; i += 8) _mm256_storeu_ps(out + nope + i, bf16x8(rope + i));
}

void decode_bf16_row(const uint16_t* row, size_t key_dim, float* out) {
  for (size_t i = 0; i < key_dim; i += 8) _mm256_storeu_ps(out + i, bf16x8(row + i));
}

// kt[d, kb*8 + i] = vt[kb*8 + i, d]; keys >= nk are 0.
void build_kt(const float* vt, size_t key_dim, size_t nk, float* kt) {
  for (size_t kb = 0; kb * 8 < nk; ++kb) {
    for (size_t d0 = 0; d0 < key_dim; d0 += 8) {
      __m256i r[8];
      for (size_t i = 0; i < 8; ++i) {
        const size_t j = kb * 8 + i;
        r[i] = j < nk ? _mm256_castps_si256(_mm256_loadu_ps(vt + j * key_dim + d0))
                      : _mm256_setzero_si256();
      }
      transpose8x8_epi32(r, r);
      for (size_t c = 0; c < 8; ++c)
        _mm256_store_ps(kt + (d0 + c) * kTile + kb * 8, _mm256_castsi256_ps(r[c]));
    }
  }
}

template <size_t NH, size_t NV>
void scores_softmax(const Work& w, size_t h0, size_t key_dim, size_t nk, float scale, float* m,
                    float* l) {
  __m256 acc[NH][NV];
  for (size_t h = 0; h < NH; ++h)
    for (size_t v = 0; v < NV; ++v) acc[h][v] = _mm256_setzero_ps();
  const float* qrow[NH];
  for (size_t h = 0; h < NH; ++h) qrow[h] = w.qf + (h0 + h) * key_dim;
  for (size_t d = 0; d < key_dim; ++d) {
    __m256 k[NV];
    for (size_t v = 0; v < NV; ++v) k[v] = _mm256_load_ps(w.kt + d * kTile + v * 8);
    for (size_t h = 0; h < NH; ++h) {
      const __m256 qv = _mm256_broadcast_ss(qrow[h] + d);
      for (size_t v = 0; v < NV; ++v) acc[h][v] = _mm256_fmadd_ps(qv, k[v], acc[h][v]);
    }
  }
  // Raw dot products to p (the rows are rewritten below): indexing acc by the non-unrolled head
  // loop would make gcc keep acc in memory for the whole dot-product loop.
  for (size_t h = 0; h < NH; ++h)
    for (size_t v = 0; v < NV; ++v) _mm256_store_ps(w.p + (h0 + h) * kTile + v * 8, acc[h][v]);
  const __m256 neg_inf = _mm256_set1_ps(-__builtin_inff());
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (size_t h = 0; h < NH; ++h) {
    const size_t hh = h0 + h;
    __m256 s[NV];
    __m256 mx = neg_inf;
    for (size_t v = 0; v < NV; ++v) {
      const int valid = static_cast<int>(nk > v * 8 ? (nk - v * 8 >= 8 ? 8 : nk - v * 8) : 0);
      const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(valid), iota));
      s[v] = _mm256_blendv_ps(
          neg_inf, _mm256_mul_ps(_mm256_load_ps(w.p + hh * kTile + v * 8), vscale), keep);
      mx = _mm256_max_ps(mx, s[v]);
    }
    const float m_old = m[hh];
    const float m_tile = hmax(mx);
    const float m_new = m_tile > m_old ? m_tile : m_old;
    float* p = w.p + hh * kTile;
    if (m_new == -__builtin_inff()) {
      w.alpha[hh] = 1.0f;
      for (size_t v = 0; v < kTile / 8; ++v) _mm256_store_ps(p + v * 8, _mm256_setzero_ps());
      continue;
    }
    const __m256 vm = _mm256_set1_ps(m_new);
    __m256 sum = _mm256_setzero_ps();
    for (size_t v = 0; v < NV; ++v) {
      const __m256 e = exp_neg(_mm256_sub_ps(s[v], vm));
      _mm256_store_ps(p + v * 8, e);
      sum = _mm256_add_ps(sum, e);
    }
    for (size_t v = NV; v < kTile / 8; ++v) _mm256_store_ps(p + v * 8, _mm256_setzero_ps());
    const float alpha = m_old == -__builtin_inff() ? 0.0f : exp_neg1(m_old - m_new);
    w.alpha[hh] = alpha;
    m[hh] = m_new;
    l[hh] = l[hh] * alpha + hsum(sum);
  }
}

template <size_t NH, size_t NV>
void pv_block(const Work& w, size_t h0, size_t c, size_t key_dim, size_t value_dim, size_t nk,
              float* acc) {
  __m256 a[NH][NV];
  for (size_t h = 0; h < NH; ++h) {
    const float al = w.alpha[h0 + h];
    const float* row = acc + (h0 + h) * value_dim + c;
    for (size_t v = 0; v < NV; ++v) a[h][v] = _mm256_loadu_ps(row + v * 8);
    if (al != 1.0f)  // once the running max settles, alpha is exactly 1 (exp(0))
      for (size_t v = 0; v < NV; ++v) a[h][v] = _mm256_mul_ps(a[h][v], _mm256_set1_ps(al));
  }
  const float* pp = w.p + h0 * kTile;
  for (size_t j = 0; j < nk; ++j) {
    const float* vrow = w.vt + j * key_dim + c;
    __m256 x[NV];
    for (size_t v = 0; v < NV; ++v) x[v] = _mm256_loadu_ps(vrow + v * 8);
    for (size_t h = 0; h < NH; ++h) {
      const __m256 pj = _mm256_broadcast_ss(pp + h * kTile + j);
      for (size_t v = 0; v < NV; ++v) a[h][v] = _mm256_fmadd_ps(pj, x[v], a[h][v]);
    }
  }
  for (size_t h = 0; h < NH; ++h) {
    float* row = acc + (h0 + h) * value_dim + c;
    for (size_t v = 0; v < NV; ++v) _mm256_storeu_ps(row + v * 8, a[h][v]);
  }
}

// Calls fn.run<G>(h0) over [0, n_heads) in groups of G heads; the remainder as one smaller group.
template <size_t NH, typename Fn>
void head_group(size_t h0, size_t nh, Fn& fn) {
  if constexpr (NH > 1) {
    if (nh < NH) return head_group<NH - 1>(h0, nh, fn);
  }
  fn.template run<NH>(h0);
}
template <size_t G, typename Fn>
void for_head_groups(size_t n_heads, Fn& fn) {
  for (size_t h = 0; h < n_heads; h += G) head_group<G>(h, n_heads - h < G ? n_heads - h : G, fn);
}

struct ScoresPass {
  const Work& w;
  size_t key_dim, nk;
  float scale;
  float *m, *l;
  template <size_t NH>
  void run(size_t h0) {
    if (nk > 8)
      scores_softmax<NH, 2>(w, h0, key_dim, nk, scale, m, l);
    else
      scores_softmax<NH, 1>(w, h0, key_dim, nk, scale, m, l);
  }
};

// Value dims in chunks of 16 outermost: a chunk of vt (kTile x 16 dims, 1 KiB) stays in L1 for
// every head.
struct PvPass {
  const Work& w;
  size_t c, key_dim, value_dim, nk;
  float* acc;
  template <size_t NH>
  void run(size_t h0) {
    if (value_dim - c >= 16)
      pv_block<NH, 2>(w, h0, c, key_dim, value_dim, nk, acc);
    else
      pv_block<NH, 1>(w, h0, c, key_dim, value_dim, nk, acc);
  }
};

void tile(const Work& w, size_t n_heads, size_t key_dim, size_t value_dim, size_t nk, float scale,
          float* m, float* l, float* acc) {
  build_kt(w.vt, key_dim, nk, w.kt);
  ScoresPass sp{w, key_dim, nk, scale, m, l};
  for_head_groups<kQkHeads>(n_heads, sp);
  for (size_t c = 0; c < value_dim; c += 16) {
    PvPass pv{w, c, key_dim, value_dim, nk, acc};
    for_head_groups<kPvHeads>(n_heads, pv);
  }
}

void prepare_query(const float* q, size_t n, float* qf) {
  for (size_t i = 0; i < n; i += 8) _mm256_store_ps(qf + i, round_bf16(_mm256_loadu_ps(q + i)));
}

}  // namespace

namespace detail {

size_t attn_work_bytes_avx2(size_t n_heads, size_t key_dim, size_t /*value_dim*/) {
  return carve(nullptr, n_heads, key_dim).bytes;
}

void attend_v4_fp8_raw_avx2(const float* q, size_t n_heads, size_t head_dim, size_t rope_dim,
                            const uint8_t* const* recs, size_t n_keys, float scale, float* m,
                            float* l, float* acc, uint8_t* work) {
  if (n_keys == 0) return;
  const Work w = carve(work, n_heads, head_dim);
  prepare_query(q, n_heads * head_dim, w.qf);
  x86::walk_record_tiles<kTile, kFirstAhead>(
      recs, n_keys, x86::v4_record_bytes(head_dim, rope_dim),
      [&](const uint8_t* rec, size_t j) {
        decode_v4(rec, head_dim, rope_dim, w.vt + j * head_dim);
      },
      [&](size_t nk) { tile(w, n_heads, head_dim, head_dim, nk, scale, m, l, acc); });
}

void attend_mla_bf16_raw_avx2(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                              const uint16_t* latents, size_t n_keys, float scale, float* m,
                              float* l, float* acc, uint8_t* work) {
  if (n_keys == 0) return;
  const Work w = carve(work, n_heads, key_dim);
  prepare_query(q, n_heads * key_dim, w.qf);
  for (size_t j0 = 0; j0 < n_keys; j0 += kTile) {
    const size_t nk = n_keys - j0 < kTile ? n_keys - j0 : kTile;
    for (size_t j = 0; j < nk; ++j)
      decode_bf16_row(latents + (j0 + j) * key_dim, key_dim, w.vt + j * key_dim);
    tile(w, n_heads, key_dim, value_dim, nk, scale, m, l, acc);
  }
}

}  // namespace detail
}  // namespace dsv4::kernels
