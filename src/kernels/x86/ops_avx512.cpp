// kernels/x86/ops_avx512.cpp — AVX-512 (F/BW/VL/DQ) variants of kernels/ops.h.
// 16 f32 lanes; remainders use masked loads/stores so every length takes the same code path.
// Only intrinsics and raw pointers here: no std:: templates (see the note in ops.h, "Internal").
// Helpers have internal linkage (anonymous namespace) so nothing compiled with these flags can
// be picked by the linker for a caller on a CPU without AVX-512.

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

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "base/check.h"
#include "kernels/ops.h"

namespace dsv4::kernels {
namespace {

constexpr size_t kW = 16;

inline __mmask16 tail_mask(size_t r) {
  return static_cast<__mmask16>((1u << r) - 1u);
}

// exp(x) for f32 lanes: Cephes-style range reduction x = n ln2 + r, |r| <= ln2/2, degree-6
// polynomial, then scalef by 2^n (which also produces +inf on overflow). Max error ~2 ulp on
// the normal range. Inputs below ln(FLT_MIN) (-87.34) return exactly 0, so -inf -> 0.
inline __m512 exp_ps(__m512 x) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3365447504f), _CMP_LT_OQ);
  x = _mm512_min_ps(x, _mm512_set1_ps(89.0f));
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3365447504f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), _mm512_scalef_ps(p, n));
}

inline __m512 silu_ps(__m512 x) {
  const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

inline float row_max(const float* x, size_t n, float init) {
  __m512 m = _mm512_set1_ps(init);
  size_t i = 0;
  for (; i + kW <= n; i += kW) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n)
    m = _mm512_mask_max_ps(m, tail_mask(n - i), m, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
  return _mm512_reduce_max_ps(m);
}

// y = exp(x - m) / (sum exp(x - m) + extra); m == -inf means nothing survives.
void softmax_body(const float* x, float* y, size_t n, float m, double extra) {
  if (m == -INFINITY) {
    for (size_t i = 0; i < n; ++i) y[i] = 0.0f;
    return;
  }
  const __m512 vm = _mm512_set1_ps(m);
  __m512 acc = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + kW <= n; i += kW) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
    _mm512_storeu_ps(y + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, x + i);
    const __m512 e = exp_ps(_mm512_sub_ps(v, vm));
    _mm512_mask_storeu_ps(y + i, k, e);
    acc = _mm512_add_ps(acc, e);
  }
  const float inv =
      1.0f / static_cast<float>(static_cast<double>(_mm512_reduce_add_ps(acc)) + extra);
  const __m512 vinv = _mm512_set1_ps(inv);
  for (i = 0; i + kW <= n; i += kW)
    _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(y + i), vinv));
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, y + i), vinv));
  }
}

// Order-preserving int key of f32 lanes (see topk_key): NaN -> 0x7fc00000, -0 -> +0, then
// negative values get their magnitude bits flipped.
inline __m512i key_ps(__m512 v) {
  __m512i b = _mm512_castps_si512(v);
  b = _mm512_mask_mov_epi32(b, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                            _mm512_set1_epi32(0x7fc00000));
  b = _mm512_mask_mov_epi32(b, _mm512_cmpeq_epi32_mask(b, _mm512_set1_epi32(INT32_MIN)),
                            _mm512_setzero_si512());
  const __m512i flip = _mm512_and_si512(_mm512_srai_epi32(b, 31), _mm512_set1_epi32(0x7fffffff));
  return _mm512_xor_si512(b, flip);
}

inline uint64_t composite(int32_t key, uint32_t index) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(key) ^ 0x80000000u) << 32) |
         static_cast<uint32_t>(~index);
}

// Indexer inner loop for NB blocks of 16 heads and NK keys per iteration (NB*NK independent
// FMA chains; each query load feeds NK FMAs). qt: [dim, NB*16] transposed queries, wc: [NB*16]
// weights (0 on padding heads). Adds into out[t].
template <int NB, int NK>
size_t indexer_keys(const float* qt, const float* wc, size_t dim, const float* k, size_t t,
                    size_t n_keys, float* out) {
  constexpr size_t kHp = NB * kW;
  for (; t + NK <= n_keys; t += NK) {
    const float* kt = k + t * dim;
    __m512 a[NK][NB];
    for (int j = 0; j < NK; ++j)
      for (int b = 0; b < NB; ++b) a[j][b] = _mm512_setzero_ps();
    for (size_t d = 0; d < dim; ++d) {
      __m512 kb[NK];
      for (int j = 0; j < NK; ++j) kb[j] = _mm512_set1_ps(kt[j * dim + d]);
      for (int b = 0; b < NB; ++b) {
        const __m512 qv = _mm512_load_ps(qt + d * kHp + b * kW);
        for (int j = 0; j < NK; ++j) a[j][b] = _mm512_fmadd_ps(qv, kb[j], a[j][b]);
      }
    }
    for (int j = 0; j < NK; ++j) {
      __m512 s = _mm512_setzero_ps();
      for (int b = 0; b < NB; ++b)
        s = _mm512_fmadd_ps(_mm512_max_ps(a[j][b], _mm512_setzero_ps()),
                            _mm512_load_ps(wc + b * kW), s);
      out[t + j] += _mm512_reduce_add_ps(s);
    }
  }
  return t;
}

