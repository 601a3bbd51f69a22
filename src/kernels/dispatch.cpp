#include "kernels/dispatch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "base/cpu_features.h"
#include "base/log.h"

namespace dsv4::kernels {
namespace {

Isa initial_isa() {
  Isa best = best_supported_isa();
  const char* e = std::getenv("DSV4_KERNELS");
  if (!e || !*e) return best;
  Isa want = best;
  if (std::strcmp(e, "ref") == 0)
    want = Isa::ref;
  else if (std::strcmp(e, "avx2") == 0)
    want = Isa::avx2;
  else if (std::strcmp(e, "avx512") == 0)
    want = Isa::avx512;
  else
    log::warn("DSV4_KERNELS={} not understood (ref|avx2|avx512); using {}", e, isa_name(best));
  if (static_cast<int>(want) > static_cast<int>(best)) {
    log::warn("DSV4_KERNELS={} not supported by this CPU; using {}", e, isa_name(best));
    want = best;
  }
  return want;
}

std::atomic<int>& active() {
  static std::atomic<int> a{static_cast<int>(initial_isa())};
  return a;
}

}  // namespace

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::ref:
      return "ref";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "?";
}

Isa best_supported_isa() {
#if defined(DSV4_REF_KERNELS_ONLY) && DSV4_REF_KERNELS_ONLY
  return Isa::ref;
#else
  const CpuFeatures& f = cpu_features();
  if (f.has_avx512_tier()) return Isa::avx512;
  if (f.has_avx2_tier()) return Isa::avx2;
  return Isa::ref;
#endif
}

Isa active_isa() {
  return static_cast<Isa>(active().load(std::memory_order_relaxed));
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> v;
  for (int i = 0; i <= static_cast<int>(best_supported_isa()); ++i)
    v.push_back(static_cast<Isa>(i));
  return v;
}

void set_active_isa_for_testing(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) isa = best_supported_isa();
  active().store(static_cast<int>(isa));
}

}  // namespace dsv4::kernels
