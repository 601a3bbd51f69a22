// kernels/x86/scratch.h — a growable scratch array for the ISA translation units.
// Why not std::vector: a template instantiated in an *_avx2/*_avx512.cpp file is a weak symbol,
// and the linker may hand that ISA-compiled copy to every other caller in the binary, which
// would then run AVX-512 code on CPUs without it. This class lives in an anonymous namespace,
// so each ISA file gets its own internal copy (tests/isa_symbols.cmake checks the objects).
#pragma once

#include <cstddef>
#include <cstdlib>

#include "base/check.h"

namespace dsv4::kernels {
namespace {

template <typename T>
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p_); }

  // Contents are unspecified after a resize that grows the capacity.
  void resize(size_t n) {
    if (n > cap_) {
      std::free(p_);
      p_ = static_cast<T*>(std::malloc((n ? n : 1) * sizeof(T)));
      DSV4_CHECK_MSG(p_ != nullptr, "scratch allocation failed");
      cap_ = n;
    }
    n_ = n;
  }
  void assign(size_t n, T value) {
    resize(n);
    for (size_t i = 0; i < n; ++i) p_[i] = value;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

}  // namespace
}  // namespace dsv4::kernels
