// tools/dsv4/bench_layer.cpp — one attention layer on a synthetic cache (bench_layer.h).
#include "bench_layer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <span>
#include <string_view>

#include "base/aligned_buffer.h"
#include "base/timer.h"
#include "base/units.h"
#include "kernels/attention.h"
#include "kv/cache.h"
#include "kv/embedded_configs.h"
#include "kv/layout.h"
#include "model/attention_exec.h"
#include "model/model.h"
#include "model/tensor_table.h"
#include "text_ui.h"

namespace dsv4::cli::bench {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
// Memory kept free beyond a row's cache: the LLC evictor (96 MiB), activations, the OS.
constexpr uint64_t kHeadroom = 512 * kMiB;
// KV blocks of 2 MiB (one huge page each), as kv/cache.h recommends for long contexts.
constexpr uint64_t kBlockBytes = 2 * kMiB;

// xorshift64* in [-1, 1).
class Rng {
 public:
  explicit Rng(uint64_t seed) : x_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t bits() {
    x_ ^= x_ >> 12;
    x_ ^= x_ << 25;
    x_ ^= x_ >> 27;
    return x_ * 0x2545F4914F6CDD1Dull;
  }
  float uniform() {
    return static_cast<float>(static_cast<double>(bits() >> 11) / 4503599627370496.0 - 1.0);
  }
  void fill(std::vector<float>& v, float lo = -1.f, float hi = 1.f) {
    for (float& x : v) x = lo + (uniform() + 1.f) * 0.5f * (hi - lo);
  }

 private:
  uint64_t x_;
};

// A live progress line on a terminal; nothing otherwise.
class Progress {
 public:
  explicit Progress(bool on) : on_(on && stderr_is_tty()) {}
  ~Progress() { clear(); }
  void show(const std::string& text) {
    if (!on_) return;
    std::fprintf(stderr, "\r%-78s", text.substr(0, 78).c_str());
    std::fflush(stderr);
    shown_ = true;
  }
  void clear() {
    if (!on_ || !shown_) return;
    std::fprintf(stderr, "\r%-78s\r", "");
    std::fflush(stderr);
    shown_ = false;
  }

 private:
  bool on_, shown_ = false;
};

std::string_view embedded_json(std::string_view name) {
  for (const kv::EmbeddedConfig& e : kv::embedded_configs())
    if (e.name == name) return e.json;
  return {};
}

// DeepSeek-V4-Flash reduced to one main layer of `kind` (its MTP layer kept as the file has it).
Result<formats::ModelConfig> one_layer_config(Kind kind) {
  const std::string_view text = embedded_json(kv::kDeepSeekV4Flash);
  if (text.empty()) return internal_error("bench: no embedded DeepSeek-V4-Flash config");
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return internal_error("bench: embedded V4-Flash config does not parse");
  DSV4_ASSIGN_OR_RETURN(formats::ModelConfig flash,
                        formats::parse_model_config(text, kv::kDeepSeekV4Flash));
  int64_t ratio = 0;
  if (kind == Kind::csa) ratio = flash.compress_rate_csa > 0 ? flash.compress_rate_csa : 4;
  if (kind == Kind::hca) ratio = flash.compress_rate_hca > 0 ? flash.compress_rate_hca : 128;
  // The ratios of the published file, not a guess: first CSA / HCA layer's entry.
  for (size_t l = 0; l < flash.layer_types.size(); ++l) {
    if (kind == Kind::csa &&
        flash.layer_types[l] == formats::AttentionType::compressed_sparse_attention) {
      ratio = flash.compress_ratios[l];
      break;
    }
    if (kind == Kind::hca &&
        flash.layer_types[l] == formats::AttentionType::heavily_compressed_attention) {
      ratio = flash.compress_ratios[l];
      break;
    }
  }
  j["num_hidden_layers"] = 1;
  j["num_hash_layers"] = 0;
  j["compress_ratios"] = nlohmann::json::array({ratio, 0});
  return formats::parse_model_config(j.dump(),
                                     fmt::format("DeepSeek-V4-Flash ({} layer)", kind_name(kind)));
}

struct CacheRecords {
  std::vector<const uint8_t*> window, entries, keys;
  model::LayerRecords recs;
  uint64_t pointer_bytes() const {
    return (window.capacity() + entries.capacity() + keys.capacity()) * sizeof(const uint8_t*);
  }
};

Status collect_records(const kv::SequenceCache& c, const model::AttnLayerShape& shape,
                       CacheRecords& r) {
  const int64_t n = c.n_tokens(), W = static_cast<int64_t>(shape.window);
  // The ring is one block: slot 0 is the position p % W == 0 among the last W written.
  const int64_t p0 = (n - 1) / W * W;
  r.window.assign(1, c.window_record(0, p0));
  r.recs.window = {r.window.data(), shape.window, shape.record_bytes(), shape.window};
  if (shape.ratio > 0) r.recs.entries = model::record_runs(c, 0, false, r.entries);
  if (shape.indexer) r.recs.index_keys = model::record_runs(c, 0, true, r.keys);
  return ok_status();
}

std::string count_text(uint64_t n) {
  const std::string d = std::to_string(n);
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && (d.size() - i) % 3 == 0) s.push_back(',');
    s.push_back(d[i]);
  }
  return s;
}

