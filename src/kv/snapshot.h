// kv/snapshot.h — one sequence's KV cache on disk: save, validate, load (format v1), as one
// self-contained file or in a content-addressed store whose snapshots share their blocks.
//
// Purpose: persist a SequenceCache and its token ids so that a later process (same model,
// same storage scheme) continues exactly where the saved one stopped: load -> forward equals
// the uninterrupted run bit for bit (tests/model/kv_snapshot_test.cpp). The model-level entry
// points (which compute the model identity from a loaded Model) are model/kv_snapshot.h.
//
// Format v1 (little endian; every offset below is from the start of the file):
//   [0, 128)               SnapshotFixedHeader (below; static_assert on its size)
//   [128, header_bytes)    variable header, in this order, each part zero-padded to 8 bytes:
//                            model_type           [model_type_bytes] UTF-8 (1..64 bytes)
//                            layers               [n_layers] SnapshotLayerRecord (80 B each)
//                            checkpoint positions [n_checkpoints] i64, ascending
//                            token ids            [n_tokens] i32
//                          then zeros up to header_bytes - 8, then
//                            header checksum      u64 xxh3-64 of bytes [0, header_bytes - 8)
//                          header_bytes is the smallest multiple of 64 that holds all of it.
//   [header_bytes, file_bytes)  data sections, in this order:
//                            for each layer l:  ring     min(n_tokens, window) records, slot order
//                                               state    compressor state (f32, cache.h layout)
//                                               entries  one section per block of
//                                                        entry_block_records records
//                                               keys     one section per block of
//                                                        key_block_records records
//                            for each checkpoint, for each layer:
//                                               ring     `window` records (the whole ring)
//                                               prev     CSA previous-window kv|gate rows (f32)
//                          A section of length 0 is absent. Section k (k = 0, 1, ... in file
//                          order) of length len occupies round_up(round_up(len, 8) + 8, 64)
//                          bytes from a 64-aligned offset: payload, zeros to 8, u64
//                          xxh3-64(payload, seed = k), zeros to 64. The seed binds a section to
//                          its place, so swapped sections fail too. Records are the cache's
//                          (cache.h / record_codec.h), byte for byte.
// Every byte of a valid file is thus covered: the header by its checksum, payloads by theirs,
// padding by the rule that it is zero. The layer records carry the record sizes, so a file's
// whole structure (lengths, checksums) is checked without the model (read_snapshot_info);
// loading then checks it against the model. Payloads start 64-aligned, so a mapped file's
// entry and indexer-key sections are used in place as read-only cache blocks (below).
//
// Content-addressed store (SnapshotStore): a directory
//   <dir>/blocks/<32 hex digits>   the bytes of one entries/keys section (the records of one
//                                  block), named by their xxh3-128
//   <dir>/snapshots/<name>.dsv4kv  a v1 file with flags bit 0 (kSnapshotExternalBlocks) set:
//                                  each entries/keys section's payload is a 32-byte
//                                  SnapshotBlockRef (hash, bytes, records) instead of records
// Two snapshots whose sequences share a prefix share the files of its full blocks (a block's
// bytes are a pure function of the tokens before its end and the block size; the last, partial
// block of each differs): saving a fork of a saved sequence writes only its new blocks. New
// blocks (a name present with the right size is skipped) are each written to a temp file and
// renamed into place, then made durable together by one syncfs() of the store's filesystem
// (an fsync per block was ~50x slower), and only then is the manifest written
// (write_file_atomic), so a crash never leaves a manifest that names a missing block.
// remove() deletes a manifest; collect_garbage() deletes the blocks no manifest names. A store
// has no lock: concurrent writers of different names are safe (block files are immutable and
// written atomically); collect_garbage() must not run while another process saves.
//
// What is checked on load, before anything is allocated beyond the header, and in this order
// (every failure is a Status naming the file and what is wrong; nothing is half-loaded):
//   magic ("DSV4KVSN"; parse_error), version (1; unsupported), header length (multiple of 64,
//   inside the file; parse_error / data_loss), header checksum (data_loss), unknown flags or
//   reserved bytes (unsupported), header length == what the counts imply, per-layer sizes
//   within sanity bounds (parse_error); model identity — model_type, config hash, weights
//   hash — against the loading model (failed_precondition naming both sides' values), scheme,
//   layer count and layout hash (xxh3-64 of every layer's record geometry) against the config
//   (failed_precondition), n_tokens <= max_position_embeddings, every layer record == what the
//   config and n_tokens imply (window min(N, window), entries and keys floor(N / ratio), record
//   and state sizes), block sizes >= 1, checkpoint positions (0 < p <= N, multiples of every
//   compression ratio, ascending), token ids inside the vocabulary (parse_error); file length
//   == the length the header implies, computed in closed form with overflow checks (data_loss:
//   truncated or trailing bytes); every section's checksum and zero padding (data_loss); in a
//   store, each referenced block file's length and xxh3-128 as it is loaded (data_loss;
//   not_found if missing) — a failure there releases every block taken so far.
//
// Loading "without copying where possible" (SnapshotMode::map, the default): the file (in a
// store: each block file) is mapped read-only and every entry/indexer-key section becomes a
// read-only PoolBlock viewing the mapping (charged to the pool like any block, so budgets mean
// the same either way), provided the loading cache's block size for that stream equals the
// file's; the copy-on-write rule of cache.h makes the first append into the last (partial)
// block copy it. Rings, compressor state and checkpoints do not grow with the context and are
// rewritten at every token (checkpoints: restored into the ring): they are copied.
// SnapshotMode::copy (or a block-size mismatch, or more than kMaxMappedBlockFiles block files in
// one store load — each is one mapping, and the kernel's vm.max_map_count is finite) copies into
// fresh blocks. A mapped file must not be truncated in place while loaded (SIGBUS on access); our
// writers never do — they replace files by rename, which leaves an existing mapping intact.
//
// Writing: the image is built in memory (peak memory = one extra copy of the saved bytes; a
// store manifest holds rings, state and checkpoints only) and written with base/mmap_file.h
// write_file_atomic: temp file in the same directory, fsync, rename, fsync of the directory —
// a crash leaves the old file or the new one, never a mix.
//
// Versioning: `version` changes with any change of layout or meaning; a reader accepts only
// the versions it knows (unsupported otherwise) and only the flags it knows (v1: bit 0).
// Non-goals: compression, streaming writes, big-endian hosts, sharing across block sizes (two
// snapshots share blocks only if saved with the same block size), locking the store.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "formats/model_config.h"
#include "kv/cache.h"
#include "kv/layout.h"

