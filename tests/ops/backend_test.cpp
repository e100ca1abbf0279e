// Every fast kernel against its reference twin on random shapes (DESIGN: dtype-derived
// tolerances: the weights are identical in both, so only fp32 accumulation order differs).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/dtype.hpp"
#include "core/thread_pool.hpp"
#include "ops/ops.hpp"

namespace rwkv7 {
namespace {

std::vector<float> random_vec(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// Stores `values` in dtype t; returns the raw buffer (as uint16 or float words).
std::vector<uint32_t> store(const std::vector<float>& values, DType t) {
  std::vector<uint32_t> raw((values.size() * dtype_size(t) + 3) / 4);
  auto* p = reinterpret_cast<unsigned char*>(raw.data());
  for (size_t i = 0; i < values.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(p + 4 * i, &values[i], 4);
    } else {
      uint16_t h = t == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
      std::memcpy(p + 2 * i, &h, 2);
    }
  }
  return raw;
}

struct MatmulCase {
  DType dtype;
  int64_t rows, cols, count;
};

class BackendMatmul : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(BackendMatmul, CpuEqualsReference) {
  const MatmulCase c = GetParam();
  std::mt19937 rng{unsigned(c.rows * 131 + c.cols * 7 + c.count)};
  const auto values = random_vec(size_t(c.rows * c.cols), rng, 0.5f);
  const auto raw = store(values, c.dtype);
  const Matrix w{c.dtype, c.rows, c.cols, raw.data()};
  const auto x = random_vec(size_t(c.count * c.cols), rng);
  std::vector<float> want(size_t(c.count * c.rows)), got(want.size(), -1.0f);
  make_reference_backend()->matmul({w, x.data(), want.data(), c.count});
  ThreadPool pool(2);
  make_cpu_backend(&pool)->matmul({w, x.data(), got.data(), c.count});
  // fp32 accumulation of `cols` products of size ~|w||x|: relative error ~ cols · 2^-24.
  const double tol = 1e-6 * std::sqrt(double(c.cols)) * 8 + 1e-6;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::fabs(double(want[i])))) << "at " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, BackendMatmul,
    ::testing::Values(MatmulCase{DType::F32, 1, 1, 1}, MatmulCase{DType::F32, 7, 13, 3},
                      MatmulCase{DType::F32, 64, 64, 8}, MatmulCase{DType::F32, 100, 37, 9},
                      MatmulCase{DType::F32, 130, 96, 70}, MatmulCase{DType::F32, 48, 256, 200},
                      MatmulCase{DType::BF16, 97, 64, 1}, MatmulCase{DType::BF16, 200, 160, 33},
                      MatmulCase{DType::F16, 50, 72, 4}, MatmulCase{DType::F16, 33, 100, 1},
                      MatmulCase{DType::BF16, 300, 769, 1}, MatmulCase{DType::F16, 113, 200, 130},
                      MatmulCase{DType::F32, 16, 3000, 11}));

TEST(BackendWkv7, CpuEqualsReferenceOverManySteps) {
  // T = 2 takes the per-step kernel, T = 37 the transposed-state sequence kernel; N = 4 and
  // 24 leave padded lanes.
  for (auto [N, T] : {std::pair<int64_t, int64_t>{4, 37},
                      {16, 37},
                      {24, 37},
                      {32, 37},
                      {64, 37},
                      {64, 2},
                      {24, 2}}) {
    const int64_t H = 3, C = H * N;
    std::mt19937 rng{unsigned(N + T)};
    std::uniform_real_distribution<float> u01(0.55f, 1.0f);
    auto r = random_vec(size_t(T * C), rng), k = random_vec(size_t(T * C), rng, 0.3f),
         v = random_vec(size_t(T * C), rng), kk = random_vec(size_t(T * C), rng);
    std::vector<float> decay(size_t(T * C)), a(size_t(T * C)), b(size_t(T * C));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {  // a = -kk, b = kk * rate with |kk| = 1 per head
        double norm = 0;
        for (int64_t j = 0; j < N; ++j)
          norm += kk[size_t(t * C + h * N + j)] * kk[size_t(t * C + h * N + j)];
        for (int64_t j = 0; j < N; ++j) {
          const size_t i = size_t(t * C + h * N + j);
          const float unit = float(kk[i] / std::sqrt(norm)), rate = u01(rng);
          a[i] = -unit;
          b[i] = unit * rate;
          decay[i] = u01(rng);
        }
      }
    }
    std::vector<float> s_ref(size_t(H * N * N)), s_cpu, y_ref(size_t(T * C)), y_cpu(size_t(T * C));
    for (float& s : s_ref) s = std::normal_distribution<float>(0, 0.1f)(rng);
    s_cpu = s_ref;
    make_reference_backend()->wkv7({T, H, N, r.data(), decay.data(), k.data(), v.data(), a.data(),
                                    b.data(), s_ref.data(), y_ref.data()});
    ThreadPool pool(2);
    make_cpu_backend(&pool)->wkv7({T, H, N, r.data(), decay.data(), k.data(), v.data(), a.data(),
                                   b.data(), s_cpu.data(), y_cpu.data()});
    for (size_t i = 0; i < y_ref.size(); ++i)
      ASSERT_NEAR(y_cpu[i], y_ref[i], 1e-4 * std::max(1.0f, std::fabs(y_ref[i])))
          << N << " y " << i;
    for (size_t i = 0; i < s_ref.size(); ++i)
      ASSERT_NEAR(s_cpu[i], s_ref[i], 1e-4 * std::max(1.0f, std::fabs(s_ref[i])))
          << N << " S " << i;
  }
}

}  // namespace
}  // namespace rwkv7
