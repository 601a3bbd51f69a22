#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "tokenizer/utf8.h"

namespace dsv4::tokenizer {

// Open-addressing hash table (linear probing): (left id, right id) -> (rank, merged id).
struct BpeModel::MergeTable {
  struct Slot {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    int32_t new_id = 0;
  };
  static constexpr uint64_t kEmpty = ~0ull;  // ids are >= 0, so no real key has all bits set

  std::vector<Slot> slots;
  uint64_t mask = 0;
  int shift = 64;

  static uint64_t key_of(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t home(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift);
  }
  void reserve(size_t n) {
    size_t cap = 16;
    int bits = 4;
    while (cap < 2 * n + 1) {
      cap *= 2;
      ++bits;
    }
    slots.assign(cap, Slot{});
    mask = cap - 1;
    shift = 64 - bits;
  }
  // Later duplicates overwrite earlier ones, like collecting into a HashMap.
  void insert(int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
    uint64_t key = key_of(a, b);
    for (size_t i = home(key);; i = (i + 1) & mask) {
      if (slots[i].key == kEmpty || slots[i].key == key) {
        slots[i] = {key, rank, new_id};
        return;
      }
    }
  }
  const Slot* find(int32_t a, int32_t b) const {
    uint64_t key = key_of(a, b);
    for (size_t i = home(key);; i = (i + 1) & mask) {
      if (slots[i].key == key) return &slots[i];
      if (slots[i].key == kEmpty) return nullptr;
    }
  }
};

// Word cache: direct-mapped, piece bytes -> ids, for pieces of up to kMaxBytes bytes whose
// encoding has at most kMaxIds ids. An entry is 64 bytes; a colliding piece overwrites it.
struct BpeModel::Cache {
  static constexpr size_t kMaxBytes = 22;
  static constexpr size_t kMaxIds = 8;
  static constexpr size_t kSlots = size_t{1} << 15;  // 2 MiB
  struct Entry {
    uint64_t hash = 0;
    uint8_t len = 0;  // piece bytes; 0 = empty entry (pieces are never empty)
    uint8_t n_ids = 0;
    char bytes[kMaxBytes];
    int32_t ids[kMaxIds];
  };
  static_assert(sizeof(Entry) == 64);

  std::mutex mu;
  std::vector<Entry> entries = std::vector<Entry>(kSlots);

