// Q8_0 / Q4_0 (de)quantisation following ggml's reference math (see quant.hpp).
#include "core/quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

void check_len(DType t, int64_t n) {
  const int64_t block = quant_block_elems(t);
  if (n < 0 || n % block != 0) {
    throw Error(dtype_name(t) + ": row length " + std::to_string(n) + " is not a multiple of " +
                std::to_string(block));
  }
}

inline float block_scale(const unsigned char* b) {
  uint16_t h;
  std::memcpy(&h, b, 2);
  return f16_to_f32(h);
}

inline void put_scale(unsigned char* b, float d) {
  const uint16_t h = f32_to_f16(d);
  std::memcpy(b, &h, 2);
}

}  // namespace

size_t quant_block_bytes(DType t) {
  switch (t) {
    case DType::Q8_0:
      return kQ8Bytes;
    case DType::Q4_0:
    case DType::IQ4_NL:
      return kQ4Bytes;
    case DType::Q5_0:
      return 22;
    case DType::Q5_1:
      return 24;
    case DType::Q4_K:
      return kQ4KBytes;
    case DType::Q5_K:
      return kQ5KBytes;
    case DType::Q6_K:
      return kQ6KBytes;
    default:
      throw Error("quant_block_bytes: " + dtype_name(t) + " is not a block-quantised type");
  }
}

int64_t quant_block_elems(DType t) {
  if (!is_quantized(t))
    throw Error("quant_block_elems: " + dtype_name(t) + " is not a block-quantised type");
  return is_k_quant(t) ? kSuperBlock : kQuantBlock;
}

bool is_k_quant(DType t) { return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K; }

// d = max|x| / 127, q = round(x / d) (round half away from zero, as C's roundf).
void quantize_row_q8_0(const float* x, void* out, int64_t n) {
  check_len(DType::Q8_0, n);
  auto* o = static_cast<unsigned char*>(out);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, o += kQ8Bytes) {
    float amax = 0.0f;
    for (int j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_scale(o, d);
    for (int j = 0; j < kQuantBlock; ++j) o[2 + j] = uint8_t(int8_t(std::roundf(x[j] * id)));
  }
}

// The signed value of largest magnitude maps to -8: d = max / -8, q = min(15, trunc(x/d + 8.5)).
void quantize_row_q4_0(const float* x, void* out, int64_t n) {
  check_len(DType::Q4_0, n);
  auto* o = static_cast<unsigned char*>(out);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, o += kQ4Bytes) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQuantBlock; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_scale(o, d);
    for (int j = 0; j < kQuantBlock / 2; ++j) {
      // ggml converts through int8_t (truncation toward zero); values are in [0.5, 16.5].
      const int lo = std::min(15, int(int8_t(x[j] * id + 8.5f)));
      const int hi = std::min(15, int(int8_t(x[j + kQuantBlock / 2] * id + 8.5f)));
      o[2 + j] = uint8_t(lo | (hi << 4));
    }
  }
}

void quantize_row(DType t, const float* x, void* out, int64_t n) {
  if (t == DType::Q8_0) return quantize_row_q8_0(x, out, n);
  if (t == DType::Q4_0) return quantize_row_q4_0(x, out, n);
  if (!is_quantized(t))
    throw Error("quantize_row: " + dtype_name(t) + " is not a block-quantised type");
  check_len(t, n);
  if (is_k_quant(t)) return detail::quantize_row_k(t, x, out, n);
  return detail::quantize_row_32(t, x, out, n);
}

void dequantize_row(DType t, const void* in, float* out, int64_t n) {
  check_len(t, n);
  if (is_k_quant(t)) return detail::dequantize_row_k(t, in, out, n);
  const size_t bb = quant_block_bytes(t);
  if (t != DType::Q8_0 && t != DType::Q4_0) {
    const auto* p = static_cast<const unsigned char*>(in);
    for (int64_t b = 0; b < n / kQuantBlock; ++b)
      detail::dequantize_block_32(t, p + size_t(b) * bb, out + b * kQuantBlock);
    return;
  }
  const auto* p = static_cast<const unsigned char*>(in);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, p += bb, out += kQuantBlock) {
    const float d = block_scale(p);
    if (t == DType::Q8_0) {
      for (int j = 0; j < kQuantBlock; ++j) out[j] = d * float(int8_t(p[2 + j]));
    } else {
      for (int j = 0; j < kQuantBlock / 2; ++j) {
        out[j] = d * float(int(p[2 + j] & 0x0f) - 8);
        out[j + kQuantBlock / 2] = d * float(int(p[2 + j] >> 4) - 8);
      }
    }
  }
}

float dequantize_element(DType t, const void* data, size_t i) {
  if (is_k_quant(t)) return detail::dequantize_element_k(t, data, i);
  const size_t bb = quant_block_bytes(t);
  const auto* p = static_cast<const unsigned char*>(data) + (i / kQuantBlock) * bb;
  const size_t j = i % kQuantBlock;
  if (t != DType::Q8_0 && t != DType::Q4_0) {
    float block[kQuantBlock];
    detail::dequantize_block_32(t, p, block);
    return block[j];
  }
  const float d = block_scale(p);
  if (t == DType::Q8_0) return d * float(int8_t(p[2 + j]));
  const uint8_t byte = p[2 + j % 16];
  return d * float(int(j < 16 ? (byte & 0x0f) : (byte >> 4)) - 8);
}

void unpack_row_i8(DType t, const void* in, int8_t* q, float* d, int64_t n) {
  if (t != DType::Q8_0 && t != DType::Q4_0)
    throw Error("unpack_row_i8: " + dtype_name(t) + " has no int8 + scale form");
  check_len(t, n);
  const size_t bb = quant_block_bytes(t);
  const auto* p = static_cast<const unsigned char*>(in);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, p += bb, q += kQuantBlock) {
    d[b] = block_scale(p);
    if (t == DType::Q8_0) {
      std::memcpy(q, p + 2, kQuantBlock);
    } else {
      for (int j = 0; j < kQuantBlock / 2; ++j) {
        q[j] = int8_t(int(p[2 + j] & 0x0f) - 8);
        q[j + kQuantBlock / 2] = int8_t(int(p[2 + j] >> 4) - 8);
      }
    }
  }
}

}  // namespace rwkv7
