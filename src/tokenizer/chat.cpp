// tokenizer/chat.cpp — DeepSeek-V4 chat rendering and output parsing (see chat.h, docs/chat.md).
//
// Every rule below was established against deepseek-recipe 0.2.0 (DeepSeek's serving library)
// and is pinned by tests/data/chat/*.json; the rule's case name is given where it is not obvious.
#include "tokenizer/chat.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace dsv4::tokenizer {
namespace {

using Json = nlohmann::ordered_json;  // key order is kept: tool schemas render in input order
namespace tok = chat_tokens;

// ---------------------------------------------------------------------------------------------
// JSON text in DeepSeek's spelling: ", " and ": " separators, serde_json string escapes, numbers
// as serde_json/ryu print them with an explicit exponent sign ("1e+16", "1e-7", "1.0").
// ---------------------------------------------------------------------------------------------

void append_double(std::string& out, double v) {
  if (!std::isfinite(v)) {  // cannot come from JSON text; keep output well-defined anyway
    out += "null";
    return;
  }
  if (v == 0.0) {
    out += std::signbit(v) ? "-0.0" : "0.0";
    return;
  }
  // Shortest round-trip digits: to_chars(scientific) gives "d.ddde±XX".
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  DSV4_CHECK(res.ec == std::errc());
  std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
  if (sci.front() == '-') {
    out += '-';
    sci.remove_prefix(1);
  }
  const size_t epos = sci.find('e');
  DSV4_CHECK(epos != std::string_view::npos);
  std::string digits;
  for (char c : sci.substr(0, epos)) {
    if (c != '.') digits += c;
  }
  int exp10 = 0;
  std::from_chars(sci.data() + epos + 1 + (sci[epos + 1] == '+' ? 1 : 0), sci.data() + sci.size(),
                  exp10);
  // value = 0.d1d2..dn * 10^kk (ryu's "pretty" layout decides on kk).
  const int n = static_cast<int>(digits.size());
  const int kk = exp10 + 1;
  const int k = kk - n;
  if (k >= 0 && kk <= 16) {
    out += digits;
    out.append(static_cast<size_t>(k), '0');
    out += ".0";
  } else if (kk > 0 && kk <= 16) {
    out += digits.substr(0, static_cast<size_t>(kk));
    out += '.';
    out += digits.substr(static_cast<size_t>(kk));
  } else if (kk > -5 && kk <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-kk), '0');
    out += digits;
  } else {
    out += digits[0];
    if (n > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += fmt::format("e{}{}", kk - 1 >= 0 ? "+" : "-", std::abs(kk - 1));
  }
}

void append_json_spaced(std::string& out, const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
    case Json::value_t::discarded:
      out += "null";
      return;
    case Json::value_t::boolean:
      out += v.get<bool>() ? "true" : "false";
      return;
    case Json::value_t::number_integer:
      out += fmt::format("{}", v.get<int64_t>());
      return;
    case Json::value_t::number_unsigned:
      out += fmt::format("{}", v.get<uint64_t>());
      return;
    case Json::value_t::number_float:
      append_double(out, v.get<double>());
      return;
    case Json::value_t::string:
      out += '"';
      append_json_escaped(out, v.get_ref<const std::string&>());
      out += '"';
      return;
    case Json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += ", ";
        first = false;
        append_json_spaced(out, e);
      }
      out += ']';
      return;
    }
    case Json::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, e] : v.items()) {
        if (!first) out += ", ";
        first = false;
        out += '"';
        append_json_escaped(out, key);
        out += "\": ";
        append_json_spaced(out, e);
      }
      out += '}';
      return;
    }
    case Json::value_t::binary:
      out += "null";
      return;
  }
}

// Parses JSON without exceptions; duplicate keys keep the first position and the last value.
std::optional<Json> parse_json(std::string_view text) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// ---------------------------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------------------------

Status bad(std::string msg) {
  return invalid_argument(std::move(msg));
}

// "content": a string, or a list of parts joined with "\n\n" (text parts; image parts become the
// reference's placeholder: case image_part_placeholder).
Result<std::string> content_text(const Json& c, const std::string& where) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) return bad(where + ".content: must be a string or a list of parts");
  std::string out;
  bool first = true;
  size_t i = 0;
  for (const auto& part : c) {
    const std::string pw = fmt::format("{}.content[{}]", where, i++);
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return bad(pw + ": a part must be an object with a string \"type\"");
    }
    const std::string& type = part["type"].get_ref<const std::string&>();
    std::string text;
    if (type == "text") {
      if (!part.contains("text") || !part["text"].is_string()) {
        return bad(pw + ": text part without a string \"text\"");
      }
      text = part["text"].get<std::string>();
    } else if (type == "image_url") {
      text = "[Unsupported Image]";
    } else {
      return unsupported(pw + ": content part type '" + type + "' is not supported");
    }
    if (!first) out += "\n\n";
    first = false;
    out += text;
  }
  return out;
}

