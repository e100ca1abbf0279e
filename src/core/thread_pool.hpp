#pragma once
// A fixed pool of worker threads for data-parallel loops. One pool is owned by whoever runs
// a model (not a global); parallel_for splits [0, n) into contiguous ranges, one per worker.
//
// Decoding one token makes hundreds of small parallel calls, so hand-offs must cost well under
// a microsecond: workers poll an atomic job counter (with a pause hint) for a short while after
// each job and the caller polls for their acknowledgements. Both give up after kSpin and block
// on condition variables, so a machine with more runnable threads than cores (where a polling
// thread would burn the time slice the thread it waits for needs) degrades to the plain
// blocking hand-off instead of collapsing: when the caller's polling times out while a worker
// that was awake (polling, not asleep) when the job was published has not even picked it up,
// that worker was not running, and nobody polls for the next `backoff_` jobs, doubling on each
// further such timeout. (A long, unbalanced job or a worker still waking from sleep also time
// out the polling; that is no reason to back off.)
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/function_ref.hpp"

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
  void parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn);
  // The same, also telling fn which part (0 .. size()-1) it runs: per-thread scratch buffers
  // indexed by part are never used by two threads at once.
  void parallel_parts(int64_t n, int64_t grain, FunctionRef<void(int, int64_t, int64_t)> fn);
  // The same split into one contiguous range per thread, handed out in chunks of `chunk`:
  // each thread walks its own range front to back, and a thread that runs out takes chunks
  // from the back of the range with the most left. For even work on uneven threads (a shared
  // machine, a vCPU descheduled for a while), where the static split makes everyone wait for
  // the slowest. fn may be called several times per part, on ascending ranges of its own
  // first, then on stolen ones.
  void parallel_balanced(int64_t n, int64_t chunk, FunctionRef<void(int, int64_t, int64_t)> fn);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  // The job: written by the caller before `generation_` is bumped (release), read by workers
  // after they see the new generation (acquire); untouched until `pending_` reaches 0.
  const FunctionRef<void(int, int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_parts_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};    // workers that have not finished the current job
  std::atomic<int> unstarted_{0};  // workers that have not picked the current job up
  // Who may be blocked: the mutex is taken only when one is (seq_cst flag-then-check on both
  // sides, so a wake-up is never lost), not on every hand-off.
  std::atomic<int> sleepers_{0};             // workers blocked (or about to) on wake_cv_
  std::atomic<bool> caller_waiting_{false};  // the caller blocked (or about to) on done_cv_
  std::atomic<bool> has_error_{false};       // worker_error_ is set
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> calm_until_{0};  // no polling while generation_ < calm_until_
  uint64_t backoff_ = 0;                 // caller only
  std::mutex mutex_;                     // for the condition variables, and guards worker_error_
  std::condition_variable wake_cv_, done_cv_;
  std::exception_ptr worker_error_;
  // parallel_balanced: each part's chunk range, 64 bytes apart (no two on one cache line).
  static constexpr size_t kRangeStride = 64 / sizeof(std::atomic<uint64_t>);
  std::unique_ptr<std::atomic<uint64_t>[]> chunk_ranges_;
};

}  // namespace rwkv7
