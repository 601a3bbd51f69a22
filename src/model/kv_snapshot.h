// model/kv_snapshot.h — save and load a SequenceState's KV cache for a loaded Model, and fork
// a sequence.
//
// Purpose: the model-level face of kv/snapshot.h. It computes the model identity a snapshot is
// bound to, so that a snapshot from another model, another config or other weights is refused
// before any byte of it is used:
//   config_hash   xxh3-64 of a canonical text of every ModelConfig field that shapes the
//                 forward pass or the cache ("name=value;" in a fixed order; doubles by their
//                 bit patterns, so 1e-6 and 1.0000000000000002e-6 differ). `source` (the path)
//                 is excluded: the same model in another directory is the same model.
//   weights_hash  xxh3-64 over the checkpoint's shards in index order: each shard's safetensors
//                 header bytes [0, 8 + N) (every tensor's name, dtype, shape and offsets) and
//                 the first and last 4 KiB of its tensor data. A fingerprint, not a digest of
//                 all weights (hashing V4-Flash's ~150 GB on every save/load is not an
//                 option): two checkpoints with identical headers that differ only in tensor
//                 bytes outside those pages are not told apart.
//   model_type    config.json's model_type.
// Computing the identity touches O(shards) pages; callers that save or load often may compute
// it once (model_identity) and pass it in.
//
// Snapshot -> load -> forward equals the uninterrupted run bit for bit, and rewind() works on a
// loaded state (its checkpoints are saved too): tests/model/kv_snapshot_test.cpp.
// Non-goals: choosing what to save and when (the engine decides).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/result.h"
#include "base/thread_pool.h"
#include "formats/model_config.h"
#include "formats/safetensors.h"
#include "kv/snapshot.h"
#include "model/model.h"

namespace dsv4::model {

uint64_t config_hash(const formats::ModelConfig& config);
uint64_t weights_fingerprint(const formats::SafetensorsModel& checkpoint);
kv::ModelIdentity model_identity(const Model& model);

// A second sequence with `state`'s tokens and cache (kv::SequenceCache::fork: blocks shared
// copy-on-write, rings and compressor state copied). Errors: out_of_memory.
Result<SequenceState> fork_sequence(const SequenceState& state);

// Saves `state` (all its tokens) to `path` (kv/snapshot.h format, written atomically).
// Errors: failed_precondition if the state does not belong to `model`; io_error.
Status save_kv_snapshot(const Model& model, const SequenceState& state, const std::string& path);
// Saves the state of the first `n_prefix` tokens (0 <= n_prefix <= n_tokens): forks the
// sequence, rewinds the fork (Model::rewind: restore a checkpoint, re-run the rest on `pool`)
// and saves it; `state` is unchanged. Errors: invalid_argument for n_prefix out of range, and
// those of save_kv_snapshot / rewind.
Status save_kv_snapshot_prefix(const Model& model, const SequenceState& state, int64_t n_prefix,
                               ThreadPool& pool, const std::string& path);

// Loads a snapshot saved by this model into a new SequenceState on `pool` (nullptr: a private
// unlimited pool) with `options`. Errors: every check of kv/snapshot.h (another model: the
// message names both sides' hashes).
Result<SequenceState> load_kv_snapshot(const Model& model, const std::string& path,
                                       std::shared_ptr<kv::BlockPool> pool = nullptr,
                                       kv::CacheOptions options = {},
                                       kv::SnapshotReadOptions read = {});

// The same through a content-addressed kv::SnapshotStore (kv/snapshot.h): snapshots of
// sequences that share a prefix share the stored blocks of that prefix.
Status save_kv_snapshot(const Model& model, const SequenceState& state, kv::SnapshotStore& store,
                        const std::string& name);
Result<SequenceState> load_kv_snapshot(const Model& model, const kv::SnapshotStore& store,
                                       const std::string& name,
                                       std::shared_ptr<kv::BlockPool> pool = nullptr,
                                       kv::CacheOptions options = {},
                                       kv::SnapshotReadOptions read = {});

}  // namespace dsv4::model
