// Backend::gemm, the one product of training: the cpu backend (packed panels, threads) against
// the reference backend in every mode (A plain or transposed × B plain or transposed, fresh or
// accumulated C), on random shapes with edge sizes (1, odd, not a multiple of the panel width,
// K not a multiple of the packed block depth) and leading dimensions wider than the rows, on
// every SIMD target this machine runs (AVX-512 and AVX2 on an AVX-512 machine), in fp32 and in
// bf16 (operands rounded to bf16, sums in fp32: VDPBF16PS on the AVX-512 VNNI-class target of
// a CPU with AVX512_BF16, the rounded fp32 fallback on the others).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/thread_pool.hpp"
#include "hwy/targets.h"
#include "ops/ops.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

struct Shape {
  int64_t M, N, K;
};

// Stored extents of an operand op(X) [rows, cols] and its leading dimension (pad floats more).
struct Stored {
  int64_t rows, ld;
};
Stored stored(int64_t rows, int64_t cols, bool transposed, int64_t pad) {
  return transposed ? Stored{cols, rows + pad} : Stored{rows, cols + pad};
}

std::vector<float> absolute(std::vector<float> v) {
  for (float& x : v) x = std::fabs(x);
  return v;
}

// Random shapes drawn from edge sizes: 1, odd, around multiples of 6 (micro-kernel rows), of 16
// and 64 (panel widths of AVX2 and AVX-512), of 128 (the packed block depth) and above 48 rows
// a part (so several threads share one panel).
std::vector<Shape> random_shapes(std::mt19937& rng, int count) {
  const int64_t ms[] = {1, 2, 5, 6, 7, 13, 48, 97, 130, 301};
  const int64_t ns[] = {1, 3, 15, 16, 17, 33, 63, 64, 65, 130, 257};
  const int64_t ks[] = {1, 2, 7, 64, 127, 128, 129, 255, 256, 257, 300, 513};
  // (2100 rows: the products' blocks of rows, above 2048; 8300 inputs: blocks of inputs,
  // above 8192; 1023 and 1025 inputs: the bf16 product's two blocks of at most 512, the
  // second odd, and, just past 1024, blocks of 256 with a last one of a single input.)
  std::vector<Shape> out = {{1, 1, 1},      {301, 257, 300}, {97, 64, 129}, {2100, 65, 513},
                            {13, 70, 8300}, {7, 65, 1023},   {19, 64, 1025}};
  for (int i = 0; i < count; ++i)
    out.push_back(
        {ms[rng() % std::size(ms)], ns[rng() % std::size(ns)], ks[rng() % std::size(ks)]});
  return out;
}

void expect_cpu_equals_reference_in_every_mode(ProductPrecision precision) {
  std::mt19937 rng(11);
  ThreadPool pool(3);  // more parts than panels for N ≤ 128: rows of C get split
  auto cpu = make_cpu_backend(&pool, precision);
  auto ref = make_reference_backend(precision);
  for (const Shape& s : random_shapes(rng, 24)) {
    for (int mode = 0; mode < 8; ++mode) {
      const bool a_t = mode & 1, b_t = mode & 2, accumulate = mode & 4;
      const int64_t pad = int64_t(rng() % 3);
      const Stored sa = stored(s.M, s.K, a_t, pad), sb = stored(s.K, s.N, b_t, pad);
      const int64_t ldc = s.N + pad;
      const auto a = testing::randn(size_t(sa.rows * sa.ld), rng);
      const auto b = testing::randn(size_t(sb.rows * sb.ld), rng);
      const auto c0 = testing::randn(size_t(s.M * ldc), rng);
      auto product = [&](const Backend& be, const std::vector<float>& av,
                         const std::vector<float>& bv, std::vector<float>& c) {
        be.gemm({.M = s.M,
                 .N = s.N,
                 .K = s.K,
                 .a = {av.data(), sa.ld, a_t},
                 .b = {bv.data(), sb.ld, b_t},
                 .c = c.data(),
                 .ldc = ldc,
                 .accumulate = accumulate});
      };
      auto want = c0;
      product(*ref, a, b, want);
      // Σ|A(m,k)·B(k,n)| (+ |C0|): the scale of each element's rounding error.
      auto magnitude = absolute(c0);
      product(*ref, absolute(a), absolute(b), magnitude);
      // fp32 sums of K products in another order than the double oracle: error within
      // ~sqrt(K) roundings of the dtype's epsilon, relative to the magnitude. (In bf16 both
      // sides multiply the same rounded operands, each product exact in fp32: the same bound.)
      const double eps = std::numeric_limits<float>::epsilon();
      const double rel = 8 * std::sqrt(double(s.K + 1)) * eps;
      for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
        hwy::SetSupportedTargetsForTest(target);
        auto got = c0;
        product(*cpu, a, b, got);
        const std::string what = std::string(hwy::TargetName(target)) + " M " +
                                 std::to_string(s.M) + " N " + std::to_string(s.N) + " K " +
                                 std::to_string(s.K) + " a_t " + std::to_string(a_t) + " b_t " +
                                 std::to_string(b_t) + " acc " + std::to_string(accumulate);
        for (int64_t m = 0; m < s.M; ++m) {
          for (int64_t n = 0; n < ldc; ++n) {
            const size_t e = size_t(m * ldc + n);
            if (n >= s.N) {
              ASSERT_EQ(got[e], c0[e]) << "wrote outside C: " << what << " at " << m << "," << n;
            } else {
              ASSERT_NEAR(got[e], want[e], rel * magnitude[e] + 1e-30)
                  << what << " at " << m << "," << n;
            }
          }
        }
      }
      hwy::SetSupportedTargetsForTest(0);
    }
  }
}

