// engine/engine.h — the public boundary: text and token ids in, text out. The CLI (`dsv4 run`,
// `dsv4 chat`) and the HTTP server use this header and never see a tensor.
//
// Purpose:
//   Engine  — an immutable loaded model directory: the DeepSeek-V4 checkpoint (config.json +
//             safetensors, mapped in place), its tokenizer (tokenizer.json [+
//             tokenizer_config.json] from the same directory) and the worker threads of the forward
//             pass.
//   Session — one timeline: the token ids fed to the model so far and the model state (KV cache)
//             they produced. prefill() appends prompt tokens, generate() samples and streams text,
//             prefill_chat() turns a whole conversation into the next turn's prompt while keeping
//             the KV of every token the session already holds.
//
// Invariants:
//   - A Session's timeline is tokens(); the first evaluated() of them are in the model state. The
//     rest is at most the id sampled last (generate() stops before running it), evaluated at the
//     start of the next prefill()/generate()/set_prompt(). So every token the model produced is
//     part of the timeline, including the EOS that ended an answer: a following chat turn re-uses
//     it.
//   - Sampled ids always name a token of the tokenizer (ids past the tokenizer's vocabulary —
//     padding rows of the embedding — and ids that name no token are never sampled), so decoding
//     generated text cannot fail.
//   - generate() is deterministic for given SamplingParams (seed included), prompt and thread
//     count: the sampler's random stream is fixed by the standard (engine/sampling.h).
//   - Sessions of one Engine share its thread pool: at most one Session may run
//   prefill()/generate()
//     at a time (a server serialises them; batching several sequences is a later step).
//   - The Engine must outlive its Sessions.
//
// KV reuse between chat turns (prefill_chat / set_prompt): the new prompt's ids are compared with
// the timeline; the longest common prefix (LCP) is kept and only the rest is prefilled. If the
// model state holds tokens past the LCP (the conversation changed, or earlier text re-tokenizes
// differently), the state is rewound exactly (model::Model::rewind): back to the last rewind
// checkpoint at or before the LCP (kv/cache.h; every EngineOptions::checkpoint_interval tokens),
// and the tokens from there on are prefilled again. The result is bit-identical to a fresh
// prefill of the prompt (tested). DeepSeek-V4's template drops the reasoning of earlier turns
// (docs/chat.md §3), so in thinking mode a turn rewinds to the end of the previous user message;
// in non-thinking mode a turn prefills only the EOS, the new user message and the generation
// prompt.
//
// Prefix cache across sessions: when a prompt has been evaluated (set_prompt, prefill_chat,
// load_kv), the session publishes a copy-on-write fork of its state to the engine (one entry per
// session, EngineOptions::prefix_cache_entries in all, least recently used dropped first; entries
// outlive their sessions). set_prompt starts from whichever state — its own or an entry's — keeps
// the most tokens of the new prompt (the longest common prefix, cut back to a rewind checkpoint
// when the state holds more than that). Forks share every full KV block; only the window rings
// and compressor state are copied. When the KV budget is full, entries are dropped before a
// prefill fails.
//
// Non-goals: batching several sessions in one forward pass, speculative decoding (MTP), tool
// execution. Rejected alternative: exposing
// model::SequenceState here — the server must not depend on how the cache stores its rows.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "engine/sampling.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::engine {

struct EngineOptions {
  int threads = 0;             // forward-pass threads; <= 0: all hardware threads
  bool pin_threads = false;    // ThreadPool pin: the thread that creates the engine (run forward()
                               // from it) and each worker get their own CPU
  int64_t prefill_chunk = 64;  // tokens per forward() call in prefill (progress granularity), >= 1
  bool prefault = false;       // read every weight page once at load (progress reported), so the
                               // first prefill does not pay for page faults
  // How sessions store their KV cache (kv/cache.h): `exact` keeps f32 rows (what the transformers
  // reference computes), `official` DeepSeek's deployed records (FP8 KV + BF16 RoPE dims, FP4
  // indexer keys: ~4x smaller, the official model's numerics for attention).
  enum class KvStorage { exact, official };
  KvStorage kv_storage = KvStorage::exact;
  // Byte budget of the KV pool all sessions of the engine share (0: unlimited). A prefill that
  // would exceed it fails with out_of_memory and leaves the session empty; nothing else breaks.
  uint64_t kv_budget_bytes = 0;
  // Tokens between rewind checkpoints (rounded up to a multiple of every compression ratio). A
  // rewind re-runs at most this many tokens; each checkpoint costs one window ring per layer
  // (V4-Flash official: ~3.9 MiB). 0: no checkpoints (a rewind re-runs from token 0).
  int64_t checkpoint_interval = 4096;
  // Prefix cache (cross-session KV reuse): how many prompt states are kept as copy-on-write forks
  // for later sessions to continue from (0: off). See the header comment.
  int prefix_cache_entries = 8;
};

