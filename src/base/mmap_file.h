// base/mmap_file.h — RAII read-only memory map of a whole file, with madvise hints.
// Weights are read in place from the checkpoint's safetensors shards (no conversion copy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/result.h"

namespace dsv4 {

enum class AccessHint { normal, sequential, random, willneed, hugepage };

class MmapFile {
 public:
  // Maps `path` read-only. An empty file gives an empty span (no mapping).
  static Result<MmapFile> open(const std::string& path);

  MmapFile() = default;
  MmapFile(const MmapFile&) = delete;
  MmapFile& operator=(const MmapFile&) = delete;
  MmapFile(MmapFile&& o) noexcept;
  MmapFile& operator=(MmapFile&& o) noexcept;
  ~MmapFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

  // Advises the kernel about [offset, offset+length) (clamped to the file). Best effort.
  void advise(AccessHint hint, size_t offset = 0, size_t length = SIZE_MAX) const;

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Reads a whole (small) file into a string: config.json, tokenizer.json, index files.
Result<std::string> read_file(const std::string& path);

// Writes `data` to `path` atomically: a temp file in the same directory, fsync, rename,
// fsync of the directory. Either the old or the new contents survive a crash.
Status write_file_atomic(const std::string& path, std::span<const uint8_t> data);

}  // namespace dsv4
