// formats/safetensors_writer.h — builds safetensors files: tiny checkpoints for tests and tools.
//
// Purpose: collect tensors (name, dtype, logical shape, bytes) and metadata in memory, then
// write one file or a sharded set plus model.safetensors.index.json, each atomically
// (base/mmap_file.h write_file_atomic). Output is read by SafetensorsFile/SafetensorsModel
// and by the Python `safetensors` package (checked by hand with safetensors 0.8.0).
//
// Layout choices, the same as the reference writer (safetensors tensor.rs `prepare`):
//   - data sorted by decreasing element width, then by name; header JSON padded with spaces
//     to a multiple of 8 bytes. Every tensor then starts at a multiple of its element size
//     from the start of the file, so mapped views are naturally aligned.
//   - `__metadata__` is written only when metadata was set; every shard gets a copy.
//   - shards are named model-00001-of-0000N.safetensors (transformers' convention); tensors are
//     assigned to shards greedily in name order so the split is deterministic.
//
// Invariants: add() validates what the reader would reject (bytes size vs dtype x shape,
// duplicate or reserved names, non-UTF-8 names/metadata), so everything written re-opens.
// Non-goals: streaming huge tensors (everything is held in memory), in-place edits.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "formats/dtype.h"

namespace dsv4::formats {

class SafetensorsWriter {
 public:
  // Copies `bytes`. Errors (invalid_argument): bytes.size() != dtype_bytes(dtype, shape), a bad
  // shape, a duplicate name, the reserved name "__metadata__", a name that is not UTF-8.
  Status add(std::string name, DType dtype, std::vector<int64_t> shape,
             std::span<const uint8_t> bytes);
  // Header `__metadata__` entry ({"format": "pt"} is what PyTorch writers put there).
  Status set_metadata(std::string key, std::string value);

  size_t size() const { return tensors_.size(); }
  // Sum of all tensor byte sizes.
  uint64_t data_bytes() const;

  // The complete file image of all tensors.
  Result<std::vector<uint8_t>> serialize() const;
  // serialize() to `path`, atomically.
  Status write(const std::string& path) const;
  // Writes model-0000i-of-0000N.safetensors files of at most `max_shard_bytes` tensor data each
  // (a larger tensor gets a shard of its own) and model.safetensors.index.json into `dir`
  // (created if missing). Returns the shard file names in order.
  Result<std::vector<std::string>> write_sharded(const std::string& dir,
                                                 uint64_t max_shard_bytes) const;

 private:
  struct Tensor {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  Result<std::vector<uint8_t>> serialize_subset(const std::vector<const std::string*>& names) const;

  std::map<std::string, Tensor> tensors_;  // by name
  std::map<std::string, std::string> metadata_;
};

}  // namespace dsv4::formats
