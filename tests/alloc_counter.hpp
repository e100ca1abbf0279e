#pragma once
// Counts calls of the global operator new (all threads) while a CountAllocations is alive;
// the replacement operators are in alloc_counter.cpp and serve the whole test binary.
#include <atomic>
#include <cstdint>

namespace rwkv7::testing {

extern std::atomic<bool> g_counting_allocations;
extern std::atomic<int64_t> g_allocations;

class CountAllocations {
 public:
  CountAllocations() {
    g_allocations.store(0);
    g_counting_allocations.store(true);
  }
  ~CountAllocations() { g_counting_allocations.store(false); }
  int64_t count() const { return g_allocations.load(); }
};

}  // namespace rwkv7::testing
