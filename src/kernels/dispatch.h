// kernels/dispatch.h — which instruction-set variant of each kernel runs.
//
// Every kernel exists as <name>_ref (scalar, obviously correct, kernels/ref/), and optionally
// <name>_avx2 / <name>_avx512 (kernels/x86/, one translation unit per ISA compiled with its own
// target flags). The variant is chosen once, at first use, from the CPU features and the
// environment: DSV4_KERNELS=ref|avx2|avx512 forces a tier (never above what the CPU supports;
// `ref` is what valgrind needs). Builds with DSV4_REF_KERNELS_ONLY=1 (the `generic` preset)
// always use `ref`. Tests call the variants directly; everything else calls the dispatching
// entry points, which read active_isa().
#pragma once

#include <string_view>
#include <vector>

namespace dsv4::kernels {

enum class Isa { ref = 0, avx2 = 1, avx512 = 2 };

std::string_view isa_name(Isa isa);
// Highest tier this CPU (and build) can run.
Isa best_supported_isa();
// The tier in use: min(best_supported_isa(), DSV4_KERNELS override), decided once.
Isa active_isa();
// For tests and benchmarks: every tier this CPU supports, ref first.
std::vector<Isa> supported_isas();
// For tests/benchmarks only: override the active tier (clamped to what is supported).
void set_active_isa_for_testing(Isa isa);

}  // namespace dsv4::kernels

// The body of a dispatching entry point: the active tier's variant name##_avx512 / _avx2, else
// name##_ref (every kernel has all three; a tier without its own code forwards to a lower one).
#define DSV4_DISPATCH_ISA(name, ...)       \
  switch (::dsv4::kernels::active_isa()) { \
    case ::dsv4::kernels::Isa::avx512:     \
      return name##_avx512(__VA_ARGS__);   \
    case ::dsv4::kernels::Isa::avx2:       \
      return name##_avx2(__VA_ARGS__);     \
    case ::dsv4::kernels::Isa::ref:        \
      break;                               \
  }                                        \
  return name##_ref(__VA_ARGS__)
