// Tests for kernels/ops.h in three layers:
//   1. every vector variant the CPU supports against its _ref twin on awkward sizes, each with a
//      tolerance justified next to it;
//   2. the _ref semantics pinned by hand-checkable facts and double-precision formulas;
//   3. golden vectors produced by the transformers DeepSeek-V4 modules themselves
//      (tests/data/ops/, regenerate with tools/reference/make_ops_vectors.py).
#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"
#include "kernels/dispatch.h"

namespace dsv4::kernels {
namespace {

using testing::isa_label;
using testing::kAwkwardSizes;
using testing::max_rel_error;
using testing::pick;
using testing::random_floats;

constexpr float kInf = std::numeric_limits<float>::infinity();

// Restores the active tier after tests that call the dispatching entry points.
struct IsaGuard {
  Isa saved = active_isa();
  ~IsaGuard() { set_active_isa_for_testing(saved); }
};

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

// =============================================================================================
// 1. Variants against the reference
// =============================================================================================

TEST(RmsNorm, VariantsMatchRef) {
  for (Isa isa : supported_isas()) {
    auto fn = pick(isa, rmsnorm_f32_ref, rmsnorm_f32_avx2, rmsnorm_f32_avx512);
    auto inv = pick(isa, rms_inv_f32_ref, rms_inv_f32_avx2, rms_inv_f32_avx512);
    for (size_t n : kAwkwardSizes) {
      SCOPED_TRACE(isa_label(isa) + " n=" + std::to_string(n));
      const auto x = random_floats(n, 11 + n, -3.f, 3.f);
      const auto w = random_floats(n, 12 + n, 0.f, 2.f);
      // The only difference is the f32 sum of squares (4 x lanes partial sums vs a double
      // accumulator): relative error <= ~n/64 * 2^-24 ~ 4e-6 worst case at n=4097, halved by
      // the square root. 4e-6 covers it; any indexing/tail bug is O(1).
      EXPECT_NEAR(inv(x.data(), n, 1e-6f) / rms_inv_f32_ref(x.data(), n, 1e-6f), 1.0, 4e-6);
      for (const float* wp : {w.data(), static_cast<const float*>(nullptr)}) {
        std::vector<float> got(n), want(n);
        fn(x.data(), wp, got.data(), n, 1e-6f);
        rmsnorm_f32_ref(x.data(), wp, want.data(), n, 1e-6f);
        EXPECT_LE(max_rel_error(got.data(), want.data(), n), 4e-6);
        // In place gives the same bits as out of place.
        std::vector<float> inplace = x;
        fn(inplace.data(), wp, inplace.data(), n, 1e-6f);
        EXPECT_EQ(inplace, got);
      }
    }
  }
}

TEST(Rope, InterleavedVariantsMatchRef) {
  for (Isa isa : supported_isas()) {
    auto fn =
        pick(isa, rope_interleaved_f32_ref, rope_interleaved_f32_avx2, rope_interleaved_f32_avx512);
    for (size_t rope_dim : {2u, 6u, 8u, 14u, 16u, 18u, 34u, 64u, 130u}) {
      for (size_t n_heads : {1u, 3u, 7u}) {
        for (RopeDir dir : {RopeDir::forward, RopeDir::inverse}) {
          SCOPED_TRACE(isa_label(isa) + " rope_dim=" + std::to_string(rope_dim) +
                       " heads=" + std::to_string(n_heads));
          const size_t stride = rope_dim + 5;  // padding channels must stay untouched
          const auto cos = random_floats(rope_dim / 2, 21 + rope_dim, -1.f, 1.f);
          const auto sin = random_floats(rope_dim / 2, 22 + rope_dim, -1.f, 1.f);
          auto got = random_floats(n_heads * stride, 23 + rope_dim * n_heads);
          auto want = got;
          fn(got.data(), n_heads, stride, cos.data(), sin.data(), rope_dim, dir);
          rope_interleaved_f32_ref(want.data(), n_heads, stride, cos.data(), sin.data(), rope_dim,
                                   dir);
          // Each output is a*c -/+ b*s with |a|,|b|,|c|,|s| <= 1: the vector code fuses one
          // product (FMA), i.e. differs by <= 1 rounding of a value <= 2, <= 2.4e-7 absolute.
          EXPECT_LE(max_abs_diff(got, want), 3e-7);
          for (size_t h = 0; h < n_heads; ++h)
            for (size_t j = rope_dim; j < stride; ++j)
              ASSERT_EQ(got[h * stride + j], want[h * stride + j]);
        }
      }
    }
  }
}

// Logits with masked (-inf) entries sprinkled in; never a fully masked row.
std::vector<float> masked_logits(size_t n, uint64_t seed) {
  auto x = random_floats(n, seed, -20.f, 20.f);
  for (size_t i = 1; i < n; i += 7) x[i] = -kInf;
  return x;
}

TEST(Softmax, VariantsMatchRef) {
  for (Isa isa : supported_isas()) {
    auto fn = pick(isa, softmax_f32_ref, softmax_f32_avx2, softmax_f32_avx512);
    auto fs = pick(isa, softmax_sink_f32_ref, softmax_sink_f32_avx2, softmax_sink_f32_avx512);
    for (size_t n : kAwkwardSizes) {
      SCOPED_TRACE(isa_label(isa) + " n=" + std::to_string(n));
      const auto x = masked_logits(n, 31 + n);
      std::vector<float> got(n), want(n);
      fn(x.data(), got.data(), n);
      softmax_f32_ref(x.data(), want.data(), n);
      // Polynomial exp (<= 2 ulp) + f32 lane sums of positive terms (<= n/16 * 2^-24 relative
      // worst case, 1.6e-5 at n=4097 for 8 lanes; typically ~1e-7) vs std::exp + a double sum.
      // Relative to the largest probability; 2e-6 is ~30 ulp: fails on any wrong index/mask.
      EXPECT_LE(max_rel_error(got.data(), want.data(), n), 2e-6);
      for (size_t i = 1; i < n; i += 7) ASSERT_EQ(got[i], 0.0f) << "masked entry " << i;
      for (float sink : {-kInf, -5.f, 0.f, 3.f, 30.f}) {
        fs(x.data(), got.data(), n, sink);
        softmax_sink_f32_ref(x.data(), want.data(), n, sink);
        // Same error sources; with a dominant sink every probability is tiny, hence the
        // relative-to-max metric plus an absolute floor.
        EXPECT_LE(max_abs_diff(got, want),
                  2e-6 * *std::max_element(want.begin(), want.end()) + 1e-30)
            << "sink " << sink;
      }
      // In place gives the same bits as out of place.
      std::vector<float> outp(n), inplace = x;
      fn(x.data(), outp.data(), n);
      fn(inplace.data(), inplace.data(), n);
      EXPECT_EQ(inplace, outp);
    }
  }
}

TEST(OpsActivation, SiluVariantsMatchRef) {
  for (Isa isa : supported_isas()) {
    auto fn = pick(isa, silu_f32_ref, silu_f32_avx2, silu_f32_avx512);
    for (size_t n : kAwkwardSizes) {
      SCOPED_TRACE(isa_label(isa) + " n=" + std::to_string(n));
      auto x = random_floats(n, 41 + n, -30.f, 30.f);
      if (n > 3) x[0] = -100.f, x[1] = 100.f, x[2] = 0.f;
      std::vector<float> got(n), want(n);
      fn(x.data(), got.data(), n);
      silu_f32_ref(x.data(), want.data(), n);
      // x / (1 + exp(-x)): polynomial exp (~2 ulp) then one division: a few ulp of each value.
      for (size_t i = 0; i < n; ++i)
        ASSERT_NEAR(got[i], want[i], 1e-6 * std::fabs(want[i]) + 1e-30) << "x=" << x[i];
    }
  }
}

TEST(OpsActivation, SwigluVariantsMatchRef) {
  for (Isa isa : supported_isas()) {
    auto fn = pick(isa, swiglu_f32_ref, swiglu_f32_avx2, swiglu_f32_avx512);
    for (size_t n : kAwkwardSizes) {
      for (float limit : {0.f, 1.f, 10.f}) {
        for (float scale : {1.f, 0.37f}) {
          SCOPED_TRACE(isa_label(isa) + " n=" + std::to_string(n) +
                       " limit=" + std::to_string(limit));
          const auto g = random_floats(n, 51 + n, -20.f, 20.f);
          const auto u = random_floats(n, 52 + n, -20.f, 20.f);
          std::vector<float> got(n), want(n);
          fn(g.data(), u.data(), got.data(), n, limit, scale);
          swiglu_f32_ref(g.data(), u.data(), want.data(), n, limit, scale);
          // silu (a few ulp, as above) times u times scale: two more roundings, identical order.
          for (size_t i = 0; i < n; ++i)
            ASSERT_NEAR(got[i], want[i], 1e-6 * std::fabs(want[i]) + 1e-30) << i;
        }
      }
    }
  }
}

// Values with many exact ties, signed zeros, infinities and NaNs, to exercise the total order.
std::vector<float> tie_heavy(size_t n, uint64_t seed) {
  auto x = random_floats(n, seed, -8.f, 8.f);
  for (size_t i = 0; i < n; ++i) x[i] = std::round(x[i] * 2.f) / 2.f;  // ~33 distinct values
  if (n > 10) {
    x[3] = -0.0f;
    x[4] = 0.0f;
    x[5] = -kInf;
    x[6] = kInf;
    x[7] = std::numeric_limits<float>::quiet_NaN();
    x[n - 1] = -std::numeric_limits<float>::quiet_NaN();
  }
  return x;
}

// Non-positive values whose maximum, 0, occurs often with both signs: the top k are ties
// between -0.0 and +0.0, which must be ordered by index alone.
std::vector<float> zeros_on_top(size_t n, uint64_t seed) {
  auto x = random_floats(n, seed, -16.f, 16.f);
  for (size_t i = 0; i < n; ++i) {
    const float v = -std::fabs(std::round(x[i]));
    x[i] = v == 0.0f ? (i % 2 ? -0.0f : 0.0f) : v;
  }
  return x;
}

TEST(TopK, VariantsMatchRefExactly) {
  TopKScratch scratch;  // reused across calls, as the engine does
  for (Isa isa : supported_isas()) {
    auto fn = pick(isa, topk_f32_ref, topk_f32_avx2, topk_f32_avx512);
    for (size_t n : {1u, 3u, 7u, 17u, 33u, 129u, 1000u, 4097u, 65537u}) {
      for (size_t k : {size_t{0}, size_t{1}, size_t{2}, size_t{7}, size_t{64}, n / 3, n}) {
        if (k > n) continue;
        for (int kind = 0; kind < 4; ++kind) {
          SCOPED_TRACE(isa_label(isa) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                       " kind=" + std::to_string(kind));
          std::vector<float> x = kind == 0   ? random_floats(n, 61 + n)
                                 : kind == 1 ? tie_heavy(n, 62 + n)
                                 : kind == 2 ? std::vector<float>(n, 1.5f)  // all equal
                                             : zeros_on_top(n, 63 + n);
          std::vector<int32_t> got(k, -1), want(k, -2);
          fn(x.data(), n, k, got.data(), &scratch);
          topk_f32_ref(x.data(), n, k, want.data());
          ASSERT_EQ(got, want);  // exact: same set, same order
        }
      }
    }
  }
}

TEST(TopK, IndexerScaleMatchesRef) {
  // The lightning indexer's selection at 1M context: 262,144 compressed entries, top 512, with
  // a masked (-inf) future tail.
  const size_t n = 262144, k = 512;
  auto x = random_floats(n, 71, -5.f, 5.f);
  for (size_t i = n - 1000; i < n; ++i) x[i] = -kInf;
  std::vector<int32_t> want(k);
  topk_f32_ref(x.data(), n, k, want.data());
  TopKScratch scratch;
  for (Isa isa : supported_isas()) {
    std::vector<int32_t> got(k);
    pick(isa, topk_f32_ref, topk_f32_avx2, topk_f32_avx512)(x.data(), n, k, got.data(), &scratch);
    EXPECT_EQ(got, want) << isa_label(isa);
  }
}

TEST(Hadamard, VariantsMatchRefBitExactly) {
  for (Isa isa : supported_isas()) {
    auto fn = pick(isa, hadamard_f32_ref, hadamard_f32_avx2, hadamard_f32_avx512);
    for (size_t n = 1; n <= 8192; n *= 2) {
      SCOPED_TRACE(isa_label(isa) + " n=" + std::to_string(n));
      auto got = random_floats(n, 81 + n);
      auto want = got;
      const float scale = 1.0f / std::sqrt(static_cast<float>(n));
      fn(got.data(), n, scale);
      hadamard_f32_ref(want.data(), n, scale);
      // Every output is produced by the same sequence of single adds/subs and one multiply.
      ASSERT_EQ(got, want);
    }
  }
}

TEST(OpsHyperConnection, CollapseExpandVariantsMatchRef) {
  for (Isa isa : supported_isas()) {
    auto col = pick(isa, hc_collapse_f32_ref, hc_collapse_f32_avx2, hc_collapse_f32_avx512);
    auto exp = pick(isa, hc_expand_f32_ref, hc_expand_f32_avx2, hc_expand_f32_avx512);
    for (size_t dim : kAwkwardSizes) {
      for (size_t hc : {1u, 3u, 4u}) {
        SCOPED_TRACE(isa_label(isa) + " dim=" + std::to_string(dim) + " hc=" + std::to_string(hc));
        const auto x = random_floats(hc * dim, 91 + dim);
        const auto pre = random_floats(hc, 92 + hc, 0.f, 1.f);
        const auto post = random_floats(hc, 93 + hc, 0.f, 2.f);
        const auto comb = random_floats(hc * hc, 94 + hc, 0.f, 1.f);
        const auto b = random_floats(dim, 95 + dim);
        std::vector<float> got(dim), want(dim);
        col(x.data(), pre.data(), hc, dim, got.data());
        hc_collapse_f32_ref(x.data(), pre.data(), hc, dim, want.data());
        // <= hc+1 terms of size <= 2: FMA vs separate rounding differs by a few ulp of 4.
        EXPECT_LE(max_abs_diff(got, want), 2e-6);
        std::vector<float> ygot(hc * dim), ywant(hc * dim);
        exp(b.data(), x.data(), post.data(), comb.data(), hc, dim, ygot.data());
        hc_expand_f32_ref(b.data(), x.data(), post.data(), comb.data(), hc, dim, ywant.data());
        EXPECT_LE(max_abs_diff(ygot, ywant), 2e-6);
      }
    }
  }
}

TEST(OpsCompressor, PoolVariantsMatchRef) {
  for (Isa isa : supported_isas()) {
    auto fn = pick(isa, compress_pool_f32_ref, compress_pool_f32_avx2, compress_pool_f32_avx512);
    for (size_t dim : kAwkwardSizes) {
      for (size_t n_slots : {1u, 3u, 8u, 128u}) {
        SCOPED_TRACE(isa_label(isa) + " dim=" + std::to_string(dim) +
                     " slots=" + std::to_string(n_slots));
        auto kv = random_floats(n_slots * dim, 101 + dim, -4.f, 4.f);
        auto sc = random_floats(n_slots * dim, 102 + dim, -10.f, 10.f);
        for (size_t i = 0; i < sc.size(); i += 5) sc[i] = -kInf;             // missing slots
        for (size_t s = 0; s < n_slots; ++s) sc[s * dim + dim / 2] = -kInf;  // a dead channel
        std::vector<const float*> kr(n_slots), sr(n_slots);
        for (size_t s = 0; s < n_slots; ++s)
          kr[s] = kv.data() + s * dim, sr[s] = sc.data() + s * dim;
        std::vector<float> got(dim), want(dim);
        fn(kr.data(), sr.data(), n_slots, dim, got.data());
        compress_pool_f32_ref(kr.data(), sr.data(), n_slots, dim, want.data());
        // A convex combination of |kv| <= 4: f32 exp (~2 ulp) and f32 sums over <= 128 slots
        // (<= 128 * 2^-24 relative) vs double: < 1e-5 * 4 absolute. Dead channel exactly 0.
        EXPECT_LE(max_abs_diff(got, want), 4e-5);
        EXPECT_EQ(got[dim / 2], 0.0f);
      }
    }
  }
}

TEST(OpsIndexer, ScoreVariantsMatchRef) {
  for (Isa isa : supported_isas()) {
    auto fn = pick(isa, indexer_scores_f32_ref, indexer_scores_f32_avx2, indexer_scores_f32_avx512);
    for (size_t heads : {1u, 5u, 16u, 64u, 70u}) {
      for (size_t dim : {1u, 7u, 32u, 128u}) {
        for (size_t keys : {1u, 2u, 3u, 17u}) {
          SCOPED_TRACE(isa_label(isa) + " heads=" + std::to_string(heads) +
                       " dim=" + std::to_string(dim) + " keys=" + std::to_string(keys));
          const auto q = random_floats(heads * dim, 111 + heads * dim);
          const auto w = random_floats(heads, 112 + heads);
          const auto k = random_floats(keys * dim, 113 + keys * dim);
          std::vector<float> got(keys), want(keys);
          fn(q.data(), w.data(), heads, dim, k.data(), keys, got.data());
          indexer_scores_f32_ref(q.data(), w.data(), heads, dim, k.data(), keys, want.data());
          // Each dot: dim f32 FMAs of terms <= 1 (error <= dim * 2^-24 * sum|terms|); the score
          // sums heads of |w| <= 1 times that. Bound: heads*dim*6e-8 absolute, with slack.
          EXPECT_LE(max_abs_diff(got, want), 2e-7 * static_cast<double>(heads * dim) + 1e-6);
        }
      }
    }
  }
}

TEST(Ops, DispatchedEntryPointsUseEveryTier) {
  // The un-suffixed functions must give the variant's result for each forced tier.
  IsaGuard guard;
  const auto x = random_floats(1000, 121, -3.f, 3.f);
  for (Isa isa : supported_isas()) {
    set_active_isa_for_testing(isa);
    ASSERT_EQ(active_isa(), isa);
    std::vector<float> a(1000), b(1000);
    softmax_f32(x.data(), a.data(), 1000);
    pick(isa, softmax_f32_ref, softmax_f32_avx2, softmax_f32_avx512)(x.data(), b.data(), 1000);
    EXPECT_EQ(a, b) << isa_label(isa);
    rmsnorm_f32(x.data(), nullptr, a.data(), 1000, 1e-6f);
    pick(isa, rmsnorm_f32_ref, rmsnorm_f32_avx2, rmsnorm_f32_avx512)(x.data(), nullptr, b.data(),
                                                                     1000, 1e-6f);
    EXPECT_EQ(a, b) << isa_label(isa);
  }
}

// =============================================================================================
// 2. Reference semantics
// =============================================================================================

TEST(RmsNorm, RefMatchesDoubleFormula) {
  const size_t n = 777;
  const auto x = random_floats(n, 201, -5.f, 5.f);
  const auto w = random_floats(n, 202, -2.f, 2.f);
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double r = 1.0 / std::sqrt(ss / n + 1e-6);
  std::vector<float> y(n);
  rmsnorm_f32_ref(x.data(), w.data(), y.data(), n, 1e-6f);
  for (size_t i = 0; i < n; ++i)
    ASSERT_NEAR(y[i], w[i] * x[i] * r, 3e-7 * std::fabs(w[i] * x[i] * r) + 1e-12);
  // The weightless norm is the weighted one with w = 1, and normalises the mean square to ~1.
  std::vector<float> ones(n, 1.0f), a(n), b(n);
  rmsnorm_f32_ref(x.data(), ones.data(), a.data(), n, 1e-6f);
  rmsnorm_f32_ref(x.data(), nullptr, b.data(), n, 1e-6f);
  EXPECT_EQ(a, b);
  double ms = 0;
  for (float v : b) ms += static_cast<double>(v) * v;
  EXPECT_NEAR(ms / n, 1.0, 1e-5);
  // eps matters for tiny inputs: x = 1e-4 everywhere -> 1e-4 / sqrt(1e-8 + 1e-6).
  std::vector<float> tiny(8, 1e-4f), t(8);
  rmsnorm_f32_ref(tiny.data(), nullptr, t.data(), 8, 1e-6f);
  EXPECT_NEAR(t[0], 1e-4 / std::sqrt(1e-8 + 1e-6), 1e-6);
}

TEST(Rope, InvFreqMatchesDoubleFormula) {
  RopeParams p;
  p.rope_dim = 64;
  p.theta = 10000;
  const auto inv = rope_inv_freq(p);
  ASSERT_EQ(inv.size(), 32u);
  for (size_t i = 0; i < 32; ++i)
    EXPECT_NEAR(inv[i], std::pow(10000.0, -2.0 * i / 64.0),
                2e-7 * std::pow(10000.0, -2.0 * i / 64.0));
  EXPECT_EQ(inv[0], 1.0f);
}

TEST(Rope, YarnWithFactorOneEqualsPlainRope) {
  RopeParams plain;
  plain.rope_dim = 64;
  plain.theta = 160000;
  RopeParams yarn = plain;
  yarn.yarn = true;
  yarn.factor = 1;
  yarn.original_max_position_embeddings = 65536;
  EXPECT_EQ(rope_inv_freq(yarn), rope_inv_freq(plain));  // bit for bit
}

TEST(Rope, YarnBlendsBetweenCorrectionDims) {
  // V4-Flash compress rope: the correction range for beta 32 / 1 at 65536 original positions
  // with theta 160000 and 64 dims is [floor(15.45), ceil(24.71)] = [15, 25].
  RopeParams plain;
  plain.rope_dim = 64;
  plain.theta = 160000;
  RopeParams yarn = plain;
  yarn.yarn = true;
  yarn.factor = 16;
  yarn.original_max_position_embeddings = 65536;
  const auto a = rope_inv_freq(plain), b = rope_inv_freq(yarn);
  for (size_t i = 0; i <= 15; ++i) EXPECT_EQ(b[i], a[i]) << i;       // extrapolated: unchanged
  for (size_t i = 25; i < 32; ++i) EXPECT_EQ(b[i], a[i] / 16) << i;  // interpolated: / factor
  for (size_t i = 16; i < 25; ++i) {                                 // linear blend in between
    const double ramp = (i - 15.0) / 10.0;
    EXPECT_NEAR(b[i], a[i] / 16 * ramp + a[i] * (1 - ramp), 1e-6 * a[i]) << i;
  }
  for (size_t i = 1; i < 32; ++i) EXPECT_LT(b[i], b[i - 1]);
}

TEST(Rope, CosSinMatchDoubleAngleAndTableIsExact) {
  RopeParams p;
  p.rope_dim = 64;
  p.theta = 10000;
  const RopeTable table(p, 300);
  EXPECT_EQ(table.cached_positions(), 300);
  std::vector<float> c(32), s(32), c2(32), s2(32);
  for (int64_t pos : {0, 1, 17, 299, 300, 1000, 65535}) {
    table.cos_sin(pos, c.data(), s.data());
    rope_cos_sin(table.inv_freq().data(), 64, pos, 1.0, c2.data(), s2.data());
    EXPECT_EQ(c, c2);  // cached and computed rows are the same bits
    EXPECT_EQ(s, s2);
    for (size_t i = 0; i < 32; ++i) {
      // The angle is the f32 product pos * inv_freq (as in the references); its rounding is
      // <= pos * 2^-24 rad, so compare against the exact double angle with that allowance.
      const double angle = static_cast<double>(pos) * std::pow(10000.0, -2.0 * i / 64.0);
      const double tol =
          2e-7 + 1.2e-7 * static_cast<double>(pos) * std::pow(10000.0, -2.0 * i / 64.0);
      ASSERT_NEAR(c[i], std::cos(angle), tol) << pos << " " << i;
      ASSERT_NEAR(s[i], std::sin(angle), tol) << pos << " " << i;
    }
  }
  // attention_factor multiplies cos and sin after rounding them.
  rope_cos_sin(table.inv_freq().data(), 64, 5, 0.5, c2.data(), s2.data());
  table.cos_sin(5, c.data(), s.data());
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(c2[i], c[i] * 0.5f);
}

TEST(Rope, PositionZeroIsIdentityAndRotationPreservesPairNorms) {
  RopeParams p;
  p.rope_dim = 64;
  const RopeTable table(p, 0);
  std::vector<float> c(32), s(32);
  table.cos_sin(0, c.data(), s.data());
  for (Isa isa : supported_isas()) {
    auto fn =
        pick(isa, rope_interleaved_f32_ref, rope_interleaved_f32_avx2, rope_interleaved_f32_avx512);
    const auto x = random_floats(3 * 64, 211);
    auto y = x;
    fn(y.data(), 3, 64, c.data(), s.data(), 64, RopeDir::forward);
    EXPECT_EQ(y, x) << isa_label(isa);
  }
  table.cos_sin(12345, c.data(), s.data());
  const auto x = random_floats(64, 212);
  for (auto fn : {rope_interleaved_f32_ref, rope_halves_f32_ref}) {
    auto y = x;
    fn(y.data(), 1, 64, c.data(), s.data(), 64, RopeDir::forward);
    const bool halves = fn == rope_halves_f32_ref;
    for (size_t i = 0; i < 32; ++i) {
      const size_t a = halves ? i : 2 * i, b = halves ? i + 32 : 2 * i + 1;
      const double before = std::hypot(x[a], x[b]), after = std::hypot(y[a], y[b]);
      EXPECT_NEAR(after, before, 1e-6);
    }
    fn(y.data(), 1, 64, c.data(), s.data(), 64, RopeDir::inverse);  // de-rotation undoes it
    EXPECT_LE(max_abs_diff(y, x), 1e-6);
  }
}

TEST(Rope, InterleavedIsHalvesUnderChannelPermutation) {
  // Interleaved pair (2i, 2i+1) is the halves pair (i, i + d/2) after de-interleaving channels.
  RopeParams p;
  p.rope_dim = 16;
  const RopeTable t(p, 0);
  std::vector<float> c(8), s(8);
  t.cos_sin(7, c.data(), s.data());
  const auto x = random_floats(16, 221);
  std::vector<float> xi = x, xh(16);
  for (size_t i = 0; i < 8; ++i) xh[i] = x[2 * i], xh[i + 8] = x[2 * i + 1];
  rope_interleaved_f32_ref(xi.data(), 1, 16, c.data(), s.data(), 16, RopeDir::forward);
  rope_halves_f32_ref(xh.data(), 1, 16, c.data(), s.data(), 16, RopeDir::forward);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(xi[2 * i], xh[i]);
    EXPECT_EQ(xi[2 * i + 1], xh[i + 8]);
  }
}

TEST(Softmax, RefSemantics) {
  // [0, ln 3] -> [1/4, 3/4]; shift invariance; -inf -> 0; all -inf -> zeros.
  const std::vector<float> x = {0.f, std::log(3.f)};
  std::vector<float> y(2);
  softmax_f32_ref(x.data(), y.data(), 2);
  EXPECT_NEAR(y[0], 0.25, 1e-7);
  EXPECT_NEAR(y[1], 0.75, 1e-7);
  const auto r = masked_logits(513, 231);
  std::vector<float> a(513), b(513), shifted = r;
  for (float& v : shifted) v += 1000.f;  // only finite entries move
  softmax_f32_ref(r.data(), a.data(), 513);
  softmax_f32_ref(shifted.data(), b.data(), 513);
  EXPECT_LE(max_rel_error(b.data(), a.data(), 513), 1e-3);  // 1000 + x rounds x to ~6e-5
  double sum = 0;
  for (float v : a) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-6);
  for (size_t i = 1; i < 513; i += 7) EXPECT_EQ(a[i], 0.0f);
  std::vector<float> dead(9, -kInf), z(9, 1.f);
  for (Isa isa : supported_isas()) {
    pick(isa, softmax_f32_ref, softmax_f32_avx2, softmax_f32_avx512)(dead.data(), z.data(), 9);
    EXPECT_EQ(z, std::vector<float>(9, 0.f)) << isa_label(isa);
  }
}

