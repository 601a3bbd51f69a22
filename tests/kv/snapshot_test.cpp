// KV snapshots without weights (kv/snapshot.h): save -> load round trips (mapped and copied,
// equal and different block sizes) continue exactly like the saved cache; every corruption
// class is rejected — truncation at many offsets, every header byte flipped, a sample of data
// bytes flipped, another model's identity, another layout, forged headers with a valid
// checksum but inconsistent fields; atomic replacement; the fuzz seed corpus.
#include "kv/snapshot.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>

#include "../../fuzz/kv_snapshot_fuzz_config.h"
#include "../temp_dir.h"
#include "base/mmap_file.h"
#include "kv_test_util.h"

namespace dsv4::kv {
namespace {

namespace fs = std::filesystem;
using testing::dump_live;
using testing::load_config;

ModelIdentity test_identity() {
  ModelIdentity id;
  id.model_type = "deepseek_v4";
  id.config_hash = 0x0123456789abcdefull;
  id.weights_hash = 0xfedcba9876543210ull;
  return id;
}

std::vector<int32_t> token_ids(int64_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    t[static_cast<size_t>(i)] = static_cast<int32_t>((i * 37 + 5) % 256);
  return t;
}

// A temporary directory removed at the end of the test.
class TempDir : public ::dsv4::testing::TempDir {
 public:
  TempDir() : ::dsv4::testing::TempDir("dsv4_kvsnap") {}
};

SequenceCache filled(const formats::ModelConfig& cfg, Scheme scheme, CacheOptions opt, int64_t n,
                     uint64_t seed = 1) {
  auto c = SequenceCache::create(cfg, scheme, std::make_shared<BlockPool>(), opt);
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(fill_synthetic(*c, 0, n, seed).ok());
  return std::move(*c);
}

std::vector<uint8_t> encode(SequenceCache& c, const ModelIdentity& id = test_identity()) {
  auto img = encode_snapshot(c, token_ids(c.n_tokens()), id);
  EXPECT_TRUE(img.ok()) << img.status().to_string();
  return img.ok() ? *img : std::vector<uint8_t>{};
}

Result<LoadedSnapshot> decode(std::span<const uint8_t> img, const formats::ModelConfig& cfg,
                              CacheOptions opt = {}, const ModelIdentity& id = test_identity()) {
  return decode_snapshot(img, "test.dsv4kv", cfg, id, std::make_shared<BlockPool>(), opt);
}

// Recomputes the header checksum after a deliberate edit (a forged but well-sealed file).
void reseal(std::vector<uint8_t>& img) {
  uint32_t hb = 0;
  std::memcpy(&hb, img.data() + 12, 4);
  const uint64_t sum = XXH3_64bits(img.data(), hb - 8);
  std::memcpy(img.data() + hb - 8, &sum, 8);
}

template <typename T>
void poke(std::vector<uint8_t>& img, size_t offset, T v) {
  std::memcpy(img.data() + offset, &v, sizeof v);
}

// Offset of layer l's SnapshotLayerRecord in the variable header.
size_t layer_record_offset(const std::vector<uint8_t>& img, int l) {
  uint32_t mt = 0;
  std::memcpy(&mt, img.data() + 68, 4);
  return 128 + (mt + 7) / 8 * 8 + static_cast<size_t>(l) * sizeof(SnapshotLayerRecord);
}

struct RoundTripCase {
  Scheme scheme;
  int64_t n;
};

class SnapshotRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

// save -> load (map, copy; same and different block sizes) == the saved cache, byte for byte,
// including checkpoints; both then continue identically; restore to each checkpoint agrees.
TEST_P(SnapshotRoundTrip, LoadEqualsSavedAndContinuesIdentically) {
  const auto [scheme, n] = GetParam();
  const auto cfg = load_config("long");
  const CacheOptions opt{.block_records = 16, .checkpoint_interval = 128};
  SequenceCache a = filled(cfg, scheme, opt, n);
  TempDir dir;
  const std::string path = dir.file("a.dsv4kv");
  ASSERT_TRUE(save_snapshot(a, token_ids(n), test_identity(), path).ok());
  const std::vector<uint8_t> want = dump_live(a);
  auto layout = make_layout(cfg, scheme);
  for (SnapshotMode mode : {SnapshotMode::map, SnapshotMode::copy}) {
    for (int64_t load_br : {int64_t{16}, int64_t{5}}) {
      const std::string what = std::string(scheme_name(scheme)) + " n=" + std::to_string(n) +
                               (mode == SnapshotMode::map ? " map" : " copy") + " br " +
                               std::to_string(load_br);
      const CacheOptions lopt{.block_records = load_br, .checkpoint_interval = 128};
      auto pool = std::make_shared<BlockPool>();
      auto s = load_snapshot(path, cfg, test_identity(), pool, lopt, {.mode = mode});
      ASSERT_TRUE(s.ok()) << what << ": " << s.status().to_string();
      EXPECT_EQ(s->tokens, token_ids(n)) << what;
      EXPECT_EQ(s->info.n_tokens, n);
      EXPECT_EQ(s->cache.n_tokens(), n);
      EXPECT_EQ(dump_live(s->cache), want) << what;
      EXPECT_EQ(s->cache.checkpoint_positions(), a.checkpoint_positions()) << what;
      EXPECT_EQ(s->cache.allocated_bytes().total(),
                context_bytes(*layout, static_cast<uint64_t>(n))->total())
          << what;
      EXPECT_EQ(pool->reserved(), s->cache.reserved_bytes() + s->cache.checkpoint_bytes()) << what;
      const bool mapped = mode == SnapshotMode::map && load_br == 16;
      if (mapped && n >= 4) {
        EXPECT_GT(s->mapped_bytes, 0u) << what;
        EXPECT_EQ(s->cache.shared_bytes(), s->mapped_bytes) << what;
      } else {
        EXPECT_EQ(s->mapped_bytes, 0u) << what;
      }
      // Continue both by the same rows: still equal (copy-on-write of mapped partial blocks).
      SequenceCache b = filled(cfg, scheme, opt, n);
      ASSERT_TRUE(fill_synthetic(b, n, n + 77, 9).ok());
      ASSERT_TRUE(fill_synthetic(s->cache, n, n + 77, 9).ok()) << what;
      EXPECT_EQ(dump_live(s->cache), dump_live(b)) << what;
      for (int64_t cp : a.checkpoint_positions()) {
        auto c1 = load_snapshot(path, cfg, test_identity(), std::make_shared<BlockPool>(), lopt,
                                {.mode = mode});
        ASSERT_TRUE(c1.ok());
        c1->cache.restore(cp);
        SequenceCache fresh = filled(cfg, scheme, opt, cp);
        EXPECT_EQ(dump_live(c1->cache), dump_live(fresh)) << what << " restore " << cp;
      }
    }
  }
  // The image in memory decodes the same way, and re-encoding reproduces it byte for byte.
  const std::vector<uint8_t> img = encode(a);
  auto d = decode(img, cfg, opt);
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_EQ(encode(d->cache), img);
  auto on_disk = read_file(path);
  ASSERT_TRUE(on_disk.ok());
  EXPECT_EQ(std::vector<uint8_t>(on_disk->begin(), on_disk->end()), img);
}

INSTANTIATE_TEST_SUITE_P(Cases, SnapshotRoundTrip, ::testing::ValuesIn([] {
                           std::vector<RoundTripCase> v;
                           for (Scheme s : {Scheme::f32, Scheme::official})
                             for (int64_t n : {0, 1, 3, 4, 127, 128, 129, 300}) v.push_back({s, n});
                           return v;
                         }()),
                         [](const auto& info) {
                           return std::string(scheme_name(info.param.scheme)) + "_n" +
                                  std::to_string(info.param.n);
                         });

TEST(KvSnapshot, HeaderLayoutIsAsDocumented) {
  const auto cfg = load_config("long");
  SequenceCache a =
      filled(cfg, Scheme::official, {.block_records = 16, .checkpoint_interval = 128}, 130);
  const std::vector<uint8_t> img = encode(a);
  ASSERT_GE(img.size(), 128u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(img.data()), 8), "DSV4KVSN");
  SnapshotFixedHeader h;
  std::memcpy(&h, img.data(), sizeof h);
  EXPECT_EQ(h.version, 1u);
  EXPECT_EQ(h.header_bytes % 64, 0u);
  EXPECT_EQ(h.file_bytes, img.size());
  EXPECT_EQ(h.scheme, 2u);
  EXPECT_EQ(h.n_layers, 4u);
  EXPECT_EQ(h.n_tokens, 130);
  EXPECT_EQ(h.n_checkpoints, 1u);
  EXPECT_EQ(h.model_type_bytes, 11u);
  EXPECT_EQ(h.layout_hash, layout_hash(*make_layout(cfg, Scheme::official)));
  // 128 + 16 (model_type) + 4 * 80 (layers) + 8 (one checkpoint) + 520 (130 ids) + 8 = 1000
  // -> 1024.
  EXPECT_EQ(h.header_bytes, 1024u);
  EXPECT_EQ(h.flags, 0u);
  auto info = read_snapshot_info(img, "x");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->checkpoints, (std::vector<int64_t>{128}));
  // Layer 1 (CSA, ratio 4): 32 entries and keys in blocks of 16 records.
  SnapshotLayerRecord r;
  std::memcpy(&r, img.data() + layer_record_offset(img, 1), sizeof r);
  EXPECT_EQ(r.window_filled, 128);
  EXPECT_EQ(r.n_entries, 32);
  EXPECT_EQ(r.n_index_keys, 32);
  EXPECT_EQ(r.entry_block_records, 16);
  EXPECT_EQ(r.key_block_records, 16);
  EXPECT_EQ(r.row_bytes, 584u);
  EXPECT_EQ(r.key_bytes, 68u);
  EXPECT_EQ(r.window, 128);
  EXPECT_EQ(r.state_bytes, a.layout().layers[1].compressor_state_bytes);
  EXPECT_EQ(r.checkpoint_prev_bytes, 2u * 4 * (2 * 512 + 2 * 128) * 4);
  // The first section (layer 0's ring) starts right after the header, 64-aligned, and its
  // checksum is xxh3-64 of its payload with seed 0.
  const uint64_t len = 128 * 584;
  uint64_t stored = 0;
  std::memcpy(&stored, img.data() + h.header_bytes + len, 8);
  EXPECT_EQ(stored, XXH3_64bits_withSeed(img.data() + h.header_bytes, len, 0));
}

