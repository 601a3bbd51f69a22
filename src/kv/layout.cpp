// kv/layout.cpp — record sizes and byte counts of the KV cache (see layout.h).
#include "kv/layout.h"

#include <string>

namespace dsv4::kv {

namespace {

using formats::AttentionType;
using formats::ModelConfig;
using formats::ModelFamily;

constexpr uint64_t round_up(uint64_t x, uint64_t m) {
  return (x + m - 1) / m * m;
}

// --- Record sizes under `official`, as functions of the config's dims. Each reproduces the
// struct of layout.h for the published dims.

// V4 KV entry: nope dims f8_e4m3 + RoPE dims bf16 + one ue8m0 scale per 64 nope dims, the
// scale bytes rounded up to 8 (FlashMLA MODEL1: 7 scales + 1 pad). For other dims no deployed
// layout exists; we apply the same rules.
constexpr uint64_t v4_entry_official(uint64_t head_dim, uint64_t rope_dims) {
  const uint64_t nope = head_dim - rope_dims;
  return nope + 2 * rope_dims + round_up(nope / 64, 8);
}
static_assert(v4_entry_official(512, 64) == (512 - 64) + 64 * 2 + 8);  // 584
static_assert(v4_entry_official(512, 64) == sizeof(record::V4KvEntryFp8));

// V4 indexer key: f4_e2m1 codes (two per byte) + one ue8m0 scale per 32 dims.
constexpr uint64_t v4_indexer_official(uint64_t dims) {
  return dims / 2 + dims / 32;
}
static_assert(v4_indexer_official(128) == 128 / 2 + 128 / 32);  // 68
static_assert(v4_indexer_official(128) == sizeof(record::V4IndexerKeyFp4));

// V3.2 MLA entry: latent f8_e4m3 + one f32 scale per 128 latent dims + RoPE dims bf16.
constexpr uint64_t v32_mla_official(uint64_t latent, uint64_t rope_dims) {
  return latent + latent / 128 * 4 + 2 * rope_dims;
}
static_assert(v32_mla_official(512, 64) == 512 + 4 * 4 + 64 * 2);  // 656
static_assert(v32_mla_official(512, 64) == sizeof(record::V32MlaEntryFp8));

// V3.2 indexer key: f8_e4m3 + one f32 scale per 128 dims.
constexpr uint64_t v32_indexer_official(uint64_t dims) {
  return dims + dims / 128 * 4;
}
static_assert(v32_indexer_official(128) == 128 + 4);  // 132
static_assert(v32_indexer_official(128) == sizeof(record::V32IndexerKeyFp8));

// Bytes of one value stored at full precision under the scheme (`official` keeps bf16 for
// everything it does not quantize).
constexpr uint64_t value_bytes(Scheme s) {
  return s == Scheme::f32 ? 4 : 2;
}
// Bytes of one compressor-state value: the reference keeps kv_state/score_state in f32.
constexpr uint64_t state_bytes(Scheme s) {
  return s == Scheme::bf16 ? 2 : 4;
}

// kv_state + score_state of one compressor, each [coff * ratio, coff * dim].
constexpr uint64_t compressor_state(uint64_t ratio, uint64_t dim, bool overlap, Scheme s) {
  const uint64_t coff = overlap ? 2 : 1;
  return 2 * (coff * ratio) * (coff * dim) * state_bytes(s);
}
static_assert(compressor_state(4, 512, true, Scheme::official) == 2 * 8 * 1024 * 4);      // 64 KiB
static_assert(compressor_state(4, 128, true, Scheme::official) == 2 * 8 * 256 * 4);       // 16 KiB
static_assert(compressor_state(128, 512, false, Scheme::official) == 2 * 128 * 512 * 4);  // 512 KiB

std::string where(const ModelConfig& c) {
  return c.source.empty() ? c.model_type : c.source;
}

// ------------------------------------------------------------------------------- per family

Result<LayerLayout> v4_layer(const ModelConfig& c, Scheme s, int index, bool mtp,
                             AttentionType type) {
  const auto head_dim = static_cast<uint64_t>(c.head_dim);
  const auto rope = static_cast<uint64_t>(c.qk_rope_head_dim);
  const auto idx_dim = static_cast<uint64_t>(c.index_head_dim);
  LayerLayout l;
  l.layer = index;
  l.mtp = mtp;
  l.window = c.sliding_window;
  if (s == Scheme::official) {
    if ((head_dim - rope) % 64 != 0)
      return unsupported(where(c) + ": scheme official: head_dim - qk_rope_head_dim = " +
                         std::to_string(head_dim - rope) +
                         " is not a multiple of 64 (the FP8 scale block)");
    l.raw_token_bytes = v4_entry_official(head_dim, rope);
  } else {
    l.raw_token_bytes = head_dim * value_bytes(s);
  }
  switch (type) {
    case AttentionType::sliding_attention:
      l.kind = LayerKind::sliding_window;
      break;
    case AttentionType::compressed_sparse_attention: {
      l.kind = LayerKind::csa;
      l.compress_ratio = c.compress_rate_csa;
      l.compressed_entry_bytes = l.raw_token_bytes;
      if (s == Scheme::official) {
        if (idx_dim % 32 != 0)
          return unsupported(where(c) + ": scheme official: index_head_dim " +
                             std::to_string(idx_dim) +
                             " is not a multiple of 32 (the FP4 scale block)");
        l.indexer_key_bytes = v4_indexer_official(idx_dim);
      } else {
        l.indexer_key_bytes = idx_dim * value_bytes(s);
      }
      l.indexer_ratio = l.compress_ratio;
      const auto ratio = static_cast<uint64_t>(l.compress_ratio);
      l.compressor_state_bytes =
          compressor_state(ratio, head_dim, true, s) + compressor_state(ratio, idx_dim, true, s);
      break;
    }
    case AttentionType::heavily_compressed_attention:
      l.kind = LayerKind::hca;
      l.compress_ratio = c.compress_rate_hca;
      l.compressed_entry_bytes = l.raw_token_bytes;
      l.compressor_state_bytes =
          compressor_state(static_cast<uint64_t>(l.compress_ratio), head_dim, false, s);
      break;
  }
  return l;
}

Result<LayerLayout> mla_layer(const ModelConfig& c, Scheme s, int index, bool mtp) {
  const auto latent = static_cast<uint64_t>(c.kv_lora_rank);
  const auto rope = static_cast<uint64_t>(c.qk_rope_head_dim);
  const bool v32 = c.family == ModelFamily::deepseek_v32;
  LayerLayout l;
  l.layer = index;
  l.mtp = mtp;
  l.kind = v32 ? LayerKind::mla_indexer : LayerKind::mla;
  l.raw_every_token = true;
  // V3's reference keeps its MLA cache in bf16 (kv_cache + pe_cache); only V3.2 ships an FP8
  // layout, so `official` on V3 equals bf16.
  if (s == Scheme::official && v32) {
    if (latent % 128 != 0)
      return unsupported(where(c) + ": scheme official: kv_lora_rank " + std::to_string(latent) +
                         " is not a multiple of 128 (the FP8 scale block)");
    l.raw_token_bytes = v32_mla_official(latent, rope);
  } else {
    l.raw_token_bytes = (latent + rope) * value_bytes(s);
  }
  if (v32) {
    const auto idx_dim = static_cast<uint64_t>(c.index_head_dim);
    if (s == Scheme::official) {
      if (idx_dim % 128 != 0)
        return unsupported(where(c) + ": scheme official: index_head_dim " +
                           std::to_string(idx_dim) +
                           " is not a multiple of 128 (the FP8 scale block)");
      l.indexer_key_bytes = v32_indexer_official(idx_dim);
    } else {
      l.indexer_key_bytes = idx_dim * value_bytes(s);
    }
    l.indexer_ratio = 1;
  }
  return l;
}

LayerLayout gqa_layer(const ModelConfig& c, Scheme s, int index) {
  LayerLayout l;
  l.layer = index;
  const int64_t w =
      c.layer_sliding_window.empty() ? 0 : c.layer_sliding_window[static_cast<size_t>(index)];
  l.kind = w > 0 ? LayerKind::gqa_sliding : LayerKind::gqa;
  l.window = w;
  l.raw_every_token = w == 0;
  // K and V for every KV head; no deployed quantized layout, so `official` = bf16.
  l.raw_token_bytes = 2 * static_cast<uint64_t>(c.num_key_value_heads) *
                      static_cast<uint64_t>(c.head_dim) * value_bytes(s);
  return l;
}

// Checked arithmetic: the first overflow sticks.
struct Checked {
  bool overflow = false;
  uint64_t mul(uint64_t a, uint64_t b) {
    uint64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r)) overflow = true;
    return r;
  }
  uint64_t add(uint64_t a, uint64_t b) {
    uint64_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) overflow = true;
    return r;
  }
  void add_into(KvBytes& acc, const KvBytes& b) {
    acc.window = add(acc.window, b.window);
    acc.raw_kv = add(acc.raw_kv, b.raw_kv);
    acc.compressed = add(acc.compressed, b.compressed);
    acc.indexer = add(acc.indexer, b.indexer);
    acc.compressor_state = add(acc.compressor_state, b.compressor_state);
    // total() itself must fit too.
    (void)add(add(add(add(acc.window, acc.raw_kv), acc.compressed), acc.indexer),
              acc.compressor_state);
  }
};

