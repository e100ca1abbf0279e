// AVX2 / AVX-512 VNNI products over Q4_0 panels (see q4_panels_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/q4_panels_kernels.cpp"
#include "backends/cpu/q4_panels_kernels.hpp"

#include <algorithm>
#include <cstring>

#include "backends/cpu/position_tiles.hpp"
#include "core/dtype.hpp"
#include "core/quant.hpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3_DL
// 16 outputs per panel: one zmm of int32 lanes; vpdpbusd adds each group of 4 products
// straight into the lanes, which start at -8·Σq (corr / 16) for the nibbles' offset of 8.
constexpr size_t kWidth = 16;
size_t Q4PanelWidth() { return kWidth; }

template <size_t MR>
__attribute__((target(HWY_TARGET_STR ",avx512vnni"))) void Q4PanelRows(
    const uint8_t* panel, size_t nb, const int8_t* q, const float* d, const int32_t* corr,
    size_t cols, float* y, size_t ldy, size_t nn) {
  constexpr size_t kBlockBytes = kWidth * 18;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512 acc[MR];
  for (size_t t = 0; t < MR; ++t) acc[t] = _mm512_setzero_ps();
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* blk = panel + b * kBlockBytes;
    // Decode (MR = 1) ~4.6 KB ahead: with 1.1 KB, 0.4B decode ran 10% (AVX2) to 27% (VNNI)
    // slower (medians of 3 alternating rounds); more positions re-read the panel from cache and
    // keep 1.1 KB (4.6 KB cost 0.4B prefill ~6%).
    for (size_t line = 0; line < kBlockBytes; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(blk) + (MR == 1 ? 16 : 4) * kBlockBytes + line,
                   _MM_HINT_T0);
    __m512i v[8];
    for (size_t g = 0; g < 4; ++g) {
      const __m512i bytes = _mm512_loadu_si512(blk + g * 64);
      v[g] = _mm512_and_si512(bytes, low4);
      v[g + 4] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4);
    }
    const __m512 dw =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 256)));
    for (size_t t = 0; t < MR; ++t) {
      const int8_t* xb = q + t * cols + b * 32;
      __m512i sums = _mm512_set1_epi32(corr[t * nb + b] / 16);
      for (size_t g = 0; g < 8; ++g) {  // inputs 4g.. for g < 4, 16 + 4(g - 4).. after
        int32_t four;
        std::memcpy(&four, xb + (g < 4 ? 4 * g : 16 + 4 * (g - 4)), 4);
        sums = _mm512_dpbusd_epi32(sums, v[g], _mm512_set1_epi32(four));
      }
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums),
                               _mm512_mul_ps(dw, _mm512_set1_ps(d[t * nb + b])), acc[t]);
    }
  }
  const __mmask16 m = nn >= kWidth ? __mmask16(0xFFFF) : __mmask16((1u << nn) - 1);
  for (size_t t = 0; t < MR; ++t) _mm512_mask_storeu_ps(y + t * ldy, m, acc[t]);
}
#elif HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
// 8 outputs per panel: one ymm of int32 lanes. The int16 pair sums of a block's 8 groups add
// up without overflow, one vpmaddwd turns them into int32 lane sums, which start at -8·Σq.
constexpr size_t kWidth = 8;
size_t Q4PanelWidth() { return kWidth; }

template <size_t MR>
void Q4PanelRows(const uint8_t* panel, size_t nb, const int8_t* q, const float* d,
                 const int32_t* corr, size_t cols, float* y, size_t ldy, size_t nn) {
  constexpr size_t kBlockBytes = kWidth * 18;
  const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 acc[MR];
  for (size_t t = 0; t < MR; ++t) acc[t] = _mm256_setzero_ps();
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* blk = panel + b * kBlockBytes;
    // Decode (MR = 1) ~4.6 KB ahead: with 1.1 KB, 0.4B decode ran 10% (AVX2) to 27% (VNNI)
    // slower (medians of 3 alternating rounds); more positions re-read the panel from cache and
    // keep 1.1 KB (4.6 KB cost 0.4B prefill ~6%).
    for (size_t line = 0; line < kBlockBytes; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(blk) + (MR == 1 ? 32 : 8) * kBlockBytes + line,
                   _MM_HINT_T0);
    __m256i v[8];
    for (size_t g = 0; g < 4; ++g) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + g * 32));
      v[g] = _mm256_and_si256(bytes, low4);
      v[g + 4] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 128)));
    for (size_t t = 0; t < MR; ++t) {
      const int8_t* xb = q + t * cols + b * 32;
      __m256i pairs = _mm256_setzero_si256();
      for (size_t g = 0; g < 8; ++g) {  // inputs 4g.. for g < 4, 16 + 4(g - 4).. after
        int32_t four;
        std::memcpy(&four, xb + (g < 4 ? 4 * g : 16 + 4 * (g - 4)), 4);
        pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(v[g], _mm256_set1_epi32(four)));
      }
      const __m256i sums = _mm256_add_epi32(_mm256_madd_epi16(pairs, ones),
                                            _mm256_set1_epi32(corr[t * nb + b] / 16));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums),
                               _mm256_mul_ps(dw, _mm256_set1_ps(d[t * nb + b])), acc[t]);
    }
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
void GemmQ4Panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                  const int8_t* q, const float* d, const int32_t* corr, size_t T, float* y,
                  size_t ldy) {
  const size_t nb = cols / 32;
  constexpr size_t MR = 4;
  for (size_t p = p0; p < p1; ++p) {
    const uint8_t* panel = panels + p * nb * kWidth * 18;
    const size_t o0 = p * kWidth, nn = std::min(kWidth, rows - o0);
    for_position_tiles<MR>(T, [&]<size_t R>(size_t t) {
      Q4PanelRows<R>(panel, nb, q + t * cols, d + t * nb, corr + t * nb, cols, y + t * ldy + o0,
                     ldy, nn);
    });
  }
}
#else
size_t Q4PanelWidth() { return 0; }

