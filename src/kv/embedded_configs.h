// kv/embedded_configs.h — the model configs `dsv4 kv` compares when given no files.
//
// Stored as the published config.json text and parsed by formats::parse_model_config, so the
// parser is exercised by every default run. Sources are cited next to each text in
// embedded_configs.cpp.
// Non-goal: being a model registry; these exist for KV comparisons and tests.
#pragma once

#include <span>
#include <string_view>

#include "base/result.h"
#include "formats/model_config.h"

namespace dsv4::kv {

struct EmbeddedConfig {
  std::string_view name;    // "DeepSeek-V4-Flash"
  std::string_view source;  // where the values come from (URL)
  std::string_view json;    // config.json text
};

// Embedded names, in the order `dsv4 kv` prints them.
inline constexpr std::string_view kDeepSeekV32 = "DeepSeek-V3.2";
inline constexpr std::string_view kDeepSeekV4Flash = "DeepSeek-V4-Flash";
inline constexpr std::string_view kDeepSeekV4Pro = "DeepSeek-V4-Pro";
inline constexpr std::string_view kGqaBaseline = "GQA-baseline";

std::span<const EmbeddedConfig> embedded_configs();

// Parses the embedded config `name`. Errors: not_found for an unknown name.
Result<formats::ModelConfig> load_embedded_config(std::string_view name);

}  // namespace dsv4::kv