template <int NB>
void indexer_block(const float* qt, const float* wc, size_t dim, const float* k, size_t n_keys,
                   float* out) {
  constexpr int kKeys = NB <= 2 ? 8 : 4;  // <= 16 accumulators of 32 registers
  const size_t t = indexer_keys<NB, kKeys>(qt, wc, dim, k, 0, n_keys, out);
  indexer_keys<NB, 1>(qt, wc, dim, k, t, n_keys, out);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------------
float rms_inv_f32_avx512(const float* x, size_t n, float eps) {
  DSV4_CHECK(n > 0);
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
         a3 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 4 * kW <= n; i += 4 * kW) {
    const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + kW),
                 v2 = _mm512_loadu_ps(x + i + 2 * kW), v3 = _mm512_loadu_ps(x + i + 3 * kW);
    a0 = _mm512_fmadd_ps(v0, v0, a0);
    a1 = _mm512_fmadd_ps(v1, v1, a1);
    a2 = _mm512_fmadd_ps(v2, v2, a2);
    a3 = _mm512_fmadd_ps(v3, v3, a3);
  }
  for (; i + kW <= n; i += kW) {
    const __m512 v = _mm512_loadu_ps(x + i);
    a0 = _mm512_fmadd_ps(v, v, a0);
  }
  if (i < n) {
    const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
    a1 = _mm512_fmadd_ps(v, v, a1);
  }
  const float ss =
      _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  return static_cast<float>(1.0 /
                            std::sqrt(static_cast<double>(ss) / static_cast<double>(n) + eps));
}

void rmsnorm_f32_avx512(const float* x, const float* w, float* y, size_t n, float eps) {
  const __m512 r = _mm512_set1_ps(rms_inv_f32_avx512(x, n, eps));
  size_t i = 0;
  for (; i + kW <= n; i += kW) {
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), r);
    if (w) v = _mm512_mul_ps(_mm512_loadu_ps(w + i), v);
    _mm512_storeu_ps(y + i, v);
  }
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), r);
    if (w) v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, w + i), v);
    _mm512_mask_storeu_ps(y + i, k, v);
  }
}

