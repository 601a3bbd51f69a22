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
//                     quantized on write and dequantized into a caller buffer on read (or read
//                     in place through the raw record accessors).
// Compressor state is f32 in both schemes, as the reference keeps kv_state / score_state.
//
// Storage: every growing stream (compressed entries, indexer keys) is a list of fixed blocks
// taken from a BlockPool: `block_records` records each (default 256), or, with
// CacheOptions::block_bytes, floor(block_bytes / record bytes) records per stream. The window
// ring is one block of sliding_window records, taken at the first token; the compressor state
// one buffer per layer, taken at creation (layout.h counts it at N = 0). A BlockPool is a byte
// budget shared by any number of sequences (thread-safe); a request beyond it is an
// out_of_memory Status and changes nothing. Block rounding is reported separately
// (reserved_bytes() >= allocated).
//
// Blocks are reference-counted (std::shared_ptr<PoolBlock>) and charged to the pool once, when
// taken, however many sequences (or rewind checkpoints) hold them; the last holder returns the
// bytes. A block is heap memory (64-B aligned, zeroed), a 2 MiB-aligned anonymous mapping
// advised MADV_HUGEPAGE (huge pages, below), or a read-only view into a mapped snapshot file
// (kv/snapshot.h), charged like any other block.
//
// Fork and copy-on-write: fork() returns a second sequence with this one's state. It shares
// every entry and indexer-key block — the full ones and the partly filled last one — and every
// rewind checkpoint, and copies what a sequence rewrites at every token: each layer's window
// ring block and compressor state (charged by fork(); out_of_memory leaves both sequences
// unchanged). Rule: a block is written only by a sequence that holds it alone (use_count 1),
// writable and full-size. reserve() — which the model calls before every chunk — replaces a
// stream's last block by a private full-size copy when the coming appends land in it and it is
// shared, read-only or short (a mapped snapshot's last block holds only its used records), so
// the write calls stay infallible (they DSV4_CHECK the rule). Full blocks are never written
// again and stay shared for good. Pool bytes of a fork that then diverges by M tokens, exactly:
//   sum over layers of (ring block + state buffer)            [fork()]
//   + one block per stream whose last block was partial       [first reserve() after fork]
//   + the blocks the M tokens' new records need beyond that   [as for any sequence]
// (the first writer of a shared partial block copies it; the other holder then holds it alone.)
// allocated_bytes()/reserved_bytes() stay per-sequence views (what this sequence references,
// shared or not); usage().shared says how much of it other holders share; BlockPool::reserved()
// is the real charged total.
//
// Huge pages: a block whose page-rounded size is >= 2 MiB is an anonymous mapping aligned to
// 2 MiB and advised MADV_HUGEPAGE (CacheOptions::huge_pages, default on), so with transparent
// huge pages in "madvise" or "always" mode each 2 MiB of it can be one TLB entry; smaller blocks
// come from the heap. The default 256-record blocks (entries 149,504 B, indexer keys 17,408 B
// under `official`) are far below 2 MiB and get no huge pages: long contexts should set
// block_bytes = 2 MiB (official: 3,591 entries = 2,097,144 B, 30,840 keys = 2,097,120 B, each
// mapped as exactly one 2 MiB page). The pool is charged the block's record bytes; the mapping
// is rounded up to 4 KiB (under one page of uncharged slack per block). Mapped blocks are not
// pre-zeroed by us: the kernel supplies zero pages on first touch, so the memory is first
// touched — and placed, under NUMA first-touch — by the thread that writes the records (the
// model writes from the thread that runs forward()); heap blocks are zeroed when taken.
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
// Checkpoints are immutable once captured and shared between forks.
//
// Invariants: records of a stream are contiguous within a block; every block of a stream has
// room for the same number of records (stream_block_records), except that a read-only block
// mapped from a snapshot may end after its last record — it is always the stream's last block,
// so every run (entry_run/index_key_run) but the last is a full block; the window ring is one
// contiguous block of `window` records (slot s = position % window); a record is written once
// (window slots are rewritten as the ring wraps); the cache never reads its rows itself; the
// ring and the compressor state are always held by one sequence alone.
// Non-goals: prefix reuse across sessions by lookup (a caller forks or loads a snapshot),
// eviction, sharing rings/state between forks (every token rewrites them, so a fork that is
// extended would copy them at once anyway; copying at fork() keeps restore() infallible).
// Rejected: growing std::vectors per stream (unbounded realloc copies, no budget, no sharing);
// storing dequantized rows next to the quantized ones (doubles the bytes the layout promises);
// copy-on-write in the write calls themselves (they would have to return a Status per row).
#pragma once

