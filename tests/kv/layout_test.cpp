// Tests for kv/layout: record sizes of every layer kind under every scheme (each expected
// number written as the arithmetic that explains it), record counts at compression
// boundaries, totals of the published configs, and the error paths.
#include "kv/layout.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <string>

#include "kv/embedded_configs.h"

namespace dsv4::kv {
namespace {

using formats::ModelConfig;

constexpr uint64_t kK = 1024;
constexpr uint64_t kM = 1024 * 1024;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

ModelConfig embedded(std::string_view name) {
  auto c = load_embedded_config(name);
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : ModelConfig{};
}

KvLayout layout_of(std::string_view name, Scheme s, bool mtp = false) {
  auto l = make_layout(embedded(name), s, {.include_mtp = mtp});
  EXPECT_TRUE(l.ok()) << l.status().to_string();
  return l.ok() ? *l : KvLayout{};
}

const LayerLayout& first_of(const KvLayout& l, LayerKind k) {
  for (const LayerLayout& x : l.layers)
    if (x.kind == k) return x;
  ADD_FAILURE() << "no layer of kind " << layer_kind_name(k);
  static LayerLayout none;
  return none;
}

uint64_t total(const KvLayout& l, uint64_t n) {
  auto b = context_bytes(l, n);
  EXPECT_TRUE(b.ok()) << b.status().to_string();
  return b.ok() ? b->total() : 0;
}

TEST(Layout, RecordStructsMatchTheDeployedByteOrder) {
  // FlashMLA MODEL1_FP8Sparse: [0,448) fp8 nope, [448,576) bf16 rope, [576,583) ue8m0, 1 pad.
  EXPECT_EQ(offsetof(record::V4KvEntryFp8, rope), 448u);
  EXPECT_EQ(offsetof(record::V4KvEntryFp8, scale), 448u + 64 * 2);
  EXPECT_EQ(sizeof(record::V4KvEntryFp8), 448u + 64 * 2 + 7 + 1);
  // FlashMLA V32_FP8Sparse: [0,512) fp8 latent, [512,528) 4 x f32 scales, [528,656) bf16 rope.
  EXPECT_EQ(offsetof(record::V32MlaEntryFp8, scale), 512u);
  EXPECT_EQ(offsetof(record::V32MlaEntryFp8, rope), 512u + 4 * 4);
  EXPECT_EQ(sizeof(record::V32MlaEntryFp8), 512u + 4 * 4 + 64 * 2);
  EXPECT_EQ(sizeof(record::V4IndexerKeyFp4), 128u / 2 + 128 / 32);
  EXPECT_EQ(sizeof(record::V32IndexerKeyFp8), 128u + 4);
}

// V4 layer records, per scheme. head_dim 512 (448 nope + 64 rope), index_head_dim 128.
TEST(Layout, V4RecordsPerScheme) {
  struct Case {
    Scheme s;
    uint64_t entry, key, csa_state, hca_state;
  };
  const Case cases[] = {
      // entry: 512 dims x 2 B; key: 128 dims x 2 B; state: kv_state + score_state of
      // [2*4, 2*512] (+ the indexer's [2*4, 2*128]) for CSA, [128, 512] for HCA, bf16.
      {Scheme::bf16, 512 * 2, 128 * 2, 2 * (2 * 4) * (2 * 512) * 2 + 2 * (2 * 4) * (2 * 128) * 2,
       2 * 128 * 512 * 2},
      {Scheme::f32, 512 * 4, 128 * 4, 2 * (2 * 4) * (2 * 512) * 4 + 2 * (2 * 4) * (2 * 128) * 4,
       2 * 128 * 512 * 4},
      // official: 448 fp8 + 64 bf16 rope + 7 ue8m0 scales + 1 pad; key 128 fp4 + 4 ue8m0;
      // the compressor state stays f32 as in the reference.
      {Scheme::official, 448 + 64 * 2 + 7 + 1, 128 / 2 + 128 / 32,
       2 * (2 * 4) * (2 * 512) * 4 + 2 * (2 * 4) * (2 * 128) * 4, 2 * 128 * 512 * 4},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(scheme_name(c.s)));
    KvLayout l = layout_of(kDeepSeekV4Flash, c.s);
    const LayerLayout& swa = first_of(l, LayerKind::sliding_window);
    const LayerLayout& csa = first_of(l, LayerKind::csa);
    const LayerLayout& hca = first_of(l, LayerKind::hca);
    for (const LayerLayout* x : {&swa, &csa, &hca}) {
      EXPECT_EQ(x->raw_token_bytes, c.entry);  // every V4 layer keeps a raw window
      EXPECT_EQ(x->window, 128);
      EXPECT_FALSE(x->raw_every_token);
    }
    EXPECT_EQ(swa.compress_ratio, 0);
    EXPECT_EQ(swa.compressor_state_bytes, 0u);
    EXPECT_EQ(csa.compress_ratio, 4);
    EXPECT_EQ(csa.compressed_entry_bytes, c.entry);
    EXPECT_EQ(csa.indexer_key_bytes, c.key);
    EXPECT_EQ(csa.indexer_ratio, 4);
    EXPECT_EQ(csa.compressor_state_bytes, c.csa_state);
    EXPECT_EQ(hca.compress_ratio, 128);
    EXPECT_EQ(hca.compressed_entry_bytes, c.entry);
    EXPECT_EQ(hca.indexer_key_bytes, 0u);
    EXPECT_EQ(hca.compressor_state_bytes, c.hca_state);
  }
}

// Bytes each further token adds, per layer, for every layer type and scheme.
TEST(Layout, PerTokenBytesOfEveryLayerType) {
  struct Case {
    std::string_view model;
    LayerKind kind;
    Scheme s;
    double per_token;  // with indexer keys
    double per_token_no_index;
  };
  const Case cases[] = {
      // Sliding-window-only layers do not grow: the window is fixed.
      {kDeepSeekV4Flash, LayerKind::sliding_window, Scheme::bf16, 0, 0},
      {kDeepSeekV4Flash, LayerKind::sliding_window, Scheme::f32, 0, 0},
      {kDeepSeekV4Flash, LayerKind::sliding_window, Scheme::official, 0, 0},
      // CSA: one 512-dim KV entry and one 128-dim indexer key per 4 tokens.
      {kDeepSeekV4Flash, LayerKind::csa, Scheme::bf16, (512 * 2 + 128 * 2) / 4.0, 512 * 2 / 4.0},
      {kDeepSeekV4Flash, LayerKind::csa, Scheme::f32, (512 * 4 + 128 * 4) / 4.0, 512 * 4 / 4.0},
      {kDeepSeekV4Flash, LayerKind::csa, Scheme::official,
       ((448 + 64 * 2 + 8) + (128 / 2 + 128 / 32)) / 4.0, (448 + 64 * 2 + 8) / 4.0},  // 163
      // HCA: one 512-dim KV entry per 128 tokens, no indexer.
      {kDeepSeekV4Flash, LayerKind::hca, Scheme::bf16, 512 * 2 / 128.0, 512 * 2 / 128.0},
      {kDeepSeekV4Flash, LayerKind::hca, Scheme::f32, 512 * 4 / 128.0, 512 * 4 / 128.0},
      {kDeepSeekV4Flash, LayerKind::hca, Scheme::official, (448 + 64 * 2 + 8) / 128.0,
       (448 + 64 * 2 + 8) / 128.0},  // 4.5625
      // V3.2 MLA: 512 latent + 64 RoPE dims per token, plus a 128-dim indexer key per token.
      {kDeepSeekV32, LayerKind::mla_indexer, Scheme::bf16, (512 + 64) * 2 + 128 * 2,
       (512 + 64) * 2},
      {kDeepSeekV32, LayerKind::mla_indexer, Scheme::f32, (512 + 64) * 4 + 128 * 4, (512 + 64) * 4},
      // official: 512 fp8 + 4 f32 scales + 64 bf16 rope; key 128 fp8 + 1 f32 scale.
      {kDeepSeekV32, LayerKind::mla_indexer, Scheme::official, (512 + 4 * 4 + 64 * 2) + (128 + 4),
       512 + 4 * 4 + 64 * 2},
      // GQA: K and V, 8 heads x 128 dims; no deployed quantized layout, official = bf16.
      {kGqaBaseline, LayerKind::gqa, Scheme::bf16, 2 * 8 * 128 * 2, 2 * 8 * 128 * 2},
      {kGqaBaseline, LayerKind::gqa, Scheme::f32, 2 * 8 * 128 * 4, 2 * 8 * 128 * 4},
      {kGqaBaseline, LayerKind::gqa, Scheme::official, 2 * 8 * 128 * 2, 2 * 8 * 128 * 2},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.model) + " " + std::string(layer_kind_name(c.kind)) + " " +
                 std::string(scheme_name(c.s)));
    KvLayout l = layout_of(c.model, c.s);
    const LayerLayout& x = first_of(l, c.kind);
    EXPECT_DOUBLE_EQ(layer_bytes_per_token(x), c.per_token);
    EXPECT_DOUBLE_EQ(layer_bytes_per_token(x, /*with_indexer=*/false), c.per_token_no_index);
  }
}