// Load stages, in order: "tokenizer", "model" (config + checkpoint mapped and validated),
// "prefault" (only with EngineOptions::prefault; done/total are weight bytes, reported about
// every 64 MiB).
struct LoadProgress {
  std::string_view stage;
  uint64_t done = 0, total = 0;
  double seconds = 0;  // since Engine::load began
};
using LoadProgressFn = std::function<void(const LoadProgress&)>;

// What the CLI prints about a loaded model (no tensors).
struct ModelSummary {
  std::string dir;
  int64_t layers = 0, hidden_size = 0, vocab_size = 0;  // the model's (embedding rows)
  int64_t routed_experts = 0, experts_per_token = 0;
  int64_t max_context = 0;      // max_position_embeddings
  int32_t tokenizer_vocab = 0;  // ids the tokenizer names (<= vocab_size)
  uint64_t weight_bytes = 0;    // tensor bytes of the checkpoint
  int threads = 0;
  bool pinned = false;  // ThreadPool::pinned()
};

class Session;

class Engine {
 public:
  // Loads `model_dir`: config.json, the safetensors checkpoint and tokenizer.json (+ optional
  // tokenizer_config.json). Errors name the file: not_found for a missing directory, config.json,
  // weights or tokenizer.json; parse_error for a broken one; invalid_argument when the tokenizer's
  // vocabulary does not fit the model's vocab_size or the options are out of range.
  static Result<std::unique_ptr<Engine>> load(const std::string& model_dir,
                                              const EngineOptions& options = {},
                                              const LoadProgressFn& progress = {});
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  ~Engine();

  const tokenizer::Tokenizer& tokenizer() const;
  const ModelSummary& summary() const;
  const EngineOptions& options() const;
  // Ids that end generation by default: the tokenizer's eos_token (and the config's
  // eos_token_id where it names a tokenizer token). Sorted, unique, possibly empty.
  const std::vector<int32_t>& eos_ids() const;

  std::unique_ptr<Session> new_session() const;

 private:
  friend class Session;
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct PrefillProgress {
  int64_t done = 0, total = 0;  // tokens of this prefill evaluated so far / to evaluate
  double seconds = 0;           // since this prefill began
  double tokens_per_second() const { return seconds > 0 ? static_cast<double>(done) / seconds : 0; }
  // Remaining seconds at the rate so far (0 before the first chunk).
  double eta_seconds() const {
    return done > 0 ? seconds * static_cast<double>(total - done) / static_cast<double>(done) : 0;
  }
};
// Called after every chunk of EngineOptions::prefill_chunk tokens (and once at the end).
using PrefillProgressFn = std::function<void(const PrefillProgress&)>;

// Receives each piece of generated text that is safe to show (complete UTF-8 characters, no part
// of a stop string). Return false to stop generating (FinishReason::cancelled).
using TextFn = std::function<bool(std::string_view text)>;

enum class FinishReason {
  eos,           // an EOS id was sampled (its text is not shown)
  stop_string,   // a StopConditions stop string completed (it and what follows are not shown)
  max_tokens,    // StopConditions::max_tokens ids were sampled
  context_full,  // the timeline reached the model's max_position_embeddings
  cancelled,     // the TextFn returned false
};
std::string_view finish_reason_name(FinishReason reason);

struct GenerateResult {
  std::vector<int32_t> tokens;  // sampled ids in order (the EOS or last id included)
  std::string text;             // everything passed to the TextFn, concatenated
  FinishReason finish = FinishReason::max_tokens;
  int64_t prefilled = 0;       // pending timeline tokens evaluated before the first sample
  double prefill_seconds = 0;  // time spent on those
  double seconds = 0;          // sampling + decode time (first sample to the end)
  double tokens_per_second() const {
    return seconds > 0 ? static_cast<double>(tokens.size()) / seconds : 0;
  }
};

// How a prompt was matched against the timeline (set_prompt / prefill_chat).
struct PromptReuse {
  int64_t prompt_tokens = 0;       // ids of the new prompt
  int64_t common_prefix = 0;       // ids the prompt shares with the evaluated timeline
  int64_t reused = 0;              // of those, kept in the model state (not recomputed)
  int64_t prefilled = 0;           // evaluated now (prompt_tokens - reused)
  int64_t rewound = 0;             // evaluated tokens dropped from the state by a rewind (0: none)
  bool fresh_state = false;        // the state was rewound to token 0 (nothing reused)
  bool from_prefix_cache = false;  // continued from another request's state (prefix cache)
  double seconds = 0;              // prefill time
  double tokens_per_second() const {
    return seconds > 0 ? static_cast<double>(prefilled) / seconds : 0;
  }
};

class Session {
 public:
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  // Appends `tokens` to the timeline and evaluates everything pending. Errors: invalid_argument
  // for an id outside the tokenizer's vocabulary (timeline unchanged), context full, or a model
  // error (the session is then reset to an empty timeline).
  Status prefill(std::span<const int32_t> tokens, const PrefillProgressFn& progress = {});

