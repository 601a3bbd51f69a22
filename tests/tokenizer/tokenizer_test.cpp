// Tokenizer tests: agreement with the Hugging Face `tokenizers` reference on the committed vectors
// (tests/data/tokenizer/vectors.jsonl from tools/reference/make_tokenizer_vectors.py), round-trip
// properties on random valid UTF-8, documented behaviour on invalid UTF-8, the streaming decoder,
// and every error path of the loader.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tokenizer/bpe.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace dsv4::tokenizer {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

const std::string kDataDir = std::string(DSV4_TEST_DATA_DIR) + "/tokenizer";

const Tokenizer& deepseek() {
  static const Tokenizer* tok = [] {
    auto r = Tokenizer::load(kDataDir);
    if (!r.ok()) {
      ADD_FAILURE() << r.status().to_string();
      std::abort();
    }
    return new Tokenizer(std::move(r).value());
  }();
  return *tok;
}

std::vector<Json> read_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::vector<Json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(Json::parse(line));
  }
  return out;
}

std::string show_ids(const std::vector<int32_t>& ids) {
  return fmt::format("[{}]", fmt::join(ids, ", "));
}

// ---------------------------------------------------------------- reference vectors

// Runs every record of a vectors file against `tok`; counts the records checked.
void check_vectors(const Tokenizer& tok, const std::string& path, int* encodes, int* decodes) {
  auto records = read_jsonl(path);
  EXPECT_GT(records.size(), 1u);
  EXPECT_EQ(records.at(0).at("kind"), "meta");
  int n_encode = 0, n_decode = 0, failures = 0;
  for (const Json& r : records) {
    const std::string kind = r.at("kind");
    if (kind == "encode") {
      ++n_encode;
      const std::string text = r.at("text");
      const bool parse_special = r.at("parse_special");
      const bool no_added = r.value("added_tokens", "") == "none";
      const auto want = r.at("ids").get<std::vector<int32_t>>();
      auto got = no_added ? tok.encode(text, Tokenizer::AddedTokens::none)
                          : tok.encode(text, parse_special);
      ASSERT_TRUE(got.ok()) << got.status().to_string();
      if (*got != want && ++failures <= 10) {
        ADD_FAILURE() << r.at("name").get<std::string>() << " parse_special=" << parse_special
                      << " no_added=" << no_added << "\n text: " << Json(text).dump() << "\n  want "
                      << show_ids(want) << "\n  got  " << show_ids(*got);
      }
      // Decoding the reference ids gives the reference's decode (the text itself here).
      const std::string decoded = r.contains("decoded") ? r.at("decoded").get<std::string>() : text;
      auto dec = tok.decode(want);
      ASSERT_TRUE(dec.ok()) << dec.status().to_string();
      if (*dec != decoded && ++failures <= 10) {
        ADD_FAILURE() << r.at("name").get<std::string>()
                      << ": decode differs: " << Json(*dec).dump() << " vs "
                      << Json(decoded).dump();
      }
    } else if (kind == "decode") {
      ++n_decode;
      const auto ids = r.at("ids").get<std::vector<int32_t>>();
      auto got = tok.decode(ids, r.at("skip_special").get<bool>());
      ASSERT_TRUE(got.ok()) << got.status().to_string();
      if (*got != r.at("text").get<std::string>() && ++failures <= 10) {
        ADD_FAILURE() << r.at("name").get<std::string>() << " skip_special=" << r.at("skip_special")
                      << ": " << Json(*got).dump() << " vs " << r.at("text").dump();
      }
    }
  }
  EXPECT_EQ(failures, 0) << "records disagreeing with the reference in " << path;
  *encodes = n_encode;
  *decodes = n_decode;
}

TEST(Tokenizer, LoadsDeepSeekV4) {
  const Tokenizer& tok = deepseek();
  EXPECT_EQ(tok.vocab_size(), 129280);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.token_to_id("<think>"), 128821);
  EXPECT_EQ(tok.token_to_id("</think>"), 128822);
  EXPECT_EQ(tok.token_to_id("｜DSML｜"), 128825);
  EXPECT_EQ(tok.id_to_token(128821), "<think>");
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_FALSE(tok.is_special(128821));  // <think> is an added, non-special token
  EXPECT_EQ(tok.token_to_id("Ġthe").has_value(), true);
  EXPECT_EQ(tok.token_bytes(*tok.token_to_id("Ġthe")), " the");
  EXPECT_FALSE(tok.id_to_token(-1).has_value());
  EXPECT_FALSE(tok.id_to_token(129280).has_value());
  EXPECT_EQ(tok.added_tokens().size(), 1283u);
}

