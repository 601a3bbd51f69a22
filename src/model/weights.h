// model/weights.h — DeepSeek-V4 weights bound to a checkpoint, in place.
//
// Purpose: typed, non-owning views of every weight the forward pass reads. Matrices stay in
// the checkpoint's mapped memory in their stored format (bf16 / f8_e4m3 + 128x128 scales /
// packed f4_e2m1 + 1x32 scales); small vectors (norm weights, ape, hc mixing, sinks, router
// bias) are converted to f32 once here. Binding is driven by model/tensor_table.h.
// Lifetime: a ModelWeights points into the SafetensorsModel it was bound from; the Model owns
// both.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/thread_pool.h"
#include "formats/model_config.h"
#include "formats/safetensors.h"
#include "kernels/gemv.h"
#include "model/tensor_table.h"

namespace dsv4::model {

// One weight matrix y = W x, W: [rows, cols] in its stored format.
struct Linear {
  LinearFormat format = LinearFormat::f32;
  size_t rows = 0, cols = 0;
  kernels::WeightsBf16 bf16;                  // format == bf16
  kernels::WeightsF8e4m3 f8;                  // format == f8_e4m3
  kernels::WeightsF4e2m1 f4;                  // format == f4_e2m1
  const float* f32 = nullptr;                 // format == f32: [rows, cols]
  const formats::TensorView* view = nullptr;  // for perturbation tests and diagnostics

  // Y[b, r] = sum_k W[r, k] X[b, k] for b < batch and rows [row_begin, row_end).
  // X: [batch, ldx] f32, Y: [batch, ldy] f32. Single-threaded; see linear().
  void apply_rows(const float* x, size_t ldx, size_t batch, float* y, size_t ldy, size_t row_begin,
                  size_t row_end) const;
};

// Y[batch, rows] = X[batch, cols] W^T, rows split across the pool.
void linear(const Linear& w, const float* x, size_t batch, float* y, ThreadPool& pool);

// Softmax-gated window compressor (attn.compressor / attn.indexer.compressor).
struct CompressorWeights {
  int64_t ratio = 0;        // tokens per compressed entry (4 CSA, 128 HCA)
  int64_t dim = 0;          // channels of one compressed entry (head_dim or index_head_dim)
  bool overlap = false;     // CSA: two series per token (Ca | Cb), windows of 2*ratio slots
  Linear wkv, wgate;        // [width, hidden] with width = dim * (overlap ? 2 : 1)
  std::vector<float> ape;   // [ratio, width] learned position bias added to the gate
  std::vector<float> norm;  // [dim] RMSNorm weight of the pooled entry
  int64_t width() const { return overlap ? 2 * dim : dim; }
};

struct IndexerWeights {
  Linear wq_b;          // [index_n_heads * index_head_dim, q_lora_rank]
  Linear weights_proj;  // [index_n_heads, hidden]
  CompressorWeights compressor;
};

struct AttentionWeights {
  formats::AttentionType type = formats::AttentionType::sliding_attention;
  std::vector<float> sink;     // [n_heads] attn_sink logits
  Linear wq_a;                 // [q_lora_rank, hidden]
  std::vector<float> q_norm;   // [q_lora_rank]
  Linear wq_b;                 // [n_heads * head_dim, q_lora_rank]
  Linear wkv;                  // [head_dim, hidden]
  std::vector<float> kv_norm;  // [head_dim]
  Linear wo_a;                 // [o_groups * o_lora_rank, n_heads * head_dim / o_groups]
  Linear wo_b;                 // [hidden, o_groups * o_lora_rank]
  std::optional<CompressorWeights> compressor;  // CSA / HCA
  std::optional<IndexerWeights> indexer;        // CSA
};

// Hyper-connection mixing parameters (hc_attn_* / hc_ffn_*).
struct HcWeights {
  std::vector<float> fn;     // [(2+hc)*hc, hc*hidden]
  std::vector<float> base;   // [(2+hc)*hc]
  std::vector<float> scale;  // [3]
};

struct Expert {
  Linear w1, w2, w3;  // gate [inter, hidden], down [hidden, inter], up [inter, hidden]
};

struct FfnWeights {
  formats::MlpType type = formats::MlpType::moe;
  Linear gate;                   // [n_routed_experts, hidden] router
  std::vector<float> bias;       // [n_routed_experts] score correction (score-routed layers)
  std::vector<int32_t> tid2eid;  // [vocab, top_k] (hash-routed layers)
  Expert shared;
  std::vector<Expert> experts;  // [n_routed_experts]
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;  // [hidden]
  HcWeights hc_attn, hc_ffn;
  AttentionWeights attn;
  FfnWeights ffn;
};

struct ModelWeights {
  Linear embed;             // [vocab, hidden] (rows are looked up, not multiplied)
  Linear head;              // [vocab, hidden]
  std::vector<float> norm;  // [hidden]
  std::vector<float> hc_head_fn, hc_head_base, hc_head_scale;  // [hc, hc*hidden], [hc], [1]
  std::vector<LayerWeights> layers;
};

// Binds every tensor of tensor_table(cfg). The first missing or malformed tensor is an error
// naming it (use check_checkpoint for a full report).
Result<ModelWeights> bind_weights(const formats::ModelConfig& cfg,
                                  const formats::SafetensorsModel& ckpt);

// Row `row` of a linear as f32 (embedding lookup). out: [cols].
void linear_row_f32(const Linear& w, size_t row, float* out);

}  // namespace dsv4::model
