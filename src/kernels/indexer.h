// kernels/indexer.h — DeepSeek-V4 lightning-indexer scoring directly on FP4 records, and an
// exact streaming top-k for chunked prefill.
//
// Purpose: at 1M tokens a CSA layer scores 262,144 compressed entries per generated token
// (64 heads x 128 dims: ~2.1 G multiply-adds). Both operands are FP4 e2m1 with one ue8m0 scale
// per 32 dims (DeepSeek-V4 inference/model.py: the indexer query and the indexer compressor's
// keys are Hadamard-rotated, then fp4_act_quant'ed), so every product of two e2m1 values is an
// integer multiple of 1/4 and a block's dot product is an exact integer: the kernels compute it
// with integer dot instructions (AVX-512 VNNI vpdpbusd; AVX2 vpmaddubsw/vpmaddwd) on the codes
// expanded to int8 — never by dequantizing key rows to f32.
//
// Record layout (kv/layout.h record::V4IndexerKeyFp4 generalised to `dim`, restated here because
// kernels may not include kv; tests/kernels/indexer_test.cpp checks it against the kernels'
// quantize_f4e2m1_blocks, which tests/model checks against kv's record codec):
//   [0, dim/2)              f4_e2m1 codes, element 2i in the LOW nibble of byte i
//   [dim/2, dim/2 + dim/32) ue8m0 scales (value 2^(e - 127)), one per 32 consecutive dims
//   record bytes = dim/2 + dim/32 (68 for dim 128). Records of a run are contiguous; no
//   alignment is required (the 68-byte stride makes most records unaligned anyway).
// Query layout (per head h): codes [n_heads, dim/2] and scales [n_heads, dim/32], same encoding;
// produced by quantize_f4e2m1_blocks (kernels/codecs.h) on the rotated f32 query.
//
// Score (exact definition; the _ref twin evaluates it literally):
//   c[h,j,b] = sum_{i in block b} v(q[h,i]) * v(k[j,i])      v = e2m1 value (exact: an integer/4)
//   d[h,j]   = sum_{b = 0,1,...} (c[h,j,b] * 2^(eq[h,b]-127)) * 2^(ek[j,b]-127)   (f32, blocks
//              added in increasing b starting from +0)
//   out[j]   = sum_{h = 0 .. n_heads-1} w[h] * relu(d[h,j])  (f32, fma in increasing h from +0;
//              relu(x) = x > 0 ? x : +0, so NaN -> 0)
// dim % 32 == 0, dim <= 512; 1 <= n_heads <= 128.
//
// Exactness and the vector variants: c is an exact f32 (|c| <= 32 * 36). When the scale bytes
// keep every product c * 2^(eq-127) * 2^(ek-127) exact, normal and finite — checked per query
// (every eq <= 243) and per key (every ek in [130 - min eq, min(254, 370 - max eq)]; query
// blocks whose codes are all zero contribute +0 whatever their scale and are left out of the
// min/max) — the _avx2/_avx512 variants evaluate the same f32 roundings in the same order
// (exact integer block sums, one exact scaling per block, the block additions in increasing b,
// fma over heads in increasing h) and are BIT-IDENTICAL to the _ref. Keys outside that range (never
// produced by quantize_f4e2m1_blocks on sane data, but e.g. an all-zero key row has scale byte 1)
// are scored by the _ref code for that key, so every variant is bit-identical to the _ref for all
// inputs.
//
// Invariants: pure functions, no allocation on the hot path once `IndexerScratch` is warm, no
// threads (callers split the key range: the score of a key depends on that key only).
// Non-goals: dequantized-f32 keys (see indexer_scores_f32 in kernels/ops.h), other key formats.
// Rejected: dequantizing a key tile to f32/bf16 and using FMA/VDPBF16PS (4-8x the work per MAC
// of vpdpbusd on int8); lanes = heads (needs a horizontal reduction per key and per-head relu
// across lanes; lanes = keys keeps relu and the head sum lane-wise, in the reference order);
// vpgatherdd to build key tiles (339 cycles per 16 keys on Zen 4, against 58 for 16 loads and
// a 16x16 shuffle transpose). Measured figures: docs/kernels-indexer.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dsv4::kernels {

// Bytes of one FP4 indexer key / query head with `dim` dims (dim/2 + dim/32).
static constexpr size_t indexer_fp4_record_bytes(size_t dim) {
  return dim / 2 + dim / 32;
}

// One query token, FP4-quantized.
struct IndexerFp4Query {
  const uint8_t* codes = nullptr;   // [n_heads, dim/2] packed e2m1
  const uint8_t* scales = nullptr;  // [n_heads, dim/32] ue8m0
  const float* weights = nullptr;   // [n_heads] = weights_proj(x) * dim^-1/2 * n_heads^-1/2
  size_t n_heads = 0, dim = 0;
};

// Reusable buffers (prepared queries, expanded key tiles). Grows on first use, then stable.
struct IndexerScratch {
  std::vector<uint8_t> bytes;
};