TEST(Softmax, SinkTakesItsShareOfTheMass) {
  const auto x = masked_logits(100, 241);
  for (float sink : {-3.f, 0.f, 2.f, 25.f}) {
    std::vector<float> y(100);
    softmax_sink_f32_ref(x.data(), y.data(), 100, sink);
    // Double-precision expectation: y_i = e^{x_i} / (sum_j e^{x_j} + e^{sink}).
    double m = sink, den = 0;
    for (float v : x) m = std::max(m, static_cast<double>(v));
    for (float v : x) den += std::exp(v - m);
    const double sink_share = std::exp(sink - m) / (den + std::exp(sink - m));
    double sum = 0;
    for (size_t i = 0; i < 100; ++i) {
      const double want = std::exp(x[i] - m) / (den + std::exp(sink - m));
      // The f32 difference x - m is rounded by up to |x - m| * 2^-24, which exp turns into
      // that much relative error; plus a few ulp for exp, the sum and the division.
      const double rel = 1e-6 + (std::isinf(x[i]) ? 0.0 : std::fabs(x[i] - m) * 6e-8);
      ASSERT_NEAR(y[i], want, rel * want + 1e-37);
      sum += y[i];
    }
    EXPECT_NEAR(sum, 1.0 - sink_share, 1e-6);
    if (sink_share > 1e-5) {  // else below the f32 resolution of the sum
      EXPECT_LT(sum, 1.0);
    }
  }
  // A -inf sink is plain softmax; an all-masked row gives zeros (the sink takes everything).
  std::vector<float> a(100), b(100);
  softmax_sink_f32_ref(x.data(), a.data(), 100, -kInf);
  softmax_f32_ref(x.data(), b.data(), 100);
  EXPECT_EQ(a, b);
  std::vector<float> dead(5, -kInf), z(5, 1.f);
  for (Isa isa : supported_isas()) {
    pick(isa, softmax_sink_f32_ref, softmax_sink_f32_avx2, softmax_sink_f32_avx512)(
        dead.data(), z.data(), 5, 0.5f);
    EXPECT_EQ(z, std::vector<float>(5, 0.f)) << isa_label(isa);
  }
}

