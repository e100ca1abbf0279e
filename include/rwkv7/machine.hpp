#pragma once
// What this machine can do at best, for reporting speed as a fraction of a physical limit.

#include <string>
#include <string_view>
#include <vector>

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

// The SIMD instruction sets the CPU kernels can use on this machine (this build's kernels that
// the CPU runs), best first: "avx512vnni", "avx512", "avx2", "sse4", "ssse3", "scalar".
std::vector<std::string> cpu_isas();

// The instruction set the CPU kernels use now.
std::string cpu_isa();

// Caps the CPU kernels at one of cpu_isas() ("native" lifts the cap), for the whole process:
// for measuring every path on one machine (`rwkv7 bench --isa`, the RWKV7_ISA variable). Call
// it before loading a model: weights are prepared for the kernels in use at load. Throws Error
// naming the value when it is unknown or not available here.
void set_cpu_isa(std::string_view name);

}  // namespace rwkv7
