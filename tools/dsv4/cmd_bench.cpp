// dsv4 bench — attention-layer and end-to-end speed next to floors measured in the same run.
//
//   dsv4 bench                                   quick set: --layer all --ctx 4K,64K
//   dsv4 bench --layer csa --ctx 1M --json       one CSA layer of V4-Flash at 1M context
//   dsv4 bench --layer all --ctx 4K,16K,64K,256K,1M --plot decode.svg
//   dsv4 bench --model DIR --ctx 512,2K          prefill / decode t/s of a checkpoint
//   --reps N --warmup N --runs N --threads N --prefill-tokens T --warm-cache --json --csv
//   --plot F.svg
//
// Layer mode (tools/dsv4/bench_layer.h): one attention layer at DeepSeek-V4-Flash dimensions on a
// synthetic cache, executed by model::AttentionExec; the dense MLA baseline (V3.2 dims); the
// whole-stack estimate; the V4-Flash weight-streaming floor; the targets of issue #6.
// Model mode: model::Model on a checkpoint directory (e.g. from `dsv4 synth`): prefill t/s of
// the tokens added to reach each context frontier and decode t/s at the frontier, repeated.
// Both modes measure DRAM read bandwidth and int8/bf16/f32 dot throughput first (bench_env.h)
// and record commit, compiler, build, threads, CPU, kernel tier and load. docs/bench.md explains
// every column.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/mmap_file.h"
#include "base/thread_pool.h"
#include "base/timer.h"
#include "base/units.h"
#include "bench_env.h"
#include "bench_layer.h"
#include "bench_report.h"
#include "command.h"
#include "kv/layout.h"
#include "model/model.h"
#include "text_ui.h"

