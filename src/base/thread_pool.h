// base/thread_pool.h — a small fork-join pool for data-parallel loops.
//
// Purpose: parallel_for over index ranges in kernels and the forward pass. The pool is passed
// explicitly (no global pool), so tests can compare 1 thread with N threads.
// Design: n-1 persistent workers plus the calling thread; work is split into chunks of at least
// `grain` indices handed out through an atomic counter (dynamic load balance). Workers spin
// briefly before sleeping, so back-to-back parallel_for calls in a decode loop stay cheap.
// Invariants: parallel_for is not reentrant (do not call it from inside a task) and must be
// called from one thread at a time. Non-goals: task graphs, futures, work stealing.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace dsv4 {

class ThreadPool {
 public:
  // A non-owning reference to a callable fn(begin, end, thread_index) that processes indices
  // [begin, end) (thread_index < num_threads()). Unlike std::function it never allocates: a
  // lambda capturing more than two pointers made every std::function-based parallel_for a heap
  // allocation, i.e. dozens per decoded token.
  class RangeFn {
   public:
    template <typename F>
    requires(!std::is_same_v<std::remove_cv_t<F>, RangeFn>) explicit RangeFn(F& f)
        : obj_(const_cast<void*>(static_cast<const void*>(&f))),
          call_([](void* o, size_t b, size_t e, int t) { (*static_cast<F*>(o))(b, e, t); }) {}
    void operator()(size_t b, size_t e, int t) const { call_(obj_, b, e, t); }

   private:
    void* obj_;
    void (*call_)(void*, size_t, size_t, int);
  };

  // n_threads <= 0 means "all hardware threads" (std::thread::hardware_concurrency()).
  // pin: thread i (the constructing thread is 0, worker i is i) runs only on the i-th CPU this
  // process may use (sched_getaffinity; modulo their count, so threads share CPUs only when
  // there are more threads than CPUs). A pinned thread keeps its caches and is never moved next
  // to a sibling worker by the scheduler; the price is that it cannot flee a CPU another process
  // keeps busy. The constructing thread's previous affinity is restored by the destructor (call
  // both from the same thread). Best effort: where the system refuses, threads stay unpinned
  // and pinned() says so.
  explicit ThreadPool(int n_threads = 0, bool pin = false);
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool();

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }
  // Every thread, the constructing one included, was pinned as asked.
  bool pinned() const { return pinned_; }
  // The CPU thread i was pinned to, or -1 when not pinned.
  int pinned_cpu(int thread_index) const {
    return pinned_ && thread_index >= 0 && static_cast<size_t>(thread_index) < cpus_.size()
               ? cpus_[static_cast<size_t>(thread_index)]
               : -1;
  }

  // Runs fn over [begin, end) split into chunks of >= grain indices. Returns when all are done.
  // fn is called as fn(begin, end, thread_index) and must outlive the call (it does: the call
  // blocks).
  template <typename F>
  void parallel_for(size_t begin, size_t end, size_t grain, F&& fn) {
    run(begin, end, grain, RangeFn(fn));
  }

 private:
  void run(size_t begin, size_t end, size_t grain, const RangeFn& fn);
  void worker_loop(int index);
  void run_chunks(int thread_index);

  std::vector<std::thread> workers_;
  bool pinned_ = false;
  std::vector<int> cpus_;  // [num_threads()] when pinned
  // The constructing thread's affinity before pinning (a cpu_set_t), restored by ~ThreadPool.
  std::vector<unsigned char> caller_mask_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> active_{0};
  bool stop_ = false;

  // The current job (valid while active_ > 0 or the caller runs it).
  const RangeFn* fn_ = nullptr;
  size_t begin_ = 0, end_ = 0, chunk_ = 1;
  std::atomic<size_t> next_{0};
};

}  // namespace dsv4