// out[j] for keys j in [0, n_keys): `keys` points at n_keys contiguous records. n_keys may be 0.
void indexer_scores_fp4(const IndexerFp4Query& q, const uint8_t* keys, size_t n_keys, float* out,
                        IndexerScratch* scratch = nullptr);
void indexer_scores_fp4_ref(const IndexerFp4Query& q, const uint8_t* keys, size_t n_keys,
                            float* out, IndexerScratch* scratch = nullptr);
void indexer_scores_fp4_avx2(const IndexerFp4Query& q, const uint8_t* keys, size_t n_keys,
                             float* out, IndexerScratch* scratch = nullptr);
void indexer_scores_fp4_avx512(const IndexerFp4Query& q, const uint8_t* keys, size_t n_keys,
                               float* out, IndexerScratch* scratch = nullptr);

// Several queries against one run of keys (chunked prefill: each expanded key tile is reused by
// every query). out: [n_queries, out_stride] f32, row t = indexer_scores_fp4(qs[t], keys, ...).
// All queries must have the same n_heads and dim. Causal masking is the caller's (it passes each
// query's visible count to StreamingTopK).
void indexer_scores_fp4_multi(const IndexerFp4Query* qs, size_t n_queries, const uint8_t* keys,
                              size_t n_keys, float* out, size_t out_stride,
                              IndexerScratch* scratch = nullptr);
// The same per ISA tier (tests and benchmarks; only call a tier the CPU supports).
void indexer_scores_fp4_multi_ref(const IndexerFp4Query* qs, size_t n_queries, const uint8_t* keys,
                                  size_t n_keys, float* out, size_t out_stride,
                                  IndexerScratch* scratch = nullptr);
void indexer_scores_fp4_multi_avx2(const IndexerFp4Query* qs, size_t n_queries, const uint8_t* keys,
                                   size_t n_keys, float* out, size_t out_stride,
                                   IndexerScratch* scratch = nullptr);
void indexer_scores_fp4_multi_avx512(const IndexerFp4Query* qs, size_t n_queries,
                                     const uint8_t* keys, size_t n_keys, float* out,
                                     size_t out_stride, IndexerScratch* scratch = nullptr);

// Exact top-k over scores that arrive in runs (key tiles): after push()es covering indices
// [0, n), finish() writes exactly what topk_f32 (kernels/ops.h) writes for the concatenated
// scores: the k best under "larger score first, ties to the lower index", sorted that way
// (NaN above +inf, -0 == +0: the order of topk_key). Runs may arrive in any order; indices need
// not be contiguous (the result is the top-k of the pushed (index, score) pairs).
// Memory: at most 2k candidates (compacted to the best k with nth_element whenever 2k are
// held), never O(n). Scores below the current k-th best key are rejected with one compare.
class StreamingTopK {
 public:
  void reset(size_t k);
  // scores[i] is the score of index first_index + i (0 <= index < 2^31); runs must not overlap.
  void push(const float* scores, size_t n, int64_t first_index);
  // Writes min(k, pushed) indices; returns how many. The state is then spent: reset() again.
  size_t finish(int32_t* out);

 private:
  void compact();  // keep the best k of cand_, set threshold_

  size_t k_ = 0;
  std::vector<uint64_t> cand_;   // topk_composite(key, index) of the current candidates
  uint64_t threshold_ = 0;       // the k-th best composite so far: anything below cannot enter
  float threshold_f_ = 0.0f;     // its score (a cheaper first test; NaN when the key is NaN's)
  bool have_threshold_ = false;  // valid once k candidates were held
};

