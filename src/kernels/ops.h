// kernels/ops.h — the non-matmul math of the DeepSeek-V4 forward pass: RMSNorm, RoPE (with
// YaRN), softmax (with an attention sink), SiLU/SwiGLU with V4's clamp, router activations,
// exact top-k, Walsh–Hadamard transform, mHC Sinkhorn, hyper-connection collapse/expand,
// the compressor's softmax-gated pooling and the lightning indexer's score.
//
// Purpose: one obviously-correct scalar twin (`<op>_ref`, kernels/ref/ops_ref.cpp) per op, and
// AVX2 / AVX-512 variants (kernels/x86/) where vectorising pays. The un-suffixed entry points
// dispatch on active_isa() (kernels/dispatch.h); an op without a variant for the active tier
// falls back to the next lower one. Semantics follow the Hugging Face transformers DeepSeek-V4
// model (models/deepseek_v4/modeling_deepseek_v4.py) and DeepSeek's official inference code
// (inference/model.py + kernel.py); docs/kernels-ops.md gives every formula, its source, and
// where the two references differ.
//
// Invariants:
//   * All activations are f32 in and out; norm weights, biases, sinks are f32 (the caller
//     converts bf16 checkpoint tensors once at load).
//   * Shapes are outermost-first (PyTorch order) and rows are contiguous unless a stride says
//     otherwise. `y` may alias `x` wherever a comment says "in place allowed".
//   * Shape preconditions (power-of-two Hadamard length, k <= n, even rope_dim...) are bugs if
//     violated and abort through DSV4_CHECK; kernels never see untrusted input.
//   * Every variant of a kernel computes the same formula; they differ only by float rounding
//     (vector exp, FMA contraction, summation order) within the tolerances in
//     tests/kernels/ops_test.cpp. Top-k and Hadamard results are identical across variants;
//     RoPE tables, Sinkhorn and router activations have a single (scalar) implementation.
//
// Non-goals: threads (callers split rows/heads with ThreadPool), files, JSON, config parsing
// (the model layer turns config.json fields into RopeParams etc.), quantised activations
// (kernels/codecs.h), and matrix products (kernels/gemv.h).
//
// Rejected alternatives: a full [max_position, rope_dim] cos/sin table for 1M positions
// (256 MiB per rope type) — RopeTable caches only a prefix and computes the rest on the fly
// with the same float rounding; a heap/partial-sort top-k on the hot path (see topk_f32).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dsv4::kernels {

// ============================================================================================
// RMSNorm
// ============================================================================================
// y[i] = w[i] * (x[i] * r),  r = 1 / sqrt(mean_j(x[j]^2) + eps)      (DeepseekV4RMSNorm)
// w == nullptr gives the weightless norm (DeepseekV4UnweightedRMSNorm: q after q_b_proj,
// hyper-connection inputs). x, y: [n] f32, in place allowed. w: [n] f32.
void rmsnorm_f32(const float* x, const float* w, float* y, size_t n, float eps);
void rmsnorm_f32_ref(const float* x, const float* w, float* y, size_t n, float eps);
void rmsnorm_f32_avx2(const float* x, const float* w, float* y, size_t n, float eps);
void rmsnorm_f32_avx512(const float* x, const float* w, float* y, size_t n, float eps);

// r = 1 / sqrt(mean_j(x[j]^2) + eps) alone. The official hc_pre/hc_head scale the mixes after
// the projection (`F.linear(x, fn) * rsqrt`) instead of normalising x first. x: [n] f32.
float rms_inv_f32(const float* x, size_t n, float eps);
float rms_inv_f32_ref(const float* x, size_t n, float eps);
float rms_inv_f32_avx2(const float* x, size_t n, float eps);
float rms_inv_f32_avx512(const float* x, size_t n, float eps);

