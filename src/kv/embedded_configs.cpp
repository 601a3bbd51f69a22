// kv/embedded_configs.cpp — published config.json texts (facts, not code) for KV comparisons.
#include "kv/embedded_configs.h"

#include <array>
#include <string>

namespace dsv4::kv {

namespace {

// DeepSeek-V3.2 (671B): https://huggingface.co/deepseek-ai/DeepSeek-V3.2/blob/main/config.json
// (the V3 config plus the DSA indexer fields index_topk / index_n_heads / index_head_dim).
// KV-relevant values cross-checked against transformers' DeepseekV32Config defaults
// (checkpoint deepseek-ai/DeepSeek-V3.2-Exp): 61 layers, kv_lora_rank 512, qk_rope_head_dim 64,
// index_head_dim 128, index_n_heads 64, index_topk 2048.
constexpr std::string_view kV32Json = R"json({
  "architectures": ["DeepseekV32ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "ep_size": 1,
  "first_k_dense_replace": 3,
  "hidden_act": "silu",
  "hidden_size": 7168,
  "index_head_dim": 128,
  "index_n_heads": 64,
  "index_topk": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 18432,
  "kv_lora_rank": 512,
  "max_position_embeddings": 163840,
  "model_type": "deepseek_v32",
  "moe_intermediate_size": 2048,
  "moe_layer_freq": 1,
  "n_group": 8,
  "n_routed_experts": 256,
  "n_shared_experts": 1,
  "norm_topk_prob": true,
  "num_attention_heads": 128,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 61,
  "num_key_value_heads": 128,
  "num_nextn_predict_layers": 1,
  "q_lora_rank": 1536,
  "qk_nope_head_dim": 128,
  "qk_rope_head_dim": 64,
  "quantization_config": {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "scale_fmt": "ue8m0",
    "weight_block_size": [128, 128]
  },
  "rms_norm_eps": 1e-06,
  "rope_scaling": {
    "beta_fast": 32,
    "beta_slow": 1,
    "factor": 40,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
    "original_max_position_embeddings": 4096,
    "type": "yarn"
  },
  "rope_theta": 10000,
  "routed_scaling_factor": 2.5,
  "scoring_func": "sigmoid",
  "tie_word_embeddings": false,
  "topk_group": 4,
  "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "v_head_dim": 128,
  "vocab_size": 129280
})json";

// DeepSeek-V4-Flash (284B, 13B active):
// https://huggingface.co/deepseek-ai/DeepSeek-V4-Flash/blob/main/config.json — as embedded
// verbatim in public test suites (e.g. a candle port's DSV4_FLASH_CONFIG and rtp-llm's
// FLASH_BASE_CONFIG). compress_ratios has 43 + 1 entries: the last is the MTP layer.
constexpr std::string_view kV4FlashJson = R"json({
  "architectures": ["DeepseekV4ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "expert_dtype": "fp4",
  "hc_eps": 1e-06,
  "hc_mult": 4,
  "hc_sinkhorn_iters": 20,
  "head_dim": 512,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "index_head_dim": 128,
  "index_n_heads": 64,
  "index_topk": 512,
  "initializer_range": 0.02,
  "max_position_embeddings": 1048576,
  "model_type": "deepseek_v4",
  "moe_intermediate_size": 2048,
  "n_routed_experts": 256,
  "n_shared_experts": 1,
  "norm_topk_prob": true,
  "num_attention_heads": 64,
  "num_experts_per_tok": 6,
  "num_hidden_layers": 43,
  "num_hash_layers": 3,
  "num_key_value_heads": 1,
  "num_nextn_predict_layers": 1,
  "o_groups": 8,
  "o_lora_rank": 1024,
  "q_lora_rank": 1024,
  "qk_rope_head_dim": 64,
  "quantization_config": {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "scale_fmt": "ue8m0",
    "weight_block_size": [128, 128]
  },
  "rms_norm_eps": 1e-06,
  "rope_scaling": {
    "beta_fast": 32,
    "beta_slow": 1,
    "factor": 16,
    "original_max_position_embeddings": 65536,
    "type": "yarn"
  },
  "rope_theta": 10000,
  "routed_scaling_factor": 1.5,
  "scoring_func": "sqrtsoftplus",
  "sliding_window": 128,
  "swiglu_limit": 10.0,
  "tie_word_embeddings": false,
  "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16",
  "transformers_version": "4.57.1",
  "use_cache": true,
  "vocab_size": 129280,
  "compress_rope_theta": 160000,
  "compress_ratios": [0, 0, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 0]
})json";

