// Runs the real `dsv4 bench` binary on small contexts: --json (parsed; every row's figures are
// positive, ordered and consistent with the V4-Flash / V3.2 dims the rows claim), --plot (the SVG
// is checked for well-formedness), --csv (header and field counts), the table, the model mode on
// a tiny synthetic checkpoint, and the bad-input paths (one "dsv4: ..." line, non-zero exit).
// Timing values themselves are not asserted beyond being positive: they depend on the machine.
// BenchProbes checks the roofline probes (kernels/probe.h) behind the floors directly, for every
// ISA variant this CPU supports.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "cli_runner.h"
#include "kernels/dispatch.h"
#include "kernels/probe.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using dsv4::testing::CliRun;
using dsv4::testing::slurp;

class BenchCli : public dsv4::testing::CliTest {
 protected:
  BenchCli() : CliTest("bench") {}
};

const json* find_row(const json& root, const std::string& layer, uint64_t ctx) {
  for (const json& r : root["rows"])
    if (r["layer"] == layer && r["context"] == ctx) return &r;
  ADD_FAILURE() << "no row " << layer << " @ " << ctx;
  return nullptr;
}

// Tag names in document order if `s` is well-formed XML as far as an SVG needs (balanced
// elements, quoted attributes, known entities); empty plus *why otherwise.
std::vector<std::string> xml_tags(const std::string& s, std::string* why) {
  std::vector<std::string> open, all;
  size_t i = 0;
  while ((i = s.find_first_of("<&", i)) != std::string::npos) {
    if (s[i] == '&') {
      const size_t semi = s.find(';', i);
      const std::string ent = semi == std::string::npos ? "" : s.substr(i, semi - i + 1);
      if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;") {
        *why = "bad entity at " + std::to_string(i);
        return {};
      }
      i = semi + 1;
      continue;
    }
    if (s.compare(i, 2, "<?") == 0) {
      const size_t e = s.find("?>", i);
      if (e == std::string::npos) return *why = "unterminated <?", std::vector<std::string>{};
      i = e + 2;
      continue;
    }
    size_t j = i + 1;
    char quote = 0;
    while (j < s.size() && (quote || s[j] != '>')) {
      if (quote && s[j] == quote)
        quote = 0;
      else if (!quote && (s[j] == '"' || s[j] == '\''))
        quote = s[j];
      else if (s[j] == '<')
        return *why = "'<' inside a tag at " + std::to_string(j), std::vector<std::string>{};
      ++j;
    }
    if (j >= s.size()) return *why = "unterminated tag", std::vector<std::string>{};
    std::string body = s.substr(i + 1, j - i - 1);
    const bool closing = !body.empty() && body[0] == '/';
    const bool empty = !body.empty() && body.back() == '/';
    std::string name = body.substr(closing ? 1 : 0);
    name = name.substr(0, name.find_first_of(" \t\n/"));
    if (closing) {
      if (open.empty() || open.back() != name)
        return *why = "unbalanced </" + name + ">", std::vector<std::string>{};
      open.pop_back();
    } else {
      all.push_back(name);
      if (!empty) open.push_back(name);
    }
    i = j + 1;
  }
  if (!open.empty()) return *why = "unclosed <" + open.back() + ">", std::vector<std::string>{};
  return all;
}

size_t count_fields(const std::string& line) {
  size_t n = 1;
  bool quoted = false;
  for (char c : line) {
    if (c == '"') quoted = !quoted;
    if (c == ',' && !quoted) ++n;
  }
  return n;
}

