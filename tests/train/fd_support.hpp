#pragma once
// Finite-difference checking in double precision for the training ops' backward.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace rwkv7::testing {

using Vec = std::vector<double>;

inline Vec random_vec(size_t n, std::mt19937_64& rng, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> d(lo, hi);
  Vec v(n);
  for (double& x : v) x = d(rng);
  return v;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

struct FdInput {
  std::string name;
  Vec* value;
  const Vec* grad;  // analytic d loss / d value
};

// For every element of every input: central difference of `loss` (a scalar recomputed from
// the current input values) against the analytic gradient. Returns the worst error seen.
inline double fd_check(const std::vector<FdInput>& inputs, const std::function<double()>& loss,
                       double tol = 1e-6, double h = 1e-6) {
  double worst = 0;
  for (const FdInput& in : inputs) {
    EXPECT_EQ(in.value->size(), in.grad->size()) << in.name;
    if (in.value->size() != in.grad->size()) return 1e9;
    for (size_t e = 0; e < in.value->size(); ++e) {
      const double keep = (*in.value)[e];
      (*in.value)[e] = keep + h;
      const double lp = loss();
      (*in.value)[e] = keep - h;
      const double lm = loss();
      (*in.value)[e] = keep;
      const double num = (lp - lm) / (2 * h), ana = (*in.grad)[e];
      const double err = std::abs(num - ana) / (1 + std::abs(num));
      worst = std::max(worst, err);
      EXPECT_LE(err, tol) << in.name << "[" << e << "]: finite difference " << num << ", backward "
                          << ana;
    }
  }
  return worst;
}

}  // namespace rwkv7::testing
