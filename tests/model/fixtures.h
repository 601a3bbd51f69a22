// tests/model/fixtures.h — the reference fixtures (tests/data/fixtures/<name>: tiny, long, wide)
// as the model tests load them, and the deterministic token ids several of them feed in.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace dsv4::model::testing {

inline std::string fixture_dir(const std::string& name) {
  return (std::filesystem::path(DSV4_TEST_DATA_DIR) / "fixtures" / name).string();
}

// The model in `dir`, or nullptr with a test failure that says why.
inline std::unique_ptr<Model> load_model(const std::string& dir) {
  auto m = Model::load(dir);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return m.ok() ? std::move(*m) : nullptr;
}

inline std::unique_ptr<Model> load_fixture(const std::string& name) {
  return load_model(fixture_dir(name));
}

// n token ids spread over the vocabulary, a different sequence per seed.
inline std::vector<int32_t> some_tokens(const Model& m, size_t n, int seed) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i)
    t[i] = static_cast<int32_t>((i * 37 + static_cast<size_t>(seed) * 101 + 11) %
                                static_cast<size_t>(m.config().vocab_size));
  return t;
}

}  // namespace dsv4::model::testing