#include <cstdint>
#include <cstring>  // (tests/kv/cache_test.cpp relies on it through this header)
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

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

inline constexpr uint64_t kHugePageBytes = uint64_t{2} << 20;
// Largest block of a growing stream (CacheOptions are rejected above it).
inline constexpr uint64_t kMaxBlockBytes = uint64_t{64} << 20;

// One block of records (or a compressor-state buffer), charged to its pool while alive.
// Held through std::shared_ptr; the pool is kept alive by every block charged to it.
class PoolBlock {
 public:
  // Fresh zeroed memory of `bytes` (> 0): a 2 MiB-aligned MADV_HUGEPAGE anonymous mapping when
  // `huge_pages` and the 4 KiB-rounded size is >= 2 MiB, else 64-B aligned heap memory.
  // Errors: out_of_memory (budget, or the system refused the memory).
  static Result<std::shared_ptr<PoolBlock>> allocate(const std::shared_ptr<BlockPool>& pool,
                                                     uint64_t bytes, bool huge_pages,
                                                     const std::string& what);
  // A read-only view of [data, data + bytes), kept valid by `owner` (a mapped file).
  static Result<std::shared_ptr<PoolBlock>> view(const std::shared_ptr<BlockPool>& pool,
                                                 std::shared_ptr<const void> owner,
                                                 const uint8_t* data, uint64_t bytes,
                                                 const std::string& what);
  PoolBlock(const PoolBlock&) = delete;
  PoolBlock& operator=(const PoolBlock&) = delete;
  ~PoolBlock();

  const uint8_t* data() const { return data_; }
  uint8_t* mutable_data() {
    DSV4_CHECK(kind_ != Kind::view);
    return data_;
  }
  uint64_t size() const { return size_; }
  bool read_only() const { return kind_ == Kind::view; }
  bool huge() const { return kind_ == Kind::huge; }  // a 2 MiB-aligned MADV_HUGEPAGE mapping

 private:
  enum class Kind { heap, huge, view };
  PoolBlock() = default;
  std::shared_ptr<BlockPool> pool_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint64_t map_bytes_ = 0;  // Kind::huge: length of the mapping
  Kind kind_ = Kind::heap;
  std::shared_ptr<const void> owner_;  // Kind::view
};

struct CacheOptions {
  int64_t block_records = 256;  // records per block of a growing stream
  // Tokens between rewind checkpoints (rounded up to a multiple of every compression ratio);
  // 0 disables them (rewind then replays from token 0). Each checkpoint holds, per layer, one
  // window ring plus the CSA compressors' previous-window rows (V4-Flash official: ~3.9 MiB),
  // so the default costs ~7 % of V4-Flash's growing cache and bounds a rewind's replay to
  // 16K tokens.
  int64_t checkpoint_interval = 16384;
  // When > 0: bytes per block of each growing stream instead of block_records — the stream
  // gets floor(block_bytes / its record bytes) records per block (at least 1). 2 MiB gives one
  // huge page per block. At most kMaxBlockBytes.
  uint64_t block_bytes = 0;
  // Blocks of >= 2 MiB (4 KiB-rounded) are 2 MiB-aligned mappings advised MADV_HUGEPAGE.
  bool huge_pages = true;
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
  uint64_t shared = 0;    // part of `reserved` in blocks other holders share, or mapped read-only
};

