// tools/dsv4/bench_layer.h — `dsv4 bench --layer`: one attention layer at real DeepSeek-V4-Flash
// dimensions (embedded config.json) on a synthetic filled KV cache, and the dense-MLA baseline.
//
// Scope of a V4 row (what is timed): the attention of one layer on its cache, as
// model::AttentionExec runs it for the model — CSA: FP4 lightning-indexer scoring of every
// visible compressed entry + exact top-k (index_topk 512) + attention over the 128-token window
// and the selected entries; HCA: attention over the window and every entry; SWA: the window
// only. Records are read in place from a kv::SequenceCache in the `official` scheme (584 B FP8
// KV entries, 68 B FP4 indexer keys; 2 MiB blocks) filled by kv::fill_synthetic. Not timed: the
// layer's linear projections (q, kv, indexer q, output: weight streaming, see gemv_bench and the
// weight-streaming floor), RoPE, and the per-token compressor update (not part of the exec API;
// one pooled row per token, negligible next to the attention at long context).
// Context N: the cache holds N tokens; decode = the token at position N-1 (it attends to
// min(N, 128) window rows and N / ratio entries); prefill = the chunk of the last T tokens,
// positions [N-T, N), with select_chunk for all T queries then attend_token per token.
// Cold: before every timed call the last-level cache is flushed (bench_env.h CacheEvictor), as
// in a model where the other 42 layers and ~11 GB of weights pass between two visits of a layer.
//
// MLA row (baseline): DeepSeek-V3.2-style dense MLA decode, no indexer — 128 heads over N bf16
// latents of 576 dims (512 latent + 64 RoPE; value = the 512 latent dims), the absorbed form of
// kernels::attend_mla_bf16, split over the ThreadPool in fixed key blocks and merged. The cache
// is one contiguous buffer (the best case for MLA). The V3.2 model has 61 such layers.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/thread_pool.h"
#include "bench_env.h"
#include "formats/model_config.h"

namespace dsv4::cli::bench {

enum class Kind { swa, csa, hca, mla };
const char* kind_name(Kind k);   // "swa", "csa", "hca", "mla"
const char* kind_label(Kind k);  // "SWA", "CSA", "HCA", "MLA (dense, V3.2-style)"

// Mean, standard deviation (n - 1), min and max of timed repetitions, in seconds.
struct Stat {
  double mean = 0, stddev = 0, min = 0, max = 0;
  double median = 0;  // robust to the odd preempted rep on a shared machine
  int n = 0;
};
Stat stat_of(const std::vector<double>& seconds);

// The work a floor is computed from: bytes that must come from DRAM and multiply-accumulates
// by instruction class (int8: indexer dot products; bf16: QK with the bf16 query; f32: PV with
// the f32 softmax weights).
struct Work {
  double bytes = 0, i8_macs = 0, bf16_macs = 0, f32_macs = 0;
};
struct FloorTimes {
  double memory_s = 0, compute_s = 0;
  double max() const { return memory_s > compute_s ? memory_s : compute_s; }
  const char* bound() const { return memory_s > compute_s ? "memory" : "compute"; }
};
FloorTimes floor_times(const Work& w, const Floors& f);
nlohmann::ordered_json to_json(const Work& w, const FloorTimes& t);

struct LayerOptions {
  int reps = 5;
  int warmup = 1;
  size_t prefill_tokens = 64;         // T; 0: no prefill rows
  bool cold = true;                   // flush the LLC before every timed call
  bool progress = true;               // live progress on stderr (a terminal)
  CacheEvictor* evictor = nullptr;    // used when cold
  KernelStateProbe* state = nullptr;  // sampled after every timed decode call when set
};

struct LayerRow {
  Kind kind = Kind::csa;
  uint64_t ctx = 0;
  uint64_t entries = 0;          // CSA/HCA: visible compressed entries at the decode position
  uint64_t keys_attended = 0;    // per head at the decode position (window + selected/entries)
  uint64_t kv_bytes = 0;         // this layer's cache for ctx tokens (kv/layout.h, all parts)
  uint64_t transient_bytes = 0;  // peak workspace of the attention (exec + record pointers)
  double fill_seconds = 0;       // building the synthetic cache (not part of any figure)
  uint64_t huge_page_bytes = 0;  // process AnonHugePages after the decode reps (TLB reach)
  double steal_seconds = 0;      // hypervisor steal during the row's timed calls (all vCPUs)
  Stat decode;                   // seconds per decode step
  Work decode_work;
  FloorTimes decode_floor;
  bool has_prefill = false;
  size_t prefill_tokens = 0;
  Stat prefill;  // seconds per chunk of prefill_tokens
  Work prefill_work;
  FloorTimes prefill_floor;
  double growth_exponent = 0;  // CSA/HCA: log(t/t_prev)/log(entries/entries_prev); 0: first row
  double indexer_kernel_gmacs = 0;  // KernelStateProbe: median of samples after each decode rep
};

// V4-Flash's layer schedule and the V3.2 MLA shape, from the embedded configs.
struct BenchModels {
  formats::ModelConfig flash;  // DeepSeek-V4-Flash
  formats::ModelConfig v32;    // DeepSeek-V3.2 (MLA baseline dims)
};
Result<BenchModels> load_bench_models();

// Bytes the row's cache needs (to check memory before allocating).
uint64_t layer_cache_bytes(const BenchModels& m, Kind kind, uint64_t ctx);

// Runs one row. Errors: out_of_memory (cache does not fit the available memory, or the KV
// pool refused), invalid_argument (ctx outside [1, max_position_embeddings]).
Result<LayerRow> run_layer(const BenchModels& m, Kind kind, uint64_t ctx, const Floors& floors,
                           ThreadPool& pool, const LayerOptions& opt);

// V4-Flash's active weight bytes per generated token, from model::tensor_table and the
// official storage classes (model/synth.h): what a decode step must stream from memory at
// batch 1. parts: name -> bytes.
struct WeightBytes {
  double total = 0;
  std::vector<std::pair<std::string, double>> parts;
};
WeightBytes active_weight_bytes(const formats::ModelConfig& cfg);

}  // namespace dsv4::cli::bench
