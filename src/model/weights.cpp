#include "model/weights.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "kernels/codecs.h"

namespace dsv4::model {

using formats::DType;
using formats::TensorView;

void Linear::apply_rows(const float* x, size_t ldx, size_t batch, float* y, size_t ldy,
                        size_t row_begin, size_t row_end) const {
  switch (format) {
    case LinearFormat::bf16:
      kernels::gemm_bf16_f32(bf16, x, ldx, batch, y, ldy, row_begin, row_end);
      return;
    case LinearFormat::f8_e4m3:
      kernels::gemm_f8e4m3_f32(f8, x, ldx, batch, y, ldy, row_begin, row_end);
      return;
    case LinearFormat::f4_e2m1:
      kernels::gemm_f4e2m1_f32(f4, x, ldx, batch, y, ldy, row_begin, row_end);
      return;
    case LinearFormat::f32:
      for (size_t b = 0; b < batch; ++b) {
        const float* xb = x + b * ldx;
        for (size_t r = row_begin; r < row_end; ++r) {
          const float* wr = f32 + r * cols;
          float acc = 0.f;
          for (size_t k = 0; k < cols; ++k) acc += wr[k] * xb[k];
          y[b * ldy + r] = acc;
        }
      }
      return;
  }
}

void linear(const Linear& w, const float* x, size_t batch, float* y, ThreadPool& pool) {
  // About 64 KiB of weights per task keeps the split fine enough for 2..64 threads.
  const size_t row_bytes =
      std::max<size_t>(1, w.cols / (w.format == LinearFormat::f4_e2m1 ? 2 : 1));
  const size_t grain = std::max<size_t>(16, (64u << 10) / row_bytes);
  pool.parallel_for(0, w.rows, grain, [&](size_t b, size_t e, int) {
    w.apply_rows(x, w.cols, batch, y, w.rows, b, e);
  });
}

void linear_row_f32(const Linear& w, size_t row, float* out) {
  DSV4_CHECK(row < w.rows);
  switch (w.format) {
    case LinearFormat::bf16:
      kernels::convert_bf16_to_f32(w.bf16.data + row * w.cols, out, w.cols);
      return;
    case LinearFormat::f32:
      std::memcpy(out, w.f32 + row * w.cols, w.cols * sizeof(float));
      return;
    case LinearFormat::f8_e4m3:
      kernels::convert_f8e4m3_to_f32(w.f8.data + row * w.cols, out, w.cols);
      for (size_t c = 0; c < w.cols; ++c) out[c] *= kernels::f8_weight_scale(w.f8, row, c / 128);
      return;
    case LinearFormat::f4_e2m1:
      kernels::dequant_f4e2m1_to_f32(w.f4.data + row * kernels::f4_row_bytes(w.cols),
                                     w.f4.scales + row * kernels::f4_scales_per_row(w.cols), out,
                                     w.cols);
      return;
  }
}

namespace {

class Binder {
 public:
  Binder(const formats::ModelConfig& cfg, const formats::SafetensorsModel& ckpt) : ckpt_(ckpt) {
    for (TensorSpec& s : tensor_table(cfg)) specs_.emplace(s.name, std::move(s));
  }

  Result<Linear> linear(const std::string& name) {
    const TensorSpec& spec = spec_of(name);
    DSV4_ASSIGN_OR_RETURN(LinearFormat fmt, check_linear(spec, ckpt_));
    const TensorView* w = ckpt_.find(name);
    Linear l;
    l.format = fmt;
    l.rows = static_cast<size_t>(spec.shape[0]);
    l.cols = static_cast<size_t>(spec.shape[1]);
    l.view = w;
    switch (fmt) {
      case LinearFormat::bf16:
        l.bf16 = {reinterpret_cast<const uint16_t*>(w->data()), l.rows, l.cols};
        break;
      case LinearFormat::f32:
        l.f32 = reinterpret_cast<const float*>(w->data());
        break;
      case LinearFormat::f8_e4m3: {
        const TensorView* s = ckpt_.find(scale_name(name));
        l.f8.data = w->data();
        l.f8.scales = s->data();
        l.f8.scale_format =
            s->dtype == DType::f32 ? kernels::ScaleFormat::f32 : kernels::ScaleFormat::ue8m0;
        l.f8.rows = l.rows;
        l.f8.cols = l.cols;
        break;
      }
      case LinearFormat::f4_e2m1: {
        const TensorView* s = ckpt_.find(scale_name(name));
        l.f4 = {w->data(), s->data(), l.rows, l.cols};
        break;
      }
    }
    if ((fmt == LinearFormat::bf16 && !w->is_aligned(2)) ||
        (fmt == LinearFormat::f32 && !w->is_aligned(4)))
      return invalid_argument(
          fmt::format("tensor '{}' is not aligned to its element size in the file", name));
    return l;
  }

