// dsv4 synth --config CONFIG_JSON_OR_PRESET --out DIR — a random-weight DeepSeek-V4 checkpoint
// in the official layout (model/synth.h), for demos, benchmarks and tests.
// Presets: tiny (the shapes of tests/data/fixtures/tiny), flash, pro (the published configs);
// --layers / --experts / --vocab shrink them to what fits (e.g. V4-Flash dimensions, 2 layers).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "base/mmap_file.h"
#include "base/timer.h"
#include "base/units.h"
#include "command.h"
#include "formats/model_config.h"
#include "model/synth.h"

namespace dsv4::cli {
namespace {

namespace fs = std::filesystem;

struct SynthArgs {
  std::string config;
  std::string out;
  uint64_t seed = 0;
  std::optional<int64_t> layers, experts, vocab;
  std::string shard_size = "2G";
  bool force = false;
  int threads = 0;
};

// An existing file (or directory with config.json) wins over a preset of the same name.
Result<std::pair<std::string, std::string>> load_config_text(const std::string& spec) {
  std::error_code ec;
  if (fs::exists(spec, ec)) {
    const fs::path p = fs::is_directory(spec, ec) ? fs::path(spec) / "config.json" : fs::path(spec);
    DSV4_ASSIGN_OR_RETURN(std::string text, read_file(p.string()));
    return std::make_pair(std::move(text), p.string());
  }
  auto preset = model::synth_preset_json(spec);
  if (!preset.ok())
    return invalid_argument(fmt::format("--config: '{}' is neither a config file nor a preset ({})",
                                        spec, preset.status().message()));
  return std::make_pair(std::move(*preset), "preset " + spec);
}

// "\r12/345 tensors  1.2 GiB / 5.4 GiB  310 MB/s  ETA 14 s" at most ~4 times a second.
class ProgressLine {
 public:
  void operator()(const model::SynthProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (p.tensors_done != p.tensors_total && now - last_ < std::chrono::milliseconds(250)) return;
    last_ = now;
    const double rate = p.seconds > 0 ? static_cast<double>(p.bytes_done) / p.seconds : 0;
    const double eta = rate > 0 ? static_cast<double>(p.bytes_total - p.bytes_done) / rate : 0;
    std::fprintf(stderr, "\r%zu/%zu tensors  %s / %s  %.0f MB/s  ETA %.0f s   ", p.tensors_done,
                 p.tensors_total, format_bytes(static_cast<double>(p.bytes_done)).c_str(),
                 format_bytes(static_cast<double>(p.bytes_total)).c_str(), rate / 1e6, eta);
    if (p.tensors_done == p.tensors_total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  std::chrono::steady_clock::time_point last_{};
};

int run_synth(const SynthArgs& a) {
  auto shard = parse_count(a.shard_size);
  if (!shard.ok())
    return report_error(invalid_argument("--shard-size: " + shard.status().message()));
  if (a.threads < 0) return report_error(invalid_argument("--threads must be >= 0"));
  auto loaded = load_config_text(a.config);
  if (!loaded.ok()) return report_error(loaded.status(), "presets: tiny, flash, pro");
  auto& [text, source] = *loaded;
  model::SynthOverrides ov{a.layers, a.experts, a.vocab};
  auto final_text = model::apply_synth_overrides(text, ov, source);
  if (!final_text.ok()) return report_error(final_text.status());
  auto cfg = formats::parse_model_config(*final_text, source);
  if (!cfg.ok()) return report_error(cfg.status());
  auto plan = model::plan_synthetic_checkpoint(*cfg, *shard);
  if (!plan.ok()) return report_error(plan.status());

  std::fprintf(
      stderr, "synth %s: %lld layers, hidden %lld, %lld routed experts, vocab %lld, seed %llu\n",
      source.c_str(), static_cast<long long>(cfg->num_hidden_layers),
      static_cast<long long>(cfg->hidden_size), static_cast<long long>(cfg->n_routed_experts),
      static_cast<long long>(cfg->vocab_size), static_cast<unsigned long long>(a.seed));
  std::fprintf(stderr, "writing %zu tensors, %s in %zu file(s) to %s\n", plan->tensors,
               format_bytes(static_cast<double>(plan->tensor_bytes)).c_str(), plan->files.size(),
               a.out.c_str());

  model::SynthOptions opts;
  opts.seed = a.seed;
  opts.max_shard_bytes = *shard;
  opts.config_json = *final_text;
  opts.overwrite = a.force;
  opts.threads = a.threads;
  if (isatty(STDERR_FILENO)) opts.progress = ProgressLine();
  Timer timer;
  Status s = model::write_synthetic_checkpoint(*cfg, a.out, opts);
  if (!s.ok()) return report_error(s);
  const double secs = timer.seconds();
  fmt::print("wrote {}: {} tensors, {} in {} file(s) in {:.2f} s ({:.0f} MB/s)\n", a.out,
             plan->tensors, format_bytes(static_cast<double>(plan->tensor_bytes)),
             plan->files.size(), secs,
             static_cast<double>(plan->tensor_bytes) / std::max(secs, 1e-9) / 1e6);
  return 0;
}

RunFn setup(CLI::App& app) {
  auto args = std::make_shared<SynthArgs>();
  CLI::App* sub = app.add_subcommand(
      "synth", "Write a random-weight DeepSeek-V4 checkpoint (official layout) from a config");
  sub->add_option("-c,--config,--preset", args->config,
                  "config.json (or a directory with one) or a preset: tiny, flash, pro")
      ->required();
  sub->add_option("-o,--out", args->out, "Output directory (must be empty unless --force)")
      ->required();
  sub->add_option("--seed", args->seed, "Random seed (same seed, same bytes; default 0)");
  sub->add_option("--layers", args->layers, "Keep the first N layers of the config's schedule");
  sub->add_option("--experts", args->experts, "Routed experts per layer (n_routed_experts)");
  sub->add_option("--vocab", args->vocab, "Vocabulary size (vocab_size)");
  sub->add_option("--shard-size", args->shard_size,
                  "Tensor bytes per safetensors shard, e.g. 512M, 2G (default 2G)");
  sub->add_flag("--force", args->force, "Replace the checkpoint files in a non-empty directory");
  sub->add_option("-t,--threads", args->threads, "Generation threads (default: all cores)");
  return [args] { return run_synth(*args); };
}

}  // namespace
DSV4_REGISTER_COMMAND(synth, 60, setup);
}  // namespace dsv4::cli
