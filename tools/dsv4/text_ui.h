// tools/dsv4/text_ui.h — what `dsv4 run -p` and `dsv4 chat` share: sampling / chat options,
// engine loading with a progress line, the prefill progress line and the streamed display of
// answers (content on stdout, reasoning dimmed or on stderr). docs/cli.md describes the behaviour.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/engine.h"
#include "tokenizer/chat.h"

namespace dsv4::cli {

// Options common to `run -p` and `chat`.
struct TextArgs {
  std::string model;
  std::optional<int> n;  // max new tokens; -1: no limit; default kDefaultMaxTokens
  int threads = 0;
  bool pin = false;
  bool prefault = false;
  // KV cache: storage, shared byte budget (e.g. "8G"; empty: unlimited), rewind checkpoints.
  std::string kv = "exact";
  std::string kv_budget;
  int64_t checkpoint_every = 4096;
  std::string kv_load, kv_save;  // KV snapshot files (empty: none)
  // Sampling: greedy unless --temp is given.
  std::optional<float> temp;
  int32_t top_k = 0;
  float top_p = 1.0f, min_p = 0.0f, repeat_penalty = 1.0f;
  float presence_penalty = 0.0f, frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;  // default: random when sampling (printed), 0 when greedy
  std::vector<std::string> stop;
  // Chat template.
  bool think = false;
  std::string effort = "high";
  std::optional<std::string> system;
};

inline constexpr int kDefaultMaxTokens = 512;

// Adds -n, -t, --prefault, the KV options, the sampling options and --stop to `sub`.
void add_generation_options(CLI::App* sub, TextArgs& a);
// Adds --think, --effort, --system.
void add_chat_options(CLI::App* sub, TextArgs& a);

// The sampler settings, validated with the offending option named ("--top-p: ...").
Result<engine::SamplingParams> sampling_params(const TextArgs& a);
// max_tokens for StopConditions (0: no limit). Error for -n < -1.
Result<int64_t> max_new_tokens(const TextArgs& a);
// A conversation with the --system message (if any), --think and --effort applied.
Result<tokenizer::ChatRequest> new_conversation(const TextArgs& a);

// Loads the engine; a progress line on stderr while loading when stderr is a terminal, then
// "loaded DIR: ..." on stderr.
Result<std::unique_ptr<engine::Engine>> load_engine(const TextArgs& a);

// A prefill progress line on stderr ("prefill 640/2,048 tokens  310 t/s  ETA 4.5 s") when stderr
// is a terminal and the prefill spans more than one chunk; erased when done. Empty otherwise.
engine::PrefillProgressFn prefill_progress_line(const engine::Engine& engine);

// Streams parsed chat deltas. Content goes to stdout. Reasoning: on a terminal stdout, dimmed
// (ANSI faint; with NO_COLOR set, between "[reasoning]" and "[/reasoning]" lines); otherwise to
// stderr, so stdout holds only the answer. Tool calls (not rendered by these commands, so only if
// the model invents DSML markup) are printed as one "[tool call NAME ARGS]" line on stdout.
class AnswerPrinter {
 public:
  AnswerPrinter();
  void print(const std::vector<tokenizer::ChatDelta>& deltas);
  // Ends the answer: resets colours, ends an open reasoning block.
  void finish();
  bool printed_content() const { return content_bytes_ > 0; }
  bool content_ends_with_newline() const { return last_content_newline_; }

 private:
  void end_reasoning();
  bool tty_ = false, color_ = false;
  bool in_reasoning_ = false;
  bool reasoning_newline_ = true;
  bool shown_reasoning_ = false;  // on stdout (terminal): content starts after a blank line
  size_t content_bytes_ = 0;
  bool last_content_newline_ = false;
};

// One assistant answer to `conversation` (already prefilled into `session`): generated with the
// chat stream parser (stop strings of the conversation matched in the answer), printed through
// an AnswerPrinter as it streams. max_tokens 0: no limit.
struct ChatAnswer {
  engine::GenerateResult gen;
  tokenizer::ParsedChatMessage message;
  std::string finish;  // why it ended: eos, stop string, max tokens, ...
  bool printed_content = false;
  bool ends_with_newline = false;
};
Result<ChatAnswer> stream_chat_answer(engine::Session& session,
                                      const tokenizer::ChatRequest& conversation,
                                      const engine::SamplingParams& params, int64_t max_tokens);

// Writes `text` to stdout and flushes (streaming).
void write_stdout(std::string_view text);

bool stdout_is_tty();
bool stderr_is_tty();

}  // namespace dsv4::cli
