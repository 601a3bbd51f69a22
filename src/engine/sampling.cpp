// engine/sampling.cpp — see sampling.h for the semantics and their order.
#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include <fmt/format.h>

namespace dsv4::engine {
namespace {

bool finite(float v) {
  return std::isfinite(v);
}

// Candidate order for top-k / top-p: larger value first, lower id on ties (a strict total order,
// so every standard library sorts identically).
template <typename Value>
struct ByValueDesc {
  const Value* v;
  bool operator()(int32_t a, int32_t b) const {
    if (v[a] != v[b]) return v[a] > v[b];
    return a < b;
  }
};

}  // namespace

Status validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !finite(p.temperature)) {
    return invalid_argument(fmt::format("temperature {} must be finite and >= 0", p.temperature));
  }
  if (p.top_k < 0) return invalid_argument(fmt::format("top_k {} must be >= 0", p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return invalid_argument(fmt::format("top_p {} must be in (0, 1]", p.top_p));
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    return invalid_argument(fmt::format("min_p {} must be in [0, 1]", p.min_p));
  }
  if (!(p.repetition_penalty > 0.0f) || !finite(p.repetition_penalty)) {
    return invalid_argument(
        fmt::format("repetition_penalty {} must be finite and > 0", p.repetition_penalty));
  }
  if (!finite(p.presence_penalty)) {
    return invalid_argument(fmt::format("presence_penalty {} must be finite", p.presence_penalty));
  }
  if (!finite(p.frequency_penalty)) {
    return invalid_argument(
        fmt::format("frequency_penalty {} must be finite", p.frequency_penalty));
  }
  return ok_status();
}

Status apply_penalties(std::span<float> logits, std::span<const int32_t> history,
                       const SamplingParams& p) {
  const auto vocab = static_cast<int64_t>(logits.size());
  for (int32_t id : history) {
    if (id < 0 || id >= vocab) {
      return invalid_argument(
          fmt::format("history token id {} outside the vocabulary [0, {})", id, vocab));
    }
  }
  const bool rep = p.repetition_penalty != 1.0f;
  const bool freq = p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
  if (!rep && !freq) return ok_status();
  std::unordered_map<int32_t, int64_t> count;
  count.reserve(history.size());
  for (int32_t id : history) ++count[id];
  for (const auto& [id, n] : count) {
    float& l = logits[static_cast<size_t>(id)];
    if (rep) l = l > 0.0f ? l / p.repetition_penalty : l * p.repetition_penalty;
    if (freq) {
      l -= static_cast<float>(n) * p.frequency_penalty + p.presence_penalty;
    }
  }
  return ok_status();
}

