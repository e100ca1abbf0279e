// AVX2 / AVX-512 VNNI products over Q8_0 panels (see q8_panels_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/q8_panels_kernels.cpp"
#include "backends/cpu/q8_panels_kernels.hpp"

#include <algorithm>
#include <cstring>

#include "backends/cpu/position_tiles.hpp"
#include "backends/cpu/quant_kernels.hpp"
#include "core/dtype.hpp"
#include "core/quant.hpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3_DL
constexpr size_t kWidth = 32;
constexpr size_t kBlockBytes = 8 * kWidth * 4 + kWidth * 4;  // bytes + fp32 scales of one block

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
    const uint8_t* blk = panel + b * kBlockBytes;
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
#elif HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
constexpr size_t kWidth = 8;
constexpr size_t kBlockBytes = kWidth * 34;  // 8 groups of [8 outputs][4 bytes], 8 f16 scales

// MR positions × 8 outputs of one panel: per group of 4 inputs, vpmaddubsw multiplies |q_w|
// (unsigned, ≤ 128) by the broadcast activation bytes carrying q_w's sign (ggml's sign trick;
// a pair sum ≤ 2·128·127 < 2^15), vpmaddwd turns the pairs into int32 lane sums: exact. The
// weights' |q| is taken once for all MR positions.
template <size_t MR>
void PanelRows(const uint8_t* panel, size_t nb, const int8_t* q, const float* d,
               const int32_t* corr, size_t cols, float* y, size_t ldy, size_t nn) {
  (void)corr;  // signed weights: no offset
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MR];
  for (size_t t = 0; t < MR; ++t) acc[t] = _mm256_setzero_ps();
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* blk = panel + b * kBlockBytes;
    // Decode (MR = 1) reads each panel once: ~4.3 KB ahead, as for the Q4_0 panels; more
    // positions re-read the block from cache.
    for (size_t line = 0; line < kBlockBytes; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(blk) + (MR == 1 ? 16 : 4) * kBlockBytes + line,
                   _MM_HINT_T0);
    __m256i sums[MR];
    for (size_t t = 0; t < MR; ++t) sums[t] = _mm256_setzero_si256();
    for (size_t g = 0; g < 8; ++g) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + g * 32));
      const __m256i aw = _mm256_abs_epi8(w);
      for (size_t t = 0; t < MR; ++t) {
        int32_t four;
        std::memcpy(&four, q + t * cols + b * 32 + g * 4, 4);
        const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(four), w);
        sums[t] = _mm256_add_epi32(sums[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones));
      }
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 256)));
    for (size_t t = 0; t < MR; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[t]),
                               _mm256_mul_ps(dw, _mm256_set1_ps(d[t * nb + b])), acc[t]);
  }
  if (nn >= kWidth) {
    for (size_t t = 0; t < MR; ++t) _mm256_storeu_ps(y + t * ldy, acc[t]);
    return;
  }
  alignas(32) float tmp[kWidth];
  for (size_t t = 0; t < MR; ++t) {
    _mm256_store_ps(tmp, acc[t]);
    std::memcpy(y + t * ldy, tmp, nn * sizeof(float));
  }
}
#endif

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
size_t Q8PanelWidth() { return kWidth; }

void GemmQ8Panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                  const int8_t* q, const float* d, const int32_t* corr, size_t T, float* y,
                  size_t ldy) {
  const size_t nb = cols / 32;
  constexpr size_t MR = kWidth == 32 ? 6 : 4;  // accumulators: 2·MR zmm, or 2·MR ymm of 16
  for (size_t p = p0; p < p1; ++p) {
    const uint8_t* panel = panels + p * nb * kBlockBytes;
    const size_t o0 = p * kWidth, nn = std::min(kWidth, rows - o0);
    for_position_tiles<MR>(T, [&]<size_t R>(size_t t) {
      PanelRows<R>(panel, nb, q + t * cols, d + t * nb, corr + t * nb, cols, y + t * ldy + o0, ldy,
                   nn);
    });
  }
}
#else
size_t Q8PanelWidth() { return 0; }

