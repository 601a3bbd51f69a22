// libFuzzer target for the chat layer (tokenizer/chat.h).
// The first input byte picks a mode, the rest is the payload:
//   even  payload as a Chat Completions request body: parse_chat_request must give a request or
//         an error; an accepted request must render (or fail cleanly) and its rendering's
//         special ranges must lie inside the text.
//   odd   payload as model output: parse_chat_output (whole text) and ChatStreamParser fed in
//         pieces cut at positions drawn from the payload must agree on content, reasoning and
//         tool-call names — the streaming parser never leaks a partial marker.
// Run: build/fuzz/fuzz/chat_fuzz fuzz/corpus/chat -max_total_time=120
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer/chat.h"

namespace chat = dsv4::tokenizer;

namespace {

void check_request(std::string_view body) {
  auto req = chat::parse_chat_request(body);
  if (!req.ok()) return;
  auto prompt = chat::render_chat(*req);
  if (!prompt.ok()) return;
  size_t prev_end = 0;
  for (const auto& [b, e] : prompt->special_ranges) {
    if (b < prev_end || b >= e || e > prompt->text.size()) __builtin_trap();
    prev_end = e;
  }
}

void check_output(std::string_view out, uint8_t seed) {
  chat::ChatParseOptions opts;
  opts.parse_tool_calls = (seed & 2) != 0;
  if (seed & 4) opts.initial_stage = chat::ChatStage::reasoning_start;
  const chat::ParsedChatMessage whole = chat::parse_chat_output(out, opts);
  chat::ChatStreamParser stream(opts);
  size_t pos = 0, step = 1 + (seed >> 3);
  while (pos < out.size()) {
    const size_t n = std::min(step, out.size() - pos);
    (void)stream.push(out.substr(pos, n));
    pos += n;
    step = step % 7 + 1;
  }
  (void)stream.finish();
  const chat::ParsedChatMessage& m = stream.message();
  if (m.content != whole.content || m.reasoning_content != whole.reasoning_content)
    __builtin_trap();
  if (m.tool_calls.size() != whole.tool_calls.size()) __builtin_trap();
  for (size_t i = 0; i < m.tool_calls.size(); ++i)
    if (m.tool_calls[i].name != whole.tool_calls[i].name) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 2 == 0) {
    check_request(payload);
  } else {
    check_output(payload, data[0]);
  }
  return 0;
}
