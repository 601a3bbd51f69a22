// Tests for kernels/indexer.h:
//   1. every vector variant the CPU supports against the _ref twin, BIT-exactly, on awkward
//      shapes, with random codes (every nibble value), extreme scale bytes and mixed-sign weights;
//   2. the _ref against an independent float computation over dequantized rows (the record
//      layout of quantize_f4e2m1_blocks + dequant_f4e2m1_to_f32_ref, and indexer_scores_f32_ref);
//   3. the multi-query driver and prepared-query plans against single-query rows, empty key
//      runs, scratch reuse;
//   4. StreamingTopK against topk_f32 over the concatenated scores.
#include "kernels/indexer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "harness.h"
#include "kernels/codecs.h"
#include "kernels/dispatch.h"
#include "kernels/ops.h"

namespace dsv4::kernels {
namespace {

using testing::isa_label;

using ScoreFn = void (*)(const IndexerFp4Query&, const uint8_t*, size_t, float*, IndexerScratch*);
using MultiFn = void (*)(const IndexerFp4Query*, size_t, const uint8_t*, size_t, float*, size_t,
                         IndexerScratch*);

ScoreFn pick_score(Isa isa) {
  return DSV4_ISA_VARIANT(isa, indexer_scores_fp4);
}

MultiFn pick_multi(Isa isa) {
  return DSV4_ISA_VARIANT(isa, indexer_scores_fp4_multi);
}

struct IsaGuard {
  Isa saved = active_isa();
  ~IsaGuard() { set_active_isa_for_testing(saved); }
};

// A query with its own storage.
struct OwnedQuery {
  std::vector<uint8_t> codes, scales;
  std::vector<float> weights;
  size_t n_heads = 0, dim = 0;
  IndexerFp4Query view() const {
    return {codes.data(), scales.data(), weights.data(), n_heads, dim};
  }
};

// Random codes (uniform bytes: all 16 nibble values, both signs of zero), scale bytes uniform in
// [scale_lo, scale_hi], weights uniform in [-1, 1] (mixed signs).
OwnedQuery random_query(size_t n_heads, size_t dim, uint64_t seed, int scale_lo, int scale_hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> sd(scale_lo, scale_hi);
  OwnedQuery q;
  q.n_heads = n_heads;
  q.dim = dim;
  q.codes.resize(n_heads * dim / 2);
  for (auto& c : q.codes) c = static_cast<uint8_t>(rng());
  q.scales.resize(n_heads * dim / 32);
  for (auto& s : q.scales) s = static_cast<uint8_t>(sd(rng));
  q.weights = testing::random_floats(n_heads, seed + 1, -1.f, 1.f);
  return q;
}

std::vector<uint8_t> random_keys(size_t n_keys, size_t dim, uint64_t seed, int scale_lo,
                                 int scale_hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> sd(scale_lo, scale_hi);
  const size_t rb = indexer_fp4_record_bytes(dim);
  // Exactly n_keys records: no slack after the last one, so an over-read shows under ASan.
  std::vector<uint8_t> k(n_keys * rb);
  for (size_t j = 0; j < n_keys; ++j) {
    for (size_t i = 0; i < dim / 2; ++i) k[j * rb + i] = static_cast<uint8_t>(rng());
    for (size_t b = 0; b < dim / 32; ++b) k[j * rb + dim / 2 + b] = static_cast<uint8_t>(sd(rng));
  }
  return k;
}

bool same_bits(const float* a, const float* b, size_t n, size_t* first_diff) {
  for (size_t i = 0; i < n; ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      *first_diff = i;
      return false;
    }
  }
  return true;
}

const size_t kKeyCounts[] = {0, 1, 3, 15, 16, 17, 33, 255, 256, 257, 1000};
const size_t kHeadCounts[] = {1, 3, 8, 64};
const size_t kDims[] = {32, 64, 128, 512};

// =============================================================================================
// 1. Variants against the reference
// =============================================================================================

// Scale bytes in [100, 150] on both sides: every product c * 2^(eq-127) * 2^(ek-127) lies in
// [2^-56, 1152 * 2^46] — exact, normal and finite — so the scores are finite and the vector
// code's fast paths (not the per-key _ref fallback) are what is being compared. Wider bytes
// overflow to inf (then inf - inf = NaN across mixed-sign weights), which says nothing about
// the arithmetic; that domain is covered by ExtremeScalesFallBackBitExactly below.
// Query regimes: 0 = scale bytes uniform in [100, 150] (heads take the general scaling path);
// 1 = [125, 128] (every head within kIndexerScaleSteps: the per-head exponent path);
// 2 = as 1, but every third head has one block 6 steps up and every fifth a subnormal weight
// (both force the general path), so groups of heads mix the two paths.
// Tolerance: none. The vector code performs the same f32 operations in the same order (exact
// integer block sums, one exact scaling per block, block sum by fma of an exact product == add,
// head sum by fma in increasing h; the per-head exponent path differs only by exact powers of
// two, indexer.h), so the bits must agree.
OwnedQuery regime_query(size_t nh, size_t dim, uint64_t seed, int regime) {
  if (regime == 0) return random_query(nh, dim, seed, 100, 150);
  OwnedQuery q = random_query(nh, dim, seed, 125, 128);
  if (regime == 2) {
    const size_t nb = dim / 32;
    for (size_t h = 0; h < nh; h += 3) q.scales[h * nb + (h / 3) % nb] = 134;
    for (size_t h = 1; h < nh; h += 5) q.weights[h] = (h % 2 ? 1 : -1) * 3e-39f;
  }
  return q;
}

TEST(IndexerFp4, VariantsMatchRefBitExactly) {
  for (int regime = 0; regime < 3; ++regime) {
    for (size_t dim : kDims) {
      for (size_t nh : kHeadCounts) {
        const OwnedQuery q = regime_query(nh, dim, 1000 + dim * 7 + nh + regime, regime);
        const auto keys = random_keys(1000, dim, 2000 + dim * 3 + nh, 100, 150);
        // A key's score depends on that key only: the first n of the 1000 are the scores of n.
        std::vector<float> want(1000);
        indexer_scores_fp4_ref(q.view(), keys.data(), 1000, want.data());
        for (float v : want) ASSERT_TRUE(std::isfinite(v));
        for (size_t n : kKeyCounts) {
          for (Isa isa : supported_isas()) {
            SCOPED_TRACE(isa_label(isa) + " regime=" + std::to_string(regime) +
                         " dim=" + std::to_string(dim) + " heads=" + std::to_string(nh) +
                         " keys=" + std::to_string(n));
            IndexerScratch scratch;
            std::vector<float> got(n + 1, -7.f);
            pick_score(isa)(q.view(), keys.data(), n, got.data(), &scratch);
            size_t at = 0;
            EXPECT_TRUE(same_bits(got.data(), want.data(), n, &at))
                << "key " << at << ": " << got[at] << " vs " << want[at];
            EXPECT_EQ(got[n], -7.f) << "wrote past n_keys";
          }
        }
      }
    }
  }
}

// Scale bytes over the whole range (0, 1, 254 and 255 = NaN included), all-zero query blocks and
// all-zero keys (scale byte 1, what quantize_f4e2m1_blocks writes for a zero row): keys outside
// the fast path's exponent range take the per-key _ref path, so the bits still agree, NaN and
// inf included.
TEST(IndexerFp4, ExtremeScalesFallBackBitExactly) {
  const size_t dim = 128, nh = 8, n = 300;
  const size_t rb = indexer_fp4_record_bytes(dim);
  for (int variant = 0; variant < 4; ++variant) {
    OwnedQuery q = random_query(nh, dim, 77 + variant, 110, 140);
    auto keys = random_keys(n, dim, 78 + variant, 100, 150);
    std::mt19937_64 rng(79 + variant);
    const uint8_t specials[] = {0, 1, 2, 127, 128, 129, 130, 200, 220, 240, 254, 255};
    for (size_t j = 0; j < n; j += 7) {  // sprinkle special key scales
      keys[j * rb + dim / 2 + rng() % 4] = specials[rng() % std::size(specials)];
    }
    for (size_t j = 5; j < n; j += 31) {  // zero keys as the quantizer writes them
      std::fill(keys.begin() + static_cast<std::ptrdiff_t>(j * rb),
                keys.begin() + static_cast<std::ptrdiff_t>(j * rb + dim / 2), 0);
      std::fill(keys.begin() + static_cast<std::ptrdiff_t>(j * rb + dim / 2),
                keys.begin() + static_cast<std::ptrdiff_t>((j + 1) * rb), 1);
    }
    if (variant >= 1) {  // an all-zero query block with an absurd scale (ignored: it is +0)
      std::fill(q.codes.begin() + 16, q.codes.begin() + 32, 0x88);  // -0 codes
      q.scales[1] = 250;
    }
    if (variant == 2) q.scales[5] = 0;     // tiny query scale: most keys fall back
    if (variant == 3) q.scales[9] = 0xFF;  // NaN scale: the whole query falls back
    std::vector<float> want(n);
    indexer_scores_fp4_ref(q.view(), keys.data(), n, want.data());
    for (Isa isa : supported_isas()) {
      SCOPED_TRACE(isa_label(isa) + " variant=" + std::to_string(variant));
      std::vector<float> got(n);
      pick_score(isa)(q.view(), keys.data(), n, got.data(), nullptr);
      size_t at = 0;
      EXPECT_TRUE(same_bits(got.data(), want.data(), n, &at))
          << "key " << at << ": " << got[at] << " vs " << want[at];
    }
  }
}

// Every (query nibble, key nibble) pair through one 32-dim block, one head, weight 1, scales 2^0:
// out = relu(32 * v(a) * v(b)) — checks the nibble expansion, the offset correction and the sign
// handling of every code on every tier against a hand-checkable formula.
TEST(IndexerFp4, EveryCodePairHandChecked) {
  constexpr float kV[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  const size_t dim = 32, rb = indexer_fp4_record_bytes(dim);
  std::vector<uint8_t> keys(16 * rb);
  for (size_t b = 0; b < 16; ++b) {
    std::fill(keys.begin() + static_cast<std::ptrdiff_t>(b * rb),
              keys.begin() + static_cast<std::ptrdiff_t>(b * rb + 16),
              static_cast<uint8_t>(b | (b << 4)));
    keys[b * rb + 16] = 127;
  }
  for (Isa isa : supported_isas()) {
    for (size_t a = 0; a < 16; ++a) {
      std::vector<uint8_t> codes(16, static_cast<uint8_t>(a | (a << 4)));
      const uint8_t scale = 127;
      const float w = 1.0f;
      const IndexerFp4Query q{codes.data(), &scale, &w, 1, dim};
      std::vector<float> got(16);
      pick_score(isa)(q, keys.data(), 16, got.data(), nullptr);
      for (size_t b = 0; b < 16; ++b)
        EXPECT_EQ(got[b], std::max(0.0f, 32 * kV[a] * kV[b]))
            << isa_label(isa) << " a=" << a << " b=" << b;
    }
  }
}

// Dim order inside a block and block boundaries: one nonzero dim at a time, in the query and in
// the key, with different scales per block. out = v(q_i) * v(k_i) * 2^(eq_b + ek_b - 254).
TEST(IndexerFp4, SingleDimProbesLandInTheirBlock) {
  const size_t dim = 128, rb = indexer_fp4_record_bytes(dim);
  const uint8_t q_scales[4] = {126, 127, 128, 129};
  const float w = 1.0f;
  std::vector<uint8_t> keys(dim * rb, 0);
  for (size_t i = 0; i < dim; ++i) {  // key i has code 3 (1.5) at dim i only
    keys[i * rb + i / 2] = static_cast<uint8_t>(3u << (4 * (i % 2)));
    for (size_t b = 0; b < 4; ++b) keys[i * rb + dim / 2 + b] = static_cast<uint8_t>(120 + 2 * b);
  }
  for (Isa isa : supported_isas()) {
    for (size_t i = 0; i < dim; i += 5) {  // query: code 5 (3.0) at dim i only
      std::vector<uint8_t> codes(dim / 2, 0);
      codes[i / 2] = static_cast<uint8_t>(5u << (4 * (i % 2)));
      const IndexerFp4Query q{codes.data(), q_scales, &w, 1, dim};
      std::vector<float> got(dim);
      pick_score(isa)(q, keys.data(), dim, got.data(), nullptr);
      const size_t b = i / 32;
      for (size_t j = 0; j < dim; ++j) {
        const float want =
            j == i ? std::ldexp(4.5f, q_scales[b] + 120 + 2 * static_cast<int>(b) - 254) : 0.0f;
        ASSERT_EQ(got[j], want) << isa_label(isa) << " i=" << i << " j=" << j;
      }
    }
  }
}

// =============================================================================================
// 2. The reference against an independent float computation
// =============================================================================================

// Keys and queries quantized by kernels' quantize_f4e2m1_blocks (the block quantizer the KV
// cache's record codec mirrors: codes then ue8m0 scales) and dequantized by
// dequant_f4e2m1_to_f32_ref. The score in double from those rows is exact up to the double
// rounding; the _ref rounds each block addition and each head fma once in f32, so
// |ref - exact| <= (n_blocks + n_heads + 2) * 2^-24 * M with M = sum_h |w_h| * sum_b |d_hb|
// (the standard bound for a recursive sum; every product is exact). indexer_scores_f32_ref on
// the same dequantized rows must agree within its own f32 summation error, bounded the same way
// with dim terms per head.
TEST(IndexerFp4, RefMatchesDequantizedFloatComputation) {
  for (size_t dim : {32u, 128u, 512u}) {
    for (size_t nh : {1u, 8u, 64u}) {
      SCOPED_TRACE("dim=" + std::to_string(dim) + " heads=" + std::to_string(nh));
      const size_t n = 50, nb = dim / 32, rb = indexer_fp4_record_bytes(dim);
      // Rotated-activation-like magnitudes, with a few outliers per row.
      auto kx = testing::random_floats(n * dim, 5 + dim + nh, -2.f, 2.f);
      auto qx = testing::random_floats(nh * dim, 6 + dim + nh, -3.f, 3.f);
      for (size_t i = 0; i < kx.size(); i += 37) kx[i] *= 9.f;
      const auto w = testing::random_floats(nh, 7 + nh, -1.f, 1.f);
      std::vector<uint8_t> keys(n * rb);
      for (size_t j = 0; j < n; ++j)
        quantize_f4e2m1_blocks(kx.data() + j * dim, dim, 32, keys.data() + j * rb,
                               keys.data() + j * rb + dim / 2);
      OwnedQuery q;
      q.n_heads = nh;
      q.dim = dim;
      q.codes.resize(nh * dim / 2);
      q.scales.resize(nh * nb);
      q.weights = w;
      for (size_t h = 0; h < nh; ++h)
        quantize_f4e2m1_blocks(qx.data() + h * dim, dim, 32, q.codes.data() + h * dim / 2,
                               q.scales.data() + h * nb);
      std::vector<float> kd(n * dim), qd(nh * dim);
      for (size_t j = 0; j < n; ++j)
        dequant_f4e2m1_to_f32_ref(keys.data() + j * rb, keys.data() + j * rb + dim / 2,
                                  kd.data() + j * dim, dim);
      for (size_t h = 0; h < nh; ++h)
        dequant_f4e2m1_to_f32_ref(q.codes.data() + h * dim / 2, q.scales.data() + h * nb,
                                  qd.data() + h * dim, dim);
      std::vector<float> got(n), f32(n);
      indexer_scores_fp4_ref(q.view(), keys.data(), n, got.data());
      indexer_scores_f32_ref(qd.data(), w.data(), nh, dim, kd.data(), n, f32.data());
      for (size_t j = 0; j < n; ++j) {
        double exact = 0, mag = 0, mag_dims = 0;
        for (size_t h = 0; h < nh; ++h) {
          double d = 0, dabs = 0, dims_abs = 0;
          for (size_t b = 0; b < nb; ++b) {
            double c = 0;
            for (size_t i = b * 32; i < b * 32 + 32; ++i) {
              const double p = static_cast<double>(qd[h * dim + i]) * kd[j * dim + i];
              c += p;
              dims_abs += std::fabs(p);
            }
            d += c;
            dabs += std::fabs(c);
          }
          exact += w[h] * std::max(0.0, d);
          mag += std::fabs(w[h]) * dabs;
          mag_dims += std::fabs(w[h]) * dims_abs;
        }
        const double u = std::ldexp(1.0, -24);
        EXPECT_LE(std::fabs(got[j] - exact), (nb + nh + 2) * u * mag + 1e-30) << "key " << j;
        EXPECT_LE(std::fabs(f32[j] - got[j]),
                  (nb + nh + 2) * u * mag + (dim + nh + 2) * u * mag_dims + 1e-30)
            << "key " << j;
      }
    }
  }
}

// =============================================================================================
// 3. Multi-query driver, dispatch, empty runs, scratch reuse
// =============================================================================================

TEST(IndexerFp4, MultiEqualsSingleRows) {
  const size_t dim = 128, nh = 64, nq = 5, n = 257, stride = n + 3;
  std::vector<OwnedQuery> owned;
  std::vector<IndexerFp4Query> qs;
  for (size_t t = 0; t < nq; ++t) owned.push_back(random_query(nh, dim, 300 + t, 115, 135));
  for (const auto& o : owned) qs.push_back(o.view());
  const auto keys = random_keys(n, dim, 400, 115, 135);
  for (Isa isa : supported_isas()) {
    SCOPED_TRACE(isa_label(isa));
    IndexerScratch scratch;
    std::vector<float> multi(nq * stride, -9.f);
    pick_multi(isa)(qs.data(), nq, keys.data(), n, multi.data(), stride, &scratch);
    for (size_t t = 0; t < nq; ++t) {
      std::vector<float> single(n);
      indexer_scores_fp4_ref(qs[t], keys.data(), n, single.data());
      size_t at = 0;
      EXPECT_TRUE(same_bits(multi.data() + t * stride, single.data(), n, &at))
          << "query " << t << " key " << at;
      for (size_t j = n; j < stride; ++j) EXPECT_EQ(multi[t * stride + j], -9.f);
    }
    // Zero queries and zero keys write nothing.
    std::vector<float> untouched(4, -9.f);
    pick_multi(isa)(qs.data(), 0, keys.data(), n, untouched.data(), 1, &scratch);
    pick_multi(isa)(qs.data(), nq, keys.data(), 0, untouched.data(), 0, &scratch);
    pick_score(isa)(qs[0], keys.data(), 0, untouched.data(), &scratch);
    EXPECT_EQ(untouched, std::vector<float>(4, -9.f));
  }
}

using PlannedFn = void (*)(const IndexerFp4Plan&, size_t, size_t, const uint8_t*, size_t, float*,
                           size_t, IndexerScratch*);

PlannedFn pick_planned(Isa isa) {
  return DSV4_ISA_VARIANT(isa, indexer_scores_fp4_planned);
}

// A plan prepared in pieces, then scored for a sub-range of its queries over key runs cut at
// awkward places, equals the _ref rows bit for bit; one plan is reused across shapes. The
// queries include one whose scale bytes leave the exact range (the whole-run _ref fallback) and
// an all-zero one.
TEST(IndexerFp4, PlannedQueriesEqualRefOnSplitKeyRuns) {
  IndexerFp4Plan plan;
  for (const auto& [nh, dim] : {std::pair<size_t, size_t>{64, 128}, {3, 32}, {5, 512}}) {
    SCOPED_TRACE("nh=" + std::to_string(nh) + " dim=" + std::to_string(dim));
    const size_t nq = 6, n = 263, rb = indexer_fp4_record_bytes(dim);
    std::vector<OwnedQuery> owned;
    for (size_t t = 0; t < nq; ++t) owned.push_back(random_query(nh, dim, 700 + t, 110, 140));
    for (uint8_t& s : owned[2].scales) s = 250;  // outside the exact range
    std::fill(owned[4].codes.begin(), owned[4].codes.end(), uint8_t{0});
    std::vector<IndexerFp4Query> qs;
    for (const auto& o : owned) qs.push_back(o.view());
    const auto keys = random_keys(n, dim, 800 + dim, 110, 140);
    std::vector<float> want(nq * n);
    for (size_t t = 0; t < nq; ++t) indexer_scores_fp4_ref(qs[t], keys.data(), n, &want[t * n]);
    plan.reset(qs.data(), nq);
    plan.prepare(3, nq);  // out of order, in two pieces
    plan.prepare(0, 3);
    ASSERT_EQ(plan.size(), nq);
    for (Isa isa : supported_isas()) {
      SCOPED_TRACE(isa_label(isa));
      IndexerScratch scratch;
      for (const auto& [t0, m] : {std::pair<size_t, size_t>{0, nq}, {1, 1}, {2, 3}, {5, 1}}) {
        std::vector<float> got(m * n, -9.f);
        // Runs of 1, 15, 16, 17, 100 and the rest.
        size_t j = 0;
        for (size_t len : {1u, 15u, 16u, 17u, 100u, 1000u}) {
          const size_t l = std::min(len, n - j);
          pick_planned(isa)(plan, t0, m, keys.data() + j * rb, l, got.data() + j, n, &scratch);
          j += l;
        }
        ASSERT_EQ(j, n);
        for (size_t t = 0; t < m; ++t) {
          size_t at = 0;
          EXPECT_TRUE(same_bits(&got[t * n], &want[(t0 + t) * n], n, &at))
              << "query " << t0 + t << " key " << at;
        }
      }
      std::vector<float> untouched(4, -9.f);
      pick_planned(isa)(plan, 0, 0, keys.data(), n, untouched.data(), 1, &scratch);
      pick_planned(isa)(plan, 0, nq, keys.data(), 0, untouched.data(), 0, &scratch);
      EXPECT_EQ(untouched, std::vector<float>(4, -9.f));
    }
  }
}

TEST(IndexerFp4, ScratchReusedAcrossShapesAndDispatchUsesEveryTier) {
  IsaGuard guard;
  IndexerScratch scratch;
  for (Isa isa : supported_isas()) {
    set_active_isa_for_testing(isa);
    for (size_t dim : {512u, 32u, 128u}) {
      for (size_t nh : {64u, 3u}) {
        SCOPED_TRACE(isa_label(isa) + " dim=" + std::to_string(dim) + " nh=" + std::to_string(nh));
        const OwnedQuery q = random_query(nh, dim, 500 + dim + nh, 120, 134);
        const auto keys = random_keys(100, dim, 600 + dim, 120, 134);
        std::vector<float> got(100), want(100);
        indexer_scores_fp4(q.view(), keys.data(), 100, got.data(), &scratch);
        indexer_scores_fp4_ref(q.view(), keys.data(), 100, want.data());
        size_t at = 0;
        EXPECT_TRUE(same_bits(got.data(), want.data(), 100, &at)) << "key " << at;
        const IndexerFp4Query view = q.view();
        indexer_scores_fp4_multi(&view, 1, keys.data(), 100, got.data(), 100, &scratch);
        EXPECT_TRUE(same_bits(got.data(), want.data(), 100, &at)) << "multi key " << at;
      }
    }
  }
}

// =============================================================================================
// 4. StreamingTopK
// =============================================================================================

// Scores from a small set of values (many ties), with NaN, +-inf, -0 and +0 mixed in.
std::vector<float> tie_heavy_scores(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), -0.0f, 0.0f};
  std::vector<float> x(n);
  for (auto& v : x) {
    const uint64_t r = rng() % 100;
    if (r < 3)
      v = specials[rng() % std::size(specials)];
    else if (r < 60)
      v = static_cast<float>(static_cast<int>(rng() % 21) - 10) * 0.25f;  // ties
    else
      v = std::ldexp(static_cast<float>(rng() % 1000000) - 500000.0f, -17);
  }
  return x;
}

