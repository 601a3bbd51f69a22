// GEMV throughput per weight dtype (bf16, f8_e4m3 + 128x128 scales, f4_e2m1 + block-32 ue8m0) and
// per ISA (ref, avx2, avx512 where supported), on 1 and 2 threads, with weights streamed from DRAM.
//
// Counters: GB/s = weight bytes (codes + scales) per second of one GEMV call (90th percentile of
// the calls; GB/s_median too); dram_GB/s = the same-thread-count bandwidth probe (a streaming
// read-sum over a 512 MiB buffer, far larger than the last-level cache, in 32 MiB pieces, 90th
// percentile), measured in this process immediately before each benchmark;
// frac_of_dram = GB/s / dram_GB/s. See kRateQuantile for why a percentile.
// Every iteration multiplies the next of several weight copies (together >= 256 MiB, i.e. >> LLC),
// so no iteration finds its weights in cache.
// Names: gemv/<weights>[.bf16x]/<isa>/<rows>x<cols>/threads:N (.bf16x = bf16 activations,
// gemv_*_bf16); gemm_b1/... = gemm_* with batch 1, the forward pass's decode call;
// gemv_hot/... = one thread on an L2-resident matrix, the decode-bound ceiling.
//
//   build-<dir>/bench/gemv_bench --benchmark_min_time=0.3 [--benchmark_filter=avx512]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/thread_pool.h"
#include "base/timer.h"
#include "kernels/codecs.h"
#include "kernels/dispatch.h"
#include "kernels/gemv.h"

namespace {

using namespace dsv4;
using namespace dsv4::kernels;

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kWorkingSet = 256 * kMiB;  // weights per benchmark, >> a 32 MiB LLC
constexpr size_t kProbeBytes = 512 * kMiB;

void fill_random(uint8_t* p, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    std::memcpy(p + i, &s, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<uint8_t>(i * 31 + seed);
}

ThreadPool& pool(int threads) {
  static std::unique_ptr<ThreadPool> pools[3];
  if (!pools[threads]) pools[threads] = std::make_unique<ThreadPool>(threads);
  return *pools[threads];
}

// ---- DRAM read bandwidth probe
// -------------------------------------------------------------------

AlignedBuffer& probe_buffer() {
  static AlignedBuffer buf = [] {
    AlignedBuffer b(kProbeBytes);
    fill_random(b.data(), b.size(), 99);
    return b;
  }();
  return buf;
}

// Sum of 64-bit words over [p, p + n) (the compiler vectorizes it; 4 independent sums).
uint64_t read_sum(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  return a + b + c + d;
}

// The q-quantile (0 <= q <= 1) of v.
double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

// Both sides of frac_of_dram are taken as the 90th percentile of per-piece rates over pieces of
// about a millisecond (one GEMV call; one 32 MiB slice of the probe buffer). On a shared machine a
// piece either runs undisturbed or is descheduled part of the time; a high percentile of short
// pieces measures the undisturbed rate on both sides alike, while a mean over long passes would
// mix in however much of the time other processes held the core.
constexpr double kRateQuantile = 0.9;
constexpr size_t kProbePiece = 32 * kMiB;

// DRAM read bandwidth with `threads` threads: `rounds` sweeps over the probe buffer in 32 MiB
// pieces (each piece split over the threads; a piece was last read 15 pieces earlier, i.e. 480 MiB
// ago, so it comes from DRAM); the kRateQuantile of the per-piece rates, GB/s.
double measure_dram_gbps(int threads, int rounds = 3) {
  AlignedBuffer& buf = probe_buffer();
  const uint64_t* words = buf.as<uint64_t>();
  const size_t pieces = buf.size() / kProbePiece, piece_words = kProbePiece / 8;
  const size_t per_task = piece_words / static_cast<size_t>(4 * threads);
  std::vector<double> rates;
  std::vector<uint64_t> partial(static_cast<size_t>(threads) * 8, 0);
  for (int round = 0; round < rounds; ++round) {
    for (size_t p = 0; p < pieces; ++p) {
      const uint64_t* base = words + p * piece_words;
      Timer t;
      pool(threads).parallel_for(0, piece_words / per_task, 1, [&](size_t b, size_t e, int ti) {
        uint64_t s = 0;
        for (size_t c = b; c < e; ++c) s += read_sum(base + c * per_task, per_task);
        partial[static_cast<size_t>(ti) * 8] += s;
      });
      rates.push_back(static_cast<double>(kProbePiece) / t.seconds() / 1e9);
    }
  }
  uint64_t sink = 0;
  for (uint64_t v : partial) sink += v;
  benchmark::DoNotOptimize(sink);
  return quantile(rates, kRateQuantile);
}

void BM_DramRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  double gbps = 0;
  for (auto _ : state) gbps = measure_dram_gbps(threads, 1);
  state.counters["dram_GB/s"] = gbps;
}

// ---- weight sets
// -----------------------------------------------------------------------------------

// f8 / f4: weights f8_e4m3 / f4_e2m1 with f32 activations; f8_bf16x / f4_bf16x: the same weights
// with bf16 activations (gemv_*_bf16, the path for act_quant-ed activations).
enum class Dtype { bf16, f8, f4, f8_bf16x, f4_bf16x };
const char* dtype_name(Dtype d) {
  switch (d) {
    case Dtype::bf16:
      return "bf16";
    case Dtype::f8:
      return "f8e4m3";
    case Dtype::f4:
      return "f4e2m1";
    case Dtype::f8_bf16x:
      return "f8e4m3.bf16x";
    case Dtype::f4_bf16x:
      return "f4e2m1.bf16x";
  }
  return "?";
}
bool is_f8(Dtype d) {
  return d == Dtype::f8 || d == Dtype::f8_bf16x;
}
bool is_f4(Dtype d) {
  return d == Dtype::f4 || d == Dtype::f4_bf16x;
}

// Several copies of one [rows, cols] weight matrix (codes and scales), >= kWorkingSet in total.
struct WeightSet {
  Dtype dtype;
  size_t rows, cols, copies = 0;
  size_t code_bytes = 0, scale_bytes = 0;
  std::vector<AlignedBuffer> codes, scales;

