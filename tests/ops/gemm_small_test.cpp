// The decode-batch product kernel (cpu::small_gemm) against a scalar sum on every position
// count it takes (each vector count and row count, with remainders).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/gemm_small_kernels.hpp"
#include "hwy/aligned_allocator.h"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

TEST(GemmSmall, EqualsAScalarSumForEveryPositionCount) {
  std::mt19937 rng(11);
  const size_t K = 37, ldw = K + 3;
  for (size_t T = 1; T <= cpu::small_gemm_max_positions(); T += (T < 20 ? 1 : 7)) {
    const size_t mr = cpu::small_gemm_rows(T);
    ASSERT_GE(mr, 1u);
    for (size_t rows : {size_t(1), mr / 2 + 1, mr}) {
      if (rows > mr) continue;
      const auto w = testing::randn(rows * ldw, rng), x = testing::randn(T * K, rng);
      auto xp = hwy::AllocateAligned<float>(K * cpu::small_gemm_width(T));
      cpu::small_gemm_pack_x(x.data(), K, T, K, xp.get());
      const size_t ldr = T + 2;
      std::vector<float> y(rows * ldr, -7.0f);
      cpu::small_gemm(w.data(), ldw, rows, xp.get(), K, T, y.data(), ldr);
      for (size_t r = 0; r < rows; ++r) {
        for (size_t t = 0; t < ldr; ++t) {
          if (t >= T) {
            ASSERT_EQ(y[r * ldr + t], -7.0f) << "wrote past the positions";
            continue;
          }
          double want = 0;
          for (size_t i = 0; i < K; ++i) want += double(w[r * ldw + i]) * x[t * K + i];
          ASSERT_NEAR(y[r * ldr + t], want, 1e-5 * std::sqrt(double(K)) + 1e-5)
              << "T " << T << " rows " << rows << " r " << r << " t " << t;
        }
      }
    }
  }
}

}  // namespace
}  // namespace rwkv7
