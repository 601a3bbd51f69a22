// tokenizer/tokenizer.h — byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json.
//
// Purpose: turn text into the token ids a DeepSeek-V4 checkpoint was trained on and back, with
// the exact ids the Hugging Face `tokenizers` library produces for the same tokenizer.json
// (checked against committed reference vectors, tests/data/tokenizer/).
//
// Pipeline of encode(text) (mirrors tokenizers' Tokenizer::encode, add_special_tokens=False):
//   1. invalid UTF-8 is cut out first (see "Invalid UTF-8" below);
//   2. added tokens (unless AddedTokens::none): leftmost-longest match of the non-normalized
//      added tokens in the raw text, then of the normalized ones in the pieces left over (flags
//      single_word/lstrip/rstrip as tokenizers' AddedVocabulary::find_matches applies them);
//   3. normalizer (only the identity is supported: null or an empty Sequence);
//   4. pre-tokenizer: a Sequence of Split regexes (PCRE2, UTF+UCP, JIT; all five split
//      behaviours and `invert`) ending in ByteLevel (add_prefix_space, use_regex);
//   5. BPE over the bytes of each piece: lowest merge rank first, leftmost on ties (the
//      priority-queue algorithm of tokenizers' Word::merge_all), with a word cache.
// decode(ids) concatenates the bytes of each token (ByteLevel decoder: byte-level characters back
// to bytes; a token with any character outside the byte-level alphabet contributes its raw UTF-8,
// as tokenizers does for added tokens) and replaces ill-formed UTF-8 with U+FFFD per maximal
// subpart (Rust's String::from_utf8_lossy, Python's errors="replace").
//
// Invariants:
//   - decode(encode(s)) == s for every valid UTF-8 string s (no normalizer, byte-level BPE).
//   - decode_bytes(encode(b)) == b for every byte string b, valid UTF-8 or not.
//   - A loaded Tokenizer is immutable apart from its word cache (mutex-guarded): encode/decode
//     may be called from several threads at once.
//
// Invalid UTF-8 (the Python reference only accepts valid str, so this is our definition):
//   each maximal run of bytes that do not form well-formed UTF-8 characters (Unicode table 3-7)
//   is a hard boundary. It becomes a piece of its own, BPE-encoded from its raw bytes like any
//   other piece (byte-level BPE covers all 256 bytes), and the valid stretches around it are
//   encoded as if they were separate texts: encode(a + X + b) == encode(a) ++ bpe(X) ++ encode(b).
//
// Differences from the reference (docs/tokenizer.md):
//   - decode of an id that names no token is an error (tokenizers silently drops it);
//   - the post-processor is never applied: encode() adds no BOS/EOS (chat templates do that);
//   - the regex engine is PCRE2, not Oniguruma: character properties follow PCRE2's Unicode
//     version (14.0 for PCRE2 10.42), so letters assigned in later Unicode versions may split
//     differently.
//
// Non-goals: WordPiece/Unigram models, normalizers other than identity, BPE dropout, offsets,
// truncation/padding, chat templates (a separate component renders them to text first).
// Rejected alternatives: std::regex (no \p{..} classes, slow); per-word O(n^2) pair rescans
// (quadratic on long words such as runs of spaces or digits).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace dsv4::tokenizer {

// One entry of tokenizer.json "added_tokens" (flags as in tokenizers' AddedToken).
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;  // skipped by decode(skip_special); not matched when parse_special=false
  bool single_word = false;  // only matched when not inside a word (\w on either side)
  bool lstrip = false;       // swallows whitespace on its left
  bool rstrip = false;       // swallows whitespace on its right
  bool normalized = true;    // matched after normalization (in the second matching pass)
};

class Tokenizer {
 public:
  // `path` is a tokenizer.json file or a model directory holding one. A tokenizer_config.json
  // beside it (optional) supplies bos_token / eos_token. Errors name the file and the field.
  static Result<Tokenizer> load(const std::string& path);
  // Parses tokenizer.json text; `origin` names it in error messages. `config_json` is the
  // optional tokenizer_config.json text (empty: none).
  static Result<Tokenizer> from_json(std::string_view tokenizer_json, std::string_view origin,
                                     std::string_view config_json = {});

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Which added tokens encode() recognizes in the text.
  enum class AddedTokens {
    all,          // every added token (tokenizers' default)
    non_special,  // special ones are plain text (tokenizers' `encode_special_tokens = True`);
                  // non-special added tokens (e.g. <think> in DeepSeek-V4) are still matched
    none,         // no added-token matching at all: pre-tokenizer + BPE only (the reference
                  // tokenizer with an empty added_tokens list)
  };

  // Token ids for `text` (any bytes). Fails only if the regex engine reports an error (resource
  // limit), never on bad input.
  Result<std::vector<int32_t>> encode(std::string_view text, AddedTokens match) const;
  // parse_special=true: AddedTokens::all; false: AddedTokens::non_special.
  Result<std::vector<int32_t>> encode(std::string_view text, bool parse_special = true) const {
    return encode(text, parse_special ? AddedTokens::all : AddedTokens::non_special);
  }

  // Text of `ids`, ill-formed UTF-8 replaced by U+FFFD. Error if an id names no token.
  Result<std::string> decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // Raw bytes of `ids` (no UTF-8 repair): the exact inverse of encode for any input bytes.
  Result<std::string> decode_bytes(std::span<const int32_t> ids, bool skip_special = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;  // added tokens first
  std::optional<std::string_view> id_to_token(int32_t id) const;     // as spelled in the file
  // Bytes that `id` contributes to decode_bytes (empty optional if the id names no token).
  std::optional<std::string_view> token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;

  // One past the largest id of the model vocabulary and the added tokens (embedding rows).
  int32_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  const std::vector<AddedToken>& added_tokens() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Incremental decoder for streaming generation: push ids one at a time and get the text they
// complete. Never emits part of a UTF-8 character: bytes that may still become a character are
// held back until the next id completes them (or proves them ill-formed, then U+FFFD).
// Invariant: concat(push(id_1..id_n)) + flush() == decode(id_1..id_n).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  Result<std::string> push(int32_t id);
  // Ends the stream: held-back bytes (an incomplete character) come out as U+FFFD.
  std::string flush();
  // Bytes held back waiting for the rest of a character (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace dsv4::tokenizer
