// Roofline probes (kernels/probe.h): the scalar `_ref` twins and the dispatching entry points.
// The _ref probes measure what plain C++ loops reach (the compiler may vectorize them at the
// base -march); an empty asm statement with a memory clobber makes every round reload its
// operands, so the rounds cannot be folded.
#include "kernels/probe.h"

#include "kernels/dispatch.h"

namespace dsv4::kernels {

namespace {
constexpr int kRefLanes = 64;  // products per chain and round in the _ref dot probes
}

uint64_t probe_read_ref(const uint8_t* p, size_t n_bytes) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  const size_t n = n_bytes / 8;
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i + 4 <= n; i += 4) {
    a += w[i];
    b += w[i + 1];
    c += w[i + 2];
    d += w[i + 3];
  }
  return a + b + c + d;
}

uint64_t probe_dot_i8_ref(uint64_t iters, uint64_t* sink) {
  uint8_t a[kRefLanes];
  int8_t b[kRefLanes];
  for (int i = 0; i < kRefLanes; ++i) a[i] = 1, b[i] = 1;
  uint32_t acc[kProbeChains] = {};  // unsigned: wraps, never overflows
  for (uint64_t it = 0; it < iters; ++it) {
    asm volatile("" : : "r"(a), "r"(b) : "memory");
    for (int c = 0; c < kProbeChains; ++c)
      for (int i = 0; i < kRefLanes; ++i)
        acc[c] += static_cast<uint32_t>(static_cast<int32_t>(a[i]) * static_cast<int32_t>(b[i]));
  }
  uint64_t s = 0;
  for (uint32_t v : acc) s += v;
  *sink += s;
  return iters * kProbeChains * kRefLanes;
}

uint64_t probe_dot_bf16_ref(uint64_t iters, uint64_t* sink) {
  // bf16 values as their f32 bit patterns (bf16 = the top 16 bits of an f32).
  float a[kRefLanes], b[kRefLanes];
  for (int i = 0; i < kRefLanes; ++i) a[i] = 1.0f, b[i] = 0x1p-20f;
  float acc[kProbeChains];
  for (float& x : acc) x = 1.0f;
  for (uint64_t it = 0; it < iters; ++it) {
    asm volatile("" : : "r"(a), "r"(b) : "memory");
    for (int c = 0; c < kProbeChains; ++c)
      for (int i = 0; i < kRefLanes; ++i) acc[c] += a[i] * b[i];
  }
  double s = 0;
  for (float v : acc) s += v;
  *sink += static_cast<uint64_t>(s);
  return iters * kProbeChains * kRefLanes;
}

uint64_t probe_fma_f32_ref(uint64_t iters, uint64_t* sink) {
  return probe_dot_bf16_ref(iters, sink);  // the same f32 multiply-add loop
}

#define DSV4_PROBE_DISPATCH(name, ...)   \
  switch (active_isa()) {                \
    case Isa::avx512:                    \
      return name##_avx512(__VA_ARGS__); \
    case Isa::avx2:                      \
      return name##_avx2(__VA_ARGS__);   \
    case Isa::ref:                       \
      break;                             \
  }                                      \
  return name##_ref(__VA_ARGS__)

uint64_t probe_read(const uint8_t* p, size_t n_bytes) {
  DSV4_PROBE_DISPATCH(probe_read, p, n_bytes);
}
uint64_t probe_dot_i8(uint64_t iters, uint64_t* sink) {
  DSV4_PROBE_DISPATCH(probe_dot_i8, iters, sink);
}
uint64_t probe_dot_bf16(uint64_t iters, uint64_t* sink) {
  DSV4_PROBE_DISPATCH(probe_dot_bf16, iters, sink);
}
uint64_t probe_fma_f32(uint64_t iters, uint64_t* sink) {
  DSV4_PROBE_DISPATCH(probe_fma_f32, iters, sink);
}

#undef DSV4_PROBE_DISPATCH

const char* probe_dot_i8_instruction() {
  switch (active_isa()) {
    case Isa::avx512:
      return "vpdpbusd zmm (AVX-512 VNNI)";
    case Isa::avx2:
      return "vpmaddubsw+vpmaddwd+vpaddd ymm";
    case Isa::ref:
      break;
  }
  return "scalar C++";
}
const char* probe_dot_bf16_instruction() {
  switch (active_isa()) {
    case Isa::avx512:
      return "vdpbf16ps zmm (AVX-512 BF16)";
    case Isa::avx2:
      return "bf16->f32 + vfmadd231ps ymm";
    case Isa::ref:
      break;
  }
  return "scalar C++";
}
const char* probe_fma_f32_instruction() {
  switch (active_isa()) {
    case Isa::avx512:
      return "vfmadd231ps zmm";
    case Isa::avx2:
      return "vfmadd231ps ymm";
    case Isa::ref:
      break;
  }
  return "scalar C++";
}

}  // namespace dsv4::kernels
