#include "model/tensor_table.h"

#include <fmt/format.h>

#include <set>

namespace dsv4::model {

using formats::AttentionType;
using formats::DType;
using formats::MlpType;
using formats::ModelConfig;
using formats::SafetensorsModel;
using formats::TensorView;

std::vector<TensorSpec> tensor_table(const ModelConfig& c) {
  const int64_t D = c.hidden_size, V = c.vocab_size, H = c.num_attention_heads;
  const int64_t hd = c.head_dim, qr = c.q_lora_rank, G = c.o_groups, olr = c.o_lora_rank;
  const int64_t hc = c.hc_mult, E = c.n_routed_experts, k = c.num_experts_per_tok;
  const int64_t inter = c.moe_intermediate_size, ih = c.index_n_heads, ihd = c.index_head_dim;
  const int64_t mix = (2 + hc) * hc;
  std::vector<TensorSpec> t;
  auto lin = [&](std::string n, int64_t rows, int64_t cols) {
    t.push_back({std::move(n), {rows, cols}, StorageClass::linear});
  };
  auto vec = [&](std::string n, std::vector<int64_t> shape) {
    t.push_back({std::move(n), std::move(shape), StorageClass::vector});
  };
  lin("embed.weight", V, D);
  lin("head.weight", V, D);
  vec("norm.weight", {D});
  vec("hc_head_fn", {hc, hc * D});
  vec("hc_head_base", {hc});
  vec("hc_head_scale", {1});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("layers.{}.", l);
    const int64_t ratio = c.compress_ratios[static_cast<size_t>(l)];
    vec(p + "attn_norm.weight", {D});
    vec(p + "ffn_norm.weight", {D});
    for (const char* which : {"attn", "ffn"}) {
      vec(p + fmt::format("hc_{}_fn", which), {mix, hc * D});
      vec(p + fmt::format("hc_{}_base", which), {mix});
      vec(p + fmt::format("hc_{}_scale", which), {3});
    }
    vec(p + "attn.attn_sink", {H});
    lin(p + "attn.wq_a.weight", qr, D);
    vec(p + "attn.q_norm.weight", {qr});
    lin(p + "attn.wq_b.weight", H * hd, qr);
    lin(p + "attn.wkv.weight", hd, D);
    vec(p + "attn.kv_norm.weight", {hd});
    lin(p + "attn.wo_a.weight", G * olr, H * hd / G);
    lin(p + "attn.wo_b.weight", D, G * olr);
    if (ratio > 0) {
      // CSA (overlapping windows) keeps two series per token (Ca | Cb), HCA one.
      const int64_t width =
          (c.layer_types[static_cast<size_t>(l)] == AttentionType::compressed_sparse_attention)
              ? 2 * hd
              : hd;
      lin(p + "attn.compressor.wkv.weight", width, D);
      lin(p + "attn.compressor.wgate.weight", width, D);
      vec(p + "attn.compressor.ape", {ratio, width});
      vec(p + "attn.compressor.norm.weight", {hd});
    }
    if (c.layer_types[static_cast<size_t>(l)] == AttentionType::compressed_sparse_attention) {
      lin(p + "attn.indexer.wq_b.weight", ih * ihd, qr);
      lin(p + "attn.indexer.weights_proj.weight", ih, D);
      lin(p + "attn.indexer.compressor.wkv.weight", 2 * ihd, D);
      lin(p + "attn.indexer.compressor.wgate.weight", 2 * ihd, D);
      vec(p + "attn.indexer.compressor.ape", {ratio, 2 * ihd});
      vec(p + "attn.indexer.compressor.norm.weight", {ihd});
    }
    lin(p + "ffn.gate.weight", E, D);
    if (c.mlp_layer_types[static_cast<size_t>(l)] == MlpType::hash_moe) {
      t.push_back({p + "ffn.gate.tid2eid", {V, k}, StorageClass::index});
    } else {
      vec(p + "ffn.gate.bias", {E});
    }
    lin(p + "ffn.shared_experts.w1.weight", inter * c.n_shared_experts, D);
    lin(p + "ffn.shared_experts.w2.weight", D, inter * c.n_shared_experts);
    lin(p + "ffn.shared_experts.w3.weight", inter * c.n_shared_experts, D);
    for (int64_t e = 0; e < E; ++e) {
      lin(p + fmt::format("ffn.experts.{}.w1.weight", e), inter, D);
      lin(p + fmt::format("ffn.experts.{}.w2.weight", e), D, inter);
      lin(p + fmt::format("ffn.experts.{}.w3.weight", e), inter, D);
    }
  }
  return t;
}