TEST(Tokenizer, AgreesWithReferenceVectors) {
  int n_encode = 0, n_decode = 0;
  check_vectors(deepseek(), kDataDir + "/vectors.jsonl", &n_encode, &n_decode);
  // The generator writes a few thousand random strings plus the curated list and 800 decodes.
  EXPECT_GT(n_encode, 5000);
  EXPECT_GT(n_decode, 500);
  std::printf("checked %d encode and %d decode reference vectors\n", n_encode, n_decode);
}

TEST(Tokenizer, MiniTokenizerAgreesWithReference) {
  // A tiny BPE with every added-token flag, all split behaviours and ByteLevel add_prefix_space
  // (DeepSeek-V4's file exercises none of these), checked against the same library.
  auto tok = Tokenizer::load(kDataDir + "/mini");
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  int n_encode = 0, n_decode = 0;
  check_vectors(*tok, kDataDir + "/mini/vectors.jsonl", &n_encode, &n_decode);
  EXPECT_GT(n_encode, 100);
  EXPECT_GT(n_decode, 10);
}

// ---------------------------------------------------------------- properties

// Random valid UTF-8 mixing ASCII, whitespace, all planes (incl. unassigned and private use)
// and DeepSeek's added tokens.
std::string random_valid_text(std::mt19937& rng, const Tokenizer& tok) {
  std::string s;
  int n = std::uniform_int_distribution<int>(0, 60)(rng);
  const auto& added = tok.added_tokens();
  for (int i = 0; i < n; ++i) {
    int kind = std::uniform_int_distribution<int>(0, 9)(rng);
    uint32_t cp = 0;
    switch (kind) {
      case 0:
      case 1:
      case 2:
        cp = std::uniform_int_distribution<uint32_t>(0x20, 0x7E)(rng);
        break;
      case 3:
        cp = " \t\n\r\x0b\x0c"[std::uniform_int_distribution<int>(0, 5)(rng)];
        break;
      case 4:
        cp = std::uniform_int_distribution<uint32_t>(0x80, 0x7FF)(rng);
        break;
      case 5:
        cp = std::uniform_int_distribution<uint32_t>(0x800, 0xFFFF)(rng);
        break;
      case 6:
        cp = std::uniform_int_distribution<uint32_t>(0x10000, 0x10FFFF)(rng);
        break;
      case 7:
        cp = std::uniform_int_distribution<uint32_t>(0x4E00, 0x9FFF)(rng);
        break;
      case 8:
        cp = std::uniform_int_distribution<uint32_t>(0, 0x1F)(rng);
        break;
      default: {
        const auto& t = added[std::uniform_int_distribution<size_t>(0, added.size() - 1)(rng)];
        s += t.content;
        continue;
      }
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
    utf8::append_code_point(s, cp);
  }
  return s;
}

TEST(Tokenizer, RoundTripsRandomValidUtf8) {
  const Tokenizer& tok = deepseek();
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    std::string s = random_valid_text(rng, tok);
    ASSERT_TRUE(utf8::is_valid(s));
    for (auto mode : {Tokenizer::AddedTokens::all, Tokenizer::AddedTokens::non_special,
                      Tokenizer::AddedTokens::none}) {
      auto ids = tok.encode(s, mode);
      ASSERT_TRUE(ids.ok()) << ids.status().to_string();
      auto back = tok.decode(*ids);
      ASSERT_TRUE(back.ok());
      ASSERT_EQ(*back, s) << "mode=" << static_cast<int>(mode) << " " << Json(s).dump();
      for (int32_t id : *ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
    }
  }
}

TEST(Tokenizer, SpecialTokensParsedOnlyWhenAsked) {
  const Tokenizer& tok = deepseek();
  const std::string bos = "<｜begin▁of▁sentence｜>";
  auto with = tok.encode("a" + bos + "b", true);
  auto without = tok.encode("a" + bos + "b", false);
  ASSERT_TRUE(with.ok() && without.ok());
  EXPECT_EQ(std::count(with->begin(), with->end(), 0), 1);
  EXPECT_EQ(std::count(without->begin(), without->end(), 0), 0);
  EXPECT_GT(without->size(), with->size());
  // Non-special added tokens are recognized either way (as tokenizers does) ...
  auto think = tok.encode("x<think>y", false);
  ASSERT_TRUE(think.ok());
  EXPECT_EQ(std::count(think->begin(), think->end(), 128821), 1);
  // ... unless added-token matching is off altogether.
  auto none = tok.encode("x<think>y" + bos, Tokenizer::AddedTokens::none);
  ASSERT_TRUE(none.ok());
  for (int32_t id : *none) EXPECT_LT(id, 128000) << "only BPE vocabulary ids";
  // skip_special drops special tokens only.
  auto d = tok.decode(std::vector<int32_t>{0, 128821, 1}, /*skip_special=*/true);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, "<think>");
}

