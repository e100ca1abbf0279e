// Q4_0 panels (AVX2: 8 outputs, AVX-512 VNNI: 16): packing keeps every nibble and scale (the scalar
// twin over the panels equals the product computed from the row-major blocks), the kernel equals it
// for every tail of positions and a ragged last panel on each Highway target that has it, and the
// cpu backend's products over the panels (one position, a few, a batch, several in one region)
// equal the dequantised weights times the Q8_0-quantised positions, as the row kernels compute.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cpu/q4_panels_kernels.hpp"
#include "backends/cpu/q8_panels_kernels.hpp"
#include "core/quant.hpp"
#include "core/thread_pool.hpp"
#include "hwy/targets.h"
#include "rwkv7/error.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

std::vector<unsigned char> quantized(const std::vector<float>& v, int64_t rows, int64_t cols) {
  const size_t rb = row_bytes(DType::Q4_0, cols);
  std::vector<unsigned char> raw(rb * size_t(rows));
  for (int64_t o = 0; o < rows; ++o)
    quantize_row(DType::Q4_0, &v[size_t(o * cols)], raw.data() + size_t(o) * rb, cols);
  return raw;
}

// y[t][o] = Σ_b dw·dx·Σ q_w q_x in double, from the row-major blocks and Q8_0 positions.
std::vector<double> from_blocks(const std::vector<unsigned char>& raw, int64_t rows, int64_t cols,
                                const std::vector<float>& x, int64_t T) {
  const size_t rb = row_bytes(DType::Q4_0, cols), nb = size_t(cols / 32);
  std::vector<int8_t> qw(static_cast<size_t>(cols)), qx(static_cast<size_t>(cols));
  std::vector<float> dw(nb), dx(nb);
  std::vector<unsigned char> xb(row_bytes(DType::Q8_0, cols));
  std::vector<double> y(size_t(T * rows));
  for (int64_t t = 0; t < T; ++t) {
    quantize_row_q8_0(&x[size_t(t * cols)], xb.data(), cols);
    unpack_row_i8(DType::Q8_0, xb.data(), qx.data(), dx.data(), cols);
    for (int64_t o = 0; o < rows; ++o) {
      unpack_row_i8(DType::Q4_0, raw.data() + size_t(o) * rb, qw.data(), dw.data(), cols);
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

TEST(Q4Panels, KernelEqualsScalarTwinAndTheRowMajorBlocksOnEveryTarget) {
  int targets_run = 0;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    if (!cpu::q4_panels_supported()) continue;
    ++targets_run;
    std::mt19937 rng(41);
    for (int64_t rows : {1, 7, 8, 9, 15, 16, 17, 45}) {
      for (int64_t cols : {32, 96, 256}) {
        auto v = testing::randn(size_t(rows * cols), rng);
        v[0] = 40.0f;  // one block with the extreme nibbles 0 and 15
        const auto raw = quantized(v, rows, cols);
        const size_t np = (size_t(rows) + cpu::q4_panel_width() - 1) / cpu::q4_panel_width();
        std::vector<uint8_t> panels(cpu::q4_panels_bytes(size_t(rows), size_t(cols)));
        cpu::pack_q4_panels(raw.data(), size_t(rows), size_t(cols), 0, np, panels.data());
        for (int64_t T : {1, 2, 3, 4, 5, 11}) {
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
          cpu::gemm_q4_panels(panels.data(), size_t(rows), size_t(cols), 0, np, q.data(), d.data(),
                              corr.data(), size_t(T), y.data(), size_t(rows));
          cpu::gemm_q4_panels_scalar(panels.data(), size_t(rows), size_t(cols), 0, np, q.data(),
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
  if (targets_run == 0) GTEST_SKIP() << "no Highway target here has the Q4_0 panel kernel";
}

TEST(Q4Panels, CpuBackendProductsUseQuantisedPositions) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    if (!cpu::q4_panels_supported()) continue;
    ThreadPool pool(2);
    auto cpu = make_cpu_backend(&pool);
    std::mt19937 rng(42);
    const int64_t rows = 130, cols = 96, rows2 = 13;
    const auto raw = quantized(testing::randn(size_t(rows * cols), rng, 0.5f), rows, cols);
    const auto raw2 = quantized(testing::randn(size_t(rows2 * cols), rng, 0.5f), rows2, cols);
    Matrix w{DType::Q4_0, rows, cols, raw.data()}, w2{DType::Q4_0, rows2, cols, raw2.data()};
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
TEST(Q4Panels, PanelsOfAnotherIsaAreAnErrorNotWrongProducts) {
  std::vector<int64_t> with_panels;
  std::vector<size_t> widths;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    if (cpu::q4_panels_supported() && (widths.empty() || widths.back() != cpu::q4_panel_width())) {
      with_panels.push_back(target);
      widths.push_back(cpu::q4_panel_width());
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  if (with_panels.size() < 2) GTEST_SKIP() << "one panel layout on this machine";
  ThreadPool pool(1);
  auto cpu = make_cpu_backend(&pool);
  std::mt19937 rng(43);
  const int64_t rows = 20, cols = 64;
  const auto raw = quantized(testing::randn(size_t(rows * cols), rng), rows, cols);
  Matrix w{DType::Q4_0, rows, cols, raw.data()};
  hwy::SetSupportedTargetsForTest(with_panels[0]);
  auto owner = prepare_cpu_panels(w, pool);
  const auto x = testing::randn(size_t(cols), rng);
  std::vector<float> y(static_cast<size_t>(rows));
  EXPECT_NO_THROW(cpu->matmul({w, x.data(), y.data(), 1}));
  hwy::SetSupportedTargetsForTest(with_panels[1]);
  EXPECT_THROW(cpu->matmul({w, x.data(), y.data(), 1}), Error);
  const MatmulArgs list[] = {{w, x.data(), y.data(), 1}};
  EXPECT_THROW(cpu->matmul_many(list), Error);
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace rwkv7
