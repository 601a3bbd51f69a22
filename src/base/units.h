// base/units.h — parsing and printing sizes: "4096", "128K", "1M" (binary: K = 1024).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace dsv4 {

// "131072", "128K", "128k", "1M", "2G" -> count. K/M/G are powers of 1024 (1M = 1,048,576).
// Rejects empty strings, signs, fractions, overflow, trailing junk and zero when !allow_zero.
Result<uint64_t> parse_count(std::string_view text, bool allow_zero = false);
// "4096,128K,1M" -> {4096, 131072, 1048576}.
Result<std::vector<uint64_t>> parse_count_list(std::string_view text);
// 131072 -> "128K", 1048576 -> "1M", 163840 -> "160K", 1000 -> "1000".
std::string format_count(uint64_t n);
// Bytes as "68.625 GiB" / "584 B" / "12.5 MiB" (3 significant decimals at most).
std::string format_bytes(double bytes);

}  // namespace dsv4
