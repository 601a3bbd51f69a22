#include "formats/dtype.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

namespace dsv4::formats {
namespace {

// The 22 codes of huggingface/safetensors `Dtype` (src/tensor.rs) with `bitsize()`, written out
// from the spec rather than derived from our table.
struct SpecRow {
  const char* code;
  int bits;
};
constexpr SpecRow kSpec[] = {
    {"BOOL", 8},        {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
    {"I8", 8},          {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8},
    {"F8_E5M2FNUZ", 8}, {"I16", 16},    {"U16", 16},    {"F16", 16},    {"BF16", 16},
    {"I32", 32},        {"U32", 32},    {"F32", 32},    {"C64", 64},    {"F64", 64},
    {"I64", 64},        {"U64", 64},
};

TEST(DType, EverySafetensorsCodeMapsAndRoundTrips) {
  std::set<DType> seen;
  for (const auto& row : kSpec) {
    auto t = dtype_from_safetensors(row.code);
    ASSERT_TRUE(t.has_value()) << row.code;
    EXPECT_EQ(dtype_safetensors_name(*t), row.code);
    EXPECT_EQ(dtype_bits(*t), row.bits) << row.code;
    EXPECT_EQ(dtype_is_packed(*t), row.bits < 8) << row.code;
    auto back = dtype_from_name(dtype_name(*t));
    ASSERT_TRUE(back.has_value()) << dtype_name(*t);
    EXPECT_EQ(*back, *t);
    seen.insert(*t);
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kDTypeCount));
}

TEST(DType, DeepSeekV4Codes) {
  // The codes the V4 checkpoints use (see dtype.h): FP8 weights, UE8M0 scales, FP4 experts
  // stored as I8, BF16/F32 for the rest.
  EXPECT_EQ(dtype_from_safetensors("F8_E4M3"), DType::f8_e4m3);
  EXPECT_EQ(dtype_from_safetensors("F8_E8M0"), DType::f8_e8m0);
  EXPECT_EQ(dtype_from_safetensors("I8"), DType::i8);
  EXPECT_EQ(dtype_from_safetensors("F4"), DType::f4_e2m1);
  EXPECT_EQ(dtype_from_safetensors("BF16"), DType::bf16);
  EXPECT_EQ(dtype_name(DType::f8_e8m0), "f8_e8m0");
  EXPECT_EQ(dtype_name(DType::f4_e2m1), "f4_e2m1");
  // A V4-Flash expert w1: I8 [2048, 2048] holds exactly f4_e2m1 [2048, 4096].
  std::vector<int64_t> stored = {2048, 2048}, logical = {2048, 4096};
  EXPECT_EQ(*dtype_bytes(DType::i8, stored), *dtype_bytes(DType::f4_e2m1, logical));
}

TEST(DType, UnknownStringsRejected) {
  for (const char* s : {"", "f32", "F8_E4M3FN", "E8M0", "UE8M0", "F8_E8M0FNU", "FP4", "F4_E2M1",
                        "BF16 ", "float32", "Q4_K"}) {
    EXPECT_FALSE(dtype_from_safetensors(s).has_value()) << s;
  }
  EXPECT_FALSE(dtype_from_name("F32").has_value());
  EXPECT_FALSE(dtype_from_name("boolean").has_value());
  EXPECT_EQ(dtype_from_name("bool"), DType::boolean);
}

TEST(DType, FloatFlags) {
  EXPECT_TRUE(dtype_is_float(DType::bf16));
  EXPECT_TRUE(dtype_is_float(DType::f8_e8m0));
  EXPECT_TRUE(dtype_is_float(DType::f4_e2m1));
  EXPECT_FALSE(dtype_is_float(DType::i8));
  EXPECT_FALSE(dtype_is_float(DType::boolean));
}

int64_t bytes_of(DType t, std::vector<int64_t> shape) {
  auto r = dtype_bytes(t, shape);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : -1;
}

Status bytes_error(DType t, std::vector<int64_t> shape) {
  return dtype_bytes(t, shape).status();
}

TEST(DType, BytesForShapes) {
  EXPECT_EQ(bytes_of(DType::f32, {2, 3}), 24);
  EXPECT_EQ(bytes_of(DType::bf16, {}), 2);  // scalar
  EXPECT_EQ(bytes_of(DType::f64, {5}), 40);
  EXPECT_EQ(bytes_of(DType::c64, {3}), 24);
  EXPECT_EQ(bytes_of(DType::f8_e4m3, {128, 7}), 896);
  EXPECT_EQ(bytes_of(DType::boolean, {9}), 9);
  EXPECT_EQ(bytes_of(DType::u64, {0, 5}), 0);
  EXPECT_EQ(bytes_of(DType::f4_e2m1, {4, 6}), 12);
  EXPECT_EQ(bytes_of(DType::f4_e2m1, {3, 2}), 3);
  EXPECT_EQ(bytes_of(DType::f4_e2m1, {0, 2}), 0);
  EXPECT_EQ(bytes_of(DType::f6_e2m3, {2, 4}), 6);
  EXPECT_EQ(bytes_of(DType::f6_e3m2, {8}), 6);
  // A zero dim makes the product 0 even next to a huge one.
  EXPECT_EQ(bytes_of(DType::f32, {0, std::numeric_limits<int64_t>::max()}), 0);
}

TEST(DType, PackedRowsMustBeByteAligned) {
  for (auto shape : std::vector<std::vector<int64_t>>{{3}, {2, 3}, {1}, {0, 3}, {}}) {
    Status s = bytes_error(DType::f4_e2m1, shape);
    EXPECT_EQ(s.code(), ErrorCode::invalid_argument) << shape_string(shape);
    EXPECT_NE(s.message().find("f4_e2m1"), std::string::npos) << s.message();
  }
  EXPECT_EQ(bytes_error(DType::f6_e2m3, {2}).code(), ErrorCode::invalid_argument);
  EXPECT_EQ(bytes_error(DType::f6_e3m2, {4, 6}).code(), ErrorCode::invalid_argument);
}

TEST(DType, BadShapesAreErrors) {
  const int64_t big = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(bytes_error(DType::f32, {-1}).code(), ErrorCode::invalid_argument);
  EXPECT_EQ(bytes_error(DType::f32, {0, -1}).code(), ErrorCode::invalid_argument);
  // Element count overflows int64.
  Status s = bytes_error(DType::u8, {int64_t{1} << 32, int64_t{1} << 32});
  EXPECT_EQ(s.code(), ErrorCode::invalid_argument);
  EXPECT_NE(s.message().find("overflow"), std::string::npos) << s.message();
  EXPECT_EQ(bytes_error(DType::u8, {big, 2}).code(), ErrorCode::invalid_argument);
  // Elements fit, bytes do not: 2^61 f64 = 2^64 bytes.
  EXPECT_TRUE(shape_elements(std::vector<int64_t>{int64_t{1} << 61}).ok());
  EXPECT_EQ(bytes_error(DType::f64, {int64_t{1} << 61}).code(), ErrorCode::invalid_argument);
  // The largest u8 tensor is fine.
  EXPECT_EQ(bytes_of(DType::u8, {big}), big);
  // Rank limit.
  std::vector<int64_t> deep(kMaxRank + 1, 1);
  EXPECT_EQ(bytes_error(DType::f32, deep).code(), ErrorCode::invalid_argument);
  std::vector<int64_t> ok_rank(kMaxRank, 1);
  EXPECT_EQ(bytes_of(DType::f32, ok_rank), 4);
}

TEST(DType, ShapeString) {
  EXPECT_EQ(shape_string(std::vector<int64_t>{}), "[]");
  EXPECT_EQ(shape_string(std::vector<int64_t>{7}), "[7]");
  EXPECT_EQ(shape_string(std::vector<int64_t>{2, 3, 4}), "[2, 3, 4]");
}

}  // namespace
}  // namespace dsv4::formats
