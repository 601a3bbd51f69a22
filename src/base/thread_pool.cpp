#include "base/thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstring>

#include "base/check.h"

namespace dsv4 {

namespace {

// The CPUs this process may run on, in increasing order (empty when unknown).
std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

bool pin_to(pthread_t t, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<unsigned>(cpu), &set);
  return pthread_setaffinity_np(t, sizeof(set), &set) == 0;
}

}  // namespace

ThreadPool::ThreadPool(int n_threads, bool pin) {
  if (n_threads <= 0)
    n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::vector<int> allowed = pin ? allowed_cpus() : std::vector<int>{};
  if (!allowed.empty()) {
    cpu_set_t before;
    CPU_ZERO(&before);
    if (pthread_getaffinity_np(pthread_self(), sizeof(before), &before) == 0) {
      caller_mask_.resize(sizeof(before));
      std::memcpy(caller_mask_.data(), &before, sizeof(before));
      cpus_.resize(static_cast<size_t>(n_threads));
      for (size_t i = 0; i < cpus_.size(); ++i) cpus_[i] = allowed[i % allowed.size()];
      pinned_ = pin_to(pthread_self(), cpus_[0]);
    }
  }
  workers_.reserve(static_cast<size_t>(n_threads - 1));
  for (int i = 1; i < n_threads; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i); });
    if (pinned_) pinned_ = pin_to(workers_.back().native_handle(), cpus_[static_cast<size_t>(i)]);
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  if (!caller_mask_.empty()) {
    cpu_set_t before;
    std::memcpy(&before, caller_mask_.data(), sizeof(before));
    (void)pthread_setaffinity_np(pthread_self(), sizeof(before), &before);
  }
}

void ThreadPool::run_chunks(int thread_index) {
  for (;;) {
    size_t b = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (b >= end_) break;
    size_t e = std::min(end_, b + chunk_);
    (*fn_)(b, e, thread_index);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin a little for the next job before sleeping.
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < 4000; ++spin) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      g = generation_.load();
    }
    seen = g;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    run_chunks(index);
    active_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(size_t begin, size_t end, size_t grain, const RangeFn& fn) {
  if (begin >= end) return;
  grain = std::max<size_t>(grain, 1);
  const size_t n = end - begin;
  const size_t threads = static_cast<size_t>(num_threads());
  if (threads == 1 || n <= grain) {
    fn(begin, end, 0);
    return;
  }
  // About 4 chunks per thread for balance, but never below the grain.
  size_t chunk = std::max(grain, (n + threads * 4 - 1) / (threads * 4));
  DSV4_CHECK_MSG(active_.load() == 0, "ThreadPool::parallel_for is not reentrant");
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    begin_ = begin;
    end_ = end;
    chunk_ = chunk;
    next_.store(begin, std::memory_order_relaxed);
    active_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  run_chunks(0);
  // Spin briefly, then yield: with more runnable threads than cores (ctest -j, other jobs) a
  // pure spin would burn the time slice the worker we wait for needs.
  for (int spin = 0; active_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin < 4000) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
  fn_ = nullptr;
}

}  // namespace dsv4
