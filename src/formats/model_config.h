// formats/model_config.h — a Hugging Face `config.json` -> ModelConfig.
//
// Purpose: one plain struct that describes the models whose KV cache and forward pass we
// handle: DeepSeek-V4 (`deepseek_v4`: sliding window + CSA + HCA attention, mHC, hash/score
// MoE), and, for KV comparisons, DeepSeek-V3.2 (`deepseek_v32`: MLA + DSA lightning indexer),
// DeepSeek-V3 (`deepseek_v3`: MLA) and llama/qwen2/qwen3/mistral-style GQA/MHA models.
// Field names are exactly those of the checkpoint's config.json, so `grep q_lora_rank` finds
// the file, the reference and our code alike.
//
// Two spellings of the V4 layer schedule are accepted and normalised into one per-layer
// vector (`layer_types` + `compress_ratios`):
//   * DeepSeek's published files: `compress_ratios` (per-layer 0 / 4 / 128, followed by one
//     entry per MTP layer), `num_hash_layers`, `qk_rope_head_dim`, `rope_scaling`.
//   * transformers' DeepseekV4Config (transformers/models/deepseek_v4/
//     configuration_deepseek_v4.py): `layer_types`, `compress_rates` (or the legacy scalars
//     `compress_rate_csa` / `compress_rate_hca`), `mlp_layer_types`, `partial_rotary_factor`,
//     `rope_parameters` (flat, or nested as {"main": {...}, "compress": {...}}).
// Absent fields take the defaults of the transformers config class of that model_type
// (e.g. DeepseekV4Config: head_dim 512, sliding_window 128, index_topk 512, ...). Where both
// spellings are present, transformers' precedence is followed (explicit layer_types wins over
// compress_ratios, partial_rotary_factor over qk_rope_head_dim) and we additionally reject the
// pair if they disagree.
//
// Invariants after a successful parse: num_hidden_layers >= 1 and every per-layer vector has
// exactly num_hidden_layers entries; sizes are positive and below implausibility bounds
// (so that byte arithmetic downstream cannot overflow for any accepted config); for
// deepseek_v4, qk_rope_head_dim <= head_dim, num_key_value_heads == 1, and every CSA model has
// index_topk, index_n_heads, index_head_dim > 0.
//
// Non-goals: fields that do not affect the forward pass or the cache (initializer_range,
// use_cache, architectures, transformers_version ...) are ignored, not validated; unknown
// extra fields are ignored (configs carry many). The tokenizer's special tokens live in
// tokenizer_config.json, not here.
// Rejected alternative: mirroring transformers' silent truncation of an over-long
// compress_ratios/layer_types list. We accept exactly num_hidden_layers entries, optionally
// followed by one per MTP layer (num_nextn_predict_layers) — what the published files ship —
// and reject anything else with a message that says which count was expected.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace dsv4::formats {

// Which family of architecture the config describes (decides how the KV cache looks).
enum class ModelFamily {
  deepseek_v4,   // sliding window + compressed (CSA/HCA) attention, one shared KV head
  deepseek_v32,  // MLA latent cache + DSA lightning-indexer keys
  deepseek_v3,   // MLA latent cache
  gqa,           // llama / qwen2 / qwen3 / mistral: K and V per KV head
};
std::string_view family_name(ModelFamily family);

// Per-layer attention of deepseek_v4, spelled as transformers' `layer_types` values.
enum class AttentionType {
  sliding_attention,             // compress_ratio 0: only the raw sliding window
  compressed_sparse_attention,   // CSA: overlapping windows of ratio 4 + lightning indexer
  heavily_compressed_attention,  // HCA: non-overlapping windows of ratio 128, no indexer
};
std::string_view attention_type_name(AttentionType type);

// Per-layer MoE routing of deepseek_v4 (transformers' `mlp_layer_types` values).
enum class MlpType {
  hash_moe,  // experts chosen by a frozen tid2eid[token] table (first num_hash_layers layers)
  moe,       // experts chosen by the scored top-k router
};
std::string_view mlp_type_name(MlpType type);

// `rope_scaling` (DeepSeek files) / the YaRN part of `rope_parameters` (transformers).
struct RopeScaling {
  std::string type;  // "yarn", "linear", ...; empty when absent
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;          // deepseek_v3/v32 only
  double mscale_all_dim = 0.0;  // deepseek_v3/v32 only
  std::optional<double> attention_factor;
  bool present() const { return !type.empty(); }
};

