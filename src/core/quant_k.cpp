// K-quants (Q4_K, Q5_K, Q6_K): super-blocks of 256 values, layouts in quant.hpp. The
// quantisers follow ggml's reference ones (quantize_row_q{4,5,6}_K_ref, what llama-quantize
// runs without an importance matrix) operation for operation in fp32, so that the same input
// gives the same bytes: the search for each sub-block's scale (and min), the 6- or 8-bit
// quantisation of those scales against one f16 super-scale, then every value re-rounded
// against its sub-block's final scale.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/quant.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::detail {
namespace {

constexpr float kGroupMaxEps = 1e-15f;  // below this a group counts as all zero

// Round to nearest, ties to even, for |f| < 2^22: adding 1.5·2^23 leaves the integer in the
// low mantissa bits (ggml's nearest_int).
inline int nearest_int(float f) {
  const float v = f + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

inline void put_f16(unsigned char* p, float f) {
  const uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
}

// Asymmetric fit of n values to levels 0..nmax: x ≈ scale·L + min with min ≤ 0, minimising
// Σ w·(scale·L + min - x)² over nstep + 1 trial inverse scales (rmin + rdelta·is + nmax) /
// (max - min), each solved by weighted least squares (ggml's make_qkx2_quants, squared
// error). Returns scale; *neg_min = -min.
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min,
                    uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -min;
    return 0.0f;
  }
  float iscale = float(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = uint8_t(std::max(0, std::min(nmax, l)));
    float diff = scale * float(L[i]) + min - x[i];
    diff = diff * diff;
    best_error += w[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = uint8_t(l);
      const float fl = float(l);
      sum_l += w[i] * fl;
      sum_l2 += w[i] * fl * fl;
      sum_xl += w[i] * fl * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * float(Laux[i]) + this_min - x[i];
        diff = diff * diff;
        cur_error += w[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *neg_min = -min;
  return scale;
}

// Symmetric fit of n values to levels -nmax..nmax-1 (stored + nmax in L), weights x², the
// inverse scale -nmax/max and 18 neighbours ±0.1k tried, least squares per trial (ggml's
// make_qx_quants with rmse_type 1 and no importance weights). Returns the scale.
float fit_scale_symmetric(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  auto level = [&](float iscale, int i) {
    return std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i])));
  };
  float iscale = float(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = level(iscale, i);
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i], fl = float(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i], fl = float(level(iscale, i));
      sumlx += w * x[i] * fl;
      suml2 += w * fl * fl;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = int8_t(nmax + level(iscale, i));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q4_K / Q5_K (bits 4 or 5): one super-block of 256 values into `o` (144 or 176 bytes).
void quantize_block_q45k(const float* x, unsigned char* o, int bits) {
  const int nmax = (1 << bits) - 1;
  uint8_t L[256], Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
    scales[j] =
        bits == 4
            ? fit_scale_min(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, -1.0f, 0.1f, 20)
            : fit_scale_min(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  unsigned char* sc = o + 4;  // d, dmin, then scales[12]
  std::memset(sc, 0, 12);
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  for (int j = 0; j < 8; ++j) {
    // ggml stores nearest_int into a uint8_t before clamping to 63: same here.
    const uint8_t ls = std::min<uint8_t>(63, uint8_t(nearest_int(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, uint8_t(nearest_int(inv_min * mins[j])));
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
      sc[j - 4] |= uint8_t((ls >> 4) << 6);
      sc[j] |= uint8_t((lm >> 4) << 6);
    }
  }
  put_f16(o, max_scale / 63.0f);
  put_f16(o + kK45DminAt, max_min / 63.0f);
  const float d = f16_at(o), dmin = f16_at(o + kK45DminAt);
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    k4_scale_min(j, sc, &s, &m);
    const float dj = d * float(s);
    if (dj == 0) continue;  // keeps the fit's levels, as ggml does
    const float mj = dmin * float(m);
    for (int i = 0; i < 32; ++i) {
      const int l = nearest_int((x[32 * j + i] + mj) / dj);
      L[32 * j + i] = uint8_t(std::max(0, std::min(nmax, l)));
    }
  }
  if (bits == 4) {
    unsigned char* q = o + kQ4KQsAt;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        q[32 * c + l] = uint8_t(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    return;
  }
  unsigned char* qh = o + kQ5KQhAt;
  unsigned char* ql = o + kQ5KQsAt;
  std::memset(qh, 0, 32);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
      if (l1 > 15) {
        l1 -= 16;
        qh[l] |= uint8_t(1 << (2 * c));
      }
      if (l2 > 15) {
        l2 -= 16;
        qh[l] |= uint8_t(2 << (2 * c));
      }
      ql[32 * c + l] = uint8_t(l1 | (l2 << 4));
    }
  }
}