// Independent lossy UTF-8 decoding check: Python's bytes.decode("utf-8", "replace") outputs.
TEST(Tokenizer, InvalidUtf8KnownCases) {
  const Tokenizer& tok = deepseek();
  struct Case {
    std::string bytes, lossy;
  };
  const std::vector<Case> cases = {
      {"\xff", "\xef\xbf\xbd"},
      {"a\x80z", "a\xef\xbf\xbdz"},
      {"\xe3\x81", "\xef\xbf\xbd"},                              // truncated 3-byte char
      {"\xe3\x81z", "\xef\xbf\xbdz"},                            // cut by ASCII
      {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},  // surrogate: 3 subparts
      {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                  // overlong
      {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},  // > U+10FFFF
      {"\xf0\x9f\x98", "\xef\xbf\xbd"},                                          // truncated emoji
      {"\xf0\x9f\x98\xf0\x9f\x98\x80", "\xef\xbf\xbd\xf0\x9f\x98\x80"},
  };
  for (const Case& c : cases) {
    auto ids = tok.encode(c.bytes);
    ASSERT_TRUE(ids.ok());
    auto raw = tok.decode_bytes(*ids);
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(*raw, c.bytes);
    auto text = tok.decode(*ids);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, c.lossy) << Json(c.lossy).dump();
  }
}

std::string random_bytes(std::mt19937& rng, size_t max_len) {
  std::string s(std::uniform_int_distribution<size_t>(0, max_len)(rng), '\0');
  for (char& c : s) {
    int k = std::uniform_int_distribution<int>(0, 3)(rng);
    // Bias towards bytes that form (broken) multi-byte sequences.
    c = static_cast<char>(k == 0   ? std::uniform_int_distribution<int>(0x20, 0x7E)(rng)
                          : k == 1 ? std::uniform_int_distribution<int>(0x80, 0xBF)(rng)
                          : k == 2 ? std::uniform_int_distribution<int>(0xC0, 0xFF)(rng)
                                   : std::uniform_int_distribution<int>(0, 255)(rng));
  }
  return s;
}

TEST(Tokenizer, InvalidUtf8RoundTripsBytes) {
  const Tokenizer& tok = deepseek();
  std::mt19937 rng(99);
  for (int i = 0; i < 3000; ++i) {
    std::string b = random_bytes(rng, 40);
    auto ids = tok.encode(b);
    ASSERT_TRUE(ids.ok());
    auto raw = tok.decode_bytes(*ids);
    ASSERT_TRUE(raw.ok());
    ASSERT_EQ(*raw, b);
    auto text = tok.decode(*ids);
    ASSERT_TRUE(text.ok());
    EXPECT_TRUE(utf8::is_valid(*text));
    std::string lossy;
    utf8::append_lossy(lossy, b);
    EXPECT_EQ(*text, lossy);
  }
}

TEST(Tokenizer, InvalidRunIsAHardBoundary) {
  // Documented behaviour: encode(a + X + b) == encode(a) ++ encode(X) ++ encode(b) for valid a, b
  // and a run X of ill-formed bytes.
  const Tokenizer& tok = deepseek();
  std::mt19937 rng(7);
  const std::vector<std::string> runs = {"\xff", "\x80\x80",     "\xe3\x81",    "\xed\xa0\x80",
                                         "\xc3", "\xf0\x9f\x98", "\xfe\xff\xc0"};
  for (int i = 0; i < 500; ++i) {
    std::string a = random_valid_text(rng, tok), b = random_valid_text(rng, tok);
    const std::string& x = runs[static_cast<size_t>(i) % runs.size()];
    // `b` must not start with continuation bytes that would extend X: valid text never does.
    auto whole = tok.encode(a + x + b);
    auto ea = tok.encode(a), ex = tok.encode(x), eb = tok.encode(b);
    ASSERT_TRUE(whole.ok() && ea.ok() && ex.ok() && eb.ok());
    std::vector<int32_t> joined = *ea;
    joined.insert(joined.end(), ex->begin(), ex->end());
    joined.insert(joined.end(), eb->begin(), eb->end());
    ASSERT_EQ(*whole, joined) << Json(a).dump() << " + X + " << Json(b).dump();
  }
}

