// Chat format tests: prompts byte-identical to DeepSeek's deepseek-recipe 0.2.0 on the committed
// requests (tests/data/chat/render_cases.json, tools/reference/make_chat_vectors.py), same
// rejections, same parse options; output parsing equal to the reference's StreamProcessor on
// tests/data/chat/parse_cases.json, and the same result for every way of splitting the output
// into deltas (no partial marker ever leaks into content).
#include "tokenizer/chat.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace dsv4::tokenizer {
namespace {

using Json = nlohmann::ordered_json;

const std::string kChatDir = std::string(DSV4_TEST_DATA_DIR) + "/chat";

Json load(const std::string& name) {
  std::ifstream in(kChatDir + "/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  Json j = Json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << name;
  return j;
}

const Tokenizer& deepseek() {
  static const Tokenizer* tok = [] {
    auto r = Tokenizer::load(std::string(DSV4_TEST_DATA_DIR) + "/tokenizer");
    if (!r.ok()) {
      ADD_FAILURE() << r.status().to_string();
      std::abort();
    }
    return new Tokenizer(std::move(r).value());
  }();
  return *tok;
}

ChatStage stage_from(const std::string& s) {
  if (s == "content_start") return ChatStage::content_start;
  if (s == "reasoning_start") return ChatStage::reasoning_start;
  if (s == "reasoning_continuation") return ChatStage::reasoning_continuation;
  if (s == "content_continuation") return ChatStage::content_continuation;
  EXPECT_EQ(s, "tool_calls");
  return ChatStage::tool_calls;
}

ChatParseOptions options_from(const Json& o) {
  ChatParseOptions opt;
  opt.initial_stage = stage_from(o["initial_stage"].get<std::string>());
  opt.parse_tool_calls = o["parse_tool_calls"].get<bool>();
  for (const auto& s : o["stop"]) opt.stop.push_back(s.get<std::string>());
  return opt;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

TEST(ChatRender, MatchesReferenceVectors) {
  const Json file = load("render_cases.json");
  ASSERT_GT(file["cases"].size(), 50u);
  size_t rendered = 0, rejected = 0, ids_compared = 0;
  bool saw_special_text_case = false;
  for (const auto& c : file["cases"]) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    const std::string body = c["request"].dump();
    auto req = parse_chat_request(body);
    if (c.contains("error")) {
      EXPECT_FALSE(req.ok()) << "the reference rejects this request: " << c["error"];
      ++rejected;
      continue;
    }
    ASSERT_TRUE(req.ok()) << req.status().to_string();
    auto prompt = render_chat(*req);
    ASSERT_TRUE(prompt.ok()) << prompt.status().to_string();
    EXPECT_EQ(prompt->text, c["prompt"].get<std::string>());
    std::vector<std::pair<size_t, size_t>> ranges;
    for (const auto& r : c["special_ranges"])
      ranges.emplace_back(r[0].get<size_t>(), r[1].get<size_t>());
    EXPECT_EQ(prompt->special_ranges, ranges);

    const ChatParseOptions opt = chat_parse_options(*req);
    const ChatParseOptions want = options_from(c["parse_options"]);
    EXPECT_EQ(opt.initial_stage, want.initial_stage);
    EXPECT_EQ(opt.parse_tool_calls, want.parse_tool_calls);
    EXPECT_EQ(opt.stop, want.stop);

    // Token ids: every case, including user text that spells added tokens
    // [special_token_text_in_content] (plain text is encoded without added-token matching).
    auto ids = encode_prompt(deepseek(), *prompt);
    ASSERT_TRUE(ids.ok()) << ids.status().to_string();
    EXPECT_EQ(*ids, c["token_ids"].get<std::vector<int32_t>>());
    ++ids_compared;
    if (name == "special_token_text_in_content") saw_special_text_case = true;
    ++rendered;
  }
  EXPECT_GT(rendered, 40u);
  EXPECT_GT(rejected, 20u);
  EXPECT_EQ(ids_compared, rendered);
  EXPECT_TRUE(saw_special_text_case);
}

TEST(ChatRender, ExampleFromDocs) {
  auto req = parse_chat_request(R"({"messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "2+2?"},
      {"role": "assistant", "content": "4", "reasoning_content": "easy"},
      {"role": "user", "content": "and 3+3?"}],
    "reasoning_effort": "low"})");
  ASSERT_TRUE(req.ok()) << req.status().to_string();
  auto p = render_chat(*req);
  ASSERT_TRUE(p.ok());
  // Earlier reasoning is dropped without tools; the generation prompt opens the reasoning.
  EXPECT_EQ(p->text,
            "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>2+2?<｜Assistant｜></think>4"
            "<｜end▁of▁sentence｜><｜User｜>and 3+3?<｜Assistant｜><think>");
  ASSERT_FALSE(p->special_ranges.empty());
  EXPECT_EQ(p->text.substr(p->special_ranges[0].first,
                           p->special_ranges[0].second - p->special_ranges[0].first),
            chat_tokens::kBos);
}