// The unquoted fields of a CSV line (the bench quotes only text run facts, which no check
// here reads).
std::vector<std::string> fields_of(const std::string& line) {
  std::vector<std::string> v(1);
  bool quoted = false;
  for (char c : line) {
    if (c == '"') quoted = !quoted;
    if (c == ',' && !quoted)
      v.emplace_back();
    else
      v.back().push_back(c);
  }
  return v;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

// probe_read of every variant is the plain sum of the 64-bit words, on awkward lengths (multiples
// of its 256-byte step) and values that carry across lanes.
TEST(BenchProbes, ReadSumsEveryWord) {
  using namespace dsv4::kernels;
  dsv4::AlignedBuffer buf(64 * 1024 + 256);
  uint64_t* w = buf.as<uint64_t>();
  for (size_t i = 0; i < buf.size() / 8; ++i)
    w[i] = 0xFFFFFFFFFFFFFFF0ull + i * 0x9E3779B97F4A7C15ull;
  for (size_t n : {size_t{256}, size_t{768}, size_t{4352}, buf.size()}) {
    uint64_t expect = 0;
    for (size_t i = 0; i < n / 8; ++i) expect += w[i];
    for (Isa isa : supported_isas()) {
      uint64_t got = 0;
      switch (isa) {
        case Isa::ref:
          got = probe_read_ref(buf.data(), n);
          break;
        case Isa::avx2:
          got = probe_read_avx2(buf.data(), n);
          break;
        case Isa::avx512:
          got = probe_read_avx512(buf.data(), n);
          break;
      }
      EXPECT_EQ(got, expect) << isa_name(isa) << " n=" << n;
    }
  }
}

// The dot probes report iters x chains x (MACs per instruction) and really perform them: the
// int8 probe multiplies 1 x 1, so its checksum counts the products one by one.
TEST(BenchProbes, DotProbesCountTheirWork) {
  using namespace dsv4::kernels;
  constexpr uint64_t kIters = 1000;
  struct Lanes {
    size_t i8, bf16, f32;  // MACs per chain and round
  };
  for (Isa isa : supported_isas()) {
    const Lanes l = isa == Isa::avx512 ? Lanes{64, 32, 16}
                    : isa == Isa::avx2 ? Lanes{32, 16, 8}
                                       : Lanes{64, 64, 64};
    uint64_t sink = 0, macs = 0;
    macs = isa == Isa::avx512 ? probe_dot_i8_avx512(kIters, &sink)
           : isa == Isa::avx2 ? probe_dot_i8_avx2(kIters, &sink)
                              : probe_dot_i8_ref(kIters, &sink);
    EXPECT_EQ(macs, kIters * kProbeChains * l.i8) << isa_name(isa);
    EXPECT_EQ(sink, macs) << isa_name(isa);
    sink = 0;
    macs = isa == Isa::avx512 ? probe_dot_bf16_avx512(kIters, &sink)
           : isa == Isa::avx2 ? probe_dot_bf16_avx2(kIters, &sink)
                              : probe_dot_bf16_ref(kIters, &sink);
    EXPECT_EQ(macs, kIters * kProbeChains * l.bf16) << isa_name(isa);
    EXPECT_GE(sink, static_cast<uint64_t>(kProbeChains))
        << isa_name(isa);  // accumulators start at 1
    sink = 0;
    macs = isa == Isa::avx512 ? probe_fma_f32_avx512(kIters, &sink)
           : isa == Isa::avx2 ? probe_fma_f32_avx2(kIters, &sink)
                              : probe_fma_f32_ref(kIters, &sink);
    EXPECT_EQ(macs, kIters * kProbeChains * l.f32) << isa_name(isa);
    EXPECT_GE(sink, static_cast<uint64_t>(kProbeChains)) << isa_name(isa);
  }
}

TEST_F(BenchCli, JsonRowsFloorsStackAndPlot) {
  const std::string svg_path = (dir_ / "decode.svg").string();
  CliRun r = run({"--layer", "all", "--ctx", "1K,2K", "--reps", "2", "--warmup", "0",
                  "--prefill-tokens", "16", "--threads", "2", "--json", "--plot", svg_path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out.substr(0, 300);

  // Run facts.
  const json& meta = j["meta"];
  EXPECT_EQ(meta["threads"], 2);
  for (const char* k : {"commit", "compiler", "build", "cpu", "kernel_isa", "loadavg_start",
                        "loadavg_end", "date_utc"}) {
    ASSERT_TRUE(meta.contains(k)) << k;
    EXPECT_FALSE(meta[k].get<std::string>().empty()) << k;
  }
  EXPECT_TRUE(meta["pinned"].is_boolean());
  const std::string isa = meta["kernel_isa"];
  EXPECT_TRUE(isa == "ref" || isa == "avx2" || isa == "avx512") << isa;

  // Floors measured in this run.
  const json& f = j["floors"];
  for (const char* k : {"dram_read_gbps", "int8_dot_gmacs", "bf16_dot_gmacs", "f32_fma_gmacs"})
    EXPECT_GT(f[k].get<double>(), 0) << k;
  EXPECT_GE(f["dram_probe_buffer_bytes"].get<double>(), 128.0 * (1 << 20));
  // The machine-state reading: the real indexer kernel, some share of the int8 probe (a kernel
  // with operand loads, expansion and scaling cannot beat the register-only probe by much).
  EXPECT_GT(f["indexer_kernel_gmacs"].get<double>(), 0);
  EXPECT_NEAR(f["indexer_kernel_of_int8_probe"].get<double>(),
              f["indexer_kernel_gmacs"].get<double>() / f["int8_dot_gmacs"].get<double>(), 1e-9);

  // Rows: 4 kinds x 2 contexts, with the V4-Flash / V3.2 geometry.
  ASSERT_EQ(j["rows"].size(), 8u);
  for (const json& row : j["rows"]) {
    const std::string what = row["layer"].get<std::string>() + "@" + row["context"].dump();
    const json& d = row["decode"];
    EXPECT_GT(d["ms_mean"].get<double>(), 0) << what;
    EXPECT_LE(d["ms_min"].get<double>(), d["ms_mean"].get<double>() + 1e-12) << what;
    EXPECT_GE(d["ms_max"].get<double>(), d["ms_mean"].get<double>() - 1e-12) << what;
    // Two reps: the median is their mean.
    EXPECT_NEAR(d["ms_median"].get<double>(), d["ms_mean"].get<double>(),
                1e-9 * d["ms_mean"].get<double>())
        << what;
    EXPECT_EQ(d["reps"], 2) << what;
    EXPECT_GT(row["ratio_to_floor"].get<double>(), 0) << what;
    EXPECT_GT(row["indexer_kernel_gmacs_during"].get<double>(), 0) << what;
    EXPECT_GT(row["kv_bytes"].get<double>(), 0) << what;
    EXPECT_GT(row["transient_bytes"].get<double>(), 0) << what;
    // ratio_to_floor = mean / max(memory floor, compute floor).
    const json& fl = row["decode_floor"];
    const double floor_ms =
        std::max(fl["memory_floor_ms"].get<double>(), fl["compute_floor_ms"].get<double>());
    EXPECT_NEAR(row["ratio_to_floor"].get<double>(), d["ms_mean"].get<double>() / floor_ms,
                1e-9 * row["ratio_to_floor"].get<double>())
        << what;
    // The memory floor is the DRAM bytes at the measured rate.
    EXPECT_NEAR(fl["memory_floor_ms"].get<double>(),
                fl["dram_bytes"].get<double>() / (f["dram_read_gbps"].get<double>() * 1e9) * 1e3,
                1e-9 * fl["memory_floor_ms"].get<double>() + 1e-15)
        << what;
  }
  for (uint64_t ctx : {uint64_t{1024}, uint64_t{2048}}) {
    const json* swa = find_row(j, "swa", ctx);
    const json* csa = find_row(j, "csa", ctx);
    const json* hca = find_row(j, "hca", ctx);
    const json* mla = find_row(j, "mla", ctx);
    ASSERT_TRUE(swa && csa && hca && mla);
    // V4-Flash: window 128, CSA ratio 4 with index_topk 512, HCA ratio 128; 64 heads x 512.
    EXPECT_EQ((*swa)["keys_attended"], 128u);
    EXPECT_EQ((*csa)["entries"], ctx / 4);
    EXPECT_EQ((*csa)["keys_attended"], 128 + std::min<uint64_t>(512, ctx / 4));
    EXPECT_EQ((*hca)["entries"], ctx / 128);
    EXPECT_EQ((*hca)["keys_attended"], 128 + ctx / 128);
    const double attn_macs = 64.0 * 512 * (*csa)["keys_attended"].get<double>();
    EXPECT_EQ((*csa)["decode_floor"]["bf16_macs"].get<double>(), attn_macs);
    // The indexer scores every entry (64 heads x 128 dims) only when more than 512 exist.
    EXPECT_EQ((*csa)["decode_floor"]["int8_macs"].get<double>(),
              ctx / 4 > 512 ? static_cast<double>(ctx / 4) * 64 * 128 : 0.0);
    // Dense MLA: 576 bf16 dims per token, 128 heads, every token.
    EXPECT_EQ((*mla)["kv_bytes"], ctx * 576 * 2);
    EXPECT_EQ((*mla)["decode_floor"]["bf16_macs"].get<double>(), 128.0 * 576 * ctx);
    EXPECT_TRUE((*mla)["prefill"].is_null());
    for (const json* v4 : {swa, csa, hca}) {
      ASSERT_TRUE((*v4)["prefill"].is_object());
      EXPECT_EQ((*v4)["prefill"]["tokens"], 16);
      EXPECT_GT((*v4)["prefill"]["tokens_per_s"].get<double>(), 0);
      EXPECT_GT((*v4)["prefill_ratio_to_floor"].get<double>(), 0);
    }
  }
  // KV bytes grow with the context for every kind but SWA (a fixed window).
  EXPECT_GT((*find_row(j, "csa", 2048))["kv_bytes"], (*find_row(j, "csa", 1024))["kv_bytes"]);
  EXPECT_EQ((*find_row(j, "swa", 2048))["kv_bytes"], (*find_row(j, "swa", 1024))["kv_bytes"]);

  // Whole stack = 2 SWA + 21 CSA + 20 HCA rows; V3.2 = 61 MLA rows.
  ASSERT_EQ(j["stack"].size(), 2u);
  for (const json& s : j["stack"]) {
    const uint64_t ctx = s["context"];
    const json& v4 = s["v4_flash"];
    EXPECT_EQ(v4["layers"]["swa"], 2);
    EXPECT_EQ(v4["layers"]["csa"], 21);
    EXPECT_EQ(v4["layers"]["hca"], 20);
    const double expect = 2 * (*find_row(j, "swa", ctx))["decode"]["ms_mean"].get<double>() +
                          21 * (*find_row(j, "csa", ctx))["decode"]["ms_mean"].get<double>() +
                          20 * (*find_row(j, "hca", ctx))["decode"]["ms_mean"].get<double>();
    EXPECT_NEAR(v4["decode_ms"].get<double>(), expect, 1e-9 * expect);
    EXPECT_EQ(s["v32_dense_mla"]["layers"], 61);
    EXPECT_NEAR(s["v4_speedup_vs_mla"].get<double>(),
                s["v32_dense_mla"]["decode_ms"].get<double>() / v4["decode_ms"].get<double>(),
                1e-9 * s["v4_speedup_vs_mla"].get<double>());
  }
  // Weight-streaming floor: the routed-expert part is 43 layers x 6 experts x 3 matrices of
  // 2048 x 4096 FP4 (half a byte each) + one ue8m0 byte per 32 values.
  const json& w = j["weight_streaming_floor"];
  const double routed = 43.0 * 6 * 3 * (2048.0 * 4096 / 2 + 2048.0 * 4096 / 32);
  EXPECT_EQ(w["parts"]["routed experts, 6 of 256 per layer (FP4)"].get<double>(), routed);
  EXPECT_GT(w["bytes_per_token"].get<double>(), routed);
  EXPECT_GT(w["floor_ms"].get<double>(), 0);
  // With two CSA contexts the growth target is reported.
  bool growth = false;
  for (const json& t : j["targets"])
    growth = growth || t["target"].get<std::string>().find("linearly") != std::string::npos;
  EXPECT_TRUE(growth);

  // The plot: well-formed, one measured and one floor polyline per kind, log axes labelled.
  const std::string svg = slurp(svg_path);
  std::string why;
  const std::vector<std::string> tags = xml_tags(svg, &why);
  ASSERT_FALSE(tags.empty()) << why;
  EXPECT_EQ(tags[0], "svg");
  EXPECT_EQ(std::count(tags.begin(), tags.end(), "polyline"), 8);
  for (const char* text : {"context (tokens, log scale", "ms per decode step (log scale)", ">1K<",
                           ">2K<", "CSA", "HCA", "SWA", "MLA"})
    EXPECT_NE(svg.find(text), std::string::npos) << text;
}

TEST_F(BenchCli, CsvHeaderAndRows) {
  CliRun r = run({"--layer", "csa,hca", "--ctx", "1K", "--reps", "1", "--warmup", "0",
                  "--prefill-tokens", "0", "--csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;  // header + csa + hca; no stack without swa
  EXPECT_EQ(lines[0].rfind("layer,context,entries,keys_attended,kv_bytes,transient_bytes,"
                           "decode_ms_mean,",
                           0),
            0u);
  EXPECT_NE(lines[0].find(",ratio_to_floor,"), std::string::npos);
  EXPECT_NE(lines[0].find(",commit,compiler,cpu,"), std::string::npos);
  const size_t n = count_fields(lines[0]);
  for (size_t i = 1; i < lines.size(); ++i) EXPECT_EQ(count_fields(lines[i]), n) << lines[i];
  EXPECT_EQ(lines[1].rfind("csa,1024,256,", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("hca,1024,8,", 0), 0u) << lines[2];
}

// The whole-stack lines share the rows' header: every field lands in its named column (they
// were one column short once a column was added to the rows).
TEST_F(BenchCli, CsvStackLinesLineUpWithTheHeader) {
  CliRun r = run({"--layer", "all", "--ctx", "1K", "--reps", "1", "--warmup", "0",
                  "--prefill-tokens", "4", "--threads", "2", "--csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 7u) << r.out;  // header + 4 rows + 2 stack lines
  const std::vector<std::string> head = fields_of(lines[0]);
  auto col = [&](const char* name) {
    const auto it = std::find(head.begin(), head.end(), name);
    EXPECT_NE(it, head.end()) << name;
    return static_cast<size_t>(it - head.begin());
  };
  int stack_lines = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::vector<std::string> f = fields_of(lines[i]);
    ASSERT_EQ(f.size(), head.size()) << lines[i];
    if (f[0].rfind("stack:", 0) != 0) continue;
    ++stack_lines;
    // decode_tokens_per_s = 1000 / decode_ms_mean, and the run facts in their columns.
    const double ms = std::stod(f[col("decode_ms_mean")]);
    const double tps = std::stod(f[col("decode_tokens_per_s")]);
    EXPECT_NEAR(tps, 1000.0 / ms, 1e-3 * tps + 1e-3) << lines[i];
    EXPECT_EQ(f[col("threads")], "2") << lines[i];
    EXPECT_GT(std::stod(f[col("ratio_to_floor")]), 0) << lines[i];
    EXPECT_FALSE(f[col("kernel_isa")].empty()) << lines[i];
  }
  EXPECT_EQ(stack_lines, 2);
}

// --runs: every run is a full layer-mode document, and the summary is computed from them.
TEST_F(BenchCli, RunsSummarizeEveryRun) {
  CliRun r = run({"--layer", "swa,csa", "--ctx", "1K,2K", "--reps", "1", "--warmup", "0",
                  "--prefill-tokens", "0", "--threads", "2", "--runs", "3", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["mode"], "layer-runs");
  ASSERT_EQ(j["runs"].size(), 3u);
  for (const json& run : j["runs"]) {
    EXPECT_EQ(run["mode"], "layer");
    EXPECT_GT(run["floors"]["int8_dot_gmacs"].get<double>(), 0);
    ASSERT_EQ(run["rows"].size(), 4u);
  }
  const json& sum = j["summary"];
  EXPECT_EQ(sum["runs"], 3);
  ASSERT_EQ(sum["rows"].size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const json& row = sum["rows"][i];
    std::vector<double> ms;
    for (const json& run : j["runs"]) {
      EXPECT_EQ(run["rows"][i]["layer"], row["layer"]);
      ms.push_back(run["rows"][i]["decode"]["ms_mean"].get<double>());
    }
    std::sort(ms.begin(), ms.end());
    const json& d = row["decode_ms_mean"];
    EXPECT_DOUBLE_EQ(d["min"].get<double>(), ms[0]);
    EXPECT_DOUBLE_EQ(d["median"].get<double>(), ms[1]);
    EXPECT_DOUBLE_EQ(d["max"].get<double>(), ms[2]);
    EXPECT_GT(row["state"]["median"].get<double>(), 0);
  }
  // Each target's met_runs are exactly the runs whose own target says met.
  ASSERT_FALSE(sum["targets"].empty());
  for (size_t t = 0; t < sum["targets"].size(); ++t) {
    std::vector<int> met;
    for (size_t k = 0; k < 3; ++k) {
      const json& tk = j["runs"][k]["targets"][t];
      EXPECT_EQ(tk["target"], sum["targets"][t]["target"]);
      if (tk["met"].get<bool>()) met.push_back(static_cast<int>(k) + 1);
    }
    EXPECT_EQ(sum["targets"][t]["met_runs"].get<std::vector<int>>(), met);
    EXPECT_EQ(sum["targets"][t]["met"].get<size_t>(), met.size());
  }

  CliRun table = run({"--layer", "swa", "--ctx", "1K,2K", "--reps", "1", "--warmup", "0",
                      "--prefill-tokens", "0", "--runs", "2"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  for (const char* text : {"dsv4 bench: 2 runs", "median [min-max] over the runs", " of 2 runs",
                           "each run at 2K: ratio (state)"})
    EXPECT_NE(table.out.find(text), std::string::npos) << text << "\n" << table.out;
  // The per-run ratios at the largest context are the ones the summary's range is taken over.
  std::string lo, hi;
  std::vector<std::string> per_run;
  const std::regex summary_line(R"(^swa\s+2K\s+\S+\s+\[\S+\]\s+\S+\s+\[([0-9.]+)-([0-9.]+)\])");
  const std::regex run_line(R"(^([12])\s+([0-9.]+) \([0-9]+%\)$)");
  for (const std::string& line : lines_of(table.out)) {
    std::smatch m;
    if (std::regex_search(line, m, summary_line)) {
      lo = m[1];
      hi = m[2];
    } else if (std::regex_match(line, m, run_line)) {
      per_run.push_back(m[2]);
    }
  }
  ASSERT_EQ(per_run.size(), 2u) << table.out;
  std::sort(per_run.begin(), per_run.end(),
            [](const std::string& a, const std::string& b) { return std::stod(a) < std::stod(b); });
  EXPECT_EQ(per_run.front(), lo) << table.out;
  EXPECT_EQ(per_run.back(), hi) << table.out;
  CliRun csv = run({"--layer", "swa", "--ctx", "1K", "--reps", "1", "--warmup", "0",
                    "--prefill-tokens", "0", "--runs", "2", "--csv"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  const auto lines = lines_of(csv.out);
  ASSERT_EQ(lines.size(), 3u) << csv.out;  // one header, one row per run (no stack: swa only)
  EXPECT_EQ(lines[0].rfind("run,layer,context,", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1].rfind("1,swa,1024,", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("2,swa,1024,", 0), 0u) << lines[2];
}

TEST_F(BenchCli, TableNamesFloorsAndWeightStreaming) {
  CliRun r = run({"--layer", "swa", "--ctx", "1K", "--reps", "1", "--warmup", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* text : {"floors, measured now on", "DRAM read", "int8 dot", "bf16 dot",
                           "weight-streaming floor", "commit", "swa    1K",
                           "state: the indexer "
                           "kernel on cached keys"})
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
}

TEST_F(BenchCli, ModelModeOnTinyCheckpoint) {
  const std::string model = (dir_ / "tiny").string();
  CliRun s = dsv4::testing::run_dsv4({"synth", "--config", "tiny", "--out", model}, dir_);
  ASSERT_EQ(s.exit_code, 0) << s.err;
  CliRun r = run({"--model", model, "--ctx", "16,40", "--decode", "3", "--reps", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out.substr(0, 300);
  EXPECT_EQ(j["mode"], "model");
  ASSERT_EQ(j["rows"].size(), 2u);
  EXPECT_EQ(j["rows"][0]["prefill"]["new_tokens"], 16);
  EXPECT_EQ(j["rows"][1]["prefill"]["new_tokens"], 24);
  for (const json& row : j["rows"]) {
    EXPECT_EQ(row["decode"]["tokens"], 6);  // 3 per rep x 2 reps
    EXPECT_GT(row["decode"]["tokens_per_s"].get<double>(), 0);
    EXPECT_GT(row["prefill"]["tokens_per_s"].get<double>(), 0);
    EXPECT_GT(row["ratio_to_floor"].get<double>(), 0);
  }
}

TEST_F(BenchCli, BadArgumentsGiveOneLine) {
  expect_one_line_error({"--layer", "mlp"}, "--layer");
  expect_one_line_error({"--ctx", "0"}, "--ctx");
  expect_one_line_error({"--ctx", "4K,abc"}, "--ctx");
  expect_one_line_error({"--ctx", "2M"}, "max_position_embeddings");
  expect_one_line_error({"--reps", "0"}, "--reps");
  expect_one_line_error({"--runs", "0"}, "--runs");
  expect_one_line_error({"--model", dir_.string(), "--runs", "2"}, "--runs");
  expect_one_line_error({"--warmup", "-1"}, "--warmup");
  expect_one_line_error({"--threads", "-2"}, "--threads");
  expect_one_line_error({"--prefill-tokens", "-1"}, "--prefill-tokens");
  expect_one_line_error({"--json", "--csv"}, "mutually exclusive");
  expect_one_line_error({"--model", (dir_ / "no-such-model").string()}, "no-such-model");
  expect_one_line_error({"--model", dir_.string(), "--layer", "csa"}, "--layer");
  expect_one_line_error(
      {"--layer", "swa", "--ctx", "1K", "--plot", (dir_ / "missing" / "x.svg").string()}, "--plot");
}

}  // namespace
