// tests/kv/kv_test_util.h — helpers shared by the KV fork and snapshot tests (no weights).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "formats/model_config.h"
#include "kv/cache.h"

namespace dsv4::kv::testing {

inline std::string fixture_config(const char* name) {
  return (std::filesystem::path(DSV4_TEST_DATA_DIR) / "fixtures" / name / "config.json").string();
}

inline formats::ModelConfig load_config(const char* name) {
  auto cfg = formats::load_model_config(fixture_config(name));
  EXPECT_TRUE(cfg.ok()) << cfg.status().to_string();
  return cfg.ok() ? *cfg : formats::ModelConfig{};
}

// Everything the future of a sequence depends on, as bytes, read through the public accessors:
// n_tokens, the live ring records (oldest first), every entry and indexer key, and the live
// compressor rows (the current window's written slots and, under CSA overlap, the whole
// previous window). Two caches with equal dumps continue identically.
inline std::vector<uint8_t> dump_live(SequenceCache& c) {
  std::vector<uint8_t> out;
  auto put = [&out](const void* p, uint64_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  };
  const int64_t n = c.n_tokens();
  put(&n, sizeof n);
  for (int l = 0; l < c.n_layers(); ++l) {
    const LayerLayout& ll = c.layout().layers[static_cast<size_t>(l)];
    const int64_t filled = std::min(n, ll.window);
    for (int64_t p = n - filled; p < n; ++p) put(c.window_record(l, p), c.window_record_bytes(l));
    for (int64_t i = 0; i < c.n_entries(l); ++i) put(c.entry_record(l, i), c.entry_record_bytes(l));
    for (int64_t i = 0; i < c.n_index_keys(l); ++i)
      put(c.index_key_record(l, i), c.index_key_record_bytes(l));
    const int64_t r = ll.compress_ratio;
    if (r == 0) continue;
    for (Compressor which : {Compressor::kv, Compressor::indexer}) {
      if (which == Compressor::indexer && ll.kind != LayerKind::csa) continue;
      const CompressorStateView v = c.compressor_state(l, which);
      const int64_t w = n / r;
      const auto row = static_cast<uint64_t>(v.width) * 4;
      for (int64_t s = 0; s < n % r; ++s) {
        put(v.kv_row(w, s), row);
        put(v.gate_row(w, s), row);
      }
      if (v.overlap && w >= 1) {
        for (int64_t s = 0; s < r; ++s) {
          put(v.kv_row(w - 1, s), row);
          put(v.gate_row(w - 1, s), row);
        }
      }
    }
  }
  return out;
}

// A fresh cache filled with `seed` up to n0 and then with `seed2` up to n.
inline SequenceCache fresh_fill(const formats::ModelConfig& cfg, Scheme scheme, CacheOptions opt,
                                int64_t n0, uint64_t seed, int64_t n, uint64_t seed2) {
  auto c = SequenceCache::create(cfg, scheme, std::make_shared<BlockPool>(), opt);
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(fill_synthetic(*c, 0, n0, seed).ok());
  EXPECT_TRUE(fill_synthetic(*c, n0, n, seed2).ok());
  return std::move(*c);
}

}  // namespace dsv4::kv::testing