Status overflow_error(uint64_t n_tokens) {
  return invalid_argument("KV bytes for " + std::to_string(n_tokens) + " tokens overflow 64 bits");
}

}  // namespace

std::string_view scheme_name(Scheme scheme) {
  switch (scheme) {
    case Scheme::bf16:
      return "bf16";
    case Scheme::f32:
      return "f32";
    case Scheme::official:
      return "official";
  }
  return "unknown";
}

std::string_view scheme_description(Scheme scheme) {
  switch (scheme) {
    case Scheme::bf16:
      return "every cached value bf16";
    case Scheme::f32:
      return "every cached value f32";
    case Scheme::official:
      return "DeepSeek's deployed layouts: FP8 e4m3 KV + bf16 RoPE dims, FP4 (V4) / FP8 (V3.2) "
             "indexer keys; V3 and GQA stay bf16";
  }
  return "unknown";
}

Result<Scheme> parse_scheme(std::string_view text) {
  for (Scheme s : {Scheme::bf16, Scheme::f32, Scheme::official}) {
    if (text == scheme_name(s)) return s;
  }
  return invalid_argument("unknown scheme '" + std::string(text.substr(0, 64)) +
                          "' (expected bf16, f32 or official)");
}

std::string_view layer_kind_name(LayerKind kind) {
  switch (kind) {
    case LayerKind::sliding_window:
      return "sliding_window";
    case LayerKind::csa:
      return "csa";
    case LayerKind::hca:
      return "hca";
    case LayerKind::mla:
      return "mla";
    case LayerKind::mla_indexer:
      return "mla_indexer";
    case LayerKind::gqa:
      return "gqa";
    case LayerKind::gqa_sliding:
      return "gqa_sliding";
  }
  return "unknown";
}

