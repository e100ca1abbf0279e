// Weight panels (packed once at load; bf16 / f16 bits or fp32): every weight lands at its panel
// place with zero padding, widening is exact, and the one-position product over panels matches
// a double reference within the fp32 rounding bound, on shapes with ragged last panels and odd
// widths.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/gemm_packed_kernels.hpp"
#include "backends/cpu/weight_panels_kernels.hpp"
#include "core/dtype.hpp"
#include "every_target.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

std::vector<uint16_t> random_bits(DType t, size_t n, std::mt19937& rng) {
  std::vector<uint16_t> out(n);
  const std::vector<float> f = testing::randn(n, rng);
  for (size_t i = 0; i < n; ++i) out[i] = t == DType::F16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
  return out;
}

float value_of(DType t, uint16_t bits) {
  return t == DType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits);
}

size_t panels_of(size_t rows) { return (rows + cpu::panel_width() - 1) / cpu::panel_width(); }

TEST(WeightPanels, EveryWeightAtItsPlaceAndPaddingZero) {
  testing::on_every_target([&] {
    std::mt19937 rng(11);
    const size_t nr = cpu::panel_width();
    for (const DType t : {DType::BF16, DType::F16})
      for (size_t rows : {size_t(1), nr - 1, nr, nr + 3, 3 * nr}) {
        for (size_t cols : {size_t(1), size_t(7), size_t(64), size_t(130), size_t(300)}) {
          auto w = random_bits(t, rows * cols, rng);
          // Bit patterns a float detour could change: infinities, -0, subnormals, (bf16) a NaN.
          const uint16_t special[] = {uint16_t(t == DType::F16 ? 0x7c00 : 0x7f80), 0x8000, 0x0001,
                                      0x83ff, uint16_t(t == DType::F16 ? 0xfc00 : 0x7fc1)};
          for (size_t i = 0; i < 5 && i < w.size(); ++i) w[w.size() - 1 - i] = special[i];
          const auto wf = testing::randn(rows * cols, rng);
          std::vector<uint16_t> panels(cpu::panels_size(rows, cols), 0xffff);
          std::vector<float> fpanels(panels.size(), NAN);
          ASSERT_EQ(panels.size(), panels_of(rows) * nr * cols);
          // Two calls over disjoint panel ranges fill everything (threads split them so).
          const size_t half = panels_of(rows) / 2;
          cpu::pack_panels(t, w.data(), rows, cols, 0, half, panels.data());
          cpu::pack_panels(t, w.data(), rows, cols, half, panels_of(rows), panels.data());
          cpu::pack_panels(wf.data(), rows, cols, 0, half, fpanels.data());
          cpu::pack_panels(wf.data(), rows, cols, half, panels_of(rows), fpanels.data());
          for (size_t p = 0; p < panels_of(rows); ++p)
            for (size_t i = 0; i < cols; ++i)
              for (size_t j = 0; j < nr; ++j) {
                const size_t o = p * nr + j, at = (p * cols + i) * nr + j;
                ASSERT_EQ(panels[at], o < rows ? w[o * cols + i] : 0)
                    << dtype_name(t) << " " << rows << "x" << cols << " p " << p << " i " << i
                    << " j " << j;
                ASSERT_EQ(fpanels[at], o < rows ? wf[o * cols + i] : 0.0f)
                    << rows << "x" << cols << " p " << p << " i " << i << " j " << j;
              }
        }
      }
  });
}

TEST(WeightPanels, WideningIsExact) {
  testing::on_every_target([&] {
    std::mt19937 rng(12);
    for (const DType t : {DType::BF16, DType::F16})
      for (size_t n : {size_t(1), size_t(15), size_t(16), size_t(17), size_t(1000)}) {
        auto h = random_bits(t, n, rng);
        if (n == 1000 && t == DType::F16) {  // subnormals, infinities and the largest finite
          h[0] = 0x0001, h[1] = 0x83ff, h[2] = 0x7c00, h[3] = 0xfc00, h[4] = 0x7bff;
        }
        std::vector<float> out(n, NAN), burst(n, NAN);
        const auto widen = t == DType::F16 ? cpu::widen_f16 : cpu::widen_bf16;
        widen(h.data(), n, out.data(), nullptr);
        widen(h.data(), n, burst.data(), h.data());  // with the prefetch of a next block
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(out[i], value_of(t, h[i])) << dtype_name(t) << " " << n << " " << i;
          ASSERT_EQ(burst[i], out[i]) << dtype_name(t) << " " << n << " " << i;
        }
      }
  });
}

TEST(WeightPanels, OnePositionProductMatchesDoubleReference) {
  testing::on_every_target([&] {
    std::mt19937 rng(13);
    const size_t nr = cpu::panel_width();
    for (const DType t : {DType::BF16, DType::F16, DType::F32})
      for (size_t rows : {size_t(1), nr + 5, 4 * nr - 1}) {
        for (size_t cols : {size_t(1), size_t(2), size_t(33), size_t(768)}) {
          SCOPED_TRACE(dtype_name(t));
          const auto bits = random_bits(t, rows * cols, rng);
          std::vector<float> w(rows * cols);  // the weights' values
          for (size_t i = 0; i < w.size(); ++i) w[i] = value_of(t, bits[i]);
          const auto x = testing::randn(cols, rng);
          std::vector<uint16_t> panels(cpu::panels_size(rows, cols));
          std::vector<float> fpanels(panels.size());
          cpu::pack_panels(t == DType::F16 ? DType::F16 : DType::BF16, bits.data(), rows, cols, 0,
                           panels_of(rows), panels.data());
          cpu::pack_panels(w.data(), rows, cols, 0, panels_of(rows), fpanels.data());
          std::vector<float> y(rows + 1, NAN);
          y[rows] = 42.0f;  // the padded last panel must not write past `rows`
          const void* in =
              t == DType::F32 ? static_cast<const void*>(fpanels.data()) : panels.data();
          cpu::gemv_panels(t, in, rows, cols, 0, panels_of(rows), x.data(), y.data());
          EXPECT_EQ(y[rows], 42.0f);
          for (size_t o = 0; o < rows; ++o) {
            double want = 0, magnitude = 0;
            for (size_t i = 0; i < cols; ++i) {
              const double term = double(w[o * cols + i]) * double(x[i]);
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