TEST(Layout, MlaV3OfficialIsBf16) {
  auto c =
      formats::load_model_config(std::string(DSV4_TEST_DATA_DIR) + "/configs/deepseek_v3.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  for (Scheme s : {Scheme::bf16, Scheme::official}) {
    auto l = make_layout(*c, s);
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->layers[0].kind, LayerKind::mla);
    EXPECT_EQ(l->layers[0].raw_token_bytes, (512u + 64) * 2);
    EXPECT_EQ(l->layers[0].indexer_key_bytes, 0u);
  }
}

TEST(Layout, CountsAtCompressionBoundaries) {
  KvLayout l = layout_of(kDeepSeekV4Flash, Scheme::bf16);
  const LayerLayout& csa = first_of(l, LayerKind::csa);
  const LayerLayout& hca = first_of(l, LayerKind::hca);
  const LayerLayout& swa = first_of(l, LayerKind::sliding_window);
  const uint64_t e = 512 * 2, key = 128 * 2;
  // CSA entries: floor(N / 4) at ratio - 1, ratio, ratio + 1 (and 2 ratio - 1, 2 ratio).
  for (auto [n, entries] :
       {std::pair<uint64_t, uint64_t>{0, 0}, {3, 0}, {4, 1}, {5, 1}, {7, 1}, {8, 2}}) {
    auto b = layer_bytes(csa, n);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->compressed, entries * e) << n;
    EXPECT_EQ(b->indexer, entries * key) << n;
    EXPECT_EQ(b->window, n * e) << n;  // all below the 128-token window
    EXPECT_EQ(b->compressor_state, csa.compressor_state_bytes) << n;  // fixed, even at 0
  }
  // HCA entries: floor(N / 128); the window saturates at 128 tokens.
  for (auto [n, entries] :
       {std::pair<uint64_t, uint64_t>{127, 0}, {128, 1}, {129, 1}, {255, 1}, {256, 2}}) {
    auto b = layer_bytes(hca, n);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->compressed, entries * e) << n;
    EXPECT_EQ(b->window, std::min<uint64_t>(n, 128) * e) << n;
    EXPECT_EQ(b->indexer, 0u);
  }
  auto w = layer_bytes(swa, 1 * kM);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->total(), 128 * e);  // only the window, however long the context
  EXPECT_EQ(window_tokens(128, 127), 127u);
  EXPECT_EQ(window_tokens(128, 129), 128u);
  EXPECT_EQ(compressed_entries(4, 4 * kM + 3), kM);
}

