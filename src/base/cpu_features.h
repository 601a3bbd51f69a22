// base/cpu_features.h — x86 CPU feature detection (CPUID + XGETBV), done once.
#pragma once

#include <string>

namespace dsv4 {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx_vnni = false;
  std::string brand;  // "Intel(R) Xeon(R) ..." from CPUID leaves 0x80000002..4

  // AVX2 + FMA + F16C, with the OS saving YMM state.
  bool has_avx2_tier() const { return avx2 && fma && f16c; }
  // The tier our *_avx512.cpp files are compiled for: F/BW/VL/DQ + VNNI + BF16.
  bool has_avx512_tier() const {
    return avx512f && avx512bw && avx512vl && avx512dq && avx512_vnni && avx512_bf16;
  }
  std::string summary() const;  // "avx2 fma f16c avx512f ... avx512_bf16"
};

const CpuFeatures& cpu_features();

}  // namespace dsv4
