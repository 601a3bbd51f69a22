// tools/dsv4/bench_env.cpp — run facts and floors of `dsv4 bench` (bench_env.h).
#include "bench_env.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/cpu_features.h"
#include "base/timer.h"
#include "kernels/codecs.h"
#include "kernels/dispatch.h"
#include "kernels/indexer.h"
#include "kernels/probe.h"

namespace dsv4::cli::bench {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

// Probe results land here, so the compiler must compute them.
volatile uint64_t g_sink = 0;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

// stdout of a shell command (empty on failure). Used only for `git`, with fixed arguments.
std::string command_output(const std::string& cmd) {
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return "";
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  const int rc = pclose(f);
  return rc == 0 ? trim(out) : "";
}

// The repository this file was compiled from (CMake passes absolute source paths), if the
// binary still runs next to it: tools/dsv4/bench_env.cpp -> the directory three levels up.
std::string source_commit() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path root = fs::path(__FILE__).parent_path().parent_path().parent_path();
  if (root.empty() || !fs::exists(root / ".git", ec)) return "unknown";
  if (root.string().find('\'') != std::string::npos) return "unknown";
  std::string head = command_output(
      fmt::format("git -C '{}' rev-parse --short=12 HEAD 2>/dev/null", root.string()));
  if (head.empty()) return "unknown";
  const std::string dirty = command_output(
      fmt::format("git -C '{}' status --porcelain 2>/dev/null | head -c 1", root.string()));
  return dirty.empty() ? head : head + "+dirty";
}

std::string compiler_text() {
#if defined(__clang__)
  return fmt::format("clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  return fmt::format("gcc {}", __VERSION__);
#else
  return "unknown";
#endif
}

// Build facts visible to the preprocessor (CMake does not export the flags themselves).
std::string build_text() {
  std::vector<std::string> f;
#if defined(__OPTIMIZE__)
  f.push_back("optimized");
#else
  f.push_back("-O0");
#endif
#if defined(NDEBUG)
  f.push_back("NDEBUG");
#endif
#if defined(DSV4_DEBUG_CHECKS) && DSV4_DEBUG_CHECKS
  f.push_back("DSV4_DEBUG_CHECKS");
#endif
#if defined(DSV4_REF_KERNELS_ONLY) && DSV4_REF_KERNELS_ONLY
  f.push_back("DSV4_REF_KERNELS_ONLY");
#endif
#if defined(__SANITIZE_ADDRESS__)
  f.push_back("asan");
#endif
#if defined(__AVX512F__)
  f.push_back("base ISA avx512");
#elif defined(__AVX2__)
  f.push_back("base ISA x86-64-v3 (avx2+fma)");
#else
  f.push_back("base ISA x86-64");
#endif
  std::string s;
  for (const auto& x : f) {
    if (!s.empty()) s += ", ";
    s += x;
  }
  return s;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return trim(line.substr(colon + 1));
    }
  }
  return cpu_features().brand.empty() ? "unknown" : trim(cpu_features().brand);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

constexpr double kRateQuantile = 0.9;

// DRAM read rate: `rounds` sweeps over `buf` in 32 MiB pieces, each piece split into slices
// handed to every worker (dynamic chunks); a piece was last read a whole buffer earlier, so it
// comes from DRAM when the buffer is >> the last-level cache.
void dram_rates(ThreadPool& pool, const AlignedBuffer& buf, int rounds, std::vector<double>& out) {
  constexpr size_t kPiece = 32 * kMiB, kSlice = 256 * 1024;
  const size_t pieces = buf.size() / kPiece;
  std::vector<uint64_t> partial(static_cast<size_t>(pool.num_threads()) * 8, 0);
  for (int r = 0; r < rounds; ++r) {
    for (size_t p = 0; p < pieces; ++p) {
      const uint8_t* base = buf.data() + p * kPiece;
      Timer t;
      pool.parallel_for(0, kPiece / kSlice, 1, [&](size_t b, size_t e, int ti) {
        uint64_t s = 0;
        for (size_t c = b; c < e; ++c) s += kernels::probe_read(base + c * kSlice, kSlice);
        partial[static_cast<size_t>(ti) * 8] += s;
      });
      out.push_back(static_cast<double>(kPiece) / t.seconds() / 1e9);
    }
  }
  for (uint64_t v : partial) g_sink = g_sink + v;  // keeps the sums observable
}

