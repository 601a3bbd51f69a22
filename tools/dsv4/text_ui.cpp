// tools/dsv4/text_ui.cpp — shared pieces of `dsv4 run -p` and `dsv4 chat` (text_ui.h).
#include "text_ui.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "base/timer.h"
#include "base/units.h"

namespace dsv4::cli {

bool stdout_is_tty() {
  return isatty(STDOUT_FILENO) == 1;
}
bool stderr_is_tty() {
  return isatty(STDERR_FILENO) == 1;
}

void write_stdout(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

void add_generation_options(CLI::App* sub, TextArgs& a) {
  sub->add_option(
      "-n,--max-tokens", a.n,
      fmt::format("Most tokens to generate (default {}; -1: until EOS)", kDefaultMaxTokens));
  sub->add_option("-t,--threads", a.threads, "Threads (default: all cores)");
  sub->add_flag("--pin", a.pin,
                "Pin each thread to its own CPU (of those this process may use); off by default, "
                "so that threads can move away from CPUs other programs keep busy");
  sub->add_flag("--prefault", a.prefault, "Read all weights into memory at load (progress shown)");
  sub->add_option("--kv", a.kv,
                  "KV cache storage: exact (f32 rows, the reference's math) or official "
                  "(DeepSeek's FP8/BF16 records and FP4 indexer keys, ~4x smaller)")
      ->capture_default_str();
  sub->add_option("--kv-load", a.kv_load,
                  "Start from a KV snapshot (saved with --kv-save by the same model): the prompt "
                  "reuses its longest common prefix with the snapshot's tokens");
  sub->add_option(
      "--kv-save", a.kv_save,
      "Save a KV snapshot to this file (atomic write): run saves the prompt's KV (all but its last "
      "token, so every prompt that starts with it reuses all of it); chat saves the "
      "session at the end");
  sub->add_option("--kv-budget", a.kv_budget,
                  "Most bytes the KV cache may hold, e.g. 8G (binary units; default: no limit)");
  sub->add_option("--checkpoint-every", a.checkpoint_every,
                  "Tokens between KV rewind checkpoints (0: none; a rewind re-runs at most this "
                  "many tokens)")
      ->capture_default_str();
  sub->add_option("--temp", a.temp, "Sampling temperature (default: greedy, no sampling)");
  sub->add_option("--top-k", a.top_k, "Keep the K most likely tokens (0: off; with --temp)");
  sub->add_option("--top-p", a.top_p, "Nucleus sampling mass in (0, 1] (1: off; with --temp)");
  sub->add_option("--min-p", a.min_p, "Drop tokens below M x the top probability (0: off)");
  sub->add_option("--repeat-penalty", a.repeat_penalty, "Repetition penalty (1: off)");
  sub->add_option("--presence-penalty", a.presence_penalty, "Presence penalty (0: off)");
  sub->add_option("--frequency-penalty", a.frequency_penalty, "Frequency penalty (0: off)");
  sub->add_option("--seed", a.seed, "Random seed for sampling (default: random, printed)");
  sub->add_option("--stop", a.stop, "Stop when the answer contains STR (repeatable)")
      ->allow_extra_args(false);
}

void add_chat_options(CLI::App* sub, TextArgs& a) {
  sub->add_flag("--think", a.think, "Thinking mode: the model reasons before answering");
  sub->add_option("--effort", a.effort,
                  "Reasoning effort in thinking mode: low, high (default), max");
  sub->add_option("--system", a.system, "System message");
}

Result<engine::SamplingParams> sampling_params(const TextArgs& a) {
  engine::SamplingParams p;
  p.temperature = a.temp.value_or(0.0f);
  p.top_k = a.top_k;
  p.top_p = a.top_p;
  p.min_p = a.min_p;
  p.repetition_penalty = a.repeat_penalty;
  p.presence_penalty = a.presence_penalty;
  p.frequency_penalty = a.frequency_penalty;
  if (a.seed) {
    p.seed = *a.seed;
  } else if (p.temperature > 0.0f) {
    p.seed = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
  }
  // Check each field alone so the message names the option that carries it.
  struct Field {
    const char* option;
    void (*set)(engine::SamplingParams&, const engine::SamplingParams&);
  };
  static constexpr Field kFields[] = {
      {"--temp", [](auto& d, const auto& s) { d.temperature = s.temperature; }},
      {"--top-k", [](auto& d, const auto& s) { d.top_k = s.top_k; }},
      {"--top-p", [](auto& d, const auto& s) { d.top_p = s.top_p; }},
      {"--min-p", [](auto& d, const auto& s) { d.min_p = s.min_p; }},
      {"--repeat-penalty",
       [](auto& d, const auto& s) { d.repetition_penalty = s.repetition_penalty; }},
      {"--presence-penalty",
       [](auto& d, const auto& s) { d.presence_penalty = s.presence_penalty; }},
      {"--frequency-penalty",
       [](auto& d, const auto& s) { d.frequency_penalty = s.frequency_penalty; }},
  };
  for (const Field& f : kFields) {
    engine::SamplingParams one;
    f.set(one, p);
    Status s = engine::validate(one);
    if (!s.ok()) return invalid_argument(fmt::format("{}: {}", f.option, s.message()));
  }
  DSV4_RETURN_IF_ERROR(engine::validate(p));
  return p;
}

Result<int64_t> max_new_tokens(const TextArgs& a) {
  const int n = a.n.value_or(kDefaultMaxTokens);
  if (n < -1) return invalid_argument(fmt::format("-n {}: must be >= 0, or -1 for no limit", n));
  for (const auto& s : a.stop) {
    if (s.empty()) return invalid_argument("--stop: the stop string is empty");
  }
  return n;
}

Result<tokenizer::ChatRequest> new_conversation(const TextArgs& a) {
  tokenizer::ChatRequest c;
  c.thinking = a.think;
  if (a.effort == "low") {
    c.reasoning_effort = tokenizer::ReasoningEffort::low;
  } else if (a.effort == "high") {
    c.reasoning_effort = tokenizer::ReasoningEffort::high;
  } else if (a.effort == "max") {
    c.reasoning_effort = tokenizer::ReasoningEffort::max;
  } else {
    return invalid_argument(fmt::format("--effort {}: expected low, high or max", a.effort));
  }
  c.stop = a.stop;
  if (a.system) {
    tokenizer::ChatMessage m;
    m.role = tokenizer::ChatRole::system;
    m.content = *a.system;
    c.messages.push_back(std::move(m));
  }
  return c;
}

namespace {

// Erases the current terminal line on stderr.
void clear_line() {
  std::fputs("\r\x1b[K", stderr);
}

}  // namespace

Result<std::unique_ptr<engine::Engine>> load_engine(const TextArgs& a) {
  engine::EngineOptions opts;
  opts.threads = a.threads;
  opts.pin_threads = a.pin;
  opts.prefault = a.prefault;
  if (a.kv == "exact") {
    opts.kv_storage = engine::EngineOptions::KvStorage::exact;
  } else if (a.kv == "official") {
    opts.kv_storage = engine::EngineOptions::KvStorage::official;
  } else {
    return invalid_argument(fmt::format("--kv: '{}' is not a storage (exact, official)", a.kv));
  }
  if (!a.kv_budget.empty()) {
    Result<uint64_t> budget = parse_count(a.kv_budget);
    if (!budget.ok()) return invalid_argument("--kv-budget: " + budget.status().message());
    opts.kv_budget_bytes = *budget;
  }
  if (a.checkpoint_every < 0) {
    return invalid_argument(fmt::format("--checkpoint-every: {} must be >= 0", a.checkpoint_every));
  }
  opts.checkpoint_interval = a.checkpoint_every;
  engine::LoadProgressFn progress;
  const bool tty = stderr_is_tty();
  if (tty) {
    progress = [&a, last = std::chrono::steady_clock::time_point{}](
                   const engine::LoadProgress& p) mutable {
      const auto now = std::chrono::steady_clock::now();
      if (p.stage == "prefault") {
        if (p.done != p.total && now - last < std::chrono::milliseconds(100)) return;
        last = now;
        const double rate = p.seconds > 0 ? static_cast<double>(p.done) / p.seconds : 0;
        const double eta = rate > 0 ? static_cast<double>(p.total - p.done) / rate : 0;
        const int pct = p.total ? static_cast<int>(100.0 * static_cast<double>(p.done) /
                                                   static_cast<double>(p.total))
                                : 100;
        clear_line();
        std::fprintf(stderr, "loading %s: reading weights %3d%%  %s / %s  %.0f MB/s  ETA %.0f s",
                     a.model.c_str(), pct, format_bytes(static_cast<double>(p.done)).c_str(),
                     format_bytes(static_cast<double>(p.total)).c_str(), rate / 1e6, eta);
      } else {
        clear_line();
        std::fprintf(stderr, "loading %s: %.*s...", a.model.c_str(),
                     static_cast<int>(p.stage.size()), p.stage.data());
      }
      std::fflush(stderr);
    };
  }
  Timer timer;
  auto e = engine::Engine::load(a.model, opts, progress);
  if (tty) clear_line();
  if (!e.ok()) return e.status();
  const engine::ModelSummary& s = (*e)->summary();
  std::fprintf(stderr,
               "loaded %s: %lld layers, hidden %lld, %lld experts (%lld active), vocab %lld, "
               "%s of weights, %d threads%s, in %.2f s\n",
               a.model.c_str(), static_cast<long long>(s.layers),
               static_cast<long long>(s.hidden_size), static_cast<long long>(s.routed_experts),
               static_cast<long long>(s.experts_per_token), static_cast<long long>(s.vocab_size),
               format_bytes(static_cast<double>(s.weight_bytes)).c_str(), s.threads,
               s.pinned ? " (pinned)" : "", timer.seconds());
  return std::move(e).value();
}

engine::PrefillProgressFn prefill_progress_line(const engine::Engine& engine) {
  if (!stderr_is_tty()) return {};
  const int64_t chunk = engine.options().prefill_chunk;
  return [chunk, last = std::chrono::steady_clock::time_point{}](
             const engine::PrefillProgress& p) mutable {
    if (p.total <= chunk) return;
    if (p.done == p.total) {
      clear_line();
      std::fflush(stderr);
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::milliseconds(100)) return;
    last = now;
    clear_line();
    std::fprintf(stderr, "prefill %s/%s tokens  %.0f t/s  ETA %.1f s",
                 format_count(static_cast<uint64_t>(p.done)).c_str(),
                 format_count(static_cast<uint64_t>(p.total)).c_str(), p.tokens_per_second(),
                 p.eta_seconds());
    std::fflush(stderr);
  };
}

// ---------------------------------------------------------------------------- AnswerPrinter

AnswerPrinter::AnswerPrinter() : tty_(stdout_is_tty()) {
  const char* no_color = std::getenv("NO_COLOR");
  color_ = tty_ && (no_color == nullptr || no_color[0] == '\0');
}

void AnswerPrinter::end_reasoning() {
  if (!in_reasoning_) return;
  in_reasoning_ = false;
  const char* end = reasoning_newline_ ? "" : "\n";
  if (!tty_) {
    std::fputs(end, stderr);
    std::fflush(stderr);
  } else if (color_) {
    write_stdout(std::string("\x1b[0m") + end);
  } else {
    write_stdout(std::string(end) + "[/reasoning]\n");
  }
}

void AnswerPrinter::print(const std::vector<tokenizer::ChatDelta>& deltas) {
  using Kind = tokenizer::ChatDelta::Kind;
  for (const tokenizer::ChatDelta& d : deltas) {
    if (d.kind == Kind::reasoning) {
      if (d.text.empty()) continue;
      if (!in_reasoning_) {
        in_reasoning_ = true;
        reasoning_newline_ = true;
        if (tty_) {
          write_stdout(color_ ? "\x1b[2m" : "[reasoning]\n");
          shown_reasoning_ = true;
        }
      }
      if (tty_) {
        write_stdout(d.text);
      } else {
        std::fwrite(d.text.data(), 1, d.text.size(), stderr);
        std::fflush(stderr);
      }
      reasoning_newline_ = d.text.back() == '\n';
      continue;
    }
    end_reasoning();
    std::string text =
        d.kind == Kind::content
            ? d.text
            : fmt::format("\n[tool call {} {}{}]\n", d.tool_call.name, d.tool_call.arguments,
                          d.tool_call.complete ? "" : " (incomplete)");
    if (text.empty()) continue;
    if (shown_reasoning_ && content_bytes_ == 0) write_stdout("\n");
    write_stdout(text);
    content_bytes_ += text.size();
    last_content_newline_ = text.back() == '\n';
  }
}

void AnswerPrinter::finish() {
  end_reasoning();
}

Result<ChatAnswer> stream_chat_answer(engine::Session& session,
                                      const tokenizer::ChatRequest& conversation,
                                      const engine::SamplingParams& params, int64_t max_tokens) {
  tokenizer::ChatStreamParser parser(tokenizer::chat_parse_options(conversation));
  AnswerPrinter printer;
  engine::StopConditions stop;
  stop.max_tokens = max_tokens;
  // Special tokens other than EOS (which ends generation unseen) are shown as spelled: the answer
  // recorded in the conversation then re-renders to exactly the ids the model generated, so the
  // next turn re-uses them (Session::chat_prompt). A trained model does not emit them mid-answer.
  DSV4_ASSIGN_OR_RETURN(engine::GenerateResult gen,
                        session.generate(params, stop, [&](std::string_view text) {
                          printer.print(parser.push(text));
                          return !parser.done();
                        }));
  printer.print(parser.finish());
  printer.finish();
  ChatAnswer a;
  a.finish = std::string(engine::finish_reason_name(gen.finish));
  if (gen.finish == engine::FinishReason::cancelled) {
    a.finish = parser.message().stop_sequence ? "stop string" : "end of tool calls";
  }
  a.gen = std::move(gen);
  a.message = parser.message();
  a.printed_content = printer.printed_content();
  a.ends_with_newline = printer.content_ends_with_newline();
  return a;
}

}  // namespace dsv4::cli