TEST(Tokenizer, LongInputsDoNotFail) {
  // Long runs exercise the regexes' backtracking and the BPE heap on huge words.
  const Tokenizer& tok = deepseek();
  for (const std::string& unit :
       {std::string(" "), std::string("a"), std::string("1"), std::string("\n"), std::string(" \n"),
        std::string("中"), std::string("!"), std::string("\xff")}) {
    std::string s;
    while (s.size() < 1'000'000) s += unit;
    auto ids = tok.encode(s);
    ASSERT_TRUE(ids.ok()) << ids.status().to_string();
    auto back = tok.decode_bytes(*ids);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, s);
  }
}

TEST(Tokenizer, ConcurrentEncodeMatchesSerial) {
  const Tokenizer& tok = deepseek();
  std::mt19937 rng(5);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back(random_valid_text(rng, tok));
  std::vector<std::vector<int32_t>> serial;
  for (const auto& t : texts) serial.push_back(*tok.encode(t));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); i < texts.size() * 3; i += 4) {
        auto ids = tok.encode(texts[i % texts.size()]);
        if (!ids.ok() || *ids != serial[i % texts.size()]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(TokenizerBpe, ScanAndHeapMergeOrdersAgree) {
  // The two merge algorithms must give identical ids: checked on DeepSeek-V4's merges for
  // random byte strings (biased to letters, spaces and UTF-8 lead/continuation bytes).
  std::ifstream in(kDataDir + "/tokenizer.json", std::ios::binary);
  Json j = Json::parse(in);
  std::vector<std::pair<std::string, int32_t>> vocab;
  for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it) {
    vocab.emplace_back(it.key(), it.value().get<int32_t>());
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (const auto& m : j["model"]["merges"]) {
    std::string s = m.get<std::string>();
    merges.emplace_back(s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1));
  }
  auto bpe = BpeModel::build(std::move(vocab), merges, {}, "test");
  ASSERT_TRUE(bpe.ok()) << bpe.status().to_string();
  std::mt19937 rng(3);
  const std::string alphabet =
      "etaoinshrdlucmfwypvbgkjqxz      ETAOIN0123456789.,'-\n\xe4\xb8\xad\xc3\xa9";
  BpeModel::Scratch s1, s2;
  for (int i = 0; i < 20000; ++i) {
    size_t n = std::uniform_int_distribution<size_t>(1, 80)(rng);
    std::string w;
    for (size_t k = 0; k < n; ++k) {
      w += alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
    }
    bpe->merge_word(w, s1, BpeModel::Algorithm::scan);
    bpe->merge_word(w, s2, BpeModel::Algorithm::heap);
    ASSERT_EQ(s1.ids, s2.ids) << Json(w).dump();
  }
}

// ---------------------------------------------------------------- streaming decoder

TEST(TokenizerStreamDecoder, MatchesFullDecodeAndNeverSplitsCharacters) {
  const Tokenizer& tok = deepseek();
  std::mt19937 rng(42);
  for (int i = 0; i < 2000; ++i) {
    std::vector<int32_t> ids;
    if (i % 2 == 0) {
      ids = *tok.encode(random_valid_text(rng, tok));
    } else {
      // Arbitrary ids, biased to single-byte tokens that split characters.
      int n = std::uniform_int_distribution<int>(0, 20)(rng);
      for (int k = 0; k < n; ++k) {
        ids.push_back(std::uniform_int_distribution<int>(0, 3)(rng) == 0
                          ? std::uniform_int_distribution<int32_t>(0, tok.vocab_size() - 1)(rng)
                          : std::uniform_int_distribution<int32_t>(0, 300)(rng));
      }
      ids.erase(std::remove_if(ids.begin(), ids.end(),
                               [&](int32_t id) { return !tok.token_bytes(id).has_value(); }),
                ids.end());
    }
    for (bool skip : {false, true}) {
      StreamDecoder dec(tok, skip);
      std::string streamed;
      for (int32_t id : ids) {
        auto piece = dec.push(id);
        ASSERT_TRUE(piece.ok());
        ASSERT_TRUE(utf8::is_valid(*piece));
        streamed += *piece;
        ASSERT_LE(dec.pending_bytes(), 3u);
      }
      streamed += dec.flush();
      EXPECT_EQ(dec.pending_bytes(), 0u);
      auto full = tok.decode(ids, skip);
      ASSERT_TRUE(full.ok());
      ASSERT_EQ(streamed, *full);
    }
  }
}

TEST(TokenizerStreamDecoder, HoldsBackPartialCharacter) {
  const Tokenizer& tok = deepseek();
  // "😀" is F0 9F 98 80: feed the single-byte tokens one by one.
  std::vector<int32_t> ids;
  for (uint8_t b : std::string("\xf0\x9f\x98\x80")) {
    std::string one(1, static_cast<char>(b));
    auto id = tok.token_to_id(utf8::bytes_to_byte_level(one));
    ASSERT_TRUE(id.has_value());
    ids.push_back(*id);
  }
  StreamDecoder dec(tok);
  for (size_t i = 0; i < 3; ++i) {
    auto s = dec.push(ids[i]);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(*s, "");
    EXPECT_EQ(dec.pending_bytes(), i + 1);
  }
  auto last = dec.push(ids[3]);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, "\xf0\x9f\x98\x80");
  EXPECT_EQ(dec.flush(), "");
  // An incomplete character at the end comes out as one U+FFFD.
  StreamDecoder cut(tok);
  ASSERT_TRUE(cut.push(ids[0]).ok());
  ASSERT_TRUE(cut.push(ids[1]).ok());
  EXPECT_EQ(cut.flush(), "\xef\xbf\xbd");
  // A bad id is an error and leaves the stream usable.
  EXPECT_FALSE(cut.push(-5).ok());
  EXPECT_FALSE(cut.push(tok.vocab_size()).ok());
}

