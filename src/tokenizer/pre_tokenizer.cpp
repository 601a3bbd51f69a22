#include "tokenizer/pre_tokenizer.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace dsv4::tokenizer {

Status PreTokenizer::split(const Regex& regex, const PreTokenizerStep& step, std::string_view s,
                           Scratch& scratch, size_t depth, std::vector<Range>& out) {
  // 1. (range, is_match) covering s, like tokenizers' Pattern::find_matches for a Regex.
  auto& m = scratch.matches[depth];
  m.clear();
  auto n = static_cast<uint32_t>(s.size());
  if (s.empty()) {
    m.push_back({{0, 0}, false});
  } else {
    uint32_t prev = 0;       // end of the last piece pushed
    size_t search_from = 0;  // onig FindMatches::last_end
    bool have_last = false;
    size_t last_match_end = 0;
    while (search_from <= s.size()) {
      Regex::Match mt{};
      DSV4_ASSIGN_OR_RETURN(bool found, regex.search(s, search_from, scratch.regex, &mt));
      if (!found) break;
      if (mt.end == mt.start && have_last && last_match_end == mt.end) {
        // An empty match right after the previous match: step over one character.
        search_from += search_from < s.size() ? utf8::next_unit(s, search_from).len : 1;
        continue;
      }
      search_from = mt.end;
      have_last = true;
      last_match_end = mt.end;
      auto st = static_cast<uint32_t>(mt.start), en = static_cast<uint32_t>(mt.end);
      if (prev != st) m.push_back({{prev, st}, false});
      m.push_back({{st, en}, true});
      prev = en;
    }
    if (prev != n) m.push_back({{prev, n}, false});
  }
  if (step.invert) {
    for (auto& e : m) e.second = !e.second;
  }

  // 2. Delimiter behaviour, as NormalizedString::split.
  out.clear();
  switch (step.behavior) {
    case SplitBehavior::isolated:
      for (const auto& e : m) out.push_back(e.first);
      break;
    case SplitBehavior::removed:
      for (const auto& e : m) {
        if (!e.second) out.push_back(e.first);
      }
      break;
    case SplitBehavior::contiguous: {
      bool previous_match = false;
      for (const auto& e : m) {
        if (e.second == previous_match && !out.empty()) {
          out.back().end = e.first.end;
        } else {
          out.push_back(e.first);
        }
        previous_match = e.second;
      }
      break;
    }
    case SplitBehavior::merged_with_previous: {
      bool previous_match = false;
      for (const auto& e : m) {
        if (e.second && !previous_match && !out.empty()) {
          out.back().end = e.first.end;
        } else {
          out.push_back(e.first);
        }
        previous_match = e.second;
      }
      break;
    }
    case SplitBehavior::merged_with_next: {
      bool previous_match = false;
      for (size_t i = m.size(); i-- > 0;) {
        const auto& e = m[i];
        if (e.second && !previous_match && !out.empty()) {
          out.back().begin = e.first.begin;
        } else {
          out.push_back(e.first);
        }
        previous_match = e.second;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  return ok_status();
}

}  // namespace dsv4::tokenizer
