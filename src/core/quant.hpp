#pragma once
// ggml's block-quantised weight formats, bit-exact with ggml's layout and its reference
// quantisation (quantize_row_q8_0_ref / quantize_row_q4_0_ref), so GGUF files move both ways.
//
//   Q8_0 block (34 bytes): f16 d, int8 q[32]                  x[j] = d * q[j]
//   Q4_0 block (18 bytes): f16 d, uint8 qs[16]                x[j] = d * (nibble_j - 8)
//        qs[j] low nibble = element j, high nibble = element j + 16 (j < 16)
//
// A row of a quantised [rows, cols] matrix is cols / 32 consecutive blocks (cols % 32 == 0).
#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace rwkv7 {

constexpr int64_t kQuantBlock = 32;  // elements per block (QK8_0 = QK4_0 = 32)
constexpr size_t kQ8Bytes = 34;
constexpr size_t kQ4Bytes = 18;

// Bytes of one block of a quantised type (34 or 18); Error for plain types.
size_t quant_block_bytes(DType t);

// n (multiple of 32) floats → n/32 blocks, as ggml's reference quantiser does it.
void quantize_row_q8_0(const float* x, void* out, int64_t n);
void quantize_row_q4_0(const float* x, void* out, int64_t n);
void quantize_row(DType t, const float* x, void* out, int64_t n);

// n/32 blocks → n floats.
void dequantize_row(DType t, const void* in, float* out, int64_t n);

// Element i of consecutive blocks of type t.
float dequantize_element(DType t, const void* data, size_t i);

// Decodes n/32 blocks of Q8_0 or Q4_0 into int8 values q (Q4_0: nibble - 8, in [-8, 7]) and
// one fp32 scale per block: x[j] = d[j / 32] * q[j]. The integer form the fast matmul uses.
void unpack_row_i8(DType t, const void* in, int8_t* q, float* d, int64_t n);

}  // namespace rwkv7
