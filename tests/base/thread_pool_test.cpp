#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <numeric>
#include <vector>

namespace dsv4 {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (size_t n : {0u, 1u, 7u, 129u, 10007u}) {
      for (size_t grain : {1u, 16u, 1000u}) {
        std::vector<std::atomic<int>> hits(n + 5);
        pool.parallel_for(5, 5 + n, grain, [&](size_t b, size_t e, int t) {
          ASSERT_LT(t, threads);
          ASSERT_LE(b, e);
          for (size_t i = b; i < e; ++i) hits[i].fetch_add(1);
        });
        for (size_t i = 0; i < 5; ++i) EXPECT_EQ(hits[i].load(), 0);
        for (size_t i = 5; i < 5 + n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
      }
    }
  }
}

TEST(ThreadPool, ManyBackToBackJobs) {
  ThreadPool pool(2);
  std::atomic<long> sum{0};
  for (int rep = 0; rep < 2000; ++rep) {
    pool.parallel_for(0, 64, 1, [&](size_t b, size_t e, int) {
      long s = 0;
      for (size_t i = b; i < e; ++i) s += static_cast<long>(i);
      sum.fetch_add(s);
    });
  }
  EXPECT_EQ(sum.load(), 2000L * (63 * 64 / 2));
}

}  // namespace
}  // namespace dsv4
