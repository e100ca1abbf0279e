#include "core/thread_pool.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace rwkv7 {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 3, 7, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

TEST(ThreadPool, AnExceptionOnAWorkerReachesTheCaller) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.parallel_for(100, 1,
                                 [](int64_t b, int64_t) {
                                   if (b > 0) throw std::runtime_error("worker failed");
                                 }),
               std::runtime_error);
  // The pool still works afterwards.
  std::atomic<int64_t> sum{0};
  pool.parallel_for(10, 1, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 10);
}

// Many tiny jobs back to back, with more busy threads than cores part of the time, so both
// hand-offs run: polling, and blocking after a polling timeout (then the back-off). Every job
// must still see every index once and its own data, and slow jobs (workers asleep) too.
TEST(ThreadPool, ManySmallJobsUnderOversubscription) {
  ThreadPool pool(3);
  std::atomic<bool> stop{false};
  std::vector<std::thread> hogs;
  const unsigned hog_count = std::max(2u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < hog_count; ++i) {
    hogs.emplace_back([&] {
      volatile uint64_t x = 0;
      while (!stop.load(std::memory_order_relaxed)) x = x + 1;
    });
  }
  for (int job = 0; job < 20000; ++job) {
    if (job == 15000) {  // the rest without competition
      stop = true;
      for (auto& t : hogs) t.join();
    }
    const int64_t n = 1 + job % 9;
    std::atomic<int64_t> sum{0};
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += job * 100 + i;
    });
    ASSERT_EQ(sum.load(), n * job * 100 + n * (n - 1) / 2) << "job " << job;
    if (job % 5000 == 4999) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace
}  // namespace rwkv7