TEST(KvSnapshot, TruncationAtAnyOffsetIsRejected) {
  const auto cfg = load_config("long");
  SequenceCache a =
      filled(cfg, Scheme::official, {.block_records = 16, .checkpoint_interval = 64}, 133);
  const std::vector<uint8_t> img = encode(a);
  SnapshotFixedHeader h;
  std::memcpy(&h, img.data(), sizeof h);
  std::vector<size_t> cuts;
  for (size_t i = 0; i <= h.header_bytes + 64; ++i) cuts.push_back(i);
  for (size_t i = h.header_bytes; i < img.size(); i += 997) cuts.push_back(i);
  for (size_t i = img.size() - 200; i < img.size(); ++i) cuts.push_back(i);
  size_t n = 0;
  for (size_t cut : cuts) {
    auto s = decode(std::span<const uint8_t>(img.data(), cut), cfg);
    ASSERT_FALSE(s.ok()) << "cut at " << cut;
    const ErrorCode c = s.status().code();
    ASSERT_TRUE(c == ErrorCode::data_loss || c == ErrorCode::parse_error)
        << cut << ": " << s.status().to_string();
    if (cut >= h.header_bytes) {
      EXPECT_NE(s.status().message().find("truncated"), std::string::npos) << s.status().message();
    }
    ++n;
  }
  EXPECT_GT(n, 1000u);
  std::vector<uint8_t> longer = img;
  longer.push_back(0);
  EXPECT_EQ(decode(longer, cfg).status().code(), ErrorCode::data_loss);
  EXPECT_EQ(decode({}, cfg).status().code(), ErrorCode::parse_error);
}