TEST(Gemm, CpuEqualsReferenceInEveryModeOnEveryTarget) {
  expect_cpu_equals_reference_in_every_mode(ProductPrecision::F32);
}

TEST(Gemm, Bf16CpuEqualsBf16ReferenceInEveryModeOnEveryTarget) {
  expect_cpu_equals_reference_in_every_mode(ProductPrecision::BF16);
}

// In bf16 the products of fp32 weights (the training forward's matmul, any number of positions)
// round both operands; weights stored in bf16 are multiplied as in fp32 mode (x not rounded).
TEST(Gemm, Bf16MatmulRoundsFp32WeightsOnly) {
  std::mt19937 rng(5);
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool, ProductPrecision::BF16);
  auto ref = make_reference_backend(ProductPrecision::BF16);
  auto ref32 = make_reference_backend();
  const int64_t rows = 70, cols = 131;
  const auto w32 = testing::randn(size_t(rows * cols), rng);
  std::vector<uint16_t> w16(w32.size());
  for (size_t i = 0; i < w32.size(); ++i) w16[i] = f32_to_bf16(w32[i]);
  for (int64_t count : {1, 3, 8, 37}) {
    const auto x = testing::randn(size_t(count * cols), rng);
    for (const DType dtype : {DType::F32, DType::BF16}) {
      const Matrix w{dtype, rows, cols,
                     dtype == DType::F32 ? static_cast<const void*>(w32.data()) : w16.data()};
      std::vector<float> want(size_t(count * rows)), want32(want.size()), mag(want.size());
      ref->matmul({w, x.data(), want.data(), count});
      ref32->matmul({w, x.data(), want32.data(), count});
      const auto xa = absolute(x);
      const auto wa = absolute(w32);
      const Matrix w_abs{DType::F32, rows, cols, wa.data()};
      ref32->matmul({w_abs, xa.data(), mag.data(), count});
      double gap = 0;  // how far the bf16 oracle is from the fp32 one: rounding x matters
      for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
        hwy::SetSupportedTargetsForTest(target);
        std::vector<float> got(want.size());
        cpu->matmul({w, x.data(), got.data(), count});
        for (size_t e = 0; e < got.size(); ++e) {
          gap = std::max(gap, std::fabs(double(want[e]) - want32[e]) / (mag[e] + 1e-30));
          ASSERT_NEAR(got[e], want[e], 8 * std::sqrt(double(cols)) * 1.2e-7 * mag[e])
              << hwy::TargetName(target) << " " << dtype_name(dtype) << " count " << count;
        }
      }
      hwy::SetSupportedTargetsForTest(0);
      if (dtype == DType::F32)
        EXPECT_GT(gap, 1e-4) << "bf16 products of an fp32 weight must round x and w";
      else  // the oracle's own contract: x is not rounded against a bf16 weight
        EXPECT_EQ(gap, 0.0) << "a bf16 weight's products are the fp32 ones";
    }
  }
}