std::string scale_name(const std::string& weight_name) {
  constexpr std::string_view kSuffix = ".weight";
  if (weight_name.size() > kSuffix.size() &&
      weight_name.compare(weight_name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0)
    return weight_name.substr(0, weight_name.size() - kSuffix.size()) + ".scale";
  return weight_name + ".scale";
}

const char* linear_format_name(LinearFormat f) {
  switch (f) {
    case LinearFormat::bf16:
      return "bf16";
    case LinearFormat::f32:
      return "f32";
    case LinearFormat::f8_e4m3:
      return "f8_e4m3 (128x128 block scales)";
    case LinearFormat::f4_e2m1:
      return "f4_e2m1 (1x32 block scales)";
  }
  return "?";
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  return formats::shape_string(s);
}

Status shape_error(const TensorView& t, const std::vector<int64_t>& want, const char* what) {
  return invalid_argument(fmt::format("tensor '{}': {} shape {} (dtype {}), expected {}", t.name,
                                      what, shape_str(t.shape), formats::dtype_name(t.dtype),
                                      shape_str(want)));
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

}  // namespace

Result<LinearFormat> check_linear(const TensorSpec& spec, const SafetensorsModel& ckpt) {
  DSV4_CHECK(spec.storage == StorageClass::linear && spec.shape.size() == 2);
  DSV4_ASSIGN_OR_RETURN(const TensorView* w, ckpt.get(spec.name));
  const int64_t rows = spec.shape[0], cols = spec.shape[1];
  auto check_scale = [&](std::vector<int64_t> want, bool allow_f32) -> Status {
    const std::string sn = scale_name(spec.name);
    const TensorView* s = ckpt.find(sn);
    if (!s)
      return not_found(fmt::format("tensor '{}' is {} but its scale tensor '{}' is missing",
                                   spec.name, formats::dtype_name(w->dtype), sn));
    if (!(s->dtype == DType::f8_e8m0 || (allow_f32 && s->dtype == DType::f32)))
      return invalid_argument(fmt::format("scale tensor '{}' has dtype {}, expected {}", sn,
                                          formats::dtype_name(s->dtype),
                                          allow_f32 ? "F8_E8M0 or F32" : "F8_E8M0"));
    if (s->shape != want) return shape_error(*s, want, "scale has");
    return ok_status();
  };
  switch (w->dtype) {
    case DType::bf16:
    case DType::f32:
      if (w->shape != spec.shape) return shape_error(*w, spec.shape, "has");
      return w->dtype == DType::bf16 ? LinearFormat::bf16 : LinearFormat::f32;
    case DType::f8_e4m3:
      if (w->shape != spec.shape) return shape_error(*w, spec.shape, "has");
      DSV4_RETURN_IF_ERROR(check_scale({ceil_div(rows, 128), ceil_div(cols, 128)}, true));
      return LinearFormat::f8_e4m3;
    case DType::i8:
    case DType::u8: {
      // FP4 e2m1 packed two per byte (low nibble = even column), as the official checkpoint.
      std::vector<int64_t> packed = {rows, ceil_div(cols, 2)};
      if (w->shape != packed) return shape_error(*w, packed, "has packed fp4");
      DSV4_RETURN_IF_ERROR(check_scale({rows, ceil_div(cols, 32)}, false));
      return LinearFormat::f4_e2m1;
    }
    case DType::f4_e2m1:
      if (w->shape != spec.shape) return shape_error(*w, spec.shape, "has");
      DSV4_RETURN_IF_ERROR(check_scale({rows, ceil_div(cols, 32)}, false));
      return LinearFormat::f4_e2m1;
    default:
      return invalid_argument(fmt::format(
          "tensor '{}' has dtype {}, expected BF16, F32, F8_E4M3 (+scale) or packed FP4 (+scale)",
          spec.name, formats::dtype_name(w->dtype)));
  }
}

Status check_tensor(const TensorSpec& spec, const SafetensorsModel& ckpt) {
  if (spec.storage == StorageClass::linear) return check_linear(spec, ckpt).status();
  DSV4_ASSIGN_OR_RETURN(const TensorView* t, ckpt.get(spec.name));
  if (t->shape != spec.shape) return shape_error(*t, spec.shape, "has");
  if (spec.storage == StorageClass::vector) {
    if (t->dtype != DType::f32 && t->dtype != DType::bf16)
      return invalid_argument(fmt::format("tensor '{}' has dtype {}, expected F32 or BF16",
                                          spec.name, formats::dtype_name(t->dtype)));
  } else if (t->dtype != DType::i64 && t->dtype != DType::i32) {
    return invalid_argument(fmt::format("tensor '{}' has dtype {}, expected I64 or I32", spec.name,
                                        formats::dtype_name(t->dtype)));
  }
  return ok_status();
}

CheckpointReport check_checkpoint(const ModelConfig& cfg, const SafetensorsModel& ckpt) {
  CheckpointReport r;
  std::set<std::string> known;
  for (const TensorSpec& s : tensor_table(cfg)) {
    known.insert(s.name);
    Status st = check_tensor(s, ckpt);
    if (!st.ok()) {
      r.problems.push_back(st.message());
      continue;
    }
    r.used_bytes += ckpt.find(s.name)->size_bytes();
    if (s.storage == StorageClass::linear) {
      const std::string sn = scale_name(s.name);
      if (const TensorView* sc = ckpt.find(sn)) {
        known.insert(sn);
        r.used_bytes += sc->size_bytes();
      }
    }
  }
  for (const TensorView* t : ckpt.tensors()) {
    if (known.count(t->name)) continue;
    if (t->name.rfind("mtp.", 0) == 0) {
      r.unused.push_back(t->name);
    } else {
      r.unexpected.push_back(t->name);
    }
  }
  return r;
}

}  // namespace dsv4::model