  static uint64_t hash_of(std::string_view s) {
    // 64-bit FNV-1a over the bytes, then a multiply-xorshift finaliser.
    uint64_t h = 0xcbf29ce484222325ull;
    for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    return h ^ (h >> 32);
  }
};

BpeModel::BpeModel() : merges_(std::make_unique<MergeTable>()), cache_(std::make_unique<Cache>()) {
  std::fill(std::begin(byte_id_), std::end(byte_id_), -1);
}
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

Result<BpeModel> BpeModel::build(std::vector<std::pair<std::string, int32_t>> vocab,
                                 const std::vector<std::pair<std::string, std::string>>& merges,
                                 Options options, std::string_view where) {
  BpeModel m;
  m.options_ = std::move(options);
  int32_t max_id = -1;
  for (const auto& [tok, id] : vocab) {
    if (id < 0) {
      return parse_error(fmt::format("{}.vocab: token '{}' has negative id {}", where, tok, id));
    }
    max_id = std::max(max_id, id);
  }
  m.id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  m.has_id_.assign(static_cast<size_t>(max_id + 1), false);
  m.vocab_.reserve(vocab.size());
  for (auto& [tok, id] : vocab) {
    if (m.has_id_[static_cast<size_t>(id)]) {
      return parse_error(fmt::format("{}.vocab: id {} is used by both '{}' and '{}'", where, id,
                                     m.id_to_token_[static_cast<size_t>(id)], tok));
    }
    m.has_id_[static_cast<size_t>(id)] = true;
    m.id_to_token_[static_cast<size_t>(id)] = tok;
    m.vocab_.emplace(std::move(tok), id);
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    utf8::append_code_point(ch, utf8::byte_to_code_point(static_cast<uint8_t>(b)));
    auto it = m.vocab_.find(ch);
    m.byte_id_[b] = it == m.vocab_.end() ? -1 : it->second;
  }
  if (m.options_.unk_token) {
    auto it = m.vocab_.find(*m.options_.unk_token);
    if (it == m.vocab_.end()) {
      return parse_error(
          fmt::format("{}.unk_token: '{}' is not in the vocabulary", where, *m.options_.unk_token));
    }
    m.unk_id_ = it->second;
  }

  m.merges_->reserve(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = m.vocab_.find(a);
    auto ib = m.vocab_.find(b);
    if (ia == m.vocab_.end() || ib == m.vocab_.end()) {
      return parse_error(fmt::format("{}.merges[{}]: token '{}' is not in the vocabulary", where,
                                     rank, ia == m.vocab_.end() ? a : b));
    }
    joined.assign(a).append(b);
    auto ij = m.vocab_.find(joined);
    if (ij == m.vocab_.end()) {
      return parse_error(fmt::format("{}.merges[{}]: merged token '{}' is not in the vocabulary",
                                     where, rank, joined));
    }
    m.merges_->insert(ia->second, ib->second, static_cast<uint32_t>(rank), ij->second);
  }
  m.num_merges_ = merges.size();
  return m;
}

std::optional<int32_t> BpeModel::find(std::string_view byte_level_token) const {
  auto it = vocab_.find(byte_level_token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= has_id_.size() || !has_id_[static_cast<size_t>(id)]) {
    return nullptr;
  }
  return &id_to_token_[static_cast<size_t>(id)];
}

void BpeModel::initial_symbols(std::string_view piece, Scratch& s) const {
  auto& syms = s.symbols;
  syms.clear();
  auto add = [&](int32_t id, uint32_t len) {
    auto n = static_cast<int32_t>(syms.size());
    if (n > 0) syms.back().next = n;
    syms.push_back(Scratch::Symbol{id, n - 1, -1, len});
  };
  // One symbol per byte; bytes without a vocabulary entry become unk (fused if asked) or are
  // dropped when there is no unk token, as tokenizers' BPE::merge_word does.
  std::optional<std::pair<int32_t, uint32_t>> unk;
  for (char c : piece) {
    int32_t id = byte_id_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      if (unk) {
        add(unk->first, unk->second);
        unk.reset();
      }
      add(id, 1);
    } else if (unk_id_) {
      if (unk && options_.fuse_unk) {
        unk->second += 1;
      } else {
        if (unk) add(unk->first, unk->second);
        unk = std::make_pair(*unk_id_, 1u);
      }
    }
  }
  if (unk) add(unk->first, unk->second);
}

void BpeModel::merge_heap(Scratch& s) const {
  using Symbol = Scratch::Symbol;
  using Candidate = Scratch::Candidate;
  auto& syms = s.symbols;
  // Min-heap on (rank, pos): std heap functions build a max-heap, so order by "worse".
  auto worse = [](const Candidate& x, const Candidate& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  auto& heap = s.heap;
  heap.clear();
  for (size_t i = 0; i + 1 < syms.size(); ++i) {
    if (const auto* m = merges_->find(syms[i].id, syms[i + 1].id)) {
      heap.push_back({m->rank, static_cast<uint32_t>(i), m->new_id});
    }
  }
  std::make_heap(heap.begin(), heap.end(), worse);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), worse);
    Candidate top = heap.back();
    heap.pop_back();
    Symbol& cur = syms[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    auto next_pos = static_cast<size_t>(cur.next);
    Symbol right = syms[next_pos];
    // Stale entry: the pair at this position changed since it was queued.
    const auto* m = merges_->find(cur.id, right.id);
    if (!m || m->new_id != top.new_id) continue;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    syms[next_pos].len = 0;
    if (right.next >= 0) syms[static_cast<size_t>(right.next)].prev = static_cast<int32_t>(top.pos);
    if (cur.prev >= 0) {
      const Symbol& p = syms[static_cast<size_t>(cur.prev)];
      if (const auto* pm = merges_->find(p.id, cur.id)) {
        heap.push_back({pm->rank, static_cast<uint32_t>(cur.prev), pm->new_id});
        std::push_heap(heap.begin(), heap.end(), worse);
      }
    }
    if (cur.next >= 0) {
      const Symbol& n = syms[static_cast<size_t>(cur.next)];
      if (const auto* nm = merges_->find(cur.id, n.id)) {
        heap.push_back({nm->rank, top.pos, nm->new_id});
        std::push_heap(heap.begin(), heap.end(), worse);
      }
    }
  }
  s.ids.clear();
  for (const Symbol& sym : syms) {
    if (sym.len != 0) s.ids.push_back(sym.id);
  }
}

