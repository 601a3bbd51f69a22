// kernels/x86/prefetch.h — software prefetch of V4 attention records for the ISA translation
// units. Static functions only, so each ISA file keeps its own copy (see scratch.h).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::kernels::x86 {

// Every cache line of one record into L1.
static inline void prefetch_record(const uint8_t* p, size_t bytes) {
  for (size_t o = 0; o < bytes; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

// Record j (j >= 1) does not directly follow record j - 1 in memory: the hardware prefetcher
// does not see it coming (the selected entries of a CSA token; not the window or HCA entries).
static inline bool scattered(const uint8_t* const* recs, size_t j, size_t rec_bytes) {
  return recs[j] != recs[j - 1] + rec_bytes;
}

}  // namespace dsv4::kernels::x86
