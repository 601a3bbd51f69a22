#include "base/units.h"

#include <gtest/gtest.h>

namespace dsv4 {
namespace {

TEST(Units, ParseCount) {
  EXPECT_EQ(*parse_count("4096"), 4096u);
  EXPECT_EQ(*parse_count("128K"), 131072u);
  EXPECT_EQ(*parse_count("160k"), 163840u);
  EXPECT_EQ(*parse_count("1M"), 1048576u);
  EXPECT_EQ(*parse_count("2G"), 2147483648u);
  for (const char* bad :
       {"", "K", "-1", "1.5M", "12x", "0", " 1", "99999999999999999999", "18014398509481984G"}) {
    EXPECT_FALSE(parse_count(bad).ok()) << bad;
  }
  EXPECT_EQ(*parse_count("0", /*allow_zero=*/true), 0u);
}

TEST(Units, ParseList) {
  auto v = parse_count_list("4096,131072,1M");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, (std::vector<uint64_t>{4096, 131072, 1048576}));
  EXPECT_FALSE(parse_count_list("1,,2").ok());
  EXPECT_FALSE(parse_count_list("1,").ok());
}

TEST(Units, Format) {
  EXPECT_EQ(format_count(131072), "128K");
  EXPECT_EQ(format_count(1048576), "1M");
  EXPECT_EQ(format_count(163840), "160K");
  EXPECT_EQ(format_count(1000), "1000");
  EXPECT_EQ(format_bytes(584), "584 B");
  EXPECT_EQ(format_bytes(68.625 * 1024 * 1024 * 1024), "68.625 GiB");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
}

}  // namespace
}  // namespace dsv4
