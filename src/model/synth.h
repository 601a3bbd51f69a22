// model/synth.h — random-weight DeepSeek-V4 checkpoints in the official layout, from a config.
//
// Purpose: demos, benchmarks and tests need checkpoints with real V4 shapes (V4-Flash layer
// dimensions, a real tokenizer's vocabulary) that fit one machine and are produced without
// torch. write_synthetic_checkpoint() walks model::tensor_table(cfg) and stores every tensor
// exactly as the published checkpoint (and tests/data/fixtures, tools/reference/make_fixtures.py)
// stores it:
//   FP8 linears (attn.wq_a, wq_b, wkv, wo_a, wo_b, attn.indexer.wq_b, ffn.shared_experts.w1-3):
//       `.weight` F8_E4M3 [rows, cols] + `.scale` F8_E8M0 [ceil(rows/128), ceil(cols/128)];
//   routed experts (ffn.experts.E.w1-3): `.weight` I8 [rows, ceil(cols/2)] (two e2m1 codes per
//       byte, low nibble first) + `.scale` F8_E8M0 [rows, ceil(cols/32)];
//   BF16: embed, head, ffn.gate.weight, compressor / indexer projections, norm weights;
//   F32: hc_*, attn_sink, compressor ape, ffn.gate.bias;   I64: ffn.gate.tid2eid [vocab, top_k].
// Values: f32 "master" weights drawn with the init rules of make_fixtures.py (linears
// N(0, gain/sqrt(fan_in)), norm weights N(1, 0.1), embed N(0, 1), hc_*_scale U(0.5, 1.5), ...;
// tid2eid: top_k distinct experts per token), then quantized with power-of-two (ue8m0) block
// scales: 2^ceil(log2(amax/448)) per 128x128 block for FP8, the reference fp4_act_quant rule
// per 1x32 block for FP4.
//
// Determinism: the same (config, seed) gives byte-identical files on every platform and for
// every thread count. Each tensor is cut into blocks of 128 rows; block b of tensor `name`
// draws from its own splitmix64 stream keyed by (seed, FNV-1a(name), b), so neither tensor
// order nor threading changes a value. Normal variates use only exact integer arithmetic and
// correctly rounded IEEE operations (no libm transcendental, no std::normal_distribution,
// whose output differs across standard libraries): the sum of the four 16-bit lanes of one
// 64-bit draw (Irwin–Hall, n = 4), standardised. That is a bell curve bounded at ±3.46σ —
// a deliberate choice for weight init (no outliers stretch a block's quantization scale).
//
// Memory: tensors are generated one at a time into per-shard groups; a shard is written as
// soon as it is complete, so peak memory is about two shards (SafetensorsWriter holds a copy
// of each added tensor and serialize() builds the file image) plus one tensor.
// Files: model.safetensors when everything fits in one shard of opts.max_shard_bytes, else
// model-0000i-of-0000N.safetensors + model.safetensors.index.json; config.json is written
// last, so a directory with a config.json holds a complete checkpoint.
//
// Non-goals: MTP tensors (tensor_table has none), trained-looking weight statistics, the
// tokenizer (copy a tokenizer.json next to the checkpoint).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "formats/model_config.h"