// ============================================================================================
// RoPE
// ============================================================================================
// V4 rotates only the LAST rope_dim (= qk_rope_head_dim = 64) channels of each 512-channel head
// ([nope | rope] layout), with INTERLEAVED pairs (2i, 2i+1), for q, the sliding-window kv, the
// compressed kv and the indexer's q / compressed keys; it de-rotates the attention output's
// rope slice with the same position (RopeDir::inverse). Sliding-only layers use `rope_theta`
// without YaRN; compressed layers (CSA/HCA), their compressors and the indexer use
// `compress_rope_theta` with YaRN. The "halves" (rotate_half, non-interleaved) variant is
// V3.2-style and is provided for completeness; V4 does not use it.

// How the per-pair inverse frequencies are built (transformers _compute_yarn_parameters /
// compute_default_rope_parameters; official precompute_freqs_cis).
struct RopeParams {
  size_t rope_dim = 64;  // rotated channels per head, even (qk_rope_head_dim)
  double theta = 10000;  // rope_theta or compress_rope_theta
  bool yarn = false;     // rope_scaling.type == "yarn" (compressed layers only)
  double factor = 1;     // rope_scaling.factor (V4-Flash: 16)
  double original_max_position_embeddings = 0;  // rope_scaling... (V4-Flash: 65536)
  double beta_fast = 32;                        // rope_scaling.beta_fast (default 32)
  double beta_slow = 1;                         // rope_scaling.beta_slow (default 1)
  bool truncate = true;  // floor/ceil the correction range (both references do)
  // Multiplies cos and sin. V4 uses 1.0 on every layer (transformers forces attention_factor=1
  // for the yarn "compress" rope; the official code never applies YaRN's mscale).
  double attention_factor = 1;
};

// inv_freq[i] for i < rope_dim/2, following the reference's float32 rounding steps:
//   e_i = f32(2i) / f32(rope_dim);  p_i = f32(theta ** e_i);  inv_i = 1 / p_i        (f32)
//   YaRN: lo/hi = correction dims of beta_fast/beta_slow at original_max_position_embeddings
//   (double; floor/ceil when truncate; clamped to [0, rope_dim-1]; hi += 0.001 if equal);
//   ramp_i = clamp((f32(i) - lo) / (hi - lo), 0, 1);  ef_i = 1 - ramp_i;
//   inv_i = (1 / f32(factor * p_i)) * (1 - ef_i) + inv_i * ef_i                        (f32)
//   i.e. high-frequency pairs (i < lo) keep theta's frequency, low-frequency pairs (i > hi)
//   are divided by factor, with a linear blend between.
std::vector<float> rope_inv_freq(const RopeParams& p);

// cos/sin of angle_i = f32(pos) * inv_freq[i] (a float32 product, as both references compute
// it), evaluated in double and rounded, times attention_factor. cos, sin: [rope_dim/2] f32.
void rope_cos_sin(const float* inv_freq, size_t rope_dim, int64_t pos, double attention_factor,
                  float* cos, float* sin);

// Frequencies built once per rope type; cos/sin for positions < cached_positions() are looked
// up, later positions are computed with the same rounding (identical values either way).
class RopeTable {
 public:
  RopeTable() = default;
  // n_cached: how many leading positions to precompute (rope_dim floats per position).
  RopeTable(const RopeParams& params, int64_t n_cached);

  size_t rope_dim() const { return params_.rope_dim; }
  const RopeParams& params() const { return params_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }  // [rope_dim/2]
  int64_t cached_positions() const { return n_cached_; }
  // cos, sin: [rope_dim/2] f32 for position pos >= 0.
  void cos_sin(int64_t pos, float* cos, float* sin) const;

 private:
  RopeParams params_;
  std::vector<float> inv_freq_;
  std::vector<float> cache_;  // [n_cached, 2, rope_dim/2]: cos row then sin row
  int64_t n_cached_ = 0;
};

enum class RopeDir { forward, inverse };  // inverse rotates by -angle (conjugate)

