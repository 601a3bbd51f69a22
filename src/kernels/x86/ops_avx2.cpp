// kernels/x86/ops_avx2.cpp — AVX2 + FMA variants of kernels/ops.h.
// 8 f32 lanes; remainders use vmaskmov loads/stores from a sliding mask table so every length
// takes the same code path. Only intrinsics and raw pointers here: no std:: templates (see the
// note in ops.h, "Internal"); helpers have internal linkage.
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "base/check.h"
#include "kernels/ops.h"

namespace dsv4::kernels {
namespace {

constexpr size_t kW = 8;

alignas(64) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
// Lanes [0, r) on, r in [0, 8].
inline __m256i tail_mask(size_t r) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - r));
}
inline __m256 load_tail(const float* p, size_t r) {
  return _mm256_maskload_ps(p, tail_mask(r));
}
inline void store_tail(float* p, size_t r, __m256 v) {
  _mm256_maskstore_ps(p, tail_mask(r), v);
}
// Masked-off lanes read as `fill`.
inline __m256 load_tail_fill(const float* p, size_t r, __m256 fill) {
  return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, tail_mask(r)),
                          _mm256_castsi256_ps(tail_mask(r)));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x): Cephes-style range reduction, degree-6 polynomial, 2^n built in the exponent field.
// x is clamped to [ln(FLT_MIN), 88.376] so n in [-126, 127]; below -> exactly 0 (so -inf -> 0),
// above 88.376 -> +inf. Max error ~2 ulp on the normal range.
inline __m256 exp_ps(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3365447504f), hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  const __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  y = _mm256_andnot_ps(under, y);
  return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
}

inline __m256 silu_ps(__m256 x) {
  const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

inline float row_max(const float* x, size_t n, float init) {
  const __m256 vinit = _mm256_set1_ps(init);
  __m256 m = vinit;
  size_t i = 0;
  for (; i + kW <= n; i += kW) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  if (i < n) m = _mm256_max_ps(m, load_tail_fill(x + i, n - i, vinit));
  return hmax(m);
}

void softmax_body(const float* x, float* y, size_t n, float m, double extra) {
  if (m == -INFINITY) {
    for (size_t i = 0; i < n; ++i) y[i] = 0.0f;
    return;
  }
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + kW <= n; i += kW) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    _mm256_storeu_ps(y + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (i < n) {
    const __m256 e =
        exp_ps(_mm256_sub_ps(load_tail_fill(x + i, n - i, _mm256_set1_ps(-INFINITY)), vm));
    store_tail(y + i, n - i, e);
    acc = _mm256_add_ps(acc, e);
  }
  const float inv = 1.0f / static_cast<float>(static_cast<double>(hsum(acc)) + extra);
  const __m256 vinv = _mm256_set1_ps(inv);
  for (i = 0; i + kW <= n; i += kW)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), vinv));
  if (i < n) store_tail(y + i, n - i, _mm256_mul_ps(load_tail(y + i, n - i), vinv));
}

// Order-preserving int key of f32 lanes (see topk_key).
inline __m256i key_ps(__m256 v) {
  __m256i b = _mm256_castps_si256(v);
  b = _mm256_blendv_epi8(b, _mm256_set1_epi32(0x7fc00000),
                         _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  b = _mm256_andnot_si256(_mm256_cmpeq_epi32(b, _mm256_set1_epi32(INT32_MIN)), b);
  const __m256i flip = _mm256_and_si256(_mm256_srai_epi32(b, 31), _mm256_set1_epi32(0x7fffffff));
  return _mm256_xor_si256(b, flip);
}
// Bit i set when key lane i >= t.
inline unsigned ge_mask(__m256i key, __m256i t) {
  const __m256i lt = _mm256_cmpgt_epi32(t, key);
  return ~static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(lt))) & 0xffu;
}

inline uint64_t composite(int32_t key, uint32_t index) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(key) ^ 0x80000000u) << 32) |
         static_cast<uint32_t>(~index);
}

