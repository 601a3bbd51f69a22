// tools/dsv4/command.h — subcommand registry for the single `dsv4` binary.
// Each tools/dsv4/cmd_<name>.cpp registers itself with a static DSV4_REGISTER_COMMAND, so adding
// a subcommand touches only its own file. setup() adds the CLI11 subcommand and its options and
// returns the function to run after parsing (exit code).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "base/result.h"

namespace dsv4::cli {

using RunFn = std::function<int()>;
struct Command {
  std::string name;
  int order;  // position in --help
  std::function<RunFn(CLI::App& parent)> setup;
};

bool register_command(Command command);

// Prints "dsv4: <message>" (and an optional hint line) to stderr; returns the exit code 1
// (2 for invalid_argument, the usage-error convention).
int report_error(const Status& status, const std::string& hint = "");

}  // namespace dsv4::cli

#define DSV4_REGISTER_COMMAND(name, order, setup_fn) \
  static const bool dsv4_cmd_registered_##name =     \
      ::dsv4::cli::register_command({#name, order, setup_fn})
