// kv/cache.cpp — block storage of one sequence's KV cache (see cache.h).
#include "kv/cache.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "base/check.h"
#include "kv/record_codec.h"

namespace dsv4::kv {

// ------------------------------------------------------------------------------ BlockPool

Status BlockPool::charge(uint64_t bytes, const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  if (bytes > budget_ || reserved_ > budget_ - bytes)
    return out_of_memory("KV cache budget exceeded: " + what + " needs " + std::to_string(bytes) +
                         " B, " + std::to_string(reserved_) + " of " + std::to_string(budget_) +
                         " B already reserved");
  reserved_ += bytes;
  peak_ = std::max(peak_, reserved_);
  return ok_status();
}

void BlockPool::uncharge(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  DSV4_CHECK(bytes <= reserved_);
  reserved_ -= bytes;
}

uint64_t BlockPool::reserved() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_;
}

uint64_t BlockPool::peak() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

// ------------------------------------------------------------------------------ PoolBlock

Result<PoolBlock> PoolBlock::allocate(BlockPool& pool, uint64_t bytes, const std::string& what) {
  DSV4_RETURN_IF_ERROR(pool.charge(bytes, what));
  PoolBlock b;
  b.pool_ = &pool;
  b.buf_.resize(static_cast<size_t>(bytes));
  return b;
}

PoolBlock::PoolBlock(PoolBlock&& o) noexcept
    : pool_(std::exchange(o.pool_, nullptr)), buf_(std::move(o.buf_)) {}

PoolBlock& PoolBlock::operator=(PoolBlock&& o) noexcept {
  if (this != &o) {
    if (pool_ != nullptr) pool_->uncharge(buf_.size());
    pool_ = std::exchange(o.pool_, nullptr);
    buf_ = std::move(o.buf_);
  }
  return *this;
}

PoolBlock::~PoolBlock() {
  if (pool_ != nullptr) pool_->uncharge(buf_.size());
}

// ------------------------------------------------------------------------------ SequenceCache

SequenceCache::~SequenceCache() {
  release();
}

SequenceCache& SequenceCache::operator=(SequenceCache&& o) noexcept {
  if (this != &o) {
    release();  // while pool_ still points at the pool these bytes were charged to
    pool_ = std::move(o.pool_);
    layout_ = std::move(o.layout_);
    options_ = o.options_;
    head_dim_ = o.head_dim_;
    index_dim_ = o.index_dim_;
    layers_ = std::move(o.layers_);
    checkpoints_ = std::move(o.checkpoints_);
    o.layers_.clear();
    o.checkpoints_.clear();
  }
  return *this;
}

void SequenceCache::release() {
  layers_.clear();  // each PoolBlock uncharges itself
  if (pool_) {
    for (const auto& [pos, cp] : checkpoints_)
      if (cp.bytes > 0) pool_->uncharge(cp.bytes);
  }
  checkpoints_.clear();
}

namespace {

// kv_state + score_state of one compressor: 2 x [coff * ratio, coff * dim] f32.
uint64_t state_floats(int64_t ratio, int64_t dim, bool overlap) {
  const uint64_t coff = overlap ? 2 : 1;
  return 2 * coff * static_cast<uint64_t>(ratio) * coff * static_cast<uint64_t>(dim);
}

CompressorStateView make_view(float* base, int64_t ratio, int64_t dim, bool overlap) {
  CompressorStateView v;
  v.ratio = ratio;
  v.dim = dim;
  v.overlap = overlap;
  v.width = overlap ? 2 * dim : dim;
  const int64_t rows = (overlap ? 2 : 1) * ratio;
  v.kv = base;
  v.gate = base + rows * v.width;
  return v;
}

}  // namespace

