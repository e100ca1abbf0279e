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
#include "hwy/targets.h"
#include "rwkv7/error.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

std::vector<unsigned char> quantized(const std::vector<float>& v, int64_t rows, int64_t cols) {
  const size_t rb = row_bytes(DType::Q8_0, cols);
  std::vector<unsigned char> raw(rb * size_t(rows));
  for (int64_t o = 0; o < rows; ++o)
    quantize_row(DType::Q8_0, &v[size_t(o * cols)], raw.data() + size_t(o) * rb, cols);
  return raw;
}

// y[t][o] = Σ_b dw·dx·Σ q_w q_x in double, straight from the row-major blocks.
std::vector<double> from_blocks(const std::vector<unsigned char>& raw, int64_t rows, int64_t cols,
                                const std::vector<float>& x, int64_t T) {
  const size_t rb = row_bytes(DType::Q8_0, cols), nb = size_t(cols / 32);
  std::vector<int8_t> qw(static_cast<size_t>(cols)), qx(static_cast<size_t>(cols));
  std::vector<float> dw(nb), dx(nb);
  std::vector<unsigned char> xb(rb);
  std::vector<double> y(size_t(T * rows));
  for (int64_t t = 0; t < T; ++t) {
    quantize_row_q8_0(&x[size_t(t * cols)], xb.data(), cols);
    unpack_row_i8(DType::Q8_0, xb.data(), qx.data(), dx.data(), cols);
    for (int64_t o = 0; o < rows; ++o) {
      unpack_row_i8(DType::Q8_0, raw.data() + size_t(o) * rb, qw.data(), dw.data(), cols);
      double s = 0;
      for (size_t b = 0; b < nb; ++b) {
        int64_t dot = 0;
        for (size_t i = 0; i < 32; ++i) dot += int64_t(qw[b * 32 + i]) * qx[b * 32 + i];
        s += double(dw[b]) * double(dx[b]) * double(dot);
      }
      y[size_t(t * rows + o)] = s;
    }
  }
  return y;
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
          const auto want = from_blocks(raw, rows, cols, x, T);
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
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    if (!cpu::q8_panels_supported()) continue;
    ThreadPool pool(2);
    auto cpu = make_cpu_backend(&pool);
    std::mt19937 rng(32);
    const int64_t rows = 130, cols = 96, rows2 = 40;
    const auto raw = quantized(testing::randn(size_t(rows * cols), rng, 0.5f), rows, cols);
    const auto raw2 = quantized(testing::randn(size_t(rows2 * cols), rng, 0.5f), rows2, cols);
    Matrix w{DType::Q8_0, rows, cols, raw.data()}, w2{DType::Q8_0, rows2, cols, raw2.data()};
    auto owner = prepare_cpu_panels(w, pool), owner2 = prepare_cpu_panels(w2, pool);
    ASSERT_NE(w.cpu_int_panels, nullptr) << hwy::TargetName(target);
    for (int64_t count : {1, 3, 8, 32}) {
      const auto x = testing::randn(size_t(count * cols), rng);
      const auto want = from_blocks(raw, rows, cols, x, count);
      const auto want2 = from_blocks(raw2, rows2, cols, x, count);
      std::vector<float> y(want.size(), NAN), y_many(want.size(), NAN), y2(want2.size(), NAN);
      cpu->matmul({w, x.data(), y.data(), count});
      const MatmulArgs list[] = {{w, x.data(), y_many.data(), count},
                                 {w2, x.data(), y2.data(), count}};
      cpu->matmul_many(list);
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(y[i], want[i], 1e-5 * (1 + std::fabs(want[i])))
            << hwy::TargetName(target) << " count " << count << " " << i;
        ASSERT_EQ(y_many[i], y[i]) << "count " << count << " " << i;
      }
      for (size_t i = 0; i < want2.size(); ++i)
        ASSERT_NEAR(y2[i], want2[i], 1e-5 * (1 + std::fabs(want2[i]))) << "count " << count;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// Panels made for one ISA's kernels are refused, not misread, after the ISA changes.
TEST(Q8Panels, PanelsOfAnotherIsaAreAnErrorNotWrongProducts) {
  std::vector<int64_t> with_panels;
  std::vector<size_t> widths;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    if (cpu::q8_panels_supported() && (widths.empty() || widths.back() != cpu::q8_panel_width())) {
      with_panels.push_back(target);
      widths.push_back(cpu::q8_panel_width());
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  if (with_panels.size() < 2) GTEST_SKIP() << "one Q8_0 panel layout on this machine";
  ThreadPool pool(1);
  auto cpu = make_cpu_backend(&pool);
  std::mt19937 rng(33);
  const int64_t rows = 40, cols = 64;
  const auto raw = quantized(testing::randn(size_t(rows * cols), rng), rows, cols);
  Matrix w{DType::Q8_0, rows, cols, raw.data()};
  hwy::SetSupportedTargetsForTest(with_panels[0]);
  auto owner = prepare_cpu_panels(w, pool);
  const auto x = testing::randn(size_t(cols), rng);
  std::vector<float> y(static_cast<size_t>(rows));
  EXPECT_NO_THROW(cpu->matmul({w, x.data(), y.data(), 1}));
  hwy::SetSupportedTargetsForTest(with_panels[1]);
  EXPECT_THROW(cpu->matmul({w, x.data(), y.data(), 1}), Error);
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace rwkv7