TEST(ChatRender, SpecialRangesAreTokensAndDisjoint) {
  const Json file = load("render_cases.json");
  for (const auto& c : file["cases"]) {
    if (c.contains("error")) continue;
    auto req = parse_chat_request(c["request"].dump());
    ASSERT_TRUE(req.ok());
    auto p = render_chat(*req);
    ASSERT_TRUE(p.ok());
    size_t prev_end = 0;
    for (const auto& [b, e] : p->special_ranges) {
      ASSERT_LE(prev_end, b);
      ASSERT_LT(b, e);
      const std::string_view s = std::string_view(p->text).substr(b, e - b);
      EXPECT_TRUE(deepseek().token_to_id(s).has_value()) << s;
      prev_end = e;
    }
  }
}

TEST(ChatRender, HandBuiltRequestsAreChecked) {
  ChatRequest r;
  EXPECT_FALSE(render_chat(r).ok());  // no messages
  r.messages.push_back({ChatRole::tool, "result", std::nullopt, {}, "id1", false});
  EXPECT_FALSE(render_chat(r).ok());  // tool message answering nothing
  r.messages = {{ChatRole::user, "q", std::nullopt, {}, "", true},
                {ChatRole::user, "q", std::nullopt, {}, "", false}};
  EXPECT_FALSE(render_chat(r).ok());  // prefix on a non-final message
  r.messages = {{ChatRole::user, "q", std::nullopt, {}, "", false}};
  r.thinking = false;
  auto p = render_chat(r);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->text, "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜></think>");
}

