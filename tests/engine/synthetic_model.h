// tests/engine/synthetic_model.h — a tiny random-weight DeepSeek-V4 model that speaks the real
// DeepSeek-V4 tokenizer: the `tiny` synth preset (2 layers, hidden 128) with vocab_size 129,280,
// plus tests/data/tokenizer/tokenizer.json and tokenizer_config.json. Shared by the engine and
// CLI tests (tests/cli/text_cli_test.cpp includes it).
//
// CTest runs every test in its own process, so the model (~70 MB, ~0.5 s to write) is cached in
// the build tree: DSV4_BINARY_DIR/test_models/<test binary>/<key>, key = hash of the config text
// and of the test binary's size and mtime (a rebuilt binary may synthesise different bytes, so it
// gets a fresh directory; older ones of the same binary are deleted). Concurrent processes each
// write a private temporary directory and rename() it into place; the first rename wins.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "base/result.h"
#include "formats/model_config.h"
#include "model/synth.h"

namespace dsv4::testing {

inline constexpr int64_t kSyntheticVocab = 129280;  // the DeepSeek-V4 tokenizer's ids

inline Result<std::filesystem::path> make_synthetic_model() {
  namespace fs = std::filesystem;
  DSV4_ASSIGN_OR_RETURN(std::string preset, model::synth_preset_json("tiny"));
  model::SynthOverrides ov;
  ov.vocab = kSyntheticVocab;
  DSV4_ASSIGN_OR_RETURN(std::string config,
                        model::apply_synth_overrides(preset, ov, "preset tiny"));
  DSV4_ASSIGN_OR_RETURN(formats::ModelConfig cfg,
                        formats::parse_model_config(config, "preset tiny"));

  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  };
  mix(config);
  mix(std::to_string(ec ? 0 : fs::file_size(exe, ec)));
  mix(std::to_string(ec ? 0 : fs::last_write_time(exe, ec).time_since_epoch().count()));
  const fs::path root =
      fs::path(DSV4_BINARY_DIR) / "test_models" / (ec ? "unknown" : exe.filename().string());
  const std::string name = fmt::format("tiny_vocab{}_{:016x}", kSyntheticVocab, h);
  const fs::path dir = root / name;
  if (fs::exists(dir / "config.json", ec) && fs::exists(dir / "tokenizer.json", ec)) return dir;

  fs::create_directories(root, ec);
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string other = entry.path().filename().string();
    if (other.rfind(name, 0) != 0) fs::remove_all(entry.path(), ec);  // stale builds
  }
  const fs::path tmp = root / fmt::format("{}.tmp.{}", name, getpid());
  fs::remove_all(tmp, ec);
  model::SynthOptions opts;
  opts.config_json = config;
  DSV4_RETURN_IF_ERROR(model::write_synthetic_checkpoint(cfg, tmp.string(), opts));
  const fs::path tok = fs::path(DSV4_TEST_DATA_DIR) / "tokenizer";
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(tok / f, tmp / f, ec);
    if (ec) return io_error(fmt::format("copying {}: {}", (tok / f).string(), ec.message()));
  }
  fs::rename(tmp, dir, ec);
  if (ec) fs::remove_all(tmp, ec);  // another process got there first
  if (!fs::exists(dir / "tokenizer.json", ec)) return io_error("cannot create " + dir.string());
  return dir;
}

// The cached model directory (created on first use in this process).
inline const Result<std::filesystem::path>& synthetic_model() {
  static const Result<std::filesystem::path> dir = make_synthetic_model();
  return dir;
}

}  // namespace dsv4::testing
