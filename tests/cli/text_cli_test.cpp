// `dsv4 run -p` and `dsv4 chat` end to end on a tiny random-weight model with the real
// DeepSeek-V4 tokenizer (tests/engine/synthetic_model.h): deterministic text for a seed and for
// greedy decoding, the chat template vs --raw, stop strings, KV reuse across piped chat turns, and
// one clear `dsv4: ...` line naming the file for broken model directories and bad options.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <regex>

#include "../engine/synthetic_model.h"
#include "cli_runner.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using testing::CliRun;
using testing::run_dsv4;

class TextCli : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto& dir = testing::synthetic_model();
    ASSERT_TRUE(dir.ok()) << dir.status().to_string();
    model_ = dir->string();
    std::string tmpl = (fs::temp_directory_path() / "dsv4_text_cli_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    tmp_ = tmpl;
  }
  void TearDown() override { fs::remove_all(tmp_); }

  CliRun run(std::vector<std::string> args) {
    args.insert(args.begin() + 1, {"-m", model_, "-t", "1"});
    return run_dsv4(args, tmp_);
  }
  // `dsv4 chat -m MODEL ARGS... < stdin_file`.
  CliRun chat(const std::string& input, const std::vector<std::string>& args = {}) {
    const fs::path in = tmp_ / "stdin";
    std::ofstream(in, std::ios::binary) << input;
    const fs::path out = tmp_ / "stdout", err = tmp_ / "stderr";
    std::vector<std::string> words = {DSV4_CLI, "chat", "-m", model_, "-t", "1"};
    words.insert(words.end(), args.begin(), args.end());
    std::string cmd;
    for (const auto& w : words) cmd.append(testing::shell_quote(w)).append(" ");
    cmd.append("<").append(testing::shell_quote(in.string()));
    cmd.append(" >").append(testing::shell_quote(out.string()));
    cmd.append(" 2>").append(testing::shell_quote(err.string()));
    const int st = std::system(cmd.c_str());
    CliRun r;
    if (st != -1 && WIFEXITED(st)) r.exit_code = WEXITSTATUS(st);
    r.out = testing::slurp(out);
    r.err = testing::slurp(err);
    return r;
  }
  // "prompt N tokens" from run's summary line.
  static long prompt_tokens(const std::string& err) {
    std::smatch m;
    if (!std::regex_search(err, m, std::regex("prompt (\\d+) tokens"))) return -1;
    return std::stol(m[1]);
  }
  // A directory with some of the synthetic model's files (weights symlinked).
  fs::path model_copy(const std::string& name, std::initializer_list<const char*> files) {
    const fs::path d = tmp_ / name;
    fs::create_directories(d);
    for (const char* f : files) {
      if (std::string(f) == "model.safetensors") {
        fs::create_symlink(fs::path(model_) / f, d / f);
      } else {
        fs::copy_file(fs::path(model_) / f, d / f);
      }
    }
    return d;
  }
  // Exactly one line on stderr, a dsv4 error.
  static void expect_one_error_line(const CliRun& r, const std::string& must_contain) {
    EXPECT_EQ(r.err.rfind("dsv4: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(must_contain), std::string::npos) << r.err;
  }

  std::string model_;
  fs::path tmp_;
};

TEST_F(TextCli, GreedyAndSeededRunsAreDeterministic) {
  const std::vector<std::string> greedy = {"run", "-p", "Write a haiku about the sea.", "-n", "16"};
  CliRun a = run(greedy), b = run(greedy);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.err.find("generated 16 tokens"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("loaded "), std::string::npos) << a.err;

  auto sampled = [&](const std::string& seed) {
    return run({"run", "-p", "Write a haiku about the sea.", "-n", "16", "--temp", "0.9", "--top-p",
                "0.95", "--seed", seed});
  };
  CliRun s1 = sampled("42"), s2 = sampled("42"), s3 = sampled("43");
  ASSERT_EQ(s1.exit_code, 0) << s1.err;
  EXPECT_EQ(s1.out, s2.out);
  EXPECT_NE(s1.out, s3.out);  // 16 draws over a flat 129K-id distribution
  EXPECT_NE(s1.out, a.out);
  EXPECT_NE(s1.err.find("seed 42"), std::string::npos) << s1.err;
}

// The official FP8/FP4 cache runs end to end, deterministically; a KV budget below what one
// sequence needs is a one-line out-of-memory error, exit 1.
TEST_F(TextCli, OfficialKvStorageAndBudget) {
  const std::vector<std::string> args = {
      "run", "-p", "Write a haiku about the sea.", "-n", "8", "--kv", "official"};
  CliRun a = run(args), b = run(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  CliRun tight = run({"run", "-p", "Write a haiku about the sea.", "-n", "8", "--kv-budget", "1K"});
  EXPECT_EQ(tight.exit_code, 1) << tight.err;
  EXPECT_NE(tight.err.find("dsv4: "), std::string::npos) << tight.err;
  EXPECT_EQ(tight.out, "");
}

// --kv-save then --kv-load: the second run reuses the saved prompt's KV and prints the same
// answer; a corrupted snapshot is one error line.
TEST_F(TextCli, KvSnapshotSaveAndLoad) {
  const std::string file = (tmp_ / "prompt.kv").string();
  const std::vector<std::string> base = {"run", "-p", "Write a haiku about the sea.", "-n", "8"};
  std::vector<std::string> save_args = base;
  save_args.insert(save_args.end(), {"--kv-save", file});
  CliRun saved = run(save_args);
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  EXPECT_NE(saved.err.find("saved KV snapshot"), std::string::npos) << saved.err;
  std::vector<std::string> load_args = base;
  load_args.insert(load_args.end(), {"--kv-load", file});
  CliRun loaded = run(load_args);
  ASSERT_EQ(loaded.exit_code, 0) << loaded.err;
  EXPECT_EQ(loaded.out, saved.out);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(loaded.err, m, std::regex("reused the KV of (\\d+) of (\\d+)")))
      << loaded.err;
  EXPECT_GT(std::stol(m[1]), 0);

  std::string bytes = dsv4::testing::slurp(file);
  ASSERT_GT(bytes.size(), 100u);
  bytes[bytes.size() / 3] = static_cast<char>(bytes[bytes.size() / 3] ^ 1);
  { std::ofstream(file, std::ios::binary) << bytes; }
  CliRun bad = run(load_args);
  EXPECT_EQ(bad.exit_code, 1) << bad.err;
  // The model loads ("loaded ..."), then the snapshot is refused in one error line.
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 2) << bad.err;
  const size_t err_line = bad.err.find("\ndsv4: ");
  ASSERT_NE(err_line, std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("prompt.kv", err_line), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("corrupt", err_line), std::string::npos) << bad.err;
  EXPECT_EQ(bad.out, "");
}

