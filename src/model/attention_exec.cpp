#include "model/attention_exec.h"

#include <algorithm>
#include <cmath>

#include "kernels/codecs.h"

namespace dsv4::model {

namespace k = dsv4::kernels;

namespace {

size_t ceil_div(size_t a, size_t b) {
  return (a + b - 1) / b;
}

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// The attention key blocks of a token with n_keys keys: a function of n_keys only.
struct KeyBlocks {
  size_t n_blocks = 1, block = 0;
};
KeyBlocks key_blocks(size_t n_keys) {
  KeyBlocks kb;
  if (n_keys == 0) return kb;
  if (n_keys <= AttentionExec::kSmallKeys) {
    kb.block = AttentionExec::kSmallBlockKeys;
    kb.n_blocks = ceil_div(n_keys, kb.block);
    return kb;
  }
  const size_t nb = std::clamp<size_t>(ceil_div(n_keys, AttentionExec::kMinBlockKeys), 1,
                                       AttentionExec::kMaxKeyBlocks);
  kb.block = ceil_div(n_keys, nb);
  kb.n_blocks = ceil_div(n_keys, kb.block);
  return kb;
}

}  // namespace

AttnLayerShape AttnLayerShape::of_layer(const formats::ModelConfig& c, int layer) {
  DSV4_CHECK(layer >= 0 && static_cast<size_t>(layer) < c.layer_types.size());
  AttnLayerShape s;
  const size_t l = static_cast<size_t>(layer);
  s.n_heads = static_cast<size_t>(c.num_attention_heads);
  s.rec.head_dim = static_cast<size_t>(c.head_dim);
  s.rec.rope_dim = static_cast<size_t>(c.qk_rope_head_dim);
  s.window = static_cast<size_t>(c.sliding_window);
  s.ratio = l < c.compress_ratios.size() ? static_cast<size_t>(c.compress_ratios[l]) : 0;
  s.indexer = c.layer_types[l] == formats::AttentionType::compressed_sparse_attention;
  if (c.layer_types[l] == formats::AttentionType::sliding_attention) s.ratio = 0;
  s.index_n_heads = static_cast<size_t>(c.index_n_heads);
  s.index_head_dim = static_cast<size_t>(c.index_head_dim);
  s.index_topk = static_cast<size_t>(c.index_topk);
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.rec.head_dim)));
  return s;
}

void AttentionExec::ensure_threads(int n_threads) {
  const size_t n = static_cast<size_t>(std::max(n_threads, 1));
  if (threads_.size() < n) threads_.resize(n);
  for (PerThread& t : threads_) grow(t.tile, max_chunk_ * kScoreTile);
}

