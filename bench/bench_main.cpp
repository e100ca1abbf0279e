// The one main of rwkv7_bench (every bench/*.cpp registers its benchmarks). RWKV7_ISA caps the
// kernels for every benchmark as it does for the rwkv7 binary (e.g. avx2 on an AVX-512 machine),
// so one machine measures every path.
#include <benchmark/benchmark.h>

#include "backends/cpu_isa.hpp"

int main(int argc, char** argv) {
  rwkv7::cap_cpu_isa_from_env();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
