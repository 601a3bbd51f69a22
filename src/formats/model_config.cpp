// formats/model_config.cpp — config.json -> ModelConfig (see model_config.h).
// nlohmann_json is used only here; its exceptions are caught at parse_model_config's edge.
#include "formats/model_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <utility>

#include "base/mmap_file.h"

namespace dsv4::formats {

namespace {

using json = nlohmann::json;

// Implausibility bounds. They keep per-layer vectors small and make every byte count that
// kv/layout derives from an accepted config fit comfortably in 64 bits per token.
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxMtpLayers = 64;
constexpr int64_t kMaxDim = int64_t{1} << 20;  // hidden/head/lora/expert dims
constexpr int64_t kMaxHeads = int64_t{1} << 16;
constexpr int64_t kMaxExperts = int64_t{1} << 16;
constexpr int64_t kMaxVocab = int64_t{1} << 26;
constexpr int64_t kMaxTokens = int64_t{1} << 40;  // window lengths, positions, top-k
constexpr int64_t kMaxRatio = int64_t{1} << 20;   // compress rates
constexpr int64_t kMaxTokenId = (int64_t{1} << 31) - 1;

// Shows an untrusted string in a message: quoted, control bytes escaped, at most 64 bytes.
std::string quote(std::string_view s) {
  std::string out = "'";
  size_t n = 0;
  for (unsigned char c : s) {
    if (++n > 64) {
      out += "...";
      break;
    }
    if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "'";
}

std::string type_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a non-integer number";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "an unexpected JSON value";
  }
}

std::string fmt_number(double v) {
  std::string s = std::to_string(v);
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// Converts a JSON integer to int64; false if it is not an integer or does not fit.
bool as_int64(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  return false;
}

// Typed access to the fields of one JSON object. Records the first error; later reads return
// their fallback so parsing code can read everything and check status() once.
class Fields {
 public:
  Fields(const json& obj, std::string source, std::string prefix = "")
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  const json* find(std::string_view key) const {
    auto it = obj_.find(std::string(key));
    return it == obj_.end() ? nullptr : &*it;
  }
  // Present and not null.
  bool has(std::string_view key) const {
    const json* v = find(key);
    return v != nullptr && !v->is_null();
  }
  std::string name(std::string_view key) const { return prefix_ + std::string(key); }

  void fail(std::string_view field, const std::string& what) {
    if (status_.ok()) status_ = invalid_argument(source_ + ": " + std::string(field) + ": " + what);
  }
  void fail_code(Status s) {
    if (status_.ok()) status_ = std::move(s);
  }
  const Status& status() const { return status_; }
  const std::string& source() const { return source_; }

  // An integer in [lo, hi]. Absent -> fallback; null is an error (the reference types these
  // fields as plain ints).
  int64_t integer(std::string_view key, int64_t fallback, int64_t lo, int64_t hi) {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    return check_int(name(key), *v, fallback, lo, hi);
  }
  // An integer in [lo, hi], or nullopt when absent or null (Optional in the reference).
  std::optional<int64_t> optional_integer(std::string_view key, int64_t lo, int64_t hi) {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    return check_int(name(key), *v, lo, lo, hi);
  }
  int64_t check_int(const std::string& field, const json& v, int64_t fallback, int64_t lo,
                    int64_t hi) {
    int64_t x = 0;
    if (!as_int64(v, &x)) {
      fail(field, "expected an integer, got " + type_of(v));
      return fallback;
    }
    if (x < lo || x > hi) {
      fail(field, std::to_string(x) + " is out of range (expected " + std::to_string(lo) + " to " +
                      std::to_string(hi) + ")");
      return fallback;
    }
    return x;
  }

  // A finite number (integer or float) in [lo, hi] (lo exclusive when lo_exclusive).
  double number(std::string_view key, double fallback, double lo, double hi,
                bool lo_exclusive = false) {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_number()) {
      fail(name(key), "expected a number, got " + type_of(*v));
      return fallback;
    }
    double x = v->get<double>();
    if (!std::isfinite(x) || x < lo || x > hi || (lo_exclusive && x == lo)) {
      fail(name(key), fmt_number(x) + " is out of range (expected " +
                          (lo_exclusive ? "more than " : "") + fmt_number(lo) + " to " +
                          fmt_number(hi) + ")");
      return fallback;
    }
    return x;
  }

  bool boolean(std::string_view key, bool fallback) {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) {
      fail(name(key), "expected true or false, got " + type_of(*v));
      return fallback;
    }
    return v->get<bool>();
  }

  // A string; absent -> fallback; null -> fallback only when null_ok.
  std::string string(std::string_view key, std::string fallback, bool null_ok = false) {
    const json* v = find(key);
    if (v == nullptr || (null_ok && v->is_null())) return fallback;
    if (!v->is_string()) {
      fail(name(key), "expected a string, got " + type_of(*v));
      return fallback;
    }
    return v->get<std::string>();
  }

