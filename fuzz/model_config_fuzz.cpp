// libFuzzer target for config.json parsing (formats/model_config.h) and the KV layout derived
// from an accepted config (kv/layout.h): arbitrary bytes must give a ModelConfig or an error,
// never a crash, overflow or sanitizer report.
// Run: build/fuzz/fuzz/model_config_fuzz fuzz/corpus/model_config -runs=1000000
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "formats/model_config.h"
#include "kv/layout.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cfg = dsv4::formats::parse_model_config(text, "fuzz/config.json");
  if (!cfg.ok()) {
    if (cfg.status().message().empty()) __builtin_trap();  // every error says what is wrong
    return 0;
  }
  // Invariant promised by the parser: per-layer vectors have num_hidden_layers entries.
  if (cfg->family == dsv4::formats::ModelFamily::deepseek_v4 &&
      cfg->layer_types.size() != static_cast<size_t>(cfg->num_hidden_layers))
    __builtin_trap();
  // Byte arithmetic on any accepted config: values or errors (overflow is reported, not wrapped).
  for (auto scheme : {dsv4::kv::Scheme::bf16, dsv4::kv::Scheme::f32, dsv4::kv::Scheme::official}) {
    auto layout = dsv4::kv::make_layout(*cfg, scheme);
    if (!layout.ok()) continue;
    for (uint64_t n : {uint64_t{0}, uint64_t{1}, uint64_t{1} << 20, uint64_t{1} << 40})
      (void)dsv4::kv::context_bytes(*layout, n);
  }
  return 0;
}
