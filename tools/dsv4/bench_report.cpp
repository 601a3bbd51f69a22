// tools/dsv4/bench_report.cpp — whole-stack estimate, targets and renderings (bench_report.h).
#include "bench_report.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "base/units.h"
#include "svg.h"

namespace dsv4::cli::bench {
namespace {

constexpr uint64_t kOneM = uint64_t{1} << 20;
constexpr uint64_t k64K = uint64_t{1} << 16;

const LayerRow* find_row(const LayerReport& r, Kind k, uint64_t ctx) {
  for (const LayerRow& row : r.rows)
    if (row.kind == k && row.ctx == ctx) return &row;
  return nullptr;
}

double ratio_of(const LayerRow& row) {
  const double f = row.decode_floor.max();
  return f > 0 ? row.decode.mean / f : 0;
}
double prefill_ratio_of(const LayerRow& row) {
  const double f = row.prefill_floor.max();
  return f > 0 && row.has_prefill ? row.prefill.mean / f : 0;
}
double tps(double tokens, double seconds) {
  return seconds > 0 ? tokens / seconds : 0;
}

std::string ms(double s) {
  const double v = s * 1e3;
  if (v >= 100) return fmt::format("{:.0f}", v);
  if (v >= 10) return fmt::format("{:.1f}", v);
  if (v >= 1) return fmt::format("{:.2f}", v);
  return fmt::format("{:.3f}", v);
}
std::string num(double v) {
  if (v >= 1000) return fmt::format("{:.0f}", v);
  if (v >= 100) return fmt::format("{:.0f}", v);
  if (v >= 10) return fmt::format("{:.1f}", v);
  return fmt::format("{:.2f}", v);
}
std::string bytes_text(uint64_t b) {
  return format_bytes(static_cast<double>(b));
}
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// Layer counts of V4-Flash by kind.
void flash_counts(const formats::ModelConfig& f, int& swa, int& csa, int& hca) {
  swa = f.count_layers(formats::AttentionType::sliding_attention);
  csa = f.count_layers(formats::AttentionType::compressed_sparse_attention);
  hca = f.count_layers(formats::AttentionType::heavily_compressed_attention);
}

nlohmann::ordered_json stat_json(const Stat& s, double scale, const char* unit) {
  nlohmann::ordered_json j;
  j[fmt::format("{}_mean", unit)] = s.mean * scale;
  j[fmt::format("{}_median", unit)] = s.median * scale;
  j[fmt::format("{}_stddev", unit)] = s.stddev * scale;
  j[fmt::format("{}_min", unit)] = s.min * scale;
  j[fmt::format("{}_max", unit)] = s.max * scale;
  j["reps"] = s.n;
  return j;
}

}  // namespace

void derive(LayerReport& r, const BenchModels& m) {
  // Growth exponents: time vs entries (CSA/HCA) or tokens (MLA), consecutive contexts.
  for (size_t i = 1; i < r.rows.size(); ++i) {
    LayerRow& b = r.rows[i];
    const LayerRow& a = r.rows[i - 1];
    if (a.kind != b.kind || b.kind == Kind::swa) continue;
    if (a.entries == 0 || b.entries <= a.entries || a.decode.mean <= 0) continue;
    b.growth_exponent = std::log(b.decode.mean / a.decode.mean) /
                        std::log(static_cast<double>(b.entries) / static_cast<double>(a.entries));
  }
  // Stack rows.
  int swa = 0, csa = 0, hca = 0;
  flash_counts(m.flash, swa, csa, hca);
  r.stack.clear();
  for (uint64_t ctx : r.contexts) {
    StackRow s;
    s.ctx = ctx;
    s.swa = swa;
    s.csa = csa;
    s.hca = hca;
    const LayerRow* rs = find_row(r, Kind::swa, ctx);
    const LayerRow* rc = find_row(r, Kind::csa, ctx);
    const LayerRow* rh = find_row(r, Kind::hca, ctx);
    if (rs && rc && rh) {
      s.has_v4 = true;
      double chunk_s = 0, chunk_floor_s = 0;
      bool prefill = true;
      for (auto [row, n] : {std::pair{rs, swa}, std::pair{rc, csa}, std::pair{rh, hca}}) {
        s.v4_decode_s += n * row->decode.mean;
        s.v4_floor_s += n * row->decode_floor.max();
        s.v4_kv_bytes += static_cast<uint64_t>(n) * row->kv_bytes;
        s.max_transient_bytes = std::max(s.max_transient_bytes, row->transient_bytes);
        prefill = prefill && row->has_prefill;
        chunk_s += n * row->prefill.mean;
        chunk_floor_s += n * row->prefill_floor.max();
      }
      if (prefill) {
        s.v4_prefill_tps = tps(static_cast<double>(rc->prefill_tokens), chunk_s);
        s.v4_prefill_floor_tps = tps(static_cast<double>(rc->prefill_tokens), chunk_floor_s);
      }
    }
    if (const LayerRow* rm = find_row(r, Kind::mla, ctx)) {
      s.has_mla = true;
      s.mla_layers = static_cast<int>(m.v32.num_hidden_layers);
      s.mla_decode_s = s.mla_layers * rm->decode.mean;
      s.mla_floor_s = s.mla_layers * rm->decode_floor.max();
      s.mla_kv_bytes = static_cast<uint64_t>(s.mla_layers) * rm->kv_bytes;
    }
    if (s.has_v4 || s.has_mla) r.stack.push_back(s);
  }
  // Targets of issue #6 that this run's rows can answer.
  r.targets.clear();
  const int threads = r.info.threads;
  if (const LayerRow* c = find_row(r, Kind::csa, kOneM)) {
    const double ratio = ratio_of(*c);
    r.targets.push_back(
        {fmt::format("CSA decode at 1M on {} threads <= 1.5 x max(memory floor, VNNI compute "
                     "floor)",
                     threads),
         fmt::format("{} ms vs floor {} ms ({}-bound) = {:.2f}x", ms(c->decode.mean),
                     ms(c->decode_floor.max()), c->decode_floor.bound(), ratio),
         ratio <= 1.5});
  }
  for (Kind k : {Kind::hca, Kind::swa}) {
    const LayerRow* last = nullptr;
    for (const LayerRow& row : r.rows)
      if (row.kind == k) last = &row;
    if (!last) continue;
    const double ratio = ratio_of(*last);
    const double mem_ratio =
        last->decode_floor.memory_s > 0 ? last->decode.mean / last->decode_floor.memory_s : 0;
    r.targets.push_back(
        {fmt::format("{} decode at {} within 2x of its floor", kind_label(k),
                     format_count(last->ctx)),
         fmt::format("{} ms; memory floor {} ms ({:.1f}x), compute floor {} ms ({:.2f}x); "
                     "{}-bound, ratio_to_floor {:.2f}",
                     ms(last->decode.mean), ms(last->decode_floor.memory_s), mem_ratio,
                     ms(last->decode_floor.compute_s),
                     last->decode_floor.compute_s > 0
                         ? last->decode.mean / last->decode_floor.compute_s
                         : 0.0,
                     last->decode_floor.bound(), ratio),
         ratio <= 2.0});
  }
  {
    double worst = 0;
    int n = 0;
    std::string seq;
    for (const LayerRow& row : r.rows) {
      if (row.kind != Kind::csa || row.growth_exponent == 0) continue;
      worst = n == 0 ? row.growth_exponent : std::max(worst, row.growth_exponent);
      seq += fmt::format("{}{:.2f} (to {})", seq.empty() ? "" : ", ", row.growth_exponent,
                         format_count(row.ctx));
      ++n;
    }
    if (n > 0)
      r.targets.push_back(
          {"CSA decode time grows no worse than linearly in compressed entries (exponent of "
           "t ~ entries^a between consecutive contexts <= 1; 0.1 allowed for timing noise)",
           fmt::format("a = {}", seq), worst <= 1.1});
  }
  for (const StackRow& s : r.stack) {
    if (s.ctx != kOneM || !s.has_v4) continue;
    r.targets.push_back({"whole-stack estimate at 1M (2 SWA + 21 CSA + 20 HCA) printed",
                         fmt::format("{} ms/token attention ({:.2f} t/s), floor {} ms",
                                     ms(s.v4_decode_s), tps(1, s.v4_decode_s), ms(s.v4_floor_s)),
                         true});
    const double frac = s.v4_kv_bytes > 0 ? static_cast<double>(s.max_transient_bytes) /
                                                static_cast<double>(s.v4_kv_bytes)
                                          : 0;
    r.targets.push_back(
        {"peak transient memory at 1M <= 10% of KV bytes (whole stack)",
         fmt::format("{} transient vs {} KV = {:.3f}%", bytes_text(s.max_transient_bytes),
                     bytes_text(s.v4_kv_bytes), frac * 100),
         frac <= 0.10});
  }
  if (const LayerRow* c = find_row(r, Kind::csa, kOneM)) {
    const double frac = static_cast<double>(c->transient_bytes) /
                        static_cast<double>(std::max<uint64_t>(c->kv_bytes, 1));
    r.targets.push_back({"peak transient memory at 1M <= 10% of KV bytes (one CSA layer)",
                         fmt::format("{} vs {} = {:.2f}%", bytes_text(c->transient_bytes),
                                     bytes_text(c->kv_bytes), frac * 100),
                         frac <= 0.10});
  }
  if (const LayerRow* c = find_row(r, Kind::csa, k64K); c && c->has_prefill) {
    const double t = tps(static_cast<double>(c->prefill_tokens), c->prefill.mean);
    const double f = tps(static_cast<double>(c->prefill_tokens), c->prefill_floor.compute_s);
    r.targets.push_back(
        {fmt::format("CSA prefill at 64K (one layer, chunks of {} tokens) against its compute "
                     "floor",
                     c->prefill_tokens),
         fmt::format("{} tokens/s vs compute floor {} tokens/s ({:.2f}x the floor's time)", num(t),
                     num(f), f > 0 ? f / t : 0.0),
         true});
  }
}

// ------------------------------------------------------------------------------ table

namespace {

// The indexer kernel on cached keys with the floors and between each row's decode reps, as a
// share of the int8 probe: when it moves during a run, so do the timings, while the floors
// stay put.
std::string machine_state_line(const LayerReport& r) {
  const Floors& f = r.floors;
  if (f.i8_gmacs <= 0 || f.indexer_kernel_gmacs <= 0) return "";
  double lo = f.indexer_kernel_gmacs, hi = lo;
  for (const LayerRow& row : r.rows) {
    if (row.indexer_kernel_gmacs <= 0) continue;
    lo = std::min(lo, row.indexer_kernel_gmacs);
    hi = std::max(hi, row.indexer_kernel_gmacs);
  }
  return fmt::format(
      "state: the indexer kernel on cached keys ran at {:.0f} GMAC/s = {:.0f}% of the int8 "
      "probe with the floors, {:.0f}-{:.0f}% between the rows' decode reps (column state, the "
      "median per row). Not a floor: a lower share means the machine ran slower than its "
      "floors show at that time\n",
      f.indexer_kernel_gmacs, 100 * f.indexer_kernel_gmacs / f.i8_gmacs, 100 * lo / f.i8_gmacs,
      100 * hi / f.i8_gmacs);
}

}  // namespace

std::string to_table(const LayerReport& r) {
  const RunInfo& i = r.info;
  const Floors& f = r.floors;
  std::string o;
  o += "dsv4 bench: one attention layer at DeepSeek-V4-Flash dimensions (embedded config.json), "
       "synthetic weights and cache\n";
  o += fmt::format("build: dsv4 {} commit {} · {} · {} · kernels {}\n", i.version, i.commit,
                   i.compiler, i.build, i.isa);
  o += fmt::format("machine: {} · {} threads of {}{} · load {} (start)\n", i.cpu, i.threads,
                   i.hardware_threads, i.pinned ? ", pinned" : "", i.loadavg_start);
  o += fmt::format(
      "floors, measured now on {} threads: DRAM read {:.1f} GB/s (median {:.1f}) · int8 dot "
      "{:.0f} GMAC/s ({}) · bf16 dot {:.0f} GMAC/s ({}) · f32 FMA {:.0f} GMAC/s ({})\n",
      i.threads, f.dram_gbps, f.dram_gbps_median, f.i8_gmacs, f.i8_instruction, f.bf16_gmacs,
      f.bf16_instruction, f.f32_gmacs, f.f32_instruction);
  if (f.busy())
    o += fmt::format(
        "WARNING: busy machine: the {}-thread int8 rate is {:.0f}% of {} x the one-thread rate "
        "({:.0f} GMAC/s); other processes held cores, so floors are low and timings high\n",
        i.threads, f.thread_scaling * 100, i.threads, f.i8_gmacs_one_thread);
  o += fmt::format(
      "timing: {} reps after {} warm-up, {}; prefill = the last {} tokens of the context as "
      "one chunk\n\n",
      r.options.reps, r.options.warmup,
      r.options.cold ? "last-level cache flushed before each" : "warm cache",
      r.options.prefill_tokens);

  struct Line {
    std::vector<std::string> c;
  };
  std::vector<Line> lines;
  lines.push_back(
      {{"layer", "context", "entries", "KV bytes", "transient", "decode ms", "median", "± sd",
        "mem floor", "cmp floor", "ratio", "prefill t/s", "± sd", "floor t/s", "ratio", "state"}});
  for (const LayerRow& row : r.rows) {
    Line l;
    l.c.push_back(kind_name(row.kind));
    l.c.push_back(format_count(row.ctx));
    l.c.push_back(row.kind == Kind::swa ? "-" : fmt::format("{}", row.entries));
    l.c.push_back(bytes_text(row.kv_bytes));
    l.c.push_back(bytes_text(row.transient_bytes));
    l.c.push_back(ms(row.decode.mean));
    l.c.push_back(ms(row.decode.median));
    l.c.push_back(ms(row.decode.stddev));
    l.c.push_back(ms(row.decode_floor.memory_s));
    l.c.push_back(ms(row.decode_floor.compute_s));
    l.c.push_back(fmt::format("{:.2f}", ratio_of(row)));
    if (row.has_prefill) {
      const double T = static_cast<double>(row.prefill_tokens);
      const double t = tps(T, row.prefill.mean);
      // Spread of t/s from the spread of the chunk time (first order).
      const double sd = row.prefill.mean > 0 ? t * row.prefill.stddev / row.prefill.mean : 0;
      l.c.push_back(num(t));
      l.c.push_back(num(sd));
      l.c.push_back(num(tps(T, row.prefill_floor.max())));
      l.c.push_back(fmt::format("{:.2f}", prefill_ratio_of(row)));
    } else {
      for (int k = 0; k < 4; ++k) l.c.push_back("-");
    }
    l.c.push_back(f.i8_gmacs > 0 && row.indexer_kernel_gmacs > 0
                      ? fmt::format("{:.0f}%", 100 * row.indexer_kernel_gmacs / f.i8_gmacs)
                      : "-");
    lines.push_back(l);
  }
  std::vector<size_t> w(lines[0].c.size(), 0);
  for (const Line& l : lines)
    for (size_t k = 0; k < l.c.size(); ++k) w[k] = std::max(w[k], l.c[k].size());
  for (const Line& l : lines) {
    std::string s;
    for (size_t k = 0; k < l.c.size(); ++k)
      s += k < 2 ? fmt::format("{:<{}}  ", l.c[k], w[k]) : fmt::format("{:>{}}  ", l.c[k], w[k]);
    while (!s.empty() && s.back() == ' ') s.pop_back();
    o += s + "\n";
  }
  o += "\nms per decode step of one layer; floors: memory = DRAM bytes / DRAM read rate, "
       "compute = int8 MACs / int8 rate + bf16 MACs / bf16 rate + f32 MACs / f32 rate; "
       "ratio = mean / max(floors).\n";
  o += machine_state_line(r);

  if (!r.stack.empty()) {
    o += "\nwhole stack, attention on the cache only (per generated token):\n";
    for (const StackRow& s : r.stack) {
      std::string line = fmt::format("  {:>5}:", format_count(s.ctx));
      if (s.has_v4)
        line += fmt::format(
            " V4-Flash {} SWA + {} CSA + {} HCA = {} ms ({:.1f} t/s), floor {} ms ({:.2f}x), "
            "KV {}",
            s.swa, s.csa, s.hca, ms(s.v4_decode_s), tps(1, s.v4_decode_s), ms(s.v4_floor_s),
            s.v4_floor_s > 0 ? s.v4_decode_s / s.v4_floor_s : 0.0, bytes_text(s.v4_kv_bytes));
      if (s.has_mla)
        line += fmt::format("{} V3.2 dense MLA {} layers = {} ms ({:.2f} t/s), KV {}",
                            s.has_v4 ? ";" : "", s.mla_layers, ms(s.mla_decode_s),
                            tps(1, s.mla_decode_s), bytes_text(s.mla_kv_bytes));
      if (s.has_v4 && s.has_mla && s.v4_decode_s > 0)
        line += fmt::format("; V4 speed-up {:.1f}x", s.mla_decode_s / s.v4_decode_s);
      o += line + "\n";
      if (s.has_v4 && s.v4_prefill_tps > 0)
        o += fmt::format(
            "         V4-Flash prefill (attention, {}-token chunk at this depth): "
            "{} tokens/s, floor {} tokens/s\n",
            r.options.prefill_tokens, num(s.v4_prefill_tps), num(s.v4_prefill_floor_tps));
    }
  }
  {
    const double sec = f.dram_gbps > 0 ? r.weights.total / (f.dram_gbps * 1e9) : 0;
    o += fmt::format(
        "\nweight-streaming floor (separate from the rows above; V4-Flash, one token, batch 1): "
        "{:.2f} GB of active weights / {:.1f} GB/s = {} ms/token ({:.2f} t/s)\n",
        r.weights.total / 1e9, f.dram_gbps, ms(sec), sec > 0 ? 1 / sec : 0.0);
    for (const auto& [name, b] : r.weights.parts)
      o += fmt::format("  {:<52} {:>8.3f} GB\n", name, b / 1e9);
  }
  if (!r.targets.empty()) {
    o += "\ntargets (issue #6):\n";
    for (const Target& t : r.targets)
      o += fmt::format("  [{}] {}: {}\n", t.met ? "met" : "NOT MET", t.name, t.measured);
  }
  o += fmt::format("\nload at end: {}; hypervisor steal during the run: {:.2f} s\n", i.loadavg_end,
                   i.steal_seconds);
  return o;
}

// ------------------------------------------------------------------------------ CSV

std::string to_csv(const LayerReport& r) {
  const RunInfo& i = r.info;
  const Floors& f = r.floors;
  std::string o =
      "layer,context,entries,keys_attended,kv_bytes,transient_bytes,decode_ms_mean,"
      "decode_ms_median,decode_ms_stddev,decode_ms_min,decode_ms_max,reps,decode_tokens_per_s,"
      "memory_floor_ms,"
      "compute_floor_ms,ratio_to_floor,prefill_tokens,prefill_tokens_per_s_mean,"
      "prefill_ms_stddev,prefill_floor_tokens_per_s,prefill_ratio_to_floor,growth_exponent,"
      "indexer_kernel_gmacs_during,threads,kernel_isa,commit,compiler,cpu,dram_gbps,"
      "int8_gmacs,bf16_gmacs,f32_gmacs,loadavg_start\n";
  auto tail = [&] {
    return fmt::format("{},{},{},{},{},{:.2f},{:.1f},{:.1f},{:.1f},{}", i.threads, i.isa,
                       csv_field(i.commit), csv_field(i.compiler), csv_field(i.cpu), f.dram_gbps,
                       f.i8_gmacs, f.bf16_gmacs, f.f32_gmacs, csv_field(i.loadavg_start));
  };
  for (const LayerRow& row : r.rows) {
    const double T = static_cast<double>(row.prefill_tokens);
    o += fmt::format(
        "{},{},{},{},{},{},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{},{:.3f},{:.6f},{:.6f},{:.4f},",
        kind_name(row.kind), row.ctx, row.entries, row.keys_attended, row.kv_bytes,
        row.transient_bytes, row.decode.mean * 1e3, row.decode.median * 1e3,
        row.decode.stddev * 1e3, row.decode.min * 1e3, row.decode.max * 1e3, row.decode.n,
        tps(1, row.decode.mean), row.decode_floor.memory_s * 1e3, row.decode_floor.compute_s * 1e3,
        ratio_of(row));
    if (row.has_prefill)
      o += fmt::format("{},{:.3f},{:.6f},{:.3f},{:.4f},", row.prefill_tokens,
                       tps(T, row.prefill.mean), row.prefill.stddev * 1e3,
                       tps(T, row.prefill_floor.max()), prefill_ratio_of(row));
    else
      o += "0,,,,,";
    o += fmt::format("{:.4f},{:.1f},{}\n", row.growth_exponent, row.indexer_kernel_gmacs, tail());
  }
  for (const StackRow& s : r.stack) {
    if (s.has_v4)
      o += fmt::format(
          "stack:v4-flash,{},,,{},{},{:.6f},,,,,,{:.3f},,,{:.4f},{},{:.3f},,{:.3f},,,,{}\n", s.ctx,
          s.v4_kv_bytes, s.max_transient_bytes, s.v4_decode_s * 1e3, tps(1, s.v4_decode_s),
          s.v4_floor_s > 0 ? s.v4_decode_s / s.v4_floor_s : 0.0,
          s.v4_prefill_tps > 0 ? r.options.prefill_tokens : 0, s.v4_prefill_tps,
          s.v4_prefill_floor_tps, tail());
    if (s.has_mla)
      o += fmt::format("stack:v3.2-mla,{},,,{},,{:.6f},,,,,,{:.3f},,,{:.4f},0,,,,,,,{}\n", s.ctx,
                       s.mla_kv_bytes, s.mla_decode_s * 1e3, tps(1, s.mla_decode_s),
                       s.mla_floor_s > 0 ? s.mla_decode_s / s.mla_floor_s : 0.0, tail());
  }
  return o;
}

// ------------------------------------------------------------------------------ JSON

nlohmann::ordered_json json_document(std::string_view mode, std::string_view description) {
  nlohmann::ordered_json root;
  root["benchmark"] = "dsv4 bench";
  root["mode"] = mode;
  root["description"] = description;
  return root;
}

namespace {

nlohmann::ordered_json to_json_object(const LayerReport& r) {
  using J = nlohmann::ordered_json;
  J root = json_document(
      "layer",
      "One DeepSeek-V4-Flash attention layer (embedded config.json dims) on a synthetic KV cache "
      "in the official FP8/FP4 records, executed by model::AttentionExec (indexer + top-k + "
      "attention; not the linear projections), and a dense MLA baseline (DeepSeek-V3.2 dims, "
      "bf16 latents, full attention). Floors: memory = dram_bytes / DRAM read rate; compute = "
      "int8_macs / int8 rate + bf16_macs / bf16 rate + f32_macs / f32 rate, all measured in "
      "this run on the same threads. ratio_to_floor = decode ms mean / max(memory, compute "
      "floor).");
  root["meta"] = to_json(r.info);
  root["floors"] = to_json(r.floors);
  J set;
  set["reps"] = r.options.reps;
  set["warmup"] = r.options.warmup;
  set["cold_cache"] = r.options.cold;
  set["prefill_tokens"] = r.options.prefill_tokens;
  J kinds = J::array();
  for (Kind k : r.kinds) kinds.push_back(kind_name(k));
  set["layers"] = kinds;
  set["contexts"] = r.contexts;
  root["settings"] = set;
  J rows = J::array();
  for (const LayerRow& row : r.rows) {
    J j;
    j["layer"] = kind_name(row.kind);
    j["context"] = row.ctx;
    j["entries"] = row.entries;
    j["keys_attended"] = row.keys_attended;
    j["kv_bytes"] = row.kv_bytes;
    j["transient_bytes"] = row.transient_bytes;
    j["transient_fraction_of_kv"] = row.kv_bytes > 0 ? static_cast<double>(row.transient_bytes) /
                                                           static_cast<double>(row.kv_bytes)
                                                     : 0.0;
    j["fill_seconds"] = row.fill_seconds;
    j["anon_huge_page_bytes"] = row.huge_page_bytes;
    j["steal_seconds"] = row.steal_seconds;
    J d = stat_json(row.decode, 1e3, "ms");
    d["tokens_per_s"] = tps(1, row.decode.mean);
    j["decode"] = d;
    j["decode_floor"] = to_json(row.decode_work, row.decode_floor);
    j["ratio_to_floor"] = ratio_of(row);
    j["ratio_to_memory_floor"] =
        row.decode_floor.memory_s > 0 ? row.decode.mean / row.decode_floor.memory_s : 0.0;
    j["ratio_to_compute_floor"] =
        row.decode_floor.compute_s > 0 ? row.decode.mean / row.decode_floor.compute_s : 0.0;
    if (row.has_prefill) {
      const double T = static_cast<double>(row.prefill_tokens);
      J p = stat_json(row.prefill, 1e3, "chunk_ms");
      p["tokens"] = row.prefill_tokens;
      p["tokens_per_s"] = tps(T, row.prefill.mean);
      p["tokens_per_s_best"] = tps(T, row.prefill.min);
      j["prefill"] = p;
      J pf = to_json(row.prefill_work, row.prefill_floor);
      pf["floor_tokens_per_s"] = tps(T, row.prefill_floor.max());
      pf["compute_floor_tokens_per_s"] = tps(T, row.prefill_floor.compute_s);
      j["prefill_floor"] = pf;
      j["prefill_ratio_to_floor"] = prefill_ratio_of(row);
    } else {
      j["prefill"] = nullptr;
    }
    if (row.growth_exponent != 0) j["growth_exponent"] = row.growth_exponent;
    j["indexer_kernel_gmacs_during"] = row.indexer_kernel_gmacs;
    rows.push_back(j);
  }
  root["rows"] = rows;
  J stack = J::array();
  for (const StackRow& s : r.stack) {
    J j;
    j["context"] = s.ctx;
    if (s.has_v4) {
      j["v4_flash"] = {{"layers", {{"swa", s.swa}, {"csa", s.csa}, {"hca", s.hca}}},
                       {"decode_ms", s.v4_decode_s * 1e3},
                       {"decode_tokens_per_s", tps(1, s.v4_decode_s)},
                       {"floor_ms", s.v4_floor_s * 1e3},
                       {"ratio_to_floor", s.v4_floor_s > 0 ? s.v4_decode_s / s.v4_floor_s : 0.0},
                       {"prefill_tokens_per_s", s.v4_prefill_tps},
                       {"prefill_floor_tokens_per_s", s.v4_prefill_floor_tps},
                       {"kv_bytes", s.v4_kv_bytes},
                       {"max_transient_bytes", s.max_transient_bytes}};
    }
    if (s.has_mla) {
      j["v32_dense_mla"] = {{"layers", s.mla_layers},
                            {"decode_ms", s.mla_decode_s * 1e3},
                            {"decode_tokens_per_s", tps(1, s.mla_decode_s)},
                            {"floor_ms", s.mla_floor_s * 1e3},
                            {"kv_bytes", s.mla_kv_bytes}};
    }
    if (s.has_v4 && s.has_mla && s.v4_decode_s > 0)
      j["v4_speedup_vs_mla"] = s.mla_decode_s / s.v4_decode_s;
    stack.push_back(j);
  }
  root["stack"] = stack;
  {
    J w;
    w["description"] =
        "V4-Flash active weight bytes per token at batch 1 (every tensor once; embedding one "
        "row; routed experts num_experts_per_tok of n_routed_experts) / DRAM read rate. Not "
        "included in the rows or the stack.";
    w["bytes_per_token"] = r.weights.total;
    J parts;
    for (const auto& [name, b] : r.weights.parts) parts[name] = b;
    w["parts"] = parts;
    const double sec = r.floors.dram_gbps > 0 ? r.weights.total / (r.floors.dram_gbps * 1e9) : 0;
    w["floor_ms"] = sec * 1e3;
    w["floor_tokens_per_s"] = sec > 0 ? 1 / sec : 0.0;
    root["weight_streaming_floor"] = w;
  }
  J targets = J::array();
  for (const Target& t : r.targets)
    targets.push_back({{"target", t.name}, {"measured", t.measured}, {"met", t.met}});
  root["targets"] = targets;
  return root;
}

}  // namespace

std::string to_json_text(const LayerReport& r) {
  return to_json_object(r).dump(2) + "\n";
}

// ------------------------------------------------------------------------------ SVG

std::string to_svg(const LayerReport& r) {
  const double W = 900, H = 560, L = 80, T = 60, pw = 560, ph = 420;
  std::vector<Kind> kinds;
  for (const LayerRow& row : r.rows)
    if (std::find(kinds.begin(), kinds.end(), row.kind) == kinds.end()) kinds.push_back(row.kind);
  uint64_t xmin = UINT64_MAX, xmax = 0;
  double ymin = 1e30, ymax = 0;
  for (const LayerRow& row : r.rows) {
    xmin = std::min(xmin, row.ctx);
    xmax = std::max(xmax, row.ctx);
    for (double v : {row.decode.mean * 1e3, row.decode.min * 1e3, row.decode.max * 1e3,
                     row.decode_floor.max() * 1e3})
      if (v > 0) ymin = std::min(ymin, v), ymax = std::max(ymax, v);
  }
  if (r.rows.empty() || ymax <= 0) xmin = 1024, xmax = 2048, ymin = 0.1, ymax = 1;
  if (xmax <= xmin) xmax = xmin * 2;
  const double ly0 = std::floor(std::log10(ymin)),
               ly1 = std::max(ly0 + 1, std::ceil(std::log10(ymax)));
  const double lx0 = std::log2(static_cast<double>(xmin)),
               lx1 = std::log2(static_cast<double>(xmax));
  auto px = [&](double x) { return L + (std::log2(x) - lx0) / (lx1 - lx0) * pw; };
  auto py = [&](double v) {
    const double lv = v > 0 ? std::log10(v) : ly0;
    return T + ph - (std::max(lv, ly0) - ly0) / (ly1 - ly0) * ph;
  };
  auto color = [](Kind k) {
    switch (k) {
      case Kind::swa:
        return "#2ca02c";
      case Kind::csa:
        return "#1f77b4";
      case Kind::hca:
        return "#ff7f0e";
      case Kind::mla:
        return "#d62728";
    }
    return "#333333";
  };
  std::string o = svg_begin(W, H);
  o += fmt::format(
      "<text x=\"{}\" y=\"26\" font-size=\"16\" font-weight=\"bold\" text-anchor=\"middle\">"
      "Decode time of one attention layer vs context ({} threads, {})</text>\n",
      L + pw / 2, r.info.threads, xml_escape(r.info.cpu));
  o += fmt::format(
      "<text x=\"{}\" y=\"46\" font-size=\"11\" fill=\"#555555\" text-anchor=\"middle\">solid: "
      "measured mean (bars min..max); dashed: max(memory, compute) floor measured in the same "
      "run</text>\n",
      L + pw / 2);
  o += svg_loglog_axes(L, T, pw, ph, xmin, xmax, ly0, ly1, px, py, [](double v, double e) {
    return e < 0 ? fmt::format("{:.{}f}", v, static_cast<int>(-e)) : fmt::format("{:.0f}", v);
  });
  o += fmt::format(
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">context (tokens, log scale; K = "
      "1024)</text>\n",
      L + pw / 2, H - 34);
  o += fmt::format(
      "<text x=\"22\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 22 {0})\">ms per "
      "decode step (log scale)</text>\n",
      T + ph / 2);
  for (Kind k : kinds) {
    std::string pts, fpts;
    for (const LayerRow& row : r.rows) {
      if (row.kind != k) continue;
      const double x = px(static_cast<double>(row.ctx));
      pts += fmt::format("{}{:.1f},{:.1f}", pts.empty() ? "" : " ", x, py(row.decode.mean * 1e3));
      fpts += fmt::format("{}{:.1f},{:.1f}", fpts.empty() ? "" : " ", x,
                          py(row.decode_floor.max() * 1e3));
    }
    o += fmt::format(
        "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" "
        "points=\"{}\"><title>{} measured</title></polyline>\n",
        color(k), pts, kind_label(k));
    o += fmt::format(
        "<polyline class=\"floor\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" "
        "stroke-dasharray=\"6 4\" points=\"{}\"><title>{} floor</title></polyline>\n",
        color(k), fpts, kind_label(k));
    for (const LayerRow& row : r.rows) {
      if (row.kind != k) continue;
      const double x = px(static_cast<double>(row.ctx));
      o += fmt::format(
          "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"{3}\"/>"
          "<circle cx=\"{0:.1f}\" cy=\"{4:.1f}\" r=\"3\" fill=\"{3}\"/>\n",
          x, py(row.decode.min * 1e3), py(row.decode.max * 1e3), color(k),
          py(row.decode.mean * 1e3));
    }
  }
  const double lx = L + pw + 20;
  o += fmt::format("<text x=\"{}\" y=\"{}\" font-weight=\"bold\">layer</text>\n", lx, T + 4);
  for (size_t s = 0; s < kinds.size(); ++s) {
    const double y = T + 26 + 22 * static_cast<double>(s);
    o += fmt::format(
        "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"{}\" "
        "stroke-width=\"2\"/>\n",
        lx, y - 4, lx + 28, y - 4, color(kinds[s]));
    o += fmt::format("<text class=\"legend\" x=\"{}\" y=\"{:.1f}\">{}</text>\n", lx + 36, y,
                     xml_escape(kind_label(kinds[s])));
  }
  o += fmt::format(
      "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#555555\">commit {} · {} · kernels "
      "{}</text>\n",
      L, H - 12, xml_escape(r.info.commit), xml_escape(r.info.compiler), xml_escape(r.info.isa));
  o += "</svg>\n";
  return o;
}

// ------------------------------------------------------------------------------ --runs

namespace {

// Row i of every run (the runs share kinds and contexts, so rows line up).
struct RowSummary {
  Kind kind = Kind::csa;
  uint64_t ctx = 0;
  Stat decode_ms, ratio, state, prefill_tps;  // stat_of over the runs
  bool has_prefill = false;
};

std::vector<RowSummary> summarize_rows(const std::vector<LayerReport>& runs) {
  std::vector<RowSummary> out;
  for (size_t i = 0; i < runs.front().rows.size(); ++i) {
    RowSummary s;
    s.kind = runs.front().rows[i].kind;
    s.ctx = runs.front().rows[i].ctx;
    std::vector<double> ms, ratio, state, tps_v;
    for (const LayerReport& r : runs) {
      DSV4_CHECK(i < r.rows.size() && r.rows[i].kind == s.kind && r.rows[i].ctx == s.ctx);
      const LayerRow& row = r.rows[i];
      ms.push_back(row.decode.mean * 1e3);
      ratio.push_back(ratio_of(row));
      if (r.floors.i8_gmacs > 0) state.push_back(row.indexer_kernel_gmacs / r.floors.i8_gmacs);
      if (row.has_prefill) {
        s.has_prefill = true;
        tps_v.push_back(tps(static_cast<double>(row.prefill_tokens), row.prefill.mean));
      }
    }
    s.decode_ms = stat_of(ms);
    s.ratio = stat_of(ratio);
    s.state = stat_of(state);
    s.prefill_tps = stat_of(tps_v);
    out.push_back(s);
  }
  return out;
}

// Per target (same order in every run): the runs (1-based) that met it.
struct TargetSummary {
  std::string name;
  std::vector<int> met_runs;
};

std::vector<TargetSummary> summarize_targets(const std::vector<LayerReport>& runs) {
  std::vector<TargetSummary> out;
  for (size_t t = 0; t < runs.front().targets.size(); ++t) {
    TargetSummary s;
    s.name = runs.front().targets[t].name;
    for (size_t r = 0; r < runs.size(); ++r)
      if (t < runs[r].targets.size() && runs[r].targets[t].met)
        s.met_runs.push_back(static_cast<int>(r) + 1);
    out.push_back(s);
  }
  return out;
}

std::string spread_text(const Stat& s, int digits) {
  return fmt::format("{:.{}f} [{:.{}f}-{:.{}f}]", s.median, digits, s.min, digits, s.max, digits);
}

}  // namespace

std::string runs_table(const std::vector<LayerReport>& runs) {
  DSV4_CHECK(runs.size() >= 2);
  const LayerReport& first = runs.front();
  std::string o = fmt::format(
      "dsv4 bench: {} runs of one attention layer at DeepSeek-V4-Flash dimensions, each with "
      "its own floors\n",
      runs.size());
  o += fmt::format("build: dsv4 {} commit {} · {} · {} · kernels {}\n", first.info.version,
                   first.info.commit, first.info.compiler, first.info.build, first.info.isa);
  o += fmt::format("machine: {} · {} threads of {}{} · runs started {} to {}\n", first.info.cpu,
                   first.info.threads, first.info.hardware_threads,
                   first.info.pinned ? ", pinned" : "", first.info.date_utc,
                   runs.back().info.date_utc);
  std::vector<double> i8, dram;
  int busy = 0;
  for (const LayerReport& r : runs) {
    i8.push_back(r.floors.i8_gmacs);
    dram.push_back(r.floors.dram_gbps);
    busy += r.floors.busy() ? 1 : 0;
  }
  o += fmt::format("floors over the runs: DRAM read {} GB/s, int8 {} GMAC/s; busy runs: {}\n",
                   spread_text(stat_of(dram), 1), spread_text(stat_of(i8), 0), busy);
  o += fmt::format("timing: {} reps after {} warm-up per run, {}\n\n", first.options.reps,
                   first.options.warmup,
                   first.options.cold ? "last-level cache flushed before each" : "warm cache");
  o += "median [min-max] over the runs of each run's figure:\n";
  std::vector<std::vector<std::string>> lines = {
      {"layer", "context", "decode ms", "ratio", "state", "prefill t/s"}};
  for (const RowSummary& s : summarize_rows(runs)) {
    lines.push_back({kind_name(s.kind), format_count(s.ctx), spread_text(s.decode_ms, 3),
                     spread_text(s.ratio, 2),
                     s.state.max > 0 ? fmt::format("{:.0f}%", 100 * s.state.median) : "-",
                     s.has_prefill ? spread_text(s.prefill_tps, 0) : "-"});
  }
  std::vector<size_t> w(lines[0].size(), 0);
  for (const auto& l : lines)
    for (size_t k = 0; k < l.size(); ++k) w[k] = std::max(w[k], l[k].size());
  for (const auto& l : lines) {
    std::string s;
    for (size_t k = 0; k < l.size(); ++k)
      s += k < 2 ? fmt::format("{:<{}}  ", l[k], w[k]) : fmt::format("{:>{}}  ", l[k], w[k]);
    while (!s.empty() && s.back() == ' ') s.pop_back();
    o += s + "\n";
  }
  // Each run at the largest context: a run's ratios next to its state readings show whether a
  // miss ran in one of the machine's slow periods (docs/bench.md, "Why whole runs differ").
  uint64_t top = 0;
  for (const LayerRow& row : first.rows) top = std::max(top, row.ctx);
  std::vector<size_t> cols;  // row indices at the largest context
  for (size_t i = 0; i < first.rows.size(); ++i)
    if (first.rows[i].ctx == top) cols.push_back(i);
  if (!cols.empty()) {
    o += fmt::format("\neach run at {}: ratio (state)\n", format_count(top));
    std::vector<std::vector<std::string>> grid = {{"run"}};
    for (size_t i : cols) grid[0].push_back(kind_name(first.rows[i].kind));
    for (size_t r = 0; r < runs.size(); ++r) {
      std::vector<std::string> line = {fmt::format("{}", r + 1)};
      for (size_t i : cols) {
        const LayerRow& row = runs[r].rows[i];
        const double st =
            runs[r].floors.i8_gmacs > 0 ? row.indexer_kernel_gmacs / runs[r].floors.i8_gmacs : 0.0;
        line.push_back(st > 0 ? fmt::format("{:.2f} ({:.0f}%)", ratio_of(row), 100 * st)
                              : fmt::format("{:.2f}", ratio_of(row)));
      }
      grid.push_back(line);
    }
    std::vector<size_t> gw(grid[0].size(), 0);
    for (const auto& l : grid)
      for (size_t k = 0; k < l.size(); ++k) gw[k] = std::max(gw[k], l[k].size());
    for (const auto& l : grid) {
      std::string line;
      for (size_t k = 0; k < l.size(); ++k) line += fmt::format("{:<{}}  ", l[k], gw[k]);
      while (!line.empty() && line.back() == ' ') line.pop_back();
      o += line + "\n";
    }
  }
  const auto targets = summarize_targets(runs);
  if (!targets.empty()) {
    o += "\ntargets (issue #6), per run:\n";
    for (const TargetSummary& t : targets) {
      std::string which;
      for (int r : t.met_runs) {
        if (!which.empty()) which.push_back(',');
        which.append(fmt::format("{}", r));
      }
      o += fmt::format("  met in {} of {} runs{}: {}\n", t.met_runs.size(), runs.size(),
                       which.empty() ? std::string() : fmt::format(" ({})", which), t.name);
    }
  }
  o += "\nstate = the indexer kernel on cached keys as a share of the int8 probe, between the "
       "reps (docs/bench.md); ratio = a run's mean / its max(floors)\n";
  return o;
}

std::string runs_csv(const std::vector<LayerReport>& runs) {
  std::string o;
  for (size_t r = 0; r < runs.size(); ++r) {
    std::istringstream in(to_csv(runs[r]));
    std::string line;
    bool header = true;
    while (std::getline(in, line)) {
      if (header) {
        if (r == 0) o += "run," + line + "\n";
        header = false;
        continue;
      }
      o += fmt::format("{},{}\n", r + 1, line);
    }
  }
  return o;
}

std::string runs_json_text(const std::vector<LayerReport>& runs) {
  using J = nlohmann::ordered_json;
  J root = json_document(
      "layer-runs",
      "--runs: the layer-mode measurement repeated, each run with its own floors (runs[] is "
      "each run's layer-mode document). summary.rows: median/min/max over the runs of each "
      "run's mean decode ms and ratio_to_floor, and medians of the state reading "
      "(indexer_kernel_gmacs_during / int8_dot_gmacs) and of the prefill rate. "
      "summary.targets: the runs (1-based) that met each target.");
  J arr = J::array();
  for (const LayerReport& r : runs) arr.push_back(to_json_object(r));
  root["runs"] = arr;
  auto sj = [](const Stat& s) { return J{{"median", s.median}, {"min", s.min}, {"max", s.max}}; };
  J rows = J::array();
  for (const RowSummary& s : summarize_rows(runs)) {
    J j;
    j["layer"] = kind_name(s.kind);
    j["context"] = s.ctx;
    j["decode_ms_mean"] = sj(s.decode_ms);
    j["ratio_to_floor"] = sj(s.ratio);
    j["state"] = sj(s.state);
    j["prefill_tokens_per_s"] = s.has_prefill ? sj(s.prefill_tps) : J(nullptr);
    rows.push_back(j);
  }
  J targets = J::array();
  for (const TargetSummary& t : summarize_targets(runs))
    targets.push_back({{"target", t.name},
                       {"met_runs", t.met_runs},
                       {"met", t.met_runs.size()},
                       {"runs", runs.size()}});
  root["summary"] = {{"runs", runs.size()}, {"rows", rows}, {"targets", targets}};
  return root.dump(2) + "\n";
}

}  // namespace dsv4::cli::bench
