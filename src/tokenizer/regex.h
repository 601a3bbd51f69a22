// tokenizer/regex.h — the PCRE2 adapter (internal): nothing else includes pcre2.h.
//
// Patterns in tokenizer.json are written for Oniguruma (what the tokenizers library uses).
// compile() translates the escapes whose meaning differs under PCRE2_UCP:
//   \w -> [\p{L}\p{M}\p{N}\p{Pc}]    Oniguruma: Letter|Mark|Number|Connector_Punctuation;
//                                     PCRE2 10.42: \p{L}, \p{N} and '_'
//   \W -> [^\p{L}\p{M}\p{N}\p{Pc}]   (outside character classes; inside one: unsupported)
//   \h -> [0-9a-fA-F], \H -> [^0-9a-fA-F]   (Oniguruma: hex digit; PCRE2: horizontal space)
//   \uHHHH -> \x{HHHH}; \b, \B, nested classes and && are rejected as unsupported.
// Unicode version gap: the reference's Oniguruma knows Unicode 16.0, PCRE2 10.42 knows 14.0.
// Every general-category property (\p{L}, \p{Lo}, \pN, \d = \p{Nd}, and inside \w) is widened
// with the characters assigned since Unicode 14.0 that the reference puts in that category
// (unicode_delta.inc, generated from the reference). Not widened (documented deviations): a
// negated property inside a class ([^..] is fine, [\P{L}] is not), \D, and \p{C}/\p{Cn} still
// include those newer characters. \s (White_Space, U+0085 included) is the same in both.
// Compiled with PCRE2_UTF | PCRE2_UCP and JIT-compiled where available; subjects must be valid
// UTF-8 (the caller checks once; matching passes PCRE2_NO_UTF_CHECK).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"

namespace dsv4::tokenizer {

class Regex {
 public:
  // `literal`: match the pattern text literally (tokenizers' Split pattern {"String": ..}).
  // `widen`: add the post-Unicode-14 characters to general-category properties (see above).
  // Without it the regex matches identically on text for which has_unicode_delta_chars() is
  // false, and faster (the widened classes carry ~100 extra ranges).
  static Result<Regex> compile(std::string_view pattern, bool literal = false, bool widen = true);

  Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  struct Match {
    size_t start, end;
  };
  // Per-thread scratch for matching (PCRE2 match data). One can serve every Regex.
  class Scratch {
   public:
    Scratch();
    ~Scratch();
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    void* match_data() const { return md_; }

   private:
    void* md_;
  };

  // Searches subject[start..] (the whole subject is visible to lookbehind/lookahead).
  // Returns true and sets *m on a match, false if none; an engine error (resource limit) is
  // returned as a Status.
  Result<bool> search(std::string_view subject, size_t start, Scratch& scratch, Match* m) const;

  const std::string& pattern() const { return pattern_; }

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
  std::string pattern_;
};

// Pattern translated from Oniguruma to PCRE2 syntax (see above); exposed for tests.
Result<std::string> translate_oniguruma_pattern(std::string_view pattern, bool widen = true);

// True if valid UTF-8 `text` contains a character of unicode_delta.inc (assigned after Unicode
// 14.0), the only characters on which widened and plain regexes differ.
bool has_unicode_delta_chars(std::string_view text);

}  // namespace dsv4::tokenizer