void GemmQ4Panels(const uint8_t*, size_t, size_t, size_t, size_t, const int8_t*, const float*,
                  const int32_t*, size_t, float*, size_t) {
  // No panels are made for these targets (their width is 0): reaching here is a bug.
  HWY_ABORT("Q4_0 panel product on a target without Q4_0 panels");
}
#endif

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(Q4PanelWidth);
HWY_EXPORT(GemmQ4Panels);

size_t q4_panel_width() { return HWY_DYNAMIC_DISPATCH(Q4PanelWidth)(); }

size_t q4_panels_bytes(size_t rows, size_t cols) {
  const size_t w = q4_panel_width();
  return w == 0 ? 0 : (rows + w - 1) / w * (cols / 32) * w * 18;
}

void pack_q4_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                    uint8_t* out) {
  const size_t nb = cols / 32, rb = size_t(row_bytes(DType::Q4_0, int64_t(cols)));
  const size_t width = q4_panel_width(), block_bytes = width * 18;
  for (size_t p = p0; p < p1; ++p) {
    uint8_t* panel = out + p * nb * block_bytes;
    for (size_t b = 0; b < nb; ++b) {
      uint8_t* blk = panel + b * block_bytes;
      for (size_t j = 0; j < width; ++j) {
        const size_t o = p * width + j;
        uint8_t* scale = blk + width * 16 + j * 2;
        if (o >= rows) {  // padding: nibbles 8 (weight 0), scale 0
          for (size_t g = 0; g < 4; ++g) std::memset(blk + g * width * 4 + j * 4, 0x88, 4);
          std::memset(scale, 0, 2);
          continue;
        }
        const uint8_t* src = w + o * rb + b * 18;  // f16 scale, 16 bytes of nibbles
        for (size_t g = 0; g < 4; ++g) std::memcpy(blk + g * width * 4 + j * 4, src + 2 + 4 * g, 4);
        std::memcpy(scale, src, 2);
      }
    }
  }
}

void gemm_q4_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                    const int8_t* q, const float* d, const int32_t* corr, size_t T, float* y,
                    size_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemmQ4Panels)(panels, rows, cols, p0, p1, q, d, corr, T, y, ldy);
}

void gemm_q4_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                           const int8_t* q, const float* d, const int32_t* corr, size_t T,
                           double* y, size_t ldy) {
  (void)corr;  // the nibbles' offset is applied directly here
  const size_t nb = cols / 32, width = q4_panel_width(), block_bytes = width * 18;
  for (size_t p = p0; p < p1; ++p)
    for (size_t j = 0; j < width && p * width + j < rows; ++j)
      for (size_t t = 0; t < T; ++t) {
        double sum = 0;
        for (size_t b = 0; b < nb; ++b) {
          const uint8_t* blk = panels + (p * nb + b) * block_bytes;
          int64_t dot = 0;
          for (size_t i = 0; i < 32; ++i) {
            const uint8_t byte = blk[(i % 16) / 4 * width * 4 + j * 4 + i % 4];
            const int nibble = i < 16 ? byte & 15 : byte >> 4;
            dot += int64_t(nibble - 8) * q[t * cols + b * 32 + i];
          }
          uint16_t h;
          std::memcpy(&h, blk + width * 16 + j * 2, 2);
          sum += double(f16_to_f32(h)) * double(d[t * nb + b]) * double(dot);
        }
        y[t * ldy + p * width + j] = sum;
      }
}

}  // namespace rwkv7::cpu
#endif
