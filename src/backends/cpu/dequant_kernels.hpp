#pragma once
// SIMD decoding of Q8_0 / Q4_0 blocks and Q4_K / Q5_K / Q6_K super-blocks (core/quant.hpp) to
// fp32, for the prefill products that widen weight panels: same values as core's
// dequantize_row, bit for bit (the other block types go through core's code).
#include <cstdint>

#include "core/dtype.hpp"

namespace rwkv7::cpu {

// n values (whole blocks of t) from consecutive blocks of the quantised type t.
void dequantize_row(DType t, const void* blocks, float* out, int64_t n);

}  // namespace rwkv7::cpu