Result<SequenceCache> SequenceCache::create(const formats::ModelConfig& config, Scheme scheme,
                                            std::shared_ptr<BlockPool> pool, CacheOptions options) {
  if (config.family != formats::ModelFamily::deepseek_v4)
    return unsupported("the KV cache stores DeepSeek-V4 layers only (model_type '" +
                       config.model_type + "')");
  if (scheme == Scheme::bf16)
    return unsupported("KV storage scheme bf16 is not implemented (use f32 or official)");
  if (options.block_records <= 0) return invalid_argument("block_records must be positive");
  if (options.checkpoint_interval < 0)
    return invalid_argument("checkpoint_interval must not be negative");
  DSV4_CHECK(pool != nullptr);
  DSV4_ASSIGN_OR_RETURN(KvLayout layout, make_layout(config, scheme));
  SequenceCache c;
  c.pool_ = std::move(pool);
  c.options_ = options;
  c.head_dim_ = config.head_dim;
  c.index_dim_ = config.index_head_dim;
  // Checkpoints only at positions where no compression window is partial.
  int64_t lcm = 1;
  for (const LayerLayout& l : layout.layers)
    if (l.compress_ratio > 0) lcm = std::lcm(lcm, l.compress_ratio);
  if (c.options_.checkpoint_interval > 0)
    c.options_.checkpoint_interval = (c.options_.checkpoint_interval + lcm - 1) / lcm * lcm;

  const bool off = scheme == Scheme::official;
  const auto hd = static_cast<size_t>(config.head_dim);
  const auto rd = static_cast<size_t>(config.qk_rope_head_dim);
  const auto id = static_cast<size_t>(config.index_head_dim);
  const uint64_t row_bytes = off ? codec::v4_entry_bytes(hd, rd) : hd * 4;
  const uint64_t key_bytes = off ? codec::v4_indexer_key_bytes(id) : id * 4;
  c.layers_.resize(layout.layers.size());
  for (size_t i = 0; i < layout.layers.size(); ++i) {
    const LayerLayout& ll = layout.layers[i];
    Layer& L = c.layers_[i];
    L.layout = ll;
    L.head_dim = config.head_dim;
    L.rope_dim = config.qk_rope_head_dim;
    L.index_dim = config.index_head_dim;
    L.window.record_bytes = row_bytes;
    L.window.block_records = ll.window;
    L.entries.record_bytes = row_bytes;
    L.entries.block_records = options.block_records;
    L.index_keys.record_bytes = key_bytes;
    L.index_keys.block_records = options.block_records;
    // Our record sizes are derived independently of layout.cpp; they must agree.
    const bool csa = ll.kind == LayerKind::csa;
    const bool compressed = csa || ll.kind == LayerKind::hca;
    uint64_t floats = 0;
    if (compressed) floats += state_floats(ll.compress_ratio, L.head_dim, csa);
    if (csa) floats += state_floats(ll.compress_ratio, L.index_dim, true);
    if (ll.raw_token_bytes != row_bytes || (compressed && ll.compressed_entry_bytes != row_bytes) ||
        (csa && ll.indexer_key_bytes != key_bytes) || ll.compressor_state_bytes != floats * 4 ||
        ll.window <= 0)
      return internal_error("KV cache records of layer " + std::to_string(i) +
                            " disagree with kv/layout.h");
    if (floats > 0) {
      DSV4_ASSIGN_OR_RETURN(L.state,
                            PoolBlock::allocate(*c.pool_, floats * 4,
                                                "compressor state of layer " + std::to_string(i)));
      auto* base = reinterpret_cast<float*>(L.state.data());
      L.kv_state = make_view(base, ll.compress_ratio, L.head_dim, csa);
      if (csa)
        L.index_state = make_view(base + state_floats(ll.compress_ratio, L.head_dim, true),
                                  ll.compress_ratio, L.index_dim, true);
    }
  }
  c.layout_ = std::move(layout);
  return c;
}

Status SequenceCache::grow(Stream& s, int64_t records, const std::string& what) {
  while (static_cast<int64_t>(s.blocks.size()) * s.block_records < records) {
    DSV4_ASSIGN_OR_RETURN(
        PoolBlock b,
        PoolBlock::allocate(*pool_, s.record_bytes * static_cast<uint64_t>(s.block_records), what));
    s.blocks.push_back(std::move(b));
  }
  return ok_status();
}

