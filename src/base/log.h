// base/log.h — logging through spdlog (one adapter; nothing else includes spdlog).
// Level from DSV4_LOG=trace|debug|info|warn|error|off (default warn), to stderr.
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace dsv4::log {

enum class Level { trace, debug, info, warn, error, off };

void set_level(Level level);
Level level();
void write(Level level, std::string_view message);

template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::info) write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::debug) write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::warn) write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::error) write(Level::error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace dsv4::log