Status check_memory(uint64_t need, const std::string& what) {
  const uint64_t avail = mem_available_bytes();
  if (avail > 0 && need + kHeadroom > avail)
    return out_of_memory(fmt::format(
        "bench: {} needs {} of memory and only {} is available (lower --ctx or drop this "
        "--layer)",
        what, format_bytes(static_cast<double>(need)), format_bytes(static_cast<double>(avail))));
  return ok_status();
}

volatile float g_touch = 0;

// Reads one float per cache line of every span, split over the pool's threads.
void touch_on_pool(std::span<const std::span<const float>> hot, ThreadPool& pool) {
  size_t lines = 0;
  for (std::span<const float> v : hot) lines += (v.size() + 15) / 16;
  if (lines == 0) return;
  std::vector<float> sums(static_cast<size_t>(pool.num_threads()), 0.f);
  pool.parallel_for(0, lines, 64, [&](size_t b, size_t e, int ti) {
    float sum = 0.f;
    size_t first = 0;  // line index of the current span's first line
    for (std::span<const float> v : hot) {
      const size_t n = (v.size() + 15) / 16;
      for (size_t i = std::max(b, first); i < std::min(e, first + n); ++i)
        sum += v[(i - first) * 16];
      first += n;
    }
    sums[static_cast<size_t>(ti)] += sum;
  });
  float sum = 0.f;
  for (float x : sums) sum += x;
  g_touch = g_touch + sum;
}

// Times `fn` warmup + reps times (flushing the LLC first when cold, then reading the `hot`
// inputs back in); returns the timed reps. With `states`, a KernelStateProbe reading of one
// piece is taken after every timed call (outside the timing; the next rep flushes the cache
// anyway).
template <typename Fn>
std::vector<double> time_reps(const LayerOptions& opt, ThreadPool& pool, double* steal,
                              std::span<const std::span<const float>> hot, Fn&& fn,
                              std::vector<double>* states = nullptr) {
  const double steal0 = steal_seconds();
  std::vector<double> s;
  for (int i = 0; i < opt.warmup + opt.reps; ++i) {
    if (opt.cold && opt.evictor) {
      opt.evictor->evict(pool);
      // The layer's inputs were just written by its projections, a parallel op on the same
      // pool, so in a real decode step they are in cache and the workers are awake (spinning)
      // when the attention starts: read them back in on the pool (the KV cache and every
      // buffer of the exec stay cold). Read by the caller alone, after the evictor's last
      // chunk, a worker had sometimes spun out and gone to sleep: 3-40 % of SWA reps then paid
      // a wake-up of ~40 us (0.13 instead of 0.09 ms), which no decode step pays.
      touch_on_pool(hot, pool);
    }
    Timer t;
    fn();
    const double sec = t.seconds();
    if (i >= opt.warmup) {
      s.push_back(sec);
      // One warm-up piece first: the timed call may have evicted the probe's keys.
      if (states && opt.state) states->push_back(opt.state->reading(pool, 1));
    }
  }
  *steal += steal_seconds() - steal0;
  return s;
}

