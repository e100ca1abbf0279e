// The packed product kernels: panel packing (register transpose + edges, and the row copy of
// an input-major source) and the broadcast micro-kernel, with X as rows or transposed, against
// the scalar twin on random shapes, both for a fresh and an accumulated output, with row
// strides wider than the rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backends/cpu/gemm_packed_kernels.hpp"
#include "hwy/aligned_allocator.h"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

TEST(GemmPacked, PackPlacesEveryWeightAndZeroPadsTheEdge) {
  std::mt19937 rng(5);
  const size_t nr = cpu::panel_width();
  for (size_t nn : {size_t(1), size_t(15), size_t(16), size_t(33), nr}) {
    if (nn > nr) continue;
    for (size_t kc : {size_t(1), size_t(16), size_t(37), size_t(128)}) {
      const size_t ldr = kc + 5;
      const auto w = testing::randn(nn * ldr, rng);
      auto panel = hwy::AllocateAligned<float>(kc * nr);
      for (size_t i = 0; i < kc * nr; ++i) panel[i] = NAN;
      cpu::pack_panel(w.data(), ldr, nn, kc, w.data() + kc, panel.get());
      for (size_t i = 0; i < kc; ++i)
        for (size_t j = 0; j < nr; ++j)
          ASSERT_EQ(panel[i * nr + j], j < nn ? w[j * ldr + i] : 0.0f)
              << "nn " << nn << " kc " << kc << " i " << i << " j " << j;
    }
  }
}

// bf16 rows are widened while packed: each panel value is exactly the fp32 the bf16 stands for.
TEST(GemmPacked, Bf16PackWidensExactly) {
  std::mt19937 rng(6);
  const size_t nr = cpu::panel_width();
  for (size_t nn : {size_t(1), size_t(15), size_t(16), size_t(33), nr}) {
    if (nn > nr) continue;
    for (size_t kc : {size_t(1), size_t(16), size_t(37), size_t(128)}) {
      const size_t ldr = kc + 5;
      std::vector<uint16_t> w(nn * ldr);
      for (auto& v : w) v = uint16_t(rng());
      for (size_t i = 0; i < w.size(); i += 7) w[i] = 0x7f80;  // +inf stays inf
      auto panel = hwy::AllocateAligned<float>(kc * nr);
      for (size_t i = 0; i < kc * nr; ++i) panel[i] = NAN;
      cpu::pack_panel_bf16(w.data(), ldr, nn, kc, w.data() + kc, panel.get());
      for (size_t i = 0; i < kc; ++i)
        for (size_t j = 0; j < nr; ++j) {
          float want = 0.0f;
          if (j < nn) {
            const uint32_t bits = uint32_t(w[j * ldr + i]) << 16;
            std::memcpy(&want, &bits, 4);
          }
          const float got = panel[i * nr + j];
          if (std::isnan(want)) {
            ASSERT_TRUE(std::isnan(got));
          } else {
            ASSERT_EQ(got, want) << "nn " << nn << " kc " << kc << " i " << i << " j " << j;
          }
        }
    }
  }
}

TEST(GemmPacked, InputMajorPackCopiesRowsAndZeroPadsTheEdge) {
  std::mt19937 rng(8);
  const size_t nr = cpu::panel_width();
  for (size_t nn : {size_t(1), size_t(15), size_t(16), size_t(33), nr}) {
    if (nn > nr) continue;
    for (size_t kc : {size_t(1), size_t(16), size_t(37), size_t(128)}) {
      const size_t lds = nn + 3;
      const auto src = testing::randn(kc * lds, rng);
      auto panel = hwy::AllocateAligned<float>(kc * nr);
      for (size_t i = 0; i < kc * nr; ++i) panel[i] = NAN;
      cpu::pack_panel_input_major(src.data(), lds, nn, kc, panel.get());
      for (size_t i = 0; i < kc; ++i)
        for (size_t j = 0; j < nr; ++j)
          ASSERT_EQ(panel[i * nr + j], j < nn ? src[i * lds + j] : 0.0f)
              << "nn " << nn << " kc " << kc << " i " << i << " j " << j;
    }
  }
}

TEST(GemmPacked, PanelProductEqualsScalarTwin) {
  std::mt19937 rng(7);
  const size_t nr = cpu::panel_width();
  const size_t shapes[][3] = {{1, 1, 1}, {5, 3, 16}, {6, 64, 128}, {13, 17, 37}, {40, 64, 1}};
  for (auto [T, nn_want, kc] : shapes) {
    const size_t nn = std::min(nn_want, nr);
    const auto w = testing::randn(nn * kc, rng);
    auto panel = hwy::AllocateAligned<float>(kc * nr);
    cpu::pack_panel(w.data(), kc, nn, kc, nullptr, panel.get());
    for (bool x_transposed : {false, true}) {
      // X [T, kc] rows ldx apart, or Xᵀ [kc, T] rows ldx apart.
      const size_t ldx = x_transposed ? T + 2 : kc + 3, ldy = nn + 7;
      const auto x = testing::randn((x_transposed ? kc : T) * ldx, rng);
      for (bool accumulate : {false, true}) {
        const auto y0 = testing::randn(T * ldy, rng);
        auto want = y0, got = y0;
        cpu::gemm_panel_scalar(x.data(), ldx, x_transposed, T, panel.get(), nr, kc, want.data(),
                               ldy, nn, accumulate);
        const auto kernel = x_transposed ? cpu::gemm_panel_xt : cpu::gemm_panel;
        kernel(x.data(), ldx, T, panel.get(), kc, got.data(), ldy, nn, accumulate);
        // fp32 sums of kc unit-variance products in another order: error ~ sqrt(kc) · 2^-24.
        const double tol = 1e-6 * std::sqrt(double(kc)) * 16 + 1e-5;
        for (size_t t = 0; t < T; ++t) {
          for (size_t j = 0; j < ldy; ++j) {
            const size_t e = t * ldy + j;
            if (j >= nn) {
              ASSERT_EQ(got[e], y0[e]) << "wrote outside the panel: t " << t << " j " << j;
            } else {
              ASSERT_NEAR(got[e], want[e], tol)
                  << "T " << T << " nn " << nn << " kc " << kc << " xt " << x_transposed;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace rwkv7