TEST(OpsActivation, RefSemantics) {
  std::vector<float> x = {0.f, 1.f, -1.f, 50.f, -50.f}, y(5);
  silu_f32_ref(x.data(), y.data(), 5);
  for (size_t i = 0; i < 5; ++i)
    EXPECT_NEAR(y[i], x[i] / (1 + std::exp(-static_cast<double>(x[i]))),
                1e-7 * std::fabs(x[i]) + 1e-30);
  // Clamp: gate from above only, up on both sides; limit <= 0 disables it.
  const std::vector<float> g = {50.f, -50.f, 3.f, 3.f}, u = {2.f, 2.f, 50.f, -50.f};
  std::vector<float> out(4);
  swiglu_f32_ref(g.data(), u.data(), out.data(), 4, 10.f, 1.f);
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  EXPECT_NEAR(out[0], silu(10) * 2, 1e-5);    // gate 50 -> 10
  EXPECT_NEAR(out[1], silu(-50) * 2, 1e-25);  // gate -50 stays -50 (not -10)
  EXPECT_NE(out[1], static_cast<float>(silu(-10) * 2));
  EXPECT_NEAR(out[2], silu(3) * 10, 1e-5);   // up 50 -> 10
  EXPECT_NEAR(out[3], silu(3) * -10, 1e-5);  // up -50 -> -10
  swiglu_f32_ref(g.data(), u.data(), out.data(), 4, 0.f, 0.5f);
  EXPECT_NEAR(out[0], silu(50) * 2 * 0.5, 1e-4);
  EXPECT_NEAR(out[2], silu(3) * 50 * 0.5, 1e-4);
  // Router activations.
  const std::vector<float> l = {0.f, 25.f, -3.f, 20.f};
  std::vector<float> sc(4);
  router_scores_f32_ref(l.data(), sc.data(), 4, ScoringFunc::sqrtsoftplus);
  EXPECT_NEAR(sc[0], std::sqrt(std::log(2.0)), 1e-7);
  EXPECT_EQ(sc[1], std::sqrt(25.f));  // above torch's threshold 20: softplus(x) = x
  EXPECT_NEAR(sc[2], std::sqrt(std::log1p(std::exp(-3.0))), 1e-7);
  router_scores_f32_ref(l.data(), sc.data(), 4, ScoringFunc::sigmoid);
  EXPECT_EQ(sc[0], 0.5f);
  router_scores_f32_ref(l.data(), sc.data(), 4, ScoringFunc::softmax);
  EXPECT_NEAR(std::accumulate(sc.begin(), sc.end(), 0.0), 1.0, 1e-6);
}

