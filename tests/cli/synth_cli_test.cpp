// `dsv4 synth` end to end: the tiny preset and a config file become checkpoints that `dsv4
// inspect` validates and `dsv4 run` runs; bad input (a non-empty directory, an invalid
// override, an unknown preset, a checkpoint larger than the disk) is refused with a message.
#include <gtest/gtest.h>

#include <filesystem>

#include "cli_runner.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using testing::CliRun;
using testing::run_dsv4;
using testing::slurp;

const fs::path kTiny = fs::path(DSV4_TEST_DATA_DIR) / "fixtures" / "tiny";

class SynthCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "dsv4_synth_cli_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  CliRun run(const std::vector<std::string>& args) { return run_dsv4(args, dir_); }

  fs::path dir_;
};

TEST_F(SynthCli, TinyPresetInspectsAndRuns) {
  const std::string out = (dir_ / "tiny").string();
  CliRun r = run({"synth", "--config", "tiny", "--out", out, "--seed", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + out + ": 123 tensors"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(fs::path(out) / "config.json"));

  CliRun i = run({"inspect", out});
  EXPECT_EQ(i.exit_code, 0) << i.err;
  EXPECT_NE(i.out.find("all 82 expected tensors present"), std::string::npos) << i.out;
  EXPECT_NE(i.out.find("layers.*.ffn.experts.*.w1.weight"), std::string::npos);

  CliRun g = run({"run", "-m", out, "--tokens", "1,2,3", "-n", "3", "-t", "1"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  EXPECT_NE(g.out.find("tokens: "), std::string::npos) << g.out;

  // The same directory again: refused without --force, replaced with it.
  CliRun again = run({"synth", "--config", "tiny", "--out", out});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("not empty"), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("--force"), std::string::npos) << again.err;
  CliRun forced =
      run({"synth", "--config", "tiny", "--out", out, "--force", "--shard-size", "512K"});
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_TRUE(fs::exists(fs::path(out) / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "model.safetensors"));
  EXPECT_EQ(run({"inspect", out}).exit_code, 0);
}

TEST_F(SynthCli, ConfigFileIsCopiedVerbatim) {
  const std::string out = (dir_ / "from_file").string();
  CliRun r = run({"synth", "--config", (kTiny / "config.json").string(), "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(slurp(fs::path(out) / "config.json"), slurp(kTiny / "config.json"));
  // With overrides, the written config says what was generated.
  const std::string small = (dir_ / "one_layer").string();
  CliRun o =
      run({"synth", "--config", kTiny.string(), "--layers", "1", "--vocab", "300", "--out", small});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  CliRun i = run({"inspect", small});
  EXPECT_EQ(i.exit_code, 0) << i.err;
  EXPECT_NE(i.out.find("1 layers, hidden 128, vocab 300"), std::string::npos) << i.out;
}

TEST_F(SynthCli, BadInputIsRefused) {
  const std::string out = (dir_ / "bad").string();
  CliRun experts =
      run({"synth", "--config", "flash", "--layers", "1", "--experts", "3", "--out", out});
  EXPECT_EQ(experts.exit_code, 2);
  EXPECT_NE(experts.err.find("--experts: 3 is fewer than num_experts_per_tok (6)"),
            std::string::npos)
      << experts.err;
  CliRun preset = run({"synth", "--config", "no-such-preset", "--out", out});
  EXPECT_EQ(preset.exit_code, 2);
  EXPECT_NE(preset.err.find("neither a config file nor a preset"), std::string::npos) << preset.err;
  CliRun shard = run({"synth", "--config", "tiny", "--shard-size", "lots", "--out", out});
  EXPECT_EQ(shard.exit_code, 2);
  // Two V4-Pro layers with 65536 experts each and a 60M-token vocabulary: ~6 TiB, more than
  // any test machine's disk, so the free-space check refuses before anything is created.
  CliRun huge = run({"synth", "--config", "pro", "--layers", "2", "--experts", "65536", "--vocab",
                     "60000000", "--out", out});
  EXPECT_EQ(huge.exit_code, 1);
  EXPECT_NE(huge.err.find("is free there"), std::string::npos) << huge.err;
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace dsv4
