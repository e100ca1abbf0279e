// VNNI product over Q8_0 panels (see q8_panels_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/q8_panels_kernels.cpp"
#include "backends/cpu/q8_panels_kernels.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "backends/cpu/quant_kernels.hpp"
#include "core/quant.hpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {

bool Supported() { return HWY_TARGET == HWY_AVX3_DL; }

#if HWY_TARGET == HWY_AVX3_DL
// MR positions × 32 outputs of one panel: per block, the int32 accumulators start at the
// positions' offsets, take 8 groups of 4 inputs by vpdpbusd (weights unsigned, the broadcast
// activation bytes signed), then are scaled by weight × activation scale into fp32.
template <size_t MR>
__attribute__((target(HWY_TARGET_STR ",avx512vnni"))) void PanelRows(
    const uint8_t* panel, size_t nb, const int8_t* q, const float* d, const int32_t* corr,
    size_t cols, float* y, size_t ldy, size_t nn) {
  __m512 acc[MR][2];
  for (size_t t = 0; t < MR; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* blk = panel + b * kQ8PanelBlockBytes;
    __m512i ai[MR][2];
    for (size_t t = 0; t < MR; ++t) ai[t][0] = ai[t][1] = _mm512_set1_epi32(corr[t * nb + b]);
    for (size_t g = 0; g < 8; ++g) {
      const __m512i w0 = _mm512_loadu_si512(blk + g * 128);
      const __m512i w1 = _mm512_loadu_si512(blk + g * 128 + 64);
      for (size_t t = 0; t < MR; ++t) {
        int32_t four;
        std::memcpy(&four, q + t * cols + b * 32 + g * 4, 4);
        const __m512i xb = _mm512_set1_epi32(four);
        ai[t][0] = _mm512_dpbusd_epi32(ai[t][0], w0, xb);
        ai[t][1] = _mm512_dpbusd_epi32(ai[t][1], w1, xb);
      }
    }
    const __m512 dw0 = _mm512_loadu_ps(reinterpret_cast<const float*>(blk + 1024));
    const __m512 dw1 = _mm512_loadu_ps(reinterpret_cast<const float*>(blk + 1024) + 16);
    for (size_t t = 0; t < MR; ++t) {
      const __m512 s = _mm512_set1_ps(d[t * nb + b]);
      acc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai[t][0]), _mm512_mul_ps(dw0, s), acc[t][0]);
      acc[t][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai[t][1]), _mm512_mul_ps(dw1, s), acc[t][1]);
    }
  }
  const __mmask16 m0 = nn >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nn) - 1);
  const __mmask16 m1 = nn >= 32   ? __mmask16(0xFFFF)
                       : nn <= 16 ? 0
                                  : __mmask16((1u << (nn - 16)) - 1);
  for (size_t t = 0; t < MR; ++t) {
    _mm512_mask_storeu_ps(y + t * ldy, m0, acc[t][0]);
    _mm512_mask_storeu_ps(y + t * ldy + 16, m1, acc[t][1]);
  }
}
#endif

