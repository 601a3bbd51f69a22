// tools/dsv4/bench_report.h — derived figures and the outputs of `dsv4 bench --layer`: the
// whole-stack estimate, the targets of issue #6, and the table / CSV / JSON / SVG renderings.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bench_env.h"
#include "bench_layer.h"

namespace dsv4::cli::bench {

// Whole-stack decode estimate at one context: V4-Flash's layer counts x the per-layer rows
// (attention on the cache only), and the same for the V3.2 MLA baseline (61 layers).
struct StackRow {
  uint64_t ctx = 0;
  int swa = 0, csa = 0, hca = 0;  // V4-Flash layers of each kind
  bool has_v4 = false;
  double v4_decode_s = 0, v4_floor_s = 0;  // sum over layers of mean / max(floors)
  double v4_prefill_tps = 0;               // chunk tokens / sum of chunk times (0: none)
  double v4_prefill_floor_tps = 0;
  uint64_t v4_kv_bytes = 0;          // sum over layers
  uint64_t max_transient_bytes = 0;  // largest per-layer workspace (reused layer to layer)
  int mla_layers = 0;
  bool has_mla = false;
  double mla_decode_s = 0, mla_floor_s = 0;
  uint64_t mla_kv_bytes = 0;
};

struct Target {
  std::string name;      // what the issue asks
  std::string measured;  // the figure, with units
  bool met = false;
};

struct LayerReport {
  RunInfo info;
  Floors floors;
  LayerOptions options;
  std::vector<Kind> kinds;
  std::vector<uint64_t> contexts;
  std::vector<LayerRow> rows;  // kind-major, ascending context
  std::vector<StackRow> stack;
  WeightBytes weights;  // V4-Flash active weights per token
  std::vector<Target> targets;
};

// Fills growth exponents, the stack rows and the targets from report.rows.
void derive(LayerReport& report, const BenchModels& models);

// The opening fields every `dsv4 bench --json` document shares: benchmark, mode, description.
nlohmann::ordered_json json_document(std::string_view mode, std::string_view description);

std::string to_table(const LayerReport& r);
std::string to_csv(const LayerReport& r);
std::string to_json_text(const LayerReport& r);
std::string to_svg(const LayerReport& r);

// --runs N (N >= 2 reports of the same kinds and contexts, in run order). Per row: the median,
// min and max over the runs of each run's mean decode time and ratio_to_floor, the median of
// the state readings and of the prefill rates; per target: the runs that met it.
// runs_json_text: {"runs": [to_json_text of each run], "summary": {...}}; runs_csv: to_csv's
// lines with a leading `run` column (1-based).
std::string runs_table(const std::vector<LayerReport>& runs);
std::string runs_csv(const std::vector<LayerReport>& runs);
std::string runs_json_text(const std::vector<LayerReport>& runs);

}  // namespace dsv4::cli::bench