int32_t argmax(std::span<const float> logits) {
  DSV4_CHECK(!logits.empty());
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

Result<Sampler> Sampler::create(const SamplingParams& params) {
  DSV4_RETURN_IF_ERROR(validate(params));
  return Sampler(params);
}

Status Sampler::prepare(std::span<const float> logits, std::span<const int32_t> history) {
  if (logits.empty()) return invalid_argument("sample: empty logits row");
  if (logits.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return invalid_argument("sample: logits row longer than the int32 id range");
  }
  for (float v : logits) {
    if (std::isnan(v)) return invalid_argument("sample: logits contain NaN");
  }
  row_.assign(logits.begin(), logits.end());
  DSV4_RETURN_IF_ERROR(apply_penalties(row_, history, params_));
  bool any = false;
  for (float v : row_) {
    if (std::isnan(v)) return invalid_argument("sample: penalties produced NaN");
    any = any || v != -std::numeric_limits<float>::infinity();
  }
  if (!any) return invalid_argument("sample: every logit is -inf");
  return ok_status();
}

Result<std::vector<Candidate>> Sampler::distribution(std::span<const float> logits,
                                                     std::span<const int32_t> history) {
  DSV4_RETURN_IF_ERROR(prepare(logits, history));
  if (greedy()) return std::vector<Candidate>{{argmax(row_), 1.0}};
  const auto vocab = static_cast<int32_t>(row_.size());
  const float* v = row_.data();

  // Candidates: all finite-probability ids, or the top-k of them.
  order_.clear();
  for (int32_t i = 0; i < vocab; ++i) {
    if (v[i] != -std::numeric_limits<float>::infinity()) order_.push_back(i);
  }
  const auto k = static_cast<size_t>(params_.top_k);
  bool sorted = false;
  if (k > 0 && k < order_.size()) {
    std::nth_element(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(k), order_.end(),
                     ByValueDesc<float>{v});
    order_.resize(k);
    std::sort(order_.begin(), order_.end(), ByValueDesc<float>{v});
    sorted = true;
  }

  // Softmax of logit / T over the candidates (double precision; the max logit gives exp(0)).
  const double inv_t = 1.0 / static_cast<double>(params_.temperature);
  double max_z = -std::numeric_limits<double>::infinity();
  for (int32_t id : order_) max_z = std::max(max_z, static_cast<double>(v[id]) * inv_t);
  prob_.assign(row_.size(), 0.0);
  double sum = 0.0;
  for (int32_t id : order_) {
    const double e = std::exp(static_cast<double>(v[id]) * inv_t - max_z);
    prob_[static_cast<size_t>(id)] = e;
    sum += e;
  }
  for (int32_t id : order_) prob_[static_cast<size_t>(id)] /= sum;

  // Top-p: minimal prefix by (prob desc, id asc) with mass >= top_p.
  if (params_.top_p < 1.0f) {
    auto by_prob = ByValueDesc<double>{prob_.data()};
    auto covered = [&](size_t n) {  // sorts the best n; returns the prefix length reaching top_p
      double mass = 0.0;
      for (size_t i = 0; i < n; ++i) {
        mass += prob_[static_cast<size_t>(order_[i])];
        if (mass >= static_cast<double>(params_.top_p)) return i + 1;
      }
      return size_t{0};
    };
    size_t keep = 0;
    if (!sorted) {
      // Usually a few hundred tokens carry top_p: sort only the best 1024 first (same result as
      // a full sort, the comparator being a total order), fall back to sorting everything.
      const size_t head = std::min<size_t>(1024, order_.size());
      std::nth_element(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(head) - 1,
                       order_.end(), by_prob);
      std::sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(head), by_prob);
      keep = covered(head);
      if (keep == 0) {
        std::sort(order_.begin(), order_.end(), by_prob);
        keep = covered(order_.size());
      }
    } else {
      keep = covered(order_.size());  // top-k order is the probability order
    }
    if (keep == 0) keep = order_.size();  // rounding: the whole mass is below top_p
    order_.resize(keep);
  }

  // Min-p: relative to the most probable candidate.
  if (params_.min_p > 0.0f) {
    double pmax = 0.0;
    for (int32_t id : order_) pmax = std::max(pmax, prob_[static_cast<size_t>(id)]);
    const double floor = static_cast<double>(params_.min_p) * pmax;
    std::erase_if(order_, [&](int32_t id) { return prob_[static_cast<size_t>(id)] < floor; });
  }

  std::sort(order_.begin(), order_.end());
  double mass = 0.0;
  for (int32_t id : order_) mass += prob_[static_cast<size_t>(id)];
  std::vector<Candidate> out;
  out.reserve(order_.size());
  for (int32_t id : order_) out.push_back({id, prob_[static_cast<size_t>(id)] / mass});
  return out;
}

Result<int32_t> Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  if (greedy()) {
    DSV4_RETURN_IF_ERROR(prepare(logits, history));
    return argmax(row_);
  }
  DSV4_ASSIGN_OR_RETURN(std::vector<Candidate> dist, distribution(logits, history));
  DSV4_CHECK(!dist.empty());
  const double u = uniform01(rng_);
  double acc = 0.0;
  for (const Candidate& c : dist) {
    acc += c.prob;
    if (u < acc) return c.id;
  }
  return dist.back().id;  // u within rounding of 1
}

// ---------------------------------------------------------------------------------------------

Status validate(const StopConditions& c) {
  if (c.max_tokens < 0)
    return invalid_argument(fmt::format("max_tokens {} must be >= 0", c.max_tokens));
  for (const auto& s : c.stop_strings) {
    if (s.empty()) return invalid_argument("stop strings must not be empty");
  }
  return ok_status();
}

Result<StopChecker> StopChecker::create(StopConditions conditions) {
  DSV4_RETURN_IF_ERROR(validate(conditions));
  return StopChecker(std::move(conditions));
}

StopChecker::Step StopChecker::push(int32_t id, std::string_view text) {
  Step step;
  if (stopped()) {
    step.stop = reason_;
    return step;
  }
  ++tokens_;
  if (std::find(c_.eos_ids.begin(), c_.eos_ids.end(), id) != c_.eos_ids.end()) {
    step.text = std::move(held_);
    held_.clear();
    reason_ = step.stop = StopReason::eos;
    return step;
  }
  held_ += text;
  // Earliest completion of any stop string (on equal ends, the first listed).
  size_t best_end = std::string::npos, best_begin = 0;
  for (const auto& s : c_.stop_strings) {
    const size_t at = held_.find(s);
    if (at == std::string::npos) continue;
    if (at + s.size() < best_end) {
      best_end = at + s.size();
      best_begin = at;
    }
  }
  if (best_end != std::string::npos) {
    step.text = held_.substr(0, best_begin);
    held_.clear();
    reason_ = step.stop = StopReason::stop_string;
    return step;
  }
  // Hold back the longest tail that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const auto& s : c_.stop_strings) {
    for (size_t len = std::min(s.size() - 1, held_.size()); len > hold; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  step.text = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  if (c_.max_tokens > 0 && tokens_ >= c_.max_tokens) {
    step.text += held_;
    held_.clear();
    reason_ = step.stop = StopReason::max_tokens;
  }
  return step;
}

std::string StopChecker::flush() {
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

}  // namespace dsv4::engine
