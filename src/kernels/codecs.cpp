// Dispatching entry points of kernels/codecs.h (the variant follows active_isa()).
#include "kernels/codecs.h"

#include "kernels/dispatch.h"

namespace dsv4::kernels {

void convert_bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  switch (active_isa()) {
    case Isa::avx512:
      return convert_bf16_to_f32_avx512(src, dst, n);
    case Isa::avx2:
      return convert_bf16_to_f32_avx2(src, dst, n);
    case Isa::ref:
      break;
  }
  convert_bf16_to_f32_ref(src, dst, n);
}

void convert_f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  switch (active_isa()) {
    case Isa::avx512:
      return convert_f32_to_bf16_avx512(src, dst, n);
    case Isa::avx2:
      return convert_f32_to_bf16_avx2(src, dst, n);
    case Isa::ref:
      break;
  }
  convert_f32_to_bf16_ref(src, dst, n);
}

void convert_f8e4m3_to_f32(const uint8_t* src, float* dst, size_t n) {
  switch (active_isa()) {
    case Isa::avx512:
      return convert_f8e4m3_to_f32_avx512(src, dst, n);
    case Isa::avx2:
      return convert_f8e4m3_to_f32_avx2(src, dst, n);
    case Isa::ref:
      break;
  }
  convert_f8e4m3_to_f32_ref(src, dst, n);
}

void dequant_f4e2m1_to_f32(const uint8_t* src, const uint8_t* scales, float* dst, size_t n) {
  switch (active_isa()) {
    case Isa::avx512:
      return dequant_f4e2m1_to_f32_avx512(src, scales, dst, n);
    case Isa::avx2:
      return dequant_f4e2m1_to_f32_avx2(src, scales, dst, n);
    case Isa::ref:
      break;
  }
  dequant_f4e2m1_to_f32_ref(src, scales, dst, n);
}

}  // namespace dsv4::kernels
