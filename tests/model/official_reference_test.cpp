// Logits of kv::Scheme::official against a reference with the SAME numerics
// (tests/data/fixtures/<name>/reference_official.safetensors, written by
// tools/reference/make_official_reference.py): transformers' DeepSeek-V4 in f32 on the fixture's
// own weights and tokens, with every KV row rounded like an official record (FP8 e4m3 / ue8m0 per
// 64 dims + bf16 RoPE dims), attention queries rounded to bf16, indexer queries and keys
// Hadamard-rotated and rounded to FP4 e2m1 / ue8m0 per 32 dims.
//
// What remains between the engine and that reference is f32 summation order — but under these
// numerics it does not stay at 1e-6: a last-bit difference that lands on an FP8/FP4 rounding
// boundary moves the value by a whole code, the next layer sees the change, and later layers
// cross more boundaries; a top-k choice (indexer, router) whose margin is below the accumulated
// difference then flips and that position's logits move by O(1). The reference measures this on
// itself: transformers' own cache decode vs its own prefill (same code, other summation order;
// `decode.max_abs_diff`) differs by mean/max 1.2e-6/1.3e-5 (tiny), 6.0e-4/0.157 (long, a flip
// at position 1033 whose layer-2 router margin is 5.4e-6), 5.1e-5/2.5e-4 (wide), relative to
// max|ref logit|. The engine sits at that same noise floor (docs/kv-storage.md,
// "Official-numerics reference"), so the bounds are per fixture, ~3x the measured values:
//   - the mean over positions of row max|dlogit| (relative to max|ref|);
//   - the 99th percentile of the per-position error;
//   - positions beyond the forward-pass issue's tolerance (1e-2 x max|ref|): at most
//     max_outliers (long: 2-3 measured — 1033 above, 904 and 521, whose layer-3 router margins
//     are 4.5e-4 and 1.3e-6; allowed 6 = 0.5 % of 1200). Each is printed with its margin.
// The same rule applies to the residual streams after every layer (sum / sum of squares).
// Greedy: tokens must match the reference's up to its first step whose top1-top2 margin is
// below the tolerance (long: step 14, margin 0.013; wide: step 9, 0.008); the rest is reported.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "fixtures.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "model/reference_check.h"

namespace dsv4::model {
namespace {

using testing::fixture_dir;

namespace fs = std::filesystem;

constexpr double kTolerance = 1e-2;  // the forward-pass issue's bound, relative to max|ref|

struct Bounds {
  const char* fixture;
  double mean_rel;      // mean over positions of row max|dlogit| / max|ref|
  double p99_rel;       // 99th percentile of the same per-position value
  size_t max_outliers;  // positions (and per layer, stream rows) beyond kTolerance
};

// Measured on this host with DSV4_KERNELS = avx512 (default) / avx2 / ref — each ISA sums in
// another order, so each lands elsewhere in the noise:
//   tiny  mean 4.8e-6 / 2.8e-5 / 4.6e-6   p99 3.3e-5 / 1.7e-4 / 2.2e-5   outliers 0 / 0 / 0
//   long  mean 6.6e-4 / 5.6e-4 / 8.0e-4   p99 4.6e-3 / 3.9e-3 / 4.7e-3   outliers 2 / 2 / 3
//   wide  mean 9.3e-5 / 8.5e-5 / 8.5e-5   p99 2.8e-4 / 2.5e-4 / 2.8e-4   outliers 0 / 0 / 0
// (long's outliers: positions 521, 904, 1033, selection margins 1.3e-6, 4.5e-4, 5.4e-6.) Bounds:
// ~3x the largest of the three (long's p99: the tolerance itself, 2x); wide may have one outlier:
// it holds a layer-1 indexer near-tie (margin 3.6e-6 at position 301; max error there 6.5e-3
// with the ref kernels). A reference without the bf16 query rounding, or without the FP4 indexer
// query rounding, or without the KV rounding breaks these bounds on every fixture
// (docs/kv-storage.md).
constexpr Bounds kBounds[] = {
    {"tiny", 1e-4, 5e-4, 0},
    {"long", 2.5e-3, kTolerance, 6},
    {"wide", 3e-4, 1e-3, 1},
};

void PrintTo(const Bounds& b, std::ostream* os) {
  *os << b.fixture;
}

template <typename T>
std::vector<T> read(const formats::SafetensorsFile& f, const std::string& name,
                    formats::DType dtype) {
  const formats::TensorView* t = f.find(name);
  EXPECT_NE(t, nullptr) << f.path() << ": no tensor " << name;
  if (t == nullptr) return {};
  EXPECT_EQ(t->dtype, dtype) << name;
  std::vector<T> v(static_cast<size_t>(t->elements()));
  if (t->dtype != dtype || v.size() * sizeof(T) != t->size_bytes()) return {};
  std::memcpy(v.data(), t->data(), t->size_bytes());
  return v;
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * double(v.size() - 1))];
}

