// kernels/ref/ops_ref.cpp — scalar reference twins of kernels/ops.h. Written to be read next to
// the formulas in docs/kernels-ops.md: plain loops, double accumulators where a sum is long,
// no tricks. Every vector variant is tested against these.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "base/check.h"
#include "kernels/ops.h"

namespace dsv4::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}
float silu(float x) {
  return x / (1.0f + std::exp(-x));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------------
float rms_inv_f32_ref(const float* x, size_t n, float eps) {
  DSV4_CHECK(n > 0);
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
}

void rmsnorm_f32_ref(const float* x, const float* w, float* y, size_t n, float eps) {
  const float r = rms_inv_f32_ref(x, n, eps);
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i] * r;
    y[i] = w ? w[i] * v : v;
  }
}

// ---------------------------------------------------------------------------------------------
// RoPE
// ---------------------------------------------------------------------------------------------
void rope_interleaved_f32_ref(float* x, size_t n_heads, size_t head_stride, const float* cos,
                              const float* sin, size_t rope_dim, RopeDir dir) {
  DSV4_CHECK(rope_dim % 2 == 0);
  const float sign = dir == RopeDir::inverse ? -1.0f : 1.0f;
  for (size_t h = 0; h < n_heads; ++h) {
    float* p = x + h * head_stride;
    for (size_t i = 0; i < rope_dim / 2; ++i) {
      const float c = cos[i], s = sign * sin[i];
      const float a = p[2 * i], b = p[2 * i + 1];
      p[2 * i] = a * c - b * s;
      p[2 * i + 1] = b * c + a * s;
    }
  }
}

