// model/attention_exec.h — one DeepSeek-V4 attention layer (SWA / CSA / HCA) executed directly on
// the KV cache's `official` records: FP8 KV entries (584 B) and FP4 indexer keys (68 B) are read
// in place by the kernels of kernels/indexer.h and kernels/attention.h, split over a ThreadPool,
// with every buffer in one workspace sized up front (issue #6).
//
// Purpose: the code path that `Model::forward` (Scheme::official) and `dsv4 bench` share. It
// knows nothing of the cache's bookkeeping: the caller hands it record pointers (RecordRuns),
// so a benchmark can feed a synthetic cache of any length without a model.
//
// What one query token at position p computes (DeepSeek-V4 inference/model.py Attention.forward,
// docs/reference-v4.md):
//   keys(p) = window records of positions max(0, p-W+1) .. p (oldest first), then
//             SWA: nothing; HCA: every entry w < (p+1)/ratio in index order;
//             CSA: the index_topk entries the lightning indexer picks among w < (p+1)/ratio,
//                  in top-k order (all of them, in index order, when at most index_topk exist —
//                  the same set the reference's topk(min(topk, n)) returns, without scoring).
//   indexer (CSA): score[w] = sum_h wts[h] * relu(fp4(iq[h]) . key[w]) (kernels/indexer.h, keys
//             and query both FP4 e2m1 with ue8m0 scales per 32 dims: fp4_act_quant of the
//             Hadamard-rotated query, as the reference does); top-k = kernels::topk_f32 order
//             (larger score first, ties to the lower index).
//   out[h]  = softmax over keys(p) of scale * bf16(q[h]) . k (sink[h] in the denominator only)
//             weighted sum of the same records (K = V), kernels/attention.h. [n_heads, head_dim]
//             f32, before the inverse RoPE of the output's rope slice (the model does that).
//
// Chunked prefill: entries and indexer keys are append-only, so the model runs the compressors
// of a whole chunk first, then select_chunk() picks the top-k of all T queries at once (each
// FP4 key tile expanded once and scored against every query of a group; one StreamingTopK per
// query, so no [T, n_entries] matrix exists), then for each token in order: write its window
// row, attend_token(). The window ring holds only the last W positions, so the window part
// cannot be batched: row p is overwritten by p + W.
//
// Threading and determinism: the indexer splits keys (one query) or queries (a chunk) across
// workers; every score depends on its own (query, key) only and the top-k is exact, so the
// selection does not depend on the thread count or on the chunking. Attention is split on a
// fixed grid of (head group of kHeadGroup heads) x (key block), with the number of key blocks a
// function of the key count only (>= kMinBlockKeys keys per block, <= kMaxKeyBlocks blocks);
// the partial states of a head group are merged in key-block order by whichever worker finishes
// the group's last block (one dispatch per token, no merge pass). So the output is
// bit-identical for any thread count, and prefill equals token-by-token decode bit for bit.
//
// Memory: AttentionExec holds every buffer (indexer scores of one query [max entries], FP4
// queries, selected indices [T, index_topk], one StreamingTopK per query, per-thread kernel
// scratches and score tiles, partial attention states, record pointers). reserve() sizes them
// for a context length and chunk size and warms the kernels' scratches, after which decode and
// prefill within those limits allocate nothing; workspace_bytes() is the transient memory
// (V4-Flash, 1M context, 64-token chunks: ~6 MiB with 2 threads, ~20 MiB with 16 — about
// 1 MiB of kernel scratch per thread; issue #6 allows 10 % of the 3.45 GiB cache).
//
// Invariants: record pointers stay valid for the duration of a call; keys.count and
// entries.count cover what positions up to p0+T-1 may see. Not thread-safe: one exec per
// sequence being decoded. Non-goals: f32 storage (Scheme::f32 keeps the exact dequantized path
// in model.cpp), batches of several sequences, the MLA baseline.
// Rejected alternatives: per-thread partial states (the result would depend on the thread
// count); a [T, n_entries] score matrix for prefill (at 1M and T = 64: 64 MiB per layer call);
// dequantizing the selected rows to f32 first (2 KiB of writes per 584 B record read).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/check.h"
#include "base/thread_pool.h"
#include "formats/model_config.h"
#include "kernels/attention.h"
#include "kernels/indexer.h"
#include "kernels/ops.h"

namespace dsv4::model {

// The shape of one V4 attention layer as the exec sees it.
struct AttnLayerShape {
  size_t n_heads = 0;         // num_attention_heads (H)
  kernels::V4RecordDims rec;  // head_dim (512), qk_rope_head_dim (64) of the KV records
  size_t window = 0;          // sliding_window (W, 128): raw tokens of the ring
  size_t ratio = 0;           // compress ratio: 0 SWA, 4 CSA, 128 HCA
  bool indexer = false;       // CSA: the lightning indexer selects the entries
  size_t index_n_heads = 0;   // indexer query heads (64)
  size_t index_head_dim = 0;  // indexer key/query dims (128); % 32 == 0, <= 512
  size_t index_topk = 0;      // entries kept per query (512)
  float scale = 0.f;          // softmax scale, head_dim^-1/2

