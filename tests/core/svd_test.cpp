// svd_jacobi against matrices built from known singular vectors and values.
#include "core/svd.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

// k orthonormal columns of length m (Gram-Schmidt on random vectors), row-major [m, k].
std::vector<double> orthonormal(int64_t m, int64_t k, std::mt19937& rng) {
  std::normal_distribution<double> nd;
  std::vector<double> q(size_t(m * k));
  for (int64_t c = 0; c < k; ++c) {
    std::vector<double> x(static_cast<size_t>(m));
    for (double& e : x) e = nd(rng);
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t p = 0; p < c; ++p) {
        double d = 0;
        for (int64_t i = 0; i < m; ++i) d += x[size_t(i)] * q[size_t(i * k + p)];
        for (int64_t i = 0; i < m; ++i) x[size_t(i)] -= d * q[size_t(i * k + p)];
      }
    }
    double nrm = 0;
    for (double e : x) nrm += e * e;
    nrm = std::sqrt(nrm);
    for (int64_t i = 0; i < m; ++i) q[size_t(i * k + c)] = x[size_t(i)] / nrm;
  }
  return q;
}

// U diag(s) Vᵀ with the first r components.
std::vector<double> compose(const std::vector<double>& u, const std::vector<double>& s,
                            const std::vector<double>& v, int64_t m, int64_t n, int64_t k,
                            int64_t r) {
  std::vector<double> a(size_t(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < r; ++c)
        a[size_t(i * n + j)] += u[size_t(i * k + c)] * s[size_t(c)] * v[size_t(j * k + c)];
  return a;
}

TEST(Svd, RecoversTheSingularValuesOfAKnownRank5Matrix) {
  std::mt19937 rng(7);
  const int64_t n = 64, rank = 5;
  const std::vector<double> s = {9.0, 4.0, 2.5, 1.0, 0.125};
  auto u = orthonormal(n, rank, rng), v = orthonormal(n, rank, rng);
  auto a = compose(u, s, v, n, n, rank, rank);
  Svd d = svd_jacobi(a.data(), n, n);
  ASSERT_EQ(d.k, n);
  for (int64_t c = 0; c < rank; ++c) EXPECT_NEAR(d.sigma[size_t(c)], s[size_t(c)], 1e-12);
  for (int64_t c = rank; c < n; ++c) EXPECT_LT(d.sigma[size_t(c)], 1e-12);
  // Rank-5 truncation rebuilds A; each singular vector matches the known one up to sign.
  auto back = compose(d.u, d.sigma, d.v, n, n, d.k, rank);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(back[i], a[i], 1e-12);
  for (int64_t c = 0; c < rank; ++c) {
    double dot = 0;
    for (int64_t i = 0; i < n; ++i) dot += d.u[size_t(i * n + c)] * u[size_t(i * rank + c)];
    EXPECT_NEAR(std::abs(dot), 1.0, 1e-10);
  }
}

TEST(Svd, TruncationErrorIsTheTailOfTheSpectrum) {
  // Full-rank 48x48 with the spectrum 2^-c: the best rank-r error is sqrt(sum of tail s^2)
  // (Eckart-Young), computed here from the spectrum we chose, not from the decomposition.
  std::mt19937 rng(11);
  const int64_t n = 48;
  std::vector<double> s(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) s[size_t(c)] = std::ldexp(1.0, -int(c) / 4);
  auto u = orthonormal(n, n, rng), v = orthonormal(n, n, rng);
  auto a = compose(u, s, v, n, n, n, n);
  Svd d = svd_jacobi(a.data(), n, n);
  for (int64_t r : {1, 8, 20}) {
    auto back = compose(d.u, d.sigma, d.v, n, n, d.k, r);
    double err = 0, tail = 0;
    for (size_t i = 0; i < a.size(); ++i) err += (a[i] - back[i]) * (a[i] - back[i]);
    for (int64_t c = r; c < n; ++c) tail += s[size_t(c)] * s[size_t(c)];
    EXPECT_NEAR(std::sqrt(err), std::sqrt(tail), 1e-10) << "rank " << r;
  }
}

TEST(Svd, RectangularAndZeroMatrices) {
  std::mt19937 rng(3);
  std::normal_distribution<double> nd;
  const int64_t m = 7, n = 4;
  std::vector<double> a(size_t(m * n));
  for (double& x : a) x = nd(rng);
  Svd d = svd_jacobi(a.data(), m, n);
  ASSERT_EQ(d.k, 4);
  auto back = compose(d.u, d.sigma, d.v, m, n, d.k, d.k);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(back[i], a[i], 1e-12);
  for (int64_t c = 1; c < d.k; ++c) EXPECT_LE(d.sigma[size_t(c)], d.sigma[size_t(c - 1)]);
  // UᵀU = I
  for (int64_t p = 0; p < d.k; ++p)
    for (int64_t q = 0; q < d.k; ++q) {
      double dot = 0;
      for (int64_t i = 0; i < m; ++i) dot += d.u[size_t(i * d.k + p)] * d.u[size_t(i * d.k + q)];
      EXPECT_NEAR(dot, p == q ? 1.0 : 0.0, 1e-12);
    }
  std::vector<double> z(16, 0.0);
  Svd dz = svd_jacobi(z.data(), 4, 4);
  for (double x : dz.sigma) EXPECT_EQ(x, 0.0);
  z[5] = NAN;
  EXPECT_THROW(svd_jacobi(z.data(), 4, 4), Error);
}

}  // namespace
}  // namespace rwkv7
