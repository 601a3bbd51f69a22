#include "model/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/log.h"
#include "kernels/codecs.h"

namespace dsv4::model {

using formats::AttentionType;
using formats::MlpType;
using formats::ModelConfig;
namespace k = dsv4::kernels;

namespace {

k::ScoringFunc scoring_func(const std::string& name) {
  if (name == "softmax") return k::ScoringFunc::softmax;
  if (name == "sigmoid") return k::ScoringFunc::sigmoid;
  return k::ScoringFunc::sqrtsoftplus;
}

// Dot product with 16 independent partial sums (lanes), so the compiler vectorises it without
// reassociating anything: the result is the same on every ISA the base build targets.
float dot(const float* a, const float* b, size_t n) {
  float lane[16] = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (size_t l = 0; l < 16; ++l) lane[l] += a[i + l] * b[i + l];
  for (; i < n; ++i) lane[i % 16] += a[i] * b[i];
  float acc = 0.f;
  for (size_t l = 0; l < 16; ++l) acc += lane[l];
  return acc;
}

// Small f32 matrix-vector product for the hyper-connection mixes: y[r] = sum_c W[r,c] x[c].
void matvec_f32(const float* w, size_t rows, size_t cols, const float* x, float* y) {
  for (size_t r = 0; r < rows; ++r) {
    y[r] = dot(w + r * cols, x, cols);
  }
}

void resize(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

// Activations of one forward chunk of T tokens. Kept by the SequenceState between calls and
// grown to the largest chunk seen, so decoding reuses the buffers.
struct ChunkWorkspace {
  std::vector<float> streams, streams_next;  // [T, hc, D]
  std::vector<float> pre, post, comb;        // [T, hc], [T, hc], [T, hc, hc]
  std::vector<float> collapsed, x;           // [T, D]
  std::vector<float> q_res, q, kv;           // [T, qr], [T, H*hd], [T, hd]
  std::vector<float> ckv, cgate;             // [T, width]
  std::vector<float> ikv, igate, iq, iw;     // [T, 2*ihd], [T, 2*ihd], [T, ih*ihd], [T, ih]
  std::vector<float> attn, oa, block_out;    // [T, H*hd], [T, G*olr], [T, D]
  std::vector<float> router, h1, h3, expert_x, expert_y;  // MoE
  // Per-token temporaries, kept so that a decode step allocates nothing once warm.
  std::vector<std::vector<float>> hc_scratch;     // [threads] normalised streams [hc*D] + mixes
  std::vector<float> entry;                       // one compressor output row
  std::vector<float> route_scores, route_biased;  // [E]
  std::vector<int32_t> route_idx;                 // [topk]
  std::vector<uint32_t> expert_first;             // [E + 1] offsets into expert_rows
  std::vector<std::pair<uint32_t, float>> route_pick;   // [T * topk] (expert, weight)
  std::vector<std::pair<uint32_t, float>> expert_rows;  // [T * topk] (token, weight) by expert
  kernels::TopKScratch topk_scratch;
  std::vector<float> head_x, head_flat, head_mixes, head_pre;  // final hc_head + LM head input
  // Scheme::f32 attention only.
  std::vector<std::vector<float>> f32_probs;  // [threads][keys]
  std::vector<int32_t> f32_selected;
  std::vector<float> f32_keys, f32_scores, f32_key_block;

  // Capacity of every buffer (SequenceState::transient_bytes).
  uint64_t bytes() const {
    uint64_t b = 0;
    auto add = [&b](const auto&... v) { ((b += v.capacity() * sizeof(v[0])), ...); };
    add(streams, streams_next, pre, post, comb, collapsed, x, q_res, q, kv, ckv, cgate, ikv, igate,
        iq, iw, attn, oa, block_out, router, h1, h3, expert_x, expert_y, entry, route_scores,
        route_biased, route_idx, expert_first, route_pick, expert_rows, topk_scratch.block_max,
        topk_scratch.candidates, head_x, head_flat, head_mixes, head_pre, f32_selected, f32_keys,
        f32_scores, f32_key_block);
    for (const std::vector<float>& v : hc_scratch) add(v);
    for (const std::vector<float>& v : f32_probs) add(v);
    return b;
  }
};

void ChunkWorkspaceDeleter::operator()(ChunkWorkspace* w) const {
  delete w;
}

uint64_t SequenceState::transient_bytes() const {
  uint64_t b = attention_workspace_bytes();
  if (work) b += work->bytes();
  return b;
}

Result<std::unique_ptr<Model>> Model::load(const std::string& path, LoadOptions opts) {
  DSV4_ASSIGN_OR_RETURN(formats::ModelConfig cfg, formats::load_model_config(path));
  if (cfg.family != formats::ModelFamily::deepseek_v4)
    return unsupported(
        fmt::format("{}: model_type '{}' is not supported for inference "
                    "(only deepseek_v4)",
                    cfg.source, cfg.model_type));
  DSV4_ASSIGN_OR_RETURN(formats::SafetensorsModel ckpt, formats::SafetensorsModel::open(path));
  std::unique_ptr<Model> m(new Model());
  m->cfg_ = std::move(cfg);
  m->ckpt_ = std::make_unique<formats::SafetensorsModel>(std::move(ckpt));
  if (opts.validate_all) {
    CheckpointReport rep = check_checkpoint(m->cfg_, *m->ckpt_);
    if (!rep.problems.empty()) {
      std::string msg = fmt::format("{}: {} tensor problem(s): {}", path, rep.problems.size(),
                                    rep.problems.front());
      for (size_t i = 1; i < std::min<size_t>(rep.problems.size(), 5); ++i)
        msg += "; " + rep.problems[i];
      return invalid_argument(msg);
    }
  }
  DSV4_ASSIGN_OR_RETURN(m->w_, bind_weights(m->cfg_, *m->ckpt_));
  const ModelConfig& c = m->cfg_;
  k::RopeParams main;
  main.rope_dim = static_cast<size_t>(c.qk_rope_head_dim);
  main.theta = c.rope_theta;
  k::RopeParams comp = main;
  comp.theta = c.compress_rope_theta;
  if (c.rope_scaling.type == "yarn") {
    comp.yarn = true;
    comp.factor = c.rope_scaling.factor;
    comp.original_max_position_embeddings =
        static_cast<double>(c.rope_scaling.original_max_position_embeddings);
    comp.beta_fast = c.rope_scaling.beta_fast;
    comp.beta_slow = c.rope_scaling.beta_slow;
  }
  m->rope_main_ = k::RopeTable(main, 4096);
  m->rope_compress_ = k::RopeTable(comp, 4096);
  return m;
}

SequenceState Model::new_sequence() const {
  auto s = new_sequence(kv::Scheme::f32);
  DSV4_CHECK(s.ok());  // f32 storage exists for every V4 config and the pool is unlimited
  return std::move(*s);
}

Result<SequenceState> Model::new_sequence(kv::Scheme scheme, std::shared_ptr<kv::BlockPool> pool,
                                          kv::CacheOptions options) const {
  if (pool == nullptr) pool = std::make_shared<kv::BlockPool>();
  SequenceState s;
  DSV4_ASSIGN_OR_RETURN(s.kv, kv::SequenceCache::create(cfg_, scheme, std::move(pool), options));
  // The cache's compressor geometry must be the weights' (both come from the config).
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const AttentionWeights& A = w_.layers[l].attn;
    const int li = static_cast<int>(l);
    if (A.compressor) {
      const kv::CompressorStateView v = s.kv.compressor_state(li, kv::Compressor::kv);
      DSV4_CHECK(v.ratio == A.compressor->ratio && v.dim == A.compressor->dim &&
                 v.overlap == A.compressor->overlap);
    }
    if (A.indexer) {
      const kv::CompressorStateView v = s.kv.compressor_state(li, kv::Compressor::indexer);
      DSV4_CHECK(v.ratio == A.indexer->compressor.ratio && v.dim == A.indexer->compressor.dim &&
                 v.overlap == A.indexer->compressor.overlap);
    }
  }
  return s;
}

Status Model::rewind(SequenceState& state, int64_t pos, ThreadPool& pool) const {
  if (pos < 0 || pos > state.n_tokens)
    return invalid_argument(
        fmt::format("rewind to {}: the sequence holds {} tokens", pos, state.n_tokens));
  if (pos == state.n_tokens) return ok_status();
  const int64_t s = state.kv.checkpoint_at_or_before(pos);
  std::vector<int32_t> replay(state.tokens.begin() + s, state.tokens.begin() + pos);
  state.kv.restore(s);
  state.tokens.resize(static_cast<size_t>(s));
  state.n_tokens = s;
  return forward(replay, state, pool, nullptr, false);
}

Status Model::forward(std::span<const int32_t> tokens, SequenceState& state, ThreadPool& pool,
                      float* logits, bool all_logits, const LayerObserver& observer) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
      return invalid_argument(fmt::format("token {} at index {} is outside the vocabulary [0, {})",
                                          tokens[i], i, cfg_.vocab_size));
  }
  if (state.kv.n_layers() != static_cast<int>(cfg_.num_hidden_layers))
    return failed_precondition("sequence state does not belong to this model");
  const size_t V = static_cast<size_t>(cfg_.vocab_size);
  for (size_t b = 0; b < tokens.size(); b += chunk_tokens_) {
    const size_t n = std::min(chunk_tokens_, tokens.size() - b);
    const bool last_chunk = b + n == tokens.size();
    float* out = nullptr;
    if (logits && all_logits) out = logits + b * V;
    if (logits && !all_logits && last_chunk) out = logits;
    DSV4_RETURN_IF_ERROR(
        forward_chunk(tokens.subspan(b, n), state, pool, out, all_logits, observer));
  }
  return ok_status();
}

