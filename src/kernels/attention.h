// kernels/attention.h — attention of one query token over KV records read in place:
// DeepSeek-V4 FP8 records (sliding window + CSA-selected or all HCA compressed entries) and, as a
// baseline for benchmarks, DeepSeek-V3.2-style dense MLA over bf16 latents.
//
// V4 record layout (kv/layout.h record::V4KvEntryFp8 generalised; restated here because kernels
// may not include kv; tests/kernels/attention_test.cpp checks the two agree):
//   [0, nope)                    f8_e4m3 codes of dims [0, nope), nope = head_dim - rope_dim
//   [nope, nope + 2*rope_dim)    bf16 (little endian) dims [nope, head_dim)
//   [.., + nope/64)              ue8m0 scales, scale b for dims [64b, 64b + 64)
//   then zero padding up to a multiple of 8 bytes of scales (584 B for head_dim 512, rope 64)
// The decoded value of a dim is e4m3(code) * 2^(scale - 127) (exact in bf16 and f32) or the bf16.
// K = V: the same decoded record is key and value (DeepSeek-V4's single shared KV head).
//
// Math (per head h, keys j in any order; the _ref twin evaluates it literally):
//   s[h,j] = scale * sum_d bf16(q[h,d]) * k[j,d]        (q rounded to bf16 — the official model
//                                                         feeds bf16 queries; f32 accumulation)
//   p[h,:] = softmax over j of s[h,:] with the sink logit sink[h] in the denominator only
//   out[h,d] = sum_j p[h,j] * v[j,d]                     (f32 p, f32 accumulation)
// Evaluated as online softmax over key tiles, so no [n_heads, n_keys] matrix and no dequantized
// rows beyond one small tile in L1; the state (running max m, sum l, unnormalized acc) of two
// disjoint key sets merges exactly in exact arithmetic, so callers split keys across threads
// (flash-decoding) and merge.
//
// Edge cases: an empty key set leaves the state unchanged; keys whose scores are all -inf count as
// no keys. The AVX-512 variant holds K and V in bf16 in its VDPBF16PS mode (AMD), exact while
// the block scale code is >= 10 (2^-117; the encoder's scales are >= 2^-22 since amax >= 1e-4);
// VDPBF16PS and VCVTNEPS2BF16 treat bf16 subnormals (|x| < 2^-126) as zero. NaN codes (never
// written by the saturating encoder) give unspecified results. Shapes the vector code does not
// cover (head_dim or key_dim not a multiple of 32, value_dim not a multiple of 32, nope not a
// multiple of 64) run the _ref code from the _avx2/_avx512 entry points.
//
// Design (docs/kernels-attention.md): per tile of keys, decode once into a small tile shared by
// all heads (AVX-512: bf16 or f32 rows, heads in SIMD lanes for QK; AVX2: an f32 tile and a
// transposed copy, keys in lanes); online softmax; PV with value dims in registers. Rejected:
// dequantizing whole rows before attention (2 KiB per key per read), QK with keys and query
// dims both in rows (a horizontal sum per head and key), bf16 probabilities for PV (changes the
// math above).
//
// Invariants: pure; no allocation once AttnState/scratch are sized; no threads. Non-goals:
// several query tokens at once (prefill), causal masks (the caller passes the visible keys).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dsv4::kernels {

struct V4RecordDims {
  size_t head_dim = 512, rope_dim = 64;
  size_t nope() const { return head_dim - rope_dim; }
  size_t n_scales() const { return nope() / 64; }
  size_t record_bytes() const { return nope() + 2 * rope_dim + (n_scales() + 7) / 8 * 8; }
};

// rec (one V4 record) -> out: [head_dim] f32, exact (the layout above; tests and debugging).
void decode_v4_record_ref(const uint8_t* rec, V4RecordDims dims, float* out);

// Partial attention state of n_heads heads over some set of keys.
struct AttnState {
  size_t n_heads = 0, dim = 0;             // dim: output width (V4: head_dim; MLA: latent dims)
  std::vector<float> m;                    // [n_heads] running max of s (-inf: no key yet)
  std::vector<float> l;                    // [n_heads] sum of exp(s - m)
  std::vector<float> acc;                  // [n_heads, dim] sum of exp(s - m) * v
  void reset(size_t heads, size_t width);  // empty set of keys
};
// a <- a ∪ b (disjoint key sets).
void attn_state_merge(AttnState& a, const AttnState& b);
// out[h,:] = acc[h,:] / (l[h] + exp(sink[h] - m[h]))  (sink nullptr: no sink); an empty state
// gives 0 (or the sink-only softmax: 0). out: [n_heads, dim].
void attn_state_finish(const AttnState& st, const float* sink, float* out);

// Reusable buffers (decoded key tile, bf16 query). Grows on first use, then stable. One per
// thread (nullptr: the call allocates its own).
struct AttnScratch {
  std::vector<uint8_t> bytes;
};