void GemmQ8Panels(const uint8_t*, size_t, size_t, size_t, size_t, const int8_t*, const float*,
                  const int32_t*, size_t, float*, size_t) {
  // No panels are made for these targets (their width is 0): reaching here is a bug.
  HWY_ABORT("Q8_0 panel product on a target without Q8_0 panels");
}
#endif

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(Q8PanelWidth);
HWY_EXPORT(GemmQ8Panels);

size_t q8_panel_width() { return HWY_DYNAMIC_DISPATCH(Q8PanelWidth)(); }

namespace {
// The VNNI layout: bytes q + 128, fp32 scales; the AVX2 one: bytes q, f16 scales as stored.
bool vnni_layout(size_t width) { return width == 32; }
size_t block_bytes(size_t width) { return width * (32 + (vnni_layout(width) ? 4 : 2)); }
}  // namespace

size_t q8_panels_bytes(size_t rows, size_t cols) {
  const size_t w = q8_panel_width();
  return w == 0 ? 0 : (rows + w - 1) / w * (cols / 32) * block_bytes(w);
}

void pack_q8_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                    uint8_t* out) {
  const size_t nb = cols / 32, rb = size_t(row_bytes(DType::Q8_0, int64_t(cols)));
  const size_t width = q8_panel_width(), bb = block_bytes(width);
  const bool vnni = vnni_layout(width);
  for (size_t p = p0; p < p1; ++p) {
    uint8_t* panel = out + p * nb * bb;
    for (size_t b = 0; b < nb; ++b) {
      uint8_t* blk = panel + b * bb;
      for (size_t j = 0; j < width; ++j) {
        const size_t o = p * width + j;
        uint8_t* scale = blk + width * 32 + j * (vnni ? 4 : 2);
        if (o >= rows) {  // padding: zero weights, zero scale
          for (size_t g = 0; g < 8; ++g)
            std::memset(blk + g * width * 4 + j * 4, vnni ? 0x80 : 0, 4);
          std::memset(scale, 0, vnni ? 4 : 2);
          continue;
        }
        const uint8_t* src = w + o * rb + b * 34;  // f16 scale, 32 int8
        for (size_t i = 0; i < 32; ++i)
          blk[(i / 4) * width * 4 + j * 4 + i % 4] = vnni ? uint8_t(src[2 + i] ^ 0x80) : src[2 + i];
        if (vnni) {
          uint16_t h;
          std::memcpy(&h, src, 2);
          const float f = f16_to_f32(h);
          std::memcpy(scale, &f, 4);
        } else {
          std::memcpy(scale, src, 2);
        }
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
  const size_t nb = cols / 32, width = q8_panel_width(), bb = block_bytes(width);
  const bool vnni = vnni_layout(width);
  for (size_t p = p0; p < p1; ++p)
    for (size_t j = 0; j < width && p * width + j < rows; ++j)
      for (size_t t = 0; t < T; ++t) {
        double sum = 0;
        for (size_t b = 0; b < nb; ++b) {
          const uint8_t* blk = panels + (p * nb + b) * bb;
          int64_t dot = vnni ? corr[t * nb + b] : 0;  // the unsigned bytes' offset
          for (size_t i = 0; i < 32; ++i) {
            const uint8_t byte = blk[(i / 4) * width * 4 + j * 4 + i % 4];
            dot += (vnni ? int64_t(byte) : int64_t(int8_t(byte))) * q[t * cols + b * 32 + i];
          }
          float dw;
          if (vnni) {
            std::memcpy(&dw, blk + width * 32 + j * 4, 4);
          } else {
            uint16_t h;
            std::memcpy(&h, blk + width * 32 + j * 2, 2);
            dw = f16_to_f32(h);
          }
          sum += double(dw) * double(d[t * nb + b]) * double(dot);
        }
        y[t * ldy + p * width + j] = sum;
      }
}

}  // namespace rwkv7::cpu
#endif