// `quantization_config` of the checkpoint (+ V4's top-level `expert_dtype`).
struct QuantizationConfig {
  bool present = false;
  std::string quant_method;                // "fp8"
  std::string fmt;                         // "e4m3"
  std::string scale_fmt;                   // "ue8m0"
  std::string activation_scheme;           // "dynamic"
  std::vector<int64_t> weight_block_size;  // [128, 128]
  std::string expert_dtype;                // "fp4" for V4 routed experts; empty when absent
};

struct ModelConfig {
  std::string source;      // file name (or embedded name) used in error messages
  std::string model_type;  // exactly as in the file: "deepseek_v4", "llama", ...
  ModelFamily family = ModelFamily::deepseek_v4;

  // --- Shared by every family.
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // V4: 512 (448 non-RoPE + 64 RoPE); GQA: per-head dims;
                         // MLA: as transformers (qk_rope_head_dim unless given)
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 0.0;
  double rope_theta = 0.0;
  RopeScaling rope_scaling;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_id;  // a single id or a list in the file
  bool tie_word_embeddings = false;
  QuantizationConfig quantization_config;
  int64_t num_nextn_predict_layers = 0;  // MTP layers (DeepSeek families)

  // --- MoE (DeepSeek families).
  int64_t moe_intermediate_size = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  std::string scoring_func;  // "sqrtsoftplus" (V4), "sigmoid" (V3), "softmax"
  bool norm_topk_prob = false;
  double routed_scaling_factor = 0.0;

  // --- Low-rank attention (V4 and MLA).
  int64_t q_lora_rank = 0;       // 0 when the file says null (V2-Lite style)
  int64_t qk_rope_head_dim = 0;  // RoPE dims at the end of each head

  // --- deepseek_v4.
  int64_t o_groups = 0;
  int64_t o_lora_rank = 0;
  int64_t num_hash_layers = 0;
  int64_t sliding_window = 0;  // raw tokens every V4 layer keeps (128)
  int64_t index_n_heads = 0;   // lightning-indexer query heads (also V3.2)
  int64_t index_head_dim = 0;  // lightning-indexer key dims (also V3.2)
  int64_t index_topk = 0;      // compressed entries (V3.2: tokens) kept per query
  int64_t hc_mult = 0;
  int64_t hc_sinkhorn_iters = 0;
  double hc_eps = 0.0;
  double swiglu_limit = 0.0;
  double compress_rope_theta = 0.0;
  double partial_rotary_factor = 0.0;  // qk_rope_head_dim / head_dim
  int64_t compress_rate_csa = 0;  // transformers' compress_rates["compressed_sparse_attention"]
  int64_t compress_rate_hca = 0;  // transformers' compress_rates["heavily_compressed_attention"]
  // [num_hidden_layers]: attention type of each main layer.
  std::vector<AttentionType> layer_types;
  // [num_hidden_layers]: tokens per compressed entry of each main layer (0 for
  // sliding_attention, compress_rate_csa for CSA, compress_rate_hca for HCA).
  std::vector<int64_t> compress_ratios;
  // [num_nextn_predict_layers]: attention type of each MTP layer, from the entries of
  // compress_ratios / layer_types past num_hidden_layers; sliding_attention when the file has
  // none (both published V4 files give 0 for their one MTP layer).
  std::vector<AttentionType> mtp_layer_types;
  // [num_hidden_layers]: routing of each main layer.
  std::vector<MlpType> mlp_layer_types;

  // --- MLA (deepseek_v3, deepseek_v32).
  int64_t kv_lora_rank = 0;  // latent dims cached per token (512)
  int64_t qk_nope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t first_k_dense_replace = 0;

  // --- GQA families. [num_hidden_layers]: sliding-window length of each layer, 0 for full
  // attention (qwen2/qwen3 with use_sliding_window, mistral's sliding_window, or an explicit
  // `layer_types` list of "full_attention"/"sliding_attention").
  std::vector<int64_t> layer_sliding_window;

  int count_layers(AttentionType type) const;
};

// Parses config.json text. `source_name` names the file in every error message:
// "<source_name>: <field>: <what is wrong>".
// Errors: parse_error (malformed JSON, top level not an object), invalid_argument (wrong JSON
// type or out-of-range value of a field, inconsistent fields), unsupported (unknown or absent
// model_type; a V4 config with num_key_value_heads != 1).
Result<ModelConfig> parse_model_config(std::string_view json_text, std::string_view source_name);

// Reads and parses `path`, which is a config.json or a directory containing one.
// Errors: not_found / io_error for the file, then those of parse_model_config.
Result<ModelConfig> load_model_config(const std::string& path);

}  // namespace dsv4::formats
