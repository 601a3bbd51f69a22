// kv/cache.cpp — block storage of one sequence's KV cache (see cache.h).
#include "kv/cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
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

namespace {

constexpr uint64_t kPageBytes = 4096;

uint64_t round_up(uint64_t x, uint64_t to) {
  return (x + to - 1) / to * to;
}

// A 2 MiB-aligned anonymous mapping of `len` bytes (a multiple of 4 KiB): over-map by 2 MiB,
// then unmap the misaligned head and the tail. nullptr when the system refuses.
uint8_t* map_huge(uint64_t len) {
  const uint64_t span = len + kHugePageBytes;
  void* p = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  const auto base = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = round_up(base, kHugePageBytes);
  if (aligned > base) ::munmap(p, aligned - base);
  const uintptr_t end = base + span;
  if (end > aligned + len) ::munmap(reinterpret_cast<void*>(aligned + len), end - aligned - len);
  auto* a = reinterpret_cast<uint8_t*>(aligned);
#ifdef MADV_HUGEPAGE
  (void)::madvise(a, len, MADV_HUGEPAGE);  // best effort: THP may be off
#endif
  return a;
}

// An exclusive holder may write: nobody else can gain a reference except through this
// sequence. The acquire fence orders our writes after other (former) holders' reads, which
// happened before they dropped their reference.
bool held_alone(const std::shared_ptr<PoolBlock>& b) {
  if (b.use_count() != 1) return false;
  std::atomic_thread_fence(std::memory_order_acquire);
  return true;
}

}  // namespace

Result<std::shared_ptr<PoolBlock>> PoolBlock::allocate(const std::shared_ptr<BlockPool>& pool,
                                                       uint64_t bytes, bool huge_pages,
                                                       const std::string& what) {
  DSV4_CHECK(pool != nullptr && bytes > 0);
  DSV4_RETURN_IF_ERROR(pool->charge(bytes, what));
  std::shared_ptr<PoolBlock> b(new PoolBlock());
  b->pool_ = pool;  // from here on the destructor returns the charge
  b->size_ = bytes;
  const uint64_t mapped = round_up(bytes, kPageBytes);
  if (huge_pages && mapped >= kHugePageBytes) {
    b->data_ = map_huge(mapped);
    b->map_bytes_ = mapped;
    b->kind_ = Kind::huge;
  } else {
    b->data_ = static_cast<uint8_t*>(std::aligned_alloc(64, round_up(bytes, 64)));
    if (b->data_ != nullptr) std::memset(b->data_, 0, round_up(bytes, 64));
  }
  if (b->data_ == nullptr)
    return out_of_memory("the system refused " + std::to_string(bytes) + " B for " + what);
  return b;
}

Result<std::shared_ptr<PoolBlock>> PoolBlock::view(const std::shared_ptr<BlockPool>& pool,
                                                   std::shared_ptr<const void> owner,
                                                   const uint8_t* data, uint64_t bytes,
                                                   const std::string& what) {
  DSV4_CHECK(pool != nullptr && owner != nullptr && data != nullptr && bytes > 0);
  DSV4_RETURN_IF_ERROR(pool->charge(bytes, what));
  std::shared_ptr<PoolBlock> b(new PoolBlock());
  b->pool_ = pool;
  b->size_ = bytes;
  b->data_ = const_cast<uint8_t*>(data);  // never written: mutable_data() refuses views
  b->kind_ = Kind::view;
  b->owner_ = std::move(owner);
  return b;
}

PoolBlock::~PoolBlock() {
  if (data_ != nullptr) {
    if (kind_ == Kind::huge) {
      ::munmap(data_, map_bytes_);
    } else if (kind_ == Kind::heap) {
      std::free(data_);
    }
  }
  if (pool_) pool_->uncharge(size_);
}

// ------------------------------------------------------------------------------ helpers

int64_t stream_block_records(const CacheOptions& options, uint64_t record_bytes) {
  DSV4_CHECK(record_bytes > 0);
  if (options.block_bytes > 0)
    return std::max<int64_t>(1, static_cast<int64_t>(options.block_bytes / record_bytes));
  return options.block_records;
}