class SequenceCache {
 public:
  SequenceCache() = default;  // empty: no layers (belongs to no model)
  // Errors: unsupported for Scheme::bf16 or for a non-V4 config; the layout's own errors
  // (official with dims that have no deployed record); invalid_argument for bad options
  // (block_records <= 0, a block above kMaxBlockBytes, checkpoint_interval < 0);
  // out_of_memory for the compressor state.
  static Result<SequenceCache> create(const formats::ModelConfig& config, Scheme scheme,
                                      std::shared_ptr<BlockPool> pool, CacheOptions options = {});
  SequenceCache(SequenceCache&&) noexcept = default;
  // Returns this cache's blocks and checkpoints before taking `o`'s.
  SequenceCache& operator=(SequenceCache&& o) noexcept;
  ~SequenceCache();

  // A second sequence with this state, on the same pool (header comment: fork and COW).
  // Errors: out_of_memory for the ring and state copies (nothing is charged then).
  Result<SequenceCache> fork() const;

  Scheme scheme() const { return layout_.scheme; }
  const KvLayout& layout() const { return layout_; }
  const CacheOptions& options() const { return options_; }  // interval as rounded
  int n_layers() const { return static_cast<int>(layers_.size()); }
  const std::shared_ptr<BlockPool>& pool() const { return pool_; }
  int64_t head_dim() const { return head_dim_; }         // KV row width
  int64_t index_head_dim() const { return index_dim_; }  // indexer key width
  // Positions written so far (layer 0's window; every layer agrees between forward() calls).
  int64_t n_tokens() const;

  // Takes the blocks that n_tokens tokens need (window ring, entries and keys up to
  // floor(n_tokens / ratio)) and makes private copies of shared blocks those records will be
  // appended to. On out_of_memory nothing is written; blocks already taken stay.
  Status reserve(int64_t n_tokens);

  // Window ring. row: [head_dim] f32 of position pos (stored in slot pos % sliding_window);
  // read_window: pos must be one of the last min(n, sliding_window) positions written.
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

  // Raw records, read in place (attention kernels): the scheme's record bytes — `official`:
  // record::V4KvEntryFp8 / V4IndexerKeyFp4 layouts generalised by record_codec.h; `f32`:
  // [head_dim] / [index_head_dim] f32. Pointers stay valid until the next reserve(), restore()
  // or destruction. Misuse (out-of-range position or index) is a DSV4_CHECK failure.
  uint64_t window_record_bytes(int layer) const;
  uint64_t entry_record_bytes(int layer) const;
  uint64_t index_key_record_bytes(int layer) const;            // 0 for a layer without an indexer
  const uint8_t* window_record(int layer, int64_t pos) const;  // record of position pos
  const uint8_t* entry_record(int layer, int64_t i) const;
  const uint8_t* index_key_record(int layer, int64_t i) const;
  // The contiguous run of records starting at `first` (0 <= first < count) up to the end of its
  // block or of the stream: returns the run's length (>= 1) and sets *data to its first record.
  int64_t entry_run(int layer, int64_t first, const uint8_t** data) const;
  int64_t index_key_run(int layer, int64_t first, const uint8_t** data) const;

  // Compressor state of a CSA/HCA layer (Compressor::indexer: CSA only).
  CompressorStateView compressor_state(int layer, Compressor which);

  // Accounting. allocated_bytes() counts records held: window rows written (at most one ring),
  // entries, keys, and the state buffers; reserved_bytes() counts whole blocks. Both count
  // what this sequence references, shared or not (header comment).
  LayerUsage usage(int layer) const;
  KvBytes allocated_bytes() const;
  uint64_t reserved_bytes() const;
  uint64_t shared_bytes() const;  // sum of usage(l).shared

  // Rewind checkpoints (see the header comment). The model calls capture_checkpoint(l, pos)
  // for every layer before writing position pos whenever checkpoint_due(pos).
  bool checkpoint_due(int64_t pos) const;
  void capture_checkpoint(int layer, int64_t pos);
  // Largest complete checkpoint position <= pos (0 when none).
  int64_t checkpoint_at_or_before(int64_t pos) const;
  // Positions of the complete checkpoints, ascending.
  std::vector<int64_t> checkpoint_positions() const;
  // Restores the state at checkpoint position s (0 or a complete checkpoint): truncates every
  // stream to s, releases blocks and checkpoints beyond s. Never allocates.
  void restore(int64_t s);
  // Bytes of the checkpoints this sequence references (shared ones included).
  uint64_t checkpoint_bytes() const;