// Q6_K: one super-block into `o` (210 bytes): ql[128] qh[64] scales[16] d.
void quantize_block_q6k(const float* x, unsigned char* o) {
  int8_t L[256];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float scale = fit_scale_symmetric(16, 32, x + 16 * ib, L + 16 * ib);
    scales[ib] = scale;
    if (std::fabs(scale) > max_abs_scale) {
      max_abs_scale = std::fabs(scale);
      max_scale = scale;
    }
  }
  std::memset(o, 0, kQ6KBytes);
  if (max_abs_scale < kGroupMaxEps) return;  // all zero, d = 0
  auto* sc = reinterpret_cast<int8_t*>(o + kQ6KScalesAt);
  const float iscale = -128.0f / max_scale;
  put_f16(o + kQ6KDAt, 1 / iscale);
  for (int ib = 0; ib < 16; ++ib) sc[ib] = int8_t(std::min(127, nearest_int(iscale * scales[ib])));
  const float d = f16_at(o + kQ6KDAt);
  for (int j = 0; j < 16; ++j) {
    const float dj = d * float(sc[j]);
    if (dj == 0) continue;
    for (int i = 0; i < 16; ++i) {
      const int l = nearest_int(x[16 * j + i] / dj);
      L[16 * j + i] = int8_t(std::max(-32, std::min(31, l)) + 32);
    }
  }
  for (int h = 0; h < 2; ++h) {
    unsigned char* ql = o + 64 * h;
    unsigned char* qh = o + kQ6KQhAt + 32 * h;
    const int8_t* Lh = L + 128 * h;
    for (int l = 0; l < 32; ++l) {
      ql[l] = uint8_t((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
      ql[l + 32] = uint8_t((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
      qh[l] = uint8_t((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                      ((Lh[l + 96] >> 4) << 6));
    }
  }
}

// One super-block, looping the way the layout runs (fixed shifts per run, so that the
// compiler vectorises the inner loops); the same values as q45k_level / q6k_level give.
void dequantize_block_k(DType t, const unsigned char* b, float* y) {
  if (t == DType::Q6_K) {
    const float d = f16_at(b + kQ6KDAt);
    const auto* sc = reinterpret_cast<const int8_t*>(b + kQ6KScalesAt);
    for (int h = 0; h < 2; ++h, y += 128) {
      const unsigned char* ql = b + 64 * h;
      const unsigned char* qh = b + kQ6KQhAt + 32 * h;
      const int8_t* s = sc + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * float(s[is]) * float(q1);
        y[l + 32] = d * float(s[is + 2]) * float(q2);
        y[l + 64] = d * float(s[is + 4]) * float(q3);
        y[l + 96] = d * float(s[is + 6]) * float(q4);
      }
    }
    return;
  }
  const bool five = t == DType::Q5_K;
  const float d = f16_at(b), dmin = f16_at(b + kK45DminAt);
  const unsigned char* qh = b + kQ5KQhAt;
  const unsigned char* qs = b + (five ? kQ5KQsAt : kQ4KQsAt);
  for (int c = 0; c < 4; ++c, y += 64) {
    uint8_t s0, m0, s1, m1;
    k4_scale_min(2 * c, b + kK45ScalesAt, &s0, &m0);
    k4_scale_min(2 * c + 1, b + kK45ScalesAt, &s1, &m1);
    const float d1 = d * float(s0), n1 = dmin * float(m0);
    const float d2 = d * float(s1), n2 = dmin * float(m1);
    const unsigned char* q = qs + 32 * c;
    for (int l = 0; l < 32; ++l) {
      const int h1 = five ? ((qh[l] >> (2 * c)) & 1) << 4 : 0;
      const int h2 = five ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0;
      y[l] = d1 * float((q[l] & 0xF) | h1) - n1;
      y[l + 32] = d2 * float((q[l] >> 4) | h2) - n2;
    }
  }
}

}  // namespace

void quantize_row_k(DType t, const float* x, void* out, int64_t n) {
  auto* o = static_cast<unsigned char*>(out);
  const size_t bb = quant_block_bytes(t);
  for (int64_t b = 0; b < n / kSuperBlock; ++b, x += kSuperBlock, o += bb) {
    if (t == DType::Q6_K)
      quantize_block_q6k(x, o);
    else
      quantize_block_q45k(x, o, t == DType::Q4_K ? 4 : 5);
  }
}

void dequantize_row_k(DType t, const void* in, float* out, int64_t n) {
  const auto* p = static_cast<const unsigned char*>(in);
  const size_t bb = quant_block_bytes(t);
  for (int64_t b = 0; b < n / kSuperBlock; ++b)
    dequantize_block_k(t, p + size_t(b) * bb, out + b * kSuperBlock);
}

float dequantize_element_k(DType t, const void* data, size_t i) {
  const auto* b =
      static_cast<const unsigned char*>(data) + (i / kSuperBlock) * quant_block_bytes(t);
  const int e = int(i % kSuperBlock);
  if (t == DType::Q6_K) {
    const int h = e / 128, r = e % 128;
    const auto* sc = reinterpret_cast<const int8_t*>(b + kQ6KScalesAt);
    const float dj = f16_at(b + kQ6KDAt) * float(sc[8 * h + 2 * (r / 32) + (r % 32) / 16]);
    return dj * float(q6k_level(b, e) - 32);
  }
  uint8_t s, m;
  k4_scale_min(e / 32, b + kK45ScalesAt, &s, &m);
  const float dj = f16_at(b) * float(s), mj = f16_at(b + kK45DminAt) * float(m);
  return dj * float(q45k_level(b, e, t == DType::Q5_K)) - mj;
}

}  // namespace rwkv7::detail
