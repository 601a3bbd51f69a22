// tokenizer/chat.h — the DeepSeek-V4 chat format: requests rendered to prompt text, model output
// parsed back into content / reasoning_content / tool calls (whole or streaming).
//
// Purpose: byte-identical prompts and parses to DeepSeek's own implementation, deepseek-recipe
// 0.2.0
// (`DeepseekV4Encoding.render_conversation`, `ChatCompletionRequest.convert`, `StreamProcessor`),
// checked against vectors it produced (tests/data/chat/, tools/reference/make_chat_vectors.py).
// docs/chat.md describes the format with examples and where it differs from the model repository's
// encoding_dsv4.py.
//
// Pipeline: a Chat Completions request body (JSON text) -> parse_chat_request() validates it and
// normalizes it into a ChatRequest (the checks DeepSeek's converter makes on the fields we support)
// -> render_chat() -> RenderedPrompt {text, special_ranges}; the caller tokenizes
// (encode_prompt()). Output: ChatStreamParser fed text deltas (or parse_chat_output() for whole
// text) with the ChatParseOptions of the same request.
//
// Invariants:
//   - render_chat() is a pure function of the ChatRequest; special_ranges are ascending, disjoint
//     byte ranges of `text`, each the exact spelling of one special token. Text outside them is
//     plain text: a user writing "<think>" gets the characters, not the token.
//   - The stream parser's concatenated deltas do not depend on how the text was split into deltas,
//     and equal parse_chat_output() of the whole text. It holds back exactly the bytes that could
//     still become a marker (and an incomplete trailing UTF-8 character), so no partial marker is
//     ever emitted as content or reasoning.
//   - Malformed output never fails: markup that does not fit the grammar is skipped exactly as the
//     reference skips it (see ChatStreamParser); a tool call cut off by the end of the stream is
//     reported with complete = false.
//
// Non-goals: V4.1 (system token, images), response_format json_object / json_schema / regex and
// JSON output parsing, `strict` tool normalization, Responses / Messages request formats, the
// model repo's "task" tokens and developer role (the serving library does not accept them).
// Rejected alternative: a jinja chat_template — V4 ships none, and the rules (system hoisting,
// reasoning dropped only without tools, tool results ordered by call) are code, not a template.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"

namespace dsv4::tokenizer {

class Tokenizer;

// Spellings of the special tokens of the format, as in the V4 tokenizer.json added_tokens.
namespace chat_tokens {
inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kUser = "<｜User｜>";
inline constexpr std::string_view kAssistant = "<｜Assistant｜>";
inline constexpr std::string_view kLatestReminder = "<｜latest_reminder｜>";
inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";
inline constexpr std::string_view kDsml = "｜DSML｜";
}  // namespace chat_tokens

// Prefix text placed after BOS in thinking mode. `low` adds nothing.
enum class ReasoningEffort { low, high, max };

enum class ChatRole { system, user, assistant, tool, latest_reminder };

struct ChatToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // caller's text, expected to be a JSON object; rendered as DSML params
};

struct ChatMessage {
  ChatRole role = ChatRole::user;
  std::string content;                           // text parts already joined with "\n\n"
  std::optional<std::string> reasoning_content;  // assistant only
  std::vector<ChatToolCall> tool_calls;          // assistant only
  std::string tool_call_id;                      // tool only
  bool prefix = false;  // final assistant message continued by the model (no EOS, no new turn)
};

struct ChatToolDefinition {
  std::string name;
  std::string schema_json;  // {"name": .., "description": .., "parameters": ..} as rendered
};

enum class ToolChoice { none, automatic, required };

// A validated, normalized Chat Completions request (what DeepSeek's converter produces).
struct ChatRequest {
  std::vector<ChatMessage> messages;
  std::vector<ChatToolDefinition> tools;  // the rendered ones: a named tool_choice keeps only it
  ToolChoice tool_choice = ToolChoice::automatic;  // a named choice becomes `required`
  bool thinking = true;
  ReasoningEffort reasoning_effort = ReasoningEffort::high;
  std::vector<std::string> stop;  // stop sequences, matched in answer text only
};

// Parses and validates a Chat Completions request body. Supported: messages (system, user,
// assistant, tool, latest_reminder; string or text-part content, image parts as the reference's
// placeholder; reasoning_content; tool_calls; tool_call_id; prefix), tools, tool_choice, thinking
// {"type": enabled|disabled|adaptive}, reasoning_effort (none|minimal|low|medium|high|xhigh|ultra|
// max), stop. Other top-level fields (model, temperature, ...) are ignored. Bad input ->
// invalid_argument / parse_error naming the field; response_format other than text and
// `strict: true` tools -> unsupported.
Result<ChatRequest> parse_chat_request(std::string_view json_text);

