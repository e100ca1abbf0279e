// One product (Backend::matmul) as a model reads it: weights in each format, panels made at
// load where the backend makes them (or not: arg panels = 0). One position over the 0.1B head
// shape [65536, 768] (decode: GB/s of weights read, to set against `rwkv7 bench`'s read
// bandwidth), or T = 64 positions over an FFN-sized [3072, 768] (prefill: GFLOP/s). Args: format
// (0 f32, 1 f16, 2 bf16, 3 q8_0, 4 q4_0), Highway target index in
// hwy::SupportedAndGeneratedTargets() (0 = best), threads, T, panels.
// Run: rwkv7_bench --benchmark_filter=Decode.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cpu/gemm_packed_kernels.hpp"
#include "backends/cpu/weight_panels_kernels.hpp"
#include "core/dtype.hpp"
#include "core/quant.hpp"
#include "core/thread_pool.hpp"
#include "hwy/aligned_allocator.h"
#include "hwy/targets.h"

namespace rwkv7 {
namespace {

constexpr DType kFormats[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0};

void BM_DecodeProduct(benchmark::State& st) {
  const DType t = kFormats[st.range(0)];
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  if (size_t(st.range(1)) >= targets.size()) return st.SkipWithError("no such target here");
  const int64_t target = targets[size_t(st.range(1))];
  const int64_t rows = st.range(3) > 1 ? 3072 : 65536, cols = 768, T = st.range(3);
  const bool use_panels = st.range(4) != 0;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> f(size_t(rows * cols)), x(static_cast<size_t>(cols * T)),
      y(static_cast<size_t>(rows * T));
  for (float& v : f) v = nd(rng) * 0.05f;
  for (float& v : x) v = nd(rng);
  const size_t rb = is_quantized(t) ? row_bytes(t, cols) : size_t(cols) * dtype_size(t);
  std::vector<unsigned char> w(size_t(rows) * rb);
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = &f[size_t(r * cols)];
    unsigned char* dst = &w[size_t(r) * rb];
    if (is_quantized(t)) {
      quantize_row(t, src, dst, cols);
    } else if (t == DType::F32) {
      __builtin_memcpy(dst, src, rb);
    } else {
      auto* h = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < cols; ++i)
        h[i] = t == DType::F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
    }
  }
  hwy::SetSupportedTargetsForTest(target);
  ThreadPool pool(int(st.range(2)));
  Matrix m{t, rows, cols, w.data()};
  // fp32 panels are made only in place of a file mapping's pages: said so here (a model's
  // weights are such views), so that the f32 rows measure them.
  const auto panels = use_panels ? prepare_cpu_panels(m, pool, /*data_is_mapped=*/true) : nullptr;
  auto be = make_cpu_backend(&pool);
  const MatmulArgs args{m, x.data(), y.data(), T};
  be->matmul(args);  // warm-up
  for (auto _ : st) {
    be->matmul(args);
    benchmark::DoNotOptimize(y.data());
  }
  hwy::SetSupportedTargetsForTest(0);
  st.SetLabel(dtype_name(t) + " " + hwy::TargetName(target) + (panels ? " panels" : ""));
  st.counters[T > 1 ? "GFLOP/s" : "GB/s"] = benchmark::Counter(
      (T > 1 ? 2.0 * double(rows * cols * T) : double(w.size())) * double(st.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeProduct)
    ->ArgNames({"format", "target", "threads", "T", "panels"})
    ->ArgsProduct({{0, 1, 2, 3, 4}, {0, 2}, {1, 2}, {1}, {1}})
    ->ArgsProduct({{0, 1, 2, 3, 4}, {0, 2}, {1}, {64}, {0, 1}})
    ->ArgsProduct({{0, 2, 3}, {0}, {1, 2}, {32, 256}, {1}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(0.3);

// bf16 panels made at load over an FFN-sized [3072, 768], T positions, one thread, block by
// block as a decode batch's product reads them (kPanelDepth = 128 inputs, the next block's
// lines prefetched over the product): arg in_place 0 widens each block into an fp32 panel
// then multiplies it, 1 multiplies the bf16 block in place. Run both interleaved:
// rwkv7_bench --benchmark_filter=Bf16Blocks --benchmark_enable_random_interleaving=true
//   --benchmark_repetitions=10 (the machine's speed drifts over minutes).
void BM_Bf16Blocks(benchmark::State& st) {
  if (!cpu::bf16_panel_product_available()) return st.SkipWithError("no bf16 panel products here");
  const size_t rows = size_t(st.range(2)), cols = 768, T = size_t(st.range(0)), depth = 128;
  const bool in_place = st.range(1) != 0;
  const size_t nr = cpu::panel_width(), panels = (rows + nr - 1) / nr;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<uint16_t> w(rows * cols), packed(cpu::panels_size(rows, cols));
  for (uint16_t& v : w) v = f32_to_bf16(nd(rng) * 0.05f);
  cpu::pack_panels(DType::BF16, w.data(), rows, cols, 0, panels, packed.data());
  std::vector<float> x(T * cols), y(T * rows);
  for (float& v : x) v = nd(rng);
  auto block = hwy::AllocateAligned<float>(depth * nr);
  for (auto _ : st) {
    for (size_t p = 0; p < panels; ++p)
      for (size_t k0 = 0; k0 < cols; k0 += depth) {
        const uint16_t* src = packed.data() + p * cols * nr + k0 * nr;
        const size_t values = depth * nr;
        const bool more = k0 + depth < cols || p + 1 < panels;
        const size_t nn = std::min(nr, rows - p * nr);
        const cpu::PrefetchRange next =
            more ? cpu::PrefetchRange{src + values, values * 2} : cpu::PrefetchRange{};
        if (in_place) {
          cpu::gemm_panel_bf16(x.data() + k0, cols, T, src, depth, y.data() + p * nr, rows, nn,
                               k0 > 0, next);
        } else {
          cpu::widen_bf16(src, values, block.get());
          cpu::gemm_panel(x.data() + k0, cols, T, block.get(), depth, y.data() + p * nr, rows, nn,
                          k0 > 0, next);
        }
      }
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * double(rows * cols * T) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Bf16Blocks)
    ->ArgNames({"T", "in_place", "rows"})
    ->ArgsProduct({{8, 16, 32, 48}, {0, 1}, {3072, 65536}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(0.2);

}  // namespace
}  // namespace rwkv7
