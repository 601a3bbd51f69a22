// tests/cli/cli_runner.h — run the real `dsv4` binary (DSV4_CLI) with arguments, capturing
// exit code, stdout and stderr through files in a scratch directory.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
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

// A fixture for the tests of one subcommand: a scratch directory per test, `run(args)` runs
// `dsv4 <subcommand> <args...>` in it.
class CliTest : public ::testing::Test {
 protected:
  explicit CliTest(std::string subcommand) : subcommand_(std::move(subcommand)) {}
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / ("dsv4_" + subcommand_ + "_cli_XXXXXX")).string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CliRun run(std::vector<std::string> args) {
    args.insert(args.begin(), subcommand_);
    return run_dsv4(args, dir_);
  }

  // A bad input: non-zero exit (not a signal), nothing on stdout, exactly one stderr line
  // "dsv4: ..." that contains `needle`.
  void expect_one_line_error(const std::vector<std::string>& args, const std::string& needle) {
    CliRun r = run(args);
    std::string what;
    for (const auto& a : args) what += a + " ";
    EXPECT_GT(r.exit_code, 0) << what;
    EXPECT_LT(r.exit_code, 128) << what << " (killed by a signal?)";
    EXPECT_EQ(r.out, "") << what;
    EXPECT_EQ(r.err.rfind("dsv4: ", 0), 0u) << what << ": " << r.err;
    ASSERT_FALSE(r.err.empty()) << what;
    EXPECT_EQ(r.err.back(), '\n') << what;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << what << ": more than one line: " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << what << ": " << r.err;
  }

  std::filesystem::path dir_;

 private:
  std::string subcommand_;
};

}  // namespace dsv4::testing
