// Runs the real `dsv4 kv` binary: the default table, --json (parsed), --csv, --plot (the SVG
// is parsed), and every bad-input path (one "dsv4: ..." line on stderr, non-zero exit, no
// crash).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_runner.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kConfigs = std::string(DSV4_TEST_DATA_DIR) + "/configs/";
constexpr uint64_t kM = 1024 * 1024;

using dsv4::testing::CliRun;
using dsv4::testing::slurp;

class KvCli : public dsv4::testing::CliTest {
 protected:
  KvCli() : CliTest("kv") {}

  json run_json(std::vector<std::string> args) {
    args.push_back("--json");
    CliRun r = run(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << r.out.substr(0, 200);
    return j;
  }
};

const json* find_model(const json& root, const std::string& name) {
  for (const json& m : root["models"])
    if (m["name"] == name) return &m;
  ADD_FAILURE() << "no model " << name;
  return nullptr;
}

const json* find_ctx(const json& model, const std::string& scheme, uint64_t tokens) {
  for (const json& s : model["schemes"]) {
    if (s["scheme"] != scheme) continue;
    for (const json& c : s["contexts"])
      if (c["tokens"] == tokens) return &c;
  }
  ADD_FAILURE() << "no " << scheme << " @ " << tokens;
  return nullptr;
}

TEST_F(KvCli, DefaultTable) {
  CliRun r = run({});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  for (const char* s : {"DeepSeek-V3.2", "DeepSeek-V3.2 (no indexer)", "DeepSeek-V4-Flash",
                        "DeepSeek-V4-Pro", "GQA-baseline", "128K", "160K", "1M",
                        "bf16:", "official:", "B/token", "vs V3.2@1M", "vs GQA@1M"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
  // V3.2's MLA cache alone in bf16 at 1M tokens: 1152 B x 61 layers x 2^20 = 68.625 GiB.
  EXPECT_NE(r.out.find("68.625 GiB"), std::string::npos);
  EXPECT_NE(r.out.find("10.723 GiB"), std::string::npos);
  EXPECT_NE(r.out.find("8.578 GiB"), std::string::npos);
}

TEST_F(KvCli, JsonV32Figures) {
  json j = run_json({});
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["contexts"], json({131072, 163840, 1048576}));
  const json* v32 = find_model(j, "DeepSeek-V3.2");
  ASSERT_NE(v32, nullptr);
  EXPECT_EQ((*v32)["num_hidden_layers"], 61);
  // bf16 without indexer keys: exactly (512 latent + 64 rope) x 2 B = 1152 B/token/layer x 61.
  for (auto [n, gib] :
       {std::pair<uint64_t, double>{131072, 8.578125}, {163840, 10.72265625}, {1048576, 68.625}}) {
    const json* c = find_ctx(*v32, "bf16", n);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ((*c)["bytes_without_indexer"].get<uint64_t>(), 1152 * 61 * n);
    EXPECT_DOUBLE_EQ((*c)["gib_without_indexer"].get<double>(), gib);
    // With its indexer keys (128 dims x 2 B per token per layer).
    EXPECT_EQ((*c)["bytes"].get<uint64_t>(), (1152 + 128 * 2) * 61 * n);
    EXPECT_EQ((*c)["indexer_bytes"].get<uint64_t>(), 128 * 2 * 61 * n);
    EXPECT_DOUBLE_EQ((*c)["ratio_to_v32"].get<double>(), 1.0);
  }
  // official: 656 B MLA entry + 132 B indexer key per token per layer.
  const json* off = find_ctx(*v32, "official", kM);
  ASSERT_NE(off, nullptr);
  EXPECT_EQ((*off)["bytes"].get<uint64_t>(), (656 + 132) * 61 * kM);
  EXPECT_EQ((*off)["bytes_without_indexer"].get<uint64_t>(), 656 * 61 * kM);
}

TEST_F(KvCli, JsonV4FiguresArePartitioned) {
  json j = run_json({"--ctx", "1M", "--scheme", "bf16"});
  const json* flash = find_model(j, "DeepSeek-V4-Flash");
  ASSERT_NE(flash, nullptr);
  EXPECT_EQ((*flash)["layer_types"], json({{"sliding_window", 2}, {"csa", 21}, {"hca", 20}}));
  const json* c = find_ctx(*flash, "bf16", kM);
  ASSERT_NE(c, nullptr);
  const uint64_t e = 512 * 2, key = 128 * 2;
  // Every part explicit, so predicted == allocated can be checked part by part.
  EXPECT_EQ((*c)["window_bytes"].get<uint64_t>(), 43 * 128 * e);
  EXPECT_EQ((*c)["compressed_bytes"].get<uint64_t>(), 21 * (kM / 4) * e + 20 * (kM / 128) * e);
  EXPECT_EQ((*c)["indexer_bytes"].get<uint64_t>(), 21 * (kM / 4) * key);
  EXPECT_EQ((*c)["raw_kv_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ((*c)["compressor_state_bytes"].get<uint64_t>(),
            21 * (2 * 8 * 1024 * 2 + 2 * 8 * 256 * 2) + 20 * (2 * 128 * 512 * 2));
  uint64_t sum = 0;
  for (const char* k : {"window_bytes", "raw_kv_bytes", "compressed_bytes", "indexer_bytes",
                        "compressor_state_bytes"})
    sum += (*c)[k].get<uint64_t>();
  EXPECT_EQ((*c)["bytes"].get<uint64_t>(), sum);
  EXPECT_DOUBLE_EQ((*c)["bytes_per_token"].get<double>(), 21 * (e + key) / 4.0 + 20 * e / 128.0);
  // Per-layer-type parts add up to the total.
  uint64_t by_type = 0;
  for (const auto& [name, v] : (*c)["by_layer_type"].items()) by_type += v["bytes"].get<uint64_t>();
  EXPECT_EQ(by_type, sum);
  EXPECT_EQ((*c)["by_layer_type"]["csa"]["layers"], 21);

  const json* pro = find_model(j, "DeepSeek-V4-Pro");
  ASSERT_NE(pro, nullptr);
  EXPECT_EQ((*pro)["layer_types"], json({{"hca", 31}, {"csa", 30}}));
}

TEST_F(KvCli, ConfigPathsAndOptions) {
  // Files and directories, repeatable --scheme, comma lists.
  json j = run_json({kConfigs + "deepseek_v4_flash.json", kConfigs + "deepseek_v4_pro",
                     kConfigs + "llama3_8b.json", "--scheme", "f32", "--scheme", "bf16,official",
                     "--ctx", "4096,128K"});
  ASSERT_EQ(j["models"].size(), 3u);
  EXPECT_EQ(j["schemes"], json({"f32", "bf16", "official"}));
  EXPECT_EQ(j["contexts"], json({4096, 131072}));
  const json* llama = find_model(j, kConfigs + "llama3_8b.json");
  ASSERT_NE(llama, nullptr);
  // Llama-3-8B: 32 layers x (K + V) x 8 KV heads x 128 dims x 2 B.
  EXPECT_EQ((*find_ctx(*llama, "bf16", 4096))["bytes"].get<uint64_t>(),
            32u * 2 * 8 * 128 * 2 * 4096);
  // --mtp adds V4-Flash's sliding-window MTP layer (128 raw entries of 1024 B in bf16).
  json a = run_json({kConfigs + "deepseek_v4_flash.json", "--scheme", "bf16", "--ctx", "1M"});
  json b =
      run_json({kConfigs + "deepseek_v4_flash.json", "--scheme", "bf16", "--ctx", "1M", "--mtp"});
  EXPECT_EQ(b["mtp_layers_included"], true);
  EXPECT_EQ(b["models"][0]["schemes"][0]["contexts"][0]["bytes"].get<uint64_t>() -
                a["models"][0]["schemes"][0]["contexts"][0]["bytes"].get<uint64_t>(),
            128u * 1024);
}

TEST_F(KvCli, PerLayerAndCsv) {
  CliRun t = run({"--per-layer", "--scheme", "official", "--ctx", "1M"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  for (const char* s : {"21 x csa", "20 x hca", "2 x sliding_window", "61 x mla_indexer",
                        "kv 584 B/4", "key 68 B/4", "61 x gqa"})
    EXPECT_NE(t.out.find(s), std::string::npos) << s << "\n" << t.out;

  CliRun c = run({"--csv", "--per-layer", "--ctx", "4K,1M"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  std::istringstream in(c.out);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line.rfind("model,scheme,tokens,layer_type,layers,bytes,gib,", 0), 0u) << line;
  const size_t columns = std::count(line.begin(), line.end(), ',') + 1;
  int all_rows = 0, kind_rows = 0;
  bool saw_v32 = false;
  while (std::getline(in, line)) {
    EXPECT_EQ(static_cast<size_t>(std::count(line.begin(), line.end(), ',')) + 1, columns) << line;
    if (line.find(",all,") != std::string::npos)
      ++all_rows;
    else
      ++kind_rows;
    // V3.2 bf16 at 1M: 85888 B/token with indexer keys = 61 x (1152 + 256).
    if (line.rfind("DeepSeek-V3.2,bf16,1048576,all,61,", 0) == 0) {
      saw_v32 = true;
      EXPECT_NE(line.find("," + std::to_string(uint64_t{85888} * kM) + ","), std::string::npos)
          << line;
    }
  }
  EXPECT_TRUE(saw_v32);
  EXPECT_EQ(all_rows, 4 * 2 * 2);  // 4 models x 2 schemes x 2 contexts
  EXPECT_EQ(kind_rows, (1 + 3 + 2 + 1) * 2 * 2);
}

// Minimal XML well-formedness: balanced tags, attributes quoted, no stray '<' or '&'.
bool well_formed(const std::string& s, std::string* why, std::vector<std::string>* tags) {
  std::vector<std::string> stack;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '&') {
      size_t semi = s.find(';', i);
      std::string ent = semi == std::string::npos ? "" : s.substr(i, semi - i + 1);
      if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;" && ent != "&apos;") {
        *why = "bad entity at " + std::to_string(i);
        return false;
      }
      i = semi + 1;
      continue;
    }
    if (s[i] != '<') {
      ++i;
      continue;
    }
    if (s.compare(i, 5, "<?xml") == 0) {
      i = s.find("?>", i);
      if (i == std::string::npos) return *why = "unterminated <?xml", false;
      i += 2;
      continue;
    }
    // Find the end of the tag, skipping quoted attribute values.
    size_t j = i + 1;
    char quote = 0;
    for (; j < s.size(); ++j) {
      if (quote) {
        if (s[j] == quote)
          quote = 0;
        else if (s[j] == '<')
          return *why = "'<' inside an attribute", false;
      } else if (s[j] == '"' || s[j] == '\'') {
        quote = s[j];
      } else if (s[j] == '>') {
        break;
      } else if (s[j] == '<') {
        return *why = "'<' inside a tag at " + std::to_string(j), false;
      }
    }
    if (j >= s.size()) return *why = "unterminated tag", false;
    std::string tag = s.substr(i + 1, j - i - 1);
    if (tag.empty()) return *why = "empty tag", false;
    if (tag[0] == '/') {
      std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) return *why = "mismatched </" + name + ">", false;
      stack.pop_back();
    } else {
      bool self_closing = tag.back() == '/';
      std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
      tags->push_back(name);
      if (!self_closing) stack.push_back(name);
    }
    i = j + 1;
  }
  if (!stack.empty()) return *why = "unclosed <" + stack.back() + ">", false;
  return true;
}

TEST_F(KvCli, PlotWritesAValidSvg) {
  const std::string svg_path = (dir_ / "kv.svg").string();
  CliRun r = run({"--plot", svg_path, "--scheme", "bf16,official,f32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("plot written to"), std::string::npos);
  const std::string svg = slurp(svg_path);
  ASSERT_FALSE(svg.empty());
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  std::string why;
  std::vector<std::string> tags;
  ASSERT_TRUE(well_formed(svg, &why, &tags)) << why;
  ASSERT_FALSE(tags.empty());
  EXPECT_EQ(tags[0], "svg");
  // One polyline per model and scheme: 4 embedded models x 3 schemes.
  EXPECT_EQ(std::count(tags.begin(), tags.end(), "polyline"), 4 * 3);
  // Axis labels and a legend entry per series.
  EXPECT_NE(svg.find("context length (tokens, log scale"), std::string::npos);
  EXPECT_NE(svg.find("KV cache (GiB, log scale)"), std::string::npos);
  size_t legends = 0;
  for (size_t p = svg.find("class=\"legend\""); p != std::string::npos;
       p = svg.find("class=\"legend\"", p + 1))
    ++legends;
  EXPECT_EQ(legends, 4u * 3);
  for (const char* label : {"DeepSeek-V3.2 · bf16", "DeepSeek-V4-Flash · official",
                            "DeepSeek-V4-Pro · f32", "GQA-baseline · official"})
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  // Tick labels of the log x axis.
  for (const char* tick : {">1K<", ">1M<"}) EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  // No temp file is left next to the plot.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_))
    files += e.path().filename().string().rfind("kv.svg", 0) == 0;
  EXPECT_EQ(files, 1);

  // Names from paths are escaped.
  fs::path odd = dir_ / "a&b<c>.json";
  fs::copy_file(kConfigs + "llama3_8b.json", odd);
  const std::string svg2 = (dir_ / "odd.svg").string();
  CliRun r2 = run({odd.string(), "--plot", svg2, "--json"});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  std::vector<std::string> tags2;
  EXPECT_TRUE(well_formed(slurp(svg2), &why, &tags2)) << why;
  EXPECT_EQ(std::count(tags2.begin(), tags2.end(), "polyline"), 2);
}

TEST_F(KvCli, BadInputs) {
  expect_one_line_error({kConfigs + "no_such_config.json"}, "no_such_config.json");
  expect_one_line_error({dir_.string()}, "no config.json");
  expect_one_line_error({kConfigs + "bad_malformed.json"}, "malformed JSON at line");
  expect_one_line_error({kConfigs + "bad_not_object.json"}, "JSON object");
  expect_one_line_error({kConfigs + "bad_unknown_arch.json"}, "gpt_neox");
  expect_one_line_error({kConfigs + "bad_compress_ratio.json"}, "compress_ratios[2]");
  expect_one_line_error({"--ctx", "0"}, "--ctx");
  expect_one_line_error({"--ctx", "abc"}, "'abc'");
  expect_one_line_error({"--ctx", ""}, "--ctx");
  expect_one_line_error({"--ctx", "1,,2"}, "--ctx");
  expect_one_line_error({"--ctx=-5"}, "'-5'");
  expect_one_line_error({"--ctx", "1.5M"}, "'1.5M'");
  expect_one_line_error({"--ctx", "99999999999999999999"}, "too large");
  expect_one_line_error({"--scheme", "fp8"}, "unknown scheme 'fp8'");
  expect_one_line_error({"--scheme", "bf16,"}, "unknown scheme ''");
  expect_one_line_error({"--json", "--csv"}, "mutually exclusive");
  expect_one_line_error({"--plot", (dir_ / "missing_dir" / "x.svg").string()}, "--plot");
  // A config whose dims have no deployed layout: an error under `official` only.
  expect_one_line_error({kConfigs + "deepseek_v4_tiny.json", "--scheme", "official"},
                        "index_head_dim");
  EXPECT_EQ(run({kConfigs + "deepseek_v4_tiny.json", "--scheme", "bf16"}).exit_code, 0);
  // Sizes whose byte counts do not fit in 64 bits.
  expect_one_line_error(
      {kConfigs + "llama3_8b.json", "--ctx", "1000000000000000", "--scheme", "f32"}, "overflow");
  // Options CLI11 rejects: non-zero, not a crash (CLI11 prints its own usage text).
  CliRun bogus = run({"--bogus"});
  EXPECT_GT(bogus.exit_code, 0);
  EXPECT_LT(bogus.exit_code, 128);
}

}  // namespace
