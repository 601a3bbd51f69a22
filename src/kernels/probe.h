// kernels/probe.h — machine-roofline probes: how fast one core streams memory and issues the
// multiply-accumulate instructions the attention kernels are built on.
//
// Purpose: `dsv4 bench` measures its floors in the same run as the rows it compares with them
// (a shared VM's bandwidth and clock vary by the minute): the memory floor of a row is
// bytes / (probe_read rate), its compute floor MACs / (probe_dot_* rate). A probe is a kernel:
// single-threaded, no allocation; the caller runs it on every worker of a ThreadPool at once
// (each on its own slice / its own registers) and adds the rates.
//
//   probe_read:     sums the 64-bit words of [p, p + n_bytes) with full-width aligned vector
//                   loads into 4+ independent accumulators (pure sequential read, the pattern
//                   the hardware prefetchers stream best; no stores). Over a buffer much larger
//                   than the last-level cache this is the DRAM read bandwidth.
//   probe_dot_i8:   u8 x s8 -> s32 dot products, `iters` rounds of kProbeChains independent
//                   accumulators on register-resident operands. avx512: VPDPBUSD zmm (64 MACs
//                   per instruction, AVX-512 VNNI — what the FP4 indexer kernel uses);
//                   avx2: VPMADDUBSW + VPMADDWD + VPADDD ymm (32 MACs per triple); ref: scalar.
//   probe_dot_bf16: bf16 x bf16 -> f32. avx512: VDPBF16PS zmm (32 MACs); avx2: bf16 -> f32 by
//                   shift/mask then two VFMADD231PS ymm (16 MACs); ref: scalar.
//   probe_fma_f32:  f32 FMA. avx512: VFMADD231PS zmm (16 MACs); avx2: ymm (8); ref: scalar.
// The dot probes return the multiply-accumulates performed (one product summed into an
// accumulator = 1 MAC) and write a checksum of the accumulators to *sink, so no compiler can
// drop or fold the work. `iters` must be >= 1; ~1e6 iterations take about a millisecond.
//
// Invariants: the ISA variants differ only in the instruction measured; the un-suffixed entry
// points follow active_isa() (kernels/dispatch.h), so the floors describe the tier the kernels
// run on. Non-goals: latency, caches other than "fits / does not fit", write bandwidth.
// Rejected alternative: reusing a real kernel as the compute probe. Its rate already includes
// the decode overheads the floor is meant to expose.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dsv4::kernels {

// Independent accumulator chains per dot-probe round (enough to cover latency x throughput of
// the dot instructions on current x86 cores: ~5 cycles x 2 per cycle).
inline constexpr int kProbeChains = 12;

// Sum of the 64-bit words of [p, p + n_bytes). p 64-byte aligned, n_bytes % 256 == 0.
uint64_t probe_read(const uint8_t* p, size_t n_bytes);
uint64_t probe_read_ref(const uint8_t* p, size_t n_bytes);
uint64_t probe_read_avx2(const uint8_t* p, size_t n_bytes);
uint64_t probe_read_avx512(const uint8_t* p, size_t n_bytes);

// Returns the MACs performed; *sink receives a checksum.
uint64_t probe_dot_i8(uint64_t iters, uint64_t* sink);
uint64_t probe_dot_i8_ref(uint64_t iters, uint64_t* sink);
uint64_t probe_dot_i8_avx2(uint64_t iters, uint64_t* sink);
uint64_t probe_dot_i8_avx512(uint64_t iters, uint64_t* sink);

uint64_t probe_dot_bf16(uint64_t iters, uint64_t* sink);
uint64_t probe_dot_bf16_ref(uint64_t iters, uint64_t* sink);
uint64_t probe_dot_bf16_avx2(uint64_t iters, uint64_t* sink);
uint64_t probe_dot_bf16_avx512(uint64_t iters, uint64_t* sink);

uint64_t probe_fma_f32(uint64_t iters, uint64_t* sink);
uint64_t probe_fma_f32_ref(uint64_t iters, uint64_t* sink);
uint64_t probe_fma_f32_avx2(uint64_t iters, uint64_t* sink);
uint64_t probe_fma_f32_avx512(uint64_t iters, uint64_t* sink);

// The instruction each dot probe measures on the active tier, for reports
// ("vpdpbusd zmm", "vdpbf16ps zmm", ...).
const char* probe_dot_i8_instruction();
const char* probe_dot_bf16_instruction();
const char* probe_fma_f32_instruction();

}  // namespace dsv4::kernels