// A weight's bf16 copy kept beside its fp32 values (mixed-precision training) is what bf16
// products read when given: B plain (dX = dY·W) and transposed (the forward's W as matmul reads
// it), and Matrix::bf16_rows in matmul. The results are those of rounding the fp32 values, bit
// for bit, on every target; a copy of other values changes them (it is read, not ignored).
TEST(Gemm, Bf16ProductsReadAKeptBf16CopyOfB) {
  std::mt19937 rng(13);
  ThreadPool pool(3);
  auto cpu = make_cpu_backend(&pool, ProductPrecision::BF16);
  auto round_all = [](const std::vector<float>& v, float scale) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(scale * v[i]);
    return h;
  };
  for (const Shape& s : random_shapes(rng, 10)) {
    for (int mode = 0; mode < 4; ++mode) {
      const bool a_t = mode & 1, b_t = mode & 2;
      const int64_t pad = int64_t(rng() % 3);
      const Stored sa = stored(s.M, s.K, a_t, pad), sb = stored(s.K, s.N, b_t, pad);
      const int64_t ldc = s.N + pad;
      const auto a = testing::randn(size_t(sa.rows * sa.ld), rng);
      const auto b = testing::randn(size_t(sb.rows * sb.ld), rng);
      const auto b16 = round_all(b, 1.0f), b16_doubled = round_all(b, 2.0f);
      auto product = [&](const uint16_t* copy) {
        std::vector<float> c(size_t(s.M * ldc), 1.0f);
        cpu->gemm({.M = s.M,
                   .N = s.N,
                   .K = s.K,
                   .a = {a.data(), sa.ld, a_t},
                   .b = {b.data(), sb.ld, b_t, copy},
                   .c = c.data(),
                   .ldc = ldc,
                   .accumulate = true});
        return c;
      };
      for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
        hwy::SetSupportedTargetsForTest(target);
        const std::string what = std::string(hwy::TargetName(target)) + " M " +
                                 std::to_string(s.M) + " N " + std::to_string(s.N) + " K " +
                                 std::to_string(s.K) + " a_t " + std::to_string(a_t) + " b_t " +
                                 std::to_string(b_t);
        const auto rounded = product(nullptr);
        ASSERT_EQ(product(b16.data()), rounded) << what;
        ASSERT_NE(product(b16_doubled.data()), rounded) << what << ": the copy was not read";
      }
      hwy::SetSupportedTargetsForTest(0);
    }
  }
  const int64_t rows = 70, cols = 131;
  const auto w = testing::randn(size_t(rows * cols), rng);
  const auto w16 = round_all(w, 1.0f), w16_doubled = round_all(w, 2.0f);
  for (int64_t count : {1, 3, 8, 37}) {
    const auto x = testing::randn(size_t(count * cols), rng);
    auto product = [&](const uint16_t* copy) {
      Matrix m{DType::F32, rows, cols, w.data()};
      m.bf16_rows = copy;
      std::vector<float> y(size_t(count * rows));
      cpu->matmul({m, x.data(), y.data(), count});
      return y;
    };
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      const auto rounded = product(nullptr);
      EXPECT_EQ(product(w16.data()), rounded) << hwy::TargetName(target) << " count " << count;
      EXPECT_NE(product(w16_doubled.data()), rounded)
          << hwy::TargetName(target) << " count " << count;
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

// K = 0 is an empty sum: C is zeroed, or left as it is when accumulating.
TEST(Gemm, EmptySumZeroesOrKeepsC) {
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  auto ref = make_reference_backend();
  for (const Backend* be : {cpu.get(), ref.get()}) {
    for (bool accumulate : {false, true}) {
      std::vector<float> c(6, 2.0f);
      const float one = 1.0f;
      be->gemm({.M = 2,
                .N = 3,
                .K = 0,
                .a = {&one, 0},
                .b = {&one, 3},
                .c = c.data(),
                .ldc = 3,
                .accumulate = accumulate});
      for (float v : c) EXPECT_EQ(v, accumulate ? 2.0f : 0.0f) << be->name();
    }
  }
}

}  // namespace
}  // namespace rwkv7