void rope_halves_f32_ref(float* x, size_t n_heads, size_t head_stride, const float* cos,
                         const float* sin, size_t rope_dim, RopeDir dir) {
  DSV4_CHECK(rope_dim % 2 == 0);
  const float sign = dir == RopeDir::inverse ? -1.0f : 1.0f;
  const size_t half = rope_dim / 2;
  for (size_t h = 0; h < n_heads; ++h) {
    float* p = x + h * head_stride;
    for (size_t i = 0; i < half; ++i) {
      const float c = cos[i], s = sign * sin[i];
      const float a = p[i], b = p[i + half];
      p[i] = a * c - b * s;
      p[i + half] = b * c + a * s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax
// ---------------------------------------------------------------------------------------------
namespace {
// Shared body: m is the max over the row (and the sink, if any); extra = exp(sink - m) or 0.
void softmax_body(const float* x, float* y, size_t n, float m, double extra) {
  if (m == kNegInf) {  // every logit (and the sink) masked: no mass anywhere
    std::fill(y, y + n, 0.0f);
    return;
  }
  double sum = extra;
  for (size_t i = 0; i < n; ++i) {
    const float e = std::exp(x[i] - m);
    y[i] = e;
    sum += e;
  }
  const float inv = 1.0f / static_cast<float>(sum);
  for (size_t i = 0; i < n; ++i) y[i] *= inv;
}
}  // namespace

void softmax_f32_ref(const float* x, float* y, size_t n) {
  DSV4_CHECK(n > 0);
  float m = kNegInf;
  for (size_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  softmax_body(x, y, n, m, 0.0);
}

void softmax_sink_f32_ref(const float* x, float* y, size_t n, float sink) {
  float m = sink;
  for (size_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  softmax_body(x, y, n, m, m == kNegInf ? 0.0 : std::exp(sink - m));
}

// ---------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------
void silu_f32_ref(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = silu(x[i]);
}

void swiglu_f32_ref(const float* gate, const float* up, float* out, size_t n, float limit,
                    float scale) {
  for (size_t i = 0; i < n; ++i) {
    float g = gate[i], u = up[i];
    if (limit > 0) {
      g = std::min(g, limit);
      u = std::min(std::max(u, -limit), limit);
    }
    out[i] = silu(g) * u * scale;
  }
}

void router_scores_f32_ref(const float* logits, float* scores, size_t n, ScoringFunc f) {
  switch (f) {
    case ScoringFunc::softmax:
      softmax_f32_ref(logits, scores, n);
      return;
    case ScoringFunc::sigmoid:
      for (size_t i = 0; i < n; ++i) scores[i] = sigmoid(logits[i]);
      return;
    case ScoringFunc::sqrtsoftplus:
      for (size_t i = 0; i < n; ++i) {
        const float x = logits[i];
        // torch.nn.functional.softplus(beta=1, threshold=20): linear above the threshold.
        const float sp = x > 20.0f ? x : std::log1p(std::exp(x));
        scores[i] = std::sqrt(sp);
      }
      return;
  }
  DSV4_CHECK_MSG(false, "unknown ScoringFunc");
}

// ---------------------------------------------------------------------------------------------
// Top-k: a partial sort of all indices under the documented total order.
// ---------------------------------------------------------------------------------------------
void topk_f32_ref(const float* x, size_t n, size_t k, int32_t* out, TopKScratch*) {
  DSV4_CHECK(k <= n);
  DSV4_CHECK(n <= static_cast<size_t>(std::numeric_limits<int32_t>::max()));
  if (k == 0) return;
  std::vector<int32_t> key(n), idx(n);
  for (size_t i = 0; i < n; ++i) key[i] = topk_key(x[i]);
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(
      idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(),
      [&](int32_t a, int32_t b) { return key[a] > key[b] || (key[a] == key[b] && a < b); });
  std::copy(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), out);
}

// ---------------------------------------------------------------------------------------------
// Walsh–Hadamard: in-place butterflies, stride 1, 2, 4, ... (Sylvester order), then scale.
// ---------------------------------------------------------------------------------------------
void hadamard_f32_ref(float* x, size_t n, float scale) {
  DSV4_CHECK(n > 0 && (n & (n - 1)) == 0);
  for (size_t h = 1; h < n; h *= 2) {
    for (size_t i = 0; i < n; i += 2 * h) {
      for (size_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  for (size_t i = 0; i < n; ++i) x[i] *= scale;
}

// ---------------------------------------------------------------------------------------------
// mHC
// ---------------------------------------------------------------------------------------------
void sinkhorn_f32_ref(float* c, size_t hc, int iters, float eps) {
  DSV4_CHECK(hc > 0 && iters >= 1);
  auto normalize_rows = [&] {
    for (size_t j = 0; j < hc; ++j) {
      float s = 0;
      for (size_t k = 0; k < hc; ++k) s += c[j * hc + k];
      for (size_t k = 0; k < hc; ++k) c[j * hc + k] /= s + eps;
    }
  };
  auto normalize_cols = [&] {
    for (size_t k = 0; k < hc; ++k) {
      float s = 0;
      for (size_t j = 0; j < hc; ++j) s += c[j * hc + k];
      for (size_t j = 0; j < hc; ++j) c[j * hc + k] /= s + eps;
    }
  };
  // Row softmax, then + eps.
  for (size_t j = 0; j < hc; ++j) {
    float* row = c + j * hc;
    float m = kNegInf;
    for (size_t k = 0; k < hc; ++k) m = std::max(m, row[k]);
    float s = 0;
    for (size_t k = 0; k < hc; ++k) {
      row[k] = std::exp(row[k] - m);
      s += row[k];
    }
    for (size_t k = 0; k < hc; ++k) row[k] = row[k] / s + eps;
  }
  normalize_cols();
  for (int it = 1; it < iters; ++it) {
    normalize_rows();
    normalize_cols();
  }
}

void hc_split_sinkhorn_f32_ref(const float* mixes, const float* hc_scale, const float* hc_base,
                               size_t hc, int iters, float eps, float* pre, float* post,
                               float* comb) {
  for (size_t j = 0; j < hc; ++j) pre[j] = sigmoid(mixes[j] * hc_scale[0] + hc_base[j]) + eps;
  for (size_t j = 0; j < hc; ++j)
    post[j] = 2.0f * sigmoid(mixes[hc + j] * hc_scale[1] + hc_base[hc + j]);
  for (size_t i = 0; i < hc * hc; ++i)
    comb[i] = mixes[2 * hc + i] * hc_scale[2] + hc_base[2 * hc + i];
  sinkhorn_f32_ref(comb, hc, iters, eps);
}

void hc_collapse_f32_ref(const float* x, const float* pre, size_t hc, size_t dim, float* y) {
  for (size_t d = 0; d < dim; ++d) {
    float acc = 0;
    for (size_t j = 0; j < hc; ++j) acc += pre[j] * x[j * dim + d];
    y[d] = acc;
  }
}

void hc_expand_f32_ref(const float* block_out, const float* residual, const float* post,
                       const float* comb, size_t hc, size_t dim, float* y) {
  for (size_t k = 0; k < hc; ++k) {
    for (size_t d = 0; d < dim; ++d) {
      float acc = 0;
      for (size_t j = 0; j < hc; ++j) acc += comb[j * hc + k] * residual[j * dim + d];
      y[k * dim + d] = post[k] * block_out[d] + acc;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Compressor pooling and indexer score
// ---------------------------------------------------------------------------------------------
void compress_pool_f32_ref(const float* const* kv_rows, const float* const* score_rows,
                           size_t n_slots, size_t dim, float* out) {
  DSV4_CHECK(n_slots > 0);
  for (size_t d = 0; d < dim; ++d) {
    float m = kNegInf;
    for (size_t s = 0; s < n_slots; ++s) m = std::max(m, score_rows[s][d]);
    if (m == kNegInf) {
      out[d] = 0.0f;
      continue;
    }
    double sum = 0, acc = 0;
    for (size_t s = 0; s < n_slots; ++s) {
      const double e = std::exp(static_cast<double>(score_rows[s][d]) - m);
      sum += e;
      acc += e * kv_rows[s][d];
    }
    out[d] = static_cast<float>(acc / sum);
  }
}

void indexer_scores_f32_ref(const float* q, const float* w, size_t n_heads, size_t dim,
                            const float* k, size_t n_keys, float* out) {
  for (size_t t = 0; t < n_keys; ++t) {
    const float* kt = k + t * dim;
    double total = 0;
    for (size_t h = 0; h < n_heads; ++h) {
      const float* qh = q + h * dim;
      double dot = 0;
      for (size_t d = 0; d < dim; ++d) dot += static_cast<double>(qh[d]) * kt[d];
      total += static_cast<double>(w[h]) * std::max(dot, 0.0);
    }
    out[t] = static_cast<float>(total);
  }
}

}  // namespace dsv4::kernels
