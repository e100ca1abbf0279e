// One-sided Jacobi SVD: rotate pairs of columns of W = A·V until every pair is orthogonal;
// then the column norms are the singular values and V the right singular vectors.
#include "core/svd.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "rwkv7/error.hpp"

namespace rwkv7 {

Svd svd_jacobi(const double* a, int64_t m, int64_t n) {
  if (m <= 0 || n <= 0 || !a) {
    throw Error("svd: needs a matrix with positive sizes (got " + std::to_string(m) + "x" +
                std::to_string(n) + ")");
  }
  // Columns stored contiguously: w[j] is column j of A (length m), vt[j] column j of V.
  std::vector<double> w(size_t(m * n)), vt(size_t(n * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double x = a[i * n + j];
      if (!std::isfinite(x))
        throw Error("svd: element (" + std::to_string(i) + ", " + std::to_string(j) +
                    ") is not finite");
      w[size_t(j * m + i)] = x;
    }
  }
  for (int64_t j = 0; j < n; ++j) vt[size_t(j * n + j)] = 1.0;
  constexpr double kEps = 1e-15;
  for (int sweep = 0; sweep < 80; ++sweep) {
    bool rotated = false;
    for (int64_t p = 0; p + 1 < n; ++p) {
      for (int64_t q = p + 1; q < n; ++q) {
        double* wp = &w[size_t(p * m)];
        double* wq = &w[size_t(q * m)];
        double alpha = 0, beta = 0, gamma = 0;
        for (int64_t i = 0; i < m; ++i) {
          alpha += wp[i] * wp[i];
          beta += wq[i] * wq[i];
          gamma += wp[i] * wq[i];
        }
        if (alpha == 0 || beta == 0 || std::abs(gamma) <= kEps * std::sqrt(alpha * beta)) continue;
        rotated = true;
        // The rotation that zeroes the off-diagonal entry of the 2x2 Gram matrix.
        const double zeta = (beta - alpha) / (2 * gamma);
        const double t = std::copysign(1.0, zeta) / (std::abs(zeta) + std::sqrt(1 + zeta * zeta));
        const double c = 1 / std::sqrt(1 + t * t), s = c * t;
        for (int64_t i = 0; i < m; ++i) {
          const double x = wp[i], y = wq[i];
          wp[i] = c * x - s * y;
          wq[i] = s * x + c * y;
        }
        double* vp = &vt[size_t(p * n)];
        double* vq = &vt[size_t(q * n)];
        for (int64_t i = 0; i < n; ++i) {
          const double x = vp[i], y = vq[i];
          vp[i] = c * x - s * y;
          vq[i] = s * x + c * y;
        }
      }
    }
    if (!rotated) break;
  }
  std::vector<double> norm(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t i = 0; i < m; ++i) s += w[size_t(j * m + i)] * w[size_t(j * m + i)];
    norm[size_t(j)] = std::sqrt(s);
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return norm[size_t(x)] > norm[size_t(y)]; });
  Svd r;
  r.m = m, r.n = n, r.k = std::min(m, n);
  r.u.assign(size_t(m * r.k), 0.0);
  r.v.assign(size_t(n * r.k), 0.0);
  r.sigma.assign(size_t(r.k), 0.0);
  for (int64_t c = 0; c < r.k; ++c) {
    const int64_t j = order[size_t(c)];
    const double s = norm[size_t(j)];
    r.sigma[size_t(c)] = s;
    if (s == 0) continue;
    for (int64_t i = 0; i < m; ++i) r.u[size_t(i * r.k + c)] = w[size_t(j * m + i)] / s;
    for (int64_t i = 0; i < n; ++i) r.v[size_t(i * r.k + c)] = vt[size_t(j * n + i)];
  }
  return r;
}

}  // namespace rwkv7
