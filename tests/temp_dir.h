// tests/temp_dir.h — a fresh temporary directory per object, removed (with its contents) when the
// object goes. Shared by the snapshot tests (tests/kv/snapshot_test.cpp,
// tests/model/kv_snapshot_test.cpp). Names carry the process id and a counter, so tests running
// in parallel processes never share one.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace dsv4::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "dsv4_test") {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace dsv4::testing
