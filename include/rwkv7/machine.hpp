#pragma once
// What this machine can do at best, for reporting speed as a fraction of a physical limit.

namespace rwkv7 {

struct MachineLimits {
  double read_gb_s = 0;    // memory read bandwidth, all threads
  double fma_gflop_s = 0;  // fp32 FMA throughput (2 FLOPs per lane per FMA), all threads
};

// Streams a buffer larger than the caches and runs an FMA loop, on `threads` threads (0 = all).
// Takes about a second.
MachineLimits measure_machine_limits(int threads = 0);

// Peak resident memory of this process so far, in MiB.
double peak_rss_mib();

}  // namespace rwkv7
