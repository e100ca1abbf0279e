#include "core/thread_pool.hpp"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace rwkv7 {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Polling time before blocking: longer than the serial gaps between the products of one
// decoded token (a few µs), short enough that an oversubscribed machine loses little.
constexpr auto kSpin = std::chrono::microseconds(30);
constexpr uint64_t kMinBackoff = 64, kMaxBackoff = 4096;  // jobs without polling

// Polls done() with a pause hint until it is true (returns true) or kSpin has passed.
template <class Done>
bool spin_until(const Done& done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() > deadline) return done();
  }
}

void run_part(FunctionRef<void(int, int64_t, int64_t)> fn, int64_t n, int parts, int part) {
  const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
  if (begin < end) fn(part, begin, end);
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  chunk_ranges_ = std::make_unique<std::atomic<uint64_t>[]>(size_t(threads) * kRangeStride);
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true, std::memory_order_release);
  }
  wake_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn) {
  parallel_parts(n, grain, [&fn](int, int64_t begin, int64_t end) { fn(begin, end); });
}

void ThreadPool::parallel_parts(int64_t n, int64_t grain,
                                FunctionRef<void(int, int64_t, int64_t)> fn) {
  if (n <= 0) return;
  const int64_t g = std::max<int64_t>(grain, 1);
  const int parts = int(std::min<int64_t>(size(), (n + g - 1) / g));
  if (parts <= 1) {
    fn(0, 0, n);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  job_parts_ = parts;
  pending_.store(int(workers_.size()), std::memory_order_relaxed);
  unstarted_.store(int(workers_.size()), std::memory_order_relaxed);
  const uint64_t gen = generation_.fetch_add(1) + 1;  // seq_cst: see sleepers_ below
  // Workers not asleep at publication: they should pick the job up at once.
  const int sleeping = sleepers_.load();
  const int awake = int(workers_.size()) - sleeping;
  if (sleeping > 0) {
    // A worker that counted itself asleep either sees the new generation in its wait
    // predicate or is already waiting: taking the lock orders us after its check.
    { std::lock_guard<std::mutex> lock(mutex_); }
    wake_cv_.notify_all();
  }
  const bool poll = gen >= calm_until_.load(std::memory_order_relaxed);
  std::exception_ptr mine;
  try {
    run_part(fn, n, parts, 0);
  } catch (...) {
    mine = std::current_exception();
  }
  const auto all_done = [this] { return pending_.load() == 0; };
  if (poll && spin_until(all_done)) {
    backoff_ = 0;
  } else {
    const int started = int(workers_.size()) - unstarted_.load();
    if (poll && started < awake) {
      // An awake worker has not picked the job up: it is not running. Stop polling a while.
      backoff_ = backoff_ == 0 ? kMinBackoff : std::min(2 * backoff_, kMaxBackoff);
      calm_until_.store(gen + backoff_, std::memory_order_relaxed);
    }
    std::unique_lock<std::mutex> lock(mutex_);
    caller_waiting_.store(true);
    done_cv_.wait(lock, all_done);
    caller_waiting_.store(false);
  }
  job_ = nullptr;
  std::exception_ptr err = mine;
  if (has_error_.load()) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!err) err = worker_error_;
    worker_error_ = nullptr;
    has_error_.store(false);
  }
  if (err) std::rethrow_exception(err);  // a worker's error surfaces in the caller
}

namespace {

// One thread's range of chunks [front, back) in one word, so that the owner (front) and a
// thief (back) can never both take the last chunk.
uint64_t pack_range(uint32_t front, uint32_t back) { return uint64_t(front) << 32 | back; }
uint32_t range_front(uint64_t v) { return uint32_t(v >> 32); }
uint32_t range_back(uint64_t v) { return uint32_t(v); }
uint32_t chunks_left(const std::atomic<uint64_t>& range) {
  const uint64_t v = range.load(std::memory_order_relaxed);
  return range_back(v) > range_front(v) ? range_back(v) - range_front(v) : 0;
}
// The chunk at the front (owner) or the back (thief) of the range, or -1 when it is empty.
int64_t take_chunk(std::atomic<uint64_t>& range, bool front) {
  uint64_t v = range.load(std::memory_order_relaxed);
  while (range_front(v) < range_back(v)) {
    const uint64_t taken = front ? pack_range(range_front(v) + 1, range_back(v))
                                 : pack_range(range_front(v), range_back(v) - 1);
    if (range.compare_exchange_weak(v, taken, std::memory_order_relaxed))
      return front ? range_front(v) : range_back(v) - 1;
  }
  return -1;
}

}  // namespace

void ThreadPool::parallel_balanced(int64_t n, int64_t chunk,
                                   FunctionRef<void(int, int64_t, int64_t)> fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int parts = int(std::min<int64_t>(size(), chunks));
  if (parts <= 1 || chunks > int64_t(UINT32_MAX)) return parallel_parts(n, chunk, fn);
  const auto range = [this](int part) -> std::atomic<uint64_t>& {
    return chunk_ranges_[size_t(part) * kRangeStride];
  };
  for (int p = 0; p < parts; ++p)
    range(p).store(pack_range(uint32_t(chunks * p / parts), uint32_t(chunks * (p + 1) / parts)),
                   std::memory_order_relaxed);
  const auto run_chunk = [&](int part, int64_t c) {
    fn(part, c * chunk, std::min(n, (c + 1) * chunk));
  };
  parallel_parts(parts, 1, [&](int part, int64_t, int64_t) {
    for (int64_t c; (c = take_chunk(range(part), true)) >= 0;) run_chunk(part, c);
    for (;;) {  // then from the back of the range with the most left
      int victim = -1;
      uint32_t most = 0;
      for (int p = 0; p < parts; ++p)
        if (const uint32_t left = chunks_left(range(p)); left > most) most = left, victim = p;
      if (victim < 0) return;
      if (const int64_t c = take_chunk(range(victim), false); c >= 0) run_chunk(part, c);
    }
  });
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    const auto new_job = [&] {
      return stop_.load(std::memory_order_acquire) ||
             generation_.load(std::memory_order_acquire) != seen;
    };
    if (seen >= calm_until_.load(std::memory_order_relaxed)) spin_until(new_job);
    if (stop_.load(std::memory_order_acquire)) return;
    uint64_t now = generation_.load(std::memory_order_acquire);
    if (now == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1);  // seq_cst, before the predicate reads generation_
      wake_cv_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
      sleepers_.fetch_sub(1);
      if (stop_.load(std::memory_order_acquire)) return;
      now = generation_.load(std::memory_order_acquire);
    }
    seen = now;
    unstarted_.fetch_sub(1, std::memory_order_acq_rel);
    if (index < job_parts_) {
      try {
        run_part(*job_, job_n_, job_parts_, index);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!worker_error_) worker_error_ = std::current_exception();
        has_error_.store(true);
      }
    }
    // Every worker acknowledges every job; the last one wakes the caller if it blocked.
    if (pending_.fetch_sub(1) == 1 && caller_waiting_.load()) {
      { std::lock_guard<std::mutex> lock(mutex_); }
      done_cv_.notify_one();
    }
  }
}

}  // namespace rwkv7
