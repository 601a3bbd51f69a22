#include "base/thread_pool.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstring>
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

// pin: every thread, the caller included, runs on its own allowed CPU (distinct while there are
// enough), and the caller gets its old affinity back afterwards.
TEST(ThreadPool, PinnedThreadsStayOnTheirCpus) {
  cpu_set_t before;
  CPU_ZERO(&before);
  ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(before), &before), 0);
  const int n_allowed = CPU_COUNT(&before);
  {
    ThreadPool pool(3, true);
    if (!pool.pinned()) GTEST_SKIP() << "this system refuses thread affinity";
    std::vector<int> cpus;
    for (int t = 0; t < 3; ++t) {
      const int c = pool.pinned_cpu(t);
      ASSERT_GE(c, 0);
      EXPECT_TRUE(CPU_ISSET(c, &before)) << "thread " << t << " on CPU " << c;
      cpus.push_back(c);
    }
    std::vector<int> distinct = cpus;
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    EXPECT_EQ(distinct.size(), static_cast<size_t>(std::min(3, n_allowed)));
    std::atomic<int> wrong{0}, calls{0};
    for (int rep = 0; rep < 200; ++rep) {
      pool.parallel_for(0, 64, 1, [&](size_t, size_t, int t) {
        calls.fetch_add(1);
        if (sched_getcpu() != pool.pinned_cpu(t)) wrong.fetch_add(1);
      });
    }
    EXPECT_EQ(wrong.load(), 0) << "of " << calls.load() << " chunks";
    EXPECT_EQ(pool.pinned_cpu(3), -1);
  }
  cpu_set_t after;
  CPU_ZERO(&after);
  ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(after), &after), 0);
  EXPECT_TRUE(CPU_EQUAL(&before, &after));
}

TEST(ThreadPool, UnpinnedByDefault) {
  ThreadPool pool(2);
  EXPECT_FALSE(pool.pinned());
  EXPECT_EQ(pool.pinned_cpu(0), -1);
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