// ---------------------------------------------------------------------------- V4 layers

Result<LayerRow> run_v4(Kind kind, uint64_t ctx, const Floors& floors, ThreadPool& pool,
                        const LayerOptions& opt) {
  DSV4_ASSIGN_OR_RETURN(formats::ModelConfig cfg, one_layer_config(kind));
  const model::AttnLayerShape shape = model::AttnLayerShape::of_layer(cfg, 0);
  DSV4_ASSIGN_OR_RETURN(kv::KvLayout layout, kv::make_layout(cfg, kv::Scheme::official));
  DSV4_ASSIGN_OR_RETURN(kv::KvBytes bytes, kv::layer_bytes(layout.layers[0], ctx));

  LayerRow row;
  row.kind = kind;
  row.ctx = ctx;
  row.kv_bytes = bytes.total();
  const std::string name = fmt::format("{} @ {}", kind_name(kind), format_count(ctx));
  DSV4_RETURN_IF_ERROR(
      check_memory(bytes.total() + 4 * kBlockBytes, fmt::format("{}'s cache", name)));

  // The cache: ctx tokens of synthetic rows through the model's write path.
  auto kvpool = std::make_shared<kv::BlockPool>();
  kv::CacheOptions co;
  co.block_bytes = kBlockBytes;
  co.checkpoint_interval = 0;
  DSV4_ASSIGN_OR_RETURN(kv::SequenceCache cache,
                        kv::SequenceCache::create(cfg, kv::Scheme::official, kvpool, co));
  Progress progress(opt.progress);
  Timer fill;
  constexpr int64_t kFillStep = 1 << 15;
  for (int64_t n0 = 0; n0 < static_cast<int64_t>(ctx); n0 += kFillStep) {
    const int64_t n1 = std::min<int64_t>(static_cast<int64_t>(ctx), n0 + kFillStep);
    progress.show(fmt::format("bench: {}: filling the cache {} / {} tokens", name,
                              count_text(static_cast<uint64_t>(n0)), count_text(ctx)));
    DSV4_RETURN_IF_ERROR(kv::fill_synthetic(cache, n0, n1, 1 + static_cast<uint64_t>(kind)));
  }
  row.fill_seconds = fill.seconds();
  CacheRecords cr;
  DSV4_RETURN_IF_ERROR(collect_records(cache, shape, cr));

  const size_t H = shape.n_heads, hd = shape.head_dim(), ih = shape.index_n_heads,
               ihd = shape.index_head_dim;
  const size_t T = std::min<size_t>(opt.prefill_tokens, ctx);
  Rng rng(7 + static_cast<uint64_t>(kind));
  std::vector<float> q(std::max<size_t>(T, 1) * H * hd), iq(std::max<size_t>(T, 1) * ih * ihd),
      wts(std::max<size_t>(T, 1) * ih), sink(H), out(H * hd);
  rng.fill(q);
  rng.fill(iq);
  rng.fill(wts, 0.f, 1.f);
  rng.fill(sink);

  // Decode: the token at position ctx - 1.
  const int64_t pos = static_cast<int64_t>(ctx) - 1;
  model::AttentionExec exec;
  exec.reserve(shape, 1, static_cast<int64_t>(ctx), pool.num_threads());
  const size_t W = shape.window, kk = shape.index_topk;
  const uint64_t e = shape.visible_entries(pos);
  const uint64_t sel = shape.indexer ? std::min<uint64_t>(kk, e) : e;
  row.entries = e;
  row.keys_attended = std::min<uint64_t>(ctx, W) + sel;
  {
    Work& w = row.decode_work;
    w.bytes = static_cast<double>(row.keys_attended * shape.record_bytes());
    if (shape.indexer && e > kk) {
      w.bytes += static_cast<double>(e * shape.index_key_bytes());
      w.i8_macs = static_cast<double>(e) * static_cast<double>(ih * ihd);
    }
    w.bf16_macs = w.f32_macs = static_cast<double>(H * hd) * static_cast<double>(row.keys_attended);
    row.decode_floor = floor_times(w, floors);
  }
  progress.show(fmt::format("bench: {}: decode x {}", name, opt.warmup + opt.reps));
  const float* iqp = shape.indexer ? iq.data() : nullptr;
  const float* wtp = shape.indexer ? wts.data() : nullptr;
  const std::span<const float> decode_in[] = {{q.data(), H * hd},
                                              {iq.data(), shape.indexer ? ih * ihd : 0},
                                              {wts.data(), shape.indexer ? ih : 0}};
  std::vector<double> readings;
  row.decode = stat_of(time_reps(
      opt, pool, &row.steal_seconds, decode_in,
      [&] { exec.decode(shape, cr.recs, pos, q.data(), iqp, wtp, sink.data(), out.data(), pool); },
      &readings));
  row.indexer_kernel_gmacs = median_of(std::move(readings));
  row.huge_page_bytes = anon_huge_page_bytes();
  uint64_t transient = exec.workspace_bytes();

  // Prefill: the chunk [ctx - T, ctx).
  if (T > 0) {
    row.has_prefill = true;
    row.prefill_tokens = T;
    const int64_t p0 = static_cast<int64_t>(ctx - T);
    exec.reserve(shape, T, static_cast<int64_t>(ctx), pool.num_threads());
    Work& w = row.prefill_work;
    const uint64_t e_last = shape.visible_entries(static_cast<int64_t>(ctx) - 1);
    bool scored = false;
    for (size_t t = 0; t < T; ++t) {
      const int64_t p = p0 + static_cast<int64_t>(t);
      const uint64_t ep = shape.visible_entries(p);
      const uint64_t sp = shape.indexer ? std::min<uint64_t>(kk, ep) : ep;
      const uint64_t keys = std::min<uint64_t>(static_cast<uint64_t>(p) + 1, W) + sp;
      if (shape.indexer && ep > kk) {
        w.i8_macs += static_cast<double>(ep) * static_cast<double>(ih * ihd);
        scored = true;
      }
      w.bf16_macs += static_cast<double>(H * hd) * static_cast<double>(keys);
    }
    w.f32_macs = w.bf16_macs;
    // Bytes: the keys once (queries share key tiles), each entry at most once, the window.
    const uint64_t distinct = shape.indexer ? std::min<uint64_t>(e_last, T * kk) : e_last;
    w.bytes = static_cast<double>((std::min<uint64_t>(ctx, W) + distinct) * shape.record_bytes());
    if (scored) w.bytes += static_cast<double>(e_last * shape.index_key_bytes());
    row.prefill_floor = floor_times(w, floors);
    progress.show(fmt::format("bench: {}: prefill {} tokens x {}", name, T, opt.warmup + opt.reps));
    const std::span<const float> prefill_in[] = {{q.data(), T * H * hd},
                                                 {iq.data(), shape.indexer ? T * ih * ihd : 0},
                                                 {wts.data(), shape.indexer ? T * ih : 0}};
    row.prefill = stat_of(time_reps(opt, pool, &row.steal_seconds, prefill_in, [&] {
      if (shape.indexer)
        exec.select_chunk(shape, cr.recs.index_keys, p0, T, iq.data(), wts.data(), pool);
      for (size_t t = 0; t < T; ++t)
        exec.attend_token(shape, cr.recs, p0 + static_cast<int64_t>(t), q.data() + t * H * hd,
                          shape.indexer ? exec.selected(t) : std::span<const int32_t>{},
                          sink.data(), out.data(), pool);
    }));
    transient = std::max(transient, exec.workspace_bytes());
  }
  row.transient_bytes = transient + cr.pointer_bytes();
  return row;
}

