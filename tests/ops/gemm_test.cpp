// Backend::gemm, the one fp32 product of training: the cpu backend (packed panels, threads)
// against the reference backend in every mode (A plain or transposed × B plain or transposed,
// fresh or accumulated C), on random shapes with edge sizes (1, odd, not a multiple of the
// panel width, K not a multiple of the packed block depth) and leading dimensions wider than
// the rows, on every SIMD target this machine runs (AVX-512 and AVX2 on an AVX-512 machine).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

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
  const int64_t ks[] = {1, 2, 7, 64, 127, 128, 129, 257, 300};
  std::vector<Shape> out = {{1, 1, 1}, {301, 257, 300}, {97, 64, 129}};
  for (int i = 0; i < count; ++i)
    out.push_back(
        {ms[rng() % std::size(ms)], ns[rng() % std::size(ns)], ks[rng() % std::size(ks)]});
  return out;
}

TEST(Gemm, CpuEqualsReferenceInEveryModeOnEveryTarget) {
  std::mt19937 rng(11);
  ThreadPool pool(3);  // more parts than panels for N ≤ 128: rows of C get split
  auto cpu = make_cpu_backend(&pool);
  auto ref = make_reference_backend();
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
      // ~sqrt(K) roundings of the dtype's epsilon, relative to the magnitude.
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
