#include "formats/dtype.h"

#include <array>
#include <limits>

namespace dsv4::formats {

namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;         // our spelling
  std::string_view safetensors;  // header string (safetensors tensor.rs `Dtype` Display)
  int bits;                      // safetensors tensor.rs `Dtype::bitsize()`
  bool is_float;
};

// Indexed by the enum value; the static_assert below keeps the two in step.
constexpr std::array<DTypeInfo, kDTypeCount> kInfo = {{
    {DType::f64, "f64", "F64", 64, true},
    {DType::f32, "f32", "F32", 32, true},
    {DType::f16, "f16", "F16", 16, true},
    {DType::bf16, "bf16", "BF16", 16, true},
    {DType::f8_e4m3, "f8_e4m3", "F8_E4M3", 8, true},
    {DType::f8_e5m2, "f8_e5m2", "F8_E5M2", 8, true},
    {DType::f8_e4m3fnuz, "f8_e4m3fnuz", "F8_E4M3FNUZ", 8, true},
    {DType::f8_e5m2fnuz, "f8_e5m2fnuz", "F8_E5M2FNUZ", 8, true},
    {DType::f8_e8m0, "f8_e8m0", "F8_E8M0", 8, true},
    {DType::f6_e2m3, "f6_e2m3", "F6_E2M3", 6, true},
    {DType::f6_e3m2, "f6_e3m2", "F6_E3M2", 6, true},
    {DType::f4_e2m1, "f4_e2m1", "F4", 4, true},
    {DType::c64, "c64", "C64", 64, true},
    {DType::i8, "i8", "I8", 8, false},
    {DType::u8, "u8", "U8", 8, false},
    {DType::i16, "i16", "I16", 16, false},
    {DType::u16, "u16", "U16", 16, false},
    {DType::i32, "i32", "I32", 32, false},
    {DType::u32, "u32", "U32", 32, false},
    {DType::i64, "i64", "I64", 64, false},
    {DType::u64, "u64", "U64", 64, false},
    {DType::boolean, "bool", "BOOL", 8, false},
}};

constexpr bool table_in_enum_order() {
  for (size_t i = 0; i < kInfo.size(); ++i) {
    if (static_cast<size_t>(kInfo[i].dtype) != i) return false;
  }
  return true;
}
static_assert(table_in_enum_order(), "kInfo must list the DType values in enum order");

const DTypeInfo& info(DType t) {
  auto i = static_cast<size_t>(t);
  DSV4_CHECK(i < kInfo.size());
  return kInfo[i];
}

}  // namespace

std::string_view dtype_name(DType t) {
  return info(t).name;
}
std::string_view dtype_safetensors_name(DType t) {
  return info(t).safetensors;
}
int dtype_bits(DType t) {
  return info(t).bits;
}
bool dtype_is_packed(DType t) {
  return info(t).bits < 8;
}
bool dtype_is_float(DType t) {
  return info(t).is_float;
}

std::optional<DType> dtype_from_safetensors(std::string_view s) {
  for (const auto& e : kInfo) {
    if (e.safetensors == s) return e.dtype;
  }
  return std::nullopt;
}

std::optional<DType> dtype_from_name(std::string_view s) {
  for (const auto& e : kInfo) {
    if (e.name == s) return e.dtype;
  }
  return std::nullopt;
}

std::string shape_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += "]";
  return s;
}

Result<int64_t> shape_elements(std::span<const int64_t> shape) {
  if (shape.size() > kMaxRank) {
    return invalid_argument("shape has rank " + std::to_string(shape.size()) + " (at most " +
                            std::to_string(kMaxRank) + " supported)");
  }
  // Every dim is checked for negativity before multiplying, so [0, -1] is still an error.
  for (int64_t d : shape) {
    if (d < 0) return invalid_argument("shape " + shape_string(shape) + " has a negative dim");
  }
  int64_t n = 1;
  for (int64_t d : shape) {
    int64_t r = 0;
    if (__builtin_mul_overflow(n, d, &r)) {
      return invalid_argument("shape " + shape_string(shape) + ": element count overflows int64");
    }
    n = r;
  }
  return n;
}

Result<int64_t> dtype_bytes(DType t, std::span<const int64_t> shape) {
  DSV4_ASSIGN_OR_RETURN(int64_t n, shape_elements(shape));
  const int bits = dtype_bits(t);
  auto overflow = [&]() {
    return invalid_argument("shape " + shape_string(shape) + " of " + std::string(dtype_name(t)) +
                            ": byte size overflows int64");
  };
  if (bits % 8 == 0) {
    int64_t bytes = 0;
    if (__builtin_mul_overflow(n, static_cast<int64_t>(bits / 8), &bytes)) return overflow();
    return bytes;
  }
  // Packed: each row (last dim) must end on a byte boundary, so a kernel given a row range
  // never starts mid-byte. A scalar of a packed type cannot be stored at all.
  if (shape.empty()) {
    return invalid_argument(std::string("a scalar of packed dtype ") + std::string(dtype_name(t)) +
                            " is not byte aligned");
  }
  const int64_t last = shape.back();
  int64_t row_bits = 0;
  if (__builtin_mul_overflow(last, static_cast<int64_t>(bits), &row_bits)) return overflow();
  if (row_bits % 8 != 0) {
    return invalid_argument("shape " + shape_string(shape) + " of packed dtype " +
                            std::string(dtype_name(t)) + ": last dim " + std::to_string(last) +
                            " x " + std::to_string(bits) + " bits is not a whole number of bytes");
  }
  if (last == 0) return int64_t{0};
  // n / last rows of row_bits / 8 bytes each; fewer bytes than elements, so no overflow.
  return (n / last) * (row_bits / 8);
}

}  // namespace dsv4::formats
