#pragma once
// Singular value decomposition of a small dense matrix in double precision (one-sided Jacobi,
// Hestenes): accurate to a few ulps of the largest singular value, simple enough to check by
// hand, and fast for the 64x64 WKV matrices of a state (no LAPACK needed).
#include <cstdint>
#include <vector>

namespace rwkv7 {

// A = U · diag(sigma) · Vᵀ with A [m, n] row-major, k = min(m, n) components sorted by
// decreasing singular value. U [m, k] and V [n, k] are row-major with orthonormal columns
// (columns whose singular value is 0 are 0).
struct Svd {
  int64_t m = 0, n = 0, k = 0;
  std::vector<double> u;      // [m, k]
  std::vector<double> sigma;  // [k], descending, >= 0
  std::vector<double> v;      // [n, k]
};

// Throws Error on non-positive sizes, a short buffer, or a non-finite element.
Svd svd_jacobi(const double* a, int64_t m, int64_t n);

}  // namespace rwkv7