namespace {

// Adds one token's projections to a compressor's state (kept in the KV cache) and, when its
// window completes, pools it into `entry` [dim] (softmax-gated over the window's slots,
// RMSNorm, RoPE at the window start) and returns true.
// kv_row, gate_row: [width] for position `pos`.
bool compressor_push(const CompressorWeights& w, const kv::CompressorStateView& s,
                     const float* kv_row, const float* gate_row, int64_t pos,
                     const k::RopeTable& rope, float eps, float* entry) {
  const size_t width = static_cast<size_t>(w.width());
  const size_t dim = static_cast<size_t>(w.dim);
  const size_t ratio = static_cast<size_t>(w.ratio);
  const int64_t win = pos / w.ratio;
  const int64_t slot = pos % w.ratio;
  std::memcpy(s.kv_row(win, slot), kv_row, width * sizeof(float));
  const float* ape = &w.ape[static_cast<size_t>(slot) * width];
  float* gate = s.gate_row(win, slot);
  for (size_t i = 0; i < width; ++i) gate[i] = gate_row[i] + ape[i];
  if (slot + 1 < w.ratio) return false;

  // The window is complete: pool it.
  const float* kv_rows[256];
  const float* gate_rows[256];
  DSV4_CHECK(2 * ratio <= 256);
  size_t n = 0;
  if (w.overlap) {
    // Entry w = softmax over [Ca of window w-1 (first half of each row) | Cb of window w].
    if (win > 0) {
      for (size_t j = 0; j < ratio; ++j) {
        kv_rows[n] = s.kv_row(win - 1, static_cast<int64_t>(j));
        gate_rows[n++] = s.gate_row(win - 1, static_cast<int64_t>(j));
      }
    }
    for (size_t j = 0; j < ratio; ++j) {
      kv_rows[n] = s.kv_row(win, static_cast<int64_t>(j)) + dim;
      gate_rows[n++] = s.gate_row(win, static_cast<int64_t>(j)) + dim;
    }
  } else {
    for (size_t j = 0; j < ratio; ++j) {
      kv_rows[n] = s.kv_row(win, static_cast<int64_t>(j));
      gate_rows[n++] = s.gate_row(win, static_cast<int64_t>(j));
    }
  }
  k::compress_pool_f32(kv_rows, gate_rows, n, dim, entry);
  k::rmsnorm_f32(entry, w.norm.data(), entry, dim, eps);
  const int64_t window_start = pos + 1 - w.ratio;
  const size_t rd = rope.rope_dim();
  float cs[256], sn[256];
  DSV4_CHECK(rd / 2 <= 256);
  rope.cos_sin(window_start, cs, sn);
  k::rope_interleaved_f32(entry + dim - rd, 1, dim, cs, sn, rd, k::RopeDir::forward);
  return true;
}

// In-place normalised Walsh–Hadamard transform of x[n] (n a power of two), Sylvester order:
// DeepSeek-V4 inference/model.py `rotate_activation` (fast_hadamard_transform with scale
// n^-1/2), applied to indexer keys before FP4 storage and to indexer queries, so q·k is
// unchanged in exact arithmetic while outliers are spread over the FP4 blocks.
void hadamard_f32(float* x, size_t n) {
  DSV4_CHECK(n > 0 && (n & (n - 1)) == 0);
  for (size_t h = 1; h < n; h *= 2)
    for (size_t i = 0; i < n; i += 2 * h)
      for (size_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  for (size_t i = 0; i < n; ++i) x[i] *= scale;
}

// Sizes the sequence's attention workspace (official scheme) for `context` positions, chunks of
// `chunk` tokens and `threads` workers: once per distinct layer shape, plus the run tables.
void reserve_attention(const ModelConfig& c, const kv::SequenceCache& C, int64_t context,
                       size_t chunk, int threads, AttentionWorkspace& aw) {
  if (context <= aw.context && chunk <= aw.chunk_tokens && threads <= aw.threads) return;
  aw.context = std::max(aw.context, context);
  aw.chunk_tokens = std::max(aw.chunk_tokens, chunk);
  aw.threads = std::max(aw.threads, threads);
  bool done[3] = {false, false, false};
  size_t max_runs = 0;
  for (int l = 0; l < C.n_layers(); ++l) {
    const AttnLayerShape shape = AttnLayerShape::of_layer(c, l);
    const size_t kind = shape.indexer ? 2 : shape.ratio > 0 ? 1 : 0;
    if (!done[kind]) aw.exec.reserve(shape, aw.chunk_tokens, aw.context, aw.threads);
    done[kind] = true;
    if (shape.ratio == 0) continue;
    const size_t n = shape.visible_entries(aw.context - 1);
    const int64_t per_block = kv::stream_block_records(C.options(), C.entry_record_bytes(l));
    max_runs = std::max(max_runs, n / static_cast<size_t>(per_block) + 2);
    if (shape.indexer) {
      const int64_t per_key_block =
          kv::stream_block_records(C.options(), C.index_key_record_bytes(l));
      aw.key_runs.reserve(n / static_cast<size_t>(per_key_block) + 2);
    }
  }
  aw.entry_runs.reserve(max_runs);
  aw.window_run.reserve(1);
}

}  // namespace

// The cache's blocks all hold the same number of records (kv/cache.h), so every run but the
// last is full.
RecordRuns record_runs(const kv::SequenceCache& C, int layer, bool index_keys,
                       std::vector<const uint8_t*>& runs) {
  const int64_t count = index_keys ? C.n_index_keys(layer) : C.n_entries(layer);
  RecordRuns r;
  r.record_bytes = index_keys ? C.index_key_record_bytes(layer) : C.entry_record_bytes(layer);
  r.count = static_cast<size_t>(count);
  runs.clear();
  int64_t run = 0;
  for (int64_t first = 0; first < count;) {
    const uint8_t* data = nullptr;
    const int64_t len =
        index_keys ? C.index_key_run(layer, first, &data) : C.entry_run(layer, first, &data);
    if (first == 0) run = len;
    DSV4_CHECK(len >= 1 && (len == run || first + len == count));
    runs.push_back(data);
    first += len;
  }
  r.runs = runs.data();
  r.run_records = static_cast<size_t>(std::max<int64_t>(run, 1));
  return r;
}

uint64_t AttentionWorkspace::bytes() const {
  return exec.workspace_bytes() +
         (window_run.capacity() + entry_runs.capacity() + key_runs.capacity()) *
             sizeof(const uint8_t*);
}

Status Model::forward_chunk(std::span<const int32_t> tokens, SequenceState& state, ThreadPool& pool,
                            float* logits, bool all_logits, const LayerObserver& observer) const {
  const ModelConfig& c = cfg_;
  const size_t T = tokens.size();
  const size_t D = static_cast<size_t>(c.hidden_size);
  const size_t hc = static_cast<size_t>(c.hc_mult);
  const size_t H = static_cast<size_t>(c.num_attention_heads);
  const size_t hd = static_cast<size_t>(c.head_dim);
  const size_t rd = static_cast<size_t>(c.qk_rope_head_dim);
  const size_t qr = static_cast<size_t>(c.q_lora_rank);
  const size_t G = static_cast<size_t>(c.o_groups);
  const size_t olr = static_cast<size_t>(c.o_lora_rank);
  const size_t ih = static_cast<size_t>(c.index_n_heads);
  const size_t ihd = static_cast<size_t>(c.index_head_dim);
  const size_t E = static_cast<size_t>(c.n_routed_experts);
  const size_t topk_e = static_cast<size_t>(c.num_experts_per_tok);
  const size_t W = static_cast<size_t>(c.sliding_window);
  const size_t mix = (2 + hc) * hc;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float hc_eps = static_cast<float>(c.hc_eps);
  const int64_t pos0 = state.n_tokens;
  const int nthreads = pool.num_threads();
  kv::SequenceCache& C = state.kv;
  // Every block this chunk's records need, before anything changes (out_of_memory is clean).
  DSV4_RETURN_IF_ERROR(C.reserve(pos0 + static_cast<int64_t>(T)));
  const bool official = C.scheme() == kv::Scheme::official;
  if (official) {
    if (!state.attn) state.attn = std::make_unique<AttentionWorkspace>();
    const int64_t context = std::max<int64_t>(
        pos0 + static_cast<int64_t>(T),
        std::clamp<int64_t>(c.max_position_embeddings, 1, AttentionWorkspace::kMaxReservedContext));
    reserve_attention(c, C, context, std::max(chunk_tokens_, T), nthreads, *state.attn);
  }

  if (!state.work) state.work.reset(new ChunkWorkspace);
  ChunkWorkspace& wk = *state.work;
  resize(wk.streams, T * hc * D);
  resize(wk.streams_next, T * hc * D);
  resize(wk.pre, T * hc);
  resize(wk.post, T * hc);
  resize(wk.comb, T * hc * hc);
  resize(wk.collapsed, T * D);
  resize(wk.x, T * D);
  resize(wk.block_out, T * D);
  if (wk.hc_scratch.size() < static_cast<size_t>(nthreads))
    wk.hc_scratch.resize(static_cast<size_t>(nthreads));
  for (std::vector<float>& v : wk.hc_scratch) resize(v, hc * D + mix);
  resize(wk.entry, std::max(hd, ihd));
  resize(wk.route_scores, E);
  resize(wk.route_biased, E);
  if (wk.route_idx.size() < topk_e) wk.route_idx.resize(topk_e);
  if (wk.expert_first.size() < E + 1) wk.expert_first.resize(E + 1);
  if (wk.route_pick.size() < T * topk_e) wk.route_pick.resize(T * topk_e);
  if (wk.expert_rows.size() < T * topk_e) wk.expert_rows.resize(T * topk_e);
  // topk_f32 over E router scores (k = topk_e) and, for Scheme::f32, over the indexer scores:
  // its candidates never exceed n, its block maxima n / 16 + 1.
  wk.topk_scratch.candidates.reserve(std::max<size_t>(E, 8 * topk_e + 1024));
  wk.topk_scratch.block_max.reserve(E / 16 + 1);

  // Embedding, copied into every hyper-connection stream.
  for (size_t t = 0; t < T; ++t) {
    float* s0 = &wk.streams[t * hc * D];
    linear_row_f32(w_.embed, static_cast<size_t>(tokens[t]), s0);
    for (size_t j = 1; j < hc; ++j) std::memcpy(s0 + j * D, s0, D * sizeof(float));
  }

  // Hyper-connection "pre" step for every token: mixes from the normalised flattened streams,
  // then pre/post/comb and the collapsed block input.
  auto hc_pre = [&](const HcWeights& hw, const std::vector<float>& norm_w) {
    pool.parallel_for(0, T, 1, [&](size_t b, size_t e, int ti) {
      float* flat = wk.hc_scratch[static_cast<size_t>(ti)].data();
      float* mixes = flat + hc * D;
      for (size_t t = b; t < e; ++t) {
        const float* s = &wk.streams[t * hc * D];
        k::rmsnorm_f32(s, nullptr, flat, hc * D, eps);
        matvec_f32(hw.fn.data(), mix, hc * D, flat, mixes);
        k::hc_split_sinkhorn_f32(mixes, hw.scale.data(), hw.base.data(), hc,
                                 static_cast<int>(c.hc_sinkhorn_iters), hc_eps, &wk.pre[t * hc],
                                 &wk.post[t * hc], &wk.comb[t * hc * hc]);
        k::hc_collapse_f32(s, &wk.pre[t * hc], hc, D, &wk.collapsed[t * D]);
        k::rmsnorm_f32(&wk.collapsed[t * D], norm_w.data(), &wk.x[t * D], D, eps);
      }
    });
  };
  auto hc_post = [&]() {
    for (size_t t = 0; t < T; ++t)
      k::hc_expand_f32(&wk.block_out[t * D], &wk.streams[t * hc * D], &wk.post[t * hc],
                       &wk.comb[t * hc * hc], hc, D, &wk.streams_next[t * hc * D]);
    std::swap(wk.streams, wk.streams_next);
  };

  k::TopKScratch& topk_scratch = wk.topk_scratch;
  std::vector<int32_t>& selected = wk.f32_selected;
  std::vector<float>&keys = wk.f32_keys, &scores = wk.f32_scores, &key_block = wk.f32_key_block;
  float* entry = wk.entry.data();  // [max(hd, ihd)]

  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const LayerWeights& L = w_.layers[l];
    const AttentionWeights& A = L.attn;
    const int li = static_cast<int>(l);
    const bool sliding = A.type == AttentionType::sliding_attention;
    const k::RopeTable& rope = sliding ? rope_main_ : rope_compress_;

    // ---------------- attention block
    hc_pre(L.hc_attn, L.attn_norm);
    resize(wk.q_res, T * qr);
    resize(wk.q, T * H * hd);
    resize(wk.kv, T * hd);
    linear(A.wq_a, wk.x.data(), T, wk.q_res.data(), pool);
    for (size_t t = 0; t < T; ++t)
      k::rmsnorm_f32(&wk.q_res[t * qr], A.q_norm.data(), &wk.q_res[t * qr], qr, eps);
    linear(A.wq_b, wk.q_res.data(), T, wk.q.data(), pool);
    linear(A.wkv, wk.x.data(), T, wk.kv.data(), pool);
    if (A.compressor) {
      const size_t width = static_cast<size_t>(A.compressor->width());
      resize(wk.ckv, T * width);
      resize(wk.cgate, T * width);
      linear(A.compressor->wkv, wk.x.data(), T, wk.ckv.data(), pool);
      linear(A.compressor->wgate, wk.x.data(), T, wk.cgate.data(), pool);
    }
    if (A.indexer) {
      resize(wk.ikv, T * 2 * ihd);
      resize(wk.igate, T * 2 * ihd);
      resize(wk.iq, T * ih * ihd);
      resize(wk.iw, T * ih);
      linear(A.indexer->compressor.wkv, wk.x.data(), T, wk.ikv.data(), pool);
      linear(A.indexer->compressor.wgate, wk.x.data(), T, wk.igate.data(), pool);
      linear(A.indexer->wq_b, wk.q_res.data(), T, wk.iq.data(), pool);
      linear(A.indexer->weights_proj, wk.x.data(), T, wk.iw.data(), pool);
    }
    resize(wk.attn, T * H * hd);

    // Per token: q (per-head weightless RMSNorm, RoPE on each head's trailing rd channels) and
    // the kv row (RMSNorm, RoPE), in place.
    auto prepare_token = [&](size_t t) {
      const int64_t pos = pos0 + static_cast<int64_t>(t);
      float cs[256], sn[256];
      DSV4_CHECK(rd / 2 <= 256);
      rope.cos_sin(pos, cs, sn);
      float* q = &wk.q[t * H * hd];
      for (size_t h = 0; h < H; ++h) k::rmsnorm_f32(q + h * hd, nullptr, q + h * hd, hd, eps);
      k::rope_interleaved_f32(q + hd - rd, H, hd, cs, sn, rd, k::RopeDir::forward);
      float* kvr = &wk.kv[t * hd];
      k::rmsnorm_f32(kvr, A.kv_norm.data(), kvr, hd, eps);
      k::rope_interleaved_f32(kvr + hd - rd, 1, hd, cs, sn, rd, k::RopeDir::forward);
    };
    // Per token: the compressors see it (an entry whose window ends at `pos` is visible to
    // `pos`); completed entries and indexer keys are appended.
    auto compress_token = [&](size_t t) {
      const int64_t pos = pos0 + static_cast<int64_t>(t);
      if (A.compressor) {
        const size_t width = static_cast<size_t>(A.compressor->width());
        if (compressor_push(*A.compressor, C.compressor_state(li, kv::Compressor::kv),
                            &wk.ckv[t * width], &wk.cgate[t * width], pos, rope_compress_, eps,
                            entry))
          C.append_entry(li, entry);
      }
      if (A.indexer) {
        if (compressor_push(A.indexer->compressor, C.compressor_state(li, kv::Compressor::indexer),
                            &wk.ikv[t * 2 * ihd], &wk.igate[t * 2 * ihd], pos, rope_compress_, eps,
                            entry)) {
          if (official) hadamard_f32(entry, ihd);
          C.append_index_key(li, entry);
        }
      }
    };
    // The indexer query of token t at `pos`: RoPE; under `official` also the Hadamard rotation
    // the stored keys got. Returns the head weights (weights_proj * ihd^-1/2 * ih^-1/2) in wts.
    const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(ih)) /
                                            std::sqrt(static_cast<double>(ihd)));
    auto prepare_index_query = [&](size_t t, float* wts) {
      const int64_t pos = pos0 + static_cast<int64_t>(t);
      float* iq = &wk.iq[t * ih * ihd];
      float cs2[256], sn2[256];
      rope_compress_.cos_sin(pos, cs2, sn2);
      k::rope_interleaved_f32(iq + ihd - rd, ih, ihd, cs2, sn2, rd, k::RopeDir::forward);
      if (official)
        for (size_t h = 0; h < ih; ++h) hadamard_f32(iq + h * ihd, ihd);
      for (size_t h = 0; h < ih; ++h) wts[h] = wk.iw[t * ih + h] * wscale;
    };
    // Undo the values' rotation on the output's rope slice (rotate by -pos).
    auto finish_token = [&](size_t t) {
      const int64_t pos = pos0 + static_cast<int64_t>(t);
      float cs[256], sn[256];
      rope.cos_sin(pos, cs, sn);
      k::rope_interleaved_f32(&wk.attn[t * H * hd] + hd - rd, H, hd, cs, sn, rd,
                              k::RopeDir::inverse);
    };

    if (official) {
      // In place on the FP8/FP4 records (attention_exec.h). Segments end where a rewind
      // checkpoint is due: it copies the ring and the compressors' previous window as they are
      // before that position, so the segment's compressors must not run ahead of it.
      AttentionWorkspace& aw = *state.attn;
      const AttnLayerShape shape = AttnLayerShape::of_layer(c, li);
      for (size_t s0 = 0; s0 < T;) {
        size_t s1 = s0 + 1;
        while (s1 < T && !C.checkpoint_due(pos0 + static_cast<int64_t>(s1))) ++s1;
        const int64_t ps = pos0 + static_cast<int64_t>(s0);
        if (C.checkpoint_due(ps)) C.capture_checkpoint(li, ps);
        for (size_t t = s0; t < s1; ++t) {
          prepare_token(t);
          compress_token(t);
        }
        LayerRecords recs;
        if (shape.indexer) {
          for (size_t t = s0; t < s1; ++t) prepare_index_query(t, &wk.iw[t * ih]);
          recs.index_keys = record_runs(C, li, true, aw.key_runs);
          aw.exec.select_chunk(shape, recs.index_keys, ps, s1 - s0, &wk.iq[s0 * ih * ihd],
                               &wk.iw[s0 * ih], pool);
        }
        if (shape.ratio > 0) recs.entries = record_runs(C, li, false, aw.entry_runs);
        for (size_t t = s0; t < s1; ++t) {
          const int64_t pos = pos0 + static_cast<int64_t>(t);
          C.write_window(li, pos, &wk.kv[t * hd]);
          // The ring is one block: slot 0 holds the latest position <= pos that is 0 mod W.
          aw.window_run.assign(1, C.window_record(li, pos - pos % static_cast<int64_t>(W)));
          recs.window = {aw.window_run.data(), W, static_cast<size_t>(C.window_record_bytes(li)),
                         W};
          aw.exec.attend_token(
              shape, recs, pos, &wk.q[t * H * hd],
              shape.indexer ? aw.exec.selected(t - s0) : std::span<const int32_t>{}, A.sink.data(),
              &wk.attn[t * H * hd], pool);
          finish_token(t);
        }
        s0 = s1;
      }
    } else {
      // Exact f32 path (the transformers reference): rows read back as f32, per-head softmax.
      for (size_t t = 0; t < T; ++t) {
        const int64_t pos = pos0 + static_cast<int64_t>(t);
        prepare_token(t);
        if (C.checkpoint_due(pos)) C.capture_checkpoint(li, pos);
        C.write_window(li, pos, &wk.kv[t * hd]);
        compress_token(t);
        const float* q = &wk.q[t * H * hd];

        // Gather this query's keys: the window (oldest first), then compressed entries.
        const size_t n_win =
            static_cast<size_t>(std::min<int64_t>(pos + 1, static_cast<int64_t>(W)));
        size_t n_comp = 0;
        selected.clear();
        if (A.type == AttentionType::heavily_compressed_attention) {
          n_comp = static_cast<size_t>(C.n_entries(li));
        } else if (A.indexer && C.n_index_keys(li) > 0) {
          // Lightning indexer: score every complete entry, keep the top index_topk.
          const size_t n_entries = static_cast<size_t>(C.n_index_keys(li));
          DSV4_CHECK(C.n_entries(li) == C.n_index_keys(li));
          float wts[1024];
          DSV4_CHECK(ih <= 1024);
          prepare_index_query(t, wts);
          const float* iq = &wk.iq[t * ih * ihd];
          scores.resize(n_entries);
          // Keys are read (dequantized) a bounded run at a time; each score depends on its own
          // key only, so the runs give the same scores as one call over all keys.
          constexpr size_t kKeyRun = 256;
          key_block.resize(kKeyRun * ihd);
          for (size_t e0 = 0; e0 < n_entries; e0 += kKeyRun) {
            const size_t n = std::min(kKeyRun, n_entries - e0);
            C.read_index_keys(li, static_cast<int64_t>(e0), static_cast<int64_t>(n),
                              key_block.data());
            k::indexer_scores_f32(iq, wts, ih, ihd, key_block.data(), n, scores.data() + e0);
          }
          n_comp = std::min(n_entries, static_cast<size_t>(c.index_topk));
          selected.resize(n_comp);
          k::topk_f32(scores.data(), n_entries, n_comp, selected.data(), &topk_scratch);
        }
        const size_t n_keys = n_win + n_comp;
        keys.resize(n_keys * hd);
        for (size_t i = 0; i < n_win; ++i) {
          const int64_t p = pos + 1 - static_cast<int64_t>(n_win) + static_cast<int64_t>(i);
          C.read_window(li, p, &keys[i * hd]);
        }
        for (size_t i = 0; i < n_comp; ++i) {
          const size_t e = selected.empty() ? i : static_cast<size_t>(selected[i]);
          C.read_entry(li, static_cast<int64_t>(e), &keys[(n_win + i) * hd]);
        }

        // Per-head attention with the sink; K = V.
        const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
        float* out = &wk.attn[t * H * hd];
        if (wk.f32_probs.size() < static_cast<size_t>(nthreads))
          wk.f32_probs.resize(static_cast<size_t>(nthreads));
        pool.parallel_for(0, H, 1, [&](size_t hb, size_t he, int ti) {
          std::vector<float>& p = wk.f32_probs[static_cast<size_t>(ti)];
          if (p.size() < n_keys) p.resize(n_keys);
          for (size_t h = hb; h < he; ++h) {
            const float* qh = q + h * hd;
            for (size_t j = 0; j < n_keys; ++j) p[j] = dot(qh, &keys[j * hd], hd) * scale;
            k::softmax_sink_f32(p.data(), p.data(), n_keys, A.sink[h]);
            float* oh = out + h * hd;
            std::fill(oh, oh + hd, 0.f);
            for (size_t j = 0; j < n_keys; ++j) {
              const float pj = p[j];
              const float* kj = &keys[j * hd];
              for (size_t d = 0; d < hd; ++d) oh[d] += pj * kj[d];
            }
          }
        });
        finish_token(t);
      }
    }

    // Grouped low-rank output projection: group g of the heads' outputs -> o_lora_rank dims.
    resize(wk.oa, T * G * olr);
    const size_t in_g = H * hd / G;
    pool.parallel_for(0, G * olr, 16, [&](size_t rb, size_t re, int) {
      for (size_t r = rb; r < re;) {
        const size_t g = r / olr;
        const size_t r_end = std::min(re, (g + 1) * olr);
        A.wo_a.apply_rows(wk.attn.data() + g * in_g, H * hd, T, wk.oa.data(), G * olr, r, r_end);
        r = r_end;
      }
    });
    linear(A.wo_b, wk.oa.data(), T, wk.block_out.data(), pool);
    hc_post();

    // ---------------- MoE block
    const FfnWeights& F = L.ffn;
    hc_pre(L.hc_ffn, L.ffn_norm);
    resize(wk.router, T * E);
    linear(F.gate, wk.x.data(), T, wk.router.data(), pool);
    const size_t inter = F.shared.w1.rows;
    // Shared expert on every token.
    resize(wk.h1, T * inter);
    resize(wk.h3, T * inter);
    linear(F.shared.w1, wk.x.data(), T, wk.h1.data(), pool);
    linear(F.shared.w3, wk.x.data(), T, wk.h3.data(), pool);
    for (size_t t = 0; t < T; ++t)
      k::swiglu_f32(&wk.h1[t * inter], &wk.h3[t * inter], &wk.h1[t * inter], inter,
                    static_cast<float>(c.swiglu_limit));
    linear(F.shared.w2, wk.h1.data(), T, wk.block_out.data(), pool);
    // Routing: which experts and with what weight; then the (token, weight) rows of each
    // expert in token order (a counting sort over route_pick).
    {
      float* sc = wk.route_scores.data();
      float* biased = wk.route_biased.data();
      int32_t* idx = wk.route_idx.data();
      for (size_t t = 0; t < T; ++t) {
        k::router_scores_f32(&wk.router[t * E], sc, E, scoring_func(c.scoring_func));
        if (F.type == MlpType::hash_moe) {
          for (size_t i = 0; i < topk_e; ++i)
            idx[i] = F.tid2eid[static_cast<size_t>(tokens[t]) * topk_e + i];
        } else {
          for (size_t e = 0; e < E; ++e) biased[e] = sc[e] + F.bias[e];
          k::topk_f32(biased, E, topk_e, idx, &topk_scratch);
        }
        float sum = 0.f;
        for (size_t i = 0; i < topk_e; ++i) sum += sc[static_cast<size_t>(idx[i])];
        for (size_t i = 0; i < topk_e; ++i) {
          const size_t e = static_cast<size_t>(idx[i]);
          const float wgt = sc[e] / (sum + 1e-20f) * static_cast<float>(c.routed_scaling_factor);
          wk.route_pick[t * topk_e + i] = {static_cast<uint32_t>(e), wgt};
        }
      }
    }
    uint32_t* first = wk.expert_first.data();
    std::fill(first, first + E + 1, 0u);
    for (size_t r = 0; r < T * topk_e; ++r) ++first[wk.route_pick[r].first + 1];
    for (size_t e = 0; e < E; ++e) first[e + 1] += first[e];
    for (size_t r = 0; r < T * topk_e; ++r) {  // r in token order: rows stay in token order
      const auto [e, wgt] = wk.route_pick[r];
      wk.expert_rows[first[e]++] = {static_cast<uint32_t>(r / topk_e), wgt};
    }
    // first[e] is now the end of expert e's rows (the start of e + 1's).
    for (size_t e = 0; e < E; ++e) {
      const size_t begin = e == 0 ? 0 : first[e - 1];
      const size_t m = first[e] - begin;
      if (m == 0) continue;
      const std::pair<uint32_t, float>* rows = &wk.expert_rows[begin];
      const Expert& X = F.experts[e];
      const size_t ei = X.w1.rows;
      resize(wk.expert_x, m * D);
      resize(wk.h1, m * ei);
      resize(wk.h3, m * ei);
      resize(wk.expert_y, m * D);
      for (size_t i = 0; i < m; ++i)
        std::memcpy(&wk.expert_x[i * D], &wk.x[rows[i].first * D], D * sizeof(float));
      linear(X.w1, wk.expert_x.data(), m, wk.h1.data(), pool);
      linear(X.w3, wk.expert_x.data(), m, wk.h3.data(), pool);
      for (size_t i = 0; i < m; ++i)
        k::swiglu_f32(&wk.h1[i * ei], &wk.h3[i * ei], &wk.h1[i * ei], ei,
                      static_cast<float>(c.swiglu_limit), rows[i].second);
      linear(X.w2, wk.h1.data(), m, wk.expert_y.data(), pool);
      for (size_t i = 0; i < m; ++i) {
        float* dst = &wk.block_out[rows[i].first * D];
        const float* src = &wk.expert_y[i * D];
        for (size_t d = 0; d < D; ++d) dst[d] += src[d];
      }
    }
    hc_post();
    if (observer) observer(static_cast<int>(l), pos0, static_cast<int64_t>(T), wk.streams.data());
  }

  // Final: collapse the streams (hc_head), RMSNorm, LM head.
  if (logits) {
    const size_t first = all_logits ? 0 : T - 1;
    const size_t n = T - first;
    resize(wk.head_x, n * D);
    resize(wk.head_flat, hc * D);
    resize(wk.head_mixes, hc);
    resize(wk.head_pre, hc);
    float* xs = wk.head_x.data();
    for (size_t i = 0; i < n; ++i) {
      const float* s = &wk.streams[(first + i) * hc * D];
      k::rmsnorm_f32(s, nullptr, wk.head_flat.data(), hc * D, eps);
      matvec_f32(w_.hc_head_fn.data(), hc, hc * D, wk.head_flat.data(), wk.head_mixes.data());
      k::hc_head_pre_f32(wk.head_mixes.data(), w_.hc_head_scale[0], w_.hc_head_base.data(), hc,
                         hc_eps, wk.head_pre.data());
      k::hc_collapse_f32(s, wk.head_pre.data(), hc, D, &xs[i * D]);
      k::rmsnorm_f32(&xs[i * D], w_.norm.data(), &xs[i * D], D, eps);
    }
    linear(w_.head, xs, n, logits, pool);
  }
  state.n_tokens += static_cast<int64_t>(T);
  state.tokens.insert(state.tokens.end(), tokens.begin(), tokens.end());
  return ok_status();
}

}  // namespace dsv4::model
