#!/usr/bin/env python3
"""Reference renderings and output parses for the DeepSeek-V4 chat format (src/tokenizer/chat.h).

The reference is DeepSeek's own code, run as is; nothing of the format is re-implemented here.
It is `deepseek-recipe` 0.2.0 from PyPI (import name `deepseek_recipe`, Rust compiled into a
Python extension, MIT, published by deepseek-ai; repository github.com/deepseek-ai/deepseek-recipe),
the request conversion / prompt encoding / stream parsing library DeepSeek ships for serving
V4 and V4.1:

  render cases   ChatCompletionRequest(body).convert(ConversionOptions())      (request -> Conversation)
                 DeepseekV4Encoding().render_conversation(conversation)         (prompt text + special ranges)
                 DeepseekV4Encoding().with_tokenizer(tokenizer.json).encode(..) (token ids)
                 converted.parsing_options                                      (how to parse the reply)
  parse cases    StreamProcessor(ChatCompletionRequest.chunk_generator(..), parsing_options)
                 fed the model output text, once whole and once one character at a time (the
                 two must agree; checked here), deltas accumulated into content / reasoning_content
                 / tool_calls[{name, arguments}] / finish_reason.

The model repository's own script (DeepSeek-V4-Pro/encoding/encoding_dsv4.py, not installable;
read through mirrors) agrees with this library on every per-message rule but differs in request
handling; docs/chat.md lists the differences. We follow the library: it is what DeepSeek serves.

Output (JSON, UTF-8):
  tests/data/chat/render_cases.json  {"meta": {...}, "cases": [{"name", "request", and either
        "prompt", "special_ranges" (byte offsets into the UTF-8 prompt), "token_ids",
        "parse_options" {"initial_stage", "parse_tool_calls", "stop"}, or "error"}]}
  tests/data/chat/parse_cases.json   {"meta": {...}, "cases": [{"name", "options" (as above),
        "output", "content", "reasoning_content", "tool_calls": [{"name", "arguments"}],
        "finish_reason"}]}

Usage:  /work/refvenv/bin/pip install deepseek-recipe==0.2.0
        /work/refvenv/bin/python tools/reference/make_chat_vectors.py [--check]
  --check  regenerate in memory and compare with the committed files (exit 1 on difference).
Deterministic: no randomness; tool-call ids and timestamps of the library are not recorded.
"""
import argparse
import hashlib
import json
import os
import sys

import deepseek_recipe as dr

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(ROOT, "tests", "data", "chat")
TOKENIZER_JSON = os.path.join(ROOT, "tests", "data", "tokenizer", "tokenizer.json")
MODEL = "DeepSeek-V4-Pro"  # a model name the library maps to the V4 encoding

# ---------------------------------------------------------------------------------------------
# Render cases: Chat Completions request bodies (model name added by the script).
# ---------------------------------------------------------------------------------------------
OFF = {"type": "disabled"}
ON = {"type": "enabled"}


def U(text):
    return {"role": "user", "content": text}


def S(text):
    return {"role": "system", "content": text}


def A(text, reasoning=None, **kw):
    m = {"role": "assistant", "content": text}
    if reasoning is not None:
        m["reasoning_content"] = reasoning
    m.update(kw)
    return m


def call(cid, name, arguments):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def TOOL(cid, content):
    return {"role": "tool", "tool_call_id": cid, "content": content}


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}
ODD_SCHEMA = {"type": "function", "function": {
    # key order kept as given; numbers in the library's spelling; escapes; defaults
    "parameters": {"type": "object", "z": 1.0, "a": [1e-7, 12345678901234567890, 1e300, 0.5, 100,
                                                     1e16, 1e15, 1.5e-5, 0.0001, -2.5e-300],
                   "nested": {"b": None, "a": True, "e": {}, "l": []}},
    "name": "odd_tool", "description": "é ☃ 😀 \u2028 \u0001 \" \\ / \u007f tab\tnl\n"}}
BARE = {"type": "function", "function": {"name": "bare_tool"}}

FLOW_ARGS_1 = '{"city": "Paris", "days": 3}'
FLOW_ARGS_2 = ('{"query": "caf\\u00e9 \\"quoted\\" \\n line", "n": -1.5e3, "ok": true, "none": null, '
               '"list": [1, "two", {"x": []}], "obj": {"k": "v", "z": 0.1}, "big": 123456789012345678901}')

