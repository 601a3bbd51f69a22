// dsv4 — command-line entry point. Subcommands live in tools/dsv4/cmd_*.cpp.
#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>

#include "base/cpu_features.h"
#include "command.h"
#include "kernels/dispatch.h"

namespace dsv4::cli {

static std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}

bool register_command(Command command) {
  registry().push_back(std::move(command));
  return true;
}

int report_error(const Status& status, const std::string& hint) {
  std::fprintf(stderr, "dsv4: %s\n", status.message().c_str());
  if (!hint.empty()) std::fprintf(stderr, "hint: %s\n", hint.c_str());
  return status.code() == ErrorCode::invalid_argument ? 2 : 1;
}

}  // namespace dsv4::cli

int main(int argc, char** argv) {
  using namespace dsv4;
  CLI::App app{"dsv4 — DeepSeek-V4 inference engine (CPU)", "dsv4"};
  app.require_subcommand(0, 1);
  bool version = false;
  app.add_flag("--version", version, "Print version, build and CPU information");
  auto& reg = cli::registry();
  std::sort(reg.begin(), reg.end(), [](auto& a, auto& b) { return a.order < b.order; });
  std::map<std::string, cli::RunFn> runs;
  for (auto& c : reg) runs[c.name] = c.setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (version) {
    std::printf("dsv4 %s (%s %s, C++%ld)\ncpu: %s\nfeatures: %s\nkernels: %s\n", DSV4_VERSION,
#if defined(__clang__)
                "clang", __clang_version__,
#else
                "gcc", __VERSION__,
#endif
                __cplusplus / 100 % 100, cpu_features().brand.c_str(),
                cpu_features().summary().c_str(),
                std::string(kernels::isa_name(kernels::active_isa())).c_str());
    return 0;
  }
  for (auto* sub : app.get_subcommands()) {
    auto it = runs.find(sub->get_name());
    if (it != runs.end() && it->second) return it->second();
  }
  std::fputs(app.help().c_str(), stdout);
  return 0;
}