// Per position: max|got - ref| over the vocabulary / max|ref| over all positions.
std::vector<double> row_errors(const std::vector<float>& got, const std::vector<float>& ref,
                               size_t S, size_t V) {
  double max_ref = 0;
  for (float r : ref) max_ref = std::max(max_ref, std::fabs(double(r)));
  std::vector<double> e(S, 0.0);
  for (size_t t = 0; t < S; ++t)
    for (size_t v = 0; v < V; ++v)
      e[t] = std::max(e[t], std::fabs(double(got[t * V + v]) - ref[t * V + v]) / max_ref);
  return e;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / double(v.size());
}

class OfficialReference : public ::testing::TestWithParam<Bounds> {};

TEST_P(OfficialReference, LogitsMatchSameNumericsReference) {
  const Bounds b = GetParam();
  const std::string dir = fixture_dir(b.fixture);
  auto model = Model::load(dir);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const auto& cfg = (*model)->config();
  auto ref =
      formats::SafetensorsFile::open((fs::path(dir) / "reference_official.safetensors").string());
  ASSERT_TRUE(ref.ok()) << ref.status().to_string();
  auto f32_ref = formats::SafetensorsFile::open((fs::path(dir) / "reference.safetensors").string());
  ASSERT_TRUE(f32_ref.ok()) << f32_ref.status().to_string();

  const auto tokens = read<int32_t>(*ref, "tokens", formats::DType::i32);
  // Bound to its fixture: the same token sequence as the f32 reference.
  ASSERT_EQ(tokens, read<int32_t>(*f32_ref, "tokens", formats::DType::i32));
  const size_t S = tokens.size();
  const size_t V = static_cast<size_t>(cfg.vocab_size);
  const size_t L = static_cast<size_t>(cfg.num_hidden_layers);
  const size_t n_values = static_cast<size_t>(cfg.hc_mult * cfg.hidden_size);
  const auto ref_logits = read<float>(*ref, "logits", formats::DType::f32);
  ASSERT_EQ(ref_logits.size(), S * V);
  const auto margin = read<float>(*ref, "margin.min", formats::DType::f32);
  ASSERT_EQ(margin.size(), S);

  // Prefill (the model's default chunks) with per-layer stream sums.
  StreamStats stats(L, S, n_values);
  const LayerObserver obs = stats.observer();
  const auto& sums = stats.sum;
  const auto& sumsqs = stats.sumsq;
  ThreadPool pool(2);
  auto st = (*model)->new_sequence(kv::Scheme::official);
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  std::vector<float> logits(S * V);
  ASSERT_TRUE((*model)->forward(tokens, *st, pool, logits.data(), true, obs).ok());

  // Residual streams after each layer, relative to their own scale (as reference_check.cpp).
  std::string layers;
  for (size_t l = 0; l < L; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".out.";
    const auto rs = read<float>(*ref, p + "sum", formats::DType::f32);
    const auto rs2 = read<float>(*ref, p + "sumsq", formats::DType::f32);
    ASSERT_EQ(rs.size(), S);
    ASSERT_EQ(rs2.size(), S);
    std::vector<double> e(S);
    for (size_t i = 0; i < S; ++i)
      e[i] = std::max(std::fabs(sumsqs[l][i] - rs2[i]) / rs2[i],
                      std::fabs(sums[l][i] - rs[i]) / std::sqrt(double(rs2[i]) * double(n_values)));
    const size_t worst = static_cast<size_t>(std::max_element(e.begin(), e.end()) - e.begin());
    const auto over = static_cast<size_t>(
        std::count_if(e.begin(), e.end(), [](double x) { return x > kTolerance; }));
    char buf[160];
    std::snprintf(buf, sizeof buf, " layer %zu: p99 %.2g, max %.2g at %zu, %zu > tol;", l,
                  quantile(e, 0.99), e[worst], worst, over);
    layers += buf;
    EXPECT_LE(quantile(e, 0.99), b.p99_rel) << "layer " << l;
    EXPECT_LE(over, b.max_outliers) << "layer " << l;
  }

  const std::vector<double> err = row_errors(logits, ref_logits, S, V);
  const double m = mean(err), p99 = quantile(err, 0.99);
  std::string outliers;
  size_t n_out = 0, argmax_same = 0;
  for (size_t t = 0; t < S; ++t) {
    const float* a = &logits[t * V];
    const float* r = &ref_logits[t * V];
    argmax_same += std::max_element(a, a + V) - a == std::max_element(r, r + V) - r;
    if (err[t] <= kTolerance) continue;
    ++n_out;
    char buf[96];
    std::snprintf(buf, sizeof buf, " %zu (%.3g, selection margin %.2g)", t, err[t],
                  double(margin[t]));
    outliers += buf;
  }
  std::printf(
      "%s official vs reference_official (rel. to max|ref|): mean %.3g, p99 %.3g, max %.3g; "
      "argmax %zu/%zu; beyond %.0e:%s%s\n  streams:%s\n",
      b.fixture, m, p99, *std::max_element(err.begin(), err.end()), argmax_same, S, kTolerance,
      n_out ? "" : " none", outliers.c_str(), layers.c_str());
  RecordProperty("mean_rel", std::to_string(m));
  RecordProperty("p99_rel", std::to_string(p99));
  EXPECT_LE(m, b.mean_rel);
  EXPECT_LE(p99, b.p99_rel);
  EXPECT_LE(n_out, b.max_outliers) << outliers;

  // Greedy continuation with the official cache (one token per call).
  const auto prompt = read<int32_t>(*ref, "greedy.prompt", formats::DType::i32);
  const auto ref_greedy = read<int32_t>(*ref, "greedy.tokens", formats::DType::i32);
  const auto ref_gmargin = read<float>(*ref, "greedy.margin", formats::DType::f32);
  ASSERT_FALSE(ref_greedy.empty());
  ASSERT_EQ(ref_gmargin.size(), ref_greedy.size());
  double max_ref = 0;
  for (float r : ref_logits) max_ref = std::max(max_ref, std::fabs(double(r)));
  auto gs = (*model)->new_sequence(kv::Scheme::official);
  ASSERT_TRUE(gs.ok());
  std::vector<float> last(V);
  ASSERT_TRUE((*model)->forward(prompt, *gs, pool, last.data(), false).ok());
  size_t same = 0, decisive = 0;
  while (decisive < ref_greedy.size() && ref_gmargin[decisive] > kTolerance * max_ref) ++decisive;
  for (size_t i = 0; i < ref_greedy.size(); ++i) {
    const auto tok =
        static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    if (i < decisive) {
      EXPECT_EQ(tok, ref_greedy[i]) << "greedy step " << i;
    }
    if (tok != ref_greedy[i]) break;
    ++same;
    ASSERT_TRUE((*model)->forward({&tok, 1}, *gs, pool, last.data(), false).ok());
  }
  std::printf(
      "  greedy: %zu/%zu tokens equal (asserted: the first %zu, before a step whose "
      "reference margin is below the tolerance)\n",
      same, ref_greedy.size(), decisive);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, OfficialReference, ::testing::ValuesIn(kBounds),
                         [](const auto& info) { return std::string(info.param.fixture); });