// ---------------------------------------------------------------------------------------------
// RoPE (interleaved): y = x * [c0 c0 c1 c1 ..] + swap_pairs(x) * [-s0 +s0 -s1 +s1 ..]
// ---------------------------------------------------------------------------------------------
void rope_interleaved_f32_avx512(float* x, size_t n_heads, size_t head_stride, const float* cos,
                                 const float* sin, size_t rope_dim, RopeDir dir) {
  DSV4_CHECK(rope_dim % 2 == 0);
  const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  // Forward negates sin on even lanes, inverse on odd lanes.
  const __m512i sign =
      dir == RopeDir::forward
          ? _mm512_set_epi32(0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN,
                             0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN)
          : _mm512_set_epi32(INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0,
                             INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0);
  // Heads outer, channels inner: with heads 512 floats apart, a channel-outer order makes every
  // load 4 KiB-alias the previous head's store and runs slower than the scalar loop.
  const size_t full = rope_dim / kW * kW;
  for (size_t h = 0; h < n_heads; ++h) {
    float* p = x + h * head_stride;
    for (size_t c = 0; c < full; c += kW) {
      const __m512 cos2 =
          _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(cos + c / 2)));
      const __m512 sin2 = _mm512_castsi512_ps(
          _mm512_xor_si512(_mm512_castps_si512(_mm512_permutexvar_ps(
                               dup, _mm512_castps256_ps512(_mm256_loadu_ps(sin + c / 2)))),
                           sign));
      const __m512 v = _mm512_loadu_ps(p + c);
      const __m512 sw = _mm512_permute_ps(v, 0xB1);
      _mm512_storeu_ps(p + c, _mm512_fmadd_ps(v, cos2, _mm512_mul_ps(sw, sin2)));
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
void softmax_f32_avx512(const float* x, float* y, size_t n) {
  DSV4_CHECK(n > 0);
  softmax_body(x, y, n, row_max(x, n, -INFINITY), 0.0);
}

void softmax_sink_f32_avx512(const float* x, float* y, size_t n, float sink) {
  const float m = row_max(x, n, sink);
  softmax_body(x, y, n, m, m == -INFINITY ? 0.0 : std::exp(sink - m));
}

// ---------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------
void silu_f32_avx512(const float* x, float* y, size_t n) {
  size_t i = 0;
  for (; i + kW <= n; i += kW) _mm512_storeu_ps(y + i, silu_ps(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, k, silu_ps(_mm512_maskz_loadu_ps(k, x + i)));
  }
}

void swiglu_f32_avx512(const float* gate, const float* up, float* out, size_t n, float limit,
                       float scale) {
  const bool clamp = limit > 0;
  const __m512 hi = _mm512_set1_ps(limit), lo = _mm512_set1_ps(-limit), vs = _mm512_set1_ps(scale);
  auto one = [&](__m512 g, __m512 u) {
    if (clamp) {
      g = _mm512_min_ps(g, hi);
      u = _mm512_min_ps(_mm512_max_ps(u, lo), hi);
    }
    return _mm512_mul_ps(_mm512_mul_ps(silu_ps(g), u), vs);
  };
  size_t i = 0;
  for (; i + kW <= n; i += kW)
    _mm512_storeu_ps(out + i, one(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(
        out + i, k, one(_mm512_maskz_loadu_ps(k, gate + i), _mm512_maskz_loadu_ps(k, up + i)));
  }
}

// ---------------------------------------------------------------------------------------------
// Top-k pieces (driver in ops.cpp)
// ---------------------------------------------------------------------------------------------
namespace detail {

void topk_block_max_avx512(const float* x, size_t n_blocks, size_t block, int32_t* out) {
  DSV4_CHECK(block % kW == 0);
  for (size_t b = 0; b < n_blocks; ++b) {
    const float* p = x + b * block;
    __m512i m0 = _mm512_set1_epi32(INT32_MIN), m1 = m0;
    size_t j = 0;
    for (; j + 2 * kW <= block; j += 2 * kW) {
      m0 = _mm512_max_epi32(m0, key_ps(_mm512_loadu_ps(p + j)));
      m1 = _mm512_max_epi32(m1, key_ps(_mm512_loadu_ps(p + j + kW)));
    }
    if (j < block) m0 = _mm512_max_epi32(m0, key_ps(_mm512_loadu_ps(p + j)));
    out[b] = _mm512_reduce_max_epi32(_mm512_max_epi32(m0, m1));
  }
}

size_t topk_gather_ge_avx512(const float* x, size_t n, int32_t t, uint64_t* out, size_t cap) {
  const __m512i vt = _mm512_set1_epi32(t);
  alignas(64) int32_t keys[kW];
  size_t count = 0;
  for (size_t i = 0; i < n; i += kW) {
    const __mmask16 k = n - i >= kW ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    const __m512i key = key_ps(_mm512_maskz_loadu_ps(k, x + i));
    unsigned m = _mm512_mask_cmpge_epi32_mask(k, key, vt);
    if (!m) continue;
    _mm512_store_si512(keys, key);
    while (m) {
      const unsigned j = static_cast<unsigned>(__builtin_ctz(m));
      if (count < cap) out[count] = composite(keys[j], static_cast<uint32_t>(i + j));
      ++count;
      m &= m - 1;
    }
  }
  return count;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Walsh–Hadamard: strides 1, 2, 4, 8 inside a 16-lane register (lanes i and i^h exchange;
// the lane with bit h set keeps the difference), then whole-register butterflies. Each output is
// the same single add/sub as in the reference, so results are bit-identical to it.
// ---------------------------------------------------------------------------------------------
void hadamard_f32_avx512(float* x, size_t n, float scale) {
  DSV4_CHECK(n > 0 && (n & (n - 1)) == 0);
  if (n < kW) return hadamard_f32_ref(x, n, scale);
  for (size_t i = 0; i < n; i += kW) {
    __m512 v = _mm512_loadu_ps(x + i);
    __m512 s = _mm512_permute_ps(v, 0xB1);  // h = 1
    v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xAAAA, s, v);
    s = _mm512_permute_ps(v, 0x4E);  // h = 2
    v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xCCCC, s, v);
    s = _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1));  // h = 4
    v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xF0F0, s, v);
    s = _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2));  // h = 8
    v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xFF00, s, v);
    _mm512_storeu_ps(x + i, v);
  }
  for (size_t h = kW; h < n; h *= 2) {
    for (size_t i = 0; i < n; i += 2 * h) {
      for (size_t j = i; j < i + h; j += kW) {
        const __m512 a = _mm512_loadu_ps(x + j), b = _mm512_loadu_ps(x + j + h);
        _mm512_storeu_ps(x + j, _mm512_add_ps(a, b));
        _mm512_storeu_ps(x + j + h, _mm512_sub_ps(a, b));
      }
    }
  }
  const __m512 vs = _mm512_set1_ps(scale);
  for (size_t i = 0; i < n; i += kW)
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vs));
}

