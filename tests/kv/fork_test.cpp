// Fork with copy-on-write block sharing (kv/cache.h), without weights: pool bytes of a fork and
// of its divergent extension (exact formula), parent untouched by the child's writes and vice
// versa, both equal to fresh fills, budgets, checkpoints shared, raw record accessors, huge
// pages.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "kv/cache.h"
#include "kv/record_codec.h"
#include "kv_test_util.h"

namespace dsv4::kv {
namespace {

using testing::dump_live;
using testing::fresh_fill;
using testing::load_config;

uint64_t ceil_div(int64_t a, int64_t b) {
  return static_cast<uint64_t>((a + b - 1) / b);
}

// Pool bytes that extending a sequence from n to n + m takes when every block holding records
// is shared with another sequence: per stream, a copy of the partly filled last block (if
// records will be appended to it), plus the new blocks; a ring if there was none.
uint64_t extension_bytes(const SequenceCache& c, int64_t n, int64_t m, bool last_shared) {
  uint64_t total = 0;
  for (int l = 0; l < c.n_layers(); ++l) {
    const LayerLayout& ll = c.layout().layers[static_cast<size_t>(l)];
    if (n == 0 && n + m > 0) total += static_cast<uint64_t>(ll.window) * ll.raw_token_bytes;
    if (ll.compress_ratio == 0) continue;
    struct S {
      uint64_t rec;
      bool present;
    };
    for (S s :
         {S{ll.compressed_entry_bytes, true}, S{ll.indexer_key_bytes, ll.kind == LayerKind::csa}}) {
      if (!s.present) continue;
      const int64_t br = stream_block_records(c.options(), s.rec);
      const int64_t a = n / ll.compress_ratio, b = (n + m) / ll.compress_ratio;
      const uint64_t block = static_cast<uint64_t>(br) * s.rec;
      if (last_shared && a % br != 0 && b > a) total += block;
      total += (ceil_div(b, br) - ceil_div(a, br)) * block;
    }
  }
  return total;
}

// What fork() itself charges: each layer's ring (once taken) and compressor state.
uint64_t fork_bytes(const SequenceCache& c) {
  uint64_t total = 0;
  for (int l = 0; l < c.n_layers(); ++l) {
    const LayerLayout& ll = c.layout().layers[static_cast<size_t>(l)];
    if (c.n_tokens() > 0) total += static_cast<uint64_t>(ll.window) * ll.raw_token_bytes;
    total += ll.compressor_state_bytes;
  }
  return total;
}

struct ForkCase {
  Scheme scheme;
  int64_t block_records;
  int64_t n;
};

class ForkTest : public ::testing::TestWithParam<ForkCase> {};

// fork -> child extends by m (seed 2) -> parent extends by m (seed 3): exact pool bytes at each
// step, no cross-talk, and each sequence equals a fresh fill of its own history.
TEST_P(ForkTest, SharesBlocksAndCopiesOnlyWhatDiverges) {
  const ForkCase fc = GetParam();
  const auto cfg = load_config("long");  // SWA, CSA ratio 4, HCA ratio 128
  const CacheOptions opt{.block_records = fc.block_records, .checkpoint_interval = 0};
  constexpr int64_t m = 137;
  for (bool parent_first : {false, true}) {
    auto pool = std::make_shared<BlockPool>();
    auto parent = SequenceCache::create(cfg, fc.scheme, pool, opt);
    ASSERT_TRUE(parent.ok());
    ASSERT_TRUE(fill_synthetic(*parent, 0, fc.n, 1).ok());
    const std::vector<uint8_t> before = dump_live(*parent);
    const KvBytes parent_alloc = parent->allocated_bytes();
    const uint64_t p0 = pool->reserved();
    EXPECT_EQ(p0, parent->reserved_bytes());

    auto child = parent->fork();
    ASSERT_TRUE(child.ok()) << child.status().to_string();
    EXPECT_EQ(pool->reserved() - p0, fork_bytes(*parent)) << "fork copies rings and state only";
    EXPECT_EQ(dump_live(*child), before);
    EXPECT_EQ(child->allocated_bytes().total(), parent_alloc.total());
    EXPECT_EQ(child->reserved_bytes(), parent->reserved_bytes());  // per-sequence views agree
    uint64_t shared_records = 0;  // blocks holding entries/keys are shared by both
    for (int l = 0; l < parent->n_layers(); ++l)
      shared_records += parent->usage(l).allocated.compressed + parent->usage(l).allocated.indexer;
    if (shared_records > 0) {
      EXPECT_GT(child->shared_bytes(), 0u);
      EXPECT_EQ(child->shared_bytes(), parent->shared_bytes());
    }

    SequenceCache& first = parent_first ? *parent : *child;
    SequenceCache& second = parent_first ? *child : *parent;
    const uint64_t seed_first = parent_first ? 3 : 2, seed_second = parent_first ? 2 : 3;
    const uint64_t p1 = pool->reserved();
    ASSERT_TRUE(fill_synthetic(first, fc.n, fc.n + m, seed_first).ok());
    // The first writer copies every partial shared block; the new records need new blocks.
    EXPECT_EQ(pool->reserved() - p1, extension_bytes(first, fc.n, m, true));
    EXPECT_EQ(dump_live(second), before) << "the other sequence is unchanged";
    const uint64_t p2 = pool->reserved();
    ASSERT_TRUE(fill_synthetic(second, fc.n, fc.n + m, seed_second).ok());
    // The second writer now holds its partial blocks alone: no copies, only new blocks.
    EXPECT_EQ(pool->reserved() - p2, extension_bytes(second, fc.n, m, false));

    auto want_child = fresh_fill(cfg, fc.scheme, opt, fc.n, 1, fc.n + m, 2);
    auto want_parent = fresh_fill(cfg, fc.scheme, opt, fc.n, 1, fc.n + m, 3);
    EXPECT_EQ(dump_live(*child), dump_live(want_child));
    EXPECT_EQ(dump_live(*parent), dump_live(want_parent));
    EXPECT_EQ(child->allocated_bytes().total(), want_child.allocated_bytes().total());
    EXPECT_EQ(child->reserved_bytes(), want_child.reserved_bytes());

    // The last holder returns the bytes: dropping the parent leaves exactly the child's.
    *parent = SequenceCache();
    EXPECT_EQ(pool->reserved(), child->reserved_bytes());
    EXPECT_EQ(child->shared_bytes(), 0u);
    EXPECT_EQ(dump_live(*child), dump_live(want_child)) << "blocks outlive the parent";
  }
}

std::vector<ForkCase> fork_cases() {
  std::vector<ForkCase> v;
  for (Scheme s : {Scheme::f32, Scheme::official})
    for (int64_t br : {int64_t{5}, int64_t{16}})
      for (int64_t n : {0, 3, 4, 127, 128, 129, 300}) v.push_back({s, br, n});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cases, ForkTest, ::testing::ValuesIn(fork_cases()), [](const auto& info) {
  return std::string(scheme_name(info.param.scheme)) + "_b" +
         std::to_string(info.param.block_records) + "_n" + std::to_string(info.param.n);
});

TEST(KvFork, ChainOfForksSharesTheCommonPrefix) {
  const auto cfg = load_config("long");
  const CacheOptions opt{.block_records = 8, .checkpoint_interval = 0};
  auto pool = std::make_shared<BlockPool>();
  auto root = SequenceCache::create(cfg, Scheme::official, pool, opt);
  ASSERT_TRUE(root.ok());
  ASSERT_TRUE(fill_synthetic(*root, 0, 4 * 64, 1).ok());  // CSA: 64 entries = 8 full blocks
  const uint64_t base = pool->reserved();
  std::vector<SequenceCache> forks;
  for (int i = 0; i < 4; ++i) {
    auto f = root->fork();
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(fill_synthetic(*f, 4 * 64, 4 * 64 + 8, 10 + static_cast<uint64_t>(i)).ok());
    forks.push_back(std::move(*f));
  }
  // Each fork: its ring + state copy, plus the blocks of its 8 tokens; the prefix is stored once.
  const uint64_t per_fork = fork_bytes(*root) + extension_bytes(forks[0], 4 * 64, 8, false);
  EXPECT_EQ(pool->reserved(), base + 4 * per_fork);
  for (int i = 0; i < 4; ++i) {
    auto want = fresh_fill(cfg, Scheme::official, opt, 4 * 64, 1, 4 * 64 + 8,
                           10 + static_cast<uint64_t>(i));
    EXPECT_EQ(dump_live(forks[static_cast<size_t>(i)]), dump_live(want)) << i;
  }
}

TEST(KvFork, BudgetExhaustionIsCleanForForkAndCopyOnWrite) {
  const auto cfg = load_config("long");
  const CacheOptions opt{.block_records = 16, .checkpoint_interval = 0};
  auto probe = SequenceCache::create(cfg, Scheme::official, std::make_shared<BlockPool>(), opt);
  ASSERT_TRUE(probe.ok());
  ASSERT_TRUE(fill_synthetic(*probe, 0, 130, 1).ok());
  const uint64_t used = probe->reserved_bytes();
  const uint64_t fork_cost = fork_bytes(*probe);
  {
    auto pool = std::make_shared<BlockPool>(used + fork_cost - 1);
    auto parent = SequenceCache::create(cfg, Scheme::official, pool, opt);
    ASSERT_TRUE(parent.ok());
    ASSERT_TRUE(fill_synthetic(*parent, 0, 130, 1).ok());
    const auto before = dump_live(*parent);
    auto child = parent->fork();
    EXPECT_EQ(child.status().code(), ErrorCode::out_of_memory);
    EXPECT_EQ(pool->reserved(), used) << "a failed fork charges nothing";
    EXPECT_EQ(dump_live(*parent), before);
  }
  {
    // Room for the fork, not for the copy of a partly filled CSA entry block (130 / 4 = 32
    // entries = 2 full blocks of 16 + 0: use 134 tokens -> 33 entries, a partial third block).
    auto pool2 = std::make_shared<BlockPool>();
    auto p = SequenceCache::create(cfg, Scheme::official, pool2, opt);
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE(fill_synthetic(*p, 0, 134, 1).ok());
    const uint64_t used2 = pool2->reserved();
    auto pool = std::make_shared<BlockPool>(used2 + fork_bytes(*p) + 16 * 584 - 1);
    auto parent = SequenceCache::create(cfg, Scheme::official, pool, opt);
    ASSERT_TRUE(parent.ok());
    ASSERT_TRUE(fill_synthetic(*parent, 0, 134, 1).ok());
    auto child = parent->fork();
    ASSERT_TRUE(child.ok()) << child.status().to_string();
    const auto before = dump_live(*child);
    const uint64_t charged = pool->reserved();
    // Two CSA layers each need a copy of their shared partial entry block to append entry 33;
    // the budget holds less than one.
    Status s = child->reserve(136);
    EXPECT_EQ(s.code(), ErrorCode::out_of_memory) << s.to_string();
    EXPECT_NE(s.message().find("copy-on-write"), std::string::npos) << s.message();
    EXPECT_EQ(pool->reserved(), charged);
    EXPECT_EQ(dump_live(*child), before);
    EXPECT_EQ(dump_live(*parent), before);
  }
}

// Checkpoints are shared, not copied; restoring the child leaves the parent's alone, and a
// restored-then-refilled child equals a fresh fill.
TEST(KvFork, CheckpointsAreSharedAndRestoreIsPerSequence) {
  const auto cfg = load_config("long");
  for (Scheme scheme : {Scheme::f32, Scheme::official}) {
    const CacheOptions opt{.block_records = 16, .checkpoint_interval = 128};
    auto pool = std::make_shared<BlockPool>();
    auto parent = SequenceCache::create(cfg, scheme, pool, opt);
    ASSERT_TRUE(parent.ok());
    ASSERT_TRUE(fill_synthetic(*parent, 0, 300, 1).ok());
    ASSERT_EQ(parent->checkpoint_positions(), (std::vector<int64_t>{128, 256}));
    const auto before = dump_live(*parent);
    const uint64_t p0 = pool->reserved();
    EXPECT_EQ(p0, parent->reserved_bytes() + parent->checkpoint_bytes());
    auto child = parent->fork();
    ASSERT_TRUE(child.ok());
    EXPECT_EQ(pool->reserved() - p0, fork_bytes(*parent)) << "checkpoints are not copied";
    EXPECT_EQ(child->checkpoint_bytes(), parent->checkpoint_bytes());
    child->restore(128);
    EXPECT_EQ(child->n_tokens(), 128);
    EXPECT_EQ(child->checkpoint_positions(), (std::vector<int64_t>{128}));
    EXPECT_EQ(dump_live(*parent), before);
    EXPECT_EQ(parent->checkpoint_positions(), (std::vector<int64_t>{128, 256}));
    ASSERT_TRUE(fill_synthetic(*child, 128, 200, 5).ok());
    auto want = fresh_fill(cfg, scheme, opt, 128, 1, 200, 5);
    EXPECT_EQ(dump_live(*child), dump_live(want));
    // The parent can still rewind to its own later checkpoint.
    parent->restore(256);
    auto want_p = fresh_fill(cfg, scheme, opt, 256, 1, 256, 1);
    EXPECT_EQ(dump_live(*parent), dump_live(want_p));
    child->restore(0);
    parent->restore(0);
    EXPECT_EQ(pool->reserved(), parent->reserved_bytes() + child->reserved_bytes());
  }
}

// The in-place accessors see the same records the decoding reads return.
TEST(KvCacheRaw, RecordsAndRunsMatchDecodedReads) {
  const auto cfg = load_config("long");
  for (Scheme scheme : {Scheme::f32, Scheme::official}) {
    auto c = SequenceCache::create(cfg, scheme, std::make_shared<BlockPool>(),
                                   CacheOptions{.block_records = 7, .checkpoint_interval = 0});
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(fill_synthetic(*c, 0, 301, 4).ok());
    const bool off = scheme == Scheme::official;
    for (int l = 0; l < c->n_layers(); ++l) {
      const LayerLayout& ll = c->layout().layers[static_cast<size_t>(l)];
      EXPECT_EQ(c->window_record_bytes(l), ll.raw_token_bytes);
      EXPECT_EQ(c->entry_record_bytes(l), ll.raw_token_bytes);
      EXPECT_EQ(c->index_key_record_bytes(l), ll.indexer_key_bytes);
      std::vector<float> a(512), b(512);
      for (int64_t p = 301 - 128; p < 301; ++p) {
        c->read_window(l, p, a.data());
        const uint8_t* rec = c->window_record(l, p);
        if (off) {
          codec::decode_v4_entry(rec, 512, 64, b.data());
        } else {
          std::memcpy(b.data(), rec, 2048);
        }
        ASSERT_EQ(a, b) << l << " " << p;
      }
      // Runs tile the stream and end at block boundaries (7 records) or the stream's end.
      int64_t i = 0;
      while (i < c->n_entries(l)) {
        const uint8_t* data = nullptr;
        const int64_t n = c->entry_run(l, i, &data);
        ASSERT_GE(n, 1);
        EXPECT_EQ(n, std::min<int64_t>(7 - i % 7, c->n_entries(l) - i));
        for (int64_t j = 0; j < n; ++j) {
          ASSERT_EQ(c->entry_record(l, i + j), data + j * static_cast<int64_t>(ll.raw_token_bytes));
          c->read_entry(l, i + j, a.data());
          if (off) {
            codec::decode_v4_entry(data + j * 584, 512, 64, b.data());
          } else {
            std::memcpy(b.data(), data + j * 2048, 2048);
          }
          ASSERT_EQ(a, b);
        }
        i += n;
      }
      EXPECT_EQ(i, c->n_entries(l));
      i = 0;
      std::vector<float> ka(128), kb(128);
      while (i < c->n_index_keys(l)) {
        const uint8_t* data = nullptr;
        const int64_t n = c->index_key_run(l, i, &data);
        for (int64_t j = 0; j < n; ++j) {
          c->read_index_keys(l, i + j, 1, ka.data());
          if (off) {
            codec::decode_v4_indexer_key(data + j * 68, 128, kb.data());
          } else {
            std::memcpy(kb.data(), data + j * 512, 512);
          }
          ASSERT_EQ(ka, kb);
        }
        i += n;
      }
      EXPECT_EQ(i, c->n_index_keys(l));
    }
  }
}

TEST(KvCacheRawDeathTest, MisuseIsACheckFailure) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto cfg = load_config("long");
  auto c = SequenceCache::create(cfg, Scheme::official, std::make_shared<BlockPool>());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(fill_synthetic(*c, 0, 200, 4).ok());
  const uint8_t* d = nullptr;
  EXPECT_DEATH((void)c->entry_record(1, c->n_entries(1)), "");
  EXPECT_DEATH((void)c->entry_run(1, -1, &d), "");
  EXPECT_DEATH((void)c->window_record(0, 200), "");
  EXPECT_DEATH((void)c->window_record(0, 200 - 129), "");  // left the ring
  EXPECT_DEATH((void)c->index_key_record(2, 0), "");       // HCA layer: no keys
}

TEST(KvCacheOptions, BlockBytesGivesRecordsPerStream) {
  CacheOptions o;
  o.block_bytes = kHugePageBytes;
  EXPECT_EQ(stream_block_records(o, 584), 3591);   // 2,097,144 B
  EXPECT_EQ(stream_block_records(o, 68), 30840);   // 2,097,120 B
  EXPECT_EQ(stream_block_records(o, 2048), 1024);  // f32 rows: exactly 2 MiB
  o.block_bytes = 100;
  EXPECT_EQ(stream_block_records(o, 584), 1);  // at least one record
  const auto cfg = load_config("long");
  o.block_bytes = kMaxBlockBytes + 1;
  EXPECT_EQ(
      SequenceCache::create(cfg, Scheme::f32, std::make_shared<BlockPool>(), o).status().code(),
      ErrorCode::invalid_argument);
  CacheOptions big;
  big.block_records = 1 << 20;  // 2 GiB of f32 rows per block
  EXPECT_EQ(
      SequenceCache::create(cfg, Scheme::f32, std::make_shared<BlockPool>(), big).status().code(),
      ErrorCode::invalid_argument);
}

// The smaps entry of the mapping that contains `p` ("" when none is found).
std::string smaps_entry(const void* p) {
  std::ifstream f("/proc/self/smaps");
  std::string line, entry;
  bool in = false;
  const auto a = reinterpret_cast<uintptr_t>(p);
  while (std::getline(f, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {  // a mapping's first line
      if (in) break;
      in = a >= lo && a < hi;
    }
    if (in) entry += line + "\n";
  }
  return entry;
}

uint64_t smaps_field(const std::string& entry, const std::string& name) {
  const auto at = entry.find(name + ":");
  if (at == std::string::npos) return UINT64_MAX;
  return std::stoull(entry.substr(at + name.size() + 1));
}

// block_bytes = 2 MiB: each entry block is one 2 MiB-aligned MADV_HUGEPAGE mapping; the pool
// is charged the record bytes only (predicted == allocated stays exact).
TEST(KvCacheHugePages, TwoMiBBlocksAreAlignedAndAdvised) {
  const auto cfg = load_config("long");
  CacheOptions opt;
  opt.block_bytes = kHugePageBytes;
  opt.checkpoint_interval = 0;
  auto pool = std::make_shared<BlockPool>();
  auto c = SequenceCache::create(cfg, Scheme::official, pool, opt);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(fill_synthetic(*c, 0, 4 * 4000, 3).ok());  // CSA: 4000 entries = 2 blocks of 3591
  const uint8_t* first = nullptr;
  ASSERT_EQ(c->entry_run(1, 0, &first), 3591);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % kHugePageBytes, 0u);
  const uint8_t* second = nullptr;
  ASSERT_EQ(c->entry_run(1, 3591, &second), 4000 - 3591);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(second) % kHugePageBytes, 0u);
  EXPECT_EQ(c->usage(1).reserved,
            128 * 584 + 2 * 3591 * 584 + 30840 * 68 + c->usage(1).allocated.compressor_state);
  auto layout = make_layout(cfg, Scheme::official);
  EXPECT_EQ(c->allocated_bytes().total(), context_bytes(*layout, 4 * 4000)->total());
  EXPECT_EQ(pool->reserved(), c->reserved_bytes());

  std::ifstream mode_file("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(mode_file, mode);
  const std::string entry = smaps_entry(first);
  ASSERT_FALSE(entry.empty());
  const uint64_t anon_huge = smaps_field(entry, "AnonHugePages");
  const uint64_t eligible = smaps_field(entry, "THPeligible");
  std::printf("THP mode: %s; entry block mapping: AnonHugePages %llu kB, THPeligible %llu\n",
              mode.c_str(), static_cast<unsigned long long>(anon_huge),
              static_cast<unsigned long long>(eligible));
  if (mode.find("[never]") != std::string::npos || mode.empty())
    GTEST_SKIP() << "transparent huge pages are off on this machine";
  EXPECT_NE(entry.find(" hg"), std::string::npos) << "VmFlags lack hg (MADV_HUGEPAGE):\n" << entry;
  if (eligible != UINT64_MAX) {
    EXPECT_EQ(eligible, 1u) << entry;
  }
}

}  // namespace
}  // namespace dsv4::kv
