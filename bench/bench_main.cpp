// The one main of rwkv7_bench (every bench/*.cpp registers its benchmarks).
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
