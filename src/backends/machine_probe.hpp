#pragma once
// What this machine's CPU does at best, measured with the CPU backend's own SIMD kernels: for
// reporting speed as a fraction of a physical limit (rwkv7/machine.hpp).

namespace rwkv7 {

class ThreadPool;

struct CpuLimits {
  double read_gb_s = 0;    // memory read bandwidth, all threads of the pool
  double fma_gflop_s = 0;  // fp32 FMA throughput (2 FLOPs per lane per FMA), all threads
};

// Streams a buffer larger than the caches and runs an FMA loop on every thread of `pool`.
// Takes about a second.
CpuLimits probe_cpu_limits(ThreadPool& pool);

}  // namespace rwkv7