uint8_t* SequenceCache::Stream::writable_at(int64_t i) {
  const std::shared_ptr<PoolBlock>& b = blocks[static_cast<size_t>(i / block_records)];
  // Copy-on-write rule: reserve() made this block private before any write to it.
  DSV4_CHECK(held_alone(b) && !b->read_only() && b->size() == block_bytes());
  return b->mutable_data() + static_cast<uint64_t>(i % block_records) * record_bytes;
}

int64_t SequenceCache::Stream::run(int64_t first, const uint8_t** data) const {
  DSV4_CHECK(data != nullptr && first >= 0 && first < count);
  *data = at(first);
  const int64_t block_end = (first / block_records + 1) * block_records;
  return std::min(block_end, count) - first;
}

SequenceCache::CheckpointData::~CheckpointData() {
  if (bytes > 0) pool->uncharge(bytes);
}

// ------------------------------------------------------------------------------ SequenceCache

SequenceCache::~SequenceCache() {
  release();
}

SequenceCache& SequenceCache::operator=(SequenceCache&& o) noexcept {
  if (this != &o) {
    release();
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
  layers_.clear();  // the last holder of each block returns its bytes
  checkpoints_.clear();
}

const SequenceCache::Layer& SequenceCache::layer_at(int layer) const {
  DSV4_CHECK(layer >= 0 && layer < n_layers());
  return layers_[static_cast<size_t>(layer)];
}

int64_t SequenceCache::n_tokens() const {
  return layers_.empty() ? 0 : layers_.front().window_end;
}

namespace {

// kv_state + score_state of one compressor: 2 x [coff * ratio, coff * dim] f32.
uint64_t state_floats(int64_t ratio, int64_t dim, bool overlap) {
  const uint64_t coff = overlap ? 2 : 1;
  return 2 * coff * static_cast<uint64_t>(ratio) * coff * static_cast<uint64_t>(dim);
}

}  // namespace

CompressorStateView SequenceCache::state_view(const Layer& L, const StateGeometry& g) const {
  // The state is always private (fork copies it), so a view may be written.
  DSV4_CHECK(g.present && L.state != nullptr && held_alone(L.state));
  CompressorStateView v;
  v.ratio = g.ratio;
  v.dim = g.dim;
  v.overlap = g.overlap;
  v.width = g.overlap ? 2 * g.dim : g.dim;
  const int64_t rows = (g.overlap ? 2 : 1) * g.ratio;
  float* base = reinterpret_cast<float*>(L.state->mutable_data()) + g.offset_floats;
  v.kv = base;
  v.gate = base + rows * v.width;
  return v;
}

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
  if (options.block_bytes > kMaxBlockBytes)
    return invalid_argument("block_bytes " + std::to_string(options.block_bytes) +
                            " is above the limit of " + std::to_string(kMaxBlockBytes));
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
    L.entries.block_records = stream_block_records(options, row_bytes);
    L.index_keys.record_bytes = key_bytes;
    L.index_keys.block_records = key_bytes > 0 ? stream_block_records(options, key_bytes) : 1;
    for (const Stream* s : {&L.entries, &L.index_keys})
      if (s->block_bytes() > kMaxBlockBytes)
        return invalid_argument(std::to_string(s->block_records) + " records of " +
                                std::to_string(s->record_bytes) + " B per block exceed " +
                                std::to_string(kMaxBlockBytes) + " B");
    // Our record sizes are derived independently of layout.cpp; they must agree.
    const bool csa = ll.kind == LayerKind::csa;
    const bool compressed = csa || ll.kind == LayerKind::hca;
    uint64_t floats = 0;
    if (compressed) {
      L.kv_state = {true, ll.compress_ratio, L.head_dim, csa, 0};
      floats += state_floats(ll.compress_ratio, L.head_dim, csa);
    }
    if (csa) {
      L.index_state = {true, ll.compress_ratio, L.index_dim, true, floats};
      floats += state_floats(ll.compress_ratio, L.index_dim, true);
    }
    if (ll.raw_token_bytes != row_bytes || (compressed && ll.compressed_entry_bytes != row_bytes) ||
        (csa && ll.indexer_key_bytes != key_bytes) || ll.compressor_state_bytes != floats * 4 ||
        ll.window <= 0)
      return internal_error("KV cache records of layer " + std::to_string(i) +
                            " disagree with kv/layout.h");
    if (floats > 0) {
      DSV4_ASSIGN_OR_RETURN(L.state,
                            PoolBlock::allocate(c.pool_, floats * 4, options.huge_pages,
                                                "compressor state of layer " + std::to_string(i)));
    }
  }
  c.layout_ = std::move(layout);
  return c;
}