bool valid_tool_name(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

Result<ChatToolDefinition> parse_tool(const Json& t, size_t index) {
  const std::string where = fmt::format("tools[{}]", index);
  if (!t.is_object()) return bad(where + ": must be an object");
  if (!t.contains("type") || !t["type"].is_string() || t["type"].get<std::string>() != "function") {
    return bad(where + ".type: must be \"function\"");
  }
  if (!t.contains("function") || !t["function"].is_object()) {
    return bad(where + ".function: missing or not an object");
  }
  const Json& f = t["function"];
  if (!f.contains("name") || !f["name"].is_string()) return bad(where + ".function.name: missing");
  const std::string name = f["name"].get<std::string>();
  if (!valid_tool_name(name)) {
    return bad(where + ".function.name: '" + name + "' must match ^[a-zA-Z0-9_-]+$");
  }
  std::string description;
  if (f.contains("description") && !f["description"].is_null()) {
    if (!f["description"].is_string()) return bad(where + ".function.description: not a string");
    description = f["description"].get<std::string>();
  }
  Json parameters = Json::object();
  if (f.contains("parameters") && !f["parameters"].is_null()) {
    const Json& p = f["parameters"];
    if (!p.is_object() || !p.contains("type") || !p["type"].is_string() ||
        p["type"].get<std::string>() != "object") {
      return bad(where + ".function.parameters: must be a JSON Schema of type \"object\"");
    }
    parameters = p;
  }
  if (f.contains("strict") && f["strict"].is_boolean() && f["strict"].get<bool>()) {
    return unsupported(where + ".function.strict: strict tool schemas are not supported");
  }
  ChatToolDefinition def;
  def.name = name;
  def.schema_json = "{\"name\": \"";
  append_json_escaped(def.schema_json, name);
  def.schema_json += "\", \"description\": \"";
  append_json_escaped(def.schema_json, description);
  def.schema_json += "\", \"parameters\": ";
  append_json_spaced(def.schema_json, parameters);
  def.schema_json += '}';
  return def;
}

// The checks DeepSeek's converter makes on tool messages: the n messages after an assistant
// message with n tool calls are tool messages answering each call id once; no other tool messages.
Status check_tool_sequence(const std::vector<ChatMessage>& msgs) {
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role == ChatRole::tool) {
      return bad(fmt::format(
          "messages[{}]: a tool message must answer a tool call of the preceding assistant message",
          i));
    }
    if (m.role != ChatRole::assistant || m.tool_calls.empty()) continue;
    std::unordered_set<std::string> ids;
    for (const auto& c : m.tool_calls) {
      if (!ids.insert(c.id).second) {
        return bad(fmt::format("messages[{}].tool_calls: duplicate id '{}'", i, c.id));
      }
    }
    const size_t n = m.tool_calls.size();
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= msgs.size() || msgs[i + k].role != ChatRole::tool) {
        return bad(
            fmt::format("messages[{}]: an assistant message with tool_calls must be followed "
                        "by a tool message for each call ({} expected)",
                        i, n));
      }
      if (ids.erase(msgs[i + k].tool_call_id) != 1) {
        return bad(
            fmt::format("messages[{}].tool_call_id: '{}' answers no open call of "
                        "messages[{}]",
                        i + k, msgs[i + k].tool_call_id, i));
      }
    }
    i += n;
  }
  return ok_status();
}

Result<ChatMessage> parse_message(const Json& m, size_t index, size_t count) {
  const std::string where = fmt::format("messages[{}]", index);
  if (!m.is_object()) return bad(where + ": must be an object");
  if (!m.contains("role") || !m["role"].is_string()) return bad(where + ".role: missing");
  const std::string role = m["role"].get<std::string>();
  ChatMessage out;
  if (role == "system") {
    out.role = ChatRole::system;
  } else if (role == "user") {
    out.role = ChatRole::user;
  } else if (role == "assistant") {
    out.role = ChatRole::assistant;
  } else if (role == "tool") {
    out.role = ChatRole::tool;
  } else if (role == "latest_reminder") {
    out.role = ChatRole::latest_reminder;
  } else {
    return bad(where + ".role: unknown role '" + role +
               "' (expected system, user, assistant, tool or latest_reminder)");
  }
  const bool has_content = m.contains("content") && !m["content"].is_null();
  if (out.role == ChatRole::assistant) {
    if (has_content) {
      DSV4_ASSIGN_OR_RETURN(out.content, content_text(m["content"], where));
    }
    if (m.contains("reasoning_content") && !m["reasoning_content"].is_null()) {
      if (!m["reasoning_content"].is_string())
        return bad(where + ".reasoning_content: not a string");
      out.reasoning_content = m["reasoning_content"].get<std::string>();
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      const Json& calls = m["tool_calls"];
      if (!calls.is_array() || calls.empty()) {
        return bad(where + ".tool_calls: must be a non-empty array");
      }
      size_t k = 0;
      for (const auto& c : calls) {
        const std::string cw = fmt::format("{}.tool_calls[{}]", where, k++);
        if (!c.is_object() || !c.contains("id") || !c["id"].is_string()) {
          return bad(cw + ".id: missing");
        }
        if (!c.contains("type") || !c["type"].is_string() ||
            c["type"].get<std::string>() != "function") {
          return bad(cw + ".type: must be \"function\"");
        }
        if (!c.contains("function") || !c["function"].is_object()) {
          return bad(cw + ".function: missing");
        }
        const Json& f = c["function"];
        if (!f.contains("name") || !f["name"].is_string())
          return bad(cw + ".function.name: missing");
        if (!f.contains("arguments") || !f["arguments"].is_string()) {
          return bad(cw + ".function.arguments: must be a string");
        }
        out.tool_calls.push_back({c["id"].get<std::string>(), f["name"].get<std::string>(),
                                  f["arguments"].get<std::string>()});
      }
    }
    if (!has_content && out.tool_calls.empty()) {
      return bad(where + ": an assistant message needs content or tool_calls");
    }
  } else if (out.role == ChatRole::latest_reminder) {
    if (!has_content || !m["content"].is_string()) return bad(where + ".content: must be a string");
    out.content = m["content"].get<std::string>();
  } else {
    if (!has_content) return bad(where + ".content: must be a string or a list of parts");
    DSV4_ASSIGN_OR_RETURN(out.content, content_text(m["content"], where));
  }
  if (out.role == ChatRole::tool) {
    if (!m.contains("tool_call_id") || !m["tool_call_id"].is_string()) {
      return bad(where + ".tool_call_id: missing");
    }
    out.tool_call_id = m["tool_call_id"].get<std::string>();
  }
  if (m.contains("prefix") && !m["prefix"].is_null()) {
    if (!m["prefix"].is_boolean()) return bad(where + ".prefix: not a boolean");
    const bool prefix = m["prefix"].get<bool>();
    if (prefix && index + 1 != count) {
      return bad(where + ".prefix: only the final message may be a prefix");
    }
    out.prefix = prefix && out.role == ChatRole::assistant;
  }
  return out;
}

