// Q4_K panels (AVX-512 VNNI: 16 outputs; AVX2 and AVX-512 without VNNI: 8) and Q5_K panels
// (AVX2 and AVX-512 without VNNI: 8, with the fifth bits' plane): packing keeps every
// level, scale, min and super-block coefficient (the scalar twin over the panels equals the product
// computed from core's dequantised rows), the kernel equals it for every tail of positions and a
// ragged last panel on each Highway target that has it, and the cpu backend's products over the
// panels (one position, a few, a batch, several in one region) equal the same product with
// Q8_0-quantised positions, as the row kernels compute it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cpu/q4k_panels_kernels.hpp"
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

// The kernels of one type.
struct K45 {
  DType type;
  size_t (*width)();
  size_t (*bytes)(size_t, size_t);
  void (*pack)(const uint8_t*, size_t, size_t, size_t, size_t, uint8_t*);
  void (*gemm)(const uint8_t*, size_t, size_t, size_t, size_t, const int8_t*, const float*,
               const float*, size_t, float*, size_t);
  void (*scalar)(const uint8_t*, size_t, size_t, size_t, size_t, const int8_t*, const float*,
                 const float*, size_t, double*, size_t);
};
const K45 kTypes[] = {{DType::Q4_K, cpu::q4k_panel_width, cpu::q4k_panels_bytes,
                       cpu::pack_q4k_panels, cpu::gemm_q4k_panels, cpu::gemm_q4k_panels_scalar},
                      {DType::Q5_K, cpu::q5k_panel_width, cpu::q5k_panels_bytes,
                       cpu::pack_q5k_panels, cpu::gemm_q5k_panels, cpu::gemm_q5k_panels_scalar}};

std::vector<unsigned char> quantized(DType type, const std::vector<float>& v, int64_t rows,
                                     int64_t cols) {
  return testing::quantized_rows(type, v, rows, cols);
}

// Σ_b |x.d|·(|d·sc|·Σ|level·q_x| + |dmin·m|·Σ|q_x|): the scale of the fp32 rounding.
double magnitude(DType type, const std::vector<unsigned char>& raw, int64_t cols,
                 const std::vector<int8_t>& q, const std::vector<float>& d, int64_t o, int64_t t) {
  const bool five = type == DType::Q5_K;
  const size_t rb = row_bytes(type, cols), nb = size_t(cols / 32);
  double s = 0;
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* sup = raw.data() + size_t(o) * rb + (b / 8) * (five ? kQ5KBytes : kQ4KBytes);
    uint8_t sc, m;
    k4_scale_min(int(b % 8), sup + kK45ScalesAt, &sc, &m);
    double dot = 0, xs = 0;
    for (size_t i = 0; i < 32; ++i) {
      const double qx = std::fabs(double(q[size_t(t * cols) + b * 32 + i]));
      dot += q45k_level(sup, int(32 * (b % 8) + i), five) * qx;
      xs += qx;
    }
    s += std::fabs(double(d[size_t(t) * nb + b])) *
         (std::fabs(double(f16_at(sup))) * sc * dot +
          std::fabs(double(f16_at(sup + kK45DminAt))) * m * xs);
  }
  return s;
}