TEST(StreamingTopK, EqualsTopKOverConcatenation) {
  std::mt19937_64 rng(42);
  for (size_t n : {1u, 2u, 17u, 300u, 1000u, 5000u}) {
    for (size_t k : {0u, 1u, 2u, 5u, 64u, 512u, 5000u}) {
      for (int order = 0; order < 2; ++order) {  // runs in index order, then shuffled
        SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k) +
                     " order=" + std::to_string(order));
        const auto x = tie_heavy_scores(n, n * 31 + k);
        std::vector<std::pair<size_t, size_t>> runs;  // (first, length), awkward lengths
        for (size_t first = 0; first < n;) {
          const size_t len = std::min(n - first, static_cast<size_t>(rng() % 300));
          runs.push_back({first, len});  // zero-length runs included
          first += len;
        }
        if (order == 1) std::shuffle(runs.begin(), runs.end(), rng);
        StreamingTopK s;
        s.reset(k);
        for (auto [first, len] : runs) s.push(x.data() + first, len, static_cast<int64_t>(first));
        const size_t kk = std::min(k, n);
        std::vector<int32_t> got(kk + 1, -5), want(kk);
        EXPECT_EQ(s.finish(got.data()), kk);
        EXPECT_EQ(got[kk], -5);
        topk_f32_ref(x.data(), n, kk, want.data());
        got.resize(kk);
        EXPECT_EQ(got, want);
      }
    }
  }
}