void AttentionExec::reserve(const AttnLayerShape& shape, size_t max_chunk_tokens,
                            int64_t max_context, int n_threads) {
  DSV4_CHECK(shape.n_heads > 0 && shape.window > 0 && max_context > 0);
  max_chunk_ = std::max({max_chunk_, max_chunk_tokens, size_t{1}});
  ensure_threads(n_threads);
  const size_t max_entries = shape.visible_entries(max_context - 1);
  const size_t hd = shape.head_dim();

  size_t max_sel = 0;
  if (shape.indexer) {
    const size_t ih = shape.index_n_heads, ihd = shape.index_head_dim, kk = shape.index_topk;
    DSV4_CHECK(ihd % 32 == 0 && ihd <= 512 && ih <= 128 && kk > 0);
    grow(q_codes_, max_chunk_ * ih * ihd / 2);
    grow(q_scales_, max_chunk_ * ih * ihd / 32);
    grow(queries_, max_chunk_);
    grow(streams_, max_chunk_);
    sel_stride_ = std::max(sel_stride_, kk);
    // Keep earlier rows addressable with the widest stride seen.
    grow(selected_, max_chunk_ * sel_stride_);
    grow(sel_count_, max_chunk_);
    grow(scores_, max_entries);
    topk_scratch_.candidates.reserve(
        std::max(8 * kk + 1024, std::min<size_t>(max_entries, 32 * kk)));
    topk_scratch_.block_max.reserve(max_entries / 16 + 1);
    max_sel = std::min(kk, max_entries);

    // Warm the kernels' scratches and the streams' candidate buffers on dummy keys/queries
    // (queries: zero codes, scale 2^-127; keys: every byte 0x7F, codes +-6 with scale 1, inside
    // the vector kernels' exact range — a zero scale byte would send all 17K dummy key scorings
    // per thread down the scalar _ref path, ~0.2 s per reserve), at the largest sizes the calls
    // below will use.
    std::vector<uint8_t> keys(kScoreGrain * shape.index_key_bytes(), 0x7F);
    std::vector<uint8_t> codes(max_chunk_ * ih * ihd / 2, 0), scales(max_chunk_ * ih * ihd / 32, 0);
    std::vector<float> wts(ih, 1.f), out(std::max(kScoreGrain, max_chunk_ * kScoreTile));
    std::vector<k::IndexerFp4Query> qs(max_chunk_);
    for (size_t t = 0; t < max_chunk_; ++t)
      qs[t] = {&codes[t * ih * ihd / 2], &scales[t * ih * ihd / 32], wts.data(), ih, ihd};
    plan_.reset(qs.data(), max_chunk_);
    plan_.prepare(0, max_chunk_);
    for (PerThread& th : threads_) {
      k::indexer_scores_fp4_planned(plan_, 0, 1, keys.data(), kScoreGrain, out.data(), kScoreGrain,
                                    &th.iscratch);
      k::indexer_scores_fp4_planned(plan_, 0, max_chunk_, keys.data(), kScoreTile, out.data(),
                                    kScoreTile, &th.iscratch);
    }
    plan_.reset(nullptr, 0);  // its queries point at the dummies above
    // Increasing scores: every one survives, the most candidates a stream ever holds.
    std::vector<float> rising(kScoreTile);
    for (k::StreamingTopK& st : streams_) {
      st.reset(kk);
      for (size_t j0 = 0; j0 < 2 * kk + 2 * kScoreTile; j0 += kScoreTile) {
        for (size_t i = 0; i < kScoreTile; ++i) rising[i] = static_cast<float>(j0 + i);
        st.push(rising.data(), kScoreTile, static_cast<int64_t>(j0));
      }
      std::vector<int32_t> sink(kk);
      st.finish(sink.data());
    }
  } else if (shape.ratio > 0) {
    max_sel = max_entries;
  }

  const size_t max_keys =
      std::min<size_t>(shape.window, static_cast<size_t>(max_context)) + max_sel;
  grow(recs_, max_keys);
  const size_t groups = ceil_div(shape.n_heads, std::min(kHeadGroup, kSmallHeadGroup));
  grow(states_, groups * kMaxKeyBlocks);
  if (pending_size_ < groups) {
    pending_ = std::make_unique<std::atomic<uint32_t>[]>(groups);
    pending_size_ = groups;
  }
  // States of the small-token grid (group 0.., blocks < kSmallKeys / kSmallBlockKeys) hold up
  // to kSmallHeadGroup heads; the rest kHeadGroup.
  // The state of (group g, block b) is used with the largest head group whose grid has it.
  for (size_t i = 0; i < states_.size(); ++i) {
    const size_t g = i / kMaxKeyBlocks, b = i % kMaxKeyBlocks;
    size_t heads = kHeadGroup;
    if (g * kSmallHeadGroup < shape.n_heads && b < kSmallKeys / kSmallBlockKeys)
      heads = std::max(heads, kSmallHeadGroup);
    if (g * kLargeHeadGroup < shape.n_heads) heads = std::max(heads, kLargeHeadGroup);
    heads = std::min(heads, shape.n_heads);
    if (states_[i].acc.capacity() < heads * hd) states_[i].reset(heads, hd);
  }
  // Warm the attention scratch: its size depends on the head count only (the key tile is
  // fixed), so one call with the widest head group of any grid does it.
  const size_t max_group =
      std::min(std::max({kHeadGroup, kSmallHeadGroup, kLargeHeadGroup}), shape.n_heads);
  std::vector<uint8_t> rec(shape.record_bytes(), 0);
  std::vector<const uint8_t*> ptrs(kMinBlockKeys, rec.data());
  std::vector<float> q(max_group * hd, 0.f);
  k::AttnState st;
  for (PerThread& th : threads_) {
    st.reset(max_group, hd);
    k::attend_v4_fp8(q.data(), max_group, shape.rec, ptrs.data(), ptrs.size(), shape.scale, st,
                     &th.ascratch);
  }
}