TEST_F(TextCli, RawSkipsTheChatTemplate) {
  CliRun chat_mode = run({"run", "-p", "Hello", "-n", "4"});
  CliRun raw = run({"run", "-p", "Hello", "-n", "4", "--raw"});
  CliRun think = run({"run", "-p", "Hello", "-n", "4", "--think"});
  ASSERT_EQ(chat_mode.exit_code, 0) << chat_mode.err;
  ASSERT_EQ(raw.exit_code, 0) << raw.err;
  ASSERT_EQ(think.exit_code, 0) << think.err;
  // Raw: just "Hello" (one token); template: BOS, <｜User｜>, Hello, <｜Assistant｜>, </think>.
  EXPECT_EQ(prompt_tokens(raw.err), 1);
  EXPECT_EQ(prompt_tokens(chat_mode.err), 5);
  // Thinking mode adds the reasoning-effort text and opens <think>.
  EXPECT_GT(prompt_tokens(think.err), prompt_tokens(chat_mode.err));
  CliRun sys = run({"run", "-p", "Hello", "-n", "4", "--system", "You are terse."});
  EXPECT_GT(prompt_tokens(sys.err), prompt_tokens(chat_mode.err));
  CliRun bad = run({"run", "-p", "Hello", "--raw", "--think"});
  EXPECT_EQ(bad.exit_code, 2);
  expect_one_error_line(bad, "--raw");
}

