// tokenizer/pre_tokenizer.h — splitting text into the pieces BPE sees (internal).
//
// A chain of steps run depth-first over each piece (no copies of the text except where
// ByteLevel's add_prefix_space prepends a space):
//   Split(regex, behavior, invert)  tokenizers' pre_tokenizers::Split with a Regex or String
//   PrefixSpace                     ByteLevel add_prefix_space: " " before pieces not starting
//                                   with a space
// ByteLevel with use_regex adds a final Split with the GPT-2 regex (Isolated). Match iteration
// follows the onig crate's find_iter (an empty match right after the previous match is skipped
// by one character), the behaviours follow NormalizedString::split, and empty pieces are dropped
// (PreTokenizedString::split).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "tokenizer/regex.h"

namespace dsv4::tokenizer {

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

struct PreTokenizerStep {
  enum class Kind { split, prefix_space } kind = Kind::split;
  Regex regex;       // widened with post-Unicode-14 characters: exact on any text
  Regex regex_fast;  // not widened: exact on text without such characters, and faster
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;
};

class PreTokenizer {
 public:
  struct Range {
    uint32_t begin, end;
  };

  // Scratch buffers for one thread's encode call.
  struct Scratch {
    Regex::Scratch regex;
    std::vector<std::vector<std::pair<Range, bool>>> matches;  // per depth
    std::vector<std::vector<Range>> pieces;                    // per depth
  };

  void add_step(PreTokenizerStep step) { steps_.push_back(std::move(step)); }
  size_t num_steps() const { return steps_.size(); }

  // Calls emit(std::string_view piece) -> Status for every non-empty final piece of `text`
  // (valid UTF-8), in order. Stops at the first error.
  template <typename Emit>
  Status run(std::string_view text, Scratch& scratch, Emit&& emit) const {
    if (scratch.matches.size() < steps_.size()) {
      scratch.matches.resize(steps_.size());
      scratch.pieces.resize(steps_.size());
    }
    bool widened = has_unicode_delta_chars(text);
    return run_from(0, text, scratch, emit, widened);
  }

  // The pieces of one Split step on `s`, as offsets into s (exposed for tests).
  static Status split(const Regex& regex, const PreTokenizerStep& step, std::string_view s,
                      Scratch& scratch, size_t depth, std::vector<Range>& out);

 private:
  template <typename Emit>
  Status run_from(size_t depth, std::string_view piece, Scratch& scratch, Emit& emit,
                  bool widened) const {
    if (depth == steps_.size()) return emit(piece);
    const PreTokenizerStep& st = steps_[depth];
    if (st.kind == PreTokenizerStep::Kind::prefix_space) {
      if (!piece.empty() && piece.front() == ' ') {
        return run_from(depth + 1, piece, scratch, emit, widened);
      }
      std::string spaced;
      spaced.reserve(piece.size() + 1);
      spaced.push_back(' ');
      spaced.append(piece);
      return run_from(depth + 1, spaced, scratch, emit, widened);
    }
    std::vector<Range>& ranges = scratch.pieces[depth];
    DSV4_RETURN_IF_ERROR(
        split(widened ? st.regex : st.regex_fast, st, piece, scratch, depth, ranges));
    // `ranges` is not touched by deeper levels (they use their own depth's buffer), so
    // iterating it while recursing is safe.
    for (size_t i = 0; i < ranges.size(); ++i) {
      Range r = ranges[i];
      if (r.end == r.begin) continue;
      DSV4_RETURN_IF_ERROR(
          run_from(depth + 1, piece.substr(r.begin, r.end - r.begin), scratch, emit, widened));
    }
    return ok_status();
  }

  std::vector<PreTokenizerStep> steps_;
};

// The regex ByteLevel(use_regex=true) splits with (GPT-2's).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace dsv4::tokenizer
