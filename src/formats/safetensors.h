// formats/safetensors.h — zero-copy reader for safetensors checkpoints (one file or sharded).
//
// Purpose: map checkpoint files read-only, parse each JSON header exactly once at open, and
// hand out TensorViews (name, dtype, shape, byte span into the map, shard) that the model
// loader binds to kernels without copying or converting anything.
//
// File layout (huggingface/safetensors, README "Format" and src/tensor.rs):
//   [0, 8)          u64 little endian N = header length in bytes
//   [8, 8+N)        UTF-8 JSON object: { "__metadata__": {str: str}?,
//                     "<tensor name>": {"dtype": "F8_E4M3", "shape": [n, k],
//                                       "data_offsets": [begin, end]}, ... }
//                   (writers pad it with trailing spaces to a multiple of 8 bytes)
//   [8+N, size)     tensor data; data_offsets are relative to 8+N, row-major, little endian
//
// Invariants (checked at open; every violation is a Status naming the file and the tensor):
//   - 8 <= file size; N <= kMaxHeaderBytes (100 MB, safetensors' MAX_HEADER_SIZE) and
//     8 + N <= file size; the header is valid UTF-8 and a JSON object with no duplicate key at
//     any depth (nlohmann would silently keep one of two equal keys, so the header is parsed
//     with our own SAX handler) and nesting depth <= kMaxJsonDepth.
//   - each entry has dtype (a known safetensors code, else `unsupported`), shape (array of
//     integers in [0, 2^63), rank <= kMaxRank, element and byte counts that fit in int64,
//     packed rows byte aligned — see dtype.h) and data_offsets (exactly two integers,
//     begin <= end <= data size); end - begin == dtype_bytes(dtype, shape).
//   - sorted by offset, the tensors tile the data area exactly: no overlap, no gap, no
//     trailing bytes. This is the rule of the reference reader (tensor.rs `validate`:
//     InvalidOffset / MetadataIncompleteBuffer), so a file we accept is one every
//     safetensors implementation accepts, and rewriting it reproduces it byte for byte.
//   - `__metadata__`, when present, is an object of string values.
//   Unknown extra fields inside a tensor entry are ignored (as the reference does).
//
// Alignment: safetensors guarantees none, and we do not require any. Files written by the
// reference writer (and by SafetensorsWriter) pad the header to 8 bytes and store tensors in
// order of decreasing element width, so each tensor starts at a multiple of its element size
// relative to the page-aligned map; TensorView::is_aligned() tells the loader whether that
// holds, and kernels must otherwise use unaligned loads (or the loader copies).
//
// Sharded checkpoints: a directory with `model.safetensors.index.json`
//   {"metadata": {"total_size": N}?, "weight_map": {"<tensor>": "<shard file name>", ...}}
// Each shard is opened once. The index must name only plain file names inside the directory
// (no '/', no "..": a name that could escape the directory is a parse_error; symlinked shards,
// as in the Hugging Face cache, are fine). Every mapped tensor must exist in its shard, no
// tensor may appear in two shards, and every tensor of an opened shard must be listed (a
// stale index is an error, not a silently missing weight).
//
// Lifetime: TensorView::bytes points into a mapping owned by the SafetensorsFile (or the
// SafetensorsModel that owns the files); views and pointers stay valid while their owner
// lives, including across moves of the owner.
//
// Non-goals: writing (safetensors_writer.h), dtype conversion, big-endian hosts, the legacy
// pytorch_model.bin format, partial loading of a header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/mmap_file.h"
#include "base/result.h"
#include "formats/dtype.h"

namespace dsv4::formats {

inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // safetensors MAX_HEADER_SIZE
inline constexpr size_t kMaxJsonDepth = 64;               // headers need 3, indexes 3
inline constexpr std::string_view kIndexFileName = "model.safetensors.index.json";
inline constexpr std::string_view kSingleFileName = "model.safetensors";

struct TensorView {
  std::string name;
  DType dtype = DType::u8;
  std::vector<int64_t> shape;      // logical elements, outermost first (PyTorch order)
  std::span<const uint8_t> bytes;  // row-major data inside the mapped file
  uint32_t shard = 0;              // index into SafetensorsModel::shard(); 0 for a lone file
  uint64_t file_offset = 0;        // bytes.data() - start of the file

