#include <cmath>

#include "ops/ops.hpp"

namespace rwkv7 {

static void normalize(const float* x, const float* w, const float* b, int64_t n, float eps,
                      float* y) {
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= double(n);
  double var = 0;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= double(n);
  const float inv = float(1.0 / std::sqrt(var + double(eps)));
  const float m = float(mean);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) * inv * w[i] + b[i];
}

void layer_norm(const float* x, const float* w, const float* b, int64_t n, float eps, float* y) {
  normalize(x, w, b, n, eps, y);
}

void group_norm(const float* x, const float* w, const float* b, int64_t n, int64_t groups,
                float eps, float* y) {
  const int64_t g = n / groups;
  for (int64_t h = 0; h < groups; ++h)
    normalize(x + h * g, w + h * g, b + h * g, g, eps, y + h * g);
}

}  // namespace rwkv7