uint64_t AttentionExec::workspace_bytes() const {
  uint64_t b = 0;
  auto vec = [&b](const auto& v) { b += v.capacity() * sizeof(v[0]); };
  for (const PerThread& t : threads_) {
    vec(t.iscratch.bytes);
    vec(t.ascratch.bytes);
    vec(t.tile);
  }
  vec(q_codes_);
  vec(q_scales_);
  vec(queries_);
  b += plan_.capacity_bytes();
  vec(scores_);
  vec(topk_scratch_.block_max);
  vec(topk_scratch_.candidates);
  // A stream's candidates are private: counted at their documented bound (2k + one tile).
  b += streams_.size() * (sizeof(k::StreamingTopK) + (2 * sel_stride_ + kScoreTile) * 8);
  vec(selected_);
  vec(sel_count_);
  vec(recs_);
  for (const k::AttnState& st : states_) {
    b += sizeof(st);
    vec(st.m);
    vec(st.l);
    vec(st.acc);
  }
  return b;
}

void AttentionExec::quantize_queries(const AttnLayerShape& shape, size_t T, const float* iq,
                                     const float* wts) {
  const size_t ih = shape.index_n_heads, ihd = shape.index_head_dim;
  const size_t n = ih * ihd;
  for (size_t t = 0; t < T; ++t) {
    // Heads are consecutive and ihd % 32 == 0, so the flat [ih * ihd] quantization gives each
    // head its own codes [ihd / 2] and scales [ihd / 32], as fp4_act_quant on [.., ih, ihd].
    k::quantize_f4e2m1_blocks(iq + t * n, n, 32, &q_codes_[t * n / 2], &q_scales_[t * n / 32]);
    queries_[t] = {&q_codes_[t * n / 2], &q_scales_[t * n / 32], wts + t * ih, ih, ihd};
  }
  plan_.reset(queries_.data(), T);  // prepared by select_chunk, in parallel for chunks
}