  // An object or nullptr when absent/null; error for other types.
  const json* object(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return nullptr;
    if (!v->is_object()) {
      fail(name(key), "expected an object, got " + type_of(*v));
      return nullptr;
    }
    return v;
  }
  // An array or nullptr when absent/null; error for other types.
  const json* array(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return nullptr;
    if (!v->is_array()) {
      fail(name(key), "expected an array, got " + type_of(*v));
      return nullptr;
    }
    return v;
  }

 private:
  const json& obj_;
  std::string source_;
  std::string prefix_;
  Status status_;
};

// bos_token_id: int or null. eos_token_id: int, list of ints, or null.
void read_special_tokens(Fields& f, ModelConfig& c, std::optional<int64_t> bos_default,
                         std::optional<int64_t> eos_default) {
  c.bos_token_id =
      f.find("bos_token_id") ? f.optional_integer("bos_token_id", 0, kMaxTokenId) : bos_default;
  const json* eos = f.find("eos_token_id");
  if (eos == nullptr) {
    if (eos_default) c.eos_token_id = {*eos_default};
  } else if (eos->is_array()) {
    for (size_t i = 0; i < eos->size(); ++i) {
      int64_t id =
          f.check_int("eos_token_id[" + std::to_string(i) + "]", (*eos)[i], 0, 0, kMaxTokenId);
      c.eos_token_id.push_back(id);
    }
  } else if (!eos->is_null()) {
    c.eos_token_id = {f.check_int("eos_token_id", *eos, 0, 0, kMaxTokenId)};
  }
}

void read_quantization(Fields& f, ModelConfig& c) {
  if (const json* q = f.object("quantization_config")) {
    Fields qf(*q, f.source(), "quantization_config.");
    auto& qc = c.quantization_config;
    qc.present = true;
    qc.quant_method = qf.string("quant_method", "", true);
    qc.fmt = qf.string("fmt", "", true);
    qc.scale_fmt = qf.string("scale_fmt", "", true);
    qc.activation_scheme = qf.string("activation_scheme", "", true);
    qc.expert_dtype = qf.string("expert_dtype", "", true);
    if (const json* wb = qf.array("weight_block_size")) {
      for (size_t i = 0; i < wb->size(); ++i) {
        qc.weight_block_size.push_back(
            qf.check_int("quantization_config.weight_block_size[" + std::to_string(i) + "]",
                         (*wb)[i], 1, 1, kMaxDim));
      }
    }
    f.fail_code(qf.status());
  }
  // V4 files carry expert_dtype at the top level; transformers folds it into the quantization
  // config (DeepseekV4Config.__post_init__).
  std::string top = f.string("expert_dtype", "", true);
  if (!top.empty() && c.quantization_config.expert_dtype.empty())
    c.quantization_config.expert_dtype = top;
}

// One YaRN-style parameter object: rope_scaling (DeepSeek files) or rope_parameters (flat
// transformers form) or rope_parameters["compress"] (nested transformers form).
void read_rope_scaling(Fields& f, const json& obj, const std::string& prefix, RopeScaling& r) {
  Fields rf(obj, f.source(), prefix);
  std::string type = rf.string("type", "", true);
  if (type.empty()) type = rf.string("rope_type", "", true);
  r.type = type.empty() ? "default" : type;
  r.factor = rf.number("factor", 1.0, 0.0, 1e9, /*lo_exclusive=*/true);
  r.original_max_position_embeddings =
      rf.integer("original_max_position_embeddings", 0, 0, kMaxTokens);
  r.beta_fast = rf.number("beta_fast", 32.0, -1e9, 1e9);
  r.beta_slow = rf.number("beta_slow", 1.0, -1e9, 1e9);
  r.mscale = rf.number("mscale", 1.0, -1e9, 1e9);
  r.mscale_all_dim = rf.number("mscale_all_dim", 0.0, -1e9, 1e9);
  if (rf.has("attention_factor"))
    r.attention_factor = rf.number("attention_factor", 1.0, 0.0, 1e9, true);
  f.fail_code(rf.status());
}

// ----------------------------------------------------------------------------- deepseek_v4

AttentionType attention_type_of_ratio(int64_t ratio) {
  return ratio == 0   ? AttentionType::sliding_attention
         : ratio == 4 ? AttentionType::compressed_sparse_attention
                      : AttentionType::heavily_compressed_attention;
}

std::optional<AttentionType> parse_attention_type(std::string_view s) {
  for (auto t : {AttentionType::sliding_attention, AttentionType::compressed_sparse_attention,
                 AttentionType::heavily_compressed_attention}) {
    if (s == attention_type_name(t)) return t;
  }
  return std::nullopt;
}

