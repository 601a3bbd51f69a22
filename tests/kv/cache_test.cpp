// KV cache storage without weights: record codecs against the kernels' codecs (an independent
// implementation of the same formats), predicted == allocated bytes for the fixture configs,
// budget exhaustion, checkpoint/restore bookkeeping.
#include "kv/cache.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "kernels/codecs.h"  // header-only scalar codecs: the oracle (not linked into dsv4_kv)
#include "kv/record_codec.h"

namespace dsv4::kv {
namespace {

namespace fs = std::filesystem;

std::string fixture(const char* name) {
  return (fs::path(DSV4_TEST_DATA_DIR) / "fixtures" / name / "config.json").string();
}

// Every f32 bit pattern nearest to each code midpoint, plus a strided sweep of all patterns.
template <typename Fn>
void for_test_floats(Fn fn) {
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 65537)
    fn(std::bit_cast<float>(static_cast<uint32_t>(b)));
  for (int c = 0; c < 256; ++c) {
    const float v = kernels::decode_f8e4m3(static_cast<uint8_t>(c));
    const float u = kernels::decode_f8e4m3(static_cast<uint8_t>(c + 1 < 256 ? c + 1 : c));
    const float mid = (v + u) / 2;  // exact (few mantissa bits)
    for (float x : {v, mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e30f),
                    std::nextafter(mid, -1e30f), -mid})
      fn(x);
  }
  for (int c = 0; c < 8; ++c) {
    const float v = kernels::decode_f4e2m1(static_cast<uint8_t>(c));
    const float u = kernels::decode_f4e2m1(static_cast<uint8_t>(c < 7 ? c + 1 : c));
    const float mid = (v + u) / 2;
    for (float x : {v, mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e30f), -mid}) fn(x);
  }
}

TEST(KvCodec, ScalarsMatchKernelCodecs) {
  for (int c = 0; c < 256; ++c) {
    const float a = codec::e4m3_to_f32(static_cast<uint8_t>(c));
    const float b = kernels::decode_f8e4m3(static_cast<uint8_t>(c));
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a)) << c;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(a), std::bit_cast<uint32_t>(b)) << c;
    }
  }
  for (int c = 0; c < 16; ++c)
    EXPECT_EQ(codec::e2m1_to_f32(static_cast<uint8_t>(c)),
              kernels::decode_f4e2m1(static_cast<uint8_t>(c)));
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = codec::bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(std::bit_cast<uint32_t>(a),
              std::bit_cast<uint32_t>(kernels::decode_bf16(static_cast<uint16_t>(h))));
  }
  size_t n = 0, bad = 0;
  for_test_floats([&](float x) {
    ++n;
    bad += codec::f32_to_e4m3(x) != kernels::encode_f8e4m3(x);
    bad += codec::f32_to_e2m1(x) != kernels::encode_f4e2m1(x);
    bad += codec::f32_to_bf16(x) != kernels::encode_bf16(x);
    if (std::isfinite(x) && x > 0)
      bad += codec::pow2_ceil_exponent(x) != kernels::pow2_ceil_exponent(x);
  });
  EXPECT_GT(n, 65000u);
  EXPECT_EQ(bad, 0u);
}