// DeepSeek-V4-Pro (1.6T, 49B active):
// https://huggingface.co/deepseek-ai/DeepSeek-V4-Pro/blob/main/config.json — as dumped from a
// downloaded checkpoint in public model reports. compress_ratios has 61 + 1 entries.
constexpr std::string_view kV4ProJson = R"json({
  "architectures": ["DeepseekV4ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "hc_eps": 1e-06,
  "hc_mult": 4,
  "hc_sinkhorn_iters": 20,
  "head_dim": 512,
  "hidden_act": "silu",
  "hidden_size": 7168,
  "index_head_dim": 128,
  "index_n_heads": 64,
  "index_topk": 1024,
  "initializer_range": 0.02,
  "max_position_embeddings": 1048576,
  "model_type": "deepseek_v4",
  "moe_intermediate_size": 3072,
  "n_routed_experts": 384,
  "n_shared_experts": 1,
  "norm_topk_prob": true,
  "num_attention_heads": 128,
  "num_experts_per_tok": 6,
  "num_hidden_layers": 61,
  "num_hash_layers": 3,
  "num_key_value_heads": 1,
  "num_nextn_predict_layers": 1,
  "o_groups": 16,
  "o_lora_rank": 1024,
  "q_lora_rank": 1536,
  "qk_rope_head_dim": 64,
  "quantization_config": {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "scale_fmt": "ue8m0",
    "weight_block_size": [128, 128]
  },
  "rms_norm_eps": 1e-06,
  "rope_scaling": {
    "beta_fast": 32,
    "beta_slow": 1,
    "factor": 16,
    "original_max_position_embeddings": 65536,
    "type": "yarn"
  },
  "rope_theta": 10000,
  "routed_scaling_factor": 2.5,
  "scoring_func": "sqrtsoftplus",
  "sliding_window": 128,
  "swiglu_limit": 10.0,
  "tie_word_embeddings": false,
  "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16",
  "transformers_version": "4.57.1",
  "use_cache": true,
  "vocab_size": 129280,
  "compress_rope_theta": 160000,
  "compress_ratios": [128, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 0]
})json";

// A bf16 GQA baseline of V3.2's depth: 61 layers x 8 KV heads x 128 dims (the "GQA" of the
// DeepSeek-V4 comparison). Synthetic: only the KV-relevant fields matter.
constexpr std::string_view kGqaJson = R"json({
  "model_type": "llama",
  "hidden_size": 8192,
  "num_hidden_layers": 61,
  "num_attention_heads": 64,
  "num_key_value_heads": 8,
  "head_dim": 128,
  "max_position_embeddings": 1048576
})json";

constexpr std::array<EmbeddedConfig, 4> kConfigs = {{
    {kDeepSeekV32, "https://huggingface.co/deepseek-ai/DeepSeek-V3.2/blob/main/config.json",
     kV32Json},
    {kDeepSeekV4Flash, "https://huggingface.co/deepseek-ai/DeepSeek-V4-Flash/blob/main/config.json",
     kV4FlashJson},
    {kDeepSeekV4Pro, "https://huggingface.co/deepseek-ai/DeepSeek-V4-Pro/blob/main/config.json",
     kV4ProJson},
    {kGqaBaseline, "synthetic: 61 layers x 8 KV heads x 128 dims, bf16", kGqaJson},
}};

}  // namespace

std::span<const EmbeddedConfig> embedded_configs() {
  return kConfigs;
}

Result<formats::ModelConfig> load_embedded_config(std::string_view name) {
  for (const EmbeddedConfig& e : kConfigs) {
    if (e.name == name)
      return formats::parse_model_config(e.json, "embedded " + std::string(e.name));
  }
  return not_found("no embedded config named '" + std::string(name) + "'");
}

}  // namespace dsv4::kv
