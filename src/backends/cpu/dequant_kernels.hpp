#pragma once
// SIMD decoding of Q8_0 / Q4_0 blocks (core/quant.hpp) to fp32, for the prefill products that
// widen weight panels: same values as core's dequantize_row, bit for bit.
#include <cstdint>

#include "core/dtype.hpp"

namespace rwkv7::cpu {

// n (multiple of 32) values from n/32 consecutive blocks of type t (Q8_0 or Q4_0).
void dequantize_row(DType t, const void* blocks, float* out, int64_t n);

}  // namespace rwkv7::cpu