TEST(ChatRequest, RejectsBadJsonWithoutThrowing) {
  for (const char* bad :
       {"", "{", "[1,2]", "null", "{\"messages\": 5}", "{\"messages\": [5]}",
        "{\"messages\": [{\"role\": 1}]}", "\xff\xfe",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": {}}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
        "\"response_format\": {\"type\": \"json_object\"}}"}) {
    auto r = parse_chat_request(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  auto r = parse_chat_request("{");
  EXPECT_EQ(r.status().code(), ErrorCode::parse_error);
}

TEST(ChatJson, EscapesLikeSerde) {
  std::string out;
  append_json_escaped(out, std::string("a\"b\\c\n\t\r\b\f\x01\x1f\x7f é/", 17));
  EXPECT_EQ(out, "a\\\"b\\\\c\\n\\t\\r\\b\\f\\u0001\\u001f\x7f é/");
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

struct Collected {
  std::string content, reasoning;
  std::vector<ParsedToolCall> calls;
};

void collect(Collected& c, const std::vector<ChatDelta>& ds, bool check_utf8) {
  for (const auto& d : ds) {
    switch (d.kind) {
      case ChatDelta::Kind::content:
        EXPECT_FALSE(d.text.empty());
        if (check_utf8) {
          EXPECT_TRUE(valid_utf8(d.text)) << d.text;
        }
        c.content += d.text;
        break;
      case ChatDelta::Kind::reasoning:
        EXPECT_FALSE(d.text.empty());
        if (check_utf8) {
          EXPECT_TRUE(valid_utf8(d.text)) << d.text;
        }
        c.reasoning += d.text;
        break;
      case ChatDelta::Kind::tool_call:
        c.calls.push_back(d.tool_call);
        break;
    }
  }
}

void expect_same(const Collected& got, const ParsedChatMessage& want) {
  EXPECT_EQ(got.content, want.content);
  EXPECT_EQ(got.reasoning, want.reasoning_content);
  ASSERT_EQ(got.calls.size(), want.tool_calls.size());
  for (size_t i = 0; i < got.calls.size(); ++i) {
    EXPECT_EQ(got.calls[i].name, want.tool_calls[i].name);
    EXPECT_EQ(got.calls[i].arguments, want.tool_calls[i].arguments);
    EXPECT_EQ(got.calls[i].complete, want.tool_calls[i].complete);
  }
}

Collected run_split(const ChatParseOptions& opt, std::string_view text,
                    const std::vector<size_t>& cuts, bool check_utf8) {
  ChatStreamParser p(opt);
  Collected c;
  size_t pos = 0;
  for (size_t cut : cuts) {
    collect(c, p.push(text.substr(pos, cut - pos)), check_utf8);
    pos = cut;
  }
  collect(c, p.push(text.substr(pos)), check_utf8);
  collect(c, p.finish(), check_utf8);
  return c;
}

TEST(ChatParse, MatchesReferenceVectors) {
  const Json file = load("parse_cases.json");
  ASSERT_GT(file["cases"].size(), 30u);
  for (const auto& c : file["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const ChatParseOptions opt = options_from(c["options"]);
    const std::string text = c["output"].get<std::string>();
    const ParsedChatMessage m = parse_chat_output(text, opt);
    EXPECT_EQ(m.content, c["content"].get<std::string>());
    EXPECT_EQ(m.reasoning_content, c["reasoning_content"].get<std::string>());
    const Json& calls = c["tool_calls"];
    ASSERT_EQ(m.tool_calls.size(), calls.size());
    for (size_t i = 0; i < calls.size(); ++i) {
      EXPECT_EQ(m.tool_calls[i].name, calls[i]["name"].get<std::string>());
      // The reference streams the arguments of a call cut off by the end of the output in its own
      // way; only complete calls are compared byte for byte.
      if (m.tool_calls[i].complete) {
        EXPECT_EQ(m.tool_calls[i].arguments, calls[i]["arguments"].get<std::string>());
      }
    }
    EXPECT_EQ(c["finish_reason"].get<std::string>(), calls.empty() ? "stop" : "tool_calls");
  }
}

TEST(ChatParse, EverySplitGivesTheSameResult) {
  const Json file = load("parse_cases.json");
  std::mt19937_64 rng(7);
  for (const auto& c : file["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const ChatParseOptions opt = options_from(c["options"]);
    const std::string text = c["output"].get<std::string>();
    const ParsedChatMessage whole = parse_chat_output(text, opt);
    const bool utf8 = valid_utf8(text);
    // Every single cut point (byte granularity, also inside UTF-8 characters and markers).
    for (size_t cut = 0; cut <= text.size(); ++cut) {
      expect_same(run_split(opt, text, {cut}, utf8), whole);
    }
    // One byte at a time.
    std::vector<size_t> all;
    for (size_t i = 1; i < text.size(); ++i) all.push_back(i);
    expect_same(run_split(opt, text, all, utf8), whole);
    // Random splits into pieces of 1..8 bytes.
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<size_t> cuts;
      size_t pos = 0;
      while (true) {
        pos += 1 + rng() % 8;
        if (pos >= text.size()) break;
        cuts.push_back(pos);
      }
      expect_same(run_split(opt, text, cuts, utf8), whole);
    }
  }
}

TEST(ChatParse, PartialMarkersAreHeldBackNotLeaked) {
  ChatParseOptions think{ChatStage::reasoning_start, true, {}};
  ChatStreamParser p(think);
  auto d = p.push("Hello</th");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].kind, ChatDelta::Kind::reasoning);
  EXPECT_EQ(d[0].text, "Hello");
  d = p.push("ink>Answer\n");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].kind, ChatDelta::Kind::content);
  EXPECT_EQ(d[0].text, "Answer");  // a newline could still start "\n\n<｜DSML｜"
  d = p.push("\n<｜DS");
  EXPECT_TRUE(d.empty());
  d = p.push("ML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].kind, ChatDelta::Kind::tool_call);
  EXPECT_EQ(d[0].tool_call.name, "f");
  EXPECT_EQ(d[0].tool_call.arguments, "{}");
  EXPECT_TRUE(d[0].tool_call.complete);
  EXPECT_FALSE(p.done());
  d = p.push("_calls>ignored");
  EXPECT_TRUE(d.empty());
  EXPECT_TRUE(p.done());
  d = p.finish();
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(p.message().content, "Answer");
  EXPECT_EQ(p.message().reasoning_content, "Hello");
  EXPECT_EQ(p.message().skipped_invalid, std::string("ignored").size());
}

TEST(ChatParse, LessThanIsReleasedOnceDisproved) {
  ChatStreamParser p({ChatStage::content_start, true, {"STOP"}});
  auto d = p.push("a <");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].text, "a ");
  d = p.push("b ST");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].text, "<b ");
  d = p.push("OP more");
  EXPECT_TRUE(d.empty());
  EXPECT_TRUE(p.done());
  EXPECT_TRUE(p.message().stop_sequence);
  EXPECT_EQ(p.message().content, "a <b ");
}

