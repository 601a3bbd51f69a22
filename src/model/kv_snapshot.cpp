// model/kv_snapshot.cpp — model identity, fork, and snapshot save/load of a SequenceState
// (see kv_snapshot.h).
#include "model/kv_snapshot.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <string>
#include <vector>

namespace dsv4::model {

namespace {

// "name=value;" pairs in a fixed order: the canonical text the config hash is taken of.
class Canon {
 public:
  Canon& i(std::string_view name, int64_t v) { return put(name, std::to_string(v)); }
  Canon& b(std::string_view name, bool v) { return put(name, v ? "1" : "0"); }
  Canon& d(std::string_view name, double v) {  // exact: the bit pattern
    return put(name, std::to_string(std::bit_cast<uint64_t>(v)));
  }
  Canon& s(std::string_view name, std::string_view v) {
    return put(name, std::to_string(v.size()) + ":" + std::string(v));
  }
  template <typename T, typename F>
  Canon& list(std::string_view name, const std::vector<T>& v, F to_text) {
    std::string t = std::to_string(v.size()) + "[";
    for (const T& x : v) t += to_text(x) + ",";
    return put(name, t + "]");
  }
  const std::string& text() const { return text_; }

 private:
  Canon& put(std::string_view name, const std::string& value) {
    text_.append(name).append("=").append(value).append(";");
    return *this;
  }
  std::string text_;
};

}  // namespace

uint64_t config_hash(const formats::ModelConfig& c) {
  Canon k;
  k.s("canon", "dsv4-config-hash-v1").s("model_type", c.model_type);
  k.s("family", formats::family_name(c.family));
  k.i("vocab_size", c.vocab_size).i("hidden_size", c.hidden_size);
  k.i("num_hidden_layers", c.num_hidden_layers).i("num_attention_heads", c.num_attention_heads);
  k.i("num_key_value_heads", c.num_key_value_heads).i("head_dim", c.head_dim);
  k.i("max_position_embeddings", c.max_position_embeddings);
  k.d("rms_norm_eps", c.rms_norm_eps).d("rope_theta", c.rope_theta);
  const formats::RopeScaling& rs = c.rope_scaling;
  k.s("rope_scaling.type", rs.type).d("rope_scaling.factor", rs.factor);
  k.i("rope_scaling.original_max_position_embeddings", rs.original_max_position_embeddings);
  k.d("rope_scaling.beta_fast", rs.beta_fast).d("rope_scaling.beta_slow", rs.beta_slow);
  k.d("rope_scaling.mscale", rs.mscale).d("rope_scaling.mscale_all_dim", rs.mscale_all_dim);
  k.b("rope_scaling.has_attention_factor", rs.attention_factor.has_value());
  k.d("rope_scaling.attention_factor", rs.attention_factor.value_or(0.0));
  k.b("tie_word_embeddings", c.tie_word_embeddings);
  const formats::QuantizationConfig& q = c.quantization_config;
  k.b("quant.present", q.present).s("quant.method", q.quant_method).s("quant.fmt", q.fmt);
  k.s("quant.scale_fmt", q.scale_fmt).s("quant.activation_scheme", q.activation_scheme);
  k.list("quant.weight_block_size", q.weight_block_size,
         [](int64_t v) { return std::to_string(v); });
  k.s("quant.expert_dtype", q.expert_dtype);
  k.i("moe_intermediate_size", c.moe_intermediate_size).i("n_routed_experts", c.n_routed_experts);
  k.i("n_shared_experts", c.n_shared_experts).i("num_experts_per_tok", c.num_experts_per_tok);
  k.s("scoring_func", c.scoring_func).b("norm_topk_prob", c.norm_topk_prob);
  k.d("routed_scaling_factor", c.routed_scaling_factor);
  k.i("q_lora_rank", c.q_lora_rank).i("qk_rope_head_dim", c.qk_rope_head_dim);
  k.i("o_groups", c.o_groups).i("o_lora_rank", c.o_lora_rank);
  k.i("num_hash_layers", c.num_hash_layers).i("sliding_window", c.sliding_window);
  k.i("index_n_heads", c.index_n_heads).i("index_head_dim", c.index_head_dim);
  k.i("index_topk", c.index_topk).i("hc_mult", c.hc_mult);
  k.i("hc_sinkhorn_iters", c.hc_sinkhorn_iters).d("hc_eps", c.hc_eps);
  k.d("swiglu_limit", c.swiglu_limit).d("compress_rope_theta", c.compress_rope_theta);
  k.d("partial_rotary_factor", c.partial_rotary_factor);
  k.i("compress_rate_csa", c.compress_rate_csa).i("compress_rate_hca", c.compress_rate_hca);
  k.list("layer_types", c.layer_types,
         [](formats::AttentionType t) { return std::string(formats::attention_type_name(t)); });
  k.list("compress_ratios", c.compress_ratios, [](int64_t v) { return std::to_string(v); });
  k.list("mlp_layer_types", c.mlp_layer_types,
         [](formats::MlpType t) { return std::string(formats::mlp_type_name(t)); });
  k.i("kv_lora_rank", c.kv_lora_rank).i("qk_nope_head_dim", c.qk_nope_head_dim);
  k.i("v_head_dim", c.v_head_dim).i("first_k_dense_replace", c.first_k_dense_replace);
  k.list("layer_sliding_window", c.layer_sliding_window,
         [](int64_t v) { return std::to_string(v); });
  return XXH3_64bits(k.text().data(), k.text().size());
}

uint64_t weights_fingerprint(const formats::SafetensorsModel& ckpt) {
  constexpr uint64_t kEdge = 4096;
  XXH3_state_t* st = XXH3_createState();
  DSV4_CHECK(st != nullptr);
  XXH3_64bits_reset(st);
  const uint64_t n = ckpt.shard_count();
  XXH3_64bits_update(st, &n, sizeof n);
  for (size_t i = 0; i < ckpt.shard_count(); ++i) {
    const formats::SafetensorsFile& f = ckpt.shard(i);
    const uint64_t sizes[2] = {f.file_size(), f.data_offset()};
    XXH3_64bits_update(st, sizes, sizeof sizes);
    if (f.tensors().empty()) continue;
    // The start of the mapped file, from any tensor's view of it.
    const formats::TensorView& t0 = f.tensors().front();
    const uint8_t* file = t0.data() - t0.file_offset;
    XXH3_64bits_update(st, file, f.data_offset());
    const uint64_t data = f.tensor_bytes();
    const uint64_t head = std::min(kEdge, data);
    XXH3_64bits_update(st, file + f.data_offset(), head);
    const uint64_t tail = std::min(kEdge, data - head);
    XXH3_64bits_update(st, file + f.file_size() - tail, tail);
  }
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

kv::ModelIdentity model_identity(const Model& model) {
  kv::ModelIdentity id;
  id.model_type = model.config().model_type;
  id.config_hash = config_hash(model.config());
  id.weights_hash = weights_fingerprint(model.checkpoint());
  return id;
}

Result<SequenceState> fork_sequence(const SequenceState& state) {
  SequenceState s;
  DSV4_ASSIGN_OR_RETURN(s.kv, state.kv.fork());
  s.n_tokens = state.n_tokens;
  s.tokens = state.tokens;
  return s;
}

namespace {

Status check_state(const Model& model, const SequenceState& state) {
  if (state.kv.n_layers() != static_cast<int>(model.config().num_hidden_layers))
    return failed_precondition("sequence state does not belong to this model");
  if (state.n_tokens != static_cast<int64_t>(state.tokens.size()) ||
      state.kv.n_tokens() != state.n_tokens)
    return failed_precondition("sequence state is inconsistent: " + std::to_string(state.n_tokens) +
                               " tokens, " + std::to_string(state.tokens.size()) +
                               " token ids, cache of " + std::to_string(state.kv.n_tokens()) +
                               " positions");
  return ok_status();
}

}  // namespace

Status save_kv_snapshot(const Model& model, const SequenceState& state, const std::string& path) {
  DSV4_RETURN_IF_ERROR(check_state(model, state));
  return kv::save_snapshot(state.kv, state.tokens, model_identity(model), path);
}

Status save_kv_snapshot_prefix(const Model& model, const SequenceState& state, int64_t n_prefix,
                               ThreadPool& pool, const std::string& path) {
  DSV4_RETURN_IF_ERROR(check_state(model, state));
  if (n_prefix < 0 || n_prefix > state.n_tokens)
    return invalid_argument("snapshot prefix of " + std::to_string(n_prefix) +
                            " tokens: the sequence holds " + std::to_string(state.n_tokens));
  if (n_prefix == state.n_tokens) return save_kv_snapshot(model, state, path);
  DSV4_ASSIGN_OR_RETURN(SequenceState f, fork_sequence(state));
  DSV4_RETURN_IF_ERROR(model.rewind(f, n_prefix, pool));
  return save_kv_snapshot(model, f, path);
}

namespace {

SequenceState to_state(kv::LoadedSnapshot&& snap) {
  SequenceState s;
  s.n_tokens = snap.info.n_tokens;
  s.tokens = std::move(snap.tokens);
  s.kv = std::move(snap.cache);
  return s;
}

}  // namespace

Result<SequenceState> load_kv_snapshot(const Model& model, const std::string& path,
                                       std::shared_ptr<kv::BlockPool> pool,
                                       kv::CacheOptions options, kv::SnapshotReadOptions read) {
  if (pool == nullptr) pool = std::make_shared<kv::BlockPool>();
  DSV4_ASSIGN_OR_RETURN(kv::LoadedSnapshot snap,
                        kv::load_snapshot(path, model.config(), model_identity(model),
                                          std::move(pool), options, read));
  return to_state(std::move(snap));
}

Status save_kv_snapshot(const Model& model, const SequenceState& state, kv::SnapshotStore& store,
                        const std::string& name) {
  DSV4_RETURN_IF_ERROR(check_state(model, state));
  return store.save(name, state.kv, state.tokens, model_identity(model));
}

Result<SequenceState> load_kv_snapshot(const Model& model, const kv::SnapshotStore& store,
                                       const std::string& name, std::shared_ptr<kv::BlockPool> pool,
                                       kv::CacheOptions options, kv::SnapshotReadOptions read) {
  if (pool == nullptr) pool = std::make_shared<kv::BlockPool>();
  DSV4_ASSIGN_OR_RETURN(
      kv::LoadedSnapshot snap,
      store.load(name, model.config(), model_identity(model), std::move(pool), options, read));
  return to_state(std::move(snap));
}

}  // namespace dsv4::model