struct RenderedPrompt {
  std::string text;
  std::vector<std::pair<size_t, size_t>> special_ranges;  // [begin, end) byte offsets into text
};

// Renders the prompt, generation prompt included (after the last message unless it is a prefix
// assistant message). Errors only for requests that parse_chat_request() would reject (a
// hand-built ChatRequest with a misplaced tool message, prefix, ...).
Result<RenderedPrompt> render_chat(const ChatRequest& request);

// Token ids of a rendered prompt: each special range as its token id, the text between as
// tokenizer.encode(text, AddedTokens::none) — no added-token matching, as the reference does, so
// a user who types "<think>" sends characters. Ids equal the reference's on every committed case.
// Error if a special token is missing from the vocabulary.
Result<std::vector<int32_t>> encode_prompt(const Tokenizer& tokenizer,
                                           const RenderedPrompt& prompt);

// ---------------------------------------------------------------------------------------------
// Output parsing
// ---------------------------------------------------------------------------------------------

// Where parsing begins (the prompt decides): reasoning_start after "<think>" (leading newlines
// dropped), content_start after "</think>" (leading newlines dropped), the continuations for a
// prefix message (newlines kept), tool_calls when the prompt opened the DSML block.
enum class ChatStage {
  content_start,
  reasoning_start,
  reasoning_continuation,
  content_continuation,
  tool_calls
};

struct ChatParseOptions {
  ChatStage initial_stage = ChatStage::content_start;
  bool parse_tool_calls = false;  // DSML markup recognized only when tools were rendered
  std::vector<std::string> stop;  // non-empty stop sequences
};

// The options that match a request's prompt.
ChatParseOptions chat_parse_options(const ChatRequest& request);

struct ParsedToolCall {
  std::string name;
  std::string arguments;  // JSON object text, built from the DSML parameters
  bool complete = false;  // false: the stream ended inside this call (arguments are a prefix)
};

struct ParsedChatMessage {
  std::string content;
  std::string reasoning_content;
  std::vector<ParsedToolCall> tool_calls;
  bool stop_sequence = false;  // a stop sequence ended the answer
  size_t skipped_invalid = 0;  // bytes dropped as invalid (an extra </think>, text after the end)
};

struct ChatDelta {
  enum class Kind { reasoning, content, tool_call };
  Kind kind = Kind::content;
  std::string text;          // reasoning / content
  ParsedToolCall tool_call;  // tool_call: a finished call (complete == false only from finish())
};

// Incremental parser of one assistant turn. Grammar (byte-level, first marker to complete wins):
//   reasoning:  text until "\n*</think>" (trailing newlines before it dropped) -> content;
//               "\n*<｜DSML｜" -> tool calls (when parse_tool_calls)
//   content:    "\n*<｜DSML｜" -> tool calls; a stop sequence -> finished; "</think>" skipped
//   tool calls: `invoke name="NAME"` then parameters `parameter name="K" string="true|false">V`
//               closed by "</｜DSML｜"; the invoke's "</｜DSML｜" ends the call; text between
//               tags is skipped; "</｜DSML｜tool_calls>" (or V4.1's "</｜DSML｜ calls>") ->
//               finished
//   finished:   everything is skipped (counted in skipped_invalid)
// Arguments are JSON: {"K": "V"} for string="true" (V escaped), {"K": V} (V verbatim) otherwise.
class ChatStreamParser {
 public:
  explicit ChatStreamParser(ChatParseOptions options);
  ChatStreamParser(ChatStreamParser&&) noexcept;
  ChatStreamParser& operator=(ChatStreamParser&&) noexcept;
  ~ChatStreamParser();

  // Feeds the next piece of model output; returns the deltas it completes, in order.
  std::vector<ChatDelta> push(std::string_view text);
  // Ends the stream: held-back bytes are resolved, an unfinished tool call is reported.
  std::vector<ChatDelta> finish();
  // True once a stop sequence or the end of the tool-call block was seen: generation can stop.
  bool done() const;
  // Everything parsed so far.
  const ParsedChatMessage& message() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Whole-text parse: one push() and finish().
ParsedChatMessage parse_chat_output(std::string_view text, const ChatParseOptions& options);

// JSON string escaping used for tool-call arguments (serde_json's: \" \\ \b \f \n \r \t, other
// bytes below 0x20 as \u00XX, everything else verbatim). Appends without quotes.
void append_json_escaped(std::string& out, std::string_view s);

}  // namespace dsv4::tokenizer
