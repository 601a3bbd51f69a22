// dsv4 inspect MODEL_DIR — what a checkpoint holds versus what the forward pass needs.
// Prints tensors grouped by name pattern (layer and expert numbers folded to '*'), with dtypes,
// counts and bytes, totals, and every missing, mis-shaped or unexpected tensor (exit 1 then).
#include <fmt/format.h>

#include <map>
#include <regex>

#include "base/units.h"
#include "command.h"
#include "formats/model_config.h"
#include "formats/safetensors.h"
#include "model/tensor_table.h"

namespace dsv4::cli {
namespace {

struct InspectArgs {
  std::string dir;
  bool tensors = false;
};

std::string pattern_of(const std::string& name) {
  static const std::regex kNum(R"(\.(\d+)\.)");
  std::string p = std::regex_replace(name, kNum, ".*.");
  return std::regex_replace(p, kNum, ".*.");  // adjacent numbers (layers.3.ffn.experts.7.)
}

int run_inspect(const InspectArgs& a) {
  auto cfg = formats::load_model_config(a.dir);
  if (!cfg.ok()) return report_error(cfg.status());
  auto ckpt = formats::SafetensorsModel::open(a.dir);
  if (!ckpt.ok()) return report_error(ckpt.status());
  fmt::print("{}: model_type {}, {} layers, hidden {}, vocab {}\n", a.dir, cfg->model_type,
             cfg->num_hidden_layers, cfg->hidden_size, cfg->vocab_size);
  fmt::print("checkpoint: {} tensors in {} shard(s), {}\n\n", ckpt->size(), ckpt->shard_count(),
             format_bytes(static_cast<double>(ckpt->total_bytes())));
  struct Group {
    size_t count = 0;
    uint64_t bytes = 0;
    std::map<std::string, size_t> dtypes;
    std::string shape;
  };
  std::map<std::string, Group> groups;
  std::map<std::string, uint64_t> by_dtype;
  for (const formats::TensorView* t : ckpt->tensors()) {
    if (a.tensors)
      fmt::print("{:<60} {:<8} {:<16} {:>12}\n", t->name, formats::dtype_name(t->dtype),
                 formats::shape_string(t->shape), t->size_bytes());
    Group& g = groups[pattern_of(t->name)];
    ++g.count;
    g.bytes += t->size_bytes();
    ++g.dtypes[std::string(formats::dtype_name(t->dtype))];
    if (g.shape.empty()) g.shape = formats::shape_string(t->shape);
    by_dtype[std::string(formats::dtype_name(t->dtype))] += t->size_bytes();
  }
  if (a.tensors) fmt::print("\n");
  fmt::print("{:<52} {:>7} {:<14} {:<16} {:>12}\n", "tensor pattern", "count", "dtype", "shape",
             "bytes");
  for (const auto& [pat, g] : groups) {
    std::string dt;
    for (const auto& [d, n] : g.dtypes) dt += (dt.empty() ? "" : ",") + d;
    fmt::print("{:<52} {:>7} {:<14} {:<16} {:>12}\n", pat, g.count, dt, g.shape,
               format_bytes(static_cast<double>(g.bytes)));
  }
  fmt::print("\nbytes by dtype:");
  for (const auto& [d, b] : by_dtype)
    fmt::print("  {} {}", d, format_bytes(static_cast<double>(b)));
  fmt::print("\n");
  if (cfg->family != formats::ModelFamily::deepseek_v4) {
    fmt::print("(no tensor table for model_type {}: nothing checked)\n", cfg->model_type);
    return 0;
  }
  const model::CheckpointReport rep = model::check_checkpoint(*cfg, *ckpt);
  fmt::print("forward pass reads {} of {}; {} MTP tensor(s) present but unused\n",
             format_bytes(static_cast<double>(rep.used_bytes)),
             format_bytes(static_cast<double>(ckpt->total_bytes())), rep.unused.size());
  for (const auto& p : rep.problems) fmt::print(stderr, "dsv4: {}\n", p);
  for (const auto& u : rep.unexpected) fmt::print(stderr, "dsv4: unexpected tensor '{}'\n", u);
  if (!rep.ok()) {
    fmt::print(stderr, "dsv4: {}: {} problem(s), {} unexpected tensor(s)\n", a.dir,
               rep.problems.size(), rep.unexpected.size());
    return 1;
  }
  fmt::print("all {} expected tensors present with valid dtypes and shapes\n",
             model::tensor_table(*cfg).size());
  return 0;
}

RunFn setup(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* sub = app.add_subcommand("inspect", "Summarise and validate a checkpoint directory");
  sub->add_option("model", args->dir, "Model directory (config.json + safetensors)")->required();
  sub->add_flag("--tensors", args->tensors, "Also list every tensor");
  return [args] { return run_inspect(*args); };
}

}  // namespace
DSV4_REGISTER_COMMAND(inspect, 20, setup);
}  // namespace dsv4::cli
