// kv/layout.h — what the KV cache of one sequence stores, byte by byte: the single source of
// truth for KV sizes. `dsv4 kv` predicts with it, and the KV cache allocator must size its
// buffers with the same functions, so that predicted == allocated.
//
// Purpose: from a ModelConfig and a storage Scheme, derive per layer
//   * its kind (sliding window only, CSA ratio 4, HCA ratio 128, MLA, MLA + DSA indexer, GQA);
//   * the bytes of each record: a raw token (window ring entry, or every token for full
//     attention), a compressed KV entry, an indexer key, and the fixed compressor state;
// and from that, the bytes held after N tokens of context, split into parts that say what is
// fixed (window ring, compressor state) and what grows (raw_kv, compressed, indexer).
//
// How many records exist after N tokens (verified against DeepSeek's inference/model.py and
// transformers' DeepseekV4{HCA,CSA}Cache):
//   * window ring:       min(N, sliding_window) raw tokens (the reference allocates the full
//                        window_size ring; a cache sized for N < window never needs more)
//   * compressed entries: floor(N / compress_ratio) — one per closed window of ratio tokens;
//                        the CSA overlap changes what an entry averages, not how many exist
//   * CSA indexer keys:  floor(N / compress_ratio), one per compressed entry
//   * V3.2 indexer keys: N, one per token; MLA latents and GQA K/V: N
//   * compressor state:  fixed, allocated once per sequence per compressor (below).
//
// Invariants: every byte count is exact integer arithmetic, checked for 64-bit overflow (an
// overflow is an invalid_argument error, never a wrap); the layout of a layer depends only on
// the config and the scheme, never on N.
// Non-goals: paging/alignment of a particular allocator (FlashMLA pads each 64-token page of
// V4 records to a multiple of 576 B; our allocator stores records back to back), tensor
// parallel splits, activations and weights.
// Rejected alternative: one "bytes per token" number per model. It cannot express the fixed
// window and compressor state, nor floor(N / ratio) at context lengths that are not multiples
// of the ratio — exactly the cases where predicted and allocated bytes would drift apart.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "formats/model_config.h"

