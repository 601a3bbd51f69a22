#include "base/units.h"

#include <fmt/format.h>

#include <cctype>
#include <limits>

namespace dsv4 {

Result<uint64_t> parse_count(std::string_view text, bool allow_zero) {
  const std::string shown(text);
  if (text.empty()) return invalid_argument("empty size");
  uint64_t mult = 1;
  char last = static_cast<char>(std::toupper(static_cast<unsigned char>(text.back())));
  if (last == 'K' || last == 'M' || last == 'G') {
    mult = last == 'K' ? (1ull << 10) : last == 'M' ? (1ull << 20) : (1ull << 30);
    text.remove_suffix(1);
  }
  if (text.empty())
    return invalid_argument("'" + shown + "' is not a size (expected e.g. 4096, 128K, 1M)");
  uint64_t v = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9')
      return invalid_argument("'" + shown + "' is not a size (expected e.g. 4096, 128K, 1M)");
    if (v > (std::numeric_limits<uint64_t>::max() - 9) / 10)
      return invalid_argument("'" + shown + "' is too large");
    v = v * 10 + static_cast<uint64_t>(ch - '0');
  }
  if (v > std::numeric_limits<uint64_t>::max() / mult)
    return invalid_argument("'" + shown + "' is too large");
  v *= mult;
  if (v == 0 && !allow_zero) return invalid_argument("'" + shown + "' must be greater than zero");
  return v;
}

Result<std::vector<uint64_t>> parse_count_list(std::string_view text) {
  std::vector<uint64_t> out;
  size_t pos = 0;
  for (;;) {
    size_t comma = text.find(',', pos);
    std::string_view item =
        text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos);
    DSV4_ASSIGN_OR_RETURN(uint64_t v, parse_count(item));
    out.push_back(v);
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::string format_count(uint64_t n) {
  if (n >= (1ull << 30) && n % (1ull << 30) == 0) return fmt::format("{}G", n >> 30);
  if (n >= (1ull << 20) && n % (1ull << 20) == 0) return fmt::format("{}M", n >> 20);
  if (n >= (1ull << 10) && n % (1ull << 10) == 0) return fmt::format("{}K", n >> 10);
  return fmt::format("{}", n);
}

std::string format_bytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  std::string s = fmt::format("{:.3f}", bytes);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s + " " + kUnits[u];
}

}  // namespace dsv4
