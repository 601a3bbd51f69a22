// fuzz/kv_snapshot_fuzz_config.h — the small DeepSeek-V4 config and model identity that the
// KV snapshot fuzz target (fuzz/kv_snapshot_fuzz.cpp) loads snapshots against, shared with
// tests/kv/snapshot_test.cpp, which checks (and, with DSV4_WRITE_FUZZ_SEEDS=1, regenerates) the
// seed corpus fuzz/corpus/kv_snapshot/.
// Small on purpose: one layer of each kind (sliding window 8, CSA ratio 2, HCA ratio 4),
// head_dim 64 without RoPE dims (official record 72 B), indexer keys of 32 dims (official 17 B),
// so a seed with a few dozen tokens and several blocks and checkpoints is ~10-20 KB.
#pragma once

#include <string_view>

#include "kv/snapshot.h"

namespace dsv4::kv::fuzzing {

inline constexpr std::string_view kSnapshotFuzzConfig = R"({
  "model_type": "deepseek_v4",
  "vocab_size": 256,
  "hidden_size": 64,
  "num_hidden_layers": 3,
  "num_attention_heads": 2,
  "num_key_value_heads": 1,
  "head_dim": 64,
  "qk_rope_head_dim": 0,
  "q_lora_rank": 64,
  "o_groups": 2,
  "o_lora_rank": 64,
  "index_head_dim": 32,
  "index_n_heads": 2,
  "index_topk": 4,
  "sliding_window": 8,
  "max_position_embeddings": 4096,
  "moe_intermediate_size": 64,
  "n_routed_experts": 4,
  "n_shared_experts": 1,
  "num_experts_per_tok": 2,
  "num_hash_layers": 1,
  "hc_mult": 2,
  "layer_types": ["sliding_attention", "compressed_sparse_attention",
                  "heavily_compressed_attention"],
  "compress_rate_csa": 2,
  "compress_rate_hca": 4
})";

inline ModelIdentity snapshot_fuzz_identity() {
  ModelIdentity id;
  id.model_type = "deepseek_v4";
  id.config_hash = 0x1111111111111111ull;
  id.weights_hash = 0x2222222222222222ull;
  return id;
}

}  // namespace dsv4::kv::fuzzing