// MAC rate of one dot probe on every worker at once: `samples` timings of tasks_per_thread *
// threads tasks of `iters` rounds each (dynamic chunks, so the rate is the machine's total).
template <typename Probe>
double mac_rate(ThreadPool& pool, Probe probe, int samples) {
  const int nt = pool.num_threads();
  constexpr uint64_t kIters = 20000;  // ~0.1-0.3 ms per task on current cores
  constexpr size_t kTasksPerThread = 16;
  const size_t tasks = kTasksPerThread * static_cast<size_t>(nt);
  std::vector<uint64_t> macs(static_cast<size_t>(nt) * 8, 0), sink(static_cast<size_t>(nt) * 8, 0);
  probe(kIters, &sink[0]);  // warm-up (clock ramp, code in cache)
  std::vector<double> rates;
  for (int s = 0; s < samples; ++s) {
    std::fill(macs.begin(), macs.end(), 0);
    Timer t;
    pool.parallel_for(0, tasks, 1, [&](size_t b, size_t e, int ti) {
      for (size_t i = b; i < e; ++i)
        macs[static_cast<size_t>(ti) * 8] += probe(kIters, &sink[static_cast<size_t>(ti) * 8]);
    });
    const double sec = t.seconds();
    uint64_t total = 0;
    for (uint64_t m : macs) total += m;
    rates.push_back(static_cast<double>(total) / sec / 1e9);
  }
  for (uint64_t v : sink) g_sink = g_sink + v;
  return quantile(rates, kRateQuantile);
}

}  // namespace

KernelStateProbe::KernelStateProbe(int n_threads) : nt_(static_cast<size_t>(n_threads)) {
  // Rotated activations look Gaussian; quantized as the model does (scale bytes near 127).
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(kHeads * kDim);
  for (float& v : x) v = nd(rng);
  codes_.resize(kHeads * kDim / 2);
  scales_.resize(kHeads * kDim / 32);
  weights_.assign(kHeads, 1.0f / 64);
  for (size_t h = 0; h < kHeads; ++h)
    kernels::quantize_f4e2m1_blocks(&x[h * kDim], kDim, 32, &codes_[h * kDim / 2],
                                    &scales_[h * kDim / 32]);
  const kernels::IndexerFp4Query q{codes_.data(), scales_.data(), weights_.data(), kHeads, kDim};
  plan_.reset(&q, 1);
  plan_.prepare(0, 1);
  keys_.resize(nt_ * kKeys * kRec);
  for (size_t j = 0; j < nt_ * kKeys; ++j) {
    for (size_t i = 0; i < kDim; ++i) x[i] = nd(rng);
    kernels::quantize_f4e2m1_blocks(x.data(), kDim, 32, &keys_[j * kRec],
                                    &keys_[j * kRec + kDim / 2]);
  }
  out_.resize(nt_ * kKeys);
  scratch_.resize(nt_);
}

double KernelStateProbe::sample(ThreadPool& pool) {
  DSV4_CHECK(static_cast<size_t>(pool.num_threads()) == nt_);
  const size_t tasks = kTasksPerThread * nt_;
  Timer t;
  pool.parallel_for(0, tasks, 1, [&](size_t b, size_t e, int ti) {
    const size_t w = static_cast<size_t>(ti);
    for (size_t i = b; i < e; ++i)
      kernels::indexer_scores_fp4_planned(plan_, 0, 1, &keys_[w * kKeys * kRec], kKeys,
                                          &out_[w * kKeys], kKeys, &scratch_[w]);
  });
  const double sec = t.seconds();
  g_sink = g_sink + static_cast<uint64_t>(out_[0] != 0);
  return static_cast<double>(tasks * kKeys * kHeads * kDim) / sec / 1e9;
}