  Result<std::vector<float>> vec(const std::string& name) {
    const TensorSpec& spec = spec_of(name);
    DSV4_RETURN_IF_ERROR(check_tensor(spec, ckpt_));
    const TensorView* t = ckpt_.find(name);
    const size_t n = static_cast<size_t>(t->elements());
    std::vector<float> out(n);
    const uint8_t* p = t->data();
    for (size_t i = 0; i < n; ++i) {
      if (t->dtype == DType::f32) {
        std::memcpy(&out[i], p + 4 * i, 4);
      } else {  // bf16 (check_tensor allows nothing else)
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = kernels::decode_bf16(h);
      }
    }
    return out;
  }

  Result<std::vector<int32_t>> index(const std::string& name, int64_t limit) {
    const TensorSpec& spec = spec_of(name);
    DSV4_RETURN_IF_ERROR(check_tensor(spec, ckpt_));
    const TensorView* t = ckpt_.find(name);
    const size_t n = static_cast<size_t>(t->elements());
    std::vector<int32_t> out(n);
    for (size_t i = 0; i < n; ++i) {
      int64_t v;
      if (t->dtype == DType::i64) {
        std::memcpy(&v, t->data() + 8 * i, 8);
      } else {
        int32_t v32;
        std::memcpy(&v32, t->data() + 4 * i, 4);
        v = v32;
      }
      if (v < 0 || v >= limit)
        return invalid_argument(
            fmt::format("tensor '{}': entry {} is {}, outside [0, {})", name, i, v, limit));
      out[i] = static_cast<int32_t>(v);
    }
    return out;
  }

 private:
  const TensorSpec& spec_of(const std::string& name) const {
    auto it = specs_.find(name);
    DSV4_CHECK_MSG(it != specs_.end(), name.c_str());
    return it->second;
  }

