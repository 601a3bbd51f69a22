// The forward pass on the kv::SequenceCache: official FP8/FP4 records against the kernels'
// block quantizers, logits with the official cache against the f32 reference fixtures
// (measured, bounded), prefill == decode with the official cache, exact rewind, budgets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "fixtures.h"
#include "formats/safetensors.h"
#include "kernels/codecs.h"
#include "kv/record_codec.h"
#include "model/model.h"

namespace dsv4::model {
namespace {

using testing::fixture_dir;
using testing::load_fixture;
using testing::some_tokens;

namespace fs = std::filesystem;

template <typename T>
std::vector<T> read_ref(const formats::SafetensorsFile& f, const std::string& name) {
  const formats::TensorView* t = f.find(name);
  EXPECT_NE(t, nullptr) << name;
  if (t == nullptr) return {};
  std::vector<T> v(t->size_bytes() / sizeof(T));
  std::memcpy(v.data(), t->data(), v.size() * sizeof(T));
  return v;
}

// kv's local record encoders == the kernels' act_quant / fp4_act_quant block quantizers.
TEST(KvRecords, MatchKernelBlockQuantizers) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> x(512);
    const float mag = std::ldexp(1.f, trial % 40 - 20);
    for (float& v : x) v = nd(rng) * mag;
    std::vector<uint8_t> rec(kv::codec::v4_entry_bytes(512, 64));
    kv::codec::encode_v4_entry(x.data(), 512, 64, rec.data());
    std::vector<uint8_t> q(448);
    std::vector<float> s(7);
    kernels::quantize_f8e4m3_blocks(x.data(), 448, 64, true, q.data(), s.data());
    ASSERT_TRUE(std::equal(q.begin(), q.end(), rec.begin()));
    for (size_t b = 0; b < 7; ++b) ASSERT_EQ(rec[448 + 128 + b], kernels::encode_ue8m0(s[b]));
    std::vector<uint8_t> rk(kv::codec::v4_indexer_key_bytes(128)), q4(64), s4(4);
    kv::codec::encode_v4_indexer_key(x.data(), 128, rk.data());
    kernels::quantize_f4e2m1_blocks(x.data(), 128, 32, q4.data(), s4.data());
    ASSERT_TRUE(std::equal(q4.begin(), q4.end(), rk.begin()));
    ASSERT_TRUE(std::equal(s4.begin(), s4.end(), rk.begin() + 64));
  }
}

// Official FP8/FP4 storage moves logits away from the f32 reference by the rounding of every
// cached row (FP8 e4m3 with a power-of-two scale per 64 dims: up to 2^-4 of a block's scale;
// FP4 indexer keys and queries, bf16 attention queries). On the random-weight fixtures,
// measured (docs/kv-storage.md): mean over positions of max|dlogit| / max|ref logit|
// 0.020-0.032; the worst single position 0.04-0.50, where a rounded key flips a discrete choice
// (indexer top-k, expert routing) and the position takes another path. Bounds: ~2x the
// measured mean; 1.5x the measured worst. (The tight check of the official scheme is
// official_reference_test.cpp, against a reference that rounds the same way.)
constexpr double kOfficialMeanRowBound = 6e-2;
constexpr double kOfficialWorstBound = 0.75;

class OfficialFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(OfficialFixture, LogitsNearReferenceAndGreedyMatches) {
  auto model = load_fixture(GetParam());
  ASSERT_NE(model, nullptr);
  auto ref = formats::SafetensorsFile::open(
      (fs::path(fixture_dir(GetParam())) / "reference.safetensors").string());
  ASSERT_TRUE(ref.ok());
  const auto tokens = read_ref<int32_t>(*ref, "tokens");
  const auto ref_logits = read_ref<float>(*ref, "logits");
  const size_t V = static_cast<size_t>(model->config().vocab_size);
  ThreadPool pool(2);
  auto st = model->new_sequence(kv::Scheme::official);
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  std::vector<float> logits(tokens.size() * V);
  ASSERT_TRUE(model->forward(tokens, *st, pool, logits.data()).ok());
  double max_diff = 0, max_ref = 0, sum_rel = 0, sum_diff = 0;
  size_t argmax_same = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    double row_diff = 0, row_ref = 0;
    for (size_t v = 0; v < V; ++v) {
      row_diff = std::max(row_diff, std::fabs(double(logits[t * V + v]) - ref_logits[t * V + v]));
      row_ref = std::max(row_ref, std::fabs(double(ref_logits[t * V + v])));
    }
    max_diff = std::max(max_diff, row_diff);
    max_ref = std::max(max_ref, row_ref);
    sum_rel += row_diff / row_ref;
    sum_diff += row_diff;
    const auto a = std::max_element(&logits[t * V], &logits[t * V] + V) - &logits[t * V];
    const auto b =
        std::max_element(&ref_logits[t * V], &ref_logits[t * V] + V) - &ref_logits[t * V];
    argmax_same += a == b;
  }
  const double rel = max_diff / max_ref;
  const double mean_row_rel = sum_rel / double(tokens.size());
  const double mean_row_diff = sum_diff / double(tokens.size());
  std::printf(
      "%s official vs f32 reference: max|dlogit| %.4g (ref max %.4g) rel %.3g, mean row "
      "max|dlogit| %.3g rel %.3g, argmax agrees at %zu/%zu positions\n",
      GetParam(), max_diff, max_ref, rel, mean_row_diff, mean_row_rel, argmax_same, tokens.size());
  RecordProperty("official_logits_rel", std::to_string(rel));
  EXPECT_LE(mean_row_rel, kOfficialMeanRowBound);
  EXPECT_LE(rel, kOfficialWorstBound);

  // The top-1 token survives the rounding at most positions (measured 95-96 %); a greedy
  // continuation is reported, not asserted: one flip (the reference's first greedy margins are
  // 0.5-1.4, of the order of the worst positions' errors) changes every later step.
  EXPECT_GE(double(argmax_same), 0.9 * double(tokens.size()));
  const auto prompt = read_ref<int32_t>(*ref, "greedy.prompt");
  const auto ref_greedy = read_ref<int32_t>(*ref, "greedy.tokens");
  auto gs = model->new_sequence(kv::Scheme::official);
  ASSERT_TRUE(gs.ok());
  std::vector<float> last(V);
  ASSERT_TRUE(model->forward(prompt, *gs, pool, last.data(), false).ok());
  size_t same = 0;
  for (size_t i = 0; i < ref_greedy.size(); ++i) {
    const auto tok =
        static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    if (tok != ref_greedy[i]) break;
    ++same;
    ASSERT_TRUE(model->forward({&tok, 1}, *gs, pool, last.data(), false).ok());
  }
  std::printf("%s greedy with the official cache: first %zu/%zu tokens equal the reference's\n",
              GetParam(), same, ref_greedy.size());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, OfficialFixture, ::testing::Values("tiny", "long", "wide"),
                         [](const auto& info) { return std::string(info.param); });

TEST(KvForward, OfficialPrefillEqualsTokenByTokenDecode) {
  auto model = load_fixture("long");
  ASSERT_NE(model, nullptr);
  const size_t V = static_cast<size_t>(model->config().vocab_size);
  const auto tokens = some_tokens(*model, 300, 1);
  ThreadPool pool(2);
  auto a = model->new_sequence(kv::Scheme::official);
  auto b = model->new_sequence(kv::Scheme::official);
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<float> prefill(tokens.size() * V), step(V);
  ASSERT_TRUE(model->forward(tokens, *a, pool, prefill.data()).ok());
  for (size_t t = 0; t < tokens.size(); ++t) {
    ASSERT_TRUE(model->forward({&tokens[t], 1}, *b, pool, step.data()).ok());
    ASSERT_TRUE(std::equal(step.begin(), step.end(), prefill.begin() + static_cast<long>(t * V)))
        << "position " << t;
  }
  EXPECT_EQ(a->kv.allocated_bytes().total(), b->kv.allocated_bytes().total());
}