// In place on x: [n_heads, head_stride] f32; rotates channels x[h*head_stride + j], j <
// rope_dim (pass x + head_dim - rope_dim for V4's trailing slice). cos, sin: [rope_dim/2].
// Interleaved: pair i = (x[2i], x[2i+1]):
//   y[2i]   = x[2i] * c_i - x[2i+1] * s_i,   y[2i+1] = x[2i+1] * c_i + x[2i] * s_i
// (s_i -> -s_i for RopeDir::inverse).
void rope_interleaved_f32(float* x, size_t n_heads, size_t head_stride, const float* cos,
                          const float* sin, size_t rope_dim, RopeDir dir);
void rope_interleaved_f32_ref(float* x, size_t n_heads, size_t head_stride, const float* cos,
                              const float* sin, size_t rope_dim, RopeDir dir);
void rope_interleaved_f32_avx2(float* x, size_t n_heads, size_t head_stride, const float* cos,
                               const float* sin, size_t rope_dim, RopeDir dir);
void rope_interleaved_f32_avx512(float* x, size_t n_heads, size_t head_stride, const float* cos,
                                 const float* sin, size_t rope_dim, RopeDir dir);
// Halves (GPT-NeoX rotate_half): pair i = (x[i], x[i + rope_dim/2]), same formula.
void rope_halves_f32(float* x, size_t n_heads, size_t head_stride, const float* cos,
                     const float* sin, size_t rope_dim, RopeDir dir);
void rope_halves_f32_ref(float* x, size_t n_heads, size_t head_stride, const float* cos,
                         const float* sin, size_t rope_dim, RopeDir dir);

// ============================================================================================
// Softmax
// ============================================================================================
// y[i] = exp(x[i] - m) / sum_j exp(x[j] - m), m = max_j x[j]. x, y: [n] f32, in place allowed,
// n >= 1. -inf entries get exactly 0. A row that is entirely -inf gives all zeros (torch gives
// NaN; V4 never produces such a row here).
void softmax_f32(const float* x, float* y, size_t n);
void softmax_f32_ref(const float* x, float* y, size_t n);
void softmax_f32_avx2(const float* x, float* y, size_t n);
void softmax_f32_avx512(const float* x, float* y, size_t n);

// Attention softmax with a learned per-head sink logit that joins the normalisation but has no
// value (gpt-oss style; V4 `sinks` / `attn_sink`):
//   m = max(max_j x[j], sink),  y[i] = exp(x[i] - m) / (sum_j exp(x[j] - m) + exp(sink - m))
// so sum_i y[i] = 1 - exp(sink - m) / denominator < 1. A fully masked row (all -inf) gives all
// zeros (the sink takes all the mass), as in both references. x, y: [n], in place allowed.
void softmax_sink_f32(const float* x, float* y, size_t n, float sink);
void softmax_sink_f32_ref(const float* x, float* y, size_t n, float sink);
void softmax_sink_f32_avx2(const float* x, float* y, size_t n, float sink);
void softmax_sink_f32_avx512(const float* x, float* y, size_t n, float sink);

// ============================================================================================
// Activations
// ============================================================================================
// y = x / (1 + exp(-x)). x, y: [n], in place allowed.
void silu_f32(const float* x, float* y, size_t n);
void silu_f32_ref(const float* x, float* y, size_t n);
void silu_f32_avx2(const float* x, float* y, size_t n);
void silu_f32_avx512(const float* x, float* y, size_t n);

// V4 SwiGLU with swiglu_limit L (routed AND shared experts, both references):
//   g = min(gate[i], L);  u = clamp(up[i], -L, L);  out[i] = scale * silu(g) * u
// The gate is clamped from above only, up on both sides. L <= 0 disables both clamps (the
// official code's `if swiglu_limit > 0`). `scale` folds in the routing weight (the official
// Expert multiplies before w2; transformers after down_proj — same value). gate, up, out: [n];
// out may alias gate or up.
void swiglu_f32(const float* gate, const float* up, float* out, size_t n, float limit,
                float scale = 1.0f);