// ---------------------------------------------------------------------------------------------
// mHC collapse / expand
// ---------------------------------------------------------------------------------------------
void hc_collapse_f32_avx512(const float* x, const float* pre, size_t hc, size_t dim, float* y) {
  DSV4_CHECK(hc > 0);
  for (size_t d = 0; d < dim; d += kW) {
    const __mmask16 k = dim - d >= kW ? static_cast<__mmask16>(0xffff) : tail_mask(dim - d);
    __m512 acc = _mm512_mul_ps(_mm512_set1_ps(pre[0]), _mm512_maskz_loadu_ps(k, x + d));
    for (size_t j = 1; j < hc; ++j)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(pre[j]), _mm512_maskz_loadu_ps(k, x + j * dim + d), acc);
    _mm512_mask_storeu_ps(y + d, k, acc);
  }
}

void hc_expand_f32_avx512(const float* block_out, const float* residual, const float* post,
                          const float* comb, size_t hc, size_t dim, float* y) {
  for (size_t kk = 0; kk < hc; ++kk) {
    const __m512 pk = _mm512_set1_ps(post[kk]);
    for (size_t d = 0; d < dim; d += kW) {
      const __mmask16 k = dim - d >= kW ? static_cast<__mmask16>(0xffff) : tail_mask(dim - d);
      __m512 acc = _mm512_mul_ps(pk, _mm512_maskz_loadu_ps(k, block_out + d));
      for (size_t j = 0; j < hc; ++j)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(comb[j * hc + kk]),
                              _mm512_maskz_loadu_ps(k, residual + j * dim + d), acc);
      _mm512_mask_storeu_ps(y + kk * dim + d, k, acc);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Compressor pooling: per 16 channels, max over slots, then sum(e) and sum(e * kv) in one pass.
// ---------------------------------------------------------------------------------------------
void compress_pool_f32_avx512(const float* const* kv_rows, const float* const* score_rows,
                              size_t n_slots, size_t dim, float* out) {
  DSV4_CHECK(n_slots > 0);
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  for (size_t d = 0; d < dim; d += kW) {
    const __mmask16 k = dim - d >= kW ? static_cast<__mmask16>(0xffff) : tail_mask(dim - d);
    __m512 m = neg_inf;
    for (size_t s = 0; s < n_slots; ++s)
      m = _mm512_max_ps(m, _mm512_mask_loadu_ps(neg_inf, k, score_rows[s] + d));
    // All -inf channels: compute with m = 0 (every weight 0) and write 0 below.
    const __mmask16 dead = _mm512_cmp_ps_mask(m, neg_inf, _CMP_EQ_OQ);
    m = _mm512_mask_mov_ps(m, dead, _mm512_setzero_ps());
    __m512 sum = _mm512_setzero_ps(), acc = _mm512_setzero_ps();
    for (size_t s = 0; s < n_slots; ++s) {
      const __m512 e =
          exp_ps(_mm512_sub_ps(_mm512_mask_loadu_ps(neg_inf, k, score_rows[s] + d), m));
      sum = _mm512_add_ps(sum, e);
      acc = _mm512_fmadd_ps(e, _mm512_maskz_loadu_ps(k, kv_rows[s] + d), acc);
    }
    const __m512 r = _mm512_maskz_div_ps(static_cast<__mmask16>(~dead), acc, sum);
    _mm512_mask_storeu_ps(out + d, k, r);
  }
}

// ---------------------------------------------------------------------------------------------
// Indexer score: queries transposed to [dim, heads] so one broadcast key channel feeds 16 heads
// per FMA; heads in chunks of <= 64 (4 registers x 4 keys of accumulators).
// ---------------------------------------------------------------------------------------------
void indexer_scores_f32_avx512(const float* q, const float* w, size_t n_heads, size_t dim,
                               const float* k, size_t n_keys, float* out) {
  constexpr size_t kQtFloats = 8192;  // 32 KiB of transposed queries on the stack
  if (dim == 0 || dim > kQtFloats / kW)
    return indexer_scores_f32_ref(q, w, n_heads, dim, k, n_keys, out);
  size_t chunk = (kQtFloats / dim) / kW * kW;
  if (chunk > 4 * kW) chunk = 4 * kW;
  alignas(64) float qt[kQtFloats];
  alignas(64) float wc[4 * kW];
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
      default:
        indexer_block<4>(qt, wc, dim, k, n_keys, out);
        break;
    }
  }
}

}  // namespace dsv4::kernels