void AttentionExec::select_chunk(const AttnLayerShape& shape, const RecordRuns& keys, int64_t p0,
                                 size_t T, const float* iq, const float* wts, ThreadPool& pool) {
  DSV4_CHECK(shape.indexer && T >= 1 && p0 >= 0);
  DSV4_CHECK(keys.record_bytes == shape.index_key_bytes());
  const size_t kk = shape.index_topk;
  if (T > max_chunk_ || kk > sel_stride_ || threads_.size() < size_t(pool.num_threads()) ||
      q_codes_.size() < T * shape.index_n_heads * shape.index_head_dim / 2)
    reserve(shape, T, p0 + static_cast<int64_t>(T), pool.num_threads());
  const size_t vis_last = shape.visible_entries(p0 + static_cast<int64_t>(T) - 1);
  DSV4_CHECK(keys.count >= vis_last);
  quantize_queries(shape, T, iq, wts);

  struct Job {
    AttentionExec* self;
    const AttnLayerShape* shape;
    const RecordRuns* keys;
    int64_t p0;
    size_t kk;
  } job{this, &shape, &keys, p0, kk};

  if (T == 1) {
    const size_t n = shape.visible_entries(p0);
    int32_t* sel = selected_.data();
    if (n <= kk) {
      for (size_t i = 0; i < n; ++i) sel[i] = static_cast<int32_t>(i);
      sel_count_[0] = n;
      return;
    }
    grow(scores_, n);
    plan_.prepare(0, 1);  // once, not per key slice
    pool.parallel_for(0, n, kScoreGrain, [&job](size_t b, size_t e, int ti) {
      AttentionExec& x = *job.self;
      k::IndexerScratch* scratch = &x.threads_[static_cast<size_t>(ti)].iscratch;
      for (size_t i = b; i < e;) {
        const size_t m = std::min(job.keys->run_left(i), e - i);
        k::indexer_scores_fp4_planned(x.plan_, 0, 1, job.keys->at(i), m, &x.scores_[i], m, scratch);
        i += m;
      }
    });
    k::topk_f32(scores_.data(), n, kk, sel, &topk_scratch_);
    sel_count_[0] = kk;
    return;
  }

  // Several queries: contiguous groups of queries per worker, every group streaming the key
  // tiles its last query sees. Visible counts are non-decreasing in t.
  const size_t nthreads = static_cast<size_t>(pool.num_threads());
  pool.parallel_for(0, T, ceil_div(T, nthreads), [&job](size_t tb, size_t te, int ti) {
    AttentionExec& x = *job.self;
    const AttnLayerShape& s = *job.shape;
    const size_t kk = job.kk;
    auto vis = [&](size_t t) { return s.visible_entries(job.p0 + static_cast<int64_t>(t)); };
    size_t t_first = tb;
    for (; t_first < te && vis(t_first) <= kk; ++t_first) {
      const size_t n = vis(t_first);
      int32_t* sel = &x.selected_[t_first * x.sel_stride_];
      for (size_t i = 0; i < n; ++i) sel[i] = static_cast<int32_t>(i);
      x.sel_count_[t_first] = n;
    }
    if (t_first == te) return;
    x.plan_.prepare(t_first, te);  // this worker's queries, once for all key tiles
    for (size_t t = t_first; t < te; ++t) x.streams_[t].reset(kk);
    PerThread& th = x.threads_[static_cast<size_t>(ti)];
    const size_t vmax = vis(te - 1);
    size_t ts = t_first;
    for (size_t j0 = 0; j0 < vmax;) {
      const size_t n = std::min({kScoreTile, job.keys->run_left(j0), vmax - j0});
      while (vis(ts) <= j0) ++ts;  // queries that see none of this tile (ts < te: vis(te-1) > j0)
      k::indexer_scores_fp4_planned(x.plan_, ts, te - ts, job.keys->at(j0), n, th.tile.data(),
                                    kScoreTile, &th.iscratch);
      for (size_t t = ts; t < te; ++t) {
        const size_t m = std::min(j0 + n, vis(t)) - j0;
        x.streams_[t].push(&th.tile[(t - ts) * kScoreTile], m, static_cast<int64_t>(j0));
      }
      j0 += n;
    }
    for (size_t t = t_first; t < te; ++t)
      x.sel_count_[t] = x.streams_[t].finish(&x.selected_[t * x.sel_stride_]);
  });
}