TEST(Layout, PublishedTotalsAtOneMillionTokens) {
  const uint64_t n = 1 * kM;
  // V3.2, bf16, without indexer keys: 1152 B per token per layer x 61 layers.
  {
    KvLayout l = layout_of(kDeepSeekV32, Scheme::bf16);
    auto b = context_bytes(l, n);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->without_indexer(), (512 + 64) * 2 * 61 * n);
    EXPECT_DOUBLE_EQ(static_cast<double>(b->without_indexer()) / kGiB, 68.625);
    EXPECT_EQ(b->indexer, 128 * 2 * 61 * n);
    EXPECT_DOUBLE_EQ(static_cast<double>(context_bytes(l, 160 * kK)->without_indexer()) / kGiB,
                     (512 + 64) * 2 * 61 * 160.0 / (1024 * 1024));  // 10.72265625
    EXPECT_DOUBLE_EQ(static_cast<double>(context_bytes(l, 128 * kK)->without_indexer()) / kGiB,
                     8.578125);
    EXPECT_DOUBLE_EQ(bytes_per_token(l, false), 1152.0 * 61);
  }
  // V3.2 official with indexer: (656 + 132) x 61 per token.
  EXPECT_EQ(total(layout_of(kDeepSeekV32, Scheme::official), n), (656u + 132) * 61 * n);
  // V4-Flash official, part by part: 43 windows of 128 entries; 21 CSA layers with N/4 KV
  // entries and N/4 indexer keys; 20 HCA layers with N/128 entries; fixed compressor state.
  {
    KvLayout l = layout_of(kDeepSeekV4Flash, Scheme::official);
    auto b = context_bytes(l, n);
    ASSERT_TRUE(b.ok());
    const uint64_t e = 448 + 64 * 2 + 8, key = 128 / 2 + 128 / 32;
    EXPECT_EQ(b->window, 43 * 128 * e);
    EXPECT_EQ(b->compressed, 21 * (n / 4) * e + 20 * (n / 128) * e);
    EXPECT_EQ(b->indexer, 21 * (n / 4) * key);
    EXPECT_EQ(b->raw_kv, 0u);
    EXPECT_EQ(b->compressor_state,
              21 * (2 * 8 * 1024 * 4 + 2 * 8 * 256 * 4) + 20 * (2 * 128 * 512 * 4));
    EXPECT_DOUBLE_EQ(bytes_per_token(l), 21 * 163.0 + 20 * 4.5625);  // 3514.25
  }
  // V4-Pro: 30 CSA + 31 HCA, no sliding-only layer.
  {
    KvLayout l = layout_of(kDeepSeekV4Pro, Scheme::bf16);
    EXPECT_DOUBLE_EQ(bytes_per_token(l), 30 * 320.0 + 31 * 8.0);  // 9848
    auto b = context_bytes(l, n);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->compressed + b->indexer, 9848 * n);
    EXPECT_EQ(b->window, 61 * 128 * 1024u);
  }
  // GQA baseline: 2 x 8 x 128 x 2 B x 61 layers = 249,856 B per token; 244 GiB at 1M.
  EXPECT_DOUBLE_EQ(static_cast<double>(total(layout_of(kGqaBaseline, Scheme::bf16), n)) / kGiB,
                   244.0);
}

