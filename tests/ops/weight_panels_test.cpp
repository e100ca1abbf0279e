// bf16 weight panels (packed once at load): every weight lands at its panel place with zero
// padding, widening is exact, and the one-position product over panels matches a double
// reference within the fp32 rounding bound, on shapes with ragged last panels and odd widths.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/gemm_packed_kernels.hpp"
#include "backends/cpu/weight_panels_kernels.hpp"
#include "core/dtype.hpp"
#include "hwy/targets.h"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng) {
  std::vector<uint16_t> out(n);
  const std::vector<float> f = testing::randn(n, rng);
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(f[i]);
  return out;
}

// Runs fn with each compiled target the CPU supports (AVX2 and AVX-512 panels differ in width).
template <class Fn>
void on_every_target(Fn&& fn) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    fn();
  }
  hwy::SetSupportedTargetsForTest(0);
}

size_t panels_of(size_t rows) { return (rows + cpu::panel_width() - 1) / cpu::panel_width(); }

TEST(WeightPanels, EveryWeightAtItsPlaceAndPaddingZero) {
  on_every_target([&] {
    std::mt19937 rng(11);
    const size_t nr = cpu::panel_width();
    for (size_t rows : {size_t(1), nr - 1, nr, nr + 3, 3 * nr}) {
      for (size_t cols : {size_t(1), size_t(7), size_t(64), size_t(130)}) {
        const auto w = random_bf16(rows * cols, rng);
        std::vector<uint16_t> panels(cpu::bf16_panels_size(rows, cols), 0xffff);
        ASSERT_EQ(panels.size(), panels_of(rows) * nr * cols);
        // Two calls over disjoint panel ranges fill everything (threads split them so).
        const size_t half = panels_of(rows) / 2;
        cpu::pack_bf16_panels(w.data(), rows, cols, 0, half, panels.data());
        cpu::pack_bf16_panels(w.data(), rows, cols, half, panels_of(rows), panels.data());
        for (size_t p = 0; p < panels_of(rows); ++p)
          for (size_t i = 0; i < cols; ++i)
            for (size_t j = 0; j < nr; ++j) {
              const size_t o = p * nr + j;
              ASSERT_EQ(panels[(p * cols + i) * nr + j], o < rows ? w[o * cols + i] : 0)
                  << rows << "x" << cols << " p " << p << " i " << i << " j " << j;
            }
      }
    }
  });
}

TEST(WeightPanels, WideningIsExact) {
  on_every_target([&] {
    std::mt19937 rng(12);
    for (size_t n : {size_t(1), size_t(15), size_t(16), size_t(17), size_t(1000)}) {
      const auto h = random_bf16(n, rng);
      std::vector<float> out(n, NAN);
      cpu::widen_bf16(h.data(), n, out.data());
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], bf16_to_f32(h[i])) << n << " " << i;
    }
  });
}

TEST(WeightPanels, OnePositionProductMatchesDoubleReference) {
  on_every_target([&] {
    std::mt19937 rng(13);
    const size_t nr = cpu::panel_width();
    for (size_t rows : {size_t(1), nr + 5, 4 * nr - 1}) {
      for (size_t cols : {size_t(1), size_t(2), size_t(33), size_t(768)}) {
        const auto w = random_bf16(rows * cols, rng);
        const auto x = testing::randn(cols, rng);
        std::vector<uint16_t> panels(cpu::bf16_panels_size(rows, cols));
        cpu::pack_bf16_panels(w.data(), rows, cols, 0, panels_of(rows), panels.data());
        std::vector<float> y(rows + 1, NAN);
        y[rows] = 42.0f;  // the padded last panel must not write past `rows`
        cpu::gemv_bf16_panels(panels.data(), rows, cols, 0, panels_of(rows), x.data(), y.data());
        EXPECT_EQ(y[rows], 42.0f);
        for (size_t o = 0; o < rows; ++o) {
          double want = 0, magnitude = 0;
          for (size_t i = 0; i < cols; ++i) {
            const double term = double(bf16_to_f32(w[o * cols + i])) * double(x[i]);
            want += term;
            magnitude += std::abs(term);
          }
          // fp32 accumulation in any order: |error| ≤ cols · 2^-24 · Σ|terms| (loose bound).
          const double tol = double(cols) * std::ldexp(1.0, -24) * magnitude + 1e-30;
          ASSERT_NEAR(y[o], want, tol) << rows << "x" << cols << " output " << o;
        }
      }
    }
  });
}

}  // namespace
}  // namespace rwkv7
