// The training accumulate-product kernel (SIMD, register-blocked) against its scalar twin, and
// the cpu backend's threaded gemm_acc against the reference backend, on random shapes and
// strides (both A layouts: rows of dY, and dYᵀ read down columns).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/gemm_train_kernels.hpp"
#include "core/thread_pool.hpp"
#include "ops/ops.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

// fp32 sums of K unit-variance products: error ~ sqrt(K) · 2^-24 · |terms|.
double tol(int64_t K) { return 1e-6 * std::sqrt(double(K)) * 16 + 1e-5; }

TEST(GemmTrain, TileEqualsScalarTwin) {
  std::mt19937 rng(3);
  const int64_t shapes[][3] = {{1, 1, 1},   {4, 16, 8},    {7, 65, 33},  {13, 64, 300},
                               {9, 130, 5}, {64, 96, 600}, {5, 17, 257}, {33, 200, 64}};
  for (auto [M, N, K] : shapes) {
    for (bool transposed : {false, true}) {
      // A [M, K] row-major, or stored as [K, M] (transposed view, a_m = 1).
      const auto a = testing::randn(size_t(M * K), rng), b = testing::randn(size_t(K * N + 3), rng);
      const int64_t a_m = transposed ? 1 : K, a_k = transposed ? M : 1;
      const int64_t ldc = N + 2;
      const auto c0 = testing::randn(size_t(M * ldc), rng);
      auto want = c0, got = c0;
      const int64_t n0 = N > 3 ? 1 : 0, m0 = M > 2 ? 1 : 0;
      cpu::gemm_acc_tile_scalar(a.data(), a_m, a_k, b.data(), N, want.data(), ldc, m0, M, n0, N, K);
      cpu::gemm_acc_tile(a.data(), a_m, a_k, b.data(), N, got.data(), ldc, m0, M, n0, N, K);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], tol(K)) << M << "x" << N << "x" << K << " at " << i;
    }
  }
}

TEST(GemmTrain, CpuBackendEqualsReference) {
  std::mt19937 rng(5);
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  auto ref = make_reference_backend();
  const int64_t shapes[][3] = {
      {512, 64, 256}, {3, 256, 40}, {256, 32, 512}, {40, 1000, 17}, {100, 7, 9}};
  for (auto [M, N, K] : shapes) {
    for (bool transposed : {false, true}) {
      const auto a = testing::randn(size_t(M * K), rng), b = testing::randn(size_t(K * N), rng);
      const int64_t a_m = transposed ? 1 : K, a_k = transposed ? M : 1;
      const auto c0 = testing::randn(size_t(M * N), rng);
      auto want = c0, got = c0;
      ref->gemm_acc({M, N, K, a.data(), a_m, a_k, b.data(), N, want.data(), N});
      cpu->gemm_acc({M, N, K, a.data(), a_m, a_k, b.data(), N, got.data(), N});
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], tol(K)) << M << "x" << N << "x" << K << " at " << i;
    }
  }
}

}  // namespace
}  // namespace rwkv7
