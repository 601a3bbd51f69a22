// kernels/gemv.h — matrix-vector (decode) and small-batch matrix-matrix (prefill, MoE) products
// with quantized weights and f32 activations.
//
// Purpose: y = W·x for every linear layer of DeepSeek-V4 on CPU, reading the weights in the
// checkpoint's own layout (mmap, no conversion):
//   bf16                 W [rows, cols]                                   (nn.Linear weight)
//   f8_e4m3fn            W [rows, cols], scales [ceil(rows/128), ceil(cols/128)] f32 or ue8m0
//                        (`weight_scale_inv` / `.scale`: W_true[r,c] = W[r,c]·s[r/128, c/128])
//   f4_e2m1 (experts)    W [rows, ceil(cols/2)] packed low nibble first,
//                        scales [rows, ceil(cols/32)] ue8m0 (W_true[r,c] = W[r,c]·s[r, c/32])
// Math: y[r] = Σ_blocks s_block · Σ_{k in block} W[r,k]·x[k], accumulated in f32. The _ref twins
// do exactly this, sequentially; SIMD variants use a different summation order, so results agree
// to a few ulps of Σ|W·x| (the tests state the bound), not bit for bit.
//
// Threads: kernels never spawn or know about threads. Every entry point takes a row range
// [row_begin, row_end) and writes only y[row_begin, row_end) (or those columns of Y), so the
// caller splits rows over a ThreadPool (any split; rows are independent).
//
// Activations: f32 (any value), or bf16 (gemv_*_bf16: the fast path for activations the
// reference has quantized). DeepSeek's reference quantizes activations to f8_e4m3 with per-128
// block scales (act_quant) before every fp8/fp4 GEMM; to reproduce that, run
// fake_quantize_f8e4m3_blocks (kernels/codecs.h) on x first: the products are then the
// reference's up to f32 summation order.
//
// Invariants: weights must hold finite codes for the SIMD variants (f8 NaN codes 0x7F/0xFF never
// occur in checkpoints: the quantizer clamps to ±448; a _ref kernel propagates them as NaN, the
// f32-activation SIMD kernels read them as ±480). Scales may be any code (NaN scales give NaN
// rows everywhere; ue8m0 0 is 2^-127).
// Shapes need not be multiples of the blocks: partial blocks at the right/bottom edge use their
// block's scale. Pointers need no alignment.
// Non-goals: bias (V4 linears have none), transposed weights, int8 weights, a compute-optimal
// large-batch GEMM (gemm_* accept any batch but re-decode each weight tile per 16 rows of X).
// Rejected: converting f8/f4 weights to f32 or bf16 at load (2-4x the memory traffic per token);
// a 256-entry gather for f8 decode (slower than the bit tricks / VPERMI2W tables used).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/codecs.h"