// A monotonically rising stream is the worst case for the threshold (every score enters):
// still exact, and the candidate set is compacted (finish after many compactions).
TEST(StreamingTopK, RisingAndFallingStreams) {
  for (bool rising : {true, false}) {
    const size_t n = 10000, k = 100;
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(rising ? i : n - i);
    StreamingTopK s;
    s.reset(k);
    for (size_t first = 0; first < n; first += 16)
      s.push(x.data() + first, std::min<size_t>(16, n - first), static_cast<int64_t>(first));
    std::vector<int32_t> got(k), want(k);
    EXPECT_EQ(s.finish(got.data()), k);
    topk_f32_ref(x.data(), n, k, want.data());
    EXPECT_EQ(got, want);
  }
}

// End to end as chunked prefill uses it: scores of key tiles from the dispatched kernel pushed
// into a StreamingTopK equal topk_f32 over one call on all keys.
TEST(StreamingTopK, TilesOfIndexerScoresEqualOneShotTopK) {
  const size_t dim = 128, nh = 8, n = 3000, k = 64;
  const OwnedQuery q = random_query(nh, dim, 900, 120, 134);
  const auto keys = random_keys(n, dim, 901, 120, 134);
  const size_t rb = indexer_fp4_record_bytes(dim);
  std::vector<float> all(n);
  indexer_scores_fp4(q.view(), keys.data(), n, all.data());
  std::vector<int32_t> want(k);
  topk_f32(all.data(), n, k, want.data());
  StreamingTopK s;
  s.reset(k);
  std::vector<float> tile(333);
  IndexerScratch scratch;
  for (size_t first = 0; first < n; first += 333) {
    const size_t len = std::min<size_t>(333, n - first);
    indexer_scores_fp4(q.view(), keys.data() + first * rb, len, tile.data(), &scratch);
    s.push(tile.data(), len, static_cast<int64_t>(first));
  }
  std::vector<int32_t> got(k);
  EXPECT_EQ(s.finish(got.data()), k);
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace dsv4::kernels