TEST(TopK, RefIsAFullStableSortPrefix) {
  for (int kind = 0; kind < 2; ++kind) {
    const size_t n = 3001;
    const auto x = kind == 0 ? random_floats(n, 251) : tie_heavy(n, 252);
    // Independent oracle: stable sort of indices by descending value (NaN first, -0 == +0);
    // stability puts equal values in increasing index order.
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    auto rank = [&](int32_t i) {
      const float v = x[static_cast<size_t>(i)];
      return std::isnan(v) ? std::numeric_limits<double>::infinity() * 2 : static_cast<double>(v);
    };
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      const float va = x[static_cast<size_t>(a)], vb = x[static_cast<size_t>(b)];
      if (std::isnan(va) || std::isnan(vb)) return std::isnan(va) && !std::isnan(vb);
      return rank(a) > rank(b);
    });
    for (size_t k : {1u, 10u, 500u, 3001u}) {
      std::vector<int32_t> got(k);
      topk_f32_ref(x.data(), n, k, got.data());
      EXPECT_EQ(got, std::vector<int32_t>(order.begin(), order.begin() + static_cast<long>(k)));
    }
  }
  // Hand example: ties go to the lower index, -0 ties +0, NaN beats +inf.
  const std::vector<float> v = {1.f, 3.f, -0.f, 3.f, 0.f, kInf, std::nanf(""), -kInf};
  std::vector<int32_t> out(8);
  topk_f32_ref(v.data(), 8, 8, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{6, 5, 1, 3, 0, 2, 4, 7}));
  EXPECT_LT(topk_key(-1.f), topk_key(-0.5f));
  EXPECT_EQ(topk_key(-0.f), topk_key(0.f));
  EXPECT_LT(topk_key(kInf), topk_key(-std::nanf("")));
}