Status SequenceCache::reserve(int64_t n_tokens) {
  DSV4_CHECK(n_tokens >= 0);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& L = layers_[i];
    const std::string where = " of layer " + std::to_string(i);
    if (n_tokens > 0) DSV4_RETURN_IF_ERROR(grow(L.window, 1, "window ring" + where));
    const int64_t r = L.layout.compress_ratio;
    if (r > 0) {
      DSV4_RETURN_IF_ERROR(grow(L.entries, n_tokens / r, "compressed entries" + where));
      if (L.layout.indexer_ratio > 0)
        DSV4_RETURN_IF_ERROR(grow(L.index_keys, n_tokens / r, "indexer keys" + where));
    }
  }
  return ok_status();
}

void SequenceCache::write_row(const Layer& L, uint64_t record_bytes, int64_t dim, const float* x,
                              uint8_t* rec, bool indexer) const {
  if (scheme() == Scheme::f32) {
    std::memcpy(rec, x, record_bytes);
  } else if (indexer) {
    codec::encode_v4_indexer_key(x, static_cast<size_t>(dim), rec);
  } else {
    codec::encode_v4_entry(x, static_cast<size_t>(dim), static_cast<size_t>(L.rope_dim), rec);
  }
}

void SequenceCache::read_row(const Layer& L, int64_t dim, const uint8_t* rec, float* x,
                             bool indexer) const {
  if (scheme() == Scheme::f32) {
    std::memcpy(x, rec, static_cast<size_t>(dim) * 4);
  } else if (indexer) {
    codec::decode_v4_indexer_key(rec, static_cast<size_t>(dim), x);
  } else {
    codec::decode_v4_entry(rec, static_cast<size_t>(dim), static_cast<size_t>(L.rope_dim), x);
  }
}

void SequenceCache::write_window(int layer, int64_t pos, const float* row) {
  Layer& L = layers_[static_cast<size_t>(layer)];
  DSV4_CHECK(!L.window.blocks.empty() && pos >= 0);
  write_row(L, L.window.record_bytes, L.head_dim, row, L.window.at(pos % L.layout.window), false);
  L.window_filled = std::max(L.window_filled, std::min(pos + 1, L.layout.window));
}

void SequenceCache::read_window(int layer, int64_t pos, float* row) const {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  DSV4_CHECK(!L.window.blocks.empty() && pos >= 0);
  read_row(L, L.head_dim, L.window.at(pos % L.layout.window), row, false);
}

int64_t SequenceCache::n_entries(int layer) const {
  return layers_[static_cast<size_t>(layer)].entries.count;
}

void SequenceCache::append_entry(int layer, const float* row) {
  Layer& L = layers_[static_cast<size_t>(layer)];
  Stream& s = L.entries;
  DSV4_CHECK(s.count < static_cast<int64_t>(s.blocks.size()) * s.block_records);  // reserve()
  write_row(L, s.record_bytes, L.head_dim, row, s.at(s.count), false);
  ++s.count;
}

void SequenceCache::read_entry(int layer, int64_t index, float* row) const {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  DSV4_CHECK(index >= 0 && index < L.entries.count);
  read_row(L, L.head_dim, L.entries.at(index), row, false);
}

int64_t SequenceCache::n_index_keys(int layer) const {
  return layers_[static_cast<size_t>(layer)].index_keys.count;
}

void SequenceCache::append_index_key(int layer, const float* key) {
  Layer& L = layers_[static_cast<size_t>(layer)];
  Stream& s = L.index_keys;
  DSV4_CHECK(s.count < static_cast<int64_t>(s.blocks.size()) * s.block_records);  // reserve()
  write_row(L, s.record_bytes, L.index_dim, key, s.at(s.count), true);
  ++s.count;
}

void SequenceCache::read_index_keys(int layer, int64_t first, int64_t n, float* out) const {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  DSV4_CHECK(first >= 0 && n >= 0 && first + n <= L.index_keys.count);
  for (int64_t i = 0; i < n; ++i)
    read_row(L, L.index_dim, L.index_keys.at(first + i), out + i * L.index_dim, true);
}

