#pragma once
// A fixed pool of worker threads for data-parallel loops. One pool is owned by whoever runs
// a model (not a global); parallel_for splits [0, n) into contiguous ranges, one per worker.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rwkv7 {

class ThreadPool {
 public:
  // threads <= 0 → hardware concurrency.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }  // workers + the calling thread

  // Calls fn(begin, end) on disjoint ranges covering [0, n); ranges are at least `grain`
  // long. Runs inline when n is small or the pool has one thread. Not re-entrant. An exception
  // thrown by fn on any thread is rethrown here once every range has finished.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_parts_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr worker_error_;
};

}  // namespace rwkv7