  // Main layer `layer` of a deepseek_v4 config.
  static AttnLayerShape of_layer(const formats::ModelConfig& config, int layer);
  size_t head_dim() const { return rec.head_dim; }
  size_t record_bytes() const { return rec.record_bytes(); }
  size_t index_key_bytes() const { return kernels::indexer_fp4_record_bytes(index_head_dim); }
  // Entries (= indexer keys) visible to the query at position pos: (pos + 1) / ratio.
  size_t visible_entries(int64_t pos) const {
    return ratio == 0 ? 0 : static_cast<size_t>((pos + 1) / static_cast<int64_t>(ratio));
  }
};

// Records [0, count) of one stream, stored in runs of contiguous records (KV cache blocks):
// record i lives at runs[i / run_records] + (i % run_records) * record_bytes. Every run but the
// last holds run_records records. The pointer array belongs to the caller.
struct RecordRuns {
  const uint8_t* const* runs = nullptr;  // [ceil(count / run_records)]
  size_t run_records = 0;
  size_t record_bytes = 0;
  size_t count = 0;
  const uint8_t* at(size_t i) const {
    DSV4_DCHECK(i < count);
    return runs[i / run_records] + (i % run_records) * record_bytes;
  }
  // Records contiguous from i (to the end of its run or of the stream).
  size_t run_left(size_t i) const {
    const size_t end = (i / run_records + 1) * run_records;
    return (end < count ? end : count) - i;
  }
};

// One layer's records.
struct LayerRecords {
  RecordRuns window;      // the ring: count = W slots, position p in slot p % W (V4 KV entries)
  RecordRuns entries;     // compressed entries in window order (CSA, HCA; V4 KV entries)
  RecordRuns index_keys;  // CSA indexer keys, one per entry (FP4 records)
};

class AttentionExec {
 public:
  // Attention work grid (see the header comment). Constants, so results never depend on threads.
  // kHeadGroup: a key tile is decoded once per group, so larger groups cost fewer decodes but
  // give fewer work items: V4-Flash decode at 16 threads was fastest with 16 (groups of 32/64
  // were 10-60 % slower; at 1 thread up to 10 % faster).
  static constexpr size_t kHeadGroup = 16;  // heads per attention work item
  // A token with at most kSmallKeys keys (a sliding-window layer's 128; CSA/HCA early on) runs
  // as one key block in groups of kSmallHeadGroup heads: half the tile decodes of kHeadGroup and
  // no merge (fixed costs dominate such small attention). Splitting a 128-key window by keys
  // instead (2 blocks x 64 heads, every record decoded once) measured the same cold and ~10 %
  // slower warm on 2 threads: per-call buffer traffic (64 heads x 512 dims of f32 query,
  // partial state and output, 128 KiB each), not decoding, is what such a call waits on.
  static constexpr size_t kSmallKeys = 256;
  static constexpr size_t kSmallHeadGroup = 32;
  static constexpr size_t kSmallBlockKeys = kSmallKeys;  // one key block
  // A token with at least kLargeKeys keys (HCA from 256K context on) already has
  // kMaxKeyBlocks key blocks, so groups of kLargeHeadGroup heads still give 32 work items for
  // 64 heads (two full-size items per thread at 16 threads, the same work as four 16-head
  // items) with each key tile decoded half as often. One HCA layer on 2 threads, median of 4
  // alternating runs: 1M 5.53 -> 5.26 ms, 256K 1.63 -> 1.55 ms. Groups of 64 were faster still
  // on 2 threads (4.88 / 1.50 ms) but leave 16 items and one serial 16-way merge of 64 heads:
  // at 16 threads that merge alone would be ~15 % of the layer.
  static constexpr size_t kLargeKeys = 2048;
  static constexpr size_t kLargeHeadGroup = 32;
  static constexpr size_t head_group(size_t n_keys) {
    return n_keys <= kSmallKeys   ? kSmallHeadGroup
           : n_keys >= kLargeKeys ? kLargeHeadGroup
                                  : kHeadGroup;
  }
  static constexpr size_t kMinBlockKeys = 64;  // keys per key block, at least
  static constexpr size_t kMaxKeyBlocks = 16;  // key blocks per token, at most
  static constexpr size_t kScoreTile = 256;    // keys per indexer tile in select_chunk
  static constexpr size_t kScoreGrain = 1024;  // keys per worker slice, one-query scoring