TEST(Tokenizer, DecodeRejectsUnknownIds) {
  const Tokenizer& tok = deepseek();
  for (int32_t bad : {-1, tok.vocab_size(), 1 << 30}) {
    auto r = tok.decode(std::vector<int32_t>{5, bad});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), ErrorCode::invalid_argument);
    EXPECT_NE(r.status().message().find("ids[1]"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("tokenizer.json"), std::string::npos);
  }
}

// ---------------------------------------------------------------- loader errors

class TokenizerLoaderErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("dsv4_tok_test_{}_{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A minimal valid byte-level BPE tokenizer.json: the 256 byte symbols, merges "a b", "ab c".
  static Json minimal() {
    Json vocab = Json::object();
    for (int b = 0; b < 256; ++b) {
      vocab[utf8::bytes_to_byte_level(std::string(1, static_cast<char>(b)))] = b;
    }
    vocab["ab"] = 256;
    vocab["abc"] = 257;
    return Json{
        {"version", "1.0"},
        {"added_tokens", Json::array({Json{{"id", 258},
                                           {"content", "<s>"},
                                           {"special", true},
                                           {"single_word", false},
                                           {"lstrip", false},
                                           {"rstrip", false},
                                           {"normalized", false}}})},
        {"normalizer", nullptr},
        {"pre_tokenizer",
         Json{{"type", "Sequence"},
              {"pretokenizers", Json::array({Json{{"type", "Split"},
                                                  {"pattern", Json{{"Regex", "\\p{N}{1,3}"}}},
                                                  {"behavior", "Isolated"},
                                                  {"invert", false}},
                                             Json{{"type", "ByteLevel"},
                                                  {"add_prefix_space", false},
                                                  {"use_regex", true}}})}}},
        {"post_processor", nullptr},
        {"decoder", Json{{"type", "ByteLevel"}}},
        {"model",
         Json{{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array({"a b", "ab c"})}}},
    };
  }

  std::string write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

  // Loads `j` written to a file and expects an error of `code` whose message names the file
  // and contains `needle`.
  void expect_error(const Json& j, ErrorCode code, const std::string& needle) {
    expect_error_text(j.dump(), code, needle);
  }
  void expect_error_text(const std::string& text, ErrorCode code, const std::string& needle) {
    std::string path = write("tokenizer.json", text);
    auto r = Tokenizer::load(path);
    ASSERT_FALSE(r.ok()) << "expected an error containing '" << needle << "'";
    EXPECT_EQ(r.status().code(), code) << r.status().to_string();
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  }

  fs::path dir_;
};

TEST_F(TokenizerLoaderErrors, MinimalIsValid) {
  std::string path = write("tokenizer.json", minimal().dump());
  auto r = Tokenizer::load(dir_.string());  // a directory works too
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  auto ids = r->encode("abc ab<s>12345");
  ASSERT_TRUE(ids.ok());
  // "abc" merges fully; " ab" -> Ġ, ab; <s>; digits split 123|45 by the Split step (no
  // merges apply to them). The vocabulary above gives byte b the id b.
  std::vector<int32_t> want = {257, ' ', 256, 258, '1', '2', '3', '4', '5'};
  EXPECT_EQ(*ids, want);
  EXPECT_EQ(r->vocab_size(), 259);
  EXPECT_FALSE(r->bos_id().has_value());
}

TEST_F(TokenizerLoaderErrors, MissingFileAndDirectory) {
  auto r = Tokenizer::load((dir_ / "nope.json").string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::not_found);
  EXPECT_NE(r.status().message().find("nope.json"), std::string::npos);
  auto d = Tokenizer::load(dir_.string());  // directory without tokenizer.json
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), ErrorCode::not_found);
  EXPECT_NE(d.status().message().find("tokenizer.json"), std::string::npos);
}