  // Makes the timeline equal `tokens`, keeping the model state of the longest common prefix
  // (see the header comment); evaluates the rest. Same errors as prefill().
  Result<PromptReuse> set_prompt(std::span<const int32_t> tokens,
                                 const PrefillProgressFn& progress = {});

  // The ids of `conversation` rendered with the DeepSeek-V4 template (render_chat; generation
  // prompt included). While the prompt agrees with the timeline, a plain-text segment that is
  // exactly the text the timeline's ids showed (as generate() streams it with skip_special=false:
  // special tokens spelled out, ill-formed UTF-8 as U+FFFD) keeps those ids: an answer stays
  // tokenized as it was generated, where encoding its text again would split it differently or
  // could not reproduce it at all. Other text: Tokenizer::encode without added-token matching,
  // special ranges as their token ids (as tokenizer::encode_prompt); with an empty timeline the
  // result equals encode_prompt(render_chat(conversation)).
  Result<std::vector<int32_t>> chat_prompt(const tokenizer::ChatRequest& conversation) const;

  // set_prompt(chat_prompt(conversation)).
  Result<PromptReuse> prefill_chat(const tokenizer::ChatRequest& conversation,
                                   const PrefillProgressFn& progress = {});

  // Samples until a stop condition; streams text through `on_text` (may be empty). Sampled ids
  // join the timeline. stop.eos_ids empty: Engine::eos_ids() are used. Decoding skips special
  // tokens' text when `skip_special` (the chat parser needs only the non-special markers).
  // Errors: invalid_argument for bad params/stop (nothing happens), failed_precondition for an
  // empty timeline, or a model error (the session is then reset).
  Result<GenerateResult> generate(const SamplingParams& params, const StopConditions& stop,
                                  const TextFn& on_text = {}, bool skip_special = false);

  // Empties the timeline and the model state.
  void reset();

  // KV snapshots on disk (kv/snapshot.h format, docs/kv-storage.md): save_kv writes the state of
  // the evaluated timeline atomically; load_kv replaces the timeline by the snapshot's tokens,
  // all evaluated (the first generate() re-runs the last one for its logits). Errors: io_error;
  // failed_precondition for an empty session; a snapshot of another model, other weights,
  // another KV storage (--kv), a truncated or corrupted file is rejected and changes nothing.
  Status save_kv(const std::string& path) const;
  Status load_kv(const std::string& path);

  std::span<const int32_t> tokens() const;
  int64_t evaluated() const;  // tokens of the timeline in the model state
  const Engine& engine() const;
  // KV cache bytes this session's state holds (records in use, layout.h's count) and reserves
  // (whole blocks, plus rewind checkpoints).
  uint64_t kv_allocated_bytes() const;
  uint64_t kv_reserved_bytes() const;

 private:
  friend class Engine;
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::engine
