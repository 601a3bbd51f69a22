#include "tokenizer/added_vocab.h"

#include <algorithm>

#include <fmt/format.h>

#include "tokenizer/utf8.h"

namespace dsv4::tokenizer {

Result<AddedVocab> AddedVocab::build(const std::vector<AddedToken>* tokens) {
  AddedVocab v;
  v.tokens_ = tokens;
  for (auto& t : v.tries_) t.nodes.emplace_back();
  for (size_t i = 0; i < tokens->size(); ++i) {
    const AddedToken& t = (*tokens)[i];
    if (t.content.empty()) continue;  // tokenizers ignores empty added tokens
    v.insert(v.tries_[t.normalized ? 1 : 0], t.content, static_cast<int32_t>(i));
  }
  // The regex crate's Unicode \w (UTS#18 annex C) and \s, one character at a time.
  DSV4_ASSIGN_OR_RETURN(v.word_,
                        Regex::compile("^[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]"));
  DSV4_ASSIGN_OR_RETURN(v.space_, Regex::compile("^\\p{White_Space}"));
  return v;
}

void AddedVocab::insert(Trie& t, std::string_view s, int32_t token_index) {
  int32_t node = 0;
  t.first[static_cast<uint8_t>(s[0])] = true;
  for (char ch : s) {
    auto b = static_cast<uint8_t>(ch);
    auto& next = t.nodes[static_cast<size_t>(node)].next;
    auto it = std::lower_bound(
        next.begin(), next.end(), b,
        [](const std::pair<uint8_t, int32_t>& e, uint8_t x) { return e.first < x; });
    if (it != next.end() && it->first == b) {
      node = it->second;
    } else {
      auto child = static_cast<int32_t>(t.nodes.size());
      next.insert(it, {b, child});
      t.nodes.emplace_back();  // may reallocate: `next` is not used after this
      node = child;
    }
  }
  // Duplicate contents are rejected by the loader, so each terminal names one token.
  t.nodes[static_cast<size_t>(node)].token = token_index;
}

bool AddedVocab::find(const Trie& t, std::string_view s, size_t from, size_t* start, size_t* end,
                      int32_t* token) const {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  for (size_t i = from; i < s.size(); ++i) {
    if (!t.first[p[i]]) continue;
    int32_t node = 0;
    int32_t best = -1;
    size_t best_end = 0;
    for (size_t j = i; j < s.size(); ++j) {
      const auto& next = t.nodes[static_cast<size_t>(node)].next;
      auto it = std::lower_bound(
          next.begin(), next.end(), p[j],
          [](const std::pair<uint8_t, int32_t>& e, uint8_t x) { return e.first < x; });
      if (it == next.end() || it->first != p[j]) break;
      node = it->second;
      if (t.nodes[static_cast<size_t>(node)].token >= 0) {
        best = t.nodes[static_cast<size_t>(node)].token;
        best_end = j + 1;
      }
    }
    if (best >= 0) {
      *start = i;
      *end = best_end;
      *token = best;
      return true;
    }
  }
  return false;
}

bool AddedVocab::is_word_char_at(std::string_view s, size_t pos) const {
  if (pos >= s.size()) return false;
  uint32_t len = utf8::next_unit(s, pos).len;
  Regex::Scratch scratch;
  Regex::Match m{};
  auto r = word_.search(s.substr(pos, len), 0, scratch, &m);
  return r.ok() && *r;
}

bool AddedVocab::is_word_char_before(std::string_view s, size_t end) const {
  if (end == 0) return false;
  uint32_t len = 0;
  utf8::decode_before(s, end, &len);
  return is_word_char_at(s, end - len);
}

bool AddedVocab::is_space_at(std::string_view s, size_t pos, uint32_t* len) const {
  if (pos >= s.size()) return false;
  *len = utf8::next_unit(s, pos).len;
  Regex::Scratch scratch;
  Regex::Match m{};
  auto r = space_.search(s.substr(pos, *len), 0, scratch, &m);
  return r.ok() && *r;
}

bool AddedVocab::is_space_before(std::string_view s, size_t end, uint32_t* len) const {
  if (end == 0) return false;
  utf8::decode_before(s, end, len);
  uint32_t l2 = 0;
  return is_space_at(s, end - *len, &l2);
}

Status AddedVocab::pass(const Trie& t, std::string_view sentence, uint32_t base, bool parse_special,
                        std::vector<Segment>* out) const {
  // tokenizers' AddedVocabulary::find_matches, offsets relative to `sentence`.
  size_t start_offset = 0;
  size_t from = 0;
  size_t mstart = 0, mend = 0;
  int32_t ti = -1;
  while (t.size() != 0 && find(t, sentence, from, &mstart, &mend, &ti)) {
    from = mend;
    const AddedToken& tok = (*tokens_)[static_cast<size_t>(ti)];
    if (!parse_special && tok.special) continue;
    size_t start = mstart, stop = mend;
    if (tok.single_word) {
      bool start_space = start == 0 || !is_word_char_before(sentence, start);
      bool stop_space = stop == sentence.size() || !is_word_char_at(sentence, stop);
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) {
      size_t newstart = start;
      uint32_t len = 0;
      while (is_space_before(sentence, newstart, &len)) newstart -= len;
      start = std::max(newstart, start_offset);
    }
    if (tok.rstrip) {
      uint32_t len = 0;
      while (is_space_at(sentence, stop, &len)) stop += len;
    }
    if (start_offset < start) {
      out->push_back(
          {base + static_cast<uint32_t>(start_offset), base + static_cast<uint32_t>(start), -1});
    }
    out->push_back(
        {base + static_cast<uint32_t>(start), base + static_cast<uint32_t>(stop), tok.id});
    start_offset = stop;
  }
  if (start_offset != sentence.size()) {
    out->push_back({base + static_cast<uint32_t>(start_offset),
                    base + static_cast<uint32_t>(sentence.size()), -1});
  }
  return ok_status();
}

Status AddedVocab::split(std::string_view text, bool parse_special,
                         std::vector<Segment>* out) const {
  out->clear();
  std::vector<Segment> first;
  DSV4_RETURN_IF_ERROR(pass(tries_[0], text, 0, parse_special, &first));
  for (const Segment& s : first) {
    if (s.end == s.begin) continue;  // empty splits are dropped
    if (s.id >= 0) {
      out->push_back(s);
      continue;
    }
    size_t before = out->size();
    DSV4_RETURN_IF_ERROR(
        pass(tries_[1], text.substr(s.begin, s.end - s.begin), s.begin, parse_special, out));
    // Drop empty text segments the second pass may have produced.
    out->erase(std::remove_if(out->begin() + static_cast<std::ptrdiff_t>(before), out->end(),
                              [](const Segment& x) { return x.end == x.begin; }),
               out->end());
  }
  return ok_status();
}

}  // namespace dsv4::tokenizer
