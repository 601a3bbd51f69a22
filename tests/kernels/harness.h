// tests/kernels/harness.h — shared helpers for kernel tests: awkward sizes, seeded inputs,
// error metrics, and a loop over every ISA tier this CPU supports.
//
// Pattern (one table of cases per kernel):
//   for (Isa isa : kernels::supported_isas()) for (size_t n : kAwkwardSizes) {
//     ... run <kernel>_<isa> and <kernel>_ref on the same seeded input, compare ...
//   }
// Each test states its tolerance and why in a comment next to the EXPECT.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/dispatch.h"

namespace dsv4::kernels::testing {

// Sizes that hit every remainder path of 8/16/32/64-wide loops and block boundaries.
inline const std::vector<size_t> kAwkwardSizes = {1, 3, 7, 17, 33, 64, 127, 129, 1000, 4097};

inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng());
  return v;
}

// max_i |a_i - b_i| / max(max_i |b_i|, tiny): error relative to the reference's scale.
inline double max_rel_error(const float* a, const float* ref, size_t n) {
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - ref[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
  }
  return err / scale;
}

inline std::string isa_label(Isa isa) {
  return std::string(isa_name(isa));
}

// The variant of a kernel for an ISA tier: pick(isa, k_ref, k_avx2, k_avx512), or
// DSV4_ISA_VARIANT(isa, k) for a kernel named k with all three.
template <typename F>
F pick(Isa isa, F ref, F avx2, F avx512) {
  switch (isa) {
    case Isa::avx512:
      return avx512;
    case Isa::avx2:
      return avx2;
    case Isa::ref:
      break;
  }
  return ref;
}
#define DSV4_ISA_VARIANT(isa, name) \
  ::dsv4::kernels::testing::pick((isa), &name##_ref, &name##_avx2, &name##_avx512)

}  // namespace dsv4::kernels::testing