// Checks that apply to hand-built requests too (render_chat).
Status check_request(const ChatRequest& r) {
  if (r.messages.empty()) return bad("messages: empty");
  for (size_t i = 0; i + 1 < r.messages.size(); ++i) {
    if (r.messages[i].prefix)
      return bad(fmt::format("messages[{}].prefix: not the final message", i));
  }
  if (r.messages.back().prefix && r.messages.back().role != ChatRole::assistant) {
    return bad("messages: prefix is only valid on an assistant message");
  }
  return check_tool_sequence(r.messages);
}

}  // namespace

void append_json_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
}

Result<ChatRequest> parse_chat_request(std::string_view json_text) {
  std::optional<Json> parsed = parse_json(json_text);
  if (!parsed) return parse_error("chat request: not valid JSON");
  const Json& body = *parsed;
  if (!body.is_object()) return bad("chat request: must be a JSON object");
  ChatRequest req;

  if (!body.contains("messages") || !body["messages"].is_array()) {
    return bad("messages: missing or not an array");
  }
  const Json& msgs = body["messages"];
  if (msgs.empty()) return bad("messages: empty");
  for (size_t i = 0; i < msgs.size(); ++i) {
    DSV4_ASSIGN_OR_RETURN(ChatMessage m, parse_message(msgs[i], i, msgs.size()));
    req.messages.push_back(std::move(m));
  }
  DSV4_RETURN_IF_ERROR(check_tool_sequence(req.messages));

  // thinking / reasoning_effort (cases effort_*, thinking_adaptive).
  std::optional<bool> thinking;
  if (body.contains("thinking") && !body["thinking"].is_null()) {
    const Json& t = body["thinking"];
    if (!t.is_object() || !t.contains("type") || !t["type"].is_string()) {
      return bad("thinking: must be an object with a \"type\"");
    }
    const std::string type = t["type"].get<std::string>();
    if (type == "enabled" || type == "adaptive") {
      thinking = true;
    } else if (type == "disabled") {
      thinking = false;
    } else {
      return bad("thinking.type: '" + type + "' (expected enabled, disabled or adaptive)");
    }
  }
  std::optional<std::string> effort;
  if (body.contains("reasoning_effort") && !body["reasoning_effort"].is_null()) {
    if (!body["reasoning_effort"].is_string()) return bad("reasoning_effort: not a string");
    effort = body["reasoning_effort"].get<std::string>();
  }
  req.reasoning_effort = ReasoningEffort::high;
  if (effort) {
    const std::string& e = *effort;
    if (e == "minimal" || e == "low") {
      req.reasoning_effort = ReasoningEffort::low;
    } else if (e == "medium" || e == "high" || e == "xhigh" || e == "none") {
      req.reasoning_effort = ReasoningEffort::high;
    } else if (e == "ultra" || e == "max") {
      req.reasoning_effort = ReasoningEffort::max;
    } else {
      return bad("reasoning_effort: '" + e +
                 "' (expected none, minimal, low, medium, high, xhigh, ultra or max)");
    }
  }
  req.thinking = thinking.value_or(!(effort && *effort == "none"));

  // tools / tool_choice.
  std::vector<ChatToolDefinition> tools;
  if (body.contains("tools") && !body["tools"].is_null()) {
    if (!body["tools"].is_array()) return bad("tools: not an array");
    std::unordered_set<std::string> names;
    for (size_t i = 0; i < body["tools"].size(); ++i) {
      DSV4_ASSIGN_OR_RETURN(ChatToolDefinition def, parse_tool(body["tools"][i], i));
      if (!names.insert(def.name).second) return bad("tools: tool names must be unique");
      tools.push_back(std::move(def));
    }
  }
  req.tool_choice = ToolChoice::automatic;
  std::optional<std::string> named;
  if (body.contains("tool_choice") && !body["tool_choice"].is_null()) {
    const Json& c = body["tool_choice"];
    if (c.is_string()) {
      const std::string s = c.get<std::string>();
      if (s == "none") {
        req.tool_choice = ToolChoice::none;
      } else if (s == "auto") {
        req.tool_choice = ToolChoice::automatic;
      } else if (s == "required") {
        req.tool_choice = ToolChoice::required;
      } else {
        return bad("tool_choice: '" + s + "' (expected none, auto, required or a function)");
      }
    } else if (c.is_object() && c.contains("function") && c["function"].is_object() &&
               c["function"].contains("name") && c["function"]["name"].is_string()) {
      named = c["function"]["name"].get<std::string>();
      req.tool_choice = ToolChoice::required;
    } else {
      return bad(
          "tool_choice: must be a string or {\"type\": \"function\", \"function\": {\"name\"}}");
    }
  }
  if (named) {
    auto it = std::find_if(tools.begin(), tools.end(),
                           [&](const ChatToolDefinition& d) { return d.name == *named; });
    if (it == tools.end()) return bad("tool_choice: no tool named '" + *named + "' in tools");
    tools = {*it};
  }
  if (tools.empty()) {
    req.tool_choice = ToolChoice::automatic;  // case tool_choice_required_without_tools
  } else if (req.tool_choice == ToolChoice::required && req.thinking) {
    return bad("tool_choice: thinking mode does not support a required or named tool choice");
  }
  if (req.tool_choice != ToolChoice::none) req.tools = std::move(tools);

  // stop.
  if (body.contains("stop") && !body["stop"].is_null()) {
    const Json& s = body["stop"];
    std::vector<std::string> stop;
    if (s.is_string()) {
      stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const auto& e : s) {
        if (!e.is_string()) return bad("stop: entries must be strings");
        stop.push_back(e.get<std::string>());
      }
    } else {
      return bad("stop: must be a string or an array of strings");
    }
    for (const auto& e : stop) {
      if (e.empty()) return bad("stop: empty stop sequence");
    }
    req.stop = std::move(stop);
  }

  if (body.contains("response_format") && !body["response_format"].is_null()) {
    const Json& f = body["response_format"];
    if (!f.is_object() || !f.contains("type") || !f["type"].is_string()) {
      return bad("response_format: must be an object with a \"type\"");
    }
    if (f["type"].get<std::string>() != "text") {
      return unsupported("response_format: only {\"type\": \"text\"} is supported");
    }
  }
  return req;
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------
namespace {

constexpr std::string_view kEffortHigh =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n";
constexpr std::string_view kEffortMax =
    "Reasoning Effort: Beyond maximum — exhaustive, relentless, and uncompromising.\n"
    "You MUST reason with the utmost depth and rigor, leaving absolutely nothing to chance: "
    "exhaustively decompose the problem into its most fundamental components, trace every causal "
    "chain to its root, and resolve the underlying cause rather than any surface symptom.\n"
    "Do not stop reasoning until you have independently verified the solution from multiple "
    "angles and are certain that no assumption remains unchecked and no error remains "
    "undiscovered.\n\n";

// The tool section; @D@ / @S@ / @E@ stand for the special tokens ｜DSML｜ / <think> / </think>.
constexpr std::string_view kToolsHead =
    "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can "
    "invoke tools by writing a \"<@D@tool_calls>\" block like the following:\n\n"
    "<@D@tool_calls>\n<@D@invoke name=\"$TOOL_NAME\">\n"
    "<@D@parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</@D@parameter>\n"
    "...\n</@D@invoke>\n<@D@invoke name=\"$TOOL_NAME2\">\n...\n</@D@invoke>\n</@D@tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by @S@), you MUST output your complete reasoning "
    "inside "
    "@S@...@E@ BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after @E@ with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";
constexpr std::string_view kToolsTail =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke "
    "tool calls.\n";

class PromptBuilder {
 public:
  void text(std::string_view s) { out_.text += s; }
  void special(std::string_view s) {
    const size_t begin = out_.text.size();
    out_.text += s;
    out_.special_ranges.emplace_back(begin, out_.text.size());
  }
  // Text with @D@ / @S@ / @E@ placeholders.
  void templated(std::string_view s) {
    while (!s.empty()) {
      const size_t at = s.find('@');
      if (at == std::string_view::npos || at + 3 > s.size() || s[at + 2] != '@') {
        text(s);
        return;
      }
      text(s.substr(0, at));
      switch (s[at + 1]) {
        case 'D':
          special(tok::kDsml);
          break;
        case 'S':
          special(tok::kThinkStart);
          break;
        case 'E':
          special(tok::kThinkEnd);
          break;
        default:
          DSV4_CHECK(false && "unknown template placeholder");
      }
      s.remove_prefix(at + 3);
    }
  }
  RenderedPrompt take() { return std::move(out_); }