// Checks a per-layer list length: num_hidden_layers entries, optionally followed by one per
// MTP layer (the published files: 43 + 1 = 44 for V4-Flash, 61 + 1 = 62 for V4-Pro).
bool check_layer_list_length(Fields& f, std::string_view field, size_t len, const ModelConfig& c) {
  const auto n = static_cast<size_t>(c.num_hidden_layers);
  const auto mtp = static_cast<size_t>(c.num_nextn_predict_layers);
  if (len >= n && len <= n + mtp) return true;
  std::string expected = std::to_string(n);
  if (mtp > 0)
    expected += " (num_hidden_layers) to " + std::to_string(n + mtp) +
                " (num_hidden_layers + num_nextn_predict_layers)";
  f.fail(field, "has " + std::to_string(len) + " entries, expected " + expected);
  return false;
}

void parse_deepseek_v4(Fields& f, ModelConfig& c) {
  // Defaults: transformers DeepseekV4Config (configuration_deepseek_v4.py).
  c.vocab_size = f.integer("vocab_size", 129280, 1, kMaxVocab);
  c.hidden_size = f.integer("hidden_size", 4096, 1, kMaxDim);
  c.moe_intermediate_size = f.integer("moe_intermediate_size", 2048, 1, kMaxDim);
  c.num_hidden_layers = f.integer("num_hidden_layers", 43, 1, kMaxLayers);
  c.num_attention_heads = f.integer("num_attention_heads", 64, 1, kMaxHeads);
  c.num_key_value_heads = f.integer("num_key_value_heads", 1, 1, kMaxHeads);
  c.head_dim = f.integer("head_dim", 512, 1, kMaxDim);
  c.q_lora_rank = f.integer("q_lora_rank", 1024, 1, kMaxDim);
  c.num_experts_per_tok = f.integer("num_experts_per_tok", 6, 1, kMaxExperts);
  c.n_routed_experts = f.integer("n_routed_experts", 256, 1, kMaxExperts);
  c.n_shared_experts = f.integer("n_shared_experts", 1, 0, kMaxExperts);
  c.scoring_func = f.string("scoring_func", "sqrtsoftplus");
  c.norm_topk_prob = f.boolean("norm_topk_prob", true);
  c.routed_scaling_factor = f.number("routed_scaling_factor", 1.5, 0.0, 1e6);
  c.max_position_embeddings = f.integer("max_position_embeddings", 1048576, 1, kMaxTokens);
  c.rope_theta = f.number("rope_theta", 10000.0, 0.0, 1e12, true);
  c.compress_rope_theta = f.number("compress_rope_theta", 160000.0, 0.0, 1e12, true);
  c.hc_mult = f.integer("hc_mult", 4, 1, 64);
  c.hc_sinkhorn_iters = f.integer("hc_sinkhorn_iters", 20, 0, 1000);
  c.hc_eps = f.number("hc_eps", 1e-6, 0.0, 1.0);
  c.swiglu_limit = f.number("swiglu_limit", 10.0, 0.0, 1e9);
  c.sliding_window = f.integer("sliding_window", 128, 1, kMaxTokens);
  c.o_groups = f.integer("o_groups", 8, 1, kMaxHeads);
  c.o_lora_rank = f.integer("o_lora_rank", 1024, 1, kMaxDim);
  c.index_n_heads = f.integer("index_n_heads", 64, 0, kMaxHeads);
  c.index_head_dim = f.integer("index_head_dim", 128, 0, kMaxDim);
  c.index_topk = f.integer("index_topk", 512, 0, kMaxTokens);
  c.num_nextn_predict_layers = f.integer("num_nextn_predict_layers", 1, 0, kMaxMtpLayers);
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6, 0.0, 1.0, true);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  read_special_tokens(f, c, 0, 1);
  read_quantization(f, c);
  if (!f.status().ok()) return;

  if (c.scoring_func != "sqrtsoftplus" && c.scoring_func != "softmax" &&
      c.scoring_func != "sigmoid")
    f.fail("scoring_func", quote(c.scoring_func) + " is not one of sqrtsoftplus, softmax, sigmoid");
  if (c.num_key_value_heads != 1)
    f.fail_code(unsupported(f.source() +
                            ": num_key_value_heads: " + std::to_string(c.num_key_value_heads) +
                            " is not supported (DeepSeek-V4 attention shares one KV head: 1)"));
  if (c.num_experts_per_tok > c.n_routed_experts)
    f.fail("num_experts_per_tok", std::to_string(c.num_experts_per_tok) +
                                      " is more than n_routed_experts (" +
                                      std::to_string(c.n_routed_experts) + ")");
  if (c.num_attention_heads % c.o_groups != 0)
    f.fail("o_groups", std::to_string(c.o_groups) + " does not divide num_attention_heads (" +
                           std::to_string(c.num_attention_heads) + ")");

  // RoPE dims: partial_rotary_factor (transformers) wins over qk_rope_head_dim (DeepSeek files);
  // default 64 / 512 (DeepseekV4Config.default_partial_rotary_factor).
  const bool has_prf = f.has("partial_rotary_factor");
  const bool has_rope = f.has("qk_rope_head_dim");
  const int64_t rope_dims = f.integer("qk_rope_head_dim", 64, 0, kMaxDim);
  if (has_prf) {
    c.partial_rotary_factor = f.number("partial_rotary_factor", 0.125, 0.0, 1.0, true);
    // Python's int(head_dim * factor) truncates, as transformers does.
    c.qk_rope_head_dim =
        static_cast<int64_t>(static_cast<double>(c.head_dim) * c.partial_rotary_factor);
    if (has_rope && rope_dims != c.qk_rope_head_dim)
      f.fail("qk_rope_head_dim", std::to_string(rope_dims) +
                                     " disagrees with partial_rotary_factor * head_dim (" +
                                     std::to_string(c.qk_rope_head_dim) + ")");
  } else if (has_rope) {
    c.qk_rope_head_dim = rope_dims;
    c.partial_rotary_factor = static_cast<double>(rope_dims) / static_cast<double>(c.head_dim);
  } else {
    c.partial_rotary_factor = 64.0 / 512.0;
    c.qk_rope_head_dim =
        static_cast<int64_t>(static_cast<double>(c.head_dim) * c.partial_rotary_factor);
  }
  if (c.qk_rope_head_dim > c.head_dim)
    f.fail("qk_rope_head_dim", std::to_string(c.qk_rope_head_dim) + " is more than head_dim (" +
                                   std::to_string(c.head_dim) + ")");
  if (c.qk_rope_head_dim % 2 != 0)
    f.fail("qk_rope_head_dim",
           std::to_string(c.qk_rope_head_dim) + " is odd (RoPE rotates pairs of dims)");

  // RoPE scaling: nested rope_parameters {"main", "compress"}, flat rope_parameters, or
  // rope_scaling. YaRN applies to the compressed layers only (the "compress" rope type).
  if (const json* rp = f.object("rope_parameters")) {
    const auto main_it = rp->find("main");
    const auto comp_it = rp->find("compress");
    if (main_it != rp->end() && comp_it != rp->end() && main_it->is_object() &&
        comp_it->is_object()) {
      Fields mf(*main_it, f.source(), "rope_parameters.main.");
      Fields cf(*comp_it, f.source(), "rope_parameters.compress.");
      c.rope_theta = mf.number("rope_theta", c.rope_theta, 0.0, 1e12, true);
      c.compress_rope_theta = cf.number("rope_theta", c.compress_rope_theta, 0.0, 1e12, true);
      f.fail_code(mf.status());
      f.fail_code(cf.status());
      read_rope_scaling(f, *comp_it, "rope_parameters.compress.", c.rope_scaling);
    } else {
      read_rope_scaling(f, *rp, "rope_parameters.", c.rope_scaling);
    }
  } else if (const json* rs = f.object("rope_scaling")) {
    read_rope_scaling(f, *rs, "rope_scaling.", c.rope_scaling);
  }
  if (c.rope_scaling.type == "yarn" && c.rope_scaling.original_max_position_embeddings == 0)
    c.rope_scaling.original_max_position_embeddings = c.max_position_embeddings;

  // Compression rates per attention type.
  c.compress_rate_csa = 4;
  c.compress_rate_hca = 128;
  if (const json* rates = f.object("compress_rates")) {
    Fields rf(*rates, f.source(), "compress_rates.");
    c.compress_rate_csa = rf.integer("compressed_sparse_attention", 4, 1, kMaxRatio);
    c.compress_rate_hca = rf.integer("heavily_compressed_attention", 128, 1, kMaxRatio);
    f.fail_code(rf.status());
  }
  c.compress_rate_csa = f.integer("compress_rate_csa", c.compress_rate_csa, 1, kMaxRatio);
  c.compress_rate_hca = f.integer("compress_rate_hca", c.compress_rate_hca, 1, kMaxRatio);
  if (!f.status().ok()) return;

  const auto n = static_cast<size_t>(c.num_hidden_layers);
  const auto n_mtp = static_cast<size_t>(c.num_nextn_predict_layers);

  // Attention schedule. compress_ratios: DeepSeek's per-layer ints.
  std::vector<AttentionType> from_ratios;
  if (const json* ratios = f.array("compress_ratios")) {
    if (check_layer_list_length(f, "compress_ratios", ratios->size(), c)) {
      for (size_t i = 0; i < ratios->size(); ++i) {
        std::string field = "compress_ratios[" + std::to_string(i) + "]";
        int64_t r = f.check_int(field, (*ratios)[i], 0, 0, kMaxRatio);
        if (r != 0 && r != 4 && r != 128) {
          f.fail(field, std::to_string(r) + " is not a compress ratio (expected 0, 4 or 128)");
          break;
        }
        from_ratios.push_back(attention_type_of_ratio(r));
      }
    }
  }
  std::vector<AttentionType> from_types;
  if (const json* types = f.array("layer_types")) {
    if (check_layer_list_length(f, "layer_types", types->size(), c)) {
      for (size_t i = 0; i < types->size(); ++i) {
        std::string field = "layer_types[" + std::to_string(i) + "]";
        const json& v = (*types)[i];
        std::optional<AttentionType> t =
            v.is_string() ? parse_attention_type(v.get<std::string>()) : std::nullopt;
        if (!t) {
          f.fail(field, (v.is_string() ? quote(v.get<std::string>()) : type_of(v)) +
                            " is not one of sliding_attention, compressed_sparse_attention, "
                            "heavily_compressed_attention");
          break;
        }
        from_types.push_back(*t);
      }
    }
  }
  if (!f.status().ok()) return;
  if (!from_types.empty() && !from_ratios.empty()) {
    for (size_t i = 0; i < std::min(from_types.size(), from_ratios.size()); ++i) {
      if (from_types[i] != from_ratios[i]) {
        f.fail("layer_types[" + std::to_string(i) + "]",
               std::string(attention_type_name(from_types[i])) +
                   " disagrees with compress_ratios[" + std::to_string(i) + "] (" +
                   std::string(attention_type_name(from_ratios[i])) + ")");
        return;
      }
    }
  }
  std::vector<AttentionType> schedule = !from_types.empty() ? from_types : from_ratios;
  if (schedule.empty()) {
    // transformers' default when neither is given: 2 HCA layers, then HCA/CSA alternating
    // starting with HCA (note: the published V4-Pro file instead starts CSA at layer 2).
    for (size_t i = 0; i < std::min<size_t>(n, 2); ++i)
      schedule.push_back(AttentionType::heavily_compressed_attention);
    for (size_t i = 0; i + 2 < n; ++i)
      schedule.push_back(i % 2 ? AttentionType::compressed_sparse_attention
                               : AttentionType::heavily_compressed_attention);
  }
  const size_t extra =
      from_types.size() > from_ratios.size() ? from_types.size() : from_ratios.size();
  c.layer_types.assign(schedule.begin(), schedule.begin() + static_cast<std::ptrdiff_t>(n));
  c.mtp_layer_types.assign(n_mtp, AttentionType::sliding_attention);
  const std::vector<AttentionType>& longer =
      from_types.size() >= from_ratios.size() ? from_types : from_ratios;
  for (size_t i = n; i < extra; ++i) c.mtp_layer_types[i - n] = longer[i];
  c.compress_ratios.clear();
  for (AttentionType t : c.layer_types) {
    c.compress_ratios.push_back(t == AttentionType::sliding_attention ? 0
                                : t == AttentionType::compressed_sparse_attention
                                    ? c.compress_rate_csa
                                    : c.compress_rate_hca);
  }

  // MoE schedule: mlp_layer_types (transformers) or num_hash_layers (DeepSeek files, default 3).
  const bool has_hash = f.has("num_hash_layers");
  const int64_t hash_layers = f.integer("num_hash_layers", 3, 0, kMaxLayers);
  std::vector<MlpType> derived;
  for (size_t i = 0; i < n; ++i)
    derived.push_back(static_cast<int64_t>(i) < hash_layers ? MlpType::hash_moe : MlpType::moe);
  if (const json* mlp = f.array("mlp_layer_types")) {
    if (check_layer_list_length(f, "mlp_layer_types", mlp->size(), c)) {
      for (size_t i = 0; i < n; ++i) {
        const json& v = (*mlp)[i];
        std::string field = "mlp_layer_types[" + std::to_string(i) + "]";
        if (v.is_string() && v.get<std::string>() == "hash_moe") {
          c.mlp_layer_types.push_back(MlpType::hash_moe);
        } else if (v.is_string() && v.get<std::string>() == "moe") {
          c.mlp_layer_types.push_back(MlpType::moe);
        } else {
          f.fail(field, (v.is_string() ? quote(v.get<std::string>()) : type_of(v)) +
                            " is not one of hash_moe, moe");
          return;
        }
        if (has_hash && c.mlp_layer_types.back() != derived[i]) {
          f.fail(field, std::string(mlp_type_name(c.mlp_layer_types.back())) +
                            " disagrees with num_hash_layers (" + std::to_string(hash_layers) +
                            ")");
          return;
        }
      }
    }
  } else {
    c.mlp_layer_types = derived;
  }
  c.num_hash_layers = 0;
  for (MlpType t : c.mlp_layer_types) c.num_hash_layers += t == MlpType::hash_moe ? 1 : 0;

  // The lightning indexer exists on CSA layers (main or MTP); it needs real sizes there.
  bool any_csa = c.count_layers(AttentionType::compressed_sparse_attention) > 0;
  for (AttentionType t : c.mtp_layer_types)
    any_csa = any_csa || t == AttentionType::compressed_sparse_attention;
  if (any_csa) {
    if (c.index_topk == 0) f.fail("index_topk", "0, but the model has CSA layers (expected >= 1)");
    if (c.index_n_heads == 0)
      f.fail("index_n_heads", "0, but the model has CSA layers (expected >= 1)");
    if (c.index_head_dim == 0)
      f.fail("index_head_dim", "0, but the model has CSA layers (expected >= 1)");
    if (c.index_head_dim < c.qk_rope_head_dim)
      f.fail("index_head_dim", std::to_string(c.index_head_dim) +
                                   " is less than qk_rope_head_dim (" +
                                   std::to_string(c.qk_rope_head_dim) +
                                   "); the indexer rotates its last qk_rope_head_dim dims");
  }
}