  size_t rank() const { return shape.size(); }
  int64_t dim(size_t i) const {
    DSV4_CHECK(i < shape.size());
    return shape[i];
  }
  // Validated at open, so this cannot overflow.
  int64_t elements() const;
  const uint8_t* data() const { return bytes.data(); }
  size_t size_bytes() const { return bytes.size(); }
  // True if the data pointer is a multiple of `alignment` (a power of two).
  bool is_aligned(size_t alignment) const;
};

// The same bytes viewed as another dtype/shape of exactly the same byte size. The loader uses
// it for DeepSeek-V4's FP4 experts, stored as I8 [n_out, n_in/2] and computed on as
// f4_e2m1 [n_out, n_in]. Errors (invalid_argument) name the tensor.
Result<TensorView> reinterpret(const TensorView& t, DType dtype, std::vector<int64_t> shape);

// One safetensors file. Tensors are kept in data-offset order.
class SafetensorsFile {
 public:
  // Maps `path` read-only and parses its header.
  static Result<SafetensorsFile> open(const std::string& path);
  // Parses a complete file image held by the caller, e.g. a fuzzer input. Nothing is copied:
  // the views point into `file`, which must outlive the result. `source_name` stands in for
  // the path in error messages.
  static Result<SafetensorsFile> parse(std::span<const uint8_t> file, std::string source_name);

  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;

  const std::string& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const { return file_.size(); }
  uint64_t data_offset() const { return data_offset_; }  // 8 + header length
  uint64_t tensor_bytes() const { return file_.size() - data_offset_; }
  // madvise over the tensor's pages (no-op for parse()d images). Best effort.
  void advise(const TensorView& t, AccessHint hint) const;

 private:
  friend class SafetensorsModel;
  SafetensorsFile() = default;

  MmapFile map_;                   // empty for parse()
  std::span<const uint8_t> file_;  // the whole file image
  std::string path_;
  uint64_t data_offset_ = 0;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string_view, uint32_t> by_name_;  // keys view tensors_[i].name
  std::map<std::string, std::string> metadata_;
};

// Parsed model.safetensors.index.json.
struct SafetensorsIndex {
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name
  std::vector<std::string> shard_files;           // distinct shard names, sorted
  std::optional<uint64_t> total_size;             // metadata.total_size when an integer
};

// Parses index JSON text; `source_name` (the index path) prefixes every error.
Result<SafetensorsIndex> parse_safetensors_index(std::string_view json_text,
                                                 const std::string& source_name);

// A checkpoint: one file or a sharded set. Move-only; views stay valid across moves.
class SafetensorsModel {
 public:
  // `path` is a .safetensors file, a model.safetensors.index.json file, or a directory holding
  // model.safetensors or model.safetensors.index.json (the single file wins when both exist,
  // as in transformers).
  static Result<SafetensorsModel> open(const std::string& path);

  const std::string& path() const { return path_; }
  // All tensors, sorted by name (independent of how the checkpoint is sharded).
  const std::vector<const TensorView*>& tensors() const { return sorted_; }
  size_t size() const { return sorted_.size(); }
  const TensorView* find(std::string_view name) const;
  // find() or a not_found error naming the checkpoint and the tensor.
  Result<const TensorView*> get(std::string_view name) const;
  size_t shard_count() const { return shards_.size(); }
  const SafetensorsFile& shard(size_t i) const {
    DSV4_CHECK(i < shards_.size());
    return *shards_[i];
  }
  // Sum of all tensors' byte sizes.
  uint64_t total_bytes() const { return total_bytes_; }
  void advise(const TensorView& t, AccessHint hint) const { shard(t.shard).advise(t, hint); }

 private:
  SafetensorsModel() = default;
  static Result<SafetensorsModel> open_single(const std::string& file);
  static Result<SafetensorsModel> open_index(const std::string& index_path);
  void build_lookup();

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<const TensorView*> sorted_;
  std::unordered_map<std::string_view, const TensorView*> by_name_;
  uint64_t total_bytes_ = 0;
};

// True if `s` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
bool is_valid_utf8(std::string_view s);

}  // namespace dsv4::formats
