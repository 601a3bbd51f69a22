#include "model/synth.h"

#include <fmt/format.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <system_error>

#include "base/check.h"
#include "base/mmap_file.h"
#include "base/thread_pool.h"
#include "base/units.h"
#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "kernels/codecs.h"
#include "kv/embedded_configs.h"
#include "model/tensor_table.h"

namespace dsv4::model {

using formats::AttentionType;
using formats::DType;
using formats::MlpType;
using formats::ModelConfig;
namespace fs = std::filesystem;

namespace {

// ------------------------------------------------------------------ deterministic random numbers

// splitmix64 (Steele, Lea, Flood 2014): the finaliser is a good 64-bit mixer, the sequence a
// fast generator that passes BigCrush. Fully specified integer arithmetic: portable.
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

class Rng {
 public:
  explicit Rng(uint64_t state) : state_(state) {}
  uint64_t next() { return mix64(state_ += kGolden); }
  // Uniform in [0, 1) with 53 random bits (exact).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n), n < 2^32 (multiply-shift; bias < n / 2^32).
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(((next() >> 32) * n) >> 32); }

 private:
  uint64_t state_;
};

// out[i] = mean + std * z_i, z_i standard-normal-like from draw i of stream `key` (draw i is
// mix64(key + (i+1)·golden), so the loop has no carried state and vectorises): the sum s of
// the four 16-bit lanes of the draw (Irwin–Hall n = 4: mean 131070, variance (65536² − 1)/3),
// z = (2s − 262140) · 1/(2·std(s)). 2s − 262140 is exact in f32 (|.| < 2^24); the multiply and
// the explicit fma each round once, so every IEEE platform gets the same floats.
void fill_normal(float* out, size_t n, uint64_t key, float mean, float std) {
  static const float kHalfInvStd =
      static_cast<float>(0.5 / std::sqrt((65536.0 * 65536.0 - 1.0) / 3.0));
  const float k = kHalfInvStd;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = mix64(key + (i + 1) * kGolden);
    const auto s = static_cast<int32_t>((r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) +
                                        (r >> 48));
    out[i] = std::fma(std, static_cast<float>(2 * s - 4 * 65535) * k, mean);
  }
}

}  // namespace

namespace synth_detail {

// Same bytes as kernels::quantize_f4e2m1_blocks(x, n, 32, q, scales) (tested), ~10x faster on
// weight-sized inputs: that scalar kernel is sized for activation vectors and branches on
// every value (e2m1's subnormal range is half its codes). Per block: k from the kernel's
// formula; x / 2^k computed as x · 2^-k (the same real number, so the same correctly rounded
// float); then the round-to-nearest-even e2m1 magnitude as a count of thresholds passed
// (ties 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4; >= 6
// saturates to code 7) and the sign bit of x (as encode_f4e2m1 of the clamped value).
void quantize_f4e2m1_weights(const float* x, size_t n, uint8_t* q, uint8_t* scales) {
  constexpr size_t kBlock = 32;
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += kBlock, ++bi) {
    const size_t len = std::min(kBlock, n - b0);
    float amax = 0.0f;
    for (size_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[b0 + i]));
    amax = std::max(amax, kernels::kF4e2m1Max * 0x1p-126f);
    const int k = kernels::pow2_ceil_exponent(amax * (1.0f / kernels::kF4e2m1Max));
    scales[bi] = static_cast<uint8_t>(k + 127);
    const float inv = std::ldexp(1.0f, -k);
    uint8_t codes[kBlock];
    for (size_t i = 0; i < len; ++i) {
      const float v = x[b0 + i];
      const float a = std::fabs(v) * inv;
      const int mag = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
                      (a >= 3.5f) + (a > 5.0f);
      codes[i] = static_cast<uint8_t>(mag | (std::signbit(v) ? 8 : 0));
    }
    // b0 is even (blocks of 32), so block pairs never straddle a byte.
    for (size_t i = 0; i + 1 < len; i += 2)
      q[(b0 + i) / 2] = static_cast<uint8_t>(codes[i] | (codes[i + 1] << 4));
    if (len % 2) q[(b0 + len - 1) / 2] = codes[len - 1];
  }
}

}  // namespace synth_detail

