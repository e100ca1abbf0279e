#pragma once
// What the integer panel tests (Q4_0, Q8_0, Q4_K / Q5_K, Q6_K) share: weights quantised row by
// row, the reference product from core's dequantisation, the cpu backend's products over
// panels made at load, and the refusal of panels made for another ISA's kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "core/quant.hpp"
#include "core/thread_pool.hpp"
#include "hwy/targets.h"
#include "rwkv7/error.hpp"
#include "test_support.hpp"

namespace rwkv7::testing {

// rows × cols weights v quantised to `type`, row by row, as a file stores them.
inline std::vector<unsigned char> quantized_rows(DType type, const std::vector<float>& v,
                                                 int64_t rows, int64_t cols) {
  const size_t rb = row_bytes(type, cols);
  std::vector<unsigned char> raw(rb * size_t(rows));
  for (int64_t o = 0; o < rows; ++o)
    quantize_row(type, &v[size_t(o * cols)], raw.data() + size_t(o) * rb, cols);
  return raw;
}

// y[t][o] = Σ_b x.d[t, b] · Σ_i w[o, b, i] · q_x[t, b, i] in double: w each row dequantised by
// core (dequantize_row: its own decoding, not the levels a packing reads; d·level is exact in
// fp32), the positions quantised to Q8_0 as the panel products quantise them.
inline std::vector<double> product_from_blocks(DType type, const std::vector<unsigned char>& raw,
                                               int64_t rows, int64_t cols,
                                               const std::vector<float>& x, int64_t T) {
  const size_t rb = row_bytes(type, cols), nb = size_t(cols / 32);
  std::vector<int8_t> qx(static_cast<size_t>(cols));
  std::vector<float> dx(nb), w(static_cast<size_t>(cols));
  std::vector<unsigned char> xb(row_bytes(DType::Q8_0, cols));
  std::vector<double> y(size_t(T * rows));
  for (int64_t t = 0; t < T; ++t) {
    quantize_row_q8_0(&x[size_t(t * cols)], xb.data(), cols);
    unpack_row_i8(DType::Q8_0, xb.data(), qx.data(), dx.data(), cols);
    for (int64_t o = 0; o < rows; ++o) {
      dequantize_row(type, raw.data() + size_t(o) * rb, w.data(), cols);
      double s = 0;
      for (size_t b = 0; b < nb; ++b) {
        double dot = 0;
        for (size_t i = 0; i < 32; ++i) dot += double(w[b * 32 + i]) * qx[b * 32 + i];
        s += double(dx[b]) * dot;
      }
      y[size_t(t * rows + o)] = s;
    }
  }
  return y;
}

// The cpu backend's products over `type` panels made at load (call on a target that makes
// them): one position, a few, a batch, and two weights (rows and rows2 outputs: pick rows2 to
// leave a ragged last panel) in one matmul_many, against product_from_blocks within
// tol · (1 + |y|); matmul_many gives what matmul gives, to the bit.
inline void expect_backend_products_from_blocks(DType type, int64_t rows, int64_t rows2,
                                                int64_t cols, double tol, uint32_t seed) {
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  std::mt19937 rng(seed);
  const auto raw = quantized_rows(type, randn(size_t(rows * cols), rng, 0.5f), rows, cols);
  const auto raw2 = quantized_rows(type, randn(size_t(rows2 * cols), rng, 0.5f), rows2, cols);
  Matrix w{type, rows, cols, raw.data()}, w2{type, rows2, cols, raw2.data()};
  auto owner = prepare_cpu_panels(w, pool), owner2 = prepare_cpu_panels(w2, pool);
  ASSERT_NE(w.cpu_int_panels, nullptr) << dtype_name(type) << " made no panels";
  for (int64_t count : {1, 3, 8, 32}) {
    SCOPED_TRACE(std::string(dtype_name(type)) + ", positions " + std::to_string(count));
    const auto x = randn(size_t(count * cols), rng);
    const auto want = product_from_blocks(type, raw, rows, cols, x, count);
    const auto want2 = product_from_blocks(type, raw2, rows2, cols, x, count);
    std::vector<float> y(want.size(), NAN), y_many(want.size(), NAN), y2(want2.size(), NAN);
    cpu->matmul({w, x.data(), y.data(), count});
    const MatmulArgs list[] = {{w, x.data(), y_many.data(), count},
                               {w2, x.data(), y2.data(), count}};
    cpu->matmul_many(list);
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(y[i], want[i], tol * (1 + std::fabs(want[i]))) << "at " << i;
      ASSERT_EQ(y_many[i], y[i]) << "at " << i;
    }
    for (size_t i = 0; i < want2.size(); ++i)
      ASSERT_NEAR(y2[i], want2[i], tol * (1 + std::fabs(want2[i]))) << "second weight, at " << i;
  }
}

// Panels made under target `made` are refused (an Error, not wrong products) once the process
// runs under target `other`, whose kernels want another layout.
inline void expect_panels_of_another_isa_refused(DType type, int64_t made, int64_t other,
                                                 int64_t rows, int64_t cols, uint32_t seed) {
  ThreadPool pool(1);
  auto cpu = make_cpu_backend(&pool);
  std::mt19937 rng(seed);
  const auto raw = quantized_rows(type, randn(size_t(rows * cols), rng), rows, cols);
  Matrix w{type, rows, cols, raw.data()};
  hwy::SetSupportedTargetsForTest(made);
  auto owner = prepare_cpu_panels(w, pool);
  ASSERT_NE(w.cpu_int_panels, nullptr);
  const auto x = randn(size_t(cols), rng);
  std::vector<float> y(static_cast<size_t>(rows));
  EXPECT_NO_THROW(cpu->matmul({w, x.data(), y.data(), 1}));
  hwy::SetSupportedTargetsForTest(other);
  EXPECT_THROW(cpu->matmul({w, x.data(), y.data(), 1}), Error);
  const MatmulArgs list[] = {{w, x.data(), y.data(), 1}};
  EXPECT_THROW(cpu->matmul_many(list), Error);
  hwy::SetSupportedTargetsForTest(0);
}

// The first target with panels (width() != 0) and the next whose width differs from it, or
// fewer when this machine has no such pair.
inline std::vector<int64_t> targets_of_two_panel_layouts(size_t (*width)()) {
  std::vector<int64_t> found;
  size_t first = 0;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const size_t w = width();
    if (found.empty() ? w != 0 : w != first) {
      found.push_back(target);
      first = found.size() == 1 ? w : first;
      if (found.size() == 2) break;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  return found;
}

}  // namespace rwkv7::testing
