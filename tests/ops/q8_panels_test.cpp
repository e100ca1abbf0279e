// Q8_0 panels (AVX2: 8 outputs, signed bytes; AVX-512 VNNI: 32, offset bytes): packing keeps every
// weight and scale (the scalar twin over the panels equals the product computed from the
// row-major blocks), the kernel equals it for every tail of positions, a ragged last panel and
// the extreme bytes (-128, ±127) on each Highway target that has it, and the cpu backend's
// products over panels (one position, a few, a batch, several in one region) equal the product
// of the dequantised weights with the Q8_0-quantised positions, the semantics of the
// one-position quantised product.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/backend.hpp"
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
  return testing::quantized_rows(DType::Q8_0, v, rows, cols);
}

TEST(Q8Panels, KernelEqualsScalarTwinAndTheRowMajorBlocksOnEveryTarget) {
  int targets_run = 0;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    if (!cpu::q8_panels_supported()) continue;
    ++targets_run;
    const size_t width = cpu::q8_panel_width();
    std::mt19937 rng(31);
    for (int64_t rows : {1, 7, 8, 9, 31, 32, 33, 100}) {
      for (int64_t cols : {32, 96, 256}) {
        auto raw = quantized(testing::randn(size_t(rows * cols), rng), rows, cols);
        // Extreme bytes in the first block of row 0: -128 (a file may hold it; quantize_row
        // never makes it), 127 and -127, against activations of ±127 below.
        for (size_t i = 0; i < 32; ++i)
          raw[2 + i] = uint8_t(i % 3 == 0 ? 0x80 : i % 3 == 1 ? 127 : 0x81);
        const size_t np = (size_t(rows) + width - 1) / width;
        std::vector<uint8_t> panels(cpu::q8_panels_bytes(size_t(rows), size_t(cols)));
        cpu::pack_q8_panels(raw.data(), size_t(rows), size_t(cols), 0, np, panels.data());
        for (int64_t T : {1, 2, 3, 4, 5, 6, 7, 13}) {
          auto x = testing::randn(size_t(T * cols), rng);
          for (int64_t i = 0; i < 32; ++i) x[size_t(i)] = i % 2 ? -3.0f : 3.0f;  // ±127
          const size_t nb = size_t(cols / 32);
          std::vector<int8_t> q(size_t(T * cols));
          std::vector<float> d(size_t(T) * nb);
          std::vector<int32_t> corr(size_t(T) * nb);
          cpu::quantize_q8_positions(x.data(), size_t(T), size_t(cols), q.data(), d.data(),
                                     corr.data());
          std::vector<float> y(size_t(T * rows) + 1, NAN);
          y.back() = 42.0f;  // nothing written past the outputs
          std::vector<double> twin(size_t(T * rows));
          cpu::gemm_q8_panels(panels.data(), size_t(rows), size_t(cols), 0, np, q.data(), d.data(),
                              corr.data(), size_t(T), y.data(), size_t(rows));
          cpu::gemm_q8_panels_scalar(panels.data(), size_t(rows), size_t(cols), 0, np, q.data(),
                                     d.data(), corr.data(), size_t(T), twin.data(), size_t(rows));
          const auto want = testing::product_from_blocks(DType::Q8_0, raw, rows, cols, x, T);
          EXPECT_EQ(y.back(), 42.0f);
          for (size_t i = 0; i < twin.size(); ++i) {
            ASSERT_NEAR(twin[i], want[i], 1e-9 * (1 + std::fabs(want[i]))) << "packing, at " << i;
            // Exact block sums; fp32 scaling and accumulation of cols / 32 terms.
            ASSERT_NEAR(y[i], want[i], 1e-5 * (1 + std::fabs(want[i])))
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
  if (targets_run == 0) GTEST_SKIP() << "no Highway target here has the Q8_0 panel kernel";
}

TEST(Q8Panels, CpuBackendProductsUseQuantisedPositions) {
  testing::on_every_target([] {
    if (cpu::q8_panels_supported())
      testing::expect_backend_products_from_blocks(DType::Q8_0, 130, 40, 96, 1e-5, 32);
  });
}

// Panels made for one ISA's kernels are refused, not misread, after the ISA changes.
TEST(Q8Panels, PanelsOfAnotherIsaAreAnErrorNotWrongProducts) {
  const auto two = testing::targets_of_two_panel_layouts(cpu::q8_panel_width);
  if (two.size() < 2) GTEST_SKIP() << "one Q8_0 panel layout on this machine";
  testing::expect_panels_of_another_isa_refused(DType::Q8_0, two[0], two[1], 40, 64, 33);
}

}  // namespace
}  // namespace rwkv7