// ------------------------------------------------------------------ deepseek_v3 / deepseek_v32

void parse_mla(Fields& f, ModelConfig& c, bool v32) {
  // Defaults: transformers DeepseekV3Config / DeepseekV32Config.
  c.vocab_size = f.integer("vocab_size", 129280, 1, kMaxVocab);
  c.hidden_size = f.integer("hidden_size", 7168, 1, kMaxDim);
  c.moe_intermediate_size = f.integer("moe_intermediate_size", 2048, 1, kMaxDim);
  c.num_hidden_layers = f.integer("num_hidden_layers", 61, 1, kMaxLayers);
  c.num_attention_heads = f.integer("num_attention_heads", 128, 1, kMaxHeads);
  // Absent: 128 (the class default); null: num_attention_heads (its __post_init__).
  c.num_key_value_heads =
      f.find("num_key_value_heads")
          ? f.optional_integer("num_key_value_heads", 1, kMaxHeads).value_or(c.num_attention_heads)
          : 128;
  c.n_shared_experts = f.integer("n_shared_experts", 1, 0, kMaxExperts);
  c.n_routed_experts = f.integer("n_routed_experts", 256, 1, kMaxExperts);
  c.routed_scaling_factor = f.number("routed_scaling_factor", 2.5, 0.0, 1e6);
  c.kv_lora_rank = f.integer("kv_lora_rank", 512, 1, kMaxDim);
  c.q_lora_rank =
      f.find("q_lora_rank") ? f.optional_integer("q_lora_rank", 1, kMaxDim).value_or(0) : 1536;
  c.qk_rope_head_dim = f.integer("qk_rope_head_dim", 64, 0, kMaxDim);
  c.v_head_dim = f.integer("v_head_dim", 128, 1, kMaxDim);
  c.qk_nope_head_dim = f.integer("qk_nope_head_dim", 128, 0, kMaxDim);
  c.num_experts_per_tok = f.integer("num_experts_per_tok", 8, 1, kMaxExperts);
  c.first_k_dense_replace = f.integer("first_k_dense_replace", 3, 0, kMaxLayers);
  c.norm_topk_prob = f.boolean("norm_topk_prob", true);
  c.scoring_func = f.string("scoring_func", "sigmoid");
  c.max_position_embeddings =
      f.integer("max_position_embeddings", v32 ? 163840 : 4096, 1, kMaxTokens);
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6, 0.0, 1.0, true);
  c.rope_theta = f.number("rope_theta", 10000.0, 0.0, 1e12, true);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  c.num_nextn_predict_layers = f.integer("num_nextn_predict_layers", 1, 0, kMaxMtpLayers);
  c.head_dim = f.integer("head_dim", c.qk_rope_head_dim, 1, kMaxDim);
  if (v32) {
    c.index_topk = f.integer("index_topk", 2048, 1, kMaxTokens);
    c.index_head_dim = f.integer("index_head_dim", 128, 1, kMaxDim);
    c.index_n_heads = f.integer("index_n_heads", 64, 1, kMaxHeads);
  }
  read_special_tokens(f, c, 0, 1);
  read_quantization(f, c);
  if (const json* rp = f.object("rope_parameters")) {
    read_rope_scaling(f, *rp, "rope_parameters.", c.rope_scaling);
  } else if (const json* rs = f.object("rope_scaling")) {
    read_rope_scaling(f, *rs, "rope_scaling.", c.rope_scaling);
  }
  if (!f.status().ok()) return;
  if (c.qk_rope_head_dim % 2 != 0)
    f.fail("qk_rope_head_dim",
           std::to_string(c.qk_rope_head_dim) + " is odd (RoPE rotates pairs of dims)");
  if (c.num_experts_per_tok > c.n_routed_experts)
    f.fail("num_experts_per_tok", std::to_string(c.num_experts_per_tok) +
                                      " is more than n_routed_experts (" +
                                      std::to_string(c.n_routed_experts) + ")");
  if (v32 && c.index_head_dim < c.qk_rope_head_dim)
    f.fail("index_head_dim", std::to_string(c.index_head_dim) + " is less than qk_rope_head_dim (" +
                                 std::to_string(c.qk_rope_head_dim) + ")");
}

