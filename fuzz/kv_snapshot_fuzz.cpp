// libFuzzer target for the KV snapshot reader (kv/snapshot.h): arbitrary bytes must give a
// loaded cache or an error with a message — never a crash, an out-of-bounds read, a huge
// allocation or a sanitizer report. Each input is validated by read_snapshot_info (the
// model-independent walk, also taken for store manifests) and decoded, twice: with checksums
// verified (what every caller does) and without (so mutations reach the structural checks
// behind the checksums). A loaded cache is then used as the model would use it: every live record
// read, re-encoded and decoded again, forked and extended (copy-on-write), restored to each
// checkpoint and extended again.
// Config and identity: fuzz/kv_snapshot_fuzz_config.h; seeds: fuzz/corpus/kv_snapshot/
// (regenerate with DSV4_WRITE_FUZZ_SEEDS=1 build/.../kv_test --gtest_filter='*FuzzSeed*').
// Run: build/fuzz/fuzz/kv_snapshot_fuzz fuzz/corpus/kv_snapshot -max_total_time=120
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kv/cache.h"
#include "kv/snapshot.h"
#include "kv_snapshot_fuzz_config.h"

namespace {

using namespace dsv4;
using namespace dsv4::kv;

const formats::ModelConfig& config() {
  static const formats::ModelConfig cfg = [] {
    auto c = formats::parse_model_config(fuzzing::kSnapshotFuzzConfig, "kv_snapshot_fuzz");
    if (!c.ok()) __builtin_trap();
    return *c;
  }();
  return cfg;
}

volatile uint8_t g_sink;

void read_everything(SequenceCache& c) {
  uint8_t acc = 0;
  const int64_t n = c.n_tokens();
  std::vector<float> row(static_cast<size_t>(2 * (c.head_dim() + c.index_head_dim())));
  for (int l = 0; l < c.n_layers(); ++l) {
    const LayerLayout& ll = c.layout().layers[static_cast<size_t>(l)];
    for (int64_t p = n - std::min(n, ll.window); p < n; ++p) {
      acc ^= c.window_record(l, p)[c.window_record_bytes(l) - 1];
      c.read_window(l, p, row.data());
    }
    for (int64_t i = 0; i < c.n_entries(l);) {
      const uint8_t* d = nullptr;
      const int64_t run = c.entry_run(l, i, &d);
      acc ^= d[static_cast<uint64_t>(run) * c.entry_record_bytes(l) - 1];
      c.read_entry(l, i, row.data());
      i += run;
    }
    for (int64_t i = 0; i < c.n_index_keys(l);) {
      const uint8_t* d = nullptr;
      const int64_t run = c.index_key_run(l, i, &d);
      acc ^= d[static_cast<uint64_t>(run) * c.index_key_record_bytes(l) - 1];
      c.read_index_keys(l, i, 1, row.data());
      i += run;
    }
  }
  g_sink = acc;
}

void exercise(LoadedSnapshot& s) {
  SequenceCache& c = s.cache;
  if (c.n_tokens() != s.info.n_tokens || static_cast<int64_t>(s.tokens.size()) != c.n_tokens())
    __builtin_trap();
  read_everything(c);
  // Whatever loads re-encodes, and the re-encoding loads.
  auto img = encode_snapshot(c, s.tokens, fuzzing::snapshot_fuzz_identity());
  if (!img.ok()) __builtin_trap();
  auto again = decode_snapshot(*img, "re-encoded", config(), fuzzing::snapshot_fuzz_identity(),
                               c.pool(), c.options());
  if (!again.ok()) __builtin_trap();
  // Fork and extend both (copy-on-write of shared partial blocks).
  auto f = c.fork();
  if (f.ok()) {
    (void)fill_synthetic(*f, f->n_tokens(), f->n_tokens() + 7, 1);
    read_everything(*f);
  }
  (void)fill_synthetic(c, c.n_tokens(), c.n_tokens() + 5, 2);
  read_everything(c);
  // Rewind to every checkpoint that came from the file.
  for (int64_t p : again->cache.checkpoint_positions()) {
    auto r = again->cache.fork();
    if (!r.ok()) continue;
    r->restore(p);
    if (r->n_tokens() != p) __builtin_trap();
    read_everything(*r);
    (void)fill_synthetic(*r, p, p + 3, 3);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> image(data, size);
  for (bool verify : {true, false}) {
    // The model-independent structure walk (the path store manifests and garbage collection
    // take): every block reference it returns lies inside the limits the header allows.
    auto info = read_snapshot_info(image, "fuzz.dsv4kv", verify);
    if (!info.ok() && info.status().message().empty()) __builtin_trap();
    if (info.ok() && info->file_bytes != size) __builtin_trap();
    // A budget bounds what a hostile header could make the loader (or a fill) allocate.
    auto pool = std::make_shared<BlockPool>(uint64_t{64} << 20);
    const CacheOptions opt{.block_records = 3, .checkpoint_interval = 8};
    auto s = decode_snapshot(image, "fuzz.dsv4kv", config(), fuzzing::snapshot_fuzz_identity(),
                             pool, opt, {.mode = SnapshotMode::copy, .verify_checksums = verify});
    if (!s.ok()) {
      if (s.status().message().empty()) __builtin_trap();  // every error says what is wrong
      continue;
    }
    exercise(*s);
  }
  return 0;
}
