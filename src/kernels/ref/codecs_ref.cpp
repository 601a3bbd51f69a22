// Scalar reference codecs and the reference block quantizers (see kernels/codecs.h).
#include <algorithm>
#include <array>
#include <cmath>

#include "kernels/codecs.h"

namespace dsv4::kernels {
namespace {

// Every f8_e4m3 code decoded once by the scalar decode_f8e4m3 (obviously the same values).
const std::array<float, 256>& f8e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c)
      t[static_cast<size_t>(c)] = decode_f8e4m3(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// max(|x|) over [x, x+n); NaN values are ignored (the reference's amax would propagate them, but
// then every quantized value of the block is NaN anyway through x / s).
float block_amax(const float* x, size_t n) {
  float amax = 0.0f;
  for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  return amax;
}

// Per-block scale of act_quant: amax floored at 1e-4, times f32(1/448), optionally rounded up to a
// power of two with the reference's bit formula.
float f8_block_scale(const float* x, size_t n, bool pow2_scales) {
  const float amax = std::max(block_amax(x, n), 1e-4f);
  const float s = amax * (1.0f / kF8e4m3Max);
  return pow2_scales ? pow2_f32(pow2_ceil_exponent(s)) : s;
}

// Per-block scale exponent of fp4_act_quant: 2^k with k = ceil(log2(max(amax, 6·2^-126) / 6)).
int f4_block_exponent(const float* x, size_t n) {
  const float amax = std::max(block_amax(x, n), 6.0f * 0x1p-126f);
  return pow2_ceil_exponent(amax * (1.0f / kF4e2m1Max));
}

uint8_t f8_quantize_one(float x, float s) {
  return encode_f8e4m3(std::clamp(x / s, -kF8e4m3Max, kF8e4m3Max));
}

uint8_t f4_quantize_one(float x, float s) {
  return encode_f4e2m1(std::clamp(x / s, -kF4e2m1Max, kF4e2m1Max));
}

}  // namespace

void convert_bf16_to_f32_ref(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = decode_bf16(src[i]);
}

void convert_f32_to_bf16_ref(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = encode_bf16(src[i]);
}

void convert_f8e4m3_to_f32_ref(const uint8_t* src, float* dst, size_t n) {
  const auto& t = f8e4m3_table();
  for (size_t i = 0; i < n; ++i) dst[i] = t[src[i]];
}

void dequant_f4e2m1_to_f32_ref(const uint8_t* src, const uint8_t* scales, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const uint8_t byte = src[i / 2];
    const float v = decode_f4e2m1((i & 1) ? static_cast<uint8_t>(byte >> 4) : byte);
    dst[i] = scales ? v * decode_ue8m0(scales[i / kF4Block]) : v;
  }
}

void quantize_f8e4m3_blocks(const float* x, size_t n, size_t block, bool pow2_scales, uint8_t* q,
                            float* scales) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const float s = f8_block_scale(x + b0, len, pow2_scales);
    scales[bi] = s;
    for (size_t i = 0; i < len; ++i) q[b0 + i] = f8_quantize_one(x[b0 + i], s);
  }
}

void fake_quantize_f8e4m3_blocks(float* x, size_t n, size_t block, bool pow2_scales) {
  for (size_t b0 = 0; b0 < n; b0 += block) {
    const size_t len = std::min(block, n - b0);
    const float s = f8_block_scale(x + b0, len, pow2_scales);
    for (size_t i = 0; i < len; ++i) x[b0 + i] = decode_f8e4m3(f8_quantize_one(x[b0 + i], s)) * s;
  }
}

void quantize_f4e2m1_blocks(const float* x, size_t n, size_t block, uint8_t* q, uint8_t* scales) {
  std::fill(q, q + (n + 1) / 2, uint8_t{0});
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const int k = f4_block_exponent(x + b0, len);
    scales[bi] = static_cast<uint8_t>(k + 127);
    const float s = pow2_f32(k);
    for (size_t i = b0; i < b0 + len; ++i) {
      const uint8_t c = f4_quantize_one(x[i], s);
      q[i / 2] = static_cast<uint8_t>(q[i / 2] | ((i & 1) ? c << 4 : c));
    }
  }
}

void fake_quantize_f4e2m1_blocks(float* x, size_t n, size_t block) {
  for (size_t b0 = 0; b0 < n; b0 += block) {
    const size_t len = std::min(block, n - b0);
    const float s = pow2_f32(f4_block_exponent(x + b0, len));
    for (size_t i = b0; i < b0 + len; ++i) x[i] = decode_f4e2m1(f4_quantize_one(x[i], s)) * s;
  }
}

}  // namespace dsv4::kernels