// The record rule written out with the kernels' scalar codecs.
TEST(KvCodec, V4EntryAndIndexerKeyFollowTheRule) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  constexpr size_t hd = 512, rd = 64, nope = hd - rd;
  ASSERT_EQ(codec::v4_entry_bytes(hd, rd), sizeof(record::V4KvEntryFp8));
  ASSERT_EQ(codec::v4_indexer_key_bytes(128), sizeof(record::V4IndexerKeyFp4));
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> x(hd);
    const float mag = std::ldexp(1.f, trial % 20 - 10);
    for (float& v : x) v = nd(rng) * mag;
    if (trial == 3) std::fill(x.begin(), x.begin() + 64, 0.f);  // amax floor 1e-4
    x[5] = 1000.f * mag;                                        // outlier in block 0
    std::vector<uint8_t> rec(codec::v4_entry_bytes(hd, rd));
    codec::encode_v4_entry(x.data(), hd, rd, rec.data());
    record::V4KvEntryFp8 r;
    std::memcpy(&r, rec.data(), sizeof r);
    std::vector<float> y(hd);
    codec::decode_v4_entry(rec.data(), hd, rd, y.data());
    for (size_t b = 0; b < nope / 64; ++b) {
      float amax = 1e-4f;
      for (size_t i = 0; i < 64; ++i) amax = std::max(amax, std::fabs(x[b * 64 + i]));
      const int k = kernels::pow2_ceil_exponent(amax * (1.0f / 448.0f));
      ASSERT_EQ(r.scale[b], k + 127);
      for (size_t i = 0; i < 64; ++i) {
        const float q = x[b * 64 + i] / kernels::pow2_f32(k);
        ASSERT_EQ(r.nope[b * 64 + i], kernels::encode_f8e4m3(std::clamp(q, -448.f, 448.f)));
        ASSERT_EQ(y[b * 64 + i], kernels::decode_f8e4m3(r.nope[b * 64 + i]) * kernels::pow2_f32(k));
        // FP8 e4m3 with a power-of-two scale: relative error <= 2^-4 of the block's amax scale.
        ASSERT_LE(std::fabs(y[b * 64 + i] - x[b * 64 + i]), amax / 16 + 1e-30f);
      }
    }
    EXPECT_EQ(r.pad[0], 0);
    for (size_t i = 0; i < rd; ++i) {
      EXPECT_EQ(r.rope[i], kernels::encode_bf16(x[nope + i]));
      EXPECT_EQ(y[nope + i], kernels::decode_bf16(r.rope[i]));
    }

    std::vector<float> key(128), key2(128);
    for (float& v : key) v = nd(rng) * mag;
    record::V4IndexerKeyFp4 kr;
    codec::encode_v4_indexer_key(key.data(), 128, reinterpret_cast<uint8_t*>(&kr));
    codec::decode_v4_indexer_key(reinterpret_cast<const uint8_t*>(&kr), 128, key2.data());
    for (size_t b = 0; b < 4; ++b) {
      float amax = 6.0f * std::ldexp(1.0f, -126);
      for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(key[b * 32 + i]));
      const int k = kernels::pow2_ceil_exponent(amax * (1.0f / 6.0f));
      ASSERT_EQ(kr.scale[b], k + 127);
      for (size_t i = 0; i < 32; ++i) {
        const size_t j = b * 32 + i;
        const uint8_t c = (j & 1) ? kr.codes[j / 2] >> 4 : kr.codes[j / 2] & 0xF;
        ASSERT_EQ(c, kernels::encode_f4e2m1(std::clamp(key[j] / kernels::pow2_f32(k), -6.f, 6.f)));
        ASSERT_EQ(key2[j], kernels::decode_f4e2m1(c) * kernels::pow2_f32(k));
      }
    }
  }
}

// --------------------------------------------------------------------------------- accounting

void expect_bytes_eq(const KvBytes& a, const KvBytes& p, const std::string& what) {
  EXPECT_EQ(a.window, p.window) << what;
  EXPECT_EQ(a.raw_kv, p.raw_kv) << what;
  EXPECT_EQ(a.compressed, p.compressed) << what;
  EXPECT_EQ(a.indexer, p.indexer) << what;
  EXPECT_EQ(a.compressor_state, p.compressor_state) << what;
  EXPECT_EQ(a.total(), p.total()) << what;
}

