#include "backends/pointwise.hpp"

#include <algorithm>
#include <cmath>

namespace rwkv7 {
namespace {

inline float sigmoid1(float x) { return 1.0f / (1.0f + std::exp(-x)); }

void sigmoid_bias(const float* bias, const float* z, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = sigmoid1(bias[i] + z[i]);
}

void decay(const float* w0, const float* z, float* out, size_t n) {
  const float e_half = std::exp(-0.5f);
  for (size_t i = 0; i < n; ++i) out[i] = std::exp(-e_half * sigmoid1(w0[i] + z[i]));
}

void value_residual(const float* v0, const float* z, const float* v_first, float* v, size_t n) {
  for (size_t i = 0; i < n; ++i) v[i] += (v_first[i] - v[i]) * sigmoid1(v0[i] + z[i]);
}

void tanh_map(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
}

void sigmoid_map(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = sigmoid1(x[i]);
}

void relu_square(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float h = std::max(x[i], 0.0f);
    x[i] = h * h;
  }
}

float max_value(const float* x, size_t n) {  // NaN if any is NaN
  float m = x[0];
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return x[i];
    m = std::max(m, x[i]);
  }
  return m;
}

double exp_sum(const float* x, float shift, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(double(x[i]) - double(shift));
  return sum;
}

void exp_scale(const float* x, float shift, float scale, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = float(std::exp(double(x[i]) - double(shift)) * scale);
}

}  // namespace

const PointwiseOps& scalar_pointwise_ops() {
  static const PointwiseOps ops{sigmoid_bias, decay,     value_residual, tanh_map, sigmoid_map,
                                relu_square,  max_value, exp_sum,        exp_scale};
  return ops;
}

}  // namespace rwkv7
