// kv/cache.h — the KV cache of one DeepSeek-V4 sequence: storage and bookkeeping, no math.
//
// Purpose: hold, per layer, exactly the records layout.h counts — the sliding-window ring
// (min(N, sliding_window) rows), compressed KV entries (floor(N / ratio)), CSA indexer keys
// (floor(N / ratio)) and the compressors' f32 partial-window state — in the byte records of a
// storage Scheme, so that the bytes held equal layout.h's prediction for every config and N
// (allocated_bytes() == context_bytes(layout, N), tested for the fixture configs).
//   Scheme::f32       every row stored as f32: exact, what the transformers reference keeps.
//   Scheme::official  DeepSeek's deployed records (record_codec.h): KV rows (window and
//                     compressed) 448 f8_e4m3 + 64 bf16 RoPE dims + 7 ue8m0 scales + 1 pad
//                     = 584 B, indexer keys 64 B of f4_e2m1 + 4 ue8m0 scales = 68 B; rows are
//                     quantized on write and dequantized into a caller buffer on read.
// Compressor state is f32 in both schemes, as the reference keeps kv_state / score_state.
//
// Storage: every growing stream (compressed entries, indexer keys) is a list of fixed blocks
// of `block_records` records (default 256) taken from a BlockPool; the window ring is one block
// of sliding_window records, taken at the first token; the compressor state is one buffer per
// layer, taken at creation (layout.h counts it at N = 0). A BlockPool is a byte budget shared
// by any number of sequences (thread-safe); a request beyond it is an out_of_memory Status and
// changes nothing. Block rounding is reported separately (reserved_bytes() >= allocated).
//
// Compressor state layout, per compressor (KV compressor; CSA also the indexer's compressor):
//   kv   [coff * ratio, width] f32, then gate [coff * ratio, width] f32, width = coff * dim,
//   coff = 2 for CSA's overlapping windows, 1 for HCA. Under overlap, window w's rows live in
//   half (w % 2): the previous window (whose Ca halves join entry w) is the other half, so no
//   rows move when a window closes. The slot of position p is p % ratio.
//
// Rewind: a later position's window rows and partial-window rows depend, through the layers'
// windows, on up to n_layers * (sliding_window - 1) earlier tokens, so no suffix of kept rows
// can rebuild them. The cache therefore keeps rewind checkpoints: at every multiple s of
// checkpoint_interval (a multiple of every compression ratio, so no window is partial there)
// it copies each layer's window ring bytes and the CSA compressors' previous-window rows.
// restore(s) truncates entries and keys to floor(s / ratio) and puts those copies back; the
// model then re-runs the tokens [s, p) (model.h Model::rewind). s = 0 needs no copy.
//
// Invariants: records of a stream are contiguous within a block; a record is written once
// (window slots are rewritten as the ring wraps); the cache never reads its rows itself.
// Non-goals (later milestones of issue #5): fork with copy-on-write block sharing, prefix reuse
// across sessions, disk snapshots, huge pages, in-place attention on the quantized records.
// Rejected: growing std::vectors per stream (unbounded realloc copies, no budget, no sharing);
// storing dequantized rows next to the quantized ones (doubles the bytes the layout promises).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/result.h"
#include "formats/model_config.h"
#include "kv/layout.h"

namespace dsv4::kv {

// A byte budget shared by sequences. Thread-safe.
class BlockPool {
 public:
  static constexpr uint64_t kUnlimited = UINT64_MAX;
  explicit BlockPool(uint64_t budget_bytes = kUnlimited) : budget_(budget_bytes) {}
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // Charges `bytes` against the budget; out_of_memory (naming `what`) when it would exceed it.
  Status charge(uint64_t bytes, const std::string& what);
  void uncharge(uint64_t bytes);

  uint64_t budget() const { return budget_; }
  uint64_t reserved() const;  // bytes charged now
  uint64_t peak() const;      // most bytes charged at once

