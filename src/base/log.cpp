#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace dsv4::log {
namespace {

Level level_from_env() {
  const char* e = std::getenv("DSV4_LOG");
  if (!e) return Level::warn;
  static const char* kNames[] = {"trace", "debug", "info", "warn", "error", "off"};
  for (int i = 0; i < 6; ++i)
    if (std::strcmp(e, kNames[i]) == 0) return static_cast<Level>(i);
  return Level::warn;
}

std::atomic<Level>& current() {
  static std::atomic<Level> l{level_from_env()};
  return l;
}

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = spdlog::stderr_color_mt("dsv4");
    lg->set_pattern("[%H:%M:%S.%e %^%l%$] %v");
    lg->set_level(spdlog::level::trace);
    return lg;
  }();
  return *l;
}

}  // namespace

void set_level(Level l) {
  current().store(l);
}
Level level() {
  return current().load(std::memory_order_relaxed);
}

void write(Level l, std::string_view message) {
  if (l < level() || l == Level::off) return;
  logger().log(static_cast<spdlog::level::level_enum>(static_cast<int>(l)), "{}", message);
}

}  // namespace dsv4::log
