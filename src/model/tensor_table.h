// model/tensor_table.h — one description of every tensor of a DeepSeek-V4 checkpoint.
//
// Purpose: the single list, derived from ModelConfig, that drives weight binding
// (model/weights.cpp), checkpoint validation and `dsv4 inspect`. Names are the OFFICIAL
// checkpoint names (deepseek-ai/DeepSeek-V4-Flash model.safetensors.index.json), e.g.
// `layers.3.attn.wq_a.weight`; docs/reference-v4.md maps them to transformers' names.
//
// Storage classes (what a tensor may be stored as):
//   linear  — a weight matrix [rows, cols] (logical). Stored as one of
//             BF16 / F32 [rows, cols];
//             F8_E4M3 [rows, cols] + `<stem>.scale` [ceil(rows/128), ceil(cols/128)] F8_E8M0|F32;
//             FP4 e2m1 packed two per byte, low nibble first, as I8/U8/F4 [rows, cols/2] +
//             `<stem>.scale` [rows, ceil(cols/32)] F8_E8M0 (routed experts).
//   vector  — small float parameters (norm weights, ape, hc mixing): BF16 / F32, converted to f32
//   once at load. index   — integer tables (tid2eid): I64 / I32.
// Invariants: names are unique; every shape entry is > 0.
// Non-goals: the MTP block (`mtp.*` tensors are recognised and reported as unused for now).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "formats/model_config.h"
#include "formats/safetensors.h"

namespace dsv4::model {

enum class StorageClass { linear, vector, index };

struct TensorSpec {
  std::string name;            // official name, e.g. "layers.0.attn.wq_a.weight"
  std::vector<int64_t> shape;  // logical shape (an fp4 linear's cols are unpacked elements)
  StorageClass storage = StorageClass::vector;
};

// Every tensor the forward pass needs for `cfg` (main layers; no MTP), in a stable order.
std::vector<TensorSpec> tensor_table(const formats::ModelConfig& cfg);

// The scale tensor name of a quantized linear: "x.weight" -> "x.scale".
std::string scale_name(const std::string& weight_name);

// How a linear is stored in a checkpoint (after validation).
enum class LinearFormat { bf16, f32, f8_e4m3, f4_e2m1 };
const char* linear_format_name(LinearFormat f);

// Checks that `spec` exists in `ckpt` with an allowed dtype and the right (packed) shape, and
// for quantized linears that its scale tensor exists with the right dtype and shape.
// Errors name the tensor: not_found (missing), invalid_argument (dtype/shape mismatch).
Result<LinearFormat> check_linear(const TensorSpec& spec, const formats::SafetensorsModel& ckpt);
Status check_tensor(const TensorSpec& spec, const formats::SafetensorsModel& ckpt);

// Result of validating a whole checkpoint against the table (for `dsv4 inspect`).
struct CheckpointReport {
  std::vector<std::string> problems;    // one line per missing / mis-shaped / wrong-dtype tensor
  std::vector<std::string> unexpected;  // tensors present but in no spec (and not a scale)
  std::vector<std::string> unused;      // recognised but not used (mtp.*)
  uint64_t used_bytes = 0;              // bytes of tensors the forward pass reads
  bool ok() const { return problems.empty() && unexpected.empty(); }
};
CheckpointReport check_checkpoint(const formats::ModelConfig& cfg,
                                  const formats::SafetensorsModel& ckpt);

}  // namespace dsv4::model