namespace dsv4::kv {

inline constexpr char kSnapshotMagic[8] = {'D', 'S', 'V', '4', 'K', 'V', 'S', 'N'};
inline constexpr uint32_t kSnapshotVersion = 1;
inline constexpr uint32_t kSnapshotExternalBlocks = 1;  // flags bit 0: a store manifest
inline constexpr size_t kMaxModelTypeBytes = 64;
inline constexpr size_t kMaxMappedBlockFiles = 8192;

// Bytes [0, 128) of a snapshot. Field order is the byte order; all little endian.
struct SnapshotFixedHeader {
  char magic[8];              // [0, 8)     kSnapshotMagic
  uint32_t version;           // [8, 12)    kSnapshotVersion
  uint32_t header_bytes;      // [12, 16)   fixed + variable header + checksum, multiple of 64
  uint64_t file_bytes;        // [16, 24)   whole file
  uint64_t config_hash;       // [24, 32)   ModelIdentity::config_hash
  uint64_t weights_hash;      // [32, 40)   ModelIdentity::weights_hash
  uint64_t layout_hash;       // [40, 48)   layout_hash(layout)
  uint32_t scheme;            // [48, 52)   1 = f32, 2 = official
  uint32_t n_layers;          // [52, 56)   layers of the layout (main layers)
  int64_t n_tokens;           // [56, 64)   positions held
  uint32_t n_checkpoints;     // [64, 68)   complete rewind checkpoints saved
  uint32_t model_type_bytes;  // [68, 72)   1..64
  uint32_t flags;             // [72, 76)   0, or kSnapshotExternalBlocks
  uint32_t reserved0;         // [76, 80)   0
  uint8_t reserved[48];       // [80, 128)  0
};
static_assert(sizeof(SnapshotFixedHeader) == 8 + 2 * 4 + 4 * 8 + 2 * 4 + 8 + 4 * 4 + 48);  // 128

// One per layer, in the variable header. Redundant with the model's layout and n_tokens, and
// checked against them; present so that a file's structure can be walked without the model.
struct SnapshotLayerRecord {
  int64_t window_filled;           // min(n_tokens, window): ring records saved
  int64_t n_entries;               // floor(n_tokens / ratio), 0 for a sliding-window layer
  int64_t n_index_keys;            // floor(n_tokens / ratio) for CSA, else 0
  int64_t entry_block_records;     // records per entries section (the saving cache's), >= 1
  int64_t key_block_records;       // records per keys section, >= 1
  uint64_t state_bytes;            // compressor state (layout.h compressor_state_bytes)
  uint64_t row_bytes;              // one ring / entry record (layout.h raw_token_bytes)
  uint64_t key_bytes;              // one indexer key (0: no indexer)
  int64_t window;                  // ring capacity (sliding_window)
  uint64_t checkpoint_prev_bytes;  // one checkpoint's CSA previous-window rows (f32)
};
static_assert(sizeof(SnapshotLayerRecord) == 10 * 8);  // 80

// The payload of an entries/keys section in a store manifest.
struct SnapshotBlockRef {
  uint64_t hash_low;   // xxh3-128 of the block's bytes (XXH128_hash_t low64)
  uint64_t hash_high;  // (high64)
  uint64_t bytes;      // = records * record bytes
  uint64_t records;    // records in the block
};
static_assert(sizeof(SnapshotBlockRef) == 4 * 8);  // 32

// Which model computed the cache (model/kv_snapshot.h computes it from a loaded Model).
struct ModelIdentity {
  std::string model_type;     // config.json model_type (1..64 bytes)
  uint64_t config_hash = 0;   // fields of the config that shape the computation
  uint64_t weights_hash = 0;  // fingerprint of the checkpoint
};

// xxh3-64 of the scheme, the layer count and every layer's kind, ratios, window and record
// sizes: two layouts with the same hash store the same records in the same places.
uint64_t layout_hash(const KvLayout& layout);

// What a snapshot's header says (after validation).
struct SnapshotInfo {
  uint32_t version = 0;
  uint32_t flags = 0;
  ModelIdentity identity;
  Scheme scheme = Scheme::f32;
  uint64_t layout_hash = 0;
  int64_t n_tokens = 0;
  int n_layers = 0;
  std::vector<int64_t> checkpoints;
  uint64_t header_bytes = 0;
  uint64_t file_bytes = 0;
  std::vector<SnapshotBlockRef> blocks;  // store manifests: every referenced block, file order
};

enum class SnapshotMode {
  map,   // entry/key blocks read in place from the mapped file where block sizes agree
  copy,  // every byte copied into fresh blocks
};

struct SnapshotReadOptions {
  SnapshotMode mode = SnapshotMode::map;
  // Section, header and block checksums. Only the fuzz target turns this off, to reach the
  // structural checks behind them; everything else is validated either way.
  bool verify_checksums = true;
};

struct LoadedSnapshot {
  std::vector<int32_t> tokens;  // [n_tokens]
  SequenceCache cache;          // holds exactly n_tokens positions
  SnapshotInfo info;
  uint64_t mapped_bytes = 0;  // bytes of blocks used in place from files (map mode)
};

// Serialises `cache` (which holds tokens.size() positions) with `identity`.
// Errors: failed_precondition when the cache and the tokens disagree or the cache is empty;
// invalid_argument for a model_type outside 1..64 bytes.
Result<std::vector<uint8_t>> encode_snapshot(const SequenceCache& cache,
                                             std::span<const int32_t> tokens,
                                             const ModelIdentity& identity);
// encode_snapshot + write_file_atomic. Errors: those, and io_error.
Status save_snapshot(const SequenceCache& cache, std::span<const int32_t> tokens,
                     const ModelIdentity& identity, const std::string& path);

// Validates a snapshot image without a model: magic, version, header checksum, flags, field
// ranges, the file length and every section's checksum and padding (and, in a manifest, the
// block references' sizes). `source` names the file in errors.
Result<SnapshotInfo> read_snapshot_info(std::span<const uint8_t> image, const std::string& source,
                                        bool verify_checksums = true);

// Loads a self-contained snapshot saved by the model `expected` with `config` into a new cache
// on `pool` built with `options` (block sizes, checkpoint interval and huge pages are the
// loader's). Errors: not_found / io_error for the file; every check listed above; unsupported
// for a store manifest (load it through its SnapshotStore).
Result<LoadedSnapshot> load_snapshot(const std::string& path, const formats::ModelConfig& config,
                                     const ModelIdentity& expected, std::shared_ptr<BlockPool> pool,
                                     CacheOptions options = {}, SnapshotReadOptions read = {});
// The same for an image in memory; always copies (read.mode is ignored).
Result<LoadedSnapshot> decode_snapshot(std::span<const uint8_t> image, const std::string& source,
                                       const formats::ModelConfig& config,
                                       const ModelIdentity& expected,
                                       std::shared_ptr<BlockPool> pool, CacheOptions options = {},
                                       SnapshotReadOptions read = {});

// A directory of snapshots sharing content-addressed blocks (see the header comment).
class SnapshotStore {
 public:
  // Opens (creating if needed) the store at `dir`. Errors: io_error.
  static Result<SnapshotStore> open(const std::string& dir);

