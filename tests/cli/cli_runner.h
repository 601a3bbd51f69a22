// tests/cli/cli_runner.h — run the real `dsv4` binary (DSV4_CLI) with arguments, capturing
// exit code, stdout and stderr through files in a scratch directory.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace dsv4::testing {

struct CliRun {
  int exit_code = -1;  // -1: did not exit normally (signal)
  std::string out, err;
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `dsv4 <args...>`; scratch_dir receives the captured stdout/stderr files.
inline CliRun run_dsv4(const std::vector<std::string>& args,
                       const std::filesystem::path& scratch_dir) {
  std::string cmd = shell_quote(DSV4_CLI);
  for (const auto& a : args) {
    cmd += ' ';
    cmd += shell_quote(a);
  }
  const auto out = scratch_dir / "stdout", err = scratch_dir / "stderr";
  cmd += " >" + shell_quote(out.string()) + " 2>" + shell_quote(err.string());
  int st = std::system(cmd.c_str());
  CliRun r;
  if (st != -1 && WIFEXITED(st)) r.exit_code = WEXITSTATUS(st);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

}  // namespace dsv4::testing