TEST_F(TokenizerLoaderErrors, BadJson) {
  expect_error_text("{\"model\": ", ErrorCode::parse_error, "not valid JSON");
  expect_error_text("", ErrorCode::parse_error, "not valid JSON");
  expect_error_text("[1, 2]", ErrorCode::parse_error, "top level");
  expect_error_text("{\"model\": \"\xff\"}", ErrorCode::parse_error, "not valid JSON");
}

TEST_F(TokenizerLoaderErrors, Model) {
  Json j = minimal();
  j.erase("model");
  expect_error(j, ErrorCode::parse_error, "model");
  j = minimal();
  j["model"]["type"] = "WordPiece";
  expect_error(j, ErrorCode::unsupported, "model.type");
  j = minimal();
  j["model"]["vocab"] = Json::array();
  expect_error(j, ErrorCode::parse_error, "model.vocab");
  j = minimal();
  j["model"]["vocab"]["ab"] = "x";
  expect_error(j, ErrorCode::parse_error, "model.vocab[\"ab\"]");
  j = minimal();
  j["model"]["vocab"]["ab"] = -3;
  expect_error(j, ErrorCode::parse_error, "model.vocab[\"ab\"]");
  j = minimal();
  j["model"]["vocab"]["ab"] = 5;  // duplicate id
  expect_error(j, ErrorCode::parse_error, "model.vocab");
  j = minimal();
  j["model"].erase("merges");
  expect_error(j, ErrorCode::parse_error, "model.merges");
  j = minimal();
  j["model"]["merges"] = Json::array({"a b", "a zz"});
  expect_error(j, ErrorCode::parse_error, "model.merges[1]: token 'zz'");
  j = minimal();
  j["model"]["merges"] = Json::array({"b c"});  // "bc" is not in the vocabulary
  expect_error(j, ErrorCode::parse_error, "model.merges[0]: merged token 'bc'");
  j = minimal();
  j["model"]["merges"] = Json::array({"a b c"});
  expect_error(j, ErrorCode::parse_error, "model.merges[0]");
  j = minimal();
  j["model"]["merges"] = Json::array({Json::array({"a"})});
  expect_error(j, ErrorCode::parse_error, "model.merges[0]");
  j = minimal();
  j["model"]["merges"] = Json::array({Json::array({"a", "b"}), Json::array({"ab", "c"})});
  std::string path = write("tokenizer.json", j.dump());
  ASSERT_TRUE(Tokenizer::load(path).ok());  // the pair form is accepted
  j = minimal();
  j["model"]["dropout"] = 0.1;
  expect_error(j, ErrorCode::unsupported, "model.dropout");
  j = minimal();
  j["model"]["byte_fallback"] = true;
  expect_error(j, ErrorCode::unsupported, "model.byte_fallback");
  j = minimal();
  j["model"]["continuing_subword_prefix"] = "##";
  expect_error(j, ErrorCode::unsupported, "model.continuing_subword_prefix");
  j = minimal();
  j["model"]["unk_token"] = "<unk>";
  expect_error(j, ErrorCode::parse_error, "model.unk_token");
  j = minimal();
  j["model"]["fuse_unk"] = "yes";
  expect_error(j, ErrorCode::parse_error, "model.fuse_unk");
}