TEST(Layout, DeployedV4IsAboutATenthOfV32AndAFiftiethOfGqa) {
  // The DeepSeek-V4 report's claims at 1M tokens, under the deployed layouts.
  const uint64_t n = 1 * kM;
  const double pro = static_cast<double>(total(layout_of(kDeepSeekV4Pro, Scheme::official), n));
  const double v32 = static_cast<double>(total(layout_of(kDeepSeekV32, Scheme::official), n));
  const double gqa = static_cast<double>(total(layout_of(kGqaBaseline, Scheme::bf16), n));
  EXPECT_GT(pro / v32, 0.10);
  EXPECT_LT(pro / v32, 0.11);
  EXPECT_GT(pro / gqa, 0.019);
  EXPECT_LT(pro / gqa, 0.021);
}

TEST(Layout, ContextBytesIsTheSumOfLayers) {
  for (std::string_view name : {kDeepSeekV32, kDeepSeekV4Flash, kDeepSeekV4Pro, kGqaBaseline}) {
    for (Scheme s : {Scheme::bf16, Scheme::f32, Scheme::official}) {
      KvLayout l = layout_of(name, s);
      for (uint64_t n :
           {uint64_t{0}, uint64_t{1}, uint64_t{127}, uint64_t{129}, 100003 * uint64_t{7}}) {
        uint64_t sum = 0;
        for (const LayerLayout& x : l.layers) sum += layer_bytes(x, n)->total();
        EXPECT_EQ(total(l, n), sum) << name << " " << scheme_name(s) << " " << n;
        auto kinds = summarize_by_kind(l, n);
        ASSERT_TRUE(kinds.ok());
        uint64_t by_kind = 0;
        int layers = 0;
        for (const KindSummary& k : *kinds) {
          by_kind += k.bytes.total();
          layers += k.layers;
        }
        EXPECT_EQ(by_kind, sum);
        EXPECT_EQ(layers, static_cast<int>(l.layers.size()));
      }
    }
  }
}

TEST(Layout, LayerKindsOfThePublishedConfigs) {
  auto kinds = summarize_by_kind(layout_of(kDeepSeekV4Flash, Scheme::bf16), 0);
  ASSERT_TRUE(kinds.ok());
  ASSERT_EQ(kinds->size(), 3u);
  EXPECT_EQ((*kinds)[0].kind, LayerKind::sliding_window);
  EXPECT_EQ((*kinds)[0].layers, 2);
  EXPECT_EQ((*kinds)[1].kind, LayerKind::csa);
  EXPECT_EQ((*kinds)[1].layers, 21);
  EXPECT_EQ((*kinds)[2].kind, LayerKind::hca);
  EXPECT_EQ((*kinds)[2].layers, 20);
  KvLayout pro = layout_of(kDeepSeekV4Pro, Scheme::bf16);
  EXPECT_EQ(pro.layers.size(), 61u);
  EXPECT_EQ(pro.layers[0].kind, LayerKind::hca);
  EXPECT_EQ(pro.layers[2].kind, LayerKind::csa);
}