namespace dsv4::model {

struct SynthProgress {
  size_t tensors_done = 0, tensors_total = 0;  // stored tensors (a scale counts as one)
  uint64_t bytes_done = 0, bytes_total = 0;    // tensor data bytes
  double seconds = 0;                          // since the start of the write
};

struct SynthOptions {
  uint64_t seed = 0;
  // Tensor bytes per shard; a tensor (with its scale) larger than this gets a shard of its own.
  uint64_t max_shard_bytes = uint64_t{2} << 30;
  // Written verbatim as config.json (it must describe `cfg`: same tensor table). Empty: a
  // config.json in DeepSeek's spelling is serialised from `cfg` (synth_config_json).
  std::string config_json;
  // A non-empty out_dir is an error unless `overwrite`; then the files a checkpoint consists of
  // (config.json, model.safetensors, model.safetensors.index.json, model-*-of-*.safetensors)
  // are deleted first and anything else in the directory is left alone.
  bool overwrite = false;
  bool check_disk_space = true;  // statvfs before writing; error when it would not fit
  int threads = 0;               // generation threads (0: all cores)
  std::function<void(const SynthProgress&)> progress;  // after every stored tensor
};

// What write_synthetic_checkpoint will write for `cfg`.
struct SynthPlan {
  size_t tensors = 0;              // stored tensors, scales included
  uint64_t tensor_bytes = 0;       // sum of tensor data bytes
  uint64_t disk_bytes = 0;         // estimate of the files on disk (data + headers + JSON)
  std::vector<std::string> files;  // shard file names (model.safetensors when single)
};
// Errors: invalid_argument for a non-V4 config or max_shard_bytes == 0.
Result<SynthPlan> plan_synthetic_checkpoint(const formats::ModelConfig& cfg,
                                            uint64_t max_shard_bytes);

// Writes the checkpoint. Errors: invalid_argument (not deepseek_v4, config_json that does not
// parse or describes another tensor table, bad options), failed_precondition (out_dir exists
// and is not an empty directory without `overwrite`; not enough free disk space — the message
// gives both sizes), io_error (creating or writing files).
Status write_synthetic_checkpoint(const formats::ModelConfig& cfg, const std::string& out_dir,
                                  const SynthOptions& opts);

// config.json text (DeepSeek's published spelling: compress_ratios, num_hash_layers,
// qk_rope_head_dim, rope_scaling, quantization_config) that parse_model_config turns back into
// a config with the same fields as `cfg` (deepseek_v4 only).
std::string synth_config_json(const formats::ModelConfig& cfg);

// ------------------------------------------------------------------ presets and overrides

// Names accepted by synth_preset_json, in help order.
std::vector<std::string_view> synth_preset_names();
// config.json text of a preset: "tiny" (the shapes of tests/data/fixtures/tiny: 2 layers
// SWA+hash MoE, CSA+score MoE; hidden 128, vocab 256, 4 experts top-2), "flash" and "pro"
// (the published DeepSeek-V4-Flash / -Pro configs, kv/embedded_configs.h). not_found otherwise.
Result<std::string> synth_preset_json(std::string_view name);

struct SynthOverrides {
  std::optional<int64_t> layers;   // num_hidden_layers: keeps the first N layers' schedule
  std::optional<int64_t> experts;  // n_routed_experts
  std::optional<int64_t> vocab;    // vocab_size
};
// Applies `ov` to config.json text and validates the result, returning the new text (the
// input verbatim when `ov` sets nothing; else re-serialised with the keys in their order).
// --layers N truncates every per-layer list (compress_ratios / layer_types keep their trailing
// MTP entries; mlp_layer_types) and lowers num_hash_layers to at most N; the first N layers
// then have exactly the original schedule. Errors (invalid_argument, naming the option):
// N / E / V < 1 or above the parser's bounds; N > the config's layers (lists cannot be
// invented); experts < num_experts_per_tok; vocab <= bos/eos token id; a config that does not
// parse or is not deepseek_v4 (the parser's message).
Result<std::string> apply_synth_overrides(std::string_view config_json, const SynthOverrides& ov,
                                          std::string_view source_name);

namespace synth_detail {
// Exposed for tests. Bit-identical to kernels::quantize_f4e2m1_blocks(x, n, 32, q, scales):
// q[ceil(n/2)] packed e2m1 (low nibble first), scales[ceil(n/32)] ue8m0; finite x only.
void quantize_f4e2m1_weights(const float* x, size_t n, uint8_t* q, uint8_t* scales);
}  // namespace synth_detail

}  // namespace dsv4::model