  // Names: 1..200 characters of [A-Za-z0-9._-], not starting with '.'.
  Status save(const std::string& name, const SequenceCache& cache, std::span<const int32_t> tokens,
              const ModelIdentity& identity);
  Result<LoadedSnapshot> load(const std::string& name, const formats::ModelConfig& config,
                              const ModelIdentity& expected, std::shared_ptr<BlockPool> pool,
                              CacheOptions options = {}, SnapshotReadOptions read = {}) const;
  // Validates the manifest without a model (read_snapshot_info).
  Result<SnapshotInfo> info(const std::string& name) const;
  Result<std::vector<std::string>> list() const;  // names, sorted
  Status remove(const std::string& name);         // the manifest only
  // Deletes every block no manifest references; returns the bytes freed. Errors: a manifest
  // that does not validate (then nothing is deleted), io_error.
  Result<uint64_t> collect_garbage();

  struct Usage {
    uint64_t manifests = 0, manifest_bytes = 0;
    uint64_t blocks = 0, block_bytes = 0;
  };
  Result<Usage> usage() const;
  const std::string& dir() const { return dir_; }
  std::string manifest_path(const std::string& name) const;
  std::string block_path(const SnapshotBlockRef& ref) const;

 private:
  SnapshotStore() = default;
  std::string dir_;
};

}  // namespace dsv4::kv
