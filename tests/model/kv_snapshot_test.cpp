// KV snapshots and forks with the fixture weights (model/kv_snapshot.h): snapshot -> load ->
// continue == the uninterrupted run, bit for bit (logits), at n around the compression and
// window boundaries, f32 and official storage, mapped and copied loads; rewind after a load;
// prefix snapshots; fork -> both continue == fresh runs with the prefix stored once; another
// model's snapshot is refused; the model identity ignores where the model lives and sees
// edits of its header or weight edges.
#include "model/kv_snapshot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "../temp_dir.h"
#include "base/mmap_file.h"
#include "fixtures.h"

namespace dsv4::model {
namespace {

using testing::fixture_dir;
using testing::load_model;
using testing::some_tokens;

namespace fs = std::filesystem;

// A temporary directory removed at the end of the test.
class TempDir : public ::dsv4::testing::TempDir {
 public:
  TempDir() : ::dsv4::testing::TempDir("dsv4_kvsnap_model") {}
};

const kv::CacheOptions kOpt{.block_records = 64, .checkpoint_interval = 128};

// The logits of tokens[from, end) continuing `st`, compared bit for bit with want[from, end)
// (end 0: all the tokens).
void expect_continues_exactly(const Model& model, SequenceState& st,
                              const std::vector<int32_t>& tokens, const std::vector<float>& want,
                              ThreadPool& pool, const std::string& what, size_t end = 0) {
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  const auto from = static_cast<size_t>(st.n_tokens);
  if (end == 0) end = tokens.size();
  ASSERT_EQ(st.tokens,
            std::vector<int32_t>(tokens.begin(), tokens.begin() + static_cast<long>(from)))
      << what;
  std::vector<float> got((end - from) * V);
  ASSERT_TRUE(model.forward(std::span(tokens).subspan(from, end - from), st, pool, got.data()).ok())
      << what;
  ASSERT_TRUE(std::equal(got.begin(), got.end(), want.begin() + static_cast<long>(from * V)))
      << what << ": logits after the load differ from the uninterrupted run";
}

// The snapshots of one uninterrupted run at several n, each loaded and continued to the end.
TEST(KvSnapshotModel, SnapshotLoadContinueEqualsUninterruptedRun) {
  auto model = load_model(fixture_dir("long"));  // SWA, CSA (ratio 4), HCA (ratio 128)
  ASSERT_NE(model, nullptr);
  const size_t V = static_cast<size_t>(model->config().vocab_size);
  const auto tokens = some_tokens(*model, 330, 5);
  const std::vector<int64_t> cuts = {0, 3, 4, 127, 128, 129, 300};
  ThreadPool pool(2);
  TempDir dir;
  for (kv::Scheme scheme : {kv::Scheme::f32, kv::Scheme::official}) {
    const std::string sname(kv::scheme_name(scheme));
    auto fresh = model->new_sequence(scheme, nullptr, kOpt);
    ASSERT_TRUE(fresh.ok());
    std::vector<float> want(tokens.size() * V);
    ASSERT_TRUE(model->forward(tokens, *fresh, pool, want.data()).ok());

    auto run = model->new_sequence(scheme, nullptr, kOpt);
    ASSERT_TRUE(run.ok());
    for (int64_t n : cuts) {
      const auto at = static_cast<size_t>(run->n_tokens);
      ASSERT_TRUE(model
                      ->forward(std::span(tokens).subspan(at, static_cast<size_t>(n) - at), *run,
                                pool, nullptr, false)
                      .ok());
      ASSERT_TRUE(save_kv_snapshot(*model, *run, dir.file(sname + std::to_string(n))).ok());
    }
    for (size_t i = 0; i < cuts.size(); ++i) {
      const int64_t n = cuts[i];
      const auto mode = i % 2 == 0 ? kv::SnapshotMode::map : kv::SnapshotMode::copy;
      const std::string what = sname + " n=" + std::to_string(n) +
                               (mode == kv::SnapshotMode::map ? " mapped" : " copied");
      auto pool_kv = std::make_shared<kv::BlockPool>();
      auto st = load_kv_snapshot(*model, dir.file(sname + std::to_string(n)), pool_kv, kOpt,
                                 {.mode = mode});
      ASSERT_TRUE(st.ok()) << what << ": " << st.status().to_string();
      EXPECT_EQ(st->n_tokens, n);
      EXPECT_EQ(st->kv.allocated_bytes().total(),
                kv::context_bytes(st->kv.layout(), static_cast<uint64_t>(n))->total());
      expect_continues_exactly(*model, *st, tokens, want, pool, what);
      EXPECT_EQ(st->kv.allocated_bytes().total(), fresh->kv.allocated_bytes().total()) << what;
      EXPECT_EQ(pool_kv->reserved(), st->kv.reserved_bytes() + st->kv.checkpoint_bytes());
    }
  }
}

// A loaded state rewinds like the saved one: its checkpoints came along (restore + replay from
// 128), and a rewind before the first checkpoint replays from 0.
TEST(KvSnapshotModel, RewindAfterLoadAndPrefixSnapshots) {
  auto model = load_model(fixture_dir("long"));
  ASSERT_NE(model, nullptr);
  const size_t V = static_cast<size_t>(model->config().vocab_size);
  const auto tokens = some_tokens(*model, 310, 6);
  ThreadPool pool(2);
  TempDir dir;
  for (kv::Scheme scheme : {kv::Scheme::f32, kv::Scheme::official}) {
    auto fresh = model->new_sequence(scheme, nullptr, kOpt);
    ASSERT_TRUE(fresh.ok());
    std::vector<float> want(tokens.size() * V);
    ASSERT_TRUE(model->forward(tokens, *fresh, pool, want.data()).ok());
    auto run = model->new_sequence(scheme, nullptr, kOpt);
    ASSERT_TRUE(run.ok());
    ASSERT_TRUE(model->forward(std::span(tokens).first(300), *run, pool, nullptr, false).ok());
    const std::string path = dir.file("s300");
    ASSERT_TRUE(save_kv_snapshot(*model, *run, path).ok());
    for (int64_t p : {129, 3}) {
      auto st = load_kv_snapshot(*model, path, nullptr, kOpt);
      ASSERT_TRUE(st.ok()) << st.status().to_string();
      EXPECT_EQ(st->kv.checkpoint_positions(), (std::vector<int64_t>{128, 256}));
      ASSERT_TRUE(model->rewind(*st, p, pool).ok());
      expect_continues_exactly(*model, *st, tokens, want, pool,
                               "rewind to " + std::to_string(p) + " after load");
    }
    // Prefix snapshots: the state of the first 129 (and 0) tokens, from the 300-token run,
    // which stays as it was.
    for (int64_t prefix : {129, 0}) {
      const std::string ppath = dir.file("prefix" + std::to_string(prefix));
      ASSERT_TRUE(save_kv_snapshot_prefix(*model, *run, prefix, pool, ppath).ok());
      auto st = load_kv_snapshot(*model, ppath, nullptr, kOpt);
      ASSERT_TRUE(st.ok()) << st.status().to_string();
      EXPECT_EQ(st->n_tokens, prefix);
      expect_continues_exactly(*model, *st, tokens, want, pool, "prefix " + std::to_string(prefix));
    }
    EXPECT_EQ(save_kv_snapshot_prefix(*model, *run, 301, pool, dir.file("x")).code(),
              ErrorCode::invalid_argument);
    expect_continues_exactly(*model, *run, tokens, want, pool, "the original after prefix saves");
  }
}

// fork -> parent and child continue with different tokens: each equals a fresh run of its own
// tokens, and the shared prefix's blocks are held once in memory — and stored once in a
// snapshot store, from which both load and continue exactly.
TEST(KvSnapshotModel, ForkThenDivergeEqualsFreshRuns) {
  auto model = load_model(fixture_dir("long"));
  ASSERT_NE(model, nullptr);
  const size_t V = static_cast<size_t>(model->config().vocab_size);
  const auto prefix = some_tokens(*model, 201, 7);
  const auto b = some_tokens(*model, 50, 8), c = some_tokens(*model, 50, 9);
  const auto tail = some_tokens(*model, 16, 10);
  std::vector<int32_t> ab = prefix, ac = prefix;
  ab.insert(ab.end(), b.begin(), b.end());
  ac.insert(ac.end(), c.begin(), c.end());
  const size_t branch_end = ab.size();  // 251: the branches; then 16 more after a store load
  ab.insert(ab.end(), tail.begin(), tail.end());
  ac.insert(ac.end(), tail.begin(), tail.end());
  ThreadPool pool(2);
  TempDir dir;
  for (kv::Scheme scheme : {kv::Scheme::f32, kv::Scheme::official}) {
    std::vector<float> want_b(ab.size() * V), want_c(ac.size() * V);
    auto fb = model->new_sequence(scheme, nullptr, kOpt);
    auto fc = model->new_sequence(scheme, nullptr, kOpt);
    ASSERT_TRUE(fb.ok() && fc.ok());
    ASSERT_TRUE(model->forward(std::span(ab).first(branch_end), *fb, pool, want_b.data()).ok());
    ASSERT_TRUE(model->forward(std::span(ac).first(branch_end), *fc, pool, want_c.data()).ok());

    auto kvpool = std::make_shared<kv::BlockPool>();
    auto parent = model->new_sequence(scheme, kvpool, kOpt);
    ASSERT_TRUE(parent.ok());
    ASSERT_TRUE(model->forward(prefix, *parent, pool, nullptr, false).ok());
    auto child = fork_sequence(*parent);
    ASSERT_TRUE(child.ok()) << child.status().to_string();
    EXPECT_EQ(child->tokens, parent->tokens);
    expect_continues_exactly(*model, *child, ac, want_c, pool, "child", branch_end);
    expect_continues_exactly(*model, *parent, ab, want_b, pool, "parent", branch_end);
    // Each holds what a fresh run holds; together they take the pool once for shared blocks.
    EXPECT_EQ(child->kv.reserved_bytes(), fc->kv.reserved_bytes());
    EXPECT_EQ(parent->kv.reserved_bytes(), fb->kv.reserved_bytes());
    const uint64_t shared = child->kv.shared_bytes();
    EXPECT_GT(shared, 0u);
    EXPECT_EQ(shared, parent->kv.shared_bytes());
    // One checkpoint (128) captured before the fork, shared: counted once.
    EXPECT_EQ(child->kv.checkpoint_positions(), (std::vector<int64_t>{128}));
    EXPECT_EQ(kvpool->reserved(), parent->kv.reserved_bytes() + child->kv.reserved_bytes() -
                                      shared + parent->kv.checkpoint_bytes());

    // Both branches in one store: the prefix's full blocks are written once; each loads and
    // continues exactly (the fresh runs continue alike for the reference logits).
    ASSERT_TRUE(
        model->forward(std::span(ab).subspan(branch_end), *fb, pool, want_b.data() + branch_end * V)
            .ok());
    ASSERT_TRUE(
        model->forward(std::span(ac).subspan(branch_end), *fc, pool, want_c.data() + branch_end * V)
            .ok());
    auto store = kv::SnapshotStore::open(dir.file(std::string(kv::scheme_name(scheme))));
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE(save_kv_snapshot(*model, *parent, *store, "b").ok());
    const uint64_t after_b = store->usage()->blocks;
    ASSERT_TRUE(save_kv_snapshot(*model, *child, *store, "c").ok());
    const uint64_t after_c = store->usage()->blocks;
    EXPECT_LT(after_c - after_b, after_b) << "c reuses b's prefix blocks";
    for (auto [name, toks, want] : {std::tuple{"b", &ab, &want_b}, {"c", &ac, &want_c}}) {
      auto st = load_kv_snapshot(*model, *store, name, nullptr, kOpt);
      ASSERT_TRUE(st.ok()) << st.status().to_string();
      expect_continues_exactly(*model, *st, *toks, *want, pool,
                               std::string("store load of ") + name);
    }
  }
}

TEST(KvSnapshotModel, AnotherModelsSnapshotIsRefused) {
  auto long_model = load_model(fixture_dir("long"));
  auto tiny = load_model(fixture_dir("tiny"));
  auto wide = load_model(fixture_dir("wide"));
  ASSERT_TRUE(long_model && tiny && wide);
  ThreadPool pool(1);
  auto st = long_model->new_sequence(kv::Scheme::official);
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(long_model->forward(some_tokens(*long_model, 20, 1), *st, pool, nullptr, false).ok());
  TempDir dir;
  const std::string path = dir.file("long.dsv4kv");
  ASSERT_TRUE(save_kv_snapshot(*long_model, *st, path).ok());
  const kv::ModelIdentity lid = model_identity(*long_model);
  for (const Model* other : {tiny.get(), wide.get()}) {
    auto s = load_kv_snapshot(*other, path);
    ASSERT_EQ(s.status().code(), ErrorCode::failed_precondition) << s.status().to_string();
    const kv::ModelIdentity oid = model_identity(*other);
    char want[64];
    std::snprintf(want, sizeof want, "0x%016llx", static_cast<unsigned long long>(oid.config_hash));
    EXPECT_NE(s.status().message().find(want), std::string::npos) << s.status().message();
    std::snprintf(want, sizeof want, "0x%016llx",
                  static_cast<unsigned long long>(lid.weights_hash));
    EXPECT_NE(s.status().message().find(want), std::string::npos) << s.status().message();
  }
  // The same model loaded again (another Model object) accepts it.
  auto again = load_model(fixture_dir("long"));
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(load_kv_snapshot(*again, path).ok());
}

// The identity does not depend on the directory; it changes with the config, the safetensors
// header and the first/last 4 KiB of tensor data.
TEST(KvSnapshotModel, IdentityFollowsContentNotLocation) {
  TempDir dir;
  const fs::path src = fixture_dir("long");
  auto copy_to = [&](const std::string& name) {
    const fs::path d = dir.path() / name;
    fs::create_directories(d);
    fs::copy_file(src / "config.json", d / "config.json");
    fs::copy_file(src / "model.safetensors", d / "model.safetensors");
    return d;
  };
  auto original = load_model(src.string());
  ASSERT_NE(original, nullptr);
  const kv::ModelIdentity id = model_identity(*original);
  EXPECT_EQ(id.model_type, "deepseek_v4");

  const fs::path same = copy_to("same");
  auto m_same = load_model(same.string());
  ASSERT_NE(m_same, nullptr);
  const kv::ModelIdentity id_same = model_identity(*m_same);
  EXPECT_EQ(id_same.config_hash, id.config_hash);
  EXPECT_EQ(id_same.weights_hash, id.weights_hash);

  // One weight byte near the end of the tensor data (inside the fingerprint's last 4 KiB; the
  // last tensor of this file is packed FP4 experts, so any byte value loads).
  const fs::path edited = copy_to("edited");
  {
    auto bytes = read_file((edited / "model.safetensors").string());
    ASSERT_TRUE(bytes.ok());
    std::string b = *bytes;
    b[b.size() - 100] = static_cast<char>(b[b.size() - 100] ^ 0x10);
    ASSERT_TRUE(write_file_atomic((edited / "model.safetensors").string(),
                                  std::span(reinterpret_cast<const uint8_t*>(b.data()), b.size()))
                    .ok());
  }
  auto m_edit = load_model(edited.string());
  ASSERT_NE(m_edit, nullptr);
  EXPECT_EQ(model_identity(*m_edit).config_hash, id.config_hash);
  EXPECT_NE(model_identity(*m_edit).weights_hash, id.weights_hash);

  // A config value that changes the computation (not the layout).
  formats::ModelConfig cfg = original->config();
  cfg.rms_norm_eps *= 2;
  EXPECT_NE(config_hash(cfg), id.config_hash);
  cfg = original->config();
  cfg.source = "/elsewhere/config.json";
  EXPECT_EQ(config_hash(cfg), id.config_hash);
}

}  // namespace
}  // namespace dsv4::model
