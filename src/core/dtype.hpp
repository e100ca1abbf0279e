#pragma once
// Element types of stored tensors and the conversions to the fp32 the math runs in.
#include <cstdint>
#include <cstring>
#include <string>

namespace rwkv7 {

// Q8_0 .. IQ4_NL: ggml's block-quantised types (blocks of 32 or 256 along a row, see
// core/quant.hpp). New members go at the end: the numbering is not stored anywhere, but
// keeping it stable costs nothing.
enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  I32,
  I64,
  U8,
  I8,
  Q8_0,
  Q4_0,
  Q4_K,
  Q5_K,
  Q6_K,
  Q5_0,
  Q5_1,
  IQ4_NL
};

// Bytes per element of a plain type; 0 for the block-quantised types (use row_bytes).
size_t dtype_size(DType t);
bool is_quantized(DType t);
// Bytes of `cols` consecutive elements (a row). Quantised types need cols to be a multiple
// of their block (32, or 256 for the K-quants): Error otherwise.
size_t row_bytes(DType t, int64_t cols);
std::string dtype_name(DType t);  // "f32", "bf16", ...

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, NaN kept quiet (as torch does).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t h);
// The f16 stored (little-endian, any alignment) at p: a quantised block's scale.
inline float f16_at(const void* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
uint16_t f32_to_f16(float f);

// Reads element i of a buffer of type t as a float (quantised types: i counts elements of
// consecutive blocks, so rows of a matrix whose cols fill whole blocks follow each other).
float load_as_f32(DType t, const void* data, size_t i);

}  // namespace rwkv7