namespace dsv4::kernels {

inline constexpr size_t kF8WeightBlock = 128;  // f8 weight scale block, both dimensions
inline constexpr size_t kF4WeightBlock = 32;   // f4 weight scale block along cols

// Views of a weight matrix in checkpoint layout (non-owning; rows = out_features,
// cols = in_features).
struct WeightsBf16 {
  const uint16_t* data = nullptr;  // [rows, cols] bf16
  size_t rows = 0, cols = 0;
};

struct WeightsF8e4m3 {
  const uint8_t* data = nullptr;  // [rows, cols] f8_e4m3fn
  const void* scales = nullptr;   // [ceil(rows/128), ceil(cols/128)] f32 or ue8m0 (scale_format)
  ScaleFormat scale_format = ScaleFormat::ue8m0;
  size_t rows = 0, cols = 0;
};

struct WeightsF4e2m1 {
  const uint8_t* data = nullptr;    // [rows, ceil(cols/2)] f4_e2m1, element 2i low nibble
  const uint8_t* scales = nullptr;  // [rows, ceil(cols/32)] ue8m0
  size_t rows = 0, cols = 0;
};

// Bytes of one packed f4 row / one scale row (row strides).
static constexpr size_t f4_row_bytes(size_t cols) {
  return (cols + 1) / 2;
}
static constexpr size_t f4_scales_per_row(size_t cols) {
  return (cols + kF4WeightBlock - 1) / kF4WeightBlock;
}
static constexpr size_t f8_scale_cols(size_t cols) {
  return (cols + kF8WeightBlock - 1) / kF8WeightBlock;
}
static constexpr size_t f8_scale_rows(size_t rows) {
  return (rows + kF8WeightBlock - 1) / kF8WeightBlock;
}

// Block scale s[row/128, col_block] of an f8 weight as f32.
static inline float f8_weight_scale(const WeightsF8e4m3& w, size_t row, size_t col_block) {
  const size_t i = (row / kF8WeightBlock) * f8_scale_cols(w.cols) + col_block;
  return w.scale_format == ScaleFormat::f32
             ? static_cast<const float*>(w.scales)[i]
             : decode_ue8m0(static_cast<const uint8_t*>(w.scales)[i]);
}

// ---------------------------------------------------------------------------------------------
// GEMV: y[r] = Σ_k W[r,k]·x[k] for r in [row_begin, row_end).
//   x: [cols] f32; y: [rows] f32 (indexed by absolute row; other entries untouched).
// ---------------------------------------------------------------------------------------------
void gemv_bf16_f32(const WeightsBf16& w, const float* x, float* y, size_t row_begin,
                   size_t row_end);
void gemv_bf16_f32_ref(const WeightsBf16& w, const float* x, float* y, size_t row_begin,
                       size_t row_end);
void gemv_bf16_f32_avx2(const WeightsBf16& w, const float* x, float* y, size_t row_begin,
                        size_t row_end);
void gemv_bf16_f32_avx512(const WeightsBf16& w, const float* x, float* y, size_t row_begin,
                          size_t row_end);

void gemv_f8e4m3_f32(const WeightsF8e4m3& w, const float* x, float* y, size_t row_begin,
                     size_t row_end);
void gemv_f8e4m3_f32_ref(const WeightsF8e4m3& w, const float* x, float* y, size_t row_begin,
                         size_t row_end);
void gemv_f8e4m3_f32_avx2(const WeightsF8e4m3& w, const float* x, float* y, size_t row_begin,
                          size_t row_end);
void gemv_f8e4m3_f32_avx512(const WeightsF8e4m3& w, const float* x, float* y, size_t row_begin,
                            size_t row_end);

void gemv_f4e2m1_f32(const WeightsF4e2m1& w, const float* x, float* y, size_t row_begin,
                     size_t row_end);
void gemv_f4e2m1_f32_ref(const WeightsF4e2m1& w, const float* x, float* y, size_t row_begin,
                         size_t row_end);
void gemv_f4e2m1_f32_avx2(const WeightsF4e2m1& w, const float* x, float* y, size_t row_begin,
                          size_t row_end);
void gemv_f4e2m1_f32_avx512(const WeightsF4e2m1& w, const float* x, float* y, size_t row_begin,
                            size_t row_end);

// ---------------------------------------------------------------------------------------------
// GEMV with bf16 activations: y[r] = Σ_k W[r,k]·x[k], x: [cols] bf16 (y as above).
// What the reference's fp8_gemm / fp4_gemm compute: their activation is act_quant's f8_e4m3 code
// times a power-of-two block scale (scale_fmt "ue8m0", as in the V4 configs), a value that bf16
// holds exactly; so fake_quantize_f8e4m3_blocks + convert_f32_to_bf16 + these kernels reproduce
// the reference up to f32 summation order. The AVX-512 variants decode the weights straight to
// bf16 and use VDPBF16PS (32 products per instruction), which is what lets one core keep up with
// DRAM on f4/f8 weights. VDPBF16PS treats bf16 subnormal inputs (|x| < 2^-126) as zero and flushes
// subnormal sums; the _ref and AVX2 twins convert x to f32 exactly and run the f32 kernels.
// ---------------------------------------------------------------------------------------------
void gemv_f8e4m3_bf16(const WeightsF8e4m3& w, const uint16_t* x, float* y, size_t row_begin,
                      size_t row_end);
void gemv_f8e4m3_bf16_ref(const WeightsF8e4m3& w, const uint16_t* x, float* y, size_t row_begin,
                          size_t row_end);
void gemv_f8e4m3_bf16_avx2(const WeightsF8e4m3& w, const uint16_t* x, float* y, size_t row_begin,
                           size_t row_end);
void gemv_f8e4m3_bf16_avx512(const WeightsF8e4m3& w, const uint16_t* x, float* y, size_t row_begin,
                             size_t row_end);

void gemv_f4e2m1_bf16(const WeightsF4e2m1& w, const uint16_t* x, float* y, size_t row_begin,
                      size_t row_end);
void gemv_f4e2m1_bf16_ref(const WeightsF4e2m1& w, const uint16_t* x, float* y, size_t row_begin,
                          size_t row_end);
void gemv_f4e2m1_bf16_avx2(const WeightsF4e2m1& w, const uint16_t* x, float* y, size_t row_begin,
                           size_t row_end);
void gemv_f4e2m1_bf16_avx512(const WeightsF4e2m1& w, const uint16_t* x, float* y, size_t row_begin,
                             size_t row_end);

// ---------------------------------------------------------------------------------------------
// Small-batch GEMM: Y[b, r] = Σ_k W[r,k]·X[b,k] for b < batch, r in [row_begin, row_end).
//   X: [batch, cols] f32 with row stride ldx (>= cols); Y: [batch, rows] f32 with row stride ldy
//   (>= rows; only columns [row_begin, row_end) written). Each weight row is read once per call
//   (decoded once, reused for every batch row), so this is the kernel for prefill chunks and for
//   the tokens routed to one expert. Any batch works; it is processed kGemmMaxBatch at a time.
//   Batch invariance: Y[b, r] is computed by the same sequence of operations whatever `batch`,
//   b's position in the batch and the row range are, so a prompt prefilled in chunks of any size
//   equals token-by-token decode bit for bit (the model tests rely on it). For _ref and _avx512,
//   gemm_* also equals gemv_*_f32 bit for bit (batch 1 calls the GEMV kernel; larger batches
//   replay its arithmetic from a decoded tile), so decode pays no tile pass; the _avx2 gemm is
//   batch-invariant but uses the tile for batch 1 too (its order differs from _avx2 gemv).
// ---------------------------------------------------------------------------------------------
inline constexpr size_t kGemmMaxBatch = 16;

void gemm_bf16_f32(const WeightsBf16& w, const float* x, size_t ldx, size_t batch, float* y,
                   size_t ldy, size_t row_begin, size_t row_end);
void gemm_bf16_f32_ref(const WeightsBf16& w, const float* x, size_t ldx, size_t batch, float* y,
                       size_t ldy, size_t row_begin, size_t row_end);
void gemm_bf16_f32_avx2(const WeightsBf16& w, const float* x, size_t ldx, size_t batch, float* y,
                        size_t ldy, size_t row_begin, size_t row_end);
void gemm_bf16_f32_avx512(const WeightsBf16& w, const float* x, size_t ldx, size_t batch, float* y,
                          size_t ldy, size_t row_begin, size_t row_end);

void gemm_f8e4m3_f32(const WeightsF8e4m3& w, const float* x, size_t ldx, size_t batch, float* y,
                     size_t ldy, size_t row_begin, size_t row_end);
void gemm_f8e4m3_f32_ref(const WeightsF8e4m3& w, const float* x, size_t ldx, size_t batch, float* y,
                         size_t ldy, size_t row_begin, size_t row_end);
void gemm_f8e4m3_f32_avx2(const WeightsF8e4m3& w, const float* x, size_t ldx, size_t batch,
                          float* y, size_t ldy, size_t row_begin, size_t row_end);
void gemm_f8e4m3_f32_avx512(const WeightsF8e4m3& w, const float* x, size_t ldx, size_t batch,
                            float* y, size_t ldy, size_t row_begin, size_t row_end);

void gemm_f4e2m1_f32(const WeightsF4e2m1& w, const float* x, size_t ldx, size_t batch, float* y,
                     size_t ldy, size_t row_begin, size_t row_end);
void gemm_f4e2m1_f32_ref(const WeightsF4e2m1& w, const float* x, size_t ldx, size_t batch, float* y,
                         size_t ldy, size_t row_begin, size_t row_end);
void gemm_f4e2m1_f32_avx2(const WeightsF4e2m1& w, const float* x, size_t ldx, size_t batch,
                          float* y, size_t ldy, size_t row_begin, size_t row_end);
void gemm_f4e2m1_f32_avx512(const WeightsF4e2m1& w, const float* x, size_t ldx, size_t batch,
                            float* y, size_t ldy, size_t row_begin, size_t row_end);

}  // namespace dsv4::kernels
