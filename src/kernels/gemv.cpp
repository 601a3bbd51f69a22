// Dispatching entry points of kernels/gemv.h (the variant follows active_isa()).
#include "kernels/gemv.h"

#include "kernels/dispatch.h"

namespace dsv4::kernels {

void gemv_bf16_f32(const WeightsBf16& w, const float* x, float* y, size_t row_begin,
                   size_t row_end) {
  DSV4_DISPATCH_ISA(gemv_bf16_f32, w, x, y, row_begin, row_end);
}

void gemv_f8e4m3_f32(const WeightsF8e4m3& w, const float* x, float* y, size_t row_begin,
                     size_t row_end) {
  DSV4_DISPATCH_ISA(gemv_f8e4m3_f32, w, x, y, row_begin, row_end);
}

void gemv_f4e2m1_f32(const WeightsF4e2m1& w, const float* x, float* y, size_t row_begin,
                     size_t row_end) {
  DSV4_DISPATCH_ISA(gemv_f4e2m1_f32, w, x, y, row_begin, row_end);
}

void gemv_f8e4m3_bf16(const WeightsF8e4m3& w, const uint16_t* x, float* y, size_t row_begin,
                      size_t row_end) {
  DSV4_DISPATCH_ISA(gemv_f8e4m3_bf16, w, x, y, row_begin, row_end);
}

void gemv_f4e2m1_bf16(const WeightsF4e2m1& w, const uint16_t* x, float* y, size_t row_begin,
                      size_t row_end) {
  DSV4_DISPATCH_ISA(gemv_f4e2m1_bf16, w, x, y, row_begin, row_end);
}

void gemm_bf16_f32(const WeightsBf16& w, const float* x, size_t ldx, size_t batch, float* y,
                   size_t ldy, size_t row_begin, size_t row_end) {
  DSV4_DISPATCH_ISA(gemm_bf16_f32, w, x, ldx, batch, y, ldy, row_begin, row_end);
}

void gemm_f8e4m3_f32(const WeightsF8e4m3& w, const float* x, size_t ldx, size_t batch, float* y,
                     size_t ldy, size_t row_begin, size_t row_end) {
  DSV4_DISPATCH_ISA(gemm_f8e4m3_f32, w, x, ldx, batch, y, ldy, row_begin, row_end);
}

void gemm_f4e2m1_f32(const WeightsF4e2m1& w, const float* x, size_t ldx, size_t batch, float* y,
                     size_t ldy, size_t row_begin, size_t row_end) {
  DSV4_DISPATCH_ISA(gemm_f4e2m1_f32, w, x, ldx, batch, y, ldy, row_begin, row_end);
}

}  // namespace dsv4::kernels
