// Scalar reference GEMV/GEMM (kernels/gemv.h): decode each weight, multiply, add, in index order,
// with one f32 partial sum per scale block: y = Σ_blocks s · Σ_{k in block} q_k·x_k.
#include <algorithm>
#include <array>
#include <vector>

#include "kernels/codecs.h"
#include "kernels/gemv.h"

namespace dsv4::kernels {
namespace {

// Every f8_e4m3 code and every f4_e2m1 code decoded once by the scalar decoders of codecs.h.
constexpr std::array<float, 256> kF8Values = [] {
  std::array<float, 256> t{};
  for (int c = 0; c < 256; ++c) t[static_cast<size_t>(c)] = decode_f8e4m3(static_cast<uint8_t>(c));
  return t;
}();
constexpr std::array<float, 16> kF4Values = [] {
  std::array<float, 16> t{};
  for (int c = 0; c < 16; ++c) t[static_cast<size_t>(c)] = decode_f4e2m1(static_cast<uint8_t>(c));
  return t;
}();

float dot_bf16_row(const WeightsBf16& w, size_t r, const float* x) {
  const uint16_t* row = w.data + r * w.cols;
  float acc = 0.0f;
  for (size_t k = 0; k < w.cols; ++k) acc += decode_bf16(row[k]) * x[k];
  return acc;
}

float dot_f8_row(const WeightsF8e4m3& w, size_t r, const float* x) {
  const uint8_t* row = w.data + r * w.cols;
  float acc = 0.0f;
  for (size_t k0 = 0, cb = 0; k0 < w.cols; k0 += kF8WeightBlock, ++cb) {
    const size_t k1 = std::min(k0 + kF8WeightBlock, w.cols);
    float part = 0.0f;
    for (size_t k = k0; k < k1; ++k) part += kF8Values[row[k]] * x[k];
    acc += part * f8_weight_scale(w, r, cb);
  }
  return acc;
}

float dot_f4_row(const WeightsF4e2m1& w, size_t r, const float* x) {
  const uint8_t* row = w.data + r * f4_row_bytes(w.cols);
  const uint8_t* srow = w.scales + r * f4_scales_per_row(w.cols);
  float acc = 0.0f;
  for (size_t k0 = 0, cb = 0; k0 < w.cols; k0 += kF4WeightBlock, ++cb) {
    const size_t k1 = std::min(k0 + kF4WeightBlock, w.cols);
    float part = 0.0f;
    for (size_t k = k0; k < k1; ++k) {
      const uint8_t byte = row[k / 2];
      part += kF4Values[(k & 1) ? byte >> 4 : byte & 0xF] * x[k];
    }
    acc += part * decode_ue8m0(srow[cb]);
  }
  return acc;
}

// x bf16 -> f32 (exact) in a per-thread buffer.
const float* widen(const uint16_t* x, size_t n) {
  static thread_local std::vector<float> buf;
  buf.resize(n);
  convert_bf16_to_f32_ref(x, buf.data(), n);
  return buf.data();
}

}  // namespace

void gemv_f8e4m3_bf16_ref(const WeightsF8e4m3& w, const uint16_t* x, float* y, size_t row_begin,
                          size_t row_end) {
  gemv_f8e4m3_f32_ref(w, widen(x, w.cols), y, row_begin, row_end);
}

void gemv_f4e2m1_bf16_ref(const WeightsF4e2m1& w, const uint16_t* x, float* y, size_t row_begin,
                          size_t row_end) {
  gemv_f4e2m1_f32_ref(w, widen(x, w.cols), y, row_begin, row_end);
}

void gemv_bf16_f32_ref(const WeightsBf16& w, const float* x, float* y, size_t row_begin,
                       size_t row_end) {
  for (size_t r = row_begin; r < row_end; ++r) y[r] = dot_bf16_row(w, r, x);
}

void gemv_f8e4m3_f32_ref(const WeightsF8e4m3& w, const float* x, float* y, size_t row_begin,
                         size_t row_end) {
  for (size_t r = row_begin; r < row_end; ++r) y[r] = dot_f8_row(w, r, x);
}

void gemv_f4e2m1_f32_ref(const WeightsF4e2m1& w, const float* x, float* y, size_t row_begin,
                         size_t row_end) {
  for (size_t r = row_begin; r < row_end; ++r) y[r] = dot_f4_row(w, r, x);
}

void gemm_bf16_f32_ref(const WeightsBf16& w, const float* x, size_t ldx, size_t batch, float* y,
                       size_t ldy, size_t row_begin, size_t row_end) {
  for (size_t b = 0; b < batch; ++b)
    for (size_t r = row_begin; r < row_end; ++r) y[b * ldy + r] = dot_bf16_row(w, r, x + b * ldx);
}

void gemm_f8e4m3_f32_ref(const WeightsF8e4m3& w, const float* x, size_t ldx, size_t batch, float* y,
                         size_t ldy, size_t row_begin, size_t row_end) {
  for (size_t b = 0; b < batch; ++b)
    for (size_t r = row_begin; r < row_end; ++r) y[b * ldy + r] = dot_f8_row(w, r, x + b * ldx);
}

void gemm_f4e2m1_f32_ref(const WeightsF4e2m1& w, const float* x, size_t ldx, size_t batch, float* y,
                         size_t ldy, size_t row_begin, size_t row_end) {
  for (size_t b = 0; b < batch; ++b)
    for (size_t r = row_begin; r < row_end; ++r) y[b * ldy + r] = dot_f4_row(w, r, x + b * ldx);
}

}  // namespace dsv4::kernels