 private:
  RenderedPrompt out_;
};

// Tool call arguments as DSML parameters: a JSON object gives one parameter per key (strings
// verbatim with string="true", other values as spaced JSON with string="false"); anything else
// (invalid JSON, a non-object) is one string parameter "arguments" holding the raw text
// (case tool_call_arguments_variants).
void render_tool_call(PromptBuilder& b, const ChatToolCall& call) {
  b.text("<");
  b.special(tok::kDsml);
  b.text("invoke name=\"" + call.name + "\">\n");
  auto param = [&](std::string_view key, bool is_string, std::string_view value) {
    b.text("<");
    b.special(tok::kDsml);
    b.text(fmt::format("parameter name=\"{}\" string=\"{}\">{}</", key,
                       is_string ? "true" : "false", value));
    b.special(tok::kDsml);
    b.text("parameter>\n");
  };
  std::optional<Json> args = parse_json(call.arguments);
  if (args && args->is_object()) {
    for (const auto& [key, value] : args->items()) {
      if (value.is_string()) {
        param(key, true, value.get_ref<const std::string&>());
      } else {
        std::string v;
        append_json_spaced(v, value);
        param(key, false, v);
      }
    }
  } else {
    param("arguments", true, call.arguments);
  }
  b.text("</");
  b.special(tok::kDsml);
  b.text("invoke>");
}

}  // namespace

