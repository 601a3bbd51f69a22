// Exhaustive check against the reference over every Unicode scalar value (label `slow`).
//
// tests/data/tokenizer/codepoints.json holds, per block of 4096 code points, an FNV-1a 64 digest
// of the reference ids (tokenizers 0.23.3) of a probe text built around each code point c:
// "a{c}1{c} {c}!{c}\n{c}" (letter, digit, space, punctuation and newline neighbours, i.e. every
// class the DeepSeek-V4 regexes distinguish). Regenerate with
// tools/reference/make_tokenizer_vectors.py --unicode-delta.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace dsv4::tokenizer {
namespace {

uint64_t fnv1a(uint64_t h, uint32_t v) {
  for (int k = 0; k < 4; ++k) {
    h ^= (v >> (8 * k)) & 0xFF;
    h *= 0x100000001B3ull;
  }
  return h;
}

TEST(TokenizerSlow, EveryCodePointAgreesWithReference) {
  const std::string dir = std::string(DSV4_TEST_DATA_DIR) + "/tokenizer";
  auto tok = Tokenizer::load(dir);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  std::ifstream in(dir + "/codepoints.json");
  auto j = nlohmann::json::parse(in);
  const auto digests = j.at("digests").get<std::vector<std::string>>();
  const uint32_t block = j.at("block").get<uint32_t>();
  ASSERT_EQ(digests.size() * block, 0x110000u);
  int bad_blocks = 0;
  for (size_t b = 0; b < digests.size(); ++b) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (uint32_t cp = static_cast<uint32_t>(b) * block; cp < (b + 1) * block; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      std::string c;
      utf8::append_code_point(c, cp);
      auto ids = tok->encode("a" + c + "1" + c + " " + c + "!" + c + "\n" + c);
      ASSERT_TRUE(ids.ok());
      h = fnv1a(h, cp);
      h = fnv1a(h, static_cast<uint32_t>(ids->size()));
      for (int32_t id : *ids) h = fnv1a(h, static_cast<uint32_t>(id));
    }
    if (fmt::format("{:016x}", h) != digests[b]) {
      ADD_FAILURE() << fmt::format("code points U+{:04X}..U+{:04X} disagree with the reference",
                                   b * block, (b + 1) * block - 1);
      ++bad_blocks;
    }
  }
  EXPECT_EQ(bad_blocks, 0);
}

}  // namespace
}  // namespace dsv4::tokenizer