CompressorStateView SequenceCache::compressor_state(int layer, Compressor which) {
  Layer& L = layers_[static_cast<size_t>(layer)];
  const CompressorStateView& v = which == Compressor::kv ? L.kv_state : L.index_state;
  DSV4_CHECK(v.kv != nullptr);
  return v;
}

LayerUsage SequenceCache::usage(int layer) const {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  LayerUsage u;
  u.allocated.window = static_cast<uint64_t>(L.window_filled) * L.window.record_bytes;
  u.allocated.compressed = static_cast<uint64_t>(L.entries.count) * L.entries.record_bytes;
  u.allocated.indexer = static_cast<uint64_t>(L.index_keys.count) * L.index_keys.record_bytes;
  u.allocated.compressor_state = L.state.size();
  for (const Stream* s : {&L.window, &L.entries, &L.index_keys})
    for (const PoolBlock& b : s->blocks) u.reserved += b.size();
  u.reserved += L.state.size();
  return u;
}

KvBytes SequenceCache::allocated_bytes() const {
  KvBytes t;
  for (int l = 0; l < n_layers(); ++l) {
    const KvBytes b = usage(l).allocated;
    t.window += b.window;
    t.compressed += b.compressed;
    t.indexer += b.indexer;
    t.compressor_state += b.compressor_state;
  }
  return t;
}

uint64_t SequenceCache::reserved_bytes() const {
  uint64_t t = 0;
  for (int l = 0; l < n_layers(); ++l) t += usage(l).reserved;
  return t;
}

// ------------------------------------------------------------------------------ checkpoints

bool SequenceCache::checkpoint_due(int64_t pos) const {
  const int64_t k = options_.checkpoint_interval;
  if (k <= 0 || pos <= 0 || pos % k != 0) return false;
  const auto it = checkpoints_.find(pos);
  return it == checkpoints_.end() || (it->second.bytes > 0 && it->second.captured < n_layers());
}

void SequenceCache::capture_checkpoint(int layer, int64_t pos) {
  DSV4_CHECK(checkpoint_due(pos));
  Checkpoint& cp = checkpoints_[pos];
  if (cp.ring.empty()) {
    // First layer: size and charge the whole checkpoint. Without budget it is dropped (marked
    // by bytes == 0 and no layers); rewind then uses an earlier one.
    uint64_t bytes = 0;
    for (const Layer& L : layers_) {
      bytes += L.window.record_bytes * static_cast<uint64_t>(L.layout.window);
      for (const CompressorStateView* v : {&L.kv_state, &L.index_state})
        if (v->kv != nullptr && v->overlap)
          bytes += 2 * static_cast<uint64_t>(v->ratio * v->width) * 4;
    }
    cp.ring.resize(layers_.size());
    cp.prev.resize(layers_.size());
    if (!pool_->charge(bytes, "rewind checkpoint").ok()) return;
    cp.bytes = bytes;
  }
  if (cp.bytes == 0) return;
  DSV4_CHECK(layer == cp.captured);  // layers in order, once each
  const Layer& L = layers_[static_cast<size_t>(layer)];
  const uint8_t* ring = L.window.blocks.front().data();
  cp.ring[static_cast<size_t>(layer)].assign(
      ring, ring + L.window.record_bytes * static_cast<uint64_t>(L.layout.window));
  std::vector<float>& prev = cp.prev[static_cast<size_t>(layer)];
  for (const CompressorStateView* v : {&L.kv_state, &L.index_state}) {
    if (v->kv == nullptr || !v->overlap) continue;
    DSV4_CHECK(pos % v->ratio == 0);
    const int64_t w = pos / v->ratio - 1;  // the previous (last complete) window
    const size_t n = static_cast<size_t>(v->ratio * v->width);
    prev.insert(prev.end(), v->kv_row(w, 0), v->kv_row(w, 0) + n);
    prev.insert(prev.end(), v->gate_row(w, 0), v->gate_row(w, 0) + n);
  }
  ++cp.captured;
}