void swiglu_f32_ref(const float* gate, const float* up, float* out, size_t n, float limit,
                    float scale = 1.0f);
void swiglu_f32_avx2(const float* gate, const float* up, float* out, size_t n, float limit,
                     float scale = 1.0f);
void swiglu_f32_avx512(const float* gate, const float* up, float* out, size_t n, float limit,
                       float scale = 1.0f);

// Router scoring (config `scoring_func`), applied to the gate logits [n_experts] f32:
//   sqrtsoftplus: sqrt(softplus(x)), softplus(x) = x > 20 ? x : log1p(exp(x))  (torch threshold)
//   sigmoid:      1 / (1 + exp(-x))
//   softmax:      softmax_f32 over the row
// In place allowed. Scalar only (n_experts = 256..384 per token: not worth vectorising).
enum class ScoringFunc { softmax, sigmoid, sqrtsoftplus };
void router_scores_f32(const float* logits, float* scores, size_t n, ScoringFunc f);
void router_scores_f32_ref(const float* logits, float* scores, size_t n, ScoringFunc f);

// ============================================================================================
// Top-k
// ============================================================================================
// out[0..k) = indices of the k largest x[i] under the total order
//   a before b  <=>  x[a] > x[b]  or  (x[a] == x[b] and a < b)
// i.e. exact top-k with ties broken toward the LOWER index, returned SORTED in that order
// (largest first). Equal to torch.topk(sorted=True) whenever the values are distinct; with ties
// torch picks an unspecified member, we pick the lowest indices. -0.0 == +0.0; every NaN is
// treated as larger than +inf (as torch.topk does); -inf is an ordinary smallest value.
// Requires k <= n; k == 0 writes nothing. out: [k] int32 (n < 2^31).
// The vector variants pick a threshold from per-block maxima (the k-th largest block maximum is
// <= the k-th largest value), gather the few candidates at or above it, and finish exactly on
// those: two streaming passes + O(candidates) (a third only when the candidates overflow the
// scratch buffer, e.g. massive ties). `scratch` keeps the buffers between calls (no
// allocation once warm); nullptr uses temporaries.
struct TopKScratch {
  std::vector<int32_t> block_max;    // per-block maximum keys
  std::vector<uint64_t> candidates;  // (key, ~index) composites, see topk_key
};
void topk_f32(const float* x, size_t n, size_t k, int32_t* out, TopKScratch* scratch = nullptr);
void topk_f32_ref(const float* x, size_t n, size_t k, int32_t* out, TopKScratch* scratch = nullptr);
void topk_f32_avx2(const float* x, size_t n, size_t k, int32_t* out,
                   TopKScratch* scratch = nullptr);
void topk_f32_avx512(const float* x, size_t n, size_t k, int32_t* out,
                     TopKScratch* scratch = nullptr);

// The order-preserving key used by every top-k variant: a signed int whose order is the float
// order above (-0 folded onto +0, NaN -> above +inf). Exposed for tests and callers that keep
// scores as keys.
int32_t topk_key(float v);

// ============================================================================================
// Walsh–Hadamard transform
// ============================================================================================
// In place: x <- scale * H_n x, H_n the Sylvester Hadamard matrix in natural order
// (H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]]), n a power of two. The official V4 indexer
// rotates q and the indexer's compressed keys with scale = n^-1/2 (orthonormal) before its FP4
// quantisation simulation (`rotate_activation`); transformers omits both the rotation and the
// quantisation (the rotation alone cancels in q.k). x: [n] f32.
void hadamard_f32(float* x, size_t n, float scale);
void hadamard_f32_ref(float* x, size_t n, float scale);
void hadamard_f32_avx2(float* x, size_t n, float scale);
void hadamard_f32_avx512(float* x, size_t n, float scale);