  size_t bytes_per_matrix() const { return code_bytes + scale_bytes; }
};

// Only one weight set is alive at a time (benchmarks are registered grouped by dtype and shape).
const WeightSet& weight_set(Dtype dtype, size_t rows, size_t cols) {
  static std::unique_ptr<WeightSet> cur;
  // The bf16x variants read the same weights as their f32-activation twins.
  if (dtype == Dtype::f8_bf16x) dtype = Dtype::f8;
  if (dtype == Dtype::f4_bf16x) dtype = Dtype::f4;
  if (cur && cur->dtype == dtype && cur->rows == rows && cur->cols == cols) return *cur;
  cur.reset();
  auto ws = std::make_unique<WeightSet>();
  ws->dtype = dtype;
  ws->rows = rows;
  ws->cols = cols;
  switch (dtype) {
    case Dtype::bf16:
      ws->code_bytes = rows * cols * 2;
      break;
    case Dtype::f8:
    case Dtype::f8_bf16x:
      ws->code_bytes = rows * cols;
      ws->scale_bytes = f8_scale_rows(rows) * f8_scale_cols(cols);  // ue8m0, as the V4 checkpoints
      break;
    case Dtype::f4:
    case Dtype::f4_bf16x:
      ws->code_bytes = rows * f4_row_bytes(cols);
      ws->scale_bytes = rows * f4_scales_per_row(cols);
      break;
  }
  ws->copies =
      std::max<size_t>(2, (kWorkingSet + ws->bytes_per_matrix() - 1) / ws->bytes_per_matrix());
  for (size_t c = 0; c < ws->copies; ++c) {
    AlignedBuffer codes(ws->code_bytes);
    fill_random(codes.data(), codes.size(), c + 1);
    if (dtype == Dtype::bf16) {  // finite values of moderate size
      uint16_t* h = codes.as<uint16_t>();
      for (size_t i = 0; i < rows * cols; ++i)
        h[i] = static_cast<uint16_t>((h[i] & 0x807F) | 0x3C00);
    } else if (dtype == Dtype::f8) {  // no NaN codes
      for (size_t i = 0; i < codes.size(); ++i)
        if ((codes.data()[i] & 0x7F) == 0x7F) codes.data()[i] ^= 1;
    }
    AlignedBuffer scales(std::max<size_t>(ws->scale_bytes, 1));
    for (size_t i = 0; i < ws->scale_bytes; ++i)
      scales.data()[i] = static_cast<uint8_t>(120 + (i * 7 + c) % 8);
    ws->codes.push_back(std::move(codes));
    ws->scales.push_back(std::move(scales));
  }
  cur = std::move(ws);
  return *cur;
}

// gemm_*(batch 1): what the forward pass calls for decode (batch-invariant, see kernels/gemv.h).
void run_gemm1(Isa isa, Dtype dtype, const WeightSet& ws, size_t copy, const float* x, float* y,
               size_t r0, size_t r1) {
  const uint8_t* codes = ws.codes[copy].data();
  const uint8_t* scales = ws.scales[copy].data();
  const size_t n = ws.cols, m = ws.rows;
  switch (dtype) {
    case Dtype::bf16: {
      const WeightsBf16 w{reinterpret_cast<const uint16_t*>(codes), ws.rows, ws.cols};
      if (isa == Isa::avx512)
        gemm_bf16_f32_avx512(w, x, n, 1, y, m, r0, r1);
      else if (isa == Isa::avx2)
        gemm_bf16_f32_avx2(w, x, n, 1, y, m, r0, r1);
      else
        gemm_bf16_f32_ref(w, x, n, 1, y, m, r0, r1);
      break;
    }
    case Dtype::f8: {
      const WeightsF8e4m3 w{codes, scales, ScaleFormat::ue8m0, ws.rows, ws.cols};
      if (isa == Isa::avx512)
        gemm_f8e4m3_f32_avx512(w, x, n, 1, y, m, r0, r1);
      else if (isa == Isa::avx2)
        gemm_f8e4m3_f32_avx2(w, x, n, 1, y, m, r0, r1);
      else
        gemm_f8e4m3_f32_ref(w, x, n, 1, y, m, r0, r1);
      break;
    }
    case Dtype::f4: {
      const WeightsF4e2m1 w{codes, scales, ws.rows, ws.cols};
      if (isa == Isa::avx512)
        gemm_f4e2m1_f32_avx512(w, x, n, 1, y, m, r0, r1);
      else if (isa == Isa::avx2)
        gemm_f4e2m1_f32_avx2(w, x, n, 1, y, m, r0, r1);
      else
        gemm_f4e2m1_f32_ref(w, x, n, 1, y, m, r0, r1);
      break;
    }
    default:
      break;
  }
}

void run_gemv(Isa isa, Dtype dtype, const WeightSet& ws, size_t copy, const float* x,
              const uint16_t* xb, float* y, size_t r0, size_t r1) {
  const uint8_t* codes = ws.codes[copy].data();
  const uint8_t* scales = ws.scales[copy].data();
  const WeightsF8e4m3 w8{codes, scales, ScaleFormat::ue8m0, ws.rows, ws.cols};
  const WeightsF4e2m1 w4{codes, scales, ws.rows, ws.cols};
  switch (dtype) {
    case Dtype::bf16: {
      const WeightsBf16 w{reinterpret_cast<const uint16_t*>(codes), ws.rows, ws.cols};
      if (isa == Isa::avx512)
        gemv_bf16_f32_avx512(w, x, y, r0, r1);
      else if (isa == Isa::avx2)
        gemv_bf16_f32_avx2(w, x, y, r0, r1);
      else
        gemv_bf16_f32_ref(w, x, y, r0, r1);
      break;
    }
    case Dtype::f8:
      if (isa == Isa::avx512)
        gemv_f8e4m3_f32_avx512(w8, x, y, r0, r1);
      else if (isa == Isa::avx2)
        gemv_f8e4m3_f32_avx2(w8, x, y, r0, r1);
      else
        gemv_f8e4m3_f32_ref(w8, x, y, r0, r1);
      break;
    case Dtype::f4:
      if (isa == Isa::avx512)
        gemv_f4e2m1_f32_avx512(w4, x, y, r0, r1);
      else if (isa == Isa::avx2)
        gemv_f4e2m1_f32_avx2(w4, x, y, r0, r1);
      else
        gemv_f4e2m1_f32_ref(w4, x, y, r0, r1);
      break;
    case Dtype::f8_bf16x:
      if (isa == Isa::avx512)
        gemv_f8e4m3_bf16_avx512(w8, xb, y, r0, r1);
      else if (isa == Isa::avx2)
        gemv_f8e4m3_bf16_avx2(w8, xb, y, r0, r1);
      else
        gemv_f8e4m3_bf16_ref(w8, xb, y, r0, r1);
      break;
    case Dtype::f4_bf16x:
      if (isa == Isa::avx512)
        gemv_f4e2m1_bf16_avx512(w4, xb, y, r0, r1);
      else if (isa == Isa::avx2)
        gemv_f4e2m1_bf16_avx2(w4, xb, y, r0, r1);
      else
        gemv_f4e2m1_bf16_ref(w4, xb, y, r0, r1);
      break;
  }
}

void BM_Gemv(benchmark::State& state, Dtype dtype, Isa isa, size_t rows, size_t cols, int threads,
             bool gemm1) {
  const WeightSet& ws = weight_set(dtype, rows, cols);
  std::vector<float> x(cols), y(rows);
  std::vector<uint16_t> xb(cols);
  for (size_t i = 0; i < cols; ++i) x[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
  convert_f32_to_bf16_ref(x.data(), xb.data(), cols);
  ThreadPool& tp = pool(threads);
  const size_t grain = 64;  // rows per task: a multiple of the 4-row kernel blocks
  const double dram = measure_dram_gbps(threads);
  size_t copy = 0;
  std::vector<double> times;
  for (auto _ : state) {
    Timer t;
    auto run = [&](size_t b, size_t e) {
      if (gemm1)
        run_gemm1(isa, dtype, ws, copy, x.data(), y.data(), b, e);
      else
        run_gemv(isa, dtype, ws, copy, x.data(), xb.data(), y.data(), b, e);
    };
    if (threads == 1) {
      run(0, rows);
    } else {
      tp.parallel_for(0, rows, grain, [&](size_t b, size_t e, int) { run(b, e); });
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    times.push_back(t.seconds());
    copy = (copy + 1) % ws.copies;
  }
  std::vector<double> rates(times.size());
  for (size_t i = 0; i < times.size(); ++i)
    rates[i] = static_cast<double>(ws.bytes_per_matrix()) / times[i] / 1e9;
  const double gbps = quantile(rates, kRateQuantile);
  state.counters["GB/s"] = gbps;
  state.counters["GB/s_median"] = quantile(rates, 0.5);
  state.counters["dram_GB/s"] = dram;
  state.counters["frac_of_dram"] = gbps / dram;
}

// The same kernel on one small matrix that stays in L2 (1 thread; bf16's 1 MiB partly in L3): the
// decode+FMA throughput without DRAM in the way, i.e. the ceiling the DRAM-bound figure can reach.
void BM_GemvHot(benchmark::State& state, Dtype dtype, Isa isa) {
  constexpr size_t kRowsHot = 128, kColsHot = 4096;
  WeightSet ws;
  ws.dtype = dtype;
  ws.rows = kRowsHot;
  ws.cols = kColsHot;
  ws.copies = 1;
  ws.code_bytes = dtype == Dtype::bf16 ? kRowsHot * kColsHot * 2
                  : is_f8(dtype)       ? kRowsHot * kColsHot
                                       : kRowsHot * kColsHot / 2;
  ws.scale_bytes = is_f8(dtype)   ? f8_scale_rows(kRowsHot) * f8_scale_cols(kColsHot)
                   : is_f4(dtype) ? kRowsHot * f4_scales_per_row(kColsHot)
                                  : 0;
  ws.codes.emplace_back(ws.code_bytes);
  fill_random(ws.codes[0].data(), ws.code_bytes, 5);
  if (dtype == Dtype::bf16) {
    uint16_t* h = ws.codes[0].as<uint16_t>();
    for (size_t i = 0; i < kRowsHot * kColsHot; ++i)
      h[i] = static_cast<uint16_t>((h[i] & 0x807F) | 0x3C00);
  }
  ws.scales.emplace_back(std::max<size_t>(ws.scale_bytes, 1));
  std::memset(ws.scales[0].data(), 127, ws.scales[0].size());
  std::vector<float> x(kColsHot, 0.5f), y(kRowsHot);
  std::vector<uint16_t> xb(kColsHot, encode_bf16(0.5f));
  Timer timer;
  for (auto _ : state) {
    run_gemv(isa, dtype, ws, 0, x.data(), xb.data(), y.data(), 0, kRowsHot);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = static_cast<double>(ws.bytes_per_matrix()) *
                           static_cast<double>(state.iterations()) / timer.seconds() / 1e9;
}

void register_all() {
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(("dram_read/threads:" + std::to_string(threads)).c_str(),
                                 BM_DramRead)
        ->Arg(threads)
        ->Iterations(3)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (Dtype dtype : {Dtype::f8, Dtype::f8_bf16x, Dtype::f4, Dtype::f4_bf16x, Dtype::bf16}) {
    for (Isa isa : supported_isas()) {
      const std::string name = std::string("gemv_hot/") + dtype_name(dtype) + "/" +
                               std::string(isa_name(isa)) + "/128x4096";
      benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) {
        BM_GemvHot(s, dtype, isa);
      })->Unit(benchmark::kMicrosecond);
    }
  }
  // Shapes rows x cols (= out x in): square, and 4096x2048 with its transpose. Grouped so that
  // consecutive benchmarks share one weight set (f8 with f8.bf16x, f4 with f4.bf16x).
  const std::pair<size_t, size_t> shapes[] = {{4096, 4096}, {4096, 2048}, {2048, 4096}};
  const std::vector<std::vector<Dtype>> groups = {
      {Dtype::f8, Dtype::f8_bf16x}, {Dtype::f4, Dtype::f4_bf16x}, {Dtype::bf16}};
  for (const auto& group : groups) {
    for (const auto& shape : shapes) {
      const size_t rows = shape.first, cols = shape.second;  // (clang 14 cannot capture bindings)
      for (Dtype dtype : group) {
        for (Isa isa : supported_isas()) {
          for (int threads : {1, 2}) {
            const std::string name = std::string("gemv/") + dtype_name(dtype) + "/" +
                                     std::string(isa_name(isa)) + "/" + std::to_string(rows) + "x" +
                                     std::to_string(cols) + "/threads:" + std::to_string(threads);
            benchmark::RegisterBenchmark(
                name.c_str(),
                [=](benchmark::State& s) { BM_Gemv(s, dtype, isa, rows, cols, threads, false); })
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
          }
        }
      }
      // The batch-1 gemm path (decode in the forward pass), square shape only.
      if (rows == cols) {
        const Dtype dtype = group.front();
        for (Isa isa : supported_isas()) {
          if (isa == Isa::ref) continue;
          for (int threads : {1, 2}) {
            const std::string name = std::string("gemm_b1/") + dtype_name(dtype) + "/" +
                                     std::string(isa_name(isa)) + "/" + std::to_string(rows) + "x" +
                                     std::to_string(cols) + "/threads:" + std::to_string(threads);
            benchmark::RegisterBenchmark(
                name.c_str(),
                [=](benchmark::State& s) { BM_Gemv(s, dtype, isa, rows, cols, threads, true); })
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
          }
        }
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
