#include "core/dtype.hpp"

#include <cmath>

#include "core/quant.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
      return 2;
    case DType::I64:
      return 8;
    case DType::U8:
    case DType::I8:
      return 1;
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::IQ4_NL:
      return 0;
  }
  return 0;
}

bool is_quantized(DType t) { return t >= DType::Q8_0 && t <= DType::IQ4_NL; }

size_t row_bytes(DType t, int64_t cols) {
  if (cols < 0) throw Error("row_bytes: negative column count");
  if (!is_quantized(t)) return size_t(cols) * dtype_size(t);
  const int64_t block = quant_block_elems(t);
  if (cols % block != 0) {
    throw Error(dtype_name(t) + " needs a multiple of " + std::to_string(block) + " columns, got " +
                std::to_string(cols));
  }
  return size_t(cols / block) * quant_block_bytes(t);
}

std::string dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "f32";
    case DType::F16:
      return "f16";
    case DType::BF16:
      return "bf16";
    case DType::I32:
      return "i32";
    case DType::I64:
      return "i64";
    case DType::U8:
      return "u8";
    case DType::I8:
      return "i8";
    case DType::Q8_0:
      return "q8_0";
    case DType::Q4_0:
      return "q4_0";
    case DType::Q4_K:
      return "q4_k";
    case DType::Q5_K:
      return "q5_k";
    case DType::Q6_K:
      return "q6_k";
    case DType::Q5_0:
      return "q5_0";
    case DType::Q5_1:
      return "q5_1";
    case DType::IQ4_NL:
      return "iq4_nl";
  }
  return "?";
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        man <<= 1;
        ++e;
      } while ((man & 0x400u) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow to inf
  if (abs < 0x38800000u) {                                  // subnormal or zero in f16
    float a;
    std::memcpy(&a, &abs, 4);
    return uint16_t(sign | uint32_t(std::nearbyint(a * 16777216.0f)));  // a / 2^-24
  }
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return uint16_t(sign | ((rounded - (112u << 23)) >> 13));
}

float load_as_f32(DType t, const void* data, size_t i) {
  const auto* p = static_cast<const unsigned char*>(data);
  switch (t) {
    case DType::F32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return bf16_to_f32(h);
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return f16_to_f32(h);
    }
    case DType::I32: {
      int32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      return float(v);
    }
    case DType::I64: {
      int64_t v;
      std::memcpy(&v, p + 8 * i, 8);
      return float(v);
    }
    case DType::U8:
      return float(p[i]);
    case DType::I8:
      return float(int8_t(p[i]));
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::IQ4_NL:
      return dequantize_element(t, data, i);
  }
  throw Error("load_as_f32: unsupported dtype");
}

}  // namespace rwkv7