namespace {

// Stream of row block `block` of tensor `name`: independent of tensor order and threads.
uint64_t stream_key(uint64_t seed, std::string_view name, uint64_t block) {
  return mix64(mix64(seed ^ mix64(fnv1a64(name))) + block * kGolden);
}

// ------------------------------------------------------------------ storage and init rules

enum class Store { bf16, f32, f8, f4, i64 };
enum class Dist { normal, uniform, tid2eid };

struct Rule {
  Store store = Store::f32;
  Dist dist = Dist::normal;
  double a = 0, b = 1;  // normal: mean a, std b; uniform: [a, b)
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// Gains of make_fixtures.py FixtureSpec: lm head logits std ~2.5; expert w1/w3 pre-activations
// ~N(0, 9) so SwiGLU's clamp (swiglu_limit) is exercised; expert w2 0.3 keeps the MoE output
// small next to the residual.
constexpr double kHeadGain = 2.5;
constexpr double kExpertInGain = 3.0;
constexpr double kExpertOutGain = 0.3;

// The official storage class and the init of each tensor (make_fixtures.py
// official_tensor_table; dtypes as tests/data/fixtures and the published V4 checkpoints).
Rule rule_for(const TensorSpec& t) {
  const std::string_view n = t.name;
  const double last = static_cast<double>(t.shape.back());
  if (t.storage == StorageClass::index) return {Store::i64, Dist::tid2eid, 0, 0};
  if (t.storage == StorageClass::linear) {
    const double fan_in = last;
    const bool routed = contains(n, ".ffn.experts."), shared = contains(n, ".ffn.shared_experts.");
    if (routed || shared) {
      const double gain = ends_with(n, ".w2.weight") ? kExpertOutGain : kExpertInGain;
      return {routed ? Store::f4 : Store::f8, Dist::normal, 0, gain / std::sqrt(fan_in)};
    }
    for (std::string_view f8 : {".attn.wq_a.weight", ".attn.wq_b.weight", ".attn.wkv.weight",
                                ".attn.wo_a.weight", ".attn.wo_b.weight", ".indexer.wq_b.weight"})
      if (ends_with(n, f8)) return {Store::f8, Dist::normal, 0, 1 / std::sqrt(fan_in)};
    if (n == "embed.weight") return {Store::bf16, Dist::normal, 0, 1};
    if (n == "head.weight") return {Store::bf16, Dist::normal, 0, kHeadGain / std::sqrt(fan_in)};
    // ffn.gate, compressor / indexer projections: BF16 in the official checkpoint.
    return {Store::bf16, Dist::normal, 0, 1 / std::sqrt(fan_in)};
  }
  if (n.rfind("hc_", 0) == 0 || contains(n, ".hc_")) {
    if (ends_with(n, "_fn")) return {Store::f32, Dist::normal, 0, 1 / std::sqrt(last)};
    if (ends_with(n, "_base")) return {Store::f32, Dist::normal, 0, 0.5};
    return {Store::f32, Dist::uniform, 0.5, 1.5};  // hc_*_scale
  }
  if (ends_with(n, ".attn_sink")) return {Store::f32, Dist::normal, 0, 1};
  if (ends_with(n, ".ape")) return {Store::f32, Dist::normal, 0, 0.5};
  if (ends_with(n, ".gate.bias")) return {Store::f32, Dist::normal, 0, 0.1};
  return {Store::bf16, Dist::normal, 1, 0.1};  // RMSNorm weights
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

constexpr int64_t kF8Block = 128;   // quantization_config.weight_block_size
constexpr int64_t kF4Block = 32;    // routed experts: one ue8m0 scale per 32 inputs
constexpr int64_t kRowBlock = 128;  // rows per random stream (= the FP8 block height)

// One tensor as stored: the weight and, for quantized linears, its scale.
struct StoredSpec {
  const TensorSpec* spec = nullptr;
  Rule rule;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;  // stored shape (packed for fp4)
  DType scale_dtype = DType::f8_e8m0;
  std::vector<int64_t> scale_shape;  // empty: no scale tensor
  uint64_t bytes = 0, scale_bytes = 0;
  uint64_t total() const { return bytes + scale_bytes; }
};

StoredSpec stored_spec(const TensorSpec& t) {
  StoredSpec s;
  s.spec = &t;
  s.rule = rule_for(t);
  const int64_t rows = t.shape.size() >= 2 ? t.shape[0] : 1;
  const int64_t cols = numel(t.shape) / std::max<int64_t>(rows, 1);
  s.shape = t.shape;
  switch (s.rule.store) {
    case Store::bf16:
      s.dtype = DType::bf16;
      s.bytes = 2 * static_cast<uint64_t>(numel(t.shape));
      break;
    case Store::f32:
      s.dtype = DType::f32;
      s.bytes = 4 * static_cast<uint64_t>(numel(t.shape));
      break;
    case Store::i64:
      s.dtype = DType::i64;
      s.bytes = 8 * static_cast<uint64_t>(numel(t.shape));
      break;
    case Store::f8:
      s.dtype = DType::f8_e4m3;
      s.bytes = static_cast<uint64_t>(rows * cols);
      s.scale_shape = {ceil_div(rows, kF8Block), ceil_div(cols, kF8Block)};
      break;
    case Store::f4:
      // I8 [rows, ceil(cols/2)], as the official checkpoint (not the newer "F4" code).
      s.dtype = DType::i8;
      s.shape = {rows, ceil_div(cols, 2)};
      s.bytes = static_cast<uint64_t>(rows * ceil_div(cols, 2));
      s.scale_shape = {rows, ceil_div(cols, kF4Block)};
      break;
  }
  if (!s.scale_shape.empty()) s.scale_bytes = static_cast<uint64_t>(numel(s.scale_shape));
  return s;
}

// ------------------------------------------------------------------ generation

// Fills `w` (and `scale`) with the stored bytes of `s`. Row blocks run in parallel; each has
// its own stream, so the bytes do not depend on the pool size.
void generate(const StoredSpec& s, const ModelConfig& cfg, uint64_t seed, ThreadPool& pool,
              std::vector<uint8_t>& w, std::vector<uint8_t>& scale) {
  const TensorSpec& t = *s.spec;
  const Rule& rule = s.rule;
  const int64_t rows = t.shape.size() >= 2 ? t.shape[0] : 1;
  const int64_t cols = numel(t.shape) / rows;
  // Every byte is written below; resize() keeps the capacity of the previous tensor.
  w.resize(s.bytes);
  scale.resize(s.scale_bytes);
  const auto n_blocks = static_cast<size_t>(ceil_div(rows, kRowBlock));
  pool.parallel_for(0, n_blocks, 1, [&](size_t begin, size_t end, int) {
    std::vector<float> buf;
    std::vector<uint16_t> half;
    std::vector<int32_t> perm;
    for (size_t b = begin; b < end; ++b) {
      Rng rng(stream_key(seed, t.name, b));
      const int64_t r0 = static_cast<int64_t>(b) * kRowBlock;
      const int64_t nr = std::min(kRowBlock, rows - r0);
      const auto n = static_cast<size_t>(nr * cols);
      if (rule.dist == Dist::tid2eid) {
        // [vocab, top_k] I64: top_k distinct experts per token (partial Fisher–Yates over an
        // identity permutation, undone afterwards so every row starts from the identity).
        const auto E = static_cast<uint32_t>(cfg.n_routed_experts);
        const auto k = static_cast<size_t>(cols);
        DSV4_CHECK(k <= E);
        if (perm.size() != E) {
          perm.resize(E);
          for (uint32_t i = 0; i < E; ++i) perm[i] = static_cast<int32_t>(i);
        }
        std::vector<uint32_t> picks(k);
        for (int64_t r = 0; r < nr; ++r) {
          for (size_t j = 0; j < k; ++j) {
            const uint32_t p = static_cast<uint32_t>(j) + rng.below(E - static_cast<uint32_t>(j));
            std::swap(perm[j], perm[p]);
            picks[j] = p;
            const int64_t v = perm[j];
            std::memcpy(w.data() + 8 * (static_cast<size_t>(r0 + r) * k + j), &v, 8);
          }
          for (size_t j = k; j-- > 0;) std::swap(perm[j], perm[picks[j]]);
        }
        continue;
      }
      buf.resize(n);
      if (rule.dist == Dist::uniform) {
        for (float& x : buf)
          x = static_cast<float>(std::fma(rule.b - rule.a, rng.uniform(), rule.a));
      } else {
        fill_normal(buf.data(), n, stream_key(seed, t.name, b), static_cast<float>(rule.a),
                    static_cast<float>(rule.b));
      }
      const size_t off = static_cast<size_t>(r0 * cols);
      switch (rule.store) {
        case Store::f32:
          std::memcpy(w.data() + 4 * off, buf.data(), 4 * n);
          break;
        case Store::bf16:
          half.resize(n);
          kernels::convert_f32_to_bf16(buf.data(), half.data(), n);
          std::memcpy(w.data() + 2 * off, half.data(), 2 * n);
          break;
        case Store::f8: {
          // One ue8m0 scale per 128x128 block: the smallest 2^e with amax / 2^e <= 448
          // (make_fixtures.py quantize_fp8_block), then e4m3 codes of x / 2^e (exact scaling).
          const int64_t n_cb = ceil_div(cols, kF8Block);
          for (int64_t cb = 0; cb < n_cb; ++cb) {
            const int64_t c0 = cb * kF8Block, c1 = std::min(cols, c0 + kF8Block);
            float amax = 0;
            for (int64_t r = 0; r < nr; ++r)
              for (int64_t c = c0; c < c1; ++c)
                amax = std::max(amax, std::fabs(buf[static_cast<size_t>(r * cols + c)]));
            int e = -127;
            if (amax > 0) {
              int ex = 0;
              const double m = std::frexp(static_cast<double>(amax) / kernels::kF8e4m3Max, &ex);
              e = std::clamp(m == 0.5 ? ex - 1 : ex, -127, 127);
            }
            scale[static_cast<size_t>(static_cast<int64_t>(b) * n_cb + cb)] =
                static_cast<uint8_t>(e + 127);
            const float inv = std::ldexp(1.0f, -e);  // exact: x·2^-e rounds like ldexp(x, -e)
            for (int64_t r = 0; r < nr; ++r)
              for (int64_t c = c0; c < c1; ++c) {
                const size_t i = static_cast<size_t>(r * cols + c);
                w[off + i] = kernels::encode_f8e4m3(buf[i] * inv);
              }
          }
          break;
        }
        case Store::f4: {
          // Per row: packed e2m1 codes + one ue8m0 scale per 32 values (reference fp4_act_quant).
          const auto pb = static_cast<size_t>(ceil_div(cols, 2));
          const auto sb = static_cast<size_t>(ceil_div(cols, kF4Block));
          for (int64_t r = 0; r < nr; ++r) {
            const auto row = static_cast<size_t>(r0 + r);
            synth_detail::quantize_f4e2m1_weights(buf.data() + static_cast<size_t>(r * cols),
                                                  static_cast<size_t>(cols), w.data() + row * pb,
                                                  scale.data() + row * sb);
          }
          break;
        }
        case Store::i64:
          DSV4_CHECK_MSG(false, "i64 tensors are tid2eid tables");
      }
    }
  });
}

// ------------------------------------------------------------------ planning

struct Shard {
  std::vector<const StoredSpec*> specs;
  uint64_t bytes = 0;
};

Status check_config(const ModelConfig& cfg) {
  if (cfg.family != formats::ModelFamily::deepseek_v4)
    return invalid_argument(
        fmt::format("{}: model_type {} is not deepseek_v4; synthetic "
                    "checkpoints exist only for DeepSeek-V4",
                    cfg.source, cfg.model_type));
  return ok_status();
}

Result<std::vector<StoredSpec>> stored_specs(const std::vector<TensorSpec>& table) {
  std::vector<StoredSpec> out;
  out.reserve(table.size());
  for (const TensorSpec& t : table) {
    for (int64_t d : t.shape)
      if (d <= 0)
        return invalid_argument(
            fmt::format("tensor '{}' would have shape {}: the config gives "
                        "it no elements",
                        t.name, formats::shape_string(t.shape)));
    out.push_back(stored_spec(t));
  }
  return out;
}

std::vector<Shard> split_shards(const std::vector<StoredSpec>& specs, uint64_t max_bytes) {
  std::vector<Shard> shards(1);
  for (const StoredSpec& s : specs) {
    if (!shards.back().specs.empty() && shards.back().bytes + s.total() > max_bytes)
      shards.emplace_back();
    shards.back().specs.push_back(&s);
    shards.back().bytes += s.total();
  }
  return shards;
}

std::string shard_file_name(size_t i, size_t n) {
  if (n == 1) return "model.safetensors";
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
}

// The files a checkpoint directory consists of (what `overwrite` deletes).
bool is_checkpoint_file(const std::string& name) {
  static const std::regex kShard(R"(model-\d+-of-\d+\.safetensors)");
  return name == "config.json" || name == "model.safetensors" || name == formats::kIndexFileName ||
         std::regex_match(name, kShard);
}

uint64_t header_estimate(const StoredSpec& s) {
  // {"<name>":{"dtype":"F8_E4M3","shape":[a,b],"data_offsets":[x,y]}, + the scale entry.
  return 2 * (s.spec->name.size() + 96);
}

}  // namespace

Result<SynthPlan> plan_synthetic_checkpoint(const ModelConfig& cfg, uint64_t max_shard_bytes) {
  DSV4_RETURN_IF_ERROR(check_config(cfg));
  if (max_shard_bytes == 0) return invalid_argument("max_shard_bytes must be positive");
  const std::vector<TensorSpec> table = tensor_table(cfg);
  DSV4_ASSIGN_OR_RETURN(std::vector<StoredSpec> specs, stored_specs(table));
  SynthPlan p;
  for (const StoredSpec& s : specs) {
    p.tensors += s.scale_shape.empty() ? 1 : 2;
    p.tensor_bytes += s.total();
    p.disk_bytes += s.total() + header_estimate(s);
  }
  const std::vector<Shard> shards = split_shards(specs, max_shard_bytes);
  for (size_t i = 0; i < shards.size(); ++i) p.files.push_back(shard_file_name(i, shards.size()));
  p.disk_bytes += 16 * 1024 + shards.size() * 64;  // config.json, index, shard prefixes
  if (shards.size() > 1)
    for (const StoredSpec& s : specs) p.disk_bytes += 2 * (s.spec->name.size() + 40);
  return p;
}

namespace {

// The tensor tables of two configs agree (names, shapes, storage classes).
bool same_table(const ModelConfig& a, const ModelConfig& b) {
  const auto ta = tensor_table(a), tb = tensor_table(b);
  if (ta.size() != tb.size()) return false;
  for (size_t i = 0; i < ta.size(); ++i)
    if (ta[i].name != tb[i].name || ta[i].shape != tb[i].shape || ta[i].storage != tb[i].storage)
      return false;
  return true;
}

// Free bytes on the file system holding `dir` (or its closest existing ancestor).
Result<uint64_t> free_bytes(const fs::path& dir) {
  fs::path p = fs::absolute(dir);
  std::error_code ec;
  while (!fs::exists(p, ec) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
  struct statvfs st {};
  if (statvfs(p.c_str(), &st) != 0)
    return io_error(fmt::format("{}: statvfs failed: {}", p.string(), std::strerror(errno)));
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

Status write_text(const fs::path& path, const std::string& text) {
  return write_file_atomic(path.string(),
                           {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

}  // namespace

Status write_synthetic_checkpoint(const ModelConfig& cfg, const std::string& out_dir,
                                  const SynthOptions& opts) {
  const auto t_start = std::chrono::steady_clock::now();
  DSV4_RETURN_IF_ERROR(check_config(cfg));
  if (out_dir.empty()) return invalid_argument("output directory is empty");
  DSV4_ASSIGN_OR_RETURN(SynthPlan plan, plan_synthetic_checkpoint(cfg, opts.max_shard_bytes));

  // config.json: the caller's text must describe the same checkpoint as `cfg`.
  std::string config_text = opts.config_json.empty() ? synth_config_json(cfg) : opts.config_json;
  {
    auto parsed = formats::parse_model_config(config_text, "config.json");
    if (!parsed.ok())
      return invalid_argument("the config.json text to write does not parse: " +
                              parsed.status().message());
    if (!same_table(*parsed, cfg))
      return invalid_argument(
          "the config.json text to write describes other tensors than the "
          "config the checkpoint is generated from");
  }

  // The output directory: absent, empty, or (with overwrite) holding an old checkpoint.
  const fs::path dir(out_dir);
  std::error_code ec;
  std::vector<fs::path> stale;
  uint64_t reclaim = 0;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec))
      return failed_precondition(fmt::format("{}: exists and is not a directory", out_dir));
    size_t entries = 0;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      ++entries;
      const std::string name = e.path().filename().string();
      if (e.is_regular_file(ec) && is_checkpoint_file(name)) {
        stale.push_back(e.path());
        reclaim += e.file_size(ec);
      }
    }
    if (ec) return io_error(fmt::format("{}: cannot list directory: {}", out_dir, ec.message()));
    if (entries > 0 && !opts.overwrite)
      return failed_precondition(fmt::format(
          "{}: directory is not empty (pass --force to replace the checkpoint files in it)",
          out_dir));
  }
  if (opts.check_disk_space) {
    DSV4_ASSIGN_OR_RETURN(uint64_t avail, free_bytes(dir));
    if (avail + reclaim < plan.disk_bytes)
      return failed_precondition(fmt::format(
          "{}: the checkpoint needs {} but only {} is free there{} (use fewer --layers / "
          "--experts or a smaller --vocab)",
          out_dir, format_bytes(static_cast<double>(plan.disk_bytes)),
          format_bytes(static_cast<double>(avail)),
          reclaim ? fmt::format(" (+{} from the files it replaces)",
                                format_bytes(static_cast<double>(reclaim)))
                  : std::string()));
  }
  for (const fs::path& p : stale) {
    fs::remove(p, ec);
    if (ec) return io_error(fmt::format("{}: cannot remove: {}", p.string(), ec.message()));
  }
  fs::create_directories(dir, ec);
  if (ec) return io_error(fmt::format("{}: cannot create directory: {}", out_dir, ec.message()));

  const std::vector<TensorSpec> table = tensor_table(cfg);
  DSV4_ASSIGN_OR_RETURN(std::vector<StoredSpec> specs, stored_specs(table));
  const std::vector<Shard> shards = split_shards(specs, opts.max_shard_bytes);
  ThreadPool pool(opts.threads);
  SynthProgress prog;
  prog.tensors_total = plan.tensors;
  prog.bytes_total = plan.tensor_bytes;
  auto report = [&] {
    if (!opts.progress) return;
    prog.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    opts.progress(prog);
  };
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  std::vector<uint8_t> w, scale;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file = shard_file_name(i, shards.size());
    formats::SafetensorsWriter writer;
    DSV4_RETURN_IF_ERROR(writer.set_metadata("format", "pt"));
    for (const StoredSpec* s : shards[i].specs) {
      generate(*s, cfg, opts.seed, pool, w, scale);
      DSV4_RETURN_IF_ERROR(writer.add(s->spec->name, s->dtype, s->shape, w));
      weight_map[s->spec->name] = file;
      ++prog.tensors_done;
      prog.bytes_done += s->bytes;
      if (!s->scale_shape.empty()) {
        const std::string sn = scale_name(s->spec->name);
        DSV4_RETURN_IF_ERROR(writer.add(sn, s->scale_dtype, s->scale_shape, scale));
        weight_map[sn] = file;
        ++prog.tensors_done;
        prog.bytes_done += s->scale_bytes;
      }
      report();
    }
    std::vector<uint8_t>().swap(w);
    std::vector<uint8_t>().swap(scale);
    DSV4_RETURN_IF_ERROR(writer.write((dir / file).string()));
  }
  if (shards.size() > 1) {
    nlohmann::ordered_json index = nlohmann::ordered_json::object();
    index["metadata"] = {{"total_size", plan.tensor_bytes}};
    index["weight_map"] = std::move(weight_map);
    DSV4_RETURN_IF_ERROR(
        write_text(dir / std::string(formats::kIndexFileName), index.dump(2) + "\n"));
  }
  if (config_text.empty() || config_text.back() != '\n') config_text += '\n';
  return write_text(dir / "config.json", config_text);
}

// ------------------------------------------------------------------ config.json serialisation

std::string synth_config_json(const ModelConfig& c) {
  using json = nlohmann::ordered_json;
  json j = json::object();
  j["architectures"] = json::array({"DeepseekV4ForCausalLM"});
  j["model_type"] = "deepseek_v4";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["q_lora_rank"] = c.q_lora_rank;
  j["o_groups"] = c.o_groups;
  j["o_lora_rank"] = c.o_lora_rank;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["compress_rope_theta"] = c.compress_rope_theta;
  if (c.rope_scaling.present()) {
    json rs = json::object();
    rs["type"] = c.rope_scaling.type;
    rs["factor"] = c.rope_scaling.factor;
    rs["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    rs["beta_fast"] = c.rope_scaling.beta_fast;
    rs["beta_slow"] = c.rope_scaling.beta_slow;
    rs["mscale"] = c.rope_scaling.mscale;
    rs["mscale_all_dim"] = c.rope_scaling.mscale_all_dim;
    if (c.rope_scaling.attention_factor) rs["attention_factor"] = *c.rope_scaling.attention_factor;
    j["rope_scaling"] = std::move(rs);
  }
  if (c.bos_token_id)
    j["bos_token_id"] = *c.bos_token_id;
  else
    j["bos_token_id"] = nullptr;
  if (c.eos_token_id.size() == 1)
    j["eos_token_id"] = c.eos_token_id[0];
  else if (c.eos_token_id.empty())
    j["eos_token_id"] = nullptr;
  else
    j["eos_token_id"] = c.eos_token_id;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["n_routed_experts"] = c.n_routed_experts;
  j["n_shared_experts"] = c.n_shared_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["scoring_func"] = c.scoring_func;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["sliding_window"] = c.sliding_window;
  j["index_n_heads"] = c.index_n_heads;
  j["index_head_dim"] = c.index_head_dim;
  j["index_topk"] = c.index_topk;
  j["hc_mult"] = c.hc_mult;
  j["hc_sinkhorn_iters"] = c.hc_sinkhorn_iters;
  j["hc_eps"] = c.hc_eps;
  j["swiglu_limit"] = c.swiglu_limit;
  // Attention schedule: DeepSeek's compress_ratios when the rates are the published 4 / 128
  // (the only values that spelling can express), else transformers' layer_types + compress_rates.
  std::vector<AttentionType> all = c.layer_types;
  all.insert(all.end(), c.mtp_layer_types.begin(), c.mtp_layer_types.end());
  if (c.compress_rate_csa == 4 && c.compress_rate_hca == 128) {
    json ratios = json::array();
    for (AttentionType t : all)
      ratios.push_back(t == AttentionType::sliding_attention             ? 0
                       : t == AttentionType::compressed_sparse_attention ? 4
                                                                         : 128);
    j["compress_ratios"] = std::move(ratios);
  } else {
    json types = json::array();
    for (AttentionType t : all) types.push_back(std::string(formats::attention_type_name(t)));
    j["layer_types"] = std::move(types);
    j["compress_rates"] = {{"compressed_sparse_attention", c.compress_rate_csa},
                           {"heavily_compressed_attention", c.compress_rate_hca}};
  }
  // MoE schedule: num_hash_layers when the hash layers are a prefix (the published form).
  bool prefix = true;
  for (size_t i = 0; i < c.mlp_layer_types.size(); ++i)
    prefix = prefix && (c.mlp_layer_types[i] == MlpType::hash_moe) ==
                           (static_cast<int64_t>(i) < c.num_hash_layers);
  j["num_hash_layers"] = c.num_hash_layers;
  if (!prefix) {
    j.erase("num_hash_layers");
    json types = json::array();
    for (MlpType t : c.mlp_layer_types) types.push_back(std::string(formats::mlp_type_name(t)));
    j["mlp_layer_types"] = std::move(types);
  }
  const auto& q = c.quantization_config;
  if (q.present) {
    json qj = json::object();
    qj["activation_scheme"] = q.activation_scheme;
    qj["fmt"] = q.fmt;
    qj["quant_method"] = q.quant_method;
    qj["scale_fmt"] = q.scale_fmt;
    qj["weight_block_size"] = q.weight_block_size;
    j["quantization_config"] = std::move(qj);
  }
  if (!q.expert_dtype.empty()) j["expert_dtype"] = q.expert_dtype;
  j["torch_dtype"] = "bfloat16";
  return j.dump(2) + "\n";
}

// ------------------------------------------------------------------ presets and overrides

std::vector<std::string_view> synth_preset_names() {
  return {"tiny", "flash", "pro"};
}

namespace {
using ojson = nlohmann::ordered_json;

Result<ojson> parse_object(std::string_view text, std::string_view source) {
  ojson j = ojson::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return parse_error(fmt::format("{}: not valid JSON", source));
  if (!j.is_object()) return parse_error(fmt::format("{}: the top level is not an object", source));
  return j;
}

// The per-layer list `key` cut to its first n main-layer entries, keeping the entries past
// `layers` (one per MTP layer).
void truncate_layer_list(ojson& j, const char* key, int64_t layers, int64_t n) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return;
  ojson out = ojson::array();
  for (size_t i = 0; i < it->size(); ++i)
    if (static_cast<int64_t>(i) < n || static_cast<int64_t>(i) >= layers) out.push_back((*it)[i]);
  *it = std::move(out);
}
}  // namespace

Result<std::string> synth_preset_json(std::string_view name) {
  if (name == "flash" || name == "pro") {
    const std::string_view want = name == "flash" ? kv::kDeepSeekV4Flash : kv::kDeepSeekV4Pro;
    for (const kv::EmbeddedConfig& c : kv::embedded_configs())
      if (c.name == want) return std::string(c.json);
    return internal_error(fmt::format("embedded config {} is missing", want));
  }
  if (name == "tiny") {
    // tests/data/fixtures/tiny = the published V4-Flash config with the overrides of
    // make_fixtures.py FIXTURES["tiny"].
    DSV4_ASSIGN_OR_RETURN(std::string flash, synth_preset_json("flash"));
    DSV4_ASSIGN_OR_RETURN(ojson j, parse_object(flash, "flash preset"));
    const ojson patch = {{"vocab_size", 256},
                         {"hidden_size", 128},
                         {"num_hidden_layers", 2},
                         {"compress_ratios", {0, 4}},
                         {"num_hash_layers", 1},
                         {"num_attention_heads", 2},
                         {"o_groups", 2},
                         {"o_lora_rank", 128},
                         {"q_lora_rank", 128},
                         {"index_n_heads", 16},
                         {"index_topk", 4},
                         {"n_routed_experts", 4},
                         {"num_experts_per_tok", 2},
                         {"moe_intermediate_size", 128},
                         {"num_nextn_predict_layers", 0}};
    for (const auto& [k, v] : patch.items()) j[k] = v;
    return j.dump(2) + "\n";
  }
  std::string names;
  for (std::string_view n : synth_preset_names())
    names += (names.empty() ? "" : ", ") + std::string(n);
  return not_found(fmt::format("no preset named '{}' (presets: {})", name, names));
}

Result<std::string> apply_synth_overrides(std::string_view config_json, const SynthOverrides& ov,
                                          std::string_view source_name) {
  DSV4_ASSIGN_OR_RETURN(ModelConfig base, formats::parse_model_config(config_json, source_name));
  DSV4_RETURN_IF_ERROR(check_config(base));
  if (!ov.layers && !ov.experts && !ov.vocab) return std::string(config_json);  // verbatim
  DSV4_ASSIGN_OR_RETURN(ojson j, parse_object(config_json, source_name));
  if (ov.layers) {
    const int64_t n = *ov.layers;
    if (n < 1) return invalid_argument(fmt::format("--layers: {} is not a layer count (>= 1)", n));
    bool has_lists = false;
    for (const char* key : {"compress_ratios", "layer_types", "mlp_layer_types"})
      has_lists = has_lists || (j.contains(key) && j[key].is_array());
    if (n > base.num_hidden_layers && has_lists)
      return invalid_argument(fmt::format(
          "--layers: {} is more than the {} layers of {} (its per-layer schedule cannot be "
          "extended)",
          n, base.num_hidden_layers, source_name));
    for (const char* key : {"compress_ratios", "layer_types", "mlp_layer_types"})
      truncate_layer_list(j, key, base.num_hidden_layers, n);
    if (j.contains("num_hash_layers") && j["num_hash_layers"].is_number_integer())
      j["num_hash_layers"] = std::min<int64_t>(j["num_hash_layers"].get<int64_t>(), n);
    j["num_hidden_layers"] = n;
  }
  if (ov.experts) {
    const int64_t e = *ov.experts;
    if (e < base.num_experts_per_tok)
      return invalid_argument(fmt::format(
          "--experts: {} is fewer than num_experts_per_tok ({}): every token routes to that "
          "many distinct experts",
          e, base.num_experts_per_tok));
    j["n_routed_experts"] = e;
  }
  if (ov.vocab) {
    const int64_t v = *ov.vocab;
    int64_t max_id = base.bos_token_id.value_or(0);
    for (int64_t id : base.eos_token_id) max_id = std::max(max_id, id);
    if (v <= max_id)
      return invalid_argument(fmt::format(
          "--vocab: {} does not include the bos/eos token ids (largest {}); expected > {}", v,
          max_id, max_id));
    j["vocab_size"] = v;
  }
  std::string text = j.dump(2) + "\n";
  auto parsed = formats::parse_model_config(text, source_name);
  if (!parsed.ok())
    return invalid_argument(
        fmt::format("the overridden config is invalid: {}", parsed.status().message()));
  return text;
}

}  // namespace dsv4::model
