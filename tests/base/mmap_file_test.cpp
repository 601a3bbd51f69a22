#include "base/mmap_file.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "base/aligned_buffer.h"
#include "base/cpu_features.h"

namespace dsv4 {
namespace {

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / (std::string("dsv4_base_") + name)).string();
}

TEST(MmapFile, AtomicWriteThenMap) {
  std::string p = temp_path("a.bin");
  std::vector<uint8_t> data(10000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  ASSERT_TRUE(write_file_atomic(p, data).ok());
  auto m = MmapFile::open(p);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  ASSERT_EQ(m->size(), data.size());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), m->data()));
  m->advise(AccessHint::sequential);
  m->advise(AccessHint::willneed, 4095, 3);
  auto s = read_file(p);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size(), data.size());
  std::filesystem::remove(p);
}

TEST(MmapFile, Errors) {
  auto missing = MmapFile::open("/nonexistent/dsv4/x.bin");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::not_found);
  EXPECT_NE(missing.status().message().find("/nonexistent/dsv4/x.bin"), std::string::npos);
  auto dir = MmapFile::open("/tmp");
  EXPECT_FALSE(dir.ok());
  EXPECT_FALSE(write_file_atomic("/nonexistent/dsv4/y.bin", {}).ok());
}

TEST(MmapFile, EmptyFile) {
  std::string p = temp_path("empty.bin");
  ASSERT_TRUE(write_file_atomic(p, {}).ok());
  auto m = MmapFile::open(p);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->size(), 0u);
  std::filesystem::remove(p);
}

TEST(AlignedBuffer, AlignedAndZeroed) {
  AlignedBuffer b(1000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
  for (size_t i = 0; i < b.size(); ++i) ASSERT_EQ(b.data()[i], 0);
  AlignedBuffer c = std::move(b);
  EXPECT_EQ(c.size(), 1000u);
  EXPECT_EQ(b.size(), 0u);
}

TEST(CpuFeatures, Consistent) {
  const auto& f = cpu_features();
  if (f.has_avx512_tier()) {
    EXPECT_TRUE(f.avx512f);
  }
  EXPECT_FALSE(f.summary().empty());
}

}  // namespace
}  // namespace dsv4