 private:
  friend struct SnapshotAccess;  // kv/snapshot.cpp reads and rebuilds the private state

  using BlockRef = std::shared_ptr<PoolBlock>;
  struct Stream {  // fixed-size records in blocks
    uint64_t record_bytes = 0;
    int64_t block_records = 0;
    int64_t count = 0;
    std::vector<BlockRef> blocks;
    uint64_t block_bytes() const { return record_bytes * static_cast<uint64_t>(block_records); }
    const uint8_t* at(int64_t i) const {
      return blocks[static_cast<size_t>(i / block_records)]->data() +
             static_cast<uint64_t>(i % block_records) * record_bytes;
    }
    // Record i for writing: its block must be held alone, writable and full-size.
    uint8_t* writable_at(int64_t i);
    int64_t run(int64_t first, const uint8_t** data) const;
  };
  struct StateGeometry {  // one compressor's part of the layer's state buffer
    bool present = false;
    int64_t ratio = 0, dim = 0;
    bool overlap = false;
    uint64_t offset_floats = 0;  // from the start of the buffer
  };
  struct Layer {
    LayerLayout layout;
    int64_t head_dim = 0, rope_dim = 0, index_dim = 0;
    Stream window;              // one block of `window` records
    int64_t window_filled = 0;  // slots holding a written row
    int64_t window_end = 0;     // 1 + the last position written (0: none)
    Stream entries, index_keys;
    BlockRef state;  // f32: KV compressor [kv | gate], then indexer compressor [kv | gate]
    StateGeometry kv_state, index_state;
  };
  struct CheckpointData {  // immutable once complete; shared between forks
    std::shared_ptr<BlockPool> pool;
    std::vector<std::vector<uint8_t>> ring;  // per layer: the ring block's bytes
    std::vector<std::vector<float>> prev;    // per layer: previous-window kv|gate rows
    int captured = 0;                        // layers captured so far
    uint64_t bytes = 0;                      // charged to the pool (0: dropped, no budget)
    CheckpointData() = default;
    CheckpointData(const CheckpointData&) = delete;
    CheckpointData& operator=(const CheckpointData&) = delete;
    ~CheckpointData();
  };

  // Returns every block and checkpoint to the pool; the cache is then empty.
  void release();
  Status grow(Stream& s, int64_t records, const std::string& what);
  // Makes block b of s private, writable and full-size (copying its bytes) if it is not.
  Status make_private(Stream& s, size_t b, const std::string& what);
  bool is_private(const Stream& s, size_t b) const;  // what make_private ensures
  CompressorStateView state_view(const Layer& L, const StateGeometry& g) const;
  uint64_t checkpoint_size() const;  // bytes of one complete checkpoint
  void write_row(const Layer& L, uint64_t record_bytes, int64_t dim, const float* x, uint8_t* rec,
                 bool indexer) const;
  void read_row(const Layer& L, int64_t dim, const uint8_t* rec, float* x, bool indexer) const;
  const Layer& layer_at(int layer) const;

  std::shared_ptr<BlockPool> pool_;
  KvLayout layout_;
  CacheOptions options_;
  int64_t head_dim_ = 0, index_dim_ = 0;
  std::vector<Layer> layers_;
  std::map<int64_t, std::shared_ptr<CheckpointData>> checkpoints_;
};

// Records per block of a stream whose records are `record_bytes` long under `options`.
int64_t stream_block_records(const CacheOptions& options, uint64_t record_bytes);

// Fills `cache` (fresh, or holding n0 tokens) up to n_tokens with deterministic synthetic rows
// through the same reserve/write/append path the model uses, without any model math: for
// `dsv4 kv --measure --no-compute` and tests.
Status fill_synthetic(SequenceCache& cache, int64_t n0, int64_t n_tokens, uint64_t seed);

}  // namespace dsv4::kv