// ------------------------------------------------------------------------ GQA / MHA families

void parse_gqa(Fields& f, ModelConfig& c) {
  // Defaults: transformers LlamaConfig / MistralConfig / Qwen2Config / Qwen3Config.
  const std::string& t = c.model_type;
  const bool qwen = t == "qwen2" || t == "qwen3";
  c.vocab_size = f.integer("vocab_size", qwen ? 151936 : 32000, 1, kMaxVocab);
  c.hidden_size = f.integer("hidden_size", 4096, 1, kMaxDim);
  c.num_hidden_layers = f.integer("num_hidden_layers", 32, 1, kMaxLayers);
  c.num_attention_heads = f.integer("num_attention_heads", 32, 1, kMaxHeads);
  const int64_t kv_default = t == "mistral" ? 8 : qwen ? 32 : c.num_attention_heads;
  c.num_key_value_heads =
      f.find("num_key_value_heads")
          ? f.optional_integer("num_key_value_heads", 1, kMaxHeads).value_or(c.num_attention_heads)
          : kv_default;
  const int64_t hd_default = t == "qwen3" ? 128 : c.hidden_size / c.num_attention_heads;
  c.head_dim = f.find("head_dim") ? f.optional_integer("head_dim", 1, kMaxDim).value_or(hd_default)
                                  : hd_default;
  if (t == "qwen3" && f.find("head_dim") && !f.has("head_dim"))
    f.fail("head_dim", "expected an integer, got null");
  c.max_position_embeddings = f.integer("max_position_embeddings",
                                        t == "llama"     ? 2048
                                        : t == "mistral" ? 131072
                                                         : 32768,
                                        1, kMaxTokens);
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6, 0.0, 1.0, true);
  c.rope_theta = f.number("rope_theta", 10000.0, 0.0, 1e12, true);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  if (qwen)
    read_special_tokens(f, c, std::nullopt, std::nullopt);
  else
    read_special_tokens(f, c, 1, 2);
  read_quantization(f, c);
  if (const json* rp = f.object("rope_parameters")) {
    read_rope_scaling(f, *rp, "rope_parameters.", c.rope_scaling);
    Fields rf(*rp, f.source(), "rope_parameters.");
    c.rope_theta = rf.number("rope_theta", c.rope_theta, 0.0, 1e12, true);
    f.fail_code(rf.status());
  } else if (const json* rs = f.object("rope_scaling")) {
    read_rope_scaling(f, *rs, "rope_scaling.", c.rope_scaling);
  }
  if (!f.status().ok()) return;
  if (c.head_dim == 0) f.fail("head_dim", "hidden_size / num_attention_heads is 0 (expected >= 1)");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    f.fail("num_key_value_heads", std::to_string(c.num_key_value_heads) +
                                      " does not divide num_attention_heads (" +
                                      std::to_string(c.num_attention_heads) + ")");

  // Sliding windows: mistral applies sliding_window (default 4096, null = none) to every layer;
  // qwen2/qwen3 only with use_sliding_window, to layers >= max_window_layers or those an
  // explicit layer_types list marks "sliding_attention". llama has none.
  const auto n = static_cast<size_t>(c.num_hidden_layers);
  c.layer_sliding_window.assign(n, 0);
  if (t == "mistral") {
    int64_t w = f.find("sliding_window")
                    ? f.optional_integer("sliding_window", 1, kMaxTokens).value_or(0)
                    : 4096;
    c.sliding_window = w;
    c.layer_sliding_window.assign(n, w);
  } else if (qwen) {
    const bool use = f.boolean("use_sliding_window", false);
    int64_t w = f.find("sliding_window")
                    ? f.optional_integer("sliding_window", 1, kMaxTokens).value_or(0)
                    : 4096;
    if (!use) w = 0;
    c.sliding_window = w;
    const int64_t max_window_layers = f.integer("max_window_layers", 28, 0, kMaxLayers);
    if (const json* types = f.array("layer_types")) {
      if (types->size() != n) {
        f.fail("layer_types", "has " + std::to_string(types->size()) + " entries, expected " +
                                  std::to_string(n) + " (num_hidden_layers)");
        return;
      }
      for (size_t i = 0; i < n; ++i) {
        const json& v = (*types)[i];
        const bool sliding = v.is_string() && v.get<std::string>() == "sliding_attention";
        const bool full = v.is_string() && v.get<std::string>() == "full_attention";
        if (!sliding && !full) {
          f.fail("layer_types[" + std::to_string(i) + "]",
                 (v.is_string() ? quote(v.get<std::string>()) : type_of(v)) +
                     " is not one of full_attention, sliding_attention");
          return;
        }
        c.layer_sliding_window[i] = sliding ? w : 0;
      }
    } else {
      for (size_t i = 0; i < n; ++i)
        c.layer_sliding_window[i] = static_cast<int64_t>(i) >= max_window_layers ? w : 0;
    }
  }
}