// rewind(p) then re-extend == an uninterrupted run, bit for bit, for p at, before and after
// compression (4, 128) and window (128) boundaries, with checkpoints and without (replay from 0).
TEST(KvForward, RewindThenExtendEqualsFreshRun) {
  auto model = load_fixture("long");  // SWA, CSA (ratio 4), HCA (ratio 128) layers
  ASSERT_NE(model, nullptr);
  const size_t V = static_cast<size_t>(model->config().vocab_size);
  const auto tokens = some_tokens(*model, 300, 2);
  ThreadPool pool(2);
  for (kv::Scheme scheme : {kv::Scheme::f32, kv::Scheme::official}) {
    auto fresh = model->new_sequence(scheme);
    ASSERT_TRUE(fresh.ok());
    std::vector<float> want(tokens.size() * V);
    ASSERT_TRUE(model->forward(tokens, *fresh, pool, want.data()).ok());
    for (int64_t interval : {int64_t{128}, int64_t{0}}) {
      for (int64_t p : {0, 3, 4, 5, 127, 128, 129, 255, 256, 257, 299}) {
        if (interval == 0 && p != 129 && p != 257) continue;  // replay from 0: a few suffice
        auto st = model->new_sequence(
            scheme, nullptr,
            kv::CacheOptions{.block_records = 64, .checkpoint_interval = interval});
        ASSERT_TRUE(st.ok());
        ASSERT_TRUE(model->forward(tokens, *st, pool, nullptr, false).ok());
        ASSERT_TRUE(model->rewind(*st, p, pool).ok());
        EXPECT_EQ(st->n_tokens, p);
        EXPECT_EQ(st->tokens, std::vector<int32_t>(tokens.begin(), tokens.begin() + p));
        std::vector<float> got((tokens.size() - static_cast<size_t>(p)) * V);
        ASSERT_TRUE(
            model->forward(std::span(tokens).subspan(static_cast<size_t>(p)), *st, pool, got.data())
                .ok());
        ASSERT_TRUE(std::equal(got.begin(), got.end(), want.begin() + p * static_cast<int64_t>(V)))
            << kv::scheme_name(scheme) << " interval " << interval << " p " << p;
        EXPECT_EQ(st->kv.allocated_bytes().total(), fresh->kv.allocated_bytes().total());
      }
    }
    auto st = model->new_sequence(scheme);
    ASSERT_TRUE(st.ok());
    ASSERT_TRUE(model->forward(some_tokens(*model, 5, 3), *st, pool, nullptr, false).ok());
    EXPECT_EQ(model->rewind(*st, 6, pool).code(), ErrorCode::invalid_argument);
    EXPECT_EQ(model->rewind(*st, -1, pool).code(), ErrorCode::invalid_argument);
    EXPECT_TRUE(model->rewind(*st, 5, pool).ok());
  }
}

TEST(KvForward, BudgetExhaustionLeavesTheSequenceAlone) {
  auto model = load_fixture("long");
  ASSERT_NE(model, nullptr);
  auto layout = kv::make_layout(model->config(), kv::Scheme::official);
  ASSERT_TRUE(layout.ok());
  // The fixed state plus the four window rings: enough for 3 tokens, not for 4 (the CSA layers'
  // first entry block).
  const uint64_t budget = kv::context_bytes(*layout, 3)->total() - 3 * 4 * 584 + 4 * 128 * 584;
  auto pool = std::make_shared<kv::BlockPool>(budget);
  auto st = model->new_sequence(kv::Scheme::official, pool);
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  ThreadPool tp(1);
  const auto tokens = some_tokens(*model, 4, 4);
  ASSERT_TRUE(model->forward(std::span(tokens).first(3), *st, tp, nullptr, false).ok());
  Status s = model->forward(std::span(tokens).subspan(3), *st, tp, nullptr, false);
  EXPECT_EQ(s.code(), ErrorCode::out_of_memory) << s.to_string();
  EXPECT_EQ(st->n_tokens, 3);
  EXPECT_EQ(st->tokens.size(), 3u);
}

}  // namespace
}  // namespace dsv4::model