void GemmQ8Panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                  const int8_t* q, const float* d, const int32_t* corr, size_t T, float* y,
                  size_t ldy) {
#if HWY_TARGET == HWY_AVX3_DL
  const size_t nb = cols / 32;
  constexpr size_t MR = 6;
  for (size_t p = p0; p < p1; ++p) {
    const uint8_t* panel = panels + p * nb * kQ8PanelBlockBytes;
    const size_t o0 = p * kQ8PanelWidth, nn = std::min(kQ8PanelWidth, rows - o0);
    size_t t = 0;
    for (; t + MR <= T; t += MR)
      PanelRows<MR>(panel, nb, q + t * cols, d + t * nb, corr + t * nb, cols, y + t * ldy + o0, ldy,
                    nn);
    const int8_t* qt = q + t * cols;
    const float* dt = d + t * nb;
    const int32_t* ct = corr + t * nb;
    float* yt = y + t * ldy + o0;
    switch (T - t) {
      case 5:
        PanelRows<5>(panel, nb, qt, dt, ct, cols, yt, ldy, nn);
        break;
      case 4:
        PanelRows<4>(panel, nb, qt, dt, ct, cols, yt, ldy, nn);
        break;
      case 3:
        PanelRows<3>(panel, nb, qt, dt, ct, cols, yt, ldy, nn);
        break;
      case 2:
        PanelRows<2>(panel, nb, qt, dt, ct, cols, yt, ldy, nn);
        break;
      case 1:
        PanelRows<1>(panel, nb, qt, dt, ct, cols, yt, ldy, nn);
        break;
      default:
        break;
    }
  }
#else
  (void)panels, (void)rows, (void)cols, (void)p0, (void)p1, (void)q, (void)d, (void)corr, (void)T,
      (void)y, (void)ldy;  // never called: no panels are made without VNNI
#endif
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(Supported);
HWY_EXPORT(GemmQ8Panels);

bool q8_panels_supported() { return HWY_DYNAMIC_DISPATCH(Supported)(); }

size_t q8_panels_bytes(size_t rows, size_t cols) {
  return (rows + kQ8PanelWidth - 1) / kQ8PanelWidth * (cols / 32) * kQ8PanelBlockBytes;
}

void pack_q8_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                    uint8_t* out) {
  const size_t nb = cols / 32, rb = size_t(row_bytes(DType::Q8_0, int64_t(cols)));
  std::vector<int8_t> q(cols);
  std::vector<float> d(nb);
  for (size_t p = p0; p < p1; ++p) {
    uint8_t* panel = out + p * nb * kQ8PanelBlockBytes;
    for (size_t j = 0; j < kQ8PanelWidth; ++j) {
      const size_t o = p * kQ8PanelWidth + j;
      if (o < rows) {
        unpack_row_i8(DType::Q8_0, w + o * rb, q.data(), d.data(), int64_t(cols));
      } else {  // padding: zero weights, zero scale
        std::fill(q.begin(), q.end(), int8_t(0));
        std::fill(d.begin(), d.end(), 0.0f);
      }
      for (size_t b = 0; b < nb; ++b) {
        uint8_t* blk = panel + b * kQ8PanelBlockBytes;
        for (size_t i = 0; i < 32; ++i)
          blk[(i / 4) * 128 + j * 4 + i % 4] = uint8_t(int(q[b * 32 + i]) + 128);
        std::memcpy(blk + 1024 + j * 4, &d[b], 4);
      }
    }
  }
}

void quantize_q8_positions(const float* x, size_t T, size_t cols, int8_t* q, float* d,
                           int32_t* corr) {
  const size_t nb = cols / 32;
  constexpr size_t kChunk = 256;  // blocks per call: the lane sums fit on the stack
  int32_t neg_s4[kChunk * 8];
  for (size_t t = 0; t < T; ++t) {
    for (size_t b0 = 0; b0 < nb; b0 += kChunk) {
      const size_t n = std::min(kChunk, nb - b0);
      quantize_act_q8(x + t * cols + b0 * 32, n, q + t * cols + b0 * 32, d + t * nb + b0, neg_s4);
    }
    for (size_t b = 0; b < nb; ++b) {
      int32_t s = 0;
      for (size_t i = 0; i < 32; ++i) s += q[t * cols + b * 32 + i];
      corr[t * nb + b] = -128 * s;
    }
  }
}

void gemm_q8_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                    const int8_t* q, const float* d, const int32_t* corr, size_t T, float* y,
                    size_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemmQ8Panels)(panels, rows, cols, p0, p1, q, d, corr, T, y, ldy);
}

void gemm_q8_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                           const int8_t* q, const float* d, const int32_t* corr, size_t T,
                           double* y, size_t ldy) {
  const size_t nb = cols / 32;
  for (size_t p = p0; p < p1; ++p)
    for (size_t j = 0; j < kQ8PanelWidth && p * kQ8PanelWidth + j < rows; ++j)
      for (size_t t = 0; t < T; ++t) {
        double sum = 0;
        for (size_t b = 0; b < nb; ++b) {
          const uint8_t* blk = panels + (p * nb + b) * kQ8PanelBlockBytes;
          int64_t dot = corr[t * nb + b];
          for (size_t i = 0; i < 32; ++i)
            dot += int64_t(blk[(i / 4) * 128 + j * 4 + i % 4]) * q[t * cols + b * 32 + i];
          float dw;
          std::memcpy(&dw, blk + 1024 + j * 4, 4);
          sum += double(dw) * double(d[t * nb + b]) * double(dot);
        }
        y[t * ldy + p * kQ8PanelWidth + j] = sum;
      }
}

}  // namespace rwkv7::cpu
#endif