void AttentionExec::attend_token(const AttnLayerShape& shape, const LayerRecords& recs, int64_t pos,
                                 const float* q, std::span<const int32_t> selected,
                                 const float* sink, float* out, ThreadPool& pool) {
  DSV4_CHECK(pos >= 0);
  const size_t W = shape.window;
  const size_t hd = shape.head_dim();
  DSV4_CHECK(recs.window.count == W && recs.window.record_bytes == shape.record_bytes());
  const size_t n_win = std::min(static_cast<size_t>(pos) + 1, W);
  size_t n_sel = 0;
  if (shape.indexer) {
    n_sel = selected.size();
  } else if (shape.ratio > 0) {
    n_sel = shape.visible_entries(pos);
  }
  if (n_sel > 0) {
    DSV4_CHECK(recs.entries.record_bytes == shape.record_bytes());
    DSV4_CHECK(recs.entries.count >= shape.visible_entries(pos));
  }
  const size_t n_keys = n_win + n_sel;
  const size_t hg = head_group(n_keys);
  const size_t groups = ceil_div(shape.n_heads, hg);
  if (recs_.size() < n_keys || states_.size() < groups * kMaxKeyBlocks || pending_size_ < groups ||
      threads_.size() < static_cast<size_t>(pool.num_threads()))
    reserve(shape, std::max<size_t>(max_chunk_, 1), pos + 1, pool.num_threads());

  // Keys: the window, oldest first, then the entries.
  const uint8_t** r = recs_.data();
  for (size_t i = 0; i < n_win; ++i) {
    const size_t p = static_cast<size_t>(pos) + 1 - n_win + i;
    r[i] = recs.window.at(p % W);
  }
  if (shape.indexer) {
    const size_t vis = shape.visible_entries(pos);
    for (size_t i = 0; i < n_sel; ++i) {
      const size_t e = static_cast<size_t>(selected[i]);
      DSV4_CHECK(e < vis);
      r[n_win + i] = recs.entries.at(e);
    }
  } else {
    for (size_t i = 0; i < n_sel; ++i) r[n_win + i] = recs.entries.at(i);
  }

  const KeyBlocks kb = key_blocks(n_keys);
  struct Job {
    AttentionExec* self;
    const AttnLayerShape* shape;
    const float* q;
    const float* sink;
    float* out;
    size_t n_keys, hd, hg;
    KeyBlocks kb;
  } job{this, &shape, q, sink, out, n_keys, hd, hg, kb};
  for (size_t g = 0; g < groups; ++g)
    pending_[g].store(static_cast<uint32_t>(kb.n_blocks), std::memory_order_relaxed);
  pool.parallel_for(0, groups * kb.n_blocks, 1, [&job](size_t ib, size_t ie, int ti) {
    AttentionExec& x = *job.self;
    const AttnLayerShape& s = *job.shape;
    for (size_t item = ib; item < ie; ++item) {
      const size_t g = item / job.kb.n_blocks, b = item % job.kb.n_blocks;
      const size_t h0 = g * job.hg, hn = std::min(job.hg, s.n_heads - h0);
      k::AttnState& st = x.states_[g * kMaxKeyBlocks + b];
      st.reset(hn, job.hd);
      const size_t k0 = b * job.kb.block;
      const size_t kn = k0 < job.n_keys ? std::min(job.kb.block, job.n_keys - k0) : 0;
      k::attend_v4_fp8(job.q + h0 * job.hd, hn, s.rec, x.recs_.data() + k0, kn, s.scale, st,
                       &x.threads_[static_cast<size_t>(ti)].ascratch);
      // The group's last block to finish (acq_rel: it sees the other blocks' states) merges
      // them in block order, so the result does not depend on which worker that is.
      if (job.kb.n_blocks > 1 && x.pending_[g].fetch_sub(1, std::memory_order_acq_rel) != 1)
        continue;
      k::AttnState& first = x.states_[g * kMaxKeyBlocks];
      for (size_t bb = 1; bb < job.kb.n_blocks; ++bb)
        k::attn_state_merge(first, x.states_[g * kMaxKeyBlocks + bb]);
      k::attn_state_finish(first, job.sink ? job.sink + h0 : nullptr, job.out + h0 * job.hd);
    }
  });
}

void AttentionExec::decode(const AttnLayerShape& shape, const LayerRecords& recs, int64_t pos,
                           const float* q, const float* iq, const float* wts, const float* sink,
                           float* out, ThreadPool& pool) {
  if (shape.indexer) {
    select_chunk(shape, recs.index_keys, pos, 1, iq, wts, pool);
    attend_token(shape, recs, pos, q, selected(0), sink, out, pool);
  } else {
    attend_token(shape, recs, pos, q, {}, sink, out, pool);
  }
}

}  // namespace dsv4::model