// ---------------------------------------------------------------------------- MLA baseline

struct MlaShape {
  size_t n_heads = 0, key_dim = 0, value_dim = 0;
  float scale = 0;
};

MlaShape mla_shape(const formats::ModelConfig& v32) {
  MlaShape s;
  s.n_heads = static_cast<size_t>(v32.num_attention_heads);
  s.key_dim = static_cast<size_t>(v32.kv_lora_rank + v32.qk_rope_head_dim);
  s.value_dim = static_cast<size_t>(v32.kv_lora_rank);
  // The absorbed query has qk_nope + qk_rope dims of the original head.
  s.scale = static_cast<float>(
      1.0 / std::sqrt(static_cast<double>(v32.qk_nope_head_dim + v32.qk_rope_head_dim)));
  return s;
}

// Fixed key blocks (>= 64 keys, <= 16), every head in one work item so each latent is read once.
constexpr size_t kMlaMinBlockKeys = 64, kMlaMaxBlocks = 16;

Result<LayerRow> run_mla(const formats::ModelConfig& v32, uint64_t ctx, const Floors& floors,
                         ThreadPool& pool, const LayerOptions& opt) {
  const MlaShape s = mla_shape(v32);
  LayerRow row;
  row.kind = Kind::mla;
  row.ctx = ctx;
  row.entries = ctx;
  row.keys_attended = ctx;
  row.kv_bytes = ctx * s.key_dim * 2;
  const std::string name = fmt::format("mla @ {}", format_count(ctx));
  DSV4_RETURN_IF_ERROR(check_memory(row.kv_bytes, fmt::format("{}'s latent cache", name)));

  Progress progress(opt.progress);
  Timer fill;
  progress.show(fmt::format("bench: {}: filling {} of bf16 latents", name,
                            format_bytes(static_cast<double>(row.kv_bytes))));
  AlignedBuffer lat(row.kv_bytes);
  {
    // Finite bf16 values of moderate size: sign, exponent 2^-7..2^0, random mantissa.
    Rng rng(11);
    uint16_t* h = lat.as<uint16_t>();
    const size_t n = ctx * s.key_dim;
    for (size_t i = 0; i + 4 <= n; i += 4) {
      const uint64_t b = rng.bits();
      for (size_t k = 0; k < 4; ++k) {
        const auto v = static_cast<uint16_t>(b >> (16 * k));
        h[i + k] = static_cast<uint16_t>((v & 0x807F) | (0x3C00 + ((v >> 7 & 7) << 7)));
      }
    }
  }
  row.fill_seconds = fill.seconds();

  std::vector<float> q(s.n_heads * s.key_dim), out(s.n_heads * s.value_dim);
  Rng rng(13);
  rng.fill(q);
  const size_t n_blocks =
      std::clamp<size_t>((ctx + kMlaMinBlockKeys - 1) / kMlaMinBlockKeys, 1, kMlaMaxBlocks);
  const size_t block = (ctx + n_blocks - 1) / n_blocks;
  std::vector<kernels::AttnState> states(n_blocks);
  for (auto& st : states) st.reset(s.n_heads, s.value_dim);
  std::vector<kernels::AttnScratch> scratch(static_cast<size_t>(pool.num_threads()));
  const uint16_t* latents = lat.as<uint16_t>();
  auto step = [&] {
    pool.parallel_for(0, n_blocks, 1, [&](size_t b0, size_t b1, int ti) {
      for (size_t b = b0; b < b1; ++b) {
        const size_t k0 = b * block, kn = k0 < ctx ? std::min<size_t>(block, ctx - k0) : 0;
        states[b].reset(s.n_heads, s.value_dim);
        kernels::attend_mla_bf16(q.data(), s.n_heads, s.key_dim, s.value_dim,
                                 latents + k0 * s.key_dim, kn, s.scale, states[b],
                                 &scratch[static_cast<size_t>(ti)]);
      }
    });
    for (size_t b = 1; b < n_blocks; ++b) kernels::attn_state_merge(states[0], states[b]);
    kernels::attn_state_finish(states[0], nullptr, out.data());
  };
  Work& w = row.decode_work;
  w.bytes = static_cast<double>(row.kv_bytes);
  w.bf16_macs = static_cast<double>(s.n_heads * s.key_dim) * static_cast<double>(ctx);
  w.f32_macs = static_cast<double>(s.n_heads * s.value_dim) * static_cast<double>(ctx);
  row.decode_floor = floor_times(w, floors);
  progress.show(fmt::format("bench: {}: decode x {}", name, opt.warmup + opt.reps));
  const std::span<const float> decode_in[] = {q};
  std::vector<double> readings;
  row.decode = stat_of(time_reps(opt, pool, &row.steal_seconds, decode_in, step, &readings));
  row.indexer_kernel_gmacs = median_of(std::move(readings));
  row.huge_page_bytes = anon_huge_page_bytes();
  uint64_t transient = 0;
  for (const auto& st : states)
    transient += (st.m.capacity() + st.l.capacity() + st.acc.capacity()) * sizeof(float);
  for (const auto& sc : scratch) transient += sc.bytes.capacity();
  row.transient_bytes = transient;
  return row;
}

}  // namespace

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::swa:
      return "swa";
    case Kind::csa:
      return "csa";
    case Kind::hca:
      return "hca";
    case Kind::mla:
      return "mla";
  }
  return "?";
}

