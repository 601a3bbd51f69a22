// kv/record_codec.cpp — scalar FP8/FP4/BF16 codecs and official record encoders (see header).
#include "kv/record_codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "base/check.h"

namespace dsv4::kv::codec {

namespace {

// Magnitude code of finite |a| in a minifloat with `mbits` mantissa bits and exponent bias
// `bias` (biased exponent 0 = subnormals), rounded to nearest even, capped at max_code.
// Normal range: a = 2^E · q / 2^mbits with q in [2^mbits, 2^(mbits+1)]; the code is
// (E + bias) << mbits plus (q - 2^mbits) — a q that rounds up to 2^(mbits+1) carries into the
// exponent field by itself. Subnormals count units of 2^(1 - bias - mbits); a count that
// reaches 2^mbits is the smallest normal code, again by itself.
float pow2(int k) {  // 2^k for -126 <= k <= 127
  return std::bit_cast<float>(static_cast<uint32_t>(k + 127) << 23);
}

// (No std::ldexp here: it is a library call, and it was ~30 % of filling a synthetic 1M-token
// cache in `dsv4 bench`. Both scalings below are exact.)
uint32_t minifloat_code(float a, int mbits, int bias, uint32_t max_code) {
  const int min_normal_exp = 1 - bias;
  if (a < pow2(min_normal_exp)) {
    // a < 2^(1-bias): a * 2^(bias+mbits-1) < 2^mbits, a power-of-two scaling: exact.
    const float units = std::nearbyint(a * pow2(bias + mbits - 1));
    return std::min(static_cast<uint32_t>(units), max_code);
  }
  // a is a positive normal float here; a * 2^(mbits - e) is its significand under the
  // exponent field of 2^mbits: in [2^mbits, 2^(mbits+1)), exact.
  const uint32_t bits = std::bit_cast<uint32_t>(a);
  const int e = static_cast<int>((bits >> 23) & 0xFFu) - 127;
  const float q = std::nearbyint(
      std::bit_cast<float>((bits & 0x007FFFFFu) | (static_cast<uint32_t>(127 + mbits) << 23)));
  const int64_t code =
      (static_cast<int64_t>(e + bias) << mbits) + (static_cast<int64_t>(q) - (int64_t{1} << mbits));
  return code > static_cast<int64_t>(max_code) ? max_code : static_cast<uint32_t>(code);
}

}  // namespace

uint16_t f32_to_bf16(float x) {
  const uint32_t b = std::bit_cast<uint32_t>(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x0040u);
  const uint32_t lsb = (b >> 16) & 1u;
  return static_cast<uint16_t>((b + 0x7FFFu + lsb) >> 16);
}

float bf16_to_f32(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

uint8_t f32_to_e4m3(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return sign | 0x7F;
  const float a = std::fabs(x);
  if (a >= 448.0f) return sign | 0x7E;  // saturate (max finite ±448)
  return static_cast<uint8_t>(sign | minifloat_code(a, 3, 7, 0x7E));
}

float e4m3_to_f32(uint8_t c) {
  const float s = (c & 0x80) ? -1.0f : 1.0f;
  const int e = (c >> 3) & 0xF, m = c & 7;
  if (e == 15 && m == 7) return std::nanf("");
  if (e == 0) return s * (static_cast<float>(m) * pow2(-9));
  return s * (static_cast<float>(8 + m) * pow2(e - 7 - 3));
}

uint8_t f32_to_e2m1(float x) {
  const uint8_t sign = std::signbit(x) ? 0x8 : 0x0;
  const float a = std::fabs(x);
  if (!(a < 6.0f)) return sign | 0x7;  // >= 6, inf, NaN: saturate
  return static_cast<uint8_t>(sign | minifloat_code(a, 1, 1, 0x7));
}

float e2m1_to_f32(uint8_t c) {
  const float s = (c & 0x8) ? -1.0f : 1.0f;
  const int e = (c >> 1) & 0x3, m = c & 1;
  if (e == 0) return s * 0.5f * static_cast<float>(m);
  return s * (static_cast<float>(2 + m) * pow2(e - 1 - 1));
}

int pow2_ceil_exponent(float v) {
  const uint32_t b = std::bit_cast<uint32_t>(v);
  const int e = static_cast<int>((b >> 23) & 0xFFu);
  return e - 127 + ((b & 0x7FFFFFu) != 0 ? 1 : 0);
}

size_t v4_entry_bytes(size_t head_dim, size_t rope_dim) {
  const size_t nope = head_dim - rope_dim;
  const size_t scales = (nope / kFp8Block + 7) / 8 * 8;
  return nope + 2 * rope_dim + scales;
}

size_t v4_indexer_key_bytes(size_t dim) {
  return dim / 2 + dim / kFp4Block;
}

void encode_v4_entry(const float* x, size_t head_dim, size_t rope_dim, uint8_t* rec) {
  const size_t nope = head_dim - rope_dim;
  DSV4_CHECK(nope % kFp8Block == 0);
  uint8_t* codes = rec;
  uint8_t* rope = rec + nope;
  uint8_t* scales = rope + 2 * rope_dim;
  const size_t n_blocks = nope / kFp8Block;
  std::memset(scales, 0, v4_entry_bytes(head_dim, rope_dim) - nope - 2 * rope_dim);
  for (size_t b = 0; b < n_blocks; ++b) {
    const float* xb = x + b * kFp8Block;
    float amax = 1e-4f;
    for (size_t i = 0; i < kFp8Block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    // Clamp the exponent into ue8m0's finite range (only non-finite inputs get near it).
    const int k = std::clamp(pow2_ceil_exponent(amax * (1.0f / 448.0f)), -126, 127);
    const float s = pow2(k);
    for (size_t i = 0; i < kFp8Block; ++i)
      codes[b * kFp8Block + i] = f32_to_e4m3(std::clamp(xb[i] / s, -448.0f, 448.0f));
    scales[b] = static_cast<uint8_t>(k + 127);
  }
  for (size_t i = 0; i < rope_dim; ++i) {
    const uint16_t h = f32_to_bf16(x[nope + i]);
    rope[2 * i] = static_cast<uint8_t>(h & 0xFF);
    rope[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
}

void decode_v4_entry(const uint8_t* rec, size_t head_dim, size_t rope_dim, float* x) {
  const size_t nope = head_dim - rope_dim;
  const uint8_t* rope = rec + nope;
  const uint8_t* scales = rope + 2 * rope_dim;
  for (size_t b = 0; b < nope / kFp8Block; ++b) {
    const float s = pow2(static_cast<int>(scales[b]) - 127);
    for (size_t i = 0; i < kFp8Block; ++i)
      x[b * kFp8Block + i] = e4m3_to_f32(rec[b * kFp8Block + i]) * s;
  }
  for (size_t i = 0; i < rope_dim; ++i)
    x[nope + i] = bf16_to_f32(static_cast<uint16_t>(rope[2 * i] | (rope[2 * i + 1] << 8)));
}

void encode_v4_indexer_key(const float* x, size_t dim, uint8_t* rec) {
  DSV4_CHECK(dim % kFp4Block == 0);
  uint8_t* codes = rec;
  uint8_t* scales = rec + dim / 2;
  std::memset(codes, 0, dim / 2);
  for (size_t b = 0; b < dim / kFp4Block; ++b) {
    const float* xb = x + b * kFp4Block;
    float amax = 6.0f * std::ldexp(1.0f, -126);
    for (size_t i = 0; i < kFp4Block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const int k = std::clamp(pow2_ceil_exponent(amax * (1.0f / 6.0f)), -126, 127);
    const float s = pow2(k);
    for (size_t i = 0; i < kFp4Block; ++i) {
      const size_t j = b * kFp4Block + i;
      const uint8_t c = f32_to_e2m1(std::clamp(xb[i] / s, -6.0f, 6.0f));
      codes[j / 2] = static_cast<uint8_t>(codes[j / 2] | ((j & 1) ? (c << 4) : c));
    }
    scales[b] = static_cast<uint8_t>(k + 127);
  }
}

void decode_v4_indexer_key(const uint8_t* rec, size_t dim, float* x) {
  const uint8_t* scales = rec + dim / 2;
  for (size_t j = 0; j < dim; ++j) {
    const uint8_t c = (j & 1) ? (rec[j / 2] >> 4) : (rec[j / 2] & 0xF);
    x[j] = e2m1_to_f32(c) * pow2(static_cast<int>(scales[j / kFp4Block]) - 127);
  }
}

}  // namespace dsv4::kv::codec