  const formats::SafetensorsModel& ckpt_;
  std::unordered_map<std::string, TensorSpec> specs_;
};

Result<CompressorWeights> bind_compressor(Binder& b, const std::string& p, int64_t ratio,
                                          int64_t dim, bool overlap) {
  CompressorWeights c;
  c.ratio = ratio;
  c.dim = dim;
  c.overlap = overlap;
  DSV4_ASSIGN_OR_RETURN(c.wkv, b.linear(p + "wkv.weight"));
  DSV4_ASSIGN_OR_RETURN(c.wgate, b.linear(p + "wgate.weight"));
  DSV4_ASSIGN_OR_RETURN(c.ape, b.vec(p + "ape"));
  DSV4_ASSIGN_OR_RETURN(c.norm, b.vec(p + "norm.weight"));
  return c;
}

Result<Expert> bind_expert(Binder& b, const std::string& p) {
  Expert e;
  DSV4_ASSIGN_OR_RETURN(e.w1, b.linear(p + "w1.weight"));
  DSV4_ASSIGN_OR_RETURN(e.w2, b.linear(p + "w2.weight"));
  DSV4_ASSIGN_OR_RETURN(e.w3, b.linear(p + "w3.weight"));
  return e;
}

}  // namespace

Result<ModelWeights> bind_weights(const formats::ModelConfig& cfg,
                                  const formats::SafetensorsModel& ckpt) {
  using formats::AttentionType;
  if (cfg.family != formats::ModelFamily::deepseek_v4)
    return unsupported(
        fmt::format("{}: model_type '{}' has no forward pass here (only deepseek_v4)", cfg.source,
                    cfg.model_type));
  Binder b(cfg, ckpt);
  ModelWeights w;
  DSV4_ASSIGN_OR_RETURN(w.embed, b.linear("embed.weight"));
  DSV4_ASSIGN_OR_RETURN(w.head, b.linear("head.weight"));
  DSV4_ASSIGN_OR_RETURN(w.norm, b.vec("norm.weight"));
  DSV4_ASSIGN_OR_RETURN(w.hc_head_fn, b.vec("hc_head_fn"));
  DSV4_ASSIGN_OR_RETURN(w.hc_head_base, b.vec("hc_head_base"));
  DSV4_ASSIGN_OR_RETURN(w.hc_head_scale, b.vec("hc_head_scale"));
  w.layers.resize(static_cast<size_t>(cfg.num_hidden_layers));
  for (size_t l = 0; l < w.layers.size(); ++l) {
    LayerWeights& L = w.layers[l];
    const std::string p = fmt::format("layers.{}.", l);
    DSV4_ASSIGN_OR_RETURN(L.attn_norm, b.vec(p + "attn_norm.weight"));
    DSV4_ASSIGN_OR_RETURN(L.ffn_norm, b.vec(p + "ffn_norm.weight"));
    for (auto [which, hcw] : {std::pair{"attn", &L.hc_attn}, std::pair{"ffn", &L.hc_ffn}}) {
      DSV4_ASSIGN_OR_RETURN(hcw->fn, b.vec(p + fmt::format("hc_{}_fn", which)));
      DSV4_ASSIGN_OR_RETURN(hcw->base, b.vec(p + fmt::format("hc_{}_base", which)));
      DSV4_ASSIGN_OR_RETURN(hcw->scale, b.vec(p + fmt::format("hc_{}_scale", which)));
    }
    AttentionWeights& A = L.attn;
    A.type = cfg.layer_types[l];
    DSV4_ASSIGN_OR_RETURN(A.sink, b.vec(p + "attn.attn_sink"));
    DSV4_ASSIGN_OR_RETURN(A.wq_a, b.linear(p + "attn.wq_a.weight"));
    DSV4_ASSIGN_OR_RETURN(A.q_norm, b.vec(p + "attn.q_norm.weight"));
    DSV4_ASSIGN_OR_RETURN(A.wq_b, b.linear(p + "attn.wq_b.weight"));
    DSV4_ASSIGN_OR_RETURN(A.wkv, b.linear(p + "attn.wkv.weight"));
    DSV4_ASSIGN_OR_RETURN(A.kv_norm, b.vec(p + "attn.kv_norm.weight"));
    DSV4_ASSIGN_OR_RETURN(A.wo_a, b.linear(p + "attn.wo_a.weight"));
    DSV4_ASSIGN_OR_RETURN(A.wo_b, b.linear(p + "attn.wo_b.weight"));
    const int64_t ratio = cfg.compress_ratios[l];
    const bool csa = A.type == AttentionType::compressed_sparse_attention;
    if (ratio > 0) {
      DSV4_ASSIGN_OR_RETURN(A.compressor,
                            bind_compressor(b, p + "attn.compressor.", ratio, cfg.head_dim, csa));
    }
    if (csa) {
      IndexerWeights I;
      DSV4_ASSIGN_OR_RETURN(I.wq_b, b.linear(p + "attn.indexer.wq_b.weight"));
      DSV4_ASSIGN_OR_RETURN(I.weights_proj, b.linear(p + "attn.indexer.weights_proj.weight"));
      DSV4_ASSIGN_OR_RETURN(I.compressor, bind_compressor(b, p + "attn.indexer.compressor.", ratio,
                                                          cfg.index_head_dim, true));
      A.indexer = std::move(I);
    }
    FfnWeights& F = L.ffn;
    F.type = cfg.mlp_layer_types[l];
    DSV4_ASSIGN_OR_RETURN(F.gate, b.linear(p + "ffn.gate.weight"));
    if (F.type == formats::MlpType::hash_moe) {
      DSV4_ASSIGN_OR_RETURN(F.tid2eid, b.index(p + "ffn.gate.tid2eid", cfg.n_routed_experts));
    } else {
      DSV4_ASSIGN_OR_RETURN(F.bias, b.vec(p + "ffn.gate.bias"));
    }
    DSV4_ASSIGN_OR_RETURN(F.shared, bind_expert(b, p + "ffn.shared_experts."));
    F.experts.resize(static_cast<size_t>(cfg.n_routed_experts));
    for (size_t e = 0; e < F.experts.size(); ++e) {
      DSV4_ASSIGN_OR_RETURN(F.experts[e], bind_expert(b, p + fmt::format("ffn.experts.{}.", e)));
    }
  }
  return w;
}

}  // namespace dsv4::model