Result<ModelConfig> parse_json_object(const json& root, std::string_view source_name) {
  ModelConfig c;
  c.source = std::string(source_name);
  if (!root.is_object())
    return parse_error(c.source + ": expected a JSON object at the top level, got " +
                       type_of(root));
  Fields f(root, c.source);
  const json* mt = f.find("model_type");
  if (mt == nullptr || mt->is_null())
    return invalid_argument(c.source +
                            ": model_type: missing (expected one of deepseek_v4, deepseek_v32, "
                            "deepseek_v3, llama, mistral, qwen2, qwen3)");
  if (!mt->is_string())
    return invalid_argument(c.source + ": model_type: expected a string, got " + type_of(*mt));
  c.model_type = mt->get<std::string>();
  if (c.model_type == "deepseek_v4") {
    c.family = ModelFamily::deepseek_v4;
    parse_deepseek_v4(f, c);
  } else if (c.model_type == "deepseek_v32") {
    c.family = ModelFamily::deepseek_v32;
    parse_mla(f, c, /*v32=*/true);
  } else if (c.model_type == "deepseek_v3") {
    c.family = ModelFamily::deepseek_v3;
    parse_mla(f, c, /*v32=*/false);
  } else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2" ||
             c.model_type == "qwen3") {
    c.family = ModelFamily::gqa;
    parse_gqa(f, c);
  } else {
    return unsupported(c.source + ": model_type: " + quote(c.model_type) +
                       " is not supported (supported: deepseek_v4, deepseek_v32, deepseek_v3, "
                       "llama, mistral, qwen2, qwen3)");
  }
  if (!f.status().ok()) return f.status();
  return c;
}

}  // namespace