namespace dsv4::kv {

// How values are stored.
enum class Scheme {
  bf16,      // every cached value bf16; compressor state bf16
  f32,       // every cached value f32; compressor state f32
  official,  // DeepSeek's deployed layouts (records below); compressor state f32
};
std::string_view scheme_name(Scheme scheme);         // "bf16", "f32", "official"
std::string_view scheme_description(Scheme scheme);  // one line for tables
Result<Scheme> parse_scheme(std::string_view text);  // invalid_argument names the choices

enum class LayerKind {
  sliding_window,  // V4 compress_ratio 0: raw window only
  csa,             // V4 compressed sparse attention: window + ratio-4 entries + indexer keys
  hca,             // V4 heavily compressed attention: window + ratio-128 entries
  mla,             // V3 multi-head latent attention: one latent + RoPE key per token
  mla_indexer,     // V3.2: MLA + one DSA lightning-indexer key per token
  gqa,             // K and V of every KV head, every token
  gqa_sliding,     // K and V of every KV head, last `window` tokens
};
std::string_view layer_kind_name(LayerKind kind);  // "sliding_window", "csa", ...

// ---------------------------------------------------------------------------------------------
// Deployed record layouts (scheme `official`), for the published dimensions. The general
// formulas in layout.cpp reproduce these sizes for the published configs (static_asserts there).
namespace record {

// DeepSeek-V4 KV entry: one per raw window token and one per compressed (CSA/HCA) entry;
// head_dim 512 = 448 non-RoPE + 64 RoPE dims of the single shared K=V head.
// Source: FlashMLA tests/quant.py, FP8KVCacheLayout.MODEL1_FP8Sparse = (d 512, d_nope 448,
// d_rope 64, tile 64, 7 tiles), bytes_per_token = d_nope + 2*d_rope + num_tiles + 1; and
// DeepSeek-V4 inference/model.py, which rounds exactly these dims through FP8:
// act_quant(kv[..., :-rd], 64, "ue8m0") on window and compressed entries, RoPE dims kept bf16.
// (FlashMLA keeps the 8 scale bytes of a page's tokens after its nope+rope bytes; per entry the
// byte count is the same.)
struct V4KvEntryFp8 {
  uint8_t nope[448];  // f8_e4m3, dims [0, 448): 7 blocks of 64 dims
  uint16_t rope[64];  // bf16, dims [448, 512): positions stay exact
  uint8_t scale[7];   // ue8m0 (value 2^(e-127)), scale[b] for nope dims [64b, 64b + 64)
  uint8_t pad[1];     // FlashMLA's 8th scale byte, unused
};
static_assert(sizeof(V4KvEntryFp8) == 448 + 64 * 2 + 448 / 64 + 1);  // = 584 B

// DeepSeek-V4 lightning-indexer key: one per CSA compressed entry, index_head_dim 128.
// Source: DeepSeek-V4 inference/model.py: the indexer's Compressor (rotate=True) applies a
// Hadamard rotation then fp4_act_quant(kv, fp4_block_size = 32) with its default
// float8_e8m0fnu scales. (vLLM stores these keys FP8 + f32 scale, 132 B, unless
// use_fp4_indexer_cache is set.)
struct V4IndexerKeyFp4 {
  uint8_t codes[64];  // f4_e2m1, 128 dims, two per byte (low nibble = even dim)
  uint8_t scale[4];   // ue8m0, scale[b] for dims [32b, 32b + 32)
};
static_assert(sizeof(V4IndexerKeyFp4) == 128 / 2 + 128 / 32);  // = 68 B

// DeepSeek-V3.2 MLA entry: one per token; kv_lora_rank 512 latent + 64 RoPE dims.
// Source: FlashMLA tests/quant.py, FP8KVCacheLayout.V32_FP8Sparse = (d 576, d_nope 512,
// d_rope 64, tile 128, 4 tiles), bytes_per_token = d_nope + num_tiles*4 + 2*d_rope.
struct V32MlaEntryFp8 {
  uint8_t nope[512];  // f8_e4m3 latent, 4 blocks of 128 dims
  float scale[4];     // f32 (power of two), scale[b] for latent dims [128b, 128b + 128)
  uint16_t rope[64];  // bf16 decoupled RoPE key
};
static_assert(sizeof(V32MlaEntryFp8) == 512 + 4 * 4 + 64 * 2);  // = 656 B

// DeepSeek-V3.2 lightning-indexer key: one per token, index_head_dim 128.
// Source: DeepSeek-V3.2 inference/model.py Indexer: k_cache [.., 128] float8_e4m3fn and
// k_scale_cache [.., 128 / block_size(128)] float32.
struct V32IndexerKeyFp8 {
  uint8_t k[128];  // f8_e4m3
  float scale;     // f32, one per 128 dims
};
static_assert(sizeof(V32IndexerKeyFp8) == 128 + 4);  // = 132 B

}  // namespace record

// ---------------------------------------------------------------------------------------------
// Per-layer layout.
struct LayerLayout {
  int layer = 0;     // 0-based; MTP layers are numbered after the main layers
  bool mtp = false;  // a multi-token-prediction layer (only with LayoutOptions::include_mtp)
  LayerKind kind = LayerKind::gqa;
  int64_t compress_ratio = 0;           // tokens per compressed entry (0: none)
  int64_t window = 0;                   // raw tokens kept in the sliding-window ring (0: none)
  bool raw_every_token = false;         // full attention: a raw record for every token (MLA, GQA)
  uint64_t raw_token_bytes = 0;         // one raw token: window ring entry or full-attention entry
  uint64_t compressed_entry_bytes = 0;  // one compressed KV entry (CSA/HCA)
  uint64_t indexer_key_bytes = 0;       // one lightning-indexer key (CSA, V3.2)
  int64_t indexer_ratio = 0;            // tokens per indexer key (CSA: compress_ratio; V3.2: 1)
  // Fixed per sequence: the compressors' kv_state + score_state (DeepSeek-V4 inference/model.py
  // Compressor), each [coff * ratio, coff * dim] with coff = 2 for CSA's overlapping windows
  // (previous window's rows + the current window's, each 2*dim wide: the Ca | Cb halves) and
  // coff = 1 for HCA; dim = head_dim for the KV compressor, index_head_dim for the CSA
  // indexer's own compressor. f32 under `official`/`f32`, bf16 under `bf16`.
  uint64_t compressor_state_bytes = 0;
};

struct KvLayout {
  std::string model_type;  // from the config
  formats::ModelFamily family = formats::ModelFamily::gqa;
  Scheme scheme = Scheme::bf16;
  int main_layers = 0;  // num_hidden_layers
  bool includes_mtp = false;
  std::vector<LayerLayout> layers;  // main layers, then MTP layers when included
};

struct LayoutOptions {
  // Add the num_nextn_predict_layers MTP layers of DeepSeek models (V4: kind from the trailing
  // compress_ratios / layer_types entries, sliding window in both published files; V3/V3.2:
  // like the main layers). Off by default: the published KV comparisons count main layers.
  bool include_mtp = false;
};

// Builds the layout. Errors: unsupported when `official` has no deployed layout for the dims
// (e.g. V4 non-RoPE dims not a multiple of 64, indexer dims not a multiple of 32).
Result<KvLayout> make_layout(const formats::ModelConfig& config, Scheme scheme,
                             LayoutOptions options = {});

// Record counts after n_tokens tokens.
constexpr uint64_t window_tokens(uint64_t window, uint64_t n_tokens) {
  return n_tokens < window ? n_tokens : window;
}
constexpr uint64_t compressed_entries(uint64_t compress_ratio, uint64_t n_tokens) {
  return compress_ratio == 0 ? 0 : n_tokens / compress_ratio;
}

// Bytes held after n_tokens tokens, by part. total() = the sum of the five parts.
struct KvBytes {
  uint64_t window = 0;            // raw tokens in sliding-window rings (fixed once N >= window)
  uint64_t raw_kv = 0;            // full-attention raw entries: MLA latents, GQA K/V (grows)
  uint64_t compressed = 0;        // compressed KV entries of CSA/HCA layers (grows)
  uint64_t indexer = 0;           // lightning-indexer keys (grows)
  uint64_t compressor_state = 0;  // compressors' partial-window state (fixed)
  uint64_t total() const { return window + raw_kv + compressed + indexer + compressor_state; }
  uint64_t without_indexer() const { return total() - indexer; }
};

// Errors: invalid_argument when a count overflows 64 bits.
Result<KvBytes> layer_bytes(const LayerLayout& layer, uint64_t n_tokens);
Result<KvBytes> context_bytes(const KvLayout& layout, uint64_t n_tokens);

// Bytes each further token adds in the long run (raw_kv + compressed/ratio + indexer/ratio):
// the slope of context_bytes, without the fixed parts. Exact in a double for every layout of
// an accepted config (integers divided by ratios <= 2^20).
double layer_bytes_per_token(const LayerLayout& layer, bool with_indexer = true);
double bytes_per_token(const KvLayout& layout, bool with_indexer = true);

// Totals per layer kind, in first-appearance order. Record sizes are those of the first layer
// of the kind (they are equal within a kind for every accepted config).
struct KindSummary {
  LayerKind kind = LayerKind::gqa;
  int layers = 0;
  LayerLayout first;           // a representative layer of this kind
  double bytes_per_token = 0;  // slope, all layers of this kind
  KvBytes bytes;               // all layers of this kind, at the requested n_tokens
};
Result<std::vector<KindSummary>> summarize_by_kind(const KvLayout& layout, uint64_t n_tokens);

}  // namespace dsv4::kv