 private:
  mutable std::mutex mu_;
  uint64_t budget_;
  uint64_t reserved_ = 0;
  uint64_t peak_ = 0;
};

// One block of records (or the compressor-state buffer), charged to a pool while alive.
class PoolBlock {
 public:
  PoolBlock() = default;
  static Result<PoolBlock> allocate(BlockPool& pool, uint64_t bytes, const std::string& what);
  PoolBlock(PoolBlock&& o) noexcept;
  PoolBlock& operator=(PoolBlock&& o) noexcept;
  ~PoolBlock();
  uint8_t* data() { return buf_.data(); }
  const uint8_t* data() const { return buf_.data(); }
  uint64_t size() const { return buf_.size(); }

 private:
  BlockPool* pool_ = nullptr;
  AlignedBuffer buf_;
};

struct CacheOptions {
  int64_t block_records = 256;  // records per block of a growing stream
  // Tokens between rewind checkpoints (rounded up to a multiple of every compression ratio);
  // 0 disables them (rewind then replays from token 0). Each checkpoint holds, per layer, one
  // window ring plus the CSA compressors' previous-window rows (V4-Flash official: ~3.9 MiB),
  // so the default costs ~7 % of V4-Flash's growing cache and bounds a rewind's replay to
  // 16K tokens.
  int64_t checkpoint_interval = 16384;
};

// Which compressor of a layer: the attention (KV) compressor, or the CSA indexer's own.
enum class Compressor { kv, indexer };

// The f32 state of one compressor (see the header comment for the layout).
struct CompressorStateView {
  float* kv = nullptr;    // [coff * ratio, width]
  float* gate = nullptr;  // [coff * ratio, width]
  int64_t ratio = 0, dim = 0, width = 0;
  bool overlap = false;
  // Row of `slot` in window `window_index` (window w holds positions [w*ratio, (w+1)*ratio)).
  float* kv_row(int64_t window_index, int64_t slot) const {
    return kv + offset(window_index, slot);
  }
  float* gate_row(int64_t window_index, int64_t slot) const {
    return gate + offset(window_index, slot);
  }
  int64_t offset(int64_t window_index, int64_t slot) const {
    return ((overlap ? (window_index & 1) * ratio : 0) + slot) * width;
  }
};

// Bytes one layer holds (records in use) and reserves (whole blocks taken from the pool).
struct LayerUsage {
  KvBytes allocated;      // same parts as layout.h: window, compressed, indexer, compressor_state
  uint64_t reserved = 0;  // block capacity, >= allocated.total()
};

class SequenceCache {
 public:
  SequenceCache() = default;  // empty: no layers (belongs to no model)
  // Errors: unsupported for Scheme::bf16 or for a non-V4 config; the layout's own errors
  // (official with dims that have no deployed record); out_of_memory for the compressor state.
  static Result<SequenceCache> create(const formats::ModelConfig& config, Scheme scheme,
                                      std::shared_ptr<BlockPool> pool, CacheOptions options = {});
  SequenceCache(SequenceCache&&) noexcept = default;
  // Returns this cache's blocks and checkpoint bytes to its own pool before taking `o`'s (the
  // defaulted version replaced pool_ first, so the old blocks were returned to a freed pool).
  SequenceCache& operator=(SequenceCache&& o) noexcept;
  ~SequenceCache();

  Scheme scheme() const { return layout_.scheme; }
  const KvLayout& layout() const { return layout_; }
  int n_layers() const { return static_cast<int>(layers_.size()); }
  const std::shared_ptr<BlockPool>& pool() const { return pool_; }
  int64_t head_dim() const { return head_dim_; }         // KV row width
  int64_t index_head_dim() const { return index_dim_; }  // indexer key width

  // Takes the blocks that n_tokens tokens need (window ring, entries and keys up to
  // floor(n_tokens / ratio)). On out_of_memory nothing is written; blocks already taken stay.
  Status reserve(int64_t n_tokens);

  // Window ring. row: [head_dim] f32 of position pos (stored in slot pos % sliding_window).
  void write_window(int layer, int64_t pos, const float* row);
  void read_window(int layer, int64_t pos, float* row) const;