double KernelStateProbe::reading(ThreadPool& pool, int samples) {
  sample(pool);  // warm-up: keys, scratch
  std::vector<double> rates;
  for (int s = 0; s < samples; ++s) rates.push_back(sample(pool));
  return quantile(rates, 0.5);
}

double median_of(std::vector<double> v) {
  return quantile(std::move(v), 0.5);
}

uint64_t mem_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

uint64_t anon_huge_page_bytes() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("AnonHugePages:", 0) != 0) continue;
    std::istringstream ss(line.substr(14));
    uint64_t kb = 0;
    ss >> kb;
    return kb * 1024;
  }
  return 0;
}

double steal_seconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  uint64_t v[8] = {};
  if (!(in >> cpu) || cpu != "cpu") return 0;
  for (uint64_t& x : v)
    if (!(in >> x)) return 0;
  const long hz = sysconf(_SC_CLK_TCK);
  return hz > 0 ? static_cast<double>(v[7]) / static_cast<double>(hz) : 0;
}

std::string read_loadavg() {
  std::ifstream in("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  if (!(in >> a >> b >> c)) return "unknown";
  return fmt::format("{:.2f} {:.2f} {:.2f}", a, b, c);
}

RunInfo collect_run_info(int threads) {
  RunInfo r;
  r.version = DSV4_VERSION;
  r.commit = source_commit();
  r.compiler = compiler_text();
  r.build = build_text();
  r.cpu = cpu_model_name();
  r.features = cpu_features().summary();
  r.isa = std::string(kernels::isa_name(kernels::active_isa()));
  r.threads = threads;
  r.hardware_threads = static_cast<int>(std::thread::hardware_concurrency());
  r.mem_available = mem_available_bytes();
  r.loadavg_start = read_loadavg();
  r.steal_start = steal_seconds();
  r.date_utc = utc_now();
  return r;
}

void finish_run_info(RunInfo& info) {
  info.loadavg_end = read_loadavg();
  info.steal_seconds = steal_seconds() - info.steal_start;
}

nlohmann::ordered_json to_json(const RunInfo& r) {
  nlohmann::ordered_json j;
  j["version"] = r.version;
  j["commit"] = r.commit;
  j["compiler"] = r.compiler;
  j["build"] = r.build;
  j["cpu"] = r.cpu;
  j["cpu_features"] = r.features;
  j["kernel_isa"] = r.isa;
  j["threads"] = r.threads;
  j["pinned"] = r.pinned;
  j["hardware_threads"] = r.hardware_threads;
  j["mem_available_bytes"] = r.mem_available;
  j["loadavg_start"] = r.loadavg_start;
  j["loadavg_end"] = r.loadavg_end;
  j["steal_seconds"] = r.steal_seconds;
  j["date_utc"] = r.date_utc;
  return j;
}

Result<Floors> measure_floors(ThreadPool& pool) {
  Floors f;
  Timer total;
  // 512 MiB (16x a 32 MiB L3) when memory allows; never under 128 MiB.
  uint64_t bytes = 512 * kMiB;
  const uint64_t avail = mem_available_bytes();
  if (avail > 0) bytes = std::min<uint64_t>(bytes, avail / 4 / (32 * kMiB) * (32 * kMiB));
  if (bytes < 128 * kMiB)
    return out_of_memory(fmt::format(
        "bench: the DRAM probe needs a 128 MiB buffer; only {} MiB of memory is available",
        avail / kMiB));
  AlignedBuffer buf(bytes);  // zero-filled: every page touched before timing
  for (size_t i = 0; i < bytes / 8; i += 512) buf.as<uint64_t>()[i] = i;
  f.dram_buffer_bytes = bytes;
  std::vector<double> rates;
  dram_rates(pool, buf, 1, rates);  // warm-up round (page tables, clocks)
  rates.clear();
  dram_rates(pool, buf, 3, rates);
  f.dram_gbps = quantile(rates, kRateQuantile);
  f.dram_gbps_median = quantile(rates, 0.5);
  f.i8_gmacs = mac_rate(pool, kernels::probe_dot_i8, 15);
  f.bf16_gmacs = mac_rate(pool, kernels::probe_dot_bf16, 15);
  f.f32_gmacs = mac_rate(pool, kernels::probe_fma_f32, 15);
  {
    constexpr uint64_t kIters = 20000 * 16;  // one sample ~ one task batch of mac_rate
    uint64_t sink = 0;
    kernels::probe_dot_i8(kIters / 16, &sink);
    std::vector<double> rates;
    for (int s = 0; s < 15; ++s) {
      Timer t;
      const uint64_t macs = kernels::probe_dot_i8(kIters, &sink);
      rates.push_back(static_cast<double>(macs) / t.seconds() / 1e9);
    }
    g_sink = g_sink + sink;
    f.i8_gmacs_one_thread = quantile(rates, kRateQuantile);
    if (f.i8_gmacs_one_thread > 0)
      f.thread_scaling = f.i8_gmacs / (pool.num_threads() * f.i8_gmacs_one_thread);
  }
  f.indexer_kernel_gmacs = KernelStateProbe(pool.num_threads()).reading(pool, 15);
  f.i8_instruction = kernels::probe_dot_i8_instruction();
  f.bf16_instruction = kernels::probe_dot_bf16_instruction();
  f.f32_instruction = kernels::probe_fma_f32_instruction();
  f.seconds = total.seconds();
  return f;
}

nlohmann::ordered_json to_json(const Floors& f) {
  nlohmann::ordered_json j;
  j["dram_read_gbps"] = f.dram_gbps;
  j["dram_read_gbps_median"] = f.dram_gbps_median;
  j["dram_probe_buffer_bytes"] = f.dram_buffer_bytes;
  j["int8_dot_gmacs"] = f.i8_gmacs;
  j["int8_dot_instruction"] = f.i8_instruction;
  j["bf16_dot_gmacs"] = f.bf16_gmacs;
  j["bf16_dot_instruction"] = f.bf16_instruction;
  j["f32_fma_gmacs"] = f.f32_gmacs;
  j["f32_fma_instruction"] = f.f32_instruction;
  j["rate_statistic"] = "90th percentile of short pieces, all threads at once";
  j["int8_dot_gmacs_one_thread"] = f.i8_gmacs_one_thread;
  j["thread_scaling"] = f.thread_scaling;
  j["indexer_kernel_gmacs"] = f.indexer_kernel_gmacs;
  j["indexer_kernel_of_int8_probe"] = f.i8_gmacs > 0 ? f.indexer_kernel_gmacs / f.i8_gmacs : 0.0;
  j["machine_busy"] = f.busy();
  j["seconds"] = f.seconds;
  return j;
}

CacheEvictor::CacheEvictor(uint64_t bytes) : buf_(std::max<uint64_t>(bytes >> 20, 1) << 20) {
  for (size_t i = 0; i < buf_.size() / 8; i += 512) buf_.as<uint64_t>()[i] = i;
}

void CacheEvictor::evict(ThreadPool& pool) {
  constexpr size_t kSlice = 1 << 20;
  const size_t n = buf_.size() / kSlice;
  std::vector<uint64_t> part(static_cast<size_t>(pool.num_threads()) * 8, 0);
  pool.parallel_for(0, n, 1, [&](size_t b, size_t e, int ti) {
    for (size_t i = b; i < e; ++i)
      part[static_cast<size_t>(ti) * 8] += kernels::probe_read(buf_.data() + i * kSlice, kSlice);
  });
  for (uint64_t v : part) g_sink = g_sink + v;
}

}  // namespace dsv4::cli::bench
