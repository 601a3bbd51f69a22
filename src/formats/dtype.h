// formats/dtype.h — element types of checkpoint tensors, as the safetensors format names them.
//
// Purpose: one enum for every element type a safetensors file can declare, with the exact
// header strings, element widths in bits, and the byte size of a shape (including the packed
// sub-byte types). Kernels get the codecs (src/kernels); this file only knows sizes and names.
//
// Invariants:
//   - Every DType has exactly one safetensors header string (the `Dtype` enum of
//     huggingface/safetensors, safetensors/src/tensor.rs; the same 22 codes are accepted by the
//     Python package 0.8.0 in /work/refvenv). Parsing is exact and case-sensitive.
//   - Shapes are outermost first (PyTorch order) and count logical elements, also for packed
//     types: an F4 tensor of shape [n, k] holds n*k values in n*k/2 bytes (the safetensors
//     convention; see `TensorSpec` in safetensors/__init__.pyi).
//   - Sub-byte types (f4_e2m1, f6_*) must have rows that end on a byte boundary:
//     last_dim * bits % 8 == 0, otherwise dtype_bytes() is an error. safetensors itself only
//     asks for the total to be byte aligned; we are stricter because a row that starts
//     mid-byte cannot be handed to a row-range kernel. Scalars of sub-byte types are rejected.
//
// What DeepSeek-V4 checkpoints actually contain (deepseek-ai/DeepSeek-V4-Flash: config.json
// `quantization_config` {quant_method: fp8, fmt: e4m3, weight_block_size: [128, 128]} and
// `expert_dtype: fp4`; transformers' FineGrainedFP8Config documents V4 scales as "ue8m0"):
//   - dense FP8 linears:  `<name>.weight` "F8_E4M3" [n_out, n_in] and `<name>.scale`
//     "F8_E8M0" [ceil(n_out/128), ceil(n_in/128)] (one UE8M0 power of two per 128x128 block;
//     e.g. wq_a: weight [1024, 4096], scale [8, 32]).
//   - routed experts (FP4): `layers.L.ffn.experts.E.w{1,2,3}.weight` stored as "I8" with the
//     *storage* shape [n_out, n_in/2] — two e2m1 codes per byte, element 2j in the low nibble,
//     2j+1 in the high nibble — and `.scale` "F8_E8M0" [n_out, n_in/32] (one scale per 32
//     values along n_in). E.g. w1: weight [2048, 2048] I8 = [2048, 4096] fp4, scale [2048, 128].
//     The model loader re-views such an I8 tensor as f4_e2m1 [n_out, n_in]
//     (safetensors.h: reinterpret()). A checkpoint written with the newer "F4" code carries the
//     logical shape directly; both map to the same bytes.
//   - BF16 for embeddings, norms, the compressor/indexer projections (they ship with no scale;
//     transformers modeling_deepseek_v4.py `_keep_in_fp32_modules`), F32 for small vectors.
//   Sources: transformers 5.24 integrations/finegrained_fp8.py (Fp8Dequantize._unpack_fp4:
//   "two e2m1 nibbles per int8 byte", low nibble first; ue8m0 scales as float8_e8m0fnu),
//   quantization_config.py (scale_fmt "ue8m0"), public tools that list the V4-Flash header
//   (expert regions `w1.weight I8 (2048, 2048)`, `w1.scale F8_E8M0 (2048, 128)`;
//   `wq_a.weight F8_E4M3` with `F8_E8M0` scale), safetensors tensor.rs `Dtype`/`bitsize()`.
//
// Non-goals: value conversion (kernels/), complex arithmetic, any dtype that safetensors cannot
// name. Rejected alternative: a separate "f4 stored as i8" dtype — the bytes are identical, so
// the reinterpretation lives in one explicit call in the loader instead of in every switch.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/result.h"

namespace dsv4::formats {

// Values spelled like the outside world (torch / ml_dtypes names without the "fn"/"fnu"
// suffixes where the format has only one variant in practice). Order is not meaningful and
// must not be persisted; persist dtype_safetensors_name() instead.
enum class DType : uint8_t {
  f64,          // "F64"   IEEE binary64
  f32,          // "F32"   IEEE binary32
  f16,          // "F16"   IEEE binary16
  bf16,         // "BF16"  bfloat16 (upper half of an f32)
  f8_e4m3,      // "F8_E4M3"     OCP e4m3fn: no inf, 0x7f/0xff = NaN, max 448
  f8_e5m2,      // "F8_E5M2"     OCP e5m2 (IEEE-like, has inf)
  f8_e4m3fnuz,  // "F8_E4M3FNUZ" AMD variant: bias 8, 0x80 = NaN, no -0
  f8_e5m2fnuz,  // "F8_E5M2FNUZ" AMD variant: bias 16, 0x80 = NaN, no -0
  f8_e8m0,      // "F8_E8M0"     UE8M0 scale: value 2^(code-127), 0xff = NaN, no sign
  f6_e2m3,      // "F6_E2M3"     OCP MX FP6, packed bit-contiguously
  f6_e3m2,      // "F6_E3M2"     OCP MX FP6, packed bit-contiguously
  f4_e2m1,      // "F4"          OCP MX FP4 e2m1, 2 per byte, element 2j in the low nibble
  c64,          // "C64"   complex of two f32
  i8,           // "I8"
  u8,           // "U8"
  i16,          // "I16"
  u16,          // "U16"
  i32,          // "I32"
  u32,          // "U32"
  i64,          // "I64"
  u64,          // "U64"
  boolean,      // "BOOL"  one byte, 0 or 1 (`bool` is a C++ keyword)
};

inline constexpr int kDTypeCount = 22;

// Largest rank we accept in a shape. Real checkpoints use <= 4 (expert stacks); the bound
// keeps error messages and fuzzing sane.
inline constexpr size_t kMaxRank = 16;

// "f8_e4m3" — the enum spelling, for logs and our own files.
std::string_view dtype_name(DType t);
// "F8_E4M3" — the exact safetensors header string.
std::string_view dtype_safetensors_name(DType t);
// Exact, case-sensitive safetensors header string -> DType; nullopt for anything else.
std::optional<DType> dtype_from_safetensors(std::string_view s);
// Our spelling ("bf16", "f8_e4m3", ...) -> DType; nullopt for anything else.
std::optional<DType> dtype_from_name(std::string_view s);

// Bits per element: 4 (f4_e2m1), 6 (f6_*), 8, 16, 32, 64 (f64, i64, u64, c64).
int dtype_bits(DType t);
// True for the sub-byte types whose elements share bytes (f4_e2m1, f6_e2m3, f6_e3m2).
bool dtype_is_packed(DType t);
bool dtype_is_float(DType t);  // f*, bf16, c64 (e8m0 counts: it is a float scale)

// Product of the dims. Errors (invalid_argument): rank > kMaxRank, a negative dim, or a
// product that does not fit in int64.
Result<int64_t> shape_elements(std::span<const int64_t> shape);

// Bytes that `shape` of `t` occupies, row-major, no padding. Errors (invalid_argument):
// everything shape_elements() rejects, a byte size that overflows int64, and for packed types
// a last dim (or a scalar) whose bits do not end on a byte boundary.
Result<int64_t> dtype_bytes(DType t, std::span<const int64_t> shape);

// "[2, 3, 4]" ("[]" for a scalar).
std::string shape_string(std::span<const int64_t> shape);

}  // namespace dsv4::formats