Result<RenderedPrompt> render_chat(const ChatRequest& request) {
  DSV4_RETURN_IF_ERROR(check_request(request));
  const bool tools_rendered = !request.tools.empty() && request.tool_choice != ToolChoice::none;
  PromptBuilder b;
  b.special(tok::kBos);
  if (request.thinking) {
    if (request.reasoning_effort == ReasoningEffort::high) b.text(kEffortHigh);
    if (request.reasoning_effort == ReasoningEffort::max) b.text(kEffortMax);
  }
  // All system messages, wherever they are, joined at the top (case systems_hoisted_and_joined).
  bool first_system = true;
  for (const auto& m : request.messages) {
    if (m.role != ChatRole::system) continue;
    if (!first_system) b.text("\n\n");
    first_system = false;
    b.text(m.content);
  }
  if (tools_rendered) {
    b.text("\n\n");
    b.templated(kToolsHead);
    for (size_t i = 0; i < request.tools.size(); ++i) {
      if (i > 0) b.text("\n");
      b.text(request.tools[i].schema_json);
    }
    b.text(kToolsTail);
  }

  // Non-system messages in order. A user or tool message directly after a user or tool message
  // continues the same user turn ("\n\n"); tool results follow the order of the calls they answer.
  std::vector<const ChatMessage*> seq;
  for (const auto& m : request.messages) {
    if (m.role != ChatRole::system) seq.push_back(&m);
  }
  for (size_t i = 0; i < seq.size(); ++i) {
    const ChatMessage& m = *seq[i];
    if (m.role == ChatRole::assistant && !m.tool_calls.empty()) {
      std::unordered_map<std::string, size_t> order;
      for (size_t k = 0; k < m.tool_calls.size(); ++k) order.emplace(m.tool_calls[k].id, k);
      const size_t n = m.tool_calls.size();
      DSV4_CHECK(i + n < seq.size());  // check_request guarantees the tool messages
      std::stable_sort(seq.begin() + static_cast<std::ptrdiff_t>(i + 1),
                       seq.begin() + static_cast<std::ptrdiff_t>(i + 1 + n),
                       [&](const ChatMessage* a, const ChatMessage* c) {
                         return order.at(a->tool_call_id) < order.at(c->tool_call_id);
                       });
    }
  }
  ChatRole prev = ChatRole::system;  // "nothing yet"
  for (const ChatMessage* mp : seq) {
    const ChatMessage& m = *mp;
    switch (m.role) {
      case ChatRole::user:
      case ChatRole::tool:
        if (prev == ChatRole::user || prev == ChatRole::tool) {
          b.text("\n\n");
        } else {
          b.special(tok::kUser);
        }
        if (m.role == ChatRole::tool) {
          b.text("<tool_result>" + m.content + "</tool_result>");
        } else {
          b.text(m.content);
        }
        break;
      case ChatRole::latest_reminder:
        b.special(tok::kLatestReminder);
        b.text(m.content);
        break;
      case ChatRole::assistant: {
        b.special(tok::kAssistant);
        const std::string reasoning = m.reasoning_content.value_or("");
        if (!request.thinking) {
          b.special(tok::kThinkEnd);
        } else if (m.prefix) {
          // Cases prefix_thinking_*: an empty answer continues the reasoning.
          b.special(tok::kThinkStart);
          b.text(reasoning);
          if (!m.content.empty()) b.special(tok::kThinkEnd);
        } else if (tools_rendered) {  // reasoning is kept only when tools are in the prompt
          b.special(tok::kThinkStart);
          b.text(reasoning);
          b.special(tok::kThinkEnd);
        } else {
          b.special(tok::kThinkEnd);
        }
        b.text(m.content);
        if (!m.tool_calls.empty()) {
          b.text("\n\n<");
          b.special(tok::kDsml);
          b.text("tool_calls>\n");
          for (size_t k = 0; k < m.tool_calls.size(); ++k) {
            if (k > 0) b.text("\n");
            render_tool_call(b, m.tool_calls[k]);
          }
          b.text("\n</");
          b.special(tok::kDsml);
          b.text("tool_calls>");
        }
        if (!m.prefix) b.special(tok::kEos);
        break;
      }
      case ChatRole::system:
        break;
    }
    prev = m.role;
  }
  if (!request.messages.back().prefix) {
    b.special(tok::kAssistant);
    b.special(request.thinking ? tok::kThinkStart : tok::kThinkEnd);
    if (tools_rendered && request.tool_choice == ToolChoice::required) {
      b.text("\n\n<");
      b.special(tok::kDsml);
      b.text("tool_calls>\n");
    }
  }
  return b.take();
}

