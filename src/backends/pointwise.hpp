#pragma once
// Element-wise maps of the RWKV-7 graph (SPEC §3) over n channels. Each backend supplies a
// table of them: the reference one is plain scalar C++ (the oracle), the CPU one SIMD. Outputs
// may alias inputs of the same length.
#include <cstddef>

namespace rwkv7 {

struct PointwiseOps {
  // out = σ(bias + z)
  void (*sigmoid_bias)(const float* bias, const float* z, float* out, size_t n);
  // out = exp(-e^-0.5 · σ(w0 + z))          (the per-channel decay)
  void (*decay)(const float* w0, const float* z, float* out, size_t n);
  // v += (v_first - v) · σ(v0 + z)           (value residual towards layer 0)
  void (*value_residual)(const float* v0, const float* z, const float* v_first, float* v, size_t n);
  // x = tanh(x); x = σ(x); x = max(x, 0)²
  void (*tanh)(float* x, size_t n);
  void (*sigmoid)(float* x, size_t n);
  void (*relu_square)(float* x, size_t n);
  // The softmax pieces of the cross-entropy over a row of logits: the largest value (n ≥ 1;
  // NaN if any value is), Σ exp(x - shift) (summed in double: a row is a whole vocabulary),
  // and out = exp(x - shift) · scale (out may be x); a NaN in gives NaN out, as std::exp.
  float (*max_value)(const float* x, size_t n);
  double (*exp_sum)(const float* x, float shift, size_t n);
  void (*exp_scale)(const float* x, float shift, float scale, float* out, size_t n);
};

// Scalar versions with std::exp / std::tanh.
const PointwiseOps& scalar_pointwise_ops();

}  // namespace rwkv7
