// kernels/ops.cpp — dispatching entry points of kernels/ops.h, plus the ISA-independent parts:
// RoPE frequency/table construction, the top-k key, the top-k driver shared by the vector
// variants, and the scalar-only mHC helpers. Built for the base ISA.
#include "kernels/ops.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <numbers>

#include "base/check.h"
#include "kernels/dispatch.h"

namespace dsv4::kernels {

void rmsnorm_f32(const float* x, const float* w, float* y, size_t n, float eps) {
  DSV4_DISPATCH_ISA(rmsnorm_f32, x, w, y, n, eps);
}
float rms_inv_f32(const float* x, size_t n, float eps) {
  DSV4_DISPATCH_ISA(rms_inv_f32, x, n, eps);
}
void rope_interleaved_f32(float* x, size_t n_heads, size_t head_stride, const float* cos,
                          const float* sin, size_t rope_dim, RopeDir dir) {
  DSV4_DISPATCH_ISA(rope_interleaved_f32, x, n_heads, head_stride, cos, sin, rope_dim, dir);
}
void rope_halves_f32(float* x, size_t n_heads, size_t head_stride, const float* cos,
                     const float* sin, size_t rope_dim, RopeDir dir) {
  rope_halves_f32_ref(x, n_heads, head_stride, cos, sin, rope_dim, dir);
}
void softmax_f32(const float* x, float* y, size_t n) {
  DSV4_DISPATCH_ISA(softmax_f32, x, y, n);
}
void softmax_sink_f32(const float* x, float* y, size_t n, float sink) {
  DSV4_DISPATCH_ISA(softmax_sink_f32, x, y, n, sink);
}
void silu_f32(const float* x, float* y, size_t n) {
  DSV4_DISPATCH_ISA(silu_f32, x, y, n);
}
void swiglu_f32(const float* gate, const float* up, float* out, size_t n, float limit,
                float scale) {
  DSV4_DISPATCH_ISA(swiglu_f32, gate, up, out, n, limit, scale);
}
void router_scores_f32(const float* logits, float* scores, size_t n, ScoringFunc f) {
  if (f == ScoringFunc::softmax) return softmax_f32(logits, scores, n);
  router_scores_f32_ref(logits, scores, n, f);
}
void topk_f32(const float* x, size_t n, size_t k, int32_t* out, TopKScratch* scratch) {
  DSV4_DISPATCH_ISA(topk_f32, x, n, k, out, scratch);
}
void hadamard_f32(float* x, size_t n, float scale) {
  DSV4_DISPATCH_ISA(hadamard_f32, x, n, scale);
}
void sinkhorn_f32(float* c, size_t hc, int iters, float eps) {
  sinkhorn_f32_ref(c, hc, iters, eps);
}
void hc_split_sinkhorn_f32(const float* mixes, const float* hc_scale, const float* hc_base,
                           size_t hc, int iters, float eps, float* pre, float* post, float* comb) {
  hc_split_sinkhorn_f32_ref(mixes, hc_scale, hc_base, hc, iters, eps, pre, post, comb);
}
void hc_collapse_f32(const float* x, const float* pre, size_t hc, size_t dim, float* y) {
  DSV4_DISPATCH_ISA(hc_collapse_f32, x, pre, hc, dim, y);
}
void hc_expand_f32(const float* block_out, const float* residual, const float* post,
                   const float* comb, size_t hc, size_t dim, float* y) {
  DSV4_DISPATCH_ISA(hc_expand_f32, block_out, residual, post, comb, hc, dim, y);
}
void compress_pool_f32(const float* const* kv_rows, const float* const* score_rows, size_t n_slots,
                       size_t dim, float* out) {
  DSV4_DISPATCH_ISA(compress_pool_f32, kv_rows, score_rows, n_slots, dim, out);
}
void indexer_scores_f32(const float* q, const float* w, size_t n_heads, size_t dim, const float* k,
                        size_t n_keys, float* out) {
  DSV4_DISPATCH_ISA(indexer_scores_f32, q, w, n_heads, dim, k, n_keys, out);
}

// ---------------------------------------------------------------------------------------------
// RoPE frequencies and tables
// ---------------------------------------------------------------------------------------------
std::vector<float> rope_inv_freq(const RopeParams& p) {
  DSV4_CHECK(p.rope_dim >= 2 && p.rope_dim % 2 == 0);
  DSV4_CHECK(p.theta > 1);
  const size_t half = p.rope_dim / 2;
  const float fdim = static_cast<float>(p.rope_dim);
  std::vector<float> pos_freq(half), inv(half);
  for (size_t i = 0; i < half; ++i) {
    // base ** (arange(0, dim, 2).float() / dim), then 1 / that — each step rounded to f32.
    const float e = static_cast<float>(2 * i) / fdim;
    pos_freq[i] = static_cast<float>(std::pow(p.theta, static_cast<double>(e)));
    inv[i] = 1.0f / pos_freq[i];
  }
  if (!p.yarn) return inv;

  DSV4_CHECK(p.factor > 0 && p.original_max_position_embeddings > 0);
  DSV4_CHECK(p.beta_fast > 0 && p.beta_slow > 0);
  // The pair index at which a frequency completes `rotations` turns over the original context.
  auto correction_dim = [&](double rotations) {
    return static_cast<double>(p.rope_dim) *
           std::log(p.original_max_position_embeddings / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(p.theta));
  };
  double lo = correction_dim(p.beta_fast), hi = correction_dim(p.beta_slow);
  if (p.truncate) {
    lo = std::floor(lo);
    hi = std::ceil(hi);
  }
  lo = std::max(lo, 0.0);
  hi = std::min(hi, static_cast<double>(p.rope_dim - 1));
  if (lo == hi) hi += 0.001;  // both references: avoid a zero-width ramp
  const float lof = static_cast<float>(lo), span = static_cast<float>(hi - lo);
  const float factor = static_cast<float>(p.factor);
  for (size_t i = 0; i < half; ++i) {
    const float ramp = std::clamp((static_cast<float>(i) - lof) / span, 0.0f, 1.0f);
    const float extrapolation = 1.0f - ramp;  // weight of the unscaled frequency
    const float interpolated = 1.0f / (factor * pos_freq[i]);
    inv[i] = interpolated * (1.0f - extrapolation) + inv[i] * extrapolation;
  }
  return inv;
}

void rope_cos_sin(const float* inv_freq, size_t rope_dim, int64_t pos, double attention_factor,
                  float* cos, float* sin) {
  const float fpos = static_cast<float>(pos);
  const float af = static_cast<float>(attention_factor);
  for (size_t i = 0; i < rope_dim / 2; ++i) {
    const double angle = static_cast<double>(fpos * inv_freq[i]);  // f32 product, as torch
    float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
    if (attention_factor != 1.0) {
      c *= af;
      s *= af;
    }
    cos[i] = c;
    sin[i] = s;
  }
}

RopeTable::RopeTable(const RopeParams& params, int64_t n_cached)
    : params_(params), inv_freq_(rope_inv_freq(params)), n_cached_(n_cached) {
  DSV4_CHECK(n_cached >= 0);
  const size_t half = params_.rope_dim / 2;
  cache_.resize(static_cast<size_t>(n_cached) * 2 * half);
  for (int64_t pos = 0; pos < n_cached; ++pos) {
    float* row = cache_.data() + static_cast<size_t>(pos) * 2 * half;
    rope_cos_sin(inv_freq_.data(), params_.rope_dim, pos, params_.attention_factor, row,
                 row + half);
  }
}

void RopeTable::cos_sin(int64_t pos, float* cos, float* sin) const {
  DSV4_CHECK(pos >= 0);
  DSV4_CHECK_MSG(!inv_freq_.empty(), "RopeTable used before construction");
  const size_t half = params_.rope_dim / 2;
  if (pos < n_cached_) {
    const float* row = cache_.data() + static_cast<size_t>(pos) * 2 * half;
    std::copy(row, row + half, cos);
    std::copy(row + half, row + 2 * half, sin);
    return;
  }
  rope_cos_sin(inv_freq_.data(), params_.rope_dim, pos, params_.attention_factor, cos, sin);
}

// ---------------------------------------------------------------------------------------------
// Top-k
// ---------------------------------------------------------------------------------------------
int32_t topk_key(float v) {
  uint32_t bits = std::bit_cast<uint32_t>(v);
  if (std::isnan(v)) bits = 0x7fc00000u;  // every NaN: one value above +inf
  if (bits == 0x80000000u) bits = 0;      // -0.0 == +0.0
  const auto s = static_cast<int32_t>(bits);
  return s ^ ((s >> 31) & 0x7fffffff);  // negative floats: flip magnitude order
}

namespace {

// Exact selection among candidate composites (all of the true top-k are among them):
// largest-composite-first is exactly the documented order.
void topk_finish(uint64_t* c, size_t nc, size_t k, int32_t* out) {
  DSV4_CHECK(nc >= k);
  std::nth_element(c, c + (k - 1), c + nc, std::greater<uint64_t>());
  std::sort(c, c + k, std::greater<uint64_t>());
  for (size_t i = 0; i < k; ++i) out[i] = topk_composite_index(c[i]);
}

struct TopKVectorOps {
  void (*block_max)(const float*, size_t, size_t, int32_t*);
  size_t (*gather_ge)(const float*, size_t, int32_t, uint64_t*, size_t);
};

// Threshold t0 = k-th largest block maximum: at least k blocks hold an element >= t0, so the
// k-th largest key is >= t0 and every element of the top k (ties included) has key >= t0.
void topk_threshold(const float* x, size_t n, size_t k, int32_t* out, TopKScratch* scratch,
                    const TopKVectorOps& ops) {
  DSV4_CHECK(k <= n);
  DSV4_CHECK(n <= static_cast<size_t>(std::numeric_limits<int32_t>::max()));
  if (k == 0) return;
  TopKScratch local;
  TopKScratch& s = scratch ? *scratch : local;
  // Largest power-of-two block with at least 2k full blocks.
  const size_t block = n / (2 * k) == 0 ? 0 : std::bit_floor(n / (2 * k));
  if (block < 16) {  // too few elements per block to pay: exact selection over everything
    s.candidates.resize(n);
    for (size_t i = 0; i < n; ++i)
      s.candidates[i] = topk_composite(topk_key(x[i]), static_cast<uint32_t>(i));
    topk_finish(s.candidates.data(), n, k, out);
    return;
  }
  const size_t n_blocks = n / block;
  s.block_max.resize(n_blocks);
  ops.block_max(x, n_blocks, block, s.block_max.data());
  std::nth_element(s.block_max.begin(), s.block_max.begin() + static_cast<std::ptrdiff_t>(k - 1),
                   s.block_max.end(), std::greater<int32_t>());
  const int32_t t0 = s.block_max[k - 1];
  // Typical inputs leave a few k candidates; ties can leave up to n, then gather once more.
  if (s.candidates.size() < 8 * k + 1024) s.candidates.resize(8 * k + 1024);
  const size_t nc = ops.gather_ge(x, n, t0, s.candidates.data(), s.candidates.size());
  if (nc > s.candidates.size()) {
    s.candidates.resize(nc);
    DSV4_CHECK(ops.gather_ge(x, n, t0, s.candidates.data(), nc) == nc);
  }
  topk_finish(s.candidates.data(), nc, k, out);
}

}  // namespace

void topk_f32_avx2(const float* x, size_t n, size_t k, int32_t* out, TopKScratch* scratch) {
  topk_threshold(x, n, k, out, scratch, {detail::topk_block_max_avx2, detail::topk_gather_ge_avx2});
}

void topk_f32_avx512(const float* x, size_t n, size_t k, int32_t* out, TopKScratch* scratch) {
  topk_threshold(x, n, k, out, scratch,
                 {detail::topk_block_max_avx512, detail::topk_gather_ge_avx512});
}

// ---------------------------------------------------------------------------------------------
// mHC head
// ---------------------------------------------------------------------------------------------
void hc_head_pre_f32(const float* mixes, float scale, const float* base, size_t hc, float eps,
                     float* pre) {
  for (size_t j = 0; j < hc; ++j)
    pre[j] = 1.0f / (1.0f + std::exp(-(mixes[j] * scale + base[j]))) + eps;
}

}  // namespace dsv4::kernels