TEST(Hadamard, RefMatchesSylvesterMatrixAndIsOrthonormal) {
  for (size_t n : {1u, 2u, 4u, 8u, 64u, 128u}) {
    const auto x = random_floats(n, 261 + n);
    auto y = x;
    hadamard_f32_ref(y.data(), n, 1.0f);
    for (size_t i = 0; i < n; ++i) {
      double want = 0;  // H[i][j] = (-1)^popcount(i & j)
      for (size_t j = 0; j < n; ++j) want += (std::popcount(i & j) % 2 ? -1.0 : 1.0) * x[j];
      ASSERT_NEAR(y[i], want, 1e-5 * std::sqrt(static_cast<double>(n))) << n << " " << i;
    }
    // With scale n^-1/2 the transform is its own inverse.
    auto z = x;
    const float s = 1.0f / std::sqrt(static_cast<float>(n));
    hadamard_f32_ref(z.data(), n, s);
    hadamard_f32_ref(z.data(), n, s);
    EXPECT_LE(max_abs_diff(z, x), 1e-6);
  }
}

// Sinkhorn in double, same order of operations, as an oracle for the f32 reference.
std::vector<double> sinkhorn_double(std::vector<double> c, size_t hc, int iters, double eps) {
  for (size_t j = 0; j < hc; ++j) {
    double m = -1e300, s = 0;
    for (size_t k = 0; k < hc; ++k) m = std::max(m, c[j * hc + k]);
    for (size_t k = 0; k < hc; ++k) s += std::exp(c[j * hc + k] - m);
    for (size_t k = 0; k < hc; ++k) c[j * hc + k] = std::exp(c[j * hc + k] - m) / s + eps;
  }
  auto cols = [&] {
    for (size_t k = 0; k < hc; ++k) {
      double s = 0;
      for (size_t j = 0; j < hc; ++j) s += c[j * hc + k];
      for (size_t j = 0; j < hc; ++j) c[j * hc + k] /= s + eps;
    }
  };
  cols();
  for (int it = 1; it < iters; ++it) {
    for (size_t j = 0; j < hc; ++j) {
      double s = 0;
      for (size_t k = 0; k < hc; ++k) s += c[j * hc + k];
      for (size_t k = 0; k < hc; ++k) c[j * hc + k] /= s + eps;
    }
    cols();
  }
  return c;
}

