// tokenizer/bpe.h — the byte-level BPE model (internal).
//
// Vocabulary keys are byte-level strings (GPT-2 alphabet, "Ġthe"); pieces arrive as raw bytes.
// Each byte starts as the symbol of its byte-level character; merges then apply lowest rank
// first, leftmost position on ties, as tokenizers' Word::merge_all does with a min-heap of
// candidate pairs (rank, position) over a doubly linked list of symbols, stale entries dropped
// when popped: O(n log n) per word. Words of up to kScanMax symbols use an equivalent linear
// rescan (cheaper for the short words that dominate text). Results of short pieces are cached
// in a fixed-size direct-mapped table (no allocation per word).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/result.h"

namespace dsv4::tokenizer {

// Hash for unordered containers keyed by std::string and looked up with std::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  struct Options {
    std::optional<std::string> unk_token;  // tokenizers' BPE.unk_token
    bool fuse_unk = false;
    bool ignore_merges = false;  // a piece that is itself in the vocabulary is one token
  };

  // Scratch for one thread's encode call.
  struct Scratch {
    struct Symbol {
      int32_t id;
      int32_t prev, next;  // indices into symbols, -1 at the ends
      uint32_t len;        // bytes covered; 0 once merged into its left neighbour
    };
    struct Candidate {
      uint32_t rank, pos;
      int32_t new_id;
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
    std::vector<int32_t> ids;      // result of merge_word
    std::vector<Candidate> pairs;  // scan: merge of (ids[i], ids[i+1]); rank ~0u if none
  };

  // vocab: (byte-level token, id); merges: pairs of byte-level tokens, rank = index.
  // `where` prefixes error messages ("tokenizer.json: model").
  static Result<BpeModel> build(std::vector<std::pair<std::string, int32_t>> vocab,
                                const std::vector<std::pair<std::string, std::string>>& merges,
                                Options options, std::string_view where);

  BpeModel();
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the ids of one pre-tokenized piece (raw bytes, non-empty) to *out.
  void encode_piece(std::string_view piece, Scratch& scratch, std::vector<int32_t>* out) const;

  // The merge loop without the cache, by a given algorithm (tests compare the two):
  //   heap: tokenizers' priority queue, O(n log n), used for words of more than kScanMax symbols;
  //   scan: rescan all pairs for the lowest (rank, position) after each merge, O(n^2) but fast
  //         for the short words that dominate text.
  // Both merge the lowest-rank pair first, leftmost on ties, so their results are identical.
  enum class Algorithm { heap, scan };
  static constexpr size_t kScanMax = 32;
  void merge_word(std::string_view piece, Scratch& scratch, Algorithm algorithm) const;

  std::optional<int32_t> find(std::string_view byte_level_token) const;
  // The byte-level token of `id`, or nullptr if the vocabulary has no such id.
  const std::string* token(int32_t id) const;
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }
  size_t num_merges() const { return num_merges_; }

 private:
  struct MergeTable;
  struct Cache;

  void initial_symbols(std::string_view piece, Scratch& s) const;
  void merge_heap(Scratch& s) const;
  void merge_scan(Scratch& s) const;

  StringMap vocab_;                       // byte-level token -> id
  std::vector<std::string> id_to_token_;  // "" where no token has the id
  std::vector<bool> has_id_;
  int32_t byte_id_[256];  // id of each byte's byte-level character, -1 if absent
  std::optional<int32_t> unk_id_;
  Options options_;
  size_t num_merges_ = 0;
  std::unique_ptr<MergeTable> merges_;
  std::unique_ptr<Cache> cache_;
};

}  // namespace dsv4::tokenizer