  // Sizes every buffer for a layer of `shape` (call once per layer shape: buffers take the
  // maximum), chunks of up to max_chunk_tokens queries, positions < max_context and up to
  // n_threads workers, and runs each kernel once on dummy records so their scratches reach
  // their working size. Calls within these limits then allocate nothing; a call beyond them
  // grows the buffers (an allocation, never an error).
  void reserve(const AttnLayerShape& shape, size_t max_chunk_tokens, int64_t max_context,
               int n_threads);

  // Bytes of every buffer the exec holds (capacity, kernel scratches included): the transient
  // memory of attention, reported by `dsv4 bench` and `dsv4 kv --measure`.
  uint64_t workspace_bytes() const;

  // CSA step 1: the top-k entries of T query tokens at positions p0 .. p0+T-1.
  //   iq:   [T, index_n_heads, index_head_dim] f32 indexer queries after RoPE and the Hadamard
  //         rotation (quantized to FP4 here, block 32, as fp4_act_quant);
  //   wts:  [T, index_n_heads] f32 head weights = weights_proj(x) * index_head_dim^-1/2 *
  //         index_n_heads^-1/2;
  //   keys: indexer keys, keys.count >= shape.visible_entries(p0 + T - 1).
  // Afterwards selected(t) holds token t's entries (see the header comment for the order).
  // T == 1 splits the keys across workers into one score row, then kernels::topk_f32; T > 1
  // splits the queries across workers, each streaming key tiles through StreamingTopK.
  void select_chunk(const AttnLayerShape& shape, const RecordRuns& keys, int64_t p0, size_t T,
                    const float* iq, const float* wts, ThreadPool& pool);
  std::span<const int32_t> selected(size_t t) const {
    DSV4_CHECK(t < sel_count_.size());
    return {&selected_[t * sel_stride_], sel_count_[t]};
  }

  // Step 2 for the token at position pos: attention over keys(pos).
  //   recs: window slots (the row of pos must be written already) and, for HCA/CSA, entries
  //         (count >= shape.visible_entries(pos));
  //   q:    [n_heads, head_dim] f32 queries after RoPE (rounded to bf16 by the kernel);
  //   selected: CSA only, this token's entries (selected(t) of select_chunk); ignored otherwise;
  //   sink: [n_heads] f32 attention-sink logits;
  //   out:  [n_heads, head_dim] f32.
  void attend_token(const AttnLayerShape& shape, const LayerRecords& recs, int64_t pos,
                    const float* q, std::span<const int32_t> selected, const float* sink,
                    float* out, ThreadPool& pool);

  // One decode step: select_chunk(T = 1) when CSA, then attend_token.
  //   iq: [index_n_heads, index_head_dim], wts: [index_n_heads] (CSA only; else nullptr).
  void decode(const AttnLayerShape& shape, const LayerRecords& recs, int64_t pos, const float* q,
              const float* iq, const float* wts, const float* sink, float* out, ThreadPool& pool);

 private:
  struct PerThread {
    kernels::IndexerScratch iscratch;
    kernels::AttnScratch ascratch;
    std::vector<float> tile;  // [max_chunk_tokens, kScoreTile] indexer scores of one key tile
  };
  void ensure_threads(int n_threads);
  void quantize_queries(const AttnLayerShape& shape, size_t T, const float* iq, const float* wts);

  size_t max_chunk_ = 0;
  std::vector<PerThread> threads_;
  // Indexer.
  std::vector<uint8_t> q_codes_;                   // [T, index_n_heads, index_head_dim / 2] f4_e2m1
  std::vector<uint8_t> q_scales_;                  // [T, index_n_heads, index_head_dim / 32] ue8m0
  std::vector<float> q_wts_;                       // [T, index_n_heads]
  std::vector<kernels::IndexerFp4Query> queries_;  // [T]
  kernels::IndexerFp4Plan plan_;                   // queries_ prepared for the integer kernels
  std::vector<float> scores_;                      // [max entries] one query's scores (T == 1)
  kernels::TopKScratch topk_scratch_;
  std::vector<kernels::StreamingTopK> streams_;  // [T]
  std::vector<int32_t> selected_;                // [T, sel_stride_]
  std::vector<size_t> sel_count_;                // [T]
  size_t sel_stride_ = 0;
  // Attention.
  std::vector<const uint8_t*> recs_;        // [W + max entries] keys of one token
  std::vector<kernels::AttnState> states_;  // [head groups * kMaxKeyBlocks]
  // [head groups] key blocks of the group still running: the worker that finishes a group's last
  // block merges the group's states in block order and writes its output (no second dispatch).
  std::unique_ptr<std::atomic<uint32_t>[]> pending_;
  size_t pending_size_ = 0;
};

}  // namespace dsv4::model
