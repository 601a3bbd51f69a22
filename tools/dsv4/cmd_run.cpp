// dsv4 run -m MODEL_DIR -p "prompt" [-n N] [sampling options] [--raw] [--think] [--system TEXT]
//   — text in, streamed text out, through the engine (engine/engine.h); docs/cli.md.
// dsv4 run -m MODEL_DIR --tokens 1,2,3 -n 32
//   — greedy generation from token ids with the top logits of each step (no tokenizer needed;
//     the reference fixtures have none). Its output format is fixed: tests parse it.
#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <optional>

#include "base/thread_pool.h"
#include "base/timer.h"
#include "base/units.h"
#include "command.h"
#include "engine/engine.h"
#include "model/model.h"
#include "text_ui.h"
#include "tokenizer/chat.h"

namespace dsv4::cli {
namespace {

struct RunArgs {
  TextArgs text;  // model, -n, threads, sampling, chat options
  std::string tokens;
  std::optional<std::string> prompt;
  bool raw = false;
  int top = 5;
};

Result<std::vector<int32_t>> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item.empty() || item.size() > 10 ||
        item.find_first_not_of("0123456789") != std::string::npos)
      return invalid_argument(
          fmt::format("--tokens: '{}' is not a token id (expected e.g. 1,2,3)", item));
    const long long v = std::stoll(item);
    if (v > INT32_MAX) return invalid_argument(fmt::format("--tokens: {} is too large", item));
    ids.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

// --tokens mode: ids in, greedy ids and top logits out (the model alone, no tokenizer).
int run_tokens(const RunArgs& a) {
  const int n = a.text.n.value_or(32);
  auto ids = parse_ids(a.tokens);
  if (!ids.ok()) return report_error(ids.status());
  if (n < 0) return report_error(invalid_argument("-n must be >= 0"));
  Timer load_timer;
  auto model = model::Model::load(a.text.model);
  if (!model.ok())
    return report_error(model.status(), "MODEL_DIR needs config.json and safetensors");
  const model::Model& m = **model;
  ThreadPool pool(a.text.threads, a.text.pin);
  fmt::print(stderr, "loaded {} in {:.2f} s; {} threads{}\n", a.text.model, load_timer.seconds(),
             pool.num_threads(), pool.pinned() ? " (pinned)" : "");
  const size_t V = static_cast<size_t>(m.config().vocab_size);
  std::vector<float> logits(V);
  model::SequenceState st = m.new_sequence();
  Timer prefill;
  Status s = m.forward(*ids, st, pool, logits.data(), /*all_logits=*/false);
  if (!s.ok()) return report_error(s);
  const double prefill_s = prefill.seconds();
  Timer decode;
  std::vector<int32_t> out;
  std::vector<int32_t> order(V);
  for (int i = 0; i < n; ++i) {
    std::iota(order.begin(), order.end(), 0);
    const size_t top = std::min<size_t>(static_cast<size_t>(std::max(a.top, 1)), V);
    std::partial_sort(
        order.begin(), order.begin() + static_cast<long>(top), order.end(),
        [&](int32_t x, int32_t y) {
          return logits[static_cast<size_t>(x)] > logits[static_cast<size_t>(y)] ||
                 (logits[static_cast<size_t>(x)] == logits[static_cast<size_t>(y)] && x < y);
        });
    const int32_t next = order[0];
    std::string tops;
    for (size_t j = 0; j < top; ++j)
      tops += fmt::format(" {}:{:.4f}", order[j], logits[static_cast<size_t>(order[j])]);
    fmt::print("{}\t{}\ttop{}\n", i, next, tops);
    out.push_back(next);
    if (i + 1 < n) {
      s = m.forward({&next, 1}, st, pool, logits.data(), false);
      if (!s.ok()) return report_error(s);
    }
  }
  std::string joined;
  for (int32_t t : out) joined += (joined.empty() ? "" : ",") + std::to_string(t);
  fmt::print("tokens: {}\n", joined);
  fmt::print(
      stderr,
      "prefill {} tokens in {:.3f} s ({:.1f} t/s); decode {} tokens in {:.3f} s ({:.1f} t/s)\n",
      ids->size(), prefill_s, static_cast<double>(ids->size()) / std::max(prefill_s, 1e-9),
      out.size(), decode.seconds(),
      static_cast<double>(out.size()) / std::max(decode.seconds(), 1e-9));
  return 0;
}

// Text mode: the prompt through the chat template (or --raw), text streamed to stdout.
int run_text(const RunArgs& a) {
  auto params = sampling_params(a.text);
  if (!params.ok()) return report_error(params.status());
  auto max_tokens = max_new_tokens(a.text);
  if (!max_tokens.ok()) return report_error(max_tokens.status());
  if (a.raw && (a.text.think || a.text.system)) {
    return report_error(
        invalid_argument("--think and --system need the chat template (drop --raw)"));
  }
  if (a.raw && a.prompt->empty()) {
    return report_error(
        invalid_argument("-p: the prompt is empty (--raw adds no BOS or template)"));
  }
  auto conv = new_conversation(a.text);
  if (!conv.ok()) return report_error(conv.status());
  auto loaded = load_engine(a.text);
  if (!loaded.ok()) return report_error(loaded.status());
  const engine::Engine& eng = **loaded;
  std::unique_ptr<engine::Session> session = eng.new_session();

  Result<std::vector<int32_t>> ids = std::vector<int32_t>{};
  if (a.raw) {
    ids = eng.tokenizer().encode(*a.prompt, tokenizer::Tokenizer::AddedTokens::all);
  } else {
    tokenizer::ChatMessage user;
    user.role = tokenizer::ChatRole::user;
    user.content = *a.prompt;
    conv->messages.push_back(std::move(user));
    ids = session->chat_prompt(*conv);
  }
  if (!ids.ok()) return report_error(ids.status());
  if (ids->empty()) {
    return report_error(
        invalid_argument("-p: the prompt is empty (--raw adds no BOS or template)"));
  }
  if (!a.text.kv_load.empty()) {
    Timer t;
    Status st = session->load_kv(a.text.kv_load);
    if (!st.ok()) return report_error(st);
    fmt::print(stderr, "loaded KV snapshot {}: {} tokens, {} in {:.3f} s\n", a.text.kv_load,
               session->evaluated(),
               format_bytes(static_cast<double>(session->kv_allocated_bytes())), t.seconds());
  }
  Timer prefill_timer;
  const std::span<const int32_t> prompt(*ids);
  if (!a.text.kv_save.empty() && prompt.size() > 1) {
    // The snapshot holds the prompt but its last token: any later prompt that starts with this
    // one then reuses all of it (the last token runs again for its logits, nothing else).
    auto head = session->set_prompt(prompt.first(prompt.size() - 1), prefill_progress_line(eng));
    if (!head.ok()) return report_error(head.status());
    Timer t;
    Status st = session->save_kv(a.text.kv_save);
    if (!st.ok()) return report_error(st);
    fmt::print(stderr, "saved KV snapshot {}: {} tokens in {:.3f} s\n", a.text.kv_save,
               session->evaluated(), t.seconds());
  }
  auto reuse = session->set_prompt(prompt, prefill_progress_line(eng));
  if (!reuse.ok()) return report_error(reuse.status());
  const double prefill_s = prefill_timer.seconds();
  if (!a.text.kv_load.empty()) {
    fmt::print(stderr, "reused the KV of {} of {} prompt tokens\n", reuse->reused,
               reuse->prompt_tokens);
  }

  engine::GenerateResult gen;
  std::string finish = "max tokens";
  if (*max_tokens != 0) {
    const int64_t limit = *max_tokens < 0 ? 0 : *max_tokens;
    bool newline_missing = false;
    if (a.raw) {
      engine::StopConditions stop;
      stop.max_tokens = limit;
      stop.stop_strings = a.text.stop;
      auto r = session->generate(*params, stop, [](std::string_view text) {
        write_stdout(text);
        return true;
      });
      if (!r.ok()) return report_error(r.status());
      gen = std::move(r).value();
      finish = engine::finish_reason_name(gen.finish);
      newline_missing = !gen.text.empty() && gen.text.back() != '\n';
    } else {
      auto r = stream_chat_answer(*session, *conv, *params, limit);
      if (!r.ok()) return report_error(r.status());
      gen = std::move(r->gen);
      finish = r->finish;
      newline_missing = r->printed_content && !r->ends_with_newline;
    }
    if (stdout_is_tty() && newline_missing) write_stdout("\n");
  }
  std::string seed;
  if (params->temperature > 0.0f) seed = fmt::format("; seed {}", params->seed);
  fmt::print(
      stderr,
      "prompt {} tokens in {:.3f} s ({:.1f} t/s); generated {} tokens in {:.3f} s ({:.1f} t/s); "
      "stop: {}{}\n",
      ids->size(), prefill_s, static_cast<double>(ids->size()) / std::max(prefill_s, 1e-9),
      gen.tokens.size(), gen.seconds, gen.tokens_per_second(), finish, seed);
  return 0;
}

// Options of text mode that --tokens mode refuses (--top is the one the other way round).
constexpr const char* kTextOnly[] = {"--raw",
                                     "--temp",
                                     "--top-k",
                                     "--top-p",
                                     "--min-p",
                                     "--repeat-penalty",
                                     "--presence-penalty",
                                     "--frequency-penalty",
                                     "--seed",
                                     "--stop",
                                     "--think",
                                     "--effort",
                                     "--system",
                                     "--prefault",
                                     "--kv",
                                     "--kv-budget",
                                     "--checkpoint-every",
                                     "--kv-load",
                                     "--kv-save"};

RunFn setup(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* sub = app.add_subcommand(
      "run",
      "Generate text from a prompt (-p), or greedy ids and top logits from token ids (--tokens)");
  sub->add_option("-m,--model", args->text.model,
                  "Model directory: config.json, safetensors, tokenizer.json")
      ->required();
  sub->add_option("-p,--prompt", args->prompt, "Prompt text (a user message unless --raw)");
  sub->add_option("--tokens", args->tokens,
                  "Prompt token ids, comma separated: greedy ids + top logits, no tokenizer (-n "
                  "default 32)");
  sub->add_flag("--raw", args->raw,
                "No chat template: the prompt is tokenized as is (special tokens in it recognised, "
                "no BOS added) and the output printed unparsed");
  add_generation_options(sub, args->text);
  add_chat_options(sub, args->text);
  sub->add_option("--top", args->top, "--tokens mode: top logits to print per step (default 5)");
  return [args, sub]() -> int {
    const bool text = args->prompt.has_value();
    if (text == (sub->count("--tokens") > 0)) {
      return report_error(invalid_argument("give either -p PROMPT or --tokens IDS"));
    }
    if (text) {
      if (sub->count("--top") > 0)
        return report_error(invalid_argument("--top applies to --tokens only"));
      return run_text(*args);
    }
    for (const char* name : kTextOnly) {
      if (sub->count(name) > 0) {
        return report_error(
            invalid_argument(fmt::format("{} applies to -p only (--tokens is greedy)", name)));
      }
    }
    return run_tokens(*args);
  };
}

}  // namespace
DSV4_REGISTER_COMMAND(run, 10, setup);
}  // namespace dsv4::cli