TEST(KvCache, AllocatedEqualsPredictedForFixtureConfigs) {
  for (const char* name : {"tiny", "long", "wide"}) {
    auto cfg = formats::load_model_config(fixture(name));
    ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
    for (Scheme scheme : {Scheme::f32, Scheme::official}) {
      auto layout = make_layout(*cfg, scheme);
      ASSERT_TRUE(layout.ok());
      for (int64_t n : {0, 1, 3, 4, 5, 127, 128, 129, 255, 256, 257, 1000}) {
        auto pool = std::make_shared<BlockPool>();
        auto cache = SequenceCache::create(*cfg, scheme, pool);
        ASSERT_TRUE(cache.ok()) << cache.status().to_string();
        ASSERT_TRUE(fill_synthetic(*cache, 0, n, 1).ok());
        const std::string what =
            std::string(name) + " " + std::string(scheme_name(scheme)) + " n=" + std::to_string(n);
        auto predicted = context_bytes(*layout, static_cast<uint64_t>(n));
        ASSERT_TRUE(predicted.ok());
        expect_bytes_eq(cache->allocated_bytes(), *predicted, what);
        for (int l = 0; l < cache->n_layers(); ++l) {
          auto pl = layer_bytes(layout->layers[static_cast<size_t>(l)], static_cast<uint64_t>(n));
          ASSERT_TRUE(pl.ok());
          expect_bytes_eq(cache->usage(l).allocated, *pl, what + " layer " + std::to_string(l));
          EXPECT_GE(cache->usage(l).reserved, cache->usage(l).allocated.total());
        }
        // Everything reserved is charged to the pool (checkpoints too), and nothing else.
        EXPECT_EQ(pool->reserved(), cache->reserved_bytes() + cache->checkpoint_bytes()) << what;
      }
    }
  }
}

TEST(KvCache, EntriesRoundTripExactlyUnderF32) {
  auto cfg = formats::load_model_config(fixture("long"));
  ASSERT_TRUE(cfg.ok());
  auto cache = SequenceCache::create(*cfg, Scheme::f32, std::make_shared<BlockPool>(),
                                     CacheOptions{.block_records = 3, .checkpoint_interval = 0});
  ASSERT_TRUE(cache.ok());
  ASSERT_TRUE(cache->reserve(4 * 20).ok());
  std::vector<float> row(512), out(512);
  for (int e = 0; e < 20; ++e) {
    for (size_t i = 0; i < row.size(); ++i)
      row[i] = static_cast<float>(e * 1000 + static_cast<int>(i)) * 0.37f;
    cache->append_entry(1, row.data());  // layer 1 is CSA (ratio 4)
  }
  EXPECT_EQ(cache->n_entries(1), 20);
  for (int e = 0; e < 20; ++e) {
    cache->read_entry(1, e, out.data());
    EXPECT_EQ(out[7], static_cast<float>(e * 1000 + 7) * 0.37f);
  }
}

TEST(KvCache, BudgetExhaustionIsACleanError) {
  auto cfg = formats::load_model_config(fixture("long"));
  ASSERT_TRUE(cfg.ok());
  auto layout = make_layout(*cfg, Scheme::official);
  ASSERT_TRUE(layout.ok());
  const uint64_t state = context_bytes(*layout, 0)->total();
  {
    auto pool = std::make_shared<BlockPool>(state - 1);
    auto cache = SequenceCache::create(*cfg, Scheme::official, pool);
    ASSERT_FALSE(cache.ok());
    EXPECT_EQ(cache.status().code(), ErrorCode::out_of_memory);
    EXPECT_EQ(pool->reserved(), 0u);  // partial allocations were given back
  }
  // Room for the state, the rings and one block per stream, not for a second entry block.
  auto pool = std::make_shared<BlockPool>(state + 4 * 128 * 584 + 2 * 256 * 584 + 2 * 256 * 68 +
                                          584 * 256 + (584 * 256 - 1));
  auto cache = SequenceCache::create(*cfg, Scheme::official, pool,
                                     CacheOptions{.block_records = 256, .checkpoint_interval = 0});
  ASSERT_TRUE(cache.ok()) << cache.status().to_string();
  EXPECT_TRUE(cache->reserve(1000).ok());
  Status s = cache->reserve(4 * 257);  // CSA layers need a second block of entries
  EXPECT_EQ(s.code(), ErrorCode::out_of_memory);
  EXPECT_NE(s.message().find("budget"), std::string::npos);
  EXPECT_LE(pool->reserved(), pool->budget());
  // A second sequence on the same pool cannot get its state.
  EXPECT_EQ(SequenceCache::create(*cfg, Scheme::official, pool).status().code(),
            ErrorCode::out_of_memory);
}