RENDER_CASES = [
    ("single_turn_chat", {"messages": [U("Hello!")], "thinking": OFF}),
    ("single_turn_thinking_default_effort", {"messages": [U("Hello!")]}),
    ("effort_low", {"messages": [U("Hi")], "reasoning_effort": "low"}),
    ("effort_minimal", {"messages": [U("Hi")], "reasoning_effort": "minimal"}),
    ("effort_medium", {"messages": [U("Hi")], "reasoning_effort": "medium"}),
    ("effort_high", {"messages": [U("Hi")], "reasoning_effort": "high", "thinking": ON}),
    ("effort_xhigh", {"messages": [U("Hi")], "reasoning_effort": "xhigh"}),
    ("effort_ultra", {"messages": [U("Hi")], "reasoning_effort": "ultra"}),
    ("effort_max", {"messages": [U("Hi")], "reasoning_effort": "max"}),
    ("effort_none_disables_thinking", {"messages": [U("Hi")], "reasoning_effort": "none"}),
    ("effort_none_thinking_enabled", {"messages": [U("Hi")], "reasoning_effort": "none",
                                      "thinking": ON}),
    ("effort_max_thinking_disabled", {"messages": [U("Hi")], "reasoning_effort": "max",
                                      "thinking": OFF}),
    ("thinking_adaptive", {"messages": [U("Hi")], "thinking": {"type": "adaptive"}}),
    ("system_prompt_chat", {"messages": [S("You are a helpful assistant."), U("What is 2+2?")],
                            "thinking": OFF}),
    ("system_prompt_thinking", {"messages": [S("You are a helpful assistant."), U("What is 2+2?")],
                                "reasoning_effort": "max"}),
    ("multi_turn_chat", {"messages": [S("Be brief."), U("Hi"), A("Hello."), U("How are you?"),
                                      A("Fine."), U("Bye")], "thinking": OFF}),
    ("multi_turn_thinking_drops_reasoning", {
        "messages": [U("2+2?"), A("4", "Add two and two."), U("times 3?"),
                     A("12", "Multiply."), U("minus 1?")], "reasoning_effort": "low"}),
    ("multi_turn_thinking_missing_reasoning", {
        "messages": [U("a"), A("b"), U("c")], "reasoning_effort": "low"}),
    ("thinking_ends_with_assistant", {
        "messages": [U("q"), A("answer", "why")], "reasoning_effort": "low"}),
    ("chat_ends_with_assistant", {"messages": [U("q"), A("answer")], "thinking": OFF}),
    ("chat_assistant_reasoning_ignored", {"messages": [U("q"), A("a", "r"), U("q2")],
                                          "thinking": OFF}),
    ("tools_chat", {"messages": [S("Use tools."), U("Weather in Paris?")],
                    "tools": [WEATHER, SEARCH], "thinking": OFF}),
    ("tools_no_system", {"messages": [U("Weather in Paris?")], "tools": [WEATHER],
                         "reasoning_effort": "low"}),
    ("tools_keep_reasoning", {
        "messages": [U("q1"), A("a1", "r1"), U("q2"), A("a2", "r2"), U("q3")],
        "tools": [SEARCH], "reasoning_effort": "low"}),
    ("tools_keep_reasoning_missing", {
        "messages": [U("q1"), A("a1"), U("q2")], "tools": [SEARCH], "reasoning_effort": "low"}),
    ("tool_choice_required_without_tools_thinking", {"messages": [U("q")], "tool_choice": "required",
                                                     "reasoning_effort": "low"}),
    ("tool_call_flow_thinking", {
        "messages": [S("sys"), U("Weather in Paris and news?"),
                     A("", "Need two tools.", tool_calls=[call("c1", "get_weather", FLOW_ARGS_1),
                                                          call("c2", "search", FLOW_ARGS_2)]),
                     TOOL("c2", "news: none"), TOOL("c1", "sunny, 21°C"),
                     A("Sunny and quiet.", "Both answered."), U("Thanks! Tomorrow?")],
        "tools": [WEATHER, SEARCH], "reasoning_effort": "high"}),
    ("tool_call_flow_chat", {
        "messages": [U("Weather?"),
                     A("Let me check.", tool_calls=[call("c1", "get_weather", FLOW_ARGS_1)]),
                     TOOL("c1", "sunny"), U("and more")],
        "tools": [WEATHER], "thinking": OFF}),
    ("tool_call_flow_no_tools_declared", {
        "messages": [U("q"), A("", "hidden", tool_calls=[call("c1", "get_weather", "{}")]),
                     TOOL("c1", "r")], "reasoning_effort": "low"}),
    ("tool_call_arguments_variants", {
        "messages": [U("q"),
                     A(None, tool_calls=[call("a", "f1", "not json"), call("b", "f2", "[1, 2]"),
                                         call("c", "f3", ""), call("d", "f4", ' {"x" : 1} '),
                                         call("e", "f5", '{"a": 1, "a": 2, "b": "\\u0000"}'),
                                         call("f", "f6", '{"nums": [1.0, 1e21, 1e-7, -0.0, 3]}'),
                                         call("g", "f7", '"just a string"')]),
                     TOOL("g", "7"), TOOL("a", "1"), TOOL("c", "3"), TOOL("b", "2"),
                     TOOL("e", "5"), TOOL("d", "4"), TOOL("f", "6"),
                     U("after tools")], "thinking": OFF}),
    ("tool_result_parts", {
        "messages": [U("q"), A("", tool_calls=[call("1", "f", "{}")]),
                     TOOL("1", [{"type": "text", "text": "part1"}, {"type": "text", "text": "part2"}])],
        "thinking": OFF}),
    ("tool_choice_none", {"messages": [U("q"), A("a", "r"), U("q2")], "tools": [WEATHER],
                          "tool_choice": "none", "reasoning_effort": "low"}),
    ("tool_choice_auto", {"messages": [U("q")], "tools": [WEATHER], "tool_choice": "auto",
                          "thinking": OFF}),
    ("tool_choice_required", {"messages": [U("q")], "tools": [WEATHER, SEARCH],
                              "tool_choice": "required", "thinking": OFF}),
    ("tool_choice_named", {"messages": [U("q")], "tools": [WEATHER, SEARCH],
                           "tool_choice": {"type": "function", "function": {"name": "search"}},
                           "thinking": OFF}),
    ("tool_choice_required_without_tools", {"messages": [U("q")], "tool_choice": "required",
                                            "thinking": OFF}),
    ("tools_empty_list", {"messages": [U("q")], "tools": [], "thinking": OFF}),
    ("tool_schema_formatting", {"messages": [U("q")], "tools": [ODD_SCHEMA, BARE],
                                "thinking": OFF}),
    ("tool_description_null_parameters_null", {
        "messages": [U("q")], "thinking": OFF,
        "tools": [{"type": "function", "function": {"name": "n-1_x", "description": None,
                                                    "parameters": None}}]}),
    ("systems_hoisted_and_joined", {"messages": [U("a"), S("s1"), U("b"), A("c"), S("s2"), U("d")],
                                    "thinking": OFF}),
    ("system_only", {"messages": [S("only a system prompt")], "reasoning_effort": "low"}),
    ("assistant_first", {"messages": [A("I start."), U("ok")], "thinking": OFF}),
    ("consecutive_users_merge", {"messages": [U("one"), U("two"), U("three")], "thinking": OFF}),
    ("content_parts", {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "s1"}, {"type": "text", "text": "s2"}]},
        {"role": "user", "content": [{"type": "text", "text": "p1"}, {"type": "text", "text": "p2"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]},
        {"role": "user", "content": []}], "thinking": OFF}),
    ("image_part_placeholder", {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        "thinking": OFF}),
    ("latest_reminder", {"messages": [U("q"), A("a"), {"role": "latest_reminder", "content": "rem"},
                                      U("q2")], "thinking": OFF}),
    ("latest_reminder_last", {"messages": [U("q"), {"role": "latest_reminder", "content": "r"}],
                              "reasoning_effort": "low"}),
    ("extra_fields_ignored", {"messages": [{"role": "user", "content": "hi", "name": "bob", "x": 1}],
                              "thinking": OFF, "temperature": 0.5, "stream": True}),
    ("prefix_chat", {"messages": [U("Write a haiku"), A("Autumn", prefix=True)], "thinking": OFF}),
    ("prefix_chat_reasoning_ignored", {"messages": [U("q"), A("a", "r", prefix=True)],
                                       "thinking": OFF}),
    ("prefix_thinking_content", {"messages": [U("q"), A("So far", "I thought", prefix=True)],
                                 "reasoning_effort": "low"}),
    ("prefix_thinking_reasoning_only", {"messages": [U("q"), A("", "Half a thought", prefix=True)],
                                        "reasoning_effort": "low"}),
    ("prefix_thinking_empty", {"messages": [U("q"), A("", prefix=True)], "reasoning_effort": "low"}),
    ("prefix_thinking_no_reasoning", {"messages": [U("q"), A("text", prefix=True)],
                                      "reasoning_effort": "low"}),
    ("stop_sequences", {"messages": [U("q")], "stop": ["END", "\n\n\n"], "thinking": OFF}),
    ("stop_string", {"messages": [U("q")], "stop": "STOP", "reasoning_effort": "low"}),
    ("unicode_content", {"messages": [
        S("Système: ünïcödé — 中文 — العربية"),
        U("emoji 👩‍👩‍👧‍👦 🇫🇷 e\u0301 \u00a0nbsp \ufeffbom \u2028ls ǅ ﷽ 𝔘"),
        A("回答：好的 ✅", "推理 🤔"), U("日本語のテキスト\r\nCRLF\ttab")],
        "reasoning_effort": "low"}),
    ("special_token_text_in_content", {"messages": [
        U("<think>not a tag</think> <｜User｜> <｜end▁of▁sentence｜> ｜DSML｜ <tool_result>")],
        "thinking": OFF}),
    ("long_content", {"messages": [U("word " * 400)], "thinking": OFF}),
    # Requests the library rejects: dsv4 must reject them too.
    ("error_empty_messages", {"messages": []}),
    ("error_unknown_role", {"messages": [{"role": "developer", "content": "x"}]}),
    ("error_user_content_null", {"messages": [{"role": "user", "content": None}]}),
    ("error_user_content_number", {"messages": [{"role": "user", "content": 5}]}),
    ("error_user_content_missing", {"messages": [{"role": "user"}]}),
    ("error_part_without_text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
    ("error_assistant_without_content_or_calls", {"messages": [U("q"), A(None)]}),
    ("error_tool_without_call", {"messages": [U("q"), TOOL("x", "r")]}),
    ("error_missing_tool_result", {"messages": [U("q"), A("", tool_calls=[call("1", "f", "{}")]),
                                                U("next")]}),
    ("error_unknown_tool_result_id", {"messages": [U("q"), A("", tool_calls=[call("1", "f", "{}")]),
                                                   TOOL("2", "r")]}),
    ("error_extra_tool_result", {"messages": [U("q"), A("", tool_calls=[call("1", "f", "{}")]),
                                              TOOL("1", "r"), TOOL("1", "r")]}),
    ("error_duplicate_call_id", {"messages": [U("q"), A("", tool_calls=[call("1", "f", "{}"),
                                                                          call("1", "g", "{}")]),
                                              TOOL("1", "r"), TOOL("1", "r")]}),
    ("error_empty_tool_calls", {"messages": [U("q"), A("", tool_calls=[])]}),
    ("error_arguments_not_string", {"messages": [U("q"), A("", tool_calls=[
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]),
        TOOL("1", "r")]}),
    ("error_tool_message_content_null", {"messages": [U("q"), A("", tool_calls=[call("1", "f", "{}")]),
                                                      TOOL("1", None)]}),
    ("error_prefix_not_last", {"messages": [U("q"), A("a", prefix=True), U("x")]}),
    ("error_duplicate_tool_names", {"messages": [U("q")], "tools": [WEATHER, WEATHER]}),
    ("error_bad_tool_name", {"messages": [U("q")], "tools": [
        {"type": "function", "function": {"name": "has space"}}]}),
    ("error_empty_tool_name", {"messages": [U("q")], "tools": [
        {"type": "function", "function": {"name": ""}}]}),
    ("error_parameters_not_object_type", {"messages": [U("q")], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}),
    ("error_parameters_without_type", {"messages": [U("q")], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {}}}]}),
    ("error_tool_type", {"messages": [U("q")], "tools": [
        {"type": "retrieval", "function": {"name": "f"}}]}),
    ("error_named_choice_unknown", {"messages": [U("q")], "tools": [WEATHER],
                                    "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
    ("error_required_with_thinking", {"messages": [U("q")], "tools": [WEATHER],
                                      "tool_choice": "required"}),
    ("error_bad_effort", {"messages": [U("q")], "reasoning_effort": "extreme"}),
    ("error_bad_thinking_type", {"messages": [U("q")], "thinking": {"type": "sometimes"}}),
    ("error_empty_stop", {"messages": [U("q")], "stop": ["a", ""]}),
    ("error_latest_reminder_parts", {"messages": [{"role": "latest_reminder",
                                                   "content": [{"type": "text", "text": "x"}]}]}),
]

# ---------------------------------------------------------------------------------------------
# Parse cases: (name, request options, model output text).
# ---------------------------------------------------------------------------------------------
CHAT = {"thinking": OFF}
THINK = {"reasoning_effort": "low"}
CHAT_TOOLS = {"thinking": OFF, "tools": [WEATHER, SEARCH]}
THINK_TOOLS = {"reasoning_effort": "low", "tools": [WEATHER, SEARCH]}
D = "｜DSML｜"


def dsml_call(name, params, trailer="\n"):
    body = "".join('<%sparameter name="%s" string="%s">%s</%sparameter>\n' % (D, k, s, v, D)
                   for k, s, v in params)
    return '<%sinvoke name="%s">\n%s</%sinvoke>%s' % (D, name, body, D, trailer)


TC_BLOCK = ("\n\n<%stool_calls>\n" % D
            + dsml_call("get_weather", [("city", "true", "Paris"), ("days", "false", "3")])
            + dsml_call("search", [("query", "true", 'say "hi"\n\ttab \\ é 😀 \u0001'),
                                   ("opts", "false", '{"k": [1, 2], "s": "x"}')], trailer="")
            + "\n</%stool_calls>" % D)

PARSE_CASES = [
    ("chat_plain", CHAT, "Hello, world!"),
    ("chat_leading_newlines_dropped", CHAT, "\n\n\nHello\n\nworld\n\n"),
    ("chat_extra_think_end_skipped", CHAT, "abc</think>def</think>"),
    ("chat_think_start_kept", CHAT, "<think>x"),
    ("chat_unicode", CHAT, "中文 👩‍👩‍👧 e\u0301 \u2028 ✓"),
    ("chat_dsml_without_tools_is_content", CHAT,
     "text" + TC_BLOCK),
    ("chat_eos_text_is_content", CHAT, "a<｜end▁of▁sentence｜>"),
    ("think_basic", THINK, "Let me think.</think>The answer is 4."),
    ("think_newlines_trimmed", THINK, "\n\nreason line\n\n</think>\n\nanswer\n"),
    ("think_empty_reasoning", THINK, "</think>direct"),
    ("think_truncated", THINK, "still thinking about <it"),
    ("think_partial_end_at_eof", THINK, "reasoning</thi"),
    ("think_second_end_skipped", THINK, "r</think>a</think>b"),
    ("think_lt_characters", THINK, "a < b <<< c </ d </t </think>x < y <｜ z <｜DSM"),
    ("tool_calls_chat", CHAT_TOOLS, "Checking." + TC_BLOCK),
    ("tool_calls_chat_no_content", CHAT_TOOLS, TC_BLOCK),
    ("tool_calls_think", THINK_TOOLS, "I need tools.</think>Checking." + TC_BLOCK),
    ("tool_calls_from_reasoning", THINK_TOOLS, "I need tools." + TC_BLOCK),
    ("tool_calls_text_after_block_dropped", CHAT_TOOLS, "x" + TC_BLOCK + "\n\ntrailing text"),
    ("tool_call_no_parameters", CHAT_TOOLS,
     "\n\n<%stool_calls>\n<%sinvoke name=\"ping\">\n</%sinvoke>\n</%stool_calls>" % (D, D, D, D)),
    ("tool_call_single_newline_before", CHAT_TOOLS,
     "a\n<%stool_calls>\n%s</%stool_calls>" % (D, dsml_call("f", [("a", "true", "1")]), D)),
    ("tool_call_no_newline_before", CHAT_TOOLS,
     "a<%stool_calls>\n%s</%stool_calls>" % (D, dsml_call("f", [("a", "true", "1")]), D)),
    ("tool_call_v41_end_label", CHAT_TOOLS,
     "\n\n<%stool_calls>\n%s</%s calls>tail" % (D, dsml_call("f", [("a", "false", "[1]")]), D)),
    ("tool_call_truncated_in_value", CHAT_TOOLS,
     "ok\n\n<%stool_calls>\n<%sinvoke name=\"f\">\n<%sparameter name=\"a\" string=\"true\">par" % (D, D, D)),
    ("tool_call_truncated_in_name", CHAT_TOOLS,
     "\n\n<%stool_calls>\n<%sinvoke name=\"get_wea" % (D, D)),
    ("tool_call_truncated_after_open", CHAT_TOOLS, "hi\n\n<%stool_" % D),
    ("tool_call_garbage_inside_block", CHAT_TOOLS,
     "c\n\n<%stool_calls>garbage <b>not dsml</b>\n%s</%stool_calls>" % (D, dsml_call("f", [("a", "true", "1")]), D)),
    ("tool_call_garbage_only", CHAT_TOOLS, "c<%stool_calls>garbage" % D),
    ("tool_call_value_with_markup", CHAT_TOOLS,
     "\n\n<%stool_calls>\n%s</%stool_calls>" % (D, dsml_call("f", [("html", "true", "<b>x</b> </think> <｜"), ("n", "false", "-1.5e3")]), D)),
    ("tool_call_missing_type_attr", CHAT_TOOLS,
     "\n\n<%stool_calls>\n<%sinvoke name=\"f\">\n<%sparameter name=\"a\">v</%sparameter>\n</%sinvoke>\n</%stool_calls>" % (D, D, D, D, D, D)),
    ("stop_in_content", dict(CHAT, stop=["STOP"]), "keep this STOP drop this"),
    ("stop_not_in_reasoning", dict(THINK, stop=["STOP"]), "STOP in reasoning</think>then STOP here"),
    ("stop_multiple_first_wins", dict(CHAT, stop=["bc", "abcd"]), "xxabcd"),
    ("stop_newlines", dict(CHAT, stop=["\n\n\n"]), "para\n\nstill\n\n\nnot"),
    ("stop_before_tool_block", dict(CHAT_TOOLS, stop=["END"]), "a END" + TC_BLOCK),
    ("stop_inside_tool_block_ignored", dict(CHAT_TOOLS, stop=["Paris"]), "a" + TC_BLOCK),
    ("required_starts_in_tool_calls", {"thinking": OFF, "tools": [WEATHER], "tool_choice": "required"},
     dsml_call("get_weather", [("city", "true", "Rome")]) + "</%stool_calls>" % D),
    ("prefix_content_continuation", {"messages_tail": [A("So far", "thought", prefix=True)],
                                     "reasoning_effort": "low"}, "\n\nmore text"),
    ("prefix_reasoning_continuation", {"messages_tail": [A("", "half", prefix=True)],
                                       "reasoning_effort": "low"}, "\n\n more</think>\n\nanswer"),
]


# ---------------------------------------------------------------------------------------------
def convert(body):
    body = dict(body)
    body["model"] = MODEL
    req = dr.ChatCompletionRequest(body)
    return req.convert(dr.ConversionOptions())


def stage_name(po):
    if po.starts_in_tool_calls:
        return "tool_calls"
    st = po.thinking_initial_stage
    if st is None:
        return "content_start"
    return {"ThinkingInitialStage.ReasoningStart": "reasoning_start",
            "ThinkingInitialStage.ReasoningContinuation": "reasoning_continuation",
            "ThinkingInitialStage.ContentContinuation": "content_continuation"}[str(st)]


def parse_options(po):
    return {"initial_stage": stage_name(po), "parse_tool_calls": bool(po.parse_tool_calls),
            "stop": list(po.stop_sequences)}


def error_message(exc):
    if isinstance(exc, dr.ConversionError):
        return json.loads(exc.body)["error"]["message"]
    return str(exc)


def render_cases(tokenizer):
    enc = dr.DeepseekV4Encoding()
    enc_tok = enc.with_tokenizer(tokenizer)
    out = []
    for name, body in RENDER_CASES:
        case = {"name": name, "request": body}
        try:
            converted = convert(body)
        except (dr.ConversionError, ValueError) as exc:
            case["error"] = error_message(exc)
            out.append(case)
            continue
        assert not name.startswith("error_"), name
        rendered = enc.render_conversation(converted.conversation)
        prompt = rendered.prompt
        ranges = []
        for start, end in rendered.special_ranges:  # code points -> UTF-8 bytes
            ranges.append([len(prompt[:start].encode()), len(prompt[:end].encode())])
        case["prompt"] = prompt
        case["special_ranges"] = ranges
        case["token_ids"] = enc_tok.encode(converted.conversation)
        case["parse_options"] = parse_options(converted.parsing_options)
        out.append(case)
    return out


def run_processor(converted, chunks):
    gen = dr.ChatCompletionRequest.chunk_generator(converted, "id", "m")
    proc = dr.StreamProcessor(gen, converted.parsing_options)
    events = list(proc.push(dr.InferenceChunk.ready(prompt_usage=dr.PromptUsage(prompt_tokens=1))))
    for c in chunks:
        if proc.finished:
            break
        events += proc.push(dr.InferenceChunk.text(c, 1))
    if not proc.finished:
        events += proc.push(dr.InferenceChunk.finish(dr.InferenceFinishReason.Stop))
    events += proc.finish()
    proc.close()
    content, reasoning, calls, finish = "", "", [], None
    for ev in events:
        choice = json.loads(ev.to_json())["choices"][0]
        delta = choice["delta"]
        content += delta.get("content") or ""
        reasoning += delta.get("reasoning_content") or ""
        for tc in delta.get("tool_calls") or []:
            if tc["index"] == len(calls):
                calls.append({"name": "", "arguments": ""})
            fn = tc.get("function") or {}
            calls[tc["index"]]["name"] += fn.get("name") or ""
            calls[tc["index"]]["arguments"] += fn.get("arguments") or ""
        if choice.get("finish_reason"):
            finish = choice["finish_reason"]
    return {"content": content, "reasoning_content": reasoning, "tool_calls": calls,
            "finish_reason": finish}


def parse_cases():
    out = []
    for name, opts, text in PARSE_CASES:
        opts = dict(opts)
        tail = opts.pop("messages_tail", [])
        body = dict(opts)
        body["messages"] = [U("q")] + tail
        converted = convert(body)
        whole = run_processor(converted, [text])
        converted = convert(body)
        per_char = run_processor(converted, list(text))
        if whole != per_char:
            sys.exit("reference is not chunking-invariant on %s: %r vs %r" % (name, whole, per_char))
        case = {"name": name, "request_options": dict(opts, messages_tail=tail) if tail else opts,
                "options": parse_options(converted.parsing_options), "output": text}
        case.update(whole)
        out.append(case)
    return out


def dump(obj):
    return json.dumps(obj, ensure_ascii=False, indent=1) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    with open(TOKENIZER_JSON, "rb") as f:
        tok_bytes = f.read()
    meta = {
        "generator": "tools/reference/make_chat_vectors.py",
        "reference": "deepseek-recipe %s (PyPI, deepseek-ai): DeepseekV4Encoding, "
                     "ChatCompletionRequest.convert, StreamProcessor" % dr.__version__,
        "tokenizer_json_sha256": hashlib.sha256(tok_bytes).hexdigest(),
    }
    tokenizer = dr.Tokenizer.from_file(TOKENIZER_JSON)
    files = {
        "render_cases.json": dump({"meta": meta, "cases": render_cases(tokenizer)}),
        "parse_cases.json": dump({"meta": meta, "cases": parse_cases()}),
    }
    bad = False
    for fname, text in files.items():
        path = os.path.join(OUT_DIR, fname)
        if args.check:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    print("differs: %s" % path)
                    bad = True
        else:
            os.makedirs(OUT_DIR, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print("wrote %s" % path)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