TEST(Sinkhorn, RefIsNearlyDoublyStochasticAndMatchesDouble) {
  for (size_t hc : {1u, 2u, 4u, 6u}) {
    const auto logits = random_floats(hc * hc, 271 + hc, -2.f, 2.f);
    std::vector<float> c = logits;
    sinkhorn_f32_ref(c.data(), hc, 20, 1e-6f);
    const auto want =
        sinkhorn_double(std::vector<double>(logits.begin(), logits.end()), hc, 20, 1e-6);
    for (size_t i = 0; i < hc * hc; ++i) ASSERT_NEAR(c[i], want[i], 2e-6) << hc << " " << i;
    // Columns are normalised last: each sums to s / (s + eps) = 1 - O(eps). Rows converge.
    for (size_t k = 0; k < hc; ++k) {
      double col = 0, row = 0;
      for (size_t j = 0; j < hc; ++j) col += c[j * hc + k], row += c[k * hc + j];
      EXPECT_NEAR(col, 1.0, 4e-6);
      EXPECT_NEAR(row, 1.0, 1e-3);
      for (size_t j = 0; j < hc; ++j) EXPECT_GT(c[j * hc + k], 0.0f);
    }
  }
  // One iteration is: row softmax + eps, then a single column normalisation.
  std::vector<float> c = {0.f, 0.f, 0.f, std::log(3.f)};
  sinkhorn_f32_ref(c.data(), 2, 1, 0.f);
  // softmax rows: [0.5 0.5; 0.25 0.75]; columns sums 0.75, 1.25.
  EXPECT_NEAR(c[0], 0.5 / 0.75, 1e-6);
  EXPECT_NEAR(c[1], 0.5 / 1.25, 1e-6);
  EXPECT_NEAR(c[2], 0.25 / 0.75, 1e-6);
  EXPECT_NEAR(c[3], 0.75 / 1.25, 1e-6);
}

TEST(Sinkhorn, SplitPrePostRanges) {
  const size_t hc = 4;
  const auto mixes = random_floats((2 + hc) * hc, 281, -3.f, 3.f);
  const auto base = random_floats((2 + hc) * hc, 282, -1.f, 1.f);
  const std::vector<float> scale = {0.5f, 2.f, 1.5f};
  std::vector<float> pre(hc), post(hc), comb(hc * hc);
  hc_split_sinkhorn_f32_ref(mixes.data(), scale.data(), base.data(), hc, 20, 1e-6f, pre.data(),
                            post.data(), comb.data());
  for (size_t j = 0; j < hc; ++j) {
    EXPECT_NEAR(pre[j], 1 / (1 + std::exp(-(mixes[j] * 0.5 + base[j]))) + 1e-6, 1e-6);
    EXPECT_NEAR(post[j], 2 / (1 + std::exp(-(mixes[hc + j] * 2.0 + base[hc + j]))), 1e-6);
  }
  std::vector<float> logits(hc * hc);
  for (size_t i = 0; i < hc * hc; ++i) logits[i] = mixes[2 * hc + i] * 1.5f + base[2 * hc + i];
  sinkhorn_f32_ref(logits.data(), hc, 20, 1e-6f);
  EXPECT_EQ(comb, logits);
  std::vector<float> hp(hc);
  hc_head_pre_f32(mixes.data(), 0.5f, base.data(), hc, 1e-6f, hp.data());
  EXPECT_EQ(hp, pre);
}

TEST(OpsHyperConnection, RefSemantics) {
  // Two streams of 3 channels.
  const std::vector<float> x = {1, 2, 3, 10, 20, 30}, pre = {0.5f, 2.f};
  std::vector<float> y(3);
  hc_collapse_f32_ref(x.data(), pre.data(), 2, 3, y.data());
  EXPECT_EQ(y, (std::vector<float>{20.5f, 41.f, 61.5f}));
  // comb is applied transposed: y[k] = post[k] * b + sum_j comb[j][k] * residual[j].
  const std::vector<float> b = {1, 1, 1}, post = {0.f, 1.f}, comb = {0.f, 1.f, 0.5f, 0.25f};
  std::vector<float> out(6);
  hc_expand_f32_ref(b.data(), x.data(), post.data(), comb.data(), 2, 3, out.data());
  // k=0: comb[0][0]*x0 + comb[1][0]*x1 = 0.5 * x1; k=1: 1 + 1*x0 + 0.25*x1.
  EXPECT_EQ(out, (std::vector<float>{5, 10, 15, 1 + 1 + 2.5f, 1 + 2 + 5, 1 + 3 + 7.5f}));
}

TEST(OpsCompressor, PoolRefSemantics) {
  const size_t dim = 3;
  const std::vector<float> kv0 = {1, 2, 3}, kv1 = {5, 6, 7}, kv2 = {100, 100, 100};
  const std::vector<float> s0 = {0, 0, 50}, s1 = {0, std::log(3.f), 0}, s2 = {-kInf, -kInf, -kInf};
  const float* kr[] = {kv0.data(), kv1.data(), kv2.data()};
  const float* sr[] = {s0.data(), s1.data(), s2.data()};
  std::vector<float> out(dim), out2(dim);
  compress_pool_f32_ref(kr, sr, 3, dim, out.data());
  EXPECT_NEAR(out[0], 3.0, 1e-6);                      // equal scores: the mean
  EXPECT_NEAR(out[1], 0.25 * 2 + 0.75 * 6, 1e-6);      // weights 1:3
  EXPECT_NEAR(out[2], 3.0, 1e-6);                      // one dominant score
  compress_pool_f32_ref(kr, sr, 2, dim, out2.data());  // a -inf slot == an omitted slot
  EXPECT_EQ(out, out2);
  const float* dead_s[] = {s2.data()};
  compress_pool_f32_ref(kr + 2, dead_s, 1, dim, out.data());
  EXPECT_EQ(out, (std::vector<float>{0, 0, 0}));
}

TEST(OpsIndexer, RefSemantics) {
  // 2 heads, dim 2: negative head dots are dropped by the ReLU.
  const std::vector<float> q = {1, 0, 0, 1}, w = {2.f, 3.f}, k = {1, -1, -2, 5};
  std::vector<float> out(2);
  indexer_scores_f32_ref(q.data(), w.data(), 2, 2, k.data(), 2, out.data());
  EXPECT_EQ(out[0], 2.f);   // head 0: 1*2; head 1: -1 -> 0
  EXPECT_EQ(out[1], 15.f);  // head 0: -2 -> 0; head 1: 5*3
}