// Text between the special ranges is encoded with no added-token matching at all (the
// reference's DeepseekV4Encoding.encode tokenizes plain text without the added vocabulary), so a
// user typing "<think>" or "<｜User｜>" gets the characters, never the token
// [special_token_text_in_content].
Result<std::vector<int32_t>> encode_prompt(const Tokenizer& tokenizer,
                                           const RenderedPrompt& prompt) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  auto encode_text = [&](size_t end) -> Status {
    if (end <= pos) return ok_status();
    DSV4_ASSIGN_OR_RETURN(std::vector<int32_t> part,
                          tokenizer.encode(std::string_view(prompt.text).substr(pos, end - pos),
                                           Tokenizer::AddedTokens::none));
    ids.insert(ids.end(), part.begin(), part.end());
    return ok_status();
  };
  for (const auto& [begin, end] : prompt.special_ranges) {
    if (begin < pos || end < begin || end > prompt.text.size()) {
      return invalid_argument("encode_prompt: special ranges are not ascending and disjoint");
    }
    DSV4_RETURN_IF_ERROR(encode_text(begin));
    const std::string_view spelling = std::string_view(prompt.text).substr(begin, end - begin);
    std::optional<int32_t> id = tokenizer.token_to_id(spelling);
    if (!id)
      return not_found(fmt::format("encode_prompt: no token '{}' in the vocabulary", spelling));
    ids.push_back(*id);
    pos = end;
  }
  DSV4_RETURN_IF_ERROR(encode_text(prompt.text.size()));
  return ids;
}