const char* kind_label(Kind k) {
  switch (k) {
    case Kind::swa:
      return "SWA";
    case Kind::csa:
      return "CSA";
    case Kind::hca:
      return "HCA";
    case Kind::mla:
      return "MLA (dense, V3.2-style)";
  }
  return "?";
}

Stat stat_of(const std::vector<double>& v) {
  Stat s;
  s.n = static_cast<int>(v.size());
  if (v.empty()) return s;
  double sum = 0;
  s.min = s.max = v[0];
  for (double x : v) {
    sum += x;
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
  }
  s.mean = sum / static_cast<double>(v.size());
  std::vector<double> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  const size_t mid = sorted.size() / 2;
  s.median = sorted.size() % 2 ? sorted[mid] : 0.5 * (sorted[mid - 1] + sorted[mid]);
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.stddev = std::sqrt(ss / static_cast<double>(v.size() - 1));
  }
  return s;
}

FloorTimes floor_times(const Work& w, const Floors& f) {
  FloorTimes t;
  if (f.dram_gbps > 0) t.memory_s = w.bytes / (f.dram_gbps * 1e9);
  if (f.i8_gmacs > 0) t.compute_s += w.i8_macs / (f.i8_gmacs * 1e9);
  if (f.bf16_gmacs > 0) t.compute_s += w.bf16_macs / (f.bf16_gmacs * 1e9);
  if (f.f32_gmacs > 0) t.compute_s += w.f32_macs / (f.f32_gmacs * 1e9);
  return t;
}