// The comparison can fail: the exact f32 scheme (no KV or query rounding) on the same fixture
// is far outside the bounds against the official-numerics reference, i.e. the reference really
// carries the rounding and the bounds are tight enough to see it (measured: mean 1.4e-2, p99
// 3.8e-2 on tiny).
TEST(OfficialReference, F32SchemeIsOutsideTheBounds) {
  const std::string dir = fixture_dir("tiny");
  auto model = Model::load(dir);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  auto ref =
      formats::SafetensorsFile::open((fs::path(dir) / "reference_official.safetensors").string());
  ASSERT_TRUE(ref.ok()) << ref.status().to_string();
  const auto tokens = read<int32_t>(*ref, "tokens", formats::DType::i32);
  const auto ref_logits = read<float>(*ref, "logits", formats::DType::f32);
  const size_t V = static_cast<size_t>((*model)->config().vocab_size);
  ASSERT_EQ(ref_logits.size(), tokens.size() * V);
  ThreadPool pool(2);
  SequenceState st = (*model)->new_sequence();
  std::vector<float> logits(tokens.size() * V);
  ASSERT_TRUE((*model)->forward(tokens, st, pool, logits.data()).ok());
  const std::vector<double> err = row_errors(logits, ref_logits, tokens.size(), V);
  std::printf("tiny f32 scheme vs reference_official: mean %.3g, p99 %.3g\n", mean(err),
              quantile(err, 0.99));
  EXPECT_GT(mean(err), 10 * kBounds[0].mean_rel);
  EXPECT_GT(quantile(err, 0.99), 10 * kBounds[0].p99_rel);
}

}  // namespace
}  // namespace dsv4::model
