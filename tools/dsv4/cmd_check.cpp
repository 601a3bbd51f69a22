// dsv4 check FIXTURE_DIR... — run the model of a reference fixture and compare it with the
// transformers outputs stored beside it, layer by layer (the per-layer diff tool).
#include <fmt/format.h>

#include "base/thread_pool.h"
#include "base/timer.h"
#include "command.h"
#include "model/reference_check.h"

namespace dsv4::cli {
namespace {

struct CheckArgs {
  std::vector<std::string> dirs;
  int threads = 0;
  bool no_decode = false;
  double tolerance = 1e-2;
};

int run_check(const CheckArgs& a) {
  ThreadPool pool(a.threads);
  int failures = 0;
  for (const std::string& dir : a.dirs) {
    Timer timer;
    auto model = model::Model::load(dir);
    if (!model.ok()) return report_error(model.status());
    model::CheckOptions opts;
    opts.decode = !a.no_decode;
    auto rep = model::check_against_reference(**model, dir, pool, opts);
    if (!rep.ok()) return report_error(rep.status());
    const auto& r = *rep;
    fmt::print("{}: {} tokens, {:.1f} s\n", dir, r.n_tokens, timer.seconds());
    fmt::print(
        "  logits: max|diff| {:.3g} (max|ref| {:.3g}, relative {:.3g}) worst at position {}\n",
        r.logits_max_abs_diff, r.ref_logits_max_abs, r.logits_rel(), r.worst_position);
    for (const auto& d : r.layers)
      fmt::print("  layer {:3d}: streams sumsq rel {:.2e}  sum rel {:.2e}  (worst position {})\n",
                 d.layer, d.sumsq_rel, d.sum_rel, d.worst_position);
    if (r.first_divergent_layer >= 0)
      fmt::print("  first divergent layer: {}\n", r.first_divergent_layer);
    if (r.decode_vs_prefill_max_abs >= 0)
      fmt::print("  one-token decode vs prefill: max|diff| {:.3g}\n", r.decode_vs_prefill_max_abs);
    if (!r.ref_greedy_tokens.empty())
      fmt::print("  greedy: {} ({} tokens)\n", r.greedy_match() ? "identical" : "DIFFERENT",
                 r.ref_greedy_tokens.size());
    const bool ok = r.logits_rel() <= a.tolerance && r.greedy_match() &&
                    r.decode_vs_prefill_max_abs <= a.tolerance * r.ref_logits_max_abs;
    fmt::print("  {}\n", ok ? "PASS" : "FAIL");
    failures += ok ? 0 : 1;
  }
  return failures ? 1 : 0;
}

RunFn setup(CLI::App& app) {
  auto args = std::make_shared<CheckArgs>();
  CLI::App* sub = app.add_subcommand(
      "check", "Compare the engine with reference fixtures (tools/reference), layer by layer");
  sub->add_option("fixtures", args->dirs,
                  "Fixture directories (config.json, model, reference.safetensors)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->add_option("-t,--threads", args->threads, "Threads (default: all cores)");
  sub->add_option("--tolerance", args->tolerance,
                  "Max |logit - ref| as a fraction of max |ref logit| (default 1e-2)");
  sub->add_flag("--no-decode", args->no_decode, "Skip the one-token-at-a-time decode comparison");
  return [args] { return run_check(*args); };
}

}  // namespace
DSV4_REGISTER_COMMAND(check, 50, setup);
}  // namespace dsv4::cli
