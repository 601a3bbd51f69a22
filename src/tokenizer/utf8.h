// tokenizer/utf8.h — UTF-8 scanning and the GPT-2 byte-level alphabet (internal).
//
// Well-formedness follows Unicode table 3-7 (no overlongs, no surrogates, <= U+10FFFF).
// Ill-formed input is split into "maximal subparts" (Unicode 3.9, U+FFFD substitution of maximal
// subparts), the units that Rust's from_utf8_lossy and Python's errors="replace" turn into one
// U+FFFD each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4::tokenizer::utf8 {

enum class UnitKind : uint8_t {
  valid,      // a well-formed character
  invalid,    // a maximal subpart that can never become a character
  truncated,  // a well-formed prefix of a character cut off by the end of the input
};

struct Unit {
  uint32_t len;  // bytes (1..4); for invalid/truncated the maximal subpart length
  UnitKind kind;
};

// The unit starting at s[pos] (pos < s.size()).
Unit next_unit(std::string_view s, size_t pos);

// Length of the longest well-formed prefix of s.
size_t valid_prefix_len(std::string_view s);

inline bool is_valid(std::string_view s) {
  return valid_prefix_len(s) == s.size();
}

// Appends s to out with every invalid or truncated unit replaced by U+FFFD (EF BF BD).
void append_lossy(std::string& out, std::string_view s);

// Number of trailing bytes of s that form a truncated (still completable) character; 0..3.
size_t truncated_tail_len(std::string_view s);

// Decodes the valid character at s[pos] (caller guarantees validity); sets *len.
uint32_t decode_at(std::string_view s, size_t pos, uint32_t* len);
// Decodes the valid character that ends at s[end) (end > 0, caller guarantees validity).
uint32_t decode_before(std::string_view s, size_t end, uint32_t* len);

// Appends the UTF-8 encoding of code point cp (< 0x110000, not a surrogate).
void append_code_point(std::string& out, uint32_t cp);

// GPT-2 byte-level alphabet: byte b <-> a printable code point (tokenizers' bytes_char()).
uint32_t byte_to_code_point(uint8_t b);
// The byte for code point cp, or -1 if cp is not in the alphabet.
int byte_from_code_point(uint32_t cp);

// Byte-level string (UTF-8 of the mapped code points) of raw bytes.
std::string bytes_to_byte_level(std::string_view bytes);
// Raw bytes of a token as the ByteLevel decoder sees it: each character mapped back to its
// byte, or, if any character is outside the alphabet (or s is not valid UTF-8), s unchanged.
std::string byte_level_to_bytes(std::string_view s);

}  // namespace dsv4::tokenizer::utf8
