// `dsv4 inspect`, `dsv4 run` and `dsv4 check` on the reference fixtures, and their bad-input
// paths: a checkpoint with a missing or mis-shaped tensor is named and exits non-zero.
#include <gtest/gtest.h>

#include <filesystem>

#include "cli_runner.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using testing::CliRun;
using testing::run_dsv4;

const fs::path kTiny = fs::path(DSV4_TEST_DATA_DIR) / "fixtures" / "tiny";

class ModelCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "dsv4_model_cli_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  CliRun run(const std::vector<std::string>& args) { return run_dsv4(args, dir_); }

  // A copy of the tiny fixture whose checkpoint is rewritten through `edit`, which may drop
  // or change tensors (return false to drop one).
  fs::path edited_copy(
      const std::string& name,
      const std::function<bool(const formats::TensorView&, std::vector<int64_t>&)>& edit) {
    fs::path out = dir_ / name;
    fs::create_directories(out);
    fs::copy_file(kTiny / "config.json", out / "config.json");
    auto src = formats::SafetensorsFile::open((kTiny / "model.safetensors").string());
    EXPECT_TRUE(src.ok());
    formats::SafetensorsWriter w;
    for (const formats::TensorView& t : src->tensors()) {
      std::vector<int64_t> shape = t.shape;
      if (!edit(t, shape)) continue;
      EXPECT_TRUE(w.add(t.name, t.dtype, shape, {t.data(), t.size_bytes()}).ok());
    }
    EXPECT_TRUE(w.write((out / "model.safetensors").string()).ok());
    return out;
  }

  fs::path dir_;
};

TEST_F(ModelCli, InspectFixture) {
  CliRun r = run({"inspect", kTiny.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("layers.*.attn.wq_a.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("f8_e4m3"), std::string::npos);
  EXPECT_NE(r.out.find("all "), std::string::npos);
  EXPECT_EQ(r.err, "");
}

TEST_F(ModelCli, InspectNamesMissingTensor) {
  fs::path d = edited_copy("missing", [](const formats::TensorView& t, std::vector<int64_t>&) {
    return t.name != "layers.1.attn.wkv.weight";
  });
  CliRun r = run({"inspect", d.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("layers.1.attn.wkv.weight"), std::string::npos) << r.err;
  // The forward pass refuses it too, naming the tensor.
  CliRun r2 = run({"run", "-m", d.string(), "--tokens", "1,2", "-n", "1"});
  EXPECT_GT(r2.exit_code, 0);
  EXPECT_LT(r2.exit_code, 128);
  EXPECT_NE(r2.err.find("layers.1.attn.wkv.weight"), std::string::npos) << r2.err;
}

TEST_F(ModelCli, InspectNamesMisShapedTensor) {
  fs::path d =
      edited_copy("misshaped", [](const formats::TensorView& t, std::vector<int64_t>& shape) {
        if (t.name == "layers.0.attn.attn_sink") shape = {1, shape[0]};
        return true;
      });
  CliRun r = run({"inspect", d.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("layers.0.attn.attn_sink"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("expected [2]"), std::string::npos) << r.err;
}

TEST_F(ModelCli, InspectUnexpectedTensorAndBadDirs) {
  EXPECT_NE(run({"inspect", (dir_ / "nope").string()}).exit_code, 0);
  CliRun r = run({"inspect", (dir_ / "nope").string()});
  EXPECT_EQ(r.err.rfind("dsv4: ", 0), 0u) << r.err;
}

TEST_F(ModelCli, RunGreedyIsDeterministic) {
  CliRun a = run({"run", "-m", kTiny.string(), "--tokens", "5,6,7", "-n", "8", "-t", "1"});
  CliRun b = run({"run", "-m", kTiny.string(), "--tokens", "5,6,7", "-n", "8", "-t", "2"});
  CliRun c = run({"run", "-m", kTiny.string(), "--tokens", "5,6,7", "-n", "8", "-t", "2", "--pin"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.out, c.out);  // pinned threads compute the same bits
  EXPECT_NE(c.err.find("2 threads (pinned)"), std::string::npos) << c.err;
  EXPECT_EQ(b.err.find("(pinned)"), std::string::npos) << b.err;
  EXPECT_NE(a.out.find("tokens: "), std::string::npos);
}

TEST_F(ModelCli, RunBadInput) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"run", "-m", kTiny.string(), "--tokens", "1,x"},
        std::vector<std::string>{"run", "-m", kTiny.string(), "--tokens", ""},
        std::vector<std::string>{"run", "-m", kTiny.string(), "--tokens", "1,99999"},
        std::vector<std::string>{"run", "-m", kTiny.string(), "--tokens", "1", "-n", "-3"},
        std::vector<std::string>{"run", "-m", (dir_ / "none").string(), "--tokens", "1"}}) {
    CliRun r = run(args);
    EXPECT_GT(r.exit_code, 0) << args[4];
    EXPECT_LT(r.exit_code, 128);
    // Progress lines may precede it; the error is one line starting "dsv4: ".
    EXPECT_TRUE(r.err.rfind("dsv4: ", 0) == 0 || r.err.find("\ndsv4: ") != std::string::npos)
        << r.err;
  }
}

TEST_F(ModelCli, CheckFixturePasses) {
  CliRun r = run({"check", kTiny.string(), "-t", "2"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("PASS"), std::string::npos);
}

}  // namespace
}  // namespace dsv4
