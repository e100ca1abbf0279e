#pragma once
// Σ term(i) for i < n in double, over 8 independent partial sums: one running sum through a
// row is a chain of dependent adds (~4 cycles each); 8 lanes let the compiler overlap or
// vectorise them. The rounding depends only on n (tail first, then the lanes in order).
#include <cstdint>

namespace rwkv7 {

template <class Term>
double lane_sum(int64_t n, const Term& term) {
  constexpr int kLanes = 8;
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += term(i + l);
  double s = 0;
  for (; i < n; ++i) s += term(i);
  for (const double part : lane) s += part;
  return s;
}

}  // namespace rwkv7