TEST(KvCache, Bf16StorageIsRefused) {
  auto cfg = formats::load_model_config(fixture("tiny"));
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(
      SequenceCache::create(*cfg, Scheme::bf16, std::make_shared<BlockPool>()).status().code(),
      ErrorCode::unsupported);
}

// restore(s) gives back exactly the records a fill to s holds, and the accounting of s tokens.
TEST(KvCache, RestoreToCheckpointEqualsFreshFill) {
  auto cfg = formats::load_model_config(fixture("long"));
  ASSERT_TRUE(cfg.ok());
  for (Scheme scheme : {Scheme::f32, Scheme::official}) {
    const CacheOptions opt{.block_records = 16, .checkpoint_interval = 100};  // rounded to 128
    auto a = SequenceCache::create(*cfg, scheme, std::make_shared<BlockPool>(), opt);
    auto b = SequenceCache::create(*cfg, scheme, std::make_shared<BlockPool>(), opt);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE(fill_synthetic(*a, 0, 700, 9).ok());
    ASSERT_TRUE(fill_synthetic(*b, 0, 256, 9).ok());
    EXPECT_EQ(a->checkpoint_at_or_before(699), 640);
    EXPECT_EQ(a->checkpoint_at_or_before(300), 256);
    EXPECT_EQ(a->checkpoint_at_or_before(127), 0);
    a->restore(256);
    EXPECT_EQ(a->checkpoint_at_or_before(699), 256);
    auto layout = make_layout(*cfg, scheme);
    expect_bytes_eq(a->allocated_bytes(), *context_bytes(*layout, 256), "restored");
    std::vector<float> x(1024), y(1024);
    for (int l = 0; l < a->n_layers(); ++l) {
      for (int64_t p = 128; p < 256; ++p) {
        a->read_window(l, p, x.data());
        b->read_window(l, p, y.data());
        ASSERT_EQ(std::vector<float>(x.begin(), x.begin() + 512),
                  std::vector<float>(y.begin(), y.begin() + 512));
      }
      ASSERT_EQ(a->n_entries(l), b->n_entries(l));
      for (int64_t e = 0; e < a->n_entries(l); ++e) {
        a->read_entry(l, e, x.data());
        b->read_entry(l, e, y.data());
        ASSERT_EQ(x, y);
      }
      if (layout->layers[static_cast<size_t>(l)].kind == LayerKind::csa) {
        for (Compressor c : {Compressor::kv, Compressor::indexer}) {
          const CompressorStateView va = a->compressor_state(l, c), vb = b->compressor_state(l, c);
          const int64_t w = 256 / va.ratio - 1;  // the previous window joins the next entry
          ASSERT_TRUE(
              std::equal(va.kv_row(w, 0), va.kv_row(w, 0) + va.ratio * va.width, vb.kv_row(w, 0)));
          ASSERT_TRUE(std::equal(va.gate_row(w, 0), va.gate_row(w, 0) + va.ratio * va.width,
                                 vb.gate_row(w, 0)));
        }
      }
    }
    a->restore(0);
    expect_bytes_eq(a->allocated_bytes(), *context_bytes(*layout, 0), "restored to 0");
    EXPECT_EQ(a->checkpoint_bytes(), 0u);
    EXPECT_EQ(a->pool()->reserved(), a->reserved_bytes());
  }
}

}  // namespace
}  // namespace dsv4::kv