// One flipped bit anywhere in the header, and in a sample of data bytes (every section's first
// and last payload byte, its checksum and padding, and a stride), is refused.
TEST(KvSnapshot, EveryFlippedByteIsRejected) {
  const auto cfg = load_config("long");
  for (Scheme scheme : {Scheme::f32, Scheme::official}) {
    SequenceCache a = filled(cfg, scheme, {.block_records = 16, .checkpoint_interval = 64}, 133);
    const std::vector<uint8_t> img = encode(a);
    ASSERT_TRUE(decode(img, cfg).ok());
    SnapshotFixedHeader h;
    std::memcpy(&h, img.data(), sizeof h);
    std::vector<size_t> offsets;
    for (size_t i = 0; i < h.header_bytes; ++i) offsets.push_back(i);
    // ~1000 data bytes: a stride over the whole body, plus the first 64 KB chunk by chunk
    // (section starts, checksums and padding of the ring, state and first blocks).
    const size_t body = img.size() - h.header_bytes;
    for (size_t i = h.header_bytes; i < img.size(); i += std::max<size_t>(body / 600, 1))
      offsets.push_back(i);
    for (size_t i = h.header_bytes; i + 64 <= std::min(img.size(), size_t{h.header_bytes} + 65536);
         i += 64 * 3) {
      offsets.push_back(i);
      offsets.push_back(i + 63);
    }
    offsets.push_back(img.size() - 1);
    size_t checked = 0;
    std::vector<uint8_t> bad = img;
    for (size_t off : offsets) {
      for (uint8_t bit : {uint8_t{0x01}, uint8_t{0x80}}) {
        bad[off] ^= bit;
        auto s = decode(bad, cfg);
        ASSERT_FALSE(s.ok()) << scheme_name(scheme) << ": flip of byte " << off;
        if (off >= h.header_bytes) {
          ASSERT_EQ(s.status().code(), ErrorCode::data_loss) << s.status().to_string();
        }
        bad[off] ^= bit;
        ++checked;
      }
    }
    EXPECT_GT(checked, 2 * static_cast<size_t>(h.header_bytes));
  }
}

TEST(KvSnapshot, AnotherModelOrLayoutIsRejected) {
  const auto cfg = load_config("long");
  SequenceCache a =
      filled(cfg, Scheme::official, {.block_records = 16, .checkpoint_interval = 0}, 200);
  const std::vector<uint8_t> img = encode(a);
  for (int field = 0; field < 3; ++field) {
    ModelIdentity other = test_identity();
    if (field == 0) other.config_hash ^= 1;
    if (field == 1) other.weights_hash ^= 1u << 20;
    if (field == 2) other.model_type = "deepseek_v3";
    auto s = decode(img, cfg, {}, other);
    ASSERT_EQ(s.status().code(), ErrorCode::failed_precondition) << field;
    const std::string& m = s.status().message();
    EXPECT_NE(m.find("another model"), std::string::npos) << m;
    EXPECT_NE(m.find("0x0123456789abcdef"), std::string::npos) << m;  // the file's config hash
    EXPECT_NE(m.find("0xfedcba9876543210"), std::string::npos) << m;  // the file's weights hash
    if (field == 0) {
      EXPECT_NE(m.find("0x0123456789abcdee"), std::string::npos) << m;
    }
  }
  // Same identity (a caller bug or a forged file), other config: the layout check catches it.
  auto tiny = load_config("tiny");
  EXPECT_EQ(decode(img, tiny).status().code(), ErrorCode::failed_precondition);
  auto wide = load_config("wide");
  EXPECT_EQ(decode(img, wide).status().code(), ErrorCode::failed_precondition);
  formats::ModelConfig other_window = cfg;
  other_window.sliding_window = 64;
  auto s = decode(img, other_window);
  EXPECT_EQ(s.status().code(), ErrorCode::failed_precondition);
  EXPECT_NE(s.status().message().find("layout"), std::string::npos) << s.status().message();
}

