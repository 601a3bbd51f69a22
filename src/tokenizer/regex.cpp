#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "tokenizer/utf8.h"

namespace dsv4::tokenizer {
namespace {

// Characters assigned after PCRE2's Unicode version, with the reference's general category
// (generated, see unicode_delta.inc).
struct CategoryRange {
  const char* category;
  uint32_t first, last;
};
constexpr CategoryRange kUnicodeDelta[] = {
#include "tokenizer/unicode_delta.inc"
};

// Class members (for use inside [...]) adding the delta ranges whose category matches `name`
// ("L" matches every L*, "Lo" only Lo). Empty if none.
std::string delta_members(std::string_view name) {
  std::string out;
  if (name.empty() || name.size() > 2) return out;
  for (const auto& r : kUnicodeDelta) {
    std::string_view cat(r.category);
    if (name.size() == 1 ? cat[0] == name[0] : cat == name) {
      out += r.first == r.last ? fmt::format("\\x{{{:X}}}", r.first)
                               : fmt::format("\\x{{{:X}}}-\\x{{{:X}}}", r.first, r.last);
    }
  }
  return out;
}

// Oniguruma's \w under Unicode: General_Category Letter | Mark | Number | Connector_Punctuation
// (checked against tokenizers 0.23.3: '²', 'Ⅻ', U+0301, '‿' are word characters).
std::string word_members(bool widen) {
  std::string s = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
  if (widen) {
    for (std::string_view cat : {"L", "M", "N", "Pc"}) s.append(delta_members(cat));
  }
  return s;
}

// One bit per code point: set for the characters in kUnicodeDelta.
struct DeltaBitmap {
  std::vector<uint64_t> bits = std::vector<uint64_t>(0x110000 / 64, 0);
  uint32_t min_cp = 0x110000;
  DeltaBitmap() {
    for (const auto& r : kUnicodeDelta) {
      for (uint32_t cp = r.first; cp <= r.last; ++cp) bits[cp >> 6] |= uint64_t{1} << (cp & 63);
      min_cp = std::min(min_cp, r.first);
    }
  }
};

const DeltaBitmap& delta_bitmap() {
  static const DeltaBitmap b;
  return b;
}
// Oniguruma's \h is a hexadecimal digit (PCRE2's \h is horizontal space).
constexpr std::string_view kHexSet = "0-9a-fA-F";

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  int n = pcre2_get_error_message(code, buf, sizeof(buf));
  if (n < 0) return fmt::format("PCRE2 error {}", code);
  return std::string(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

}  // namespace

Result<std::string> translate_oniguruma_pattern(std::string_view p, bool widen) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  size_t i = 0;
  auto unsupported_at = [&](std::string_view what) {
    return unsupported(fmt::format("regex construct {} at byte {} is not supported", what, i));
  };
  while (i < p.size()) {
    char c = p[i];
    if (c == '\\') {
      if (i + 1 >= p.size()) return parse_error("regex ends with a lone backslash");
      char d = p[i + 1];
      switch (d) {
        case 'w':
          if (!in_class) out.push_back('[');
          out.append(word_members(widen));
          if (!in_class) out.push_back(']');
          i += 2;
          continue;
        case 'd':  // \p{Nd} in both engines, plus the newer digits
        case 'p':
        case 'P': {
          // \pL, \p{Lu}, \p{^L} (negated), \PL ...
          size_t j = i + 2;
          std::string_view name;
          if (d == 'd') {
            name = "Nd";
          } else if (j < p.size() && p[j] == '{') {
            size_t close = p.find('}', j);
            if (close == std::string_view::npos) return parse_error("regex: unterminated \\p{");
            name = p.substr(j + 1, close - j - 1);
            j = close + 1;
          } else if (j < p.size()) {
            name = p.substr(j, 1);
            j += 1;
          }
          bool negated = d == 'P';
          if (!name.empty() && name[0] == '^') {
            negated = !negated;
            name.remove_prefix(1);
          }
          std::string extra = widen ? delta_members(name) : std::string();
          std::string_view original = p.substr(i, j - i);
          if (extra.empty()) {
            out.append(original);
          } else if (in_class && !negated) {
            out.append(original).append(extra);
          } else if (!in_class) {
            // [\p{X}extra] or, negated, [^\p{X}extra].
            out.append(negated ? "[^\\p{" : "[\\p{").append(name).append("}");
            out.append(extra).append("]");
          } else {
            // A negated property inside a class cannot take the extra ranges out; those
            // characters keep PCRE2's (older) classification (docs/tokenizer.md).
            out.append(original);
          }
          i = j;
          continue;
        }
        case 'h':
          if (in_class) {
            out.append(kHexSet);
          } else {
            out.append("[").append(kHexSet).append("]");
          }
          i += 2;
          continue;
        case 'W':
        case 'H':
          if (in_class) return unsupported_at(fmt::format("\\{} inside a character class", d));
          out.append("[^")
              .append(d == 'W' ? word_members(widen) : std::string(kHexSet))
              .append("]");
          i += 2;
          continue;
        case 'b':
        case 'B':
          if (in_class) break;  // [\b] is a backspace in both engines
          return unsupported_at(fmt::format("\\{} (word boundary)", d));
        case 'u': {
          if (i + 6 > p.size() || !is_hex(p[i + 2]) || !is_hex(p[i + 3]) || !is_hex(p[i + 4]) ||
              !is_hex(p[i + 5])) {
            return parse_error(fmt::format("regex escape \\u at byte {} needs 4 hex digits", i));
          }
          out.append("\\x{").append(p.substr(i + 2, 4)).append("}");
          i += 6;
          continue;
        }
        default:
          break;
      }
      out.push_back(c);
      out.push_back(d);
      i += 2;
      continue;
    }
    if (c == '[') {
      if (in_class) {
        if (i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class [:alpha:]: same in both
          size_t close = p.find(":]", i + 2);
          if (close == std::string_view::npos) return parse_error("regex: unterminated [:class:]");
          out.append(p.substr(i, close + 2 - i));
          i = close + 2;
          continue;
        }
        return unsupported_at("nested character class");
      }
      in_class = true;
      out.push_back('[');
      ++i;
      if (i < p.size() && p[i] == '^') out.push_back(p[i++]);
      if (i < p.size() && p[i] == ']') out.push_back(p[i++]);  // leading ] is literal
      continue;
    }
    if (in_class && c == ']') {
      in_class = false;
    } else if (in_class && c == '&' && i + 1 < p.size() && p[i + 1] == '&') {
      return unsupported_at("class intersection &&");
    }
    out.push_back(c);
    ++i;
  }
  if (in_class) return parse_error("regex: unterminated character class");
  return out;
}

Regex::Regex() = default;

Regex::Regex(Regex&& o) noexcept : code_(o.code_), jit_(o.jit_), pattern_(std::move(o.pattern_)) {
  o.code_ = nullptr;
}

Regex& Regex::operator=(Regex&& o) noexcept {
  if (this != &o) {
    if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
    code_ = o.code_;
    jit_ = o.jit_;
    pattern_ = std::move(o.pattern_);
    o.code_ = nullptr;
  }
  return *this;
}

Regex::~Regex() {
  if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

bool has_unicode_delta_chars(std::string_view text) {
  const DeltaBitmap& b = delta_bitmap();
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Skip ASCII 8 bytes at a time; every delta character is >= U+0800 (3- or 4-byte form).
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    uint8_t c = p[i];
    if (c < 0xE0) {
      i += c < 0x80 ? 1 : 2;
      continue;
    }
    uint32_t len = 0;
    uint32_t cp = utf8::decode_at(text, i, &len);
    if (cp >= b.min_cp && ((b.bits[cp >> 6] >> (cp & 63)) & 1)) return true;
    i += len;
  }
  return false;
}

Result<Regex> Regex::compile(std::string_view pattern, bool literal, bool widen) {
  std::string translated;
  if (literal) {
    translated = std::string(pattern);
  } else {
    DSV4_ASSIGN_OR_RETURN(translated, translate_oniguruma_pattern(pattern, widen));
  }
  int err = 0;
  PCRE2_SIZE err_off = 0;
  // PCRE2_LITERAL does not combine with PCRE2_UCP (and needs no character properties).
  uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()),
                                   translated.size(), options, &err, &err_off, nullptr);
  if (!code) {
    return parse_error(
        fmt::format("regex does not compile at byte {}: {}", err_off, pcre2_message(err)));
  }
  Regex re;
  re.code_ = code;
  re.pattern_ = std::string(pattern);
  // JIT is an optimisation: without it (unsupported CPU/build) the interpreter gives the same
  // matches, only slower.
  re.jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

Regex::Scratch::Scratch() : md_(pcre2_match_data_create(1, nullptr)) {
  DSV4_CHECK(md_ != nullptr);
}

Regex::Scratch::~Scratch() {
  pcre2_match_data_free(static_cast<pcre2_match_data*>(md_));
}

Result<bool> Regex::search(std::string_view subject, size_t start, Scratch& scratch,
                           Match* m) const {
  DSV4_CHECK(code_ != nullptr);
  auto* code = static_cast<const pcre2_code*>(code_);
  auto* md = static_cast<pcre2_match_data*>(scratch.match_data());
  const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc = jit_ ? pcre2_jit_match(code, s, subject.size(), start, 0, md, nullptr)
                : pcre2_match(code, s, subject.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  // rc == 0: the one-pair ovector is too small for the capture groups; group 0 is still set.
  if (rc < 0) {
    return internal_error(fmt::format("regex '{}' failed on a {}-byte piece: {}", pattern_,
                                      subject.size(), pcre2_message(rc)));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
  m->start = ov[0];
  m->end = ov[1];
  // \K in a lookahead can report start > end; treat the match as empty at `end`.
  if (m->start > m->end) m->start = m->end;
  return true;
}

}  // namespace dsv4::tokenizer