Result<KvLayout> make_layout(const ModelConfig& c, Scheme scheme, LayoutOptions options) {
  KvLayout out;
  out.model_type = c.model_type;
  out.family = c.family;
  out.scheme = scheme;
  out.main_layers = static_cast<int>(c.num_hidden_layers);
  const int n = out.main_layers;
  switch (c.family) {
    case ModelFamily::deepseek_v4: {
      // parse_model_config guarantees these; a hand-built config that breaks them is a bug.
      DSV4_CHECK(c.qk_rope_head_dim >= 0 && c.qk_rope_head_dim <= c.head_dim);
      DSV4_CHECK(c.sliding_window > 0 && c.compress_rate_csa > 0 && c.compress_rate_hca > 0);
      if (c.layer_types.size() != static_cast<size_t>(n))
        return internal_error(where(c) + ": layer_types has " +
                              std::to_string(c.layer_types.size()) + " entries for " +
                              std::to_string(n) + " layers");
      for (int i = 0; i < n; ++i) {
        DSV4_ASSIGN_OR_RETURN(LayerLayout l,
                              v4_layer(c, scheme, i, false, c.layer_types[static_cast<size_t>(i)]));
        out.layers.push_back(l);
      }
      if (options.include_mtp) {
        for (size_t j = 0; j < c.mtp_layer_types.size(); ++j) {
          DSV4_ASSIGN_OR_RETURN(LayerLayout l, v4_layer(c, scheme, n + static_cast<int>(j), true,
                                                        c.mtp_layer_types[j]));
          out.layers.push_back(l);
        }
      }
      break;
    }
    case ModelFamily::deepseek_v32:
    case ModelFamily::deepseek_v3: {
      const int total =
          n + (options.include_mtp ? static_cast<int>(c.num_nextn_predict_layers) : 0);
      for (int i = 0; i < total; ++i) {
        DSV4_ASSIGN_OR_RETURN(LayerLayout l, mla_layer(c, scheme, i, i >= n));
        out.layers.push_back(l);
      }
      break;
    }
    case ModelFamily::gqa:
      if (!c.layer_sliding_window.empty() &&
          c.layer_sliding_window.size() != static_cast<size_t>(n))
        return internal_error(where(c) + ": layer_sliding_window has the wrong length");
      for (int i = 0; i < n; ++i) out.layers.push_back(gqa_layer(c, scheme, i));
      break;
  }
  out.includes_mtp = options.include_mtp;
  return out;
}