TEST(ChatParse, TruncatedToolCallIsIncomplete) {
  const auto m = parse_chat_output(
      "x\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" "
      "string=\"true\">va",
      {ChatStage::content_start, true, {}});
  EXPECT_EQ(m.content, "x");
  ASSERT_EQ(m.tool_calls.size(), 1u);
  EXPECT_EQ(m.tool_calls[0].name, "f");
  EXPECT_EQ(m.tool_calls[0].arguments, "{\"a\": \"va");
  EXPECT_FALSE(m.tool_calls[0].complete);
}

TEST(ChatParse, IncompleteUtf8IsHeldAcrossPushes) {
  ChatStreamParser p({ChatStage::content_start, false, {}});
  const std::string e = "é";  // C3 A9
  auto d = p.push(std::string("x") + e[0]);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].text, "x");
  d = p.push(std::string(1, e[1]) + "y");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].text, e + "y");
  // An incomplete character at the very end comes out unchanged at finish().
  d = p.push(std::string(1, e[0]));
  EXPECT_TRUE(d.empty());
  d = p.finish();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].text, std::string(1, e[0]));
}

TEST(ChatParse, RandomGarbageNeverCrashesAndIsSplitInvariant) {
  // Random mixtures of marker fragments; the result must not depend on the split.
  const std::vector<std::string> pieces = {"<",
                                           "｜",
                                           "DSML",
                                           "｜DSML｜",
                                           "<｜DSML｜",
                                           "</｜DSML｜",
                                           "tool_calls>",
                                           "invoke name=\"",
                                           "parameter name=\"",
                                           "\"",
                                           "true\">",
                                           "false\">",
                                           "</think>",
                                           "\n",
                                           "\n\n",
                                           "x",
                                           "é",
                                           "STOP",
                                           "</｜DSML｜tool_calls>",
                                           "{",
                                           "\\"};
  std::mt19937_64 rng(11);
  for (int rep = 0; rep < 200; ++rep) {
    std::string text;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) text += pieces[rng() % pieces.size()];
    for (ChatStage st :
         {ChatStage::content_start, ChatStage::reasoning_start, ChatStage::tool_calls}) {
      ChatParseOptions opt{st, rng() % 2 == 0, {"STOP"}};
      const ParsedChatMessage whole = parse_chat_output(text, opt);
      std::vector<size_t> cuts;
      size_t pos = 0;
      while (true) {
        pos += 1 + rng() % 5;
        if (pos >= text.size()) break;
        cuts.push_back(pos);
      }
      expect_same(run_split(opt, text, cuts, /*check_utf8=*/false), whole);
    }
  }
}

}  // namespace
}  // namespace dsv4::tokenizer