// Files with a valid header checksum whose fields disagree with each other or the model.
TEST(KvSnapshot, ForgedButSealedHeadersAreRejected) {
  const auto cfg = load_config("long");
  SequenceCache a =
      filled(cfg, Scheme::official, {.block_records = 16, .checkpoint_interval = 128}, 260);
  const std::vector<uint8_t> img = encode(a);
  ASSERT_TRUE(decode(img, cfg).ok());
  SnapshotFixedHeader h;
  std::memcpy(&h, img.data(), sizeof h);
  struct Forgery {
    const char* name;
    std::function<void(std::vector<uint8_t>&)> edit;
    ErrorCode code;
    const char* says;
  };
  const size_t l1 = layer_record_offset(img, 1);
  const size_t cp0 = layer_record_offset(img, 4);
  const size_t tok0 = cp0 + 2 * 8;
  const std::vector<Forgery> forgeries = {
      {"version 2", [](auto& b) { poke<uint32_t>(b, 8, 2); }, ErrorCode::unsupported, "version"},
      {"flags", [](auto& b) { poke<uint32_t>(b, 72, 2); }, ErrorCode::unsupported, "flags"},
      {"reserved", [](auto& b) { b[100] = 1; }, ErrorCode::unsupported, "reserved"},
      {"scheme 3", [](auto& b) { poke<uint32_t>(b, 48, 3); }, ErrorCode::parse_error, "scheme"},
      {"scheme f32", [](auto& b) { poke<uint32_t>(b, 48, 1); }, ErrorCode::failed_precondition,
       "layout"},
      {"layers 3", [](auto& b) { poke<uint32_t>(b, 52, 3); }, ErrorCode::parse_error,
       "header length"},
      {"layers 2", [](auto& b) { poke<uint32_t>(b, 52, 2); }, ErrorCode::parse_error,
       "header length"},
      {"n_tokens + 4", [](auto& b) { poke<int64_t>(b, 56, 264); }, ErrorCode::parse_error,
       "header length"},
      {"n_tokens - 1 (same header size)", [](auto& b) { poke<int64_t>(b, 56, 259); },
       ErrorCode::parse_error, "disagree"},
      {"negative n_tokens", [](auto& b) { poke<int64_t>(b, 56, -1); }, ErrorCode::parse_error,
       "negative"},
      {"model_type length 0", [](auto& b) { poke<uint32_t>(b, 68, 0); }, ErrorCode::parse_error,
       "model_type"},
      {"model_type length 65", [](auto& b) { poke<uint32_t>(b, 68, 65); }, ErrorCode::parse_error,
       "model_type"},
      {"file_bytes", [](auto& b) { poke<uint64_t>(b, 16, b.size() + 64); }, ErrorCode::parse_error,
       "file length"},
      {"entries count", [l1](auto& b) { poke<int64_t>(b, l1 + 8, 64); }, ErrorCode::parse_error,
       "disagree"},
      {"window count", [l1](auto& b) { poke<int64_t>(b, l1, 127); }, ErrorCode::parse_error,
       "disagree"},
      {"state bytes", [l1](auto& b) { poke<uint64_t>(b, l1 + 40, 4); }, ErrorCode::parse_error,
       "disagree"},
      {"block size 0", [l1](auto& b) { poke<int64_t>(b, l1 + 24, 0); }, ErrorCode::parse_error,
       "out of range"},
      {"row bytes", [l1](auto& b) { poke<uint64_t>(b, l1 + 48, 583); }, ErrorCode::parse_error,
       "disagree"},
      {"key bytes 0 with keys", [l1](auto& b) { poke<uint64_t>(b, l1 + 56, 0); },
       ErrorCode::parse_error, "out of range"},
      {"window 127", [l1](auto& b) { poke<int64_t>(b, l1 + 64, 127); }, ErrorCode::parse_error,
       "out of range"},
      {"checkpoint rows", [l1](auto& b) { poke<uint64_t>(b, l1 + 72, 8); }, ErrorCode::parse_error,
       "disagree"},
      {"entries > n", [l1](auto& b) { poke<int64_t>(b, l1 + 8, 1000); }, ErrorCode::parse_error,
       "out of range"},
      {"external blocks flag", [](auto& b) { poke<uint32_t>(b, 72, 1); }, ErrorCode::unsupported,
       "SnapshotStore"},
      {"block size 32 (sections move)", [l1](auto& b) { poke<int64_t>(b, l1 + 24, 32); },
       ErrorCode::parse_error, "file length"},
      {"checkpoint 100", [cp0](auto& b) { poke<int64_t>(b, cp0, 100); }, ErrorCode::parse_error,
       "checkpoint"},
      {"checkpoints out of order", [cp0](auto& b) { poke<int64_t>(b, cp0 + 8, 128); },
       ErrorCode::parse_error, "checkpoint"},
      {"checkpoint past n", [cp0](auto& b) { poke<int64_t>(b, cp0 + 8, 384); },
       ErrorCode::parse_error, "checkpoint"},
      {"token id 256", [tok0](auto& b) { poke<int32_t>(b, tok0 + 4 * 7, 256); },
       ErrorCode::parse_error, "vocabulary"},
      {"token id -1", [tok0](auto& b) { poke<int32_t>(b, tok0, -1); }, ErrorCode::parse_error,
       "vocabulary"},
  };
  for (const Forgery& f : forgeries) {
    std::vector<uint8_t> bad = img;
    f.edit(bad);
    reseal(bad);
    auto s = decode(bad, cfg);
    ASSERT_FALSE(s.ok()) << f.name;
    EXPECT_EQ(s.status().code(), f.code) << f.name << ": " << s.status().to_string();
    EXPECT_NE(s.status().message().find(f.says), std::string::npos)
        << f.name << ": " << s.status().to_string();
  }
  // More tokens than the model's context.
  formats::ModelConfig small = cfg;
  small.max_position_embeddings = 259;
  auto s = decode(img, small);
  EXPECT_EQ(s.status().code(), ErrorCode::parse_error);
  EXPECT_NE(s.status().message().find("max_position_embeddings"), std::string::npos);
  // Sections swapped keep valid checksums of their own, but not at each other's place (the
  // seed is the section's ordinal): swap the two 16-record entry blocks of layer 1.
  std::vector<uint8_t> swapped = img;
  const uint64_t ring = (128 * 584 + 8 + 63) / 64 * 64;
  const uint64_t state = (a.layout().layers[1].compressor_state_bytes + 8 + 63) / 64 * 64;
  const uint64_t l0 = (128 * 584 + 8 + 63) / 64 * 64;  // layer 0: ring only
  const uint64_t blk = (16 * 584 + 8 + 63) / 64 * 64;
  const uint64_t e0 = h.header_bytes + l0 + ring + state;
  std::swap_ranges(swapped.begin() + static_cast<long>(e0),
                   swapped.begin() + static_cast<long>(e0 + blk),
                   swapped.begin() + static_cast<long>(e0 + blk));
  ASSERT_NE(swapped, img);
  auto sw = decode(swapped, cfg);
  EXPECT_EQ(sw.status().code(), ErrorCode::data_loss) << sw.status().to_string();
  EXPECT_NE(sw.status().message().find("layer 1 compressed entries block 0"), std::string::npos)
      << sw.status().message();
}