// ============================================================================================
// Internal: the pieces of the vector variants. The drivers (query preparation, scratch sizing)
// live in kernels/indexer.cpp, built for the base ISA; the x86/indexer_*.cpp files use only
// intrinsics and raw pointers (no std:: templates: see the note in kernels/ops.h, "Internal").
// ============================================================================================
namespace detail {

// A query rewritten for the integer kernels. Key codes are expanded to u8 = 2*v + 12 (0..24)
// and query codes to s8 = 2*v (-12..12), so sum(u8 * s8) over a block = 4*c + 12*sum(s8).
// Dword t of a head (4 int8) pairs with dword t of an expanded key: t = 2p + hi, p = packed
// dword index of the record (codes bytes [4p, 4p+4)), hi = 0 for the LOW nibbles of those four
// bytes (dims 8p + 0, 2, 4, 6), 1 for the high nibbles (dims 8p + 1, 3, 5, 7). Block b = the
// dwords [8b, 8b + 8).
//
// Scaling: block b of head h contributes P = 4c * 2^(eq+ek-256), exact; the kernels compute it
// as vscalefps(f32(4c), (ek - 127) + (eq - 129)) (AVX-512; exact while P is normal) or by
// adding (eq+ek-256) << 23 to the f32 bits of 1.0 and multiplying (AVX2), then add it to d.
// Why vscalefps and not an fma with a scale vector: on AMD Zen 4 a zmm FMA/MUL occupies the
// same pipes as vpdpbusd (each costs one vpdpbusd slot), while vcvtdq2ps, vscalefps and vaddps
// run beside it (measured: the fma tail costs 13% of the VNNI peak, the scalef tail 2-3%).
struct IndexerFp4Prepared {
  const IndexerFp4Query* src = nullptr;     // for the per-key _ref fallback
  const int8_t* q = nullptr;                // [n_heads, dim] s8 in the dword order above
  const int32_t* offset = nullptr;          // [n_heads, dim/32] = -12 * sum of the block's s8
  const float* scale_exp = nullptr;         // [n_heads, dim/32] = eq - 129 (zero blocks: see
                                            // indexer.cpp), so 2^(scale_exp + ek - 127) = P / 4c
  int32_t key_exp_lo = 0, key_exp_hi = -1;  // fast path iff every ek of a key is in [lo, hi]
};

// Bytes of tile scratch the ISA kernels need (64-byte aligned pointer).
size_t indexer_fp4_tile_bytes(size_t dim);

// out[t * out_stride + j] for the prepared queries t < n_queries (same n_heads, dim) and keys
// j < n_keys, except queries with key_exp_lo > key_exp_hi: those rows are left untouched (the
// driver scores them with the _ref code). `tile`: indexer_fp4_tile_bytes(dim) bytes, 64-byte
// aligned.
void indexer_fp4_run_avx2(const IndexerFp4Prepared* qs, size_t n_queries, const uint8_t* keys,
                          size_t n_keys, float* out, size_t out_stride, uint8_t* tile);
void indexer_fp4_run_avx512(const IndexerFp4Prepared* qs, size_t n_queries, const uint8_t* keys,
                            size_t n_keys, float* out, size_t out_stride, uint8_t* tile);

}  // namespace detail

// Queries prepared once for the integer kernels and reused for any number of key runs. Every
// indexer_scores_fp4* call otherwise rebuilds its queries (s8 codes, block offsets, scale
// exponents: ~5 us for 64 heads x 128 dims on Zen 4, bench/indexer_bench indexer_prepare),
// once per call: decode splits one query's keys into 256 slices at 1M context and prefill
// streams 64 key tiles per query at 64K. Moving it into a plan took one CSA layer's decode at 1M
// from 7.96 to 6.33 ms on 2 threads (`dsv4 bench --layer csa --ctx 1M`). A plan is ISA-independent
// (the _ref variant reads the original queries) and holds its own buffers (no allocation after the
// first reset at a size).
class IndexerFp4Plan {
 public:
  // Sizes the plan for qs[0, n) (copied by value: the code, scale and weight arrays they point
  // at must outlive the plan's use) and invalidates earlier preparations. All queries must have
  // the same n_heads and dim.
  void reset(const IndexerFp4Query* qs, size_t n);
  // Prepares queries [t0, t1) of the last reset. Disjoint ranges may be prepared concurrently
  // from different threads; a query must be prepared before it is scored.
  void prepare(size_t t0, size_t t1);
  size_t size() const { return queries_.size(); }
  uint64_t capacity_bytes() const {
    return mem_.capacity() + queries_.capacity() * sizeof(IndexerFp4Query) +
           prepared_.capacity() * sizeof(detail::IndexerFp4Prepared);
  }
  const IndexerFp4Query* queries() const { return queries_.data(); }
  const detail::IndexerFp4Prepared* prepared() const { return prepared_.data(); }

 private:
  std::vector<IndexerFp4Query> queries_;
  std::vector<detail::IndexerFp4Prepared> prepared_;
  std::vector<uint8_t> mem_;  // the prepared arrays, per_query_ bytes per query, 64-B aligned
  size_t per_query_ = 0;
};

// indexer_scores_fp4_multi for the planned queries [t0, t0 + n_queries) (all prepared):
// out[t * out_stride + j], t < n_queries. Same results bit for bit; `scratch` holds only the
// expanded key tile here.
void indexer_scores_fp4_planned(const IndexerFp4Plan& plan, size_t t0, size_t n_queries,
                                const uint8_t* keys, size_t n_keys, float* out, size_t out_stride,
                                IndexerScratch* scratch = nullptr);
void indexer_scores_fp4_planned_ref(const IndexerFp4Plan& plan, size_t t0, size_t n_queries,
                                    const uint8_t* keys, size_t n_keys, float* out,
                                    size_t out_stride, IndexerScratch* scratch = nullptr);
void indexer_scores_fp4_planned_avx2(const IndexerFp4Plan& plan, size_t t0, size_t n_queries,
                                     const uint8_t* keys, size_t n_keys, float* out,
                                     size_t out_stride, IndexerScratch* scratch = nullptr);
void indexer_scores_fp4_planned_avx512(const IndexerFp4Plan& plan, size_t t0, size_t n_queries,
                                       const uint8_t* keys, size_t n_keys, float* out,
                                       size_t out_stride, IndexerScratch* scratch = nullptr);

}  // namespace dsv4::kernels