TEST_F(TextCli, StopStringsEndTheAnswer) {
  for (const char* mode : {"", "--raw"}) {
    SCOPED_TRACE(mode);
    std::vector<std::string> args = {"run", "-p", "Tell me about cats", "-n", "24"};
    if (*mode) args.push_back(mode);
    CliRun full = run(args);
    ASSERT_EQ(full.exit_code, 0) << full.err;
    ASSERT_GT(full.out.size(), 10u);
    // A stop string from the middle of the greedy answer (one whole UTF-8 character).
    size_t cut = full.out.size() / 2;
    while (cut < full.out.size() && (static_cast<unsigned char>(full.out[cut]) & 0xC0) == 0x80)
      ++cut;
    size_t end = cut + 1;
    while (end < full.out.size() && (static_cast<unsigned char>(full.out[end]) & 0xC0) == 0x80)
      ++end;
    const std::string stop = full.out.substr(cut, end - cut);
    args.insert(args.end(), {"--stop", stop});
    CliRun stopped = run(args);
    ASSERT_EQ(stopped.exit_code, 0) << stopped.err;
    EXPECT_EQ(stopped.out, full.out.substr(0, full.out.find(stop)));
    EXPECT_NE(stopped.err.find("stop: stop string"), std::string::npos) << stopped.err;
  }
}

TEST_F(TextCli, ZeroTokensAndBadOptions) {
  CliRun zero = run({"run", "-p", "Hello", "-n", "0"});
  EXPECT_EQ(zero.exit_code, 0) << zero.err;
  EXPECT_EQ(zero.out, "");
  EXPECT_NE(zero.err.find("generated 0 tokens"), std::string::npos) << zero.err;
  EXPECT_EQ(prompt_tokens(zero.err), 5);

  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"--temp", "-1"}, "--temp"},
      {{"--top-p", "2"}, "--top-p"},
      {{"--top-p", "0"}, "--top-p"},
      {{"--min-p", "1.5"}, "--min-p"},
      {{"--repeat-penalty", "0"}, "--repeat-penalty"},
      {{"--top-k", "-3"}, "--top-k"},
      {{"-n", "-2"}, "-n"},
      {{"--stop", ""}, "--stop"},
      {{"--effort", "extreme"}, "--effort"},
      {{"--kv", "fast"}, "--kv"},
      {{"--kv-budget", "lots"}, "--kv-budget"},
      {{"--checkpoint-every", "-1"}, "--checkpoint-every"},
  };
  for (const auto& [extra, name] : bad) {
    std::vector<std::string> args = {"run", "-p", "Hello"};
    args.insert(args.end(), extra.begin(), extra.end());
    CliRun r = run(args);
    EXPECT_EQ(r.exit_code, 2) << name << ": " << r.err;
    expect_one_error_line(r, name);
    EXPECT_EQ(r.out, "");
    CliRun c = chat("hi\n", extra);
    EXPECT_EQ(c.exit_code, 2) << name << ": " << c.err;
    expect_one_error_line(c, name);
  }
  // -p and --tokens are two modes.
  CliRun both = run({"run", "-p", "Hello", "--tokens", "1,2"});
  EXPECT_EQ(both.exit_code, 2);
  expect_one_error_line(both, "--tokens");
  CliRun tokens_temp = run({"run", "--tokens", "1,2", "--temp", "1"});
  EXPECT_EQ(tokens_temp.exit_code, 2);
  expect_one_error_line(tokens_temp, "--temp");
}