TEST_F(TokenizerLoaderErrors, NormalizerPreTokenizerDecoder) {
  Json j = minimal();
  j["normalizer"] = Json{{"type", "NFC"}};
  expect_error(j, ErrorCode::unsupported, "normalizer.type");
  j = minimal();
  j["normalizer"] =
      Json{{"type", "Sequence"}, {"normalizers", Json::array({Json{{"type", "Lowercase"}}})}};
  expect_error(j, ErrorCode::unsupported, "normalizer.normalizers[0].type");
  j = minimal();
  j["normalizer"] = Json{{"type", "Sequence"}, {"normalizers", Json::array()}};
  ASSERT_TRUE(Tokenizer::load(write("tokenizer.json", j.dump())).ok());

  j = minimal();
  j["pre_tokenizer"] = nullptr;
  expect_error(j, ErrorCode::unsupported, "pre_tokenizer");
  j = minimal();
  j["pre_tokenizer"] = Json{{"type", "Whitespace"}};
  expect_error(j, ErrorCode::unsupported, "pre_tokenizer.type");
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "([a-z";
  expect_error(j, ErrorCode::parse_error, "pre_tokenizer.pretokenizers[0].pattern.Regex");
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\bword";
  expect_error(j, ErrorCode::unsupported, "pre_tokenizer.pretokenizers[0].pattern.Regex");
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = Json{{"Other", "x"}};
  expect_error(j, ErrorCode::parse_error, "pre_tokenizer.pretokenizers[0].pattern");
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  expect_error(j, ErrorCode::parse_error, "pre_tokenizer.pretokenizers[0].behavior");
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"][0].erase("behavior");
  expect_error(j, ErrorCode::parse_error, "pre_tokenizer.pretokenizers[0].behavior");
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"] =
      Json::array({j["pre_tokenizer"]["pretokenizers"][1], j["pre_tokenizer"]["pretokenizers"][0]});
  expect_error(j, ErrorCode::unsupported, "pre_tokenizer.pretokenizers[1]");
  j = minimal();
  j["pre_tokenizer"] = j["pre_tokenizer"]["pretokenizers"][0];  // no ByteLevel at all
  expect_error(j, ErrorCode::unsupported, "ByteLevel");
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"] = "x";
  expect_error(j, ErrorCode::parse_error, "pre_tokenizer.pretokenizers");

  j = minimal();
  j.erase("decoder");
  expect_error(j, ErrorCode::parse_error, "decoder");
  j = minimal();
  j["decoder"] = nullptr;
  expect_error(j, ErrorCode::unsupported, "decoder");
  j = minimal();
  j["decoder"] = Json{{"type", "WordPiece"}};
  expect_error(j, ErrorCode::unsupported, "decoder.type");
  j = minimal();
  j["decoder"] = Json{{"kind", "ByteLevel"}};
  expect_error(j, ErrorCode::parse_error, "decoder.type");
}

TEST_F(TokenizerLoaderErrors, AddedTokens) {
  Json j = minimal();
  j["added_tokens"] = Json::object();
  expect_error(j, ErrorCode::parse_error, "added_tokens");
  j = minimal();
  j["added_tokens"][0].erase("content");
  expect_error(j, ErrorCode::parse_error, "added_tokens[0].content");
  j = minimal();
  j["added_tokens"][0]["id"] = -1;
  expect_error(j, ErrorCode::parse_error, "added_tokens[0].id");
  j = minimal();
  j["added_tokens"][0]["id"] = "7";
  expect_error(j, ErrorCode::parse_error, "added_tokens[0].id");
  j = minimal();
  j["added_tokens"][0]["special"] = 1;
  expect_error(j, ErrorCode::parse_error, "added_tokens[0].special");
  j = minimal();
  j["added_tokens"].push_back(j["added_tokens"][0]);
  j["added_tokens"][1]["id"] = 300;
  expect_error(j, ErrorCode::parse_error, "added_tokens[1].content");
  j = minimal();
  j["added_tokens"].push_back(j["added_tokens"][0]);
  j["added_tokens"][1]["content"] = "</s>";
  expect_error(j, ErrorCode::parse_error, "added_tokens[1].id");
}

TEST_F(TokenizerLoaderErrors, TokenizerConfig) {
  write("tokenizer.json", minimal().dump());
  write("tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": {"content": "<s>"}})");
  auto ok = Tokenizer::load(dir_.string());
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->bos_id(), 258);
  EXPECT_EQ(ok->eos_id(), 258);
  write("tokenizer_config.json", R"({"bos_token": "<nope>"})");
  auto bad = Tokenizer::load(dir_.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bos_token"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("tokenizer_config.json"), std::string::npos);
  write("tokenizer_config.json", R"({"eos_token": 5})");
  auto bad2 = Tokenizer::load(dir_.string());
  ASSERT_FALSE(bad2.ok());
  EXPECT_NE(bad2.status().message().find("eos_token"), std::string::npos);
  write("tokenizer_config.json", "{oops");
  auto bad3 = Tokenizer::load(dir_.string());
  ASSERT_FALSE(bad3.ok());
  EXPECT_NE(bad3.status().message().find("tokenizer_config.json"), std::string::npos);
}

// ---------------------------------------------------------------- regex adapter

bool matches_whole(const Regex& re, std::string_view s) {
  Regex::Scratch scratch;
  Regex::Match m{};
  auto r = re.search(s, 0, scratch, &m);
  return r.ok() && *r && m.start == 0 && m.end == s.size();
}

