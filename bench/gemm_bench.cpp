// Backend::gemm on the cpu backend, in the modes and shapes of one training layer of
// BM_Grad/L:6/C:256/V:256/T:512 (R = 512 rows, C = 256, F = 1024, LoRA width 32) and of
// BM_Grad/L:12/C:768/V:65536/T:512 (below): args are
// A transposed, B transposed, M, N, K, bf16 (1: ProductPrecision::BF16, operands rounded to
// bf16 and summed in fp32). Reports GFLOP/s (2·M·N·K per product).
// Run: rwkv7_bench --benchmark_filter=Gemm.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "backends/backend.hpp"
#include "core/dtype.hpp"
#include "core/thread_pool.hpp"

namespace rwkv7 {
namespace {

void BM_Gemm(benchmark::State& st) {
  const bool a_t = st.range(0) != 0, b_t = st.range(1) != 0;
  const int64_t M = st.range(2), N = st.range(3), K = st.range(4);
  // bf16: 1 = operands rounded at the product, 2 = B (a weight) read from a kept bf16 copy
  // (TrainParams::bf16_weights), as `rwkv7 train --precision bf16` does.
  const auto precision = st.range(5) ? ProductPrecision::BF16 : ProductPrecision::F32;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  auto random = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = nd(rng);
    return v;
  };
  const std::vector<float> a = random(M * K), b = random(K * N);
  std::vector<float> c = random(M * N);
  std::vector<uint16_t> b16;
  if (st.range(5) == 2)
    for (float x : b) b16.push_back(f32_to_bf16(x));
  ThreadPool pool(0);
  auto be = make_cpu_backend(&pool, precision);
  const GemmArgs args{.M = M,
                      .N = N,
                      .K = K,
                      .a = {a.data(), a_t ? M : K, a_t},
                      .b = {b.data(), b_t ? K : N, b_t, b16.empty() ? nullptr : b16.data()},
                      .c = c.data(),
                      .ldc = N,
                      .accumulate = true};
  be->gemm(args);  // warm-up: scratch buffers, first-touch faults
  for (auto _ : st) {
    be->gemm(args);
    benchmark::DoNotOptimize(c.data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(M) * double(N) * double(K) / 1e9 * double(st.iterations()),
                         benchmark::Counter::kIsRate);
  st.counters["threads"] = pool.size();
}
BENCHMARK(BM_Gemm)
    ->ArgNames({"a_t", "b_t", "M", "N", "K", "bf16"})
    ->Args({0, 0, 512, 256, 1024, 0})  // dX += dY·W, ffn.key (W [F, C])
    ->Args({0, 0, 512, 1024, 256, 0})  // dX += dY·W, ffn.value (W [C, F])
    ->Args({1, 0, 1024, 256, 512, 0})  // dW += dYᵀ·X, ffn.key
    ->Args({1, 0, 256, 256, 512, 0})   // dW += dYᵀ·X, a [C, C] weight
    ->Args({0, 1, 512, 32, 256, 0})    // LoRA dX += dY·mᵀ, second factor [32, C]
    ->Args({0, 1, 512, 256, 32, 0})    // LoRA dX += dY·mᵀ, first factor [C, 32]
    ->Args({1, 0, 256, 32, 512, 0})    // LoRA dm += xᵀ·dY, first factor
    ->Args({1, 0, 32, 256, 512, 0})    // LoRA dm += xᵀ·dY, second factor
    // L12-C768 (the 0.1B shape, F = 3072, V = 65536), T = 512: forward (W [out, in] read
    // transposed), dX, dW of a [C, C] weight, ffn.key and the head; fp32, then bf16.
    ->Args({0, 1, 512, 768, 768, 0})
    ->Args({0, 1, 512, 3072, 768, 0})
    ->Args({0, 1, 512, 768, 3072, 0})
    ->Args({0, 1, 512, 65536, 768, 0})
    ->Args({0, 0, 512, 768, 768, 0})
    ->Args({0, 0, 512, 768, 3072, 0})
    ->Args({0, 0, 512, 768, 65536, 0})
    ->Args({1, 0, 768, 768, 512, 0})
    ->Args({1, 0, 3072, 768, 512, 0})
    ->Args({1, 0, 65536, 768, 512, 0})
    ->Args({0, 1, 512, 768, 768, 1})
    ->Args({0, 1, 512, 3072, 768, 1})
    ->Args({0, 1, 512, 768, 3072, 1})
    ->Args({0, 1, 512, 65536, 768, 1})
    ->Args({0, 0, 512, 768, 768, 1})
    ->Args({0, 0, 512, 768, 3072, 1})
    ->Args({0, 0, 512, 768, 65536, 1})
    ->Args({1, 0, 768, 768, 512, 1})
    ->Args({1, 0, 3072, 768, 512, 1})
    ->Args({1, 0, 65536, 768, 512, 1})
    // The weights' products again with B from a kept bf16 copy, and at 64 rows (the packing's
    // share grows as the rows per weight value fall).
    ->Args({0, 1, 512, 768, 768, 2})
    ->Args({0, 1, 512, 3072, 768, 2})
    ->Args({0, 1, 512, 768, 3072, 2})
    ->Args({0, 1, 512, 65536, 768, 2})
    ->Args({0, 0, 512, 768, 768, 2})
    ->Args({0, 0, 512, 768, 3072, 2})
    ->Args({0, 0, 512, 768, 65536, 2})
    ->Args({0, 1, 64, 3072, 768, 1})
    ->Args({0, 1, 64, 3072, 768, 2})
    ->Args({0, 0, 64, 768, 3072, 1})
    ->Args({0, 0, 64, 768, 3072, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(0.5);

}  // namespace
}  // namespace rwkv7
