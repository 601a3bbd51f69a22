// kernels/indexer.cpp — dispatching entry points of kernels/indexer.h, the query preparation
// shared by the vector variants (scratch sizing, the s8 query, block offsets, scale bits and the
// key-scale range of the exact fast path) and StreamingTopK. Built for the base ISA.
#include "kernels/indexer.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <limits>
#include <new>

#include "base/check.h"
#include "kernels/codecs.h"
#include "kernels/dispatch.h"
#include "kernels/ops.h"

namespace dsv4::kernels {
namespace {

constexpr size_t kAlign = 64;

size_t round_up(size_t n, size_t a) {
  return (n + a - 1) / a * a;
}

// 2 * e2m1 value of a code, an integer in [-12, 12].
constexpr int8_t kTwiceE2m1[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// Bytes of one prepared query's arrays (s8 codes; offsets; scale exponents), each 64-byte
// aligned.
size_t prepared_bytes(size_t n_heads, size_t dim) {
  const size_t nb = dim / kF4Block;
  return round_up(n_heads * dim, kAlign) + 2 * round_up(n_heads * nb * sizeof(int32_t), kAlign);
}

void check_shape(const IndexerFp4Query& q) {
  DSV4_CHECK(q.dim % kF4Block == 0 && q.dim > 0 && q.dim <= 512);
  DSV4_CHECK(q.n_heads >= 1 && q.n_heads <= 128);
}

// Fills the arrays at `mem` (prepared_bytes) and returns the view on them. See
// detail::IndexerFp4Prepared and the exactness note in indexer.h for the ranges.
detail::IndexerFp4Prepared prepare(const IndexerFp4Query& q, uint8_t* mem) {
  const size_t dim = q.dim, nb = dim / kF4Block, nh = q.n_heads;
  auto* s8 = reinterpret_cast<int8_t*>(mem);
  mem += round_up(nh * dim, kAlign);
  auto* offset = reinterpret_cast<int32_t*>(mem);
  auto* scale_exp = reinterpret_cast<float*>(mem + round_up(nh * nb * sizeof(int32_t), kAlign));
  bool zero[128 * 16];  // [n_heads, n_blocks]: every code of the block is +-0
  int eq_min = 255, eq_max = -1;
  bool exact_ok = true;
  for (size_t h = 0; h < nh; ++h) {
    const uint8_t* codes = q.codes + h * (dim / 2);
    int8_t* dst = s8 + h * dim;
    for (size_t b = 0; b < nb; ++b) {
      // Packed dword p -> s8 dwords 2p (low nibbles) and 2p + 1 (high nibbles).
      int32_t sum = 0;
      uint8_t any = 0;
      for (size_t p = 4 * b; p < 4 * b + 4; ++p) {
        for (size_t m = 0; m < 4; ++m) {
          const uint8_t byte = codes[4 * p + m];
          const int8_t lo = kTwiceE2m1[byte & 0xF], hi = kTwiceE2m1[byte >> 4];
          dst[8 * p + m] = lo;
          dst[8 * p + 4 + m] = hi;
          sum += lo + hi;
          any |= static_cast<uint8_t>(byte & 0x77);  // a nonzero magnitude
        }
      }
      offset[h * nb + b] = -12 * sum;
      zero[h * nb + b] = any == 0;
      const int eq = q.scales[h * nb + b];
      if (eq == 0xFF) exact_ok = false;  // a NaN scale: 0 * NaN is NaN even for zero codes
      if (!any) continue;                // contributes +0 whatever its (finite) scale
      if (eq > 243) exact_ok = false;    // c * 2^(eq-127) could overflow
      eq_min = std::min(eq_min, eq);
      eq_max = std::max(eq_max, eq);
    }
  }
  if (eq_max < 0) eq_min = eq_max = 127;  // all-zero query: any finite scale gives +0
  for (size_t i = 0; i < nh * nb; ++i) {
    // Zero blocks take eq_min so that their 0 * 2^(eq+ek-256) stays 0 * (a normal f32).
    const int eq = zero[i] ? eq_min : q.scales[i];
    scale_exp[i] = static_cast<float>(eq - 129);
  }
  detail::IndexerFp4Prepared r;
  r.src = &q;
  r.q = s8;
  r.offset = offset;
  r.scale_exp = scale_exp;
  if (exact_ok) {
    // 2^(eq+ek-256) normal and every product finite, for every nonzero block (indexer.h).
    r.key_exp_lo = std::max(0, 130 - eq_min);
    r.key_exp_hi = std::min(254, 370 - eq_max);
  }  // else lo > hi: every key takes the _ref path
  return r;
}

using RunFn = void (*)(const detail::IndexerFp4Prepared*, size_t, const uint8_t*, size_t, float*,
                       size_t, uint8_t*);

// Queries outside the exact range altogether get the _ref code on the whole run here; the ISA
// bodies skip them. Returns whether any query is left for the vector body.
bool score_inexact_queries_ref(const detail::IndexerFp4Prepared* qs, size_t n_queries,
                               const uint8_t* keys, size_t n_keys, float* out, size_t out_stride) {
  size_t n_fast = 0;
  for (size_t t = 0; t < n_queries; ++t) {
    if (qs[t].key_exp_lo > qs[t].key_exp_hi)
      indexer_scores_fp4_ref(*qs[t].src, keys, n_keys, out + t * out_stride, nullptr);
    else
      ++n_fast;
  }
  return n_fast > 0;
}

void run_vector(RunFn fn, const IndexerFp4Query* qs, size_t n_queries, const uint8_t* keys,
                size_t n_keys, float* out, size_t out_stride, IndexerScratch* scratch) {
  if (n_queries == 0) return;
  for (size_t t = 0; t < n_queries; ++t) {
    check_shape(qs[t]);
    DSV4_CHECK(qs[t].n_heads == qs[0].n_heads && qs[t].dim == qs[0].dim);
  }
  if (n_keys == 0) return;
  DSV4_CHECK(n_queries == 1 || out_stride >= n_keys);
  const size_t nh = qs[0].n_heads, dim = qs[0].dim;
  const size_t head_bytes = round_up(n_queries * sizeof(detail::IndexerFp4Prepared), kAlign);
  const size_t tile_bytes = round_up(detail::indexer_fp4_tile_bytes(dim), kAlign);
  const size_t per_query = prepared_bytes(nh, dim);
  const size_t total = head_bytes + tile_bytes + n_queries * per_query + kAlign;
  IndexerScratch local;
  IndexerScratch& s = scratch ? *scratch : local;
  if (s.bytes.size() < total) s.bytes.resize(total);
  uint8_t* base = s.bytes.data();
  base += (kAlign - reinterpret_cast<uintptr_t>(base) % kAlign) % kAlign;
  auto* prepared = reinterpret_cast<detail::IndexerFp4Prepared*>(base);
  uint8_t* tile = base + head_bytes;
  for (size_t t = 0; t < n_queries; ++t)
    new (&prepared[t])
        detail::IndexerFp4Prepared(prepare(qs[t], base + head_bytes + tile_bytes + t * per_query));
  if (score_inexact_queries_ref(prepared, n_queries, keys, n_keys, out, out_stride))
    fn(prepared, n_queries, keys, n_keys, out, out_stride, tile);
}

void run_planned(RunFn fn, const IndexerFp4Plan& plan, size_t t0, size_t n_queries,
                 const uint8_t* keys, size_t n_keys, float* out, size_t out_stride,
                 IndexerScratch* scratch) {
  DSV4_CHECK(t0 + n_queries <= plan.size());
  if (n_queries == 0 || n_keys == 0) return;
  DSV4_CHECK(n_queries == 1 || out_stride >= n_keys);
  const size_t tile_bytes = detail::indexer_fp4_tile_bytes(plan.queries()[0].dim) + kAlign;
  IndexerScratch local;
  IndexerScratch& s = scratch ? *scratch : local;
  if (s.bytes.size() < tile_bytes) s.bytes.resize(tile_bytes);
  uint8_t* tile = s.bytes.data();
  tile += (kAlign - reinterpret_cast<uintptr_t>(tile) % kAlign) % kAlign;
  const detail::IndexerFp4Prepared* qs = plan.prepared() + t0;
  if (score_inexact_queries_ref(qs, n_queries, keys, n_keys, out, out_stride))
    fn(qs, n_queries, keys, n_keys, out, out_stride, tile);
}

}  // namespace

void IndexerFp4Plan::reset(const IndexerFp4Query* qs, size_t n) {
  for (size_t t = 0; t < n; ++t) {
    check_shape(qs[t]);
    DSV4_CHECK(qs[t].n_heads == qs[0].n_heads && qs[t].dim == qs[0].dim);
  }
  queries_.assign(qs, qs + n);
  prepared_.assign(n, detail::IndexerFp4Prepared{});
  per_query_ = n ? prepared_bytes(qs[0].n_heads, qs[0].dim) : 0;
  if (mem_.size() < n * per_query_ + kAlign) mem_.resize(n * per_query_ + kAlign);
}

void IndexerFp4Plan::prepare(size_t t0, size_t t1) {
  DSV4_CHECK(t0 <= t1 && t1 <= queries_.size());
  uint8_t* base = mem_.data();
  base += (kAlign - reinterpret_cast<uintptr_t>(base) % kAlign) % kAlign;
  for (size_t t = t0; t < t1; ++t)
    prepared_[t] = kernels::prepare(queries_[t], base + t * per_query_);
}

size_t detail::indexer_fp4_tile_bytes(size_t dim) {
  // Expanded key vectors [dim/4] and key scale exponents [dim/32], 64 bytes each (AVX-512:
  // 16 keys; AVX2 uses half).
  return (dim / 4 + dim / kF4Block) * 64;
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------
void indexer_scores_fp4_avx2(const IndexerFp4Query& q, const uint8_t* keys, size_t n_keys,
                             float* out, IndexerScratch* scratch) {
  run_vector(detail::indexer_fp4_run_avx2, &q, 1, keys, n_keys, out, n_keys, scratch);
}
void indexer_scores_fp4_avx512(const IndexerFp4Query& q, const uint8_t* keys, size_t n_keys,
                               float* out, IndexerScratch* scratch) {
  run_vector(detail::indexer_fp4_run_avx512, &q, 1, keys, n_keys, out, n_keys, scratch);
}
void indexer_scores_fp4_multi_avx2(const IndexerFp4Query* qs, size_t n_queries, const uint8_t* keys,
                                   size_t n_keys, float* out, size_t out_stride,
                                   IndexerScratch* scratch) {
  run_vector(detail::indexer_fp4_run_avx2, qs, n_queries, keys, n_keys, out, out_stride, scratch);
}
void indexer_scores_fp4_multi_avx512(const IndexerFp4Query* qs, size_t n_queries,
                                     const uint8_t* keys, size_t n_keys, float* out,
                                     size_t out_stride, IndexerScratch* scratch) {
  run_vector(detail::indexer_fp4_run_avx512, qs, n_queries, keys, n_keys, out, out_stride, scratch);
}

void indexer_scores_fp4_planned_ref(const IndexerFp4Plan& plan, size_t t0, size_t n_queries,
                                    const uint8_t* keys, size_t n_keys, float* out,
                                    size_t out_stride, IndexerScratch* scratch) {
  DSV4_CHECK(t0 + n_queries <= plan.size());
  indexer_scores_fp4_multi_ref(plan.queries() + t0, n_queries, keys, n_keys, out, out_stride,
                               scratch);
}
void indexer_scores_fp4_planned_avx2(const IndexerFp4Plan& plan, size_t t0, size_t n_queries,
                                     const uint8_t* keys, size_t n_keys, float* out,
                                     size_t out_stride, IndexerScratch* scratch) {
  run_planned(detail::indexer_fp4_run_avx2, plan, t0, n_queries, keys, n_keys, out, out_stride,
              scratch);
}
void indexer_scores_fp4_planned_avx512(const IndexerFp4Plan& plan, size_t t0, size_t n_queries,
                                       const uint8_t* keys, size_t n_keys, float* out,
                                       size_t out_stride, IndexerScratch* scratch) {
  run_planned(detail::indexer_fp4_run_avx512, plan, t0, n_queries, keys, n_keys, out, out_stride,
              scratch);
}

void indexer_scores_fp4_planned(const IndexerFp4Plan& plan, size_t t0, size_t n_queries,
                                const uint8_t* keys, size_t n_keys, float* out, size_t out_stride,
                                IndexerScratch* scratch) {
  DSV4_DISPATCH_ISA(indexer_scores_fp4_planned, plan, t0, n_queries, keys, n_keys, out, out_stride,
                    scratch);
}

void indexer_scores_fp4(const IndexerFp4Query& q, const uint8_t* keys, size_t n_keys, float* out,
                        IndexerScratch* scratch) {
  DSV4_DISPATCH_ISA(indexer_scores_fp4, q, keys, n_keys, out, scratch);
}

void indexer_scores_fp4_multi(const IndexerFp4Query* qs, size_t n_queries, const uint8_t* keys,
                              size_t n_keys, float* out, size_t out_stride,
                              IndexerScratch* scratch) {
  DSV4_DISPATCH_ISA(indexer_scores_fp4_multi, qs, n_queries, keys, n_keys, out, out_stride,
                    scratch);
}

// ---------------------------------------------------------------------------------------------
// StreamingTopK
// ---------------------------------------------------------------------------------------------
namespace {

// The float whose topk_key is `key` (the inverse of topk_key on non-NaN keys).
float key_to_float(int32_t key) {
  const int32_t bits = key ^ ((key >> 31) & 0x7fffffff);
  return std::bit_cast<float>(bits);
}

}  // namespace

void StreamingTopK::reset(size_t k) {
  k_ = k;
  cand_.clear();
  cand_.reserve(2 * k);
  threshold_ = 0;
  have_threshold_ = false;
}

void StreamingTopK::compact() {
  std::nth_element(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(k_ - 1), cand_.end(),
                   std::greater<uint64_t>());
  cand_.resize(k_);
  threshold_ = cand_[k_ - 1];  // the k-th best so far: anything below it cannot enter
  threshold_f_ = key_to_float(static_cast<int32_t>((threshold_ >> 32) ^ 0x80000000u));
  have_threshold_ = true;
}

void StreamingTopK::push(const float* scores, size_t n, int64_t first_index) {
  if (k_ == 0 || n == 0) return;
  DSV4_CHECK(first_index >= 0 &&
             first_index + static_cast<int64_t>(n) - 1 <= std::numeric_limits<int32_t>::max());
  const auto base = static_cast<uint32_t>(first_index);
  constexpr size_t kChunk = 16;
  for (size_t c = 0; c < n; c += kChunk) {
    const size_t e = std::min(n, c + kChunk);
    if (have_threshold_) {
      // Once k candidates are held almost every chunk is below the threshold: one branch-free
      // (vectorizable) pass rejects it. NaN never rejects (`<` is false), nor does a NaN
      // threshold.
      int any = 0;
      const float t = threshold_f_;
      for (size_t i = c; i < e; ++i) any |= scores[i] < t ? 0 : 1;
      if (!any) continue;
    }
    for (size_t i = c; i < e; ++i) {
      if (have_threshold_ && scores[i] < threshold_f_) continue;
      const uint64_t comp = topk_composite(topk_key(scores[i]), base + static_cast<uint32_t>(i));
      if (have_threshold_ && comp < threshold_) continue;
      cand_.push_back(comp);
      if (cand_.size() >= 2 * k_) compact();
    }
  }
}

size_t StreamingTopK::finish(int32_t* out) {
  const size_t n = std::min(k_, cand_.size());
  if (n == 0) return 0;
  if (cand_.size() > n)
    std::nth_element(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(n - 1), cand_.end(),
                     std::greater<uint64_t>());
  std::sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(n),
            std::greater<uint64_t>());
  for (size_t i = 0; i < n; ++i) out[i] = topk_composite_index(cand_[i]);
  return n;
}

}  // namespace dsv4::kernels
