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

// parallel_balanced: every index once, in chunks of the given size (the last shorter), each
// call's part a valid thread index, and each part's own chunks in ascending order.
TEST(ThreadPool, BalancedCoversEveryIndexOnceInChunks) {
  ThreadPool pool(3);
  for (int64_t n : {1, 5, 6, 7, 100, 1001}) {
    for (int64_t chunk : {1, 3, 64}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> bad_ranges{0};
      pool.parallel_balanced(n, chunk, [&](int part, int64_t b, int64_t e) {
        if (part < 0 || part >= pool.size() || b % chunk != 0 || e <= b || e - b > chunk ||
            (e - b < chunk && e != n))
          bad_ranges++;
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      });
      EXPECT_EQ(bad_ranges.load(), 0) << "n " << n << " chunk " << chunk;
      for (auto& h : hits) EXPECT_EQ(h.load(), 1) << "n " << n << " chunk " << chunk;
    }
  }
}

// A thread that is held up (here: the one that gets the first range, which sleeps in each
// chunk) has the rest of its range taken by the others from its back end: the static split
// would leave it half the work.
TEST(ThreadPool, BalancedMovesTheWorkOfASlowThread) {
  ThreadPool pool(2);
  constexpr int64_t kChunks = 40;
  std::vector<int> ran_by(kChunks, -1);
  pool.parallel_balanced(kChunks, 1, [&](int part, int64_t b, int64_t) {
    if (part == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ran_by[size_t(b)] = part;
  });
  // (It may run none at all: the other thread can finish everything before the caller, busy
  // or descheduled, starts; on a loaded machine the other thread may also wake late.)
  const auto slow = std::count(ran_by.begin(), ran_by.end(), 0);
  EXPECT_LT(slow, kChunks / 2) << "the slow thread kept its whole half";
  // The slow thread's chunks are the front of its range: a prefix of [0, kChunks / 2).
  for (int64_t c = 0; c < slow; ++c) EXPECT_EQ(ran_by[size_t(c)], 0) << c;
  EXPECT_EQ(std::count(ran_by.begin(), ran_by.end(), -1), 0);
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