std::string_view family_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::deepseek_v4:
      return "deepseek_v4";
    case ModelFamily::deepseek_v32:
      return "deepseek_v32";
    case ModelFamily::deepseek_v3:
      return "deepseek_v3";
    case ModelFamily::gqa:
      return "gqa";
  }
  return "unknown";
}

std::string_view attention_type_name(AttentionType type) {
  switch (type) {
    case AttentionType::sliding_attention:
      return "sliding_attention";
    case AttentionType::compressed_sparse_attention:
      return "compressed_sparse_attention";
    case AttentionType::heavily_compressed_attention:
      return "heavily_compressed_attention";
  }
  return "unknown";
}

std::string_view mlp_type_name(MlpType type) {
  return type == MlpType::hash_moe ? "hash_moe" : "moe";
}

int ModelConfig::count_layers(AttentionType type) const {
  int n = 0;
  for (AttentionType t : layer_types) n += t == type ? 1 : 0;
  return n;
}

Result<ModelConfig> parse_model_config(std::string_view json_text, std::string_view source_name) {
  // nlohmann throws on malformed input (and could on allocation); nothing escapes this adapter.
  try {
    json root = json::parse(json_text.begin(), json_text.end());
    return parse_json_object(root, source_name);
  } catch (const json::parse_error& e) {
    // Byte offset -> line:column for the message.
    size_t line = 1, col = 1;
    const size_t end = std::min(e.byte == 0 ? size_t{0} : e.byte - 1, json_text.size());
    for (size_t i = 0; i < end; ++i) {
      if (json_text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    std::string what = e.what();
    // nlohmann's message: "[json.exception.parse_error.101] parse error at line 1, column 5:
    // syntax error while parsing value - invalid literal; last read: 'x'". Keep the part after
    // the position, which says what was wrong.
    size_t colon = what.find(": ", what.find("parse error"));
    std::string reason = colon == std::string::npos ? what : what.substr(colon + 2);
    return parse_error(std::string(source_name) + ": malformed JSON at line " +
                       std::to_string(line) + ", column " + std::to_string(col) + ": " + reason);
  } catch (const json::exception& e) {
    return parse_error(std::string(source_name) + ": malformed JSON: " + e.what());
  } catch (const std::bad_alloc&) {
    return out_of_memory(std::string(source_name) + ": out of memory while parsing");
  }
}

Result<ModelConfig> load_model_config(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (std::filesystem::is_directory(path, ec))
    file = (std::filesystem::path(path) / "config.json").string();
  if (!std::filesystem::exists(file, ec)) {
    if (file != path) return not_found(path + ": directory has no config.json");
    return not_found(path + ": no such file");
  }
  DSV4_ASSIGN_OR_RETURN(std::string text, read_file(file));
  return parse_model_config(text, file);
}

}  // namespace dsv4::formats
