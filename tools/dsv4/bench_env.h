// tools/dsv4/bench_env.h — what `dsv4 bench` records about the run (build, machine, load) and
// the machine floors it measures in the same process (kernels/probe.h run on every worker).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "base/aligned_buffer.h"
#include "base/result.h"
#include "base/thread_pool.h"
#include "kernels/indexer.h"

namespace dsv4::cli::bench {

// Build and machine facts, recorded with every result (JSON "meta", CSV columns).
struct RunInfo {
  std::string version;   // DSV4_VERSION
  std::string commit;    // `git rev-parse --short=12 HEAD` of the source tree, "+dirty" when
                         // it has uncommitted changes; "unknown" outside a git checkout
  std::string compiler;  // "gcc 12.2.0" / "clang 14.0.6"
  std::string build;     // what the preprocessor knows: optimisation, NDEBUG, -march level
  std::string cpu;       // /proc/cpuinfo "model name" (CPUID brand string as fallback)
  std::string features;  // cpu_features().summary()
  std::string isa;       // kernels::active_isa(): ref / avx2 / avx512
  int threads = 0;       // ThreadPool workers
  bool pinned = false;   // ThreadPool::pinned(): each thread bound to its own CPU
  int hardware_threads = 0;
  uint64_t mem_available = 0;                 // /proc/meminfo MemAvailable, bytes (0: unknown)
  std::string loadavg_start, loadavg_end;     // /proc/loadavg (1, 5, 15 min) at start and end
  double steal_start = 0, steal_seconds = 0;  // steal_seconds(): at start; delta over the run
  std::string date_utc;                       // ISO 8601, start of the run
};
RunInfo collect_run_info(int threads);
void finish_run_info(RunInfo& info);  // sets loadavg_end
nlohmann::ordered_json to_json(const RunInfo& info);

// /proc/self/smaps_rollup AnonHugePages in bytes: how much of this process's anonymous memory
// (the KV blocks of 2 MiB are madvised MADV_HUGEPAGE) sits in transparent huge pages now.
uint64_t anon_huge_page_bytes();
// Seconds of CPU time the hypervisor took from this VM's vCPUs so far (/proc/stat "steal",
// all CPUs; 0 on bare metal or when unreadable). A run's delta says how much of it the host
// spent elsewhere: timings of such a run are high for reasons outside the machine.
double steal_seconds();
// /proc/meminfo MemAvailable in bytes (0 when unreadable).
uint64_t mem_available_bytes();
std::string read_loadavg();

// Rates measured with the probes of kernels/probe.h on every worker at once. Each is the
// 90th percentile of short pieces (~1-30 ms): on a shared machine a piece either runs
// undisturbed or is descheduled part of the time, and the high percentile is the undisturbed
// rate — the floors derived from it are therefore the lower ones (ratios the stricter ones).
struct Floors {
  double dram_gbps = 0;         // DRAM read, GB/s (p90 over 32 MiB pieces of a large buffer)
  double dram_gbps_median = 0;  // the median of the same pieces
  uint64_t dram_buffer_bytes = 0;
  double i8_gmacs = 0;    // probe_dot_i8: G multiply-accumulates per second, all threads
  double bf16_gmacs = 0;  // probe_dot_bf16
  double f32_gmacs = 0;   // probe_fma_f32
  std::string i8_instruction, bf16_instruction, f32_instruction;
  // The int8 rate of the calling thread alone, and i8_gmacs / (threads x that): about 1 when
  // every worker had a core to itself; well below 1 when other processes held cores during the
  // probes (or workers share cores), which lowers the floors and inflates the timings alike.
  double i8_gmacs_one_thread = 0;
  double thread_scaling = 0;
  // KernelStateProbe reading when the floors were measured (not a floor: see there).
  double indexer_kernel_gmacs = 0;
  bool busy() const { return thread_scaling > 0 && thread_scaling < 0.85; }
  double seconds = 0;  // time the probes took
};
// Errors: out_of_memory when the DRAM probe buffer cannot be allocated in available memory.
Result<Floors> measure_floors(ThreadPool& pool);

// A machine-state reading: the production lightning-indexer kernel
// (kernels::indexer_scores_fp4_planned, active ISA, V4-Flash shape: 64 heads x 128 dims) on
// 1,024 FP4 keys per worker that stay in its L2, in multiply-accumulates per second on all
// threads. Not a floor and not part of any ratio: how much of the int8 probe's rate the machine
// lets a real kernel reach at that moment. On the shared 2-vCPU VMs of issue #6 the same binary
// swung between ~0.85 and ~0.65 of the int8 probe within minutes while the register-only probe
// stayed put, so `dsv4 bench` takes it with the floors (Floors::indexer_kernel_gmacs) and after
// every timed decode call (LayerRow::indexer_kernel_gmacs, the median over the row's reps).
class KernelStateProbe {
 public:
  explicit KernelStateProbe(int n_threads);  // the pool's num_threads()
  // One piece (kTasksPerThread passes over every worker's keys, ~0.15 ms on a Zen 4 core).
  double sample(ThreadPool& pool);
  // The median of `samples` pieces after one warm-up piece.
  double reading(ThreadPool& pool, int samples);

 private:
  static constexpr size_t kHeads = 64, kDim = 128, kKeys = 1024, kTasksPerThread = 4;
  static constexpr size_t kRec = kernels::indexer_fp4_record_bytes(kDim);
  size_t nt_;
  std::vector<uint8_t> codes_, scales_, keys_;
  std::vector<float> weights_, out_;
  kernels::IndexerFp4Plan plan_;
  std::vector<kernels::IndexerScratch> scratch_;
};
double median_of(std::vector<double> v);  // 0 for an empty vector
nlohmann::ordered_json to_json(const Floors& f);

// Reads `bytes` of a private buffer (>= 2x the last-level cache) so that data read next comes
// from DRAM, as in a model where ~11 GB of weights and 42 other layers' caches pass between two
// visits of one layer. Runs on every worker of the pool, so the timed call that follows finds
// the workers just back from a parallel_for (spinning, as between the layers of a forward pass)
// rather than asleep. Not timed by callers.
class CacheEvictor {
 public:
  explicit CacheEvictor(uint64_t bytes = uint64_t{96} << 20);
  void evict(ThreadPool& pool);

 private:
  AlignedBuffer buf_;
};

}  // namespace dsv4::cli::bench
