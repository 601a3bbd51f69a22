// Attention of one query token (kernels/attention.h) at DeepSeek-V4-Flash decode shapes, per ISA,
// on 1 and 2 threads (keys split in halves, one AttnState per thread, merged), against the
// compute floor of this core.
//
// Shapes (64 heads, head_dim 512 = 448 f8_e4m3 + 64 bf16 RoPE, 584-byte records):
//   v4_hca: 8,192 records (HCA at 1M context, ratio 128): 268 M MACs QK + 268 M MACs PV;
//   v4_csa: 640 records (512 CSA-selected, scattered over 65,536, + the 128-token window);
//   mla:    DeepSeek-V3.2-style dense MLA baseline, 128 heads, 576-dim bf16 latents (value 512),
//           4K..64K keys.
// Counters: cpu_ms = CPU-time critical path of one call (slowest thread + merge + finish; the
// development machine is shared, so wall time there mostly measures the scheduler); GMAC/s =
// (QK + PV MACs) / cpu_ms; x_floor = cpu_ms / floor, floor = (QK MACs / bf16 peak + PV MACs /
// f32 FMA peak) / threads, with the peaks measured in-register on this core (peak/* below:
// VDPBF16PS = 32 MACs and VFMADD231PS = 16 MACs per 512-bit instruction); x_floor_wall = the
// same with wall time; x_best_floor = cpu_ms over the floor with QK on whichever instruction has
// more MACs/s here (on Intel Xeon f32 FMA does: see detail::AttnQk). Floors are relative to the
// AVX-512 peaks for every variant (the machine's floor, not the tier's). Variants: avx2, avx512
// (the public entry points), avx512.bf16qk / avx512.f32qk (the AVX-512 body with a fixed QK mode).
//
//   build-<dir>/bench/attention_bench [--benchmark_filter=avx512] [--benchmark_min_time=0.5]
#include <benchmark/benchmark.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "base/timer.h"
#include "kernels/attention.h"
#include "kernels/codecs.h"
#include "kernels/dispatch.h"

