#include "base/result.h"

#include <gtest/gtest.h>

namespace dsv4 {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return invalid_argument("value must be positive, got " + std::to_string(v));
  return v;
}

Result<int> doubled(int v) {
  DSV4_ASSIGN_OR_RETURN(int x, parse_positive(v));
  return 2 * x;
}

Status check_even(int v) {
  DSV4_RETURN_IF_ERROR(parse_positive(v).status());
  if (v % 2) return invalid_argument("odd");
  return ok_status();
}

TEST(Result, ValueAndError) {
  auto r = doubled(21);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 42);
  auto e = doubled(-1);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), ErrorCode::invalid_argument);
  EXPECT_EQ(e.status().message(), "value must be positive, got -1");
  EXPECT_EQ(e.status().to_string(), "invalid_argument: value must be positive, got -1");
}

TEST(Result, StatusPropagation) {
  EXPECT_TRUE(check_even(4).ok());
  EXPECT_EQ(check_even(3).message(), "odd");
  EXPECT_EQ(check_even(0).code(), ErrorCode::invalid_argument);
  EXPECT_EQ(check_even(0).with_context("reading x").message(),
            "reading x: value must be positive, got 0");
}

TEST(ResultDeathTest, ValueOfErrorIsABug) {
  auto e = doubled(-1);
  EXPECT_DEATH((void)e.value(), "check failed");
}

}  // namespace
}  // namespace dsv4