TEST(KvSnapshot, NotASnapshotIsRejected) {
  const auto cfg = load_config("long");
  std::string garbage = "{\"hello\": 1}";
  auto s = decode(std::vector<uint8_t>(garbage.begin(), garbage.end()), cfg);
  EXPECT_EQ(s.status().code(), ErrorCode::parse_error);
  EXPECT_NE(s.status().message().find("not a DSV4 KV snapshot"), std::string::npos);
  auto m = read_file(
      (fs::path(testing::fixture_config("long")).parent_path() / "model.safetensors").string());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(decode(std::vector<uint8_t>(m->begin(), m->begin() + 4096), cfg).status().code(),
            ErrorCode::parse_error);
  TempDir dir;
  auto missing =
      load_snapshot(dir.file("none.dsv4kv"), cfg, test_identity(), std::make_shared<BlockPool>());
  EXPECT_EQ(missing.status().code(), ErrorCode::not_found);
}

TEST(KvSnapshot, SavingStateThatDisagreesWithItsTokensFails) {
  const auto cfg = load_config("long");
  SequenceCache a = filled(cfg, Scheme::f32, {}, 10);
  EXPECT_EQ(encode_snapshot(a, token_ids(9), test_identity()).status().code(),
            ErrorCode::failed_precondition);
  ModelIdentity bad = test_identity();
  bad.model_type = std::string(65, 'x');
  EXPECT_EQ(encode_snapshot(a, token_ids(10), bad).status().code(), ErrorCode::invalid_argument);
  EXPECT_EQ(encode_snapshot(SequenceCache(), {}, test_identity()).status().code(),
            ErrorCode::failed_precondition);
}