int64_t SequenceCache::checkpoint_at_or_before(int64_t pos) const {
  for (auto it = checkpoints_.upper_bound(pos); it != checkpoints_.begin();) {
    --it;
    if (it->second.bytes > 0 && it->second.captured == n_layers()) return it->first;
  }
  return 0;
}

void SequenceCache::restore(int64_t s) {
  DSV4_CHECK(s >= 0);
  const auto cp_it = checkpoints_.find(s);
  DSV4_CHECK(s == 0 || (cp_it != checkpoints_.end() && cp_it->second.bytes > 0 &&
                        cp_it->second.captured == n_layers()));
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& L = layers_[i];
    const int64_t r = L.layout.compress_ratio;
    for (Stream* st : {&L.entries, &L.index_keys}) {
      if (r == 0 || st->block_records == 0) continue;
      st->count = std::min(st->count, s / r);
      const auto keep =
          static_cast<size_t>((st->count + st->block_records - 1) / st->block_records);
      if (st->blocks.size() > keep) st->blocks.resize(keep);
    }
    L.window_filled = std::min(s, L.layout.window);
    if (s == 0) {
      L.window.blocks.clear();
      continue;
    }
    const Checkpoint& cp = cp_it->second;
    const std::vector<uint8_t>& ring = cp.ring[i];
    std::memcpy(L.window.blocks.front().data(), ring.data(), ring.size());
    const float* src = cp.prev[i].data();
    for (const CompressorStateView* v : {&L.kv_state, &L.index_state}) {
      if (v->kv == nullptr || !v->overlap) continue;
      const int64_t w = s / v->ratio - 1;
      const size_t n = static_cast<size_t>(v->ratio * v->width);
      std::memcpy(v->kv_row(w, 0), src, n * 4);
      std::memcpy(v->gate_row(w, 0), src + n, n * 4);
      src += 2 * n;
    }
  }
  for (auto it = checkpoints_.upper_bound(s); it != checkpoints_.end();) {
    if (it->second.bytes > 0) pool_->uncharge(it->second.bytes);
    it = checkpoints_.erase(it);
  }
}

uint64_t SequenceCache::checkpoint_bytes() const {
  uint64_t t = 0;
  for (const auto& [pos, cp] : checkpoints_) t += cp.bytes;
  return t;
}

// ------------------------------------------------------------------------------ synthetic fill

Status fill_synthetic(SequenceCache& cache, int64_t n0, int64_t n_tokens, uint64_t seed) {
  if (n_tokens < n0) return invalid_argument("fill_synthetic: n_tokens < n0");
  DSV4_RETURN_IF_ERROR(cache.reserve(n_tokens));
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&x]() {  // xorshift64*, values in [-4, 4)
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return static_cast<float>(
        static_cast<double>((x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0 * 8.0 - 4.0);
  };
  std::vector<float> row;
  for (int64_t pos = n0; pos < n_tokens; ++pos) {
    for (int l = 0; l < cache.n_layers(); ++l) {
      if (cache.checkpoint_due(pos)) cache.capture_checkpoint(l, pos);
      const LayerLayout& ll = cache.layout().layers[static_cast<size_t>(l)];
      // Wide enough for a compressor row (CSA: 2 * dim) and every record.
      row.resize(2 * static_cast<size_t>(std::max(cache.head_dim(), cache.index_head_dim())));
      for (float& v : row) v = next();
      cache.write_window(l, pos, row.data());
      const int64_t r = ll.compress_ratio;
      if (r == 0) continue;
      const int64_t w = pos / r, slot = pos % r;
      for (Compressor c : {Compressor::kv, Compressor::indexer}) {
        if (c == Compressor::indexer && ll.kind != LayerKind::csa) continue;
        CompressorStateView v = cache.compressor_state(l, c);
        std::copy(row.begin(), row.begin() + v.width, v.kv_row(w, slot));
        std::copy(row.begin(), row.begin() + v.width, v.gate_row(w, slot));
      }
      if (slot == r - 1) {
        cache.append_entry(l, row.data());
        if (ll.kind == LayerKind::csa) cache.append_index_key(l, row.data());
      }
    }
  }
  return ok_status();
}

}  // namespace dsv4::kv