// ============================================================================================
// Manifold-constrained hyper-connections (mHC)
// ============================================================================================
// Sinkhorn-Knopp as in both references (hc_split_sinkhorn / DeepseekV4HyperConnection):
//   c <- softmax_row(c) + eps;          c <- c / (column_sums(c) + eps)
//   repeat iters-1 times: c <- c / (row_sums(c) + eps);  c <- c / (column_sums(c) + eps)
// In place on c: [hc, hc] f32 row-major (c[j*hc + k]); input = logits (comb_w*scale + base).
// iters >= 1 (config hc_sinkhorn_iters = 20).
void sinkhorn_f32(float* c, size_t hc, int iters, float eps);
void sinkhorn_f32_ref(float* c, size_t hc, int iters, float eps);

// The whole split of one token's mixes (official hc_split_sinkhorn kernel):
//   mixes: [(2+hc)*hc] f32 = [pre | post | comb(hc x hc)] projections (already scaled by the
//   rms factor), hc_scale: [3] f32, hc_base: [(2+hc)*hc] f32.
//   pre[j]  = sigmoid(mixes[j] * scale[0] + base[j]) + eps                  -> pre: [hc]
//   post[j] = 2 * sigmoid(mixes[hc+j] * scale[1] + base[hc+j])             -> post: [hc]
//   comb    = sinkhorn(mixes[2hc..] * scale[2] + base[2hc..])              -> comb: [hc, hc]
void hc_split_sinkhorn_f32(const float* mixes, const float* hc_scale, const float* hc_base,
                           size_t hc, int iters, float eps, float* pre, float* post, float* comb);
void hc_split_sinkhorn_f32_ref(const float* mixes, const float* hc_scale, const float* hc_base,
                               size_t hc, int iters, float eps, float* pre, float* post,
                               float* comb);

// Final head collapse weights (DeepseekV4HyperHead / official hc_head):
//   pre[j] = sigmoid(mixes[j] * scale + base[j]) + eps.  mixes, base, pre: [hc] f32.
void hc_head_pre_f32(const float* mixes, float scale, const float* base, size_t hc, float eps,
                     float* pre);

// Collapse the hc streams into the block input: y[d] = sum_j pre[j] * x[j*dim + d].
// x: [hc, dim] f32, pre: [hc], y: [dim] (must not alias x).
void hc_collapse_f32(const float* x, const float* pre, size_t hc, size_t dim, float* y);
void hc_collapse_f32_ref(const float* x, const float* pre, size_t hc, size_t dim, float* y);
void hc_collapse_f32_avx2(const float* x, const float* pre, size_t hc, size_t dim, float* y);
void hc_collapse_f32_avx512(const float* x, const float* pre, size_t hc, size_t dim, float* y);

// Expand the block output back into hc streams and mix the residual streams:
//   y[k*dim + d] = post[k] * block_out[d] + sum_j comb[j*hc + k] * residual[j*dim + d]
// (comb is applied transposed: sum over its FIRST index — both references.)
// block_out: [dim], residual: [hc, dim], post: [hc], comb: [hc, hc], y: [hc, dim] (must not
// alias residual or block_out).
void hc_expand_f32(const float* block_out, const float* residual, const float* post,
                   const float* comb, size_t hc, size_t dim, float* y);
void hc_expand_f32_ref(const float* block_out, const float* residual, const float* post,
                       const float* comb, size_t hc, size_t dim, float* y);
void hc_expand_f32_avx2(const float* block_out, const float* residual, const float* post,
                        const float* comb, size_t hc, size_t dim, float* y);
void hc_expand_f32_avx512(const float* block_out, const float* residual, const float* post,
                          const float* comb, size_t hc, size_t dim, float* y);

