// Q6_K panels (AVX2 and AVX-512 without VNNI: 8 outputs): packing keeps every level, scale and
// super-block coefficient (the scalar twin over the panels equals the product computed from
// core's dequantised rows), the kernel equals it for every tail of positions and a ragged last
// panel on each Highway target that has it, including the levels 0 and 63 against activations
// ±127 (the int16 lanes' extremes), and the cpu backend's products over the panels equal the same
// product with Q8_0-quantised positions.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cpu/q6k_panels_kernels.hpp"
#include "backends/cpu/q8_panels_kernels.hpp"
#include "core/quant.hpp"
#include "core/thread_pool.hpp"
#include "every_target.hpp"
#include "hwy/targets.h"
#include "ops/int_panels_support.hpp"
#include "rwkv7/error.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

std::vector<unsigned char> quantized(const std::vector<float>& v, int64_t rows, int64_t cols) {
  return testing::quantized_rows(DType::Q6_K, v, rows, cols);
}

// Σ_b |x.d|·|d|·Σ_i |sc·(level - 32)·q_x|: the scale of the fp32 rounding.
double magnitude(const std::vector<unsigned char>& raw, int64_t cols, const std::vector<int8_t>& q,
                 const std::vector<float>& d, int64_t o, int64_t t) {
  const size_t rb = row_bytes(DType::Q6_K, cols), nb = size_t(cols / 32);
  double s = 0;
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* sup = raw.data() + size_t(o) * rb + (b / 8) * kQ6KBytes;
    const auto* sc = reinterpret_cast<const int8_t*>(sup + kQ6KScalesAt);
    double dot = 0;
    for (size_t i = 0; i < 32; ++i) {
      const int e = int(32 * (b % 8) + i);
      dot += std::fabs(double(sc[e / 16]) * (q6k_level(sup, e) - 32) *
                       double(q[size_t(t * cols) + b * 32 + i]));
    }
    s += std::fabs(double(d[size_t(t) * nb + b])) * std::fabs(double(f16_at(sup + kQ6KDAt))) * dot;
  }
  return s;
}

TEST(Q6KPanels, KernelEqualsScalarTwinAndTheRowMajorBlocksOnEveryTarget) {
  int targets_run = 0;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    if (!cpu::q6k_panels_supported()) continue;
    ++targets_run;
    std::mt19937 rng(51);
    for (int64_t rows : {1, 7, 8, 9, 17, 45}) {
      for (int64_t cols : {256, 768}) {
        auto v = testing::randn(size_t(rows * cols), rng);
        // Sub-blocks with the extreme levels 0 and 63 beside activations of ±127 (below).
        for (int64_t i = 0; i < 16; ++i) v[size_t(i)] = i % 2 ? 4.0f : -4.0f;
        for (int64_t i = 16; i < 32; ++i) v[size_t(i)] = i % 2 ? -4.0f : 4.0f;
        v[40] = -9.0f;  // a negative scale's sub-block
        const auto raw = quantized(v, rows, cols);
        const size_t w = cpu::q6k_panel_width(), np = (size_t(rows) + w - 1) / w;
        std::vector<uint8_t> panels(cpu::q6k_panels_bytes(size_t(rows), size_t(cols)));
        cpu::pack_q6k_panels(raw.data(), size_t(rows), size_t(cols), 0, np, panels.data());
        for (int64_t T : {1, 2, 3, 4, 5, 11}) {
          auto x = testing::randn(size_t(T * cols), rng);
          // ±127 with the signs that make every product of the first block's extreme levels
          // (0 and 63: -32 and 31 after the offset) largest in one direction.
          for (int64_t i = 0; i < 32; ++i) x[size_t(i)] = (i % 2 == 0) == (i < 16) ? -3.0f : 3.0f;
          const size_t nb = size_t(cols / 32);
          std::vector<int8_t> q(size_t(T * cols));
          std::vector<float> d(size_t(T) * nb);
          std::vector<int32_t> corr(size_t(T) * nb);
          cpu::quantize_q8_positions(x.data(), size_t(T), size_t(cols), q.data(), d.data(),
                                     corr.data());
          std::vector<float> y(size_t(T * rows) + 1, NAN);
          y.back() = 42.0f;  // nothing written past the outputs
          std::vector<double> twin(size_t(T * rows));
          cpu::gemm_q6k_panels(panels.data(), size_t(rows), size_t(cols), 0, np, q.data(), d.data(),
                               corr.data(), size_t(T), y.data(), size_t(rows));
          cpu::gemm_q6k_panels_scalar(panels.data(), size_t(rows), size_t(cols), 0, np, q.data(),
                                      d.data(), size_t(T), twin.data(), size_t(rows));
          const auto want = testing::product_from_blocks(DType::Q6_K, raw, rows, cols, x, T);
          EXPECT_EQ(y.back(), 42.0f);
          for (int64_t t = 0; t < T; ++t)
            for (int64_t o = 0; o < rows; ++o) {
              const size_t i = size_t(t * rows + o);
              const double mag = magnitude(raw, cols, q, d, o, t);
              // The dequantised weights are d·sc·(q - 32) rounded to fp32.
              ASSERT_NEAR(twin[i], want[i], 1e-6 * (1 + mag)) << "packing, at " << i;
              // Exact int32 block sums; fp32 scaling and accumulation of cols / 32 terms.
              ASSERT_NEAR(y[i], want[i], 1e-5 * (1 + mag))
                  << hwy::TargetName(target) << " " << rows << "x" << cols << " T " << T << " at "
                  << i;
            }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
#if defined(__x86_64__)
  if (hwy::SupportedTargets() & HWY_AVX2) {
    EXPECT_GT(targets_run, 0) << "AVX2 ran no panel kernel";
  }
#endif
  if (targets_run == 0) GTEST_SKIP() << "no Highway target here has the Q6_K panel kernel";
}

// The backend over the panels against the dequantised rows times the quantised positions (the
// K-quant row kernels' math), for every product shape.
TEST(Q6KPanels, CpuBackendProductsEqualTheRowKernelsMath) {
  int targets_run = 0;
  testing::on_every_target([&] {
    if (!cpu::q6k_panels_supported()) return;
    ++targets_run;
    testing::expect_backend_products_from_blocks(DType::Q6_K, 130, 13, 512, 1e-4, 52);
  });
  if (targets_run == 0) GTEST_SKIP() << "no Highway target here has the Q6_K panel kernel";
}

// Panels made for one ISA's kernels (8 outputs on AVX2, none with VNNI or below AVX2: the row
// kernels) are refused, not misread, after the ISA changes.
TEST(Q6KPanels, PanelsOfAnotherIsaAreAnErrorNotWrongProducts) {
  const auto two = testing::targets_of_two_panel_layouts(cpu::q6k_panel_width);
  if (two.size() < 2) GTEST_SKIP() << "one panel layout on this machine";
  testing::expect_panels_of_another_isa_refused(DType::Q6_K, two[0], two[1], 20, 256, 53);
}

}  // namespace
}  // namespace rwkv7