// Indexer inner loop: NB blocks of 8 heads, one key per iteration (NB independent FMA chains).
template <int NB>
void indexer_block(const float* qt, const float* wc, size_t dim, const float* k, size_t n_keys,
                   float* out) {
  constexpr size_t kHp = NB * kW;
  for (size_t t = 0; t < n_keys; ++t) {
    const float* kt = k + t * dim;
    __m256 a[NB];
    for (int b = 0; b < NB; ++b) a[b] = _mm256_setzero_ps();
    for (size_t d = 0; d < dim; ++d) {
      const __m256 kb = _mm256_broadcast_ss(kt + d);
      for (int b = 0; b < NB; ++b)
        a[b] = _mm256_fmadd_ps(_mm256_load_ps(qt + d * kHp + b * kW), kb, a[b]);
    }
    __m256 s = _mm256_setzero_ps();
    for (int b = 0; b < NB; ++b)
      s = _mm256_fmadd_ps(_mm256_max_ps(a[b], _mm256_setzero_ps()), _mm256_load_ps(wc + b * kW), s);
    out[t] += hsum(s);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------------
float rms_inv_f32_avx2(const float* x, size_t n, float eps) {
  DSV4_CHECK(n > 0);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
         a3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 4 * kW <= n; i += 4 * kW) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + kW),
                 v2 = _mm256_loadu_ps(x + i + 2 * kW), v3 = _mm256_loadu_ps(x + i + 3 * kW);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
    a2 = _mm256_fmadd_ps(v2, v2, a2);
    a3 = _mm256_fmadd_ps(v3, v3, a3);
  }
  for (; i + kW <= n; i += kW) {
    const __m256 v = _mm256_loadu_ps(x + i);
    a0 = _mm256_fmadd_ps(v, v, a0);
  }
  if (i < n) {
    const __m256 v = load_tail(x + i, n - i);
    a1 = _mm256_fmadd_ps(v, v, a1);
  }
  const float ss = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return static_cast<float>(1.0 /
                            std::sqrt(static_cast<double>(ss) / static_cast<double>(n) + eps));
}

void rmsnorm_f32_avx2(const float* x, const float* w, float* y, size_t n, float eps) {
  const __m256 r = _mm256_set1_ps(rms_inv_f32_avx2(x, n, eps));
  size_t i = 0;
  for (; i + kW <= n; i += kW) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), r);
    if (w) v = _mm256_mul_ps(_mm256_loadu_ps(w + i), v);
    _mm256_storeu_ps(y + i, v);
  }
  if (i < n) {
    __m256 v = _mm256_mul_ps(load_tail(x + i, n - i), r);
    if (w) v = _mm256_mul_ps(load_tail(w + i, n - i), v);
    store_tail(y + i, n - i, v);
  }
}

