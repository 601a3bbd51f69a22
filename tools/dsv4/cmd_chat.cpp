// dsv4 chat -m MODEL_DIR [sampling options] [--think] [--system TEXT] — multi-turn chat on
// stdin/stdout. Each input line is one user message (a pipe works: one turn per line); /reset
// starts a new conversation, /save FILE and /load FILE write and read a KV snapshot (the next
// turn reuses the snapshot's longest common prefix with the conversation), /exit or end of input
// ends; --kv-load FILE starts from a snapshot, --kv-save FILE saves at the end. The session keeps
// its KV cache between turns: each turn prefills only what the previous turns did not already
// compute (engine.h), and stderr reports "turn N: prompt P tokens, reused R, prefilled F ..." so
// this can be checked.
#include <fmt/format.h>
#include <unistd.h>

#include <iostream>
#include <string>

#include "command.h"
#include "engine/engine.h"
#include "text_ui.h"
#include "tokenizer/chat.h"

namespace dsv4::cli {
namespace {

int run_chat(const TextArgs& a) {
  auto params = sampling_params(a);
  if (!params.ok()) return report_error(params.status());
  auto max_tokens = max_new_tokens(a);
  if (!max_tokens.ok()) return report_error(max_tokens.status());
  auto start = new_conversation(a);
  if (!start.ok()) return report_error(start.status());
  auto loaded = load_engine(a);
  if (!loaded.ok()) return report_error(loaded.status());
  const engine::Engine& eng = **loaded;
  std::unique_ptr<engine::Session> session = eng.new_session();
  const engine::PrefillProgressFn progress = prefill_progress_line(eng);
  const bool interactive = isatty(STDIN_FILENO) == 1;
  if (interactive) {
    std::fprintf(stderr,
                 "one message per line; /reset starts over, /save FILE, /load FILE, /exit or "
                 "Ctrl-D ends\n");
  }
  auto load = [&](const std::string& file) -> Status {
    DSV4_RETURN_IF_ERROR(session->load_kv(file));
    std::fprintf(stderr, "(loaded KV snapshot %s: %lld tokens)\n", file.c_str(),
                 static_cast<long long>(session->evaluated()));
    return ok_status();
  };
  auto save = [&](const std::string& file) -> Status {
    DSV4_RETURN_IF_ERROR(session->save_kv(file));
    std::fprintf(stderr, "(saved KV snapshot %s: %lld tokens)\n", file.c_str(),
                 static_cast<long long>(session->evaluated()));
    return ok_status();
  };
  if (!a.kv_load.empty()) {
    if (Status st = load(a.kv_load); !st.ok()) return report_error(st);
  }
  if (params->temperature > 0.0f)
    std::fprintf(stderr, "seed %llu\n", static_cast<unsigned long long>(params->seed));

  tokenizer::ChatRequest conv = *start;
  int turn = 0;
  std::string line;
  for (;;) {
    if (interactive) write_stdout("> ");
    if (!std::getline(std::cin, line)) {
      if (interactive) write_stdout("\n");
      break;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line[0] == '/') {
      if (line == "/exit" || line == "/quit") break;
      if (line == "/reset") {
        conv = *start;
        session->reset();
        turn = 0;
        std::fprintf(stderr, "(new conversation)\n");
        continue;
      }
      if (line.rfind("/save ", 0) == 0 || line.rfind("/load ", 0) == 0) {
        const std::string file = line.substr(6);
        // A bad file is reported and the chat goes on (nothing was changed).
        Status st = line[1] == 's' ? save(file) : load(file);
        if (!st.ok()) std::fprintf(stderr, "dsv4: %s\n", st.message().c_str());
        continue;
      }
      std::fprintf(stderr, "unknown command %s (commands: /reset, /save FILE, /load FILE, /exit)\n",
                   line.c_str());
      continue;
    }
    ++turn;
    tokenizer::ChatMessage user;
    user.role = tokenizer::ChatRole::user;
    user.content = line;
    conv.messages.push_back(std::move(user));
    auto reuse = session->prefill_chat(conv, progress);
    if (!reuse.ok()) return report_error(reuse.status());

    engine::SamplingParams turn_params = *params;
    turn_params.seed += static_cast<uint64_t>(turn - 1);  // a fresh random stream per turn
    ChatAnswer answer;
    answer.finish = "max tokens";
    if (*max_tokens != 0) {
      auto r = stream_chat_answer(*session, conv, turn_params, *max_tokens < 0 ? 0 : *max_tokens);
      if (!r.ok()) return report_error(r.status());
      answer = std::move(r).value();
    }
    if (!answer.ends_with_newline || !answer.printed_content) write_stdout("\n");

    tokenizer::ChatMessage reply;
    reply.role = tokenizer::ChatRole::assistant;
    reply.content = answer.message.content;
    if (a.think) reply.reasoning_content = answer.message.reasoning_content;
    conv.messages.push_back(std::move(reply));

    const std::string rewound =
        reuse->rewound == 0 ? std::string()
                            : fmt::format(" (rewound {} tokens{})", reuse->rewound,
                                          reuse->fresh_state ? " to the start: fresh state" : "");
    std::fprintf(stderr,
                 "turn %d: prompt %lld tokens, reused %lld, prefilled %lld%s in %.3f s (%.1f t/s); "
                 "generated %zu tokens in %.3f s (%.1f t/s); stop: %s\n",
                 turn, static_cast<long long>(reuse->prompt_tokens),
                 static_cast<long long>(reuse->reused), static_cast<long long>(reuse->prefilled),
                 rewound.c_str(), reuse->seconds, reuse->tokens_per_second(),
                 answer.gen.tokens.size(), answer.gen.seconds, answer.gen.tokens_per_second(),
                 answer.finish.c_str());
  }
  if (!a.kv_save.empty()) {
    if (Status st = save(a.kv_save); !st.ok()) return report_error(st);
  }
  return 0;
}

RunFn setup(CLI::App& app) {
  auto args = std::make_shared<TextArgs>();
  CLI::App* sub = app.add_subcommand("chat",
                                     "Interactive multi-turn chat (one message per stdin line; "
                                     "/reset, /save FILE, /load FILE, /exit)");
  sub->add_option("-m,--model", args->model,
                  "Model directory: config.json, safetensors, tokenizer.json")
      ->required();
  add_generation_options(sub, *args);
  add_chat_options(sub, *args);
  return [args] { return run_chat(*args); };
}

}  // namespace
DSV4_REGISTER_COMMAND(chat, 11, setup);
}  // namespace dsv4::cli