  // Compressed KV entries: [head_dim] f32 rows (appended in window order; reserve first).
  int64_t n_entries(int layer) const;
  void append_entry(int layer, const float* row);
  void read_entry(int layer, int64_t index, float* row) const;

  // CSA indexer keys: [index_head_dim] f32 rows. read_index_keys writes [n, index_head_dim].
  int64_t n_index_keys(int layer) const;
  void append_index_key(int layer, const float* key);
  void read_index_keys(int layer, int64_t first, int64_t n, float* out) const;

  // Compressor state of a CSA/HCA layer (Compressor::indexer: CSA only).
  CompressorStateView compressor_state(int layer, Compressor which);

  // Accounting. allocated_bytes() counts records held: window rows written (at most one ring),
  // entries, keys, and the state buffers; reserved_bytes() counts whole blocks.
  LayerUsage usage(int layer) const;
  KvBytes allocated_bytes() const;
  uint64_t reserved_bytes() const;

  // Rewind checkpoints (see the header comment). The model calls capture_checkpoint(l, pos)
  // for every layer before writing position pos whenever checkpoint_due(pos).
  bool checkpoint_due(int64_t pos) const;
  void capture_checkpoint(int layer, int64_t pos);
  // Largest complete checkpoint position <= pos (0 when none).
  int64_t checkpoint_at_or_before(int64_t pos) const;
  // Restores the state at checkpoint position s (0 or a complete checkpoint): truncates every
  // stream to s, releases blocks and checkpoints beyond s.
  void restore(int64_t s);
  uint64_t checkpoint_bytes() const;

 private:
  struct Stream {  // fixed-size records in blocks
    uint64_t record_bytes = 0;
    int64_t block_records = 0;
    int64_t count = 0;
    std::vector<PoolBlock> blocks;
    uint8_t* at(int64_t i) {
      return blocks[static_cast<size_t>(i / block_records)].data() +
             static_cast<uint64_t>(i % block_records) * record_bytes;
    }
    const uint8_t* at(int64_t i) const {
      return blocks[static_cast<size_t>(i / block_records)].data() +
             static_cast<uint64_t>(i % block_records) * record_bytes;
    }
  };
  struct Layer {
    LayerLayout layout;
    int64_t head_dim = 0, rope_dim = 0, index_dim = 0;
    Stream window;  // one block of `window` records
    int64_t window_filled = 0;
    Stream entries, index_keys;
    PoolBlock state;  // f32: KV compressor [kv | gate], then indexer compressor [kv | gate]
    CompressorStateView kv_state, index_state;
  };
  struct Checkpoint {
    std::vector<std::vector<uint8_t>> ring;  // per layer: the ring block's bytes
    std::vector<std::vector<float>> prev;    // per layer: previous-window kv|gate rows
    int captured = 0;                        // layers captured so far
    uint64_t bytes = 0;                      // charged to the pool
  };

  // Returns every block and checkpoint byte to the pool; the cache is then empty.
  void release();
  Status grow(Stream& s, int64_t records, const std::string& what);
  void write_row(const Layer& L, uint64_t record_bytes, int64_t dim, const float* x, uint8_t* rec,
                 bool indexer) const;
  void read_row(const Layer& L, int64_t dim, const uint8_t* rec, float* x, bool indexer) const;

  std::shared_ptr<BlockPool> pool_;
  KvLayout layout_;
  CacheOptions options_;
  int64_t head_dim_ = 0, index_dim_ = 0;
  std::vector<Layer> layers_;
  std::map<int64_t, Checkpoint> checkpoints_;
};

// Fills `cache` (fresh, or holding n0 tokens) up to n_tokens with deterministic synthetic rows
// through the same reserve/write/append path the model uses, without any model math: for
// `dsv4 kv --measure --no-compute` and tests.
Status fill_synthetic(SequenceCache& cache, int64_t n0, int64_t n_tokens, uint64_t seed);

}  // namespace dsv4::kv
