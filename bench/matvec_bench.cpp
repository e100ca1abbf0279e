// Decode products (one position) over block-quantised weights read in place, one thread,
// the kernels the cpu backend dispatches to (best Highway target of this machine): Q8_0/Q4_0
// (quant_kernels.hpp) beside the K-quants and Q5_0/Q5_1 (kquant_kernels.hpp). Args: ggml
// type id (8 Q8_0, 2 Q4_0, 12 Q4_K, 13 Q5_K, 14 Q6_K, 6 Q5_0, 7 Q5_1), rows, cols. Reports the
// weight bytes read per second; the activation quantisation is outside the timed loop.
// Run: rwkv7_bench --benchmark_filter=Matvec.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "backends/cpu/kquant_kernels.hpp"
#include "backends/cpu/quant_kernels.hpp"
#include "core/quant.hpp"

namespace rwkv7 {
namespace {

DType from_ggml_id(int64_t id) {
  switch (id) {
    case 2:
      return DType::Q4_0;
    case 6:
      return DType::Q5_0;
    case 7:
      return DType::Q5_1;
    case 12:
      return DType::Q4_K;
    case 13:
      return DType::Q5_K;
    case 14:
      return DType::Q6_K;
    default:
      return DType::Q8_0;
  }
}

void BM_Matvec(benchmark::State& st) {
  const DType t = from_ggml_id(st.range(0));
  const int64_t rows = st.range(1), cols = st.range(2);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> row(static_cast<size_t>(cols)), x(static_cast<size_t>(cols));
  const size_t rb = row_bytes(t, cols), nb = size_t(cols / 32);
  std::vector<unsigned char> w(rb * size_t(rows));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = nd(rng);
    quantize_row(t, row.data(), w.data() + size_t(r) * rb, cols);
  }
  for (float& v : x) v = nd(rng);
  std::vector<int8_t> q(static_cast<size_t>(cols));
  std::vector<float> d(nb), dsum(nb), y(static_cast<size_t>(rows));
  std::vector<int32_t> s4(8 * nb);
  cpu::quantize_act_q8(x.data(), nb, q.data(), d.data(), s4.data());
  cpu::q8_act_block_sums(d.data(), s4.data(), nb, dsum.data());
  const cpu::Q8Act act{q.data(), d.data(), s4.data(), nb, dsum.data()};
  auto run = [&] {
    if (t == DType::Q8_0)
      cpu::matvec_q8_0(w.data(), rb, size_t(rows), act, y.data());
    else if (t == DType::Q4_0)
      cpu::matvec_q4_0(w.data(), rb, size_t(rows), act, y.data());
    else
      cpu::matvec_kquant(t, w.data(), rb, size_t(rows), act, y.data());
  };
  run();
  for (auto _ : st) {
    run();
    benchmark::DoNotOptimize(y.data());
  }
  st.SetLabel(dtype_name(t));
  st.counters["GB/s"] = benchmark::Counter(double(w.size()) / 1e9 * double(st.iterations()),
                                           benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Matvec)
    ->ArgNames({"type", "rows", "cols"})
    ->ArgsProduct({{8, 2, 12, 13, 14, 6, 7}, {1024}, {1024}})  // 0.1B-like, in cache
    ->ArgsProduct({{8, 2, 12, 13, 14}, {4096}, {4096}})        // past L2: memory
    ->ArgsProduct({{2, 12, 14}, {65536}, {768}})               // the 0.1B head
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(0.3);

}  // namespace
}  // namespace rwkv7
