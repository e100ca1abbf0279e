#pragma once
// SIMD versions of the element-wise maps (backends/pointwise.hpp), Highway's vector exp/tanh.
#include "backends/pointwise.hpp"

namespace rwkv7::cpu {

const PointwiseOps& simd_pointwise_ops();

}  // namespace rwkv7::cpu
