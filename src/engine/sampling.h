// engine/sampling.h — choosing the next token from a logits row, and deciding when to stop.
//
// Purpose: the sampler used by `dsv4 run` / `dsv4 chat` / the server. Given a logits row
// [vocab] f32 and the token history it applies, in this order (the order of Hugging Face's
// logits processors and llama.cpp's penalty stage):
//   1. repetition penalty (CTRL / HF rule): for each distinct id in the history, a positive
//      logit is divided by the penalty, a negative (or zero) one multiplied by it;
//   2. frequency and presence penalties (OpenAI rule): logit -= count * frequency
//      + (count > 0) * presence, count = occurrences of the id in the history;
//   3. greedy (temperature == 0 or top_k == 1): argmax, lowest id on ties, no random draw;
//   4. temperature: logits / T;
//   5. top-k: the k largest logits (ties: lower id first);
//   6. softmax over what is left (double precision);
//   7. top-p: the minimal prefix of the candidates sorted by (probability desc, id asc) whose
//      mass reaches top_p (the token that crosses top_p is kept);
//   8. min-p: drop candidates with probability < min_p * (largest probability);
//   9. draw u in [0, 1) and walk the kept candidates in ascending id order, accumulating their
//      probabilities renormalized to the kept mass; the first candidate whose running sum exceeds
//      u * mass is the token.
// The random stream is std::mt19937_64 seeded with `seed` (its output sequence is fixed by the
// C++ standard); u = (next() >> 11) * 2^-53. No std::*_distribution is used (their output is
// implementation-defined), so a seed gives the same tokens on every standard library. Exact
// reproducibility across machines additionally needs the same std::exp results (libm): a
// different last bit can only change a draw whose u falls within ~1e-16 of a boundary.
//
// Stop conditions (StopChecker): EOS ids, stop strings matched on the decoded text with the
// tail that could still begin a stop string held back (never emitted if the stop string
// completes), and a token budget.
//
// Non-goals: typical-p, mirostat, DRY, logit bias, beam search, constrained decoding.
// Invariants: Sampler is not thread-safe (it owns the RNG and a scratch row); one per sequence.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace dsv4::engine {

struct SamplingParams {
  float temperature = 1.0f;         // >= 0; 0 means greedy
  int32_t top_k = 0;                // >= 0; 0 means no top-k
  float top_p = 1.0f;               // in (0, 1]; 1 means no top-p
  float min_p = 0.0f;               // in [0, 1]; 0 means no min-p
  float repetition_penalty = 1.0f;  // > 0; 1 means none
  float presence_penalty = 0.0f;    // finite; 0 means none
  float frequency_penalty = 0.0f;   // finite; 0 means none
  uint64_t seed = 0;
};

// invalid_argument naming the field for a value outside the ranges above (NaN included).
Status validate(const SamplingParams& params);

// Steps 1-2 in place. `history` ids must lie in [0, logits.size()) (invalid_argument otherwise).
Status apply_penalties(std::span<float> logits, std::span<const int32_t> history,
                       const SamplingParams& params);

// Index of the largest value, lowest index on ties. DSV4_CHECKs that `logits` is non-empty.
int32_t argmax(std::span<const float> logits);

// Uniform double in [0, 1) from one 64-bit draw: the top 53 bits scaled by 2^-53.
double uniform01(std::mt19937_64& rng);

struct Candidate {
  int32_t id = 0;
  double prob = 0.0;  // renormalized over the kept candidates
};

class Sampler {
 public:
  static Result<Sampler> create(const SamplingParams& params);

  // Next token for `logits` [vocab] f32 (not modified). Errors: empty row, a NaN logit, every
  // logit -inf after penalties, a history id outside the vocabulary.
  Result<int32_t> sample(std::span<const float> logits, std::span<const int32_t> history = {});

  // The distribution sample() draws from (steps 1-8): kept candidates in ascending id order with
  // probabilities summing to 1. Greedy settings give the argmax alone with probability 1.
  Result<std::vector<Candidate>> distribution(std::span<const float> logits,
                                              std::span<const int32_t> history = {});

  const SamplingParams& params() const { return params_; }
  bool greedy() const { return params_.temperature == 0.0f || params_.top_k == 1; }

 private:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  Status prepare(std::span<const float> logits, std::span<const int32_t> history);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> row_;      // [vocab] penalized logits
  std::vector<int32_t> order_;  // scratch: candidate ids
  std::vector<double> prob_;    // scratch: probability per candidate
};

enum class StopReason { none, eos, stop_string, max_tokens };

struct StopConditions {
  std::vector<int32_t> eos_ids = {};
  std::vector<std::string> stop_strings = {};  // non-empty strings
  int64_t max_tokens = 0;                      // >= 0; 0 means no limit
};

Status validate(const StopConditions& conditions);

// Tracks one generation. Feed each sampled token with the text it completes (e.g. from
// tokenizer::StreamDecoder); get back the text that is safe to show.
//   - An EOS id stops; its own text is not shown, held-back text is released.
//   - A stop string stops at its first completion (earliest end; on equal ends the first in the
//     list); text before the stop string is shown, the stop string and anything after are not.
//   - Otherwise the longest tail that is a proper prefix of some stop string is held back until
//     later text decides it.
//   - The token budget stops after the max_tokens-th token (its text, and the held tail, shown).
class StopChecker {
 public:
  static Result<StopChecker> create(StopConditions conditions);

  struct Step {
    std::string text;  // to show now
    StopReason stop = StopReason::none;
  };
  Step push(int32_t id, std::string_view text);
  // Generation ended for another reason (e.g. context full): releases the held tail.
  std::string flush();

  bool stopped() const { return reason_ != StopReason::none; }
  StopReason reason() const { return reason_; }
  int64_t tokens() const { return tokens_; }

 private:
  explicit StopChecker(StopConditions c) : c_(std::move(c)) {}
  StopConditions c_;
  std::string held_;
  int64_t tokens_ = 0;
  StopReason reason_ = StopReason::none;
};

}  // namespace dsv4::engine