Result<SequenceCache> SequenceCache::fork() const {
  SequenceCache c;
  c.pool_ = pool_;
  c.layout_ = layout_;
  c.options_ = options_;
  c.head_dim_ = head_dim_;
  c.index_dim_ = index_dim_;
  c.layers_.resize(layers_.size());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& L = layers_[i];
    Layer& F = c.layers_[i];
    F.layout = L.layout;
    F.head_dim = L.head_dim;
    F.rope_dim = L.rope_dim;
    F.index_dim = L.index_dim;
    F.window_filled = L.window_filled;
    F.window_end = L.window_end;
    F.kv_state = L.kv_state;
    F.index_state = L.index_state;
    // Entries and keys: share the blocks holding records (not the reserved empty ones).
    for (auto [src, dst] : {std::pair{&L.entries, &F.entries}, {&L.index_keys, &F.index_keys}}) {
      dst->record_bytes = src->record_bytes;
      dst->block_records = src->block_records;
      dst->count = src->count;
      const auto used =
          static_cast<size_t>((src->count + src->block_records - 1) / src->block_records);
      dst->blocks.assign(src->blocks.begin(), src->blocks.begin() + static_cast<long>(used));
    }
    // Ring and compressor state: private copies.
    F.window.record_bytes = L.window.record_bytes;
    F.window.block_records = L.window.block_records;
    const std::string where = " of layer " + std::to_string(i) + " (fork)";
    if (!L.window.blocks.empty()) {
      const PoolBlock& src = *L.window.blocks.front();
      DSV4_ASSIGN_OR_RETURN(auto b,
                            PoolBlock::allocate(pool_, L.window.block_bytes(), options_.huge_pages,
                                                "window ring" + where));
      std::memcpy(b->mutable_data(), src.data(), std::min(src.size(), b->size()));
      F.window.blocks.push_back(std::move(b));
    }
    if (L.state != nullptr) {
      DSV4_ASSIGN_OR_RETURN(F.state,
                            PoolBlock::allocate(pool_, L.state->size(), options_.huge_pages,
                                                "compressor state" + where));
      std::memcpy(F.state->mutable_data(), L.state->data(), L.state->size());
    }
  }
  for (const auto& [pos, cp] : checkpoints_) {
    DSV4_CHECK(cp->bytes == 0 || cp->captured == n_layers());  // none half-captured
    c.checkpoints_.emplace(pos, cp);
  }
  return c;
}

Status SequenceCache::grow(Stream& s, int64_t records, const std::string& what) {
  while (static_cast<int64_t>(s.blocks.size()) * s.block_records < records) {
    DSV4_ASSIGN_OR_RETURN(auto b,
                          PoolBlock::allocate(pool_, s.block_bytes(), options_.huge_pages, what));
    s.blocks.push_back(std::move(b));
  }
  return ok_status();
}

bool SequenceCache::is_private(const Stream& s, size_t b) const {
  const std::shared_ptr<PoolBlock>& blk = s.blocks[b];
  return held_alone(blk) && !blk->read_only() && blk->size() == s.block_bytes();
}

Status SequenceCache::make_private(Stream& s, size_t b, const std::string& what) {
  if (is_private(s, b)) return ok_status();
  std::shared_ptr<PoolBlock>& blk = s.blocks[b];
  DSV4_ASSIGN_OR_RETURN(auto copy, PoolBlock::allocate(pool_, s.block_bytes(), options_.huge_pages,
                                                       what + " (copy-on-write)"));
  std::memcpy(copy->mutable_data(), blk->data(), std::min(blk->size(), copy->size()));
  blk = std::move(copy);  // drops our reference to the shared block
  return ok_status();
}