TEST(Layout, MtpLayers) {
  // V4-Flash's MTP layer is sliding-window only (compress_ratios[43] == 0): +128 entries.
  KvLayout main = layout_of(kDeepSeekV4Flash, Scheme::official);
  KvLayout with = layout_of(kDeepSeekV4Flash, Scheme::official, /*mtp=*/true);
  ASSERT_EQ(with.layers.size(), 44u);
  EXPECT_TRUE(with.layers.back().mtp);
  EXPECT_EQ(with.layers.back().kind, LayerKind::sliding_window);
  EXPECT_EQ(total(with, kM) - total(main, kM), 128u * (448 + 64 * 2 + 8));
  // V3.2's MTP layer is another MLA + indexer layer.
  KvLayout v32 = layout_of(kDeepSeekV32, Scheme::bf16, true);
  EXPECT_EQ(v32.layers.size(), 62u);
  EXPECT_EQ(total(v32, 1000), ((512u + 64) * 2 + 128 * 2) * 62 * 1000);
}

TEST(Layout, GqaSlidingLayers) {
  auto c = formats::load_model_config(std::string(DSV4_TEST_DATA_DIR) +
                                      "/configs/qwen2_sliding_tiny.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  auto l = make_layout(*c, Scheme::bf16);
  ASSERT_TRUE(l.ok());
  // 4 layers, 2 KV heads x 64 dims; layers 2-3 keep only the last 64 tokens.
  const uint64_t e = 2 * 2 * 64 * 2;
  EXPECT_EQ(l->layers[0].kind, LayerKind::gqa);
  EXPECT_EQ(l->layers[2].kind, LayerKind::gqa_sliding);
  auto b = context_bytes(*l, 1000);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->raw_kv, 2 * 1000 * e);
  EXPECT_EQ(b->window, 2 * 64 * e);
  EXPECT_DOUBLE_EQ(bytes_per_token(*l), 2.0 * e);
}

TEST(Layout, Errors) {
  // `official` needs FP4 blocks of 32 indexer dims: the tiny config's 48 has none.
  auto tiny = formats::load_model_config(std::string(DSV4_TEST_DATA_DIR) +
                                         "/configs/deepseek_v4_tiny.json");
  ASSERT_TRUE(tiny.ok()) << tiny.status().to_string();
  auto off = make_layout(*tiny, Scheme::official);
  ASSERT_FALSE(off.ok());
  EXPECT_EQ(off.status().code(), ErrorCode::unsupported);
  EXPECT_NE(off.status().message().find("index_head_dim"), std::string::npos);
  EXPECT_TRUE(make_layout(*tiny, Scheme::bf16).ok());
  // Non-RoPE dims that are not a multiple of the 64-dim FP8 block.
  ModelConfig odd = *tiny;
  odd.qk_rope_head_dim = 64;  // 96 - 64 = 32 nope dims
  odd.index_head_dim = 64;
  auto off2 = make_layout(odd, Scheme::official);
  ASSERT_FALSE(off2.ok());
  EXPECT_NE(off2.status().message().find("multiple of 64"), std::string::npos);
  // 64-bit overflow is an error, not a wrap.
  KvLayout gqa = layout_of(kGqaBaseline, Scheme::f32);
  auto big = context_bytes(gqa, uint64_t{1} << 62);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), ErrorCode::invalid_argument);
  EXPECT_TRUE(context_bytes(gqa, uint64_t{1} << 40).ok());
}

TEST(Layout, Schemes) {
  EXPECT_EQ(*parse_scheme("bf16"), Scheme::bf16);
  EXPECT_EQ(*parse_scheme("f32"), Scheme::f32);
  EXPECT_EQ(*parse_scheme("official"), Scheme::official);
  for (const char* bad : {"", "BF16", "fp8", "official ", "bf16,f32"}) {
    auto s = parse_scheme(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), ErrorCode::invalid_argument);
    EXPECT_NE(s.status().message().find("bf16, f32 or official"), std::string::npos);
  }
}

TEST(Layout, EmbeddedConfigsParse) {
  ASSERT_EQ(embedded_configs().size(), 4u);
  for (const EmbeddedConfig& e : embedded_configs()) {
    auto c = load_embedded_config(e.name);
    EXPECT_TRUE(c.ok()) << e.name << ": " << c.status().to_string();
    EXPECT_FALSE(e.source.empty());
  }
  EXPECT_EQ(load_embedded_config("nope").status().code(), ErrorCode::not_found);
  // The embedded V4-Flash text and the fixture copy parse to the same schedule.
  auto fixture = formats::load_model_config(std::string(DSV4_TEST_DATA_DIR) +
                                            "/configs/deepseek_v4_flash.json");
  ASSERT_TRUE(fixture.ok());
  EXPECT_EQ(fixture->layer_types, embedded(kDeepSeekV4Flash).layer_types);
}

}  // namespace
}  // namespace dsv4::kv
