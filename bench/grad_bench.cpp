// Training speed on one row of T predicted positions of a fresh model (args: layers, embd,
// vocab, T, bf16 = products in ProductPrecision::BF16: 1 rounding the fp32 weights at every
// product, 2 reading bf16 copies of them that AdamW keeps, as `rwkv7 train --precision bf16`
// does): BM_Grad is one forward + backward
// (loss_and_gradients), BM_TrainStep the whole step (+ gradient clipping + AdamW). FLOPs: 6·P per
// token (P = non-embedding parameters + head, DESIGN.md) plus the WKV's; `of_peak` is the fraction
// of the fp32 FMA peak measured on the same threads before the run (probe_cpu_limits, as `rwkv7
// bench` reports it). Run: cmake -DRWKV7_BUILD_BENCH=ON, then rwkv7_bench
// --benchmark_filter='Grad|TrainStep' (fp32 against bf16: --benchmark_filter='TrainStep.*T:512'
// --benchmark_repetitions=6 --benchmark_enable_random_interleaving=true).
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <random>
#include <vector>

#include "backends/machine_probe.hpp"
#include "core/thread_pool.hpp"
#include "model/backward.hpp"
#include "model/init.hpp"
#include "train/optimizer.hpp"

namespace rwkv7 {
namespace {

// The model, rows, backend and workspace of one shape: made once (Google Benchmark calls the
// function several times per shape; a fresh model each time made the init and the first-touch
// page faults of a new workspace dominate a profile of the run).
struct GradSetup {
  std::vector<int64_t> args;
  train::TrainParams params;
  int64_t P = 0;
  std::vector<std::vector<int32_t>> rows;
  ThreadPool pool{0};
  std::unique_ptr<Backend> be;
  train::TrainWorkspace ws;  // reused across steps, as a training loop does
  train::GradResult r;
  std::unique_ptr<train::AdamW> adam;  // made by the first BM_TrainStep call
  double flops_per_token = 0;          // 6·P plus the WKV's
  double fma_peak_gflop_s = 0;
};

// Kept per shape, so that --benchmark_enable_random_interleaving alternates fp32 and bf16 steps
// in one run (the shared host's speed drifts from minute to minute) without rebuilding either.
GradSetup& setup_for(const std::vector<int64_t>& args) {
  static std::map<std::vector<int64_t>, std::unique_ptr<GradSetup>> made;
  std::unique_ptr<GradSetup>& s = made[args];
  if (s) return *s;
  // (RWKV7_ISA, read by bench_main.cpp, caps the kernels: e.g. avx2 gives the fp32 fallback
  // of bf16 products and the AVX2 product kernel.)
  auto fresh = std::make_unique<GradSetup>();
  fresh->args = args;
  fresh->be =
      make_cpu_backend(&fresh->pool, args[4] ? ProductPrecision::BF16 : ProductPrecision::F32);
  InitSpec spec;
  spec.n_layer = args[0];
  spec.n_embd = args[1];
  spec.vocab_size = args[2];
  spec.seed = 1;
  InitializedModel m = init_model(spec);
  TensorFile f;
  f.path = "init";
  for (const auto& [name, view] : m.tensors) f.add(name, view);
  fresh->params = train::params_from_file(f);
  if (args[4] == 2) fresh->params.keep_bf16_weights();
  for (const auto& [name, t] : fresh->params.tensors)
    if (name != "emb.weight") fresh->P += int64_t(t.data.size());
  std::mt19937 rng(7);
  fresh->rows.resize(1);
  for (int64_t i = 0; i <= args[3]; ++i)
    fresh->rows[0].push_back(int32_t(rng() % uint32_t(spec.vocab_size)));
  // The WKV: per head and token ~4·N² multiply-adds forward (8·N² FLOPs), counted 3x for
  // forward + backward as the products are.
  const int64_t N = 64, H = args[1] / N;
  fresh->flops_per_token = 6.0 * double(fresh->P) + 3.0 * 8.0 * double(N * N * H * args[0]);
  fresh->fma_peak_gflop_s = probe_cpu_limits(fresh->pool).fma_gflop_s;
  // warm-up: first-touch faults
  train::loss_and_gradients(fresh->params, fresh->rows, *fresh->be, &fresh->pool, {}, fresh->ws,
                            fresh->r);
  s = std::move(fresh);
  return *s;
}

// GFLOP/s, and as a fraction of the FMA peak measured on the same threads just before.
void report(benchmark::State& st, const GradSetup& g, double tokens) {
  st.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
  st.counters["GFLOP/s"] =
      benchmark::Counter(tokens * g.flops_per_token / 1e9, benchmark::Counter::kIsRate);
  st.counters["of_peak"] = benchmark::Counter(tokens * g.flops_per_token / 1e9 / g.fma_peak_gflop_s,
                                              benchmark::Counter::kIsRate);
  st.counters["peak"] = g.fma_peak_gflop_s;
  st.counters["P(M)"] = double(g.P) / 1e6;
  st.counters["threads"] = g.pool.size();
}

void BM_Grad(benchmark::State& st) {
  GradSetup& g = setup_for({st.range(0), st.range(1), st.range(2), st.range(3), st.range(4)});
  const train::TrainParams& params = g.params;
  const auto& rows = g.rows;
  const int64_t T = st.range(3);
  ThreadPool& pool = g.pool;
  train::GradResult& r = g.r;
  for (auto _ : st) {
    train::loss_and_gradients(params, rows, *g.be, &pool, {}, g.ws, r);
    benchmark::DoNotOptimize(r.loss);
  }
  report(st, g, double(T) * double(st.iterations()));
}

// A whole training step as `rwkv7 train` takes it: forward + backward, the gradient norm
// clipped, AdamW (the measure: 6·P FLOPs per token plus the WKV's over the step).
void BM_TrainStep(benchmark::State& st) {
  GradSetup& g = setup_for({st.range(0), st.range(1), st.range(2), st.range(3), st.range(4)});
  const int64_t T = st.range(3);
  if (!g.adam) g.adam = std::make_unique<train::AdamW>(g.params.tensors, train::AdamWOptions{});
  train::AdamW& adam = *g.adam;
  for (auto _ : st) {
    train::loss_and_gradients(g.params, g.rows, *g.be, &g.pool, {}, g.ws, g.r);
    const double norm = train::grad_norm(g.r.grads, &g.pool);  // as rwkv7 train clips
    adam.step(g.params.tensors, g.r.grads, 1e-4, &g.pool, train::clip_scale(norm, 1.0),
              g.params.bf16_weights.empty() ? nullptr : &g.params.bf16_weights);
    benchmark::DoNotOptimize(g.r.loss);
  }
  report(st, g, double(T) * double(st.iterations()));
}
BENCHMARK(BM_TrainStep)
    ->ArgNames({"L", "C", "V", "T", "bf16"})
    ->Args({12, 768, 65536, 512, 0})
    ->Args({12, 768, 65536, 512, 1})
    ->Args({12, 768, 65536, 512, 2})
    // Shorter rows: each weight value serves fewer positions, so packing the weights weighs more.
    ->Args({12, 768, 65536, 128, 0})
    ->Args({12, 768, 65536, 128, 1})
    ->Args({12, 768, 65536, 128, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(4.0);

BENCHMARK(BM_Grad)
    ->ArgNames({"L", "C", "V", "T", "bf16"})
    ->Args({6, 256, 65536, 512, 0})
    ->Args({6, 256, 256, 512, 0})
    ->Args({12, 768, 65536, 512, 0})
    ->Args({12, 768, 65536, 512, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(4.0);

}  // namespace
}  // namespace rwkv7