Result<KvBytes> layer_bytes(const LayerLayout& l, uint64_t n) {
  Checked k;
  KvBytes b;
  if (l.raw_every_token) {
    b.raw_kv = k.mul(n, l.raw_token_bytes);
  } else if (l.window > 0) {
    b.window = k.mul(window_tokens(static_cast<uint64_t>(l.window), n), l.raw_token_bytes);
  }
  b.compressed = k.mul(compressed_entries(static_cast<uint64_t>(l.compress_ratio), n),
                       l.compressed_entry_bytes);
  b.indexer =
      k.mul(compressed_entries(static_cast<uint64_t>(l.indexer_ratio), n), l.indexer_key_bytes);
  b.compressor_state = l.compressor_state_bytes;
  KvBytes sum;
  k.add_into(sum, b);
  if (k.overflow) return overflow_error(n);
  return b;
}

Result<KvBytes> context_bytes(const KvLayout& layout, uint64_t n) {
  Checked k;
  KvBytes sum;
  for (const LayerLayout& l : layout.layers) {
    DSV4_ASSIGN_OR_RETURN(KvBytes b, layer_bytes(l, n));
    k.add_into(sum, b);
  }
  if (k.overflow) return overflow_error(n);
  return sum;
}

double layer_bytes_per_token(const LayerLayout& l, bool with_indexer) {
  double r = 0;
  if (l.raw_every_token) r += static_cast<double>(l.raw_token_bytes);
  if (l.compress_ratio > 0)
    r += static_cast<double>(l.compressed_entry_bytes) / static_cast<double>(l.compress_ratio);
  if (with_indexer && l.indexer_ratio > 0)
    r += static_cast<double>(l.indexer_key_bytes) / static_cast<double>(l.indexer_ratio);
  return r;
}

double bytes_per_token(const KvLayout& layout, bool with_indexer) {
  double r = 0;
  for (const LayerLayout& l : layout.layers) r += layer_bytes_per_token(l, with_indexer);
  return r;
}

Result<std::vector<KindSummary>> summarize_by_kind(const KvLayout& layout, uint64_t n) {
  std::vector<KindSummary> out;
  Checked k;
  for (const LayerLayout& l : layout.layers) {
    KindSummary* s = nullptr;
    for (KindSummary& e : out) {
      if (e.kind == l.kind) s = &e;
    }
    if (s == nullptr) {
      out.push_back(KindSummary{});
      s = &out.back();
      s->kind = l.kind;
      s->first = l;
    }
    DSV4_ASSIGN_OR_RETURN(KvBytes b, layer_bytes(l, n));
    k.add_into(s->bytes, b);
    s->layers += 1;
    s->bytes_per_token += layer_bytes_per_token(l);
  }
  if (k.overflow) return overflow_error(n);
  return out;
}

}  // namespace dsv4::kv