namespace dsv4::cli {
namespace {

using namespace dsv4::cli::bench;

constexpr const char* kDefaultLayerCtx = "4K,64K";
constexpr const char* kDefaultModelCtx = "512,2K";

struct Options {
  std::string layers;  // empty: "all" (layer mode)
  std::string ctx;     // empty: mode default
  int reps = 5;
  int warmup = 1;
  int runs = 1;
  int threads = 0;
  bool pin = true;
  int64_t prefill_tokens = 64;
  bool warm_cache = false;
  bool json = false, csv = false;
  std::string plot;
  std::string model;
  int64_t decode_tokens = 16;
  std::string scheme = "official";
  bool verbose = false;
};

// Progress lines on stderr: on a terminal, or with --verbose. (Off otherwise, so that an error
// is the only line a script sees on stderr.)
bool progress_lines(const Options& o) {
  return o.verbose || stderr_is_tty();
}

// --plot's directory must exist before minutes of measuring are spent.
Status check_plot_path(const std::string& path) {
  if (path.empty()) return ok_status();
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    return invalid_argument(fmt::format("--plot: directory '{}' does not exist", parent.string()));
  return ok_status();
}

Result<std::vector<Kind>> parse_kinds(const std::string& text) {
  std::vector<Kind> out;
  auto add = [&](Kind k) {
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  };
  size_t pos = 0;
  for (;;) {
    const size_t comma = text.find(',', pos);
    const std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item == "all") {
      for (Kind k : {Kind::swa, Kind::csa, Kind::hca, Kind::mla}) add(k);
    } else if (item == "swa") {
      add(Kind::swa);
    } else if (item == "csa") {
      add(Kind::csa);
    } else if (item == "hca") {
      add(Kind::hca);
    } else if (item == "mla") {
      add(Kind::mla);
    } else {
      return invalid_argument(
          fmt::format("--layer: '{}' is not one of swa, csa, hca, mla, all", item));
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  // Display and run order: swa, csa, hca, mla.
  std::sort(out.begin(), out.end(),
            [](Kind a, Kind b) { return static_cast<int>(a) < static_cast<int>(b); });
  return out;
}

Result<std::vector<uint64_t>> parse_contexts(const std::string& text) {
  auto v = parse_count_list(text);
  if (!v.ok()) return v.status().with_context("--ctx");
  std::vector<uint64_t> out = *v;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Status check_common(const Options& o) {
  if (o.json && o.csv) return invalid_argument("--json and --csv are mutually exclusive");
  if (o.reps < 1) return invalid_argument(fmt::format("--reps must be >= 1 (got {})", o.reps));
  if (o.runs < 1 || o.runs > 1000)
    return invalid_argument(fmt::format("--runs must be in [1, 1000] (got {})", o.runs));
  if (o.warmup < 0)
    return invalid_argument(fmt::format("--warmup must be >= 0 (got {})", o.warmup));
  if (o.threads < 0 || o.threads > 1024)
    return invalid_argument(fmt::format("--threads must be in [0, 1024] (got {})", o.threads));
  if (o.prefill_tokens < 0 || o.prefill_tokens > 4096)
    return invalid_argument(
        fmt::format("--prefill-tokens must be in [0, 4096] (got {})", o.prefill_tokens));
  return ok_status();
}

void write_out(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
}

// ------------------------------------------------------------------------------ layer mode

int run_layers(const Options& o) {
  auto kinds = parse_kinds(o.layers.empty() ? "all" : o.layers);
  if (!kinds.ok()) return report_error(kinds.status());
  if (Status s = check_plot_path(o.plot); !s.ok()) return report_error(s);
  const bool lines = progress_lines(o);
  auto ctx = parse_contexts(o.ctx.empty() ? kDefaultLayerCtx : o.ctx);
  if (!ctx.ok()) return report_error(ctx.status());
  auto models = load_bench_models();
  if (!models.ok()) return report_error(models.status());
  // Contexts and memory are checked before anything is measured.
  for (Kind k : *kinds) {
    // The MLA baseline runs at V4's contexts even past V3.2's own 160K limit: it shows what
    // dense attention over a V3.2-shaped cache costs there.
    const auto max_ctx = static_cast<uint64_t>(models->flash.max_position_embeddings);
    for (uint64_t n : *ctx) {
      if (n > max_ctx)
        return report_error(invalid_argument(
            fmt::format("--ctx: {} exceeds max_position_embeddings {} of DeepSeek-V4-Flash",
                        format_count(n), format_count(max_ctx))));
      const uint64_t need = layer_cache_bytes(*models, k, n) + (uint64_t{640} << 20);
      const uint64_t avail = mem_available_bytes();
      if (avail > 0 && need > avail)
        return report_error(out_of_memory(fmt::format(
            "bench: the {} row at {} needs about {} of memory; {} is available (lower --ctx or "
            "drop {} from --layer)",
            kind_name(k), format_count(n), format_bytes(static_cast<double>(need)),
            format_bytes(static_cast<double>(avail)), kind_name(k))));
    }
  }

  ThreadPool pool(o.threads, o.pin);
  CacheEvictor evictor;
  KernelStateProbe state(pool.num_threads());
  std::vector<LayerReport> reports;
  for (int run = 0; run < o.runs; ++run) {
    if (o.runs > 1 && lines) std::fprintf(stderr, "bench: run %d of %d\n", run + 1, o.runs);
    LayerReport rep;
    rep.info = collect_run_info(pool.num_threads());
    rep.info.pinned = pool.pinned();
    rep.kinds = *kinds;
    rep.contexts = *ctx;
    rep.options.reps = o.reps;
    rep.options.warmup = o.warmup;
    rep.options.prefill_tokens = static_cast<size_t>(o.prefill_tokens);
    rep.options.cold = !o.warm_cache;
    rep.options.progress = true;  // a live line, on a terminal only
    auto floors = measure_floors(pool);
    if (!floors.ok()) return report_error(floors.status());
    rep.floors = *floors;
    if (floors->busy())
      std::fprintf(stderr,
                   "bench: warning: busy machine (%d-thread int8 rate = %.0f%% of %d x one "
                   "thread): floors low, timings high\n",
                   pool.num_threads(), floors->thread_scaling * 100, pool.num_threads());
    rep.options.evictor = &evictor;
    rep.options.state = &state;
    if (lines)
      std::fprintf(stderr,
                   "bench: floors on %d threads: DRAM %.1f GB/s, int8 %.0f, bf16 %.0f, f32 %.0f "
                   "GMAC/s (%.1f s)\n",
                   pool.num_threads(), floors->dram_gbps, floors->i8_gmacs, floors->bf16_gmacs,
                   floors->f32_gmacs, floors->seconds);
    // Context-major, so that the rows of one context run close together in time.
    for (uint64_t n : *ctx) {
      for (Kind k : *kinds) {
        Timer t;
        auto row = run_layer(*models, k, n, rep.floors, pool, rep.options);
        if (!row.ok()) return report_error(row.status());
        if (lines)
          std::fprintf(
              stderr, "bench: %s @ %s: decode %.3f ms (floor %.3f ms)%s, %.1f s\n", kind_name(k),
              format_count(n).c_str(), row->decode.mean * 1e3, row->decode_floor.max() * 1e3,
              row->has_prefill
                  ? fmt::format(", prefill {:.0f} t/s",
                                static_cast<double>(row->prefill_tokens) / row->prefill.mean)
                        .c_str()
                  : "",
              t.seconds());
        rep.rows.push_back(std::move(*row));
      }
    }
    std::stable_sort(rep.rows.begin(), rep.rows.end(), [](const LayerRow& a, const LayerRow& b) {
      return static_cast<int>(a.kind) < static_cast<int>(b.kind);
    });
    rep.weights = active_weight_bytes(models->flash);
    derive(rep, *models);
    finish_run_info(rep.info);
    reports.push_back(std::move(rep));
  }
  const LayerReport& rep = reports.back();  // the plot, and the whole output when --runs 1

  if (!o.plot.empty()) {
    const std::string svg = to_svg(rep);
    Status st =
        write_file_atomic(o.plot, {reinterpret_cast<const uint8_t*>(svg.data()), svg.size()});
    if (!st.ok()) return report_error(st.with_context("--plot"));
  }
  if (reports.size() > 1) {
    if (o.json)
      write_out(runs_json_text(reports));
    else if (o.csv)
      write_out(runs_csv(reports));
    else
      write_out(runs_table(reports));
    if (!o.json && !o.csv && !o.plot.empty())
      write_out(fmt::format("plot (the last run) written to {}\n", o.plot));
  } else if (o.json)
    write_out(to_json_text(rep));
  else if (o.csv)
    write_out(to_csv(rep));
  else {
    write_out(to_table(rep));
    if (!o.plot.empty()) write_out(fmt::format("plot written to {}\n", o.plot));
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// ------------------------------------------------------------------------------ model mode

struct ModelRow {
  uint64_t ctx = 0, new_tokens = 0;
  Stat prefill;  // seconds for the new tokens, per rep
  Stat decode;   // seconds per decoded token, all reps
  int decode_tokens = 0;
};

// Deterministic pseudo-random token ids in [0, vocab).
std::vector<int32_t> token_ids(uint64_t first, uint64_t n, int64_t vocab) {
  std::vector<int32_t> t(n);
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t x = (first + i + 1) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    t[i] = static_cast<int32_t>(x % static_cast<uint64_t>(vocab));
  }
  return t;
}

int run_model(const Options& o) {
  if (!o.layers.empty())
    return report_error(invalid_argument("--layer and --model are mutually exclusive"));
  if (!o.plot.empty()) return report_error(invalid_argument("--plot needs layer mode (--layer)"));
  if (o.runs != 1)
    return report_error(invalid_argument(
        "--runs needs layer mode (--layer); model mode repeats each figure --reps times"));
  if (o.decode_tokens < 1 || o.decode_tokens > 100000)
    return report_error(
        invalid_argument(fmt::format("--decode must be in [1, 100000] (got {})", o.decode_tokens)));
  auto ctx = parse_contexts(o.ctx.empty() ? kDefaultModelCtx : o.ctx);
  if (!ctx.ok()) return report_error(ctx.status());
  auto scheme = kv::parse_scheme(o.scheme);
  if (!scheme.ok()) return report_error(scheme.status().with_context("--scheme"));
  auto loaded = model::Model::load(o.model);
  if (!loaded.ok()) return report_error(loaded.status());
  const model::Model& m = **loaded;
  const formats::ModelConfig& cfg = m.config();
  const uint64_t max_ctx = static_cast<uint64_t>(cfg.max_position_embeddings);
  if (ctx->back() + static_cast<uint64_t>(o.decode_tokens) > max_ctx)
    return report_error(
        invalid_argument(fmt::format("--ctx: {} + --decode {} exceeds max_position_embeddings {}",
                                     ctx->back(), o.decode_tokens, max_ctx)));
  {
    auto probe = m.new_sequence(*scheme);
    if (!probe.ok()) return report_error(probe.status().with_context("--scheme"));
    auto kvl = kv::make_layout(cfg, *scheme);
    if (kvl.ok()) {
      auto b = kv::context_bytes(*kvl, ctx->back() + static_cast<uint64_t>(o.decode_tokens));
      const uint64_t avail = mem_available_bytes();
      if (b.ok() && avail > 0 && b->total() + (uint64_t{512} << 20) > avail)
        return report_error(
            out_of_memory(fmt::format("bench: a {}-token KV cache needs {}; {} is available",
                                      ctx->back(), format_bytes(static_cast<double>(b->total())),
                                      format_bytes(static_cast<double>(avail)))));
    }
  }

  ThreadPool pool(o.threads, o.pin);
  RunInfo info = collect_run_info(pool.num_threads());
  info.pinned = pool.pinned();
  auto floors = measure_floors(pool);
  if (!floors.ok()) return report_error(floors.status());
  const bool lines = progress_lines(o);
  if (lines)
    std::fprintf(stderr, "bench: floors on %d threads: DRAM %.1f GB/s (%.1f s)\n",
                 pool.num_threads(), floors->dram_gbps, floors->seconds);
  const WeightBytes weights = active_weight_bytes(cfg);
  const double floor_s = floors->dram_gbps > 0 ? weights.total / (floors->dram_gbps * 1e9) : 0;
  std::vector<float> logits(static_cast<size_t>(cfg.vocab_size));

  // Warm-up: page in the weights (mmap) on a throwaway sequence.
  for (int w = 0; w < o.warmup; ++w) {
    auto st = m.new_sequence(*scheme);
    if (!st.ok()) return report_error(st.status());
    const auto ids = token_ids(1u << 30, 16, cfg.vocab_size);
    Status s = m.forward(ids, *st, pool, logits.data(), false);
    for (int d = 0; s.ok() && d < 2; ++d)
      s = m.forward({&ids[d], 1}, *st, pool, logits.data(), false);
    if (!s.ok()) return report_error(s);
  }

  std::vector<ModelRow> rows(ctx->size());
  std::vector<std::vector<double>> prefill_s(ctx->size()), decode_s(ctx->size());
  for (int r = 0; r < o.reps; ++r) {
    auto st = m.new_sequence(*scheme);
    if (!st.ok()) return report_error(st.status());
    uint64_t prev = 0;
    for (size_t c = 0; c < ctx->size(); ++c) {
      const uint64_t n = (*ctx)[c];
      const auto ids = token_ids(prev, n - prev, cfg.vocab_size);
      if (lines) {
        std::fprintf(stderr, "%sbench: rep %d/%d: prefill %s -> %s, decode %lld%s",
                     stderr_is_tty() ? "\r" : "", r + 1, o.reps, format_count(prev).c_str(),
                     format_count(n).c_str(), static_cast<long long>(o.decode_tokens),
                     stderr_is_tty() ? "   " : "\n");
        std::fflush(stderr);
      }
      Timer t;
      Status s = m.forward(ids, *st, pool, logits.data(), false);
      if (!s.ok()) return report_error(s);
      prefill_s[c].push_back(t.seconds());
      const auto dec =
          token_ids(n + (1u << 28), static_cast<uint64_t>(o.decode_tokens), cfg.vocab_size);
      for (int32_t id : dec) {
        Timer td;
        s = m.forward({&id, 1}, *st, pool, logits.data(), false);
        if (!s.ok()) return report_error(s);
        decode_s[c].push_back(td.seconds());
      }
      // Back to the frontier, so the next one extends exactly n tokens (untimed).
      s = m.rewind(*st, static_cast<int64_t>(n), pool);
      if (!s.ok()) return report_error(s);
      rows[c].ctx = n;
      rows[c].new_tokens = n - prev;
      prev = n;
    }
  }
  if (lines && stderr_is_tty()) std::fputs("\n", stderr);
  for (size_t c = 0; c < rows.size(); ++c) {
    rows[c].prefill = stat_of(prefill_s[c]);
    rows[c].decode = stat_of(decode_s[c]);
    rows[c].decode_tokens = static_cast<int>(o.decode_tokens);
  }
  finish_run_info(info);

  auto tps = [](double tokens, double s) { return s > 0 ? tokens / s : 0.0; };
  if (o.json) {
    using J = nlohmann::ordered_json;
    J root = json_document(
        "model",
        "model::Model::forward on a checkpoint: prefill = the tokens added to reach each "
        "context frontier (one forward() call, internal chunks); decode = single-token "
        "forward() calls at the frontier. decode floor = active weight bytes per token / DRAM "
        "read rate; ratio_to_floor = decode ms mean / that floor.");
    root["model"] = o.model;
    root["config"] = {{"model_type", cfg.model_type},
                      {"num_hidden_layers", cfg.num_hidden_layers},
                      {"hidden_size", cfg.hidden_size},
                      {"n_routed_experts", cfg.n_routed_experts},
                      {"vocab_size", cfg.vocab_size}};
    root["scheme"] = o.scheme;
    root["meta"] = to_json(info);
    root["floors"] = to_json(*floors);
    root["settings"] = {{"reps", o.reps},
                        {"warmup", o.warmup},
                        {"decode_tokens", o.decode_tokens},
                        {"contexts", *ctx}};
    root["weight_bytes_per_token"] = weights.total;
    J arr = J::array();
    for (const ModelRow& r : rows) {
      J j;
      j["context"] = r.ctx;
      j["prefill"] = {{"new_tokens", r.new_tokens},
                      {"seconds_mean", r.prefill.mean},
                      {"seconds_stddev", r.prefill.stddev},
                      {"tokens_per_s", tps(static_cast<double>(r.new_tokens), r.prefill.mean)},
                      {"tokens_per_s_best", tps(static_cast<double>(r.new_tokens), r.prefill.min)},
                      {"reps", r.prefill.n}};
      j["decode"] = {{"tokens", r.decode.n},
                     {"ms_mean", r.decode.mean * 1e3},
                     {"ms_stddev", r.decode.stddev * 1e3},
                     {"ms_min", r.decode.min * 1e3},
                     {"ms_max", r.decode.max * 1e3},
                     {"tokens_per_s", tps(1, r.decode.mean)}};
      j["decode_floor"] = {{"weight_bytes", weights.total}, {"memory_floor_ms", floor_s * 1e3}};
      j["ratio_to_floor"] = floor_s > 0 ? r.decode.mean / floor_s : 0.0;
      arr.push_back(j);
    }
    root["rows"] = arr;
    write_out(root.dump(2) + "\n");
  } else if (o.csv) {
    std::string s =
        "model,context,new_tokens,prefill_tokens_per_s_mean,prefill_seconds_stddev,"
        "decode_tokens,decode_ms_mean,decode_ms_stddev,decode_tokens_per_s,memory_floor_ms,"
        "ratio_to_floor,threads,kernel_isa,commit,compiler,cpu,dram_gbps,loadavg_start\n";
    for (const ModelRow& r : rows)
      s += fmt::format(
          "\"{}\",{},{},{:.3f},{:.6f},{},{:.6f},{:.6f},{:.3f},{:.6f},{:.4f},{},{},{},"
          "\"{}\",\"{}\",{:.2f},{}\n",
          o.model, r.ctx, r.new_tokens, tps(static_cast<double>(r.new_tokens), r.prefill.mean),
          r.prefill.stddev, r.decode.n, r.decode.mean * 1e3, r.decode.stddev * 1e3,
          tps(1, r.decode.mean), floor_s * 1e3, floor_s > 0 ? r.decode.mean / floor_s : 0.0,
          info.threads, info.isa, info.commit, info.compiler, info.cpu, floors->dram_gbps,
          info.loadavg_start);
    write_out(s);
  } else {
    std::string s = fmt::format(
        "dsv4 bench --model {}: {} layers, hidden {}, {} experts, scheme {}\n"
        "build: dsv4 {} commit {} · {} · {} · kernels {}\n"
        "machine: {} · {} threads · load {} (start) {} (end)\n"
        "floor: {:.3f} GB of active weights per token / DRAM {:.1f} GB/s = {:.2f} ms/token\n\n",
        o.model, cfg.num_hidden_layers, cfg.hidden_size, cfg.n_routed_experts, o.scheme,
        info.version, info.commit, info.compiler, info.build, info.isa, info.cpu, info.threads,
        info.loadavg_start, info.loadavg_end, weights.total / 1e9, floors->dram_gbps,
        floor_s * 1e3);
    s += fmt::format("{:>8}  {:>10}  {:>18}  {:>18}  {:>10}  {:>6}\n", "context", "new tokens",
                     "prefill t/s", "decode t/s", "decode ms", "ratio");
    for (const ModelRow& r : rows) {
      const double pt = tps(static_cast<double>(r.new_tokens), r.prefill.mean);
      const double psd = r.prefill.mean > 0 ? pt * r.prefill.stddev / r.prefill.mean : 0;
      const double dt = tps(1, r.decode.mean);
      const double dsd = r.decode.mean > 0 ? dt * r.decode.stddev / r.decode.mean : 0;
      s += fmt::format("{:>8}  {:>10}  {:>18}  {:>18}  {:>10.2f}  {:>6.2f}\n", format_count(r.ctx),
                       r.new_tokens, fmt::format("{:.1f} ± {:.1f}", pt, psd),
                       fmt::format("{:.2f} ± {:.2f}", dt, dsd), r.decode.mean * 1e3,
                       floor_s > 0 ? r.decode.mean / floor_s : 0.0);
    }
    s += fmt::format(
        "\nprefill: the tokens added to reach the context, one forward() call, mean ± sd over "
        "{} reps; decode: {} single-token calls at the context per rep; ratio = decode ms / "
        "floor.\n",
        o.reps, o.decode_tokens);
    write_out(s);
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// ------------------------------------------------------------------------------ command

int run(const Options& o) {
  if (Status s = check_common(o); !s.ok()) return report_error(s);
  if (!o.model.empty()) return run_model(o);
  return run_layers(o);
}

RunFn setup(CLI::App& app) {
  auto opt = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand(
      "bench",
      "Attention-layer and end-to-end speed (decode ms, prefill t/s) next to DRAM and dot-product "
      "floors measured in the same run");
  sub->add_option("--layer", opt->layers,
                  "layers to time: swa, csa, hca, mla (dense V3.2-style baseline), all; comma "
                  "list (default all)")
      ->type_name("LIST");
  sub->add_option("--ctx", opt->ctx,
                  "context lengths, comma separated; K/M = 1024^n (default 4K,64K; with "
                  "--model 512,2K)")
      ->type_name("LIST");
  sub->add_option("--reps", opt->reps, "timed repetitions per figure (default 5)");
  sub->add_option("--warmup", opt->warmup, "untimed repetitions first (default 1)");
  sub->add_option("--runs", opt->runs,
                  "layer mode: repeat the whole measurement (floors and rows) N times and "
                  "report medians and ranges over the runs, and each target as met in k of N "
                  "(default 1)");
  sub->add_option("--threads,-t", opt->threads, "worker threads (default: all hardware threads)");
  sub->add_flag("--pin,!--no-pin", opt->pin,
                "pin thread i to the i-th CPU this process may use (default on: --no-pin lets "
                "the scheduler move them)");
  sub->add_option("--prefill-tokens", opt->prefill_tokens,
                  "layer mode: tokens of the timed prefill chunk (default 64; 0: no prefill)");
  sub->add_flag("--warm-cache", opt->warm_cache,
                "layer mode: do not flush the last-level cache before each timed call");
  sub->add_flag("--json", opt->json, "one JSON document on stdout");
  sub->add_flag("--csv", opt->csv, "CSV on stdout");
  sub->add_option("--plot", opt->plot, "layer mode: write an SVG of decode ms vs context to FILE")
      ->type_name("FILE");
  sub->add_option("--model,-m", opt->model,
                  "model mode: a checkpoint directory (e.g. from `dsv4 synth`)")
      ->type_name("DIR");
  sub->add_option("--decode", opt->decode_tokens,
                  "model mode: tokens decoded at each context (default 16)");
  sub->add_flag("--verbose,-v", opt->verbose,
                "progress lines on stderr even when it is not a terminal");
  sub->add_option("--scheme", opt->scheme,
                  "model mode: KV storage, official or f32 (default "
                  "official)");
  return [opt, sub]() -> int {
    if (!sub->parsed()) return 0;
    return run(*opt);
  };
}

}  // namespace

DSV4_REGISTER_COMMAND(bench, 70, setup);

}  // namespace dsv4::cli