// =============================================================================================
// 3. Golden vectors from transformers (tools/reference/make_ops_vectors.py)
// =============================================================================================

class Golden {
 public:
  explicit Golden(const std::string& name) {
    const std::string path = std::string(DSV4_TEST_DATA_DIR) + "/ops/" + name;
    std::ifstream in(path);
    if (!in) {
      ADD_FAILURE() << "missing golden file " << path;
      return;
    }
    std::string line, key;
    size_t count = 0;
    std::vector<float>* cur = nullptr;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream ls(line);
      std::string tok;
      while (ls >> tok) {
        if (cur && cur->size() < count) {
          cur->push_back(std::strtof(tok.c_str(), nullptr));
          continue;
        }
        key = tok;
        ls >> count;
        cur = &data_[key];
        cur->reserve(count);
      }
    }
  }
  const std::vector<float>& operator[](const std::string& key) const {
    auto it = data_.find(key);
    if (it == data_.end()) {
      ADD_FAILURE() << "golden record " << key << " missing";
      static const std::vector<float> empty;
      return empty;
    }
    return it->second;
  }

 private:
  std::map<std::string, std::vector<float>> data_;
};

RopeParams flash_main() {
  RopeParams p;
  p.rope_dim = 64;
  p.theta = 10000;
  return p;
}
RopeParams flash_compress() {
  RopeParams p;
  p.rope_dim = 64;
  p.theta = 160000;
  p.yarn = true;
  p.factor = 16;
  p.original_max_position_embeddings = 65536;
  return p;
}

// |a - b| in units of the float spacing at b (1 ulp = 2^-23 relative).
double ulps(float a, float b) {
  if (a == b) return 0;
  return std::fabs(static_cast<double>(a) - b) / std::ldexp(1.0, std::ilogb(b) - 23);
}

TEST(OpsGolden, RopeFrequenciesCosSinAndApplication) {
  const Golden g("rope.txt");
  // inv_freq follows the reference's f32 steps; pow may differ from torch's by <= 1 ulp.
  const auto main_inv = rope_inv_freq(flash_main()), comp_inv = rope_inv_freq(flash_compress());
  ASSERT_EQ(g["main_inv_freq"].size(), 32u);
  for (size_t i = 0; i < 32; ++i) {
    EXPECT_LE(ulps(main_inv[i], g["main_inv_freq"][i]), 1) << i;
    EXPECT_LE(ulps(comp_inv[i], g["compress_inv_freq"][i]), 1) << i;
  }
  const RopeTable tmain(flash_main(), 1024), tcomp(flash_compress(), 1024);
  const auto& positions = g["positions"];
  std::vector<float> c(32), s(32);
  for (size_t pi = 0; pi < positions.size(); ++pi) {
    const auto pos = static_cast<int64_t>(positions[pi]);
    for (int which = 0; which < 2; ++which) {
      (which ? tcomp : tmain).cos_sin(pos, c.data(), s.data());
      const auto& gc = g[which ? "compress_cos" : "main_cos"];
      const auto& gs = g[which ? "compress_sin" : "main_sin"];
      for (size_t i = 0; i < 32; ++i) {
        // Same f32 angle when inv_freq agrees bit for bit (then only cos/sin rounding: ~1e-7);
        // a 1-ulp inv_freq difference moves the angle by pos * inv * 2^-24.
        const double inv = which ? comp_inv[i] : main_inv[i];
        const double tol = 2.5e-7 + (ulps(which ? comp_inv[i] : main_inv[i],
                                          g[which ? "compress_inv_freq" : "main_inv_freq"][i]) > 0
                                         ? static_cast<double>(pos) * inv * 1.2e-7
                                         : 0.0);
        ASSERT_NEAR(c[i], gc[pi * 32 + i], tol) << "pos " << pos << " pair " << i;
        ASSERT_NEAR(s[i], gs[pi * 32 + i], tol) << "pos " << pos << " pair " << i;
      }
    }
  }
  // apply_rotary_pos_emb on the TRAILING 64 channels of 512-wide heads, forward and inverse.
  const auto& apos = g["apply_positions"];
  const size_t H = 2, S = apos.size(), D = 512;
  ASSERT_EQ(g["x"].size(), H * S * D);
  for (Isa isa : supported_isas()) {
    auto fn =
        pick(isa, rope_interleaved_f32_ref, rope_interleaved_f32_avx2, rope_interleaved_f32_avx512);
    for (RopeDir dir : {RopeDir::forward, RopeDir::inverse}) {
      std::vector<float> x = g["x"];
      for (size_t si = 0; si < S; ++si) {
        tcomp.cos_sin(static_cast<int64_t>(apos[si]), c.data(), s.data());
        // x is [H, S, D]: heads of one position are S*D apart.
        fn(x.data() + si * D + (D - 64), H, S * D, c.data(), s.data(), 64, dir);
      }
      const auto& want = g[dir == RopeDir::forward ? "fwd" : "inv"];
      EXPECT_LE(max_abs_diff(x, want), 5e-7) << isa_label(isa);
      for (size_t i = 0; i < x.size(); ++i) {
        if (i % D < D - 64) {
          ASSERT_EQ(x[i], g["x"][i]) << "nope channel changed";
        }
      }
    }
  }
}

TEST(OpsGolden, SoftmaxWithSinkMatchesEagerAttention) {
  const Golden g("softmax_sink.txt");
  const auto& logits = g["logits"];
  const auto& sinks = g["sinks"];
  const auto& probs = g["probs"];
  const size_t H = 4, S = 3, T = 10;
  ASSERT_EQ(logits.size(), H * S * T);
  for (Isa isa : supported_isas()) {
    auto fn = pick(isa, softmax_sink_f32_ref, softmax_sink_f32_avx2, softmax_sink_f32_avx512);
    std::vector<float> y(H * S * T);
    for (size_t h = 0; h < H; ++h)
      for (size_t s = 0; s < S; ++s)
        fn(logits.data() + (h * S + s) * T, y.data() + (h * S + s) * T, T, sinks[h]);
    // f32 softmax both sides; a few ulp of values <= 1.
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], probs[i], 3e-7) << isa_label(isa) << " " << i;
  }
}

TEST(OpsGolden, HyperConnectionSinkhornCollapseExpandHead) {
  const Golden g("hyper_connection.txt");
  const size_t S = 3, hc = 4, D = 16, M = (2 + hc) * hc;
  ASSERT_EQ(g["mixes"].size(), S * M);
  for (size_t s = 0; s < S; ++s) {
    std::vector<float> pre(hc), post(hc), comb(hc * hc), col(D), out(hc * D);
    hc_split_sinkhorn_f32(g["mixes"].data() + s * M, g["scale"].data(), g["base"].data(), hc, 20,
                          1e-6f, pre.data(), post.data(), comb.data());
    for (size_t j = 0; j < hc; ++j) EXPECT_NEAR(post[j], g["post"][s * hc + j], 3e-7);
    // 20 Sinkhorn rounds of f32 divisions: a few ulp per round on values <= 1.
    for (size_t i = 0; i < hc * hc; ++i)
      EXPECT_NEAR(comb[i], g["comb"][s * hc * hc + i], 2e-6) << i;
    hc_collapse_f32(g["streams"].data() + s * hc * D, pre.data(), hc, D, col.data());
    for (size_t d = 0; d < D; ++d) EXPECT_NEAR(col[d], g["collapsed"][s * D + d], 2e-6);
    // Expand with the golden post/comb so this checks only the mixing.
    hc_expand_f32(g["block_out"].data() + s * D, g["streams"].data() + s * hc * D,
                  g["post"].data() + s * hc, g["comb"].data() + s * hc * hc, hc, D, out.data());
    for (size_t i = 0; i < hc * D; ++i) EXPECT_NEAR(out[i], g["expanded"][s * hc * D + i], 2e-6);
    std::vector<float> hp(hc), head(D);
    hc_head_pre_f32(g["head_mixes"].data() + s * hc, g["head_scale"][0], g["head_base"].data(), hc,
                    1e-6f, hp.data());
    hc_collapse_f32(g["streams"].data() + s * hc * D, hp.data(), hc, D, head.data());
    for (size_t d = 0; d < D; ++d) EXPECT_NEAR(head[d], g["head_out"][s * D + d], 2e-6);
  }
}