namespace {

using namespace dsv4;
using namespace dsv4::kernels;

// CPU time of the calling thread. The development machine is shared (load ~4x its cores), so
// wall time mostly measures the scheduler; per-thread CPU time measures the work.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// ---- in-register peaks ----------------------------------------------------------------------

// Independent accumulator chains: 12 covers latency x throughput of a 512-bit FMA on current
// cores; VDPBF16PS is also probed with 24 in case its latency is longer.
template <int kChains>
__attribute__((target("avx512f,avx512bf16"), noinline)) float dpbf16_loop(size_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi16(0x3A83));  // ~1e-3
  const __m512bh b = reinterpret_cast<__m512bh>(_mm512_set1_epi16(0x3A83));
  volatile size_t opaque = iters;  // a volatile read: the call cannot be hoisted as pure
  const size_t n = opaque;
  for (size_t it = 0; it < n; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float lanes[16];  // (not _mm512_reduce_add_ps: GCC 12 PR 105593 false warning)
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

template <int kChains>
__attribute__((target("avx512f"), noinline)) float fma_loop(size_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_setzero_ps();
  const __m512 a = _mm512_set1_ps(1e-3f), b = _mm512_set1_ps(1e-3f);
  volatile size_t opaque = iters;
  const size_t n = opaque;
  for (size_t it = 0; it < n; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

// MACs per second of `loop` (kIters x chains instructions); best of 5 runs of ~20 ms, CPU time.
double peak_macs(float (*loop)(size_t), int chains, double macs_per_instr) {
  constexpr size_t kIters = 1 << 20;
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    const double t0 = thread_cpu_seconds();
    benchmark::DoNotOptimize(loop(kIters));
    const double t = thread_cpu_seconds() - t0;
    best = std::max(best, static_cast<double>(kIters) * chains * macs_per_instr / t);
  }
  return best;
}

struct Peaks {
  double bf16 = 0, fma = 0;  // MAC/s on one thread
};
const Peaks& peaks() {
  static const Peaks p = [] {
    Peaks r;
    if (cpu_features().has_avx512_tier()) {
      r.bf16 = std::max(peak_macs(dpbf16_loop<12>, 12, 32), peak_macs(dpbf16_loop<24>, 24, 32));
      r.fma = peak_macs(fma_loop<12>, 12, 16);
    }
    return r;
  }();
  return p;
}

void BM_Peak(benchmark::State& state, float (*loop)(size_t), int chains, double macs_per_instr) {
  if (!cpu_features().has_avx512_tier()) {
    state.SkipWithError("no AVX-512 BF16 tier");
    return;
  }
  constexpr size_t kIters = 1 << 18;
  double cpu = 0;
  for (auto _ : state) {
    const double t0 = thread_cpu_seconds();
    benchmark::DoNotOptimize(loop(kIters));
    cpu += thread_cpu_seconds() - t0;
  }
  const double instrs =
      static_cast<double>(kIters) * chains * static_cast<double>(state.iterations());
  state.counters["GMAC/s"] = instrs * macs_per_instr / cpu / 1e9;
  state.counters["Ginstr/s"] = instrs / cpu / 1e9;
}

// ---- workloads --------------------------------------------------------------------------------

ThreadPool& pool(int threads) {
  static std::unique_ptr<ThreadPool> pools[3];
  if (!pools[threads]) pools[threads] = std::make_unique<ThreadPool>(threads);
  return *pools[threads];
}

std::vector<float> random_vec(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// n V4 records (head_dim 512, rope 64) from random rows, encoded like kv/record_codec.h.
std::vector<uint8_t> make_v4_records(size_t n, V4RecordDims d, uint64_t seed) {
  const size_t rb = d.record_bytes();
  std::vector<uint8_t> bytes(n * rb, 0);
  const std::vector<float> x = random_vec(n * d.head_dim, seed, -1.f, 1.f);
  std::vector<float> sc(d.n_scales());
  for (size_t j = 0; j < n; ++j) {
    uint8_t* rec = &bytes[j * rb];
    const float* row = &x[j * d.head_dim];
    quantize_f8e4m3_blocks(row, d.nope(), 64, true, rec, sc.data());
    for (size_t i = 0; i < d.rope_dim; ++i) {
      const uint16_t h = encode_bf16(row[d.nope() + i]);
      std::memcpy(rec + d.nope() + 2 * i, &h, 2);
    }
    for (size_t b = 0; b < d.n_scales(); ++b)
      rec[d.nope() + 2 * d.rope_dim + b] = encode_ue8m0(sc[b]);
  }
  return bytes;
}

// What runs: the public variant of a tier, or the AVX-512 body with a given QK mode.
enum class Variant { ref, avx2, avx512, avx512_bf16qk, avx512_f32qk };
const char* variant_name(Variant v) {
  switch (v) {
    case Variant::ref:
      return "ref";
    case Variant::avx2:
      return "avx2";
    case Variant::avx512:
      return "avx512";
    case Variant::avx512_bf16qk:
      return "avx512.bf16qk";
    case Variant::avx512_f32qk:
      return "avx512.f32qk";
  }
  return "?";
}

uint8_t* aligned_work(AttnScratch& s, size_t bytes) {
  if (s.bytes.size() < bytes + 64) s.bytes.resize(bytes + 64);
  const size_t mis = reinterpret_cast<uintptr_t>(s.bytes.data()) % 64;
  return s.bytes.data() + (mis ? 64 - mis : 0);
}

detail::AttnQk qk_of(Variant v) {
  return v == Variant::avx512_f32qk ? detail::AttnQk::f32_fma : detail::AttnQk::bf16_dot;
}

void attend_v4(Variant v, const float* q, size_t H, V4RecordDims d, const uint8_t* const* recs,
               size_t n, float scale, AttnState& st, AttnScratch& sc) {
  switch (v) {
    case Variant::ref:
      return attend_v4_fp8_ref(q, H, d, recs, n, scale, st, &sc);
    case Variant::avx2:
      return attend_v4_fp8_avx2(q, H, d, recs, n, scale, st, &sc);
    case Variant::avx512:
      return attend_v4_fp8_avx512(q, H, d, recs, n, scale, st, &sc);
    case Variant::avx512_bf16qk:
    case Variant::avx512_f32qk:
      return detail::attend_v4_fp8_raw_avx512(
          q, H, d.head_dim, d.rope_dim, recs, n, scale, st.m.data(), st.l.data(), st.acc.data(),
          aligned_work(sc, detail::attn_work_bytes_avx512(H, d.head_dim, d.head_dim)), qk_of(v));
  }
}

void attend_mla(Variant v, const float* q, size_t H, size_t kd, size_t vd, const uint16_t* lat,
                size_t n, float scale, AttnState& st, AttnScratch& sc) {
  switch (v) {
    case Variant::ref:
      return attend_mla_bf16_ref(q, H, kd, vd, lat, n, scale, st, &sc);
    case Variant::avx2:
      return attend_mla_bf16_avx2(q, H, kd, vd, lat, n, scale, st, &sc);
    case Variant::avx512:
      return attend_mla_bf16_avx512(q, H, kd, vd, lat, n, scale, st, &sc);
    case Variant::avx512_bf16qk:
    case Variant::avx512_f32qk:
      return detail::attend_mla_bf16_raw_avx512(
          q, H, kd, vd, lat, n, scale, st.m.data(), st.l.data(), st.acc.data(),
          aligned_work(sc, detail::attn_work_bytes_avx512(H, kd, vd)), qk_of(v));
  }
}

// Per-thread partial states and scratch, warmed before timing.
struct Parts {
  std::vector<AttnState> st;
  std::vector<AttnScratch> scratch;
  std::vector<double> cpu;  // [threads] CPU seconds of each part in the last call
  AttnState merged;
  std::vector<float> out;
};

// Runs `body(part, key_begin, key_end)` on `threads` threads (key halves), merges, finishes.
// Returns the critical path in CPU seconds: the slowest part plus the merge and finish.
template <typename Body>
double split_run(int threads, size_t n_keys, Parts& p, const float* sink, Body body) {
  const size_t parts = static_cast<size_t>(threads);
  for (size_t i = 0; i < parts; ++i) p.st[i].reset(p.merged.n_heads, p.merged.dim);
  auto timed = [&](size_t i) {
    const double t0 = thread_cpu_seconds();
    body(i, n_keys * i / parts, n_keys * (i + 1) / parts);
    p.cpu[i] = thread_cpu_seconds() - t0;
  };
  if (threads == 1) {
    timed(0);
  } else {
    pool(threads).parallel_for(0, parts, 1, [&](size_t b, size_t e, int) {
      for (size_t i = b; i < e; ++i) timed(i);
    });
  }
  const double t0 = thread_cpu_seconds();
  p.merged.reset(p.merged.n_heads, p.merged.dim);
  for (size_t i = 0; i < parts; ++i) attn_state_merge(p.merged, p.st[i]);
  attn_state_finish(p.merged, sink, p.out.data());
  double slowest = 0;
  for (double c : p.cpu) slowest = std::max(slowest, c);
  return slowest + thread_cpu_seconds() - t0;
}

// wall, cpu: seconds per call, wall clock and CPU critical path (see split_run).
void report(benchmark::State& state, double qk_macs, double pv_macs, int threads, double wall,
            double cpu) {
  const Peaks& pk = peaks();
  state.counters["cpu_ms"] = cpu * 1e3;
  state.counters["GMAC/s"] = (qk_macs + pv_macs) / cpu / 1e9;
  if (pk.bf16 > 0) {
    const double floor_s = (qk_macs / pk.bf16 + pv_macs / pk.fma) / threads;
    state.counters["floor_ms"] = floor_s * 1e3;
    state.counters["x_floor"] = cpu / floor_s;
    state.counters["x_floor_wall"] = wall / floor_s;
    // With QK on whichever of VDPBF16PS / f32 FMA has more MACs per second on this core.
    const double best_s = (qk_macs / std::max(pk.bf16, pk.fma) + pv_macs / pk.fma) / threads;
    state.counters["x_best_floor"] = cpu / best_s;
  }
}

void BM_V4(benchmark::State& state, Variant var, size_t n_keys, bool csa, int threads) {
  const V4RecordDims d{512, 64};
  const size_t H = 64;
  // CSA: 512 selected of a 65,536-entry pool (scattered) + 128 contiguous window records.
  const size_t pool_n = csa ? 65536 + 128 : n_keys;
  static std::vector<uint8_t> records;  // shared by all V4 benchmarks (largest pool)
  if (records.size() < pool_n * d.record_bytes()) records = make_v4_records(pool_n, d, 7);
  std::vector<const uint8_t*> ptrs(n_keys);
  if (csa) {
    std::mt19937_64 rng(5);
    const size_t sel = n_keys - 128;
    for (size_t i = 0; i < sel; ++i) ptrs[i] = &records[(rng() % 65536) * d.record_bytes()];
    for (size_t i = 0; i < 128; ++i) ptrs[sel + i] = &records[(65536 + i) * d.record_bytes()];
  } else {
    for (size_t j = 0; j < n_keys; ++j) ptrs[j] = &records[j * d.record_bytes()];
  }
  const std::vector<float> q = random_vec(H * d.head_dim, 1, -2.f, 2.f);
  const std::vector<float> sink = random_vec(H, 2, -1.f, 1.f);
  const float scale = 1.0f / std::sqrt(512.0f);
  Parts p;
  p.st.resize(static_cast<size_t>(threads));
  p.scratch.resize(static_cast<size_t>(threads));
  p.cpu.assign(static_cast<size_t>(threads), 0.0);
  p.merged.reset(H, d.head_dim);
  p.out.resize(H * d.head_dim);
  auto body = [&](size_t i, size_t b, size_t e) {
    attend_v4(var, q.data(), H, d, ptrs.data() + b, e - b, scale, p.st[i], p.scratch[i]);
  };
  split_run(threads, n_keys, p, sink.data(), body);  // warm scratch
  Timer timer;
  double cpu = 0;
  for (auto _ : state) {
    cpu += split_run(threads, n_keys, p, sink.data(), body);
    benchmark::DoNotOptimize(p.out.data());
  }
  const double iters = static_cast<double>(state.iterations());
  const double wall = timer.seconds() / iters;
  cpu /= iters;
  const double macs = static_cast<double>(H * n_keys * d.head_dim);
  report(state, macs, macs, threads, wall, cpu);
}

void BM_Mla(benchmark::State& state, Variant var, size_t n_keys, int threads) {
  const size_t H = 128, kd = 576, vd = 512;
  static std::vector<uint16_t> lat;
  if (lat.size() < n_keys * kd) {
    const std::vector<float> x = random_vec(n_keys * kd, 9, -1.f, 1.f);
    lat.resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) lat[i] = encode_bf16(x[i]);
  }
  const std::vector<float> q = random_vec(H * kd, 3, -2.f, 2.f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kd));
  Parts p;
  p.st.resize(static_cast<size_t>(threads));
  p.scratch.resize(static_cast<size_t>(threads));
  p.cpu.assign(static_cast<size_t>(threads), 0.0);
  p.merged.reset(H, vd);
  p.out.resize(H * vd);
  auto body = [&](size_t i, size_t b, size_t e) {
    attend_mla(var, q.data(), H, kd, vd, lat.data() + b * kd, e - b, scale, p.st[i], p.scratch[i]);
  };
  split_run(threads, n_keys, p, nullptr, body);
  Timer timer;
  double cpu = 0;
  for (auto _ : state) {
    cpu += split_run(threads, n_keys, p, nullptr, body);
    benchmark::DoNotOptimize(p.out.data());
  }
  const double iters = static_cast<double>(state.iterations());
  const double wall = timer.seconds() / iters;
  cpu /= iters;
  report(state, static_cast<double>(H * n_keys * kd), static_cast<double>(H * n_keys * vd), threads,
         wall, cpu);
}

void register_all() {
  benchmark::RegisterBenchmark("peak/dpbf16/chains:12",
                               [](benchmark::State& s) { BM_Peak(s, dpbf16_loop<12>, 12, 32); });
  benchmark::RegisterBenchmark("peak/dpbf16/chains:24",
                               [](benchmark::State& s) { BM_Peak(s, dpbf16_loop<24>, 24, 32); });
  benchmark::RegisterBenchmark("peak/fma/chains:12",
                               [](benchmark::State& s) { BM_Peak(s, fma_loop<12>, 12, 16); });
  std::vector<Variant> variants;
  for (Isa isa : supported_isas()) {
    if (isa == Isa::ref) variants.push_back(Variant::ref);
    if (isa == Isa::avx2) variants.push_back(Variant::avx2);
    if (isa == Isa::avx512) {
      variants.push_back(Variant::avx512);
      variants.push_back(Variant::avx512_bf16qk);
      variants.push_back(Variant::avx512_f32qk);
    }
  }
  for (Variant v : variants) {
    const std::string in = variant_name(v);
    for (int threads : {1, 2}) {
      const std::string th = "/threads:" + std::to_string(threads);
      if (v != Variant::ref) {
        benchmark::RegisterBenchmark(
            ("attn/v4_hca/" + in + "/keys:8192" + th).c_str(),
            [=](benchmark::State& s) { BM_V4(s, v, 8192, false, threads); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
      benchmark::RegisterBenchmark(("attn/v4_csa/" + in + "/keys:640" + th).c_str(),
                                   [=](benchmark::State& s) { BM_V4(s, v, 640, true, threads); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      if (v == Variant::ref) continue;
      for (size_t n : {size_t{4096}, size_t{16384}, size_t{65536}}) {
        benchmark::RegisterBenchmark(("attn/mla/" + in + "/keys:" + std::to_string(n) + th).c_str(),
                                     [=](benchmark::State& s) { BM_Mla(s, v, n, threads); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