Status SequenceCache::reserve(int64_t n_tokens) {
  DSV4_CHECK(n_tokens >= 0);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& L = layers_[i];
    // Block names are built only when a block is allocated: reserve() runs before every
    // forward chunk, and a decode step must not allocate (tests/model/attention_exec_test.cpp).
    auto what = [i](const char* name) {
      return std::string(name) + " of layer " + std::to_string(i);
    };
    if (n_tokens > 0) {
      if (L.window.blocks.empty()) DSV4_RETURN_IF_ERROR(grow(L.window, 1, what("window ring")));
      if (n_tokens > L.window_end && !is_private(L.window, 0))
        DSV4_RETURN_IF_ERROR(make_private(L.window, 0, what("window ring")));
    }
    const int64_t r = L.layout.compress_ratio;
    if (r == 0) continue;
    for (auto [s, name] :
         {std::pair{&L.entries, "compressed entries"}, {&L.index_keys, "indexer keys"}}) {
      if (s == &L.index_keys && L.layout.indexer_ratio == 0) continue;
      const int64_t target = n_tokens / r;
      if (target <= s->count) continue;
      // The next append lands in block count / block_records; if that block exists (a partial
      // last block, or one reserved earlier) it must be ours alone before anything is written.
      const auto b = static_cast<size_t>(s->count / s->block_records);
      if (b < s->blocks.size() && !is_private(*s, b))
        DSV4_RETURN_IF_ERROR(make_private(*s, b, what(name)));
      if (static_cast<int64_t>(s->blocks.size()) * s->block_records < target)
        DSV4_RETURN_IF_ERROR(grow(*s, target, what(name)));
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
  DSV4_CHECK(layer >= 0 && layer < n_layers());
  Layer& L = layers_[static_cast<size_t>(layer)];
  DSV4_CHECK(!L.window.blocks.empty() && pos >= 0);
  write_row(L, L.window.record_bytes, L.head_dim, row, L.window.writable_at(pos % L.layout.window),
            false);
  L.window_filled = std::max(L.window_filled, std::min(pos + 1, L.layout.window));
  L.window_end = std::max(L.window_end, pos + 1);
}

const uint8_t* SequenceCache::window_record(int layer, int64_t pos) const {
  const Layer& L = layer_at(layer);
  DSV4_CHECK(!L.window.blocks.empty() && pos < L.window_end &&
             pos >= L.window_end - L.window_filled && pos >= 0);
  return L.window.at(pos % L.layout.window);
}

void SequenceCache::read_window(int layer, int64_t pos, float* row) const {
  read_row(layer_at(layer), layer_at(layer).head_dim, window_record(layer, pos), row, false);
}

int64_t SequenceCache::n_entries(int layer) const {
  return layer_at(layer).entries.count;
}

void SequenceCache::append_entry(int layer, const float* row) {
  DSV4_CHECK(layer >= 0 && layer < n_layers());
  Layer& L = layers_[static_cast<size_t>(layer)];
  Stream& s = L.entries;
  DSV4_CHECK(s.count < static_cast<int64_t>(s.blocks.size()) * s.block_records);  // reserve()
  write_row(L, s.record_bytes, L.head_dim, row, s.writable_at(s.count), false);
  ++s.count;
}

const uint8_t* SequenceCache::entry_record(int layer, int64_t i) const {
  const Stream& s = layer_at(layer).entries;
  DSV4_CHECK(i >= 0 && i < s.count);
  return s.at(i);
}

void SequenceCache::read_entry(int layer, int64_t index, float* row) const {
  const Layer& L = layer_at(layer);
  read_row(L, L.head_dim, entry_record(layer, index), row, false);
}

int64_t SequenceCache::n_index_keys(int layer) const {
  return layer_at(layer).index_keys.count;
}

void SequenceCache::append_index_key(int layer, const float* key) {
  DSV4_CHECK(layer >= 0 && layer < n_layers());
  Layer& L = layers_[static_cast<size_t>(layer)];
  Stream& s = L.index_keys;
  DSV4_CHECK(s.count < static_cast<int64_t>(s.blocks.size()) * s.block_records);  // reserve()
  write_row(L, s.record_bytes, L.index_dim, key, s.writable_at(s.count), true);
  ++s.count;
}

const uint8_t* SequenceCache::index_key_record(int layer, int64_t i) const {
  const Stream& s = layer_at(layer).index_keys;
  DSV4_CHECK(i >= 0 && i < s.count);
  return s.at(i);
}

void SequenceCache::read_index_keys(int layer, int64_t first, int64_t n, float* out) const {
  const Layer& L = layer_at(layer);
  DSV4_CHECK(first >= 0 && n >= 0 && first + n <= L.index_keys.count);
  for (int64_t i = 0; i < n; ++i)
    read_row(L, L.index_dim, L.index_keys.at(first + i), out + i * L.index_dim, true);
}

uint64_t SequenceCache::window_record_bytes(int layer) const {
  return layer_at(layer).window.record_bytes;
}

uint64_t SequenceCache::entry_record_bytes(int layer) const {
  return layer_at(layer).entries.record_bytes;
}

uint64_t SequenceCache::index_key_record_bytes(int layer) const {
  const Layer& L = layer_at(layer);
  return L.layout.indexer_ratio > 0 ? L.index_keys.record_bytes : 0;
}

int64_t SequenceCache::entry_run(int layer, int64_t first, const uint8_t** data) const {
  return layer_at(layer).entries.run(first, data);
}

int64_t SequenceCache::index_key_run(int layer, int64_t first, const uint8_t** data) const {
  return layer_at(layer).index_keys.run(first, data);
}

CompressorStateView SequenceCache::compressor_state(int layer, Compressor which) {
  const Layer& L = layer_at(layer);
  return state_view(L, which == Compressor::kv ? L.kv_state : L.index_state);
}

LayerUsage SequenceCache::usage(int layer) const {
  const Layer& L = layer_at(layer);
  LayerUsage u;
  u.allocated.window = static_cast<uint64_t>(L.window_filled) * L.window.record_bytes;
  u.allocated.compressed = static_cast<uint64_t>(L.entries.count) * L.entries.record_bytes;
  u.allocated.indexer = static_cast<uint64_t>(L.index_keys.count) * L.index_keys.record_bytes;
  u.allocated.compressor_state = L.state ? L.state->size() : 0;
  auto add = [&u](const std::shared_ptr<PoolBlock>& b) {
    u.reserved += b->size();
    if (b.use_count() > 1 || b->read_only()) u.shared += b->size();
  };
  for (const Stream* s : {&L.window, &L.entries, &L.index_keys})
    for (const auto& b : s->blocks) add(b);
  if (L.state) add(L.state);
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

uint64_t SequenceCache::shared_bytes() const {
  uint64_t t = 0;
  for (int l = 0; l < n_layers(); ++l) t += usage(l).shared;
  return t;
}

// ------------------------------------------------------------------------------ checkpoints

bool SequenceCache::checkpoint_due(int64_t pos) const {
  const int64_t k = options_.checkpoint_interval;
  if (k <= 0 || pos <= 0 || pos % k != 0) return false;
  const auto it = checkpoints_.find(pos);
  return it == checkpoints_.end() || (it->second->bytes > 0 && it->second->captured < n_layers());
}

uint64_t SequenceCache::checkpoint_size() const {
  uint64_t bytes = 0;
  for (const Layer& L : layers_) {
    bytes += L.window.record_bytes * static_cast<uint64_t>(L.layout.window);
    for (const StateGeometry* g : {&L.kv_state, &L.index_state})
      if (g->present && g->overlap) bytes += 2 * static_cast<uint64_t>(g->ratio * 2 * g->dim) * 4;
  }
  return bytes;
}

void SequenceCache::capture_checkpoint(int layer, int64_t pos) {
  DSV4_CHECK(checkpoint_due(pos));
  std::shared_ptr<CheckpointData>& slot = checkpoints_[pos];
  if (slot == nullptr) {
    // First layer: size and charge the whole checkpoint. Without budget it is dropped (marked
    // by bytes == 0 and no layers); rewind then uses an earlier one.
    slot = std::make_shared<CheckpointData>();
    slot->pool = pool_;
    slot->ring.resize(layers_.size());
    slot->prev.resize(layers_.size());
    const uint64_t bytes = checkpoint_size();
    if (!pool_->charge(bytes, "rewind checkpoint").ok()) return;
    slot->bytes = bytes;
  }
  CheckpointData& cp = *slot;
  if (cp.bytes == 0) return;
  DSV4_CHECK(slot.use_count() == 1);  // not shared while being captured
  DSV4_CHECK(layer == cp.captured);   // layers in order, once each
  const Layer& L = layers_[static_cast<size_t>(layer)];
  const uint8_t* ring = L.window.blocks.front()->data();
  cp.ring[static_cast<size_t>(layer)].assign(
      ring, ring + L.window.record_bytes * static_cast<uint64_t>(L.layout.window));
  std::vector<float>& prev = cp.prev[static_cast<size_t>(layer)];
  for (const StateGeometry* g : {&L.kv_state, &L.index_state}) {
    if (!g->present || !g->overlap) continue;
    const CompressorStateView v = state_view(L, *g);
    DSV4_CHECK(pos % v.ratio == 0);
    const int64_t w = pos / v.ratio - 1;  // the previous (last complete) window
    const size_t n = static_cast<size_t>(v.ratio * v.width);
    prev.insert(prev.end(), v.kv_row(w, 0), v.kv_row(w, 0) + n);
    prev.insert(prev.end(), v.gate_row(w, 0), v.gate_row(w, 0) + n);
  }
  ++cp.captured;
}

int64_t SequenceCache::checkpoint_at_or_before(int64_t pos) const {
  for (auto it = checkpoints_.upper_bound(pos); it != checkpoints_.begin();) {
    --it;
    if (it->second->bytes > 0 && it->second->captured == n_layers()) return it->first;
  }
  return 0;
}

std::vector<int64_t> SequenceCache::checkpoint_positions() const {
  std::vector<int64_t> v;
  for (const auto& [pos, cp] : checkpoints_)
    if (cp->bytes > 0 && cp->captured == n_layers()) v.push_back(pos);
  return v;
}

void SequenceCache::restore(int64_t s) {
  DSV4_CHECK(s >= 0);
  const auto cp_it = checkpoints_.find(s);
  DSV4_CHECK(s == 0 || (cp_it != checkpoints_.end() && cp_it->second->bytes > 0 &&
                        cp_it->second->captured == n_layers()));
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& L = layers_[i];
    const int64_t r = L.layout.compress_ratio;
    for (Stream* st : {&L.entries, &L.index_keys}) {
      if (r == 0 || st->block_records == 0) continue;
      st->count = std::min(st->count, s / r);
      // A kept partial block may be shared: the next reserve() copies it before appending.
      const auto keep =
          static_cast<size_t>((st->count + st->block_records - 1) / st->block_records);
      if (st->blocks.size() > keep) st->blocks.resize(keep);
    }
    L.window_filled = std::min(s, L.layout.window);
    L.window_end = s;
    if (s == 0) {
      L.window.blocks.clear();
      continue;
    }
    const CheckpointData& cp = *cp_it->second;
    const std::vector<uint8_t>& ring = cp.ring[i];
    std::shared_ptr<PoolBlock>& rb = L.window.blocks.front();
    DSV4_CHECK(held_alone(rb) && rb->size() >= ring.size());  // rings are never shared
    std::memcpy(rb->mutable_data(), ring.data(), ring.size());
    const float* src = cp.prev[i].data();
    for (const StateGeometry* g : {&L.kv_state, &L.index_state}) {
      if (!g->present || !g->overlap) continue;
      const CompressorStateView v = state_view(L, *g);
      const int64_t w = s / v.ratio - 1;
      const size_t n = static_cast<size_t>(v.ratio * v.width);
      std::memcpy(v.kv_row(w, 0), src, n * 4);
      std::memcpy(v.gate_row(w, 0), src + n, n * 4);
      src += 2 * n;
    }
  }
  checkpoints_.erase(checkpoints_.upper_bound(s), checkpoints_.end());
}

uint64_t SequenceCache::checkpoint_bytes() const {
  uint64_t t = 0;
  for (const auto& [pos, cp] : checkpoints_) t += cp->bytes;
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
