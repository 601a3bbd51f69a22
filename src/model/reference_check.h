// model/reference_check.h — compare the engine with a reference fixture, layer by layer.
//
// A fixture directory (tools/reference/make_fixtures.py) holds config.json, the checkpoint in
// the official layout and reference.safetensors written by the transformers implementation:
//   tokens [S] i32, logits [S, vocab] f32, greedy.prompt [P] i32, greedy.tokens [N] i32,
//   layers.<i>.out.{sum,sumsq} [S] f32 — per position, the sum and sum of squares of the
//   residual streams [hc_mult, hidden] after layer i (float64 accumulation) —, and more.
// check_against_reference runs the model on the fixture's tokens and reports the logit error,
// the first layer whose streams diverge (so a failing test names the layer), one-token decode
// against prefill, and the greedy continuation. Used by tests/model and `dsv4 check`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/thread_pool.h"
#include "model/model.h"

namespace dsv4::model {

// Per layer and position, the sum and sum of squares of the hyper-connection streams (the
// statistics the reference fixtures store per layer), filled by the observer it hands out.
struct StreamStats {
  StreamStats(size_t n_layers, size_t n_tokens, size_t n_values);
  LayerObserver observer();                // valid while this object lives
  std::vector<std::vector<double>> sum;    // [layer][position]
  std::vector<std::vector<double>> sumsq;  // [layer][position]
  size_t n_values;                         // hc_mult * hidden_size per position
};

struct LayerDiff {
  int layer = 0;
  // max over positions of |sumsq - ref| / ref and |sum - ref| / sqrt(ref_sumsq * n_values):
  // both relative to the streams' own scale, so they read like a relative error.
  double sumsq_rel = 0, sum_rel = 0;
  int64_t worst_position = 0;
};

struct ReferenceReport {
  std::string fixture;
  int64_t n_tokens = 0;
  double logits_max_abs_diff = 0;  // prefill logits vs reference, all positions
  double ref_logits_max_abs = 0;
  double logits_rel() const { return logits_max_abs_diff / (ref_logits_max_abs + 1e-30); }
  int64_t worst_position = 0;
  std::vector<LayerDiff> layers;
  int first_divergent_layer = -1;  // first layer whose sumsq_rel or sum_rel > layer_tolerance
  double decode_vs_prefill_max_abs = -1;  // token-at-a-time decode vs our prefill (-1: not run)
  std::vector<int32_t> greedy_tokens, ref_greedy_tokens;
  bool greedy_match() const { return greedy_tokens == ref_greedy_tokens; }
};

struct CheckOptions {
  bool decode = true;  // also decode every token one at a time and compare with prefill
  bool greedy = true;  // also run the greedy continuation
  double layer_tolerance = 1e-3;
};

Result<ReferenceReport> check_against_reference(const Model& model, const std::string& fixture_dir,
                                                ThreadPool& pool, const CheckOptions& opts = {});

// Greedy decoding: prefill `prompt`, then pick argmax n times (ties -> lowest id).
Result<std::vector<int32_t>> greedy_generate(const Model& model, std::span<const int32_t> prompt,
                                             size_t n, ThreadPool& pool);

}  // namespace dsv4::model
