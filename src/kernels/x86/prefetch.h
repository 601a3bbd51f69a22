// kernels/x86/prefetch.h — software prefetch of V4 attention records for the ISA translation
// units, and the record walk the attention kernels share. Static functions only, so each ISA
// file keeps its own copy (see scratch.h).
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

// Bytes of one V4 record (kernels::V4RecordDims::record_bytes(), restated: that inline member
// compiled in an ISA file would be a weak symbol).
static inline size_t v4_record_bytes(size_t head_dim, size_t rope_dim) {
  const size_t nope = head_dim - rope_dim;
  return nope + 2 * rope_dim + (nope / 64 + 7) / 8 * 8;
}

// Walks recs[0, n_keys) in tiles of kTile records: decode(recs[j0 + j], j) for each record j of
// a tile, then tile(nk) once its nk records are decoded. Prefetch schedule:
// - the first tile's records kFirstAhead ahead of their decode where they are scattered: a call
//   of one tile (a 64-key block of a CSA token, its selected entries) would otherwise wait on
//   memory for every record. Adjacent records (the window, HCA entries) are left to the hardware
//   prefetcher. In-process A/B, alternate reps, cold (AVX-512): CSA decode at 64K -3 to -5 %,
//   its 64-token prefill -3 %; HCA unchanged;
// - record j of the next tile while record j of this one is decoded (pointers may be scattered:
//   CSA selections); all at once, the prefetches stall on miss buffers.
template <size_t kTile, size_t kFirstAhead, typename Decode, typename Tile>
static inline void walk_record_tiles(const uint8_t* const* recs, size_t n_keys, size_t rec_bytes,
                                     Decode&& decode, Tile&& tile) {
  const size_t first = n_keys < kTile ? n_keys : kTile;
  for (size_t j = 0; j < kFirstAhead && j < first; ++j) prefetch_record(recs[j], rec_bytes);
  for (size_t j0 = 0; j0 < n_keys; j0 += kTile) {
    const size_t nk = n_keys - j0 < kTile ? n_keys - j0 : kTile;
    const size_t next = n_keys - j0 - nk < kTile ? n_keys - j0 - nk : kTile;
    for (size_t j = 0; j < nk; ++j) {
      if (j0 == 0 && j + kFirstAhead < nk && scattered(recs, j + kFirstAhead, rec_bytes))
        prefetch_record(recs[j + kFirstAhead], rec_bytes);
      if (j < next) prefetch_record(recs[j0 + nk + j], rec_bytes);
      decode(recs[j0 + j], j);
    }
    tile(nk);
  }
}

}  // namespace dsv4::kernels::x86