void BpeModel::merge_scan(Scratch& s) const {
  // Same order as merge_heap: the heap always holds every current adjacent pair that has a
  // merge (stale entries are skipped), so its top is the lowest (rank, position) pair.
  constexpr uint32_t kNone = ~0u;
  auto& ids = s.ids;
  auto& pairs = s.pairs;
  ids.clear();
  for (const auto& sym : s.symbols) ids.push_back(sym.id);
  auto pair_at = [&](size_t i) -> Scratch::Candidate {
    const auto* m = merges_->find(ids[i], ids[i + 1]);
    return m ? Scratch::Candidate{m->rank, 0, m->new_id} : Scratch::Candidate{kNone, 0, -1};
  };
  pairs.clear();
  for (size_t i = 0; i + 1 < ids.size(); ++i) pairs.push_back(pair_at(i));
  while (!pairs.empty()) {
    size_t best = 0;
    for (size_t i = 1; i < pairs.size(); ++i) {
      if (pairs[i].rank < pairs[best].rank) best = i;
    }
    if (pairs[best].rank == kNone) break;
    ids[best] = pairs[best].new_id;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    // pairs[best + 1] (old right symbol with its neighbour) disappears; the pairs touching the
    // merged symbol are recomputed.
    pairs.erase(pairs.begin() + static_cast<std::ptrdiff_t>(std::min(best + 1, pairs.size() - 1)));
    if (best > 0) pairs[best - 1] = pair_at(best - 1);
    if (best + 1 < ids.size()) pairs[best] = pair_at(best);
  }
}

void BpeModel::merge_word(std::string_view piece, Scratch& s, Algorithm algorithm) const {
  initial_symbols(piece, s);
  if (algorithm == Algorithm::scan) {
    merge_scan(s);
  } else {
    merge_heap(s);
  }
}

void BpeModel::encode_piece(std::string_view piece, Scratch& scratch,
                            std::vector<int32_t>* out) const {
  if (options_.ignore_merges) {
    if (auto id = find(utf8::bytes_to_byte_level(piece))) {
      out->push_back(*id);
      return;
    }
  }
  if (piece.size() == 1 && byte_id_[static_cast<uint8_t>(piece[0])] >= 0) {
    out->push_back(byte_id_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  const bool cacheable = piece.size() <= Cache::kMaxBytes;
  uint64_t hash = 0;
  Cache::Entry* entry = nullptr;
  if (cacheable) {
    hash = Cache::hash_of(piece);
    entry = &cache_->entries[hash & (Cache::kSlots - 1)];
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (entry->hash == hash && entry->len == piece.size() &&
        std::memcmp(entry->bytes, piece.data(), piece.size()) == 0) {
      out->insert(out->end(), entry->ids, entry->ids + entry->n_ids);
      return;
    }
  }
  merge_word(piece, scratch, piece.size() <= kScanMax ? Algorithm::scan : Algorithm::heap);
  out->insert(out->end(), scratch.ids.begin(), scratch.ids.end());
  if (cacheable && scratch.ids.size() <= Cache::kMaxIds) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    entry->hash = hash;
    entry->len = static_cast<uint8_t>(piece.size());
    entry->n_ids = static_cast<uint8_t>(scratch.ids.size());
    std::memcpy(entry->bytes, piece.data(), piece.size());
    std::copy(scratch.ids.begin(), scratch.ids.end(), entry->ids);
  }
}

}  // namespace dsv4::tokenizer
