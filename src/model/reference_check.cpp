#include "model/reference_check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "formats/safetensors.h"

namespace dsv4::model {

namespace {

template <typename T>
Result<std::vector<T>> read_tensor(const formats::SafetensorsFile& f, const std::string& name,
                                   formats::DType dtype) {
  const formats::TensorView* t = f.find(name);
  if (!t) return not_found(fmt::format("{}: no tensor '{}'", f.path(), name));
  if (t->dtype != dtype)
    return invalid_argument(fmt::format("{}: tensor '{}' has dtype {}, expected {}", f.path(), name,
                                        formats::dtype_name(t->dtype), formats::dtype_name(dtype)));
  std::vector<T> v(static_cast<size_t>(t->elements()));
  std::memcpy(v.data(), t->data(), v.size() * sizeof(T));
  return v;
}

size_t argmax(const float* x, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace

Result<std::vector<int32_t>> greedy_generate(const Model& model, std::span<const int32_t> prompt,
                                             size_t n, ThreadPool& pool) {
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  std::vector<float> logits(V);
  SequenceState st = model.new_sequence();
  std::vector<int32_t> out;
  DSV4_RETURN_IF_ERROR(model.forward(prompt, st, pool, logits.data(), /*all_logits=*/false));
  for (size_t i = 0; i < n; ++i) {
    const int32_t next = static_cast<int32_t>(argmax(logits.data(), V));
    out.push_back(next);
    if (i + 1 < n) DSV4_RETURN_IF_ERROR(model.forward({&next, 1}, st, pool, logits.data(), false));
  }
  return out;
}

StreamStats::StreamStats(size_t n_layers, size_t n_tokens, size_t n_values_)
    : sum(n_layers, std::vector<double>(n_tokens)),
      sumsq(n_layers, std::vector<double>(n_tokens)),
      n_values(n_values_) {}

LayerObserver StreamStats::observer() {
  return [this](int layer, int64_t first, int64_t n, const float* streams) {
    for (int64_t i = 0; i < n; ++i) {
      double s = 0, s2 = 0;
      const float* row = streams + static_cast<size_t>(i) * n_values;
      for (size_t j = 0; j < n_values; ++j) {
        s += row[j];
        s2 += static_cast<double>(row[j]) * row[j];
      }
      sum[static_cast<size_t>(layer)][static_cast<size_t>(first + i)] = s;
      sumsq[static_cast<size_t>(layer)][static_cast<size_t>(first + i)] = s2;
    }
  };
}

Result<ReferenceReport> check_against_reference(const Model& model, const std::string& fixture_dir,
                                                ThreadPool& pool, const CheckOptions& opts) {
  const std::string ref_path =
      (std::filesystem::path(fixture_dir) / "reference.safetensors").string();
  DSV4_ASSIGN_OR_RETURN(formats::SafetensorsFile ref, formats::SafetensorsFile::open(ref_path));
  DSV4_ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                        read_tensor<int32_t>(ref, "tokens", formats::DType::i32));
  DSV4_ASSIGN_OR_RETURN(std::vector<float> ref_logits,
                        read_tensor<float>(ref, "logits", formats::DType::f32));
  const size_t S = tokens.size();
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  const size_t L = static_cast<size_t>(model.config().num_hidden_layers);
  const size_t n_values = static_cast<size_t>(model.config().hc_mult * model.config().hidden_size);
  if (ref_logits.size() != S * V)
    return invalid_argument(fmt::format("{}: logits has {} values, expected {} x {}", ref_path,
                                        ref_logits.size(), S, V));
  ReferenceReport rep;
  rep.fixture = fixture_dir;
  rep.n_tokens = static_cast<int64_t>(S);

  // Prefill with a per-layer observer.
  StreamStats stats(L, S, n_values);
  const LayerObserver obs = stats.observer();
  const auto& sums = stats.sum;
  const auto& sumsqs = stats.sumsq;
  std::vector<float> logits(S * V);
  SequenceState st = model.new_sequence();
  DSV4_RETURN_IF_ERROR(model.forward(tokens, st, pool, logits.data(), true, obs));
  for (size_t i = 0; i < S * V; ++i) {
    const double d = std::fabs(static_cast<double>(logits[i]) - ref_logits[i]);
    if (d > rep.logits_max_abs_diff) {
      rep.logits_max_abs_diff = d;
      rep.worst_position = static_cast<int64_t>(i / V);
    }
    rep.ref_logits_max_abs =
        std::max(rep.ref_logits_max_abs, std::fabs(static_cast<double>(ref_logits[i])));
  }
  for (size_t l = 0; l < L; ++l) {
    const std::string p = fmt::format("layers.{}.out.", l);
    auto rs = read_tensor<float>(ref, p + "sum", formats::DType::f32);
    auto rs2 = read_tensor<float>(ref, p + "sumsq", formats::DType::f32);
    if (!rs.ok() || !rs2.ok() || rs->size() != S || rs2->size() != S) continue;
    LayerDiff d;
    d.layer = static_cast<int>(l);
    for (size_t i = 0; i < S; ++i) {
      const double ref2 = (*rs2)[i];
      const double e2 = std::fabs(sumsqs[l][i] - ref2) / (ref2 + 1e-30);
      const double e1 = std::fabs(sums[l][i] - (*rs)[i]) /
                        std::sqrt(ref2 * static_cast<double>(n_values) + 1e-30);
      if (std::max(e1, e2) > std::max(d.sum_rel, d.sumsq_rel))
        d.worst_position = static_cast<int64_t>(i);
      d.sumsq_rel = std::max(d.sumsq_rel, e2);
      d.sum_rel = std::max(d.sum_rel, e1);
    }
    if (rep.first_divergent_layer < 0 &&
        (d.sumsq_rel > opts.layer_tolerance || d.sum_rel > opts.layer_tolerance))
      rep.first_divergent_layer = static_cast<int>(l);
    rep.layers.push_back(d);
  }

  if (opts.decode) {
    SequenceState ds = model.new_sequence();
    std::vector<float> one(V);
    double worst = 0;
    for (size_t t = 0; t < S; ++t) {
      DSV4_RETURN_IF_ERROR(model.forward({&tokens[t], 1}, ds, pool, one.data(), false));
      for (size_t v = 0; v < V; ++v)
        worst = std::max(worst, std::fabs(static_cast<double>(one[v]) - logits[t * V + v]));
    }
    rep.decode_vs_prefill_max_abs = worst;
  }
  if (opts.greedy && ref.find("greedy.prompt") && ref.find("greedy.tokens")) {
    DSV4_ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                          read_tensor<int32_t>(ref, "greedy.prompt", formats::DType::i32));
    DSV4_ASSIGN_OR_RETURN(rep.ref_greedy_tokens,
                          read_tensor<int32_t>(ref, "greedy.tokens", formats::DType::i32));
    DSV4_ASSIGN_OR_RETURN(rep.greedy_tokens,
                          greedy_generate(model, prompt, rep.ref_greedy_tokens.size(), pool));
  }
  return rep;
}

}  // namespace dsv4::model