ChatParseOptions chat_parse_options(const ChatRequest& request) {
  ChatParseOptions o;
  const bool tools_rendered = !request.tools.empty() && request.tool_choice != ToolChoice::none;
  o.parse_tool_calls = tools_rendered;
  o.stop = request.stop;
  const ChatMessage* last = request.messages.empty() ? nullptr : &request.messages.back();
  if (tools_rendered && request.tool_choice == ToolChoice::required && !request.thinking) {
    o.initial_stage = ChatStage::tool_calls;
  } else if (!request.thinking) {
    o.initial_stage = ChatStage::content_start;
  } else if (last != nullptr && last->prefix) {
    if (!last->content.empty()) {
      o.initial_stage = ChatStage::content_continuation;
    } else if (!last->reasoning_content.value_or("").empty()) {
      o.initial_stage = ChatStage::reasoning_continuation;
    } else {
      o.initial_stage = ChatStage::reasoning_start;
    }
  } else {
    o.initial_stage = ChatStage::reasoning_start;
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Output parsing: a byte-level automaton. Each stage has an ordered list of markers; every byte
// advances all of them, the first to complete (in list order) wins, and the bytes before it go
// out with the stage's default action. Between pushes only the longest partial marker match is
// held back.
// ---------------------------------------------------------------------------------------------
namespace {

enum class Stage {
  common,
  reasoning,
  tool_calls,
  tool_name,
  tool_args,
  param_name,
  param_type,
  param_value,
  finished
};

// What happens to a stretch of bytes.
enum class Act {
  content,
  reasoning,
  skip,
  skip_invalid,
  stop_sequence,
  tool_call_begin,
  tool_name,
  tool_name_end,
  args_raw,
  args_string,
  args_label,
  args_end
};

struct Marker {
  enum class Kind { literal, newlines_then_literal, leading_newline };
  Kind kind = Kind::literal;
  std::string s;
  std::vector<size_t> fail;  // KMP failure function of s
  // Match state.
  size_t len = 0;       // bytes of s matched
  size_t newlines = 0;  // newline_then_literal: newlines counted before s
  bool first = true;    // leading_newline: no byte seen yet
  bool hit = false;     // leading_newline: the first byte was '\n'

  // What to do on a match.
  Stage next = Stage::common;
  bool next_leading = false;
  Act act = Act::skip;
  std::string label;  // args_label / args_end output

  void init_table() {
    fail.assign(s.size(), 0);
    size_t k = 0;
    for (size_t i = 1; i < s.size(); ++i) {
      while (k > 0 && s[i] != s[k]) k = fail[k - 1];
      if (s[i] == s[k]) ++k;
      fail[i] = k;
    }
  }
  size_t kmp_step(size_t cur, char c) const {
    while (cur > 0 && s[cur] != c) cur = fail[cur - 1];
    if (s[cur] == c) ++cur;
    return cur;
  }
  // Advances by one byte; true when the marker is complete.
  bool feed(char c) {
    switch (kind) {
      case Kind::literal:
        len = kmp_step(len, c);
        return len == s.size();
      case Kind::newlines_then_literal:
        // Newlines count only while nothing of s is matched; a byte that does not extend the
        // match resets the count (so does a newline that breaks a partial match: it is lost to
        // the count, as in the reference).
        if (len == 0 && c == '\n') {
          ++newlines;
        } else {
          const size_t nxt = kmp_step(len, c);
          if (nxt <= len) newlines = 0;
          len = nxt;
        }
        return len == s.size();
      case Kind::leading_newline:
        if (first) hit = (c == '\n');
        first = false;
        return hit;
    }
    return false;
  }
  size_t matching_len() const {
    switch (kind) {
      case Kind::literal:
        return len;
      case Kind::newlines_then_literal:
        return len + newlines;
      case Kind::leading_newline:
        return hit ? 1 : 0;
    }
    return 0;
  }
};

constexpr std::string_view kDsmlBegin = "<｜DSML｜";
constexpr std::string_view kDsmlEnd = "</｜DSML｜";

bool utf8_incomplete_tail(std::string_view s, size_t* tail) {
  // Length of a trailing lead byte + continuation bytes that do not yet form a full character.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = 0;
    if ((c & 0xE0) == 0xC0)
      need = 2;
    else if ((c & 0xF0) == 0xE0)
      need = 3;
    else if ((c & 0xF8) == 0xF0)
      need = 4;
    if (need > back) {
      *tail = back;
      return true;
    }
    return false;
  }
  return false;
}

}  // namespace

struct ChatStreamParser::Impl {
  ChatParseOptions options;
  Stage stage = Stage::common;
  bool leading = true;
  std::vector<Marker> markers;
  Act unmatched = Act::content;
  std::string stash;  // bytes since the last emission (held back or about to be emitted)

  ParsedChatMessage msg;
  // Tool call being built: name_done once its closing quote was seen.
  bool in_call = false;
  bool name_done = false;
  ParsedToolCall call;

  std::vector<ChatDelta>* out = nullptr;
  std::string carry;  // incomplete trailing UTF-8 character of the last text delta
  ChatDelta::Kind carry_kind = ChatDelta::Kind::content;

  explicit Impl(ChatParseOptions o) : options(std::move(o)) {
    options.stop.erase(std::remove(options.stop.begin(), options.stop.end(), std::string()),
                       options.stop.end());
    switch (options.initial_stage) {
      case ChatStage::content_start:
        enter(Stage::common, true);
        break;
      case ChatStage::content_continuation:
        enter(Stage::common, false);
        break;
      case ChatStage::reasoning_start:
        enter(Stage::reasoning, true);
        break;
      case ChatStage::reasoning_continuation:
        enter(Stage::reasoning, false);
        break;
      case ChatStage::tool_calls:
        enter(Stage::tool_calls, false);
        break;
    }
  }

  void add(Marker::Kind kind, std::string_view s, Stage next, bool next_leading, Act act,
           std::string_view label = {}) {
    Marker m;
    m.kind = kind;
    m.s = std::string(s);
    m.next = next;
    m.next_leading = next_leading;
    m.act = act;
    m.label = std::string(label);
    m.init_table();
    markers.push_back(std::move(m));
  }
  void add_literal(std::string_view s, Stage next, bool next_leading, Act act,
                   std::string_view label = {}) {
    add(Marker::Kind::literal, s, next, next_leading, act, label);
  }

  // The marker table of each stage (order = priority).
  void enter(Stage s, bool lead) {
    stage = s;
    leading = lead;
    markers.clear();
    stash.clear();
    using K = Marker::Kind;
    switch (s) {
      case Stage::common:
        for (const auto& stop : options.stop)
          add_literal(stop, Stage::finished, false, Act::stop_sequence);
        if (options.parse_tool_calls)
          add(K::newlines_then_literal, kDsmlBegin, Stage::tool_calls, false, Act::skip);
        if (lead) add(K::leading_newline, "", Stage::common, true, Act::skip);
        add_literal(tok::kThinkEnd, Stage::common, false, Act::skip_invalid);
        unmatched = Act::content;
        break;
      case Stage::reasoning:
        if (options.parse_tool_calls)
          add(K::newlines_then_literal, kDsmlBegin, Stage::tool_calls, false, Act::skip);
        if (lead) add(K::leading_newline, "", Stage::reasoning, true, Act::skip);
        add(K::newlines_then_literal, tok::kThinkEnd, Stage::common, true, Act::skip);
        unmatched = Act::reasoning;
        break;
      case Stage::tool_calls:
        add_literal("invoke name=\"", Stage::tool_name, false, Act::tool_call_begin);
        add_literal("</｜DSML｜tool_calls>", Stage::finished, false, Act::skip);
        add_literal("</｜DSML｜ calls>", Stage::finished, false, Act::skip);
        unmatched = Act::skip;
        break;
      case Stage::tool_name:
        add_literal("\"", Stage::tool_args, true, Act::tool_name_end);
        unmatched = Act::tool_name;
        break;
      case Stage::tool_args:
        add_literal("parameter name=\"", Stage::param_name, false, Act::args_label,
                    lead ? "{\"" : ", \"");
        add_literal(kDsmlEnd, Stage::tool_calls, false, Act::args_end, lead ? "{}" : "}");
        unmatched = Act::skip;
        break;
      case Stage::param_name:
        add_literal("\"", Stage::param_type, false, Act::args_label, "\": ");
        unmatched = Act::args_raw;
        break;
      case Stage::param_type:
        add_literal("true\">", Stage::param_value, true, Act::args_label, "\"");
        add_literal("false\">", Stage::param_value, false, Act::skip);
        unmatched = Act::skip;
        break;
      case Stage::param_value:
        // `leading` doubles as "the value is a JSON string" here.
        add_literal(kDsmlEnd, Stage::tool_args, false, lead ? Act::args_label : Act::skip, "\"");
        unmatched = lead ? Act::args_string : Act::args_raw;
        break;
      case Stage::finished:
        unmatched = Act::skip_invalid;
        break;
    }
  }

  void emit_text(ChatDelta::Kind kind, std::string_view text) {
    if (text.empty()) return;
    std::string& acc = kind == ChatDelta::Kind::content ? msg.content : msg.reasoning_content;
    acc += text;
    if (!carry.empty() && carry_kind != kind) flush_carry();
    if (!out->empty() && out->back().kind == kind) {
      out->back().text += carry;
      out->back().text += text;
    } else {
      ChatDelta d;
      d.kind = kind;
      d.text = carry;
      d.text += text;
      out->push_back(std::move(d));
    }
    carry.clear();
  }
  void flush_carry() {
    if (carry.empty()) return;
    if (!out->empty() && out->back().kind == carry_kind) {
      out->back().text += carry;
    } else {
      ChatDelta d;
      d.kind = carry_kind;
      d.text = carry;
      out->push_back(std::move(d));
    }
    carry.clear();
  }
  // Moves an incomplete trailing UTF-8 character of the last text delta into `carry`.
  void hold_utf8_tail() {
    if (out->empty() || out->back().kind == ChatDelta::Kind::tool_call) return;
    size_t tail = 0;
    if (!utf8_incomplete_tail(out->back().text, &tail)) return;
    std::string& t = out->back().text;
    carry_kind = out->back().kind;
    carry = t.substr(t.size() - tail);
    t.resize(t.size() - tail);
    if (t.empty()) out->pop_back();
  }

  void emit_call() {
    ChatDelta d;
    d.kind = ChatDelta::Kind::tool_call;
    d.tool_call = call;
    flush_carry();
    out->push_back(std::move(d));
    msg.tool_calls.push_back(call);
    in_call = false;
    name_done = false;
    call = ParsedToolCall{};
  }

  void apply(Act act, std::string_view bytes, std::string_view label) {
    switch (act) {
      case Act::content:
        emit_text(ChatDelta::Kind::content, bytes);
        break;
      case Act::reasoning:
        emit_text(ChatDelta::Kind::reasoning, bytes);
        break;
      case Act::skip:
        break;
      case Act::skip_invalid:
        msg.skipped_invalid += bytes.size();
        break;
      case Act::stop_sequence:
        msg.stop_sequence = true;
        break;
      case Act::tool_call_begin:
        in_call = true;
        name_done = false;
        call = ParsedToolCall{};
        break;
      case Act::tool_name:
        call.name += bytes;
        break;
      case Act::tool_name_end:
        name_done = true;
        break;
      case Act::args_raw:
        call.arguments += bytes;
        break;
      case Act::args_string:
        append_json_escaped(call.arguments, bytes);
        break;
      case Act::args_label:
        call.arguments += label;
        break;
      case Act::args_end:
        call.arguments += label;
        call.complete = true;
        emit_call();
        break;
    }
  }

  void feed(std::string_view text) {
    for (char c : text) {
      stash += c;
      Marker* hit = nullptr;
      for (auto& m : markers) {
        if (m.feed(c)) {
          hit = &m;
          break;
        }
      }
      if (hit == nullptr) continue;
      const size_t mlen = std::min(hit->matching_len(), stash.size());
      const std::string_view sv(stash);
      apply(unmatched, sv.substr(0, sv.size() - mlen), {});
      apply(hit->act, sv.substr(sv.size() - mlen), hit->label);
      enter(hit->next, hit->next_leading);  // clears the stash
    }
    size_t hold = 0;
    for (const auto& m : markers) hold = std::max(hold, m.matching_len());
    hold = std::min(hold, stash.size());
    if (stash.size() > hold) {
      apply(unmatched, std::string_view(stash).substr(0, stash.size() - hold), {});
      stash.erase(0, stash.size() - hold);
    }
  }

  void finish() {
    apply(unmatched, stash, {});
    stash.clear();
    flush_carry();
    if (in_call && name_done) {
      call.complete = false;
      emit_call();
    }
    in_call = false;
    enter(Stage::finished, false);
  }
};

ChatStreamParser::ChatStreamParser(ChatParseOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
ChatStreamParser::ChatStreamParser(ChatStreamParser&&) noexcept = default;
ChatStreamParser& ChatStreamParser::operator=(ChatStreamParser&&) noexcept = default;
ChatStreamParser::~ChatStreamParser() = default;

std::vector<ChatDelta> ChatStreamParser::push(std::string_view text) {
  std::vector<ChatDelta> out;
  impl_->out = &out;
  impl_->feed(text);  // held UTF-8 bytes (carry) re-attach in front of the next text delta
  impl_->hold_utf8_tail();
  impl_->out = nullptr;
  return out;
}

std::vector<ChatDelta> ChatStreamParser::finish() {
  std::vector<ChatDelta> out;
  impl_->out = &out;
  impl_->finish();
  impl_->out = nullptr;
  return out;
}

bool ChatStreamParser::done() const {
  return impl_->stage == Stage::finished;
}

const ParsedChatMessage& ChatStreamParser::message() const {
  return impl_->msg;
}

ParsedChatMessage parse_chat_output(std::string_view text, const ChatParseOptions& options) {
  ChatStreamParser p(options);
  (void)p.push(text);
  (void)p.finish();
  return p.message();
}

}  // namespace dsv4::tokenizer
