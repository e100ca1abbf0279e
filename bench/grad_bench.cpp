// One forward + backward (loss_and_gradients) of a fresh model (args: layers, embd, vocab, T)
// on one row of T predicted positions. Reports tokens/s and the fraction of a 300 GFLOP/s machine
// reached at 6·P FLOPs per token (P = non-embedding parameters + head, DESIGN.md).
// Run: cmake -DRWKV7_BUILD_BENCH=ON, then rwkv7_bench --benchmark_filter=Grad.
#include <benchmark/benchmark.h>

#include <random>

#include "core/thread_pool.hpp"
#include "model/backward.hpp"
#include "model/init.hpp"

namespace rwkv7 {
namespace {

void BM_Grad(benchmark::State& st) {
  InitSpec spec;
  spec.n_layer = st.range(0);
  spec.n_embd = st.range(1);
  spec.vocab_size = st.range(2);
  spec.seed = 1;
  InitializedModel m = init_model(spec);
  TensorFile f;
  f.path = "init";
  for (const auto& [name, view] : m.tensors) f.add(name, view);
  const train::TrainParams params = train::params_from_file(f);
  int64_t P = 0;
  for (const auto& [name, t] : params.tensors)
    if (name != "emb.weight") P += int64_t(t.data.size());

  const int64_t T = st.range(3);
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> rows(1);
  for (int64_t i = 0; i <= T; ++i) rows[0].push_back(int32_t(rng() % uint32_t(spec.vocab_size)));
  ThreadPool pool(0);
  auto be = make_cpu_backend(&pool);
  train::TrainWorkspace ws;  // reused across steps, as a training loop does
  train::GradResult r;
  train::loss_and_gradients(params, rows, *be, &pool, {}, ws, r);  // warm-up: first-touch faults
  for (auto _ : st) {
    train::loss_and_gradients(params, rows, *be, &pool, {}, ws, r);
    benchmark::DoNotOptimize(r.loss);
  }
  const double tokens = double(T) * double(st.iterations());
  st.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
  st.counters["GFLOP/s"] =
      benchmark::Counter(tokens * 6.0 * double(P) / 1e9, benchmark::Counter::kIsRate);
  st.counters["P(M)"] = double(P) / 1e6;
  st.counters["threads"] = pool.size();
  st.SetLabel("fraction of 300 GFLOP/s = GFLOP/s / 300");
}
BENCHMARK(BM_Grad)
    ->ArgNames({"L", "C", "V", "T"})
    ->Args({6, 256, 65536, 512})
    ->Args({6, 256, 256, 512})
    ->Args({12, 768, 65536, 512})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(4.0);

}  // namespace
}  // namespace rwkv7