TEST(TokenizerRegex, OnigurumaEscapesKeepTheirMeaning) {
  // Oniguruma (the reference's engine) under Unicode: \w = Letter|Mark|Number|Connector_Punct.,
  // \h = hex digit, \s includes U+0085 (checked against tokenizers 0.23.3, see regex.h).
  auto w = Regex::compile("\\w+");
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(matches_whole(*w,
                            "a\xc2\xb2\xe2\x85\xab"
                            "e\xcc\x81_\xe2\x80\xbf"));  // a²Ⅻé_‿
  EXPECT_FALSE(matches_whole(*w, "\xe2\x80\x8d"));       // ZWJ
  auto h = Regex::compile("[\\h]+\\H");
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(matches_whole(*h, "09afAF "));
  EXPECT_FALSE(matches_whole(*h, "09ag "));
  auto s = Regex::compile("\\s+");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(matches_whole(*s, " \t\n\r\x0b\x0c\xc2\x85\xc2\xa0\xe2\x80\xa8\xe3\x80\x80"));
  EXPECT_FALSE(matches_whole(*s, "\xe2\x80\x8b"));  // ZERO WIDTH SPACE is not White_Space
  auto u = Regex::compile("\\u4e2d+");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(matches_whole(*u, "\xe4\xb8\xad\xe4\xb8\xad"));
  std::string tw = *translate_oniguruma_pattern("[\\w\\]]");
  EXPECT_EQ(tw.rfind("[\\p{L}\\p{M}\\p{N}\\p{Pc}", 0), 0u) << tw;
  EXPECT_EQ(tw.substr(tw.size() - 3), "\\]]") << tw;
  EXPECT_EQ(translate_oniguruma_pattern("[\\W]").status().code(), ErrorCode::unsupported);
  EXPECT_EQ(translate_oniguruma_pattern("[a[bc]]").status().code(), ErrorCode::unsupported);
  EXPECT_EQ(translate_oniguruma_pattern("[a&&b]").status().code(), ErrorCode::unsupported);
  EXPECT_EQ(translate_oniguruma_pattern("\\u12").status().code(), ErrorCode::parse_error);
  EXPECT_EQ(translate_oniguruma_pattern("[ab").status().code(), ErrorCode::parse_error);
  EXPECT_TRUE(translate_oniguruma_pattern("[[:alpha:]]").ok());
  // Characters assigned after PCRE2's Unicode 14.0 get the reference's categories:
  // U+31350 (CJK Ext. H, Lo in Unicode 15) and U+1E5F1 (Ol Onal digit one, Nd in Unicode 16).
  const std::string ext_h = "\xf0\xb1\x8d\x90", ol_onal_1 = "\xf0\x9e\x97\xb1";
  EXPECT_TRUE(matches_whole(*Regex::compile("\\p{L}"), ext_h));
  EXPECT_TRUE(matches_whole(*Regex::compile("\\pL"), ext_h));
  EXPECT_TRUE(matches_whole(*Regex::compile("[x\\p{Lo}]"), ext_h));
  EXPECT_FALSE(matches_whole(*Regex::compile("[^\\p{L}]"), ext_h));
  EXPECT_FALSE(matches_whole(*Regex::compile("\\P{L}"), ext_h));
  EXPECT_FALSE(matches_whole(*Regex::compile("\\p{^L}"), ext_h));
  EXPECT_FALSE(matches_whole(*Regex::compile("\\p{Lu}"), ext_h));
  EXPECT_TRUE(matches_whole(*Regex::compile("\\d"), ol_onal_1));
  EXPECT_TRUE(matches_whole(*Regex::compile("\\p{N}"), ol_onal_1));
  EXPECT_TRUE(matches_whole(*Regex::compile("\\w"), ol_onal_1));
  EXPECT_FALSE(matches_whole(*Regex::compile("\\p{L}"), ol_onal_1));
  // Unwidened, PCRE2 14.0 tables: the fast variant used on text without such characters.
  EXPECT_FALSE(matches_whole(*Regex::compile("\\p{L}", false, /*widen=*/false), ext_h));
  EXPECT_TRUE(has_unicode_delta_chars("abc " + ext_h));
  EXPECT_TRUE(has_unicode_delta_chars(ol_onal_1 + "x"));
  EXPECT_TRUE(has_unicode_delta_chars("\xe0\xa2\x97"));  // U+0897, the lowest such character
  EXPECT_FALSE(has_unicode_delta_chars("plain ascii text, long enough for the 8-byte path"));
  EXPECT_FALSE(has_unicode_delta_chars("\xe4\xb8\xad\xc3\xa9\xf0\x9f\x98\x80"));  // 中é😀
  auto lit = Regex::compile("a.b", /*literal=*/true);
  ASSERT_TRUE(lit.ok());
  EXPECT_TRUE(matches_whole(*lit, "a.b"));
  EXPECT_FALSE(matches_whole(*lit, "axb"));
}

}  // namespace
}  // namespace dsv4::tokenizer
