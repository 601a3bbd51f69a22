// `dsv4 kv --measure MODEL_DIR`: real caches of the fixture models, predicted == allocated at
// every level of the JSON (total, parts, layer types), with a forward pass and with
// --no-compute, in both storage schemes; bad combinations are one-line errors.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_runner.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string fixture(const char* name) {
  return std::string(DSV4_TEST_DATA_DIR) + "/fixtures/" + name;
}

class KvMeasureCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "dsv4_kv_measure_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  dsv4::testing::CliRun run(std::vector<std::string> args) {
    args.insert(args.begin(), "kv");
    return dsv4::testing::run_dsv4(args, dir_);
  }
  fs::path dir_;
};

void expect_equal_everywhere(const json& j, size_t n_ctx) {
  ASSERT_EQ(j["contexts"].size(), n_ctx);
  EXPECT_TRUE(j["all_equal"].get<bool>());
  for (const json& c : j["contexts"]) {
    EXPECT_GT(c["predicted_bytes"].get<uint64_t>(), 0u);
    EXPECT_EQ(c["predicted_bytes"], c["allocated_bytes"]) << c.dump();
    EXPECT_GE(c["reserved_bytes"].get<uint64_t>(), c["allocated_bytes"].get<uint64_t>());
    for (const auto& [name, part] : c["parts"].items())
      EXPECT_EQ(part["predicted_bytes"], part["allocated_bytes"]) << name;
    uint64_t sum = 0;
    for (const json& k : c["layer_types"]) {
      EXPECT_EQ(k["predicted_bytes"], k["allocated_bytes"]) << k.dump();
      sum += k["allocated_bytes"].get<uint64_t>();
    }
    EXPECT_EQ(sum, c["allocated_bytes"].get<uint64_t>());
  }
}

TEST_F(KvMeasureCli, ForwardPassPredictedEqualsAllocated) {
  for (const char* name : {"tiny", "long", "wide"}) {
    for (const char* scheme : {"official", "f32"}) {
      auto r = run({"--measure", fixture(name), "--ctx", "1,3,4,5,127,128,129,300", "--scheme",
                    scheme, "--json"});
      ASSERT_EQ(r.exit_code, 0) << r.err;
      json j = json::parse(r.out, nullptr, false);
      ASSERT_FALSE(j.is_discarded()) << r.out;
      EXPECT_EQ(j["scheme"], scheme);
      expect_equal_everywhere(j, 8);
      // A forward pass ran: its working memory (attention workspace + chunk activations) is
      // reported for every context.
      for (const json& c : j["contexts"]) {
        EXPECT_GT(c["transient_bytes"].get<uint64_t>(), 0u) << c.dump();
      }
    }
  }
}

TEST_F(KvMeasureCli, NoComputeReachesLongContexts) {
  auto r = run({"--measure", fixture("long"), "--ctx", "1000,64K", "--no-compute", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["mode"], "synthetic");
  expect_equal_everywhere(j, 2);
  // The growing part of 64K tokens is what layout.h says: more than at 1000 tokens.
  EXPECT_GT(j["contexts"][1]["allocated_bytes"].get<uint64_t>(),
            j["contexts"][0]["allocated_bytes"].get<uint64_t>());
}

TEST_F(KvMeasureCli, TextOutputAndBadInput) {
  auto r = run({"--measure", fixture("tiny"), "--ctx", "130"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(equal)"), std::string::npos) << r.out;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--measure", dir_.string()},
        {"--measure", fixture("tiny"), "--scheme", "bf16"},
        {"--measure", fixture("tiny"), "--scheme", "f32,official"},
        {"--measure", fixture("tiny"), "--csv"},
        {"--no-compute"}}) {
    auto b = run(args);
    EXPECT_NE(b.exit_code, 0);
    EXPECT_EQ(b.out, "");
    EXPECT_EQ(b.err.rfind("dsv4: ", 0), 0u) << b.err;
  }
}

}  // namespace