// ============================================================================================
// Compressor and lightning indexer
// ============================================================================================
// Softmax-gated pooling of one compression window, independently per channel d:
//   p_s[d] = exp(score_s[d] - m[d]) / sum_t exp(score_t[d] - m[d]),  m[d] = max_s score_s[d]
//   out[d] = sum_s p_s[d] * kv_s[d]
// kv_rows[s], score_rows[s]: pointers to [dim] f32 rows, s < n_slots (n_slots >= 1). The
// caller adds the learned position bias (`ape` / `position_bias`) into the scores and, for
// CSA's overlapping windows, passes the previous window's first-half rows followed by the
// current window's second-half rows (pointer offsets, no copies). Missing slots may be
// omitted or given score -inf (weight exactly 0); an all -inf channel yields 0. out: [dim].
void compress_pool_f32(const float* const* kv_rows, const float* const* score_rows, size_t n_slots,
                       size_t dim, float* out);
void compress_pool_f32_ref(const float* const* kv_rows, const float* const* score_rows,
                           size_t n_slots, size_t dim, float* out);
void compress_pool_f32_avx2(const float* const* kv_rows, const float* const* score_rows,
                            size_t n_slots, size_t dim, float* out);
void compress_pool_f32_avx512(const float* const* kv_rows, const float* const* score_rows,
                              size_t n_slots, size_t dim, float* out);

// Lightning-indexer score of one query against n_keys compressed keys:
//   out[t] = sum_h w[h] * max(0, q[h] . k[t])
// q: [n_heads, dim] f32, w: [n_heads] f32 = weights_proj(x) * index_head_dim^-1/2 *
// index_n_heads^-1/2 (both scales folded in by the caller), k: [n_keys, dim] f32 rows,
// out: [n_keys] f32. Masking future entries (-inf) is the caller's, before topk_f32.
void indexer_scores_f32(const float* q, const float* w, size_t n_heads, size_t dim, const float* k,
                        size_t n_keys, float* out);
void indexer_scores_f32_ref(const float* q, const float* w, size_t n_heads, size_t dim,
                            const float* k, size_t n_keys, float* out);
void indexer_scores_f32_avx2(const float* q, const float* w, size_t n_heads, size_t dim,
                             const float* k, size_t n_keys, float* out);
void indexer_scores_f32_avx512(const float* q, const float* w, size_t n_heads, size_t dim,
                               const float* k, size_t n_keys, float* out);

// ============================================================================================
// Internal: the vector pieces of topk_f32_<isa>. The driver (threshold choice, exact selection,
// sorting) lives in kernels/ops.cpp, built for the base ISA: the x86/*_avx*.cpp files use only
// intrinsics and raw pointers, never std:: containers or algorithms, because a template
// instantiated under AVX-512 flags is a weak symbol the linker may hand to every other caller.
// ============================================================================================
namespace detail {
// out[b] = max over block b of topk_key(x[b*block .. (b+1)*block)); block % 16 == 0.
void topk_block_max_avx2(const float* x, size_t n_blocks, size_t block, int32_t* out);
void topk_block_max_avx512(const float* x, size_t n_blocks, size_t block, int32_t* out);
// Writes topk_composite(key, i) for the i < n with key = topk_key(x[i]) >= t, in index order,
// stopping after `cap` of them; returns how many there are in total (may exceed cap).
size_t topk_gather_ge_avx2(const float* x, size_t n, int32_t t, uint64_t* out, size_t cap);
size_t topk_gather_ge_avx512(const float* x, size_t n, int32_t t, uint64_t* out, size_t cap);
}  // namespace detail

// (key, index) packed so that a LARGER composite means earlier in top-k order: the key (offset
// to unsigned) in the high word, the bitwise complement of the index in the low word.
inline uint64_t topk_composite(int32_t key, uint32_t index) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(key) ^ 0x80000000u) << 32) |
         static_cast<uint32_t>(~index);
}
inline int32_t topk_composite_index(uint64_t c) {
  return static_cast<int32_t>(~static_cast<uint32_t>(c));
}

}  // namespace dsv4::kernels
