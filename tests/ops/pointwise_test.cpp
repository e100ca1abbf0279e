// The SIMD element-wise maps against the scalar std::exp / std::tanh versions, over lengths
// that leave vector tails and inputs from -100 to 100 (σ and exp saturate there).
#include "backends/pointwise.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/pointwise_kernels.hpp"
#include "hwy/targets.h"

namespace rwkv7 {
namespace {

std::vector<float> values(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> wide(-100.0f, 100.0f);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i % 5 == 0 ? wide(rng) : nd(rng);
  return v;
}

// Highway's exp/tanh are within a few ulp: relative 1e-6 plus a tiny absolute floor.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, const char* op) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-6 * std::abs(want[i]) + 1e-30) << op << " element " << i;
}

TEST(Pointwise, SimdMapsEqualScalarMaps) {
  const PointwiseOps& ref = scalar_pointwise_ops();
  const PointwiseOps& simd = cpu::simd_pointwise_ops();
  std::mt19937 rng(11);
  for (size_t n : {size_t(1), size_t(7), size_t(16), size_t(33), size_t(64), size_t(771)}) {
    const auto bias = values(n, rng), z = values(n, rng), vf = values(n, rng), v = values(n, rng);
    std::vector<float> want(n), got(n);
    ref.sigmoid_bias(bias.data(), z.data(), want.data(), n);
    simd.sigmoid_bias(bias.data(), z.data(), got.data(), n);
    expect_close(got, want, "sigmoid_bias");
    ref.decay(bias.data(), z.data(), want.data(), n);
    simd.decay(bias.data(), z.data(), got.data(), n);
    expect_close(got, want, "decay");
    want = v;
    got = v;
    ref.value_residual(bias.data(), z.data(), vf.data(), want.data(), n);
    simd.value_residual(bias.data(), z.data(), vf.data(), got.data(), n);
    for (size_t i = 0; i < n; ++i)  // a difference of two values: absolute error of their scale
      ASSERT_NEAR(got[i], want[i], 1e-5 * (std::abs(v[i]) + std::abs(vf[i]))) << "residual " << i;
    using Map = void (*)(float*, size_t);
    for (auto [map_ref, map_simd, name] :
         {std::tuple<Map, Map, const char*>{ref.tanh, simd.tanh, "tanh"},
          {ref.sigmoid, simd.sigmoid, "sigmoid"},
          {ref.relu_square, simd.relu_square, "relu_square"}}) {
      want = z;
      got = z;
      map_ref(want.data(), n);
      map_simd(got.data(), n);
      expect_close(got, want, name);
    }
  }
}

// A NaN (a broken model) must come out as NaN, as with std::exp, not as a finite number.
TEST(Pointwise, NanStaysNan) {
  const PointwiseOps& simd = cpu::simd_pointwise_ops();
  const size_t n = 35;  // full vectors and a tail
  std::vector<float> z(n, 0.5f), bias(n, 0.1f), vf(n, 1.0f), out(n);
  z[3] = NAN;
  z[34] = NAN;
  simd.sigmoid_bias(bias.data(), z.data(), out.data(), n);
  EXPECT_TRUE(std::isnan(out[3]) && std::isnan(out[34]));
  EXPECT_FALSE(std::isnan(out[4]));
  simd.decay(bias.data(), z.data(), out.data(), n);
  EXPECT_TRUE(std::isnan(out[3]) && std::isnan(out[34]));
  std::vector<float> v(n, 2.0f);
  simd.value_residual(bias.data(), z.data(), vf.data(), v.data(), n);
  EXPECT_TRUE(std::isnan(v[3]) && std::isnan(v[34]));
  for (auto map : {simd.sigmoid, simd.tanh, simd.relu_square}) {
    std::vector<float> x = z;
    map(x.data(), n);
    EXPECT_TRUE(std::isnan(x[3]) && std::isnan(x[34]));
  }
}

}  // namespace
}  // namespace rwkv7

namespace rwkv7 {
namespace {

// The cross-entropy's softmax pieces on every Highway target, over rows up to a vocabulary:
// the maximum exactly; Σ exp in float vectors over blocks of 1024 values (≤ 128 float additions
// per lane even on 4-lane targets, then double): relative 1e-5; each exp within a few ulp of
// its float argument.
TEST(Pointwise, SoftmaxPiecesEqualScalarOnEveryTarget) {
  const PointwiseOps& ref = scalar_pointwise_ops();
  const PointwiseOps& simd = cpu::simd_pointwise_ops();
  std::mt19937 rng(12);
  for (size_t n : {size_t(1), size_t(7), size_t(16), size_t(33), size_t(771), size_t(65536)}) {
    std::vector<float> x = values(n, rng);
    const float shift = ref.max_value(x.data(), n);
    const double want_sum = ref.exp_sum(x.data(), shift, n);
    std::vector<float> want(n);
    ref.exp_scale(x.data(), shift, 0.25f, want.data(), n);
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      const std::string what = std::string(hwy::TargetName(target)) + " n " + std::to_string(n);
      EXPECT_EQ(simd.max_value(x.data(), n), shift) << what;
      EXPECT_NEAR(simd.exp_sum(x.data(), shift, n), want_sum, 1e-5 * want_sum) << what;
      std::vector<float> got = x;  // in place, as the cross-entropy calls it
      simd.exp_scale(got.data(), shift, 0.25f, got.data(), n);
      for (size_t i = 0; i < n; ++i) {
        // x - shift rounded in float: exp's relative error grows with the argument's size.
        const double arg_rounding = std::abs(double(x[i]) - shift) * 2 * 1.2e-7;
        ASSERT_NEAR(got[i], want[i], (1e-6 + arg_rounding) * want[i] + 1e-37)
            << what << " element " << i;
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

// A NaN logit (a broken model) must make the row's max, sum and softmax NaN on every target,
// not vanish (x86 max skips a NaN operand; Highway's exp maps NaN to 0).
TEST(Pointwise, SoftmaxPiecesKeepNaN) {
  for (size_t n : {size_t(1), size_t(5), size_t(40), size_t(1000)}) {
    for (size_t at : {size_t(0), n / 2, n - 1}) {
      std::vector<float> x(n, 0.5f);
      x[at] = std::nanf("");
      for (const PointwiseOps* ops : {&scalar_pointwise_ops(), &cpu::simd_pointwise_ops()}) {
        for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
          hwy::SetSupportedTargetsForTest(target);
          const std::string what = std::string(hwy::TargetName(target)) + " n " +
                                   std::to_string(n) + " NaN at " + std::to_string(at);
          EXPECT_TRUE(std::isnan(ops->max_value(x.data(), n))) << what;
          EXPECT_TRUE(std::isnan(ops->exp_sum(x.data(), 0.5f, n))) << what;
          std::vector<float> out(n);
          ops->exp_scale(x.data(), 0.5f, 1.0f, out.data(), n);
          EXPECT_TRUE(std::isnan(out[at])) << what;
        }
        hwy::SetSupportedTargetsForTest(0);
      }
    }
  }
}

}  // namespace
}  // namespace rwkv7
