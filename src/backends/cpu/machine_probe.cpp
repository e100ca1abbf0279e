// The CPU limits probe (backends/machine_probe.hpp) on the CPU backend's SIMD kernels.
#include "backends/machine_probe.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "backends/cpu/kernels.hpp"
#include "core/thread_pool.hpp"

namespace rwkv7 {
namespace {

double best_seconds(int reps, const std::function<void()>& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

CpuLimits probe_cpu_limits(ThreadPool& pool) {
  CpuLimits m;
  // Bandwidth: sum 512 MiB of floats with the SIMD dot kernel (reads only; the other operand is
  // a small cached vector), split across the threads.
  const size_t n = size_t(512) << 20 >> 2, piece = 1 << 14;
  std::vector<float> big(n, 1.0f), ones(piece, 1.0f);
  std::vector<float> sink(size_t(pool.size()) * 16, 0.0f);
  pool.parallel_for(int64_t(n / piece), 1, [&](int64_t b, int64_t e) {  // fault pages in
    for (int64_t i = b; i < e; ++i) std::memset(&big[size_t(i) * piece], 0, piece * 4);
  });
  const double t = best_seconds(3, [&] {
    pool.parallel_for(int64_t(n / piece), 1, [&](int64_t b, int64_t e) {
      float acc = 0;
      for (int64_t i = b; i < e; ++i) {
        float out;
        cpu::dot_rows(ones.data(), &big[size_t(i) * piece], piece, 1, &out, 1);
        acc += out;
      }
      sink[size_t(b % int64_t(sink.size()))] += acc;
    });
  });
  m.read_gb_s = double(n) * 4 / t / 1e9;
  // FMA: independent chains in registers, one per thread.
  std::vector<double> flops(size_t(pool.size()), 0.0);
  const double tf = best_seconds(3, [&] {
    pool.parallel_for(pool.size(), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) flops[size_t(i)] = cpu::fma_peak(20000000, &sink[size_t(i)]);
    });
  });
  double total = 0;
  for (double f : flops) total += f;
  m.fma_gflop_s = total / tf / 1e9;
  return m;
}

}  // namespace rwkv7
