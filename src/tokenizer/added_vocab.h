// tokenizer/added_vocab.h — finding added tokens in raw text (internal).
//
// Mirrors tokenizers' AddedVocabulary::extract_and_normalize with an identity normalizer:
//   pass 1: the tokens with normalized=false, leftmost-longest, over the whole text;
//   pass 2: the tokens with normalized=true, over each stretch of text pass 1 left.
// Matches are non-overlapping in scan order (like aho-corasick's LeftmostLongest find_iter):
// a match that is then discarded (special token with parse_special=false, single_word failing)
// still consumes its bytes. single_word uses Unicode \w on the neighbouring characters,
// lstrip/rstrip swallow Unicode White_Space (the regex crate's \w and \s in tokenizers).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::tokenizer {

class AddedVocab {
 public:
  struct Segment {
    uint32_t begin, end;  // byte range of the input text
    int32_t id;           // the added token's id, or -1 for text still to be tokenized
  };

  // `tokens` must outlive this object (the tokenizer owns both).
  static Result<AddedVocab> build(const std::vector<AddedToken>* tokens);

  // Splits text (valid UTF-8) into segments covering it in order (see the header comment).
  Status split(std::string_view text, bool parse_special, std::vector<Segment>* out) const;

  bool empty() const { return tries_[0].size() == 0 && tries_[1].size() == 0; }

 private:
  struct Node {
    int32_t token = -1;                             // index into *tokens_ if a token ends here
    std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
  };
  struct Trie {
    std::vector<Node> nodes;  // nodes[0] is the root
    std::array<bool, 256> first{};
    size_t size() const { return nodes.size() > 1 ? nodes.size() : 0; }
  };

  void insert(Trie& t, std::string_view s, int32_t token_index);
  // Leftmost-longest match in s starting at or after `from`: sets *start/*end/*token.
  bool find(const Trie& t, std::string_view s, size_t from, size_t* start, size_t* end,
            int32_t* token) const;
  Status pass(const Trie& t, std::string_view sentence, uint32_t base, bool parse_special,
              std::vector<Segment>* out) const;
  bool is_word_char_before(std::string_view s, size_t end) const;
  bool is_word_char_at(std::string_view s, size_t pos) const;
  bool is_space_at(std::string_view s, size_t pos, uint32_t* len) const;
  bool is_space_before(std::string_view s, size_t end, uint32_t* len) const;

  const std::vector<AddedToken>* tokens_ = nullptr;
  std::array<Trie, 2> tries_;  // [0] normalized=false (pass 1), [1] normalized=true (pass 2)
  Regex word_;                 // one character of the regex crate's Unicode \w
  Regex space_;                // one character of Unicode White_Space
};

}  // namespace dsv4::tokenizer