nlohmann::ordered_json to_json(const Work& w, const FloorTimes& t) {
  nlohmann::ordered_json j;
  j["dram_bytes"] = w.bytes;
  j["int8_macs"] = w.i8_macs;
  j["bf16_macs"] = w.bf16_macs;
  j["f32_macs"] = w.f32_macs;
  j["memory_floor_ms"] = t.memory_s * 1e3;
  j["compute_floor_ms"] = t.compute_s * 1e3;
  j["floor_ms"] = t.max() * 1e3;
  j["bound"] = t.bound();
  return j;
}

Result<BenchModels> load_bench_models() {
  BenchModels m;
  DSV4_ASSIGN_OR_RETURN(m.flash, kv::load_embedded_config(kv::kDeepSeekV4Flash));
  DSV4_ASSIGN_OR_RETURN(m.v32, kv::load_embedded_config(kv::kDeepSeekV32));
  return m;
}

uint64_t layer_cache_bytes(const BenchModels& m, Kind kind, uint64_t ctx) {
  if (kind == Kind::mla)
    return ctx * static_cast<uint64_t>(m.v32.kv_lora_rank + m.v32.qk_rope_head_dim) * 2;
  auto cfg = one_layer_config(kind);
  if (!cfg.ok()) return 0;
  auto layout = kv::make_layout(*cfg, kv::Scheme::official);
  if (!layout.ok()) return 0;
  auto b = kv::layer_bytes(layout->layers[0], ctx);
  return b.ok() ? b->total() : 0;
}

Result<LayerRow> run_layer(const BenchModels& m, Kind kind, uint64_t ctx, const Floors& floors,
                           ThreadPool& pool, const LayerOptions& opt) {
  // V4-Flash's limit for every kind: the MLA baseline is evaluated at V4's contexts.
  if (ctx < 1 || ctx > static_cast<uint64_t>(m.flash.max_position_embeddings))
    return invalid_argument(
        fmt::format("--ctx: {} is outside [1, {}] (max_position_embeddings of DeepSeek-V4-Flash)",
                    ctx, m.flash.max_position_embeddings));
  if (kind == Kind::mla) return run_mla(m.v32, ctx, floors, pool, opt);
  return run_v4(kind, ctx, floors, pool, opt);
}

