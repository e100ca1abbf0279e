// Q5_0, Q5_1 and IQ4_NL blocks of 32 (layouts in quant.hpp). Q5_0 / Q5_1 quantise as
// ggml's quantize_row_q5_{0,1}_ref; IQ4_NL as ggml's quantize_iq4_nl without an importance
// matrix (what llama-quantize runs: quantize_row_iq4_nl_impl with 7 trial scales each side).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "core/quant.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::detail {
namespace {

inline void put_f16(unsigned char* p, float f) {
  const uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
}

// 32 five-bit levels → qh (bit j = bit 4 of level j) and qs (low nibbles as in Q4_0).
void pack5(const uint8_t* L, unsigned char* qh_at, unsigned char* qs) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = uint8_t((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
    qh |= uint32_t((L[j] & 0x10u) >> 4) << j;
    qh |= uint32_t((L[j + 16] & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(qh_at, &qh, 4);
}

// Index of the table value nearest x (ties to the upper one only when strictly closer), as
// ggml's best_index_int8: values ascending.
int nearest_level(const int8_t* values, int n, float x) {
  if (x <= float(values[0])) return 0;
  if (x >= float(values[n - 1])) return n - 1;
  int lo = 0, hi = n - 1;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < float(values[mid]))
      hi = mid;
    else
      lo = mid;
  }
  return x - float(values[hi - 1]) < float(values[hi]) - x ? hi - 1 : hi;
}

// IQ4_NL: the scale of the table levels that best fits x in least squares with weights x²,
// over the start -max/-127 and the inverse scales (k - 127)/max, |k| ≤ 7; every value then
// takes the nearest level at that (unrounded) scale. An all-zero block stores d = 0 and the
// level nearest 0 (index 8).
void quantize_block_iq4nl(const float* x, unsigned char* o) {
  const int8_t* v = kIq4nlValues;
  uint8_t L[32];
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  float d = 0;
  if (amax >= 1e-15f) {
    float id = 1 / (-max / float(v[0]));
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = float(v[nearest_level(v, 16, id * x[j])]), w = x[j] * x[j];
      sumqx += w * q * x[j];
      sumq2 += w * q * q;
    }
    d = sumqx / sumq2;
    float best = d * sumqx;
    for (int itry = -7; itry <= 7; ++itry) {
      id = float(itry + v[0]) / max;
      sumqx = sumq2 = 0;
      for (int j = 0; j < 32; ++j) {
        const float q = float(v[nearest_level(v, 16, id * x[j])]), w = x[j] * x[j];
        sumqx += w * q * x[j];
        sumq2 += w * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        d = sumqx / sumq2;
        best = d * sumqx;
      }
    }
  }
  put_f16(o, d);
  const float id = d != 0 ? 1 / d : 0.0f;
  for (int j = 0; j < 32; ++j) L[j] = uint8_t(nearest_level(v, 16, id * x[j]));
  for (int j = 0; j < 16; ++j) o[2 + j] = uint8_t(L[j] | (L[j + 16] << 4));
}

// Level j < 32 of a 5-bit block: nibble | bit j of qh << 4.
inline int level5(const unsigned char* qh_at, const unsigned char* qs, int j) {
  uint32_t qh;
  std::memcpy(&qh, qh_at, 4);
  const int nib = j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4;
  return nib | int((qh >> j) & 1u) << 4;
}

}  // namespace

void quantize_row_32(DType t, const float* x, void* out, int64_t n) {
  auto* o = static_cast<unsigned char*>(out);
  const size_t bb = quant_block_bytes(t);
  uint8_t L[32];
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, o += bb) {
    if (t == DType::Q5_0) {
      // Signed value of largest magnitude ↦ level 0: d = max / -16, level = x/d + 16.5
      // truncated through int8 (as ggml), at most 31.
      float amax = 0, max = 0;
      for (int j = 0; j < 32; ++j)
        if (amax < std::fabs(x[j])) {
          amax = std::fabs(x[j]);
          max = x[j];
        }
      const float d = max / -16;
      const float id = d != 0 ? 1.0f / d : 0.0f;
      put_f16(o, d);
      for (int j = 0; j < 32; ++j) L[j] = uint8_t(std::min(31, int(int8_t(x[j] * id + 16.5f))));
      pack5(L, o + 2, o + 6);
    } else if (t == DType::Q5_1) {
      // d = (max - min) / 31, m = min, level = (x - min)/d + 0.5 truncated through uint8.
      float min = FLT_MAX, max = -FLT_MAX;
      for (int j = 0; j < 32; ++j) {
        min = std::min(min, x[j]);
        max = std::max(max, x[j]);
      }
      const float d = (max - min) / 31;
      const float id = d != 0 ? 1.0f / d : 0.0f;
      put_f16(o, d);
      put_f16(o + 2, min);
      for (int j = 0; j < 32; ++j) L[j] = uint8_t((x[j] - min) * id + 0.5f);
      pack5(L, o + 4, o + 8);
    } else if (t == DType::IQ4_NL) {
      quantize_block_iq4nl(x, o);
    } else {
      throw Error("quantize: " + dtype_name(t) + " is not a block-32 type");
    }
  }
}

void dequantize_block_32(DType t, const unsigned char* b, float* y) {
  const float d = f16_at(b);
  switch (t) {
    case DType::Q5_0:
      for (int j = 0; j < 32; ++j) y[j] = float(level5(b + 2, b + 6, j) - 16) * d;
      return;
    case DType::Q5_1: {
      const float m = f16_at(b + 2);
      for (int j = 0; j < 32; ++j) y[j] = float(level5(b + 4, b + 8, j)) * d + m;
      return;
    }
    case DType::IQ4_NL:
      for (int j = 0; j < 16; ++j) {
        y[j] = d * float(kIq4nlValues[b[2 + j] & 0x0F]);
        y[j + 16] = d * float(kIq4nlValues[b[2 + j] >> 4]);
      }
      return;
    default:
      throw Error("dequantize: " + dtype_name(t) + " is not a block-32 type");
  }
}

}  // namespace rwkv7::detail
