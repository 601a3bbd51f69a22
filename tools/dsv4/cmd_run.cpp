// dsv4 run -m MODEL_DIR --tokens 1,2,3 -n 32 — greedy generation from token ids.
// (Text in/out arrives with the tokenizer; until then ids in, ids + top logits out.)
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "base/thread_pool.h"
#include "base/timer.h"
#include "command.h"
#include "model/model.h"

namespace dsv4::cli {
namespace {

struct RunArgs {
  std::string model;
  std::string tokens;
  int n = 32;
  int threads = 0;
  int top = 5;
};

Result<std::vector<int32_t>> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item.empty() || item.size() > 10 || item.find_first_not_of("0123456789") != std::string::npos)
      return invalid_argument(fmt::format("--tokens: '{}' is not a token id (expected e.g. 1,2,3)", item));
    const long long v = std::stoll(item);
    if (v > INT32_MAX) return invalid_argument(fmt::format("--tokens: {} is too large", item));
    ids.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

int run_run(const RunArgs& a) {
  auto ids = parse_ids(a.tokens);
  if (!ids.ok()) return report_error(ids.status());
  if (a.n < 0) return report_error(invalid_argument("-n must be >= 0"));
  Timer load_timer;
  auto model = model::Model::load(a.model);
  if (!model.ok()) return report_error(model.status(), "MODEL_DIR needs config.json and safetensors");
  const model::Model& m = **model;
  fmt::print(stderr, "loaded {} in {:.2f} s\n", a.model, load_timer.seconds());
  ThreadPool pool(a.threads);
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
  for (int i = 0; i < a.n; ++i) {
    std::iota(order.begin(), order.end(), 0);
    const size_t top = std::min<size_t>(static_cast<size_t>(std::max(a.top, 1)), V);
    std::partial_sort(order.begin(), order.begin() + static_cast<long>(top), order.end(),
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
    if (i + 1 < a.n) {
      s = m.forward({&next, 1}, st, pool, logits.data(), false);
      if (!s.ok()) return report_error(s);
    }
  }
  std::string joined;
  for (int32_t t : out) joined += (joined.empty() ? "" : ",") + std::to_string(t);
  fmt::print("tokens: {}\n", joined);
  fmt::print(stderr, "prefill {} tokens in {:.3f} s ({:.1f} t/s); decode {} tokens in {:.3f} s ({:.1f} t/s)\n",
             ids->size(), prefill_s, static_cast<double>(ids->size()) / std::max(prefill_s, 1e-9), out.size(),
             decode.seconds(), static_cast<double>(out.size()) / std::max(decode.seconds(), 1e-9));
  return 0;
}

RunFn setup(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* sub = app.add_subcommand("run", "Generate greedily from token ids");
  sub->add_option("-m,--model", args->model, "Model directory")->required();
  sub->add_option("--tokens", args->tokens, "Prompt token ids, comma separated")->required();
  sub->add_option("-n", args->n, "Tokens to generate (default 32)");
  sub->add_option("-t,--threads", args->threads, "Threads (default: all cores)");
  sub->add_option("--top", args->top, "Top logits to print per step (default 5)");
  return [args] { return run_run(*args); };
}

}  // namespace
DSV4_REGISTER_COMMAND(run, 10, setup);
}  // namespace dsv4::cli