TEST(Q4KPanels, KernelEqualsScalarTwinAndTheRowMajorBlocksOnEveryTarget) {
  for (const K45& k : kTypes) {
    int targets_run = 0;
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      if (k.width() == 0) continue;
      ++targets_run;
      std::mt19937 rng(51);
      for (int64_t rows : {1, 7, 8, 9, 17, 45}) {
        for (int64_t cols : {256, 768}) {
          auto v = testing::randn(size_t(rows * cols), rng);
          v[0] = 40.0f;  // a sub-block with the extreme levels 0 and 15 (Q5_K: 31)
          for (int64_t i = 32; i < 64; ++i) v[size_t(i)] += 3.0f;  // a large min
          const auto raw = quantized(k.type, v, rows, cols);
          const size_t w = k.width(), np = (size_t(rows) + w - 1) / w;
          std::vector<uint8_t> panels(k.bytes(size_t(rows), size_t(cols)));
          k.pack(raw.data(), size_t(rows), size_t(cols), 0, np, panels.data());
          for (int64_t T : {1, 2, 3, 4, 5, 11}) {
            auto x = testing::randn(size_t(T * cols), rng);
            for (int64_t i = 0; i < 32; ++i) x[size_t(i)] = i % 2 ? -3.0f : 3.0f;  // ±127
            const size_t nb = size_t(cols / 32);
            std::vector<int8_t> q(size_t(T * cols));
            std::vector<float> d(size_t(T) * nb);
            std::vector<int32_t> corr(size_t(T) * nb);
            cpu::quantize_q8_positions(x.data(), size_t(T), size_t(cols), q.data(), d.data(),
                                       corr.data());
            std::vector<float> dsum(size_t(T) * nb);
            cpu::q8_block_dsums(d.data(), corr.data(), dsum.size(), dsum.data());
            std::vector<float> y(size_t(T * rows) + 1, NAN);
            y.back() = 42.0f;  // nothing written past the outputs
            std::vector<double> twin(size_t(T * rows));
            k.gemm(panels.data(), size_t(rows), size_t(cols), 0, np, q.data(), d.data(),
                   dsum.data(), size_t(T), y.data(), size_t(rows));
            k.scalar(panels.data(), size_t(rows), size_t(cols), 0, np, q.data(), d.data(),
                     dsum.data(), size_t(T), twin.data(), size_t(rows));
            const auto want = testing::product_from_blocks(k.type, raw, rows, cols, x, T);
            EXPECT_EQ(y.back(), 42.0f);
            for (int64_t t = 0; t < T; ++t)
              for (int64_t o = 0; o < rows; ++o) {
                const size_t i = size_t(t * rows + o);
                const double mag = magnitude(k.type, raw, cols, q, d, o, t);
                // The dequantised weights are d·sc·q - dmin·m rounded to fp32.
                ASSERT_NEAR(twin[i], want[i], 1e-6 * (1 + mag)) << "packing, at " << i;
                // Exact int32 block sums; fp32 scaling and accumulation of cols / 32 terms.
                ASSERT_NEAR(y[i], want[i], 1e-5 * (1 + mag))
                    << dtype_name(k.type) << " " << hwy::TargetName(target) << " " << rows << "x"
                    << cols << " T " << T << " at " << i;
              }
          }
        }
      }
    }
    hwy::SetSupportedTargetsForTest(0);
#if defined(__x86_64__)
    if (hwy::SupportedTargets() & HWY_AVX2) {
      EXPECT_GT(targets_run, 0) << dtype_name(k.type) << ": AVX2 ran no panel kernel";
    }
#endif
  }
}

// The backend over the panels against the dequantised rows times the quantised positions (the
// K-quant row kernels' math), for every product shape.
TEST(Q4KPanels, CpuBackendProductsEqualTheRowKernelsMath) {
  int targets_run = 0;
  for (const K45& k : kTypes)
    testing::on_every_target([&] {
      if (k.width() == 0) return;
      ++targets_run;
      testing::expect_backend_products_from_blocks(k.type, 130, 13, 512, 1e-4, 52);
    });
  if (targets_run == 0) GTEST_SKIP() << "no Highway target here has the Q4_K panel kernel";
}

// Panels made for one ISA's kernels (16 outputs with VNNI, 8 on AVX2, none below) are refused,
// not misread, after the ISA changes.
TEST(Q4KPanels, PanelsOfAnotherIsaAreAnErrorNotWrongProducts) {
  const auto two = testing::targets_of_two_panel_layouts(cpu::q4k_panel_width);
  if (two.size() < 2) GTEST_SKIP() << "one panel layout on this machine";
  testing::expect_panels_of_another_isa_refused(DType::Q4_K, two[0], two[1], 20, 256, 53);
}

}  // namespace
}  // namespace rwkv7