// Adds keys recs[0..n_keys) (pointers to V4 records) to `st` (st.reset(n_heads, head_dim) first).
// q: [n_heads, head_dim] f32.
void attend_v4_fp8(const float* q, size_t n_heads, V4RecordDims dims, const uint8_t* const* recs,
                   size_t n_keys, float scale, AttnState& st, AttnScratch* scratch = nullptr);
void attend_v4_fp8_ref(const float* q, size_t n_heads, V4RecordDims dims,
                       const uint8_t* const* recs, size_t n_keys, float scale, AttnState& st,
                       AttnScratch* scratch = nullptr);
void attend_v4_fp8_avx2(const float* q, size_t n_heads, V4RecordDims dims,
                        const uint8_t* const* recs, size_t n_keys, float scale, AttnState& st,
                        AttnScratch* scratch = nullptr);
void attend_v4_fp8_avx512(const float* q, size_t n_heads, V4RecordDims dims,
                          const uint8_t* const* recs, size_t n_keys, float scale, AttnState& st,
                          AttnScratch* scratch = nullptr);

// Dense MLA baseline (DeepSeek-V3/V3.2 absorbed attention, no indexer): latents: n_keys
// contiguous rows of `key_dim` bf16 (V3.2: 512 latent + 64 RoPE = 576); the value is the first
// `value_dim` dims of the row (512). q: [n_heads, key_dim] f32 (rounded to bf16 as above).
// st.reset(n_heads, value_dim) first.
void attend_mla_bf16(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                     const uint16_t* latents, size_t n_keys, float scale, AttnState& st,
                     AttnScratch* scratch = nullptr);
void attend_mla_bf16_ref(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                         const uint16_t* latents, size_t n_keys, float scale, AttnState& st,
                         AttnScratch* scratch = nullptr);
void attend_mla_bf16_avx2(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                          const uint16_t* latents, size_t n_keys, float scale, AttnState& st,
                          AttnScratch* scratch = nullptr);
void attend_mla_bf16_avx512(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                            const uint16_t* latents, size_t n_keys, float scale, AttnState& st,
                            AttnScratch* scratch = nullptr);

// ============================================================================================
// Internal: raw-pointer bodies of the _avx2/_avx512 variants. The public variants (built for the
// base ISA in kernels/attention.cpp) check shapes, size the scratch and pass pointers: the
// x86/*_avx*.cpp files use only intrinsics and raw pointers, never std::vector, because a
// template instantiated under AVX-512 flags is a weak symbol the linker may hand to every other
// caller (tests/isa_symbols.cmake). m, l: [n_heads]; acc: [n_heads, value width]; work: at least
// attn_work_bytes_<isa>(...) bytes, 64-byte aligned.
// ============================================================================================
namespace detail {
// How the AVX-512 variant computes q·k (the results differ only in the order of f32 additions):
//   bf16_dot: VDPBF16PS over dim pairs, 32 MACs per instruction. AMD Zen 4 issues one per cycle
//             (as many instructions as 512-bit FMAs: twice the MACs).
//   f32_fma:  VFMADD231PS over single dims (keys widened to f32), 16 MACs per instruction.
//             Intel Xeon (Sapphire/Emerald Rapids) issues VDPBF16PS at ~1/4 of its FMA rate
//             (two FMA ports), so f32 FMA is twice as fast there (bench/attention_bench.cpp,
//             peak/dpbf16 vs peak/fma).
enum class AttnQk : uint8_t { bf16_dot, f32_fma };
// The mode attend_*_avx512 use on this CPU: f32_fma on Intel, bf16_dot otherwise. Fixed per
// process, so results are reproducible on one machine.
AttnQk attn_qk_avx512();
size_t attn_work_bytes_avx2(size_t n_heads, size_t key_dim, size_t value_dim);
size_t attn_work_bytes_avx512(size_t n_heads, size_t key_dim, size_t value_dim);
void attend_v4_fp8_raw_avx2(const float* q, size_t n_heads, size_t head_dim, size_t rope_dim,
                            const uint8_t* const* recs, size_t n_keys, float scale, float* m,
                            float* l, float* acc, uint8_t* work);
void attend_v4_fp8_raw_avx512(const float* q, size_t n_heads, size_t head_dim, size_t rope_dim,
                              const uint8_t* const* recs, size_t n_keys, float scale, float* m,
                              float* l, float* acc, uint8_t* work, AttnQk qk);
void attend_mla_bf16_raw_avx2(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                              const uint16_t* latents, size_t n_keys, float scale, float* m,
                              float* l, float* acc, uint8_t* work);
void attend_mla_bf16_raw_avx512(const float* q, size_t n_heads, size_t key_dim, size_t value_dim,
                                const uint16_t* latents, size_t n_keys, float scale, float* m,
                                float* l, float* acc, uint8_t* work, AttnQk qk);
}  // namespace detail

}  // namespace dsv4::kernels
