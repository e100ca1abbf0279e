// The decode kernels over quantised weights read in place (matvec_q8_0 / matvec_q4_0), one
// thread, per Highway target: args are the format (0 = Q8_0, 1 = Q4_0), the target index in
// hwy::SupportedAndGeneratedTargets() (0 = best) and the rows. 768 columns (the 0.1B width);
// 512 rows fit the L2 cache (compute-bound), 65536 rows (the head) stream from memory.
// Reports GB/s of weights read. Run: rwkv7_bench --benchmark_filter=Matvec.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "backends/cpu/q4_panels_kernels.hpp"
#include "backends/cpu/q8_panels_kernels.hpp"
#include "backends/cpu/quant_kernels.hpp"
#include "core/quant.hpp"
#include "hwy/targets.h"

namespace rwkv7 {
namespace {

void BM_MatvecQuant(benchmark::State& st) {
  const DType t = st.range(0) == 0 ? DType::Q8_0 : DType::Q4_0;
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  if (size_t(st.range(1)) >= targets.size()) return st.SkipWithError("no such target here");
  const int64_t target = targets[size_t(st.range(1))];
  const size_t rows = size_t(st.range(2)), cols = 768, nb = cols / 32;
  const size_t rb = row_bytes(t, int64_t(cols));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> f(cols);
  std::vector<unsigned char> w(rows * rb);
  for (size_t r = 0; r < rows; ++r) {
    for (float& v : f) v = nd(rng);
    quantize_row(t, f.data(), &w[r * rb], int64_t(cols));
  }
  for (float& v : f) v = nd(rng);
  std::vector<int8_t> q(cols);
  std::vector<float> d(nb), y(rows);
  std::vector<int32_t> s4(nb * 8);
  hwy::SetSupportedTargetsForTest(target);
  cpu::quantize_act_q8(f.data(), nb, q.data(), d.data(), s4.data());
  const cpu::Q8Act x{q.data(), d.data(), s4.data(), nb};
  const auto kernel = t == DType::Q8_0 ? cpu::matvec_q8_0 : cpu::matvec_q4_0;
  for (auto _ : st) {
    kernel(w.data(), rb, rows, x, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  hwy::SetSupportedTargetsForTest(0);
  st.SetLabel(std::string(dtype_name(t)) + " " + hwy::TargetName(target));
  st.counters["GB/s"] = benchmark::Counter(double(rows * rb) * double(st.iterations()) / 1e9,
                                           benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MatvecQuant)
    ->ArgNames({"q4", "target", "rows"})
    ->ArgsProduct({{0, 1}, {0, 1, 2}, {512, 65536}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(0.3);

// The same Q4_0 product over the panels packed at load (q4_panels_kernels.hpp), where the
// target has them; args as above (format fixed to Q4_0) plus the positions.
void BM_Q4Panels(benchmark::State& st) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  if (size_t(st.range(0)) >= targets.size()) return st.SkipWithError("no such target here");
  const int64_t target = targets[size_t(st.range(0))];
  hwy::SetSupportedTargetsForTest(target);
  if (!cpu::q4_panels_supported()) {
    hwy::SetSupportedTargetsForTest(0);
    return st.SkipWithError("no Q4_0 panels on this target");
  }
  const size_t rows = size_t(st.range(1)), T = size_t(st.range(2)), cols = 768, nb = cols / 32;
  const size_t rb = row_bytes(DType::Q4_0, int64_t(cols));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> f(cols * T);
  std::vector<unsigned char> w(rows * rb);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t i = 0; i < cols; ++i) f[i] = nd(rng);
    quantize_row(DType::Q4_0, f.data(), &w[r * rb], int64_t(cols));
  }
  for (float& v : f) v = nd(rng);
  std::vector<uint8_t> panels(cpu::q4_panels_bytes(rows, cols));
  const size_t np = (rows + cpu::q4_panel_width() - 1) / cpu::q4_panel_width();
  cpu::pack_q4_panels(w.data(), rows, cols, 0, np, panels.data());
  std::vector<int8_t> q(cols * T);
  std::vector<float> d(nb * T), y(rows * T);
  std::vector<int32_t> corr(nb * T);
  cpu::quantize_q8_positions(f.data(), T, cols, q.data(), d.data(), corr.data());
  for (auto _ : st) {
    cpu::gemm_q4_panels(panels.data(), rows, cols, 0, np, q.data(), d.data(), corr.data(), T,
                        y.data(), rows);
    benchmark::DoNotOptimize(y.data());
  }
  hwy::SetSupportedTargetsForTest(0);
  st.SetLabel(std::string("q4_0 panels ") + hwy::TargetName(target));
  st.counters["GB/s"] = benchmark::Counter(double(rows * rb) * double(st.iterations()) / 1e9,
                                           benchmark::Counter::kIsRate);
  st.counters["GMAC/s"] = benchmark::Counter(
      double(rows * cols * T) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Q4Panels)
    ->ArgNames({"target", "rows", "T"})
    ->ArgsProduct({{0, 1, 2}, {512, 65536}, {1}})
    ->Args({0, 512, 64})
    ->Args({2, 512, 64})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(0.3);

}  // namespace
}  // namespace rwkv7