// Saving over a snapshot that is loaded (mapped) replaces the file by rename: the loaded cache
// keeps reading the old bytes, a new load sees the new ones, no temporary file is left behind.
TEST(KvSnapshot, AtomicReplaceLeavesMappedLoadsIntact) {
  const auto cfg = load_config("long");
  const CacheOptions opt{.block_records = 16, .checkpoint_interval = 0};
  SequenceCache a = filled(cfg, Scheme::official, opt, 300, 1);
  SequenceCache b = filled(cfg, Scheme::official, opt, 300, 2);
  TempDir dir;
  const std::string path = dir.file("s.dsv4kv");
  ASSERT_TRUE(save_snapshot(a, token_ids(300), test_identity(), path).ok());
  auto la = load_snapshot(path, cfg, test_identity(), std::make_shared<BlockPool>(), opt);
  ASSERT_TRUE(la.ok());
  ASSERT_GT(la->mapped_bytes, 0u);
  ASSERT_TRUE(save_snapshot(b, token_ids(300), test_identity(), path).ok());
  EXPECT_EQ(dump_live(la->cache), dump_live(a));
  auto lb = load_snapshot(path, cfg, test_identity(), std::make_shared<BlockPool>(), opt);
  ASSERT_TRUE(lb.ok());
  EXPECT_EQ(dump_live(lb->cache), dump_live(b));
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

// Mapped blocks are charged to the pool like copied ones; a budget too small for them fails
// cleanly and returns everything it took.
TEST(KvSnapshot, LoadRespectsThePoolBudget) {
  const auto cfg = load_config("long");
  const CacheOptions opt{.block_records = 16, .checkpoint_interval = 128};
  SequenceCache a = filled(cfg, Scheme::official, opt, 300);
  const std::vector<uint8_t> img = encode(a);
  TempDir dir;
  const std::string path = dir.file("s.dsv4kv");
  ASSERT_TRUE(write_file_atomic(path, img).ok());
  for (SnapshotMode mode : {SnapshotMode::map, SnapshotMode::copy}) {
    auto probe = std::make_shared<BlockPool>();
    ASSERT_TRUE(load_snapshot(path, cfg, test_identity(), probe, opt, {.mode = mode}).ok());
    // Copying takes whole blocks, as the saved cache did; mapping charges the saved records
    // of the last, partial blocks only.
    const uint64_t need = probe->peak();
    if (mode == SnapshotMode::copy) {
      EXPECT_EQ(need, a.reserved_bytes() + a.checkpoint_bytes());
    } else {
      EXPECT_LT(need, a.reserved_bytes() + a.checkpoint_bytes());
    }
    auto pool = std::make_shared<BlockPool>(need - 1);
    auto s = load_snapshot(path, cfg, test_identity(), pool, opt, {.mode = mode});
    EXPECT_EQ(s.status().code(), ErrorCode::out_of_memory);
    EXPECT_EQ(pool->reserved(), 0u);
    auto pool2 = std::make_shared<BlockPool>(need);
    auto s2 = load_snapshot(path, cfg, test_identity(), pool2, opt, {.mode = mode});
    ASSERT_TRUE(s2.ok()) << s2.status().to_string();
    EXPECT_EQ(pool2->reserved(), need);
  }
}

// The committed fuzz seeds are valid snapshots of the fuzz config (DSV4_WRITE_FUZZ_SEEDS=1
// rewrites them from the synthetic fills below).
TEST(KvSnapshot, FuzzSeedCorpusLoads) {
  auto cfg = formats::parse_model_config(fuzzing::kSnapshotFuzzConfig, "fuzz config");
  ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
  const fs::path corpus =
      fs::path(DSV4_TEST_DATA_DIR).parent_path().parent_path() / "fuzz" / "corpus" / "kv_snapshot";
  const bool write = std::getenv("DSV4_WRITE_FUZZ_SEEDS") != nullptr;
  int seeds = 0;
  for (Scheme scheme : {Scheme::f32, Scheme::official}) {
    for (int64_t n : {0, 1, 5, 9, 19}) {
      const CacheOptions opt{.block_records = 3, .checkpoint_interval = 8};
      auto c = SequenceCache::create(*cfg, scheme, std::make_shared<BlockPool>(), opt);
      ASSERT_TRUE(c.ok()) << c.status().to_string();
      ASSERT_TRUE(fill_synthetic(*c, 0, n, 7).ok());
      std::vector<int32_t> toks(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        toks[static_cast<size_t>(i)] = static_cast<int32_t>(i * 11 % 256);
      auto img = encode_snapshot(*c, toks, fuzzing::snapshot_fuzz_identity());
      ASSERT_TRUE(img.ok());
      const fs::path file =
          corpus / (std::string(scheme_name(scheme)) + "_n" + std::to_string(n) + ".dsv4kv");
      if (write) {
        fs::create_directories(corpus);
        ASSERT_TRUE(write_file_atomic(file.string(), *img).ok());
      }
      auto on_disk = read_file(file.string());
      ASSERT_TRUE(on_disk.ok()) << on_disk.status().to_string();
      EXPECT_EQ(std::vector<uint8_t>(on_disk->begin(), on_disk->end()), *img)
          << file << " is stale: rerun with DSV4_WRITE_FUZZ_SEEDS=1";
      auto s = load_snapshot(file.string(), *cfg, fuzzing::snapshot_fuzz_identity(),
                             std::make_shared<BlockPool>(), opt);
      ASSERT_TRUE(s.ok()) << s.status().to_string();
      EXPECT_LT(on_disk->size(), 64u * 1024);
      ++seeds;
    }
  }
  EXPECT_EQ(seeds, 10);
  // Two store manifests (external blocks) for read_snapshot_info's reference walk.
  for (Scheme scheme : {Scheme::f32, Scheme::official}) {
    const CacheOptions opt{.block_records = 3, .checkpoint_interval = 8};
    auto c = SequenceCache::create(*cfg, scheme, std::make_shared<BlockPool>(), opt);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(fill_synthetic(*c, 0, 19, 7).ok());
    TempDir dir;
    auto store = SnapshotStore::open(dir.file("store"));
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE(store->save("m", *c, token_ids(19), fuzzing::snapshot_fuzz_identity()).ok());
    auto made = read_file(store->manifest_path("m"));
    ASSERT_TRUE(made.ok());
    const fs::path file = corpus / (std::string(scheme_name(scheme)) + "_n19_manifest.dsv4kv");
    if (write) {
      ASSERT_TRUE(write_file_atomic(file.string(),
                                    {reinterpret_cast<const uint8_t*>(made->data()), made->size()})
                      .ok());
    }
    auto on_disk = read_file(file.string());
    ASSERT_TRUE(on_disk.ok()) << on_disk.status().to_string();
    EXPECT_EQ(*on_disk, *made) << file << " is stale: rerun with DSV4_WRITE_FUZZ_SEEDS=1";
    auto info = read_snapshot_info(
        {reinterpret_cast<const uint8_t*>(on_disk->data()), on_disk->size()}, file.string());
    ASSERT_TRUE(info.ok()) << info.status().to_string();
    EXPECT_EQ(info->blocks.size(), 3u + 3u + 2u);  // CSA: 9 entries, 9 keys; HCA: 4 (3 + 1)
  }
}

// ------------------------------------------------------------------------------ store

uint64_t count_files(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

// Two snapshots of sequences that share a 300-token prefix (b = a forked and extended by 100
// tokens) store the prefix's full blocks once; both load back exactly, mapped or copied.
TEST(KvSnapshotStore, SharedPrefixBlocksAreStoredOnce) {
  const auto cfg = load_config("long");
  const CacheOptions opt{.block_records = 16, .checkpoint_interval = 128};
  for (Scheme scheme : {Scheme::f32, Scheme::official}) {
    SequenceCache a = filled(cfg, scheme, opt, 300, 1);
    auto fb = a.fork();
    ASSERT_TRUE(fb.ok());
    SequenceCache b = std::move(*fb);
    ASSERT_TRUE(fill_synthetic(b, 300, 400, 2).ok());
    TempDir dir;
    auto store = SnapshotStore::open(dir.file("store"));
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    ASSERT_TRUE(store->save("a", a, token_ids(300), test_identity()).ok());
    auto ua = store->usage();
    ASSERT_TRUE(ua.ok());
    // a: CSA layers 1 and 3 hold 75 entries and 75 keys = 5 blocks each (4 full of 16 + 11);
    // HCA layer 2 holds 2 entries = 1 block.
    EXPECT_EQ(ua->blocks, 2u * 2 * 5 + 1);
    ASSERT_TRUE(store->save("b", b, token_ids(400), test_identity()).ok());
    auto ub = store->usage();
    ASSERT_TRUE(ub.ok());
    // b: 100 entries/keys = 7 blocks each (6 full + 4), HCA 3 entries = 1 block; the first 4
    // full blocks of each CSA stream are a's, already stored: 2 * 2 * (7 - 4) + 1 new files.
    EXPECT_EQ(ub->blocks - ua->blocks, 2u * 2 * 3 + 1);
    EXPECT_EQ(ub->manifests, 2u);
    const uint64_t whole_files = encode(a).size() + encode(b).size();
    std::printf("%s: two whole files %llu B; store %llu B of blocks + %llu B of manifests\n",
                std::string(scheme_name(scheme)).c_str(),
                static_cast<unsigned long long>(whole_files),
                static_cast<unsigned long long>(ub->block_bytes),
                static_cast<unsigned long long>(ub->manifest_bytes));
    EXPECT_LT(ub->block_bytes + ub->manifest_bytes, whole_files);
    auto info = store->info("b");
    ASSERT_TRUE(info.ok()) << info.status().to_string();
    EXPECT_EQ(info->flags, kSnapshotExternalBlocks);
    EXPECT_EQ(info->blocks.size(), 2u * 2 * 7 + 1);
    EXPECT_EQ(*store->list(), (std::vector<std::string>{"a", "b"}));

    for (SnapshotMode mode : {SnapshotMode::map, SnapshotMode::copy}) {
      for (auto [name, src, n] : {std::tuple{"a", &a, 300}, {"b", &b, 400}}) {
        auto pool = std::make_shared<BlockPool>();
        auto l = store->load(name, cfg, test_identity(), pool, opt, {.mode = mode});
        ASSERT_TRUE(l.ok()) << name << ": " << l.status().to_string();
        EXPECT_EQ(l->tokens, token_ids(n));
        EXPECT_EQ(dump_live(l->cache), dump_live(*src)) << name;
        EXPECT_EQ(l->cache.checkpoint_positions(), src->checkpoint_positions());
        EXPECT_EQ(pool->reserved(), l->cache.reserved_bytes() + l->cache.checkpoint_bytes());
        if (mode == SnapshotMode::map) {
          EXPECT_GT(l->mapped_bytes, 0u);
        } else {
          EXPECT_EQ(l->mapped_bytes, 0u);
        }
        SequenceCache fresh = filled(cfg, scheme, opt, n, 1);
        if (src == &b) {
          fresh = filled(cfg, scheme, opt, 300, 1);
          ASSERT_TRUE(fill_synthetic(fresh, 300, 400, 2).ok());
        }
        ASSERT_TRUE(fill_synthetic(fresh, n, n + 50, 3).ok());
        ASSERT_TRUE(fill_synthetic(l->cache, n, n + 50, 3).ok());
        EXPECT_EQ(dump_live(l->cache), dump_live(fresh)) << name << " continued";
      }
    }
    // The manifest is not a self-contained snapshot.
    auto plain = load_snapshot(store->manifest_path("a"), cfg, test_identity(),
                               std::make_shared<BlockPool>(), opt);
    EXPECT_EQ(plain.status().code(), ErrorCode::unsupported);
    // Removing a and collecting garbage frees exactly a's own (partial) blocks.
    ASSERT_TRUE(store->remove("a").ok());
    EXPECT_EQ(store->remove("a").code(), ErrorCode::not_found);
    auto freed = store->collect_garbage();
    ASSERT_TRUE(freed.ok()) << freed.status().to_string();
    auto uc = store->usage();
    EXPECT_EQ(uc->blocks, ub->blocks - (2u * 2 + 1));
    EXPECT_EQ(*freed, ub->block_bytes - uc->block_bytes);
    EXPECT_TRUE(store->load("b", cfg, test_identity(), std::make_shared<BlockPool>(), opt).ok());
  }
}

TEST(KvSnapshotStore, DamagedOrMissingBlocksAreRejected) {
  const auto cfg = load_config("long");
  const CacheOptions opt{.block_records = 16, .checkpoint_interval = 0};
  SequenceCache a = filled(cfg, Scheme::official, opt, 300, 1);
  TempDir dir;
  auto store = SnapshotStore::open(dir.file("store"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(store->save("a", a, token_ids(300), test_identity()).ok());
  auto info = store->info("a");
  ASSERT_TRUE(info.ok());
  ASSERT_FALSE(info->blocks.empty());
  const std::string victim = store->block_path(info->blocks[3]);
  auto bytes = read_file(victim);
  ASSERT_TRUE(bytes.ok());
  std::string bad = *bytes;
  bad[bad.size() / 2] ^= 0x04;
  ASSERT_TRUE(
      write_file_atomic(victim, {reinterpret_cast<const uint8_t*>(bad.data()), bad.size()}).ok());
  for (SnapshotMode mode : {SnapshotMode::map, SnapshotMode::copy}) {
    auto pool = std::make_shared<BlockPool>();
    auto l = store->load("a", cfg, test_identity(), pool, opt, {.mode = mode});
    EXPECT_EQ(l.status().code(), ErrorCode::data_loss) << l.status().to_string();
    EXPECT_NE(l.status().message().find("does not match its name"), std::string::npos);
    EXPECT_EQ(pool->reserved(), 0u) << "a failed load returns every block it took";
  }
  bad.pop_back();
  ASSERT_TRUE(
      write_file_atomic(victim, {reinterpret_cast<const uint8_t*>(bad.data()), bad.size()}).ok());
  EXPECT_EQ(
      store->load("a", cfg, test_identity(), std::make_shared<BlockPool>(), opt).status().code(),
      ErrorCode::data_loss);
  fs::remove(victim);
  auto missing = store->load("a", cfg, test_identity(), std::make_shared<BlockPool>(), opt);
  EXPECT_EQ(missing.status().code(), ErrorCode::not_found);
  EXPECT_NE(missing.status().message().find("missing from the store"), std::string::npos)
      << missing.status().message();
  // Saving again restores the block (the name is taken by content, the size was wrong).
  ASSERT_TRUE(store->save("a", a, token_ids(300), test_identity()).ok());
  EXPECT_TRUE(store->load("a", cfg, test_identity(), std::make_shared<BlockPool>(), opt).ok());
  // Another model's manifest is refused before any block is read.
  ModelIdentity other = test_identity();
  other.weights_hash ^= 2;
  EXPECT_EQ(store->load("a", cfg, other, std::make_shared<BlockPool>(), opt).status().code(),
            ErrorCode::failed_precondition);
  // A corrupt manifest stops garbage collection before anything is deleted.
  auto m = read_file(store->manifest_path("a"));
  ASSERT_TRUE(m.ok());
  std::string mb = *m;
  mb[200] ^= 1;
  ASSERT_TRUE(write_file_atomic(store->manifest_path("a"),
                                {reinterpret_cast<const uint8_t*>(mb.data()), mb.size()})
                  .ok());
  const uint64_t before = count_files(fs::path(dir.file("store")) / "blocks");
  EXPECT_EQ(store->collect_garbage().status().code(), ErrorCode::data_loss);
  EXPECT_EQ(count_files(fs::path(dir.file("store")) / "blocks"), before);
}

TEST(KvSnapshotStore, NamesCannotEscapeTheStore) {
  TempDir dir;
  auto store = SnapshotStore::open(dir.file("store"));
  ASSERT_TRUE(store.ok());
  const auto cfg = load_config("long");
  SequenceCache a = filled(cfg, Scheme::f32, {}, 5);
  for (const char* name : {"", "../x", "a/b", ".hidden", "a b", "x\n"})
    EXPECT_EQ(store->save(name, a, token_ids(5), test_identity()).code(),
              ErrorCode::invalid_argument)
        << name;
  EXPECT_TRUE(store->save("chat-1_v2.turn3", a, token_ids(5), test_identity()).ok());
  EXPECT_EQ(
      store->load("nope", cfg, test_identity(), std::make_shared<BlockPool>()).status().code(),
      ErrorCode::not_found);
}

}  // namespace
}  // namespace dsv4::kv