// ---------------------------------------------------------------------------- weights

WeightBytes active_weight_bytes(const formats::ModelConfig& c) {
  // Storage classes of the official checkpoint (model/synth.h): FP8 e4m3 + one ue8m0 byte per
  // 128x128 block for attention wq_a/wq_b/wkv/wo_a/wo_b, indexer wq_b and the shared experts;
  // FP4 e2m1 (half a byte) + one ue8m0 byte per 32 inputs for routed experts; BF16 for embed,
  // head, ffn.gate and compressor/indexer projections; vectors F32 (hc_*, sinks, ape, gate bias)
  // or BF16 (norm weights). Per token: every tensor once, except the embedding (one row),
  // tid2eid (one row of I64) and routed experts (num_experts_per_tok of n_routed_experts).
  auto ends = [](const std::string& s, std::string_view suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  auto has = [](const std::string& s, std::string_view part) {
    return s.find(part) != std::string::npos;
  };
  double attn = 0, comp = 0, router = 0, shared = 0, routed = 0, hc = 0, embed_head = 0;
  const double frac_routed = c.n_routed_experts > 0 ? static_cast<double>(c.num_experts_per_tok) /
                                                          static_cast<double>(c.n_routed_experts)
                                                    : 0;
  for (const model::TensorSpec& t : model::tensor_table(c)) {
    double n = 1;
    for (int64_t d : t.shape) n *= static_cast<double>(d);
    const std::string& nm = t.name;
    double b = 0;
    if (t.storage == model::StorageClass::index) {
      b = static_cast<double>(t.shape.back()) * 8;  // one row of tid2eid
      router += b;
      continue;
    }
    if (t.storage == model::StorageClass::vector) {
      const bool f32 = nm.rfind("hc_", 0) == 0 || has(nm, ".hc_") || ends(nm, ".attn_sink") ||
                       ends(nm, ".ape") || ends(nm, ".gate.bias");
      b = n * (f32 ? 4 : 2);
      if (has(nm, "compressor") || has(nm, "indexer"))
        comp += b;
      else if (ends(nm, ".gate.bias"))
        router += b;
      else
        hc += b;  // hyper-connections, norms, sinks
      continue;
    }
    const double rows = static_cast<double>(t.shape[0]), cols = static_cast<double>(t.shape[1]);
    const bool is_routed = has(nm, ".ffn.experts."), is_shared = has(nm, ".ffn.shared_experts.");
    const bool f8 = is_shared || ends(nm, ".attn.wq_a.weight") || ends(nm, ".attn.wq_b.weight") ||
                    ends(nm, ".attn.wkv.weight") || ends(nm, ".attn.wo_a.weight") ||
                    ends(nm, ".attn.wo_b.weight") || ends(nm, ".indexer.wq_b.weight");
    if (is_routed) {
      b = (rows * std::ceil(cols / 2) + rows * std::ceil(cols / 32)) * frac_routed;
      routed += b;
    } else if (f8) {
      b = rows * cols + std::ceil(rows / 128) * std::ceil(cols / 128);
      if (is_shared)
        shared += b;
      else if (has(nm, "indexer"))
        comp += b;
      else
        attn += b;
    } else if (nm == "embed.weight") {
      embed_head += cols * 2;  // one row
    } else if (nm == "head.weight") {
      embed_head += n * 2;
    } else if (has(nm, "compressor") || has(nm, "indexer")) {
      comp += n * 2;
    } else {
      router += n * 2;  // ffn.gate.weight
    }
  }
  WeightBytes w;
  w.parts = {{"attention projections (FP8)", attn},
             {"compressors + indexer (BF16/FP8)", comp},
             {"router (BF16)", router},
             {"shared expert (FP8)", shared},
             {fmt::format("routed experts, {} of {} per layer (FP4)", c.num_experts_per_tok,
                          c.n_routed_experts),
              routed},
             {"hyper-connections, norms, sinks (F32/BF16)", hc},
             {"embedding row + output head (BF16)", embed_head}};
  for (const auto& p : w.parts) w.total += p.second;
  return w;
}

}  // namespace dsv4::cli::bench
