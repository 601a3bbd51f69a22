// kv/record_codec.h — encode/decode one KV-cache record of the `official` scheme (layout.h
// `record::V4KvEntryFp8`, `record::V4IndexerKeyFp4`), generalised to the config's dims.
//
// Purpose: quantize-on-write and dequantize-on-read for src/kv/cache.h, with DeepSeek-V4's
// inference/model.py rounding rules (its kernel.py `act_quant` with scale_fmt "ue8m0" and
// `fp4_act_quant`):
//   V4 KV entry [head_dim] f32 -> bytes:
//     [0, nope)                  f8_e4m3 codes, nope = head_dim - rope_dim, blocks of 64 dims;
//                                per block: amax = max(max|x|, 1e-4),
//                                s = 2^ceil(log2(amax * f32(1/448))) (exponent read off the
//                                f32 bits, the reference's fast_round_scale),
//                                q = e4m3_rne_satfinite(clamp(x / s, -448, 448))
//     [nope, nope + 2*rope_dim)  bf16 (round to nearest even) RoPE dims, little endian
//     [.., + round_up(nope/64, 8)) ue8m0 scale bytes (k + 127 for s = 2^k), padding bytes 0
//   V4 indexer key [dim] f32 -> bytes:
//     [0, dim/2)                 f4_e2m1 codes, element 2i in the low nibble of byte i;
//     [dim/2, dim/2 + dim/32)    ue8m0 scales, one per 32 dims; per block:
//                                amax = max(max|x|, 6·2^-126), s = 2^ceil(log2(amax * f32(1/6))),
//                                q = e2m1_rne(clamp(x / s, -6, 6))
//   Decoding multiplies the code's value by the block scale (exact in f32).
// Why local codecs: src/kv may depend only on base and formats (not on kernels); these are
// small scalar re-derivations of the same formats, checked code by code against
// src/kernels/codecs.h in tests/kv/cache_test.cpp and block by block against the kernels'
// block quantizers in tests/model/kv_cache_test.cpp.
// Non-goals: SIMD (records are written once per token per layer), the f8_e5m2 format.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dsv4::kv::codec {

inline constexpr size_t kFp8Block = 64;  // official KV entry: one ue8m0 scale per 64 nope dims
inline constexpr size_t kFp4Block = 32;  // official indexer key: one ue8m0 scale per 32 dims

// Scalars. Encoders round to nearest, ties to even.
uint16_t f32_to_bf16(float x);  // NaN -> quiet NaN; overflow -> inf
float bf16_to_f32(uint16_t h);
uint8_t f32_to_e4m3(float x);  // saturates to ±448 (incl. inf); NaN -> 0x7F | sign
float e4m3_to_f32(uint8_t c);
uint8_t f32_to_e2m1(float x);  // low 4 bits; saturates to ±6 (incl. inf and NaN)
float e2m1_to_f32(uint8_t c);  // low 4 bits used
// k such that 2^k = 2^ceil(log2(v)) for finite v > 0, computed on the bits as the reference's
// fast_round_scale does (a subnormal v gives -126).
int pow2_ceil_exponent(float v);

// Record sizes (bytes); equal to layout.cpp's formulas (checked by SequenceCache::create).
size_t v4_entry_bytes(size_t head_dim, size_t rope_dim);
size_t v4_indexer_key_bytes(size_t dim);

// x: [head_dim] f32 -> rec: [v4_entry_bytes] (requires (head_dim - rope_dim) % 64 == 0).
void encode_v4_entry(const float* x, size_t head_dim, size_t rope_dim, uint8_t* rec);
void decode_v4_entry(const uint8_t* rec, size_t head_dim, size_t rope_dim, float* x);
// x: [dim] f32 -> rec: [v4_indexer_key_bytes] (requires dim % 32 == 0).
void encode_v4_indexer_key(const float* x, size_t dim, uint8_t* rec);
void decode_v4_indexer_key(const uint8_t* rec, size_t dim, float* x);

}  // namespace dsv4::kv::codec