TEST_F(TextCli, BrokenModelDirectoriesNameTheFile) {
  {
    const fs::path d = model_copy("no_tokenizer", {"config.json", "model.safetensors"});
    CliRun r = run_dsv4({"run", "-m", d.string(), "-p", "Hello"}, tmp_);
    EXPECT_EQ(r.exit_code, 1);
    expect_one_error_line(r, (d / "tokenizer.json").string());
  }
  {
    const fs::path d = model_copy("broken_tokenizer", {"config.json", "model.safetensors"});
    std::ofstream(d / "tokenizer.json") << "{\"added_tokens\": [}";
    CliRun r = run_dsv4({"run", "-m", d.string(), "-p", "Hello"}, tmp_);
    EXPECT_EQ(r.exit_code, 1);
    expect_one_error_line(r, (d / "tokenizer.json").string());
  }
  {
    const fs::path d = model_copy("no_config", {"model.safetensors", "tokenizer.json"});
    CliRun r = run_dsv4({"chat", "-m", d.string()}, tmp_);
    EXPECT_EQ(r.exit_code, 1);
    expect_one_error_line(r, "config.json");
  }
  {
    CliRun r = run_dsv4({"run", "-m", (tmp_ / "nowhere").string(), "-p", "Hello"}, tmp_);
    EXPECT_EQ(r.exit_code, 1);
    expect_one_error_line(r, "nowhere");
  }
}

// Three piped turns: turns 2 and 3 re-use the KV of everything before them; /reset starts over.
TEST_F(TextCli, ChatReusesTheSessionAcrossTurns) {
  CliRun r = chat(
      "Hello there\n\nWhat is two plus two?\nAnd three plus three?\n/reset\nHi "
      "again\n/exit\nignored\n",
      {"-n", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::regex turn_re("turn (\\d+): prompt (\\d+) tokens, reused (\\d+), prefilled (\\d+)");
  std::vector<std::array<long, 4>> turns;
  for (auto it = std::sregex_iterator(r.err.begin(), r.err.end(), turn_re);
       it != std::sregex_iterator(); ++it) {
    turns.push_back(
        {std::stol((*it)[1]), std::stol((*it)[2]), std::stol((*it)[3]), std::stol((*it)[4])});
  }
  ASSERT_EQ(turns.size(), 4u) << r.err;  // the empty line is skipped, /exit ends before "ignored"
  EXPECT_EQ(turns[0][0], 1);
  EXPECT_EQ(turns[0][2], 0);
  for (int i : {1, 2}) {
    EXPECT_EQ(turns[static_cast<size_t>(i)][0], i + 1);
    // Reused: the previous prompt and its answer (all evaluated tokens of the session).
    EXPECT_GT(turns[static_cast<size_t>(i)][2], turns[static_cast<size_t>(i) - 1][1]) << r.err;
    EXPECT_EQ(turns[static_cast<size_t>(i)][2] + turns[static_cast<size_t>(i)][3],
              turns[static_cast<size_t>(i)][1]);
    EXPECT_GT(turns[static_cast<size_t>(i)][1], turns[static_cast<size_t>(i) - 1][1]);
  }
  EXPECT_EQ(r.err.find("fresh state"), std::string::npos) << r.err;
  // After /reset: a new conversation, nothing re-used.
  EXPECT_EQ(turns[3][0], 1);
  EXPECT_EQ(turns[3][2], 0);
  EXPECT_NE(r.err.find("(new conversation)"), std::string::npos);
  // One answer line per turn at least (answers end with a newline).
  EXPECT_GE(std::count(r.out.begin(), r.out.end(), '\n'), 4);

  // Same input, same output (greedy).
  CliRun again = chat(
      "Hello there\n\nWhat is two plus two?\nAnd three plus three?\n/reset\nHi "
      "again\n/exit\nignored\n",
      {"-n", "8"});
  EXPECT_EQ(again.out, r.out);
  // Unknown commands are reported and skipped.
  CliRun unknown = chat("/nope\nhi\n", {"-n", "2"});
  EXPECT_EQ(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("unknown command /nope"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("turn 1:"), std::string::npos) << unknown.err;
}

}  // namespace
}  // namespace dsv4