// ---------------------------------------------------------------------------------------------
// RoPE (interleaved): y = x * [c0 c0 c1 c1 ..] + swap_pairs(x) * [-s0 +s0 -s1 +s1 ..]
// ---------------------------------------------------------------------------------------------
void rope_interleaved_f32_avx2(float* x, size_t n_heads, size_t head_stride, const float* cos,
                               const float* sin, size_t rope_dim, RopeDir dir) {
  DSV4_CHECK(rope_dim % 2 == 0);
  const __m256 sign = dir == RopeDir::forward
                          ? _mm256_castsi256_ps(_mm256_set_epi32(0, INT32_MIN, 0, INT32_MIN, 0,
                                                                 INT32_MIN, 0, INT32_MIN))
                          : _mm256_castsi256_ps(_mm256_set_epi32(INT32_MIN, 0, INT32_MIN, 0,
                                                                 INT32_MIN, 0, INT32_MIN, 0));
  // Heads outer, channels inner (see the AVX-512 variant: 4 KiB aliasing otherwise).
  const size_t full = rope_dim / kW * kW;
  for (size_t h = 0; h < n_heads; ++h) {
    float* p = x + h * head_stride;
    for (size_t c = 0; c < full; c += kW) {
      const __m128 c4 = _mm_loadu_ps(cos + c / 2), s4 = _mm_loadu_ps(sin + c / 2);
      const __m256 cos2 = _mm256_set_m128(_mm_unpackhi_ps(c4, c4), _mm_unpacklo_ps(c4, c4));
      const __m256 sin2 =
          _mm256_xor_ps(_mm256_set_m128(_mm_unpackhi_ps(s4, s4), _mm_unpacklo_ps(s4, s4)), sign);
      const __m256 v = _mm256_loadu_ps(p + c);
      const __m256 sw = _mm256_permute_ps(v, 0xB1);
      _mm256_storeu_ps(p + c, _mm256_fmadd_ps(v, cos2, _mm256_mul_ps(sw, sin2)));
    }
  }
  const size_t c = full;
  if (c < rope_dim) {
    const float sgn = dir == RopeDir::inverse ? -1.0f : 1.0f;
    for (size_t h = 0; h < n_heads; ++h) {
      float* p = x + h * head_stride;
      for (size_t i = c / 2; i < rope_dim / 2; ++i) {
        const float cc = cos[i], s = sgn * sin[i];
        const float a = p[2 * i], b = p[2 * i + 1];
        p[2 * i] = a * cc - b * s;
        p[2 * i + 1] = b * cc + a * s;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax
// ---------------------------------------------------------------------------------------------
void softmax_f32_avx2(const float* x, float* y, size_t n) {
  DSV4_CHECK(n > 0);
  softmax_body(x, y, n, row_max(x, n, -INFINITY), 0.0);
}

void softmax_sink_f32_avx2(const float* x, float* y, size_t n, float sink) {
  const float m = row_max(x, n, sink);
  softmax_body(x, y, n, m, m == -INFINITY ? 0.0 : std::exp(sink - m));
}

// ---------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------
void silu_f32_avx2(const float* x, float* y, size_t n) {
  size_t i = 0;
  for (; i + kW <= n; i += kW) _mm256_storeu_ps(y + i, silu_ps(_mm256_loadu_ps(x + i)));
  if (i < n) store_tail(y + i, n - i, silu_ps(load_tail(x + i, n - i)));
}

void swiglu_f32_avx2(const float* gate, const float* up, float* out, size_t n, float limit,
                     float scale) {
  const bool clamp = limit > 0;
  const __m256 hi = _mm256_set1_ps(limit), lo = _mm256_set1_ps(-limit), vs = _mm256_set1_ps(scale);
  auto one = [&](__m256 g, __m256 u) {
    if (clamp) {
      g = _mm256_min_ps(g, hi);
      u = _mm256_min_ps(_mm256_max_ps(u, lo), hi);
    }
    return _mm256_mul_ps(_mm256_mul_ps(silu_ps(g), u), vs);
  };
  size_t i = 0;
  for (; i + kW <= n; i += kW)
    _mm256_storeu_ps(out + i, one(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  if (i < n) store_tail(out + i, n - i, one(load_tail(gate + i, n - i), load_tail(up + i, n - i)));
}

// ---------------------------------------------------------------------------------------------
// Top-k pieces (driver in ops.cpp)
// ---------------------------------------------------------------------------------------------
namespace detail {

void topk_block_max_avx2(const float* x, size_t n_blocks, size_t block, int32_t* out) {
  DSV4_CHECK(block % 16 == 0);
  alignas(32) int32_t lanes[kW];
  for (size_t b = 0; b < n_blocks; ++b) {
    const float* p = x + b * block;
    __m256i m0 = _mm256_set1_epi32(INT32_MIN), m1 = m0;
    for (size_t j = 0; j < block; j += 2 * kW) {
      m0 = _mm256_max_epi32(m0, key_ps(_mm256_loadu_ps(p + j)));
      m1 = _mm256_max_epi32(m1, key_ps(_mm256_loadu_ps(p + j + kW)));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_max_epi32(m0, m1));
    int32_t m = lanes[0];
    for (size_t j = 1; j < kW; ++j) m = lanes[j] > m ? lanes[j] : m;
    out[b] = m;
  }
}

size_t topk_gather_ge_avx2(const float* x, size_t n, int32_t t, uint64_t* out, size_t cap) {
  const __m256i vt = _mm256_set1_epi32(t);
  alignas(32) int32_t keys[kW];
  size_t count = 0, i = 0;
  for (; i + kW <= n; i += kW) {
    const __m256i key = key_ps(_mm256_loadu_ps(x + i));
    unsigned m = ge_mask(key, vt);
    if (!m) continue;
    _mm256_store_si256(reinterpret_cast<__m256i*>(keys), key);
    while (m) {
      const unsigned j = static_cast<unsigned>(__builtin_ctz(m));
      if (count < cap) out[count] = composite(keys[j], static_cast<uint32_t>(i + j));
      ++count;
      m &= m - 1;
    }
  }
  for (; i < n; ++i) {
    const int32_t key = topk_key(x[i]);
    if (key < t) continue;
    if (count < cap) out[count] = composite(key, static_cast<uint32_t>(i));
    ++count;
  }
  return count;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Walsh–Hadamard: strides 1, 2, 4 inside an 8-lane register, then whole-register butterflies.
// Same single add/sub per output as the reference: bit-identical results.
// ---------------------------------------------------------------------------------------------
void hadamard_f32_avx2(float* x, size_t n, float scale) {
  DSV4_CHECK(n > 0 && (n & (n - 1)) == 0);
  if (n < kW) return hadamard_f32_ref(x, n, scale);
  for (size_t i = 0; i < n; i += kW) {
    __m256 v = _mm256_loadu_ps(x + i);
    __m256 s = _mm256_permute_ps(v, 0xB1);  // h = 1
    v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xAA);
    s = _mm256_permute_ps(v, 0x4E);  // h = 2
    v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xCC);
    s = _mm256_permute2f128_ps(v, v, 0x01);  // h = 4
    v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xF0);
    _mm256_storeu_ps(x + i, v);
  }
  for (size_t h = kW; h < n; h *= 2) {
    for (size_t i = 0; i < n; i += 2 * h) {
      for (size_t j = i; j < i + h; j += kW) {
        const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
        _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(x + j + h, _mm256_sub_ps(a, b));
      }
    }
  }
  const __m256 vs = _mm256_set1_ps(scale);
  for (size_t i = 0; i < n; i += kW)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
}

// ---------------------------------------------------------------------------------------------
// mHC collapse / expand
// ---------------------------------------------------------------------------------------------
void hc_collapse_f32_avx2(const float* x, const float* pre, size_t hc, size_t dim, float* y) {
  DSV4_CHECK(hc > 0);
  size_t d = 0;
  for (; d + kW <= dim; d += kW) {
    __m256 acc = _mm256_mul_ps(_mm256_set1_ps(pre[0]), _mm256_loadu_ps(x + d));
    for (size_t j = 1; j < hc; ++j)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(pre[j]), _mm256_loadu_ps(x + j * dim + d), acc);
    _mm256_storeu_ps(y + d, acc);
  }
  if (d < dim) {
    const size_t r = dim - d;
    __m256 acc = _mm256_mul_ps(_mm256_set1_ps(pre[0]), load_tail(x + d, r));
    for (size_t j = 1; j < hc; ++j)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(pre[j]), load_tail(x + j * dim + d, r), acc);
    store_tail(y + d, r, acc);
  }
}

void hc_expand_f32_avx2(const float* block_out, const float* residual, const float* post,
                        const float* comb, size_t hc, size_t dim, float* y) {
  for (size_t k = 0; k < hc; ++k) {
    const __m256 pk = _mm256_set1_ps(post[k]);
    size_t d = 0;
    for (; d + kW <= dim; d += kW) {
      __m256 acc = _mm256_mul_ps(pk, _mm256_loadu_ps(block_out + d));
      for (size_t j = 0; j < hc; ++j)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(comb[j * hc + k]),
                              _mm256_loadu_ps(residual + j * dim + d), acc);
      _mm256_storeu_ps(y + k * dim + d, acc);
    }
    if (d < dim) {
      const size_t r = dim - d;
      __m256 acc = _mm256_mul_ps(pk, load_tail(block_out + d, r));
      for (size_t j = 0; j < hc; ++j)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(comb[j * hc + k]),
                              load_tail(residual + j * dim + d, r), acc);
      store_tail(y + k * dim + d, r, acc);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Compressor pooling
// ---------------------------------------------------------------------------------------------
void compress_pool_f32_avx2(const float* const* kv_rows, const float* const* score_rows,
                            size_t n_slots, size_t dim, float* out) {
  DSV4_CHECK(n_slots > 0);
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  for (size_t d = 0; d < dim; d += kW) {
    const size_t r = dim - d < kW ? dim - d : kW;
    __m256 m = neg_inf;
    for (size_t s = 0; s < n_slots; ++s)
      m = _mm256_max_ps(m, load_tail_fill(score_rows[s] + d, r, neg_inf));
    const __m256 dead = _mm256_cmp_ps(m, neg_inf, _CMP_EQ_OQ);
    m = _mm256_andnot_ps(dead, m);  // all -inf channel: m = 0, every weight 0
    __m256 sum = _mm256_setzero_ps(), acc = _mm256_setzero_ps();
    for (size_t s = 0; s < n_slots; ++s) {
      const __m256 e = exp_ps(_mm256_sub_ps(load_tail_fill(score_rows[s] + d, r, neg_inf), m));
      sum = _mm256_add_ps(sum, e);
      acc = _mm256_fmadd_ps(e, load_tail(kv_rows[s] + d, r), acc);
    }
    // Dead lanes: 0 / 0 replaced by 0 (andnot clears NaN bits too).
    store_tail(out + d, r, _mm256_andnot_ps(dead, _mm256_div_ps(acc, sum)));
  }
}

// ---------------------------------------------------------------------------------------------
// Indexer score: queries transposed to [dim, heads]; heads in chunks of <= 64 (8 registers).
// ---------------------------------------------------------------------------------------------
void indexer_scores_f32_avx2(const float* q, const float* w, size_t n_heads, size_t dim,
                             const float* k, size_t n_keys, float* out) {
  constexpr size_t kQtFloats = 8192;  // 32 KiB of transposed queries on the stack
  if (dim == 0 || dim > kQtFloats / kW)
    return indexer_scores_f32_ref(q, w, n_heads, dim, k, n_keys, out);
  size_t chunk = (kQtFloats / dim) / kW * kW;
  if (chunk > 8 * kW) chunk = 8 * kW;
  alignas(64) float qt[kQtFloats];
  alignas(64) float wc[8 * kW];
  for (size_t t = 0; t < n_keys; ++t) out[t] = 0.0f;
  for (size_t h0 = 0; h0 < n_heads; h0 += chunk) {
    const size_t hn = n_heads - h0 < chunk ? n_heads - h0 : chunk;
    const size_t nb = (hn + kW - 1) / kW, hp = nb * kW;
    for (size_t d = 0; d < dim; ++d)
      for (size_t j = 0; j < hp; ++j) qt[d * hp + j] = j < hn ? q[(h0 + j) * dim + d] : 0.0f;
    for (size_t j = 0; j < hp; ++j) wc[j] = j < hn ? w[h0 + j] : 0.0f;
    switch (nb) {
      case 1:
        indexer_block<1>(qt, wc, dim, k, n_keys, out);
        break;
      case 2:
        indexer_block<2>(qt, wc, dim, k, n_keys, out);
        break;
      case 3:
        indexer_block<3>(qt, wc, dim, k, n_keys, out);
        break;
      case 4:
        indexer_block<4>(qt, wc, dim, k, n_keys, out);
        break;
      case 5:
        indexer_block<5>(qt, wc, dim, k, n_keys, out);
        break;
      case 6:
        indexer_block<6>(qt, wc, dim, k, n_keys, out);
        break;
      case 7:
        indexer_block<7>(qt, wc, dim, k, n_keys, out);
        break;
      default:
        indexer_block<8>(qt, wc, dim, k, n_keys, out);
        break;
    }
  }
}

}  // namespace dsv4::kernels