TEST(OpsGolden, SwigluClampAndRouterActivations) {
  const Golden g("activations.txt");
  const auto& gu = g["gate_up"];
  const size_t N = 5, I = gu.size() / (2 * N);
  std::vector<float> out(I);
  for (size_t r = 0; r < N; ++r) {
    swiglu_f32(gu.data() + r * 2 * I, gu.data() + r * 2 * I + I, out.data(), I, g["limit"][0]);
    for (size_t i = 0; i < I; ++i) {
      const float want = g["swiglu"][r * I + i];
      EXPECT_NEAR(out[i], want, 1e-6 * std::fabs(want) + 1e-30) << r << " " << i;
    }
  }
  const auto& logits = g["logits"];
  const size_t n = logits.size();
  std::vector<float> sc(n);
  const std::pair<ScoringFunc, const char*> funcs[] = {{ScoringFunc::sqrtsoftplus, "sqrtsoftplus"},
                                                       {ScoringFunc::sigmoid, "sigmoid"},
                                                       {ScoringFunc::softmax, "softmax"}};
  for (auto [f, name] : funcs) {
    router_scores_f32(logits.data(), sc.data(), n, f);
    for (size_t i = 0; i < n; ++i) {
      const float want = g[name][i];
      EXPECT_NEAR(sc[i], want, 4e-7 * std::fabs(want) + 1e-37) << name << " x=" << logits[i];
    }
  }
}

TEST(OpsGolden, RmsNormWeightedAndUnweighted) {
  const Golden g("rmsnorm.txt");
  const size_t n = 37;
  for (size_t r = 0; r < 3; ++r) {
    std::vector<float> a(n), b(n);
    rmsnorm_f32(g["x"].data() + r * n, g["weight"].data(), a.data(), n, 1e-6f);
    rmsnorm_f32(g["x"].data() + r * n, nullptr, b.data(), n, 1e-6f);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_NEAR(a[i], g["weighted"][r * n + i], 3e-7 * std::fabs(a[i]) + 1e-7);
      EXPECT_NEAR(b[i], g["unweighted"][r * n + i], 3e-7 * std::fabs(b[i]) + 1e-7);
    }
  }
}

// The whole compressor tail: pooling (with the CSA overlap layout) -> kv_norm -> RoPE at the
// window's first position, against the transformers compressors.
TEST(OpsGolden, CompressorPoolNormRope) {
  const Golden g("compressor.txt");
  const size_t S = 12, ratio = 4, d = 32, rope_dim = 16, n_win = S / ratio;
  RopeParams rp;
  rp.rope_dim = rope_dim;
  rp.theta = 160000;
  rp.yarn = true;
  rp.factor = 16;
  rp.original_max_position_embeddings = 64;
  const RopeTable rope(rp, 0);
  for (size_t i = 0; i < rope_dim / 2; ++i)
    EXPECT_LE(ulps(rope.inv_freq()[i], g["compress_inv_freq"][i]), 1) << i;
  std::vector<float> c(rope_dim / 2), sn(rope_dim / 2);
  for (const char* name : {"hca", "csa"}) {
    const std::string p = name;
    const bool overlap = p == "csa";
    const size_t width = overlap ? 2 * d : d;  // projection width per token
    const auto& kv = g[p + "_kv"];
    const auto& bias = g[p + "_bias"];
    std::vector<float> score = g[p + "_gate"];  // + position bias, as the caller does
    for (size_t t = 0; t < S; ++t)
      for (size_t j = 0; j < width; ++j) score[t * width + j] += bias[(t % ratio) * width + j];
    for (size_t w = 0; w < n_win; ++w) {
      std::vector<const float*> kr, sr;
      if (overlap && w > 0)  // previous window's Ca (first half) ...
        for (size_t s = 0; s < ratio; ++s) {
          kr.push_back(kv.data() + ((w - 1) * ratio + s) * width);
          sr.push_back(score.data() + ((w - 1) * ratio + s) * width);
        }
      for (size_t s = 0; s < ratio; ++s) {  // ... then this window's Cb (second half) / all
        kr.push_back(kv.data() + (w * ratio + s) * width + (overlap ? d : 0));
        sr.push_back(score.data() + (w * ratio + s) * width + (overlap ? d : 0));
      }
      std::vector<float> out(d);
      compress_pool_f32(kr.data(), sr.data(), kr.size(), d, out.data());
      rmsnorm_f32(out.data(), g[p + "_norm"].data(), out.data(), d, 1e-6f);
      rope.cos_sin(static_cast<int64_t>(w * ratio), c.data(), sn.data());
      rope_interleaved_f32(out.data() + d - rope_dim, 1, d, c.data(), sn.data(), rope_dim,
                           RopeDir::forward);
      for (size_t j = 0; j < d; ++j) {
        const float want = g[p + "_out"][w * d + j];
        // Pool (few ulp) -> norm -> rotation; outputs are O(1..10): 2e-6 relative + 1e-6.
        EXPECT_NEAR(out[j], want, 2e-6 * std::fabs(want) + 1e-6)
            << p << " window " << w << " ch " << j;
      }
    }
  }
}

TEST(OpsGolden, IndexerScores) {
  const Golden g("indexer.txt");
  const size_t S = 2, T = 9, H = 4, D = 16;
  const float scale = g["softmax_scale"][0] * g["weights_scaling"][0];
  for (size_t s = 0; s < S; ++s) {
    std::vector<float> w(H), out(T);
    for (size_t h = 0; h < H; ++h) w[h] = g["weights"][s * H + h] * scale;
    indexer_scores_f32(g["q"].data() + s * H * D, w.data(), H, D, g["keys"].data(), T, out.data());
    for (size_t t = 0; t < T; ++t) {
      const float want = g["scores"][s * T + t];
      EXPECT_NEAR(out[t], want, 2e-6 * std::fabs(want) + 2e-6) << s << " " << t;
    }
  }
}

TEST(OpsGolden, TopKMatchesTorchOnDistinctValues) {
  const Golden g("topk.txt");
  const auto& x = g["x"];
  const auto& idx = g["indices"];
  std::vector<int32_t> got(idx.size());
  topk_f32(x.data(), x.size(), idx.size(), got.data());
  for (size_t i = 0; i < idx.size(); ++i) EXPECT_EQ(got[i], static_cast<int32_t>(idx[i])) << i;
}

}  // namespace
}  // namespace dsv4::kernels
