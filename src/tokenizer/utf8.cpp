#include "tokenizer/utf8.h"

#include <array>

namespace dsv4::tokenizer::utf8 {
namespace {

// Unicode table 3-7: for a lead byte, the sequence length and the allowed range of the second
// byte (later bytes are always 80..BF). len 0 marks bytes that cannot start a character.
struct Lead {
  uint8_t len, lo, hi;
};

constexpr Lead lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

struct ByteLevelTables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 0x144> from_cp{};  // the alphabet's largest code point is 0x143
  ByteLevelTables() {
    from_cp.fill(-1);
    // Printable bytes map to themselves; the other 68 bytes to 0x100, 0x101, ... in byte order.
    uint32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& tables() {
  static const ByteLevelTables t;
  return t;
}

}  // namespace

Unit next_unit(std::string_view s, size_t pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t n = s.size();
  uint8_t b0 = p[pos];
  if (b0 < 0x80) return {1, UnitKind::valid};
  Lead l = lead_info(b0);
  if (l.len == 0) return {1, UnitKind::invalid};
  if (pos + 1 >= n) return {1, UnitKind::truncated};
  uint8_t b1 = p[pos + 1];
  if (b1 < l.lo || b1 > l.hi) return {1, UnitKind::invalid};
  for (uint32_t i = 2; i < l.len; ++i) {
    if (pos + i >= n) return {i, UnitKind::truncated};
    uint8_t b = p[pos + i];
    if (b < 0x80 || b > 0xBF) return {i, UnitKind::invalid};
  }
  return {l.len, UnitKind::valid};
}

size_t valid_prefix_len(std::string_view s) {
  size_t pos = 0;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  while (pos < s.size()) {
    // ASCII fast path: 8 bytes at a time.
    while (pos + 8 <= s.size()) {
      uint64_t w;
      __builtin_memcpy(&w, p + pos, 8);
      if (w & 0x8080808080808080ull) break;
      pos += 8;
    }
    if (pos >= s.size()) break;
    Unit u = next_unit(s, pos);
    if (u.kind != UnitKind::valid) return pos;
    pos += u.len;
  }
  return pos;
}

void append_lossy(std::string& out, std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t good = valid_prefix_len(s.substr(pos));
    out.append(s.substr(pos, good));
    pos += good;
    if (pos >= s.size()) break;
    Unit u = next_unit(s, pos);
    out.append("\xEF\xBF\xBD");
    pos += u.len;
  }
}

size_t truncated_tail_len(std::string_view s) {
  // A truncated character is at most 3 bytes long and starts with a lead byte.
  size_t n = s.size();
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    auto b = static_cast<uint8_t>(s[n - k]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: keep looking left
    Unit u = next_unit(s, n - k);
    return (u.kind == UnitKind::truncated && u.len == k) ? k : 0;
  }
  return 0;
}

uint32_t decode_at(std::string_view s, size_t pos, uint32_t* len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + pos;
  uint8_t b0 = p[0];
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    *len = 2;
    return ((b0 & 0x1Fu) << 6) | (p[1] & 0x3Fu);
  }
  if (b0 < 0xF0) {
    *len = 3;
    return ((b0 & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
  }
  *len = 4;
  return ((b0 & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
}

uint32_t decode_before(std::string_view s, size_t end, uint32_t* len) {
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
  return decode_at(s, start, len);
}

void append_code_point(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t byte_to_code_point(uint8_t b) {
  return tables().to_cp[b];
}

int byte_from_code_point(uint32_t cp) {
  return cp < tables().from_cp.size() ? tables().from_cp[cp] : -1;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_code_point(out, byte_to_code_point(static_cast<uint8_t>(c)));
  return out;
}

std::string byte_level_to_bytes(std::string_view s) {
  if (!is_valid(s)) return std::string(s);
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    uint32_t len = 0;
    uint32_t cp = decode_at(s, pos, &len);
    int b = byte_from_code_point(cp);
    if (b < 0) return std::string(s);
    out.push_back(static_cast<char>(b));
    pos += len;
  }
  return out;
}

}  // namespace dsv4::tokenizer::utf8
